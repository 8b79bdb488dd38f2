"""The int8 kernels for x86 without VNNI: ``qconv_dense_i16`` (QConvNHWC on 16-bit pairs) and ``simd_qadd``.

* ``qconv_dense_i16`` at every integer vector width (4, 8, 16 lanes) and both register-file sizes (16, 32),
  forced, equals the numpy integer reference of the IR (``cnnjit.ir.interpret``, written apart from the
  kernels) exactly: strides, pads, dilations (the per-tap channel pairs) and undilated rows (pairs over a
  kernel row's whole run, odd runs included), C odd, M not a multiple of the tile, batch 2, int8 and uint8
  activations, extreme bytes (pair sums that would saturate ``vpmaddubsw``).
* ``simd_qadd`` at widths 4 / 8 / 16 equals the reference bit for bit, tails included.
* It is the default dense variant on an x86 host without a byte dot product (``has_vnni``), and its kernel's
  assembly has ``vpmaddwd`` on an AVX2 host; a QDQ convolution with int8 activations (what onnxruntime's
  quantizer writes with ``activation_type=QInt8``) compiled from ONNX matches onnxruntime's float QDQ path
  (optimizations off, a float convolution between DequantizeLinear and QuantizeLinear) within 1 LSB.
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from kernel_cases import property_settings
from test_int8 import _const, _qconv_case

import cnnjit
from cnnjit.compiler.codegen.emit import generate
from cnnjit.compiler.codegen.kernel import choose
from cnnjit.compiler.codegen.kernels import qint as K
from cnnjit.compiler.codegen.simd_int import _features, has_vnni, host_int_width
from cnnjit.compiler.stages import CompileOptions
from cnnjit.ir import Graph, Node, TensorType, Value, get_op, interpret
from cnnjit.runtime.model import Specialization

WIDTHS = [4, 8, 16]


def _run(g: Graph, x: np.ndarray, op: str, name: str, width: int, registers: int = 16) -> np.ndarray:
    """``g`` with its ``op`` forced to ``name`` at integer / float width ``width``; asserts that variant ran."""
    target = replace(CompileOptions().host_target(), int_width=width, vector_width=width,
                     vector_registers=registers, variants=((op, name),))
    prog = generate(g, target)
    assert {c.variant for c in prog.calls if c.op == op} == {name}
    return Specialization(g, prog).run({"x": x})[0]


@property_settings(max_examples=14)
@given(seed=st.integers(0, 2**31 - 1), width=st.sampled_from(WIDTHS), xs=st.booleans(),
       k=st.sampled_from([1, 2, 3, 5, 7]), s=st.sampled_from([1, 2]), dil=st.sampled_from([1, 2]),
       c=st.integers(1, 13), m=st.integers(1, 70), hw=st.integers(1, 11), batch=st.integers(1, 2))
def test_dense_i16_exact(seed: int, width: int, xs: bool, k: int, s: int, dil: int, c: int, m: int, hw: int,
                         batch: int) -> None:
    # the register file of the width's machine (AVX-512: 32 vectors, 4 channel vectors per tile); int8 in and
    # out or uint8 in and out (each pair of byte types is another numba specialisation: a cold compile)
    registers, ys = (32 if width == 16 else 16), xs
    rng = np.random.default_rng(seed)
    pad = int(rng.integers(0, k)) if k > 1 else 0
    dil = dil if k > 1 else 1
    H = max(hw, (k - 1) * dil + 1 - 2 * pad)
    W = max(int(rng.integers(1, 12)), (k - 1) * dil + 1 - 2 * pad)
    g, xv = _qconv_case(rng, np.int8 if xs else np.uint8, np.int8 if ys else np.uint8, batch, H, W, c, m, k, s,
                        pad, dil, 1)
    np.testing.assert_array_equal(_run(g, xv, "QConvNHWC", "qconv_dense_i16", width, registers),
                                  interpret(g, [xv])[0])


def extreme_case(rng: np.random.Generator, xs: bool, batch: int, hw: int, c: int, m: int, k: int, pad: int,
                 mult: float) -> tuple[Graph, np.ndarray, np.ndarray]:
    """(graph, input, reference output) of a QConvNHWC (``k`` x ``k``, ``batch`` x ``hw`` x ``hw`` x ``c`` ->
    ``m``) whose activations and weights sit at the ends of their ranges (|x - x_zp| up to 255 times -128),
    int8 (``xs``) or uint8 activations, int8 outputs; ``mult`` keeps a third of them unclipped."""
    xdt = np.int8 if xs else np.uint8
    g, _ = _qconv_case(rng, xdt, np.int8, batch, hw, hw, c, m, k, 1, pad, 1, 1)
    node = next(n for n in g.nodes if n.op == "QConvNHWC")
    info = np.iinfo(xdt)
    node.inputs[1] = _const(rng.choice(np.array([-128, 127], np.int8), size=node.inputs[1].shape))
    node.inputs[2] = _const(np.zeros(m, np.int32))
    node.inputs[3] = _const(np.full(m, mult, np.float32))
    node.attrs.update(x_zero_point=int(info.max) if xs else int(info.min), y_zero_point=0, lo=-128, hi=127)
    xv = rng.choice(np.array([info.min, info.max], xdt), size=(batch, hw, hw, c))
    ref = interpret(g, [xv])[0]
    inside = np.abs(ref.astype(np.int32)) < 127
    assert inside.mean() > 0.3 and np.abs(ref[inside].astype(np.int32)).max() > 10
    return g, xv, ref


@pytest.mark.parametrize("width", [8, 16])
@pytest.mark.parametrize("xs", [False, True])
def test_dense_i16_extreme_bytes(width: int, xs: bool) -> None:
    """Activations and weights at the ends of their ranges (|x - x_zp| up to 255 times -128)."""
    g, xv, ref = extreme_case(np.random.default_rng(5 + xs), xs, 1, 6, 9, 20, 3, 1, 1e-4)
    np.testing.assert_array_equal(_run(g, xv, "QConvNHWC", "qconv_dense_i16", width), ref)


def _qadd_graph(dt, n: int, rng: np.random.Generator) -> Graph:
    info = np.iinfo(dt)
    f = np.float32
    attrs = {"a_zero_point": int(rng.integers(info.min, info.max + 1)),
             "b_zero_point": int(rng.integers(info.min, info.max + 1)),
             "y_zero_point": int(rng.integers(info.min, info.max + 1)), "ra": float(f(rng.random() * 2 + 0.01)),
             "rb": float(f(rng.random() * 2 + 0.01)), "lo": int(info.min) + int(rng.integers(0, 3)),
             "hi": int(info.max) - int(rng.integers(0, 3)), "dtype": "i8" if dt == np.int8 else "u8"}
    g = Graph("t")
    x = g.add_input(TensorType(dt, (1, n)), "x")
    b = _const(rng.integers(info.min, info.max + 1, size=(1, n)).astype(dt))
    (t,) = get_op("QAdd").infer_types([x, b], attrs)
    y = Value(t, "y")
    g.add_node(Node("QAdd", [x, b], [y], attrs))
    g.outputs = [y]
    return g


@property_settings(max_examples=12)
@given(seed=st.integers(0, 2**31 - 1), width=st.sampled_from(WIDTHS), signed=st.booleans(), n=st.integers(1, 300))
def test_simd_qadd_exact(seed: int, width: int, signed: bool, n: int) -> None:
    rng = np.random.default_rng(seed)
    dt = np.int8 if signed else np.uint8
    g = _qadd_graph(dt, n, rng)
    info = np.iinfo(dt)
    xv = rng.integers(info.min, info.max + 1, size=(1, n)).astype(dt)
    np.testing.assert_array_equal(_run(g, xv, "QAdd", "simd_qadd", width), interpret(g, [xv])[0])


def test_i16_is_the_default_without_vnni() -> None:
    """The dense i16 variant is chosen on an x86 host without VNNI and not where the byte dot product is one
    instruction (or for another machine); QAdd takes the vector kernel."""
    rng = np.random.default_rng(0)
    g, _ = _qconv_case(rng, np.int8, np.int8, 1, 8, 8, 16, 32, 3, 1, 1, 1, 1)
    node = next(n for n in g.nodes if n.op == "QConvNHWC")
    host = CompileOptions().host_target()
    want = "qconv_dense_i16" if host.isa == "x86_64" and not has_vnni(host.int_width) else "qconv_dense"
    assert choose(node, host).name == want
    assert choose(node, replace(host, triple="aarch64-linux-gnu", isa="aarch64")).name == "qconv_dense"
    qg = _qadd_graph(np.uint8, 40, rng)
    assert choose(next(iter(qg.nodes)), host).name == "simd_qadd"


def test_dense_i16_uses_vpmaddwd() -> None:
    from cnnjit.compiler.codegen.build import module_text

    if host_int_width() != 8 or not _features().get("avx2"):
        pytest.skip("not an AVX2 host")
    ns: dict = {}
    exec(compile(module_text(K.dense_i16_source(8, 6, 2)), "<qint>", "exec"), ns)
    kern = ns["kernel"]
    x = np.zeros(16, np.uint8)
    w = np.zeros(2 * 8 * 2 * 8, np.int16)
    b = np.zeros(16, np.int32)
    mlt = np.ones(16, np.float32)
    y = np.zeros(16 * 4, np.uint8)
    sb = np.zeros(64, np.int16)
    # N H W C OH OW M KH KW sh sw ph pw dh dw Hp Wp CC KWL G2 MBP xz yz lo hi
    kern(x, 0, w, 0, b, 0, mlt, 0, y, 0, 1, 2, 2, 4, 2, 2, 16, 1, 1, 1, 1, 0, 0, 1, 1, 2, 2, 4, 1, 2, 2, 0, 0, 0,
         255, sb, 0, np.zeros(4, np.int64), 0)
    assert "vpmaddwd" in kern.inspect_asm(kern.signatures[0])


@pytest.mark.parametrize("k,s", [(3, 2), (1, 1)])
def test_qdq_conv_int8_activations_vs_onnxruntime(k: int, s: int) -> None:
    """DQ(int8) -> Conv -> Relu -> Q(int8) compiled from ONNX, against onnxruntime's float QDQ path (a float
    Conv between DQ and Q): equal but where float32 rounding meets a .5 tie (<= 1 LSB; over several layers
    such a flip propagates, as the byte kernel's do: both are exact)."""
    ort = pytest.importorskip("onnxruntime")
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(2)
    C, H, W = 13, 9, 7
    inits = [numpy_helper.from_array(np.array(0.05, np.float32), "xs"),
             numpy_helper.from_array(np.array(3, np.int8), "xz"),
             numpy_helper.from_array(np.array(0.07, np.float32), "ys"),
             numpy_helper.from_array(np.array(-128, np.int8), "yz")]
    nodes = [helper.make_node("QuantizeLinear", ["x", "xs", "xz"], ["q0"]),
             helper.make_node("DequantizeLinear", ["q0", "xs", "xz"], ["d0"])]
    prev, cin = "d0", C
    for i, m in enumerate([20]):
        w = rng.integers(-127, 128, size=(m, cin, k, k)).astype(np.int8)
        ws = np.float32(0.01)
        inits += [numpy_helper.from_array(w, f"w{i}"), numpy_helper.from_array(np.array(ws), f"ws{i}"),
                  numpy_helper.from_array(np.array(0, np.int8), f"wz{i}"),
                  numpy_helper.from_array(rng.integers(-300, 300, m).astype(np.int32), f"b{i}"),
                  numpy_helper.from_array(np.array(np.float32(0.05 if i == 0 else 0.07) * ws), f"bs{i}"),
                  numpy_helper.from_array(np.array(0, np.int32), f"bz{i}")]
        nodes += [helper.make_node("DequantizeLinear", [f"w{i}", f"ws{i}", f"wz{i}"], [f"dw{i}"]),
                  helper.make_node("DequantizeLinear", [f"b{i}", f"bs{i}", f"bz{i}"], [f"db{i}"]),
                  helper.make_node("Conv", [prev, f"dw{i}", f"db{i}"], [f"c{i}"], pads=[k // 2] * 4, strides=[s, s]),
                  helper.make_node("Relu", [f"c{i}"], [f"r{i}"]),
                  helper.make_node("QuantizeLinear", [f"r{i}", "ys", "yz"], [f"q{i + 1}"]),
                  helper.make_node("DequantizeLinear", [f"q{i + 1}", "ys", "yz"], [f"d{i + 1}"])]
        prev, cin = f"d{i + 1}", m
    g = helper.make_graph(nodes, "m", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, C, H, W])],
                          [helper.make_tensor_value_info(prev, TensorProto.FLOAT, None)], inits)
    model = helper.make_model(g, opset_imports=[helper.make_opsetid("", 13)], ir_version=8)
    so = ort.SessionOptions()
    so.intra_op_num_threads = 1
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    sess = ort.InferenceSession(model.SerializeToString(), so, providers=["CPUExecutionProvider"])
    compiled = cnnjit.compile(model, threads=1)
    ran = {c.variant for c in compiled._default_spec().program.calls if c.op == "QConvNHWC"}
    host = CompileOptions().host_target()
    assert ran == ({"qconv_dense_i16"} if host.isa == "x86_64" and not has_vnni(host.int_width) else {"qconv_dense"})
    for _ in range(3):
        x = rng.uniform(-6, 6, (1, C, H, W)).astype(np.float32)
        want, got = sess.run(None, {"x": x})[0], compiled(x)
        assert np.abs(want - got).max() <= 0.07 * 1.001  # 1 LSB
        assert (want == got).mean() > 0.99
