"""The vector QuantizeLinear / DequantizeLinear kernels (``simd_quantize`` / ``simd_dequantize``).

Hypothesis draws the shape, per-tensor or per-axis parameters, uint8 / int8, the zero points and the vector
width (4, 8, 16: the host runs all three as LLVM vectors); the inputs mix exact ties (``k + 0.5`` times a
power-of-two scale), values past both ends of the range, +-inf and NaN. Each example forces the variant,
asserts it ran and compares with onnxruntime's one-node model bit for bit (NaN included: onnxruntime's MLAS
kernel sends it to the low end of the range, +-inf to the ends) and with ``onnx.reference`` where the quotient
is below 2**30 (it wraps larger ones, infinities and NaN through an integer cast).
"""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from kernel_cases import property_settings
from onnx import TensorProto, helper, numpy_helper
from onnx.reference import ReferenceEvaluator
from test_qgemm16 import _const, _run_forced

from cnnjit.compiler.codegen.emit import generate
from cnnjit.compiler.stages import CompileOptions
from cnnjit.ir import Graph, Node, TensorType, Value
from cnnjit.runtime.model import Specialization

ort = pytest.importorskip("onnxruntime")

_SHORT = {np.dtype(np.uint8): "u8", np.dtype(np.int8): "i8"}
_ONNX = {np.dtype(np.uint8): TensorProto.UINT8, np.dtype(np.int8): TensorProto.INT8,
         np.dtype(np.float32): TensorProto.FLOAT}


def _run(op: str, x: np.ndarray, scale: np.ndarray, zp: np.ndarray, axis: int, out_dtype: np.dtype,
         width: int, variant: str) -> np.ndarray:
    """One ``op`` node generated at ``width`` on the forced ``variant``, asserted to have run."""
    g = Graph("t")
    xv = g.add_input(TensorType(x.dtype, x.shape), "x")
    y = Value(TensorType(np.dtype(out_dtype), x.shape), "y")
    attrs = {"axis": axis, "block_size": 0}
    if op == "QuantizeLinear":
        attrs.update(dtype=_SHORT[np.dtype(out_dtype)], precision=None)
    g.add_node(Node(op, [xv, _const(scale), _const(zp)], [y], attrs))
    g.outputs = [y]
    return _run_forced(g, op, variant, width, x)


def _oracles(op: str, x: np.ndarray, scale: np.ndarray, zp: np.ndarray, axis: int,
             out_dtype: np.dtype) -> tuple[np.ndarray, np.ndarray]:
    """onnxruntime's and onnx.reference's result of the same one-node model (opset 19)."""
    node = helper.make_node(op, ["x", "s", "z"], ["y"], axis=axis)
    graph = helper.make_graph(
        [node], "t", [helper.make_tensor_value_info("x", _ONNX[x.dtype], x.shape)],
        [helper.make_tensor_value_info("y", _ONNX[np.dtype(out_dtype)], x.shape)],
        [numpy_helper.from_array(scale, "s"), numpy_helper.from_array(zp, "z")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 19)])
    model.ir_version = 8
    so = ort.SessionOptions()
    so.intra_op_num_threads = 1
    sess = ort.InferenceSession(model.SerializeToString(), so, providers=["CPUExecutionProvider"])
    return sess.run(None, {"x": x})[0], ReferenceEvaluator(model).run(None, {"x": x})[0]


@st.composite
def _params(draw):
    """(x shape, axis or None for per tensor, scale, zero point, dtype, width, rng)."""
    width = draw(st.sampled_from([4, 8, 16]))
    dtype = np.dtype(draw(st.sampled_from([np.uint8, np.int8])))
    per_axis = draw(st.booleans())
    rng = np.random.default_rng(draw(st.integers(0, 2**31 - 1)))
    if per_axis:  # runs of at least a vector per channel, the last one partial or not
        shape = (draw(st.integers(1, 2)), draw(st.integers(1, 5)), draw(st.integers(width, 3 * width + 3)))
        axis, nq = 1, shape[1]
    else:
        shape = (draw(st.integers(1, 3)), draw(st.integers(1, 70)))
        axis, nq = 1, 1
    pow2 = draw(st.booleans())  # power-of-two scales make k + 0.5 exact ties after the division
    scale = (2.0 ** rng.integers(-8, 2, nq) if pow2 else rng.uniform(1e-3, 0.5, nq)).astype(np.float32)
    info = np.iinfo(dtype)
    zp = rng.integers(info.min, info.max + 1, nq).astype(dtype)
    if not per_axis:
        scale, zp = scale.reshape(()), zp.reshape(())
    return shape, axis, scale, zp, dtype, width, rng


@property_settings(40)
@given(p=_params(), nan=st.booleans())
def test_simd_quantize_matches_onnxruntime(p, nan: bool) -> None:
    shape, axis, scale, zp, dtype, width, rng = p
    s = np.broadcast_to(scale.reshape((-1, 1)) if scale.ndim else scale, shape[1:]).astype(np.float32)
    k = rng.integers(-400, 400, shape)
    x = np.where(rng.random(shape) < 0.5, (k + 0.5) * s, rng.normal(0, 80, shape) * s).astype(np.float32)
    special = [np.inf, -np.inf, 3e38, -3e38, 0.0, -0.0] + ([np.nan] if nan else [])
    flat = x.reshape(-1)
    pick = rng.random(flat.size) < 0.1
    flat[pick] = rng.choice(np.array(special, np.float32), int(pick.sum()))
    got = _run("QuantizeLinear", x, scale, zp, axis, dtype, width, "simd_quantize")
    want, ref = _oracles("QuantizeLinear", x, scale, zp, axis, dtype)
    np.testing.assert_array_equal(got, want)
    with np.errstate(over="ignore", invalid="ignore"):  # onnx.reference wraps quotients past int32
        small = np.abs(x / s) < 2.0**30
    np.testing.assert_array_equal(got[small], ref[small])


@property_settings(40)
@given(p=_params())
def test_simd_dequantize_matches_onnxruntime(p) -> None:
    shape, axis, scale, zp, dtype, width, rng = p
    info = np.iinfo(dtype)
    x = rng.integers(info.min, info.max + 1, shape).astype(dtype)
    x.reshape(-1)[:2] = [info.min, info.max][: x.size]
    got = _run("DequantizeLinear", x, scale, zp, axis, np.float32, width, "simd_dequantize")
    want, ref = _oracles("DequantizeLinear", x, scale, zp, axis, np.float32)
    np.testing.assert_array_equal(got, want)
    np.testing.assert_array_equal(got, ref)


def test_short_per_axis_runs_stay_scalar() -> None:
    """Per-axis parameters on the last axis (runs of one element) keep the scalar kernels."""
    x = np.linspace(-3, 3, 24, dtype=np.float32).reshape(2, 12)
    scale, zp = np.full(12, 0.05, np.float32), np.zeros(12, np.uint8)
    g = Graph("t")
    xv = g.add_input(TensorType(x.dtype, x.shape), "x")
    y = Value(TensorType(np.dtype(np.uint8), x.shape), "y")
    g.add_node(Node("QuantizeLinear", [xv, _const(scale), _const(zp)], [y],
                    {"axis": 1, "block_size": 0, "dtype": "u8", "precision": None}))
    g.outputs = [y]
    prog = generate(g, CompileOptions().host_target())
    assert [c.variant for c in prog.calls if c.op == "QuantizeLinear"] == ["quantize"]
    want = _oracles("QuantizeLinear", x, scale, zp, 1, np.uint8)[0]
    np.testing.assert_array_equal(Specialization(g, prog).run({"x": x})[0], want)
