"""The pass manager: an ordered pipeline of IR passes with verification, timing and IR dumps.

A pass is a small class with a ``name`` and ``run(graph) -> bool`` ("did anything change"). The manager
lints the graph after every pass when ``verify`` is on (always in tests), records per-pass wall time, and
can print the IR before/after chosen passes (``CNNJIT_DUMP_IR=after:fold,dce`` or ``dump_after=``).
"""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import ClassVar, TextIO

from cnnjit.ir import Graph
from cnnjit.ir.errors import IRError


class Pass:
    """Base class: subclasses set ``name`` and implement ``run``."""

    name: ClassVar[str] = "pass"
    #: run by default in the standard pipeline (fusion passes may set False for fuse=False)
    fusion: ClassVar[bool] = False

    def run(self, graph: Graph) -> bool:  # pragma: no cover - interface
        raise NotImplementedError


@dataclass
class PassRecord:
    name: str
    changed: bool
    seconds: float
    nodes_before: int
    nodes_after: int


@dataclass
class PassManager:
    """Runs passes in order; see the module docstring for the debugging switches."""

    passes: Sequence[Pass]
    verify: bool = True
    dump_before: set[str] = field(default_factory=set)
    dump_after: set[str] = field(default_factory=set)
    out: TextIO = sys.stderr
    records: list[PassRecord] = field(default_factory=list)
    #: observers called with (pass, graph) around every pass (``compiler.stages.Hooks``)
    before_each: Callable[[Pass, Graph], None] | None = None
    after_each: Callable[[Pass, Graph], None] | None = None

    def __post_init__(self) -> None:
        env = os.environ.get("CNNJIT_DUMP_IR", "")
        for part in filter(None, env.split(";")):
            when, _, names = part.partition(":")
            target = self.dump_before if when == "before" else self.dump_after
            target.update(n for n in names.split(",") if n)

    def _dump(self, graph: Graph, when: str, name: str) -> None:
        if name in (self.dump_before if when == "before" else self.dump_after) or "*" in (
            self.dump_before if when == "before" else self.dump_after
        ):
            print(f"// ---- IR {when} pass {name} ----\n{graph}", file=self.out)

    def run(self, graph: Graph) -> Graph:
        if self.verify:
            graph.lint()
        for p in self.passes:
            if self.before_each is not None:
                self.before_each(p, graph)
            self._dump(graph, "before", p.name)
            n0 = len(graph.nodes)
            t0 = time.perf_counter()
            changed = bool(p.run(graph))
            dt = time.perf_counter() - t0
            self.records.append(PassRecord(p.name, changed, dt, n0, len(graph.nodes)))
            if self.verify:
                try:
                    graph.lint()
                except IRError as e:
                    raise IRError(f"after pass {p.name!r}: {e}") from e
            self._dump(graph, "after", p.name)
            if self.after_each is not None:
                self.after_each(p, graph)
        return graph

    def report(self) -> str:
        """A small table: pass, changed, time, node counts."""
        rows = [f"{'pass':<24}{'changed':>8}{'ms':>10}{'nodes':>12}"]
        for r in self.records:
            rows.append(f"{r.name:<24}{str(r.changed):>8}{r.seconds * 1e3:>10.2f}"
                        f"{f'{r.nodes_before}->{r.nodes_after}':>12}")
        return "\n".join(rows)


def select_passes(available: Iterable[Pass], passes: Sequence[str] | None, disable: Sequence[str] | None,
                  fuse: bool) -> list[Pass]:
    """The pipeline after the user's ``passes=`` / ``disable=`` / ``fuse=`` choices."""
    avail = list(available)
    names = {p.name for p in avail}
    for n in list(passes or []) + list(disable or []):
        if n not in names:
            raise ValueError(f"unknown pass {n!r}; available passes: {', '.join(sorted(names))}")
    chosen = [p for p in avail if (passes is None or p.name in passes)]
    chosen = [p for p in chosen if p.name not in set(disable or [])]
    if not fuse:
        chosen = [p for p in chosen if not p.fusion]
    return chosen
