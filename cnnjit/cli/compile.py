"""``cnnjit compile``: ahead-of-time compilation for another machine (``cnnjit.compiler.target``)."""

from __future__ import annotations

import argparse
import time

from .common import EXIT_OK, CliError, UsageError, check_model_path, checked_shapes, refuse
from .flags import compile_options, model_argument, output_option, precision_option
from .output import emit_json, nbytes, note, print_table

HELP = "compile a model ahead of time for another machine (aarch64 Linux, Cortex-M)"
EPILOG = """example:
  cnnjit compile kws.onnx --target aarch64-linux-gnu --cpu cortex-a53 -o build/
  cnnjit compile kws.onnx --target aarch64-linux-gnu --cpu cortex-a76 --features +dotprod -o build/ --json
  cnnjit compile kws_int8.onnx --target thumbv7em-none-eabihf --cpu cortex-m4 -o build/m4 --ram 65536

Compiles ahead of time for 64-bit ARM Linux: writes NAME.o (code and weights), libNAME.so, NAME.h (the C
entry point NAME_run and its scratch size), NAME_main.c (a test/benchmark program) and README.md (the
link line). Needs gcc-aarch64-linux-gnu (and libc6-dev-arm64-cross) to link the .so (--no-shared skips
it); symbolic input dimensions are set to 1 unless --shape gives them. The target code is single-threaded
(--threads 1).

For a Cortex-M (thumbv7em-none-eabihf: cortex-m4, cortex-m7): NAME.o (code, weights in read-only data),
NAME.h (NAME_run and NAME_ARENA_BYTES, the RAM it needs), NAME_main.c, startup.c and link.ld (a bare-metal
test program for qemu-system-arm -M mps2-an386; README.md has the lines); --ram BYTES refuses a larger
arena."""


def parents() -> list[argparse.ArgumentParser]:
    return [model_argument(), compile_options(), precision_option(),
            output_option("DIR", "output folder (created if needed)", required=True)]


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--target", required=True, metavar="TRIPLE", help="target triple, e.g. aarch64-linux-gnu")
    p.add_argument("--cpu", metavar="CPU", help="target CPU, e.g. cortex-a53, cortex-a76 (default: generic)")
    p.add_argument("--features", metavar="FEATURES", help="LLVM features, e.g. +neon,+dotprod")
    p.add_argument("--name", help="C name prefix of the entry point and files (default: from the model file)")
    p.add_argument("--no-shared", action="store_true", help="do not link lib<name>.so (no cross gcc needed)")
    p.add_argument("--ram", type=int, metavar="BYTES", help="Cortex-M: refuse an arena larger than BYTES")


def main(args: argparse.Namespace) -> int:
    from cnnjit.compiler.target import TargetError, compile_for_target
    from cnnjit.compiler.target.aarch64 import find_tool
    from cnnjit.compiler.target.cortexm import is_cortex_m

    check_model_path(args.model)
    refuse(args, "--threads")
    t0 = time.perf_counter()
    try:
        micro = is_cortex_m(args.target)
        if not args.no_shared and not micro:
            find_tool("aarch64-linux-gnu-gcc")  # before the compile, not after it
        art = compile_for_target(args.model, target=args.target, cpu=args.cpu, features=args.features,
                                 name=args.name, input_shapes=checked_shapes(args) or None,
                                 fuse=not args.unfused, ram=args.ram, precision=args.precision)
        paths = art.save(args.output, shared=not args.no_shared and not micro)
    except TargetError as e:
        raise (UsageError if e.kind == "usage" else CliError)(e.message, e.hint) from e
    seconds = time.perf_counter() - t0
    files = {k: {"path": str(v), "bytes": v.stat().st_size} for k, v in paths.items()}
    if args.json:
        emit_json({**art.summary(), "files": files, "total_ms": seconds * 1e3})
        return EXIT_OK
    for n in art.notes:  # the batch note `run` and `inspect` print
        note(n)
    rows = [(k, v["path"], nbytes(v["bytes"])) for k, v in files.items()]
    c = art.checks
    print_table(f"{args.model} for {art.triple} (cpu {art.cpu}, features {art.features})", ["file", "path", "size"],
                rows, right=["size"], footer=[
                    f"entry {art.name}_run: scratch {art.scratch_bytes} bytes, weights {art.weight_bytes} bytes, "
                    f"{len(art.kernels)} kernels; compiled in {seconds:.1f} s",
                    f"checks: ELF {c['elf_machine']}, no x86 intrinsics, undefined symbols "
                    f"{'EABI helpers and libm' if micro else 'only libc/libm'} ({', '.join(c['undefined']) or 'none'})",
                    "link: " + (" ".join(art.link_command(args.output)) if micro else
                                f"aarch64-linux-gnu-gcc -O2 -static -o {art.name}_main {paths['main']} "
                                f"{paths['object']} -lm")])
    return EXIT_OK
