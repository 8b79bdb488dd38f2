"""``depthwise_lanes``: depthwise convolution on small maps with the channels as the vector lanes.

* Property test at every vector width (4, 8, 16) against the numpy reference (``reference_np.conv``):
  windows 2..7 (square and not), strides 1 and 2 along each axis, asymmetric padding up to ``k // 2 + 1``
  (taps wholly in the padding), maps of 1..8 rows whose output rows are narrower than a row vector, channel
  counts from one vector up with and without a last partial group (its lanes past the last channel), pixel
  counts below, at and above a vector (the transposes' element-by-element tails), the epilogues in
  registers (Relu, Clip, HardSwish, HardSigmoid, SiLU); asserts the variant ran.
* Applicability: the default for the small maps of MobileNetV3 (7x7 5x5, 4x4, 2x2, the stride-2 5x5 into
  4x4) at AVX2 and AVX-512; not for rows as wide as a vector, a residual epilogue, a channel multiplier, fewer
  channels than a vector, or where its FMA estimate is the higher (3x3 on 7x7).
"""

from __future__ import annotations

import numpy as np
from hypothesis import assume, given
from hypothesis import strategies as st
from kernel_cases import property_settings
from test_depthwise_static import _case_model
from test_simd_widths import applicable_variants, compile_variant

import cnnjit
from cnnjit.compiler.codegen.kernel import Target, choose
from cnnjit.compiler.codegen.kernels.depthwise_lanes import depthwise_lanes_applies, lanes_cost, rows_cost

WIDTHS = (4, 8, 16)
ACTS = [None, "Relu", "Clip", "HardSwish", "HardSigmoid", "SiLU"]


@st.composite
def lanes_cases(draw, width: int):
    kh, kw = draw(st.sampled_from([(3, 3), (5, 5), (2, 2), (3, 5), (7, 7)]))
    s = [draw(st.integers(1, 2)) for _ in "hw"]
    pads = [draw(st.integers(0, k // 2 + 1)) for k in (kh, kw, kh, kw)]
    max_ow = 3 if width == 4 else 7  # rows narrower than a row vector (of 8 lanes at width 16)
    oh, ow = draw(st.integers(1, 8)), draw(st.integers(1, max_ow))
    h = max(1, (oh - 1) * s[0] + kh - pads[0] - pads[2])
    w = max(1, (ow - 1) * s[1] + kw - pads[1] - pads[3])
    lanes = min(width, 8)  # (row_width: 8 lanes at width 16)
    c = draw(st.sampled_from([lanes, lanes + 3, 2 * lanes + 1]))
    return dict(c=c, m=c, kh=kh, kw=kw, s=s, pads=pads, h=h, w=w, act=draw(st.sampled_from(ACTS)),
                seed=draw(st.integers(0, 2**16)))


def _check(width: int, case: dict) -> None:
    model, x, want, _ = _case_model(case)
    assume("depthwise_lanes" in applicable_variants(model, "Conv", width))  # (its FMA estimate can refuse)
    compiled = compile_variant(model, "Conv", width, force="depthwise_lanes")
    np.testing.assert_allclose(compiled(x), want, rtol=1e-4, atol=1e-4 * max(1.0, float(np.abs(want).max())))


@property_settings(4)
@given(case=lanes_cases(4))
def test_lanes_at_width_4(case: dict) -> None:
    _check(4, case)


@property_settings(4)
@given(case=lanes_cases(8))
def test_lanes_at_width_8(case: dict) -> None:
    _check(8, case)


@property_settings(3)
@given(case=lanes_cases(16))
def test_lanes_at_width_16(case: dict) -> None:
    _check(16, case)


def _node(c: int, h: int, w: int, k: int, s: int, act: str | None = "HardSwish", m: int | None = None):
    model, _, _, _ = _case_model(dict(c=c, m=m or c, kh=k, kw=k, s=[s, s], pads=[k // 2] * 4, h=h, w=w, act=act,
                                      seed=0))
    (node,) = [n for n in cnnjit.compile(model, vector_width=8, entry="lazy").ir.nodes if n.op == "Conv"]
    return node


AVX2, AVX512 = Target(vector_width=8, vector_registers=16), Target(vector_width=16, vector_registers=32)


def test_default_for_small_maps() -> None:
    """MobileNetV3's depthwise layers on 7x7, 4x4 and 2x2 maps (and the stride-2 5x5 into 4x4) run with
    channels in the lanes at AVX2 and AVX-512 (row vectors of 8 lanes: 4 columns fill half; a 5x5 window on 7
    columns computes 20 taps in the padding per row)."""
    for shape in [(240, 4, 4, 5, 1), (96, 8, 8, 5, 2), (288, 4, 4, 5, 2), (20, 3, 3, 3, 1), (576, 7, 7, 5, 1)]:
        node = _node(*shape)
        for target in (AVX2, AVX512):
            assert choose(node, target).name == "depthwise_lanes", (shape, target.vector_width)
    # a 5x5 on a 2x2 map: ``conv_dead_taps`` drops the taps that read only padding (a 3x3, pads 1), where the
    # estimates tie (12 FMAs per channel each) and the row kernel, first by priority, is kept
    node = _node(576, 2, 2, 5, 1)
    assert node.attrs["kernel_shape"] == [3, 3] and lanes_cost(node, 8) == rows_cost(node, 8)
    assert choose(node, AVX2).name == "simd_depthwise_static"


def test_not_for_wide_rows_residuals_multipliers_few_channels_or_more_fmas() -> None:
    assert not depthwise_lanes_applies(_node(576, 9, 9, 5, 1), AVX2)  # 9 columns: more than a row vector
    assert not depthwise_lanes_applies(_node(64, 7, 7, 3, 1), AVX2)  # 3x3 on 7x7: the transposes cost more
    assert not depthwise_lanes_applies(_node(240, 4, 4, 5, 1, act="Add"), AVX2)  # a residual input
    assert not depthwise_lanes_applies(_node(16, 4, 4, 3, 1, m=32), AVX2)  # channel multiplier 2
    assert not depthwise_lanes_applies(_node(6, 4, 4, 3, 1), AVX2)  # fewer channels than a vector
    assert choose(_node(64, 7, 7, 3, 1), AVX2).name == "simd_depthwise_static"
