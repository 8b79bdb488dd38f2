"""MLPerf Tiny int8 models on a Cortex-M4, a Cortex-M7 and a Cortex-M55 (MVE): flash, RAM (arena + measured
stack) and bit-exactness in qemu.

    python benchmarks/cortexm/run.py                 # the four models -> benchmarks/results/cortexm.{md,json}
    python benchmarks/cortexm/run.py --models kws --cpus cortex-m4   # one

Each model is compiled with ``cnnjit.compile(M, target="thumbv7em-none-eabihf", cpu=CPU)`` (the M55:
``thumbv8.1m.main-none-eabihf``), linked with its generated bare-metal harness (``arm-none-eabi-gcc``, newlib
nano for memcpy/memset and libm's rintf) and run once in ``qemu-system-arm`` (``-M mps2-an386`` for the
Cortex-M4, ``mps2-an500`` for the Cortex-M7, FPv5, ``mps3-an547`` for the Cortex-M55) on seeded random int8
input; the output must equal the host build's bytes. Flash is the linked program's
``.text + .ARM.exidx + .data`` (code, weights, harness, libc parts); RAM is the arena plus the stack high-water
mark the harness measures (the stack is painted before the run). TensorFlow Lite Micro's arena sizes are the
ones issue 21 quotes for its host build. Needs ``gcc-arm-none-eabi`` and ``qemu-system-arm``.
"""

from __future__ import annotations

import argparse
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
from benchmarks.harness import write_json, write_markdown  # noqa: E402

SHARED = Path(__file__).resolve().parents[3] / "shared" / "models" / "mlperf-tiny"
#: short name -> (file, TensorFlow Lite Micro arena bytes)
MODELS = {"kws": ("kws_ref_model.tf2onnx.onnx", 24272), "vww": ("vww_96_int8.tf2onnx.onnx", 103680),
          "resnet": ("pretrainedResnet_quant.tf2onnx.onnx", 55984), "ad": ("ad01_int8.tf2onnx.onnx", 3984)}


def run_one(short: str, folder: Path, cpu: str = "cortex-m4") -> dict:
    import cnnjit
    from cnnjit.compiler.target import compile_for_target
    from cnnjit.compiler.target.cortexm import CPUS

    path = SHARED / MODELS[short][0]
    t0 = time.perf_counter()
    art = compile_for_target(str(path), target=CPUS[cpu][0], cpu=cpu, name=short)
    compile_s = time.perf_counter() - t0
    d = folder / cpu / short
    art.save(d)
    elf = art.link(d)
    rng = np.random.default_rng(1)
    feeds = []
    for i, t in enumerate(art.inputs):
        info = np.iinfo(t.dtype) if t.dtype.kind in "iu" else None
        x = (rng.integers(info.min, info.max + 1, t.shape) if info else rng.standard_normal(t.shape)).astype(t.dtype)
        x.tofile(d / f"in{i}.bin")
        feeds.append(x)
    t0 = time.perf_counter()
    r = subprocess.run(art.qemu_command(str(d)), cwd=d, capture_output=True, text=True, timeout=3600)
    qemu_s = time.perf_counter() - t0
    m = re.search(r"arena (\d+) stack (\d+) status (\d+)", r.stdout)
    if r.returncode != 0 or not m:
        raise RuntimeError(f"{short}: qemu exit {r.returncode}: {r.stdout} {r.stderr}")
    want = cnnjit.compile(str(path))(*feeds)
    want = want if isinstance(want, (list, tuple)) else [want]
    exact = all(np.array_equal(np.fromfile(d / f"out{i}.bin", t.dtype), np.asarray(w).ravel())
                for i, (t, w) in enumerate(zip(art.outputs, want)))
    size = subprocess.run(["arm-none-eabi-size", "-A", str(elf)], capture_output=True, text=True).stdout
    flash = sum(int(v) for _, v in re.findall(r"^(\.text|\.ARM\.exidx|\.data)\s+(\d+)", size, re.M))
    arena, stack = int(m.group(1)), int(m.group(2))
    tflm = MODELS[short][1]
    return {"model": short, "cpu": cpu, "qemu": CPUS[cpu][2], "file": MODELS[short][0],
            "weights": art.weight_bytes, "object": len(art.object),
            "flash": flash, "flash_budget": int(1.2 * art.weight_bytes + 32 * 1024), "arena": arena, "stack": stack,
            "ram": arena + stack, "tflm_arena": tflm, "ram_budget": int(0.8 * tflm), "exact": exact,
            "compile_s": round(compile_s, 1), "qemu_s": round(qemu_s, 2)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--models", nargs="*", default=list(MODELS), choices=list(MODELS))
    cpus = ["cortex-m4", "cortex-m7", "cortex-m55"]
    ap.add_argument("--cpus", nargs="*", default=cpus, choices=cpus)
    ap.add_argument("--out", default=None, help="results folder (default benchmarks/results)")
    args = ap.parse_args()
    rows = []
    with tempfile.TemporaryDirectory(prefix="cnnjit-m4-") as tmp:
        for cpu in args.cpus:
            for short in args.models:
                res = run_one(short, Path(tmp), cpu)
                print(res, flush=True)
                rows.append(res)
    table = [(r["model"], f'{r["cpu"]} ({r["qemu"]})', r["weights"], r["flash"], r["flash_budget"],
              "yes" if r["flash"] <= r["flash_budget"] else "NO", r["arena"], r["stack"], r["ram"], r["tflm_arena"],
              r["ram_budget"],
              "yes" if r["ram"] <= r["ram_budget"] else "NO", "yes" if r["exact"] else "NO") for r in rows]
    write_markdown("cortexm", ["model", "cpu (qemu machine)", "weights B", "flash B", "flash budget B", "flash ok",
                               "arena B", "stack B",
                               "RAM B", "TFLM arena B", "RAM budget B", "RAM ok", "bit-exact"], table,
                   title="MLPerf Tiny int8 on Cortex-M4, M7 and M55 (qemu mps2-an386, mps2-an500, mps3-an547)",
                   out_dir=args.out,
                   notes=["flash: .text + .ARM.exidx + .data of the linked test program (code, weights, start-up, "
                          "newlib parts); budget 1.2 x weights + 32 KiB",
                          "RAM: the arena (static) + the stack high-water mark measured in qemu (the harness paints "
                          "the stack below main's frame before the run and finds the deepest word the run changed); "
                          "budget 0.8 x TensorFlow Lite Micro's arena (issue 21's figures)",
                          "bit-exact: the output bytes equal the host build's on seeded random int8 input",
                          "command: python benchmarks/cortexm/run.py"])
    write_json("cortexm", {"rows": rows}, out_dir=args.out)


if __name__ == "__main__":
    main()
