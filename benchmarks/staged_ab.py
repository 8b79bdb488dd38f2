"""A staged thread split (``parts.STAGED_PARTS``: Winograd's input transform as its own step) against the split
before it, in one process (issue 18): each model's 2-thread program compiled with the staged splits and again
without them; per call, the minimum time on one thread over interleaved rounds (``cnnjit.profile``); the step
protocol simulated on those minima (``thread_split.simulate``); traced team runs interleaved (wall minimum, p10,
median); and the parts of each layer the staged split changes, against that layer's parts before.

    PYTHONPATH=. python benchmarks/staged_ab.py ddddocr_det --rounds 20 --out benchmarks/results/staged_ab
"""

from __future__ import annotations

import argparse
import json
import os
import random
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import numpy as np  # noqa: E402

from benchmarks.ootb import _ootb_model, ootb_label  # noqa: E402
from benchmarks.thread_split import simulate, tracer  # noqa: E402


def layer_parts(program, times: list[float], variant: str) -> dict[str, list[float]]:
    """Output name -> the part times (us) of every call of ``variant`` computing it."""
    out: dict[str, list[float]] = {}
    for c, t in zip(program.calls, times):
        if c.node is not None and c.variant == variant:
            out.setdefault(c.node.outputs[0].name, []).append(t)
    return out


def compare(spec: str, rounds: int, variant: str) -> dict:
    """One model's A/B (see the module docstring)."""
    import cnnjit
    from cnnjit.compiler.codegen import parts
    from cnnjit.compiler.codegen.cycles import tick_seconds
    from cnnjit.profile import profile_schedule

    model, feeds = _ootb_model(spec)
    shapes = {k: tuple(v.shape) for k, v in feeds.items()}
    saved = dict(parts.STAGED_PARTS)
    progs = {}
    try:
        for label, table in (("staged", saved), ("before", {})):
            parts.STAGED_PARTS.clear()
            parts.STAGED_PARTS.update(table)
            progs[label] = cnnjit.compile(model, input_shapes=shapes, threads=2)._default_spec()
    finally:
        parts.STAGED_PARTS.clear()
        parts.STAGED_PARTS.update(saved)
    mins: dict[str, list[float]] = {}
    walls: dict[str, list[float]] = {k: [] for k in progs}
    traced = {k: tracer(sp, feeds) for k, sp in progs.items()}
    us = tick_seconds() * 1e6
    order, rng = list(progs), random.Random(0)
    loads = [os.getloadavg()[0]]
    for _ in range(rounds):
        rng.shuffle(order)
        for k in order:
            t = [c.min_s * 1e6 for c in profile_schedule(progs[k], feeds, repeat=5).calls]
            mins[k] = [min(a, b) for a, b in zip(mins[k], t)] if k in mins else t
            walls[k] += [traced[k]()[-1, 1] * us for _ in range(5)]
    loads.append(os.getloadavg()[0])
    res: dict = {"model": ootb_label(spec), "rounds": rounds, "load": loads, "programs": {}}
    for k, sp in progs.items():
        steps = sp.program.meta["step_plan"]
        sim, busy = simulate(steps, mins[k])
        w = np.array(walls[k])
        res["programs"][k] = {"steps": len(steps), "parts_sum_us": sum(mins[k]), "simulated_us": sim,
                              "busy_us": busy, "traced_min_us": float(w.min()),
                              "traced_p10_us": float(np.percentile(w, 10)), "traced_median_us": float(np.median(w)),
                              "layers": layer_parts(sp.program, mins[k], variant)}
    return res


def markdown(results: list[dict], argv: list[str]) -> str:
    lines = ["# Staged thread split against the split before (2-thread programs, one process)", "",
             f"`PYTHONPATH=. python benchmarks/staged_ab.py {' '.join(argv)}`", ""]
    for r in results:
        a, b = r["programs"]["staged"], r["programs"]["before"]
        lines += [f"## {r['model']} ({r['rounds']} rounds, load {r['load'][0]:.1f} -> {r['load'][1]:.1f})", "",
                  "| program | steps | parts' sum us | simulated 2T us | traced min us | traced p10 us "
                  "| traced median us |",
                  "|---|---:|---:|---:|---:|---:|---:|"]
        for k, p in (("staged", a), ("before", b)):
            lines.append(f"| {k} | {p['steps']} | {p['parts_sum_us']:.0f} | {p['simulated_us']:.0f} | "
                         f"{p['traced_min_us']:.0f} | {p['traced_p10_us']:.0f} | {p['traced_median_us']:.0f} |")
        lines += ["", "Layers the staged split changes (part minima, us; staged: transform parts then GEMM parts):", "",
                  "| layer | staged parts | sum | before parts | sum |", "|---|---|---:|---|---:|"]
        for name, ts in a["layers"].items():
            old = b["layers"].get(name, [])
            if len(ts) != len(old) or not np.allclose(ts, old):
                lines.append(f"| {name} | {' '.join(f'{t:.0f}' for t in ts)} | {sum(ts):.0f} | "
                             f"{' '.join(f'{t:.0f}' for t in old)} | {sum(old):.0f} |")
        lines.append("")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("models", help="comma-separated benchmarks.corpus names")
    ap.add_argument("--rounds", type=int, default=20, help="interleaved rounds (5 profiled + 5 traced runs each)")
    ap.add_argument("--variant", default="winograd_f4", help="the variant whose layers are listed")
    ap.add_argument("--out", default="", help="write OUT.json and OUT.md")
    args = ap.parse_args(argv)
    from benchmarks.corpus import ALL_MODELS

    unknown = [m for m in args.models.split(",") if "@" not in m and m not in ALL_MODELS]
    if unknown:
        ap.error(f"unknown model(s) {unknown}; known: {', '.join(ALL_MODELS)}")
    results = [compare(m, args.rounds, args.variant) for m in args.models.split(",")]
    for r in results:
        for k, p in r["programs"].items():
            print(f"{r['model']} {k}: parts {p['parts_sum_us']:.0f} us, simulated {p['simulated_us']:.0f} us, traced "
                  f"min {p['traced_min_us']:.0f} p10 {p['traced_p10_us']:.0f} median {p['traced_median_us']:.0f}")
        print(f"  load {r['load']}")
    if args.out:
        Path(args.out + ".json").write_text(json.dumps(results, indent=1))
        Path(args.out + ".md").write_text(markdown(results, sys.argv[1:] if argv is None else argv))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
