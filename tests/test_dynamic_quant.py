"""DynamicQuantizeLinear, and the ConvInteger / MatMulInteger chains onnxruntime's ``quantize_dynamic`` writes.

DynamicQuantizeLinear is compared with onnxruntime exactly (the uint8 data, the float32 scale and the zero
point) over hypothesis-drawn shapes and value ranges (mixed signs, all positive, all negative, all zero),
and with ``onnx.reference`` (whose scale for an all-zero input is 1/255, not onnxruntime's 1). Whole
models quantized by ``quantize_dynamic`` (default options) are compared with onnxruntime running the same
quantized model.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest
from hypothesis import given
from hypothesis import strategies as st
from kernel_cases import property_settings
from onnx import TensorProto, helper, numpy_helper
from onnx.reference import ReferenceEvaluator

import cnnjit

ort = pytest.importorskip("onnxruntime")
quantization = pytest.importorskip("onnxruntime.quantization")


def _session(model: onnx.ModelProto):
    so = ort.SessionOptions()
    so.intra_op_num_threads = 1
    return ort.InferenceSession(model.SerializeToString(), so, providers=["CPUExecutionProvider"])


def dql_model(shape: tuple[int, ...]) -> onnx.ModelProto:
    node = helper.make_node("DynamicQuantizeLinear", ["x"], ["y", "s", "z"])
    graph = helper.make_graph(
        [node], "dql", [helper.make_tensor_value_info("x", TensorProto.FLOAT, list(shape))],
        [helper.make_tensor_value_info("y", TensorProto.UINT8, None),
         helper.make_tensor_value_info("s", TensorProto.FLOAT, None),
         helper.make_tensor_value_info("z", TensorProto.UINT8, None)])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)], ir_version=8)


@property_settings(20)
@given(shape=st.lists(st.integers(1, 9), min_size=1, max_size=3).map(tuple),
       kind=st.sampled_from(["mixed", "positive", "negative", "zero", "wide"]), seed=st.integers(0, 2**16))
def test_dynamic_quantize_linear_matches_onnxruntime_exactly(shape: tuple[int, ...], kind: str, seed: int) -> None:
    rng = np.random.default_rng(seed)
    x = rng.normal(size=shape).astype(np.float32)
    x = {"mixed": x, "positive": np.abs(x) + 0.5, "negative": -np.abs(x) * 3, "zero": x * 0,
         "wide": x * 1e4 - 17.0}[kind].astype(np.float32)
    model = dql_model(shape)
    compiled = cnnjit.compile(model)
    assert {c.variant for c in compiled._default_spec().program.calls} == {"dynamic_quantize"}
    got = compiled.run(None, {"x": x})
    ref = ReferenceEvaluator(model).run(None, {"x": x})
    if kind == "zero":  # an empty range: onnxruntime's scale is 1, onnx.reference's 1/255 (the data is all 0)
        ref[1] = np.float32(1.0)
    for want in (_session(model).run(None, {"x": x}), ref):
        for g, w in zip(got, want):
            assert g.dtype == w.dtype and g.shape == np.shape(w)
            np.testing.assert_array_equal(g, w)


def _float_model() -> onnx.ModelProto:
    """Conv 3x3 -> Relu -> Conv 1x1 (+ residual Add) -> Reshape -> MatMul: the ops quantize_dynamic rewrites."""
    rng = np.random.default_rng(7)
    inits = {"w1": rng.normal(0, 0.3, (8, 3, 3, 3)), "b1": rng.normal(0, 0.1, 8),
             "w2": rng.normal(0, 0.3, (8, 8, 1, 1)), "b2": rng.normal(0, 0.1, 8),
             "m": rng.normal(0, 0.2, (8 * 6 * 6, 10)),
             "shape": np.array([1, 8 * 6 * 6], np.int64)}
    nodes = [helper.make_node("Conv", ["x", "w1", "b1"], ["c1"], pads=[1, 1, 1, 1], strides=[2, 2]),
             helper.make_node("Relu", ["c1"], ["r1"]),
             helper.make_node("Conv", ["r1", "w2", "b2"], ["c2"]),
             helper.make_node("Add", ["c2", "r1"], ["a"]),
             helper.make_node("Reshape", ["a", "shape"], ["f"]),
             helper.make_node("MatMul", ["f", "m"], ["y"])]
    graph = helper.make_graph(
        nodes, "qdyn", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 12, 12])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
        initializer=[numpy_helper.from_array(v if v.dtype == np.int64 else v.astype(np.float32), k)
                     for k, v in inits.items()])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)], ir_version=8)


@pytest.mark.parametrize("fuse", [True, False])
@pytest.mark.parametrize("options", [{}, {"per_channel": True, "reduce_range": True}])
def test_quantize_dynamic_model_matches_onnxruntime(options: dict, fuse: bool, tmp_path: Path) -> None:
    """Fused, the integer_to_float pass runs the ConvInteger / MatMulInteger chains as float Conv / Gemm;
    unfused, the exact integer kernels run. Both match onnxruntime to float32 rounding."""
    src, dst = tmp_path / "f.onnx", tmp_path / "q.onnx"
    onnx.save(_float_model(), src)
    quantization.quantize_dynamic(str(src), str(dst), **options)
    q = onnx.load(dst)
    ops = {n.op_type for n in q.graph.node}
    assert {"DynamicQuantizeLinear", "ConvInteger", "MatMulInteger"} <= ops, ops
    compiled = cnnjit.compile(q, fuse=fuse)
    ran = {c.op for c in compiled._default_spec().program.calls}
    integer = {"ConvInteger", "MatMulInteger"}
    assert (ran & integer == set() and {"Conv", "Gemm"} <= ran) if fuse else integer <= ran, ran
    for seed in range(3):
        x = np.random.default_rng(seed).normal(size=(1, 3, 12, 12)).astype(np.float32)
        (want,) = _session(q).run(None, {"x": x})
        (got,) = compiled.run(None, {"x": x})
        np.testing.assert_allclose(got, want, rtol=0, atol=1e-5 * float(np.abs(want).max()))
