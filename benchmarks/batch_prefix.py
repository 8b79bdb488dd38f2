"""The Python before a split batch's first sample, phase by phase, with the rows' addresses read two ways
(issue 18): ``batchrows.address`` (ctypes' buffer protocol) against ``ndarray.ctypes.data``, alternating
batch by batch in one process.

    python benchmarks/batch_prefix.py [--model vww_96_float] [--batch 8] [--runs 300]

A stream of split native batches (``BatchLoop`` held on the split; no pause between batches, as a loop over a
data set calls it). Per batch, from the call's start (monotonic us): the description's fill begins
(``Desc.fill``) and ends, ``parallel.run_batch`` is called, the caller's first claim (``batch_rows``, from
the batch trace), the caller's end of waiting and the call's return. Medians and minima per way. A machine
whose other processes hold the CPUs delays the worker and the caller by milliseconds: run it in a session of
its own whose autogroup outweighs the others (``batch_split.py``'s docstring). Results:
``benchmarks/results/batch_prefix.{json,md}``.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402

import cnnjit  # noqa: E402
from benchmarks.batch import models  # noqa: E402
from benchmarks.harness import write_json, write_markdown  # noqa: E402
from cnnjit.runtime import batchrows  # noqa: E402
from cnnjit.runtime import model as runtime_model  # noqa: E402
from cnnjit.runtime.batchloop import BatchLoop  # noqa: E402
from cnnjit.runtime.batchrows import read_trace, start_trace  # noqa: E402
from cnnjit.runtime.team import team  # noqa: E402

PHASES = ("fill_in", "fill_out", "run_batch", "first_claim", "caller_done", "end")
WAYS = {"ctypes.data": lambda a: a.ctypes.data, "address": batchrows.address}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", default="vww_96_float")
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--runs", type=int, default=300)
    ap.add_argument("--out", default=None)
    args = ap.parse_args(argv)
    proto, sample = models([args.model])[args.model]
    feed = proto.graph.input[0].name
    model = cnnjit.compile(proto)
    model.run(None, {feed: np.zeros((1, *sample), np.float32)})
    x = np.random.default_rng(0).standard_normal((args.batch, *sample)).astype(np.float32)
    want = np.concatenate([model.run(None, {feed: x[i:i + 1]})[0] for i in range(args.batch)])
    model.run(None, {feed: x})
    loop = model._last
    if not isinstance(loop, BatchLoop) or loop.chooser is None:
        raise SystemExit(f"{args.model}: batch {args.batch} does not split")
    loop.chooser.pick = lambda: 0
    clock = time.perf_counter_ns  # (CLOCK_MONOTONIC, the trace's clock)
    stamps: dict[str, int] = {}
    fill = batchrows.Desc.fill

    def timed_fill(self, *a, **k):
        stamps["fill_in"] = clock()
        fill(self, *a, **k)
        stamps["fill_out"] = clock()

    batchrows.Desc.fill = timed_fill
    runtime_model._native_batches()
    desc_cls, rows_fn, stopped, run_batch = runtime_model._batches[0]

    def timed_run_batch(*a):
        stamps["run_batch"] = clock()
        return run_batch(*a)

    runtime_model._batches[0] = (desc_cls, rows_fn, stopped, timed_run_batch)
    desc = team(2).desc
    start_trace(desc)
    got: dict[str, list[list[float]]] = {w: [] for w in WAYS}
    names = list(WAYS)
    try:
        for r in range(2 * args.runs):
            way = names[r % 2]
            batchrows.address = WAYS[way]
            stamps.clear()
            t0 = clock()
            y = loop.run({feed: x})[0]
            t1 = clock()
            if not loop.split:
                continue
            threads, _ = read_trace(desc, 2, args.batch)
            stamps.update(first_claim=int(threads[0, 0]), caller_done=int(threads[0, 2]), end=t1)
            got[way].append([(stamps[p] - t0) / 1e3 for p in PHASES])
            assert np.array_equal(y, want), way
    finally:
        batchrows.address = WAYS["address"]
        batchrows.Desc.fill = fill
        runtime_model._batches[0] = (desc_cls, rows_fn, stopped, run_batch)
        start_trace(desc, 0)
    rows, out = [], {}
    for way, vals in got.items():
        a = np.array(vals)
        med, mins = np.median(a, axis=0), a.min(axis=0)
        out[way] = {"batches": len(a), "median_us": dict(zip(PHASES, med)), "min_us": dict(zip(PHASES, mins))}
        rows.append([way, len(a), *[f"{m:.1f} ({n:.1f})" for m, n in zip(med, mins)]])
        print(f"{way:12s} {len(a)} batches: " + ", ".join(f"{p} {m:.1f} (min {n:.1f})"
                                                       for p, m, n in zip(PHASES, med, mins)), flush=True)
    load = os.getloadavg()
    try:
        group = Path("/proc/self/autogroup").read_text().strip()
    except OSError:
        group = "unknown"
    command = "python benchmarks/batch_prefix.py " + " ".join(argv if argv is not None else sys.argv[1:])
    notes = ["Microseconds from the call's start, median (minimum), the two ways alternating batch by batch in one "
             f"process; load average {load[0]:.1f} / {load[1]:.1f}; this process's autogroup: {group}.",
             f"Command: {command}"]
    write_json("batch_prefix", {"model": args.model, "batch": args.batch, "runs": args.runs, "ways": out,
                                "load": load, "command": command}, args.out)
    write_markdown("batch_prefix", ["rows' addresses", "batches", *[f"{p} us" for p in PHASES]], rows,
                   title=f"{args.model} batch {args.batch}, split: the Python before the first sample", notes=notes,
                   out_dir=args.out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
