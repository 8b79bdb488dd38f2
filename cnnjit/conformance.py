"""Conformance table: every ONNX conformance case cnnjit can be asked to run, pass/fail per operator.

    from cnnjit.conformance import run_conformance, to_markdown
    result = run_conformance(shared_dir)            # or: cnnjit conformance / python benchmarks/conformance.py
    print(to_markdown(result))

Runs ``<shared>/onnx-node`` (op per case from its CASES-BY-OP.csv) and the onnx wheel's
``pytorch-converted`` and ``pytorch-operator`` cases (op = the model's op types) through
``cnnjit.backend``, compares as onnx's runner does (shape, dtype, rtol/atol of the case), and reports
per-operator pass counts with totals and every failure with its reason.
"""

from __future__ import annotations

import csv
import glob
import json
import os
import time
from collections import defaultdict
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import onnx
from onnx import numpy_helper
from onnx.backend.test.runner import Runner

from . import backend

SUITES = ("onnx-node", "pytorch-converted", "pytorch-operator")


def default_shared_dir() -> Path:
    """``CNNJIT_SHARED`` if set, else the ``shared`` folder next to the repository."""
    env = os.environ.get("CNNJIT_SHARED")
    return Path(env) if env else Path(__file__).resolve().parents[1].parent / "shared"


def _load_pbs(pattern: str) -> list[np.ndarray]:
    files = sorted(glob.glob(pattern), key=lambda p: int(Path(p).stem.split("_")[-1]))
    return [numpy_helper.to_array(onnx.load_tensor(f)) for f in files]


def run_case(case_dir: Path, rtol: float = 1e-3, atol: float = 1e-7) -> tuple[bool, str]:
    """(passed, one-line reason) for one case directory."""
    try:
        model = onnx.load(str(case_dir / "model.onnx"))
        rep = backend.prepare(model)
        for ds in sorted(case_dir.glob("test_data_set_*")):
            outs = rep.run(_load_pbs(str(ds / "input_*.pb")))
            Runner.assert_similar_outputs(_load_pbs(str(ds / "output_*.pb")), list(outs), rtol, atol)
        return True, ""
    except Exception as e:  # noqa: BLE001 - the table reports every failure
        return False, f"{type(e).__name__}: {str(e).splitlines()[0][:160] if str(e) else ''}"


def collect(shared: Path, suites: Sequence[str] = SUITES) -> list[tuple[str, str, Path, float, float]]:
    """(suite, op, case dir, rtol, atol) for every case of the chosen suites."""
    cases = []
    node = Path(shared) / "onnx-node"
    if "onnx-node" in suites and (node / "CASES-BY-OP.csv").is_file():
        with open(node / "CASES-BY-OP.csv", newline="") as f:
            for row in csv.DictReader(f):
                cases.append(("onnx-node", row["op"], node / row["case"], 1e-3, 1e-7))
    data = Path(onnx.__file__).parent / "backend" / "test" / "data"
    for suite in ("pytorch-converted", "pytorch-operator"):
        if suite not in suites or not (data / suite).is_dir():
            continue
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


def run_conformance(shared: Path | str | None = None, *, suites: Sequence[str] = SUITES,
                    ops: Sequence[str] | None = None,
                    progress: Callable[[int, int, str], None] | None = None) -> dict[str, Any]:
    """Run the cases (only those whose op contains one of ``ops``, case-insensitively, if given).

    ``progress(done, total, case_name)`` is called after every case. Returns a JSON-ready dict:
    ``elapsed_s``, ``totals`` per suite, ``per_op`` rows and ``failures`` with reasons.
    """
    shared = Path(shared) if shared is not None else default_shared_dir()
    cases = collect(shared, suites)
    if ops:
        wanted = [o.lower() for o in ops]
        cases = [c for c in cases if any(w in c[1].lower().split("+") or w == c[1].lower() for w in wanted)]
    t0 = time.perf_counter()
    per_op: dict[tuple[str, str], list[int]] = defaultdict(lambda: [0, 0])
    failures = []
    for i, (suite, op, d, rtol, atol) in enumerate(cases):
        ok, why = run_case(d, rtol, atol)
        per_op[(suite, op)][0] += ok
        per_op[(suite, op)][1] += 1
        if not ok:
            failures.append((suite, d.name, why))
        if progress is not None:
            progress(i + 1, len(cases), d.name)
    elapsed = time.perf_counter() - t0
    totals: dict[str, list[int]] = defaultdict(lambda: [0, 0])
    for (suite, _), (p, n) in per_op.items():
        totals[suite][0] += p
        totals[suite][1] += n
    return {
        "elapsed_s": elapsed,
        "shared": str(shared),
        "totals": {s: {"passed": p, "attempted": n} for s, (p, n) in sorted(totals.items())},
        "per_op": [{"suite": s, "op": o, "passed": p, "attempted": n} for (s, o), (p, n) in sorted(per_op.items())],
        "failures": [{"suite": s, "case": c, "reason": w} for s, c, w in failures],
    }


def to_markdown(result: dict[str, Any]) -> str:
    """The per-operator table as markdown (failing operators in bold), totals last."""
    lines = ["| suite | operator | passed | attempted |", "|---|---|---:|---:|"]
    for r in result["per_op"]:
        s, o, p, n = r["suite"], r["op"], r["passed"], r["attempted"]
        lines.append(f"| {s} | {o} | {p} | {n} |" if p == n else f"| {s} | **{o}** | {p} | {n} |")
    for s, t in result["totals"].items():
        lines.append(f"| **{s}** | **total** | **{t['passed']}** | **{t['attempted']}** |")
    return "\n".join(lines)


def print_table(result: dict[str, Any], failures: bool = False, file: Any = None) -> None:
    """Print the table with rich if it is installed (plain markdown otherwise), and optionally the failures."""
    try:
        from rich.console import Console
        from rich.table import Table
    except ImportError:
        print(to_markdown(result), file=file)
    else:
        table = Table(title=f"cnnjit conformance ({result['elapsed_s']:.0f} s)")
        for col in ("suite", "operator", "passed", "attempted"):
            table.add_column(col, justify="right" if col in ("passed", "attempted") else "left")
        for r in result["per_op"]:
            table.add_row(r["suite"], r["op"], str(r["passed"]), str(r["attempted"]),
                          style=None if r["passed"] == r["attempted"] else "red")
        for s, t in result["totals"].items():
            table.add_row(s, "TOTAL", str(t["passed"]), str(t["attempted"]), style="bold")
        Console(file=file).print(table)
    if failures:
        for f in result["failures"]:
            print(f"FAIL {f['suite']}/{f['case']}: {f['reason']}", file=file)


def write_results(result: dict[str, Any], out: Path | str) -> tuple[Path, Path]:
    """Write ``<out>.md`` and ``<out>.json``; return both paths."""
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    md, js = out.with_suffix(".md"), out.with_suffix(".json")
    md.write_text(to_markdown(result) + "\n")
    js.write_text(json.dumps({k: v for k, v in result.items() if k != "shared"}, indent=1))
    return md, js


__all__ = ["SUITES", "default_shared_dir", "run_case", "collect", "run_conformance", "to_markdown", "print_table",
           "write_results"]
