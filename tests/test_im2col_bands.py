"""The large-kernel Conv variant (``im2col_bands``: each reduction chunk of a block of output pixels unrolled into
an L2-sized panel, then ``packed_pointwise``'s micro-kernel over it).

* every vector width (4, 8, 16) over its parameter space (batch, kernels 1x1 to 9x12, strides, pads,
  dilations, output rows shorter and longer than a strip, row tails, fused ReLU and residual Add, blocks of
  one strip and chunks of one kernel row, so a block ends mid-row and the reduction runs in many chunks)
  against a float64 numpy reference, with the variant asserted;
* split along its pixels on 2 threads: every part runs the variant, bit-identical to one thread;
* the variant table: it takes large stride-1 kernels on many channels (madmom's 9x12 64 -> 128, a 1x35
  30 -> 30 on a multi-row map) and leaves 3x3 / 5x5, stems, strided rows, few output channels and one-row
  maps to the others.
"""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from kernel_cases import property_settings
from test_conv1d_packed import check_forced
from test_im2col_packed import check_two_parts, layer
from test_winograd import conv_model

import cnnjit
from cnnjit.compiler.codegen.kernel import Target, choose
from cnnjit.compiler.codegen.kernels import im2col_bands

WIDTHS = [4, 8, 16]
KERNELS = [(1, 1), (3, 3), (2, 7), (5, 1), (9, 12), (1, 35)]


def out_size(n: int, k: int, s: int, d: int, p: int) -> int:
    return (n + 2 * p - (k - 1) * d - 1) // s + 1


@st.composite
def cases(draw):
    """Layers the variant takes when forced: more than one strip of output pixels at 16 lanes (32)."""
    kh, kw = draw(st.sampled_from(KERNELS))
    sh, sw = draw(st.integers(1, 2)), draw(st.integers(1, 2))
    dh, dw = draw(st.integers(1, 2)), draw(st.integers(1, 2))
    ph, pw = draw(st.integers(0, kh // 2 * dh)), draw(st.integers(0, kw // 2 * dw))
    h0, w0 = max(1, (kh - 1) * dh + 1 - 2 * ph), max(1, (kw - 1) * dw + 1 - 2 * pw)  # the window fits
    h, w = draw(st.integers(h0, h0 + 12)), draw(st.integers(w0, w0 + 60))
    return dict(n=draw(st.integers(1, 2)), c=draw(st.integers(1, 6)), m=draw(st.integers(1, 20)), h=h, w=w,
                k=(kh, kw), strides=(sh, sw), dilations=(dh, dw), pads=(ph, pw, ph, pw),
                act=draw(st.sampled_from([None, "Relu"])), residual=draw(st.booleans()),
                small=draw(st.booleans()), seed=draw(st.integers(0, 2**16)))


def fits(case: dict) -> bool:
    """Whether the layer has more than 32 output pixels (one strip at 16 lanes)."""
    (kh, kw), (sh, sw), (dh, dw) = case["k"], case["strides"], case["dilations"]
    oh = out_size(case["h"], kh, sh, dh, case["pads"][0])
    ow = out_size(case["w"], kw, sw, dw, case["pads"][1])
    return oh >= 1 and ow >= 1 and oh * ow > 32


def small_blocks(mp: pytest.MonkeyPatch) -> None:
    """Blocks of one strip and chunk panels of 1 KB: a block ends inside an output row, chunks of one kernel
    row (or a few), the partial sums through the output."""
    mp.setattr(im2col_bands, "BLOCK_PIXELS", 1)
    mp.setattr(im2col_bands, "CHUNK_PANEL_BYTES", 1024)


@pytest.mark.parametrize("width", WIDTHS)
@property_settings(max_examples=4)  # each example compiles a kernel
@given(case=cases().filter(fits))
def test_im2col_bands_at_width(width: int, case: dict) -> None:
    """Forced (asserted) and within float32 rounding of the float64 reference, with the default blocking and
    with ``small_blocks``."""
    check_forced(case, width, "im2col_bands", layer, small_blocks)


def test_im2col_bands_pixel_parts(monkeypatch: pytest.MonkeyPatch) -> None:
    """Split along its pixels on 2 threads (whole strips): every part runs the variant and the output is
    bit-identical to one thread's."""
    case = dict(n=1, c=5, m=40, h=12, w=30, k=(3, 7), strides=(1, 1), dilations=(1, 1), pads=(1, 3, 1, 3),
                act="Relu", residual=False, small=True, seed=5)
    small_blocks(monkeypatch)
    check_two_parts(layer(case), "im2col_bands", monkeypatch)


@pytest.mark.parametrize(("c", "m", "hw", "k", "stride", "chosen"), [
    (64, 128, (288, 22), (9, 12), 1, True),      # madmom's chord CNN
    (30, 30, (198, 142), (1, 35), 1, True),       # madmom's note CNN: 1x35 on a multi-row map
    (16, 64, (172, 264), (3, 39), 1, True),
    (64, 64, (56, 56), (7, 7), 1, True),
    (64, 64, (56, 56), (5, 5), 1, False),         # 25 taps: the 5x5 variants
    (64, 64, (56, 56), (3, 3), 1, False),
    (3, 64, (224, 224), (7, 7), 2, False),         # a stem: stem_packed
    (32, 64, (96, 96), (9, 9), 2, False),         # strided rows: cblock
    (30, 18, (198, 142), (1, 35), 1, False),      # 3 row tiles of output channels
    (64, 64, (1, 500), (1, 35), 1, False)])       # one row: conv1d_packed
def test_im2col_bands_applicability(c, m, hw, k, stride, chosen) -> None:
    """The default table takes it for kernels of ``MIN_TAPS`` taps and more at column stride 1 on
    ``MIN_INPUT_CHANNELS`` channels and ``MIN_ROW_TILES`` tiles of output channels."""
    wt = np.ones((m, c, *k), np.float32)
    model = conv_model((1, c, *hw), wt, np.zeros(m, np.float32), (0,) * 4, strides=[stride, stride])
    node = next(n for n in cnnjit.compile(model, entry="lazy").ir.nodes if n.op == "Conv")
    assert (choose(node, Target(vector_width=8, vector_registers=16)).name == "im2col_bands") == chosen
