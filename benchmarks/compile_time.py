"""Compile time and the kernel cache: cold (empty cache) and warm (new process, filled cache) start.

For every model of the benchmark set, each measurement runs in a fresh Python process (a new interpreter):
``import cnnjit``, ``cnnjit.compile(path, input_shapes=...)`` (kernels are compiled eagerly, for the exact
argument types), then the first call. Reported: import time, compile time, first call, their sum ("time to
first result"), the compile report (kernels compiled / loaded), and the steady-state run latency (median
of timed runs after the first) so that a faster start shows no loss at run time.

* ``cold``: a fresh, empty ``CNNJIT_CACHE_DIR`` (nothing shared with other models);
* ``cold-par``: the same with parallel compile workers (``CNNJIT_COMPILE_JOBS`` = CPU count), when > 1 CPU;
* ``warm``: a new process on the cache the cold run filled.

Children run with Python's bytecode cache as a normal installation does (``--no-bytecode`` keeps a
PYTHONDONTWRITEBYTECODE of the environment, under which every process compiles cnnjit from source).
``--entry-crossover`` instead compares the Python and the numba entry on chains of small layers (run time
and cold compile CPU time: where the numba entry pays for its compile, ``codegen.emit.AUTO_NUMBA_CALLS``).

    python benchmarks/compile_time.py                          # all models, writes results/compile_time.*
    python benchmarks/compile_time.py --models mlperf_resnet --repeat 3
    python benchmarks/compile_time.py --entry-crossover        # results/entry_crossover.*
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.harness import bar_chart, machine_info, print_table, write_json, write_markdown  # noqa: E402

#: the targets of issue 11 (seconds): warm start to the first result and cold compile
WARM_TARGET = {"mobilenet_v2_224": 1.0, "mlperf": 0.5}
COLD_TARGET = {"mobilenet_v2_224": 20.0, "mlperf": 6.0}

CHILD = r"""
import sys, time, json
t0 = time.perf_counter()
import cnnjit
t1 = time.perf_counter()
import numpy as np
path, xin, input_name, runs = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
x = np.load(xin)
t2 = time.perf_counter()
model = cnnjit.compile(path, input_shapes={input_name: x.shape})
t3 = time.perf_counter()
y = model(x)
t4 = time.perf_counter()
times = []
for _ in range(runs):
    s = time.perf_counter(); model(x); times.append(time.perf_counter() - s)
rep = model.compile_report()
print(json.dumps({"import_s": t1 - t0, "compile_s": t3 - t2, "first_call_s": t4 - t3,
                  "steady_ms": sorted(times)[len(times) // 2] * 1e3 if times else None,
                  "kernels": len(rep.rows), "calls": sum(r.calls for r in rep.rows), "compiled": rep.compiled,
                  "cache_hits": rep.cache_hits, "jobs": rep.jobs, "counts": rep.counts(),
                  "kernel_compile_s": sum(r.compile_s for r in rep.rows)}))
"""


#: measure as a normal Python installation does (``.pyc`` bytecode written on first import and reused):
#: False keeps the environment's PYTHONDONTWRITEBYTECODE, under which every process compiles cnnjit's
#: ~70 modules from source again (+0.1-0.2 s of import for an editable install: ``--no-bytecode``)
BYTECODE = True


def _child(path: Path, xin: Path, input_name: str, cache: Path, jobs: int, runs: int) -> dict[str, Any]:
    env = dict(os.environ, CNNJIT_CACHE_DIR=str(cache), CNNJIT_COMPILE_JOBS=str(jobs), NUMBA_NUM_THREADS="1",
               OMP_NUM_THREADS="1")
    if BYTECODE:
        env.pop("PYTHONDONTWRITEBYTECODE", None)
    p = subprocess.run([sys.executable, "-c", CHILD, str(path), str(xin), input_name, str(runs)], env=env,
                       capture_output=True, text=True, timeout=600)
    if p.returncode != 0:
        raise RuntimeError(f"child failed ({p.returncode}):\n{p.stderr[-3000:]}")
    r = json.loads(p.stdout.strip().splitlines()[-1])
    r["first_result_s"] = r["import_s"] + r["compile_s"] + r["first_call_s"]
    return r


def _target(name: str, table: dict[str, float]) -> float | None:
    if name in table:
        return table[name]
    return table["mlperf"] if name.startswith("mlperf_") else None


def measure_model(name: str, workdir: Path, repeat: int, runs: int, parallel: bool) -> dict[str, Any]:
    import numpy as np
    import onnx

    from benchmarks.models import load

    model, feeds = load(name)
    path = workdir / f"{name}.onnx"
    onnx.save(model, str(path))
    xin = workdir / f"{name}.x.npy"
    (input_name, x), = feeds.items()
    np.save(xin, x)
    modes: dict[str, list[dict[str, Any]]] = {"cold": [], "warm": []}
    if parallel:
        modes["cold-par"] = []
    for i in range(repeat):
        cache = Path(tempfile.mkdtemp(prefix=f"cc-{name}-{i}-", dir=workdir))
        modes["cold"].append(_child(path, xin, input_name, cache, 1, runs))
        modes["warm"].append(_child(path, xin, input_name, cache, 1, runs))
        if parallel:
            pcache = Path(tempfile.mkdtemp(prefix=f"cp-{name}-{i}-", dir=workdir))
            modes["cold-par"].append(_child(path, xin, input_name, pcache, os.cpu_count() or 2, 0))
    out: dict[str, Any] = {"model": name}
    for mode, rs in modes.items():
        best = min(rs, key=lambda r: r["first_result_s"])  # least disturbed by other load on the machine
        out[mode] = {**best, "first_result_median_s": statistics.median(r["first_result_s"] for r in rs),
                     "runs": len(rs)}
    out["warm_target_s"] = _target(name, WARM_TARGET)
    out["cold_target_s"] = _target(name, COLD_TARGET)
    return out


# =========================================================================================================
# where the numba entry pays for its compile (codegen.emit.AUTO_NUMBA_CALLS)
# =========================================================================================================
def chain_model(kind: str, n: int, seed: int = 0) -> tuple[Any, dict[str, Any]]:
    """``n`` layers, one kernel call each: ``conv`` = Conv 3x3 (8 -> 8 channels, 16x16, pad 1) + Relu
    (fused); ``gemm`` = Gemm 64 -> 64 + Relu (fused). The shapes of the small graphs that tests build."""
    from benchmarks.models import _Builder, make_input

    b = _Builder(f"{kind}_chain_{n}", seed)
    if kind == "conv":
        x = b.input((1, 8, 16, 16))
        y = x
        for _ in range(n):
            y = b.relu(b.conv(y, 8, 3, pads=[1, 1, 1, 1]))
    elif kind == "gemm":
        x = b.input((1, 64))
        y = x
        for _ in range(n):
            y = b.relu(b.gemm(y, 64, gain=2.0))
    else:
        raise ValueError(f"unknown chain kind {kind!r}")
    return b.model(x, y), {"input": make_input(b.shapes[x], seed)}


def _fresh_compile(model: Any, entry: str, cache: Path) -> tuple[Any, float]:
    """Compile into the empty cache folder ``cache`` with nothing loaded in memory: the cold compile's CPU time."""
    import cnnjit
    from cnnjit.compiler.codegen import build

    os.environ["CNNJIT_CACHE_DIR"] = str(cache)
    build._dirs.clear()
    build._loaded.clear()
    t = time.process_time()  # CPU seconds: on a shared machine, wall time mostly measures the others' load
    cm = cnnjit.compile(model, entry=entry)
    return cm, time.process_time() - t


def entry_crossover(kinds: Sequence[str], sizes: Sequence[int], runs: int, out: str | None) -> int:
    """Per chain length: run time with the Python and the numba entry (interleaved), and their cold compile
    times; the break-even is the number of runs after which the numba entry has paid its extra compile."""
    import numpy as np

    from benchmarks.harness import measure, single_thread

    single_thread()
    old_cache = os.environ.get("CNNJIT_CACHE_DIR")
    results = []
    with tempfile.TemporaryDirectory(prefix="cnnjit-entry-") as tmp:
        warm_model, _ = chain_model("conv", 2, seed=99)
        _fresh_compile(warm_model, "numba", Path(tmp) / "warmup")  # numba's one-off start-up costs
        for kind in kinds:
            for n in sizes:
                model, feeds = chain_model(kind, n)
                (x,) = feeds.values()
                cm_py, c_py = _fresh_compile(model, "python", Path(tmp) / f"{kind}{n}-py")
                cm_nb, c_nb = _fresh_compile(model, "numba", Path(tmp) / f"{kind}{n}-nb")
                np.testing.assert_allclose(cm_nb(x), cm_py(x), rtol=1e-5, atol=1e-5)
                calls = cm_nb._default_spec().program.meta.get("compile_report")
                t = measure({"python": lambda cm=cm_py: cm(x), "numba": lambda cm=cm_nb: cm(x)}, runs=runs,
                            warmup=50)
                py_us, nb_us = t["python"]["median_ms"] * 1e3, t["numba"]["median_ms"] * 1e3
                saved = py_us - nb_us
                extra = c_nb - c_py
                r = {"kind": kind, "calls": n, "kernels": len(calls) if calls is not None else None,
                     "python_us": py_us, "numba_us": nb_us, "saved_us": saved, "compile_python_s": c_py,
                     "compile_numba_s": c_nb,
                     # 0: the numba entry compiled no slower (one kernel specialisation per distinct sizes)
                     "break_even_runs": (max(extra, 0.0) / (saved * 1e-6)) if saved > 0 else None}
                results.append(r)
                be = r["break_even_runs"]
                print(f"{kind} x{n}: python {py_us:.2f} us, numba {nb_us:.2f} us (saves {saved:.2f} us/run); "
                      f"cold compile (CPU) python {c_py:.2f} s, numba {c_nb:.2f} s; break-even "
                      f"{'never' if be is None else f'{be:.3g} runs'}", flush=True)
    if old_cache is None:
        os.environ.pop("CNNJIT_CACHE_DIR", None)
    else:
        os.environ["CNNJIT_CACHE_DIR"] = old_cache
    headers = ["chain", "calls", "python us", "numba us", "saved us/run", "cold compile python CPU s",
               "cold compile numba CPU s", "break-even runs"]
    rows = [[r["kind"], r["calls"], round(r["python_us"], 2), round(r["numba_us"], 2), round(r["saved_us"], 2),
             round(r["compile_python_s"], 2), round(r["compile_numba_s"], 2),
             None if r["break_even_runs"] is None else f"{r['break_even_runs']:.3g}"] for r in results]
    from cnnjit.compiler.codegen.emit import AUTO_NUMBA_CALLS

    notes = [
        "each graph compiled twice into empty caches (nothing in memory): entry='python' and entry='numba' "
        "(compile = CPU seconds of the process); run times are medians of interleaved single-thread calls.",
        "break-even runs = (numba cold compile - python cold compile) / (time saved per run): how many calls "
        "the numba entry needs to pay for its extra compile (once: it is cached on disk afterwards); 0 when "
        "it compiles no slower (a chain of equal layers: one kernel specialisation serves all).",
        f"entry='auto' picks numba from {AUTO_NUMBA_CALLS} calls on (one thread; codegen.emit.AUTO_NUMBA_CALLS).",
    ]
    if hasattr(os, "getloadavg"):
        notes.append(f"1-minute load average at the end: {os.getloadavg()[0]:.1f} ({os.cpu_count()} CPUs).")
    write_json("entry_crossover", {"results": results, "notes": notes}, out)
    write_markdown("entry_crossover", headers, rows, title="Python vs numba entry: run time and compile cost",
                   notes=notes, out_dir=out, machine=machine_info())
    print_table(headers, rows, title="entry crossover")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    from benchmarks.models import available_models

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--models", nargs="*", help="model names (default: every available model)")
    ap.add_argument("--repeat", type=int, default=2, help="cold+warm pairs per model (best is reported)")
    ap.add_argument("--runs", type=int, default=30, help="timed steady-state runs per process")
    ap.add_argument("--no-parallel", action="store_true", help="skip the parallel-compile cold runs")
    ap.add_argument("--out", default=None, help="results folder (default benchmarks/results)")
    ap.add_argument("--name", default="compile_time", help="results file name (without extension)")
    ap.add_argument("--entry-crossover", action="store_true",
                    help="instead: Python vs numba entry on chains of small layers (results/entry_crossover.*)")
    ap.add_argument("--chain-sizes", nargs="*", type=int, default=[2, 3, 4, 6, 8, 10, 12, 16])
    ap.add_argument("--no-bytecode", action="store_true",
                    help="keep PYTHONDONTWRITEBYTECODE if set (every process compiles cnnjit from source)")
    args = ap.parse_args(argv)
    global BYTECODE
    BYTECODE = not args.no_bytecode
    if args.entry_crossover:
        return entry_crossover(["conv", "gemm"], args.chain_sizes, max(args.runs, 300), args.out)
    names = args.models or available_models()
    parallel = not args.no_parallel and (os.cpu_count() or 1) > 1
    results = []
    load_before = os.getloadavg()[0] if hasattr(os, "getloadavg") else None
    with tempfile.TemporaryDirectory(prefix="cnnjit-compile-time-") as tmp:
        for n in names:
            r = measure_model(n, Path(tmp), args.repeat, args.runs, parallel)
            results.append(r)
            c, w = r["cold"], r["warm"]
            print(f"{n}: cold {c['first_result_s']:.2f} s ({c['compiled']}/{c['kernels']} compiled), "
                  f"warm {w['first_result_s']:.3f} s (import {w['import_s']:.3f}, compile {w['compile_s']:.3f}, "
                  f"first call {w['first_call_s']:.3f}; {w['compiled']} compiled), steady {c['steady_ms']:.3f} / "
                  f"{w['steady_ms']:.3f} ms" + (f", cold parallel {r['cold-par']['first_result_s']:.2f} s"
                                                if parallel else ""), flush=True)
    headers = ["model", "kernels", "calls", "cold s", "cold par s", "cold target", "warm s", "warm import s",
               "warm compile s", "warm 1st call s", "warm target", "warm compiled", "steady cold ms",
               "steady warm ms"]
    rows = []
    for r in results:
        c, w = r["cold"], r["warm"]
        rows.append([r["model"], c["kernels"], c["calls"], round(c["first_result_s"], 2),
                     round(r["cold-par"]["first_result_s"], 2) if "cold-par" in r else None,
                     r["cold_target_s"], round(w["first_result_s"], 3), round(w["import_s"], 3),
                     round(w["compile_s"], 3), round(w["first_call_s"], 4), r["warm_target_s"], w["compiled"],
                     round(c["steady_ms"], 3), round(w["steady_ms"], 3)])
    cmd = "python benchmarks/compile_time.py " + " ".join(argv if argv is not None else sys.argv[1:])
    notes = [
        f"command: `{cmd.strip()}`; best of {args.repeat} fresh processes per mode (median in the JSON).",
        "cold: empty CNNJIT_CACHE_DIR, one compile process (CNNJIT_COMPILE_JOBS=1); cold par: with compile "
        f"workers (CNNJIT_COMPILE_JOBS={os.cpu_count()}; the default, `auto`, starts them on idle CPUs when at "
        "least 8 kernels miss the cache); warm: a new process on the cache the cold run filled.",
        "times are from `import cnnjit` through `cnnjit.compile(path, input_shapes=...)` and the first call; "
        "steady = median of timed calls after the first, in the cold and the warm process.",
        "kernels = distinct compiled kernels of the model, calls = kernel calls in its schedule.",
        "Python bytecode: " + ("cached as by a normal installation (.pyc written by the cold process, read by "
                               "the warm one; PYTHONDONTWRITEBYTECODE removed from the children's environment)"
                               if BYTECODE else "not cached (PYTHONDONTWRITEBYTECODE kept): every process compiles "
                               "cnnjit's modules from source"),
    ]
    if load_before is not None:
        notes.append(f"1-minute load average of the machine: {load_before:.1f} before, {os.getloadavg()[0]:.1f} "
                     f"after the runs (other processes compete for the {os.cpu_count()} CPUs above ~1).")
    info = machine_info()
    write_json(args.name, {"results": results, "command": cmd.strip(), "notes": notes}, args.out)
    write_markdown(args.name, headers, rows, title="Compile time: cold and warm start", notes=notes,
                   out_dir=args.out, machine=info)
    labels = [r["model"] for r in results]
    series = {"cold": [r["cold"]["first_result_s"] for r in results],
              "warm": [r["warm"]["first_result_s"] for r in results]}
    if parallel:
        series["cold parallel"] = [r["cold-par"]["first_result_s"] for r in results]
    bar_chart(args.name, labels, series, ylabel="time to first result (s)", log=True,
              title="cnnjit: import + compile + first call, fresh process", out_dir=args.out)
    print_table(headers, rows, title="compile time")
    return 0


if __name__ == "__main__":
    sys.exit(main())
