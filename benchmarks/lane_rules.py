"""The 16-lane variant rules on and off, whole models in one process: each model compiled (1 thread, batch 1) with
the variant tables as they are ("after") and with the rules that only hold at 16 lanes (AVX-512) switched off
("before": ``winograd.WIDE_RATIO`` and ``WIDE_STREAM_BYTES``, ``simd_cblock.SPARE_REGISTERS_WIDE``,
``packed_pointwise.WIDE_FITS`` and ``WIDE_STRIPS``, ``block_fused.WIDE_TILES``, each set to its 8-lane value;
``--rules``: only those named), timed interleaved with onnxruntime (``harness.measure``, thread CPU time by default:
a shared machine's other processes count less), the outputs checked against onnxruntime.
On a host without AVX-512 the two compiles are the same.
    PYTHONPATH=. python benchmarks/lane_rules.py --models ddddocr_det,light_squeezenet,mobilenet_v2_224 --runs 40
    PYTHONPATH=. python benchmarks/lane_rules.py --models mobilenet_v2_224 --rules WIDE_TILES --runs 60
Printed and written (results/<name>.{json,md}): per model the calls whose variant differs, the median ms of each
engine, both ratios to onnxruntime, the speed-up (medians and minima) and the larger output error.
"""

from __future__ import annotations

import argparse
import contextlib
import sys
import time
from collections.abc import Iterator
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from benchmarks.harness import single_thread  # noqa: E402 - stdlib only

single_thread()

import numpy as np  # noqa: E402

import cnnjit  # noqa: E402
from benchmarks.corpus import load  # noqa: E402
from benchmarks.harness import measure, ort_session, write_json, write_markdown  # noqa: E402
from cnnjit.compiler.codegen.kernels import block_fused, packed_pointwise, simd_cblock, winograd  # noqa: E402

#: (module, constant, its value with the 16-lane rule off)
RULES = [(winograd, "WIDE_RATIO", {}), (winograd, "WIDE_STREAM_BYTES", {}),
         (simd_cblock, "SPARE_REGISTERS_WIDE", simd_cblock.SPARE_REGISTERS), (packed_pointwise, "WIDE_FITS", {}),
         (packed_pointwise, "WIDE_STRIPS", {}), (block_fused, "WIDE_TILES", {})]

DEFAULT_MODELS = ("ddddocr_det,light_squeezenet,ppocr_cls,ddddocr_ocr,svtr_block,mobilenet_v2_224,ppocr_v4_det,"
                  "ppocr_v4_rec,mlperf_vww_96_float,mobilenet_v1_025_96,mobilenet_v3_small,resnet8")


@contextlib.contextmanager
def rules_off(names: set[str] | None = None) -> Iterator[None]:
    """The 16-lane rules (those whose constant is in ``names``; None: all) at their 8-lane values for the
    duration."""
    rules = [r for r in RULES if names is None or r[1] in names]
    saved = [(m, k, getattr(m, k)) for m, k, _ in rules]
    try:
        for m, k, v in rules:
            setattr(m, k, v)
        yield
    finally:
        for m, k, v in saved:
            setattr(m, k, v)


def listed(out) -> list[np.ndarray]:
    return list(out) if isinstance(out, (list, tuple)) else [out]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", default=DEFAULT_MODELS, help="comma-separated corpus model names")
    ap.add_argument("--runs", type=int, default=40)
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--wall", action="store_true", help="wall time (perf_counter) instead of thread CPU time")
    ap.add_argument("--name", default="lane_rules", help="results file name")
    ap.add_argument("--rules", default="", help="comma-separated constants of RULES to switch off (default: all)")
    args = ap.parse_args()
    names = set(args.rules.split(",")) if args.rules else None
    unknown = (names or set()) - {k for _, k, _ in RULES}
    if unknown:
        ap.error(f"unknown rules {sorted(unknown)}: choose from {[k for _, k, _ in RULES]}")
    rows, payload = [], {"runs": args.runs, "clock": "wall" if args.wall else "thread", "models": {},
                         "rules_off": sorted(names) if names else [k for _, k, _ in RULES]}
    for name in args.models.split(","):
        model, feeds = load(name)
        shapes = {k: v.shape for k, v in feeds.items()}
        after = cnnjit.compile(model, threads=1, input_shapes=shapes)
        with rules_off(names):
            before = cnnjit.compile(model, threads=1, input_shapes=shapes)
        va = [c.variant for c in after._default_spec().program.calls]
        vb = [c.variant for c in before._default_spec().program.calls]
        changed = sum(a != b for a, b in zip(va, vb)) + abs(len(va) - len(vb))
        ort = ort_session(model, threads=1)
        want = ort.run(None, feeds)
        err = max(float(np.max(np.abs(np.asarray(g, np.float64) - r))) / max(float(np.max(np.abs(r))), 1e-30)
                  for out in (after(**feeds), before(**feeds)) for g, r in zip(listed(out), want))
        t = measure({"after": lambda: after(**feeds), "before": lambda: before(**feeds),
                     "onnxruntime": lambda: ort.run(None, feeds)}, runs=args.runs, warmup=args.warmup,
                    clock=time.perf_counter_ns if args.wall else time.thread_time_ns)
        ms = {k: v["median_ms"] for k, v in t.items()}
        best = {k: v["min_ms"] for k, v in t.items()}
        row = [name, changed, ms["before"], ms["after"], ms["onnxruntime"], ms["before"] / ms["onnxruntime"],
               ms["after"] / ms["onnxruntime"], ms["before"] / ms["after"], best["before"] / best["after"], err]
        rows.append(row)
        payload["models"][name] = {"timing": t, "changed_calls": changed, "rel_err": err}
        print(" | ".join(str(c) if not isinstance(c, float) else f"{c:.4g}" for c in row), flush=True)
    headers = ["model", "calls changed", "before ms", "after ms", "ORT ms", "ratio before", "ratio after",
               "speed-up (median)", "speed-up (min)", "rel err"]
    write_json(args.name, payload)
    write_markdown(args.name, headers, rows, title="The 16-lane variant rules on (after) and off (before), 1 thread",
                   notes=[f"{args.runs} interleaved runs after {args.warmup} warm-up rounds, "
                          f"{'wall' if args.wall else 'thread CPU'} time, medians; ratio = cnnjit / onnxruntime.",
                          "Command: `PYTHONPATH=. python benchmarks/lane_rules.py " + " ".join(sys.argv[1:]) + "`"])


if __name__ == "__main__":
    main()
