"""Winograd F(4x4, 3x3) with the GEMMs' vectors along output channels (``winograd_f4_channels``, issue 19).

* every vector width (4, 8, 16) over its parameter space (input channels, output channels in 1-3 vectors,
  maps that leave partial tiles, one or several bands, vertical dilations, asymmetric pads, fused activations
  and residual Add) against a float64 numpy reference, within ``winograd.ERROR_BOUND`` of each output's scale
  ``sum |w| |x| + |b|`` (the same transforms as ``winograd_f4``); the variant asserted to run;
* the plan (channel vectors, copies of the padded input, tiles rounded up to 4) and the variant table at the
  measured crossover (``benchmarks/winograd.py --channels``);
* whole models (ResNet-8 generated and MLPerf Tiny's, their 64->64 3x3 at 8x8 on it) against onnxruntime:
  ``test_winograd.py``.
"""

from __future__ import annotations

import numpy as np
import pytest
from conftest import avx2_registers
from hypothesis import given
from hypothesis import strategies as st
from kernel_cases import property_settings
from test_winograd import ACTS, WIDTHS, _default_variant, check_conv

from cnnjit.compiler.codegen.kernel import Target, choose
from cnnjit.compiler.codegen.kernels import winograd

VARIANT = "winograd_f4_channels"
AVX2 = Target(vector_width=8, vector_registers=16)


@st.composite
def channel_cases(draw, width: int):
    """A layer the kernel computes at ``width`` lanes: output channels in 1-3 vectors, a small map."""
    pads = [draw(st.integers(0, 2)) for _ in range(4)]
    dh = draw(st.sampled_from([2, 1]))
    h = draw(st.integers(max(1, 2 * dh + 1 - pads[0] - pads[2]), 14))
    w = draw(st.integers(max(1, 3 - pads[1] - pads[3]), 14))
    return dict(c=draw(st.integers(1, 40)), m=width * draw(st.integers(1, 3)), h=h, w=w, pads=pads,
                act=draw(st.sampled_from(list(ACTS))), residual=draw(st.booleans()), dilations=(dh, 1),
                seed=draw(st.integers(0, 2**16)))


@pytest.mark.parametrize("width", WIDTHS)
@property_settings(max_examples=2)
@given(data=st.data())
def test_channels_at_width(width: int, data: st.DataObject) -> None:
    """Against the float64 reference within the stated bound, in bands of one tile row each (its tiles rounded
    up to 4; a vertical dilation's row phases), the crossover thresholds off (every layer it computes); the
    variant that ran asserted (``check_conv``)."""
    case = data.draw(channel_cases(width))
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(winograd, "MIN_CHANNEL_INPUTS", 0)
        mp.setattr(winograd, "MIN_CHANNEL_RATIO", 0.0)
        mp.setattr(winograd, "MAX_CHANNEL_TILE_SHARE", {(0, 0): float("inf")})
        mp.setattr(winograd, "BAND_BYTES", 1)  # bands of one tile row (one band: test_resnet8_layer_at_width)
        check_conv(**case, width=width, variant=VARIANT)


@pytest.mark.parametrize("width", WIDTHS)
def test_resnet8_layer_at_width(monkeypatch: pytest.MonkeyPatch, width: int) -> None:
    """ResNet-8's 64->64 at 8x8 (2x2 tiles, residual Add and Relu) on He-normal weights: within the bound
    without the activation's slack, and chosen by the table at every width (of AVX2's register file, whose
    tile shares ``MAX_CHANNEL_TILE_SHARE`` measured; 4 lanes on 32 registers is no host's)."""
    avx2_registers(monkeypatch)
    worst = check_conv(64, 64, 8, 8, [1, 1, 1, 1], "Relu", True, 5, width, scale=np.sqrt(2 / (9 * 64)),
                       variant=VARIANT)
    assert worst < winograd.ERROR_BOUND
    registers = 32 if width == 16 else 16
    target = Target(vector_width=width, vector_registers=registers)
    assert choose(_default_variant(64, 64, 8, width, registers)[1], target).name == VARIANT


@pytest.mark.parametrize(("layer", "plan"), [
    ((64, 64, 8), (16, 2, 2, 4, 4, 2)),  # 2x2 tiles: two copies (no dummy tile), one register tile of 4
    ((64, 64, 12), (16, 2, 3, 12, 12, 1)),  # 3x3 tiles and a dummy: 12 either way, one copy
    ((48, 48, 7), (24, 3, 2, 4, 4, 2)),  # 48 channels: 3 vectors (12 accumulators)
    ((32, 32, 16), (16, 2, 4, 16, 16, 2))])
def test_plan(layer: tuple[int, int, int], plan: tuple[int, ...]) -> None:
    """``plan_channels`` on AVX2: ``(mr, nr, rb, T, tiles, copies)``, the most channel vectors that divide the
    channels within the registers, the band's tiles rounded up to 4 (not to the vector width)."""
    assert tuple(winograd.plan_channels(_default_variant(*layer)[1], AVX2)) == plan


@pytest.mark.parametrize(("c", "m", "hw", "takes"), [
    (64, 64, 8, True), (32, 32, 8, True), (128, 128, 8, True), (64, 64, 7, True), (64, 64, 12, True),
    (16, 16, 8, False),  # too few input channels: cblock (8.6 us against 7.3)
    (64, 64, 4, False),  # one tile padded to 4: cblock (30 us against 16.5)
    (32, 32, 16, False), (16, 16, 32, False),  # as many tiles as winograd_f4's: it stays
    (64, 60, 8, False),  # output channels not in whole vectors
    (256, 256, 8, False)])  # 9.4 MB of transformed weights: not measured
def test_crossover(c: int, m: int, hw: int, takes: bool) -> None:
    """Where the table takes it (AVX2, ``benchmarks/winograd.py --channels``): small maps of a few tiles that
    ``winograd_f4``'s vectors of 8 tiles would pad, from 32 input channels."""
    node = _default_variant(c, m, hw)[1]
    assert winograd.channels_applies(node, AVX2) == takes
    assert (choose(node, AVX2).name == VARIANT) == takes


def test_tile_share_per_target() -> None:
    """32->32 at 16x16 (16 tiles either way): taken at 4 lanes of 16 registers (x86, measured 1.01x
    ``winograd_f4``'s speed), left to ``winograd_f4`` at 8 lanes (0.90x) and on NEON (4 lanes, 32 registers: not
    measured, the least share)."""
    node = _default_variant(32, 32, 16)[1]
    assert winograd.channels_applies(node, Target(vector_width=4, vector_registers=16))
    assert not winograd.channels_applies(node, AVX2)
    assert not winograd.channels_applies(node, Target("aarch64", 4, 4, vector_registers=32))

