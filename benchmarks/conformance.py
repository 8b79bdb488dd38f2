"""Conformance table: every ONNX conformance case cnnjit can be asked to run, pass/fail per operator.

    python benchmarks/conformance.py [--shared ../shared] [--out benchmarks/results/conformance]

Runs ``../shared/onnx-node`` (op per case from its CASES-BY-OP.csv) and the onnx wheel's
``pytorch-converted`` and ``pytorch-operator`` cases (op = the model's op types) through
``cnnjit.backend``, compares as onnx's runner does (shape, dtype, rtol/atol of the case), and prints a
per-operator table with totals; writes JSON and markdown next to ``--out``.
"""

from __future__ import annotations

import argparse
import csv
import glob
import json
import os
import sys
import time
from collections import defaultdict
from pathlib import Path

import numpy as np
import onnx
from onnx import numpy_helper
from onnx.backend.test.runner import Runner

import cnnjit.backend


def _load_pbs(pattern: str) -> list[np.ndarray]:
    files = sorted(glob.glob(pattern), key=lambda p: int(Path(p).stem.split("_")[-1]))
    return [numpy_helper.to_array(onnx.load_tensor(f)) for f in files]


def run_case(case_dir: Path, rtol: float = 1e-3, atol: float = 1e-7) -> tuple[bool, str]:
    """(passed, one-line reason) for one case directory."""
    try:
        model = onnx.load(str(case_dir / "model.onnx"))
        rep = cnnjit.backend.prepare(model)
        for ds in sorted(case_dir.glob("test_data_set_*")):
            outs = rep.run(_load_pbs(str(ds / "input_*.pb")))
            Runner.assert_similar_outputs(_load_pbs(str(ds / "output_*.pb")), list(outs), rtol, atol)
        return True, ""
    except Exception as e:  # noqa: BLE001 - the table reports every failure
        return False, f"{type(e).__name__}: {str(e).splitlines()[0][:160] if str(e) else ''}"


def collect(shared: Path) -> list[tuple[str, str, Path, float, float]]:
    """(suite, op, case dir, rtol, atol) for every case."""
    cases = []
    node = shared / "onnx-node"
    if (node / "CASES-BY-OP.csv").is_file():
        with open(node / "CASES-BY-OP.csv", newline="") as f:
            for row in csv.DictReader(f):
                cases.append(("onnx-node", row["op"], node / row["case"], 1e-3, 1e-7))
    data = Path(onnx.__file__).parent / "backend" / "test" / "data"
    for suite in ("pytorch-converted", "pytorch-operator"):
        for d in sorted((data / suite).iterdir()):
            if not (d / "model.onnx").is_file():
                continue
            ops = sorted({n.op_type for n in onnx.load(str(d / "model.onnx")).graph.node} - {"Constant"})
            rtol, atol = 1e-3, 1e-7
            if (d / "data.json").is_file():
                meta = json.loads((d / "data.json").read_text())
                rtol, atol = meta.get("rtol", rtol), meta.get("atol", atol)
            cases.append((suite, "+".join(ops) or "Constant", d, rtol, atol))
    return cases


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--shared", default=str(Path(__file__).resolve().parents[1].parent / "shared"))
    ap.add_argument("--out", default=str(Path(__file__).resolve().parent / "results" / "conformance"))
    ap.add_argument("--failures", action="store_true", help="list every failing case with its reason")
    args = ap.parse_args(argv)

    t0 = time.perf_counter()
    per_op: dict[tuple[str, str], list[int]] = defaultdict(lambda: [0, 0])
    failures = []
    for suite, op, d, rtol, atol in collect(Path(args.shared)):
        ok, why = run_case(d, rtol, atol)
        per_op[(suite, op)][0] += ok
        per_op[(suite, op)][1] += 1
        if not ok:
            failures.append((suite, d.name, why))
    elapsed = time.perf_counter() - t0

    totals: dict[str, list[int]] = defaultdict(lambda: [0, 0])
    for (suite, _), (p, n) in per_op.items():
        totals[suite][0] += p
        totals[suite][1] += n
    lines = ["| suite | operator | passed | attempted |", "|---|---|---:|---:|"]
    for (suite, op), (p, n) in sorted(per_op.items()):
        lines.append(f"| {suite} | {op} | {p} | {n} |" if p == n else f"| {suite} | **{op}** | {p} | {n} |")
    for suite, (p, n) in sorted(totals.items()):
        lines.append(f"| **{suite}** | **total** | **{p}** | **{n}** |")
    md = "\n".join(lines)
    try:
        from rich.console import Console
        from rich.table import Table

        table = Table(title=f"cnnjit conformance ({elapsed:.0f} s)")
        for col in ("suite", "operator", "passed", "attempted"):
            table.add_column(col, justify="right" if col in ("passed", "attempted") else "left")
        for (suite, op), (p, n) in sorted(per_op.items()):
            table.add_row(suite, op, str(p), str(n), style=None if p == n else "red")
        for suite, (p, n) in sorted(totals.items()):
            table.add_row(suite, "TOTAL", str(p), str(n), style="bold")
        Console().print(table)
    except ImportError:
        print(md)
    if args.failures:
        for suite, name, why in failures:
            print(f"FAIL {suite}/{name}: {why}")
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.with_suffix(".md").write_text(md + "\n")
    out.with_suffix(".json").write_text(json.dumps({
        "elapsed_s": elapsed,
        "totals": {s: {"passed": p, "attempted": n} for s, (p, n) in totals.items()},
        "per_op": [{"suite": s, "op": o, "passed": p, "attempted": n} for (s, o), (p, n) in sorted(per_op.items())],
        "failures": [{"suite": s, "case": c, "reason": w} for s, c, w in failures],
    }, indent=1))
    print(f"wrote {out.with_suffix('.md')} and {out.with_suffix('.json')}", file=sys.stderr)
    return 0 if not failures else 1


if __name__ == "__main__":
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    sys.exit(main())
