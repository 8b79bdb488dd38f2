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
import difflib
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
from .errors import InputError

SUITES = ("onnx-node", "pytorch-converted", "pytorch-operator")


def default_shared_dir() -> Path:
    """``CNNJIT_SHARED`` if set, else the ``shared`` folder next to the repository."""
    env = os.environ.get("CNNJIT_SHARED")
    return Path(env) if env else Path(__file__).resolve().parents[1].parent / "shared"


def _load_pbs(pattern: str) -> list[np.ndarray]:
    files = sorted(glob.glob(pattern), key=lambda p: int(Path(p).stem.split("_")[-1]))
    return [numpy_helper.to_array(onnx.load_tensor(f)) for f in files]


def run_case(case_dir: Path, rtol: float = 1e-3, atol: float = 1e-7) -> tuple[bool, str]:
    """(passed, one-line reason) for one case directory.

    Pass or fail is onnx's own runner check (``Runner.assert_similar_outputs``); the reason of a mismatch
    is ``mismatch`` (which output, shapes, dtypes, how many values, max abs/rel error), because numpy's
    assertion message starts with an empty line and a one-line report would show nothing of it."""
    try:
        model = onnx.load(str(case_dir / "model.onnx"))
        rep = backend.prepare(model)
        for ds in sorted(case_dir.glob("test_data_set_*")):
            outs = list(rep.run(_load_pbs(str(ds / "input_*.pb"))))
            expected = _load_pbs(str(ds / "output_*.pb"))
            try:
                Runner.assert_similar_outputs(expected, outs, rtol, atol)
            except AssertionError as e:
                why = mismatch(expected, outs, rtol, atol) or _first_line(e)
                return False, f"AssertionError: {ds.name}: {why}"
        return True, ""
    except Exception as e:  # noqa: BLE001 - the table reports every failure
        return False, f"{type(e).__name__}: {_first_line(e)}"


def _first_line(e: BaseException) -> str:
    """The first non-empty line of ``e``'s message (160 characters at most)."""
    return next((ln.strip() for ln in str(e).splitlines() if ln.strip()), "")[:160]


def mismatch(expected: Sequence[Any], actual: Sequence[Any], rtol: float, atol: float) -> str:
    """Why ``actual`` does not match ``expected`` (``""`` if it does, or if an output is not an array), in one
    line: the output count, or the first differing output's shape, dtype, or values outside ``rtol``/``atol``
    (how many, max abs and rel error, the worst index with both values)."""
    if len(actual) != len(expected):
        return f"{len(actual)} outputs, expected {len(expected)}"
    for i, (want, got) in enumerate(zip(expected, actual)):
        if not isinstance(want, np.ndarray) or not isinstance(got, np.ndarray):
            return ""
        if got.shape != want.shape:
            return f"output {i}: shape {got.shape}, expected {want.shape}"
        if got.dtype != want.dtype:
            return f"output {i}: dtype {got.dtype}, expected {want.dtype}"
        if want.dtype.kind not in "fiu":  # strings, objects, booleans: equal or not
            bad = np.asarray(got != want)
            if bad.any():
                return f"output {i}: {int(bad.sum())} of {want.size} values differ"
            continue
        w, g = want.astype(np.float64), got.astype(np.float64)
        bad = ~np.isclose(g, w, rtol=rtol, atol=atol, equal_nan=True)
        if not bad.any():
            continue
        with np.errstate(invalid="ignore", divide="ignore"):
            err = np.where(bad, np.abs(g - w), 0.0)
            rel = np.where(bad & (w != 0), err / np.abs(w), 0.0)
        nan = int(np.isnan(err).sum())
        err = np.nan_to_num(err, nan=0.0, posinf=np.inf)
        at = np.unravel_index(int(np.argmax(err)) if err.any() else int(np.argmax(bad)), want.shape)
        return (f"output {i}: {int(bad.sum())} of {want.size} values outside rtol={rtol:g}, atol={atol:g}"
                + (f" ({nan} NaN against a number)" if nan else "")
                + f": max abs error {err.max():.4g}, max rel error {np.nan_to_num(rel, nan=0.0).max():.4g} "
                f"(worst at {list(map(int, at))}: got {g[at]:.6g}, expected {w[at]:.6g}; shape {want.shape})")
    return ""


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


def check_ops(ops: Sequence[str], cases: Sequence[tuple[str, str, Path, float, float]]) -> None:
    """``InputError`` if an op of ``ops`` (case-insensitive) is in none of ``cases`` (from ``collect``): it
    names the unknown ops with close matches among the cases' ops, and lists them all."""
    known = sorted({o for c in cases for o in c[1].split("+")})
    by_lower = {o.lower(): o for o in known}
    unknown = [o for o in ops if o.lower() not in by_lower]
    if not unknown:
        return
    close = [m for o in unknown for m in difflib.get_close_matches(o.lower(), list(by_lower), n=3, cutoff=0.6)]
    guess = f"; did you mean {' or '.join(by_lower[m] for m in dict.fromkeys(close))}?" if close else ""
    raise InputError(f"no conformance case has operator {', '.join(map(repr, unknown))}{guess}\n"
                     f"The cases cover {len(known)} operators: {', '.join(known)}")


def run_conformance(shared: Path | str | None = None, *, suites: Sequence[str] = SUITES,
                    ops: Sequence[str] | None = None,
                    progress: Callable[[int, int, str], None] | None = None) -> dict[str, Any]:
    """Run the cases (only those whose op contains one of ``ops``, case-insensitively, if given).

    ``progress(done, total, case_name)`` is called after every case. Returns a JSON-ready dict:
    ``elapsed_s``, ``totals`` per suite, ``per_op`` rows and ``failures`` with reasons. An op in ``ops``
    that no case of ``suites`` has is an ``InputError`` naming close matches (before any case runs).
    """
    shared = Path(shared) if shared is not None else default_shared_dir()
    cases = collect(shared, suites)
    if ops:
        check_ops(ops, cases)
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


__all__ = ["SUITES", "default_shared_dir", "run_case", "mismatch", "collect", "check_ops", "run_conformance",
           "to_markdown", "print_table", "write_results"]
