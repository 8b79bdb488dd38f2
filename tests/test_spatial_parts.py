"""Spatial parts of split layers (issue 18, ``parts.SPATIAL_PARTS``): ``packed_pointwise``, ``simd_pointwise``
and ``strided_pointwise`` over whole strips of pixels and ``simd_depthwise`` over whole bands of output rows,
taken before output channels when they balance as well, so that consecutive layers keep each thread on its
own band of the map. Every split must give the one-thread result bit for bit and the numpy reference
(``reference_np.py``) within float tolerance, at every vector width and part count."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
import reference_np as ref
from conftest import avx2_registers, split_for_cpus
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from onnx import TensorProto, helper, numpy_helper
from test_thread_splits import compile_forced

import cnnjit
from cnnjit.compiler.codegen import parts
from cnnjit.compiler.codegen import threads as split
from cnnjit.compiler.codegen.kernels import packed_pointwise
from cnnjit.compiler.codegen.parts import PART_SPACES, SPATIAL_PARTS
from cnnjit.compiler.codegen.threads import _largest_share, balanced_ranges, nearest_ranges
from cnnjit.compiler.stages import CompileOptions, specialize

WIDTHS = [4, 8, 16]


@pytest.fixture
def split_small_layers(monkeypatch: pytest.MonkeyPatch) -> None:
    """Small test layers count as worth splitting (the thresholds are for real models' sizes), for up to 4
    threads on any machine (``conftest.split_for_cpus``)."""
    split_for_cpus(monkeypatch)
    monkeypatch.setattr(split, "MIN_PARALLEL_US", 0.0)
    monkeypatch.setattr(split, "MIN_PARALLEL_TOTAL_US", 0.0)
    monkeypatch.setattr(split, "MIN_PART_US", 1e-6)


def conv_model(c: int, m: int, hw: int, k: int, stride: int, group: int, act: str, residual: bool, seed: int = 0):
    """One ``k x k`` conv ``c -> m`` (``group`` groups, same padding, ``stride``) with bias on a ``hw x hw``
    image, an optional activation and an optional residual input ``r``; (model, weights, bias)."""
    rng = np.random.default_rng(seed)
    w = (rng.standard_normal((m, c // group, k, k)) * 0.3).astype(np.float32)
    b = rng.standard_normal(m).astype(np.float32)
    oh = (hw + 2 * (k // 2) - k) // stride + 1
    nodes = [helper.make_node("Conv", ["x", "w", "b"], ["c"], pads=[k // 2] * 4, strides=[stride] * 2, group=group)]
    last = "c"
    ins = [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, c, hw, hw])]
    if residual:
        nodes.append(helper.make_node("Add", [last, "r"], ["s"]))
        ins.append(helper.make_tensor_value_info("r", TensorProto.FLOAT, [1, m, oh, oh]))
        last = "s"
    nodes.append(helper.make_node(act if act != "none" else "Identity", [last], ["y"]))
    g = helper.make_graph(nodes, "conv", ins, [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, m, oh, oh])],
                          [numpy_helper.from_array(w, "w"), numpy_helper.from_array(b, "b")])
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", 13)], ir_version=8), w, b


def test_nearest_ranges() -> None:
    assert nearest_ranges(196, 2, 16) == [(0, 96), (96, 196)]
    assert balanced_ranges(196, 2, 16) == [(0, 96), (96, 196)]  # (not 112 + 84)
    assert nearest_ranges(10, 3, 4) == [(0, 4), (4, 8), (8, 10)]
    assert balanced_ranges(144, 2, 8) == [(0, 72), (72, 144)]


@settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(variant=st.sampled_from(sorted(v for op, v in SPATIAL_PARTS if op == "Conv")), width=st.sampled_from(WIDTHS),
       data=st.data(), act=st.sampled_from(["none", "Relu", "Sigmoid"]), residual=st.booleans(),
       threads=st.integers(2, 4))
def test_spatial_parts_when_they_balance_as_well(split_small_layers, variant, width, data, act, residual,
                                                 threads) -> None:
    """The layer splits along its spatial part space when that balances about as well as its channels
    (``SPATIAL_EDGE``) in parts large enough (``MIN_SPATIAL_UNITS``), else over channels: one call per part,
    each with its range, bit-identical to one thread and equal to the numpy reference."""
    target = CompileOptions(vector_width=width).host_target()
    if variant in ("packed_pointwise", "strided_packed"):  # (from MIN_CHANNELS inputs and MIN_ROW_TILES row tiles)
        mr, _ = packed_pointwise.packed_tile(target)
        m = data.draw(st.integers(packed_pointwise.MIN_ROW_TILES * mr, packed_pointwise.MIN_ROW_TILES * mr + 9), "m")
        c = data.draw(st.integers(packed_pointwise.MIN_CHANNELS, packed_pointwise.MIN_CHANNELS + 8), "c")
        stride = 1 if variant == "packed_pointwise" else 2  # (strided: at least a strip of 32 output pixels)
        k, group, hw = 1, 1, data.draw(st.integers(6 if stride == 1 else 12, 24 * stride), "hw")
    elif variant == "simd_pointwise":
        c, m = data.draw(st.integers(1, 12), "c"), data.draw(st.integers(1, 3 * width + 1), "m")
        k, stride, group, hw = 1, 1, 1, data.draw(st.integers(4, 30), "hw")
    elif variant == "strided_pointwise":  # (a 1x1 of stride 2: each part gathers its own output rows)
        c, m = data.draw(st.integers(1, 12), "c"), data.draw(st.integers(1, 3 * width + 1), "m")
        k, stride, group, hw = 1, 2, 1, data.draw(st.integers(4, 60), "hw")
    elif variant == "depthwise_direct":  # (3x3, column stride 1, rows of at least MIN_ROW_VECTORS vectors)
        c = m = group = data.draw(st.integers(2, 3 * width + 1), "c")
        k, stride, hw = 3, 1, data.draw(st.integers(4 * width, 4 * width + 12), "hw")
    elif variant == "depthwise_direct_s2":  # (3x3, stride 2, output rows of at least a vector)
        c = m = group = data.draw(st.integers(2, 3 * width + 1), "c")
        k, stride, hw = 3, 2, data.draw(st.integers(2 * width, 2 * width + 24), "hw")
    else:
        c = m = group = data.draw(st.integers(2, 3 * width + 1), "c")
        k, stride, hw = data.draw(st.sampled_from([3, 5]), "k"), data.draw(st.sampled_from([1, 2]), "s"), \
            data.draw(st.integers(5, 40), "hw")
    model, w, b = conv_model(c, m, hw, k, stride, group, act, residual)
    rng = np.random.default_rng(c * 1000 + m * 10 + hw)
    feeds = {"x": rng.standard_normal((1, c, hw, hw)).astype(np.float32)}
    oh = (hw + 2 * (k // 2) - k) // stride + 1
    if residual:
        feeds["r"] = rng.standard_normal((1, m, oh, oh)).astype(np.float32)
    one, many, calls, node = compile_forced(model, width, threads, variant)
    space = PART_SPACES[("Conv", variant)](node, target)  # (None: this layer has no part space)
    # (row bands begin on cache lines where the planes are whole lines: parts.line_rows)
    spans = balanced_ranges(space[0], threads, parts.line_rows(node, variant, *space)) if space else None
    channels = balanced_ranges(m, threads, width)
    notes = [cl.note.rsplit("[", 1)[-1] for cl in calls]
    first = split.spatial_first("Conv", variant, spans, target)  # (its smallest part: MIN_SPATIAL_UNITS)
    if spans and (channels is None or first and _largest_share(spans) <= split.SPATIAL_EDGE * _largest_share(channels)):
        assert notes == [f"part {lo}:{hi}]" for lo, hi in spans]
    elif channels is None:
        assert len(calls) == 1
    got = many.run(None, feeds)[0]
    np.testing.assert_array_equal(got, one.run(None, feeds)[0])
    want = ref.conv(feeds["x"], w, b, pads=[k // 2] * 4, strides=[stride] * 2, group=group)
    if residual:
        want = want + feeds["r"]
    acts = {"none": lambda v: v, "Relu": lambda v: np.maximum(v, 0), "Sigmoid": lambda v: 1 / (1 + np.exp(-v))}
    np.testing.assert_allclose(got, acts[act](want), rtol=1e-4, atol=1e-4)


def sixteen_registers(monkeypatch, line: int) -> None:
    """For the earlier split (``LINE_BYTES`` 0): a register file of 16 vectors (AVX2's), on which
    ``simd_depthwise``'s sweeps keep one accumulator a row and so have row parts; with 32 (AVX-512) they sum
    each row in two chains and split by channels only (``row_parts``)."""
    if not line:
        avx2_registers(monkeypatch)


@pytest.mark.parametrize(("hw", "want", "line"), [(14, "[channels 0:192 of 384]", 64), (32, "[part 0:16]", 64),
                                                  (28, "[part 0:14]", 0)])
def test_short_depthwise_bands_give_way_to_channels(split_small_layers, monkeypatch, hw: int, want: str,
                                                    line: int) -> None:
    """A 3x3 depthwise conv of 384 channels at 2 threads: 32 rows split in bands of 16, but 14 rows would be
    bands of 7, under ``parts.MIN_SPATIAL_UNITS`` (each band copies its halo per channel: 1.3-1.5x the layer
    in all): channel halves instead. 28 rows split in bands of 14 where band boundaries may fall mid-line
    (``parts.LINE_BYTES`` 0, the earlier split; ``test_depthwise_bands_begin_on_cache_lines``: channels now).
    Bit-identical to one thread either way."""
    monkeypatch.setattr(parts, "LINE_BYTES", line)
    sixteen_registers(monkeypatch, line)
    model, _, _ = conv_model(384, 384, hw, 3, 1, 384, "Relu", False)
    forced = {"Conv": "simd_depthwise"}
    two = cnnjit.compile(model, vector_width=8, threads=2, variants=forced)
    notes = [cl.note for cl in two._default_spec().program.calls if cl.op == "Conv"]
    assert len(notes) == 2 and want in notes[0], notes
    x = np.random.default_rng(hw).standard_normal((1, 384, hw, hw)).astype(np.float32)
    one = cnnjit.compile(model, vector_width=8, threads=1, variants=forced)
    np.testing.assert_array_equal(two.run(None, {"x": x})[0], one.run(None, {"x": x})[0])


def test_mobilenet_like_chain_splits_in_bands(split_small_layers) -> None:
    """An inverted-residual chain (1x1 expand, 3x3 depthwise, 1x1 project) at 2 threads: every layer split
    along rows or pixels, none over channels, and the result bit-identical to one thread; with the target's
    ``spatial_parts`` off, channel parts, the same result."""
    rng = np.random.default_rng(3)
    c, e, hw = 16, 96, 32  # (28 before the line rule: 28-wide bands of 14 rows begin mid-line, see below)
    inits = [numpy_helper.from_array((rng.standard_normal(s) * 0.3).astype(np.float32), n)
             for n, s in (("w1", (e, c, 1, 1)), ("w2", (e, 1, 3, 3)), ("w3", (c, e, 1, 1)))]
    nodes = [helper.make_node("Conv", ["x", "w1"], ["a"]), helper.make_node("Relu", ["a"], ["b"]),
             helper.make_node("Conv", ["b", "w2"], ["d"], pads=[1] * 4, group=e),
             helper.make_node("Relu", ["d"], ["f"]), helper.make_node("Conv", ["f", "w3"], ["y"])]
    g = helper.make_graph(nodes, "ir", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, c, hw, hw])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, c, hw, hw])], inits)
    model = helper.make_model(g, opset_imports=[helper.make_opsetid("", 13)], ir_version=8)
    feeds = {"x": rng.standard_normal((1, c, hw, hw)).astype(np.float32)}
    many = cnnjit.compile(model, threads=2, vector_width=8)
    calls = [cl for cl in many._default_spec().program.calls if cl.op == "Conv"]
    assert calls and not any("[channels" in cl.note for cl in calls), [cl.note for cl in calls]
    one = cnnjit.compile(model, threads=1, vector_width=8)
    np.testing.assert_array_equal(many.run(None, feeds)[0], one.run(None, feeds)[0])
    # the target's spatial_parts off (benchmarks/affinity_ab.py's old split): channels first, the same bits
    options = CompileOptions(threads=2, vector_width=8)
    old = specialize(model, {"x": (1, c, hw, hw)}, options, target=replace(options.host_target(), spatial_parts=False))
    assert any("[channels" in cl.note for cl in old.program.calls if cl.op == "Conv")
    np.testing.assert_array_equal(old.run(feeds)[0], one.run(None, feeds)[0])


@pytest.mark.parametrize(("variant", "c", "m"), [("stem_packed", 3, 32), ("stem_conv", 3, 32), ("phase_packed", 8, 5)])
@pytest.mark.parametrize("width", WIDTHS)
def test_stem_splits_in_rows_not_channels(split_small_layers, width: int, variant: str, c: int, m: int) -> None:
    """A stem (3 -> 32, 3x3, stride 2: MobileNetV2's, smaller) whose 32 channels split evenly at every width
    still splits in bands of output rows (``parts.PREFER_PART_SPACE``: a channel part builds every block's
    patch matrix, or fills every band's phase planes, again), bit-identical to one thread and equal to the
    numpy reference; so does ``phase_packed``'s deeper input (8 -> 5)."""
    model, w, b = conv_model(c, m, 40, 3, 2, 1, "Relu", False)
    one, two, calls, _ = compile_forced(model, width, 2, variant)
    assert [cl.note.rsplit("[", 1)[-1] for cl in calls] == ["part 0:10]", "part 10:20]"]
    x = np.random.default_rng(width).standard_normal((1, c, 40, 40)).astype(np.float32)
    got = two.run(None, {"x": x})[0]
    np.testing.assert_array_equal(got, one.run(None, {"x": x})[0])
    want = np.maximum(ref.conv(x, w, b, pads=[1] * 4, strides=[2, 2]), 0)
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("aligned", [True, False])
def test_expansion_takes_its_depthwise_readers_channel_ranges(split_small_layers, monkeypatch, aligned: bool) -> None:
    """A 1x1 expansion (48 -> 192) read only by a depthwise conv that splits over channels (14 rows: bands of
    7 are under ``MIN_SPATIAL_UNITS``) splits over the same channel ranges (``threads.aligned_consumer``), not
    along its pixels: each thread's depthwise part reads what the same thread wrote. Without the rule, the
    pixels (``SPATIAL_EDGE``). Bit-identical to one thread either way."""
    if not aligned:
        monkeypatch.setattr(split, "aligned_consumer", lambda *a: False)
    rng = np.random.default_rng(4)
    c, e, hw = 48, 192, 14
    inits = [numpy_helper.from_array((rng.standard_normal(s) * 0.3).astype(np.float32), n)
             for n, s in (("w1", (e, c, 1, 1)), ("w2", (e, 1, 3, 3)))]
    nodes = [helper.make_node("Conv", ["x", "w1"], ["a"]), helper.make_node("Relu", ["a"], ["b"]),
             helper.make_node("Conv", ["b", "w2"], ["y"], pads=[1] * 4, group=e)]
    g = helper.make_graph(nodes, "ed", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, c, hw, hw])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, e, hw, hw])], inits)
    model = helper.make_model(g, opset_imports=[helper.make_opsetid("", 13)], ir_version=8)
    two = cnnjit.compile(model, threads=2, vector_width=8)
    calls = [cl for cl in two._default_spec().program.calls if cl.op == "Conv"]
    expand = [cl.note.rsplit("[", 1)[-1] for cl in calls if cl.variant == "packed_pointwise"]
    depthwise = [cl.note.rsplit("[", 1)[-1] for cl in calls if cl.variant == "simd_depthwise_static"]  # (the default)
    assert depthwise == ["channels 0:96 of 192]", "channels 96:192 of 192]"]
    assert expand == (depthwise if aligned else ["part 0:96]", "part 96:196]"]), expand
    x = rng.standard_normal((1, c, hw, hw)).astype(np.float32)
    one = cnnjit.compile(model, threads=1, vector_width=8)
    np.testing.assert_array_equal(two.run(None, {"x": x})[0], one.run(None, {"x": x})[0])


def test_line_units() -> None:
    """``parts.plane_line_units``: the fewest rows (or pixels) of an fp32 output plane that make whole 64-byte
    lines, 0 where a plane is not whole lines; ``line_rows`` only for ``parts.ROW_PARTS``; ``line_clean``."""
    from cnnjit.ir import Node, Value
    from cnnjit.ir.types import TensorType

    def conv(h: int, w: int) -> Node:
        x = Value(TensorType(np.dtype(np.float32), (1, 8, h, w)), "x")
        y = Value(TensorType(np.dtype(np.float32), (1, 8, h, w)), "y")
        return Node("Conv", [x], [y], {}, "c")

    assert parts.plane_line_units(conv(28, 28), 28) == 4  # 28 floats a row: 4 rows are 7 lines
    assert parts.plane_line_units(conv(28, 28), 784) == 16  # pixels: 16 floats a line
    assert parts.plane_line_units(conv(56, 56), 56) == 2
    assert parts.plane_line_units(conv(32, 32), 32) == 1
    assert parts.plane_line_units(conv(14, 14), 14) == 0  # 784 bytes a plane: some boundary is mid-line
    assert parts.line_rows(conv(28, 28), "simd_depthwise_static", 28, 1) == 4
    assert parts.line_rows(conv(28, 28), "simd_depthwise_static", 28, 2) == 4
    assert parts.line_rows(conv(28, 28), "packed_pointwise", 784, 16) == 16  # (not a row part space)
    assert parts.line_rows(conv(14, 14), "simd_depthwise_static", 14, 1) == 1
    assert parts.line_clean(conv(28, 28), 784, [(0, 384), (384, 784)])
    assert not parts.line_clean(conv(28, 28), 28, [(0, 14), (14, 28)])
    assert not parts.line_clean(conv(14, 14), 196, [(0, 96), (96, 196)])


@pytest.mark.parametrize(("width", "line"), [*((w, 64) for w in WIDTHS), (8, 0)])
def test_depthwise_bands_begin_on_cache_lines(split_small_layers, monkeypatch, width: int, line: int) -> None:
    """MobileNetV2's 28x28 stage at 2 threads (expand 32 -> 192, depthwise 3x3, project): 28-wide fp32 rows make
    a band boundary at row 14 fall mid-line in every plane (both threads write that line), so the depthwise
    conv splits by channels (bands aligned to lines, 16 + 12 rows, would not balance), and the expansion keeps
    its pixel halves, which begin on lines (``parts.line_clean``), rather than the depthwise reader's channel
    ranges. ``parts.LINE_BYTES`` 0: the earlier split (8 lanes), bands of 14 rows, expansion by pixels. Bit-identical to
    one thread and equal to the numpy reference at every vector width."""
    monkeypatch.setattr(parts, "LINE_BYTES", line)
    sixteen_registers(monkeypatch, line)
    rng = np.random.default_rng(width)
    c, e, hw = 32, 192, 28
    w1, w2 = ((rng.standard_normal(s) * 0.3).astype(np.float32) for s in ((e, c, 1, 1), (e, 1, 3, 3)))
    nodes = [helper.make_node("Conv", ["x", "w1"], ["a"]), helper.make_node("Relu", ["a"], ["b"]),
             helper.make_node("Conv", ["b", "w2"], ["y"], pads=[1] * 4, group=e)]
    g = helper.make_graph(nodes, "ed", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, c, hw, hw])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, e, hw, hw])],
                          [numpy_helper.from_array(w1, "w1"), numpy_helper.from_array(w2, "w2")])
    model = helper.make_model(g, opset_imports=[helper.make_opsetid("", 13)], ir_version=8)
    two = cnnjit.compile(model, threads=2, vector_width=width)
    calls = [cl for cl in two._default_spec().program.calls if cl.op == "Conv"]
    expand = [cl.note.rsplit("[", 1)[-1] for cl in calls if cl.variant == "packed_pointwise"]
    depthwise = [cl.note.rsplit("[", 1)[-1] for cl in calls if cl.variant != "packed_pointwise"]
    assert {cl.variant for cl in calls} - {"packed_pointwise"} <= {v for _, v in parts.ROW_PARTS}
    assert depthwise == (["channels 0:96 of 192]", "channels 96:192 of 192]"] if line else
                         ["part 0:14]", "part 14:28]"]), depthwise
    strip = packed_pointwise.packed_tile(CompileOptions(vector_width=width).host_target())[1] * width
    (_, cut), _ = balanced_ranges(hw * hw, 2, strip)  # (the expansion's pixel halves, in whole strips)
    if line and cut * 4 % 64:  # (4 lanes: strips of 8 pixels, halves of 392: mid-line) the reader's channels
        assert expand == depthwise, expand
    else:
        assert expand == [f"part 0:{cut}]", f"part {cut}:{hw * hw}]"], expand
    x = rng.standard_normal((1, c, hw, hw)).astype(np.float32)
    one = cnnjit.compile(model, threads=1, vector_width=width)
    got = two.run(None, {"x": x})[0]
    np.testing.assert_array_equal(got, one.run(None, {"x": x})[0])
    want = ref.conv(np.maximum(ref.conv(x, w1, None), 0), w2, None, pads=[1] * 4, group=e)
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4)
