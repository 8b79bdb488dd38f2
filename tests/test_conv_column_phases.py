"""``conv_column_phases``: a 3x3 Conv dilated along the columns runs as ``d`` undilated column phases side by side
(Pad, phase-major Reshape/Transpose, a Conv dilated along the rows only, the inverse shuffle, Slice) on
``winograd_f4``.

* every vector width (4, 8, 16) over its geometry (row dilations 1-3, column dilations 2-5, asymmetric pads up to
  the dilation, maps that leave partial phases and tiles, channels below the crossovers, fused activations)
  against the float64 numpy reference within Winograd's error bound, the rewrite and the variant asserted;
* the gate on the IR: CRAFT's refiner's rates 6 and 12 rewritten, 18 and 24 (most tiles padding) and a Conv
  with a fused residual left alone.
"""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from kernel_cases import property_settings
from test_winograd import ACTS, any_size, check_conv, conv_model

import cnnjit
from cnnjit.compiler.passes import conv_column_phases
from cnnjit.compiler.passes.conv_column_phases import ConvColumnPhases

WIDTHS = [4, 8, 16]


@st.composite
def cases(draw):
    dh, dw = draw(st.integers(1, 3)), draw(st.integers(2, 5))
    pads = [draw(st.integers(0, d)) for d in (dh, dw, dh, dw)]
    h = draw(st.integers(max(1, 2 * dh + 1 - pads[0] - pads[2]), 14))
    w = draw(st.integers(max(1, 2 * dw + 1 - pads[1] - pads[3]), 30))
    return dict(c=draw(st.integers(1, 12)), m=draw(st.sampled_from([1, 4, 7, 16])), h=h, w=w, pads=pads,
                dilations=(dh, dw), act=draw(st.sampled_from(list(ACTS))), residual=False,
                seed=draw(st.integers(0, 2**16)))


@pytest.mark.parametrize("width", WIDTHS)
@property_settings(max_examples=2)
@given(case=cases())
def test_column_phases_at_width(width: int, case: dict) -> None:
    """Rewritten (once, its gate off) and within Winograd's bound of the float64 reference, on ``winograd_f4``."""
    rewritten = []
    rewrite = ConvColumnPhases._rewrite

    def recorded(self, graph, node):
        rewritten.append(tuple(node.attrs["dilations"]))
        return rewrite(self, graph, node)

    with any_size(), pytest.MonkeyPatch.context() as mp:
        mp.setattr(conv_column_phases, "MIN_RATIO", 0.0)
        mp.setattr(conv_column_phases, "MIN_CHANNELS", 0)
        mp.setattr(ConvColumnPhases, "_rewrite", recorded)
        check_conv(**case, width=width)
    assert rewritten == [case["dilations"]]


def _conv(hw: int, rate: int, residual: bool = False):
    """The IR's Conv ops and dilations of CRAFT's refiner's 64 -> 128 3x3 at ``rate`` (ReLU fused), uncompiled."""
    rng = np.random.default_rng(0)
    wt = rng.standard_normal((128, 64, 3, 3)).astype(np.float32)
    r = rng.standard_normal((1, 128, hw, hw)).astype(np.float32) if residual else None
    model = conv_model((1, 64, hw, hw), wt, np.zeros(128, np.float32), [rate] * 4, "Relu", r,
                       dilations=[rate, rate])
    ir = cnnjit.compile(model, vector_width=8, entry="lazy").ir
    return [tuple(n.attrs["dilations"]) for n in ir.nodes if n.op == "Conv"], sorted(n.op for n in ir.nodes)


@pytest.mark.parametrize(("rate", "rewritten"), [(6, True), (12, True), (18, False), (24, False)])
def test_gate_on_craft_rates(rate: int, rewritten: bool) -> None:
    """Rewritten where the measured crossover says (``MIN_RATIO``), with the row dilation kept."""
    dil, ops = _conv(160, rate)
    assert dil == [(rate, 1) if rewritten else (rate, rate)]
    assert ("Transpose" in ops) == rewritten


def test_residual_left_alone() -> None:
    """A fused residual is in the output's layout, not the phases': the Conv keeps its dilation."""
    assert _conv(160, 6, residual=True)[0] == [(6, 6)]
