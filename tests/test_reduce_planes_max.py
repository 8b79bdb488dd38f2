"""``reduce_planes_max``: ReduceMax / ReduceMin over the trailing contiguous axes (a text recognizer's max over
classes, basic-pitch's normalisation range, effword's) in vector accumulators with the plane's last vector
loaded ending at its end, against numpy at every vector width, the variant asserted; planes shorter than a
vector keep the generic kernel."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from kernel_cases import property_settings
from test_reduce_planes import cases as sum_cases
from test_reduce_rows import reduce_model, run_drawn, variants

import cnnjit


@st.composite
def cases(draw, width: int):
    """``test_reduce_planes``'s shapes (at least ``width`` reduced elements, tails of every length) with
    ReduceMax or ReduceMin."""
    _, shape, axes, keepdims, seed = draw(sum_cases(width))
    return draw(st.sampled_from(["ReduceMax", "ReduceMin"])), shape, axes, keepdims, seed


@pytest.mark.parametrize("width", [4, 8, 16])
@property_settings(max_examples=10)
@given(data=st.data())
def test_reduce_planes_max_matches_numpy(width: int, data) -> None:
    """Exactly numpy's max / min (a selection: no rounding)."""
    op, shape, axes, keepdims, x, _, got = run_drawn(data, cases, width, "reduce_planes_max")
    ref = (np.max if op == "ReduceMax" else np.min)(x, axis=tuple(axes), keepdims=bool(keepdims))
    assert got.shape == ref.shape
    np.testing.assert_array_equal(got, ref)


def test_short_planes_keep_the_generic_kernel() -> None:
    """Planes of 7 elements at 8 lanes stay on the generic kernel."""
    compiled = cnnjit.compile(reduce_model("ReduceMax", (1, 16, 7), [2], 1), vector_width=8, entry="lazy")
    assert variants(compiled) == {"reduce_mean"}
