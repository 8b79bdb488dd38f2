"""``cnnjit warm``: compile a model now so that every kernel it needs is in the on-disk cache."""

from __future__ import annotations

import argparse
from typing import Any

from cnnjit.compiler.codegen.build import cache_dir

from .common import EXIT_OK, compile_model, parse_shapes
from .flags import compile_options, model_argument
from .output import emit_json, print_table, to_ms

HELP = "compile a model into the on-disk kernel cache ahead of time"
EPILOG = """example:
  cnnjit warm model.onnx
  cnnjit warm model.onnx --shape input_1=1,3,96,96 --json

Compiles the model now so that every kernel it needs is in the on-disk cache (e.g. when building a
deployment image): a later process then starts without compiling. Lists each kernel and its origin.
Give the --shape, --threads and --unfused the deployed process will compile with."""


def parents() -> list[argparse.ArgumentParser]:
    return [model_argument(), compile_options()]


def add_arguments(p: argparse.ArgumentParser) -> None:
    """No options besides the shared ones."""


def warm_model(path: str, shapes: dict[str, tuple[int, ...]] | None = None, fuse: bool = True, threads: int = 1,
               quiet: bool = False) -> tuple[Any, float]:
    """Compile ``path`` so that all its kernels are in the on-disk cache; returns (report, seconds).

    A separate function so that a ``compile`` subcommand can offer the same thing as ``--warm``."""
    model, _shapes, _notes, seconds = compile_model(path, shapes, fuse=fuse, threads=threads, quiet=quiet)
    return model.compile_report(), seconds


def main(args: argparse.Namespace) -> int:
    report, seconds = warm_model(args.model, parse_shapes(args.shape), fuse=not args.unfused, threads=args.threads,
                                 quiet=args.json)
    if args.json:
        emit_json({"model": args.model, "cache_dir": str(cache_dir()), "threads": args.threads,
                   "total_ms": seconds * 1e3, "compiled": report.compiled, "cache_hits": report.cache_hits,
                   "kernels": [to_ms(k, {"seconds": "ready_ms"}) for k in report.to_dicts()]})
        return EXIT_OK
    rows = [(r.name, r.ops, r.calls, r.signatures, r.origin, f"{r.seconds:.3f}", f"{r.compile_s:.3f}")
            for r in report.rows]
    print_table(f"kernels of {args.model}", ["kernel", "ops", "calls", "sigs", "origin", "ready s", "compile s"],
                rows, right=["calls", "sigs", "ready s", "compile s"], free=["ops"],
                footer=[f"{report.summary()}; cache {cache_dir()}; total {seconds:.2f} s"])
    return EXIT_OK
