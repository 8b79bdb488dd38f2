"""Warm start: a new process's time to its first result, from the compiled-program cache and the full path.

For every MLPerf Tiny float model (``<repo>/../shared/models/mlperf-tiny``) and MobileNetV2-224
(``models.mobilenet_v2``, written to a file), in a private cache folder:

1. ``cnnjit.cache.warm(path, input_shapes=batch 1)``: fills the kernel cache and the compiled-program cache
   (the time of building the native program is reported apart: what a plain compile would add);
2. ``--procs`` fresh processes each run ``import cnnjit; cnnjit.compile(path)(x)`` and report the time from
   their first line to the first result, and whether onnx or numba got imported ("warm"); the same with
   the compiled-program cache switched off (``CNNJIT_PROGRAM_CACHE=0``: the full path on a warm kernel
   cache, "full") and for onnxruntime (import, session, first run);
3. in this process, the steady state: the warm model against the JIT one, interleaved (``harness.measure``),
   and whether their outputs are bit-identical.

    python benchmarks/warm_start.py [--procs 7] [--runs 200] [--models kws,mobilenet_v2_224]

Writes ``benchmarks/results/warm_start.{json,md}``.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import onnx

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks import harness  # noqa: E402

# before numba loads (cnnjit.cache imports it): lowering numba's pool after it started breaks its later
# compiles ("Cannot set NUMBA_NUM_THREADS..."); cnnjit's own threads follow its default, not this
harness.single_thread(cnnjit_default=True)

import cnnjit  # noqa: E402
import cnnjit.cache  # noqa: E402
from benchmarks import models  # noqa: E402
from cnnjit.api import _compile_full  # noqa: E402
from cnnjit.runtime.native import NativeSpecialization  # noqa: E402

FILES = {
    "ad01_fp32": "ad01_fp32.tf2onnx.onnx",
    "ad01_fp32_tflite": "ad01_fp32.tflite2onnx.onnx",
    "kws_float32": "kws_ref_model_float32.tf2onnx.onnx",
    "resnet": "pretrainedResnet.tf2onnx.onnx",
    "resnet_tflite": "pretrainedResnet.tflite2onnx.onnx",
    "vww_96_float": "vww_96_float.tf2onnx.onnx",
    "vww_96_float_tflite": "vww_96_float.tflite2onnx.onnx",
}
TARGET_S = {"mobilenet_v2_224": 0.4}  # the bound; 0.25 s for every MLPerf Tiny model

CHILD = r"""
import time
t0 = time.perf_counter()
import sys
mode, path, shape = sys.argv[1], sys.argv[2], tuple(int(d) for d in sys.argv[3].split(","))
import numpy as np
x = np.random.default_rng(0).standard_normal(shape).astype(np.float32)
if mode == "ort":
    import onnxruntime as ort
    so = ort.SessionOptions(); so.intra_op_num_threads = 1; so.inter_op_num_threads = 1
    s = ort.InferenceSession(path, so, providers=["CPUExecutionProvider"])
    y = s.run(None, {s.get_inputs()[0].name: x})[0]
else:
    import cnnjit
    y = cnnjit.compile(path)(x)
t1 = time.perf_counter()
print(t1 - t0, int("onnx" in sys.modules), int("numba" in sys.modules))
"""


def model_files(folder: Path, names: list[str] | None) -> dict[str, tuple[Path, tuple[int, ...]]]:
    """name -> (file, batch-1 input shape) of the models found."""
    out = {}
    for name, file in FILES.items():
        p = models.MLPERF_TINY_DIR / file
        if p.is_file() and (not names or name in names):
            proto = onnx.load(str(p))
            dims = [d.dim_value or 1 for d in models.graph_inputs(proto)[0].type.tensor_type.shape.dim]
            out[name] = (p, tuple(dims))
    if not names or "mobilenet_v2_224" in names:
        p = folder / "mobilenet_v2_224.onnx"
        onnx.save(models.mobilenet_v2(1.0, 224), str(p))
        out["mobilenet_v2_224"] = (p, (1, 3, 224, 224))
    return out


def child_times(mode: str, path: Path, shape: tuple[int, ...], procs: int, env: dict) -> dict:
    """Median / min seconds to the first result over ``procs`` fresh processes, in-process and wall, and the
    median CPU seconds of a whole child process (user + system: less sensitive to a busy machine)."""
    inner, wall, cpu, heavy = [], [], [], set()
    for _ in range(procs):
        t = time.perf_counter()
        r0 = resource.getrusage(resource.RUSAGE_CHILDREN)
        r = subprocess.run([sys.executable, "-c", CHILD, mode, str(path), ",".join(map(str, shape))],
                           capture_output=True, text=True, env=env, check=True)
        wall.append(time.perf_counter() - t)
        r1 = resource.getrusage(resource.RUSAGE_CHILDREN)
        cpu.append(r1.ru_utime - r0.ru_utime + r1.ru_stime - r0.ru_stime)
        s, o, n = r.stdout.split()
        inner.append(float(s))
        heavy |= {m for m, f in (("onnx", o), ("numba", n)) if f == "1"}
    return {"median_s": statistics.median(inner), "min_s": min(inner), "wall_median_s": statistics.median(wall),
            "cpu_median_s": statistics.median(cpu), "imports": sorted(heavy)}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--procs", type=int, default=7, help="fresh processes per model and mode")
    ap.add_argument("--runs", type=int, default=200, help="steady-state runs per model")
    ap.add_argument("--models", default="", help="comma-separated subset of " + ", ".join([*FILES, "mobilenet_v2_224"]))
    ap.add_argument("--reuse", action="store_true", help="keep compiled programs already stored (no build time)")
    ap.add_argument("--out", default=None, help="results folder (default benchmarks/results)")
    args = ap.parse_args(argv)
    rows, results = [], {}
    with tempfile.TemporaryDirectory(prefix="cnnjit-warm-") as tmp:
        files = model_files(Path(tmp), [m for m in args.models.split(",") if m] or None)
        cache = os.environ.get("CNNJIT_CACHE_DIR") or str(Path.home() / ".cache" / "cnnjit")
        env = {**os.environ, "CNNJIT_CACHE_DIR": cache}
        for name, (path, shape) in files.items():
            print(f"{name}: warming", file=sys.stderr)
            t = time.perf_counter()
            shapes = {models.graph_inputs(onnx.load(str(path)))[0].name: shape}
            cm = _compile_full(path.read_bytes(), {"input_shapes": shapes})  # fills the kernel cache
            t_jit = time.perf_counter() - t
            t = time.perf_counter()
            stored = cnnjit.cache.store_native(str(path), cm, shapes, force=not args.reuse)
            t_native = None if args.reuse else time.perf_counter() - t
            warm = cnnjit.compile(str(path))
            x = models.make_input(shape)
            is_warm = isinstance(warm._specs.get((shape,)), NativeSpecialization)
            jit = _compile_full(path.read_bytes(), {})  # the JIT as `cnnjit.compile(path)` makes it
            same = bool(np.array_equal(warm(x), jit(x)))
            steady = harness.measure({"warm": lambda: warm(x), "jit": lambda: jit(x)}, runs=args.runs, warmup=10)
            modes = {m: child_times(m, path, shape, args.procs, {**env, **extra})
                     for m, extra in (("warm", {}), ("full", {"CNNJIT_PROGRAM_CACHE": "0"}), ("ort", {}))}
            target = TARGET_S.get(name, 0.25)
            results[name] = {"shape": shape, "stored": stored is not None, "warm_loaded": is_warm,
                             "bit_identical": same, "warm_kernels_s": t_jit, "native_build_s": t_native,
                             "steady_ms": {k: v["median_ms"] for k, v in steady.items()},
                             "first_result": modes, "target_s": target}
            rows.append([name, modes["warm"]["median_s"], modes["full"]["median_s"], modes["ort"]["median_s"],
                         modes["warm"]["cpu_median_s"], modes["ort"]["cpu_median_s"], target,
                         ",".join(modes["warm"]["imports"]) or "-", steady["warm"]["median_ms"],
                         steady["jit"]["median_ms"], same, t_native])
            print(json.dumps({name: results[name]}, default=str), file=sys.stderr)
    headers = ["model", "warm first result s", "full path s", "onnxruntime s", "warm CPU s", "onnxruntime CPU s",
               "target s", "heavy imports (warm)",
               "warm ms/run", "JIT ms/run", "bit-identical", "native build s"]
    harness.write_json("warm_start", {"models": results}, args.out)
    harness.write_markdown(
        "warm_start", headers, rows, title="Warm start: new process to first result", out_dir=args.out,
        notes=["first result: median over fresh processes of the time from the child's first line to "
               "`cnnjit.compile(path)(x)` returning (interpreter start-up excluded); warm = compiled-program "
               "cache, full = `CNNJIT_PROGRAM_CACHE=0` on a warm kernel cache; onnxruntime = import, session "
               "(1 thread), first run; CPU s: user + system seconds of the whole child process (interpreter "
               "start-up included), median",
               "ms/run: steady state, median of interleaved runs in one process (warm object vs JIT)",
               "native build s: `cnnjit.cache.store_native` after the kernels are cached (what `cnnjit warm` "
               "adds to a compile)"])
    harness.print_table(headers, rows)
    return 0


if __name__ == "__main__":
    sys.exit(main())
