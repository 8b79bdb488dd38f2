"""qdq_lut: quantized elementwise chains become byte tables (``QLut``), and integer layers stay channels-last.

* Property test over small random QDQ models (``Q -> DQ -> chain of BatchNormalization / HardSwish /
  HardSigmoid / Sigmoid / Relu / Clip / LeakyRelu / per-channel Mul / scalar Add -> Q -> DQ``, int8 and uint8,
  several ranks): after the passes the chain is one ``QLut`` (the schedule runs the ``qlut`` kernel), and the
  output equals, bit for bit, the IR reference (``cnnjit.ir.interpret``) of the graph compiled without the
  pass, and onnxruntime (ORT_DISABLE_ALL) within one output step (its float Sigmoid / Tanh differ from
  numpy's in the last bit).
* A model written by onnxruntime's ``quantize_static`` (Conv -> BatchNormalization -> HardSwish -> depthwise
  Conv -> BatchNormalization -> Relu -> Conv, BatchNormalization not folded): the integer convolutions meet
  with no Transpose between them (one into NHWC at the input, one back at the output), the QDQ glue is
  ``QLut`` in NHWC (axis 3), and the result equals the pipeline without the pass bit for bit.
* Squeeze-excite's gate ``Q(DQ(x) * DQ(s))`` (``s`` per image and channel, either operand order) becomes
  ``QChannelMulNHWC``, bit-exact against the IR reference of the graph without the pass and onnxruntime.
* ``QLut``'s reference and kernel at every vector width, and its shape errors.
* A float subgraph that reads one quantized tensor along two paths (onnxruntime's QDQ SiLU, ``v * DQ(Q(
  Sigmoid(v)))``) becomes one ``QLut`` too, bit-exact against the graph without the pass.
"""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from onnx import TensorProto, helper, numpy_helper

import cnnjit
from cnnjit.ir import TensorType, get_op, interpret
from cnnjit.ir.errors import ShapeError

ort = pytest.importorskip("onnxruntime")

_SETTINGS = settings(deadline=None, max_examples=12, suppress_health_check=[HealthCheck.too_slow])
_CHAIN_OPS = ["BatchNormalization", "HardSwish", "HardSigmoid", "Sigmoid", "Relu", "Clip", "LeakyRelu", "Mul",
              "Add", "Tanh"]


def _ort_disable_all(model: onnx.ModelProto, x: np.ndarray) -> np.ndarray:
    so = ort.SessionOptions()
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    so.intra_op_num_threads = 1
    sess = ort.InferenceSession(model.SerializeToString(), so, providers=["CPUExecutionProvider"])
    return sess.run(None, {"x": x})[0]


def _chain_model(rng: np.random.Generator, ops: list[str], shape: tuple[int, ...], signed: bool) -> onnx.ModelProto:
    C = shape[1]
    zdt = np.int8 if signed else np.uint8
    lo, hi = (-128, 127) if signed else (0, 255)
    inits: dict[str, np.ndarray] = {}
    nodes = []

    def qparams(tag: str) -> list[str]:
        inits[f"s_{tag}"] = np.array(rng.uniform(0.005, 0.05), np.float32)
        inits[f"z_{tag}"] = np.array(rng.integers(lo // 2, hi // 2 + 1), zdt)
        return [f"s_{tag}", f"z_{tag}"]

    p0 = qparams("in")
    nodes += [helper.make_node("QuantizeLinear", ["x", *p0], ["q0"]),
              helper.make_node("DequantizeLinear", ["q0", *p0], ["v0"])]
    cur = "v0"
    for i, op in enumerate(ops):
        out = f"v{i + 1}"
        if op == "BatchNormalization":
            for k, (a, b) in zip("sbmv", [(0.5, 1.5), (-0.3, 0.3), (-0.2, 0.2), (0.5, 2.0)]):
                inits[f"bn{k}{i}"] = rng.uniform(a, b, C).astype(np.float32)
            nodes.append(helper.make_node(op, [cur] + [f"bn{k}{i}" for k in "sbmv"], [out], epsilon=1e-3))
        elif op == "Clip":
            inits[f"cmin{i}"] = np.array(rng.uniform(-1, 0), np.float32)
            inits[f"cmax{i}"] = np.array(rng.uniform(0.1, 1), np.float32)
            nodes.append(helper.make_node(op, [cur, f"cmin{i}", f"cmax{i}"], [out]))
        elif op == "Mul":  # a per-channel scale, as squeeze-excite's after folding
            inits[f"k{i}"] = rng.uniform(0.5, 2, (C,) + (1,) * (len(shape) - 2)).astype(np.float32)
            nodes.append(helper.make_node(op, [f"k{i}", cur], [out]))
        elif op == "Add":
            inits[f"k{i}"] = np.array(rng.uniform(-0.5, 0.5), np.float32)
            nodes.append(helper.make_node(op, [cur, f"k{i}"], [out]))
        elif op == "HardSigmoid":
            nodes.append(helper.make_node(op, [cur], [out], alpha=1 / 6, beta=0.5))
        elif op == "LeakyRelu":
            nodes.append(helper.make_node(op, [cur], [out], alpha=0.1))
        else:
            nodes.append(helper.make_node(op, [cur], [out]))
        cur = out
    p1 = qparams("out")
    nodes += [helper.make_node("QuantizeLinear", [cur, *p1], ["q1"]),
              helper.make_node("DequantizeLinear", ["q1", *p1], ["y"])]
    g = helper.make_graph(nodes, "chain", [helper.make_tensor_value_info("x", TensorProto.FLOAT, list(shape))],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, list(shape))],
                          [numpy_helper.from_array(v, k) for k, v in inits.items()])
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)


@_SETTINGS
@given(seed=st.integers(0, 2**31 - 1), ops=st.lists(st.sampled_from(_CHAIN_OPS), min_size=0, max_size=3),
       shape=st.sampled_from([(1, 5, 3, 4), (2, 3, 6), (1, 17, 2, 2), (3, 4)]), signed=st.booleans())
def test_chain_becomes_exact_table(seed: int, ops: list[str], shape: tuple[int, ...], signed: bool) -> None:
    rng = np.random.default_rng(seed)
    model = _chain_model(rng, ops, shape, signed)
    x = (rng.standard_normal(shape) * 2).astype(np.float32)
    compiled = cnnjit.compile(model)
    assert {n.op for n in compiled.ir.nodes} == {"QuantizeLinear", "QLut", "DequantizeLinear"}
    ran = {c.variant for c in compiled._default_spec().program.calls if c.op == "QLut"}
    assert ran == {"qlut"}, ran
    before = cnnjit.compile(model, disable=["qdq_lut"], entry="lazy").ir
    assert any(n.op not in ("QuantizeLinear", "DequantizeLinear") for n in before.nodes) or not ops
    y = compiled(x)
    np.testing.assert_array_equal(y, interpret(before, [x])[0])
    step = float(numpy_helper.to_array(next(i for i in model.graph.initializer if i.name == "s_out")))
    np.testing.assert_allclose(y, _ort_disable_all(model, x), rtol=0, atol=step * 1.01)


def _float_block() -> onnx.ModelProto:
    rng = np.random.default_rng(7)
    C, M = 8, 16
    inits = {"w0": rng.standard_normal((M, C, 3, 3)).astype(np.float32) * 0.2,
             "w1": rng.standard_normal((M, 1, 3, 3)).astype(np.float32) * 0.3,
             "w2": rng.standard_normal((C, M, 1, 1)).astype(np.float32) * 0.3}
    for j in range(2):
        inits.update({f"s{j}": rng.uniform(0.5, 1.5, M).astype(np.float32),
                      f"b{j}": rng.uniform(-0.2, 0.2, M).astype(np.float32),
                      f"m{j}": rng.uniform(-0.1, 0.1, M).astype(np.float32),
                      f"v{j}": rng.uniform(0.5, 1.5, M).astype(np.float32)})
    nodes = [helper.make_node("Conv", ["x", "w0"], ["c0"], pads=[1, 1, 1, 1]),
             helper.make_node("BatchNormalization", ["c0", "s0", "b0", "m0", "v0"], ["n0"]),
             helper.make_node("HardSwish", ["n0"], ["a0"]),
             helper.make_node("Conv", ["a0", "w1"], ["c1"], pads=[1, 1, 1, 1], group=M),
             helper.make_node("BatchNormalization", ["c1", "s1", "b1", "m1", "v1"], ["n1"]),
             helper.make_node("Relu", ["n1"], ["a1"]),
             helper.make_node("Conv", ["a1", "w2"], ["y"])]
    g = helper.make_graph(nodes, "block", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, C, 8, 8])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, C, 8, 8])],
                          [numpy_helper.from_array(v, k) for k, v in inits.items()])
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)


class _Reader:
    def __init__(self) -> None:
        rng = np.random.default_rng(3)
        self._it = iter([{"x": rng.standard_normal((1, 8, 8, 8)).astype(np.float32)} for _ in range(4)])

    def get_next(self) -> dict[str, np.ndarray] | None:
        return next(self._it, None)


def test_static_quantized_block_stays_nhwc(tmp_path) -> None:
    quantization = pytest.importorskip("onnxruntime.quantization")
    src, dst = tmp_path / "f.onnx", tmp_path / "q.onnx"
    onnx.save(_float_block(), src)
    quantization.quantize_static(src, dst, _Reader())
    model = onnx.load(str(dst))
    compiled = cnnjit.compile(model, entry="python")  # (the numba entry's cold compile is slow)
    ops = [n.op for n in compiled.ir.nodes]
    assert ops.count("QConvNHWC") == 3 and ops.count("Transpose") == 2, ops
    assert not {"BatchNormalization", "HardSwish", "Relu"} & set(ops), ops
    luts = [n for n in compiled.ir.nodes if n.op == "QLut"]
    assert luts and all(n.attrs["axis"] == 3 for n in luts)
    before = cnnjit.compile(model, disable=["qdq_lut"], entry="python")
    assert [n.op for n in before.ir.nodes].count("Transpose") > 2
    x = np.random.default_rng(5).standard_normal((1, 8, 8, 8)).astype(np.float32)
    y = compiled(x)
    np.testing.assert_array_equal(y, interpret(before.ir, [x])[0])
    np.testing.assert_array_equal(y, before(x))


@pytest.mark.parametrize("width", [4, 8, 16])
@pytest.mark.parametrize("rows", [1, 6])
def test_qlut_kernel_at_width(width: int, rows: int) -> None:
    rng = np.random.default_rng(width + rows)
    table = rng.integers(-128, 128, (rows, 256)).astype(np.int8)
    x = rng.integers(0, 256, (2, 5, 3, 6)).astype(np.uint8)
    y_ref = get_op("QLut").run([x, table], {"axis": 3})[0]
    expect = table[np.zeros_like(x) if rows == 1 else np.broadcast_to(np.arange(6), x.shape), x]
    np.testing.assert_array_equal(y_ref, expect)
    # a model whose only integer glue is the table: Q -> DQ -> HardSwish -> Q -> DQ on a per-tensor scale
    model = _chain_model(rng, ["HardSwish", "BatchNormalization"][: 1 if rows == 1 else 2], (2, 6, 3, 5), False)
    xf = rng.standard_normal((2, 6, 3, 5)).astype(np.float32)
    compiled = cnnjit.compile(model, vector_width=width)
    assert {c.variant for c in compiled._default_spec().program.calls if c.op == "QLut"} == {"qlut"}
    lut = next(n for n in compiled.ir.nodes if n.op == "QLut")
    assert lut.inputs[1].shape[0] == rows
    before = cnnjit.compile(model, disable=["qdq_lut"], entry="lazy").ir
    np.testing.assert_array_equal(compiled(xf), interpret(before, [xf])[0])


@_SETTINGS
@given(seed=st.integers(0, 2**31 - 1), n=st.integers(1, 2), c=st.integers(1, 19), hw=st.integers(1, 5),
       signed=st.booleans(), swap=st.booleans())
def test_channel_mul_exact(seed: int, n: int, c: int, hw: int, signed: bool, swap: bool) -> None:
    rng = np.random.default_rng(seed)
    zdt = np.int8 if signed else np.uint8
    inits = {}
    for tag in ("x", "s", "y"):
        inits[f"s_{tag}"] = np.array(rng.uniform(0.005, 0.05), np.float32)
        inits[f"z_{tag}"] = np.array(rng.integers(-60, 60) if signed else rng.integers(60, 190), zdt)
    nodes = [helper.make_node("QuantizeLinear", ["x", "s_x", "z_x"], ["qx"]),
             helper.make_node("DequantizeLinear", ["qx", "s_x", "z_x"], ["dx"]),
             helper.make_node("QuantizeLinear", ["g", "s_s", "z_s"], ["qs"]),
             helper.make_node("DequantizeLinear", ["qs", "s_s", "z_s"], ["ds"]),
             helper.make_node("Mul", ["ds", "dx"] if swap else ["dx", "ds"], ["p"]),
             helper.make_node("QuantizeLinear", ["p", "s_y", "z_y"], ["qy"]),
             helper.make_node("DequantizeLinear", ["qy", "s_y", "z_y"], ["y"])]
    xs, gs = [n, c, hw, hw + 1], [n, c, 1, 1]
    g = helper.make_graph(nodes, "se", [helper.make_tensor_value_info("x", TensorProto.FLOAT, xs),
                                        helper.make_tensor_value_info("g", TensorProto.FLOAT, gs)],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, xs)],
                          [numpy_helper.from_array(v, k) for k, v in inits.items()])
    model = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)
    x = (rng.standard_normal(xs) * 2).astype(np.float32)
    gate = rng.uniform(-0.5, 2, gs).astype(np.float32)
    compiled = cnnjit.compile(model, entry="python")
    ops = [nd.op for nd in compiled.ir.nodes]
    assert "QChannelMulNHWC" in ops and "Mul" not in ops, ops
    assert {cl.variant for cl in compiled._default_spec().program.calls if cl.op == "QChannelMulNHWC"} \
        == {"qchannel_mul"}
    before = cnnjit.compile(model, disable=["qdq_lut"], entry="lazy").ir
    y = compiled(x, gate)
    np.testing.assert_array_equal(y, interpret(before, [x, gate])[0])
    so = ort.SessionOptions()
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    sess = ort.InferenceSession(model.SerializeToString(), so, providers=["CPUExecutionProvider"])
    np.testing.assert_array_equal(y, sess.run(None, {"x": x, "g": gate})[0])


def test_qlut_shape_errors() -> None:
    infer = get_op("QLut").infer
    with pytest.raises(ShapeError):
        infer([TensorType(np.float32, (2, 3)), TensorType(np.uint8, (1, 256))], {"axis": 1})
    with pytest.raises(ShapeError):
        infer([TensorType(np.uint8, (2, 3)), TensorType(np.uint8, (2, 256))], {"axis": 1})
    with pytest.raises(ShapeError):
        infer([TensorType(np.uint8, (2, 3)), TensorType(np.uint8, (3, 255))], {"axis": 1})
    cm = get_op("QChannelMulNHWC").infer
    t = TensorType(np.float32, (256,))
    with pytest.raises(ShapeError):  # the gate must be [N, 1, 1, C]
        cm([TensorType(np.uint8, (1, 2, 2, 3)), TensorType(np.uint8, (1, 2, 1, 3)), t, t], {"dtype": "u8"})


def _silu_model(rng: np.random.Generator, shape: tuple[int, ...], signed: bool, combine: str,
                leak: bool) -> onnx.ModelProto:
    """``Q -> DQ -> v``, then ``combine(v, DQ(Q(Sigmoid(v))))`` -> Q -> DQ: onnxruntime's QDQ SiLU, whose float
    subgraph reads one quantized tensor twice; ``leak`` also outputs the inner quantized sigmoid."""
    zdt = np.int8 if signed else np.uint8
    lo, hi = (-128, 127) if signed else (0, 255)
    inits = {}
    for tag in ("in", "sig", "out"):
        inits[f"s_{tag}"] = np.array(rng.uniform(0.005, 0.05), np.float32)
        inits[f"z_{tag}"] = np.array(rng.integers(lo // 2, hi // 2 + 1), zdt)
    p = {tag: [f"s_{tag}", f"z_{tag}"] for tag in ("in", "sig", "out")}
    nodes = [helper.make_node("QuantizeLinear", ["x", *p["in"]], ["q0"]),
             helper.make_node("DequantizeLinear", ["q0", *p["in"]], ["v"]),
             helper.make_node("Sigmoid", ["v"], ["sg"]),
             helper.make_node("QuantizeLinear", ["sg", *p["sig"]], ["sq"]),
             helper.make_node("DequantizeLinear", ["sq", *p["sig"]], ["s"]),
             helper.make_node(combine, ["v", "s"], ["m"]),
             helper.make_node("QuantizeLinear", ["m", *p["out"]], ["q1"]),
             helper.make_node("DequantizeLinear", ["q1", *p["out"]], ["y"])]
    outs = [helper.make_tensor_value_info("y", TensorProto.FLOAT, list(shape))]
    if leak:
        outs.append(helper.make_tensor_value_info("sq", TensorProto.INT8 if signed else TensorProto.UINT8,
                                                  list(shape)))
    g = helper.make_graph(nodes, "silu", [helper.make_tensor_value_info("x", TensorProto.FLOAT, list(shape))], outs,
                          [numpy_helper.from_array(v, k) for k, v in inits.items()])
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)


@_SETTINGS
@given(seed=st.integers(0, 2**31 - 1), shape=st.sampled_from([(1, 5, 3, 4), (2, 3, 6), (3, 4)]),
       signed=st.booleans(), combine=st.sampled_from(["Mul", "Sub"]), leak=st.booleans())
def test_two_path_cone_becomes_one_table(seed: int, shape: tuple[int, ...], signed: bool, combine: str,
                                         leak: bool) -> None:
    """The whole SiLU (both paths from the one DequantizeLinear, the inner Q -> DQ pair included) becomes one
    ``QLut``, bit-exact against the IR reference of the graph without the pass and within one output step of
    onnxruntime. When the inner quantized value is also a graph output it is kept: the Sigmoid chain becomes
    a table and the combining op stays float, with the same bits. (``Add`` is left out: ``qdq_to_integer``
    makes ``DQ + DQ -> Add -> Q`` a ``QAdd`` first.)"""
    rng = np.random.default_rng(seed)
    model = _silu_model(rng, shape, signed, combine, leak)
    x = (rng.standard_normal(shape) * 2).astype(np.float32)
    compiled = cnnjit.compile(model)
    ops = [n.op for n in compiled.ir.nodes]
    if leak:
        assert combine in ops and "Sigmoid" not in ops
    else:
        assert sorted(ops) == ["DequantizeLinear", "QLut", "QuantizeLinear"], ops
    before = cnnjit.compile(model, disable=["qdq_lut"], entry="lazy").ir
    got = compiled.run(None, {"x": x})
    want = interpret(before, [x])
    for g, w in zip(got, want):
        np.testing.assert_array_equal(g, w)
    step = float(numpy_helper.to_array(next(i for i in model.graph.initializer if i.name == "s_out")))
    np.testing.assert_allclose(got[0], _ort_disable_all(model, x), rtol=0, atol=step * 1.01)
