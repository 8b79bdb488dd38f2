"""How ``threads.split_node`` splits a layer (issue 18): over output channels in balanced ranges of whole
vectors, along the variant's part space when the channels do not divide (``parts.py``: a pointwise conv's
pixels, a Winograd conv's bands of tile rows; the kernel takes its range as arguments), or not at all.
Every split must give the one-thread result bit for bit and the numpy reference (``reference_np.py``)
within float tolerance, at every vector width."""

from __future__ import annotations

import numpy as np
import pytest
import reference_np as ref
from conftest import split_for_cpus
from hypothesis import HealthCheck, assume, example, given, settings
from hypothesis import strategies as st
from onnx import TensorProto, helper, numpy_helper

import cnnjit
from cnnjit.compiler.codegen import threads as split
from cnnjit.compiler.codegen.kernels import conv1d_packed, packed_pointwise, phase_packed, winograd
from cnnjit.compiler.codegen.kernels.simd_cblock import cblock_applies
from cnnjit.compiler.codegen.parts import PART_SPACES, SPATIAL_PARTS
from cnnjit.compiler.codegen.threads import balanced_ranges, channel_ranges
from cnnjit.compiler.stages import CompileOptions

WIDTHS = [4, 8, 16]


def pointwise_model(c: int, m: int, hw: int, act: str, residual: bool, seed: int = 0, k: int = 1,
                    row: int = 0):
    """One ``k x k`` conv ``c -> m`` (same padding) on a ``hw x hw`` image with bias, an optional fused
    activation and an optional residual (a second input ``r`` of the output's shape); ``row``: a ``1 x k``
    conv on one row of ``row`` columns instead (a Conv1D)."""
    rng = np.random.default_rng(seed)
    kernel, pads, (h, w) = ((1, k), [0, k // 2] * 2, (1, row)) if row else ((k, k), [k // 2] * 4, (hw, hw))
    inits = [numpy_helper.from_array((rng.standard_normal((m, c, *kernel)) * 0.3).astype(np.float32), "w"),
             numpy_helper.from_array(rng.standard_normal(m).astype(np.float32), "b")]
    nodes = [helper.make_node("Conv", ["x", "w", "b"], ["c"], pads=pads)]
    last = "c"
    if residual:
        nodes.append(helper.make_node("Add", [last, "r"], ["s"]))
        last = "s"
    if act != "none":
        nodes.append(helper.make_node(act, [last], ["y"]))
    else:
        nodes.append(helper.make_node("Identity", [last], ["y"]))
    ins = [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, c, h, w])]
    if residual:
        ins.append(helper.make_tensor_value_info("r", TensorProto.FLOAT, [1, m, h, w]))
    g = helper.make_graph(nodes, "pw", ins, [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, m, h, w])],
                          inits)
    model = helper.make_model(g, opset_imports=[helper.make_opsetid("", 13)], ir_version=8)
    return model, numpy_helper.to_array(inits[0]), numpy_helper.to_array(inits[1])


@pytest.fixture
def split_small_layers(monkeypatch: pytest.MonkeyPatch) -> None:
    """Small test layers count as worth splitting (the thresholds are for real models' sizes; constant for
    every example of a property test); and a compile may split for 3 or 4 threads on a machine of fewer CPUs
    (``cpus.split_threads``: the splits are what is tested, the team runs them on the CPUs it has)."""
    split_for_cpus(monkeypatch)
    monkeypatch.setattr(split, "MIN_PARALLEL_US", 0.0)
    monkeypatch.setattr(split, "MIN_PARALLEL_TOTAL_US", 0.0)
    monkeypatch.setattr(split, "MIN_PART_US", 1e-6)


def compile_forced(model, width: int, threads: int, variant: str):
    """``model`` compiled with its Conv's ``variant`` forced at 1 and at ``threads`` threads: (one, many, the
    latter's Conv calls, its Conv node); every call is the variant's."""
    forced = {"Conv": variant}
    one = cnnjit.compile(model, vector_width=width, threads=1, variants=forced)
    many = cnnjit.compile(model, vector_width=width, threads=threads, variants=forced)
    calls = [cl for cl in many._default_spec().program.calls if cl.op == "Conv"]
    assert {cl.variant for cl in calls} == {variant}
    return one, many, calls, next(n for n in many.ir.nodes if n.op == "Conv")


def _notes(cm: cnnjit.CompiledModel) -> list[str]:
    return [c.note for c in cm._default_spec().program.calls if c.op == "Conv"]


def check_conv_split(one, many, c: int, m: int, hw: int, w: np.ndarray, b: np.ndarray, pad: int, act: str,
                     residual: bool, seed: int) -> None:
    """``pointwise_model``'s conv compiled at one (``one``) and several (``many``) threads, run on seeded inputs
    (``c`` channels of ``hw x hw``, and the residual): bit for bit the same, and equal to the numpy reference
    (``pad`` on every side, the fused Relu or none)."""
    rng = np.random.default_rng(seed)
    feeds = {"x": rng.standard_normal((1, c, hw, hw)).astype(np.float32)}
    if residual:
        feeds["r"] = rng.standard_normal((1, m, hw, hw)).astype(np.float32)
    got = many.run(None, feeds)[0]
    np.testing.assert_array_equal(got, one.run(None, feeds)[0])
    want = ref.conv(feeds["x"], w, b, pads=[pad] * 4) + (feeds["r"] if residual else 0)
    want = np.maximum(want, 0) if act == "Relu" else want
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4 * max(1.0, float(np.abs(want).max())))


def conv1d_least(width: int) -> int:
    """The fewest output channels ``conv1d_packed`` takes at ``width`` lanes on this host: ``MIN_ROW_TILES``
    register tiles, whose height depends on the host's register count."""
    mr, _ = packed_pointwise.packed_tile(CompileOptions(vector_width=width).host_target())
    return conv1d_packed.MIN_ROW_TILES * mr


@settings(max_examples=8, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(variant=st.sampled_from(sorted(v for op, v in PART_SPACES if op == "Conv" and (op, v) not in SPATIAL_PARTS)),
       data=st.data(),
       hw=st.integers(4, 40), act=st.sampled_from(["none", "Relu", "Sigmoid"]),
       residual=st.booleans(), threads=st.integers(2, 3))
def test_split_along_the_part_space(split_small_layers, variant, data, hw, act, residual, threads) -> None:
    """Too few output channels for a channel split: the layer splits along its variant's part space (pixels
    of ``simd_pointwise``, bands of tile rows of ``winograd_f4``, output rows of ``cblock``, ``stem_conv``
    and ``stem_packed``, output columns of ``conv1d_packed``, strips of pixels of ``im2col_bands``: one call per
    part, with its range as arguments),
    bit-identical to one thread and equal to the numpy reference. (The fused block's part space,
    ``InvertedResidual: block_fused``, is checked in ``test_block_fusion.py``, the spatial ones,
    ``parts.SPATIAL_PARTS``, in ``test_spatial_parts.py``.)"""
    # each variant where it applies with too few channels for a balanced channel split of its own: Winograd
    # from 8 channels (so 8 or 16 lanes) with enough input channels for bands of one or two tile rows;
    # cblock with two vectors of channels (its least: a part of one vector is not a cblock) on short rows
    widths = WIDTHS if variant == "simd_pointwise" else WIDTHS[1:]
    if variant == "conv1d_packed":  # the widths whose least channel count (its register tiles) is below 2 vectors
        widths = [v for v in widths if conv1d_least(v) < 2 * v]
    width = data.draw(st.sampled_from(widths), label="width")
    row = 0
    if variant == "conv1d_packed":  # a Conv1D of MIN_ROW_TILES register tiles of channels (12 at 16 registers,
        # 16 at 32), 2 strips or more
        m = data.draw(st.integers(conv1d_least(width), 2 * width - 1), label="m")
        k, c = 3, data.draw(st.integers(6, 24), label="c")
        assume(balanced_ranges(m, threads, width) is None)
        row = data.draw(st.integers(4 * width, 12 * width), label="row")
    elif variant == "simd_pointwise":
        k, m, c = 1, data.draw(st.integers(1, 2 * width - 1), label="m"), data.draw(st.integers(1, 12), label="c")
    elif variant in ("stem_conv", "stem_packed"):  # (a stem: 1-4 input channels, rows of at least a vector)
        k, m, c = 3, data.draw(st.integers(1, 2 * width - 1), label="m"), data.draw(st.integers(1, 4), label="c")
        hw = max(hw, width)
    elif variant == "im2col_bands":  # (forced: any 2-D dense Conv of more than one strip of pixels)
        k, m, c = 3, data.draw(st.integers(1, 2 * width - 1), label="m"), data.draw(st.integers(1, 12), label="c")
        hw = max(hw, 2 * width)
    elif variant == "winograd_f4":
        k, m, c = 3, data.draw(st.integers(8, 2 * width - 1), label="m"), data.draw(st.integers(40, 64), label="c")
        hw = max(hw, 16)  # (Winograd applies from a few tiles on, where it saves enough: asserted below)
    else:
        k, m, c = 3, 2 * width, data.draw(st.integers(15, 24), label="c")
        # (phase_packed: rows of one whole vector, its pixel lanes as full as cblock's two vectors of channels,
        # MIN_LANE_GAIN; cblock: short rows)
        hw = width if variant == "phase_packed" else min(hw, 2 * width - 1)
    model, w, b = pointwise_model(c, m, hw, act, residual, k=k, row=row)
    if variant in ("cblock", "winograd_f4", "phase_packed"):  # (a short row that Winograd tiles well is
        # Winograd's: MIN_WINOGRAD_RATIO; Winograd only where it saves enough, slot_ratio's crossover)
        conv = next(n for n in cnnjit.compile(model, vector_width=width, entry="lazy").ir.nodes if n.op == "Conv")
        applies = {"cblock": cblock_applies, "winograd_f4": winograd.winograd_applies,
                   "phase_packed": phase_packed.phase_packed_applies}[variant]
        assume(applies(conv, CompileOptions(vector_width=width).host_target()))
    rng = np.random.default_rng(c * 1000 + m * 10 + hw)
    h, w_ = (1, row) if row else (hw, hw)
    feeds = {"x": rng.standard_normal((1, c, h, w_)).astype(np.float32)}
    if residual:
        feeds["r"] = rng.standard_normal((1, m, h, w_)).astype(np.float32)
    one, many, calls, node = compile_forced(model, width, threads, variant)
    units, align = PART_SPACES[("Conv", variant)](node, CompileOptions(vector_width=width).host_target())
    pixels = balanced_ranges(units, threads, align)
    if pixels:
        assert [cl.note.rsplit("[", 1)[1] for cl in calls] == [f"part {lo}:{hi}]" for lo, hi in pixels]
    else:
        assert len(calls) == 1
    got = many.run(None, feeds)[0]
    np.testing.assert_array_equal(got, one.run(None, feeds)[0])
    want = ref.conv(feeds["x"], w, b, pads=[0, k // 2] * 2 if row else [k // 2] * 4)
    if residual:
        want = want + feeds["r"]
    acts = {"none": lambda v: v, "Relu": lambda v: np.maximum(v, 0), "Sigmoid": lambda v: 1 / (1 + np.exp(-v))}
    want = acts[act](want)
    # (the tolerance of tests/test_simd_widths.py: scaled to the output, for Winograd's transforms)
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4 * max(1.0, float(np.abs(want).max())))


@pytest.mark.parametrize("width", WIDTHS)
def test_channel_split_is_balanced_in_whole_vectors(split_small_layers, width) -> None:
    """Output channels split in equal ranges of whole vectors when they divide (144 = 2 x 72 at width 8:
    not 80 + 64, as a fixed 16-channel alignment gave)."""
    m = 18 * width
    model, _, _ = pointwise_model(8, m, 12, "none", False)
    cm = cnnjit.compile(model, vector_width=width, threads=2)
    notes = _notes(cm)
    assert len(notes) == 2
    ranges = channel_ranges(m, 2, width)
    assert all(f"[channels {lo}:{hi} of {m}]" in n for n, (lo, hi) in zip(notes, ranges)), notes
    assert all((hi - lo) % width == 0 for lo, hi in ranges[:-1])
    assert max(hi - lo for lo, hi in ranges) * 2 <= split.MAX_IMBALANCE * m


@settings(max_examples=4, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(width=st.sampled_from(WIDTHS), data=st.data(), hw=st.integers(6, 8), act=st.sampled_from(["none", "Relu"]),
       residual=st.booleans())
def test_packed_pointwise_parts_below_its_channel_bound(split_small_layers, monkeypatch, width, data, hw, act,
                                                       residual) -> None:
    """``packed_pointwise`` applies from ``MIN_ROW_TILES`` register tiles of output channels (a speed rule:
    ``parts.ANY_CHANNEL_PARTS``): a layer it computes still splits over channels into parts below that bound,
    each generated by it, bit-identical to one thread and equal to the numpy reference. (Its pixel parts,
    taken first where they balance as well, ``parts.SPATIAL_PARTS``, are left out here: the channel parts
    are what a map too small for whole strips of pixels gets.)"""
    monkeypatch.setattr(split, "SPATIAL_PARTS", set())
    target = CompileOptions(vector_width=width).host_target()
    mr, _ = packed_pointwise.packed_tile(target)
    least = packed_pointwise.MIN_ROW_TILES * mr
    m = data.draw(st.integers(least, 2 * least - 1).filter(lambda v: v % width == 0), label="m")
    ranges = balanced_ranges(m, 2, width)
    assume(ranges is not None and ranges[0][1] < least)
    model, w, b = pointwise_model(packed_pointwise.MIN_CHANNELS, m, hw, act, residual)
    forced = {"Conv": "packed_pointwise"}
    one = cnnjit.compile(model, vector_width=width, threads=1, variants=forced)
    two = cnnjit.compile(model, vector_width=width, threads=2, variants=forced)
    calls = [cl for cl in two._default_spec().program.calls if cl.op == "Conv"]
    assert {cl.variant for cl in calls} == {"packed_pointwise"}
    assert [cl.note.rsplit("[", 1)[1] for cl in calls] == [f"channels {lo}:{hi} of {m}]" for lo, hi in ranges]
    check_conv_split(one, two, packed_pointwise.MIN_CHANNELS, m, hw, w, b, 0, act, residual, m * 10 + hw)


@pytest.mark.parametrize("width", WIDTHS)
@pytest.mark.parametrize("c,hw", [(192, 13), (96, 13)])
def test_winograd_channel_parts_below_its_slot_ratio(split_small_layers, monkeypatch, width, c, hw) -> None:
    """``winograd_f4`` refuses a layer whose register tile would be too narrow (``slot_ratio``, a speed rule:
    ``parts.ANY_CHANNEL_PARTS``): a 192 -> 192 conv at 13x13 it computes whole still splits into two channel
    halves of its own kernel (at 16 lanes their 96 channels are refused), bit-identical to one thread and
    equal to the numpy reference, at every vector width."""
    monkeypatch.setattr(split, "PART_SPACE_EDGE", 0.0)  # (the channels, not its bands of tile rows)
    # (the one-step channel parts, a layer's split where its shared scratch is too large for the staged split:
    # test_winograd_staged_split)
    monkeypatch.setattr(winograd, "STAGED_MAX_BYTES", 0)
    # (the crossover of 8 lanes at every width: at 16 the 13x13 layer is cvec's by WIDE_RATIO, and a forced
    # variant must take the whole layer for its parts to be tried)
    monkeypatch.setattr(winograd, "WIDE_RATIO", {})
    monkeypatch.setattr(winograd, "WIDE_STREAM_BYTES", {})  # (192 channels' 5.3 MB: the 16-lane weight rule too)
    model, w, b = pointwise_model(c, c, hw, "Relu", True, k=3)
    forced = {"Conv": "winograd_f4"}
    one = cnnjit.compile(model, vector_width=width, threads=1, variants=forced)
    two = cnnjit.compile(model, vector_width=width, threads=2, variants=forced)
    calls = [cl for cl in two._default_spec().program.calls if cl.op == "Conv"]
    assert {cl.variant for cl in calls} == {"winograd_f4"}
    assert [cl.note.rsplit("[", 1)[1] for cl in calls] == [f"channels {lo}:{hi} of {c}]"
                                                          for lo, hi in balanced_ranges(c, 2, width)]
    rng = np.random.default_rng(c + width)
    feeds = {"x": rng.standard_normal((1, c, hw, hw)).astype(np.float32),
             "r": rng.standard_normal((1, c, hw, hw)).astype(np.float32)}
    got = two.run(None, feeds)[0]
    np.testing.assert_array_equal(got, one.run(None, feeds)[0])
    want = np.maximum(ref.conv(feeds["x"], w, b, pads=[1] * 4) + feeds["r"], 0)
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4 * max(1.0, float(np.abs(want).max())))


def test_pixel_split_of_a_projection(split_small_layers) -> None:
    """A 1x1 conv to 12 channels at 8 lanes (too few for two vectors): two pixel halves of 288."""
    model, _, _ = pointwise_model(32, 12, 24, "none", False)
    cm = cnnjit.compile(model, vector_width=8, threads=2, variants={"Conv": "simd_pointwise"})
    assert _notes(cm) == [n for n in _notes(cm) if "[part " in n] and len(_notes(cm)) == 2
    assert "[part 0:288]" in _notes(cm)[0] and "[part 288:576]" in _notes(cm)[1]


def test_band_split_of_a_winograd_conv(split_small_layers, monkeypatch: pytest.MonkeyPatch) -> None:
    """A 3x3 conv 64 -> 12 channels at 8 lanes on Winograd: its tile rows in two parts of whole bands (bands
    of the L2 size, not grown by ``winograd.plan`` to pad fewer tiles: its 8 tile rows are then two bands)."""
    monkeypatch.setattr(winograd, "BAND_MAX_BYTES", winograd.BAND_BYTES)
    model, _, _ = pointwise_model(64, 12, 32, "none", False, k=3)
    cm = cnnjit.compile(model, vector_width=8, threads=2, variants={"Conv": "winograd_f4"})
    assert len(_notes(cm)) == 2 and all("[part " in n for n in _notes(cm)), _notes(cm)
    assert "[part 0:4]" in _notes(cm)[0] and "[part 4:8]" in _notes(cm)[1]


@pytest.mark.parametrize("edge", [0.0, 1.1])
def test_winograd_prefers_bands_to_channels(split_small_layers, monkeypatch: pytest.MonkeyPatch, edge) -> None:
    """A Winograd conv whose output channels split evenly (16 at 8 lanes) splits along its bands of tile rows
    instead (``parts.PREFER_PART_SPACE``: a channel part transforms the whole input again) when the bands'
    largest part is within ``PART_SPACE_EDGE`` of the channels' (8 tile rows: 4 + 4); else over channels.
    Either way bit-identical to one thread."""
    monkeypatch.setattr(winograd, "BAND_MAX_BYTES", winograd.BAND_BYTES)
    monkeypatch.setattr(split, "PART_SPACE_EDGE", edge)
    monkeypatch.setattr(winograd, "STAGED_MAX_BYTES", 0)  # (channels in one step: test_winograd_staged_split)
    model, _, _ = pointwise_model(64, 16, 32, "Relu", False, k=3)
    forced = {"Conv": "winograd_f4"}
    cm = cnnjit.compile(model, vector_width=8, threads=2, variants=forced)
    notes = _notes(cm)
    if edge:
        assert len(notes) == 2 and "[part 0:4]" in notes[0] and "[part 4:8]" in notes[1], notes
    else:
        assert len(notes) == 2 and "[channels 0:8 of 16]" in notes[0], notes
    x = np.random.default_rng(5).standard_normal((1, 64, 32, 32)).astype(np.float32)
    one = cnnjit.compile(model, vector_width=8, threads=1, variants=forced)
    np.testing.assert_array_equal(cm.run(None, {"x": x})[0], one.run(None, {"x": x})[0])


@pytest.mark.parametrize("width", WIDTHS)
@settings(max_examples=4, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(c=st.integers(8, 40), vectors=st.sampled_from([2, 4]), hw=st.integers(16, 28),
       act=st.sampled_from(["none", "Relu"]), residual=st.booleans(), staged=st.booleans())
@example(c=40, vectors=2, hw=26, act="Relu", residual=True, staged=True)
def test_winograd_staged_split(split_small_layers, monkeypatch, width, c, vectors, hw, act, residual,
                               staged) -> None:
    """A Winograd conv split over output channels runs in two steps (``winograd.winograd_stages``): its input
    transform over halves of the input channels into a shared scratch, then the GEMMs and output transform
    over halves of the output channels (multiples of the register tile's channels), the second step waiting for
    the first; with too small a ``STAGED_MAX_BYTES`` the one-step channel parts as before. Bit-identical to
    one thread and equal to the numpy reference either way, at every vector width."""
    monkeypatch.setattr(split, "PART_SPACE_EDGE", 0.0)  # (the channels, not its bands of tile rows)
    monkeypatch.setattr(winograd, "WIDE_RATIO", {})
    monkeypatch.setattr(winograd, "STAGED_MAX_BYTES", 2 * 1024 * 1024 if staged else 0)
    m = vectors * width  # (halves of whole vectors: the channels split)
    model, w, b = pointwise_model(c, m, hw, act, residual, k=3)
    target = CompileOptions(vector_width=width).host_target()
    conv = next(n for n in cnnjit.compile(model, vector_width=width, entry="lazy").ir.nodes if n.op == "Conv")
    assume(winograd.winograd_applies(conv, target))
    one, two, calls, _ = compile_forced(model, width, 2, "winograd_f4")
    assert {cl.variant for cl in calls} == {"winograd_f4"}
    notes = [cl.note.rsplit("[", 1)[1] for cl in calls]
    outs = balanced_ranges(m, 2, winograd.plan(conv, target).mr)
    prog = two._default_spec().program
    conv_steps = [st_ for st_ in prog.meta["step_plan"] if prog.calls[st_.first].op == "Conv"]
    if staged and outs:
        assert notes == [f"input channels {lo}:{hi} of {c}]" for lo, hi in balanced_ranges(c, 2, 1)] + \
            [f"channels {lo}:{hi} of {m}]" for lo, hi in outs]
        assert [st_.parts for st_ in conv_steps] == [2, 2]
        assert prog.meta["step_plan"].index(conv_steps[0]) in conv_steps[1].deps  # (GEMMs after the transform)
    else:
        assert notes == [f"channels {lo}:{hi} of {m}]" for lo, hi in balanced_ranges(m, 2, width)]
        assert [st_.parts for st_ in conv_steps] == [2]
    check_conv_split(one, two, c, m, hw, w, b, 1, act, residual, c * 100 + hw)


def test_thin_cblock_channel_parts_give_way_to_rows(split_small_layers) -> None:
    """A stride-2 cblock conv 24 -> 48 at 8 lanes: channel halves of 3 vectors are below
    ``parts.MIN_CHANNEL_VECTORS`` (short channel blocks), so it splits its 16 output rows 8 + 8; 96 output
    channels split in halves of 6 vectors. Bit-identical to one thread either way."""
    rng = np.random.default_rng(2)
    for m, want in ((48, ["[part 0:8]", "[part 8:16]"]), (96, ["[channels 0:48 of 96]", "[channels 48:96 of 96]"])):
        inits = [numpy_helper.from_array((rng.standard_normal((m, 24, 3, 3)) * 0.2).astype(np.float32), "w")]
        g = helper.make_graph([helper.make_node("Conv", ["x", "w"], ["y"], pads=[1] * 4, strides=[2, 2])], "s2",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 24, 32, 32])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, m, 16, 16])], inits)
        model = helper.make_model(g, opset_imports=[helper.make_opsetid("", 13)], ir_version=8)
        forced = {"Conv": "cblock"}
        two = cnnjit.compile(model, vector_width=8, threads=2, variants=forced)
        notes = _notes(two)
        assert len(notes) == 2 and all(w in n for w, n in zip(want, notes)), notes
        x = rng.standard_normal((1, 24, 32, 32)).astype(np.float32)
        one = cnnjit.compile(model, vector_width=8, threads=1, variants=forced)
        np.testing.assert_array_equal(two.run(None, {"x": x})[0], one.run(None, {"x": x})[0])


@pytest.mark.parametrize("spatial", [False, True])
def test_thin_pointwise_channel_parts_give_way_to_pixels(split_small_layers, monkeypatch, spatial) -> None:
    """A 1x1 conv 8 -> 16 at 8 lanes on ``simd_pointwise``: channel halves of one vector are below
    ``parts.MIN_CHANNEL_VECTORS``, so its 256 pixels split 128 + 128; 48 channels split in halves of three
    vectors, unless spatial parts come first (``parts.SPATIAL_PARTS``, as built): pixels again. Bit-identical
    to one thread either way."""
    if not spatial:
        monkeypatch.setattr(split, "SPATIAL_PARTS", set())
    pixels = ["[part 0:128]", "[part 128:256]"]
    for m, want in ((16, pixels), (48, pixels if spatial else ["[channels 0:24 of 48]", "[channels 24:48"])):
        model, _, _ = pointwise_model(8, m, 16, "Relu", True)
        forced = {"Conv": "simd_pointwise"}
        two = cnnjit.compile(model, vector_width=8, threads=2, variants=forced)
        notes = _notes(two)
        assert len(notes) == 2 and all(w in n for w, n in zip(want, notes)), notes
        rng = np.random.default_rng(m)
        feeds = {"x": rng.standard_normal((1, 8, 16, 16)).astype(np.float32),
                 "r": rng.standard_normal((1, m, 16, 16)).astype(np.float32)}
        one = cnnjit.compile(model, vector_width=8, threads=1, variants=forced)
        np.testing.assert_array_equal(two.run(None, feeds)[0], one.run(None, feeds)[0])


def test_fewer_parts_when_more_would_be_unbalanced() -> None:
    assert balanced_ranges(104, 4, 8) == [(0, 56), (56, 104)]  # not 32, 32, 32, 8 nor 40, 40, 24
    assert balanced_ranges(144, 2, 8) == [(0, 72), (72, 144)]
    assert balanced_ranges(24, 2, 8) is None and balanced_ranges(8, 2, 8) is None
    for n in range(1, 300):
        for parts in (2, 3, 4):
            r = balanced_ranges(n, parts, 8)
            assert r is None or (2 <= len(r) <= parts and r[0][0] == 0 and r[-1][1] == n and split._balanced(r))


def test_unbalanced_split_is_not_made() -> None:
    assert split._balanced([(0, 72), (72, 144)])
    assert not split._balanced([(0, 16), (16, 24)])  # 1.33x the mean part
    assert not split._balanced([(0, 128), (128, 196)])


def gemm_model(k: int, n: int, trans_b: bool, bias: str, relu: bool, seed: int = 0):
    """``y = x [1, k] @ B + C`` (B given as ``[n, k]`` with ``transB``; C of ``n`` elements, one, or none),
    optionally followed by Relu."""
    rng = np.random.default_rng(seed)
    b = (rng.standard_normal((n, k) if trans_b else (k, n)) * 0.2).astype(np.float32)
    inits = [numpy_helper.from_array(b, "B")]
    ins = ["x", "B"]
    if bias != "none":
        inits.append(numpy_helper.from_array(rng.standard_normal(n if bias == "vector" else 1).astype(np.float32), "C"))
        ins.append("C")
    nodes = [helper.make_node("Gemm", ins, ["g" if relu else "y"], transB=int(trans_b))]
    if relu:
        nodes.append(helper.make_node("Relu", ["g"], ["y"]))
    g = helper.make_graph(nodes, "gemm", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, k])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, n])], inits)
    model = helper.make_model(g, opset_imports=[helper.make_opsetid("", 13)], ir_version=8)
    return model, [numpy_helper.to_array(i) for i in inits]


@settings(max_examples=8, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(width=st.sampled_from(WIDTHS), k=st.integers(1, 80), n=st.integers(2, 120), trans_b=st.booleans(),
       bias=st.sampled_from(["none", "vector", "scalar"]), relu=st.booleans())
def test_batch1_gemm_splits_over_columns(split_small_layers, width, k, n, trans_b, bias, relu) -> None:
    """A batch-1 Gemm splits over ranges of output columns (whole vectors, balanced) like a conv over
    channels: bit-identical to one thread, equal to numpy."""
    model, inits = gemm_model(k, n, trans_b, bias, relu)
    x = np.random.default_rng(k * 1000 + n).standard_normal((1, k)).astype(np.float32)
    one = cnnjit.compile(model, vector_width=width, threads=1)
    two = cnnjit.compile(model, vector_width=width, threads=2)
    calls = [c for c in two._default_spec().program.calls if c.op == "Gemm"]
    ranges = balanced_ranges(n, 2, width)
    if ranges:
        assert [c.note.rsplit("[", 1)[1] for c in calls] == [f"channels {lo}:{hi} of {n}]" for lo, hi in ranges]
    else:
        assert len(calls) == 1
    got = two(x)
    np.testing.assert_array_equal(got, one(x))
    want = x.astype(np.float64) @ (inits[0].T if trans_b else inits[0]).astype(np.float64)
    if bias != "none":
        want = want + inits[1]
    np.testing.assert_allclose(got, np.maximum(want, 0) if relu else want, rtol=1e-4, atol=1e-4)


def test_classifier_gemm_is_split(split_small_layers) -> None:
    model, _ = gemm_model(64, 96, True, "vector", False)
    cm = cnnjit.compile(model, vector_width=8, threads=2, entry="lazy")  # the split only: no kernel built
    notes = [c.note for c in cm._default_spec().program.calls if c.op == "Gemm"]
    assert len(notes) == 2 and "[channels 0:48 of 96]" in notes[0] and "[channels 48:96 of 96]" in notes[1], notes


def grouped_pointwise_model(c: int, m: int, groups: int, hw: int, act: str, residual: bool, seed: int = 0):
    """One grouped 1x1 conv ``c -> m`` in ``groups`` groups on ``hw x hw`` with bias, an optional activation
    and an optional residual input ``r``: (model, weights, bias)."""
    rng = np.random.default_rng(seed)
    w = (rng.standard_normal((m, c // groups, 1, 1)) * 0.3).astype(np.float32)
    b = rng.standard_normal(m).astype(np.float32)
    nodes = [helper.make_node("Conv", ["x", "w", "b"], ["c"], group=groups)]
    last = "c"
    if residual:
        nodes.append(helper.make_node("Add", [last, "r"], ["s"]))
        last = "s"
    nodes.append(helper.make_node(act if act != "none" else "Identity", [last], ["y"]))
    ins = [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, c, hw, hw])]
    if residual:
        ins.append(helper.make_tensor_value_info("r", TensorProto.FLOAT, [1, m, hw, hw]))
    g = helper.make_graph(nodes, "gpw", ins, [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, m, hw, hw])],
                          [numpy_helper.from_array(w, "w"), numpy_helper.from_array(b, "b")])
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", 13)], ir_version=8), w, b


@settings(max_examples=10, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(width=st.sampled_from(WIDTHS), groups=st.integers(2, 8), cg=st.integers(1, 12), mg=st.integers(1, 24),
       hw=st.integers(2, 20), act=st.sampled_from(["none", "Relu", "Sigmoid"]), residual=st.booleans(),
       threads=st.integers(2, 3))
def test_grouped_pointwise_groups_are_the_parts_of_one_step(split_small_layers, width, groups, cg, mg, hw, act,
                                                             residual, threads) -> None:
    """A grouped 1x1 conv (``simd_pointwise``: one call per group, ``parts.INDEPENDENT_CALLS``) on a team: its
    group calls are the parts of one step (every one of them, in order, no dependency between them),
    bit-identical to one thread and equal to the numpy reference."""
    c, m = cg * groups, mg * groups
    model, w, b = grouped_pointwise_model(c, m, groups, hw, act, residual, seed=groups * 100 + cg)
    one, many, calls, _ = compile_forced(model, width, threads, "simd_pointwise")
    assert [cl.note.rsplit("[", 1)[1] for cl in calls] == [f"call {i + 1} of {groups}]" for i in range(groups)]
    p = many._default_spec().program
    conv_steps = [st_ for st_ in p.meta["step_plan"] if p.calls[st_.first].op == "Conv"]
    assert [(st_.parts, p.calls[st_.first].note) for st_ in conv_steps] == [(groups, calls[0].note)]
    rng = np.random.default_rng(hw)
    feeds = {"x": rng.standard_normal((1, c, hw, hw)).astype(np.float32)}
    if residual:
        feeds["r"] = rng.standard_normal((1, m, hw, hw)).astype(np.float32)
    got = many.run(None, feeds)[0]
    np.testing.assert_array_equal(got, one.run(None, feeds)[0])
    want = ref.conv(feeds["x"], w, b, group=groups) + (feeds["r"] if residual else 0.0)
    want = {"none": want, "Relu": np.maximum(want, 0), "Sigmoid": 1 / (1 + np.exp(-want))}[act]
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4 * max(1.0, float(np.abs(want).max())))


def test_grouped_pointwise_stays_whole_without_independent_calls(split_small_layers, monkeypatch) -> None:
    """The same layer when ``simd_pointwise`` is not in ``parts.INDEPENDENT_CALLS``: its group calls run one
    after another (each its own step), so the step plan's parts come from that table alone."""
    monkeypatch.setattr(split, "INDEPENDENT_CALLS", set())
    model, _, _ = grouped_pointwise_model(16, 32, 4, 8, "none", False)
    _, many, calls, _ = compile_forced(model, 8, 2, "simd_pointwise")
    p = many._default_spec().program
    assert len(calls) == 4 and not any("[call " in cl.note for cl in calls)
    assert all(st_.parts == 1 for st_ in p.meta.get("step_plan", ()))  # (no step plan: a serial schedule)


def matrix_model(op: str, m: int, k: int, n: int, relu: bool, seed: int = 0):
    """``y = a @ B (+ C)``: a Gemm ``a [m, k]`` with a bias of ``n``, or a MatMul ``a [2, m, k]`` (its batch axis
    folds into the rows); optionally followed by Relu. (model, B, C or None)."""
    rng = np.random.default_rng(seed)
    b = (rng.standard_normal((k, n)) * 0.2).astype(np.float32)
    c = rng.standard_normal(n).astype(np.float32) if op == "Gemm" else None
    inits = [numpy_helper.from_array(b, "B")] + ([numpy_helper.from_array(c, "C")] if c is not None else [])
    a_shape, y_shape = ([m, k], [m, n]) if op == "Gemm" else ([2, m, k], [2, m, n])
    nodes = [helper.make_node(op, ["a", "B", "C"] if c is not None else ["a", "B"], ["g" if relu else "y"])]
    if relu:
        nodes.append(helper.make_node("Relu", ["g"], ["y"]))
    g = helper.make_graph(nodes, "matrix", [helper.make_tensor_value_info("a", TensorProto.FLOAT, a_shape)],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, y_shape)], inits)
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", 13)], ir_version=8), b, c


@settings(max_examples=10, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(op=st.sampled_from(["Gemm", "MatMul"]), width=st.sampled_from(WIDTHS), m=st.integers(2, 40),
       k=st.integers(16, 96), panels=st.integers(2, 9), tail=st.integers(0, 31), relu=st.booleans(),
       threads=st.integers(2, 3))
def test_matrix_splits_over_panels_of_columns(split_small_layers, op, width, m, k, panels, tail, relu,
                                              threads) -> None:
    """A Gemm or MatMul of several rows with a constant B on packed panels (``packed_gemm`` /
    ``packed_matmul``) splits along its panels of columns (``panel_part_space``: each part every row of its
    columns; a channel split needs a batch-1 output): bit-identical to one thread, equal to numpy."""
    from cnnjit.compiler.codegen.kernels.packed_gemm import MIN_MACS, NR

    nc = NR * width
    n = (panels - 1) * nc + 1 + tail % nc  # the last panel partly filled
    rows = m * (1 if op == "Gemm" else 2)
    assume(rows * k * n >= MIN_MACS)
    model, b, c = matrix_model(op, m, k, n, relu, seed=m * 100 + k)
    variant = {"Gemm": "packed_gemm", "MatMul": "packed_matmul"}[op]
    one = cnnjit.compile(model, vector_width=width, threads=1)
    many = cnnjit.compile(model, vector_width=width, threads=threads)
    calls = [cl for cl in many._default_spec().program.calls if cl.op == op]
    assert {cl.variant for cl in calls} == {variant}
    ranges = balanced_ranges(panels, threads, 1)
    if ranges:
        assert [cl.note.rsplit("[", 1)[1] for cl in calls] == [f"part {lo}:{hi}]" for lo, hi in ranges]
    else:
        assert len(calls) == 1
    a = np.random.default_rng(n).standard_normal((m, k) if op == "Gemm" else (2, m, k)).astype(np.float32)
    got = many.run(None, {"a": a})[0]
    np.testing.assert_array_equal(got, one.run(None, {"a": a})[0])
    want = a.astype(np.float64) @ b.astype(np.float64) + (c if c is not None else 0.0)
    np.testing.assert_allclose(got, np.maximum(want, 0) if relu else want, rtol=1e-4,
                               atol=1e-4 * max(1.0, float(np.abs(want).max())))


def pool_model(op: str, c: int, hw: int, k: int, stride: int, pad: int):
    """One ``op`` (MaxPool or AveragePool, ``k x k`` window, ``stride``, ``pad`` on every side, pads not counted)
    on a ``1 x c x hw x hw`` input."""
    attrs = dict(kernel_shape=[k, k], strides=[stride, stride], pads=[pad] * 4)
    if op == "AveragePool":
        attrs["count_include_pad"] = 0
    oh = (hw + 2 * pad - k) // stride + 1
    g = helper.make_graph([helper.make_node(op, ["x"], ["y"], **attrs)], "pool",
                          [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, c, hw, hw])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, c, oh, oh])])
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", 13)], ir_version=8)


@settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(op=st.sampled_from(["MaxPool", "AveragePool"]),
       variant=st.sampled_from(["simd_pool", "separable_pool", "flat_pool", "pool"]), width=st.sampled_from(WIDTHS),
       vectors=st.integers(2, 6), extra=st.integers(0, 15), hw=st.integers(3, 30), k=st.integers(2, 3),
       stride=st.integers(1, 2), pad=st.integers(0, 1), threads=st.integers(2, 3))
def test_pools_split_over_channel_planes(split_small_layers, op, variant, width, vectors, extra, hw, k, stride, pad,
                                         threads) -> None:
    """A MaxPool or AveragePool on a team splits over balanced ranges of channel planes (each part its planes of
    input and output), with the layer's variant in every part: bit-identical to one thread, equal to numpy."""
    from cnnjit.compiler.codegen.kernels import simd_pool

    c = vectors * width + (extra % width if extra < 8 else 0)  # (whole vectors half the time)
    assume(pad < k and hw + 2 * pad >= k)
    model = pool_model(op, c, hw, k, stride, pad)
    applies = {"simd_pool": simd_pool.simd_pool_applies, "separable_pool": simd_pool.separable_pool_applies,
               "flat_pool": simd_pool.flat_pool_applies, "pool": lambda n, t: True}[variant]
    node = next(iter(cnnjit.compile(model, vector_width=width, entry="lazy").ir.nodes))
    assume(applies(node, CompileOptions(vector_width=width).host_target()))
    forced = {op: variant}
    one = cnnjit.compile(model, vector_width=width, threads=1, variants=forced)
    many = cnnjit.compile(model, vector_width=width, threads=threads, variants=forced)
    calls = [cl for cl in many._default_spec().program.calls if cl.op == op]
    assert {cl.variant for cl in calls} == {variant}
    ranges = balanced_ranges(c, threads, width)
    if ranges:
        assert [cl.note.rsplit("[", 1)[1] for cl in calls] == [f"channels {lo}:{hi} of {c}]" for lo, hi in ranges]
    else:  # (no balanced ranges of whole vectors: 10 channels at 4 lanes)
        assert len(calls) == 1
    x = np.random.default_rng(c * 100 + hw).standard_normal((1, c, hw, hw)).astype(np.float32)
    got = many.run(None, {"x": x})[0]
    np.testing.assert_array_equal(got, one.run(None, {"x": x})[0])
    want = ref.max_pool(x, [k, k], strides=[stride] * 2, pads=[pad] * 4) if op == "MaxPool" else \
        ref.avg_pool(x, [k, k], strides=[stride] * 2, pads=[pad] * 4, count_include_pad=0)
    np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-6)
