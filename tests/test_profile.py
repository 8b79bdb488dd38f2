"""The per-layer profiler: the timed schedule (cycle counter between the calls of the real numba entry)."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import ops_of
from onnx import TensorProto, helper, numpy_helper

import cnnjit
from cnnjit.compiler.codegen.cycles import HAVE_TICKS, read_ticks, tick_seconds
from cnnjit.flops import node_bytes
from cnnjit.profile import (
    above_peak,
    bound_label,
    fma_peak_gflops,
    memory_bound,
    profile_model,
    profile_schedule,
    slow_summary,
    stream_bandwidth_gbs,
    timed_entry,
    timed_source,
)
from cnnjit.roofline import (
    MEMORY_BOUND_SHARE,
    SLOW_PEAK_SHARE,
    SLOW_VERDICTS,
    Level,
    effective_bytes,
    level_of,
    memory_levels,
    memory_seconds,
    store_source,
    stream_source,
    verdict,
)
from cnnjit.runtime.model import Specialization


def conv_stack(channels: int = 16, size: int = 16, layers: int = 5):
    """Conv+Relu layers (same padding), then global pooling: one kernel call per layer, plus the pool."""
    rng = np.random.default_rng(0)
    nodes, inits, x = [], [], "x"
    cin = 3
    for i in range(layers):
        w = (rng.standard_normal((channels, cin, 3, 3)) / np.sqrt(9 * cin)).astype(np.float32)
        inits.append(numpy_helper.from_array(w, f"w{i}"))
        nodes.append(helper.make_node("Conv", [x, f"w{i}"], [f"c{i}"], pads=[1, 1, 1, 1]))
        nodes.append(helper.make_node("Relu", [f"c{i}"], [f"r{i}"]))
        x, cin = f"r{i}", channels
    nodes.append(helper.make_node("GlobalAveragePool", [x], ["y"]))
    g = helper.make_graph(nodes, "conv_stack",
                          [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, size, size])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, channels, 1, 1])], inits)
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 13)])
    m.ir_version = 8
    return m


def timed_run(spec: Specialization, feeds: dict[str, np.ndarray]) -> tuple[list[np.ndarray], np.ndarray]:
    """One run of the timed entry (``timed_entry``) on fresh buffers: (the outputs, the counter reads)."""
    p = spec.program
    bufs = p.allocate()
    for b in p.inputs:
        bufs[b.buffer][b.offset:b.offset + b.size] = feeds[b.name].reshape(-1)
    ts = np.zeros(len(p.calls) + 1, np.int64)
    timed_entry(p)(*[bufs[n] for n in p.buffer_names], ts)
    return [bufs[b.buffer][b.offset:b.offset + b.size].reshape(b.shape).copy() for b in p.outputs], ts


@pytest.fixture(scope="module")
def compiled():
    return cnnjit.compile(conv_stack(), entry="numba")


def test_timed_source_brackets_every_call(compiled) -> None:
    p = compiled._default_spec().program
    src = timed_source(p)
    n = len(p.calls)
    lines = src.splitlines()
    assert lines[0].startswith("def run(") and lines[0].endswith(", _ts):")
    assert [ln.strip() for ln in lines[1::2]] == [f"_ts[{i}] = ticks()" for i in range(n + 1)]
    assert [ln for ln in lines[2::2]] == [ln for ln in p.source.splitlines()[1:] if ln.strip()]


@pytest.mark.skipif(not HAVE_TICKS, reason="no cycle counter on this CPU")
def test_ticks_advance_and_calibrate() -> None:
    a = read_ticks()
    b = read_ticks()
    assert b >= a
    assert 1e-11 < tick_seconds() < 1e-8  # 0.1 to 100 GHz


@pytest.mark.skipif(not HAVE_TICKS, reason="no cycle counter on this CPU")
def test_timed_profile_adds_up_to_a_real_run(compiled) -> None:
    spec = compiled._default_spec()
    x = np.random.default_rng(1).standard_normal((1, 3, 16, 16)).astype(np.float32)
    prof = profile_schedule(spec, {"x": x}, repeat=30)
    assert prof.mode == "timed" and prof.entry == "numba"
    assert len(prof.calls) == len(spec.program.calls)
    assert all(len(c.times_ns) == 30 and c.median_s > 0 for c in prof.calls)
    # the parts add up to the whole timed run (the same runs, one clock); that the timed entry computes what the
    # real one does is checked on its outputs below, not by comparing times of separate runs (a timing
    # assertion: on a loaded 2-CPU CI machine the real run's median came out at half the profiled one)
    assert prof.sum_s == pytest.approx(prof.timed_run_s, rel=0.15)
    assert 0 < prof.run_min_s <= prof.run_s
    # one timing per kernel call: five fused Conv+Relu layers and the pool, in schedule order
    assert [c.op for c in prof.calls] == ["Conv"] * 5 + ["GlobalAveragePool"] == ops_of(compiled)
    # the profiled entry computes what the model computes, and reads the counter around every call
    outs, ts = timed_run(spec, {"x": x})
    np.testing.assert_array_equal(outs[0], compiled(x))
    assert len(ts) == len(prof.calls) + 1 and ts[0] > 0 and np.all(np.diff(ts) >= 0)


def test_calls_mode_and_profile_model(compiled) -> None:
    spec = compiled._default_spec()
    prof = profile_schedule(spec, repeat=3, warmup=1, mode="calls")
    assert prof.mode == "calls" and [c.op for c in prof.calls] == ops_of(compiled)
    assert len(prof.calls) == len(spec.program.calls) and all(len(c.times_ns) == 3 for c in prof.calls)
    with pytest.raises(ValueError):
        profile_schedule(spec, repeat=1, mode="nope")
    doc = profile_model(conv_stack(), repeat=5, warmup=1)
    assert doc["entry"] == "numba" and doc["mode"] == ("timed" if HAVE_TICKS else "calls")
    convs = [r for r in doc["calls"] if r["op"].startswith("Conv")]
    assert len(convs) == 5 and all(r["flops"] > 0 and r["gflops"] > 0 for r in convs)
    assert doc["peak_gflops"] > 0 and abs(sum(r["percent"] for r in doc["calls"]) - 100) < 1e-6


def test_above_peak_counts_effective_rates_by_variant() -> None:
    """Rows over 100% of the peak (a Winograd layer's direct-convolution FLOPs over its time) are counted by
    variant; rows at or under it, and rows without FLOPs, are not."""
    def row(variant: str, pct: float | None, flops: int = 10) -> dict:
        return {"variant": variant, "op": "Conv", "flops": flops, "percent_of_peak": pct}

    rows = [row("winograd_f4", 190.0), row("winograd_f4", 101.0), row("cblock", 100.0), row("cblock", 120.0),
            row("", 150.0), row("winograd_f4", 300.0, flops=0), row("direct", None)]
    assert above_peak(rows) == {"winograd_f4": 2, "cblock": 1, "Conv": 1}
    assert above_peak([row("cblock", 95.0)]) == {}


def test_fma_peak_is_positive() -> None:
    assert fma_peak_gflops(width=4, seconds=0.002, repeat=2) > 0.5


def lstm_model(T: int, I: int, H: int):  # noqa: E741 - ONNX's names
    """One forward LSTM over ``T`` steps of ``I`` inputs, hidden size ``H``."""
    rng = np.random.default_rng(0)
    inits = [numpy_helper.from_array(rng.standard_normal(s).astype(np.float32), n)
             for n, s in (("W", (1, 4 * H, I)), ("R", (1, 4 * H, H)))]
    g = helper.make_graph([helper.make_node("LSTM", ["x", "W", "R"], ["y"], hidden_size=H)], "l",
                          [helper.make_tensor_value_info("x", TensorProto.FLOAT, [T, 1, I])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)], inits)
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 14)])
    m.ir_version = 8
    return m


def test_a_recurrence_is_judged_by_the_cache_its_weights_stay_in() -> None:
    """An LSTM reads its recurrent weights R once per step (``node_bytes`` counts them T times: 1 MB here), but
    they are the same 16 KB each step: the level that serves them is the one its distinct bytes fit in."""
    doc = profile_model(lstm_model(64, 8, 32), repeat=2, warmup=1)
    levels = {lv["level"]: lv for lv in doc["levels"]}
    row = next(r for r in doc["calls"] if r["op"].startswith("LSTM"))
    assert row["bytes"] > 64 * 4 * 32 * 32 * 4  # R once per step
    footprint = (4 * 32 * 8 + 4 * 32 * 32) * 4 + 64 * 8 * 4  # W, R, x (and the outputs, small)
    size = levels[row["level"]]["bytes"]
    assert size is not None and footprint <= size < row["bytes"], (row["level"], size, row["bytes"])


def test_node_bytes_counts_operands_once_and_r_per_step() -> None:
    """The bytes a node must move, worked out by hand: a Conv reads x and w and writes y; a recurrence reads
    R once per step (T = 7 here)."""
    ir = cnnjit.compile(conv_stack(channels=4, size=8, layers=1), entry="lazy").ir
    conv = next(n for n in ir.nodes if n.op == "Conv")
    assert node_bytes(conv) == 4 * (3 * 64 + 4 * 3 * 9 + 4 * 64 + (4 if len(conv.inputs) > 2 else 0))
    T, I, H = 7, 3, 5
    loop = next(n for n in cnnjit.compile(lstm_model(T, I, H), entry="lazy").ir.nodes if n.op == "LSTMLoop")
    others = sum(int(np.prod(v.shape)) * v.dtype.itemsize for i, v in enumerate([*loop.inputs, *loop.outputs])
                 if v is not None and i != 1)
    assert node_bytes(loop) == others + T * 4 * (4 * H * H)


def test_memory_bound_is_the_roofline_ridge() -> None:
    assert memory_bound(flops=100, nbytes=100, balance=2.0)  # 1 FLOP/byte < 2
    assert not memory_bound(flops=300, nbytes=100, balance=2.0)
    assert memory_bound(flops=0, nbytes=64, balance=2.0)  # data movement
    assert not memory_bound(flops=0, nbytes=0, balance=2.0)
    assert stream_bandwidth_gbs(nbytes=1 << 20, repeat=2) > 0.1


def test_profile_marks_the_pool_memory_bound_and_the_convs_not() -> None:
    """A 3x3 conv of 16 channels does ~28 FLOP per byte it moves, a global average pool 0.25: on any machine
    whose balance lies between (every x86/ARM core: FMA peak / read bandwidth is 1-20 FLOP/byte) the profile
    flags the pool alone, and ``cnnjit profile`` prints the flag."""
    doc = profile_model(conv_stack(), repeat=3, warmup=1)
    assert 0.3 < doc["balance"] < 25, doc["balance"]
    by_op = {r["op"].split("+")[0]: r for r in doc["calls"]}
    assert by_op["GlobalAveragePool"]["memory_bound"] and not by_op["Conv"]["memory_bound"]
    assert all(r["bytes"] > 0 and r["intensity"] == r["flops"] / r["bytes"] for r in doc["calls"])


def test_roofline_judges_each_call_by_the_level_its_bytes_fit_in() -> None:
    """Every cache level's bandwidth is measured (an inner level at least as fast as the next one out), a
    working set goes to the innermost level that holds it, and each profiled call is judged by that level's
    balance: the small conv stack fits a cache, so its rows name a cache level, not DRAM."""
    levels = memory_levels(100.0)
    assert [lv.name for lv in levels][-1] == "DRAM" and levels[-1].size is None
    sizes = [lv.size for lv in levels[:-1]]
    assert sizes == sorted(sizes) and all(s > 0 for s in sizes)
    assert all(a.gbs >= b.gbs > 0 for a, b in zip(levels, levels[1:]))
    assert all(a.write_gbs >= b.write_gbs > 0 for a, b in zip(levels, levels[1:]))
    assert all(lv.balance == pytest.approx(100.0 / lv.gbs) for lv in levels)
    assert level_of(1, levels) is levels[0]
    assert level_of(levels[0].size + 1, levels) is levels[1]
    assert level_of(10 * levels[-2].size, levels) is levels[-1]
    doc = profile_model(conv_stack(), repeat=3, warmup=1)
    by_name = {lv["level"]: lv for lv in doc["levels"]}
    for r in doc["calls"]:
        lv = by_name[r["level"]]
        assert lv["bytes"] is not None and r["bytes"] <= lv["bytes"]  # ~10 KB of activations: a cache
        assert r["level_gbs"] == lv["gbs"] and r["level_write_gbs"] == lv["write_gbs"]
        # reads at the read bandwidth and writes at the write bandwidth, against the FLOPs at the peak
        need_s = r["read_bytes"] / (lv["gbs"] * 1e9) + r["written_bytes"] / (lv["write_gbs"] * 1e9)
        assert r["memory_ms"] == pytest.approx(need_s * 1e3)
        assert r["memory_bound"] == (need_s > r["flops"] / (doc["peak_gflops"] * 1e9))
        assert r["memory_share"] == pytest.approx(r["memory_ms"] / r["median_ms"])


def test_profile_splits_each_calls_bytes_into_reads_and_writes() -> None:
    """A call writes its outputs (each conv layer here: 16 channels of 16x16 floats) and reads the rest of the
    bytes it moves (input, weights, bias)."""
    doc = profile_model(conv_stack(), repeat=2, warmup=1)
    for r in doc["calls"]:
        assert r["read_bytes"] + r["written_bytes"] == r["bytes"]
    convs = [r for r in doc["calls"] if r["op"].startswith("Conv")]
    assert convs and all(r["written_bytes"] == 16 * 16 * 16 * 4 for r in convs)
    pool = next(r for r in doc["calls"] if r["op"].startswith("GlobalAveragePool"))
    assert pool["written_bytes"] == 16 * 4 and pool["read_bytes"] == 16 * 16 * 16 * 4


def test_writes_count_at_the_write_bandwidth() -> None:
    """A level that writes at half its read bandwidth makes a written byte cost two read bytes: a call that
    only reads is memory-bound later than one moving the same bytes as writes."""
    lv = Level("L9", 1 << 20, gbs=100.0, balance=1.0, write_gbs=50.0)
    assert effective_bytes(1000, 0, lv) == 1000 and effective_bytes(0, 1000, lv) == 2000
    assert memory_seconds(1000, 1000, lv) == pytest.approx(3000 / 100e9)
    assert not memory_bound(1500, effective_bytes(1000, 0, lv), lv.balance)
    assert memory_bound(1500, effective_bytes(0, 1000, lv), lv.balance)
    unknown = Level("L9", 1 << 20, gbs=100.0, balance=1.0)  # no write bandwidth: writes at the read one
    assert effective_bytes(0, 1000, unknown) == 1000


def test_bandwidth_probes_stream_real_memory() -> None:
    """The store probe stores (no loads in its loop: a write stream), the read probe loads, and both measure
    a positive bandwidth; the read probe's buffer holds data, so a stream four times the last cache is slower
    than one inside L1 (over ``np.zeros`` every page is the one shared zero page, always cached)."""
    src = store_source(8)
    loop = src.split("for i in range", 1)[1]
    assert "vstore8(buf, i + 0, a0)" in loop and "vload" not in loop.split("\n        a0 =")[0]
    assert "vload8(buf, i + 0)" in stream_source(8)
    assert stream_bandwidth_gbs(nbytes=1 << 20, repeat=2, write=True) > 0.1
    levels = memory_levels(100.0)
    assert levels[-1].gbs < levels[0].gbs / 2, [lv.gbs for lv in levels]


def test_verdict_cuts() -> None:
    """Under the ridge a call is memory-bound only from 25% of its level's bandwidths; over it, a call under
    half the peak is slow; both kinds are counted among the slow calls."""
    assert MEMORY_BOUND_SHARE == 0.25 and SLOW_PEAK_SHARE == 0.5
    assert verdict(True, 0.85, None) == "memory" and verdict(True, 0.25, 0.01) == "memory"
    assert verdict(True, 0.02, None) == "slow memory" and verdict(True, 0.249, 0.9) == "slow memory"
    assert verdict(False, 0.02, 0.3) == "slow" and verdict(False, 3.0, 0.6) == "compute"
    assert verdict(False, 0.0, None) == "compute"  # no FLOPs and no bytes: nothing to judge
    assert set(SLOW_VERDICTS) == {"slow", "slow memory"}


@pytest.mark.parametrize("gbs, want", [(1e6, "slow memory"), (1e-3, "memory")])
def test_labels_with_a_fake_roofline(monkeypatch, gbs: float, want: str) -> None:
    """With a fake machine whose peak puts every call under the ridge, levels that could move the bytes a
    million times faster than the calls do label every call ``slow (memory L1 0%)`` and count it among the
    sub-50% calls; levels a million times slower label it ``memory L1 ...%`` and count none."""
    import cnnjit.profile as prof

    fake = [Level("L1", 1 << 40, gbs=gbs, balance=1e9 / gbs, write_gbs=gbs), Level("DRAM", None, gbs, 1e9 / gbs, gbs)]
    monkeypatch.setattr(prof, "memory_levels", lambda peak: fake)
    monkeypatch.setattr(prof, "measured_peak", lambda kind: (1e9, "fake"))
    doc = profile_model(conv_stack(layers=2), repeat=2, warmup=1)
    assert doc["calls"] and all(r["memory_bound"] and r["verdict"] == want for r in doc["calls"])
    labels = [bound_label(r) for r in doc["calls"]]
    summary = slow_summary(doc["calls"], doc["sum_ms"])[-1]
    if want == "memory":
        assert all(lb.startswith("memory L1 ") for lb in labels) and summary.startswith("sub-50% calls: 0 of")
    else:
        assert all(lb == "slow (memory L1 0%)" for lb in labels)
        n = len(doc["calls"])
        assert summary.startswith(f"sub-50% calls: {n} of {n}") and f"{n} under the ridge" in summary
