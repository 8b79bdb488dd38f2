"""A parallel schedule's kernel scratch reused across steps (issue 18), against scratch kept to the end of the
run (as before): per model, the 2-thread arena of each, and the two 2-thread programs timed interleaved in
one process with the 1-thread program beside them (``harness.measure``: seeded random order, wall time,
medians and minima), outputs checked bit-identical. On a loaded machine whole 2-thread runs say little (the
other core is someone else's most of the time), so the two schedules are also traced (``thread_split.tracer``,
interleaved in random order): per step split in parts, its longest part's minimum over the runs where the
other thread ran that step at the same time (``thread_split.concurrent_spans``), summed over the steps: what
the split layers cost when both cores run them at once; and each program's calls
are profiled on one thread (minima over interleaved rounds) and the step protocol simulated on them
(``thread_split.simulate``): what the parts allow, the scratch warm in cache or not.

    PYTHONPATH=. python benchmarks/scratch_reuse.py [--models M1,M2] [--runs 60] [--traced 300] [--rounds 6]

M1,M2: ``benchmarks.corpus`` names or ``path@input=1x3x416x416`` (default: MobileNetV2-224 and the ddddocr
detector when installed). Writes ``results/scratch_reuse.{json,md}`` with the load average.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.harness import single_thread  # noqa: E402 - stdlib only

single_thread(2)

import numpy as np  # noqa: E402

import cnnjit  # noqa: E402
from benchmarks.harness import measure, print_table, write_json, write_markdown  # noqa: E402
from benchmarks.ootb import _ootb_model, default_ootb_models, ootb_label  # noqa: E402
from benchmarks.thread_split import OVERLAP, concurrent_spans, simulate, step_times, tracer  # noqa: E402
from cnnjit.compiler.codegen import memory  # noqa: E402


def compile_kept(model, shapes: dict):
    """``model`` at 2 threads with every kernel scratch kept to the end of the run (before scratch reuse)."""
    reach = memory.scratch_reach
    memory.scratch_reach = lambda graph: [len(graph.nodes)] * len(graph.nodes)
    try:
        return cnnjit.compile(model, threads=2, input_shapes=shapes)
    finally:
        memory.scratch_reach = reach


def team_always(cm):
    """``cm`` with its parallel schedule always on the team (no chooser falling back to the caller alone on
    a loaded machine: the A/B compares the two schedules, not the chooser's picks)."""
    run = cm._default_spec().program.run
    if getattr(run, "chooser", None) is not None:
        run.chooser = None
    return cm


def simulated(programs: dict, feeds: dict, rounds: int, repeat: int = 10, seed: int = 0) -> dict[str, float]:
    """Per 2-thread program (name -> compiled model), the step protocol simulated (``thread_split.simulate``)
    on each call's minimum time over ``rounds`` profiled rounds of ``repeat`` runs (one thread, the parts one
    after another; rounds interleaved in a seeded random order): the 2-thread time the parts allow (ms)."""
    import random

    names = list(programs)
    mins: dict[str, np.ndarray] = {}
    rng = random.Random(seed)
    for _ in range(rounds):
        rng.shuffle(names)
        for k in names:
            t = np.array(step_times(programs[k]._default_spec(), feeds, repeat))
            mins[k] = np.minimum(mins[k], t) if k in mins else t
    return {k: simulate(programs[k]._default_spec().program.meta["step_plan"], list(mins[k]))[0] / 1e3
            for k in programs}


def arena_mib(cm) -> float:
    p = cm._default_spec().program
    return sum(n * p.arena_dtypes[k].itemsize for k, n in p.arena_sizes.items()) / 2**20


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--models", default="")
    ap.add_argument("--runs", type=int, default=60)
    ap.add_argument("--warmup", type=int, default=5)
    ap.add_argument("--traced", type=int, default=300, help="traced runs per program (concurrent steps)")
    ap.add_argument("--rounds", type=int, default=6, help="profiled rounds of 10 runs per program (simulated)")
    ap.add_argument("--out", default=None, help="results folder (default benchmarks/results)")
    args = ap.parse_args()
    specs = [s for s in args.models.split(",") if s] or [s for s in default_ootb_models() if s != "resnet8"]
    rows, payload = [], {"runs": args.runs, "models": {}}
    load0 = os.getloadavg()[0]
    for spec in specs:
        model, feeds = _ootb_model(spec)
        shapes = {k: tuple(v.shape) for k, v in feeds.items()}
        one = cnnjit.compile(model, threads=1, input_shapes=shapes)
        kept = team_always(compile_kept(model, shapes))
        reused = team_always(cnnjit.compile(model, threads=2, input_shapes=shapes))
        want = one(**feeds)
        for cm in (kept, reused):
            got = cm(**feeds)
            for a, b in zip(got if isinstance(got, list) else [got], want if isinstance(want, list) else [want]):
                np.testing.assert_array_equal(a, b)
        fns = {"1T": lambda: one(**feeds), "2T kept": lambda: kept(**feeds), "2T reused": lambda: reused(**feeds)}
        res = measure(fns, runs=args.runs, warmup=args.warmup)
        for r in res.values():
            r.pop("times_ns")
        spans = concurrent_spans({k: (tracer(cm._default_spec(), feeds), cm._default_spec().program.meta["step_plan"])
                                  for k, cm in (("kept", kept), ("reused", reused))}, args.traced)
        sim = simulated({"kept": kept, "reused": reused}, feeds, args.rounds)
        both = set(spans["kept"]) & set(spans["reused"])
        conc = {k: {"span_us": sum(v[i] for i in both), "steps": len(both)} for k, v in spans.items()}
        # (a step whose parts never ran cleanly at once in one program is an outlier in the sums: the median
        # of the per-step ratios is the robust comparison)
        conc["median_step_ratio"] = float(np.median([spans["kept"][i] / spans["reused"][i] for i in both])) \
            if both else float("nan")
        m = {k: res[k]["median_ms"] for k in fns}
        b = {k: res[k]["min_ms"] for k in fns}
        load = os.getloadavg()[0]
        rows.append([ootb_label(spec), round(arena_mib(one), 2), round(arena_mib(kept), 2), round(arena_mib(reused), 2),
                     m["1T"], m["2T kept"], m["2T reused"], b["1T"], b["2T kept"], b["2T reused"],
                     b["1T"] / b["2T kept"], b["1T"] / b["2T reused"], b["2T kept"] / b["2T reused"],
                     sim["kept"], sim["reused"], sim["kept"] / sim["reused"],
                     conc["kept"]["span_us"] / 1e3, conc["reused"]["span_us"] / 1e3,
                     conc["median_step_ratio"], conc["kept"]["steps"],
                     round(load, 1)])
        payload["models"][ootb_label(spec)] = {"arena_mib": {"1T": arena_mib(one), "2T kept": arena_mib(kept),
                                                             "2T reused": arena_mib(reused)},
                                               "timings": res, "simulated_ms": sim,
                                               "concurrent_steps": conc, "load": load}
    headers = ["model", "arena 1T MiB", "2T kept", "2T reused", "1T median ms", "2T kept", "2T reused",
               "1T min ms", "2T kept", "2T reused", "speed-up kept (min)", "reused (min)", "kept / reused (min)",
               "simulated 2T ms kept", "reused", "kept / reused", "concurrent split steps ms kept", "reused",
               "kept / reused (median step)", "steps", "load"]
    print_table(headers, rows, title="kernel scratch reused across steps at 2 threads")
    payload["load_start"] = load0
    write_json("scratch_reuse", payload, args.out)
    write_markdown("scratch_reuse", headers, rows, out_dir=args.out,
                   title="2-thread schedule: kernel scratch reused across steps vs kept to the end",
                   notes=[f"`python benchmarks/scratch_reuse.py --runs {args.runs} --traced {args.traced} "
                          f"--rounds {args.rounds}`: one process, interleaved "
                          "(seeded random order), wall time, each 2-thread program always on the team (no chooser); "
                          "load average at the start "
                          f"{load0:.1f}; on a loaded 2-core machine compare the minima",
                          "outputs bit-identical to the 1-thread program (checked)",
                          f"simulated 2T: the step protocol (`thread_split.simulate`) on each call's minimum over "
                          f"{args.rounds} x 10 profiled one-thread runs (parts one after another, programs "
                          "interleaved): the 2-thread time the parts allow, scratch warm or not",
                          "concurrent split steps: per step split in parts, its longest part's minimum over "
                          f"{args.traced} traced runs of each program where the other thread ran that step for "
                          f">= {OVERLAP} of the part's time, summed over the steps with such times in both programs "
                          "(`steps`); kept / reused: the median over those steps of the ratio (a step that never ran "
                          "cleanly at once in one program is an outlier in the sums)"])


if __name__ == "__main__":
    main()
