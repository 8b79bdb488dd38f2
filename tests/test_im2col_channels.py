"""The tiny-map Conv variants on ``channel_pointwise``'s output-channel lanes: ``im2col_channels`` (a KxK conv's
im2col into scratch, then the channel-panel GEMM) and ``strided_channels`` (a stride-2 1x1's subsample into
scratch, then the same GEMM).

* every vector width (4, 8, 16) over their parameter space (batch, kernel shapes, strides, pads, dilations,
  maps of 4 to 64 output pixels with tail pixel tiles, output channels with a partial last panel, fused
  activation and residual Add) against a float64 numpy reference, with the variant asserted;
* ``im2col_channels`` split over output channels on 2 threads: bit-identical to one thread;
* the variant table: it takes the big-weight layers ``im2col_packed`` took (a VGG's 512 -> 512 3x3 on 7x7 and
  3x3, a ResNet-50's 486 -> 486 on 5x2) but not a 1x1 output map, and a ResNet-50's 1024 -> 2048 stride-2
  shortcut onto 5x2, not small-weight or large-map shortcuts.
"""

from __future__ import annotations

import numpy as np
import pytest
import reference_np as ref
from hypothesis import assume, given
from hypothesis import strategies as st
from kernel_cases import property_settings
from test_im2col_packed import KERNELS, check_forced, check_two_parts, conv_variants, layer
from test_winograd import conv_model

import cnnjit
from cnnjit.compiler.codegen.kernel import Target, choose
from cnnjit.compiler.codegen.kernels.channel_pointwise import MIN_PIXELS
from cnnjit.compiler.codegen.kernels.im2col_packed import MAX_PIXELS
from cnnjit.compiler.codegen.kernels.strided_pointwise import strided_channels_applies

WIDTHS = [4, 8, 16]


def out_size(n: int, k: int, s: int, d: int, p: int) -> int:
    return (n + 2 * p - (k - 1) * d - 1) // s + 1


@st.composite
def kxk_cases(draw):
    """KxK layers of ``MIN_PIXELS`` to ``MAX_PIXELS`` output pixels, output channels from a few (narrower
    panels) to past two 16-lane panels of 32 (a partial last one), shallow to a few hundred taps."""
    kh, kw = draw(st.sampled_from(KERNELS))
    sh, sw = draw(st.integers(1, 2)), draw(st.integers(1, 2))
    dh, dw = draw(st.integers(1, 2)), draw(st.integers(1, 2))
    ph, pw = draw(st.integers(0, kh // 2 * dh)), draw(st.integers(0, kw // 2 * dw))
    h, w = draw(st.integers(2, 12)), draw(st.integers(2, 12))
    oh, ow = out_size(h, kh, sh, dh, ph), out_size(w, kw, sw, dw, pw)
    assume(oh >= 1 and ow >= 1 and MIN_PIXELS <= oh * ow <= MAX_PIXELS)
    return dict(n=draw(st.integers(1, 2)), c=draw(st.integers(1, 24)),
                m=draw(st.one_of(st.integers(1, 12), st.integers(27, 70))), h=h, w=w, k=(kh, kw),
                strides=(sh, sw), dilations=(dh, dw), pads=(ph, pw, ph, pw),
                act=draw(st.sampled_from([None, "Relu"])), residual=draw(st.booleans()),
                seed=draw(st.integers(0, 2**16)))


@pytest.mark.parametrize("width", WIDTHS)
@property_settings(max_examples=6)  # each example compiles a kernel
@given(case=kxk_cases())
def test_im2col_channels_at_width(width: int, case: dict) -> None:
    """Forced (asserted) and within float32 rounding of the float64 reference."""
    check_forced(layer(case), "im2col_channels", width)


def test_im2col_channels_channel_parts(monkeypatch: pytest.MonkeyPatch) -> None:
    """Split over output channels on 2 threads: both parts run it, bit-identical to one thread."""
    case = dict(n=1, c=20, m=128, h=5, w=2, k=(3, 3), strides=(1, 1), dilations=(1, 1), pads=(1, 1, 1, 1),
                act="Relu", residual=False, seed=3)
    check_two_parts(layer(case), "im2col_channels", monkeypatch)


@pytest.mark.parametrize("width", WIDTHS)
@property_settings(max_examples=6)
@given(n=st.integers(1, 2), c=st.integers(1, 40), m=st.one_of(st.integers(1, 12), st.integers(27, 70)),
       oh=st.integers(1, 10), ow=st.integers(1, 10), sh=st.integers(1, 3), odd=st.booleans(),
       act=st.sampled_from([None, "Relu"]), residual=st.booleans(), seed=st.integers(0, 2**16))
def test_strided_channels_at_width(width: int, n: int, c: int, m: int, oh: int, ow: int, sh: int, odd: bool, act,
                                   residual: bool, seed: int) -> None:
    """Forced (asserted; it applies where ``strided_packed`` does not, on maps ``channel_pointwise`` takes)
    and within float32 rounding of the float64 reference, odd and even input widths."""
    h, w = (oh - 1) * sh + 1, 2 * ow - (1 if odd else 0)
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n, c, h, w)).astype(np.float32)
    wt = rng.standard_normal((m, c, 1, 1)).astype(np.float32)
    b = rng.standard_normal(m).astype(np.float32)
    conv = ref.conv(x, wt, b, strides=(sh, 2))
    r = rng.standard_normal(conv.shape).astype(np.float32) if residual else None
    expected = np.maximum(conv + (r if r is not None else 0.0), 0.0 if act else -np.inf)
    scale = ref.conv(np.abs(x), np.abs(wt), np.abs(b), strides=(sh, 2)) + np.abs(r if r is not None else 0.0)
    model = conv_model(x.shape, wt, b, (0, 0, 0, 0), act, r, strides=[sh, 2])
    node = next(nd for nd in cnnjit.compile(model, entry="lazy").ir.nodes if nd.op == "Conv")
    forced = Target(vector_width=width, vector_registers=32 if width == 16 else 16,
                    variants=(("Conv", "strided_channels"),))
    assume(strided_channels_applies(node, forced))
    compiled = cnnjit.compile(model, vector_width=width, variants={"Conv": "strided_channels"})
    assert conv_variants(compiled) == {"strided_channels"}
    got = compiled(x)
    assert got.shape == expected.shape
    assert np.all(np.abs(got.astype(np.float64) - expected) <= 1e-5 * scale + 1e-6)


@pytest.mark.parametrize(("c", "m", "h", "w", "k", "stride", "variant"), [
    (512, 512, 7, 7, 3, 1, "im2col_channels"), (512, 512, 3, 3, 3, 1, "im2col_channels"),
    (486, 486, 5, 2, 3, 1, "im2col_channels"), (486, 486, 10, 4, 3, 2, "im2col_channels"),
    (1024, 2048, 10, 4, 1, 2, "strided_channels"),      # 8 MB shortcut onto 5x2
    (512, 512, 2, 1, 3, 1, None),                       # two output pixels: too few rows for the panels
    (256, 256, 7, 7, 3, 1, None),                       # 2.25 MB of weights
    (512, 512, 10, 10, 3, 1, None),                     # 100 pixels
    (64, 128, 12, 12, 1, 2, None),                      # 32 KB of weights
    (1024, 2048, 37, 37, 1, 2, None)])                  # 19x19 output pixels
def test_variant_table(c: int, m: int, h: int, w: int, k: int, stride: int, variant: str | None) -> None:
    """The default table at 16 lanes (AVX-512's 32 registers) takes ``variant``; None: neither of the two."""
    wt = np.ones((m, c, k, k), np.float32)
    model = conv_model((1, c, h, w), wt, np.zeros(m, np.float32), (k // 2,) * 4, strides=[stride, stride])
    node = next(n for n in cnnjit.compile(model, entry="lazy").ir.nodes if n.op == "Conv")
    chosen = choose(node, Target(vector_width=16, vector_registers=32)).name
    assert chosen == variant if variant else chosen not in ("im2col_channels", "strided_channels")
