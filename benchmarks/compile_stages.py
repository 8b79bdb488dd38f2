"""Where a cold compile's CPU time goes: numba's stages and the functions compiled, per model.

Each model compiles in a fresh Python process on an empty ``CNNJIT_CACHE_DIR`` (one compile process,
``CNNJIT_COMPILE_JOBS=1``), with timers around numba's stages: bytecode analysis, IR processing, type
inference, lowering (our IR -> LLVM IR, including the LLVM work numba does inside it), and the LLVM steps
alone (per-function pre-pass, the final module's O3 pipeline, machine code). CPU seconds, so that other
load on the machine changes the figures less than wall time would. Per function: the kernels grouped by
variant (with their source size), the numba entry (the schedule) and cnnjit's runtime functions (compiled
once per cache, not per model).

    python benchmarks/compile_stages.py --models mobilenet_v2_224 mlperf_resnet
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.harness import bar_chart, machine_info, print_table, write_json, write_markdown  # noqa: E402

CHILD = r"""
import collections, json, os, sys, time
sys.path.insert(0, os.getcwd())
from numba.core import codegen, typed_passes, untyped_passes
from cnnjit.compiler.codegen import pipeline
STAGES = [(untyped_passes.TranslateByteCode, "run_pass", "bytecode"),
          (untyped_passes.IRProcessing, "run_pass", "ir_processing"),
          (typed_passes.NopythonTypeInference, "run_pass", "typing"),
          (typed_passes.NativeLowering, "run_pass", "lowering"),
          (codegen.CPUCodeLibrary, "_optimize_final_module", "llvm_module_opt"),
          (codegen.JITCodeLibrary, "_finalize_specific", "llvm_machine_code")]
stage_s = collections.Counter()
fn_s = collections.Counter()
def timed(f, label, per_fn):
    def g(self, *a, **k):
        t = time.process_time()
        try:
            return f(self, *a, **k)
        finally:
            dt = time.process_time() - t
            stage_s[label] += dt
            if per_fn:
                fid = a[0].func_id
                fn_s[fid.modname.rsplit(".", 1)[-1] + ":" + fid.func_qualname] += dt
    return g
for cls, name, label in STAGES:
    setattr(cls, name, timed(getattr(cls, name), label, name == "run_pass"))
# the per-function pre-pass runs through cnnjit's replacement while it compiles (pipeline.fast_typing)
pipeline._lean_optimize_functions = timed(pipeline._lean_optimize_functions, "llvm_function_prepass", False)
from benchmarks.models import load
from cnnjit.compiler.codegen.build import source_key
import cnnjit
model, feeds = load(sys.argv[1])
(iname, x), = feeds.items()
c = time.process_time()
m = cnnjit.compile(model, input_shapes={iname: x.shape})
m(x)
total = time.process_time() - c
prog = m._default_spec().program
variant = {}
for call in prog.calls:
    variant.setdefault("k_" + source_key(prog.kernel_sources[call.kernel]), (call.variant, call.kernel))
groups = collections.defaultdict(lambda: {"cpu_s": 0.0, "kernels": set(), "source_kb": 0.0})
for fn, s in fn_s.items():
    mod = fn.split(":")[0]
    if mod in variant:
        v, k = variant[mod]
        g = groups["kernel " + v]
        if k not in g["kernels"]:
            g["source_kb"] += len(prog.kernel_sources[k]) / 1e3
        g["kernels"].add(k)
    elif mod.startswith("e_"):
        g = groups["numba entry (schedule)"]
    elif mod.startswith("k_"):
        g = groups["kernel (other)"]
    else:
        g = groups["runtime and numba library functions"]
    g["cpu_s"] += s
print(json.dumps({"total_cpu_s": total, "stages": dict(stage_s),
                  "groups": {k: {**v, "kernels": len(v["kernels"])} for k, v in groups.items()}}))
"""


def measure(name: str, workdir: Path) -> dict[str, Any]:
    """One cold compile of ``name`` in a fresh process on an empty cache under ``workdir``."""
    cache = Path(tempfile.mkdtemp(prefix=f"cs-{name}-", dir=workdir))
    env = dict(os.environ, CNNJIT_CACHE_DIR=str(cache), NUMBA_CACHE_DIR=str(cache / "numba"),
               CNNJIT_COMPILE_JOBS="1", CNNJIT_PROGRAM_CACHE="0")
    p = subprocess.run([sys.executable, "-c", CHILD, name], env=env, capture_output=True, text=True, timeout=1200,
                       cwd=Path(__file__).resolve().parents[1])
    if p.returncode != 0:
        raise RuntimeError(f"child failed ({p.returncode}):\n{p.stderr[-3000:]}")
    return {"model": name, **json.loads(p.stdout.strip().splitlines()[-1])}


def main(argv: Sequence[str] | None = None) -> int:
    """Measure each model, print and write ``results/<name>.{json,md,png}``."""
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--models", nargs="+", default=["mobilenet_v2_224", "mlperf_resnet"])
    ap.add_argument("--out", default=None, help="results folder (default benchmarks/results)")
    ap.add_argument("--name", default="compile_stages", help="results file name (without extension)")
    args = ap.parse_args(argv)
    from benchmarks.models import MODEL_SET

    unknown = [m for m in args.models if m not in MODEL_SET]
    if unknown:
        ap.error(f"unknown model(s) {unknown}; known: {', '.join(MODEL_SET)}")
    with tempfile.TemporaryDirectory(prefix="compile-stages-") as tmp:
        results = [measure(m, Path(tmp)) for m in args.models]
    load = os.getloadavg()[0]
    stage_names = sorted({s for r in results for s in r["stages"]})
    headers = ["model", "total CPU s", *stage_names]
    rows = [[r["model"], round(r["total_cpu_s"], 2), *(round(r["stages"].get(s, 0.0), 2) for s in stage_names)]
            for r in results]
    grows = [[r["model"], g, v["kernels"], round(v["source_kb"], 1), round(v["cpu_s"], 2)]
             for r in results for g, v in sorted(r["groups"].items(), key=lambda kv: -kv[1]["cpu_s"])]
    print_table(headers, rows, title="cold compile: CPU s per numba stage")
    print_table(["model", "functions", "kernels", "source kB", "CPU s"], grows, title="CPU s by what compiles")
    info = machine_info()
    write_json(args.name, {"machine": info, "load_1min": load, "results": results}, args.out)
    notes = [f"command: `python benchmarks/compile_stages.py --models {' '.join(args.models)}`; 1-minute load "
             f"{load:.1f} after the runs",
             "CPU seconds of one fresh process per model, empty cache, CNNJIT_COMPILE_JOBS=1, from compile to "
             "the first call's end; stages nest: `lowering` includes the LLVM steps numba runs inside it",
             "second table (in the JSON): typing + lowering CPU per group of compiled functions"]
    write_markdown(args.name, headers, rows, title="Cold compile: where the CPU time goes", notes=notes,
                   out_dir=args.out, machine=info)
    bar_chart(args.name, [r["model"] for r in results],
              {s: [r["stages"].get(s, 0.0) for r in results] for s in stage_names},
              ylabel="CPU s", title="cold compile, CPU s per numba stage", out_dir=args.out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
