"""The flags the ``cnnjit`` commands share, each declared once as an argparse parent parser.

This is why a flag means the same thing on every command: ``MODEL``; ``--shape NAME=DIMS`` (repeatable, one
per input); ``--threads N`` (``cnnjit.compile(threads=N)``; default its own); ``--unfused`` (``fuse=False``);
``--runs N`` (timed repetitions; ``--repeat`` is a hidden deprecated alias); ``-o/--output`` (the file or
folder written); ``--json``, ``-v/--verbose``, ``--debug``. The factories take what differs per command (a
default, a help text); a command module lists the ones it uses in its ``parents()``.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable
from typing import Any

from cnnjit.runtime.cpus import default_threads

from .output import note


class DefaultThreads(int):
    """The ``--threads`` value when the flag is not given: ``cnnjit.compile``'s default thread count (an int
    like any other, marked so that commands which cannot run threads know it was not asked for)."""


def default_thread_count() -> DefaultThreads:
    """``CNNJIT_NUM_THREADS`` if set, else the CPUs this process may use (a bad ``CNNJIT_NUM_THREADS`` is
    noted and ignored: the command still runs)."""
    try:
        return DefaultThreads(default_threads())
    except ValueError as e:
        if str(e) not in _NOTED:  # once, though every command's parser is built
            _NOTED.add(str(e))
            note(f"{e}; using {usable_cpus()}")
        return DefaultThreads(usable_cpus())


_NOTED: set[str] = set()


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


class Threads(argparse.Action):
    """``--threads N``: stores N and warns on stderr (not an error: it still runs) when N is more than the CPUs
    this process may use, since the threads then take turns on them and the timings mean little."""

    def __call__(self, parser: argparse.ArgumentParser, ns: argparse.Namespace, values: Any,
                 option_string: str | None = None) -> None:
        setattr(ns, self.dest, values)
        cpus = usable_cpus()
        if values > cpus:
            print(f"{parser.prog}: warning: {option_string} {values} is more than the {cpus} CPU"
                  f"{'s' if cpus > 1 else ''} this process may use: the threads will share them and run slower",
                  file=sys.stderr)


def usable_cpus() -> int:
    """The CPUs this process may run on (its affinity mask where the OS has one, else the CPU count)."""
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1


def at_least(minimum: int) -> Callable[[str], int]:
    """An argparse ``type``: an integer >= ``minimum``, so that ``--runs -1`` is a usage error naming the flag
    before any work, not a silent no-op or a failure deep inside a command."""

    def parse(text: str) -> int:
        try:
            n = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from None
        if n < minimum:
            raise argparse.ArgumentTypeError(f"must be >= {minimum}, got {n}")
        return n

    parse.__name__ = f"integer >= {minimum}"
    return parse


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
    """``--shape NAME=DIMS`` (repeat: one per input): the input shapes (alone on ``info``, which does
    not compile)."""
    p = _parent()
    p.add_argument("--shape", action="append", metavar="NAME=DIMS",
                   help="concrete input shape, e.g. input_1=1,3,32,32; repeat for several inputs "
                        "(default: declared dims, symbolic ones = 1)")
    return p


def compile_options() -> argparse.ArgumentParser:
    """``--shape NAME=DIMS`` (repeat: one per input), ``--threads N``, ``--unfused``: how the model is compiled."""
    p = argparse.ArgumentParser(add_help=False, parents=[shape_option()])
    p.add_argument("--threads", type=at_least(1), action=Threads, default=default_thread_count(), metavar="N",
                   help="compile with threads=N (large layers split over a team of N threads); default: "
                        "CNNJIT_NUM_THREADS, else the CPUs this process may use")
    p.add_argument("--unfused", action="store_true", help="compile without the fusion passes (fuse=False)")
    return p


def precision_option() -> argparse.ArgumentParser:
    """``--precision fp32|bf16|bf16-emulated``: ``cnnjit.compile(precision=...)`` (the commands that run or
    build the model: run, bench, compile)."""
    p = _parent()
    p.add_argument("--precision", choices=["fp32", "bf16", "bf16-emulated"], default="fp32",
                   help="kernel arithmetic: fp32 (default); bf16 (1x1 convs on bf16 weights and inputs, fp32 "
                        "accumulation; needs avx512_bf16, or +bf16 on aarch64); bf16-emulated (the same "
                        "arithmetic with fp32 instructions, any CPU: accuracy checks)")
    return p


def runs_option(default: int, what: str = "timed runs", minimum: int = 1) -> argparse.ArgumentParser:
    """``--runs N`` (``N >= minimum``), the repetition count, with ``--repeat`` as its hidden deprecated alias."""
    p = _parent()
    count = at_least(minimum)
    p.add_argument("--runs", type=count, default=default, metavar="N", help=f"{what} (default {default})")
    p.add_argument("--repeat", type=count, dest="runs", action=DeprecatedAlias, new="--runs", help=argparse.SUPPRESS)
    return p


def output_option(metavar: str, help: str, required: bool = False, alias: str = "") -> argparse.ArgumentParser:
    """``-o/--output`` (the file or folder the command writes); ``alias``: a hidden old spelling."""
    p = _parent()
    p.add_argument("-o", "--output", required=required, metavar=metavar, help=help)
    if alias:
        p.add_argument(alias, dest="output", metavar=metavar, action=DeprecatedAlias, new="-o/--output",
                       help=argparse.SUPPRESS)
    return p
