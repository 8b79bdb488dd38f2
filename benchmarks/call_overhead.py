"""Per-call overhead on the MLPerf Tiny models (issue 18), one thread, against LiteRT (XNNPACK).

    python benchmarks/call_overhead.py [--runs 3000]

Per model, interleaved in one process: cnnjit's compiled schedule called on its own buffers (``raw``: no
input/output copy, no validation), ``Specialization.run`` (the copies in and out), ``model(x)`` (the public
call: lookup of the compiled shape, then the same) and, when ``ai-edge-litert`` is installed, LiteRT's
Python interpreter on the ``.tflite`` original (``set_tensor``, ``invoke``, ``get_tensor``; XNNPACK is its
default CPU delegate). ``overhead`` = ``model(x)`` - ``raw`` (medians). Results:
``benchmarks/results/call_overhead.json`` and ``.md``.

    python benchmarks/call_overhead.py --baseline ../main [--runs 1500]

``--baseline DIR``: also ``model(x)`` through the ``CompiledModel`` class of another checkout's
``runtime/model.py`` (an in-process A/B of the call path on the very same compiled specialisation; its
kernels are this checkout's), as ``baseline`` in the tables.

    python benchmarks/call_overhead.py --without Conv:depthwise_flat --forms cvec_scatter --name call_overhead_kw23

``--without OP:VARIANT[,...]`` / ``--forms NAME[,...]``: also ``model(x)`` of the model compiled without those
kernel variants (as before they existed) and with those earlier forms of kernel code (``kernel.FORMS``), as
``before`` in the tables: a kernel change's in-process A/B beside LiteRT.
``--name``: the results' file name (default ``call_overhead``).
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.harness import (  # noqa: E402
    measure,
    single_thread,
    variants_without,
    write_json,
    write_markdown,
)

single_thread()  # before numpy / numba start their thread pools

import argparse  # noqa: E402
import os  # noqa: E402
import random  # noqa: E402
import time  # noqa: E402

import numpy as np  # noqa: E402

import cnnjit  # noqa: E402
import cnnjit.compiler.codegen.kernels  # noqa: E402, F401 - the variant tables (--without)

TINY = Path(__file__).resolve().parents[2] / "shared" / "models" / "mlperf-tiny"
#: label -> (ONNX file, tflite original)
MODELS = {
    "anomaly fp32": ("ad01_fp32.tf2onnx.onnx", "ad01_fp32.tflite"),
    "anomaly int8": ("ad01_int8.tf2onnx.onnx", "ad01_int8.tflite"),
    "keyword fp32": ("kws_ref_model_float32.tf2onnx.onnx", "kws_ref_model_float32.tflite"),
    "keyword int8": ("kws_ref_model.tf2onnx.onnx", "kws_ref_model.tflite"),
}


def litert(path: Path, x: np.ndarray):
    """A zero-argument LiteRT call on ``x`` (one thread), or None when ai-edge-litert is not installed."""
    try:
        from ai_edge_litert.interpreter import Interpreter
    except ImportError:
        return None
    it = Interpreter(model_path=str(path), num_threads=1)
    it.allocate_tensors()
    i, o = it.get_input_details()[0]["index"], it.get_output_details()[0]["index"]

    def call() -> np.ndarray:
        it.set_tensor(i, x)
        it.invoke()
        return it.get_tensor(o)

    return call


def baseline_class(checkout: str):
    """The ``CompiledModel`` class of ``checkout``'s ``runtime/model.py``, loaded beside this one (its
    ``Specialization`` name bound to this checkout's, whose objects it is handed)."""
    import importlib.util

    import cnnjit.runtime.model as here

    spec = importlib.util.spec_from_file_location("cnnjit.runtime._baseline_model",
                                                  Path(checkout) / "runtime" / "model.py")
    mod = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = mod
    spec.loader.exec_module(mod)
    mod.Specialization = here.Specialization
    return mod.CompiledModel


def on_baseline(cls, model):
    """``model``'s state (compiled specialisations included) in an instance of ``cls``, with no per-shape
    callers yet (made by its own path at its first calls)."""
    old = object.__new__(cls)
    old.__dict__.update(model.__dict__)
    for k in ("_callers", "_ones"):
        if k in old.__dict__:
            old.__dict__[k] = {}
    return old


def raw_call(spec):
    """The compiled schedule called on its own buffers: a JIT specialisation's program on one of its arenas,
    or a warm-started native one's entry on one of its work sets (``runtime/native.py``)."""
    if hasattr(spec, "_acquire"):
        arena = spec._acquire()
        args = [arena[n] for n in spec.program.buffer_names]
        return lambda: spec.program.run(*args)
    work = spec._work_set()
    return lambda: spec._fn(*work[2])


def one_layer_cpu_note(rounds: int, block: int, load: float) -> str:
    """The results note of a benchmark that times compiled one-layer schedules with ``cpu_times`` and checks
    their outputs equal (``qgemv.py``, ``saturating_pointwise.py``)."""
    return ("this thread's CPU time per call of the compiled one-layer schedule (thread_time_ns), the least mean "
            f"over {rounds} interleaved blocks of {block} calls; outputs equal bit for bit; load average {load:.1f} "
            "when written")


def cpu_times(fns: dict, rounds: int = 100, block: int = 50) -> dict[str, float]:
    """Per call, CPU time of this thread (``time.thread_time_ns``, microseconds): the least mean over blocks
    of ``block`` calls, blocks interleaved in random order for ``rounds`` rounds. On a machine whose other
    processes take the cores, wall times include their time slices; CPU time does not (only their cache
    traffic)."""
    best = {k: float("inf") for k in fns}
    rng = random.Random(0)
    for _ in range(rounds):
        for k in rng.sample(list(fns), len(fns)):
            f = fns[k]
            t0 = time.thread_time_ns()
            for _ in range(block):
                f()
            best[k] = min(best[k], (time.thread_time_ns() - t0) / block / 1e3)
    return best


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--runs", type=int, default=3000)
    ap.add_argument("--out", default=None, help="results folder (default benchmarks/results)")
    ap.add_argument("--baseline", default=None, help="a checkout whose CompiledModel call path to time beside")
    ap.add_argument("--without", default="", help="OP:VARIANT[,OP:VARIANT...] left out of a 'before' compile")
    ap.add_argument("--forms", default="", help="earlier kernel forms (kernel.FORMS) of the 'before' compile")
    ap.add_argument("--name", default="call_overhead", help="results file name")
    args = ap.parse_args(argv)
    base = baseline_class(args.baseline) if args.baseline else None
    removed = [tuple(s.split(":", 1)) for s in args.without.split(",") if s]
    from cnnjit.compiler.codegen import kernel, kernels  # noqa: F401 (kernels: registers the variants)

    names = {op: {v.name for v in vs} for op, vs in kernel.VARIANTS.items()}
    unknown = [":".join(r) for r in removed if len(r) != 2 or r[1] not in names.get(r[0], ())]
    if unknown:
        ap.error(f"--without: no such kernel variant(s) {unknown} (OP:VARIANT)")
    forms = [f for f in args.forms.split(",") if f]
    rows, result = [], {}
    for label, (onnx_file, tfl) in MODELS.items():
        if not (TINY / onnx_file).is_file():
            print(f"skip {label}: {TINY / onnx_file} missing", file=sys.stderr)
            continue
        model = cnnjit.compile(str(TINY / onnx_file), threads=1)
        sig = model.inputs[0]
        rng = np.random.default_rng(0)
        shape = (1, *sig.dims[1:])
        x = (rng.standard_normal(shape) if sig.dtype.kind == "f" else rng.integers(-100, 100, shape)).astype(sig.dtype)
        model(x)
        spec = model._last
        fns = {"raw": raw_call(spec), "spec.run": lambda: spec.run({sig.name: x}), "model(x)": lambda: model(x)}
        if removed or forms:
            with variants_without(removed):  # (the shape is specialised at the first call: inside)
                before = cnnjit.compile(str(TINY / onnx_file), threads=1, forms=forms)
                got = before(x)
            ran = {(c.op, c.variant) for c in before._last.program.calls}
            assert not ran & set(removed), f"{label}: the 'before' schedule still runs {ran & set(removed)}"
            np.testing.assert_allclose(got, model(x), rtol=1e-4, atol=1e-5)
            fns["before"] = lambda before=before: before(x)
        if base is not None:
            old = on_baseline(base, model)
            old(x)
            np.testing.assert_array_equal(old(x), model(x))
            fns["baseline"] = lambda old=old: old(x)
        lite = litert(TINY / "tflite" / tfl, x) if (TINY / "tflite" / tfl).is_file() else None
        if lite is not None:
            fns["litert"] = lite
        st = {k: v["median_ms"] * 1e3 for k, v in measure(fns, runs=args.runs, warmup=100).items()}
        cpu = cpu_times(fns)
        result[label] = {**st, **{f"{k} cpu": v for k, v in cpu.items()}}
        rows.append([label, st["raw"], st["spec.run"], st["model(x)"], st["model(x)"] - st["raw"], st.get("litert"),
                     st["model(x)"] / st["litert"] if "litert" in st else None, cpu["model(x)"], cpu.get("litert"),
                     cpu["model(x)"] / cpu["litert"] if "litert" in cpu else None]
                    + ([cpu["baseline"], cpu["model(x)"] / cpu["baseline"]] if base is not None else [])
                    + ([st["before"], cpu["before"], cpu["model(x)"] / cpu["before"]] if "before" in fns else []))
        print(label, type(spec).__name__, {k: round(v, 1) for k, v in result[label].items()}, flush=True)
    write_json(args.name, {"median_us": result, "runs": args.runs, "without": args.without, "forms": args.forms},
               args.out)
    write_markdown(args.name, ["model", "raw us", "spec.run us", "model(x) us", "overhead us", "LiteRT us",
                                     "cnnjit / LiteRT", "model(x) CPU us", "LiteRT CPU us", "CPU cnnjit / LiteRT"]
                   + (["baseline model(x) CPU us", "CPU model(x) / baseline"] if base is not None else [])
                   + (["before us", "before CPU us", "CPU model(x) / before"] if removed or forms else []),
                   rows, title="Per-call overhead, one thread",
                   notes=[f"medians of {args.runs} interleaved runs; raw = the compiled schedule on its own "
                          "buffers; overhead = model(x) - raw; LiteRT = ai-edge-litert's Interpreter "
                          "(XNNPACK, num_threads=1) on the .tflite original",
                          "CPU us: this thread's CPU time per call (thread_time_ns), the least mean over 100 "
                          "interleaved blocks of 50 calls: what the call costs when the machine's other "
                          f"processes take time slices (load average {os.getloadavg()[0]:.1f} when written)",
                          "Command: python benchmarks/call_overhead.py"
                          + (f" --without {args.without} --forms {args.forms} --name {args.name} (before: model(x) "
                             "compiled without those variants, with those earlier kernel forms)"
                             if removed or forms else "")
                          + (f" --baseline {args.baseline} (the call path of that checkout's runtime/model.py on "
                             "the same compiled schedule)" if base is not None else "")], out_dir=args.out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
