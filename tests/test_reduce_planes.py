"""``reduce_planes``: ReduceSum / ReduceMean over the trailing contiguous axes (a global pool over H, W; a mean
over the last axis) in vector accumulators, against a float64 numpy sum at every vector width, the variant
asserted; and where other kernels stay (planes shorter than a vector, reduced axes that are not trailing)."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from kernel_cases import property_settings
from test_reduce_rows import reduce_model, run_drawn, variants

import cnnjit


@st.composite
def cases(draw, width: int):
    """A rank-2..4 shape whose last 1-3 axes are reduced (at least ``width`` elements in all)."""
    rank = draw(st.integers(2, 4))
    nred = draw(st.integers(1, rank - 1))
    kept = [draw(st.integers(1, 5)) for _ in range(rank - nred)]
    red = [draw(st.integers(1, 9)) for _ in range(nred - 1)]
    last = draw(st.integers(max(1, -(-width // max(1, int(np.prod(red))))), 4 * width + 3))
    return (draw(st.sampled_from(["ReduceSum", "ReduceMean"])), (*kept, *red, last),
            list(range(rank - nred, rank)), draw(st.integers(0, 1)), draw(st.integers(0, 2**16)))


@pytest.mark.parametrize("width", [4, 8, 16])
@property_settings(max_examples=10)
@given(data=st.data())
def test_reduce_planes_matches_numpy(width: int, data) -> None:
    op, shape, axes, keepdims, x, _, got = run_drawn(data, cases, width, "reduce_planes")
    ref = x.astype(np.float64).sum(axis=tuple(axes), keepdims=bool(keepdims))
    count = int(np.prod([shape[a] for a in axes]))
    if op == "ReduceMean":
        ref = ref / count
    assert got.shape == ref.shape
    scale = np.abs(x.astype(np.float64)).sum(axis=tuple(axes), keepdims=bool(keepdims))
    if op == "ReduceMean":
        scale = scale / count
    assert np.all(np.abs(got - ref) <= 1e-5 * scale + 1e-30), np.max(np.abs(got - ref) / scale)


@pytest.mark.parametrize(("shape", "axes", "variant"), [((1, 16, 7), [2], "reduce_mean"),
                                                        ((2, 16, 32), [0, 2], "reduce_mean"),
                                                        ((1, 16, 4, 8), [2], "reduce_rows")])
def test_other_kernels_elsewhere(shape: tuple[int, ...], axes: list[int], variant: str) -> None:
    """Planes shorter than a vector (7 < 8 lanes), two reduced runs, and a kept trailing row keep their kernel."""
    compiled = cnnjit.compile(reduce_model("ReduceMean", shape, axes, 1), vector_width=8, entry="lazy")
    assert variants(compiled) == {variant}
