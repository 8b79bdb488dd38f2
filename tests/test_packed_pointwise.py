"""The packed-strip pointwise convolution (``packed_pointwise``, ``kernels/packed_pointwise.py``): hypothesis
cases over its parameter space (input and output channels around its thresholds with leftover rows, pixel
counts with strip tails, batch, fused activations with SiLU and a residual Add) at every vector width against
the plain-numpy reference, each asserting that ``packed_pointwise`` ran with its epilogue in registers; its
register tile at every register budget; the compile-time weight packing; and where the variant table picks it
at the AVX2 and AVX-512 budgets."""

from __future__ import annotations

import re

import numpy as np
import pytest
from conftest import avx2_registers
from hypothesis import assume, given, settings
from hypothesis import strategies as st
from test_cblock import ACTS, _layer
from test_cblock import _check as check_variant
from test_register_tiles import BUDGETS
from test_register_tiles import _run as run_budget

from cnnjit.compiler.codegen.kernel import Target, choose
from cnnjit.compiler.codegen.kernels import packed_pointwise
from cnnjit.compiler.codegen.kernels.packed_pointwise import (
    MIN_CHANNELS,
    MIN_ROW_TILES,
    SHALLOW_CHANNELS,
    SHALLOW_ROW_TILES,
    SMALL_MAP,
    STREAM_BYTES,
    WIDE_MAP,
    WIDE_ROW_TILES,
    block_pixels,
    channel_tail,
    pack_weights,
    packed_pointwise_applies,
    packed_tile,
    tail_lanes,
    tail_tile,
    tail_vectors,
)
from cnnjit.compiler.stages import CompileOptions

WIDTHS = [4, 8, 16]


@st.composite
def packed_cases(draw, width: int, registers: int):
    """Layers the variant applies to at ``width`` with ``registers``: input channels from ``MIN_CHANNELS``,
    output rows from ``MIN_ROW_TILES`` tiles plus up to a tile and a half (leftover rows), pixels from one
    strip to a few with a tail."""
    mr, nr = packed_tile(Target(vector_width=width, vector_registers=registers))
    c = draw(st.integers(MIN_CHANNELS, MIN_CHANNELS + 9))
    m = draw(st.integers(MIN_ROW_TILES * mr, MIN_ROW_TILES * mr + mr + mr // 2))
    h = draw(st.integers(1, 5))
    w = draw(st.integers(1, 4 * nr * width + 3))
    assume(h * w >= nr * width)
    return dict(n=draw(st.sampled_from([1, 1, 2])), c=c, m=m, g=1, k=1, s=1, d=1, h=h, w=w, pads=[0] * 4,
                act=draw(st.sampled_from(ACTS)), residual=draw(st.booleans()), seed=draw(st.integers(0, 2**16)))


def _check(case: dict, width: int, strips: int | None = None) -> None:
    """``case`` through ``packed_pointwise`` against the reference (``test_cblock``'s check); ``strips``:
    blocks of that many strips (``PANEL_BYTES`` lowered for the compile), so that small maps run several
    blocks and a short last one."""
    with pytest.MonkeyPatch.context() as mp:
        if strips is not None:
            strip = packed_tile(CompileOptions(vector_width=width).host_target())[1] * width
            mp.setattr(packed_pointwise, "PANEL_BYTES", 4 * case["c"] * strip * strips)
        check_variant(case, width, "packed_pointwise")


@pytest.mark.parametrize("width", WIDTHS)
@settings(max_examples=5, deadline=None)
@given(data=st.data())
def test_packed_pointwise_matches_reference(width: int, data) -> None:
    registers = CompileOptions(vector_width=width).host_target().vector_registers
    _check(data.draw(packed_cases(width, registers), label="case"), width,
           data.draw(st.sampled_from([None, 1, 2, 3]), label="strips per block"))


@st.composite
def shallow_cases(draw, width: int, registers: int):
    """Layers the shallow rule gives the variant at ``width``: ``SHALLOW_CHANNELS`` to ``MIN_CHANNELS - 1``
    input channels, ``SHALLOW_ROW_TILES`` row tiles plus up to a tile and a half, on a map of one strip to
    ``SMALL_MAP`` pixels that part-fills rows of 4 vectors."""
    mr, nr = packed_tile(Target(vector_width=width, vector_registers=registers))
    c = draw(st.integers(SHALLOW_CHANNELS, MIN_CHANNELS - 1))
    m = draw(st.integers(SHALLOW_ROW_TILES * mr, SHALLOW_ROW_TILES * mr + mr + mr // 2))
    h, w = draw(st.integers(1, 10)), draw(st.integers(1, 10))
    assume(nr * width <= h * w <= SMALL_MAP and h * w % (4 * width) != 0)
    return dict(n=draw(st.sampled_from([1, 1, 2])), c=c, m=m, g=1, k=1, s=1, d=1, h=h, w=w, pads=[0] * 4,
                act=draw(st.sampled_from(ACTS)), residual=draw(st.booleans()), seed=draw(st.integers(0, 2**16)))


@pytest.mark.parametrize("width", WIDTHS)
@settings(max_examples=5, deadline=None)
@given(data=st.data())
def test_shallow_layers_on_small_maps(width: int, data) -> None:
    registers = CompileOptions(vector_width=width).host_target().vector_registers
    _check(data.draw(shallow_cases(width, registers), label="case"), width)


@pytest.mark.parametrize("width", WIDTHS)
def test_shallow_layer_past_l2(width: int) -> None:
    """The shallowest layer the rule takes on a map whose input and output exceed ``STREAM_BYTES``: 8 input
    channels, 3 row tiles, 96 x 101 pixels (a tail strip), SiLU."""
    mr = packed_tile(CompileOptions(vector_width=width).host_target())[0]
    case = dict(n=1, c=SHALLOW_CHANNELS, m=SHALLOW_ROW_TILES * mr, g=1, k=1, s=1, d=1, h=96, w=101, pads=[0] * 4,
                act="SiLU", residual=False, seed=5)
    assert 4 * (case["c"] + case["m"]) * 96 * 101 > STREAM_BYTES
    _check(case, width)


@pytest.mark.parametrize("width", WIDTHS)
def test_two_row_tiles_on_a_wide_streaming_map(width: int) -> None:
    """``WIDE_ROW_TILES`` row tiles (a detector head's 48 -> 12 at 160x160) on the narrowest map the rule
    takes past ``WIDE_MAP`` pixels with a tail strip: 24 input channels, 83 x 81 pixels, SiLU."""
    mr = packed_tile(CompileOptions(vector_width=width).host_target())[0]
    case = dict(n=1, c=24, m=WIDE_ROW_TILES * mr, g=1, k=1, s=1, d=1, h=83, w=81, pads=[0] * 4,
                act="SiLU", residual=True, seed=7)
    assert 83 * 81 >= WIDE_MAP and 4 * (case["c"] + case["m"]) * 83 * 81 > STREAM_BYTES
    assert WIDE_ROW_TILES < SHALLOW_ROW_TILES
    _check(case, width)


@pytest.mark.parametrize(("width", "registers"), BUDGETS)
@settings(max_examples=2, deadline=None)
@given(data=st.data())
def test_packed_tile_per_budget(width: int, registers: int, data) -> None:
    """At each register budget (AVX-512's 32 registers too, run on the host's), the kernel computes a drawn
    case with the tile ``packed_tile`` sizes: ``MR`` accumulator rows of ``NR`` vectors in its source, and
    the tile fits the register file (accumulators, loaded vectors, one broadcast)."""
    case = data.draw(packed_cases(width, registers), label="case")
    case.update(act=data.draw(st.sampled_from([None, "Relu", "HardSwish"]), label="act"))
    src = run_budget(case, width, registers, "packed_pointwise")
    mr, nr = packed_tile(Target(vector_width=width, vector_registers=registers))
    assert mr * nr + nr + 1 <= registers
    rows = {int(r) for r in re.findall(rf"\ba{nr * width}_(\d+) = vfma", src)}
    assert max(rows) == mr - 1, (rows, mr)


def test_tiles_from_the_register_budget() -> None:
    assert packed_tile(Target(vector_width=8, vector_registers=16)) == (6, 2)  # AVX2: 12 accumulators
    assert packed_tile(Target(vector_width=16, vector_registers=32)) == (8, 2)  # AVX-512: capped at 16
    assert packed_tile(Target(vector_width=4, vector_registers=32)) == (8, 2)  # NEON
    assert packed_tile(Target(vector_width=16, vector_registers=8)) == (2, 2)


def test_block_pixels() -> None:
    """Whole strips within the panel budget, at least one, at most the map rounded up to whole strips."""
    for c, p, strip in ((48, 10816, 16), (768, 169, 16), (48, 169, 32), (100000, 50, 8), (1, 7, 8)):
        pb = block_pixels(c, p, strip)
        assert pb % strip == 0 and strip <= pb <= -(-p // strip) * strip
        assert pb == strip or 4 * c * pb <= packed_pointwise.PANEL_BYTES


@pytest.mark.parametrize(("m", "mr"), [(12, 6), (14, 6), (5, 8), (9, 2)])
def test_pack_weights_layout(m: int, mr: int) -> None:
    """The tile starting at row ``t`` holds ``w[t:t + rows]`` channel-major at ``t * C`` (an independent
    index formula, not the packing code)."""
    c = 7
    w = np.random.default_rng(m).standard_normal((m, c)).astype(np.float32)
    packed = pack_weights(w, mr)
    assert packed.shape == (m * c,) and packed.dtype == np.float32
    for row in range(m):
        t = row // mr * mr
        rows = min(mr, m - t)
        for ch in range(c):
            assert packed[t * c + ch * rows + (row - t)] == w[row, ch]


@pytest.mark.parametrize("target", [Target(vector_width=8, vector_registers=16),
                                    Target(vector_width=16, vector_registers=32)], ids=["avx2", "avx512"])
def test_variant_table_choice(target: Target) -> None:
    """packed_pointwise for the detector's 1x1s from 48 channels (ahead of cblock on deep ones on short rows),
    and for shallow ones (from 8 channels and 3 row tiles) on maps that stream past L2 or part-fill
    ``simd_pointwise``'s rows (2 row tiles on wide streaming maps);
    shallower reductions, fewer output rows, shallow layers on mid-sized maps,
    grouped 1x1s and 3x3s go to the others."""
    mr = packed_tile(target)[0]
    for layer in ((384, 96, 26), (192, 48 if target.vector_registers == 16 else 64, 52), (96, 96, 52),
                  (768, 384, 13), (384, 384, 13), (48, 64, 104), (24, 3 * mr, 104), (32, 64, 56), (8, 48, 80),
                  (16, 32 if target.vector_registers == 16 else 48, 320), (16, 64, 10)):
        assert choose(_layer(*layer, 1, 1), target).name == "packed_pointwise", layer
    # a 7x7 map is one strip and a tail at 16 lanes: channel_pointwise's there (WIDE_STRIPS)
    key = (target.vector_width, target.vector_registers)
    small = "packed_pointwise" if key not in packed_pointwise.WIDE_STRIPS else "channel_pointwise"
    assert choose(_layer(40, 120, 7, 1, 1), target).name == small
    # the 16-lane rules hold for AVX-512's 32 registers; an AVX2 register file at width 16 keeps those of 8 lanes
    assert packed_pointwise.few_strips(49, Target(vector_width=16, vector_registers=32))
    assert not packed_pointwise.few_strips(49, Target(vector_width=16, vector_registers=16))
    assert choose(_layer(4, 64, 56, 1, 1), target).name != "packed_pointwise"  # too shallow
    # at 16 lanes from 2 row tiles of 16 channels on any map of a strip (WIDE_FITS), else not:
    wide = key in packed_pointwise.WIDE_FITS
    assert (choose(_layer(96, 3 * mr - 1, 56, 1, 1), target).name == "packed_pointwise") == wide  # few row tiles
    assert (choose(_layer(32, 64, 16, 1, 1), target).name == "packed_pointwise") == wide  # 32 KB on whole rows
    assert (choose(_layer(96, 8 * mr - 8, 8, 1, 1), target).name == "packed_pointwise") == wide  # small map
    assert choose(_layer(48, 2 * mr, 160, 1, 1), target).name == "packed_pointwise"  # 2 tiles, wide streaming map
    assert (choose(_layer(128, 2 * mr, 40, 1, 1), target).name == "packed_pointwise") == wide  # under WIDE_MAP
    assert choose(_layer(96, 2 * mr - 1, 160, 1, 1), target).name != "packed_pointwise"  # under 2 tiles
    assert choose(_layer(15, 4 * mr, 28, 1, 1), target).name != "packed_pointwise"  # under 16 channels
    assert not packed_pointwise_applies(_layer(96, 96, 26, 1, 1, group=2), target)
    assert choose(_layer(96, 96, 26, 3, 1), target).name != "packed_pointwise"


@pytest.mark.parametrize("width", WIDTHS)
@pytest.mark.parametrize(("m", "hw", "residual"), [(99, (7, 7), True), (64, (3, 13), False), (53, (5, 8), True)])
def test_tail_pixels_on_channel_vectors(monkeypatch: pytest.MonkeyPatch, width: int, m: int, hw: tuple,
                                        residual: bool) -> None:
    """A map whose last strip holds few pixels (7x7: one past three 16-lane strips) runs them on
    output-channel vectors (strided stores, ``vscattern``), after whole vectors where ``tail_vectors`` splits
    them (5x8 at 8 lanes: 8 pixels past two strips), leftover row tile and a gathered residual included, and
    matches the reference; a map of whole strips keeps vector stores only. (AVX2's register file: 53 channels
    are packed_pointwise's there, under its least with 32 registers' taller tiles.)"""
    avx2_registers(monkeypatch)
    case = dict(n=2, c=50, m=m, g=1, k=1, s=1, d=1, h=hw[0], w=hw[1], pads=[0] * 4, act="HardSwish",
                residual=residual, seed=m)
    mr, nr = packed_tile(CompileOptions(vector_width=width).host_target())
    tail = hw[0] * hw[1] % (nr * width)
    prog = check_variant(case, width, "packed_pointwise")
    src = next(prog.kernel_sources[c.kernel] for c in prog.calls if c.op.startswith("Conv"))
    split = tail_vectors(tail, width, mr, nr)
    assert ("vscattern" in src) == (split is not None and tail > split * width), (tail, mr, nr)
    whole = dict(case, h=2, w=nr * width, residual=False)
    prog = check_variant(whole, width, "packed_pointwise")
    assert "vscattern" not in next(prog.kernel_sources[c.kernel] for c in prog.calls if c.op.startswith("Conv"))


def test_channel_tail_bound_and_tile() -> None:
    """Tail pixels go to channel vectors below ``nr * mr`` (a strip's FMAs per row against ``1 / mr`` per
    pixel); the tail tile fits the register file."""
    assert channel_tail(1, 6, 2) and channel_tail(11, 6, 2) and not channel_tail(12, 6, 2)
    assert not channel_tail(0, 6, 2) and channel_tail(15, 8, 2) and not channel_tail(17, 8, 2)
    for tail in range(1, 32):
        for registers in (8, 16, 32):
            tp, g = tail_tile(tail, registers)
            assert 1 <= tp <= 4 and g >= 1 and (g * tp + g + 1 <= registers or g == 1)
    assert tail_lanes(6) == 8 and tail_lanes(8) == 8 and tail_lanes(2) == 4


def test_tail_vectors() -> None:
    """AVX2 (8 lanes, 6 x 2 tiles): up to 7 pixels on channel vectors, 8-11 as one vector and the rest on
    channel vectors, 12-15 as the part-filled strip; AVX-512 (16 lanes, 8 x 2): up to 15, then 16-20 as one
    vector + the rest (its 7x7 maps: 17 pixels), beyond the strip; every split costs less than the strip."""
    assert [tail_vectors(t, 8, 6, 2) for t in range(16)] == [None, *[0] * 7, *[1] * 4, *[None] * 4]
    assert [tail_vectors(t, 16, 8, 2) for t in range(32)] == [None, *[0] * 15, *[1] * 5, *[None] * 11]
    for w, mr in ((8, 6), (16, 8), (4, 8)):
        for t in range(1, 2 * w):
            k = tail_vectors(t, w, mr, 2)
            assert k is None or k + (t - k * w) / mr < 2


@pytest.mark.parametrize("width", WIDTHS)
@settings(max_examples=5, deadline=None)
@given(data=st.data())
def test_row_groups_over_a_whole_map_block(width: int, data) -> None:
    """Weights past ``WEIGHT_STREAM_BYTES`` (lowered to 0 here): the whole map is one block and the output
    rows run in groups (``ROW_GROUP_BYTES`` lowered to one or two units of rows: several groups, the last
    one short with the leftover rows), each over every strip and the tail; the call's ``RG`` is asserted.
    (AVX2's register file: ``packed_cases`` draws channel counts for its tiles.)"""
    with pytest.MonkeyPatch.context() as mp:
        avx2_registers(mp)
        registers = CompileOptions(vector_width=width).host_target().vector_registers
        case = data.draw(packed_cases(width, registers), label="case")
        mr, nr = packed_tile(Target(vector_width=width, vector_registers=registers))
        units = data.draw(st.integers(1, 2), label="row tiles per group")
        mp.setattr(packed_pointwise, "WEIGHT_STREAM_BYTES", 0)
        mp.setattr(packed_pointwise, "ROW_GROUP_BYTES", 4 * case["c"] * mr * units)
        prog = check_variant(case, width, "packed_pointwise")
    P, strip = case["h"] * case["w"], nr * width
    (call,) = [c for c in prog.calls if c.op == "Conv"]
    args = [a.value for a in call.args if type(a).__name__ == "Int"]
    i = next(k for k in range(3, len(args)) if args[k - 3:k + 1] == [case["n"], case["c"], case["m"], P])  # PB, RG
    assert args[i + 1] == -(-P // strip) * strip and mr <= args[i + 2] < case["m"] and args[i + 2] % mr == 0
