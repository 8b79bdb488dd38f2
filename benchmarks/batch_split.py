"""Where a split batch's time goes (issue 18): CPU time per image on each thread, samples per thread, time
off the CPU, for a batch's samples run from Python (one GIL hand-over or more per sample) and in one native
call per thread (``runtime/batchrows.py``), against the same samples on one thread.

    python benchmarks/batch_split.py [--models vww_96_float,mobilenet_v2_224] [--batch 8] [--runs 60]

Wall-clock speed-ups need a quiet machine; what this script reports holds on a busy one too:

* ``CPU us/img``: the CPU time (``time.thread_time``) the threads spent inside their share of the batch
  (``run_samples``: claims, copies, the schedule, and the caller's wait for the last sample), per image;
  ``caller CPU ms`` / ``worker CPU ms``: the same per thread and batch (the work's balance: on a quiet
  machine the batch's wall time is about the larger of the two);
* ``worker share``: the share of the samples the team's worker ran (a split that runs every sample on one
  thread while the other waits for the GIL has 0 or 1 here, ~0.5 when both run);
* ``both busy``: of the batch's wall time, the share during which both threads were inside their share and
  on a CPU at once, estimated per thread as (its CPU time there) / (the batch's wall time), the smaller of
  the two (0: the samples ran one thread at a time);
* ``off-CPU ms``: wall time inside ``run_samples`` minus CPU time there, summed over the threads: waiting
  for the GIL or for the other thread, or descheduled by other processes;
* ``proc CPU us/img``: the process's CPU time per image from the call's start to 3 ms after it returned
  (everything: Python around the call, the worker's spin after its job);
* wall ms per batch (median and minimum), and the split's speed-up over the one-thread loop of the same
  kind in the same process (``speed-up``: medians; ``best``: minima);
* for ``split, native``, from the batch's trace (``batchrows.start_trace``: per thread and per sample, which
  thread ran what and when; a few clock reads per sample): ``sample us alone`` / ``side by side`` (the
  median wall time of a sample while the other thread ran none / one: equal when the threads' work sets do
  not contend, no false sharing or shared bandwidth), ``worker late us`` (the worker's start after the
  caller's), ``caller waits us`` (the caller's wait for the worker's last sample) and ``worker on the
  caller's CPU`` (the share of the worker's samples that began on a CPU the caller ran a sample of the same
  batch on: the two threads took turns on one CPU); where the rest of a split batch's wall time goes:
  ``Python before us`` (the call's start to the caller's first claim: ``BatchLoop.run``, the description,
  the post), ``Python after us`` (the caller's end of waiting to the call's return) and ``end gap us`` (how
  long the thread that ran out of samples first waited for the other's last: a sample's granularity).

Modes, interleaved in random order in one process: ``1 thread, python`` / ``1 thread, native`` (the batch's
samples on the calling thread, from Python or in one native call), ``split, python`` / ``split, native``
(``BatchLoop`` on two threads of the team, its chooser held on the split), ``split, native, stay`` (the
native split with the worker left wherever the kernel wakes it, the caller's CPU included: the behaviour
before ``batchrows._off_callers_cpu``). Results: ``benchmarks/results/batch_split.{json,md}``.

On a busy machine the kernel often wakes the worker on the caller's CPU; to see the split as on a quiet
machine without one, run the script in a session of its own whose autogroup outweighs the others
(``setsid sh -c 'echo -20 > /proc/self/autogroup; exec python benchmarks/batch_split.py ...'``, as root).
"""

from __future__ import annotations

import argparse
import itertools
import os
import random
import statistics
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import cnnjit  # noqa: E402
from benchmarks.batch import autogroup, models  # noqa: E402
from benchmarks.harness import write_json, write_markdown  # noqa: E402
from cnnjit.runtime.batchloop import BatchLoop  # noqa: E402
from cnnjit.runtime.batchrows import read_trace, start_trace  # noqa: E402
from cnnjit.runtime.team import team  # noqa: E402

#: ``split, native, stay``: the same native split, but the team's worker stays on whatever CPU the kernel puts
#: it, the caller's included (``batchrows.Desc.cpus`` zeroed, the worker's affinity reset to every CPU before
#: each batch: the behaviour before workers moved off the caller's CPU); ``split, native`` keeps the worker's
#: affinity from its previous batch of that mode, as a stream of batches does
MODES = ("1 thread, python", "1 thread, native", "split, python", "split, native", "split, native, stay")


def probe(name: str, batch: int, runs: int, rng: random.Random) -> list[dict]:
    """Per mode, the medians (and wall minimum) of ``runs`` batches of model ``name``."""
    proto, sample = models([name])[name]
    feed = proto.graph.input[0].name
    model = cnnjit.compile(proto)
    model.run(None, {feed: np.zeros((1, *sample), np.float32)})
    x = np.random.default_rng(0).standard_normal((batch, *sample)).astype(np.float32)
    want = np.concatenate([model.run(None, {feed: x[i:i + 1]})[0] for i in range(batch)])
    model.run(None, {feed: x})
    loop = model._last
    if not isinstance(loop, BatchLoop) or loop.chooser is None:
        raise SystemExit(f"{name}: batch {batch} does not split (threads={model.options.get('threads')})")
    loop.chooser.pick = lambda: 0  # (the split every time)
    runner = loop.base.twin or loop.base  # (what a thread's samples run on)
    native = runner._batch_desc(True)
    if native is None:
        raise SystemExit(f"{name}: no native batch job for this schedule")
    worker = team(2)._workers[0]
    clock = time.pthread_getcpuclockid(worker.ident)
    every = os.sched_getaffinity(0)
    cpus = native.cpus.copy()
    kept = [every]  # (the worker's affinity as the last "split, native" batch left it)
    outs = [np.empty((batch, *s), dt) for dt, s in loop._outputs]

    desc = team(2).desc
    start_trace(desc)

    def once(mode: str) -> dict:
        runner._desc = native if "native" in mode else False
        split = mode.startswith("split")
        native.cpus[:] = 0 if mode.endswith("stay") else cpus
        if split and "native" in mode:
            os.sched_setaffinity(worker.native_id, every if mode.endswith("stay") else kept[0])
        if split:
            def go() -> np.ndarray:
                return loop.run({feed: x})[0]
        elif "native" in mode:
            def go() -> np.ndarray:
                loop.ran[:] = [runner.batch_native({feed: x}, outs, None, True), 0]
                return outs[0]
        else:
            def go() -> np.ndarray:
                loop.ran[:] = [runner.run_samples({feed: x}, outs, itertools.count(), batch, True), 0]
                return outs[0]
        go()  # (untimed: the worker is spinning when the timed call starts, as in a stream of batches)
        c0, m0, w0, t0 = time.process_time(), time.thread_time(), time.clock_gettime(clock), time.perf_counter()
        n0 = time.clock_gettime_ns(time.CLOCK_MONOTONIC)  # (the trace's clock)
        y = go()
        n1 = time.clock_gettime_ns(time.CLOCK_MONOTONIC)
        t1, m1, w1 = time.perf_counter(), time.thread_time(), time.clock_gettime(clock)
        traced = trace(batch, n0, n1) if mode.startswith("split, native") else {}
        if mode == "split, native":
            kept[0] = os.sched_getaffinity(worker.native_id)
        time.sleep(0.003)
        cpu = time.process_time() - c0
        assert np.array_equal(y, want), mode  # bit-identical to one sample at a time
        wall = t1 - t0
        main_cpu, worker_cpu = m1 - m0, (w1 - w0 if split else 0.0)
        ran = loop.ran if split else [batch, 0]
        return {"wall_ms": wall * 1e3, "cpu_us_img": (main_cpu + worker_cpu) / batch * 1e6,
                "caller_cpu_ms": main_cpu * 1e3, "worker_cpu_ms": worker_cpu * 1e3,
                "worker_share": (batch - ran[0]) / batch if split else 0.0,
                "both_busy": min(main_cpu, worker_cpu) / wall if split else float("nan"),
                "off_cpu_ms": ((wall - main_cpu) + (wall - worker_cpu if split else 0.0)) * 1e3,
                "proc_cpu_us_img": cpu / batch * 1e6, **traced}

    got: dict[str, list[dict]] = {m: [] for m in MODES}
    try:
        for _ in range(runs):
            for mode in rng.sample(MODES, len(MODES)):
                got[mode].append(once(mode))
    finally:
        start_trace(desc, 0)
        native.cpus[:] = cpus
    runner._desc = native
    rows = []
    for mode, rs in got.items():
        row = {"model": name, "batch": batch, "mode": mode, "runs": len(rs)}
        for k in rs[0]:
            if k in TRACED:  # (lists per batch: the median over every batch's samples)
                pooled = [v for r in rs for v in r[k]]
                stat = statistics.mean if k == "same_cpu" else statistics.median  # (a share)
                row[k] = stat(pooled) if pooled else float("nan")
            else:
                row[k] = statistics.median(r[k] for r in rs)
        row["wall_min_ms"] = min(r["wall_ms"] for r in rs)
        rows.append(row)
    by = {r["mode"]: r for r in rows}
    for kind, split in (("python", "python"), ("native", "native"), ("native", "native, stay")):
        s, one = by[f"split, {split}"], by[f"1 thread, {kind}"]
        s["speedup"], s["speedup_best"] = one["wall_ms"] / s["wall_ms"], one["wall_min_ms"] / s["wall_min_ms"]
    return rows


#: the columns ``trace`` gives (per batch, lists of values)
TRACED = ("sample_us_alone", "sample_us_side_by_side", "worker_late_us", "caller_waits_us", "same_cpu",
          "before_us", "after_us", "end_gap_us")


def trace(batch: int, n0: int = 0, n1: int = 0) -> dict[str, list[float]]:
    """The last split native batch's trace (``read_trace`` of the team's description) as ``TRACED`` values;
    ``same_cpu``: per sample the worker ran, 1 if it began on a CPU the caller ran one of its samples on in
    that batch (the two threads taking turns on one CPU), else 0. With the call's start and end ``n0``, ``n1``
    (monotonic ns): ``before_us``, the Python from the call's start to the caller's first claim (``BatchLoop.run``
    to ``batch_rows``), ``after_us``, from the caller's end of waiting to the call's return, and ``end_gap_us``,
    how long the thread that ran out of samples first waited for the other's last one (both took part)."""
    threads, samples = read_trace(team(2).desc, 2, batch, cpus=True)
    alone, both = [], []
    rows = samples.tolist()
    for tid, begin, end, _, _ in rows:
        other = any(o[0] != tid and o[1] < end and o[2] > begin for o in rows)
        (both if other else alone).append((end - begin) / 1e3)
    late = [(threads[1, 0] - threads[0, 0]) / 1e3] if threads[1, 0] else []
    callers = {r[4] for r in rows if r[0] == 0}
    return {"sample_us_alone": alone, "sample_us_side_by_side": both, "worker_late_us": late,
            "caller_waits_us": [(threads[0, 2] - threads[0, 1]) / 1e3],
            "same_cpu": [float(r[4] in callers) for r in rows if r[0] != 0],
            "before_us": [(threads[0, 0] - n0) / 1e3] if n0 else [],
            "after_us": [(n1 - threads[0, 2]) / 1e3] if n1 else [],
            "end_gap_us": [abs(int(threads[1, 1]) - int(threads[0, 1])) / 1e3] if threads[1, 0] else []}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--models", default="vww_96_float,mobilenet_v2_224")
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--runs", type=int, default=60)
    ap.add_argument("--out", default=None, help="results folder (default benchmarks/results)")
    args = ap.parse_args(argv)
    rng = random.Random(0)
    load0 = os.getloadavg()
    rows = []
    for name in args.models.split(","):
        rows += probe(name, args.batch, args.runs, rng)
        for r in rows[-len(MODES):]:
            print(f"{name} b{args.batch} {r['mode']:18s} wall {r['wall_ms']:.3f} ms (min {r['wall_min_ms']:.3f}) "
                  f"CPU {r['cpu_us_img']:.0f} us/img, proc {r['proc_cpu_us_img']:.0f} us/img, worker share "
                  f"{r['worker_share']:.2f}, both busy {r['both_busy']:.2f}, off-CPU {r['off_cpu_ms']:.3f} ms"
                  + (f", speed-up {r['speedup']:.2f} (best {r['speedup_best']:.2f})" if "speedup" in r else "")
                  + f", caller/worker CPU {r['caller_cpu_ms']:.2f}/{r['worker_cpu_ms']:.2f} ms"
                  + ("".join(f", {c} {r[c]:.2f}" for c in TRACED) if TRACED[0] in r else ""),
                  flush=True)
    load1 = os.getloadavg()
    write_json("batch_split", {"batch": args.batch, "runs": args.runs, "load_before": load0, "load_after": load1,
                               "rows": rows}, args.out)
    cols = ["wall_ms", "wall_min_ms", "cpu_us_img", "proc_cpu_us_img", "caller_cpu_ms", "worker_cpu_ms",
            "worker_share", "both_busy", "off_cpu_ms"]
    write_markdown("batch_split", ["model", "mode", "wall ms", "wall min ms", "CPU us/img", "proc CPU us/img",
                                   "caller CPU ms", "worker CPU ms", "worker share", "both busy", "off-CPU ms",
                                   "speed-up", "speed-up of minima", "sample us alone", "sample us side by side",
                                   "worker late us", "caller waits us", "worker on the caller's CPU",
                                   "Python before us", "Python after us", "end gap us"],
                   [[r["model"], r["mode"], *[r[c] for c in cols], r.get("speedup", ""), r.get("speedup_best", ""),
                     *[r.get(c, "") for c in TRACED]] for r in rows],
                   title=f"Split batch {args.batch}: CPU time per image, samples per thread, time off the CPU",
                   notes=[f"Medians of {args.runs} batches per mode, the modes interleaved in random order in one "
                          "process (see the script's docstring for each column). Load average "
                          f"{load0[0]:.1f} before, {load1[0]:.1f} after; this process's autogroup: {autogroup()}.",
                          "Command: python benchmarks/batch_split.py " + " ".join(argv or sys.argv[1:])],
                   out_dir=args.out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
