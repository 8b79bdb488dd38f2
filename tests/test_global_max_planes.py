"""The vectorised GlobalMaxPool (``global_max_planes``, ``kernels/nn_extra.py``): at every vector width over
plane sizes from one vector to past four (a last vector loaded ending at the plane's end), batch and channels,
with NaN and infinite elements (a NaN plane gives NaN, as the scalar ``global_pool``; infinities only under a
fused activation),
against numpy's max; the variant asserted. Planes shorter than a vector stay on ``global_pool``."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from kernel_cases import property_settings
from onnx import TensorProto, helper

import cnnjit

WIDTHS = [4, 8, 16]


def gmp_model(shape: tuple[int, ...], act: str | None):
    nodes = [helper.make_node("GlobalMaxPool", ["x"], ["p" if act else "y"])]
    if act:
        nodes.append(helper.make_node(act, ["p"], ["y"]))
    g = helper.make_graph(nodes, "gmp", [helper.make_tensor_value_info("x", TensorProto.FLOAT, list(shape))],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)])
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])


def variants(model) -> set[str]:
    return {c.variant for c in model._default_spec().program.calls}


@pytest.mark.parametrize("width", WIDTHS)
@property_settings(max_examples=8)
@given(n=st.integers(1, 2), c=st.integers(1, 5), h=st.integers(1, 9), data=st.data(),
       specials=st.lists(st.sampled_from([np.nan, np.inf, -np.inf]), max_size=3),
       act=st.sampled_from([None, "Relu", "Sigmoid"]), seed=st.integers(0, 2**16))
def test_global_max_planes_at_width(width: int, n: int, c: int, h: int, data, specials: list, act, seed: int) -> None:
    w = data.draw(st.integers(-(-width // h), 5 * width // h + 3), "w")  # planes of a vector and more
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n, c, h, w)).astype(np.float32)
    for s in specials if act is None else [s for s in specials if not np.isnan(s)]:  # (an epilogue's NaN rule is
        x[rng.integers(n), rng.integers(c), rng.integers(h), rng.integers(w)] = s   # its own: test_pool_epilogue)
    model = cnnjit.compile(gmp_model(x.shape, act), vector_width=width)
    assert variants(model) == {"global_max_planes"}
    m = x.reshape(n, c, -1).max(axis=2).astype(np.float64)  # numpy: NaN wherever the plane holds one
    expected = {None: m, "Relu": np.maximum(m, 0.0), "Sigmoid": 1.0 / (1.0 + np.exp(-m))}[act]
    got = model(x).reshape(n, c).astype(np.float64)
    np.testing.assert_array_equal(np.isnan(got), np.isnan(expected))
    np.testing.assert_allclose(got[~np.isnan(got)], expected[~np.isnan(expected)], rtol=1e-6, atol=1e-7)


def test_short_planes_stay_scalar() -> None:
    """A plane shorter than a vector (3x1 at 4 lanes) runs the scalar ``global_pool``."""
    model = cnnjit.compile(gmp_model((1, 2, 3, 1), None), vector_width=4)
    assert variants(model) == {"global_pool"}
