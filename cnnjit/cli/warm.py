"""``cnnjit warm``: compile a model now so that every kernel it needs is in the on-disk cache."""

from __future__ import annotations

import argparse
import time
from typing import Any

from cnnjit.cache import store_native
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
    p.add_argument("--no-program", action="store_true",
                   help="fill the kernel cache only, not the compiled-program cache (whose native object takes "
                        "a second lowering of every kernel, in a worker process)")


def warm_model(path: str, shapes: dict[str, tuple[int, ...]] | None = None, fuse: bool = True, threads: int = 1,
               quiet: bool = False, program: bool = True) -> tuple[Any, float, Any]:
    """Compile ``path`` so that all its kernels are in the on-disk cache, and (``program``) its whole program
    into the compiled-program cache; returns (report, seconds, the program's path or None).

    A separate function so that a ``compile`` subcommand can offer the same thing as ``--warm``."""
    model, resolved, _notes, seconds = compile_model(path, shapes, fuse=fuse, threads=threads, quiet=quiet)
    # and the whole program as one native object (the compiled-program cache: a new process's
    # cnnjit.compile(path) then starts without the compiler); None when the model cannot be one
    t0 = time.perf_counter()
    stored = store_native(path, model, resolved, fuse=fuse, threads=threads) if program else None
    return model.compile_report(), seconds + time.perf_counter() - t0, stored


def main(args: argparse.Namespace) -> int:
    report, seconds, program = warm_model(args.model, parse_shapes(args.shape), fuse=not args.unfused,
                                          threads=args.threads, quiet=args.json, program=not args.no_program)
    if args.json:
        emit_json({"model": args.model, "cache_dir": str(cache_dir()), "threads": args.threads,
                   "total_ms": seconds * 1e3, "program": None if program is None else str(program),
                   "compiled": report.compiled, "cache_hits": report.cache_hits,
                   "kernels": [to_ms(k, {"seconds": "ready_ms"}) for k in report.to_dicts()]})
        return EXIT_OK
    rows = [(r.name, r.ops, r.calls, r.signatures, r.origin, f"{r.seconds:.3f}", f"{r.compile_s:.3f}")
            for r in report.rows]
    print_table(f"kernels of {args.model}", ["kernel", "ops", "calls", "sigs", "origin", "ready s", "compile s"],
                rows, right=["calls", "sigs", "ready s", "compile s"], free=["ops"],
                footer=[f"{report.summary()}; cache {cache_dir()}; total {seconds:.2f} s",
                        f"compiled program: {program if program is not None else 'not stored (see cnnjit -v warm)'}"])
    return EXIT_OK
