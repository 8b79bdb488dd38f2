"""What the commands print: cleaned model text, tables (rich if installed), progress bars, notes and JSON.

Everything that shows text from a model goes through ``clean`` (control characters, i.e. terminal escape
sequences, become '?'); notes go to stderr so that ``--json`` output on stdout stays one parseable document.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np


def clean(text: Any, limit: int = 0) -> str:
    """Model-given text made safe for a terminal: control characters (escape sequences) replaced by '?'."""
    s = "".join(ch if ch.isprintable() else "?" for ch in str(text))
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
    from rich.console import Console

    c = Console(stderr=stderr, highlight=False, soft_wrap=False)
    if not c.is_terminal:
        c = Console(stderr=stderr, highlight=False, width=max(c.width, 160))
    return c


def print_table(title: str, columns: Sequence[str], rows: Sequence[Sequence[Any]], right: Sequence[str] = (),
                footer: Sequence[str] = ()) -> None:
    """A table on stdout: rich if installed, else aligned plain text. Cells are cleaned and markup-escaped."""
    cells = [[clean(c) for c in r] for r in rows]
    if _rich():
        from rich.markup import escape
        from rich.table import Table

        t = Table()
        for c in columns:
            t.add_column(escape(c), justify="right" if c in right else "left", overflow="fold")
        for r in cells:
            t.add_row(*(escape(c) for c in r))
        con = _console()
        con.print(escape(clean(title)))
        con.print(t)
        for line in footer:
            con.print(escape(clean(line)))
        return
    widths = [max([len(c)] + [len(r[i]) for r in cells]) for i, c in enumerate(columns)]
    print(clean(title))

    def fmt(r: Sequence[str]) -> str:
        return "  ".join(v.rjust(w) if columns[i] in right else v.ljust(w) for i, (v, w) in enumerate(zip(r, widths)))

    print(fmt(list(columns)))
    print("  ".join("-" * w for w in widths))
    for r in cells:
        print(fmt(r))
    for line in footer:
        print(clean(line))


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


def note(msg: str) -> None:
    """An informational line on stderr (kept off stdout so --json output stays parseable)."""
    print(f"note: {clean(msg)}", file=sys.stderr)


def emit_json(doc: Any) -> None:
    """``doc`` as one JSON document on stdout (numpy scalars/arrays, paths and tuples converted)."""
    print(json.dumps(doc, indent=1, default=_json_default))


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


def nbytes(n: int) -> str:
    """A byte count as 'B' or 'KiB'."""
    return f"{n / 1024:.1f} KiB" if n >= 1024 else f"{n} B"


def shapes_text(shapes: dict[str, Any]) -> str:
    """``{'x': (1, 3, 8, 8)}`` as 'x=1x3x8x8' (for table titles)."""
    return ", ".join(f"{clean(k, 40)}={'x'.join(map(str, v))}" for k, v in shapes.items())
