"""Live progress of cold compiles on stderr: kernels ready / total, the kernel being compiled, cache hits.

``cnnjit.compiler.codegen.precompile`` tells its observers (``observe_kernels``) about every kernel as it
starts compiling and as it becomes ready; ``CompileDisplay`` turns that into a transient rich bar on stderr
while a specialisation compiles (inside a command's own progress bars when one is showing, e.g. ``bench``),
and nothing when stderr is not a terminal or the output is ``--json``. ``StderrHandler`` keeps ``--verbose``
log lines above the bar instead of through it.
"""

from __future__ import annotations

import contextlib
import logging
import sys
from typing import Any

from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

from cnnjit.compiler.codegen.precompile import KernelEvent, observe_kernels

from .output import clean, live_bars

#: the ready origins that are cache hits
_HITS = ("memory", "disk cache")


class CompileDisplay:
    """Shows each specialisation's kernel compile live (``with CompileDisplay(enabled): ...``)."""

    def __init__(self, enabled: bool = True) -> None:
        self._console = Console(stderr=True, highlight=False)
        self.enabled = enabled and self._console.is_terminal
        self._own: Progress | None = None  # our bar, when no command bar is showing
        self._bars: Progress | None = None  # where the task lives (ours or a command's)
        self._task: Any = None
        self._hits = 0
        self._stack = contextlib.ExitStack()

    def __enter__(self) -> CompileDisplay:
        if self.enabled:
            self._stack.enter_context(observe_kernels(self))
        return self

    def __exit__(self, *exc: Any) -> None:
        self._stack.close()
        self._hide()

    def __call__(self, ev: KernelEvent) -> None:
        """One ``KernelEvent``: start, update or hide the bar."""
        if ev.origin == "end":
            self._hide()
            return
        if ev.origin == "begin":
            self._hide()
            self._hits = 0
            if ev.done < ev.total:  # something to load or compile
                self._show(ev.total, ev.done)
            return
        if self._task is None or self._bars is None:
            return
        if ev.origin in _HITS:
            self._hits += 1
        self._bars.update(self._task, completed=ev.done, total=ev.total, description=self.describe(ev))

    def describe(self, ev: KernelEvent) -> str:
        """The bar's text for ``ev`` (escaped for rich): kernels done / total, cache hits, current kernel."""
        text = f"kernels {ev.done}/{ev.total}" + (f" ({self._hits} cached)" if self._hits else "")
        if ev.origin == "schedule":
            text += ": compiling the schedule (one numba function calling them all)"
        elif ev.origin in ("compiling", "loading"):
            what = ", ".join(x for x in (ev.ops, ev.variant) if x)
            text += f": {ev.origin} {ev.name}" + (f" ({what})" if what else "")
        return escape(clean(text, 64).ljust(64))  # a steady width: the bar does not jump with the name

    def _show(self, total: int, done: int) -> None:
        bars = live_bars()
        if bars is None:
            self._own = Progress(TextColumn("{task.description}"), BarColumn(bar_width=24), TimeElapsedColumn(),
                                 console=self._console, transient=True)
            self._own.start()
            bars = self._own
        self._bars = bars
        self._task = bars.add_task(f"kernels {done}/{total}", total=total, completed=done)

    def _hide(self) -> None:
        if self._bars is not None and self._task is not None:
            with contextlib.suppress(KeyError):
                self._bars.remove_task(self._task)
        if self._own is not None:
            self._own.stop()
        self._own = self._bars = self._task = None


class StderrHandler(logging.StreamHandler):
    """A log handler writing to whatever ``sys.stderr`` is now (rich's live display redirects it, so that
    log lines print above the progress bar instead of tearing it)."""

    def __init__(self) -> None:
        super().__init__(sys.stderr)

    @property  # type: ignore[override]
    def stream(self) -> Any:
        return sys.stderr

    @stream.setter
    def stream(self, value: Any) -> None:
        """Ignored: the stream is always the current ``sys.stderr``."""
