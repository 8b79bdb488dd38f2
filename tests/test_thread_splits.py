"""How ``threads.split_node`` splits a layer (issue 18): over output channels in balanced ranges of whole
vectors, over pixels when the channels do not divide (a pointwise conv's kernel then takes its pixel range as
arguments, ``simd_pointwise``'s ``pixel_range``), or not at all. Every split must give the one-thread
result bit for bit and the numpy reference (``reference_np.py``) within float tolerance, at every vector
width."""

from __future__ import annotations

import numpy as np
import pytest
import reference_np as ref
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from onnx import TensorProto, helper, numpy_helper

import cnnjit
from cnnjit.compiler.codegen import threads as split
from cnnjit.compiler.codegen.threads import channel_ranges

WIDTHS = [4, 8, 16]


def pointwise_model(c: int, m: int, hw: int, act: str, residual: bool, seed: int = 0):
    """One 1x1 conv ``c -> m`` on a ``hw x hw`` image with bias, an optional fused activation and an
    optional residual (a second input ``r`` of the output's shape)."""
    rng = np.random.default_rng(seed)
    inits = [numpy_helper.from_array((rng.standard_normal((m, c, 1, 1)) * 0.3).astype(np.float32), "w"),
             numpy_helper.from_array(rng.standard_normal(m).astype(np.float32), "b")]
    nodes = [helper.make_node("Conv", ["x", "w", "b"], ["c"])]
    last = "c"
    if residual:
        nodes.append(helper.make_node("Add", [last, "r"], ["s"]))
        last = "s"
    if act != "none":
        nodes.append(helper.make_node(act, [last], ["y"]))
    else:
        nodes.append(helper.make_node("Identity", [last], ["y"]))
    ins = [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, c, hw, hw])]
    if residual:
        ins.append(helper.make_tensor_value_info("r", TensorProto.FLOAT, [1, m, hw, hw]))
    g = helper.make_graph(nodes, "pw", ins, [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, m, hw, hw])],
                          inits)
    model = helper.make_model(g, opset_imports=[helper.make_opsetid("", 13)], ir_version=8)
    return model, numpy_helper.to_array(inits[0]), numpy_helper.to_array(inits[1])


@pytest.fixture
def split_small_layers(monkeypatch: pytest.MonkeyPatch) -> None:
    """Small test layers count as worth splitting (the thresholds are for real models' sizes; constant for
    every example of a property test)."""
    monkeypatch.setattr(split, "MIN_PARALLEL_US", 0.0)
    monkeypatch.setattr(split, "MIN_PARALLEL_TOTAL_US", 0.0)
    monkeypatch.setattr(split, "MIN_PART_US", 1e-6)


def _notes(cm: cnnjit.CompiledModel) -> list[str]:
    return [c.note for c in cm._default_spec().program.calls if c.op == "Conv"]


@settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(width=st.sampled_from(WIDTHS), c=st.integers(1, 12), data=st.data(), hw=st.integers(9, 24),
       act=st.sampled_from(["none", "Relu", "Sigmoid"]), residual=st.booleans(), threads=st.integers(2, 3))
def test_pointwise_pixel_split(split_small_layers, width, c, data, hw, act, residual, threads) -> None:
    """Fewer output channels than two vectors: the layer splits over pixel ranges (one ``simd_pointwise``
    call per part, with its range), bit-identical to one thread and equal to the numpy reference."""
    m = data.draw(st.integers(1, 2 * width - 1), label="m")  # too few channels for a channel split
    model, w, b = pointwise_model(c, m, hw, act, residual)
    rng = np.random.default_rng(c * 1000 + m * 10 + hw)
    feeds = {"x": rng.standard_normal((1, c, hw, hw)).astype(np.float32)}
    if residual:
        feeds["r"] = rng.standard_normal((1, m, hw, hw)).astype(np.float32)
    forced = {"Conv": "simd_pointwise"}
    one = cnnjit.compile(model, vector_width=width, threads=1, variants=forced)
    many = cnnjit.compile(model, vector_width=width, threads=threads, variants=forced)
    calls = [cl for cl in many._default_spec().program.calls if cl.op == "Conv"]
    assert {cl.variant for cl in calls} == {"simd_pointwise"}
    pixels = channel_ranges(hw * hw, threads, split.PIXEL_ALIGN * width)
    if split._balanced(pixels) and len(pixels) > 1:
        assert len(calls) == len(pixels) and all("[pixels " in cl.note for cl in calls), _notes(many)
    else:
        assert len(calls) == 1
    got = many.run(None, feeds)[0]
    np.testing.assert_array_equal(got, one.run(None, feeds)[0])
    want = ref.conv(feeds["x"], w, b)
    if residual:
        want = want + feeds["r"]
    acts = {"none": lambda v: v, "Relu": lambda v: np.maximum(v, 0), "Sigmoid": lambda v: 1 / (1 + np.exp(-v))}
    want = acts[act](want)
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4)


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


def test_pixel_split_of_a_projection(split_small_layers) -> None:
    """A 1x1 conv to 12 channels at 8 lanes (too few for two vectors): two pixel halves of 288."""
    model, _, _ = pointwise_model(32, 12, 24, "none", False)
    cm = cnnjit.compile(model, vector_width=8, threads=2, variants={"Conv": "simd_pointwise"})
    assert _notes(cm) == [n for n in _notes(cm) if "[pixels " in n] and len(_notes(cm)) == 2
    assert "[pixels 0:288]" in _notes(cm)[0] and "[pixels 288:576]" in _notes(cm)[1]


def test_unbalanced_split_is_not_made() -> None:
    assert split._balanced([(0, 72), (72, 144)])
    assert not split._balanced([(0, 16), (16, 24)])  # 1.33x the mean part
    assert not split._balanced([(0, 128), (128, 196)])
