"""Small models at 2 threads as compiled by default (issue 18): the split schedule with its serial twin and
chooser (``runtime/adaptive.py``) against the 1-thread program, in one process.

    PYTHONPATH=. python benchmarks/small_threads.py [MODELS] [--threshold 250] [--rounds 30] [--calls 20]

Per model, compiled with ``threads.MIN_PARALLEL_TOTAL_US`` at ``--threshold`` (the models it splits get their
serial twin): "1T" (``threads=1``), "default" (``threads=2``: the chooser picks team or serial twin call by
call), "serial" (the same specialisation with the chooser held on the twin) and "team" (held on the split
schedule). Each round every form gets a turn in a random order: one call apart, then ``--calls`` timed calls
back to back, then ``--pause`` seconds. Per form: median, mean and minimum (ms) and the median over the 1-thread
one; for "default", which way the chooser took last. Outputs are checked bit-identical to 1 thread. On a shared
machine run it also at real-time priority (``chrt -f 10``: what a quiet machine sees) and state the load.
Writes ``benchmarks/results/small_threads.{json,md}``.
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

#: the forms, each a chooser held on one way (None: as compiled)
FORMS = {"1T": None, "default": None, "serial": 1, "team": 0}


def measure_model(name: str, threshold: float, rounds: int, calls: int, pause: float) -> list[dict[str, Any]]:
    import numpy as np

    import cnnjit
    from benchmarks.ootb import _ootb_model
    from cnnjit.compiler.codegen import threads

    model, feeds = _ootb_model(name)
    shapes = {k: tuple(v.shape) for k, v in feeds.items()}
    saved = threads.MIN_PARALLEL_TOTAL_US
    models = {"1T": cnnjit.compile(model, input_shapes=shapes, threads=1)}
    try:
        threads.MIN_PARALLEL_TOTAL_US = threshold
        for form in list(FORMS)[1:]:
            models[form] = cnnjit.compile(model, input_shapes=shapes, threads=2)
    finally:
        threads.MIN_PARALLEL_TOTAL_US = saved
    chooser = models["default"]._default_spec().chooser
    if chooser is None:
        print(f"{name}: not split at threshold {threshold} us (no serial twin): only 1T and default timed")
        models = {k: models[k] for k in ("1T", "default")}
    for form, way in FORMS.items():
        if form in models and way is not None:
            held = models[form]._default_spec().chooser
            held.pick = held.upcoming = (lambda w: lambda: w)(way)
    ref = models["1T"].run(None, feeds)
    for form, m in models.items():
        for _ in range(30):
            got = m.run(None, feeds)
        if not all(np.array_equal(a, b) for a, b in zip(got, ref)):
            raise AssertionError(f"{name}: {form} differs from 1 thread")
    times: dict[str, list[int]] = {k: [] for k in models}
    for _ in range(rounds):
        for form in random.sample(list(models), len(models)):
            m = models[form]
            m.run(None, feeds)  # (apart: the previous form's worker settles)
            for _ in range(calls):
                t0 = time.perf_counter_ns()
                m.run(None, feeds)
                times[form].append(time.perf_counter_ns() - t0)
            time.sleep(pause)
    one = statistics.median(times["1T"])
    load = os.getloadavg()[0]
    rows = []
    for form, ts in times.items():
        ts.sort()
        rows.append({"model": name, "form": form, "median_ms": ts[len(ts) // 2] / 1e6,
                     "mean_ms": sum(ts) / len(ts) / 1e6, "min_ms": ts[0] / 1e6, "over_1t": ts[len(ts) // 2] / one,
                     "chooser_best": chooser.best if form == "default" and chooser is not None else None,
                     "threshold_us": threshold, "load": load})
    return rows


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("models", nargs="?", default="resnet8")
    ap.add_argument("--threshold", type=float, default=None,
                    help="threads.MIN_PARALLEL_TOTAL_US for the 2-thread forms (default: the compiler's)")
    ap.add_argument("--rounds", type=int, default=30)
    ap.add_argument("--calls", type=int, default=20)
    ap.add_argument("--pause", type=float, default=0.002)
    ap.add_argument("--out", default=None)
    args = ap.parse_args(argv)
    from cnnjit.compiler.codegen import threads

    threshold = threads.MIN_PARALLEL_TOTAL_US if args.threshold is None else args.threshold
    try:
        prio = os.sched_getscheduler(0) in (os.SCHED_FIFO, os.SCHED_RR)
    except (AttributeError, OSError):
        prio = False
    rows = []
    for name in [s for s in args.models.split(",") if s]:
        got = measure_model(name, threshold, args.rounds, args.calls, args.pause)
        for r in got:
            best = "" if r["chooser_best"] is None else f"  (chooser: {('team', 'serial')[r['chooser_best']]})"
            print(f"{r['model']:16s} {r['form']:8s} median {r['median_ms']:.4f} ms  mean {r['mean_ms']:.4f}  "
                  f"min {r['min_ms']:.4f}  /1T {r['over_1t']:.3f}{best}  (load {r['load']:.1f})", flush=True)
        rows += [{**r, "realtime": prio} for r in got]
    info = machine_info()
    write_json("small_threads", {"machine": info, "argv": sys.argv[1:] if argv is None else argv, "rows": rows},
               args.out)
    headers = ["model", "form", "median ms", "mean ms", "min ms", "median / 1T", "chooser", "threshold us",
               "real-time", "load"]
    table = [[r["model"], r["form"], fmt(r["median_ms"], 4), fmt(r["mean_ms"], 4), fmt(r["min_ms"], 4),
              fmt(r["over_1t"], 3), "" if r["chooser_best"] is None else ("team", "serial")[r["chooser_best"]],
              fmt(r["threshold_us"], 0), "yes" if r["realtime"] else "no", f"{r['load']:.1f}"] for r in rows]
    notes = [f"Command: `PYTHONPATH=. python benchmarks/small_threads.py {' '.join(sys.argv[1:])}`.",
             "One process, forms interleaved in a random order per round; a turn = one call apart, then the timed "
             "calls back to back; load = 1-minute load average on 2 CPUs (other processes) after the model's rounds."]
    write_markdown("small_threads", headers, table, notes=notes, out_dir=args.out, machine=info,
                   title="Small models at 2 threads by default: split with serial twin against 1 thread")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
