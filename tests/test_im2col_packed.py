"""The deep-conv-on-a-small-map Conv variant (``im2col_packed``: im2col into scratch, then ``packed_pointwise``'s
micro-kernel with the reduction in chunks).

* every vector width (4, 8, 16) over its parameter space (batch, kernel shapes 2x2 to 5x5 and 1x3 / 3x1,
  strides, pads, dilations, maps whose pixels end in a part-filled strip or a channel-vector tail, fused
  activation and residual Add, reductions in one chunk and in several, the last one short) against a
  float64 numpy reference, with the variant asserted;
* split over output channels on 2 threads: bit-identical to one thread;
* the variant table: it takes a VGG's 512 -> 512 3x3 on 7x7 and 3x3 maps and leaves shallow layers, large
  maps and small weights to the others.
"""

from __future__ import annotations

import numpy as np
import pytest
import reference_np as ref
from hypothesis import given
from hypothesis import strategies as st
from kernel_cases import property_settings
from test_winograd import conv_model

import cnnjit
from cnnjit.compiler.codegen import threads as split
from cnnjit.compiler.codegen.kernel import Target
from cnnjit.compiler.codegen.kernels import im2col_packed, packed_pointwise

WIDTHS = [4, 8, 16]
KERNELS = [(3, 3), (2, 2), (1, 3), (3, 1), (5, 5)]


def conv_variants(model) -> set[str]:
    return {c.variant for c in model._default_spec().program.calls if c.op == "Conv"}


@st.composite
def cases(draw):
    """Layers the variant takes when forced at every width: at least ``MIN_CHANNELS`` taps, 8 register tiles
    of output rows at 16 lanes (64 rows), 1-64 output pixels."""
    kh, kw = draw(st.sampled_from(KERNELS))
    c = draw(st.integers(-(-packed_pointwise.MIN_CHANNELS // (kh * kw)), 24))
    sh, sw = draw(st.integers(1, 2)), draw(st.integers(1, 2))
    dh, dw = draw(st.integers(1, 2)), draw(st.integers(1, 2))
    ph, pw = draw(st.integers(0, kh // 2 * dh)), draw(st.integers(0, kw // 2 * dw))
    h, w = draw(st.integers(1, 9)), draw(st.integers(1, 12))
    return dict(n=draw(st.integers(1, 2)), c=c, m=draw(st.integers(64, 77)), h=h, w=w, k=(kh, kw),
                strides=(sh, sw), dilations=(dh, dw), pads=(ph, pw, ph, pw),
                act=draw(st.sampled_from([None, "Relu"])), residual=draw(st.booleans()),
                chunk=draw(st.sampled_from([None, 2048])), seed=draw(st.integers(0, 2**16)))


def layer(case: dict):
    """(model, input, float64 expected output, its scale ``sum |w| |x| + |b| + |r|``) of ``case``."""
    rng = np.random.default_rng(case["seed"])
    x = rng.standard_normal((case["n"], case["c"], case["h"], case["w"])).astype(np.float32)
    wt = rng.standard_normal((case["m"], case["c"], *case["k"])).astype(np.float32)
    b = rng.standard_normal(case["m"]).astype(np.float32)
    expected, scale, r = ref.conv_layer(rng, x, wt, b, case["act"], case["residual"], strides=case["strides"],
                                        pads=case["pads"], dilations=case["dilations"])
    model = conv_model(x.shape, wt, b, case["pads"], case["act"], r, strides=list(case["strides"]),
                       dilations=list(case["dilations"]))
    return model, x, expected, scale


def fits(case: dict) -> bool:
    """Whether the layer has 1-64 output pixels (the strategy draws a few with none or more)."""
    oh = (case["h"] + 2 * case["pads"][0] - (case["k"][0] - 1) * case["dilations"][0] - 1) // case["strides"][0] + 1
    ow = (case["w"] + 2 * case["pads"][1] - (case["k"][1] - 1) * case["dilations"][1] - 1) // case["strides"][1] + 1
    return oh >= 1 and ow >= 1 and oh * ow <= im2col_packed.MAX_PIXELS


@pytest.mark.parametrize("width", WIDTHS)
@property_settings(max_examples=4)  # each example compiles a kernel
@given(case=cases().filter(fits))
def test_im2col_packed_at_width(width: int, case: dict) -> None:
    """Forced (asserted) and within float32 rounding of the float64 reference; ``chunk``: chunk panels of
    2 KB, so the reduction runs in several chunks of a few channels (the last one short), the partial sums
    through the output, strip tiles and channel-vector tail alike."""
    with pytest.MonkeyPatch.context() as mp:
        if case["chunk"]:
            mp.setattr(packed_pointwise, "CHUNK_PANEL_BYTES", case["chunk"])
        check_forced(layer(case), "im2col_packed", width)


def check_forced(built: tuple, variant: str, width: int) -> None:
    """``built`` (``layer``'s model, input, float64 expected output and scale) compiled at ``width`` with
    ``variant`` forced: it ran (asserted) and the output is within float32 rounding of the reference. The
    kernel as drawn: ``conv_dead_taps`` off (it would cut a 3x1 kernel on a 1x1 map to the 1x1 the variant does
    not take)."""
    model, x, expected, scale = built
    compiled = cnnjit.compile(model, vector_width=width, variants={"Conv": variant}, disable=["conv_dead_taps"])
    assert conv_variants(compiled) == {variant}
    got = compiled(x)
    assert got.shape == expected.shape
    err = np.abs(got.astype(np.float64) - expected)
    assert np.all(err <= 1e-5 * scale + 1e-6), err.max()


def test_im2col_packed_channel_parts(monkeypatch: pytest.MonkeyPatch) -> None:
    """Split over output channels on 2 threads (no part space: each part unrolls the input again), in chunks:
    every part runs the variant and the output is bit-identical to one thread."""
    case = dict(n=1, c=20, m=128, h=7, w=7, k=(3, 3), strides=(1, 1), dilations=(1, 1), pads=(1, 1, 1, 1),
                act="Relu", residual=False, chunk=2048, seed=3)  # (a constant residual keeps a layer whole)
    monkeypatch.setattr(packed_pointwise, "CHUNK_PANEL_BYTES", 2048)
    check_two_parts(layer(case), "im2col_packed", monkeypatch)


def check_two_parts(built: tuple, variant: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """``built`` (``layer``'s model, input, float64 expected output and scale) with ``variant`` forced, split in two
    parts on 2 threads (the split thresholds at 0): both parts run ``variant``, the output is bit-identical to
    one thread's and within float32 rounding of the reference."""
    model, x, expected, scale = built
    one = cnnjit.compile(model, vector_width=8, threads=1, variants={"Conv": variant})
    with monkeypatch.context() as mp:
        mp.setattr(split, "MIN_PARALLEL_TOTAL_US", 0.0)
        mp.setattr(split, "MIN_PARALLEL_US", 0.0)
        mp.setattr(split, "MIN_PART_US", 1e-6)
        two = cnnjit.compile(model, vector_width=8, threads=2, variants={"Conv": variant})
    calls = [cl for cl in two._default_spec().program.calls if cl.op == "Conv"]
    assert len(calls) == 2 and {cl.variant for cl in calls} == {variant}
    got = two(x)
    np.testing.assert_array_equal(got, one(x))
    assert np.all(np.abs(got.astype(np.float64) - expected) <= 1e-5 * scale + 1e-6)


@pytest.mark.parametrize(("c", "m", "hw", "k", "stride", "chosen"), [
    (512, 512, 7, 3, 1, True), (512, 512, 3, 3, 1, True), (256, 512, 7, 3, 1, True),
    (512, 512, 14, 3, 2, True),                         # stride 2 to 7x7
    (256, 256, 7, 3, 1, False),                         # 2.25 MB of weights: cblock
    (512, 512, 10, 3, 1, False),                        # 100 pixels: winograd_f4
    (64, 64, 7, 3, 1, False), (512, 512, 7, 1, 1, False)])
def test_im2col_packed_applicability(c: int, m: int, hw: int, k: int, stride: int, chosen: bool) -> None:
    """It applies to weights of ``WEIGHT_BYTES`` and more on maps of at most ``MAX_PIXELS`` output pixels (a
    siamese VGG's 512 -> 512 3x3 on 7x7 ran ``cblock`` at 7-12 GFLOP/s in the model), and not to smaller
    weights, larger maps or a 1x1; where the table takes it (on maps of 4 pixels and more ``im2col_channels``
    before it) is ``test_im2col_channels.test_variant_table``."""
    wt = np.ones((m, c, k, k), np.float32)
    model = conv_model((1, c, hw, hw), wt, np.zeros(m, np.float32), (k // 2,) * 4, strides=[stride, stride])
    node = next(n for n in cnnjit.compile(model, entry="lazy").ir.nodes if n.op == "Conv")
    assert im2col_packed.im2col_packed_applies(node, Target(vector_width=8, vector_registers=16)) == chosen
