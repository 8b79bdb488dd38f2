"""``cnnjit conformance``: pass/fail per operator on the ONNX conformance cases (``cnnjit.conformance``)."""

from __future__ import annotations

import argparse
import os
from pathlib import Path

from cnnjit.errors import InputError

from .common import EXIT_ERROR, EXIT_OK, CliError, UsageError
from .flags import output_option
from .output import Progress, emit_json, note

HELP = "pass/fail per operator on the ONNX conformance cases"
EPILOG = """example:
  cnnjit conformance
  cnnjit conformance --op Conv --op Relu --failures -o results/conformance

Runs the ONNX conformance cases (shared/onnx-node and the onnx wheel's pytorch-converted and
pytorch-operator suites) through cnnjit.backend; exit code 1 if any case fails. -o PREFIX also writes
PREFIX.md and PREFIX.json (--out, its old name, still works)."""


_SHARED_HINT = ("--shared names the folder that holds onnx-node/CASES-BY-OP.csv (default: CNNJIT_SHARED, else "
                "../shared beside the repository)")


def parents() -> list[argparse.ArgumentParser]:
    return [output_option("PREFIX", "also write PREFIX.md and PREFIX.json", alias="--out")]


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--shared", metavar="DIR", help="the shared data folder (default: CNNJIT_SHARED or ../shared)")
    p.add_argument("--op", action="append", metavar="OP", help="only cases of this operator (repeat)")
    p.add_argument("--suite", action="append", metavar="SUITE",
                   help="only this suite: onnx-node, pytorch-converted, pytorch-operator (repeat)")
    p.add_argument("--failures", action="store_true", help="list every failing case with its reason")


def main(args: argparse.Namespace) -> int:
    from cnnjit.conformance import SUITES, default_shared_dir, print_table, run_conformance, write_results

    suites = args.suite or list(SUITES)
    bad = [s for s in suites if s not in SUITES]
    if bad:
        raise UsageError(f"unknown suite(s) {bad}", "suites: " + ", ".join(SUITES))
    shared = Path(args.shared) if args.shared else default_shared_dir()
    _check_shared(shared, "--shared" if args.shared else "CNNJIT_SHARED" if os.environ.get("CNNJIT_SHARED") else "",
                  args.suite or [], args.json)
    with Progress(enabled=not args.json) as prog:
        try:
            result = run_conformance(shared, suites=suites, ops=args.op,
                                     progress=lambda d, n, _c: prog.update("cases", d, n))
        except InputError as e:  # an --op no case has
            first, _, rest = str(e).partition("\n")
            raise UsageError(first, rest) from None
    if not result["per_op"]:
        raise UsageError("no conformance cases match" + (f" --op {' '.join(args.op)}" if args.op else ""),
                         "operators are ONNX op types, e.g. --op Conv --op Relu")
    if args.output:
        try:
            md, js = write_results(result, args.output)
        except OSError as e:
            raise CliError(f"cannot write {args.output!r}: {e.strerror or e}") from None
    if args.json:
        emit_json(result)
    else:
        print_table(result, failures=args.failures)
        passed = sum(t["passed"] for t in result["totals"].values())
        attempted = sum(t["attempted"] for t in result["totals"].values())
        print(f"{passed}/{attempted} cases passed in {result['elapsed_s']:.1f} s"
              + ("" if args.failures or passed == attempted else " (--failures lists the others)"))
        if args.output:
            print(f"wrote {md} and {js}")
    return EXIT_OK if not result["failures"] else EXIT_ERROR


def _check_shared(shared: Path, given: str, suites: list[str], quiet: bool) -> None:
    """The onnx-node cases' folder: a ``CliError`` naming it if it is missing and was asked for (``given``:
    the flag or variable that named it, or ``--suite onnx-node``); otherwise (the default folder is absent)
    a note that the suite is skipped."""
    node = shared / "onnx-node"
    if given and not shared.is_dir():
        raise CliError(f"{given} folder {str(shared)!r} does not exist" if not shared.exists()
                       else f"{given} {str(shared)!r} is not a folder", _SHARED_HINT)
    if (node / "CASES-BY-OP.csv").is_file() or (suites and "onnx-node" not in suites):
        return
    if given or "onnx-node" in suites:
        raise CliError(f"no onnx-node cases in {str(shared)!r}: {str(node / 'CASES-BY-OP.csv')!r} does not exist",
                       _SHARED_HINT)
    if not quiet:
        note(f"no onnx-node cases at {node} (set --shared or CNNJIT_SHARED): suite skipped")
