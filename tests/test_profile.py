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
    below_peak,
    call_memory_seconds,
    chase_chain,
    effective_bytes,
    level_of,
    load_latency_ns,
    memory_bound_seconds,
    memory_levels,
    memory_seconds,
    reuse_distances,
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
        assert lv["bytes"] is not None and r["bytes"] <= lv["bytes"]  # ~100 KB in a whole run: a cache
        assert r["level_gbs"] == lv["gbs"] and r["level_write_gbs"] == lv["write_gbs"]
        # the level named is the farthest one the call reads from or writes to
        order = [x["level"] for x in doc["levels"]]
        assert r["level"] == max([r["write_level"], *r["read_levels"]], key=order.index)
        # each operand at the read bandwidth of the level it comes from, the writes at the write bandwidth of
        # the level the call's bytes fit in, one load latency of the farthest level read; against the peak
        assert sum(r["read_levels"].values()) == r["read_bytes"]
        need_s = sum(b / (by_name[n]["gbs"] * 1e9) for n, b in r["read_levels"].items())
        need_s += r["written_bytes"] / (by_name[r["write_level"]]["write_gbs"] * 1e9)
        need_s += max(by_name[n]["latency_ns"] for n in r["read_levels"]) * 1e-9
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


def test_reuse_distances_by_hand() -> None:
    """LRU stack distances over a schedule that repeats: x (the model's input) -> c0 -> a; a -> c1 -> b;
    a, b -> c2 -> y, weights w0, w1 read once a run. Sizes in bytes: x 1, w0 10, a 100, w1 1000, b 10000,
    y 100000."""
    touches = [[("x", 1), ("w0", 10), ("a", 100)], [("a", 100), ("w1", 1000), ("b", 10000)],
               [("a", 100), ("b", 10000), ("y", 100000)]]
    d = reuse_distances(touches, fresh={"x"})
    run = 111111
    # x: written just before the run; w0: a run ago; a: last read by c2 of the run before
    assert d[0] == {"x": 111, "w0": run, "a": 110111}
    # a: written by c0 just before; b: last read by c2 of the run before, every value between
    assert d[1] == {"a": 11111, "w1": run, "b": run}
    assert d[2] == {"a": 111100, "b": 111100, "y": run}  # a and b: touched by c1 just before; y: a run ago
    assert reuse_distances(touches, fresh={"x"}, cap=5000)[0] == {"x": 111, "w0": 5000, "a": 5000}


def test_call_memory_seconds_by_hand() -> None:
    """Each read at its level's read bandwidth, the writes at the write bandwidth, one latency of the farthest
    level read (not of the write level: stores do not wait); memory-bound when that exceeds the FLOPs at
    the peak."""
    near = Level("L1", 1 << 15, gbs=100.0, balance=1.0, write_gbs=50.0, latency_ns=1.0)
    far = Level("DRAM", None, gbs=10.0, balance=10.0, write_gbs=5.0, latency_ns=100.0)
    t = call_memory_seconds([(1000, near), (1000, far)], 500, near)
    assert t == pytest.approx(1000 / 100e9 + 1000 / 10e9 + 500 / 50e9 + 100e-9)
    assert call_memory_seconds([(1000, near)], 0, far) == pytest.approx(1000 / 100e9 + 1e-9)
    assert memory_bound_seconds(100, t, 1.0) and not memory_bound_seconds(10 ** 6, t, 1.0)
    assert not memory_bound_seconds(100, 0.0, 1.0)


def test_latency_chain_is_one_cycle_and_memory_is_slower_than_l1() -> None:
    """The latency probe's chain visits every line of its buffer once per cycle (one line apart), and a load
    from a buffer four times the last cache waits longer than one from 16 KB."""
    nxt, start = chase_chain(64 << 10, seed=3)
    i, seen = start, set()
    for _ in range(len(nxt) // 8):
        seen.add(i)
        i = int(nxt[i])
    assert i == start and seen == set(range(0, len(nxt), 8))
    assert 0 < load_latency_ns(16 << 10) < load_latency_ns(64 << 20) / 2


def test_weights_come_from_the_level_holding_a_run(monkeypatch) -> None:
    """With a fake L1 that holds every activation's reuse distance but not a whole run, each conv's
    activation input is read from L1 and its weights, last read a run ago, from DRAM."""
    import cnnjit.profile as prof
    from cnnjit.inspect_model import call_nodes, trace

    t = trace(conv_stack(layers=3), entry="numba")
    nodes = call_nodes(t)
    dist = prof.operand_distances(nodes, t.program)
    convs = [(n, d) for n, d in zip(nodes, dist) if n is not None and n.op == "Conv"]
    values = {id(v): v for n in nodes if n is not None for v in [*n.inputs, *n.outputs] if v is not None}
    run = min(t.program.arena_bytes + sum(int(b.nbytes) for b in t.program.const_buffers.values()),
              sum(int(np.prod(v.shape)) * v.dtype.itemsize for v in values.values()))
    assert convs and all(d[id(n.inputs[1])] == run for n, d in convs)  # a weight: a whole run ago
    near = max(d[id(n.inputs[0])] for n, d in convs)
    assert near < run
    fake = [Level("L1", near, gbs=100.0, balance=1.0, write_gbs=100.0, latency_ns=1.0),
            Level("DRAM", None, gbs=1.0, balance=100.0, write_gbs=1.0, latency_ns=100.0)]
    monkeypatch.setattr(prof, "memory_levels", lambda peak: fake)
    doc = profile_model(conv_stack(layers=3), repeat=2, warmup=1)
    for r in doc["calls"]:
        if r["op"].startswith("Conv"):
            assert r["read_levels"]["DRAM"] >= 16 * 3 * 9 * 4 and r["read_levels"]["L1"] >= 3 * 16 * 16 * 4, r
            assert r["level"] == "DRAM"


def test_below_peak_counts_the_slow_calls_and_the_memory_bound_ones() -> None:
    """``below_peak``: calls under half the peak (data movement, no FLOPs, among them), and of those the ones
    judged memory-bound; the profile's footer opens with that count."""
    rows = [{"flops": 10, "percent_of_peak": 80.0, "verdict": "compute"},
            {"flops": 10, "percent_of_peak": 20.0, "verdict": "slow"},
            {"flops": 10, "percent_of_peak": 5.0, "verdict": "memory"},
            {"flops": 0, "percent_of_peak": None, "verdict": "memory"},
            {"flops": 0, "percent_of_peak": None, "verdict": "slow memory"}]
    assert below_peak(rows) == (4, 2)
    for r in rows:
        r["median_ms"] = 1.0
    assert slow_summary(rows, 5.0)[0] == "calls below 50% of peak: 4, of which memory-bound 2"
