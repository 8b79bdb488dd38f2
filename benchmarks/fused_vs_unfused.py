"""Fused vs unfused: what the fusion passes buy on the benchmark model set, single-threaded.

    python benchmarks/fused_vs_unfused.py [--models lenet5,resnet8] [--runs 50] [--warmup 5] [--no-ort]

For every model of ``benchmarks.models.MODEL_SET`` (those whose files are present): compile with
``cnnjit.compile(m, fuse=True)`` and ``fuse=False``, check both against onnxruntime (max abs difference
relative to the largest reference output), time them interleaved with onnxruntime (``harness.measure``),
and report latency (median, min), speed-up, IR node count, distinct kernels, kernel calls, arena bytes vs
the sum of all intermediates, and GFLOP/s. Writes ``benchmarks/results/fused_vs_unfused.{json,md,png}``.
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.harness import single_thread  # noqa: E402

single_thread()  # before numpy / numba / onnxruntime start their thread pools

import argparse  # noqa: E402
import time  # noqa: E402
import traceback  # noqa: E402
from typing import Any  # noqa: E402

import numpy as np  # noqa: E402

import cnnjit  # noqa: E402
from benchmarks.harness import (  # noqa: E402
    bar_chart,
    fmt,
    kernel_calls,
    machine_info,
    measure,
    ort_session,
    print_table,
    write_json,
    write_markdown,
)
from benchmarks.models import MODEL_SET, available_models, count_flops, load, output_scale  # noqa: E402

NAME = "fused_vs_unfused"
#: max |cnnjit - onnxruntime| / max |onnxruntime output| above which a result is flagged
REL_TOL = 1e-3


def program_stats(compiled) -> dict[str, Any]:
    spec = compiled._default_spec()
    p = spec.program
    return {
        "ir_nodes": len(spec.graph.nodes),
        "kernels": len(p.kernel_sources),
        "kernel_calls": kernel_calls(p),
        "arena_bytes": int(p.arena_bytes),
        "intermediate_bytes": int(p.intermediate_bytes),
        "compile_s": round(sum(spec.timings.values()), 4),
        "ops": _op_histogram(spec.graph),
    }


def _op_histogram(graph) -> dict[str, int]:
    hist: dict[str, int] = {}
    for n in graph.nodes:
        hist[n.op] = hist.get(n.op, 0) + 1
    return dict(sorted(hist.items()))


def max_rel_err(got: list[np.ndarray], ref: list[np.ndarray]) -> float:
    if len(got) != len(ref):
        return float("inf")
    err = 0.0
    for g, r in zip(got, ref):
        if g.shape != r.shape:
            return float("inf")
        if g.size:
            err = max(err, float(np.max(np.abs(g.astype(np.float64) - r.astype(np.float64)))))
    return err / output_scale(ref)


def bench_model(name: str, runs: int, warmup: int, with_ort: bool) -> dict[str, Any]:
    model, feeds = load(name)
    shapes = {k: v.shape for k, v in feeds.items()}
    flops = count_flops(model, shapes)
    sess = ort_session(model)
    ref = sess.run(None, feeds)
    row: dict[str, Any] = {"model": name, "source": MODEL_SET[name].source, "input_shapes": shapes,
                           "flops": flops, "output_scale": output_scale(ref)}
    compiled = {}
    for label, fuse in (("fused", True), ("unfused", False)):
        t0 = time.perf_counter()
        cm = cnnjit.compile(model, fuse=fuse)
        got = cm.run(None, feeds)  # compiles symbolic-batch models on this first call
        row[f"{label}_first_call_s"] = round(time.perf_counter() - t0, 4)
        rel = max_rel_err(got, ref)
        row[f"{label}_rel_err"] = rel
        row[f"{label}_ok"] = bool(rel <= REL_TOL)
        row[label] = program_stats(cm)
        compiled[label] = cm
    fns = {label: (lambda cm=cm: cm.run(None, feeds)) for label, cm in compiled.items()}
    if with_ort:
        fns["onnxruntime"] = lambda: sess.run(None, feeds)
    stats = measure(fns, runs=runs, warmup=warmup)
    for label, s in stats.items():
        row.setdefault(label, {})["timing"] = s
        row[label]["gflops"] = flops / (s["median_ms"] * 1e6) if s["median_ms"] > 0 else None
    row["speedup"] = stats["unfused"]["median_ms"] / stats["fused"]["median_ms"]
    if with_ort:
        row["fused_vs_ort"] = stats["onnxruntime"]["median_ms"] / stats["fused"]["median_ms"]
    return row


HEADERS = ["model", "MFLOP", "fused med ms", "fused min ms", "unfused med ms", "unfused min ms", "speed-up",
           "ORT med ms", "fused GFLOP/s", "nodes f/u", "kernels f/u", "calls f/u", "arena KiB f/u",
           "intermediates KiB f/u", "rel err f/u"]


def table_row(r: dict[str, Any]) -> list[Any]:
    if "error" in r:
        return [r["model"], None, "ERROR", r["error"][:80]] + [None] * (len(HEADERS) - 4)
    f, u = r["fused"], r["unfused"]
    ort = r.get("onnxruntime", {}).get("timing", {}).get("median_ms")
    ok = "" if r["fused_ok"] and r["unfused_ok"] else " MISMATCH"
    return [
        r["model"], r["flops"] / 1e6, f["timing"]["median_ms"], f["timing"]["min_ms"], u["timing"]["median_ms"],
        u["timing"]["min_ms"], r["speedup"], ort, f["gflops"],
        f"{f['ir_nodes']}/{u['ir_nodes']}", f"{f['kernels']}/{u['kernels']}",
        f"{f['kernel_calls']}/{u['kernel_calls']}",
        f"{f['arena_bytes'] / 1024:.0f}/{u['arena_bytes'] / 1024:.0f}",
        f"{f['intermediate_bytes'] / 1024:.0f}/{u['intermediate_bytes'] / 1024:.0f}",
        f"{fmt(r['fused_rel_err'], 2)}/{fmt(r['unfused_rel_err'], 2)}{ok}",
    ]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", default="", help="comma-separated MODEL_SET names (default: all available)")
    ap.add_argument("--runs", type=int, default=50, help="timed runs per candidate (interleaved)")
    ap.add_argument("--warmup", type=int, default=5, help="untimed warm-up rounds")
    ap.add_argument("--no-ort", action="store_true", help="do not time onnxruntime alongside")
    ap.add_argument("--out", default=None, help="results folder (default benchmarks/results)")
    ap.add_argument("--name", default=NAME, help="results file stem")
    args = ap.parse_args(argv)

    names = [s.strip() for s in args.models.split(",") if s.strip()] or available_models()
    unknown = [n for n in names if n not in MODEL_SET]
    if unknown:
        ap.error(f"unknown model(s) {unknown}; known: {', '.join(MODEL_SET)}")
    missing = [n for n in names if not MODEL_SET[n].available()]
    for n in missing:
        print(f"skipping {n}: {MODEL_SET[n].path} not found", file=sys.stderr)
    names = [n for n in names if n not in missing]

    rows: list[dict[str, Any]] = []
    for name in names:
        t0 = time.perf_counter()
        try:
            r = bench_model(name, args.runs, args.warmup, not args.no_ort)
        except Exception as e:  # noqa: BLE001 - one model's failure must not stop the table
            traceback.print_exc()
            r = {"model": name, "error": f"{type(e).__name__}: {e}"}
        rows.append(r)
        if "error" in r:
            print(f"{name:22s} ERROR {r['error'][:160]}", flush=True)
        else:
            print(f"{name:22s} fused {r['fused']['timing']['median_ms']:8.3f} ms  unfused "
                  f"{r['unfused']['timing']['median_ms']:8.3f} ms  speed-up {r['speedup']:5.2f}x  "
                  f"kernels {r['fused']['kernels']}/{r['unfused']['kernels']}  calls "
                  f"{r['fused']['kernel_calls']}/{r['unfused']['kernel_calls']}  rel err "
                  f"{r['fused_rel_err']:.1e}/{r['unfused_rel_err']:.1e}  ({time.perf_counter() - t0:.1f}s)",
                  flush=True)

    info = machine_info()
    payload = {"benchmark": NAME, "runs": args.runs, "warmup": args.warmup, "rel_tol": REL_TOL,
               "machine": info, "models": rows}
    json_path = write_json(args.name, payload, args.out)
    table = [table_row(r) for r in rows]
    notes = [
        f"Single thread (numba, OMP/MKL/OpenBLAS, ORT intra/inter-op = 1); {args.runs} timed runs after "
        f"{args.warmup} warm-up rounds, candidates interleaved (random order); times of `model.run(None, feeds)`.",
        "speed-up = unfused median / fused median. f/u = fused / unfused. nodes = IR nodes after the passes; "
        "kernels = distinct generated kernels; calls = kernel calls in the schedule.",
        "arena = bytes of the planned activation arena; intermediates = sum of every intermediate tensor's size.",
        f"rel err = max |cnnjit - onnxruntime| / max |onnxruntime output|; MISMATCH above {REL_TOL:g}.",
    ]
    md_path = write_markdown(args.name, HEADERS, table, title="cnnjit: fused vs unfused", notes=notes,
                             out_dir=args.out, machine=info)
    good = [r for r in rows if "error" not in r]
    series = {"fused": [r["fused"]["timing"]["median_ms"] for r in good],
              "unfused": [r["unfused"]["timing"]["median_ms"] for r in good]}
    errors = {"fused": [(r["fused"]["timing"]["min_ms"], r["fused"]["timing"]["p90_ms"]) for r in good],
              "unfused": [(r["unfused"]["timing"]["min_ms"], r["unfused"]["timing"]["p90_ms"]) for r in good]}
    if not args.no_ort:
        series["onnxruntime"] = [r["onnxruntime"]["timing"]["median_ms"] for r in good]
        errors["onnxruntime"] = [(r["onnxruntime"]["timing"]["min_ms"], r["onnxruntime"]["timing"]["p90_ms"])
                                 for r in good]
    png_path = None
    if good:
        png_path = bar_chart(args.name, [r["model"] for r in good], series, errors=errors, log=True,
                             ylabel="latency, ms (median; bars min..p90)",
                             title=f"cnnjit fused vs unfused, 1 thread, {info['cpu']}",
                             annotate={"fused": [f"{r['speedup']:.2f}x" for r in good]}, out_dir=args.out)
    print_table(HEADERS, table, title="fused vs unfused")
    print(f"wrote {json_path}, {md_path}" + (f", {png_path}" if png_path else ""))
    bad = [r["model"] for r in rows if "error" in r or not (r["fused_ok"] and r["unfused_ok"])]
    if bad:
        print(f"errors or mismatches vs onnxruntime: {', '.join(bad)}", file=sys.stderr)
    return 1 if bad else 0


if __name__ == "__main__":
    raise SystemExit(main())
