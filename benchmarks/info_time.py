"""``cnnjit info MODEL``: wall and CPU time of the whole process (issue 22: the recognizer's inputs in < 1 s).

For each model, fresh processes, interleaved round by round:

* ``info``: the console script ``cnnjit info MODEL`` (the frontend reads the model without the onnx package);
* ``info (onnx)``: the same command with onnx imported first (``python -c "import onnx; ..."``), so the
  frontend uses onnx's classes and helpers: what ``cnnjit info`` cost before it stopped importing onnx;
* ``info --shape``: ``cnnjit info MODEL --shape ...`` at the model's real input shape (FLOPs counted there).

Wall time is measured around the child (``time.perf_counter``), CPU time (user + system) from
``os.wait4``; both include the interpreter's start-up. Python writes its bytecode cache as an installed
package would (``PYTHONDONTWRITEBYTECODE`` is dropped for the children; one warm-up round first). The load
average before and after is recorded: on a shared machine, wall time is CPU time plus waiting for a core.

    python benchmarks/info_time.py [--rounds 9]

Writes ``benchmarks/results/info_time.{json,md}``.
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks import harness

CNNJIT = shutil.which("cnnjit") or str(Path(sys.executable).parent / "cnnjit")
ONNX_FIRST = "import sys, onnx\nfrom cnnjit.cli import main\nsys.exit(main(sys.argv[1:]))"
#: (package, file inside it, the --shape the model runs at)
MODELS = {
    "PP-OCRv4 rec": ("rapidocr_onnxruntime", "models/ch_PP-OCRv4_rec_infer.onnx", "x=1,3,48,320"),
    "PP-OCR cls": ("rapidocr_onnxruntime", "models/ch_ppocr_mobile_v2.0_cls_infer.onnx", "x=1,3,48,192"),
    "ddddocr det": ("ddddocr", "common_det.onnx", "images=1,3,416,416"),
}
TARGET_S = 1.0


def _model_path(package: str, rel: str) -> Path | None:
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        return None
    path = Path(next(iter(spec.submodule_search_locations))) / rel
    return path if path.is_file() else None


def _timed(cmd: list[str], env: dict[str, str]) -> tuple[float, float]:
    """(wall s, CPU s) of one child process, which must succeed."""
    t0 = time.perf_counter()
    p = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env)
    _, status, usage = os.wait4(p.pid, 0)
    wall = time.perf_counter() - t0
    if os.waitstatus_to_exitcode(status) != 0:
        raise RuntimeError(f"{cmd} failed: {p.stderr.read().decode() if p.stderr else ''}")
    return wall, usage.ru_utime + usage.ru_stime


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=9)
    args = ap.parse_args()
    env = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
    load_before = os.getloadavg()
    rows, payload = [], {"machine": harness.machine_info(), "rounds": args.rounds, "models": {}}
    for label, (package, rel, shape) in MODELS.items():
        path = _model_path(package, rel)
        if path is None:
            print(f"skipped {label}: {package} not installed")
            continue
        variants = {"info": [CNNJIT, "info", str(path)],
                    "info (onnx)": [sys.executable, "-c", ONNX_FIRST, "info", str(path)],
                    "info --shape": [CNNJIT, "info", str(path), "--shape", shape]}
        for cmd in variants.values():  # warm-up: bytecode cache, file cache
            _timed(cmd, env)
        times: dict[str, list[tuple[float, float]]] = {v: [] for v in variants}
        for _ in range(args.rounds):
            for v, cmd in variants.items():
                times[v].append(_timed(cmd, env))
        result = {}
        for v, ts in times.items():
            walls, cpus = [w for w, _ in ts], [c for _, c in ts]
            result[v] = {"wall_median_s": statistics.median(walls), "wall_min_s": min(walls),
                         "cpu_median_s": statistics.median(cpus), "cpu_min_s": min(cpus)}
            rows.append([label, v, result[v]["wall_median_s"], result[v]["wall_min_s"], result[v]["cpu_median_s"],
                         result[v]["cpu_min_s"], TARGET_S if v == "info" else ""])
        payload["models"][label] = {"path": rel, "shape": shape, "results": result}
    load_after = os.getloadavg()
    payload["load_average"] = {"before": load_before, "after": load_after}
    headers = ["model", "command", "wall median s", "wall min s", "CPU median s", "CPU min s", "target s"]
    harness.print_table(headers, rows, title="cnnjit info: whole process")
    harness.write_json("info_time", payload)
    notes = [
        f"{args.rounds} interleaved rounds of fresh processes after one warm-up round; wall = the child's whole "
        "life (interpreter start-up included), CPU = user + system (os.wait4)",
        "info (onnx): the same command with onnx imported first, so the frontend uses onnx's classes and helpers "
        "(what `cnnjit info` cost before it read models without onnx)",
        f"load average (1/5/15 min) before {load_before[0]:.1f}/{load_before[1]:.1f}/{load_before[2]:.1f}, after "
        f"{load_after[0]:.1f}/{load_after[1]:.1f}/{load_after[2]:.1f} on 2 CPUs: above 2, wall time includes "
        "waiting for a core (CPU time does not)",
    ]
    harness.write_markdown("info_time", headers, rows, title="cnnjit info: whole-process time", notes=notes)


if __name__ == "__main__":
    main()
