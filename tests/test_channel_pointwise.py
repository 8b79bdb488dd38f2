"""The output-channel-blocked pointwise convolution on small maps (``channel_pointwise``,
``kernels/channel_pointwise.py``): hypothesis cases over its parameter space (pixels from ``MIN_PIXELS`` to
``MAX_PIXELS`` with tail pixel tiles, output channels with a partial last panel, batch, fused activations
with SiLU and a gathered residual Add) at every vector width against the plain-numpy reference, each asserting
that ``channel_pointwise`` ran with its epilogue in registers; its register tile at every register budget;
and where the variant table picks it at the AVX2 and AVX-512 budgets."""

from __future__ import annotations

import re

import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st
from test_cblock import ACTS, _layer
from test_cblock import _check as check_variant
from test_register_tiles import BUDGETS
from test_register_tiles import _run as run_budget

from cnnjit.compiler.codegen.kernel import Target, choose
from cnnjit.compiler.codegen.kernels import packed_pointwise as pp
from cnnjit.compiler.codegen.kernels.channel_pointwise import (
    MIN_PIXELS,
    SMALL_PIXELS,
    channel_applies,
    lane_share,
    panel_width,
)
from cnnjit.compiler.codegen.kernels.packed_gemm import gemm_tile, row_tiles
from cnnjit.compiler.stages import CompileOptions

WIDTHS = [4, 8, 16]


@st.composite
def channel_cases(draw, width: int, registers: int):
    """Layers the variant applies to at ``width`` with ``registers``: maps of ``MIN_PIXELS`` to
    ``SMALL_PIXELS`` pixels (a tail of pixel tiles), output channels from one panel's worth minus a few to
    three panels (a partial last panel), or a few (narrower panels, ``panel_width``), any depth that
    ``packed_pointwise`` leaves (too few channels, rows or pixels for it)."""
    target = Target(vector_width=width, vector_registers=registers)
    _, nr = gemm_tile(target)
    h = draw(st.integers(1, 6))
    w = draw(st.integers(1, 6))
    assume(MIN_PIXELS <= h * w <= SMALL_PIXELS)
    m = draw(st.one_of(st.integers(1, 12), st.integers(max(1, nr * width - 5), 3 * nr * width)))
    pmr, pnr = pp.packed_tile(target)
    c, p = draw(st.integers(1, 40)), h * w
    small = p <= pp.SMALL_MAP and p % (4 * width) != 0
    if p >= pnr * width and ((c >= pp.MIN_CHANNELS and m >= pp.MIN_ROW_TILES * pmr) or (
            c >= pp.SHALLOW_CHANNELS and m >= pp.SHALLOW_ROW_TILES * pmr
            and (4 * (c + m) * p > pp.STREAM_BYTES or small))):
        c = draw(st.integers(1, pp.SHALLOW_CHANNELS - 1))  # packed_pointwise's layer: a shallower one
    return dict(n=draw(st.sampled_from([1, 1, 2])), c=c, m=m, g=1, k=1, s=1, d=1, h=h, w=w,
                pads=[0] * 4, act=draw(st.sampled_from(ACTS)), residual=draw(st.booleans()),
                seed=draw(st.integers(0, 2**16)))


@pytest.mark.parametrize("width", WIDTHS)
@settings(max_examples=5, deadline=None)
@given(data=st.data())
def test_channel_pointwise_matches_reference(width: int, data) -> None:
    registers = CompileOptions(vector_width=width).host_target().vector_registers
    case = data.draw(channel_cases(width, registers), label="case")
    check_variant(case, width, "channel_pointwise")


@pytest.mark.parametrize("width", WIDTHS)
def test_channel_pointwise_shallow_mid_maps(width: int) -> None:
    """Beyond ``SMALL_PIXELS``, on a map too shallow for ``packed_pointwise`` whose pixels leave
    ``simd_pointwise``'s rows part-filled: 9x11 (99 pixels: tail tiles at every register budget),
    with a residual and HardSwish, batch 2."""
    case = dict(n=2, c=pp.SHALLOW_CHANNELS - 1, m=2 * width + 3, g=1, k=1, s=1, d=1, h=9, w=11, pads=[0] * 4,
                act="HardSwish", residual=True, seed=3)
    check_variant(case, width, "channel_pointwise")


@pytest.mark.parametrize(("width", "registers"), BUDGETS)
@settings(max_examples=2, deadline=None)
@given(data=st.data())
def test_channel_tile_per_budget(width: int, registers: int, data) -> None:
    """At each register budget, the kernel computes a drawn case (batch 1) with ``gemm_tile``'s tile: ``mr``
    pixel rows of ``nr`` vectors in its source, within the register file."""
    case = data.draw(channel_cases(width, registers), label="case")
    case.update(n=1, act=data.draw(st.sampled_from([None, "Relu", "HardSwish"]), label="act"))
    src = run_budget(case, width, registers, "channel_pointwise")
    target = Target(vector_width=width, vector_registers=registers)
    mr, nr = gemm_tile(target)
    assert mr * nr + nr + 1 <= registers
    rows = {int(r) for r in re.findall(rf"\ba{nr * panel_width(case['m'], target)}_(\d+) = vfma", src)}
    full, tail = row_tiles(case["h"] * case["w"], mr)
    assert max(rows) + 1 == (mr if full else max(tail)), (rows, mr)


def test_lane_share() -> None:
    assert lane_share(4, 16) == 0.25 and lane_share(49, 16) == 49 / 64 and lane_share(96, 16) == 1.0


def test_panel_width() -> None:
    """The target's width where its panels are mostly busy, else 8, else 4."""
    avx2, avx512 = Target(vector_width=8, vector_registers=16), Target(vector_width=16, vector_registers=32)
    assert [panel_width(m, avx2) for m in (96, 40, 12, 8, 5)] == [8, 8, 8, 4, 4]
    assert [panel_width(m, avx512) for m in (96, 24, 40, 16, 8, 3)] == [16, 16, 8, 8, 4, 4]
    assert panel_width(8, Target(vector_width=4, vector_registers=32)) == 4


@pytest.mark.parametrize("target", [Target(vector_width=8, vector_registers=16),
                                    Target(vector_width=16, vector_registers=32)], ids=["avx2", "avx512"])
def test_variant_table_choice(target: Target) -> None:
    """channel_pointwise for MobileNetV3's 1x1s on 2x2 and 3x3 maps, and on maps up to 10x10 that
    ``packed_pointwise`` does not take (fewer channels, output rows or pixels than it needs: a 4x4 map is
    less than one strip of two 16-lane vectors); not on 1x1 maps (``packed_fc``), not where
    ``packed_pointwise`` applies (MobileNetV2's 7x7 layers, MobileNetV3's 4x4 ones at 8 lanes), not on larger
    maps."""
    for layer in ((576, 96, 2), (96, 576, 2), (96, 576, 3), (pp.SHALLOW_CHANNELS - 1, 72, 6), (96, 12, 10)):
        assert choose(_layer(*layer, 1, 1), target).name == "channel_pointwise", layer
    wide = "channel_pointwise" if target.vector_width == 16 else "packed_pointwise"
    assert choose(_layer(40, 240, 4, 1, 1), target).name == wide
    # at 16 lanes maps of fewer than 2 whole strips (64 pixels, pp.WIDE_STRIPS), 6x6 and 7x7, are this one's
    key = (target.vector_width, target.vector_registers)
    small = "channel_pointwise" if key in pp.WIDE_STRIPS else "packed_pointwise"
    for layer in ((24, 72, 6), (40, 40, 7), (96, 24, 10)):
        assert choose(_layer(*layer, 1, 1), target).name == (small if layer[2] < 8 else "packed_pointwise"), layer
    assert choose(_layer(96, 576, 1, 1, 1), target).name == "packed_fc"
    assert choose(_layer(96, 576, 6, 1, 1), target).name == small  # (AVX2: its strips' vector stores)
    assert choose(_layer(64, 64, 6, 1, 1), target).name == small
    assert choose(_layer(320, 1280, 7, 1, 1), target).name == small
    assert not channel_applies(_layer(32, 32, 14, 1, 1), target)
    assert choose(_layer(64, 64, 8, 1, 1), target).name == "packed_pointwise"
    assert choose(_layer(64, 384, 14, 1, 1), target).name == "packed_pointwise"
    assert not channel_applies(_layer(64, 64, 28, 1, 1), target)
    assert not channel_applies(_layer(64, 64, 7, 3, 1), target)
    assert not channel_applies(_layer(64, 64, 7, 1, 1, group=2), target)
