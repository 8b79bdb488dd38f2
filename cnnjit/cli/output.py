"""What the commands print: cleaned model text, tables (rich if installed), progress bars, notes and JSON.

Everything that shows text from a model goes through ``clean`` (control characters, i.e. terminal escape
sequences, become '?'); notes go to stderr so that ``--json`` output on stdout stays one parseable document.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
import textwrap
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

#: a space that ``wrap`` never breaks at (join a label to its value: "Conv\u00a09"); printed as a space
KEEP = "\u00a0"


def clean(text: Any, limit: int = 0) -> str:
    """Model-given text made safe for a terminal: control characters (escape sequences) replaced by '?'."""
    s = "".join(ch if ch.isprintable() or ch == KEEP else "?" for ch in str(text))
    if limit and len(s) > limit:
        s = s[: limit - 1] + "\u2026"
    return s


def clean_block(text: str) -> str:
    """``clean`` line by line (keeps the newlines of a multi-line block such as an IR dump)."""
    return "\n".join(clean(line) for line in text.splitlines())


def _rich() -> Any:
    try:
        import rich  # noqa: F401

        return True
    except ImportError:
        return False


def _console(stderr: bool = False) -> Any:
    """A rich console; when not writing to a terminal, 160 columns wide unless ``COLUMNS`` says otherwise."""
    from rich.console import Console

    c = Console(stderr=stderr, highlight=False, soft_wrap=False)
    if not c.is_terminal and not os.environ.get("COLUMNS"):
        c = Console(stderr=stderr, highlight=False, width=max(c.width, 160))
    return c


def console_width() -> int:
    """The width tables are fitted to (``COLUMNS``, the terminal's, or 160 when stdout is not a terminal)."""
    if _rich():
        return int(_console().width)
    return shutil.get_terminal_size((160, 24)).columns


#: the space between two columns of a table (rich's SIMPLE_HEAD box without edges: two blanks)
_GAP = 2


def table_width(columns: Sequence[str], rows: Sequence[Sequence[Any]]) -> int:
    """Columns a ``print_table`` table needs to show every cell whole."""
    return _width(_natural_widths(columns, [[clean(c) for c in r] for r in rows]))


def _width(widths: Sequence[int]) -> int:
    return sum(widths) + _GAP * max(0, len(widths) - 1)


def _natural_widths(columns: Sequence[str], cells: Sequence[Sequence[str]]) -> list[int]:
    return [max([len(c)] + [len(r[i]) for r in cells]) for i, c in enumerate(columns)]


def _fit(columns: list[str], cells: list[list[str]], free: Sequence[str], drop: Sequence[str], width: int
         ) -> tuple[list[int], list[str]]:
    """Column widths that fit ``width``: the widest ``free`` column gives up a character at a time (down to
    its header or 8 characters), then the ``drop`` columns go, in order. Returns (widths, dropped names)."""
    dropped: list[str] = []
    while True:
        keep = [i for i, c in enumerate(columns) if c not in dropped]
        widths = _natural_widths([columns[i] for i in keep], [[r[i] for i in keep] for r in cells])
        floor = {j: max(len(columns[i]), 8) for j, i in enumerate(keep) if columns[i] in free}
        excess = _width(widths) - width
        while excess > 0 and any(widths[j] > f for j, f in floor.items()):
            j = max(floor, key=lambda k: widths[k] - floor[k])
            widths[j] -= 1
            excess -= 1
        left = [c for c in drop if c in columns and c not in dropped]
        if excess <= 0 or not left:
            return [widths[keep.index(i)] if i in keep else 0 for i in range(len(columns))], dropped
        dropped.append(left[0])


def print_table(title: str, columns: Sequence[str], rows: Sequence[Sequence[Any]], right: Sequence[str] = (),
                footer: Sequence[str] = (), free: Sequence[str] = (), drop: Sequence[str] = ()) -> None:
    """A table on stdout, the one table style of every command (rich if installed, else aligned plain text).

    Cells are cleaned and markup-escaped. No cell wraps: every row is one line. When the terminal is too
    narrow, the ``free`` (free-text) columns shrink first, cut with an ellipsis, then the ``drop`` columns
    are left out (in that order, said under the table); other columns are cut only as a last resort.
    ``--json`` output has every value whole."""
    columns = list(columns)
    cells = [[clean(c) for c in r] for r in rows]
    widths, dropped = _fit(columns, cells, free, drop, console_width())
    keep = [i for i, c in enumerate(columns) if c not in dropped]
    footer = list(footer) + ([f"(not shown in {console_width()} columns: {', '.join(dropped)}; a wider terminal "
                              "or --json shows them)"] if dropped else [])
    if _rich():
        from rich import box
        from rich.markup import escape
        from rich.table import Table

        t = Table(box=box.SIMPLE_HEAD, show_edge=False, pad_edge=False, collapse_padding=True)
        for i in keep:
            c = columns[i]
            t.add_column(escape(c), justify="right" if c in right else "left", no_wrap=True, overflow="ellipsis",
                         max_width=widths[i] if c in free else None)
        for r in cells:
            t.add_row(*(escape(r[i]) for i in keep))
        con = _console()
        con.print(escape(clean(title)))
        con.print(t)
        for line in footer:
            con.print(escape(wrap(clean(line))))
        return
    print(clean(title))

    def fmt(r: Sequence[str]) -> str:
        cut = [clean(r[i], widths[i]) for i in keep]
        return (" " * _GAP).join(v.rjust(widths[i]) if columns[i] in right else v.ljust(widths[i])
                                 for v, i in zip(cut, keep)).rstrip()

    print(fmt(columns))
    print((" " * _GAP).join("-" * widths[i] for i in keep))
    for r in cells:
        print(fmt(r))
    for line in footer:
        print(wrap(clean(line)))


#: the rich bars of the ``Progress`` helpers showing now (``cli.progress`` adds its kernel bar to the last)
_LIVE: list[Any] = []


def live_bars() -> Any:
    """The rich ``Progress`` showing on stderr now, or None."""
    return _LIVE[-1] if _LIVE else None


class Progress:
    """A rich progress bar on stderr (silent without rich or when stderr is not a terminal, or with --json)."""

    def __init__(self, enabled: bool = True):
        self._p = None
        self._tasks: dict[str, Any] = {}
        if enabled and _rich():
            from rich.progress import BarColumn, Progress, TaskProgressColumn, TextColumn, TimeElapsedColumn

            con = _console(stderr=True)
            if con.is_terminal:
                self._p = Progress(TextColumn("{task.description:<12}"), BarColumn(), TaskProgressColumn(),
                                   TimeElapsedColumn(), console=con, transient=True)

    def __enter__(self) -> Progress:
        if self._p is not None:
            self._p.__enter__()
            _LIVE.append(self._p)
        return self

    def __exit__(self, *exc: Any) -> None:
        if self._p is not None:
            _LIVE.remove(self._p)
            self._p.__exit__(*exc)

    def update(self, phase: str, done: int, total: int | None) -> None:
        """Show ``done`` of ``total`` for ``phase`` (a bar per phase, created on first use)."""
        if self._p is None:
            return
        if phase not in self._tasks:
            self._tasks[phase] = self._p.add_task(phase, total=total)
        self._p.update(self._tasks[phase], completed=done, total=total)


#: the widest a line of free text gets (tables may be wider on a wide terminal; text stays readable)
TEXT_WIDTH = 80


def wrap(text: str, indent: str = "  ") -> str:
    """``text`` (one line of free text, already cleaned) wrapped at spaces to the console width, at most
    ``TEXT_WIDTH`` columns, continuation lines indented by ``indent``; words are never split (a long path
    stays whole) and ``KEEP`` spaces never break."""
    width = max(20, min(console_width(), TEXT_WIDTH))
    return textwrap.fill(text, width=width, subsequent_indent=indent, break_long_words=False,
                         break_on_hyphens=False).replace(KEEP, " ")


def note(msg: str) -> None:
    """An informational line on stderr (kept off stdout so --json output stays parseable)."""
    print(f"note: {clean(msg)}", file=sys.stderr)


def warn(msg: str) -> None:
    """A line on stderr about a suspicious result (the command still succeeds)."""
    print(f"warning: {clean(msg)}", file=sys.stderr)


def emit_json(doc: Any) -> None:
    """``doc`` as one JSON document on stdout (numpy scalars/arrays, paths and tuples converted)."""
    print(json_text(doc))


def json_text(doc: Any) -> str:
    """``doc`` as the JSON text ``emit_json`` prints (for a file written with ``-o x.json``)."""
    return json.dumps(doc, indent=1, default=_json_default)


def markdown_table(title: str, columns: Sequence[str], rows: Sequence[Sequence[Any]], right: Sequence[str] = (),
                   footer: Sequence[str] = ()) -> str:
    """The table ``print_table`` prints, as Markdown (a report file): the title as a heading, every cell whole
    (cleaned, '|' escaped), the ``right`` columns right-aligned, the footer lines as a list."""

    def cell(v: Any) -> str:
        return clean(v).replace("|", "\\|").replace(KEEP, " ")

    lines = [f"### {cell(title)}", "", "| " + " | ".join(map(cell, columns)) + " |",
             "|" + "|".join("---:" if c in right else "---" for c in columns) + "|",
             *("| " + " | ".join(map(cell, r)) + " |" for r in rows)]
    return "\n".join(lines + ([""] + [f"- {cell(f)}" for f in footer] if footer else []))


def _json_default(o: Any) -> Any:
    if isinstance(o, np.generic):
        return o.item()
    if isinstance(o, np.ndarray):
        return o.tolist()
    if isinstance(o, (Path, np.dtype)):
        return str(o)
    if isinstance(o, tuple):
        return list(o)
    raise TypeError(f"not JSON serializable: {type(o).__name__}")


def ms(s: float) -> str:
    """Seconds as milliseconds with three decimals."""
    return f"{s * 1e3:.3f}"


def si(n: float, unit: str = "") -> str:
    """``n`` with a k/M/G prefix: ``si(5.39e6, 'FLOP')`` is '5.39 MFLOP'."""
    for scale, p in ((1e9, "G"), (1e6, "M"), (1e3, "k")):
        if abs(n) >= scale:
            return f"{n / scale:.2f} {p}{unit}".rstrip()
    return f"{n:g} {unit}".rstrip()


def nbytes(n: float) -> str:
    """A byte count in the unit that suits its size: '512 B', '64.4 KiB', '191.8 MiB', '1.50 GiB'."""
    for scale, unit in ((2**30, "GiB"), (2**20, "MiB"), (2**10, "KiB")):
        if abs(n) >= scale:
            return f"{n / scale:.2f} {unit}" if unit == "GiB" else f"{n / scale:.1f} {unit}"
    return f"{int(n)} B"


def to_ms(doc: dict[str, Any], rename: Mapping[str, str] | None = None) -> dict[str, Any]:
    """``doc`` with its times in milliseconds, the one unit of time in every command's JSON: a key ``X_s``
    becomes ``X_ms`` (value x 1000), ``rename`` maps other second-valued keys to their ``_ms`` names. Rates
    (``X_per_s``) are left alone."""
    rename = dict(rename or {})
    out: dict[str, Any] = {}
    for k, v in doc.items():
        new = rename.get(k) or (k[:-2] + "_ms" if k.endswith("_s") and not k.endswith("_per_s") else "")
        out[new or k] = v * 1e3 if new and isinstance(v, (int, float)) else v
    return out


#: short spellings of long op names for tables in narrow terminals (the JSON keeps the full names)
SHORT_OPS = {"BatchNormalization": "BN", "GlobalAveragePool": "GAP", "GlobalMaxPool": "GMP",
             "AveragePool": "AvgPool", "HardSigmoid": "HSigmoid", "HardSwish": "HSwish",
             "QuantizeLinear": "Q", "DequantizeLinear": "DQ", "ConvInteger": "ConvInt",
             "MatMulInteger": "MatMulInt", "InstanceNormalization": "InstNorm",
             "LayerNormalization": "LayerNorm", "ReduceMean": "RMean", "Transpose": "Transp"}


def short_op(label: str) -> str:
    """An op label (``Conv+BatchNormalization+Relu``) with long op names abbreviated (``Conv+BN+Relu``)."""
    return "+".join(SHORT_OPS.get(p, p) for p in label.split("+"))


def shapes_text(shapes: dict[str, Any]) -> str:
    """``{'x': (1, 3, 8, 8)}`` as 'x=1x3x8x8' (for table titles)."""
    return ", ".join(f"{clean(k, 40)}={'x'.join(map(str, v))}" for k, v in shapes.items())
