"""The ``cnnjit`` command line: run, inspect, draw, benchmark and profile ONNX models; run conformance.

    cnnjit info model.onnx [--shape x=1,3,48,320] [--json]
    cnnjit run model.onnx --random [--shape x=1,3,32,32] [--threads 2] [--unfused] [--runs 10] [-o y.npy]
    cnnjit inspect model.onnx [--after fuse_epilogue] [--unfused] [--json]
    cnnjit graph model.onnx -o graph.svg
    cnnjit bench model.onnx --vs onnxruntime [--runs 50] [--png bench.png]
    cnnjit profile model.onnx [--runs 20] [--rows 20]
    cnnjit conformance [--op Conv] [-o results/conformance]
    cnnjit cache info|clear
    cnnjit warm model.onnx
    cnnjit compile model.onnx --target aarch64-linux-gnu --cpu cortex-a53 -o build/
    cnnjit prune model.onnx --sparsity 0.9 --method magnitude -o pruned.onnx
    cnnjit quantize model.onnx --calibration random -o model.int8.onnx

One module per command (``HELP``, ``EPILOG``, ``parents()``, ``add_arguments(parser)``, ``main(args)``);
the flags they share are declared once, as parent parsers, in ``flags``. Exit codes: 0 success, 1 a model
error (any ``cnnjit.CnnjitError``) or a failed step, 2 a usage error. Errors are one line plus a hint on
stderr; ``--debug`` adds the traceback, ``--verbose`` turns on the ``cnnjit`` logger, ``--json`` prints one
JSON document on stdout instead of tables.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import importlib.metadata
import logging
import os
import platform
import sys
import traceback
from types import ModuleType
from typing import Any

from cnnjit import __version__
from cnnjit.errors import CnnjitError

from .common import (
    EXIT_ERROR,
    EXIT_OK,
    EXIT_USAGE,
    CliError,
    ParseError,
    Parser,
    UsageError,
    check_dump_ir,
    resolve_model,
)
from .flags import global_options
from .output import clean, emit_json

#: the commands in ``--help`` order: name -> module in this package (``cnnjit.cli.<module>``), imported only
#: when the command runs or ``--help`` lists them, so that e.g. ``cnnjit info`` never imports numba
COMMANDS = {"info": "info", "run": "run", "inspect": "inspect", "graph": "graph", "bench": "bench",
            "profile": "profile", "conformance": "conformance", "cache": "cache", "warm": "warm",
            "compile": "compile", "prune": "prune", "quantize": "quantize"}
#: commands that never compile: no live compile display (which imports rich and the code generator)
NO_COMPILE = {"info", "cache", "conformance"}


def command_module(name: str) -> ModuleType:
    """The module of a command (``COMMANDS``) or of this package (``progress``), imported on first use."""
    return importlib.import_module(f"{__name__}.{COMMANDS.get(name, name)}")


def _version(dist: str) -> str:
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return "not installed"


class _Version(argparse.Action):
    def __init__(self, option_strings: list[str], dest: str, **kw: Any):
        super().__init__(option_strings, dest, nargs=0, help="print the version and exit")

    def __call__(self, parser: argparse.ArgumentParser, ns: argparse.Namespace, values: Any,
                 option_string: str | None = None) -> None:
        print(f"cnnjit {__version__} (numba {_version('numba')}, onnx {_version('onnx')}, "
              f"Python {platform.python_version()})")
        raise SystemExit(EXIT_OK)


def build_parser(only: str | None = None) -> argparse.ArgumentParser:
    """The ``cnnjit`` parser: global options, then one subparser per module in ``COMMANDS``; with ``only``,
    the other commands are bare names (their modules are not imported: enough to parse a command line
    for ``only``, not to print the full ``--help``)."""
    common = global_options()
    parser = Parser(prog="cnnjit", parents=[common], formatter_class=argparse.RawDescriptionHelpFormatter,
                    description="cnnjit: a JIT compiler for tiny CNNs (ONNX in, numba kernels out).",
                    epilog="example:\n  cnnjit run model.onnx --random\n\n"
                           "'cnnjit COMMAND --help' describes each command. Exit codes: 0 ok, 1 model error "
                           "(or failed step), 2 usage error.")
    parser.add_argument("--version", action=_Version)
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=Parser)
    parser.commands = {}
    for name in COMMANDS:
        if only is not None and name != only:
            parser.commands[name] = sub.add_parser(name, add_help=False)
            continue
        mod = command_module(name)
        p = sub.add_parser(name, help=mod.HELP, description=mod.HELP, parents=[*mod.parents(), common],
                           epilog=mod.EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
        mod.add_arguments(p)
        p.set_defaults(func=mod.main)
        parser.commands[name] = p
    return parser


# =========================================================================================================
# errors and the entry point
# =========================================================================================================
_HINTS = {
    "UnsupportedOpError": "'cnnjit info MODEL' lists every op of the model that cnnjit does not support",
    "InputError": "'cnnjit info MODEL' shows the model's inputs and their shapes",
    "ShapeError": "the model's shapes are inconsistent; check it with onnx.checker.check_model(model, full_check=True)",
    "ModelError": "is it an ONNX model? check it with: python -c \"import onnx; onnx.checker.check_model('MODEL')\"",
    "ResourceLimitError": "the model is larger than cnnjit's limits for tiny CNNs",
    "UnsupportedHardwareError": "this CPU cannot run that precision: 'cnnjit run --help' lists the others",
    "CompileError": "rerun with --debug for the traceback, and report it with the model",
    "IRError": "this is a compiler bug: rerun with --debug for the traceback, and report it with the model",
}


def one_line(message: str) -> tuple[str, str]:
    """A multi-line error message as (one line, extra hint): bullet lines are folded into the first line."""
    lines = [ln.strip() for ln in str(message).splitlines() if ln.strip()]
    if not lines:
        return "", ""
    bullets = [ln[2:] for ln in lines[1:] if ln.startswith("- ")]
    rest = [ln for ln in lines[1:] if not ln.startswith("- ")]
    first = lines[0]
    if bullets:
        first = first.rstrip(":") + ": " + "; ".join(bullets[:3]) + (f"; and {len(bullets) - 3} more"
                                                                      if len(bullets) > 3 else "")
    return clean(first, 800), clean(" ".join(rest), 300)  # (800: an unknown pass lists all 25+)


def _report(cmd: str, kind: str, message: str, hint: str, code: int, as_json: bool) -> int:
    line, extra = one_line(message)
    print(f"{cmd}: error: {line}", file=sys.stderr)
    h = hint or extra
    if h:
        print(f"hint: {clean(h, 300)}", file=sys.stderr)
    if as_json:
        emit_json({"error": line, "type": kind, "hint": h or None, "exit_code": code})
    return code


def _json_requested(argv: list[str] | None) -> bool:
    """Whether the command line asks for ``--json`` (or an abbreviation argparse would take), for errors
    found before it is parsed: with it, even those print one JSON document."""
    tokens = sys.argv[1:] if argv is None else list(argv)
    if "--" in tokens:
        tokens = tokens[: tokens.index("--")]
    return any(t.startswith("--j") and "--json".startswith(t) for t in map(str, tokens))


def _command_named(argv: list[str] | None) -> str | None:
    """The command of a command line (its first word: global options take no value), if it is one of
    ``COMMANDS``; else None (then every command's module is loaded, for the help and suggestions)."""
    words = [str(t) for t in (sys.argv[1:] if argv is None else argv) if not str(t).startswith("-")]
    return words[0] if words and words[0] in COMMANDS else None


def _setup_logging(level: int) -> None:
    if level <= 0:
        return
    log = logging.getLogger("cnnjit")
    handler = command_module("progress").StderrHandler()
    handler.setFormatter(logging.Formatter("cnnjit: %(levelname)s: %(message)s"))
    log.addHandler(handler)
    log.setLevel(logging.INFO if level == 1 else logging.DEBUG)


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``cnnjit`` console script; returns the exit code."""
    parser = build_parser(_command_named(argv))
    try:
        args = parser.parse_args(argv)
    except ParseError as e:  # a usage error found by argparse: reported like the others (JSON under --json)
        return _report(e.prog, "UsageError", str(e), e.hint, EXIT_USAGE, _json_requested(argv))
    except SystemExit as e:  # --help, --version
        return int(e.code or 0) if not isinstance(e.code, str) else EXIT_USAGE
    if not getattr(args, "command", None):
        if getattr(args, "json", False):
            return _report("cnnjit", "UsageError", "no command given", "'cnnjit --help' lists the commands",
                           EXIT_USAGE, True)
        parser.print_help()
        return EXIT_USAGE
    as_json = bool(getattr(args, "json", False))
    debug = bool(getattr(args, "debug", False))
    args.json = as_json
    _setup_logging(int(getattr(args, "verbose", 0) or 0))
    cmd = f"cnnjit {args.command}"
    restore = _record_interrupts()
    try:
        check_dump_ir(os.environ.get("CNNJIT_DUMP_IR", ""))
        resolve_model(args)
        display = (contextlib.nullcontext() if args.command in NO_COMPILE
                   else command_module("progress").CompileDisplay(enabled=not as_json))
        with display:
            code = int(args.func(args))
        if _interrupted():
            raise KeyboardInterrupt  # (one a C callback swallowed while the command went on)
        return code
    except (UsageError, CnnjitError, CliError) as e:
        if debug:
            traceback.print_exc()
            _print_worker_traceback(e)
        if isinstance(e, UsageError):
            return _report(cmd, "UsageError", str(e), e.hint or f"'{cmd} --help' shows the options and an example",
                           EXIT_USAGE, as_json)
        if isinstance(e, CliError):
            return _report(cmd, "CliError", str(e), e.hint, EXIT_ERROR, as_json)
        hint = _HINTS.get(type(e).__name__, "")
        if "does not exist" in str(e) or "is a folder" in str(e):
            hint = "check the path (relative paths start from the current folder)"
        return _report(cmd, type(e).__name__, str(e), hint, EXIT_ERROR, as_json)
    except KeyboardInterrupt:
        print(f"{cmd}: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # stdout closed early (``cnnjit inspect m.onnx | head``): not an error
        try:
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        except OSError:
            pass
        return EXIT_OK
    except Exception as e:  # noqa: BLE001 - the one place that turns a bug into a clear message
        if debug:
            raise
        return _report(cmd, type(e).__name__, f"internal error: {type(e).__name__}: {e}",
                       "rerun with --debug for the traceback, and report it with the model", EXIT_ERROR, as_json)
    finally:
        restore()


def _record_interrupts() -> Any:
    """While a command runs: a SIGINT also records itself (``precompile.interrupt``) besides raising
    KeyboardInterrupt, so one that lands in a C callback, which prints and drops the exception, still ends a
    kernel compile at its next kernel and the command with 130. Only where SIGINT has Python's default handler
    in the main thread (a shell that ignores it keeps it ignored). Returns what puts the old handler back."""
    import signal
    import threading

    if threading.current_thread() is not threading.main_thread() or \
            signal.getsignal(signal.SIGINT) is not signal.default_int_handler:
        return lambda: None
    _interrupted(clear=True)

    def on_sigint(signum: int, frame: Any) -> None:
        pre = sys.modules.get("cnnjit.compiler.codegen.precompile")  # (not imported: no compile to stop)
        if pre is not None:
            pre.interrupt()
        raise KeyboardInterrupt

    signal.signal(signal.SIGINT, on_sigint)
    return lambda: signal.signal(signal.SIGINT, signal.default_int_handler)


def _interrupted(clear: bool = False) -> bool:
    """Whether a SIGINT was recorded (``_record_interrupts``) during this command (``clear``: forget it)."""
    pre = sys.modules.get("cnnjit.compiler.codegen.precompile")
    return pre is not None and pre.interrupted(clear)


def _print_worker_traceback(e: BaseException) -> None:
    """The traceback a compile worker process sent back with ``e`` or its causes (the aarch64 target's)."""
    while e is not None:
        tb = getattr(e, "worker_traceback", "")
        if tb:
            print("The compile worker's traceback:", file=sys.stderr)
            print(tb.rstrip(), file=sys.stderr)
            return
        e = e.__cause__


__all__ = ["main", "build_parser", "COMMANDS", "one_line"]
