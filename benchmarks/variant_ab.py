"""A kernel variant's whole-model effect, interleaved in one process: each model compiled with the default
variant table and again without the named variants (as before they existed), timed together with
onnxruntime (``harness.measure``, 1 thread, batch 1) and the outputs checked against each other.

    PYTHONPATH=. python benchmarks/variant_ab.py --without Conv:cblock --models ddddocr_det,ppocr_v4_det,resnet8
    python benchmarks/variant_ab.py --without Conv:packed_pointwise --disable cascade_maxpool --runs 60

Any name of ``corpus.ALL_MODELS`` (the benchmark set and the real-model corpus), or ONNX files (``--onnx``:
held-out models, not copied into the repo; symbolic dims 1, seeded inputs: standard normal floats, integers in
0..255). Printed per model: median ms of each engine, the ratios to onnxruntime, and the speed-up of the
default over the table without. ``--cpu`` times thread CPU time instead of wall time (a loaded machine).

    python benchmarks/variant_ab.py --without Conv:conv1d_packed --onnx /work/heldout/magika.onnx --cpu --runs 40
    python benchmarks/variant_ab.py --without Conv:stem_packed --onnx pnet.onnx --shape input_1=1,240,320,3

``--forms`` compiles "before" with earlier forms of kernel code (``kernel.FORMS``) instead of, or beside, removed
variants:

    python benchmarks/variant_ab.py --forms packed_block_copy,packed_serial_rows --models mobilenet_v2_224 --cpu
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.harness import single_thread  # noqa: E402 - stdlib only

single_thread()

import time  # noqa: E402

import numpy as np  # noqa: E402
import onnx  # noqa: E402

import cnnjit  # noqa: E402
from benchmarks.corpus import load  # noqa: E402
from benchmarks.harness import measure, ort_session, variants_without  # noqa: E402
from benchmarks.models import graph_inputs  # noqa: E402


def compile_without(model, shapes: dict, removed: list[tuple[str, str]], disable: tuple[str, ...] = (),
                    forms: tuple[str, ...] = ()):
    """``model`` compiled (1 thread, for the input ``shapes``: specialised now, not at its first call) with
    the ``removed`` (op, variant) pairs out of the variant table, the passes named in ``disable`` off and the
    earlier kernel ``forms``."""
    with variants_without(removed):
        return cnnjit.compile(model, threads=1, input_shapes=shapes, disable=list(disable) or None,
                              forms=list(forms))


def file_model(path: str, seed: int = 0, shapes: dict[str, tuple[int, ...]] | None = None
               ) -> tuple[onnx.ModelProto, dict[str, np.ndarray]]:
    """(model, {input: seeded input}) of an ONNX file: the input ``shapes`` given, else symbolic dims 1;
    standard normal floats, integers (token ids, byte values) in 0..255, random booleans."""
    model = onnx.load(path)
    rng = np.random.default_rng(seed)
    feeds = {}
    for i in graph_inputs(model):
        t = i.type.tensor_type
        shape = (shapes or {}).get(i.name) or tuple(d.dim_value if d.HasField("dim_value") else 1
                                                    for d in t.shape.dim)
        dt = np.dtype(onnx.helper.tensor_dtype_to_np_dtype(t.elem_type))
        feeds[i.name] = (rng.standard_normal(shape) if dt.kind == "f" else rng.integers(0, 2, shape) if dt.kind == "b"
                         else rng.integers(0, 256, shape)).astype(dt)
    return model, feeds


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--without", default="", help="OP:VARIANT[,OP:VARIANT...] left out of the 'before' table")
    ap.add_argument("--forms", default="", help="FORM[,FORM...] earlier kernel forms of the 'before' compile")
    ap.add_argument("--disable", default="", help="PASS[,PASS...] also off in the 'before' compile")
    ap.add_argument("--models", default="ddddocr_det", help="comma-separated model names (ignored with --onnx)")
    ap.add_argument("--onnx", action="append", default=[], help="an ONNX file (repeatable)")
    ap.add_argument("--shape", action="append", default=[],
                    help="NAME=d0,d1,... an --onnx input's shape (repeatable; default: symbolic dims 1)")
    ap.add_argument("--cpu", action="store_true", help="time thread CPU time, not wall time")
    ap.add_argument("--runs", type=int, default=15)
    ap.add_argument("--warmup", type=int, default=3)
    args = ap.parse_args()
    removed = [tuple(s.split(":", 1)) for s in args.without.split(",") if s]
    forms = tuple(f for f in args.forms.split(",") if f)
    if not removed and not forms:
        ap.error("give --without and/or --forms: the 'before' must differ from the default")
    entries = [(n, lambda n=n: load(n)) for n in args.models.split(",") if not args.onnx]
    given = {k: tuple(int(v) for v in d.split(",")) for k, _, d in (s.partition("=") for s in args.shape)}
    entries += [(Path(p).stem, lambda p=p: file_model(p, shapes=given)) for p in args.onnx]
    for name, get in entries:
        model, feeds = get()
        shapes = {k: v.shape for k, v in feeds.items()}
        after = cnnjit.compile(model, threads=1, input_shapes=shapes)
        before = compile_without(model, shapes, removed, tuple(p for p in args.disable.split(",") if p), forms)
        ort = ort_session(model, threads=1)
        outs = [after(**feeds), before(**feeds)]
        outs = [o if isinstance(o, (list, tuple)) else [o] for o in outs]
        diff = max(float(np.max(np.abs(a - b))) for a, b in zip(*outs))
        t = measure({"after": lambda: after(**feeds), "before": lambda: before(**feeds),
                     "onnxruntime": lambda: ort.run(None, feeds)}, runs=args.runs, warmup=args.warmup,
                    clock=time.thread_time_ns if args.cpu else time.perf_counter_ns)
        ms = {k: v["median_ms"] for k, v in t.items()}
        best = {k: v["min_ms"] for k, v in t.items()}
        print(f"{name}: after {ms['after']:.2f} ms, before {ms['before']:.2f} ms, onnxruntime "
              f"{ms['onnxruntime']:.2f} ms | ratio after {ms['after'] / ms['onnxruntime']:.3f}, before "
              f"{ms['before'] / ms['onnxruntime']:.3f} | speed-up {ms['before'] / ms['after']:.3f}x "
              f"(best-of: {best['before'] / best['after']:.3f}x) | max |after - before| {diff:.2e}", flush=True)


if __name__ == "__main__":
    main()
