"""ReduceSum / ReduceMax / ReduceMin / ReduceMean kernels against onnxruntime over shapes, axes, keepdims."""

from __future__ import annotations

import numpy as np
import onnxruntime as ort
import pytest
from hypothesis import given
from hypothesis import strategies as st
from onnx import TensorProto, helper, numpy_helper

import cnnjit


@st.composite
def cases(draw):
    rank = draw(st.integers(1, 4))
    shape = tuple(draw(st.lists(st.integers(1, 5), min_size=rank, max_size=rank)))
    axes = sorted(draw(st.sets(st.integers(-rank, rank - 1), min_size=1, max_size=rank)) ,
                  key=lambda a: a % rank)
    axes = list(dict.fromkeys(a % rank for a in axes))
    return shape, axes, draw(st.integers(0, 1)), draw(st.integers(0, 2**16))


@pytest.mark.parametrize("op", ["ReduceSum", "ReduceMax", "ReduceMin", "ReduceMean"])
@given(case=cases())
def test_reduce_matches_onnxruntime(op: str, case) -> None:
    shape, axes, keepdims, seed = case
    x = np.random.default_rng(seed).standard_normal(shape).astype(np.float32)
    node = helper.make_node(op, ["x", "axes"], ["y"], keepdims=keepdims)
    g = helper.make_graph([node], "r", [helper.make_tensor_value_info("x", TensorProto.FLOAT, shape)],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
                          [numpy_helper.from_array(np.array(axes, np.int64), "axes")])
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 18)], ir_version=8)
    ref = ort.InferenceSession(m.SerializeToString()).run(None, {"x": x})[0]
    got = cnnjit.compile(m)(x)
    assert got.shape == ref.shape
    np.testing.assert_allclose(got, ref, rtol=1e-5, atol=1e-5)
