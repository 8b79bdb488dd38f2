"""``cnnjit.compile(threads=N)``: large layers split over output channels, one parallel region per run.

The split must not change a single bit (each part runs the layer's own kernel on its channels); the steps
must wait for exactly what they read or overwrite (checked against a brute-force conflict scan); the
runtime's claim / complete protocol must run every part once, after its dependencies, on any team size
(checked on random step graphs).
"""

from __future__ import annotations

import os
import sys
import threading
import time

import numpy as np
import pytest
from conftest import MLPERF_TINY_DIR, REPO_DIR, split_for_cpus
from hypothesis import given, settings
from hypothesis import strategies as st
from numba import njit, typeof
from onnx import TensorProto, helper, numpy_helper

import cnnjit
from cnnjit.cli import build_parser
from cnnjit.cli.common import UsageError, refuse
from cnnjit.cli.flags import DefaultThreads
from cnnjit.compiler.codegen import memory
from cnnjit.compiler.codegen.emit import call_scratch, lower
from cnnjit.compiler.codegen.kernel import Scratch, Target
from cnnjit.compiler.codegen.memory import plan_memory, scratch_reach
from cnnjit.compiler.codegen.threads import (
    MIN_PARALLEL_TOTAL_US,
    MIN_PARALLEL_US,
    channel_ranges,
    estimate_us,
    parallel_work_us,
    plan_steps,
    terminal_steps,
)
from cnnjit.runtime import cpus, native, parallel
from cnnjit.runtime.adaptive import WINDOW
from cnnjit.runtime.parallel import ParallelRun, claim, compare_swap, done, wait
from cnnjit.runtime.team import DESC_WORDS, IDLE_SPIN, IDLE_SPIN_NS

#: the block model's image size: enough work in all for a parallel schedule (``MIN_PARALLEL_TOTAL_US``)
SIZE = 44
#: the branchy model's image size, likewise
BRANCHY_SIZE = 56


def block_model(size: int = SIZE, seed: int = 0):
    """conv 1x1 3->32 (small, stays whole), depthwise 3x3 on 32 channels, pointwise 32->64, conv 3x3 64->64
    with a fused residual add and ReLU, then global pooling; batch 1."""
    rng = np.random.default_rng(seed)
    inits = []

    def const(name, shape, scale=1.0):
        a = (rng.standard_normal(shape) * scale).astype(np.float32)
        inits.append(numpy_helper.from_array(a, name))
        return name

    nodes = [
        helper.make_node("Conv", ["x", const("w0", (32, 3, 1, 1), 0.3), const("b0", (32,))], ["c0"]),
        helper.make_node("Relu", ["c0"], ["r0"]),
        helper.make_node("Conv", ["r0", const("w1", (32, 1, 3, 3), 0.3), const("b1", (32,))], ["c1"], pads=[1] * 4,
                         group=32),
        helper.make_node("Clip", ["c1", const("lo", ()), const("hi", ())], ["r1"]),
        helper.make_node("Conv", ["r1", const("w2", (64, 32, 1, 1), 0.2), const("b2", (64,))], ["c2"]),
        helper.make_node("Conv", ["c2", const("w3", (64, 64, 3, 3), 0.05), const("b3", (64,))], ["c3"],
                         pads=[1] * 4),
        helper.make_node("Add", ["c3", "c2"], ["s3"]),
        helper.make_node("Relu", ["s3"], ["r3"]),
        helper.make_node("GlobalAveragePool", ["r3"], ["p"]),
        helper.make_node("Flatten", ["p"], ["y"]),
    ]
    inits[[i.name for i in inits].index("lo")] = numpy_helper.from_array(np.array(0.0, np.float32), "lo")
    inits[[i.name for i in inits].index("hi")] = numpy_helper.from_array(np.array(6.0, np.float32), "hi")
    g = helper.make_graph(nodes, "block",
                          [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, size, size])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 64]),
                           helper.make_tensor_value_info("c3", TensorProto.FLOAT, [1, 64, size, size])], inits)
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 13)])
    m.ir_version = 8
    return m


@pytest.fixture(scope="module")
def models():
    m = block_model()
    return m, cnnjit.compile(m), cnnjit.compile(m, threads=2)


def test_large_layers_are_split(models) -> None:
    _, one, two = models
    p1, p2 = one._default_spec().program, two._default_spec().program
    assert p1.meta.get("parallel_layers", 0) == 0 and "claim(" not in p1.source
    # depthwise (32 ch), pointwise 32->64 and the 3x3 64->64 conv are split; the 3->32 first conv is small
    assert p2.meta["parallel_layers"] == 3 and p2.meta["entry"] == p1.meta["entry"]
    assert p2.source.count(": 2 parts") == 3 and p2.source.startswith("def run(a_f32, c_f32, _main, _ep, _st):")
    # every part is one call of the layer's kernel: 6 layers (the residual Add and its Relu one BroadcastMap: c3 is
    # also an output, so they stay out of its conv), 3 of them in 2 parts
    assert len(p2.calls) == 9 and len(p1.calls) == 6 and p2.meta["steps"] == 6
    assert isinstance(p2.run, ParallelRun) and p2.run.threads == 2


@njit(nogil=True)
def _three_steps(st: np.ndarray, ep: int) -> int:
    """Protocol calls as a rendered parallel schedule makes them: step index and part count as literals."""
    a = claim(st, 0, ep, 1, True)
    b = claim(st, 1, ep, 2, False)
    done(st, 1, ep)
    return a + b + (1 if wait(st, 2, ep, 3) else 0)


def test_the_step_protocol_compiles_once_for_all_steps(models) -> None:
    """claim / wait / done are called with each step's index and part count as literal ints; their declared
    signatures take every call (literals converted to int64) instead of compiling one overload per literal
    (a 78-step schedule compiled 234 of them: 190 of its 240 s compile)."""
    _, _, two = models
    assert two._default_spec().program.meta["steps"] > 1
    state = parallel.new_state(3)
    state[parallel.LINE * 3 + 1] = (1 << parallel.SHIFT) | 3  # step 2 complete in epoch 1: wait returns at once
    assert _three_steps(state, 1) == 0 + 1 + 1
    for fn in (claim, wait, done):
        assert len(fn.overloads) == 1, fn.signatures


def test_bit_identical_to_one_thread(models) -> None:
    _, one, two = models
    rng = np.random.default_rng(1)
    for _ in range(3):
        x = rng.standard_normal((1, 3, SIZE, SIZE)).astype(np.float32)
        a, b = one(x), two(x)
        for u, v in zip(a, b):
            assert np.array_equal(u, v)


def test_matches_onnxruntime(models) -> None:
    ort = pytest.importorskip("onnxruntime")
    m, _, two = models
    sess = ort.InferenceSession(m.SerializeToString(), providers=["CPUExecutionProvider"])
    x = np.random.default_rng(2).standard_normal((1, 3, SIZE, SIZE)).astype(np.float32)
    for got, ref in zip(two(x), sess.run(None, {"x": x})):
        np.testing.assert_allclose(got, ref, rtol=1e-4, atol=1e-4 * float(np.abs(ref).max()))


def test_concurrent_callers(models) -> None:
    """Several Python threads calling a threaded model (each with its own arenas) get the right answers."""
    _, one, two = models
    xs = [np.random.default_rng(s).standard_normal((1, 3, SIZE, SIZE)).astype(np.float32) for s in range(6)]
    got = two.map(xs, threads=3)
    for x, g in zip(xs, got):
        for u, v in zip(one(x), g):
            assert np.array_equal(u, v)


def test_three_threads_and_small_models_stay_whole() -> None:
    m = block_model(size=4)  # every layer below the threshold: nothing split, the serial schedule
    cm = cnnjit.compile(m, threads=3)
    p = cm._default_spec().program
    assert p.meta["parallel_layers"] == 0 and "claim(" not in p.source and not isinstance(p.run, ParallelRun)
    x = np.random.default_rng(3).standard_normal((1, 3, 4, 4)).astype(np.float32)
    for u, v in zip(cm(x), cnnjit.compile(m, threads=1)(x)):
        assert np.array_equal(u, v)
    # one layer above the per-layer threshold (~60 us), but not enough work in all to wake a team for
    # (MIN_PARALLEL_TOTAL_US; at size 16, ~240 us, it is split and has its serial twin: tests/test_adaptive.py)
    mid = cnnjit.compile(block_model(size=8), threads=2)._default_spec().program
    assert estimate_us(max(mid.calls, key=lambda c: estimate_us(c.node)).node) > MIN_PARALLEL_US
    assert mid.meta["parallel_layers"] == 0 and not isinstance(mid.run, ParallelRun)


@pytest.mark.parametrize("name", ["resnet8", "crnn_lstm_gru", "mlperf_vww_96_float", "mlperf_kws_float32",
                                  "mlperf_ad01_fp32"])
def test_small_real_models_run_the_serial_schedule_at_two_threads(name: str) -> None:
    """threads=2 never slower than threads=1 on the small models (issue 18): a model with too little work to
    split (``threads.MIN_PARALLEL_TOTAL_US``, decided at compile time from the work's size, not by timing)
    has the 1-thread program at 2 threads, the same kernel calls, no team; one with enough (ResNet-8, the
    CRNN) has its split schedule *and* the 1-thread program as its serial twin (``threads.ADAPTIVE_BELOW_US``),
    run whenever the split has been slower lately (``runtime/adaptive.py``)."""
    if name.startswith("mlperf") and not MLPERF_TINY_DIR.is_dir():
        pytest.skip("MLPerf Tiny models not available")
    sys.path.insert(0, str(REPO_DIR))
    from benchmarks.corpus import load  # (the repository's benchmarks: on the path from here)

    model, feeds = load(name)
    shapes = {k: v.shape for k, v in feeds.items()}
    one_spec, two_spec = (cnnjit.compile(model, input_shapes=shapes, threads=t)._default_spec() for t in (1, 2))
    one, two = one_spec.program, two_spec.program
    if parallel_work_us(two_spec.graph.nodes) >= MIN_PARALLEL_TOTAL_US:
        assert two.meta["parallel_layers"] > 0 and isinstance(two.run, ParallelRun) and two_spec.twin is not None
        two = two_spec.twin.program  # (what runs when the split is slower)
    assert two.meta["parallel_layers"] == 0 and not isinstance(two.run, ParallelRun)
    assert [(c.kernel, c.variant) for c in two.calls] == [(c.kernel, c.variant) for c in one.calls]


def test_oversubscribed_team_is_still_exact(models, monkeypatch: pytest.MonkeyPatch) -> None:
    """A schedule split for 5 threads run by a team of fewer (a process whose usable CPUs changed after the
    compile; a compile itself splits for at most the usable CPUs, ``cpus.split_threads``): the team shares
    the parts, the results do not change."""
    m, one, _ = models
    split_for_cpus(monkeypatch, 5)  # (the compile's view; the team keeps the real CPUs)
    five = cnnjit.compile(m, threads=5)
    assert five._default_spec().program.meta["threads"] == 5
    assert five._default_spec().program.meta["parallel_layers"] == 3  # 64 channels: at most 4 parts of 16
    x = np.random.default_rng(4).standard_normal((1, 3, SIZE, SIZE)).astype(np.float32)
    for _ in range(3):
        for u, v in zip(one(x), five(x)):
            assert np.array_equal(u, v)


def test_threads_above_the_usable_cpus_compile_the_schedule_of_the_cpus(models, monkeypatch) -> None:
    """threads=N above the CPUs this process may use compiles the schedule split for those CPUs
    (``cpus.split_threads``): the same steps and text as threads=CPUs, bit-identical to 1 thread; and the
    compiled-program cache keys the count it was split for, so a larger process does not load it."""
    m, one, _ = models
    monkeypatch.setattr(cpus, "usable_cpus", lambda: 2)
    two, five = (cnnjit.compile(m, threads=t)._default_spec().program for t in (2, 5))
    assert five.meta["threads"] == 2 and five.meta["parallel_layers"] == two.meta["parallel_layers"] > 0
    assert five.meta["step_plan"] == two.meta["step_plan"] and five.source == two.source
    assert max(st.parts for st in five.meta["step_plan"]) == 2
    x = np.random.default_rng(5).standard_normal((1, 3, SIZE, SIZE)).astype(np.float32)
    for u, v in zip(one(x), cnnjit.compile(m, threads=5)(x)):
        assert np.array_equal(u, v)
    keys = {t: native.entry_key("0" * 64, {"threads": t, "fuse": True}) for t in (2, 5)}
    monkeypatch.setattr(cpus, "usable_cpus", lambda: 8)
    assert native.entry_key("0" * 64, {"threads": 5, "fuse": True}) not in keys.values()
    assert native.entry_key("0" * 64, {"threads": 2, "fuse": True}) == keys[2]  # (within the CPUs: unchanged)


def test_default_threads(monkeypatch) -> None:
    monkeypatch.setenv("CNNJIT_NUM_THREADS", "2")
    assert parallel.default_threads() == 2
    cm = cnnjit.compile(block_model(), input_shapes={"x": (1, 3, SIZE, SIZE)}, entry="lazy")  # builds no kernel
    assert cm._default_spec().program.meta["threads"] == 2
    assert cm.origin[1]["threads"] is None  # a pickled model takes the cores where it is unpickled
    monkeypatch.delenv("CNNJIT_NUM_THREADS")
    assert parallel.default_threads() == len(os.sched_getaffinity(0))
    for bad in ("0", "two", "-3"):
        monkeypatch.setenv("CNNJIT_NUM_THREADS", bad)
        with pytest.raises(cnnjit.InputError, match="CNNJIT_NUM_THREADS"):
            cnnjit.compile(block_model(size=4))


@pytest.mark.parametrize("bad", [0, -1, 1.5, True, "2"])
def test_threads_must_be_a_positive_int(bad) -> None:
    with pytest.raises(ValueError, match="threads"):
        cnnjit.compile(block_model(size=8), threads=bad)


def test_channel_ranges() -> None:
    assert channel_ranges(64, 2) == [(0, 32), (32, 64)]
    assert channel_ranges(96, 2) == [(0, 48), (48, 96)]
    assert channel_ranges(40, 2) == [(0, 32), (32, 40)]  # aligned to 16: the last part takes the rest
    assert channel_ranges(24, 2) == [(0, 12), (12, 24)]
    assert channel_ranges(3, 4) == [(0, 1), (1, 2), (2, 3)]
    for m in range(1, 200):
        for parts in (1, 2, 3, 4):
            r = channel_ranges(m, parts)
            assert r[0][0] == 0 and r[-1][1] == m and all(a < b for a, b in r)
            assert all(r[i][1] == r[i + 1][0] for i in range(len(r) - 1)) and len(r) <= parts


def branchy_model(size: int = BRANCHY_SIZE):
    """Two convs from one input (independent: side by side) concatenated, then a third conv reading the
    concatenation, times the first branch again; the planner reuses storage, so write-after-read hazards
    exist too."""
    rng = np.random.default_rng(5)
    inits = []

    def const(name, shape):
        inits.append(numpy_helper.from_array((rng.standard_normal(shape) * 0.2).astype(np.float32), name))
        return name

    nodes = [
        helper.make_node("Conv", ["x", const("wa", (32, 8, 3, 3))], ["a"], pads=[1] * 4),
        helper.make_node("Conv", ["x", const("wb", (32, 8, 3, 3))], ["b"], pads=[1] * 4),
        helper.make_node("Relu", ["b"], ["rb"]),
        helper.make_node("Concat", ["a", "rb"], ["s"], axis=1),
        helper.make_node("Conv", ["s", const("wc", (32, 64, 3, 3))], ["c"], pads=[1] * 4),
        helper.make_node("Mul", ["c", "a"], ["y"]),
    ]
    g = helper.make_graph(nodes, "branchy", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 8, size, size])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 32, size, size])], inits)
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 13)])
    m.ir_version = 8
    return m


@pytest.mark.parametrize("build", [block_model, branchy_model])
def test_steps_wait_for_every_conflict(build) -> None:
    """Brute force over all pairs of steps: when a later step reads what an earlier one writes, or writes
    what it reads or writes (storage intervals from the memory plan; a call's kernel scratch is written), the
    earlier one is among the later one's dependencies, transitively; and every listed dependency is such a
    conflict."""
    cm = cnnjit.compile(build(), threads=2, entry="lazy")  # the graph only: no kernel built
    graph = cm._default_spec().graph
    target = Target(threads=2)
    lowered, groups = lower(graph, target)
    plan = plan_memory(graph, call_scratch(graph, lowered), keep_scratch=bool(groups))
    steps = plan_steps(lowered, groups, plan)
    assert sum(s.parts for s in steps) == len(lowered) and len(groups) == sum(s.parts > 1 for s in steps) > 0

    def storage(values):
        out = set()
        for v in values:
            if v is not None and not v.is_const:
                s = plan.slot(v)
                out.update((s.dtype, i) for i in range(s.offset, s.offset + v.type.size))
        return out

    rw = []
    for s in steps:
        node = lowered[s.first][0]
        scratch = {(plan.scratch[a].dtype, i) for _, kc in lowered[s.first:s.first + s.parts] for a in kc.args
                   if isinstance(a, Scratch) for i in range(plan.scratch[a].offset, plan.scratch[a].offset + a.elems)}
        rw.append((storage(node.inputs), storage(node.outputs) | scratch))  # a call's scratch: written
    before: list[set[int]] = []
    for t, s in enumerate(steps):
        anc = set(s.deps)
        for d in s.deps:
            anc |= before[d]
        before.append(anc)
        for e in range(t):
            conflict = bool(rw[t][1] & (rw[e][0] | rw[e][1]) or rw[t][0] & rw[e][1])
            if conflict:
                assert e in anc, (e, t)
            if e in s.deps:
                assert conflict, (e, t)
    ends = terminal_steps(steps)
    assert set().union(*(before[t] | {t} for t in ends)) == set(range(len(steps)))


def _depends(graph) -> list[set[int]]:
    """Per node of ``graph``, the earlier nodes it reads from, directly or not (a plain walk, apart from
    ``memory.scratch_reach``'s bit sets)."""
    made = {o.id: j for j, n in enumerate(graph.nodes) for o in n.outputs}
    out: list[set[int]] = []
    for n in graph.nodes:
        got: set[int] = set()
        for v in n.inputs:
            if v is not None and v.id in made:
                got |= {made[v.id]} | out[made[v.id]]
        out.append(got)
    return out


@pytest.mark.parametrize("build", [block_model, branchy_model])
def test_parallel_scratch_is_reused_only_by_nodes_that_wait_for_its_node(build) -> None:
    """In a parallel schedule a kernel's scratch may be reused (the arena stays near the 1-thread one:
    MobileNetV2 6.3 -> 2.5 MiB at 2 threads), but only by a node that reads, directly or not, the node that
    used it before: such a node waits for that one anyway, so reuse adds no wait and two layers that may run
    side by side never share scratch. ``scratch_reach`` against a brute-force walk of the graph."""
    cm = cnnjit.compile(build(), threads=2, entry="lazy")
    graph = cm._default_spec().graph
    lowered, groups = lower(graph, Target(threads=2))
    deps = _depends(graph)
    reach = scratch_reach(graph)
    for i in range(len(graph.nodes)):
        later = [j for j in range(i + 1, len(graph.nodes)) if i not in deps[j]]
        assert reach[i] == max(later, default=i), (i, later)
    scratch = call_scratch(graph, lowered)
    assert scratch and groups
    plan = plan_memory(graph, scratch, keep_scratch=True)
    for a, (i, sa) in enumerate(scratch):
        for j, sb in scratch[a + 1:]:
            pa, pb = plan.scratch[sa], plan.scratch[sb]
            meet = pa.dtype == pb.dtype and pa.offset < pb.offset + sb.elems and pb.offset < pa.offset + sa.elems
            if meet:
                assert i != j and (i in deps[j] or j in deps[i]), (i, j)


def test_parallel_scratch_of_a_chain_is_reused(monkeypatch) -> None:
    """A chain of layers (every later node reads the one before, directly or not): each layer's scratch is free
    after it, as in a serial schedule, and the 2-thread arena is smaller than with every scratch kept to the
    end of the run (as before)."""
    cm = cnnjit.compile(block_model(), threads=2, entry="lazy")
    graph = cm._default_spec().graph
    reach = scratch_reach(graph)
    deps = _depends(graph)
    chain = [i for i in range(len(graph.nodes)) if all(i in deps[j] for j in range(i + 1, len(graph.nodes)))]
    assert chain and all(reach[i] == i for i in chain)
    lowered, _ = lower(graph, Target(threads=2))
    scratch = call_scratch(graph, lowered)
    assert len({i for i, _ in scratch}) >= 2  # two layers with scratch: a reuse to see
    reused = plan_memory(graph, scratch, keep_scratch=True).arena_sizes["f32"]
    monkeypatch.setattr(memory, "scratch_reach", lambda g: [len(g.nodes)] * len(g.nodes))
    kept = plan_memory(graph, scratch, keep_scratch=True).arena_sizes["f32"]
    assert reused < kept, (reused, kept)


def test_independent_branches_may_run_side_by_side() -> None:
    cm = cnnjit.compile(branchy_model(), threads=2)
    p = cm._default_spec().program
    # conv b waits for nothing: it runs beside conv a, each whole on one thread (branches.py: two independent
    # convs of the same size), then conv c in 2 parts
    assert "# step 0\n" in p.source and "# step 1\n" in p.source and "# step 2: 2 parts after 0, 1\n" in p.source
    x = np.random.default_rng(6).standard_normal((1, 8, BRANCHY_SIZE, BRANCHY_SIZE)).astype(np.float32)
    ref = cnnjit.compile(branchy_model(), threads=1)(x)
    for _ in range(5):
        assert np.array_equal(cm(x), ref)


def test_cli_threads_default_follows_compile(monkeypatch) -> None:
    """``--threads`` not given: cnnjit.compile's default (here CNNJIT_NUM_THREADS=3), which commands that
    cannot run threads do not take as asked for."""
    monkeypatch.setenv("CNNJIT_NUM_THREADS", "3")
    args = build_parser().parse_args(["run", "m.onnx"])
    assert args.threads == 3 and isinstance(args.threads, DefaultThreads)
    aot = ["compile", "m.onnx", "--target", "aarch64-linux-gnu", "-o", "out"]
    refuse(build_parser().parse_args(aot), "--threads")  # no error
    with pytest.raises(UsageError, match="--threads"):
        refuse(build_parser().parse_args([*aot, "--threads", "2"]), "--threads")


# ---- the runtime protocol on random step graphs ---------------------------------------------------------
@njit(nogil=True)
def _bump(arr, i):
    while True:
        c = arr[i]
        if compare_swap(arr, i, c, c + 1):
            return c


@njit(nogil=True)
def _interpret(parts, dep_ptr, deps, ends, log, clock, fail_step, _main, _ep, _st):
    """A parallel schedule driven by data, as render_parallel writes one: step s has parts[s] parts and waits
    for deps[dep_ptr[s]:dep_ptr[s+1]]; each part logs (start, end) ticks of a shared clock, and counts its
    runs in log[..., 2]."""
    for s in range(parts.shape[0]):
        for j in range(dep_ptr[s], dep_ptr[s + 1]):
            if not wait(_st, deps[j], _ep, parts[deps[j]]):
                return
        while True:
            p = claim(_st, s, _ep, parts[s], _main)
            if p < 0:
                break
            if s == fail_step:
                raise ValueError("a failing part")
            log[s, p, 0] = _bump(clock, 0)
            _bump(log[s, p], 2)
            log[s, p, 1] = _bump(clock, 0)
            done(_st, s, _ep)
    if _main:
        for e in ends:
            wait(_st, e, _ep, parts[e])


@st.composite
def step_graphs(draw):
    n = draw(st.integers(1, 12))
    parts = [draw(st.integers(1, 4)) for _ in range(n)]
    deps = [sorted(draw(st.sets(st.integers(0, t - 1), max_size=3))) if t else [] for t in range(n)]
    return parts, deps


@pytest.mark.parametrize("parts", [1, 2, 3, 6])
def test_claim_takes_the_front_for_the_caller_and_the_back_for_workers(parts) -> None:
    """Claims alternating between the caller and a worker: the caller's parts come from the first up, the
    worker's from the last down, every part once; the next epoch starts afresh."""
    state = parallel.new_state(1)
    for ep in (1, 2):
        got = [claim(state, 0, ep, parts, k % 2 == 0) for k in range(parts + 2)]
        want = [k // 2 if k % 2 == 0 else parts - 1 - k // 2 for k in range(parts)] + [-1, -1]
        assert got == want


@settings(max_examples=15, deadline=None)
@given(graph=step_graphs(), threads=st.integers(1, 4))
def test_protocol_runs_every_part_once_after_its_dependencies(graph, threads) -> None:
    parts, deps = graph
    n = len(parts)
    ptr = np.cumsum([0] + [len(d) for d in deps]).astype(np.int64)
    flat = np.array([d for ds in deps for d in ds], np.int64)
    listed = {d for ds in deps for d in ds}
    ends = np.array([t for t in range(n) if t not in listed], np.int64)
    par = np.array(parts, np.int64)
    team = parallel.team(threads)  # the team itself: sizes above this machine's CPUs too
    state = parallel.new_state(n)
    for ep in range(1, 5):  # several runs (epochs) on the same state
        log = np.zeros((n, 4, 3), np.int64)
        clock = np.zeros(1, np.int64)
        with team.busy:
            team.run(_interpret, (par, ptr, flat, ends, log, clock, -1), state, ep)
        for s in range(n):
            assert (log[s, :parts[s], 2] == 1).all() and (log[s, parts[s]:, 2] == 0).all()
            for d in deps[s]:
                assert log[d, :parts[d], 1].max() < log[s, :parts[s], 0].min()


@pytest.mark.parametrize("threads", [2, 3])
def test_a_failing_part_raises_and_the_team_recovers(threads) -> None:
    parts = np.array([2, 2, 2], np.int64)
    ptr = np.array([0, 0, 1, 2], np.int64)
    flat = np.array([0, 1], np.int64)
    ends = np.array([2], np.int64)
    team = parallel.team(threads)
    state = parallel.new_state(3)
    log = np.zeros((3, 4, 3), np.int64)
    with team.busy, pytest.raises(ValueError, match="a failing part"):
        team.run(_interpret, (parts, ptr, flat, ends, log, np.zeros(1, np.int64), 1), state, 1)
    assert (log[2, :, 2] == 0).all()  # nothing after the failing step ran
    log[:] = 0
    with team.busy:
        team.run(_interpret, (parts, ptr, flat, ends, log, np.zeros(1, np.int64), -1), state, 2)
    assert (log[:, :2, 2] == 1).all()


def test_the_team_is_at_most_the_usable_cpus() -> None:
    cpus = parallel.usable_cpus()
    assert ParallelRun(_interpret, 1, cpus + 2).team_size == cpus and ParallelRun(_interpret, 1, 1).team_size == 1


def test_a_busy_team_runs_the_caller_alone() -> None:
    """While another caller holds the team, a call runs on its own thread (and is still right)."""
    parts = np.array([3, 1], np.int64)
    ptr = np.array([0, 0, 1], np.int64)
    flat = np.array([0], np.int64)
    run = ParallelRun(_interpret, 2, 2)
    team = parallel.team(2)
    log = np.zeros((2, 4, 3), np.int64)
    with team.busy:
        t = threading.Thread(target=run, args=(parts, ptr, flat, np.array([1], np.int64), log, np.zeros(1, np.int64),
                                               -1))
        t.start()
        t.join(timeout=60)
    assert not t.is_alive() and (log[0, :3, 2] == 1).all() and log[1, 0, 2] == 1


def test_the_caller_alone_reuses_its_step_state() -> None:
    """Runs by one calling thread take an idle step state and run it at its next epoch (no fresh state per
    call); every part still runs once per run, and callers at once each get a state of their own."""
    parts = np.array([3, 1], np.int64)
    ptr = np.array([0, 0, 1], np.int64)
    flat = np.array([0], np.int64)
    run = ParallelRun(_interpret, 2, 2)
    log = np.zeros((2, 4, 3), np.int64)
    for i in range(1, 4):
        run.run_alone(parts, ptr, flat, np.array([1], np.int64), log, np.zeros(1, np.int64), -1)
        assert (log[0, :3, 2] == i).all() and log[1, 0, 2] == i and log[0, 3, 2] == 0
    assert len(run._solo) == 1 and run._solo[0][1] == 3  # one state, at its third epoch
    logs = [np.zeros((2, 4, 3), np.int64) for _ in range(4)]
    ts = [threading.Thread(target=run.alone(), args=(parts, ptr, flat, np.array([1], np.int64), lg,
                                                     np.zeros(1, np.int64), -1)) for lg in logs]
    for t in ts:
        t.start()
    for t in ts:
        t.join(timeout=60)
    assert all((lg[0, :3, 2] == 1).all() and lg[1, 0, 2] == 1 for lg in logs)
    assert 1 <= len(run._solo) <= 4


def test_profile_of_a_threaded_model(models) -> None:
    from cnnjit.profile import profile_schedule

    _, _, two = models
    prof = profile_schedule(two._default_spec(), repeat=3, warmup=1)
    # the parts are timed one by one (serially, in schedule order)
    # (channel parts, and the Winograd conv's bands of tile rows: parts.PREFER_PART_SPACE)
    assert len(prof.calls) == 9 and sum("[channels" in c.note or "[part " in c.note for c in prof.calls) == 6


def test_one_team_runs_each_job_on_its_thread_count() -> None:
    """The process has one team, grown to the largest size asked; a job runs on as many of its threads as
    it names (the others skip it)."""
    team = parallel.team(3)
    assert parallel.team(2) is team and team.size >= 3
    seen: set[int] = set()

    def job(_main, _ep, _st) -> None:
        seen.add(threading.get_ident())

    with team.busy:
        team.run(job, (), parallel.new_state(1), 1, 2)
        for _ in range(10_000):  # the workers return from (or skip) the job soon after the caller
            if all(d == team._jobs for d in team._done[1:]):
                break
            threading.Event().wait(1e-3)
    assert len(seen) == 2 and threading.get_ident() in seen


def test_team_and_caller_alone_give_the_same_bits(models) -> None:
    """Run by run, a parallel schedule runs on the team or on the caller alone (``ParallelRun``'s chooser);
    both are tried early on, and both give the 1-thread output bit for bit."""
    _, one, two = models
    run = two._default_spec().program.run
    x = np.random.default_rng(3).standard_normal((1, 3, SIZE, SIZE)).astype(np.float32)
    ref = one(x)
    for _ in range(400):
        for u, v in zip(two(x), ref):
            assert np.array_equal(u, v)
        if min(run.chooser.share) >= WINDOW // 2 + 1:
            break
    assert min(run.chooser.share) >= WINDOW // 2 + 1


def test_a_new_team_worker_finds_its_idle_wait_compiled() -> None:
    """``parallel.ready`` (run by ``Team.grow`` before a worker starts) compiles ``idle_wait`` for exactly the
    argument types a worker calls it with, so no worker compiles it (on a cold cache that took seconds in
    the worker, which meanwhile ran no job), and starting a team compiles no other signature."""
    parallel.ready()
    words, desc = np.zeros(parallel.LINE, np.int64), np.zeros(DESC_WORDS, np.int64)
    called = tuple(typeof(a) for a in (words, 0, 1, desc))  # (Team._work's call: words, seen, tid, desc)
    assert called == parallel.IDLE_WAIT_TYPES
    assert called in parallel.idle_wait.overloads
    parallel.team(2)
    assert list(parallel.idle_wait.overloads) == [called]


@pytest.mark.skipif(not parallel.SYS_FUTEX or not os.path.exists("/proc/self/task"),
                    reason="no futex (idle workers yield instead of sleeping), or no per-thread CPU time")
def test_rouse_wakes_a_sleeping_idle_worker_to_spin_and_it_sleeps_again() -> None:
    """``rouse`` (before a call's inputs are copied in) wakes an idle worker asleep on its futex without a job:
    it spins again for ``IDLE_SPIN_NS`` (0.1 ms) and sleeps again (no runaway spinning); a job posted later still
    ends its wait. Seen in the worker thread's CPU time (a spin uses CPU, a sleep only its rare timeouts):
    over the same wall time, far more with a rouse every 2 ms than with none."""
    words = np.zeros(parallel.LINE, np.int64)
    words[IDLE_SPIN] = IDLE_SPIN_NS  # (as a Team sets it: the spin after a job or a rouse)
    # (as worker 1 of a team, with a native job description it never reads: no job is posted)
    t = threading.Thread(target=parallel.idle_wait, args=(words, 0, 1, np.zeros(DESC_WORDS, np.int64)), daemon=True)
    t.start()
    stat = f"/proc/self/task/{t.native_id}/schedstat"

    def cpu_ns() -> int:
        with open(stat) as f:
            return int(f.read().split()[0])

    def asleep(timeout: float = 10.0) -> bool:
        end = time.monotonic() + timeout
        while words[parallel.IDLE_SLEEPERS] != 1 and time.monotonic() < end:
            time.sleep(1e-4)
        return words[parallel.IDLE_SLEEPERS] == 1

    def worker_cpu(rouse: bool, rounds: int = 40) -> int:
        assert asleep()
        c0 = cpu_ns()
        for _ in range(rounds):
            if rouse:
                parallel.rouse(words)
            time.sleep(2e-3)
        return cpu_ns() - c0

    worker_cpu(True, 5)  # (warm-up: the first wake-ups of freshly compiled code cost more)
    quiet, roused = worker_cpu(False), worker_cpu(True)
    # (measured at load 8: ~100 us more CPU per rouse; ~10 us, one futex wake-up, if the worker slept again)
    assert roused - quiet > 40 * 50_000, (quiet, roused)
    assert asleep()
    parallel.post(words)
    t.join(timeout=10)
    assert not t.is_alive()
