"""Per-kernel-call timing of a compiled schedule: run ``Program.calls`` one call at a time.

    from cnnjit.profile import profile_calls
    spec = model.specialization({"x": (1, 3, 32, 32)})
    for c in sorted(profile_calls(spec, repeat=50), key=lambda c: -c.median_s):
        print(c.index, c.kernel, c.note, c.median_s)

The schedule is a list of kernel calls (``Program.calls``). Each call is rendered as a small function over
the program's buffers; one repetition writes the inputs into a private copy of
the arenas and runs every line in order (so each call sees exactly the data it sees in a normal run),
timing each call with ``perf_counter_ns``. The first repetitions are warm-up (numba compiles or loads a
kernel on its first call).
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from cnnjit.compiler.codegen.build import load_entry, load_kernel, source_key
from cnnjit.compiler.codegen.cycles import HAVE_TICKS, tick_seconds, ticks
from cnnjit.compiler.codegen.simd import host_vector_registers, host_vector_width
from cnnjit.runtime.model import Specialization
from cnnjit.runtime.program import Call, Program, render_schedule

from .flops import SOFTMAX_FLOPS, TRANSCENDENTAL_FLOPS
from .inspect_model import call_bytes, call_flops, call_nodes, node_flops, op_label, trace
from .roofline import (
    below_peak,
    bound_label,
    call_memory_seconds,
    dram_stream_bytes,
    level_of,
    memory_bound,
    memory_bound_seconds,
    memory_levels,
    reuse_distances,
    slow_summary,
    stream_bandwidth_gbs,
    stream_source,
    tree_sum,
    verdict,
)


@dataclass
class CallTiming:
    """One kernel call of the schedule: position, kernel name, the schedule's comment, the call statement,
    the op and kernel variant it computes, and its timings."""

    index: int
    kernel: str
    note: str
    line: str
    op: str = ""
    variant: str = ""
    times_ns: list[int] = field(default_factory=list)

    @classmethod
    def of(cls, index: int, call: Call) -> CallTiming:
        return cls(index, call.kernel, call.note, call.statement(), call.op, call.variant)

    @property
    def median_s(self) -> float:
        return statistics.median(self.times_ns) / 1e9 if self.times_ns else 0.0

    @property
    def min_s(self) -> float:
        return min(self.times_ns) / 1e9 if self.times_ns else 0.0


def _namespace(program: Program) -> dict[str, Any]:
    """The globals the schedule runs in (they hold the kernel dispatchers k0, k1, ...)."""
    fn = getattr(program.run, "py_func", program.run)  # entry="numba": the dispatcher wraps the Python function
    return fn.__globals__


def random_feeds(program: Program, seed: int = 0) -> dict[str, np.ndarray]:
    """Seeded inputs of the program's shapes: standard normal floats, small non-negative integers."""
    rng = np.random.default_rng(seed)
    feeds = {}
    for b in program.inputs:
        dt = np.dtype(b.dtype)
        if dt.kind == "f":
            feeds[b.name] = rng.standard_normal(b.shape).astype(dt)
        elif dt.kind == "b":
            feeds[b.name] = rng.integers(0, 2, b.shape).astype(dt)
        else:
            feeds[b.name] = rng.integers(0, 10, b.shape).astype(dt)
    return feeds


def profile_calls(spec: Specialization, feeds: Mapping[str, np.ndarray] | None = None, repeat: int = 20,
                  warmup: int = 2) -> list[CallTiming]:
    """Time every kernel call of ``spec``'s schedule over ``repeat`` full runs (after ``warmup`` runs).

    ``feeds`` are the inputs by name (default: ``random_feeds``); they must have the specialisation's
    shapes and dtypes. Returns one ``CallTiming`` per call, in schedule order.
    """
    p = spec.program
    feeds = dict(feeds) if feeds is not None else random_feeds(p)
    for b in p.inputs:
        if b.name not in feeds:
            raise KeyError(f"no input {b.name!r} given")
    ns = _namespace(p)
    params = ", ".join(p.buffer_names)
    steps: list[Callable[..., None]] = []
    for i, c in enumerate(p.calls):
        local: dict[str, Any] = {}
        exec(compile(f"def _step({params}):\n    {c.statement()}\n", f"<cnnjit call {i}>", "exec"),  # noqa: S102
             ns, local)
        steps.append(local["_step"])
    bufs = p.allocate()
    args = [bufs[n] for n in p.buffer_names]
    timings = [CallTiming.of(i, c) for i, c in enumerate(p.calls)]
    clock = time.perf_counter_ns
    for r in range(max(warmup, 0) + max(repeat, 1)):
        for b in p.inputs:
            if b.size:
                bufs[b.buffer][b.offset:b.offset + b.size] = np.asarray(feeds[b.name], b.dtype).reshape(-1)
        for step, t in zip(steps, timings):
            t0 = clock()
            step(*args)
            t1 = clock()
            if r >= warmup:
                t.times_ns.append(t1 - t0)
    return timings


# =========================================================================================================
# the timed schedule: the real compiled entry, with a cycle-counter read between calls
# =========================================================================================================
def timed_source(program: Program) -> str:
    """The schedule rendered with ``_ts[i] = ticks()`` before call ``i`` and ``_ts[n] = ticks()`` after the
    last: otherwise the schedule's text, so numba compiles it exactly as the real entry (kernels inlined,
    sizes constant-propagated); the counter reads are the only difference."""
    return render_schedule(program.buffer_names, program.calls, ticks=True)


def timed_entry(program: Program) -> Callable[..., None]:
    """The numba-compiled timed schedule of ``program`` (``run(<buffers>, ts)``), through the disk cache."""
    fn = program.meta.get("timed_entry")
    if fn is None:
        ns = _namespace(program)
        # the kernels, and the parallel drivers of a threads=N schedule (d0, d1...)
        dispatchers: dict[str, Any] = {c.kernel: ns[c.kernel] for c in program.calls}
        dispatchers["ticks"] = ticks
        fn = load_entry(timed_source(program), dispatchers,
                        {n: source_key(s) for n, s in program.kernel_sources.items()})
        program.meta["timed_entry"] = fn
    return fn


@dataclass
class ScheduleProfile:
    """Per-call timings of a whole schedule and how they were taken.

    ``mode`` is ``"timed"`` (the numba entry with cycle-counter reads between calls: what a real run
    does, kernels inlined) or ``"calls"`` (one Python call per kernel, un-inlined). ``run_s`` is the median
    time of the real, untimed entry over the same runs (interleaved), ``timed_run_s`` the median of the
    profiled runs as a whole (first to last counter read, or the sum of the calls).
    """

    mode: str
    calls: list[CallTiming]
    run_s: float
    timed_run_s: float
    entry: str
    tick_s: float | None = None
    #: the fastest real run and the fastest profiled run (on a busy machine most long runs are interrupted
    #: somewhere, so medians of whole runs exceed the sum of per-call medians; minima compare better)
    run_min_s: float = 0.0
    timed_run_min_s: float = 0.0

    @property
    def sum_s(self) -> float:
        """Sum of the per-call medians."""
        return sum(c.median_s for c in self.calls)

    @property
    def discrepancy(self) -> float:
        """(sum of per-call medians) / (median of the real run) - 1."""
        return self.sum_s / self.run_s - 1.0 if self.run_s else float("nan")


def _write_inputs(program: Program, bufs: dict[str, np.ndarray], feeds: Mapping[str, np.ndarray]) -> None:
    for b in program.inputs:
        if b.size:
            bufs[b.buffer][b.offset:b.offset + b.size] = np.asarray(feeds[b.name], b.dtype).reshape(-1)


def profile_schedule(spec: Specialization, feeds: Mapping[str, np.ndarray] | None = None, repeat: int = 50,
                     warmup: int = 3, mode: str = "auto") -> ScheduleProfile:
    """Per-call times of ``spec``'s schedule as it really runs.

    ``mode="timed"`` compiles a copy of the numba entry with a cycle-counter read between calls
    (``timed_source``) and converts ticks to seconds (``cycles.tick_seconds``); ``"calls"`` times each
    kernel called from Python (``profile_calls``: right for a Python entry, about 2x too slow per call for
    a numba entry, whose kernels LLVM inlines); ``"auto"`` is ``"timed"`` when the program's entry is
    numba and the CPU has a counter we can read, else ``"calls"``. Either way the real entry is timed
    too, interleaved with the profiled runs, so ``discrepancy`` tells how well the parts add up.
    """
    p = spec.program
    entry = p.meta.get("entry", "python")
    if mode == "auto":
        mode = "timed" if entry in ("numba", "lazy") and HAVE_TICKS else "calls"
    if mode not in ("timed", "calls"):
        raise ValueError(f"mode must be 'auto', 'timed' or 'calls', got {mode!r}")
    feeds = dict(feeds) if feeds is not None else random_feeds(p)
    for b in p.inputs:
        if b.name not in feeds:
            raise KeyError(f"no input {b.name!r} given")
    clock = time.perf_counter_ns
    bufs = p.allocate()
    args = [bufs[n] for n in p.buffer_names]
    real_ns: list[int] = []

    def real_run() -> None:
        _write_inputs(p, bufs, feeds)
        t0 = clock()
        p.run(*args)
        real_ns.append(clock() - t0)

    if mode == "calls":
        calls = profile_calls(spec, feeds, repeat=repeat, warmup=warmup)
        for _ in range(max(warmup, 0)):
            real_run()
        real_ns.clear()
        for _ in range(max(repeat, 1)):
            real_run()
        sums = [sum(c.times_ns[r] for c in calls) for r in range(len(calls[0].times_ns))] if calls else [0]
        return ScheduleProfile("calls", calls, statistics.median(real_ns) / 1e9, statistics.median(sums) / 1e9,
                               entry, None, min(real_ns) / 1e9, min(sums) / 1e9)

    run = timed_entry(p)
    tick_s = tick_seconds()
    calls_t = [CallTiming.of(i, c) for i, c in enumerate(p.calls)]
    ts = np.zeros(len(p.calls) + 1, np.int64)
    bufs_t = p.allocate()
    args_t = [bufs_t[n] for n in p.buffer_names] + [ts]
    whole: list[float] = []
    for r in range(max(warmup, 0) + max(repeat, 1)):
        if r == max(warmup, 0):
            real_ns.clear()
        _write_inputs(p, bufs_t, feeds)
        run(*args_t)
        if r >= warmup:
            d = np.diff(ts) * (tick_s * 1e9)
            for t, v in zip(calls_t, d):
                t.times_ns.append(int(round(v)))
            whole.append(float(ts[-1] - ts[0]) * tick_s)
        real_run()
    return ScheduleProfile("timed", calls_t, statistics.median(real_ns) / 1e9, statistics.median(whole), entry,
                           tick_s, min(real_ns) / 1e9, min(whole))


_PEAK_SCRIPT = """
import time, numpy as np
n, repeat = {n}, {repeat}
rng = np.random.default_rng(0)
a = rng.standard_normal((n, n), dtype=np.float32)
b = rng.standard_normal((n, n), dtype=np.float32)
a @ b
best = min((lambda t0: (a @ b, time.perf_counter() - t0)[1])(time.perf_counter()) for _ in range(repeat))
print(2.0 * n ** 3 / best / 1e9)
"""

_peak_cache: dict[tuple[int, int], float] = {}


def peak_gflops(n: int = 512, threads: int = 1, repeat: int = 5) -> float:
    """A simple machine peak: float32 GFLOP/s of numpy's n x n matrix multiply (BLAS sgemm), best of ``repeat``.

    Measured once per process, in a child process whose BLAS is limited to ``threads`` thread(s) (the
    thread count of an already-loaded BLAS cannot be changed portably).
    """
    key = (n, threads)
    if key not in _peak_cache:
        env = dict(os.environ)
        for var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS", "VECLIB_MAXIMUM_THREADS"):
            env[var] = str(threads)
        out = subprocess.run([sys.executable, "-c", _PEAK_SCRIPT.format(n=int(n), repeat=int(repeat))], env=env,
                             capture_output=True, text=True, timeout=120, check=True)
        _peak_cache[key] = float(out.stdout.strip().splitlines()[-1])
    return _peak_cache[key]


def measured_peak(kind: str = "fma", threads: int = 1) -> tuple[float, str]:
    """(GFLOP/s, description) of the machine peak ``kind``: ``"fma"`` (``fma_peak_gflops``) or ``"sgemm"``
    (``peak_gflops``)."""
    if kind == "fma":
        w = host_vector_width()
        return (fma_peak_gflops(threads),
                f"float32 FMA peak: generated loop of {fma_chains(host_vector_registers(w))} independent {w}-lane "
                "vector FMA chains, "
                f"{threads} thread{'s' if threads > 1 else ''}, best of 100 runs of 2 ms")
    if kind == "sgemm":
        return (peak_gflops(threads=threads),
                f"numpy float32 512x512 matmul (BLAS sgemm), {threads} thread{'s' if threads > 1 else ''}, best of 5")
    raise ValueError(f"peak must be 'fma' or 'sgemm', got {kind!r}")


def flops_note() -> str:
    """The profile's line saying how FLOPs are counted (``cnnjit.flops``), transcendental ops included."""
    return ("FLOPs: 2 x multiply-adds of Conv/Gemm/MatMul; an element of a transcendental op at the arithmetic "
            f"of its vector-math function, FMA = 2 (Tanh {TRANSCENDENTAL_FLOPS['Tanh']}, exp "
            f"{TRANSCENDENTAL_FLOPS['Exp']}, Softmax {SOFTMAX_FLOPS}: cnnjit.flops)")


def profile_model(model: Any, input_shapes: Mapping[str, Any] | None = None,
                  feeds: Mapping[str, np.ndarray] | None = None, *, repeat: int = 50, warmup: int = 3,
                  mode: str = "auto", entry: str = "auto", peak: str = "fma", seed: int = 0,
                  **options: Any) -> dict[str, Any]:
    """Compile ``model`` (path, bytes, ModelProto) as ``cnnjit.compile`` does and profile its schedule.

    Returns a JSON-able dict: ``calls`` (one row per kernel call in schedule order: call, kernel, variant,
    op, name, note, median_ms, min_ms, percent of the sum, flops, gflops, percent_of_peak, trace_ms, its
    time in the one run ``trace_run``, and the roofline: bytes (``flops.node_bytes``), of them
    written_bytes (its outputs) and read_bytes (the rest), intensity (FLOP per byte), gbs (bytes per second
    achieved), read_levels (bytes read from each level: every operand from the level its reuse distance fits
    in, ``operand_distances`` / ``read_levels``: a weight from the level holding a whole run, an activation
    written just before from the one holding the two calls' bytes), write_level (the innermost level its
    distinct bytes, ``footprint_bytes``, fit in, else DRAM: where it writes), level (the farthest of those),
    level_gbs and level_write_gbs (that level's read and write bandwidths), memory_ms
    (``roofline.call_memory_seconds``: the least time those bandwidths and the farthest level's load latency
    allow), memory_share (memory_ms / median_ms) and memory_bound (``memory_bound_seconds``: memory_ms more
    than the FLOPs take at the peak) and verdict (``roofline.verdict``: ``memory`` only near the levels'
    bandwidths, ``slow memory`` under the ridge but far from them, ``slow`` under half the peak, else
    ``compute``)), ``below_peak`` (``roofline.below_peak``: calls under half the peak, of them memory-bound),
    ``levels`` (``roofline.memory_levels``: each level's size, read and write bandwidths, balance, latency),
    ``bandwidth_gbs`` (DRAM's, ``stream_bandwidth_gbs``) and ``balance`` (peak / it), ``by_op``
    (``op_summary``), ``above_peak`` (``above_peak``: calls at effective GFLOP/s above the peak by
    variant), ``run_ms`` (the real entry's median),
    ``sum_ms``, ``timed_run_ms``, ``discrepancy`` (sum / run - 1), ``mode``, ``entry``, ``peak_gflops``,
    ``peak_method``, and ``trace_run``/``trace_run_ms``: the profiled run of median total (``median_run``),
    which ``chrome_trace`` shows. ``mode``: see ``profile_schedule``; ``mode="calls"`` with
    ``entry="auto"`` profiles the Python entry (the old per-call profile, kernels not inlined).
    ``options`` are ``cnnjit.compile``'s (fuse, threads, sparse_threshold...).
    """
    if mode == "calls" and entry == "auto":
        entry = "python"
    t = trace(model, input_shapes, entry=entry, **options)
    spec = Specialization(t.graph, t.program)
    if feeds is None:
        feeds = random_feeds(t.program, seed)
    prof = profile_schedule(spec, feeds, repeat=repeat, warmup=warmup, mode=mode)
    peak_g, peak_method = measured_peak(peak)
    levels = memory_levels(peak_g)
    bw, balance = levels[-1].gbs, levels[-1].balance  # DRAM
    flops = call_flops(t) if t.calls else [0] * len(prof.calls)
    nbytes = call_bytes(t) if t.calls else [0] * len(prof.calls)
    nodes = call_nodes(t) if t.calls else [None] * len(prof.calls)
    total = prof.sum_s or 1e-12
    rows = []
    traced = median_run(prof.calls)
    dists = operand_distances(nodes, t.program)
    for c, f, n, nb, dist in zip(prof.calls, flops, nodes, nbytes, dists):
        g = f / c.median_s / 1e9 if c.median_s and f else 0.0
        share = (len(t.calls.get(n.id, ())) or 1) if n is not None and t.calls else 1
        # the writes go to the level holding the distinct bytes it touches (a recurrence's R read once per
        # step is one R in the cache); each read operand comes from the level its reuse distance fits in
        own = level_of(min(nb, footprint_bytes(n) // share) if n is not None else nb, levels)
        wb = min(nb, written_bytes(n) // share) if n is not None else 0
        reads = read_levels(n, share, nb - wb, dist, own, levels) if n is not None else [(nb - wb, own)]
        mem_s = call_memory_seconds(reads, wb, own)
        lv = max([own, *(rl for b, rl in reads if b)], key=levels.index)  # the farthest level it touches
        out_elems = int(np.prod(n.outputs[0].shape)) if n is not None and n.outputs and n.outputs[0].shape else 0
        rows.append({"call": c.index, "kernel": c.kernel, "variant": c.variant,
                     "op": op_label(n) if n is not None else c.op,
                     "name": n.name if n is not None else "", "note": c.note, "median_ms": c.median_s * 1e3,
                     "min_ms": c.min_s * 1e3, "percent": 100 * c.median_s / total, "flops": int(f), "gflops": g,
                     "percent_of_peak": 100 * g / peak_g if peak_g else None,
                     # reduction length (multiply-adds per output element): 9 for a 3x3 depthwise conv
                     "macs_per_output": node_flops(n) / 2 / out_elems if out_elems and f else 0.0,
                     "trace_ms": c.times_ns[traced] / 1e6 if c.times_ns else 0.0,
                     # the roofline: bytes it must move, FLOP per byte, and whether that is below the balance
                     "bytes": int(nb), "intensity": f / nb if nb else None,
                     "gbs": nb / c.median_s / 1e9 if c.median_s and nb else 0.0,
                     "read_bytes": int(nb - wb), "written_bytes": int(wb),
                     # the level the working set fits in, whose bandwidths and balance judge the call
                     "level": lv.name, "level_gbs": lv.gbs, "level_write_gbs": lv.write_gbs,
                     "memory_ms": mem_s * 1e3, "memory_share": mem_s / c.median_s if c.median_s else 0.0,
                     # bytes read from each level (by reuse distance), the level written to
                     "read_levels": {rl.name: sum(b for b, x in reads if x is rl) for _, rl in reads if _},
                     "write_level": own.name,
                     "memory_bound": (under := memory_bound_seconds(f, mem_s, peak_g)),
                     # memory / slow memory (under the ridge, near / far from the bandwidth), slow, compute
                     "verdict": verdict(under, mem_s / c.median_s if c.median_s else 0.0,
                                        g / peak_g if peak_g and f else None)})
    return {"name": t.name, "shapes": {k: list(v) for k, v in t.shapes.items()}, "notes": t.notes,
            "runs": repeat, "mode": prof.mode, "entry": prof.entry, "run_ms": prof.run_s * 1e3,
            "sum_ms": prof.sum_s * 1e3, "timed_run_ms": prof.timed_run_s * 1e3, "discrepancy": prof.discrepancy,
            "run_min_ms": prof.run_min_s * 1e3, "timed_run_min_ms": prof.timed_run_min_s * 1e3,
            "sum_min_ms": sum(c.min_s for c in prof.calls) * 1e3,
            "tick_ns": prof.tick_s * 1e9 if prof.tick_s else None, "flops": int(sum(flops)),
            "peak_gflops": peak_g, "peak_method": peak_method, "bandwidth_gbs": bw, "balance": balance,
            "bandwidth_method": f"streaming read of {dram_stream_bytes() >> 20} MB, 1 thread", "calls": rows,
            "levels": [lv.as_dict() for lv in levels],
            "by_op": op_summary(rows), "above_peak": above_peak(rows),
            "below_peak": dict(zip(("calls", "memory"), below_peak(rows))),
            "trace_run": traced, "trace_run_ms": sum(r["trace_ms"] for r in rows)}


def written_bytes(node: Any) -> int:
    """Bytes an IR node writes: each of its outputs once (the written part of ``flops.node_bytes``)."""
    ins = {id(v) for v in node.inputs if v is not None}
    return _value_bytes([v for v in node.outputs if v is not None and id(v) not in ins])


def _value_bytes(values: list[Any]) -> int:
    """Bytes of ``values``, each distinct one once."""
    vals = {id(v): v for v in values}
    return int(sum(int(np.prod(v.shape, dtype=np.int64)) * np.dtype(v.dtype).itemsize for v in vals.values()))


def footprint_bytes(node: Any) -> int:
    """Bytes of the distinct values an IR node touches, each once: ``flops.node_bytes`` without counting a
    recurrence's weights once per step (they are the same bytes, which stay in the cache that holds them)."""
    return _value_bytes([v for v in [*node.inputs, *node.outputs] if v is not None])


def operand_distances(nodes: list[Any], program: Program) -> list[dict[int, int]]:
    """``roofline.reuse_distances`` of every call's operands (keyed by IR value id): the model's inputs are
    written just before the run, and no distance exceeds the bytes a run touches (its arenas and constants)."""
    touches = [[(id(v), _value_bytes([v])) for v in [*n.inputs, *n.outputs] if v is not None] if n is not None
               else [] for n in nodes]
    fresh = {id(v) for n in nodes if n is not None for v in n.inputs
             if v is not None and v.producer is None and not v.is_const}
    cap = program.arena_bytes + sum(int(b.nbytes) for b in program.const_buffers.values())
    return reuse_distances(touches, fresh, cap)


def read_levels(node: Any, share: int, read: int, dist: Mapping[int, int], own: Any, levels: list[Any]
                ) -> list[tuple[int, Any]]:
    """(bytes, level) of each operand ``node`` reads (a ``share``-th of it per call of a split node): each from
    the level its reuse distance (``dist``) fits in; the bytes ``read`` counts beyond one read of each (a
    recurrence's R once per step) from ``own``, the level holding the call's distinct bytes."""
    outs = {id(v) for v in node.outputs if v is not None}
    vals = {id(v): v for v in node.inputs if v is not None and id(v) not in outs}
    out = [(_value_bytes([v]) // share, level_of(dist.get(k, 0), levels)) for k, v in vals.items()]
    rest = read - sum(b for b, _ in out)
    return out + [(rest, own)] if rest > 0 else out


def median_run(calls: list[CallTiming]) -> int:
    """Index of the profiled run whose total (sum over the calls) is the median (the lower one of an even
    count): the one run a trace shows, typical rather than the luckiest or an interrupted one."""
    runs = min((len(c.times_ns) for c in calls), default=0)
    if not runs:
        return 0
    totals = [sum(c.times_ns[r] for c in calls) for r in range(runs)]
    return sorted(range(runs), key=lambda r: totals[r])[(runs - 1) // 2]


def op_summary(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Per-op-type totals of ``profile_model``'s call rows, slowest first (like OpenVINO benchmark_app
    ``-pc`` or LiteRT's by-node-type table): op (a fused group's label, e.g. ``Conv+Relu``), calls,
    total_ms (sum of the calls' medians), percent of the sum over all calls, flops and GFLOP/s."""
    groups: dict[str, dict[str, Any]] = {}
    for r in rows:
        g = groups.setdefault(r["op"], {"op": r["op"], "calls": 0, "total_ms": 0.0, "flops": 0})
        g["calls"] += 1
        g["total_ms"] += r["median_ms"]
        g["flops"] += r["flops"]
    total = sum(g["total_ms"] for g in groups.values()) or 1e-12
    for g in groups.values():
        g["percent"] = 100 * g["total_ms"] / total
        g["gflops"] = g["flops"] / g["total_ms"] / 1e6 if g["total_ms"] and g["flops"] else 0.0
    return sorted(groups.values(), key=lambda g: -g["total_ms"])


def above_peak(rows: list[dict[str, Any]]) -> dict[str, int]:
    """Calls whose GFLOP/s exceed the machine's peak, counted by kernel variant: their FLOPs are the direct
    convolution's (``flops.node_flops``) while the variant computes fewer multiplies (Winograd: 4x fewer in
    its GEMMs; ``simd_depthwise_static`` leaves out the taps in the top and bottom padding of short maps, 40-60%
    of a 5x5 window on 2-3 rows; ``depthwise_lanes`` every tap in the padding, half of a 5x5 window on a 4x4
    map), so their GFLOP/s are *effective* ones (direct-convolution FLOPs / time)."""
    out: dict[str, int] = {}
    for r in rows:
        if r["flops"] and (r["percent_of_peak"] or 0) > 100:
            out[r["variant"] or r["op"]] = out.get(r["variant"] or r["op"], 0) + 1
    return out


def chrome_trace(doc: Mapping[str, Any]) -> dict[str, Any]:
    """One profiled run of ``profile_model``'s result (``trace_run``) in the Chrome trace event format
    (chrome://tracing, https://ui.perfetto.dev): a complete event (``"ph": "X"``) per kernel call, in
    schedule order and back to back, ``ts``/``dur`` in microseconds, ``args`` with the kernel, variant, op,
    node name and FLOPs. Run-level facts go in ``otherData``."""
    events = []
    ts = 0.0
    pid = os.getpid()
    for r in sorted(doc["calls"], key=lambda r: r["call"]):
        dur = r["trace_ms"] * 1e3
        events.append({"name": r["op"] or r["kernel"], "cat": "kernel", "ph": "X", "ts": ts, "dur": dur,
                       "pid": pid, "tid": 1,
                       "args": {"call": r["call"], "kernel": r["kernel"], "variant": r["variant"], "op": r["op"],
                                "node": r["name"], "flops": r["flops"]}})
        ts += dur
    return {"traceEvents": events, "displayTimeUnit": "ms",
            "otherData": {"model": doc.get("name", ""), "shapes": doc.get("shapes", {}), "mode": doc.get("mode"),
                          "entry": doc.get("entry"), "run": doc.get("trace_run"),
                          "run_ms": doc.get("trace_run_ms"), "median_run_ms": doc.get("run_ms")}}


def write_chrome_trace(doc: Mapping[str, Any], path: str | os.PathLike[str]) -> None:
    """``chrome_trace(doc)`` written to ``path`` as JSON (open it in chrome://tracing or Perfetto)."""
    with open(path, "w", encoding="utf-8") as f:
        json.dump(chrome_trace(doc), f)


# =========================================================================================================
# the FMA peak: a generated loop of independent vector FMA chains
# =========================================================================================================
#: independent accumulator chains at most (latency 4 x 2 FMA pipes = 8 in flight on Zen 4 / Skylake; 16 covers
#: more)
_FMA_CHAINS = 16


def fma_chains(registers: int) -> int:
    """Accumulator chains for a register file of ``registers`` vectors: up to 16, leaving two registers for the
    loop's two operands (16 chains + 2 operands spill on AVX2's 16 registers: 49-59 instead of ~95 GFLOP/s)."""
    return max(1, min(_FMA_CHAINS, registers - 2))


def fma_source(width: int, chains: int = _FMA_CHAINS) -> str:
    """A kernel ``kernel(buf, n)`` doing ``n`` x ``chains`` vector FMAs of ``width`` lanes (explicit SIMD)."""
    w = int(width)
    lines = ["def kernel(buf, n):", f"    x = vload{w}(buf, 0)", f"    y = vload{w}(buf, {w})"]
    lines += [f"    a{j} = vbcast{w}(buf[{2 * w + j}])" for j in range(chains)]
    lines.append("    for _ in range(n):")
    lines += [f"        a{j} = vfma{w}(x, y, a{j})" for j in range(chains)]
    lines.append(f"    vstore{w}(buf, 0, {tree_sum([f'a{j}' for j in range(chains)], w)})")
    return "\n".join(lines) + "\n"


_fma_cache: dict[tuple[int, int], float] = {}


def fma_peak_gflops(threads: int = 1, width: int | None = None, seconds: float = 0.002, repeat: int = 100) -> float:
    """Float32 FMA peak of this machine, measured: GFLOP/s of a generated register-only vector FMA loop
    (``fma_source``, the host's vector width, as many chains as its registers hold: ``fma_chains``), best of
    ``repeat`` runs of about ``seconds``, on ``threads`` threads at once (the kernel releases the GIL). Cached
    per process."""
    w = int(width or host_vector_width())
    key = (int(threads), w)
    if key in _fma_cache:
        return _fma_cache[key]
    chains = fma_chains(host_vector_registers(w))
    kern = load_kernel(fma_source(w, chains))
    bufs = [np.full(2 * w + chains, 1e-3, np.float32) for _ in range(threads)]
    kern(bufs[0], 1)
    n = 1 << 12
    while True:  # calibrate the trip count to ~seconds on one thread
        t0 = time.perf_counter()
        kern(bufs[0], n)
        dt = time.perf_counter() - t0
        if dt > seconds / 4 or n > 1 << 30:
            n = max(1, int(n * seconds / max(dt, 1e-9)))
            break
        n *= 4
    flops = 2.0 * w * chains * n
    best = 0.0
    if threads <= 1:
        for _ in range(repeat):
            t0 = time.perf_counter()
            kern(bufs[0], n)
            best = max(best, flops / (time.perf_counter() - t0) / 1e9)
    else:
        with ThreadPoolExecutor(threads) as pool:
            for _ in range(repeat):
                t0 = time.perf_counter()
                list(pool.map(lambda b: kern(b, n), bufs))
                best = max(best, threads * flops / (time.perf_counter() - t0) / 1e9)
    _fma_cache[key] = best
    return best


__all__ = ["CallTiming", "ScheduleProfile", "profile_calls", "profile_schedule", "timed_source",
           "timed_entry", "random_feeds", "peak_gflops", "fma_chains", "fma_peak_gflops", "measured_peak",
           "stream_source", "stream_bandwidth_gbs", "memory_bound",
           "profile_model", "written_bytes", "footprint_bytes", "operand_distances", "read_levels",
           "median_run", "op_summary", "below_peak", "chrome_trace", "write_chrome_trace", "bound_label",
           "slow_summary", "flops_note"]
