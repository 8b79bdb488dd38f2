"""How long a team's idle worker should spin after a job (issue 18, small models called back to back): a parallel
schedule's calls in blocks, the worker's spin window (``team.IDLE_SPIN_NS``, the team's live word ``IDLE_SPIN``)
set per block, against 1 thread, interleaved in one process in random order per round.

    PYTHONPATH=. python benchmarks/idle_spin.py [MODELS] [--spins 100,300,1000] [--gaps 0,200] [--rounds 60]
                                                [--calls 5] [--threshold 100] [--out DIR]

Per model: the 1-thread program; the 2-thread program split as small models would be at ``--threshold`` us
(``threads.MIN_PARALLEL_TOTAL_US``) always on the team ("team"), as compiled by default at that threshold (its
serial twin and chooser: "default"), and without the serial twin ("no twin": the parallel schedule's own chooser
runs it on the team or on the caller alone, ``team.ParallelRun``; one compile). A block is one call apart (after a
20 ms pause: the worker asleep), then ``--calls`` timed calls with ``--gap`` us of busy Python between them (a
caller's own work between calls). Per form and gap: median, minimum and 10th percentile of the timed calls (ms),
the process's CPU time per call (both threads: a spin burns CPU here), and how often the worker was asleep when a
call began; for "team", from the split job's trace (``batchrows.trace_split``): the share of runs the worker took
part in, of those how many found it spinning, and when it began (median us after the call). Outputs are checked
bit-identical to 1 thread. Writes ``benchmarks/results/idle_spin.{json,md}``.
"""

from __future__ import annotations

import argparse
import os
import random
import statistics
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.harness import fmt, machine_info, write_json, write_markdown  # noqa: E402


def _busy(us: float) -> None:
    end = time.perf_counter() + us * 1e-6
    while time.perf_counter() < end:
        pass


def measure_model(name: str, spins: list[int], gaps: list[float], rounds: int, calls: int,
                  threshold: float) -> list[dict[str, Any]]:
    import numpy as np

    import cnnjit
    from benchmarks.ootb import _ootb_model
    from cnnjit.compiler.codegen import threads
    from cnnjit.runtime import team as team_mod
    from cnnjit.runtime.batchrows import read_split_trace, trace_split

    model, feeds = _ootb_model(name)
    shapes = {k: tuple(v.shape) for k, v in feeds.items()}
    one = cnnjit.compile(model, input_shapes=shapes, threads=1)
    saved = threads.MIN_PARALLEL_TOTAL_US, threads.ADAPTIVE_BELOW_US
    try:
        threads.MIN_PARALLEL_TOTAL_US = threshold
        default = cnnjit.compile(model, input_shapes=shapes, threads=2)
        threads.ADAPTIVE_BELOW_US = 0.0
        team = cnnjit.compile(model, input_shapes=shapes, threads=2)
        solo = cnnjit.compile(model, input_shapes=shapes, threads=2)
    finally:
        threads.MIN_PARALLEL_TOTAL_US, threads.ADAPTIVE_BELOW_US = saved
    run = team._default_spec().program.run
    if not hasattr(run, "steps"):
        print(f"{name}: nothing split at threshold {threshold} us: skipped")
        return []
    run.chooser = None  # always the team
    traced = []  # (the team form's split-job description, traced: when its worker ran each run)
    ref = one.run(None, feeds)
    models = {"1T": one, "team": team, "default": default, "no twin": solo}
    for k, m in models.items():
        if not all(np.array_equal(a, b) for a, b in zip(m.run(None, feeds), ref)):
            raise AssertionError(f"{name}: {k} differs from 1 thread")
    forms = [("1T", None)] + [(k, s) for k in ("team", "default", "no twin") for s in spins]
    t = team_mod._team[0]
    words = t.words
    for _ in range(20):
        for m in models.values():
            m.run(None, feeds)
    traced = [v[0] for v in run._split.values() if v is not None]
    for d in traced:
        trace_split(d)
    rows = []
    for gap in gaps:
        times: dict[tuple, list[int]] = {f: [] for f in forms}
        cpu: dict[tuple, list[int]] = {f: [] for f in forms}
        asleep = {f: 0 for f in forms}
        starts: dict[tuple, dict[int, int]] = {f: {} for f in forms}  # team runs: epoch -> call start (ns)
        worker: dict[tuple, dict[int, tuple]] = {f: {} for f in forms}  # epoch -> the worker's trace
        for _ in range(rounds):
            for f in random.sample(forms, len(forms)):
                words[team_mod.IDLE_SPIN] = team_mod.IDLE_SPIN_NS if f[1] is None else f[1] * 1000
                m = models[f[0]]
                time.sleep(0.02)
                m.run(None, feeds)  # (the call apart: the worker was asleep)
                c0 = time.process_time_ns()
                for _ in range(calls):
                    _busy(gap)
                    asleep[f] += int(words[team_mod.IDLE_SLEEPERS] > 0)
                    t0, w0 = time.perf_counter_ns(), time.monotonic_ns()
                    m.run(None, feeds)
                    times[f].append(time.perf_counter_ns() - t0)
                    if f[0] == "team":
                        starts[f][run.epoch] = w0
                        for d in traced:
                            worker[f].setdefault(read_split_trace(d)[0], read_split_trace(d)[1:])
                cpu[f].append((time.process_time_ns() - c0) // calls - int(gap * 1000))
                if f[0] == "team":
                    time.sleep(0.002)  # (a late worker's trace)
                    for d in traced:
                        worker[f].setdefault(read_split_trace(d)[0], read_split_trace(d)[1:])
        words[team_mod.IDLE_SPIN] = team_mod.IDLE_SPIN_NS
        load = os.getloadavg()[0]
        for f in forms:
            ts = sorted(times[f])
            joined = [e for e in starts[f] if e in worker[f]]
            lags = sorted((worker[f][e][0] - starts[f][e]) / 1e3 for e in joined)
            trace = {"worker_joined": len(joined) / max(len(starts[f]), 1),
                     "worker_lag_us": statistics.median(lags) if lags else None,
                     "worker_lag_min_us": lags[0] if lags else None,
                     "worker_found_spinning": sum(worker[f][e][3] == 0 for e in joined) / max(len(joined), 1),
                     "worker_cpu_us": statistics.median(worker[f][e][2] / 1e3 for e in joined) if joined else None
                     } if starts[f] else {}
            rows.append({**trace, "model": name, "form": f[0], "spin_us": f[1], "gap_us": gap,
                         "median_ms": statistics.median(ts) / 1e6, "min_ms": ts[0] / 1e6,
                         "p10_ms": ts[len(ts) // 10] / 1e6, "cpu_ms_per_call": statistics.median(cpu[f]) / 1e6,
                         "worker_asleep": asleep[f] / len(ts), "load": load})
    return rows


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("models", nargs="?", default="resnet8")
    ap.add_argument("--spins", default="100,300,1000", help="idle spin windows to compare (us)")
    ap.add_argument("--gaps", default="0,200", help="busy Python between the calls of a block (us)")
    ap.add_argument("--rounds", type=int, default=60)
    ap.add_argument("--calls", type=int, default=5)
    ap.add_argument("--threshold", type=float, default=100.0, help="threads.MIN_PARALLEL_TOTAL_US for the 2T forms")
    ap.add_argument("--out", default=None)
    args = ap.parse_args(argv)
    spins = [int(s) for s in args.spins.split(",") if s]
    gaps = [float(g) for g in args.gaps.split(",") if g]
    rows = []
    for name in [s for s in args.models.split(",") if s]:
        got = measure_model(name, spins, gaps, args.rounds, args.calls, args.threshold)
        for r in got:
            print(f"{r['model']:12s} gap {r['gap_us']:5.0f} us  {r['form']:8s} spin {str(r['spin_us']):>5s} us: "
                  f"median {r['median_ms']:.4f} ms  min {r['min_ms']:.4f}  p10 {r['p10_ms']:.4f}  "
                  f"cpu/call {r['cpu_ms_per_call']:.4f} ms  worker asleep {100 * r['worker_asleep']:.0f}%  "
                  f"(load {r['load']:.1f})", flush=True)
            if "worker_joined" in r and r["worker_lag_us"] is not None:
                print(f"{'':12s}   worker joined {100 * r['worker_joined']:.0f}% of runs, found spinning in "
                      f"{100 * r['worker_found_spinning']:.0f}% of those, began {r['worker_lag_us']:.1f} us after "
                      f"the call (min {r['worker_lag_min_us']:.1f}), CPU {r['worker_cpu_us']:.1f} us", flush=True)
        rows += got
    info = machine_info()
    write_json("idle_spin", {"machine": info, "argv": sys.argv[1:] if argv is None else argv, "rows": rows}, args.out)
    headers = ["model", "gap us", "form", "spin us", "median ms", "min ms", "p10 ms", "CPU ms / call", "worker asleep",
               "worker joined", "found spinning", "worker start us", "load"]

    def pct(r: dict[str, Any], k: str) -> str:
        return f"{100 * r[k]:.0f}%" if r.get(k) is not None else ""

    table = [[r["model"], fmt(r["gap_us"], 0), r["form"], "" if r["spin_us"] is None else str(r["spin_us"]),
              fmt(r["median_ms"], 4), fmt(r["min_ms"], 4), fmt(r["p10_ms"], 4), fmt(r["cpu_ms_per_call"], 4),
              pct(r, "worker_asleep"), pct(r, "worker_joined"), pct(r, "worker_found_spinning"),
              fmt(r["worker_lag_us"], 1) if r.get("worker_lag_us") is not None else "", f"{r['load']:.1f}"]
             for r in rows]
    how = ("Interleaved in one process, random order per round; a block = one call after a 20 ms pause, then the "
           "timed calls with the gap's busy Python before each; CPU per call = process CPU (all threads) over the "
           "timed calls, the gap subtracted; load = 1-minute load average on 2 CPUs after the gap's rounds.")
    command = f"Command: `PYTHONPATH=. python benchmarks/idle_spin.py {' '.join(sys.argv[1:])}`."
    write_markdown("idle_spin", headers, table, notes=[command, how], out_dir=args.out, machine=info,
                   title="An idle team worker's spin window, calls back to back")
    return 0


if __name__ == "__main__":
    sys.exit(main())
