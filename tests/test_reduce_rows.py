"""``reduce_rows``: ReduceSum / ReduceMean over outer axes of kept contiguous rows (NCHW's channel axis; magika's
ReduceSum over 512 rows of 256) against onnxruntime at every vector width, the variant asserted; and where the
generic kernel stays (rows shorter than a vector, an inner axis reduced)."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import ort_session
from hypothesis import given
from hypothesis import strategies as st
from kernel_cases import property_settings
from onnx import TensorProto, helper, numpy_helper

import cnnjit


def reduce_model(op: str, shape: tuple[int, ...], axes: list[int], keepdims: int):
    node = helper.make_node(op, ["x", "axes"], ["y"], keepdims=keepdims)
    g = helper.make_graph([node], "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, list(shape))],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
                          [numpy_helper.from_array(np.array(axes, np.int64), "axes")])
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 18)])
    m.ir_version = 8  # opset 18: every Reduce op takes its axes as an input
    return m


def variants(compiled) -> set[str]:
    return {c.variant for c in compiled._default_spec().program.calls if c.op.startswith("Reduce")}


def run_drawn(data, strategy, width: int, variant: str):
    """A case drawn from ``strategy(width)`` (op, shape, axes, keepdims, seed), compiled at ``width`` lanes and
    run on seeded standard normal input, ``variant`` asserted: (op, shape, axes, keepdims, x, model, output)."""
    op, shape, axes, keepdims, seed = data.draw(strategy(width))
    x = np.random.default_rng(seed).standard_normal(shape).astype(np.float32)
    model = reduce_model(op, shape, axes, keepdims)
    compiled = cnnjit.compile(model, vector_width=width, threads=1)
    assert variants(compiled) == {variant}
    return op, shape, axes, keepdims, x, model, compiled.run(None, {"x": x})[0]


@st.composite
def cases(draw, width: int):
    """(N, C, H, W) reduced over C, or over (N, C) with N = 1, or a rank-3 (A, R, L) over R: rows of at
    least ``width``."""
    form = draw(st.sampled_from(["channels", "leading", "rank3"]))
    row = draw(st.integers(width, 3 * width + 3))
    if form == "rank3":
        shape, axes = (draw(st.integers(1, 3)), draw(st.integers(2, 40)), row), [1]
    else:
        h = draw(st.integers(1, 3))
        shape = (draw(st.integers(1, 2)) if form == "channels" else 1, draw(st.integers(2, 40)), h, row)
        axes = [1] if form == "channels" else [0, 1]
    return draw(st.sampled_from(["ReduceSum", "ReduceMean"])), shape, axes, draw(st.integers(0, 1)), draw(
        st.integers(0, 2**16))


@pytest.mark.parametrize("width", [4, 8, 16])
@property_settings(max_examples=12)
@given(data=st.data())
def test_reduce_rows_matches_onnxruntime(width: int, data) -> None:
    op, shape, axes, keepdims, x, model, got = run_drawn(data, cases, width, "reduce_rows")
    ref = ort_session(model).run(None, {"x": x})[0]
    assert got.shape == ref.shape
    np.testing.assert_allclose(got, ref, rtol=1e-5, atol=1e-5 * shape[1])


@pytest.mark.parametrize(("shape", "axes", "variant"), [((1, 16, 7), [1], "reduce_mean"),
                                                        ((1, 16, 32), [2], "reduce_planes"),
                                                        ((2, 16, 32), [0, 2], "reduce_mean")])
def test_generic_kernel_elsewhere(shape: tuple[int, ...], axes: list[int], variant: str) -> None:
    """Rows shorter than a vector (7 < 8 lanes) and reductions over the contiguous axis do not take
    ``reduce_rows``: the generic kernel, or ``reduce_planes`` for one trailing reduced run
    (tests/test_reduce_planes.py)."""
    compiled = cnnjit.compile(reduce_model("ReduceSum", shape, axes, 1), vector_width=8, entry="lazy")
    assert variants(compiled) == {variant}
