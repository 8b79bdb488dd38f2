"""Where a 2-thread schedule's time goes (issue 18), per model: each step's parts timed one after another on
one thread (``cnnjit.profile``'s timed entry of the ``threads=2`` program: every part of every split layer
is one call), against the same layers in the ``threads=1`` program.

    PYTHONPATH=. python benchmarks/thread_split.py [MODELS] [--runs 20] [--rows 15]
    PYTHONPATH=. python benchmarks/thread_split.py [MODELS] --busy 1 [--runs 40]   # under artificial load

Per model it prints: the summed part times against the whole layers' (splitting must not make a layer's
parts slower than the layer: a part of another size is a new kernel specialisation, and past
``emit.SPECIALIZE_MAX`` a kernel runs unspecialised), the time of layers left on one thread, the *ideal*
2-thread time (each split step as long as its longest part or half its parts, each unsplit step whole) and the
ratio of the parts' sum to it, and the step protocol simulated on the parts' times (``simulate``: what a
perfect team with no hand-over cost reaches, layers side by side included); then the slowest
steps with their parts, each against the same layer whole in the 1-thread program (what the split adds:
a band's halo, a channel part's second copy of its input strips). Times are minima over ``--runs`` (low
noise on a shared machine). Then traced 2-thread runs: the worker's start, the hand-over per step, and where
each thread waits (per step, before its first part there: the steps the second core idles before), and the split
steps run concurrently (``concurrent_spans``: each part's minimum over traced runs where the other thread ran the
same step at the same time) against their parts alone: what running both cores at once costs. Then the real
1- and 2-thread runs, interleaved (median and best), with the load average: on a machine whose other
processes take cores, the real 2-thread time is far from the ideal one.

MODELS: comma-separated ``benchmarks.corpus`` names or ``path@input=1x3x416x416`` (default: MobileNetV2-224
and the ddddocr detector when installed).
"""

from __future__ import annotations

import argparse
import os
import random
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import numpy as np  # noqa: E402

from benchmarks.ootb import _ootb_model, default_ootb_models, ootb_label  # noqa: E402


def step_times(spec, feeds, runs: int) -> list[float]:
    """Per call of ``spec``'s schedule: the minimum time over ``runs`` profiled runs (microseconds)."""
    from cnnjit.profile import profile_schedule

    prof = profile_schedule(spec, feeds, repeat=runs)
    return [c.min_s * 1e6 for c in prof.calls]


def analyse(spec: str, runs: int, rows: int) -> None:
    import cnnjit

    model, feeds = _ootb_model(spec)
    shapes = {k: tuple(v.shape) for k, v in feeds.items()}
    one = cnnjit.compile(model, input_shapes=shapes, threads=1)
    two = cnnjit.compile(model, input_shapes=shapes, threads=2)
    p1, p2 = one._default_spec().program, two._default_spec().program
    t1 = step_times(one._default_spec(), feeds, runs)
    t2 = step_times(two._default_spec(), feeds, runs)
    steps = p2.meta.get("step_plan") or []
    whole = sum(t1)
    if not steps:
        print(f"\n{ootb_label(spec)}: threads=2 keeps the serial schedule (1-thread time {whole / 1e3:.2f} ms)")
    else:
        ideal = split = alone = 0.0
        table = []
        whole_us: dict[str, float] = {}  # output name -> the layer's time in the 1-thread program
        for c, t in zip(p1.calls, t1):
            if c.node is not None:
                whole_us[c.node.outputs[0].name] = whole_us.get(c.node.outputs[0].name, 0.0) + t
        for st in steps:
            ts = t2[st.first:st.first + st.parts]
            c = p2.calls[st.first]
            if st.parts > 1:
                split += sum(ts)
                ideal += max(sum(ts) / 2, max(ts))
            else:
                alone += ts[0]
                ideal += ts[0]
            shape = "x".join(map(str, c.node.outputs[0].shape)) if c.node is not None else ""
            table.append((sum(ts), c.op, c.variant, shape, ts,
                          whole_us.get(c.node.outputs[0].name) if c.node is not None else None))
        sim, busy = simulate(steps, t2)
        print(f"\n{ootb_label(spec)}: {len(steps)} steps, {p2.meta.get('parallel_layers')} split; 1-thread "
              f"layers {whole / 1e3:.2f} ms, 2-thread parts {(split + alone) / 1e3:.2f} ms "
              f"(split {split / 1e3:.2f}, on one thread {alone / 1e3:.2f}); ideal 2-thread "
              f"{ideal / 1e3:.2f} ms: {(split + alone) / ideal:.2f}x the parts' sum; the step protocol "
              f"simulated on these times {sim / 1e3:.2f} ms (speed-up {whole / sim:.2f}; threads busy "
              f"{busy[0] / 1e3:.2f} / {busy[1] / 1e3:.2f} ms)")
        print("  slowest steps (parts' sum; 'whole': the same layer in the 1-thread program, where its output "
              "matches one)")
        for total, op, variant, shape, ts, one_us in sorted(table, key=lambda r: -r[0])[:rows]:
            print(f"  {total:8.1f} us  {op:8s} {variant:16s} {shape:16s} parts " + " ".join(f"{t:.1f}" for t in ts)
                  + (f"  whole {one_us:.1f} ({total / one_us:.2f}x)" if one_us else ""))
        h = handover(two._default_spec(), feeds, runs)
        print(f"  traced 2-thread runs (medians, us): wall {h['wall']:.1f}, parts' sum {h['busy']:.1f}, worker's "
              f"first part at {h['wake']:.1f}, hand-over per step {h['step_gap']:.2f} (p90 {h['step_gap_p90']:.2f}) "
              f"x {h['steps_with_deps']} steps = {h['gap_sum']:.1f} per run, tail {h['tail']:.1f}")
        print(f"  where each thread waits (traced, us per run): caller {h['idle_caller']:.1f}, worker "
              f"{h['idle_worker']:.1f} (medians); steps the worker waits longest before (means):")
        for si, cw, ww in h["idle_steps"][:rows]:
            c = p2.calls[steps[si].first] if si >= 0 else None
            what = "after its last part (tail)" if c is None else f"step {si} {c.op} {c.variant}"
            print(f"    {what:44s} caller {cw:7.1f}  worker {ww:7.1f}")
        spans = concurrent_spans({"2T": (tracer(two._default_spec(), feeds), steps)}, 15 * runs)["2T"]
        alone_us = {i: max(t2[st.first:st.first + st.parts]) for i, st in enumerate(steps)}
        if spans:
            a, b = sum(alone_us[i] for i in spans), sum(spans.values())
            print(f"  split steps run concurrently (each part's minimum over {15 * runs} traced runs where the other "
                  f"thread ran the step for {OVERLAP} of it; the longest part) against their longest part alone: "
                  f"{len(spans)} steps, {b / 1e3:.2f} vs {a / 1e3:.2f} ms ({b / a:.2f}x); the steps that lose most:")
            for i in sorted(spans, key=lambda i: alone_us[i] - spans[i])[:rows]:
                c = p2.calls[steps[i].first]
                shape = "x".join(map(str, c.node.outputs[0].shape)) if c.node is not None else ""
                print(f"    step {i:3d} {c.op:8s} {c.variant:22s} {shape:16s} concurrent {spans[i]:7.1f} us, alone "
                      f"{alone_us[i]:7.1f} ({spans[i] / alone_us[i]:.2f}x)")
    timings: dict[int, list[float]] = {1: [], 2: []}
    for _ in range(3):
        one.run(None, feeds)
        two.run(None, feeds)
    for _ in range(runs):
        for t in random.sample([1, 2], 2):
            m = one if t == 1 else two
            t0 = time.perf_counter()
            m.run(None, feeds)
            timings[t].append((time.perf_counter() - t0) * 1e3)
    med = {t: statistics.median(v) for t, v in timings.items()}
    best = {t: min(v) for t, v in timings.items()}
    print(f"  real runs (load {os.getloadavg()[0]:.1f}): 1 thread {med[1]:.3f} ms (best {best[1]:.3f}), 2 threads "
          f"{med[2]:.3f} ms (best {best[2]:.3f}); speed-up {med[1] / med[2]:.2f} (best {best[1] / best[2]:.2f}); "
          f"{len(p1.calls)} / {len(p2.calls)} calls")


def simulate(steps, times: list[float], threads: int = 2) -> tuple[float, list[float]]:
    """The step protocol (``runtime/parallel.py``) run on ``threads`` threads with each call taking ``times``
    (per call, e.g. its minimum alone) and no hand-over cost: (the run's time, each thread's busy time). Each
    thread walks the steps in order, waits for a step's dependencies, then claims its parts (the caller from
    the first, the others from the last) until none is left; the thread whose next action comes first acts
    first. Unlike the per-step ideal, layers run side by side (independent steps, ``branches.py``) count once."""
    front, back = [0] * len(steps), [0] * len(steps)
    end: list[list[float]] = [[0.0] * st.parts for st in steps]
    pos, clock, busy = [0] * threads, [0.0] * threads, [0.0] * threads

    def ready(t: int) -> float:
        return max([clock[t], *(max(end[d]) for d in steps[pos[t]].deps)])

    while True:
        waiting = [(ready(t), t) for t in range(threads) if pos[t] < len(steps)]
        if not waiting:
            return max(max(e) for e in end), busy
        at, t = min(waiting)
        s, st = pos[t], steps[pos[t]]
        clock[t] = at
        if front[s] + back[s] >= st.parts:  # nothing left to claim: the next step
            pos[t] += 1
            continue
        if t == 0:
            p, front[s] = front[s], front[s] + 1
        else:
            p, back[s] = st.parts - 1 - back[s], back[s] + 1
        end[s][p] = clock[t] = at + times[st.first + p]
        busy[t] += times[st.first + p]


def trace_runs(spec, feeds, runs: int) -> list[np.ndarray]:
    """Per run of ``spec``'s parallel schedule, each call's ``[start, end, caller?]`` in ticks relative to the
    run's start (the traced copy of the schedule, ``render_parallel(trace=True)``, on the same team), plus a
    last row ``[0, end of run, 1]``."""
    once = tracer(spec, feeds)
    for _ in range(3):
        once()
    return [once() for _ in range(runs)]


def tracer(spec, feeds):
    """A function running ``spec``'s parallel schedule once, traced, always on the team, and returning that
    run's trace (``trace_runs``' rows)."""
    from cnnjit.compiler.codegen.build import load_entry, source_key
    from cnnjit.compiler.codegen.cycles import read_ticks, ticks
    from cnnjit.compiler.codegen.threads import PROTOCOL, render_parallel, trace_words
    from cnnjit.profile import _namespace, _write_inputs
    from cnnjit.runtime.parallel import ParallelRun, split_run_desc

    p = spec.program
    steps = p.meta["step_plan"]
    ns = _namespace(p)
    kernels = {c.kernel: ns[c.kernel] for c in p.calls}
    fn = load_entry(render_parallel(p.buffer_names, p.calls, steps, trace=True),
                    {**kernels, **PROTOCOL, "ticks": ticks}, {n: source_key(s) for n, s in p.kernel_sources.items()})
    run = ParallelRun(fn, len(steps), p.meta["threads"], split_run_desc)
    run.chooser = None  # always the team (a run by the caller alone traces nothing of the hand-over)
    run.state = np.zeros(trace_words(steps), np.int64)
    base = len(run.state) - 3 * len(p.calls)
    bufs = p.allocate()
    args = [bufs[n] for n in p.buffer_names]

    def once() -> np.ndarray:
        _write_inputs(p, bufs, feeds)
        t0 = read_ticks()
        run(*args)
        t1 = read_ticks()
        tr = run.state[base:].reshape(-1, 3).copy()
        tr[:, :2] -= t0
        return np.vstack([tr, [[0, t1 - t0, 1]]])

    return once


#: a part's traced time counts as concurrent when the other thread ran parts of the same step for at least this
#: share of it (both cores busy on the step: what the simulation's per-part times leave out)
OVERLAP = 0.9


def concurrent_spans(tracers: dict[str, Any], runs: int, seed: int = 0) -> dict[str, dict[int, float]]:
    """Per program (``tracers``: name -> (``tracer``'s function, its steps)), traced ``runs`` times each in a
    seeded random order: per step split in parts, its longest part's minimum time over the runs where the
    other thread ran parts of that step for ``OVERLAP`` of it (microseconds; steps with such a time for every
    part only). A loaded machine leaves few such runs per step: many runs, minima."""
    import random

    from cnnjit.compiler.codegen.cycles import tick_seconds

    us = tick_seconds() * 1e6
    best: dict[str, dict[tuple[int, int], float]] = {k: {} for k in tracers}
    names = list(tracers)
    rng = random.Random(seed)
    for k in names:  # warm-up
        tracers[k][0]()
    for _ in range(runs):
        rng.shuffle(names)
        for k in names:
            once, steps = tracers[k]
            tr = once()[:-1]
            for i, st in enumerate(steps):
                c = tr[st.first:st.first + st.parts]
                for p in range(st.parts if st.parts > 1 else 0):
                    lo, hi, who = (int(x) for x in c[p])
                    other = c[c[:, 2] != who]
                    shared = np.clip(np.minimum(other[:, 1], hi) - np.maximum(other[:, 0], lo), 0, None).sum()
                    if hi > lo and shared >= OVERLAP * (hi - lo):
                        t = (hi - lo) * us
                        best[k][i, p] = min(best[k].get((i, p), t), t)
    out: dict[str, dict[int, float]] = {}
    for k, (_, steps) in tracers.items():
        out[k] = {i: max(best[k][i, p] for p in range(st.parts)) for i, st in enumerate(steps)
                  if st.parts > 1 and all((i, p) in best[k] for p in range(st.parts))}
    return out


def handover(spec, feeds, runs: int) -> dict[str, Any]:
    """Where a 2-thread run's time goes, from traced runs (medians over runs, microseconds): ``wall`` (the
    caller's call), ``busy`` (the parts' summed time), ``wake`` (run start to the worker's first part),
    ``step_gap`` (per step with dependencies: its first part's start after its last dependency's end, the
    hand-over, median over steps and runs), ``gap_sum`` (those summed per run: time on the critical path
    spent handing over) and ``tail`` (the last part's end to the caller's return); ``idle_caller`` and
    ``idle_worker`` (each thread's time not in a part, run start to the caller's return) and ``idle_steps``
    (``(step, caller us, worker us)`` per step: each thread's wait before its first part of that step, after
    its previous part; step -1: after its last part; means over the runs, largest worker wait first)."""
    from cnnjit.compiler.codegen.cycles import tick_seconds

    us = tick_seconds() * 1e6
    steps = spec.program.meta["step_plan"]
    step_of = np.zeros(sum(st.parts for st in steps), np.int64)
    for i, st in enumerate(steps):
        step_of[st.first:st.first + st.parts] = i
    rows: dict[str, list[float]] = {k: [] for k in ("wall", "busy", "wake", "gap_sum", "tail", "idle_caller",
                                                     "idle_worker")}
    waits = np.zeros((2, len(steps) + 1, runs))  # [worker, caller][step, or -1 after the last part][run]
    gaps: list[float] = []
    for r, tr in enumerate(trace_runs(spec, feeds, runs)):
        calls, wall = tr[:-1], tr[-1, 1]
        for who in (0, 1):
            mine = np.flatnonzero(calls[:, 2] == who)
            mine = mine[np.argsort(calls[mine, 0])]
            ends = np.concatenate([[0], calls[mine, 1]])
            np.add.at(waits[who, :, r], step_of[mine], np.maximum(calls[mine, 0] - ends[:-1], 0) * us)
            waits[who, -1, r] = (wall - ends[-1]) * us
            rows["idle_worker" if who == 0 else "idle_caller"].append(float(waits[who, :, r].sum()))
        rows["wall"].append(wall * us)
        rows["busy"].append(float(np.sum(calls[:, 1] - calls[:, 0])) * us)
        worker = calls[calls[:, 2] == 0]
        rows["wake"].append(float(worker[:, 0].min()) * us if len(worker) else float("nan"))
        rows["tail"].append(float(wall - calls[:, 1].max()) * us)
        total = 0.0
        for st in steps:
            if not st.deps:
                continue
            ready = max(calls[d.first:d.first + d.parts, 1].max() for d in (steps[i] for i in st.deps))
            g = float(calls[st.first:st.first + st.parts, 0].min() - ready) * us
            gaps.append(g)
            total += max(g, 0.0)
        rows["gap_sum"].append(total)
    out: dict[str, Any] = {k: statistics.median(v) for k, v in rows.items()}
    mean = np.mean(waits, axis=2)  # (means: a stall that moves from step to step still shows where it falls)
    out["idle_steps"] = sorted(((i if i < len(steps) else -1, float(mean[1, i]), float(mean[0, i]))
                                for i in range(len(steps) + 1)), key=lambda t: -t[2])
    out["step_gap"] = statistics.median(gaps) if gaps else float("nan")
    out["step_gap_p90"] = float(np.percentile(gaps, 90)) if gaps else float("nan")
    out["steps_with_deps"] = sum(1 for st in steps if st.deps)
    return out


#: a busy-loop process on one CPU (``--busy``), in a session of its own: another user's process, which Linux
#: schedules as a group of its own (autogroup), not as one more thread of ours
BUSY_LOOP = "import os, sys\nos.sched_setaffinity(0, {int(sys.argv[1])})\nwhile True:\n    pass\n"


def start_busy(n: int) -> list[subprocess.Popen]:
    """``n`` busy-loop processes, the i-th pinned to the i-th usable CPU (round robin)."""
    cpus = sorted(os.sched_getaffinity(0))
    return [subprocess.Popen([sys.executable, "-c", BUSY_LOOP, str(cpus[i % len(cpus)])], start_new_session=True)
            for i in range(n)]


def under_load(spec: str, runs: int, busy: int) -> None:
    """``spec`` compiled with 1, 2 and 4 threads, timed interleaved (medians) on the machine as it is, then
    with ``busy`` busy-loop processes pinned to CPUs (``start_busy``): with a core taken, a team must fall
    back to about the 1-thread time (``ParallelRun``'s chooser runs the caller alone), never stall. "2T
    team only" is the 2-thread schedule with its chooser pinned to the team (what the chooser saves)."""
    import cnnjit
    from benchmarks.harness import measure
    from cnnjit.runtime.parallel import ParallelRun

    model, feeds = _ootb_model(spec)
    shapes = {k: tuple(v.shape) for k, v in feeds.items()}
    models = {t: cnnjit.compile(model, input_shapes=shapes, threads=t) for t in (1, 2, 4)}
    fns = {f"{t}T": (lambda m=m: m.run(None, feeds)) for t, m in models.items()}
    pinned = cnnjit.compile(model, input_shapes=shapes, threads=2)  # its own ParallelRun, always on the team
    ps = pinned._default_spec()
    run = ps.program.run
    if isinstance(run, ParallelRun) and run is not models[2]._default_spec().program.run:
        run.chooser = None
        if ps.chooser is not None:
            ps.chooser.pick = lambda: 0  # (the instance attribute shadows the method)
        fns["2T team only"] = lambda: pinned.run(None, feeds)
    for phase in (0, busy):
        procs = start_busy(phase)
        try:
            got = measure(fns, runs=runs, warmup=5)
        finally:
            for p in procs:
                p.kill()
                p.wait()
        med = {k: v["median_ms"] for k, v in got.items()}
        picks = []
        for t in (2, 4):
            sp = models[t]._default_spec()
            if sp.chooser is not None:  # (a small model: its parallel schedule or its serial twin)
                picks.append(f"{t}T: {('team', 'serial twin')[sp.chooser.best]}")
                continue
            chooser = getattr(sp.program.run, "chooser", None)
            picks.append(f"{t}T: {'serial' if chooser is None else ('team', 'alone')[chooser.best]}")
        team_only = f", 2T team only {med['2T team only']:.3f}" if "2T team only" in med else ""
        print(f"{ootb_label(spec):18s} {phase} busy (load {os.getloadavg()[0]:.1f}): 1T {med['1T']:.3f} ms, "
              f"2T {med['2T']:.3f}, 4T {med['4T']:.3f}{team_only}; 2T/1T {med['2T'] / med['1T']:.2f}, "
              f"4T/2T {med['4T'] / med['2T']:.2f} ({', '.join(picks)})")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("models", nargs="?", default="")
    ap.add_argument("--runs", type=int, default=20)
    ap.add_argument("--rows", type=int, default=15)
    ap.add_argument("--force", action="store_true",
                    help="split every layer that can be (thresholds of threads.py at 0): the hand-over on small models")
    ap.add_argument("--busy", type=int, default=0,
                    help="instead of the analysis: 1/2/4-thread medians as the machine is, then with this many "
                         "busy-loop processes pinned to CPUs (a shared machine's load)")
    args = ap.parse_args(argv)
    if args.force:
        from cnnjit.compiler.codegen import threads

        threads.MIN_PARALLEL_TOTAL_US = threads.MIN_PARALLEL_US = 0.0
    specs = [s for s in args.models.split(",") if s] or [s for s in default_ootb_models() if s != "resnet8"]
    for spec in specs:
        if args.busy:
            under_load(spec, args.runs, args.busy)
        else:
            analyse(spec, args.runs, args.rows)
    return 0


if __name__ == "__main__":
    sys.exit(main())
