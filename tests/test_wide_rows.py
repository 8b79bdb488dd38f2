"""Convolutions whose kernel row is wider than the kernels unroll (a 1-D filter bank's 1xK rows, K up to 256:
basic-pitch's constant-Q transform): ``simd_conv`` and ``cblock`` loop over such a row's taps in their interior
tiles instead of unrolling them (``MAX_UNROLLED_TAPS``; unrolled, one 256-tap kernel was 3458 lines and took
numba minutes). Hypothesis cases at every vector width against the float64 numpy reference, the forced variant
asserted, with pads so the border tiles (still unrolled, taps outside the row left out) run beside the loop."""

from __future__ import annotations

import numpy as np
import pytest
import reference_np as ref
from hypothesis import given, settings
from hypothesis import strategies as st
from onnx import TensorProto, helper, numpy_helper
from test_simd_widths import applicable_variants

import cnnjit
from cnnjit.compiler.codegen.kernels import simd_cblock, simd_conv

WIDTHS = [4, 8, 16]
LIMITS = {"simd_conv": simd_conv.MAX_UNROLLED_TAPS, "cblock": simd_cblock.MAX_UNROLLED_TAPS}


@st.composite
def wide_rows(draw, variant: str, width: int) -> dict:
    kw = draw(st.integers(LIMITS[variant] + 1, 40))
    s = 2 if variant == "cblock" else draw(st.sampled_from([1, 2]))  # where cblock applies: stride 2
    d = draw(st.sampled_from([1, 1, 2]))
    pw = draw(st.integers(0, 3))
    # cblock: a row long enough for a tile inside both borders (its widest tile is 13 pixels)
    ow = draw(st.integers(27, 30) if variant == "cblock" else st.integers(1, 3 * width))
    right = 0 if variant == "cblock" else draw(st.integers(0, 3))
    least = -(-simd_cblock.MIN_DEPTH // kw) if variant == "cblock" else 1  # cblock's least reduction depth
    return dict(c=draw(st.integers(least, least + 2)), m=2 * width * draw(st.integers(1, 2)), h=draw(st.integers(1, 2)),
                kw=kw, s=s, d=d, pads=[0, pw, 0, right],
                w=max(1, (ow - 1) * s + (kw - 1) * d + 1 - pw), seed=draw(st.integers(0, 2**16)))


def _model(case: dict) -> tuple:
    rng = np.random.default_rng(case["seed"])
    x = rng.standard_normal((1, case["c"], case["h"], case["w"])).astype(np.float32)
    wt = rng.standard_normal((case["m"], case["c"], 1, case["kw"])).astype(np.float32)
    b = rng.standard_normal(case["m"]).astype(np.float32)
    strides, dil = [1, case["s"]], [1, case["d"]]
    expected = ref.conv(x, wt, b, strides=strides, pads=case["pads"], dilations=dil)
    node = helper.make_node("Conv", ["x", "w", "b"], ["y"], kernel_shape=[1, case["kw"]], strides=strides,
                            dilations=dil, pads=case["pads"])
    graph = helper.make_graph([node], "m", [helper.make_tensor_value_info("x", TensorProto.FLOAT, list(x.shape))],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
                              [numpy_helper.from_array(wt, "w"), numpy_helper.from_array(b, "b")])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)], ir_version=8), x, expected


@pytest.mark.parametrize("variant", sorted(LIMITS))
@pytest.mark.parametrize("width", WIDTHS)
@settings(max_examples=2, deadline=None)
@given(data=st.data())
def test_wide_kernel_rows_loop_over_their_taps(variant: str, width: int, data) -> None:
    case = data.draw(wide_rows(variant, width), label="case")
    model, x, expected = _model(case)
    assert variant in applicable_variants(model, "Conv", width), case
    compiled = cnnjit.compile(model, vector_width=width, variants={"Conv": variant})
    prog = compiled._default_spec().program
    (call,) = [c for c in prog.calls if c.op == "Conv"]
    assert call.variant == variant
    # the taps of an interior tile are one loop: the kernel's source does not grow with the row's width
    loop = {"simd_conv": "for j in range({})", "cblock": "for kw in range({})"}[variant].format(case["kw"])
    assert loop in prog.kernel_sources[call.kernel]
    got = compiled(x)
    np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-4 * max(1.0, float(np.abs(expected).max())))
