"""The strided 1x1 Conv variant (``strided_pointwise``: subsample into scratch, then the pointwise GEMM).

* every vector width (4, 8, 16) over its parameter space (batch, channels, odd and even maps whose last
  column has no full vector pair, row strides 1-3, fused activation and residual Add) against a float64
  numpy reference, with the variant asserted;
* split over threads along output pixels (its part space: each part gathers its own output rows), at every
  vector width and 2-4 threads, bit-identical to one thread and against the reference;
* ``strided_packed`` (the subsample, then ``packed_pointwise``'s strips and micro-kernel) on the layers deep
  enough for ``packed_pointwise``: every vector width, whole and split over threads, variant asserted;
* the variant table: it takes the stride-2 shortcuts of ResNet-8 and no padded, grouped or stride-1 1x1;
* ResNet-8 against onnxruntime with the variant asserted.
"""

from __future__ import annotations

import sys

import numpy as np
import pytest
import reference_np as ref
from conftest import REPO_DIR, ort_session, split_for_cpus
from hypothesis import example, given
from hypothesis import strategies as st
from kernel_cases import property_settings
from onnx import TensorProto, helper
from test_winograd import conv_model

import cnnjit
from cnnjit.compiler.codegen import threads as split
from cnnjit.compiler.codegen.kernel import Target, choose
from cnnjit.compiler.codegen.kernels import packed_pointwise
from cnnjit.compiler.codegen.kernels.simd_pointwise import PART_VECTORS
from cnnjit.compiler.codegen.simd import host_vector_registers, host_vector_width

sys.path.insert(0, str(REPO_DIR))
from benchmarks.models import resnet8  # noqa: E402

WIDTHS = [4, 8, 16]


def conv_variants(model) -> set[str]:
    return {c.variant for c in model._default_spec().program.calls if c.op == "Conv"}


@st.composite
def cases(draw):
    return dict(n=draw(st.integers(1, 2)), c=draw(st.integers(1, 40)), m=draw(st.integers(1, 40)),
                h=draw(st.integers(1, 20)), w=draw(st.integers(1, 41)), sh=draw(st.integers(1, 3)),
                act=draw(st.sampled_from([None, "Relu"])), residual=draw(st.booleans()),
                seed=draw(st.integers(0, 2**16)))


@st.composite
def deep_cases(draw):
    """Layers ``strided_packed`` takes at every width: ``MIN_CHANNELS`` inputs and more, ``MIN_ROW_TILES``
    register tiles of output rows at 16 lanes (8 rows), at least a strip (32 pixels) of output."""
    h, sh = draw(st.integers(4, 12)), draw(st.integers(1, 3))
    ow = -(-32 // ((h - 1) // sh + 1))  # the fewest output columns for 32 output pixels
    return dict(n=draw(st.integers(1, 2)), c=draw(st.integers(packed_pointwise.MIN_CHANNELS, 72)),
                m=draw(st.integers(8 * packed_pointwise.MIN_ROW_TILES, 8 * packed_pointwise.MIN_ROW_TILES + 13)),
                h=h, w=draw(st.integers(2 * ow - 1, max(41, 2 * ow + 8))), sh=sh,
                act=draw(st.sampled_from([None, "Relu"])), residual=draw(st.booleans()),
                seed=draw(st.integers(0, 2**16)))


@pytest.mark.parametrize("width", WIDTHS)
@pytest.mark.parametrize(("variant", "strategy"), [("strided_pointwise", cases()), ("strided_packed", deep_cases())])
@property_settings(max_examples=8)
@given(data=st.data())
def test_strided_pointwise_at_width(width: int, variant: str, strategy, data) -> None:
    """Forced (asserted; the default choice between the two is ``test_strided_pointwise_applicability``'s) and
    within float32 rounding of the float64 reference, relative to each output's scale ``sum |w| |x| + |b|``."""
    case = data.draw(strategy, "case")
    rng = np.random.default_rng(case["seed"])
    x = rng.standard_normal((case["n"], case["c"], case["h"], case["w"])).astype(np.float32)
    wt = rng.standard_normal((case["m"], case["c"], 1, 1)).astype(np.float32)
    b = rng.standard_normal(case["m"]).astype(np.float32)
    strides = (case["sh"], 2)
    conv = ref.conv(x, wt, b, strides=strides)
    scale = ref.conv(np.abs(x), np.abs(wt), np.abs(b), strides=strides)
    r = rng.standard_normal(conv.shape).astype(np.float32) if case["residual"] else None
    expected = conv + (r if r is not None else 0.0)
    if case["act"] == "Relu":
        expected = np.maximum(expected, 0.0)
    model = cnnjit.compile(conv_model(x.shape, wt, b, (0, 0, 0, 0), case["act"], r, strides=list(strides)),
                           vector_width=width, variants={"Conv": variant})
    assert conv_variants(model) == {variant}
    got = model(x)
    assert got.shape == expected.shape
    err = np.abs(got.astype(np.float64) - expected)
    assert np.all(err <= 1e-5 * (scale + np.abs(r if r is not None else 0.0)) + 1e-6), err.max()


@pytest.mark.parametrize("width", WIDTHS)
@property_settings(max_examples=8)
@given(c=st.integers(1, 24), m=st.integers(1, 40), h=st.integers(1, 30), w=st.integers(2, 70),
       sh=st.integers(1, 3), act=st.sampled_from([None, "Relu"]), residual=st.booleans(),
       threads=st.integers(2, 4), seed=st.integers(0, 2**16))
@example(c=5, m=3, h=16, w=48, sh=1, act="Relu", residual=True, threads=2, seed=1)  # (384 pixels: 192 + 192)
def test_strided_pointwise_pixel_parts(width: int, c: int, m: int, h: int, w: int, sh: int, act, residual: bool,
                                       threads: int, seed: int) -> None:
    """Split over threads, a layer with too few output channels for a balanced channel split takes its pixel
    part space (ranges of ``PART_VECTORS`` vectors; each part gathers the output rows its pixels lie in, rows
    shared by two parts included): one ``strided_pointwise`` call per part with its range, bit-identical to
    one thread and within float32 rounding of the float64 reference."""
    check_pixel_parts("strided_pointwise", PART_VECTORS * width, width, c, m, h, w, sh, act, residual, threads, seed)


@pytest.mark.parametrize("width", WIDTHS)
@property_settings(max_examples=6)
@given(case=deep_cases(), threads=st.integers(2, 3))
def test_strided_packed_pixel_parts(width: int, case: dict, threads: int) -> None:
    """``strided_packed`` split over threads: parts of whole strips (``NR`` vectors), each gathering its own
    output rows; bit-identical to one thread and against the reference."""
    check_pixel_parts("strided_packed", packed_pointwise.NR * width, width, case["c"], case["m"], case["h"],
                      case["w"], case["sh"], case["act"], case["residual"], threads, case["seed"])


def check_pixel_parts(variant: str, align: int, width: int, c: int, m: int, h: int, w: int, sh: int, act,
                      residual: bool, threads: int, seed: int) -> None:
    """The layer split over ``threads`` runs ``variant`` (asserted), in pixel parts of ``align`` when its
    channels do not balance; bit-identical to one thread and within float32 rounding of the reference."""
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((1, c, h, w)).astype(np.float32)
    wt = rng.standard_normal((m, c, 1, 1)).astype(np.float32)
    b = rng.standard_normal(m).astype(np.float32)
    strides = (sh, 2)
    conv = ref.conv(x, wt, b, strides=strides)
    r = rng.standard_normal(conv.shape).astype(np.float32) if residual else None
    expected = np.maximum(conv + (r if r is not None else 0.0), 0.0 if act else -np.inf)
    scale = ref.conv(np.abs(x), np.abs(wt), np.abs(b), strides=strides) + np.abs(r if r is not None else 0.0)
    # (the residual a second input: a split layer's residual is not a constant)
    model = conv_model(x.shape, wt, b, (0, 0, 0, 0), act, strides=list(strides))
    if residual:
        model.graph.input.append(helper.make_tensor_value_info("r", TensorProto.FLOAT, list(conv.shape)))
        model.graph.node.insert(1, helper.make_node("Add", ["c", "r"], ["c2"]))
        model.graph.node[2].input[0] = "c2"
    feeds = {"x": x, **({"r": r} if residual else {})}
    with pytest.MonkeyPatch.context() as mp:  # (small layers count as worth splitting, for up to 4 threads)
        split_for_cpus(mp)
        mp.setattr(split, "MIN_PARALLEL_US", 0.0)
        mp.setattr(split, "MIN_PARALLEL_TOTAL_US", 0.0)
        mp.setattr(split, "MIN_PART_US", 1e-6)
        many = cnnjit.compile(model, vector_width=width, threads=threads, variants={"Conv": variant})
        calls = [cl for cl in many._default_spec().program.calls if cl.op == "Conv"]
    one = cnnjit.compile(model, vector_width=width, threads=1, variants={"Conv": variant})
    assert {cl.variant for cl in calls} == {variant}
    pixels = split.balanced_ranges(conv.shape[2] * conv.shape[3], threads, align)
    if split.balanced_ranges(m, threads, width) is None:  # (else its channels may split)
        notes = [cl.note.rsplit(" [", 1)[1] if "[part" in cl.note else "whole" for cl in calls]
        assert notes == ([f"part {lo}:{hi}]" for lo, hi in pixels] if pixels else ["whole"])
    got = many.run(None, feeds)[0]
    np.testing.assert_array_equal(got, one.run(None, feeds)[0])
    assert np.all(np.abs(got.astype(np.float64) - expected) <= 1e-5 * scale + 1e-6)


@pytest.mark.parametrize(("strides", "pads", "group", "applies"), [
    ((2, 2), (0, 0, 0, 0), 1, True), ((1, 2), (0, 0, 0, 0), 1, True), ((2, 1), (0, 0, 0, 0), 1, False),
    ((1, 1), (0, 0, 0, 0), 1, False), ((2, 2), (1, 1, 1, 1), 1, False), ((2, 2), (0, 0, 0, 0), 2, False)])
@pytest.mark.parametrize(("c", "m", "hw", "variant"), [(8, 8, 12, "strided_pointwise"),
                                                       (64, 128, 28, "strided_packed")])
def test_strided_pointwise_applicability(strides, pads, group, applies, c, m, hw, variant) -> None:
    """Column stride 2, unpadded, ungrouped only (the gather keeps the even lanes of two loads); a layer deep
    enough for ``packed_pointwise`` (a ResNet's 64 -> 128 at 28x28) on its strips (``strided_packed``: 1.4x
    ``strided_pointwise``'s GFLOP/s, 1.1-1.6x ``cblock``'s on such layers, ``conv_variants.py``)."""
    wt = np.ones((m, c // group, 1, 1), np.float32)
    model = conv_model((1, c, hw, hw), wt, np.zeros(m, np.float32), pads, strides=list(strides), group=group)
    node = next(n for n in cnnjit.compile(model, entry="lazy").ir.nodes if n.op == "Conv")
    assert (choose(node, Target(vector_width=8, vector_registers=16)).name == variant) == applies


def test_resnet8_shortcuts_against_onnxruntime() -> None:
    """ResNet-8's two stride-2 shortcuts run ``strided_pointwise`` (``strided_packed`` at 16 lanes, where
    ``packed_pointwise`` takes 16 -> 32 and 32 -> 64: ``packed_pointwise.WIDE_FITS``); the model agrees with
    onnxruntime."""
    m = resnet8()
    x = np.random.default_rng(0).standard_normal((1, 3, 32, 32)).astype(np.float32)
    model = cnnjit.compile(m, threads=1)
    calls = [c for c in model._default_spec().program.calls if c.op == "Conv"]
    wide = (host_vector_width(), host_vector_registers()) in packed_pointwise.WIDE_FITS
    assert sum(c.variant == ("strided_packed" if wide else "strided_pointwise") for c in calls) == 2
    sess = ort_session(m)
    want = sess.run(None, {sess.get_inputs()[0].name: x})[0]
    np.testing.assert_allclose(model(x), want, rtol=1e-4, atol=1e-5)
