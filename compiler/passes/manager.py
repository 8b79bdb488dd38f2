"""The pass manager: an ordered pipeline of IR passes with verification, timing and IR dumps.

A pass is a small class with a ``name`` and an ``apply(graph)`` that rewrites the graph through ``Graph``'s
methods; ``run(graph)`` returns a ``PassResult`` saying how many nodes it added, removed and rewrote (the
graph records that as the methods change it), which is true when anything changed. When ``verify`` is on
(the default, and always in tests) the manager lints the graph before the first pass and after every
pass, and checks each pass's own post-condition (``Pass.ensures``). It records per-pass wall time and
changes (``report()``), calls the observers ``before_each`` / ``after_each`` around every pass, and can print
the IR before/after chosen passes (``CNNJIT_DUMP_IR="after:fold_constants,dead_code"``, several parts joined
by ``;`` as in ``"before:fold_pad;after:*"``, or ``dump_after=``). A pass name that does not exist is an
``InputError`` listing the real ones, not a dump that silently never happens.
"""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import ClassVar, TextIO

from cnnjit.ir import Edits, Graph, Node, TensorType, Value
from cnnjit.ir.errors import InputError, IRError


@dataclass(frozen=True)
class PassResult:
    """What one run of a pass changed: how many nodes it added, removed and rewrote in place. True when
    anything changed (so ``if p.run(graph):`` reads as before)."""

    added: int = 0
    removed: int = 0
    rewritten: int = 0

    @classmethod
    def of(cls, edits: Edits) -> PassResult:
        return cls(len(edits.added), len(edits.removed), len(edits.rewritten))

    def __bool__(self) -> bool:
        return bool(self.added or self.removed or self.rewritten)


class Pass:
    """Base class: subclasses set ``name`` and implement ``apply`` (and may check ``ensures``)."""

    name: ClassVar[str] = "pass"
    #: merges or absorbs nodes (or changes how they are computed together): ``fuse=False`` leaves it out
    fusion: ClassVar[bool] = False

    def apply(self, graph: Graph) -> None:  # pragma: no cover - interface
        """Rewrite ``graph`` in place, through ``Graph``'s methods (which record what changed)."""
        raise NotImplementedError

    def ensures(self, graph: Graph) -> None:
        """Raise ``IRError`` if the graph after ``apply`` lacks what this pass promises (its post-condition)."""

    def run(self, graph: Graph) -> PassResult:
        """Apply the pass; what it added, removed and rewrote."""
        graph.take_edits()  # start counting here
        self.apply(graph)
        return PassResult.of(graph.take_edits())


def insert_op(graph: Graph, anchor: Node, op: str, src: Value, shape: tuple[int, ...], **attrs) -> Value:
    """A new ``op`` node of ``src`` (its output of ``shape``) before ``anchor``, for passes that rewrite one
    node as several: its output. A Reshape's attribute is ``shape`` itself."""
    shape = tuple(int(d) for d in shape)
    out = Value(TensorType(src.dtype, shape))
    graph.insert_before(anchor, Node(op, [src], [out], {"shape": shape} if op == "Reshape" else attrs))
    return out


class RootedFusion(Pass):
    """A fusion matched from one op, ``root`` (a Softmax for attention, a ReduceMean for layer norm):
    ``apply`` offers ``_fuse(graph, node)`` each node of that op still in the graph, in order (a match
    removes nodes, possibly later roots). ``_fuse`` answers whether it rewrote."""

    fusion = True
    root: ClassVar[str] = ""

    def apply(self, graph: Graph) -> None:
        for node in list(graph.nodes):
            if node.op == self.root and node in graph.nodes:
                self._fuse(graph, node)

    def _fuse(self, graph: Graph, node: Node) -> bool:  # pragma: no cover - interface
        raise NotImplementedError


@dataclass
class PassRecord:
    name: str
    result: PassResult
    seconds: float
    nodes_before: int
    nodes_after: int

    @property
    def changed(self) -> bool:
        return bool(self.result)


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
        check_pass_names(self.dump_before | self.dump_after, "dump_before= / dump_after=")
        before, after = parse_dump_ir(os.environ.get("CNNJIT_DUMP_IR", ""))
        self.dump_before |= before
        self.dump_after |= after

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
            result = p.run(graph)
            dt = time.perf_counter() - t0
            if not isinstance(result, PassResult):  # a pass that overrides run() and answers a bool
                result = PassResult(rewritten=int(bool(result)))
            self.records.append(PassRecord(p.name, result, dt, n0, len(graph.nodes)))
            if self.verify:
                try:
                    graph.lint()
                    p.ensures(graph)
                except IRError as e:
                    raise IRError(f"after pass {p.name!r}: {e}") from e
            self._dump(graph, "after", p.name)
            if self.after_each is not None:
                self.after_each(p, graph)
        return graph

    def report(self) -> str:
        """A small table: pass, changed, nodes added / removed / rewritten, time, node counts."""
        rows = [f"{'pass':<24}{'changed':>8}{'added':>7}{'removed':>8}{'rewritten':>10}{'ms':>10}{'nodes':>12}"]
        for r in self.records:
            rows.append(f"{r.name:<24}{str(r.changed):>8}{r.result.added:>7}{r.result.removed:>8}"
                        f"{r.result.rewritten:>10}{r.seconds * 1e3:>10.2f}{f'{r.nodes_before}->{r.nodes_after}':>12}")
        return "\n".join(rows)


def select_passes(available: Iterable[Pass], passes: Sequence[str] | None, disable: Sequence[str] | None,
                  fuse: bool) -> list[Pass]:
    """The pipeline after the user's ``passes=`` / ``disable=`` / ``fuse=`` choices.

    ``fuse=False`` leaves out every pass marked ``fusion`` (each merges nodes or computes them together: BN and
    Pad folding, epilogue fusion, QDQ to integer ops, transpose cancelling, channel-shuffle folding, in-place
    Concat), so every op of the imported graph runs as its own kernel.
    """
    avail = list(available)
    check_pass_names(list(passes or []) + list(disable or []), "passes= / disable=",
                     sorted({p.name for p in avail}))
    chosen = [p for p in avail if (passes is None or p.name in passes)]
    chosen = [p for p in chosen if p.name not in set(disable or [])]
    if not fuse:
        chosen = [p for p in chosen if not p.fusion]
    return chosen


def pass_names() -> list[str]:
    """The name of every pass class (every subclass of ``Pass`` that sets its own ``name``: not a shared base
    such as ``RootedFusion``), sorted: what a dump request may name."""
    names: set[str] = set()
    todo = list(Pass.__subclasses__())
    while todo:
        cls = todo.pop()
        if "name" in vars(cls):
            names.add(cls.name)
        todo.extend(cls.__subclasses__())
    return sorted(names)


def check_pass_names(names: Iterable[str], where: str, known: Sequence[str] | None = None) -> None:
    """``InputError`` (a ``ValueError`` too, like other bad options) naming the unknown passes among ``names``
    and listing the real ones (``known``, default: every pass); ``*`` (all passes) is allowed."""
    known = pass_names() if known is None else list(known)
    bad = [n for n in names if n != "*" and n not in known]
    if bad:
        raise InputError(f"unknown pass{'es' if len(bad) > 1 else ''} {', '.join(map(repr, bad))} in {where}; "
                         f"the passes are: {', '.join(known)}")


def parse_dump_ir(spec: str) -> tuple[set[str], set[str]]:
    """``CNNJIT_DUMP_IR``'s value (``"before:fold_pad;after:fold_constants,dead_code"``, ``"after:*"``) as the
    (before, after) sets of pass names; an unknown pass or a part without ``before:``/``after:`` is an
    ``InputError``."""
    before: set[str] = set()
    after: set[str] = set()
    for part in filter(None, (p.strip() for p in spec.split(";"))):
        when, sep, names = part.partition(":")
        if not sep or when not in ("before", "after"):
            raise InputError(f"CNNJIT_DUMP_IR part {part!r} is not 'before:PASS,...' or 'after:PASS,...' "
                             f"(e.g. CNNJIT_DUMP_IR=after:fold_constants,dead_code or after:*)")
        chosen = list(dict.fromkeys(n.strip() for n in names.split(",") if n.strip()))
        check_pass_names(chosen, "CNNJIT_DUMP_IR")
        (before if when == "before" else after).update(chosen)
    return before, after
