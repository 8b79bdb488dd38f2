"""``packed_pointwise``'s strip fill and accumulator sets (``kernels/packed_pointwise.py``): the first row tile of
each whole strip reads it from the input and stores it to the panel (``fills``) instead of a block copy before
the tiles, and the rows left after whole tiles (2 of 32 output channels at AVX2's 6-row tiles: 4 accumulators)
run over two strips at once (``pairs``). Hypothesis cases at every vector width against the plain-numpy
reference, each asserting that ``packed_pointwise`` ran and that its source fills and pairs exactly where the
rules say; the earlier forms (``packed_block_copy``, ``packed_serial_rows``) compute the same; a layer split over
two threads by output channels (parts leaving other rows over) is bit-identical to one thread; the rules'
choices on MobileNet-style shapes."""

from __future__ import annotations

import numpy as np
import pytest
import reference_np as ref
from conftest import avx2_registers
from hypothesis import given, settings
from hypothesis import strategies as st
from test_cblock import ACTS, _layer, conv_model
from test_cblock import _check as check_variant

import cnnjit
from cnnjit.compiler.codegen.kernel import Target, choose
from cnnjit.compiler.codegen.kernels.packed_pointwise import (
    BLOCK_COPY,
    CHAINS,
    FILL_CHANNELS,
    FILL_PIXELS,
    FILL_PLANE_BYTES,
    FILL_ROW_TILES,
    MIN_CHANNELS,
    MIN_ROW_TILES,
    SERIAL_ROWS,
    WEIGHT_STREAM_BYTES,
    WIDE_FITS,
    fills,
    packed_tile,
    pairs,
)
from cnnjit.compiler.stages import CompileOptions

WIDTHS = [4, 8, 16]


def _conv_source(prog) -> str:
    return next(prog.kernel_sources[c.kernel] for c in prog.calls if c.op.startswith("Conv"))


def _markers(width: int) -> tuple[str, str]:
    """(fill, the paired tile's load of the strip before) as they appear in a source at ``width``."""
    strip = packed_tile(CompileOptions(vector_width=width).host_target())[1] * width
    return f"vstore{strip}(sb, si, v{strip})", f"u{strip} = vload{strip}(sb, si - K * {strip})"


@st.composite
def fill_cases(draw, width: int):
    """Layers of ``MIN_ROW_TILES`` whole row tiles and 0 to ``mr - 1`` rows left, on small maps (the fill's
    planes) from one strip to a few with a part-filled one, batch 1 or 2."""
    mr, nr = packed_tile(CompileOptions(vector_width=width).host_target())
    m = MIN_ROW_TILES * mr + draw(st.integers(0, mr - 1))
    h, w = draw(st.integers(1, 4)), draw(st.integers(1, 3 * nr * width + 5))
    if h * w < nr * width:
        w = nr * width
    return dict(n=draw(st.sampled_from([1, 2])), c=draw(st.integers(MIN_CHANNELS, MIN_CHANNELS + 11)), m=m, g=1,
                k=1, s=1, d=1, h=h, w=w, pads=[0] * 4, act=draw(st.sampled_from(ACTS)), residual=draw(st.booleans()),
                seed=draw(st.integers(0, 2**16)))


@pytest.mark.parametrize("width", WIDTHS)
@settings(max_examples=3, deadline=None)
@given(data=st.data())
def test_fill_and_accumulator_sets_match_reference(width: int, data) -> None:
    case = data.draw(fill_cases(width), label="case")
    target = CompileOptions(vector_width=width).host_target()
    mr, nr = packed_tile(target)
    src = _conv_source(check_variant(case, width, "packed_pointwise"))
    fill, sets = _markers(width)
    rem = case["m"] % mr
    assert (fill in src) == fills(case["c"], case["m"], case["h"] * case["w"], target)
    assert fill in src  # (small planes, weights in L2)
    assert (sets in src) == (rem > 0 and pairs(rem, nr, target.vector_registers)), rem


@pytest.mark.parametrize("width", WIDTHS)
def test_earlier_forms_compute_the_same(monkeypatch: pytest.MonkeyPatch, width: int) -> None:
    """32 output channels (AVX2: 5 tiles of 6 and 2 rows left) on a 5x9 map with a residual Add: the current
    form fills and pairs the 2-row tile (at 8 lanes), the earlier forms do neither; both match the reference.
    (AVX2's register file on any host: 32 registers' tiles of 8 leave no rows.)"""
    avx2_registers(monkeypatch)
    case = dict(n=1, c=50, m=32, g=1, k=1, s=1, d=1, h=5, w=9, pads=[0] * 4, act="Relu", residual=True, seed=3)
    model, x, expected = conv_model(case)
    fill, sets = _markers(width)
    before = cnnjit.compile(model, vector_width=width, forms=[BLOCK_COPY, SERIAL_ROWS],
                            variants={"Conv": "packed_pointwise"})  # (16 lanes: channel_pointwise by default)
    prog = before._default_spec().program
    assert {c.variant for c in prog.calls if c.op.startswith("Conv")} == {"packed_pointwise"}
    src = _conv_source(prog)
    assert fill not in src and sets not in src
    np.testing.assert_allclose(before(x), expected, rtol=1e-4, atol=1e-4 * max(1.0, float(np.abs(expected).max())))
    now = _conv_source(check_variant(case, width, "packed_pointwise"))
    assert fill in now
    if width == 8:  # AVX2's 6 x 2 tiles: 2 rows left, 4 accumulators -> 8 on two strips
        assert sets in now


def test_pairs() -> None:
    """Pairs where a tile has fewer than ``CHAINS`` accumulators and twice them fit (AVX2: 16 registers, 2
    vectors a row: 1 or 2 rows)."""
    assert CHAINS == 8
    assert [pairs(r, 2, 16) for r in range(1, 7)] == [True, True, False, False, False, False]  # 3 rows: 17 registers
    assert not pairs(1, 2, 8) and not pairs(8, 2, 32) and pairs(3, 2, 32)  # (8 registers: 9 needed)
    for rows in range(1, 9):
        for registers in (8, 16, 32):
            if pairs(rows, 2, registers):
                assert rows * 2 < CHAINS and 4 * rows + 5 <= registers


@pytest.mark.parametrize("width", [4, 8])
def test_channel_parts_are_bit_identical(monkeypatch: pytest.MonkeyPatch, width: int) -> None:
    """96 -> 64 on an 8x8 map with a residual Add, split over 2 threads by output channels (pixel parts left out,
    as ``test_thread_splits`` does): each 32-channel part leaves 2 rows over (paired), the whole layer 4 (6-row
    tiles); the output is bit-identical to one thread and within rounding of the reference."""
    from test_thread_splits import pointwise_model

    from cnnjit.compiler.codegen import threads as split

    for name, least in (("MIN_PARALLEL_TOTAL_US", 0.0), ("MIN_PARALLEL_US", 0.0), ("MIN_PART_US", 1e-6)):
        monkeypatch.setattr(split, name, least)  # (every layer worth splitting)
    monkeypatch.setattr(split, "SPATIAL_PARTS", set())
    assert pairs(2, 2, CompileOptions(vector_width=width).host_target().vector_registers)
    model, w, b = pointwise_model(96, 64, 8, "none", True, seed=11)
    forced = {"Conv": "packed_pointwise"}
    one = cnnjit.compile(model, vector_width=width, threads=1, variants=forced)
    two = cnnjit.compile(model, vector_width=width, threads=2, variants=forced)
    calls = [c for c in two._default_spec().program.calls if c.op.startswith("Conv")]
    assert {c.variant for c in calls} == {"packed_pointwise"}
    assert [c.note.rsplit("[", 1)[1] for c in calls] == ["channels 0:32 of 64]", "channels 32:64 of 64]"]
    rng = np.random.default_rng(5)
    feeds = {"x": rng.standard_normal((1, 96, 8, 8)).astype(np.float32),
             "r": rng.standard_normal((1, 64, 8, 8)).astype(np.float32)}
    got = two.run(None, feeds)[0]
    np.testing.assert_array_equal(got, one.run(None, feeds)[0])
    want = ref.conv(feeds["x"], w, b, pads=[0] * 4) + feeds["r"]
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4 * max(1.0, float(np.abs(want).max())))


@pytest.mark.parametrize("target", [Target(vector_width=8, vector_registers=16),
                                    Target(vector_width=16, vector_registers=32)], ids=["avx2", "avx512"])
def test_fill_rule_on_inverted_residual_shapes(target: Target) -> None:
    """MobileNetV2 / V3 / PP-LCNet project and expand 1x1s on 56x56 to 14x14 maps fill (still on
    ``packed_pointwise``); maps from 112x112 (planes past ``FILL_PLANE_BYTES``), weights past
    ``WEIGHT_STREAM_BYTES`` (7x7 heads) and the ``packed_block_copy`` form copy the block."""
    for c, m, hw in ((144, 32, 28), (192, 32, 28), (384, 64, 14), (576, 96, 14), (24, 144, 56), (96, 576, 14),
                     (240, 40, 28), (72, 24, 56), (480, 112, 14)):
        assert fills(c, m, hw * hw, target), (c, m, hw)
        assert choose(_layer(c, m, hw, 1, 1), target).name == "packed_pointwise", (c, m, hw)
    assert 4 * 104 * 104 <= FILL_PLANE_BYTES < 4 * 112 * 112
    assert not fills(32, 96, 112 * 112, target) and not fills(96, 24, 160 * 160, target)
    assert 4 * 960 * 160 > WEIGHT_STREAM_BYTES and not fills(960, 160, 49, target)
    assert not fills(192, 32, 28 * 28, Target(vector_width=8, vector_registers=16, forms=(BLOCK_COPY,)))
    # below MIN_CHANNELS / MIN_ROW_TILES: packed_pointwise where it fills (FILL_*), simd_pointwise elsewhere
    mr = packed_tile(target)[0]
    for c, m, hw in ((120, 4 * mr + 4, 28), (FILL_CHANNELS, FILL_ROW_TILES * mr, 14), (200, 5 * mr, 14)):
        assert choose(_layer(c, m, hw, 1, 1), target).name == "packed_pointwise", (c, m, hw)
    assert 13 * 13 < FILL_PIXELS <= 14 * 14
    wide = (target.vector_width, target.vector_registers) in WIDE_FITS  # 16 lanes: from 16 channels and 2 row tiles
    for c, m, hw in ((FILL_CHANNELS - 1, 5 * mr, 28), (96, FILL_ROW_TILES * mr - 1, 28), (96, 5 * mr, 13)):
        assert (choose(_layer(c, m, hw, 1, 1), target).name == "packed_pointwise") == wide, (c, m, hw)
    forms = Target(vector_width=target.vector_width, vector_registers=target.vector_registers, forms=(BLOCK_COPY,))
    if not wide:  # (the copy's thresholds; at 16 lanes WIDE_FITS takes it whatever the form)
        assert choose(_layer(120, 4 * mr + 4, 28, 1, 1), forms).name != "packed_pointwise"


@pytest.mark.parametrize("width", WIDTHS)
def test_fill_thresholds_layer_matches_reference(width: int) -> None:
    """The least layer the fill's thresholds take (``FILL_CHANNELS`` inputs, ``FILL_ROW_TILES`` row tiles, 14x14
    pixels, a residual Add and HardSwish) runs on ``packed_pointwise`` with the fill and matches the reference."""
    mr = packed_tile(CompileOptions(vector_width=width).host_target())[0]
    case = dict(n=1, c=FILL_CHANNELS, m=FILL_ROW_TILES * mr + 1, g=1, k=1, s=1, d=1, h=14, w=14, pads=[0] * 4,
                act="HardSwish", residual=True, seed=9)
    assert FILL_ROW_TILES * mr + 1 < MIN_ROW_TILES * mr and FILL_CHANNELS < MIN_CHANNELS
    assert _markers(width)[0] in _conv_source(check_variant(case, width, "packed_pointwise"))
