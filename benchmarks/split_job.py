"""How a 2-thread team run reaches its worker (issue 18, small models): 1 thread, 2 threads whose worker
returns to Python for every run (the path before split jobs: it takes the GIL and calls the schedule through
numba's dispatcher), and 2 threads as built (a split job: the worker runs its share inside its idle wait,
``runtime/team.py: Team.run_split``), timed interleaved in one process, in random order per round.

    PYTHONPATH=. python benchmarks/split_job.py [MODELS] [--runs 300] [--warmup 50] [--out DIR]

Both 2-thread forms are the same compiled split schedule (every layer the thresholds let split, plus those of
a small model: ``threads.MIN_PARALLEL_TOTAL_US`` at 0), run on the team every time (no chooser, no serial
twin: the ratio is the team's); the Python path exists only here (the split job's description withheld), not
as a switch of the runtime. Per form: median, minimum and 10th percentile (ms), and for the 2-thread forms the
worker's share of the parts claimed (from the step counters after each run) and how often it took none. The
outputs are checked bit-identical to 1 thread. On a machine whose other processes take the cores, the worker
is often absent whatever the path: read the minima and the load. Writes ``benchmarks/results/split_job.{json,md}``.

MODELS: comma-separated ``benchmarks.corpus`` names (default: resnet8,mlperf_vww_96_float).
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

FORMS = ("1T", "2T worker from Python", "2T split job")


def worker_share(run: Any) -> float:
    """The share of the last run's parts that the workers claimed (from the back of each step's counter)."""
    from cnnjit.runtime.team import BACK, LINE, MASK

    mine = total = 0
    for s in range(run.steps):
        k = int(run.state[LINE * (s + 1)]) & MASK
        mine += k // BACK
        total += k % BACK + k // BACK
    return mine / max(total, 1)


def measure_model(name: str, runs: int, warmup: int) -> dict[str, Any] | None:
    import numpy as np

    import cnnjit
    from benchmarks.ootb import _ootb_model
    from cnnjit.compiler.codegen import threads

    model, feeds = _ootb_model(name)
    shapes = {k: tuple(v.shape) for k, v in feeds.items()}
    one = cnnjit.compile(model, input_shapes=shapes, threads=1)
    saved = threads.MIN_PARALLEL_TOTAL_US, threads.ADAPTIVE_BELOW_US
    threads.MIN_PARALLEL_TOTAL_US, threads.ADAPTIVE_BELOW_US = 0.0, 0.0  # split, no serial twin
    try:
        forms = {FORMS[0]: one, FORMS[1]: cnnjit.compile(model, input_shapes=shapes, threads=2),
                 FORMS[2]: cnnjit.compile(model, input_shapes=shapes, threads=2)}
    finally:
        threads.MIN_PARALLEL_TOTAL_US, threads.ADAPTIVE_BELOW_US = saved
    runs_of = {k: m._default_spec().program.run for k, m in forms.items()}
    if not hasattr(runs_of[FORMS[2]], "steps"):
        print(f"{name}: no layer large enough to split (threads.MIN_PARALLEL_US): skipped")
        return None
    for k in FORMS[1:]:
        runs_of[k].chooser = None  # always the team
    runs_of[FORMS[1]]._split_desc = lambda buffers: None  # the worker returns to Python for every run
    ref = one.run(None, feeds)
    for k, m in forms.items():
        if not all(np.array_equal(a, b) for a, b in zip(m.run(None, feeds), ref)):
            raise AssertionError(f"{name}: {k} differs from 1 thread")
    for _ in range(warmup):
        for m in forms.values():
            m.run(None, feeds)
    times: dict[str, list[float]] = {k: [] for k in forms}
    shares: dict[str, list[float]] = {k: [] for k in FORMS[1:]}
    order = list(forms)
    for _ in range(runs):
        random.shuffle(order)
        for k in order:
            t0 = time.perf_counter()
            forms[k].run(None, feeds)
            times[k].append(time.perf_counter() - t0)
            if k in shares:
                shares[k].append(worker_share(runs_of[k]))
    row: dict[str, Any] = {"model": name, "steps": runs_of[FORMS[2]].steps, "load": os.getloadavg()}
    for k, ts in times.items():
        ts.sort()
        row[k] = {"median_ms": statistics.median(ts) * 1e3, "min_ms": ts[0] * 1e3,
                  "p10_ms": ts[len(ts) // 10] * 1e3}
        if k in shares:
            row[k]["worker_share"] = statistics.fmean(shares[k])
            row[k]["worker_absent"] = sum(s == 0 for s in shares[k]) / len(shares[k])
    return row


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("models", nargs="?", default="resnet8,mlperf_vww_96_float")
    ap.add_argument("--runs", type=int, default=300)
    ap.add_argument("--warmup", type=int, default=50)
    ap.add_argument("--out", default=None)
    args = ap.parse_args(argv)
    rows = []
    for name in [s for s in args.models.split(",") if s]:
        row = measure_model(name, args.runs, args.warmup)
        if row is None:
            continue
        rows.append(row)
        print(f"{name} ({row['steps']} steps, load {row['load'][0]:.1f}):")
        for k in FORMS:
            r = row[k]
            extra = (f", worker share {r['worker_share']:.2f}, absent in {100 * r['worker_absent']:.0f}% of runs"
                     if "worker_share" in r else "")
            print(f"  {k:22s} median {r['median_ms']:.4f} ms, min {r['min_ms']:.4f}, p10 {r['p10_ms']:.4f}{extra}")
    info = machine_info()
    write_json("split_job", {"machine": info, "argv": sys.argv[1:] if argv is None else argv, "rows": rows},
               args.out)
    headers = ["model", "form", "median ms", "min ms", "p10 ms", "worker share", "worker absent", "load"]
    table = [[r["model"], k, fmt(r[k]["median_ms"], 4), fmt(r[k]["min_ms"], 4), fmt(r[k]["p10_ms"], 4),
              fmt(r[k].get("worker_share", "")), fmt(100 * r[k]["worker_absent"], 0) + "%" if "worker_absent" in
              r[k] else "", f"{r['load'][0]:.1f}"] for r in rows for k in FORMS]
    write_markdown("split_job", headers, table, title="A 2-thread team run's worker: from Python or a split job",
                   notes=[f"Command: `PYTHONPATH=. python benchmarks/split_job.py {' '.join(sys.argv[1:])}`.",
                          "Interleaved in one process, random order per round; 2-thread forms always on the "
                          "team (no chooser); load = 1-minute load average on 2 CPUs after the model's runs."],
                   out_dir=args.out, machine=info)
    return 0


if __name__ == "__main__":
    sys.exit(main())
