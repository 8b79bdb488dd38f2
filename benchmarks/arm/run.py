"""Compile the float MLPerf Tiny models (and a small MobileNetV2) for aarch64, and time or analyse them.

    python benchmarks/arm/run.py --cpu cortex-a53 -o build/arm     # compile + link: folders to copy to a board
    python benchmarks/arm/run.py --cpu cortex-a76 --qemu --runs 20  # also run under qemu-aarch64 (emulated time)
    python benchmarks/arm/run.py --cpu cortex-a76 --mca             # llvm-mca: hottest loop of each conv kernel

On a board: copy build/arm/<model>/ over and run ``./<model>_main --bench 100`` (statically linked), or
rebuild there with ``gcc -O2 -o <model>_main <model>_main.c <model>.o -lm``. qemu times are emulation times:
they check that the code runs with the CPU's features, not how fast it is.
"""

from __future__ import annotations

import argparse
import re
import shutil
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))

from benchmarks.models import mobilenet_v2  # noqa: E402
from cnnjit.compiler.target import compile_for_target  # noqa: E402
from cnnjit.compiler.target.aarch64 import QEMU_CPU, find_tool  # noqa: E402

TINY = REPO.parent / "shared" / "models" / "mlperf-tiny"
MODELS = {"kws": TINY / "kws_ref_model_float32.tf2onnx.onnx", "ad01": TINY / "ad01_fp32.tf2onnx.onnx",
          "resnet": TINY / "pretrainedResnet.tf2onnx.onnx", "vww": TINY / "vww_96_float.tf2onnx.onnx",
          "mnv2": None}


def hottest_loop(asm: str) -> str:
    """The basic block with the most NEON FMAs that branches back to itself (else the one with the most)."""
    blocks = re.split(r"^(\.LBB\d+_\d+):\n", asm, flags=re.M)
    best, best_n, best_loop = asm, -1, False
    for i in range(1, len(blocks) - 1, 2):
        label, body = blocks[i], blocks[i + 1]
        n = body.count("fmla")
        loop = bool(re.search(rf"\bb(\.\w+)?\s+{re.escape(label)}\b|\bcbn?z\s+\w+,\s*{re.escape(label)}\b", body))
        if (loop, n) > (best_loop, best_n):
            best, best_n, best_loop = body, n, loop
    return best


def mca(asm: str, cpu: str) -> dict:
    r = subprocess.run([find_tool("llvm-mca"), "-mtriple=aarch64", f"-mcpu={cpu}", "-iterations=200"], input=asm,
                       capture_output=True, text=True, timeout=120)
    m = re.search(r"Total Cycles:\s+(\d+)", r.stdout)
    cycles = int(m.group(1)) / 200 if m else float("nan")
    return {"cycles": cycles, "fma": asm.count("fmla"), "fma_per_cycle": asm.count("fmla") / cycles if m else 0}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--cpu", default="cortex-a53")
    ap.add_argument("--features", default=None)
    ap.add_argument("-o", "--output", default="build/arm")
    ap.add_argument("--model", action="append", choices=list(MODELS))
    ap.add_argument("--qemu", action="store_true", help="run each model under qemu-aarch64 -cpu <matching>")
    ap.add_argument("--runs", type=int, default=10)
    ap.add_argument("--mca", action="store_true", help="llvm-mca estimates per conv kernel (needs llvm)")
    args = ap.parse_args()
    gcc = find_tool("aarch64-linux-gnu-gcc")
    for name in args.model or list(MODELS):
        path = MODELS[name]
        if path is not None and not path.is_file():
            print(f"{name}: {path} not found, skipped")
            continue
        model = str(path) if path else mobilenet_v2(width=0.35, size=32, classes=10)
        art = compile_for_target(model, target="aarch64-linux-gnu", cpu=args.cpu, features=args.features, name=name)
        folder = Path(args.output) / name
        paths = art.save(folder)
        exe = folder / f"{name}_main"
        subprocess.run([gcc, "-O2", "-static", "-o", str(exe), str(paths["main"]), str(paths["object"]), "-lm"],
                       check=True)
        print(f"{name}: object {len(art.object)} B (weights {art.weight_bytes} B), scratch {art.scratch_bytes} B, "
              f"{len(art.kernels)} kernels -> {folder}")
        if args.qemu:
            qcpu = QEMU_CPU.get(args.cpu, "max")
            r = subprocess.run([shutil.which("qemu-aarch64") or find_tool("qemu-aarch64"), "-cpu", qcpu, str(exe),
                                "--bench", str(args.runs)], capture_output=True, text=True, timeout=600)
            print(f"  qemu -cpu {qcpu}: {(r.stdout or r.stderr).strip()}")
        if args.mca:
            for sym in art.conv_kernels():
                loop = hottest_loop(art.kernel_asm(sym)[sym])
                est = {c: mca(loop, c) for c in ("cortex-a76", "cortex-a53")}
                print(f"  {sym} ({', '.join(sorted(set(art.kernel_notes[art.kernels[sym]])))[:60]}): hottest loop "
                      + "; ".join(f"{c}: {e['cycles']:.1f} cycles/iter, {e['fma']} fmla, {e['fma_per_cycle']:.2f} "
                                  "fmla/cycle" for c, e in est.items()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
