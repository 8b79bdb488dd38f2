"""threads=2 against threads=1 under a bursty load, in one process (issue 18: 2 threads never > 3% slower).

    PYTHONPATH=. python benchmarks/loaded_threads.py [MODELS] [--forms F,...] [--rounds 30] [--calls 3]
                     [--load 0,3] [--burst-ms 5,50] [--duty 0.3,0.7] [--same-session] [--out DIR] [--tag T]

Per model and load (``--load``: numbers of ``bursty_load.BurstyLoad`` processes, each phase its own block of
rounds, phases alternated so each sees the same box): the 1-thread program ("1T"), the 2-thread program as
compiled by default (its chooser between the team and the caller alone: "2T"), the same always on the team
("2T team") and always on the caller alone ("2T alone"); each round runs every form ``--calls`` times in a random
order. Per form: median, mean and minimum wall time (ms), the ratio of medians to 1T, the
process's CPU time per call (both threads, ms; a wait that spins burns CPU) and the caller's CPU time over its
wall time; for a form with a chooser, the share of its timed runs on the team; for "2T team", from the split
job's trace (``batchrows.trace_split``): how long the worker was inside each run but not on a CPU (its wall time
in the job minus its CPU time, median and 90th percentile us; its sleeps in step waits count too) and the share
of runs it joined. Outputs are checked bit-identical to 1T. Writes
``benchmarks/results/loaded_threads[_TAG].{json,md}``.
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

from benchmarks.bursty_load import BurstyLoad, _pair  # noqa: E402
from benchmarks.harness import fmt, machine_info, write_json, write_markdown  # noqa: E402

#: every form: its threads and whether its chooser runs (else always the team, or "alone": the caller alone)
FORMS = {"1T": (1, True), "2T": (2, True), "2T team": (2, False), "2T alone": (2, "alone")}


def _pct(xs: list[float], q: float) -> float:
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(q * len(xs)))] if xs else float("nan")


def measure_model(name: str, forms: list[str], loads: list[int], rounds: int, calls: int,
                  burst_ms: tuple[float, float], duty: tuple[float, float], same_session: bool) -> list[dict[str, Any]]:
    import numpy as np

    import cnnjit
    from benchmarks.ootb import _ootb_model
    from cnnjit.runtime.batchrows import read_split_trace, trace_split

    model, feeds = _ootb_model(name)
    shapes = {k: tuple(v.shape) for k, v in feeds.items()}
    ms = {}
    for k in ["1T", *forms]:
        threads, chooser = FORMS[k]
        ms[k] = m = cnnjit.compile(model, input_shapes=shapes, threads=threads)
        if threads == 1:
            continue
        prog = m._default_spec().program
        if not hasattr(prog.run, "on_team"):
            print(f"{name}: its 2-thread program is not a parallel schedule (nothing split): skipped")
            return []
        if chooser is False:
            prog.run.chooser = None
        elif chooser == "alone":
            prog.run = prog.run.alone()
    team_run = ms["2T team"]._default_spec().program.run if "2T team" in ms else None
    picks: dict[str, list[int]] = {}  # per form with a chooser: the way of each recorded run (0: team)
    for k, m in ms.items():
        ch = getattr(m._default_spec().program.run, "chooser", None)
        if ch is not None:
            picks[k] = []
            ch.record = (lambda rec, log: lambda w, t, e=None: (log.append(w), rec(w, t, e))[1])(ch.record, picks[k])
    ref = ms["1T"].run(None, feeds)
    for k, m in ms.items():
        got = m.run(None, feeds)
        assert all(np.array_equal(a, b) for a, b in zip(got, ref)), f"{name} {k}: not bit-identical to 1T"
    for _ in range(3):
        for m in ms.values():
            m.run(None, feeds)
    desc = None
    rows = []
    rng = random.Random(0)
    names = list(ms)
    ways: dict[int, dict[str, list[int]]] = {n: {} for n in loads}  # per chooser form: the way of each timed run
    times: dict[int, dict[str, list[float]]] = {n: {k: [] for k in names} for n in loads}
    away: dict[int, list[float]] = {n: [] for n in loads}  # worker inside a team run, off the CPU (us)
    joined: dict[int, list[int]] = {n: [] for n in loads}
    cpu: dict[int, dict[str, list[float]]] = {n: {k: [] for k in names} for n in loads}  # process CPU ms
    share: dict[int, dict[str, list[float]]] = {n: {k: [] for k in names} for n in loads}  # caller CPU / wall
    per_phase = max(1, rounds // 3)
    done = 0
    while done < rounds:
        n_r = min(per_phase, rounds - done)
        for n in rng.sample(loads, len(loads)):
            with BurstyLoad(n, burst_ms, duty, seed=done, same_session=same_session):
                time.sleep(0.2 if n else 0.0)
                for _ in range(n_r):
                    for k in rng.sample(names, len(names)):
                        m = ms[k]
                        for _ in range(calls):
                            if k == "2T team" and desc is None and team_run is not None:
                                descs = [v for v in team_run._split.values() if v is not None]
                                if descs:
                                    desc = descs[0][0]
                                    trace_split(desc)
                            before = read_split_trace(desc)[0] if (k == "2T team" and desc is not None) else 0
                            p0, c0 = time.process_time_ns(), time.thread_time_ns()
                            t0 = time.perf_counter_ns()
                            npick = len(picks.get(k, ()))
                            m.run(None, feeds)
                            t1 = time.perf_counter_ns()
                            if k in picks and len(picks[k]) > npick:
                                ways[n].setdefault(k, []).append(picks[k][-1])
                            c1, p1 = time.thread_time_ns(), time.process_time_ns()
                            times[n][k].append((t1 - t0) / 1e6)
                            cpu[n][k].append((p1 - p0) / 1e6)
                            share[n][k].append((c1 - c0) / (t1 - t0))
                            if k == "2T team" and desc is not None:
                                ep, w0, w1, wcpu, _ = read_split_trace(desc)
                                joined[n].append(int(ep != before))
                                if ep != before:
                                    away[n].append(max(0.0, (w1 - w0 - wcpu) / 1e3))
        done += n_r
    for n in loads:
        t1 = statistics.median(times[n]["1T"])
        for k in names:
            ts = times[n][k]
            row: dict[str, Any] = {"model": name, "load procs": n, "form": k, "median ms": statistics.median(ts),
                                   "mean ms": statistics.fmean(ts), "min ms": min(ts),
                                   "ratio to 1T": statistics.median(ts) / t1, "runs": len(ts),
                                   "CPU ms": statistics.median(cpu[n][k]),
                                   "caller CPU/wall": statistics.median(share[n][k])}
            if ways[n].get(k):
                row["on team"] = 1.0 - sum(ways[n][k]) / len(ways[n][k])
            if k == "2T team":
                row["worker joined"] = sum(joined[n]) / max(1, len(joined[n]))
                row["worker off-CPU med us"] = statistics.median(away[n]) if away[n] else float("nan")
                row["worker off-CPU p90 us"] = _pct(away[n], 0.9)
            rows.append(row)
    return rows


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("models", nargs="?", default="ppocr_v4_rec,light_squeezenet")
    ap.add_argument("--forms", default="2T,2T team,2T alone",
                    help="besides 1T: " + ", ".join(FORMS))
    ap.add_argument("--rounds", type=int, default=30)
    ap.add_argument("--calls", type=int, default=3)
    ap.add_argument("--load", default="0,3", help="numbers of bursty load processes, one phase each")
    ap.add_argument("--burst-ms", type=_pair, default=(5.0, 50.0))
    ap.add_argument("--duty", type=_pair, default=(0.3, 0.7))
    ap.add_argument("--same-session", action="store_true")
    ap.add_argument("--out", default=None)
    ap.add_argument("--tag", default="", help="results as loaded_threads_<tag>.{json,md}")
    args = ap.parse_args(argv)
    loads = [int(x) for x in args.load.split(",")]
    rows: list[dict[str, Any]] = []
    for name in args.models.split(","):
        got = measure_model(name, args.forms.split(","), loads, args.rounds, args.calls, args.burst_ms, args.duty,
                            args.same_session)
        rows += got
        for r in got:
            print("  ".join(f"{k}={fmt(v)}" for k, v in r.items()), flush=True)
    cols = ["model", "load procs", "form", "median ms", "mean ms", "min ms", "ratio to 1T", "runs", "CPU ms",
            "caller CPU/wall", "on team", "worker joined", "worker off-CPU med us", "worker off-CPU p90 us"]
    name = "loaded_threads" + (f"_{args.tag}" if args.tag else "")
    write_json(name, {"args": vars(args), "machine": machine_info(), "rows": rows}, args.out)
    write_markdown(name, cols, [[r.get(c, "") for c in cols] for r in rows], out_dir=args.out,
                   title="threads=2 vs threads=1 under bursty load, one process",
                   notes=[f"`python benchmarks/loaded_threads.py {' '.join(argv or sys.argv[1:])}`",
                          f"bursty load: bursts {args.burst_ms} ms, duty {args.duty}, "
                          f"{'same session' if args.same_session else 'own sessions'}",
                          f"load average {os.getloadavg()[0]:.1f} when written (other processes on the machine)"])
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
