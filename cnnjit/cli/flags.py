"""The flags the ``cnnjit`` commands share, each declared once as an argparse parent parser.

This is why a flag means the same thing on every command: ``MODEL``; ``--shape NAME=DIMS`` (repeatable, one
per input); ``--threads N`` (``cnnjit.compile(threads=N)`` and numba's pool); ``--unfused`` (``fuse=False``);
``--runs N`` (timed repetitions; ``--repeat`` is a hidden deprecated alias); ``-o/--output`` (the file or
folder written); ``--json``, ``-v/--verbose``, ``--debug``. The factories take what differs per command (a
default, a help text); a command module lists the ones it uses in its ``parents()``.
"""

from __future__ import annotations

import argparse
from typing import Any

from .output import note


class DeprecatedAlias(argparse.Action):
    """A hidden old spelling of a flag (``--repeat`` for ``--runs``): stores into the new flag's ``dest`` and
    notes the new name on stderr, so old scripts keep working."""

    def __init__(self, option_strings: list[str], dest: str, new: str = "", **kw: Any):
        self.new = new
        super().__init__(option_strings, dest, **kw)

    def __call__(self, parser: argparse.ArgumentParser, ns: argparse.Namespace, values: Any,
                 option_string: str | None = None) -> None:
        note(f"{option_string} is deprecated: use {self.new}")
        setattr(ns, self.dest, values)


def _parent() -> argparse.ArgumentParser:
    return argparse.ArgumentParser(add_help=False)


def global_options() -> argparse.ArgumentParser:
    """``--json``, ``-v/--verbose``, ``--debug`` (suppressed defaults: given before or after the command)."""
    p = _parent()
    p.add_argument("--json", action="store_true", default=argparse.SUPPRESS,
                   help="print one JSON document on stdout (for scripts)")
    p.add_argument("-v", "--verbose", action="count", default=argparse.SUPPRESS,
                   help="log compile decisions, cache hits and kernel choices to stderr (-vv: more)")
    p.add_argument("--debug", action="store_true", default=argparse.SUPPRESS, help="show the traceback of an error")
    return p


def model_argument(help: str = "an .onnx file") -> argparse.ArgumentParser:
    """The positional ``MODEL``, or ``--example`` for the model shipped with cnnjit (see ``resolve_model``)."""
    p = _parent()
    p.add_argument("model", metavar="MODEL", nargs="?", help=help)
    p.add_argument("--example", action="store_true",
                   help="use the example model shipped with cnnjit (MLPerf Tiny keyword spotting, input_1 "
                        "[N, 49, 10, 1]) instead of MODEL")
    return p


def shape_option() -> argparse.ArgumentParser:
    """``--shape NAME=DIMS`` (repeat: one per input): the input shapes (alone on ``info``, which compiles nothing)."""
    p = _parent()
    p.add_argument("--shape", action="append", metavar="NAME=DIMS",
                   help="concrete input shape, e.g. input_1=1,3,32,32; repeat for several inputs "
                        "(default: declared dims, symbolic ones = 1)")
    return p


def compile_options() -> argparse.ArgumentParser:
    """``--shape NAME=DIMS`` (repeat: one per input), ``--threads N``, ``--unfused``: how the model is compiled."""
    p = argparse.ArgumentParser(add_help=False, parents=[shape_option()])
    p.add_argument("--threads", type=int, default=1, metavar="N",
                   help="compile with threads=N (large layers split over N threads of numba's pool) and run "
                        "numba with N threads (default 1)")
    p.add_argument("--unfused", action="store_true", help="compile without the fusion passes (fuse=False)")
    return p


def runs_option(default: int, what: str = "timed runs") -> argparse.ArgumentParser:
    """``--runs N``, the repetition count, with ``--repeat`` as its hidden deprecated alias."""
    p = _parent()
    p.add_argument("--runs", type=int, default=default, metavar="N", help=f"{what} (default {default})")
    p.add_argument("--repeat", type=int, dest="runs", action=DeprecatedAlias, new="--runs", help=argparse.SUPPRESS)
    return p


def output_option(metavar: str, help: str, required: bool = False, alias: str = "") -> argparse.ArgumentParser:
    """``-o/--output`` (the file or folder the command writes); ``alias``: a hidden old spelling."""
    p = _parent()
    p.add_argument("-o", "--output", required=required, metavar=metavar, help=help)
    if alias:
        p.add_argument(alias, dest="output", metavar=metavar, action=DeprecatedAlias, new="-o/--output",
                       help=argparse.SUPPRESS)
    return p
