"""DynamicQuantizeLinear, and the ConvInteger / MatMulInteger chains onnxruntime's ``quantize_dynamic`` writes.

DynamicQuantizeLinear is compared with onnxruntime exactly (the uint8 data, the float32 scale and the zero
point) over hypothesis-drawn shapes and value ranges (mixed signs, all positive, all negative, all zero),
and with ``onnx.reference`` (whose scale for an all-zero input is 1/255, not onnxruntime's 1). Whole
models quantized by ``quantize_dynamic`` (default options) are compared with onnxruntime running the same
quantized model.
"""

from __future__ import annotations

from dataclasses import replace
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
from cnnjit.compiler.codegen.emit import generate
from cnnjit.compiler.stages import CompileOptions
from cnnjit.ir import Graph, Node, TensorType, Value
from cnnjit.runtime.model import Specialization

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
       kind=st.sampled_from(["mixed", "positive", "negative", "zero", "wide"]), seed=st.integers(0, 2**16),
       name=st.sampled_from(["simd_dynamic_quantize", "dynamic_quantize"]))
def test_dynamic_quantize_linear_matches_onnxruntime_exactly(shape: tuple[int, ...], kind: str, seed: int,
                                                             name: str) -> None:
    rng = np.random.default_rng(seed)
    x = rng.normal(size=shape).astype(np.float32)
    x = {"mixed": x, "positive": np.abs(x) + 0.5, "negative": -np.abs(x) * 3, "zero": x * 0,
         "wide": x * 1e4 - 17.0}[kind].astype(np.float32)
    model = dql_model(shape)
    compiled = cnnjit.compile(model, variants={"DynamicQuantizeLinear": name})
    assert {c.variant for c in compiled._default_spec().program.calls} == {name}
    got = compiled.run(None, {"x": x})
    ref = ReferenceEvaluator(model).run(None, {"x": x})
    if kind == "zero":  # an empty range: onnxruntime's scale is 1, onnx.reference's 1/255 (the data is all 0)
        ref[1] = np.float32(1.0)
    for want in (_session(model).run(None, {"x": x}), ref):
        for g, w in zip(got, want):
            assert g.dtype == w.dtype and g.shape == np.shape(w)
            np.testing.assert_array_equal(g, w)



def _dql_numpy(x: np.ndarray) -> tuple[np.ndarray, np.float32, np.uint8]:
    """DynamicQuantizeLinear written from the ONNX text (apart from the kernels and ``ir/ops``): the range
    ``[min(x, 0), max(x, 0)]``, scale = range / 255 (1 for an empty range, as onnxruntime), zero point and
    data rounded half to even, all in float32."""
    lo, hi = np.float32(min(0.0, float(x.min()))), np.float32(max(0.0, float(x.max())))
    scale = np.float32(1.0) if hi == lo else np.float32(hi - lo) / np.float32(255.0)
    zp = np.float32(np.round(np.clip(np.float32(0.0) - lo / scale, 0, 255)))
    return np.clip(np.round(x / scale) + zp, 0, 255).astype(np.uint8), scale, np.uint8(zp)


@property_settings(30)
@given(n=st.integers(1, 300), width=st.sampled_from([4, 8, 16]), seed=st.integers(0, 2**31 - 1),
       kind=st.sampled_from(["normal", "positive", "negative", "levels"]))
def test_simd_dynamic_quantize_every_width(n: int, width: int, seed: int, kind: str) -> None:
    """The vector kernel at 4, 8 and 16 lanes (tails of every length), asserted to have run, against the
    numpy reference and onnxruntime exactly (bytes, scale, zero point)."""
    rng = np.random.default_rng(seed)
    x = rng.normal(0, 3, n).astype(np.float32)
    x = {"normal": x, "positive": np.abs(x) + 0.25, "negative": -np.abs(x),
         "levels": np.round(x * 4) / 4}[kind].astype(np.float32)  # repeated values, many exact ties
    g = Graph("t")
    xv = g.add_input(TensorType(x.dtype, x.shape), "x")
    outs = [Value(TensorType(np.dtype(np.uint8), x.shape), "y"), Value(TensorType(np.dtype(np.float32), ()), "s"),
            Value(TensorType(np.dtype(np.uint8), ()), "z")]
    g.add_node(Node("DynamicQuantizeLinear", [xv], outs, {}))
    g.outputs = outs
    target = replace(CompileOptions().host_target(), vector_width=width, int_width=width,
                     vector_registers=32 if width == 16 else 16,
                     variants=(("DynamicQuantizeLinear", "simd_dynamic_quantize"),))
    prog = generate(g, target)
    assert [c.variant for c in prog.calls] == ["simd_dynamic_quantize"]
    got = Specialization(g, prog).run({"x": x})
    for want in (_dql_numpy(x), _session(dql_model((n,))).run(None, {"x": x})):
        for a, b in zip(got, want):
            np.testing.assert_array_equal(a, np.asarray(b))


def test_dynamic_quantize_default_is_the_vector_kernel() -> None:
    compiled = cnnjit.compile(dql_model((3, 40)))
    assert [c.variant for c in compiled._default_spec().program.calls] == ["simd_dynamic_quantize"]

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
