"""Split layers' part boundaries on cache lines (issue 18): a model's 2-thread schedule with ``parts.LINE_BYTES``
at 0 (the earlier split: depthwise bands anywhere, an expansion always on its depthwise reader's channel ranges)
against the default, both compiled in one process and run interleaved in random order.

    PYTHONPATH=. python benchmarks/thread_lines.py [MODELS] [--runs 300] [--real 60] [--out OUT]

Per model: the traced 2-thread runs (``thread_split.tracer``, always on the team), per step the minimum over the
runs where both threads ran a part of it of its *span* (its dependencies' last end to its own last end: the
step's share of the run's time when nothing else ran on the cores) and their sum; each step whose split
changed (``--steps``: every step, its parts alone against the span); then the real runs of both schedules (team
only, untraced) and of the 1-thread program, interleaved (medians, minima). On a shared machine the real runs'
medians follow the load; the summed minimum spans are the quiet machine's run time, step by step.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import numpy as np  # noqa: E402

from benchmarks.ootb import _ootb_model, ootb_label  # noqa: E402
from benchmarks.thread_split import step_times, tracer  # noqa: E402


def step_tag(program, st) -> tuple[str, str]:
    """(output shape, variant with '/pixels' or '/rows' for a part-space split, '/channels' for channels)."""
    c = program.calls[st.first]
    shape = "x".join(map(str, c.node.outputs[0].shape)) if c.node is not None else ""
    how = "/channels" if "[channels" in (c.note or "") else "/part" if "[part" in (c.note or "") else ""
    return shape, c.variant + how + (f"x{st.parts}" if st.parts > 1 else "")


def compare(spec: str, runs: int, real: int, per_step: bool = False) -> dict:
    import cnnjit
    from cnnjit.compiler.codegen import parts
    from cnnjit.compiler.codegen.cycles import tick_seconds

    model, feeds = _ootb_model(spec)
    shapes = {k: tuple(v.shape) for k, v in feeds.items()}
    line = parts.LINE_BYTES
    models = {}
    try:
        parts.LINE_BYTES = 0
        models["old"] = cnnjit.compile(model, input_shapes=shapes, threads=2)
    finally:
        parts.LINE_BYTES = line
    models["new"] = cnnjit.compile(model, input_shapes=shapes, threads=2)
    one = cnnjit.compile(model, input_shapes=shapes, threads=1)
    specs = {k: m._default_spec() for k, m in models.items()}
    if any("step_plan" not in s.program.meta for s in specs.values()):
        return {"model": ootb_label(spec), "note": "threads=2 keeps the serial schedule"}
    ref = one.run(None, feeds)
    identical = {}
    for k, s in specs.items():
        s.program.run.chooser = None  # (the team every run)
        identical[k] = all(np.array_equal(a, b) for a, b in zip(ref, models[k].run(None, feeds)))
    us = tick_seconds() * 1e6
    steps = {k: s.program.meta["step_plan"] for k, s in specs.items()}
    once = {k: tracer(s, feeds) for k, s in specs.items()}
    best = {k: [float("inf")] * len(steps[k]) for k in specs}
    walls: dict[str, list[float]] = {k: [] for k in specs}
    for k in specs:
        once[k]()
    names = list(specs)
    for _ in range(runs):
        random.shuffle(names)
        for k in names:
            tr = once[k]()
            walls[k].append(float(tr[-1, 1]) * us)
            for i, st in enumerate(steps[k]):
                c = tr[st.first:st.first + st.parts]
                if st.parts > 1 and len(set(c[:, 2].tolist())) < 2:
                    continue  # (one thread ran the whole step: not the split's time)
                prev = max((tr[steps[k][d].first:steps[k][d].first + steps[k][d].parts, 1].max() for d in st.deps),
                           default=0)
                best[k][i] = min(best[k][i], float(c[:, 1].max() - max(prev, 0)) * us)
    out: dict = {"model": ootb_label(spec), "traced_runs": runs, "bit_identical_to_1T": identical}
    for k in specs:
        spans = [b for b in best[k] if b < float("inf")]
        out[k] = {"steps": len(steps[k]), "sum_min_spans_us": sum(spans),
                  "steps_never_shared": len(best[k]) - len(spans), "traced_wall_min_us": min(walls[k]),
                  "traced_wall_median_us": statistics.median(walls[k])}
    changed = []
    if len(steps["old"]) == len(steps["new"]):
        for i, (a, b) in enumerate(zip(steps["old"], steps["new"])):
            ta, tb = step_tag(specs["old"].program, a), step_tag(specs["new"].program, b)
            if ta != tb:
                changed.append({"step": i, "shape": ta[0], "old": ta[1], "new": tb[1],
                                "old_us": best["old"][i], "new_us": best["new"][i]})
    out["changed_steps"] = changed
    if per_step:  # every step of the new schedule: its parts alone against its traced span with both threads
        alone = step_times(specs["new"], feeds, 15)
        rows = []
        for i, st in enumerate(steps["new"]):
            ts = alone[st.first:st.first + st.parts]
            ideal = max(sum(ts) / 2, max(ts)) if st.parts > 1 else ts[0]
            shape, how = step_tag(specs["new"].program, st)
            rows.append({"step": i, "shape": shape, "split": how, "parts_alone_us": ts, "ideal_us": ideal,
                         "min_span_us": best["new"][i]})
        out["steps"] = rows
    out["changed_sum_us"] = {k: sum(c[f"{k}_us"] for c in changed) for k in ("old", "new")}
    fns = {"2T old": lambda: models["old"].run(None, feeds), "2T new": lambda: models["new"].run(None, feeds),
           "1T": lambda: one.run(None, feeds)}
    times: dict[str, list[float]] = {k: [] for k in fns}
    for f in fns.values():
        f()
    keys = list(fns)
    for _ in range(real):
        random.shuffle(keys)
        for k in keys:
            t0 = time.perf_counter()
            fns[k]()
            times[k].append((time.perf_counter() - t0) * 1e3)
    out["real_ms"] = {k: {"median": statistics.median(v), "min": min(v)} for k, v in times.items()}
    out["load"] = os.getloadavg()[0]
    return out


def markdown(results: list[dict], argv: list[str]) -> str:
    lines = ["# Part boundaries on cache lines: `parts.LINE_BYTES` 0 (old) against 64 (new), 2 threads", "",
             f"Command: `PYTHONPATH=. python benchmarks/thread_lines.py {' '.join(argv)}`", ""]
    for r in results:
        if "note" in r:
            lines += [f"## {r['model']}", "", r["note"], ""]
            continue
        o, n = r["old"], r["new"]
        lines += [f"## {r['model']} (load {r['load']:.1f} at the end)", "",
                  f"* summed minimum step spans ({r['traced_runs']} traced runs each): old "
                  f"{o['sum_min_spans_us']:.0f} us, "
                  f"new {n['sum_min_spans_us']:.0f} us ({n['sum_min_spans_us'] / o['sum_min_spans_us']:.3f}x); the "
                  f"changed steps {r['changed_sum_us']['old']:.0f} -> {r['changed_sum_us']['new']:.0f} us",
                  f"* traced runs' wall time: old min {o['traced_wall_min_us']:.0f} / median "
                  f"{o['traced_wall_median_us']:.0f} us, "
                  f"new min {n['traced_wall_min_us']:.0f} / median {n['traced_wall_median_us']:.0f} us",
                  "* real runs (ms, median / min): " + ", ".join(f"{k} {v['median']:.3f} / {v['min']:.3f}"
                                                              for k, v in r["real_ms"].items()),
                  f"* bit-identical to 1 thread: {r['bit_identical_to_1T']}", ""]
        if r["changed_steps"]:
            lines += ["| step | output | old split | min span us | new split | min span us |",
                      "|---:|---|---|---:|---|---:|"]
            lines += [f"| {c['step']} | {c['shape']} | {c['old']} | {c['old_us']:.1f} | {c['new']} | "
                      f"{c['new_us']:.1f} |" for c in r["changed_steps"]]
            lines.append("")
        if r.get("steps"):
            total = sum(x["ideal_us"] for x in r["steps"])
            spans = sum(x["min_span_us"] for x in r["steps"] if x["min_span_us"] < float("inf"))
            lines += [f"Every step of the new schedule: its parts alone (minima of 15 profiled runs, one after "
                      f"another on one thread), the ideal 2-thread time (the longer of the longest part and half "
                      f"the parts) and the traced minimum span; ideal {total:.0f} us in all, spans {spans:.0f} us "
                      f"({spans / total:.2f}x).", "",
                      "| step | output | split | parts alone us | ideal us | min span us | span / ideal |",
                      "|---:|---|---|---|---:|---:|---:|"]
            lines += [f"| {x['step']} | {x['shape']} | {x['split']} | "
                      f"{' + '.join(f'{t:.0f}' for t in x['parts_alone_us'])} | {x['ideal_us']:.1f} | "
                      f"{x['min_span_us']:.1f} | {x['min_span_us'] / x['ideal_us']:.2f} |" for x in r["steps"]]
            lines.append("")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("models", nargs="?", default="mobilenet_v2_224,ppocr_v4_rec")
    ap.add_argument("--runs", type=int, default=300, help="traced runs of each schedule")
    ap.add_argument("--real", type=int, default=60, help="real (untraced) runs of each program")
    ap.add_argument("--out", default="", help="write OUT.json and OUT.md")
    ap.add_argument("--steps", action="store_true", help="also every step of the new schedule: parts alone, ideal, "
                    "traced minimum span")
    args = ap.parse_args(argv)
    results = []
    for spec in args.models.split(","):
        r = compare(spec, args.runs, args.real, args.steps)
        results.append(r)
        print(json.dumps(r, indent=1))
    if args.out:
        Path(args.out + ".json").write_text(json.dumps(results, indent=1))
        Path(args.out + ".md").write_text(markdown(results, sys.argv[1:] if argv is None else argv))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
