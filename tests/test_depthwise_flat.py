"""``depthwise_flat``: stride-1 depthwise convolution on maps whose rows are narrower than a vector, the plane
as one flat run of pixel vectors, each tap a load masked by a compile-time lane pattern.

* Property test at every vector width (4, 8, 16) against the numpy reference (``reference_np.conv``):
  windows 1..7 (square and not), dilations 1 and 2 each way, any top/bottom padding (rows wholly in the
  padding), left/right padding that keeps the row width split either way, maps of 1..12 rows narrower than
  a vector (planes below, at and above a vector: the masked last store, tiles of several channels side by
  side), channel multipliers 1 and 2, channel counts that leave a last partial channel group, the fused
  epilogues (``test_depthwise_static._case_model``: Relu, Clip, HardSwish, HardSigmoid, SiLU, a residual
  Add); the variant is forced (its cost rule waived; layers the passes reshape into rows that change width
  are left out) and asserted to have run.
* The lane patterns (``tap_masks``) against a direct count of the taps inside the map.
* The default choice: the MLPerf keyword model's 25x5 3x3 layers and 6x6 maps at 16 lanes; not for a stride
  2, rows that change width, rows as wide as a vector or wider than ``MAX_COLUMNS`` (14x14 at 16 lanes),
  where ``depthwise_lanes`` applies, or where its estimate is not below ``ROWS_RATIO`` of the row kernel's
  (7x7 and 8x8 3x3; the keyword layers at 8 lanes).
"""

from __future__ import annotations

from unittest import mock

import numpy as np
from hypothesis import assume, given
from hypothesis import strategies as st
from kernel_cases import property_settings
from test_depthwise_static import _case_model
from test_simd_widths import applicable_variants, compile_variant

import cnnjit
from cnnjit.compiler.codegen.kernel import Target, choose
from cnnjit.compiler.codegen.kernels import depthwise_flat as flat

ACTS = [None, "Relu", "Clip", "HardSwish", "HardSigmoid", "SiLU", "Add"]


@st.composite
def flat_cases(draw, width: int):
    kh, kw = draw(st.sampled_from([(3, 3), (5, 5), (1, 3), (3, 1), (2, 2), (3, 5), (7, 7)]))
    dh, dw = draw(st.integers(1, 2)), draw(st.integers(1, 2))
    span_w = dw * (kw - 1)
    pl = draw(st.integers(0, span_w))
    pads = [draw(st.integers(0, dh * (kh - 1) + 1)), pl, draw(st.integers(0, dh * (kh - 1) + 1)), span_w - pl]
    w = draw(st.integers(1, width - 1))
    least = max(1, dh * (kh - 1) + 1 - pads[0] - pads[2])  # (a dilated 7x7 with little padding: 13 rows)
    h = draw(st.integers(least, max(12, least)))
    c = draw(st.integers(2, 11))
    return dict(c=c, m=c * draw(st.sampled_from([1, 1, 2])), kh=kh, kw=kw, s=[1, 1], d=[dh, dw], pads=pads, h=h,
                w=w, act=draw(st.sampled_from(ACTS)), seed=draw(st.integers(0, 2**16)))


def _check(width: int, case: dict) -> None:
    model, x, want, _ = _case_model(case)
    with mock.patch.object(flat, "ROWS_RATIO", float("inf")), mock.patch.object(flat, "MAX_COLUMNS", width), \
            mock.patch.object(flat, "depthwise_lanes_applies", lambda node, target: False):
        # (the passes can reshape a drawn layer: a 3x1 on a one-column map is a 1x3 on its one-row view)
        assume("depthwise_flat" in applicable_variants(model, "Conv", width))
        compiled = compile_variant(model, "Conv", width, force="depthwise_flat")
    np.testing.assert_allclose(compiled(x), want, rtol=1e-4, atol=1e-4 * max(1.0, float(np.abs(want).max())))


@property_settings(6)
@given(case=flat_cases(4))
def test_flat_at_width_4(case: dict) -> None:
    _check(4, case)


@property_settings(6)
@given(case=flat_cases(8))
def test_flat_at_width_8(case: dict) -> None:
    _check(8, case)


@property_settings(6)
@given(case=flat_cases(16))
def test_flat_at_width_16(case: dict) -> None:
    _check(16, case)


def _node(c: int, h: int, w: int, k: int, s: int = 1, pads: list[int] | None = None):
    model, _, _, _ = _case_model(dict(c=c, m=c, kh=k, kw=k, s=[s, s], pads=pads or [k // 2] * 4, h=h, w=w,
                                      act="Relu", seed=0))
    (node,) = [n for n in cnnjit.compile(model, vector_width=8, entry="lazy").ir.nodes if n.op == "Conv"]
    return node


AVX2, AVX512 = Target(vector_width=8, vector_registers=16), Target(vector_width=16, vector_registers=32)


def test_tap_masks_count_the_taps_inside_the_map() -> None:
    node = _node(4, 25, 5, 3)
    masks = flat.tap_masks(node, 16)
    assert len(masks) == 8  # 125 pixels: 7 whole vectors and 13 lanes
    inside = np.zeros((125, 9), bool)
    for p in range(125):
        oh, ow = divmod(p, 5)
        for t in range(9):
            i, j = divmod(t, 3)
            inside[p, t] = 0 <= oh + i - 1 < 25 and 0 <= ow + j - 1 < 5
    for v, row in enumerate(masks):
        for t, bits in enumerate(row):
            assert [bool(bits >> lane & 1) for lane in range(16)] == [
                v * 16 + lane < 125 and inside[v * 16 + lane, t] for lane in range(16)], (v, t)
    assert flat.flat_cost(node, 16) == 8 * 9  # every vector meets every tap somewhere


def test_default_on_small_maps_with_narrow_rows() -> None:
    """The keyword model's 64-channel 3x3 on 25x5 at 16 lanes (25 row vectors of 5 of 8 lanes against 125
    pixels in 8 vectors of 16) and MobileNet's 3x3 on 6x6."""
    assert choose(_node(64, 25, 5, 3), AVX512).name == "depthwise_flat"
    assert choose(_node(128, 6, 6, 3), AVX512).name == "depthwise_flat"


def test_not_for_strides_changing_rows_wide_rows_lanes_or_more_fmas() -> None:
    assert not flat.depthwise_flat_applies(_node(64, 26, 6, 3, s=2), AVX512)  # stride 2
    assert not flat.depthwise_flat_applies(_node(64, 25, 5, 3, pads=[1, 0, 1, 0]), AVX512)  # 5 -> 3 columns
    assert not flat.depthwise_flat_applies(_node(64, 25, 16, 3), AVX512)  # rows as wide as a vector
    assert not flat.depthwise_flat_applies(_node(384, 14, 14, 3), AVX512)  # 14 columns: the row kernel's 16 lanes
    assert not flat.depthwise_flat_applies(_node(64, 25, 8, 3), AVX2)
    lanes = _node(576, 7, 7, 5)  # MobileNetV3's 5x5 on 7x7: channels in the lanes
    assert choose(lanes, AVX512).name == "depthwise_lanes"
    for hw in (7, 8):  # 3x3 on 7x7 (4 vectors, 31 pairs, against 19 rows x 3 columns: a tie measured) and 8x8
        node = _node(64, hw, hw, 3)
        assert flat.ROWS_RATIO * flat.rows_cost(node, 8) <= flat.flat_cost(node, 16) < flat.rows_cost(node, 8)
        assert choose(node, AVX512).name == choose(node, AVX2).name == "simd_depthwise_static"
    keyword = _node(64, 25, 5, 3)  # at 8 lanes: 16 vectors, 141 pairs, against 73 rows x 3 columns
    assert choose(keyword, AVX2).name == "simd_depthwise_static"
