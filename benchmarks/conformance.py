"""Conformance table: every ONNX conformance case cnnjit can be asked to run, pass/fail per operator.

    python benchmarks/conformance.py [--shared ../shared] [--out benchmarks/results/conformance] [--failures]

The same as ``cnnjit conformance``: runs ``../shared/onnx-node`` (op per case from its CASES-BY-OP.csv) and
the onnx wheel's ``pytorch-converted`` and ``pytorch-operator`` cases through ``cnnjit.backend``, prints a
per-operator table with totals and writes JSON and markdown next to ``--out``. The logic lives in
``cnnjit.conformance``.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from cnnjit.conformance import collect, print_table, run_case, run_conformance, write_results  # noqa: F401


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--shared", default=str(Path(__file__).resolve().parents[1].parent / "shared"))
    ap.add_argument("--out", default=str(Path(__file__).resolve().parent / "results" / "conformance"))
    ap.add_argument("--failures", action="store_true", help="list every failing case with its reason")
    args = ap.parse_args(argv)
    result = run_conformance(args.shared)
    print_table(result, failures=args.failures)
    md, js = write_results(result, args.out)
    print(f"wrote {md} and {js}", file=sys.stderr)
    return 0 if not result["failures"] else 1


if __name__ == "__main__":
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    sys.exit(main())
