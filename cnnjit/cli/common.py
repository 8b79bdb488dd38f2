"""What the ``cnnjit`` commands share besides their flags (``flags``) and output (``output``): exit codes and
error classes, checking argument values, and loading and compiling the model.

A command whose library call cannot honour a compile option yet refuses it with a usage error (``refuse``)
instead of ignoring it.
"""

from __future__ import annotations

import argparse
import difflib
import re
import time
from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any, NoReturn

import numpy as np

import cnnjit
from cnnjit.compiler.passes import check_pass_names, default_pipeline, parse_dump_ir
from cnnjit.errors import InputError, ModelError, ShapeError

from .flags import DefaultThreads
from .output import clean, note

EXIT_OK, EXIT_ERROR, EXIT_USAGE = 0, 1, 2


class UsageError(Exception):
    """Bad command-line input found after parsing (exit code 2)."""

    def __init__(self, message: str, hint: str = ""):
        super().__init__(message)
        self.hint = hint


class CliError(Exception):
    """A step failed for a reason outside the model (missing tool, unwritable file...; exit code 1)."""

    def __init__(self, message: str, hint: str = ""):
        super().__init__(message)
        self.hint = hint


class ParseError(UsageError):
    """An argparse error of the parser named ``prog`` (``cnnjit`` or ``cnnjit COMMAND``): raised instead of
    exiting, so that ``cnnjit.cli.main`` reports it as it reports every other error (JSON under --json)."""

    def __init__(self, prog: str, message: str):
        super().__init__(message, f"'{prog} --help' " + ("shows the options and an example" if " " in prog
                                                          else "lists the commands"))
        self.prog = prog


def did_you_mean(words: Iterable[str], choices: Iterable[str], quote: bool = False) -> str:
    """``"; did you mean X or Y?"`` for the closest match (difflib) of each of ``words`` among ``choices``, or
    ``""`` if none is close; ``quote``: as Python literals (names). Leading dashes are not compared
    (``--treads`` is close to ``--threads``, not to every ``--`` flag)."""
    pool = {c.lstrip("-"): c for c in choices}
    close = [pool[m] for w in words for m in difflib.get_close_matches(w.lstrip("-"), list(pool), n=1, cutoff=0.6)]
    return f"; did you mean {' or '.join(map(repr if quote else str, dict.fromkeys(close)))}?" if close else ""


class Parser(argparse.ArgumentParser):
    """argparse whose errors are ``ParseError``s, with close matches for unknown flags and invalid choices
    (such as a mistyped command), and unknown flags blamed on the command they were given to (plain argparse
    reports them from the top parser, pointing at ``cnnjit --help``)."""

    #: the subcommand parsers by name (set on the top parser by ``build_parser``)
    commands: dict[str, Parser]

    def error(self, message: str) -> NoReturn:  # type: ignore[override]
        raise ParseError(self.prog, message)

    def parse_args(self, args: Sequence[str] | None = None,  # type: ignore[override]
                   namespace: argparse.Namespace | None = None) -> argparse.Namespace:
        ns, extra = self.parse_known_args(args, namespace)
        if extra:
            owner = getattr(self, "commands", {}).get(getattr(ns, "command", None) or "", self)
            options = [o for a in owner._actions if a.help != argparse.SUPPRESS for o in a.option_strings]
            flags = [x.split("=", 1)[0] for x in extra if x.startswith("-")]
            owner.error(f"unrecognized arguments: {' '.join(extra)}{did_you_mean(flags, options)}")
        return ns

    def _check_value(self, action: argparse.Action, value: Any) -> None:
        """argparse's check of ``choices`` (same message), plus close matches."""
        if action.choices is not None and value not in action.choices:
            names = [str(c) for c in action.choices]
            raise argparse.ArgumentError(action, f"invalid choice: {value!r} (choose from {', '.join(names)})"
                                                 + did_you_mean([str(value)], names))


# =========================================================================================================
# argument checking
# =========================================================================================================
def resolve_model(args: argparse.Namespace) -> None:
    """``args.model`` from ``MODEL`` or ``--example`` (exactly one of them, for commands that take a model)."""
    if not hasattr(args, "example"):
        return
    if args.example and args.model:
        raise UsageError("give MODEL or --example, not both")
    if args.example:
        args.model = cnnjit.example_model()
    elif not args.model:
        raise UsageError("the following arguments are required: MODEL (or --example for the shipped example model)")


def refuse(args: argparse.Namespace, *flags: str) -> None:
    """Usage error for the compile options among ``flags`` that were given but this command cannot honour
    yet (the library function it calls does not take them)."""
    given = [f for f in flags if (f == "--threads" and not isinstance(args.threads, DefaultThreads)
                                  and args.threads != 1) or (f == "--unfused" and args.unfused)]
    if given:
        raise UsageError(f"cnnjit {args.command} does not support {' or '.join(given)} yet",
                         f"run it without {' and '.join(given)}")


def parse_assignments(items: Sequence[str] | None, what: str) -> dict[str, str]:
    """``NAME=VALUE`` items into a dict (a usage error names the bad item, or a NAME given twice)."""
    out: dict[str, str] = {}
    for it in items or []:
        name, sep, value = it.rpartition("=")
        if not sep or not name or not value:
            raise UsageError(f"{what} {it!r} is not NAME=VALUE", f"example: {what} input_1=1,3,32,32")
        if out.get(name, value) != value:
            raise UsageError(f"{what} gives {name!r} twice ({out[name]} and {value})")
        out[name] = value
    return out


def parse_shapes(items: Sequence[str] | None) -> dict[str, tuple[int, ...]]:
    """``--shape`` items (``NAME=1,3,32,32`` or ``NAME=1x3x32x32``) as ``{name: dims}``, every item kept."""
    shapes = {}
    for name, value in parse_assignments(items, "--shape").items():
        try:
            dims = tuple(int(d) for d in value.replace("x", ",").split(",") if d.strip())
        except ValueError:
            raise UsageError(f"--shape {name}={value}: dimensions must be integers",
                             "example: --shape input_1=1,3,32,32") from None
        if not dims or any(d < 1 for d in dims):
            raise UsageError(f"--shape {name}={value}: dimensions must be integers >= 1",
                             "example: --shape input_1=1,3,32,32")
        shapes[name] = dims
    return shapes


def _dims(dims: Sequence[int]) -> str:
    return ",".join(map(str, dims))


def check_shapes(specs: Sequence[Any], shapes: Mapping[str, Sequence[int]]) -> None:
    """``--shape`` against the model's declared inputs (``InputSpec``-like: name, dims, dim_names, describe()):
    a known input, its declared rank, its fixed dimensions, and one value per symbol shared by several inputs.

    Every command calls this before compiling, so a batch of 2 on a model fixed at 1 is the same usage error
    everywhere instead of a compile at a shape the model does not declare."""
    by_name = {s.name: s for s in specs}
    unknown = [n for n in shapes if n not in by_name]
    if unknown:
        raise UsageError(f"--shape names unknown input(s) {unknown}",
                         "'cnnjit info MODEL' shows the model's inputs and their shapes; here: "
                         + ", ".join(_describe(s) for s in specs))
    symbols: dict[str, tuple[int, str]] = {}
    for name, dims in shapes.items():
        s = by_name[name]
        if s.dims is None:
            continue
        flag = f"--shape {name}={_dims(dims)}"
        if len(dims) != len(s.dims):
            raise UsageError(f"{flag} has rank {len(dims)}; the model declares rank {len(s.dims)}: {_describe(s)}",
                             _shape_example(s))
        for i, (got, want) in enumerate(zip(dims, s.dims)):
            if want is not None and got != want:
                raise UsageError(f"{flag}: dimension {i} is fixed at {want} by the model: {_describe(s)}",
                                 _shape_example(s))
            sym = s.dim_names[i] if want is None and i < len(s.dim_names) else ""
            if sym and symbols.setdefault(sym, (got, name))[0] != got:
                raise UsageError(f"{flag}: symbolic dimension {sym!r} is {symbols[sym][0]} in --shape "
                                 f"{symbols[sym][1]}; inputs sharing a symbolic dimension must agree")


def _describe(s: Any) -> str:
    """``x: float32[N, 3, 32, 32]``, the same text whichever spec class (loader or runtime) ``s`` is."""
    if s.dims is None:
        return f"{clean(s.name, 40)}: {s.dtype}[?]"
    names = s.dim_names or ("",) * len(s.dims)
    dims = ", ".join(str(d) if d is not None else (names[i] or "?") for i, d in enumerate(s.dims))
    return f"{clean(s.name, 40)}: {s.dtype}[{dims}]"


def _shape_example(s: Any) -> str:
    """A hint spelling ``--shape NAME=...`` with the declared dims (symbols by name)."""
    names = s.dim_names or ("",) * len(s.dims)
    syms = [names[i] or "?" for i, d in enumerate(s.dims) if d is None]
    dims = ",".join(str(d) if d is not None else (names[i] or "?") for i, d in enumerate(s.dims))
    if not syms:
        return f"the shape of input {clean(s.name, 40)!r} is fixed: --shape {clean(s.name, 40)}={dims}, or no --shape"
    return f"pass --shape {clean(s.name, 40)}={clean(dims, 80)} with numbers for {clean(', '.join(syms), 80)}"


def defaulted_dims(specs: Sequence[Any], shapes: Mapping[str, Sequence[int]]) -> dict[str, list[str]]:
    """Input name -> its symbolic dimensions that the command line sets to 1 (inputs without ``--shape``)."""
    out: dict[str, list[str]] = {}
    for s in specs:
        if s.name in shapes or s.dims is None or getattr(s, "by_value", False):
            continue
        syms = [(s.dim_names[i] if i < len(s.dim_names) and s.dim_names[i] else f"dim {i}")
                for i, d in enumerate(s.dims) if d is None]
        if syms:
            out[s.name] = syms
    return out


@contextmanager
def blame_defaults(specs: Sequence[Any], shapes: Mapping[str, Sequence[int]], foreign: str = "") -> Iterator[None]:
    """Turn a ``ShapeError`` raised inside the block (or, with ``foreign="onnxruntime"``, any error of that
    package) into a usage error saying that the tool set the symbolic dimensions to 1, when it did.

    Without this, a model with symbolic height and width fails with "the model's shapes are inconsistent",
    blaming the model for the command line's choice of 1; the error names the input and its symbols and
    asks for ``--shape``. Errors are passed on untouched when every symbolic dimension was given."""
    defaulted = defaulted_dims(specs, shapes)
    try:
        yield
    except Exception as e:
        ours = isinstance(e, ShapeError) or bool(foreign and type(e).__module__.startswith(foreign))
        if not defaulted or not ours:
            raise
        what = "; ".join(f"{', '.join(map(repr, syms))} of input {clean(name, 40)!r}"
                         for name, syms in defaulted.items())
        first = clean(_first_line(e) if isinstance(e, ShapeError) else f"{foreign} failed: {_first_line(e)}", 200)
        by = next(s for s in specs if s.name in defaulted)
        raise UsageError(f"{first}: the symbolic dimensions {what} were set to 1 by cnnjit (no --shape gave "
                         "them), not by the model", _shape_example(by)) from e


@contextmanager
def model_shapes(args: argparse.Namespace, foreign: str = "") -> Iterator[dict[str, tuple[int, ...]]]:
    """``--shape`` of ``args.model`` parsed and checked (``check_shapes``); shape errors inside the block are
    blamed on defaulted symbolic dimensions when there are any (``blame_defaults``)."""
    from cnnjit.compiler.frontend.loader import input_specs, load_model  # onnx: not for `cnnjit info`'s start

    specs, shapes = input_specs(load_model(args.model)), parse_shapes(args.shape)
    check_shapes(specs, shapes)
    with blame_defaults(specs, shapes, foreign):
        yield shapes


def checked_shapes(args: argparse.Namespace) -> dict[str, tuple[int, ...]]:
    """``--shape`` of ``args.model`` parsed and checked against its declared inputs (``check_shapes``)."""
    with model_shapes(args) as shapes:
        return shapes


def _first_line(e: Exception) -> str:
    """The gist of an error message: its first line, without onnxruntime's status prefix and source location."""
    text = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
    text = re.sub(r"^\[ONNXRuntimeError\] : \d+ : \w+ : ", "", text)
    return text.split(" Name:", 1)[0].split(" Status Message:", 1)[0].rstrip(".")


def check_pass_name(name: str, flag: str) -> None:
    """Usage error listing the real passes (in pipeline order) if ``name`` is not one."""
    try:
        check_pass_names([name], flag, list(dict.fromkeys(p.name for p in default_pipeline())))
    except InputError as e:
        raise UsageError(str(e)) from None


def check_dump_ir(value: str) -> None:
    """``CNNJIT_DUMP_IR`` checked before any work (a usage error listing the real passes), not mid-compile."""
    try:
        parse_dump_ir(value)
    except InputError as e:
        raise UsageError(str(e), "fix or unset CNNJIT_DUMP_IR") from None


def check_model_path(path: str) -> None:
    """``ModelError`` (exit 1) for a missing file or a folder, before any loading."""
    p = Path(path)
    if not p.exists():
        raise ModelError(f"model file {path!r} does not exist")
    if p.is_dir():
        raise ModelError(f"{path!r} is a folder, not an .onnx model file")


# =========================================================================================================
# loading and compiling
# =========================================================================================================
def use_threads(n: int) -> None:
    """Check ``--threads`` (cnnjit runs its own team of threads: numba's pool is not used)."""
    if n < 1:
        raise UsageError(f"--threads must be >= 1, got {n}")


def compile_model(path: str, shapes: dict[str, tuple[int, ...]] | None = None, fuse: bool = True,
                  threads: int = 1, quiet: bool = False, precision: str = "fp32"
                  ) -> tuple[Any, dict[str, tuple[int, ...]], list[str], float]:
    """Compile ``path`` for concrete input shapes (symbolic dims -> 1, noted); returns (model, shapes, notes, s)."""
    from cnnjit.compiler.frontend.loader import input_specs, load_model, resolve_shapes
    from cnnjit.compiler.frontend.onnx_import import value_inputs

    check_model_path(path)
    use_threads(threads)
    t0 = time.perf_counter()
    proto = load_model(path)
    by_value = value_inputs(proto)
    if by_value:
        raise UsageError(f"input(s) {sorted(by_value)} set shapes or attributes of the model: the command line "
                         "cannot choose their values", "use the Python API: cnnjit.compile(path)(...)")
    specs = input_specs(proto)
    check_shapes(specs, shapes or {})
    resolved, notes = resolve_shapes(proto, shapes)
    if not quiet:
        for n in notes:
            note(n)
    with blame_defaults(specs, shapes or {}):
        model = cnnjit.compile(proto, input_shapes=resolved, fuse=fuse, threads=threads, precision=precision)
    return model, resolved, notes, time.perf_counter() - t0


def save_model(model: Any, path: str) -> None:
    """``model.save(path)`` (a pruned or quantized model); an unwritable path is a ``CliError`` naming it."""
    try:
        model.save(path)
    except OSError as e:
        raise CliError(f"cannot write {path!r}: {e}") from e


def trace_model(args: argparse.Namespace) -> Any:
    """``cnnjit.inspect_model.trace`` of ``args.model`` with ``--shape``/``--unfused``/``--threads`` (notes on
    stderr). ``inspect`` and ``graph`` show the schedule (kernels, variants, calls, arena), never run it: the
    kernels are bound but not compiled (``entry="lazy"``; a cold ``inspect`` of the PP-OCRv4 recognizer
    compiled ~40 kernels for a table)."""
    from cnnjit.inspect_model import trace

    with model_shapes(args) as shapes:
        t = trace(args.model, shapes, entry="lazy", fuse=not args.unfused, threads=args.threads)
    if not args.json:
        for n in t.notes:
            note(n)
    return t


def random_inputs(model: Any, shapes: dict[str, tuple[int, ...]], seed: int = 0) -> dict[str, Any]:
    """Seeded random data for the inputs named in ``shapes``: standard normal floats, small integers (-10..10
    within the dtype's range), random booleans."""
    rng = np.random.default_rng(seed)
    feeds = {}
    for s in model.inputs:
        if s.name not in shapes:
            continue
        dt = np.dtype(s.dtype)
        shape = shapes[s.name]
        if dt.kind == "f":
            feeds[s.name] = rng.standard_normal(shape).astype(dt)
        elif dt.kind == "b":
            feeds[s.name] = rng.integers(0, 2, shape).astype(dt)
        elif dt.kind in "iu":
            info = np.iinfo(dt)
            feeds[s.name] = rng.integers(max(info.min, -10), min(info.max, 10) + 1, shape).astype(dt)
        else:
            raise UsageError(f"cannot make random data for input {s.name!r} of dtype {dt}",
                             f"give it with --input {s.name}=FILE.npy")
    return feeds
