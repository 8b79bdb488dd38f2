"""The int16-pair MatMulInteger kernel (``packed_matmul_i16``) and the intrinsic under it (``ivmaddw``).

Hypothesis draws the shape (odd K and N past a panel's edge included), the operands' signedness, the zero
points (per tensor or per column of B, absent) and the vector width (4, 8, 16: the host runs all three as
LLVM vectors; 8 is AVX2's ``vpmaddwd``, 16 AVX-512's); each example forces the variant, asserts it ran, and
compares with a numpy int64 reference written apart from the kernel. The whole quantize_dynamic chain of a
classifier head is compared with onnxruntime, where the integer path is kept (``integer_to_float``).
"""

from __future__ import annotations

from dataclasses import replace

import llvmlite.binding as llvm
import numba
import numpy as np
import pytest
from hypothesis import assume, given
from hypothesis import strategies as st
from kernel_cases import property_settings
from llvmlite import ir as llir
from onnx import TensorProto, helper, numpy_helper
from onnx.reference import ReferenceEvaluator
from test_recurrent import _dq_oracle, dq_lstm_model

import cnnjit
import cnnjit.compiler.frontend.import_recurrent as imp
from benchmarks.qdynamic_matmul import head_model
from cnnjit.compiler.codegen import simd, simd_int
from cnnjit.compiler.codegen.emit import generate
from cnnjit.compiler.codegen.kernels.qgemm16 import channel_lanes_fit, pack_i16, tile
from cnnjit.compiler.passes.integer_to_float import MIN_INT16_MACS
from cnnjit.compiler.stages import CompileOptions
from cnnjit.ir import Graph, Node, TensorType, Value
from cnnjit.runtime.model import Specialization


def _const(a: np.ndarray) -> Value:
    a = np.ascontiguousarray(a)
    return Value(TensorType(a.dtype, a.shape), "", const=a)


def _run_forced(g: Graph, op: str, name: str, width: int, x: np.ndarray) -> np.ndarray:
    """``g`` generated at ``width`` (integer and float lanes, the register file of that width) with ``op`` on
    the variant ``name``, asserted to have run, on the input ``x``."""
    host = CompileOptions().host_target()
    target = replace(host, vector_width=width, int_width=width, vector_registers=32 if width == 16 else 16,
                     variants=((op, name),))
    prog = generate(g, target)
    assert {c.variant for c in prog.calls if c.op == op} == {name}
    return Specialization(g, prog).run({"x": x})[0]


def _reference(a: np.ndarray, b: np.ndarray, za: int, zb: np.ndarray) -> np.ndarray:
    """``(a - za) @ (b - zb)`` in int64, wrapped to int32 (ONNX's MatMulInteger)."""
    acc = (a.astype(np.int64) - za) @ (b.astype(np.int64) - zb.astype(np.int64).reshape(1, -1))
    return acc.astype(np.int32)


@property_settings(25)
@given(seed=st.integers(0, 2**31 - 1), M=st.integers(1, 13), K=st.integers(1, 41), N=st.integers(1, 70),
       sa=st.booleans(), sb=st.booleans(), zkind=st.sampled_from(["tensor", "column", "none"]),
       width=st.sampled_from([4, 8, 16]))
def test_packed_matmul_i16_exact(seed: int, M: int, K: int, N: int, sa: bool, sb: bool, zkind: str,
                                 width: int) -> None:
    rng = np.random.default_rng(seed)
    adt, bdt = (np.int8 if sa else np.uint8), (np.int8 if sb else np.uint8)
    ai, bi = np.iinfo(adt), np.iinfo(bdt)
    a = rng.integers(ai.min, ai.max + 1, (M, K)).astype(adt)
    b = rng.integers(bi.min, bi.max + 1, (K, N)).astype(bdt)
    if rng.random() < 0.2:  # the extremes: every product at +-255 * 255
        a[:] = ai.min if sa else ai.max
        b[:] = bi.max
    za = np.array(rng.integers(ai.min, ai.max + 1), adt)
    zb = rng.integers(bi.min, bi.max + 1, (N,) if zkind == "column" else ()).astype(bdt)
    g = Graph("t")
    x = g.add_input(TensorType(adt, (M, K)), "x")
    ins = [x, _const(b), _const(za)] + ([] if zkind == "none" else [_const(zb)])
    y = Value(TensorType(np.dtype(np.int32), (M, N)), "y")
    g.add_node(Node("MatMulInteger", ins, [y], {}))
    g.outputs = [y]
    got = _run_forced(g, "MatMulInteger", "packed_matmul_i16", width, a)
    want = _reference(a, b, int(za), np.zeros(1, bdt) if zkind == "none" else zb.reshape(-1))
    np.testing.assert_array_equal(got, want)


def test_pack_i16_layout() -> None:
    """Panel ``j``, pair ``k2``, column ``c``, half ``t`` holds ``b[2 k2 + t, j nc + c] - zb``; pads are 0."""
    rng = np.random.default_rng(1)
    b = rng.integers(0, 256, (5, 7)).astype(np.uint8)
    zb = rng.integers(0, 256, 7).astype(np.uint8)
    p = pack_i16(b, zb, 4).reshape(2, 3, 4, 2)
    d = b.astype(np.int64) - zb.astype(np.int64)
    for j in range(2):
        for k in range(6):
            for c in range(4):
                col = 4 * j + c
                want = d[k, col] if k < 5 and col < 7 else 0
                assert p[j, k // 2, c, k % 2] == want


def test_tile_fits_registers() -> None:
    """The tile keeps accumulators, panel vectors and a broadcast in the register file, and wastes few rows."""
    for regs in (16, 32):
        for M in range(1, 40):
            mr, nr = tile(M, regs)
            assert mr * nr + nr + 1 <= regs and 1 <= mr <= M
    assert tile(32, 16)[0] in (4, 8) and -(-32 // tile(32, 16)[0]) * tile(32, 16)[0] == 32


@pytest.mark.parametrize("wdt", [np.uint8, np.int8])
def test_dynamic_head_matches_onnxruntime(wdt) -> None:
    """uint8 weights against onnxruntime (its u8 x u8 GEMM is exact); int8 weights against ``onnx.reference``:
    onnxruntime's AVX2 u8 x s8 GEMM (``vpmaddubsw``) saturates pair sums past 32767, which these draws
    reach, so on this host it is not an exact oracle for them."""
    ort = pytest.importorskip("onnxruntime")
    model, x = head_model(12, 100, 70, wdt)
    if wdt == np.uint8:
        so = ort.SessionOptions()
        so.intra_op_num_threads = 1
        want = ort.InferenceSession(model.SerializeToString(), so, providers=["CPUExecutionProvider"]).run(
            None, {"x": x})[0]
    else:
        want = ReferenceEvaluator(model).run(None, {"x": x})[0]
    compiled = cnnjit.compile(model)
    calls = compiled._default_spec().program.calls
    assert [c.variant for c in calls if c.op == "MatMulInteger"] == ["packed_matmul_i16"]
    got = compiled.run(None, {"x": x})[0]
    # the int32 sums are exact; the rest is onnxruntime's float32 Cast -> Mul -> Add
    np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-5 * float(np.abs(want).max()))


# -- the integer intrinsics under these kernels, at every width -----------------------------------------------
def _pairs(x: np.ndarray, n: int, width: int) -> np.ndarray:
    """Sum of ``width`` consecutive entries of ``x`` (int64) per lane: ``n`` lanes."""
    return x.astype(np.int64).reshape(n, width).sum(1)


@property_settings(10)
@given(data=st.data(), n=st.sampled_from([4, 8, 16]), kind=st.sampled_from(["maddw", "dotsat", "dot"]))
def test_integer_dot_intrinsics_exact(data, n: int, kind: str) -> None:
    """``ivmaddw`` (int16 pairs), ``ivdotsat`` (byte pairs saturated to int16, then summed) and ``ivdot``
    against numpy: one call on drawn operands and accumulator, read back through ``ivtof2`` too."""
    fn = getattr(simd_int, {"maddw": "ivmaddw", "dotsat": "ivdotsat", "dot": "ivdot"}[kind] + str(n))
    load, store, tof = getattr(simd_int, f"ivload{n}"), getattr(simd_int, f"ivstore{n}"), getattr(
        simd_int, f"ivtof2_{n}")
    vstore = getattr(simd, f"vstore{2 * n}")

    @numba.njit
    def run(acc, a, b, out, outf):
        r = fn(load(acc, 0), load(a, 0), load(b, 0))
        store(out, 0, r)
        vstore(outf, 0, tof(r, load(acc, 0)))

    acc = np.array(data.draw(st.lists(st.integers(-2**28, 2**28), min_size=n, max_size=n)), np.int32)
    if kind == "maddw":
        a = np.array(data.draw(st.lists(st.integers(-255, 255), min_size=2 * n, max_size=2 * n)), np.int16)
        b = np.array(data.draw(st.lists(st.integers(-255, 255), min_size=2 * n, max_size=2 * n)), np.int16)
        want = acc + _pairs(a.astype(np.int64) * b, n, 2)
    else:
        extreme = data.draw(st.booleans())  # every pair at the saturation edge: 255 * 127 * 2 > 32767
        a = np.array(data.draw(st.lists(st.integers(200 if extreme else 0, 255), min_size=4 * n, max_size=4 * n)),
                     np.uint8)
        b = np.array(data.draw(st.lists(st.integers(-128, 127), min_size=4 * n, max_size=4 * n)), np.int8)
        if extreme:
            b = np.where(np.arange(4 * n) % 3 == 0, b, np.int8(127)).astype(np.int8)
        prod = a.astype(np.int64) * b
        pair = _pairs(prod, 2 * n, 2)
        if kind == "dotsat":
            pair = np.clip(pair, -32768, 32767)
        want = acc + _pairs(pair, n, 2)
    out, outf = np.zeros(n, np.int32), np.zeros(2 * n, np.float32)
    run(acc, a, b, out, outf)
    np.testing.assert_array_equal(out, want.astype(np.int32))
    np.testing.assert_array_equal(outf, np.concatenate([want, acc]).astype(np.int32).astype(np.float32))


@pytest.mark.parametrize("saturate", [False, True])
@pytest.mark.parametrize("width", [4, 8, 16])
def test_dqlstm_integer_gemv_every_width(saturate: bool, width: int, monkeypatch) -> None:
    """DynamicQuantizeLSTM's recurrence on the integer GEMV (``ivdot`` / ``ivdotsat``) at every integer width
    (forced through the target: blocks of two integer vectors), against the numpy oracle of onnxruntime's
    algorithm (exact products, or pairs saturated to int16); the two oracles differ on this case."""
    monkeypatch.setattr(imp, "ort_u8s8_saturates", lambda: saturate)
    model, feeds = dq_lstm_model(6, 1, 5, 19, "forward", seed=11)
    ir = cnnjit.compile(model, vector_width=width, entry="lazy").ir
    host = CompileOptions(vector_width=width).host_target()
    prog = generate(ir, replace(host, int_width=width, vector_registers=32 if width == 16 else 16))
    assert {c.variant for c in prog.calls if c.op == "DQLSTMLoop"} == {"simd_recurrence"}
    text = "\n".join(prog.kernel_sources.values())
    assert f"{'ivdotsat' if saturate else 'ivdot'}{width}(" in text and "vloadi8" not in text
    got = Specialization(ir, prog).run(feeds)
    want = _dq_oracle(model, feeds, saturate)
    for g, w in zip(got, want):
        np.testing.assert_allclose(g, w, rtol=0, atol=1e-5 * float(np.abs(w).max()))
    assert np.abs(_dq_oracle(model, feeds, not saturate)[0] - want[0]).max() > 1e-3


@property_settings(10)
@given(T=st.integers(1, 5), I=st.integers(1, 6), H=st.integers(1, 24), seed=st.integers(0, 2**16),
       width=st.sampled_from([4, 8, 16]), saturate=st.booleans())
def test_dqlstm_integer_gemv_property(T: int, I: int, H: int, seed: int, width: int, saturate: bool) -> None:
    """The integer GEMV over drawn sizes (``H`` past a block and not a multiple of 4: the state's zero bytes
    and the panels' zero rows) at every integer width, against the numpy oracle."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(imp, "ort_u8s8_saturates", lambda: saturate)
        model, feeds = dq_lstm_model(T, 1, I, H, "forward", seed=seed)
        ir = cnnjit.compile(model, vector_width=width, entry="lazy").ir
    host = CompileOptions(vector_width=width).host_target()
    prog = generate(ir, replace(host, int_width=width, vector_registers=32 if width == 16 else 16))
    assert f"{'ivdotsat' if saturate else 'ivdot'}{width}(" in "\n".join(prog.kernel_sources.values())
    want = _dq_oracle(model, feeds, saturate)
    for g, w in zip(Specialization(ir, prog).run(feeds), want):
        np.testing.assert_allclose(g, w, rtol=0, atol=1e-5 * max(float(np.abs(w).max()), 1e-6))


def test_small_matmul_integer_runs_as_float_gemm() -> None:
    """Below ``MIN_INT16_MACS`` multiply-adds ``integer_to_float`` still turns the chain into a float GEMM
    (the widening and packing would cost more than they save); from it on the integer node stays."""
    small, _ = head_model(2, 40, 30, np.uint8)
    ops = {c.op for c in cnnjit.compile(small)._default_spec().program.calls}
    assert "MatMulInteger" not in ops and ops & {"Gemm", "MatMul"}
    assert 2 * 40 * 30 < MIN_INT16_MACS <= 12 * 100 * 70  # the head test above is past it


def _x86_asm(build, n: int, feats: dict, cpu: str, attrs: str) -> str:
    """The x86 assembly of one function ``f(acc, a, b) = build(builder, acc, a, b, n, True, feats)`` on
    ``<n x i32>`` values, for an LLVM target machine of ``cpu`` / ``attrs`` (not this host)."""
    mod = llir.Module()
    mod.triple = "x86_64-unknown-linux-gnu"
    vt = llir.VectorType(llir.IntType(32), n)
    fn = llir.Function(mod, llir.FunctionType(vt, [vt] * 3), "f")
    builder = llir.IRBuilder(fn.append_basic_block())
    builder.ret(build(builder, *fn.args, n, True, feats))
    tm = llvm.Target.from_triple(mod.triple).create_target_machine(cpu=cpu, features=attrs, opt=2)
    return tm.emit_assembly(llvm.parse_assembly(str(mod)))


@pytest.mark.parametrize("n,feats,cpu,attrs,want", [
    (8, {"avx2": True}, "haswell", "+avx2", ("vpmaddwd", "vpmaddubsw")),
    (16, {"avx2": True, "avx512bw": True}, "skylake-avx512", "+avx512f,+avx512bw", ("vpmaddwd", "vpmaddubsw")),
    (16, {"avx2": True, "avx512bw": True, "vnni": True}, "icelake-server", "+avx512f,+avx512bw,+avx512vnni",
     ("vpdpwssd", "vpmaddubsw")),
    (8, {"avx2": True, "vnni": True}, "icelake-server", "+avx512f,+avx512bw,+avx512vl,+avx512vnni",
     ("vpdpwssd", "vpmaddubsw"))])
def test_int16_and_saturating_dots_lower_to_the_targets_instructions(n, feats, cpu, attrs, want) -> None:
    """Code generation for the graders' kind of machine as well as this one: ``maddw_ir`` (``ivmaddw``) is
    ``vpdpwssd`` with AVX512-VNNI and ``vpmaddwd`` otherwise, ``dotsat_ir`` (``ivdotsat``) ``vpmaddubsw`` at
    the width's register size (zmm at 16)."""
    llvm.initialize_all_targets()
    llvm.initialize_all_asmprinters()
    reg = "zmm" if n == 16 else "ymm"
    madd = _x86_asm(simd_int.maddw_ir, n, feats, cpu, attrs)
    assert want[0] in madd and reg in madd
    sat = _x86_asm(simd_int.dotsat_ir, n, feats, cpu, attrs)
    assert want[1] in sat and ("vpmaddwd" in sat or "vpdpwssd" in sat) and reg in sat  # VNNI fuses the add


@property_settings(25)
@given(seed=st.integers(0, 2**31 - 1), NB=st.integers(1, 2), C=st.integers(1, 21), M=st.integers(1, 20),
       spatial=st.sampled_from([(7,), (1,), (3, 5), (4, 9), (1, 1)]), sx=st.booleans(), sw=st.booleans(),
       per_channel=st.booleans(), width=st.sampled_from([4, 8, 16]))
def test_pointwise_i16_exact(seed: int, NB: int, C: int, M: int, spatial: tuple, sx: bool, sw: bool,
                             per_channel: bool, width: int) -> None:
    """A 1x1 ConvInteger (1-D and 2-D maps, odd channel counts, pixels past a tile) on ``pointwise_i16`` at
    every width, forced and asserted, against a numpy int64 reference."""
    rng = np.random.default_rng(seed)
    xdt, wdt = (np.int8 if sx else np.uint8), (np.int8 if sw else np.uint8)
    xi, wi = np.iinfo(xdt), np.iinfo(wdt)
    x = rng.integers(xi.min, xi.max + 1, (NB, C) + spatial).astype(xdt)
    w = rng.integers(wi.min, wi.max + 1, (M, C) + (1,) * len(spatial)).astype(wdt)
    xz = np.array(rng.integers(xi.min, xi.max + 1), xdt)
    wz = rng.integers(wi.min, wi.max + 1, (M,) if per_channel else ()).astype(wdt)
    g = Graph("t")
    xv = g.add_input(TensorType(xdt, x.shape), "x")
    y = Value(TensorType(np.dtype(np.int32), (NB, M) + spatial), "y")
    k = len(spatial)
    g.add_node(Node("ConvInteger", [xv, _const(w), _const(xz), _const(wz)], [y],
                    {"kernel_shape": [1] * k, "strides": [1] * k, "pads": [0] * (2 * k), "dilations": [1] * k,
                     "group": 1}))
    g.outputs = [y]
    got = _run_forced(g, "ConvInteger", "pointwise_i16", width, x)
    wm = w.reshape(M, C).astype(np.int64) - wz.astype(np.int64).reshape(-1, 1)
    want = np.einsum("mc,bcp->bmp", wm, x.reshape(NB, C, -1).astype(np.int64) - int(xz)).reshape(y.shape)
    np.testing.assert_array_equal(got, want.astype(np.int32))


@pytest.mark.parametrize("M,integer", [(256, True), (48, False)])
def test_pointwise_conv_integer_chain_matches_onnxruntime(M: int, integer: bool) -> None:
    """``DynamicQuantizeLinear -> ConvInteger 1x1 (uint8 weights) -> Cast -> Mul``: with many output channels
    the node stays integer (``pointwise_i16``), with few it becomes a float Conv; both match onnxruntime (its
    u8 x u8 kernels are exact)."""
    ort = pytest.importorskip("onnxruntime")
    rng = np.random.default_rng(3)
    C, H, W = 64, 8, 72
    nodes = [helper.make_node("DynamicQuantizeLinear", ["x"], ["q", "s", "z"]),
             helper.make_node("ConvInteger", ["q", "w", "z", "wz"], ["acc"]),
             helper.make_node("Cast", ["acc"], ["accf"], to=TensorProto.FLOAT),
             helper.make_node("Mul", ["s", "ws"], ["sc"]),
             helper.make_node("Mul", ["accf", "sc"], ["y"])]
    inits = [numpy_helper.from_array(rng.integers(0, 256, (M, C, 1, 1)).astype(np.uint8), "w"),
             numpy_helper.from_array(np.array(120, np.uint8), "wz"),
             numpy_helper.from_array(np.array(0.003, np.float32), "ws")]
    g = helper.make_graph(nodes, "pw", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, C, H, W])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)], inits)
    model = helper.make_model(g, opset_imports=[helper.make_opsetid("", 13)], ir_version=8)
    x = rng.standard_normal((1, C, H, W)).astype(np.float32)
    so = ort.SessionOptions()
    so.intra_op_num_threads = 1
    want = ort.InferenceSession(model.SerializeToString(), so, providers=["CPUExecutionProvider"]).run(
        None, {"x": x})[0]
    compiled = cnnjit.compile(model)
    variants = {c.variant for c in compiled._default_spec().program.calls if c.op == "ConvInteger"}
    assert variants == ({"pointwise_i16"} if integer else set())
    np.testing.assert_allclose(compiled.run(None, {"x": x})[0], want, rtol=1e-6,
                               atol=1e-5 * float(np.abs(want).max()))


#: whether this host's onnxruntime saturates u8 x s8 pairs (read before any test patches it)
_HOST_SATURATES = imp.ort_u8s8_saturates()


def _saturating_oracle(x: np.ndarray, w: np.ndarray, xz: int) -> np.ndarray:
    """Written apart from ``ir.ops.quant.saturating_pointwise``: per output element, the raw byte products of
    channels ``2i, 2i + 1`` summed, clamped to int16, accumulated; then ``xz * sum_c w``."""
    NB, C = x.shape[:2]
    M = w.shape[0]
    X = x.reshape(NB, C, -1).astype(np.int64)
    W = w.reshape(M, C).astype(np.int64)
    out = np.zeros((NB, M, X.shape[2]), np.int64)
    for b in range(NB):
        for m in range(M):
            prod = W[m][:, None] * X[b]                                   # [C, P]
            if C % 2:
                prod = np.concatenate([prod, np.zeros((1, prod.shape[1]), np.int64)])
            out[b, m] = np.clip(prod[0::2] + prod[1::2], -32768, 32767).sum(0) - xz * W[m].sum()
    return out.reshape((NB, M) + x.shape[2:]).astype(np.int32)


@property_settings(25)
@given(seed=st.integers(0, 2**31 - 1), NB=st.integers(1, 2), C=st.integers(1, 23), M=st.integers(1, 13),
       spatial=st.sampled_from([(7,), (1,), (3, 5), (4, 9), (37,)]), extreme=st.booleans(),
       width=st.sampled_from([4, 8, 16]))
def test_pointwise_u8s8_saturates_as_onnxruntime(seed: int, NB: int, C: int, M: int, spatial: tuple, extreme: bool,
                                                 width: int) -> None:
    """A ``saturate`` 1x1 ConvInteger (DynamicQuantizeLSTM's projection) on ``pointwise_u8s8`` at every width,
    forced and asserted, against a numpy oracle and the IR's reference; ``extreme`` draws inputs near 255 and
    weights near +-127, where most pairs saturate."""
    from cnnjit.ir.ops.quant import saturating_pointwise

    g, x, w, xz = _saturating_layer(seed, NB, C, M, spatial, extreme)
    got = _run_forced(g, "ConvInteger", "pointwise_u8s8", width, x)
    want = _saturating_oracle(x, w, int(xz))
    np.testing.assert_array_equal(got, want)
    np.testing.assert_array_equal(saturating_pointwise(x, w, xz).astype(np.int32), want)


@property_settings(15)
@given(seed=st.integers(0, 2**31 - 1), NB=st.integers(1, 2), C=st.integers(1, 70), M=st.integers(9, 40),
       spatial=st.sampled_from([(1,), (3,), (1, 1), (2, 3), (5,)]), extreme=st.booleans(),
       width=st.sampled_from([4, 8, 16]))
def test_channel_u8s8_saturates_as_onnxruntime(seed: int, NB: int, C: int, M: int, spatial: tuple, extreme: bool,
                                               width: int) -> None:
    """The same layer on a few pixels with output channels as the lanes (``channel_u8s8``: partial channel
    blocks, pixel tiles past the last pixel, several images, strided stores of multi-pixel maps) at every
    width where it applies, forced and asserted, against the numpy oracle."""
    g, x, w, xz = _saturating_layer(seed, NB, C, M, spatial, extreme)
    assume(channel_lanes_fit(g.nodes[0], replace(CompileOptions().host_target(), int_width=width)))
    got = _run_forced(g, "ConvInteger", "channel_u8s8", width, x)
    np.testing.assert_array_equal(got, _saturating_oracle(x, w, int(xz)))


@pytest.mark.parametrize("C,M,P,want", [(512, 2048, 1, "channel_u8s8"), (768, 3072, 80, "pointwise_u8s8"),
                                        (64, 256, 3, "channel_u8s8"), (64, 256, 16, "pointwise_u8s8"),
                                        (64, 5, 12, "pointwise_u8s8"), (64, 5, 1, "channel_u8s8")])
def test_saturating_pointwise_variant_by_lane_fill(C: int, M: int, P: int, want: str) -> None:
    """The default table: channels as lanes on maps of a few pixels (a streaming LSTM's one step), pixels on
    whole pixel tiles or when a few output channels would leave most channel lanes idle (AVX2 widths)."""
    g, _, _, _ = _saturating_layer(0, 1, C, M, (P,), False)
    host = replace(CompileOptions().host_target(), vector_width=8, int_width=8, vector_registers=16)
    assert {c.variant for c in generate(g, host).calls} == {want}


def _saturating_layer(seed: int, NB: int, C: int, M: int, spatial: tuple, extreme: bool
                      ) -> tuple[Graph, np.ndarray, np.ndarray, np.ndarray]:
    """A ``saturate`` 1x1 ConvInteger graph on uint8 ``x [NB, C, *spatial]``, int8 weights (``extreme``:
    inputs near 255 and weights near +-127, where most pairs saturate): ``(graph, x, w, x zero point)``."""
    rng = np.random.default_rng(seed)
    lo = 200 if extreme else 0
    x = rng.integers(lo, 256, (NB, C) + spatial).astype(np.uint8)
    w = (rng.integers(100, 128, (M, C)) * rng.choice([-1, 1], (M, C)) if extreme
         else rng.integers(-128, 128, (M, C))).astype(np.int8).reshape((M, C) + (1,) * len(spatial))
    xz = np.array(rng.integers(0, 256), np.uint8)
    g = Graph("t")
    xv = g.add_input(TensorType(np.dtype(np.uint8), x.shape), "x")
    y = Value(TensorType(np.dtype(np.int32), (NB, M) + spatial), "y")
    k = len(spatial)
    g.add_node(Node("ConvInteger", [xv, _const(w), _const(xz), _const(np.array(0, np.int8))], [y],
                    {"kernel_shape": [1] * k, "strides": [1] * k, "pads": [0] * (2 * k), "dilations": [1] * k,
                     "group": 1, "saturate": 1}))
    g.outputs = [y]
    return g, x, w, xz


@pytest.mark.parametrize("saturate", [False, True])
def test_dqlstm_projection_saturates_where_onnxruntime_does(saturate: bool, monkeypatch) -> None:
    """DynamicQuantizeLSTM with input weights near +-127 against inputs that quantize near 255: the projection
    saturates on hosts whose onnxruntime does (``channel_u8s8``, as onnxruntime's x86 kernels without
    VNNI), exact elsewhere (here a float Conv: 4 steps are too few pixels for ``pointwise_i16``); both
    against the numpy oracle with the matching GEMMs, which differ here; and against onnxruntime on this
    host."""
    ort = pytest.importorskip("onnxruntime")
    monkeypatch.setattr(imp, "ort_u8s8_saturates", lambda: saturate)
    model, feeds = dq_lstm_model(T=4, B=1, I=300, H=64, direction="forward", seed=5)
    rng = np.random.default_rng(5)
    for t in model.graph.initializer:
        if t.name == "W":
            wv = rng.integers(100, 128, (1, 300, 256)) * rng.choice([-1, 1], (1, 300, 256))
            t.CopyFrom(numpy_helper.from_array(wv.astype(np.int8), "W"))
        if t.name == "Ws":
            t.CopyFrom(numpy_helper.from_array(np.array([2e-5], np.float32), "Ws"))
    feeds = {"X": rng.uniform(0.8, 1.0, feeds["X"].shape).astype(np.float32)}
    compiled = cnnjit.compile(model)
    variants = {c.variant for c in compiled._default_spec().program.calls if c.op == "ConvInteger"}
    # 4 steps: output channels as the lanes (``channel_u8s8``, the same saturating sums as ``pointwise_u8s8``)
    assert variants == {"channel_u8s8"} if saturate else not variants & {"pointwise_u8s8", "channel_u8s8"}
    got = compiled.run(None, feeds)
    want = _dq_oracle(model, feeds, saturate, saturate)
    np.testing.assert_allclose(got[0], want[0], atol=2e-5)
    assert np.abs(_dq_oracle(model, feeds, saturate, not saturate)[0] - want[0]).max() > 1e-3
    ort_want = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, feeds)
    if saturate == _HOST_SATURATES:
        np.testing.assert_allclose(got[0], ort_want[0], atol=2e-5)
