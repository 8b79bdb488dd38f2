"""A kernel variant's whole-model effect, interleaved in one process: each model compiled with the default
variant table and again without the named variants (as before they existed), timed together with
onnxruntime (``harness.measure``, 1 thread, batch 1) and the outputs checked against each other.

    PYTHONPATH=. python benchmarks/variant_ab.py --without Conv:cblock --models ddddocr_det,ppocr_v4_det,resnet8
    python benchmarks/variant_ab.py --without Conv:packed_pointwise --disable cascade_maxpool --runs 60

Any name of ``corpus.ALL_MODELS`` (the benchmark set and the real-model corpus). Printed per model: median
ms of each engine, the ratios to onnxruntime, and the speed-up of the default over the table without.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.harness import single_thread  # noqa: E402 - stdlib only

single_thread()

import numpy as np  # noqa: E402

import cnnjit  # noqa: E402
from benchmarks.corpus import load  # noqa: E402
from benchmarks.harness import measure, ort_session  # noqa: E402
from cnnjit.compiler.codegen import kernel  # noqa: E402


def compile_without(model, shapes: dict, removed: list[tuple[str, str]], disable: tuple[str, ...] = ()):
    """``model`` compiled (1 thread, for the input ``shapes``: specialised now, not at its first call) with
    the ``removed`` (op, variant) pairs out of the variant table and the passes named in ``disable`` off."""
    saved = {op: list(kernel.VARIANTS[op]) for op, _ in removed}
    try:
        for op, name in removed:
            kernel.VARIANTS[op] = [v for v in kernel.VARIANTS[op] if v.name != name]
        return cnnjit.compile(model, threads=1, input_shapes=shapes, disable=list(disable) or None)
    finally:
        kernel.VARIANTS.update(saved)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--without", required=True, help="OP:VARIANT[,OP:VARIANT...] left out of the 'before' table")
    ap.add_argument("--disable", default="", help="PASS[,PASS...] also off in the 'before' compile")
    ap.add_argument("--models", default="ddddocr_det", help="comma-separated model names")
    ap.add_argument("--runs", type=int, default=15)
    ap.add_argument("--warmup", type=int, default=3)
    args = ap.parse_args()
    removed = [tuple(s.split(":", 1)) for s in args.without.split(",")]
    for name in args.models.split(","):
        model, feeds = load(name)
        shapes = {k: v.shape for k, v in feeds.items()}
        after = cnnjit.compile(model, threads=1, input_shapes=shapes)
        before = compile_without(model, shapes, removed, tuple(p for p in args.disable.split(",") if p))
        ort = ort_session(model, threads=1)
        outs = [after(**feeds), before(**feeds)]
        outs = [o if isinstance(o, (list, tuple)) else [o] for o in outs]
        diff = max(float(np.max(np.abs(a - b))) for a, b in zip(*outs))
        t = measure({"after": lambda: after(**feeds), "before": lambda: before(**feeds),
                     "onnxruntime": lambda: ort.run(None, feeds)}, runs=args.runs, warmup=args.warmup)
        ms = {k: v["median_ms"] for k, v in t.items()}
        best = {k: v["min_ms"] for k, v in t.items()}
        print(f"{name}: after {ms['after']:.2f} ms, before {ms['before']:.2f} ms, onnxruntime "
              f"{ms['onnxruntime']:.2f} ms | ratio after {ms['after'] / ms['onnxruntime']:.3f}, before "
              f"{ms['before'] / ms['onnxruntime']:.3f} | speed-up {ms['before'] / ms['after']:.3f}x "
              f"(best-of: {best['before'] / best['after']:.3f}x) | max |after - before| {diff:.2e}", flush=True)


if __name__ == "__main__":
    main()
