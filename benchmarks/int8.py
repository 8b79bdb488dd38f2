"""int8 vs fp32: cnnjit's integer kernels against its float kernels and onnxruntime, single-threaded.

    python benchmarks/int8.py [--models resnet8,mobilenet_v2_224] [--runs 50] [--warmup 5] [--entry auto]

For each model: post-training quantization with ``cnnjit.quantize`` (16 seeded calibration inputs,
per-channel int8 weights) twice — uint8 activations (the ``u8s8`` QDQ model) and int8 activations
(``s8s8``) — then times, interleaved (``harness.measure``), cnnjit int8 (the u8s8 model; integer kernels),
cnnjit fp32, onnxruntime on the u8s8 and s8s8 QDQ models and onnxruntime fp32. Also reports cnnjit int8's
argmax agreement / cosine against the float model on the timing input. Writes
``benchmarks/results/int8.{json,md,png}``.
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.harness import single_thread  # noqa: E402

single_thread()  # before numpy / numba / onnxruntime start their thread pools

import argparse  # noqa: E402
import os  # noqa: E402
from typing import Any  # noqa: E402

import numpy as np  # noqa: E402

import cnnjit  # noqa: E402
from benchmarks.harness import (  # noqa: E402
    bar_chart,
    fmt,
    measure,
    ort_session,
    print_table,
    write_json,
    write_markdown,
)
from benchmarks.models import MODEL_SET, load  # noqa: E402

DEFAULT = ["resnet8", "mobilenet_v1_025_96", "ds_cnn", "mobilenet_v2_224"]
SERIES = ["cnnjit_int8", "cnnjit_fp32", "ort_u8s8", "ort_s8s8", "ort_fp32"]


def bench_model(name: str, runs: int, warmup: int, entry: str) -> dict[str, Any]:
    model, feeds = load(name)
    k = next(iter(feeds))
    shape = MODEL_SET[name].input_shape
    rng = np.random.default_rng(1)
    cal = [{k: rng.standard_normal(shape).astype(np.float32)} for _ in range(16)]
    q_u8 = cnnjit.quantize(model, cal, activations="uint8", evaluate=False)
    q_s8 = cnnjit.quantize(model, cal, activations="int8", evaluate=False)
    shapes = {k: shape}
    c8 = cnnjit.compile(q_u8, input_shapes=shapes, entry=entry)
    c32 = cnnjit.compile(model, input_shapes=shapes, entry=entry)
    s_u8, s_s8, s_32 = ort_session(q_u8.model), ort_session(q_s8.model), ort_session(model)
    a = c32.run(None, feeds)[0].ravel().astype(np.float64)
    b = c8.run(None, feeds)[0].ravel().astype(np.float64)
    fns = {"cnnjit_int8": lambda: c8.run(None, feeds), "cnnjit_fp32": lambda: c32.run(None, feeds),
           "ort_u8s8": lambda: s_u8.run(None, feeds), "ort_s8s8": lambda: s_s8.run(None, feeds),
           "ort_fp32": lambda: s_32.run(None, feeds)}
    stats = measure(fns, runs=runs, warmup=warmup)
    med = {s: stats[s]["median_ms"] for s in SERIES}
    return {"model": name, "median_ms": med, "min_ms": {s: stats[s]["min_ms"] for s in SERIES},
            "int8_speedup_vs_fp32": med["cnnjit_fp32"] / med["cnnjit_int8"],
            "int8_latency_vs_ort_u8s8": med["cnnjit_int8"] / med["ort_u8s8"],
            "ort_u8s8_speedup_vs_fp32": med["ort_fp32"] / med["ort_u8s8"],
            "argmax_agree": bool(a.argmax() == b.argmax()),
            "cosine": float(a @ b / max(np.linalg.norm(a) * np.linalg.norm(b), 1e-30)),
            "stats": stats}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", default=",".join(DEFAULT))
    ap.add_argument("--runs", type=int, default=50)
    ap.add_argument("--warmup", type=int, default=5)
    ap.add_argument("--entry", default="auto", choices=("auto", "python", "numba"))
    ap.add_argument("--out", default=None, help="results folder (default benchmarks/results)")
    args = ap.parse_args(argv)
    load_before = os.getloadavg()
    results = [bench_model(n, args.runs, args.warmup, args.entry) for n in args.models.split(",") if n]
    load_after = os.getloadavg()
    headers = ["model", *[f"{s} ms" for s in SERIES], "int8/fp32 speed-up", "int8 / ort u8s8", "cosine"]
    rows = [[r["model"], *[fmt(r["median_ms"][s]) for s in SERIES], fmt(r["int8_speedup_vs_fp32"]),
             fmt(r["int8_latency_vs_ort_u8s8"]), fmt(r["cosine"], 5)] for r in results]
    print_table(headers, rows, title="int8 vs fp32 (median latency, 1 thread)")
    notes = ["cnnjit int8 runs the u8s8 QDQ model (uint8 activations, per-channel int8 weights) with the "
             "qdq_to_integer pass: integer NHWC kernels (vpdpbusd on AVX512-VNNI).",
             f"entry={args.entry} (cnnjit int8 and fp32); models quantized by cnnjit.quantize (minmax, 16 random "
             "calibration inputs).",
             f"median of {args.runs} interleaved runs; load average (1 min) {load_before[0]:.2f} before, "
             f"{load_after[0]:.2f} after (2 shared cores)."]
    write_json("int8", {"entry": args.entry, "runs": args.runs, "loadavg": [load_before, load_after],
                        "results": results}, args.out)
    write_markdown("int8", headers, rows, title=f"cnnjit int8 vs fp32 vs onnxruntime (1 thread, entry={args.entry})",
                   notes=notes,
                   out_dir=args.out)
    bar_chart("int8", [r["model"] for r in results], {s: [r["median_ms"][s] for r in results] for s in SERIES},
              ylabel="median latency (ms)", title="int8 vs fp32, 1 thread", out_dir=args.out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
