"""Values, nodes and graphs: the whole data model of the IR.

A closed set of kinds, as in torch.fx: a ``Value`` is a graph input, a constant, or the output of exactly
one ``Node``; a ``Node`` applies one registered op to values. Graph nodes are kept in topological order.
Names that came from the model are kept for messages and printing only; they never reach generated code.
"""

from __future__ import annotations

import dataclasses
import itertools
from collections.abc import Iterable, Iterator
from typing import Any

import numpy as np

from .errors import IRError
from .op_families import get_op
from .ops import residual_positions, retarget_residuals
from .types import TensorType

_ids = itertools.count()


class Value:
    """A tensor-valued SSA value with a static type; ``const`` holds its data when it is a constant."""

    __slots__ = ("id", "name", "type", "producer", "const", "users")

    def __init__(self, type: TensorType, name: str = "", const: np.ndarray | None = None):
        self.id: int = next(_ids)
        self.name = name
        self.type = type
        self.producer: Node | None = None
        self.const = const
        self.users: list[Node] = []

    @property
    def is_const(self) -> bool:
        return self.const is not None

    @property
    def shape(self) -> tuple[int, ...]:
        return self.type.shape

    @property
    def dtype(self) -> np.dtype:
        return self.type.dtype

    def ref(self) -> str:
        """The printer's handle for this value (``%12``, or ``$3`` for a constant)."""
        return f"${self.id}" if self.is_const else f"%{self.id}"

    def __repr__(self) -> str:
        return f"Value({self.ref()}: {self.type}{' ' + repr(self.name) if self.name else ''})"


class Node:
    """One op application. ``inputs`` may contain ``None`` for an absent optional input."""

    __slots__ = ("id", "op", "inputs", "outputs", "attrs", "name", "meta")

    def __init__(
        self,
        op: str,
        inputs: list[Value | None],
        outputs: list[Value],
        attrs: dict[str, Any] | None = None,
        name: str = "",
    ):
        self.id: int = next(_ids)
        self.op = op
        self.inputs = list(inputs)
        self.outputs = list(outputs)
        self.attrs = dict(attrs or {})
        self.name = name
        self.meta: dict[str, Any] = {}  # pass annotations (e.g. which nodes were fused into this one)
        for o in self.outputs:
            o.producer = self

    def describe(self) -> str:
        return f"node #{self.id} {self.op}" + (f" ({self.name!r})" if self.name else "")

    def __repr__(self) -> str:
        return f"Node({self.describe()})"


@dataclasses.dataclass(frozen=True, eq=False)
class Dequantized:
    """Quantization metadata of a constant: it is ``DequantizeLinear(q, scale, zero_point, axis)``.

    The frontend folds DequantizeLinear of initializers (weights, biases) into float constants and records
    the integers behind each one, so ``qdq_to_integer`` can use them exactly; ``Graph.lint`` checks that
    they still dequantize to the constant, and the printer shows them.
    """

    q: np.ndarray
    scale: np.ndarray
    zero_point: np.ndarray | None
    axis: int
    #: the constant's array ``Graph.lint`` last found these integers to match (it re-checks any other one)
    checked: np.ndarray | None = dataclasses.field(default=None, repr=False)

    def dequantize(self, dtype: np.dtype, shape: tuple[int, ...]) -> np.ndarray:
        """The constant these integers stand for (the frontend's folding of DequantizeLinear, exactly)."""
        opdef = get_op("DequantizeLinear")
        ins = [self.q, self.scale] + ([] if self.zero_point is None else [self.zero_point])
        arr = opdef.run(ins, opdef.check_attrs({"axis": self.axis}))[0]
        return np.asarray(arr, dtype).reshape(shape)

    def __str__(self) -> str:
        def t(a: np.ndarray) -> TensorType:
            return TensorType(a.dtype, a.shape)

        zp = "" if self.zero_point is None else f", zero point {t(self.zero_point)}"
        return f"DequantizeLinear({t(self.q)}, scale {t(self.scale)}{zp}, axis {self.axis})"


@dataclasses.dataclass
class Edits:
    """Ids of the nodes a rewrite added, removed and changed in place (op, attributes, inputs, outputs,
    annotations), gathered by the ``Graph`` methods that make those changes (see ``Graph.take_edits``)."""

    added: set[int] = dataclasses.field(default_factory=set)
    removed: set[int] = dataclasses.field(default_factory=set)
    rewritten: set[int] = dataclasses.field(default_factory=set)

    def add(self, node: Node) -> None:
        self.added.add(node.id)

    def remove(self, node: Node) -> None:
        self.rewritten.discard(node.id)
        if node.id in self.added:
            self.added.discard(node.id)  # made and dropped within one rewrite: no net change
        else:
            self.removed.add(node.id)

    def rewrite(self, node: Node) -> None:
        if node.id not in self.added:
            self.rewritten.add(node.id)


def _fmt_attr(v: Any) -> str:
    if isinstance(v, float):
        return f"{v:g}"
    if isinstance(v, np.ndarray):
        return f"array{list(v.shape)}"
    if isinstance(v, (list, tuple)):
        return "[" + ",".join(_fmt_attr(x) for x in v) + "]"
    return repr(v) if isinstance(v, str) else str(v)


class Graph:
    """A static-shape dataflow graph: inputs, nodes in topological order, outputs.

    Passes change a graph only through its methods (``const``, ``add_node``, ``insert_before``,
    ``set_input``, ``replace_all_uses``, ``set_attrs``, ``replace_op``, ``annotate``, ``remove_node``, ...):
    they keep ``Value.users`` and ``Value.producer`` consistent and record what changed in ``edits``.
    """

    def __init__(self, name: str = "graph"):
        self.name = name
        self.inputs: list[Value] = []
        self.outputs: list[Value] = []
        self.nodes: list[Node] = []
        #: quantization metadata: constant value id -> the integers it was dequantized from
        self.dequantized: dict[int, Dequantized] = {}
        #: what the methods below changed since ``take_edits`` was last called
        self.edits = Edits()

    # -- construction ---------------------------------------------------------------------------------
    def add_input(self, type: TensorType, name: str = "") -> Value:
        v = Value(type, name)
        self.inputs.append(v)
        return v

    @staticmethod
    def const(array: np.ndarray, name: str = "") -> Value:
        """A constant value holding ``array`` (C-contiguous); it joins the graph when a node uses it."""
        arr = np.asarray(array, order="C")
        return Value(TensorType(arr.dtype, arr.shape), name, const=arr)

    def add_node(self, node: Node) -> Node:
        """Append a node (its inputs must already be defined) and register it as a user of its inputs."""
        self.nodes.append(node)
        self._use_inputs(node)
        return node

    def insert_before(self, anchor: Node, node: Node) -> Node:
        self.nodes.insert(self.nodes.index(anchor), node)
        self._use_inputs(node)
        return node

    def _use_inputs(self, node: Node) -> None:
        for v in node.inputs:
            if v is not None:
                v.users.append(node)
        self.edits.add(node)

    # -- removal --------------------------------------------------------------------------------------
    def remove_node(self, node: Node) -> None:
        """Remove a node whose outputs are no longer used (or are now defined by another node)."""
        self._check_removable(node)
        self.nodes.remove(node)
        self._unuse_inputs(node)

    def remove_nodes(self, nodes: Iterable[Node]) -> None:
        """Remove several such nodes at once and recompute ``Value.users`` in node order."""
        gone = {n.id: n for n in nodes}
        for n in gone.values():
            self._check_removable(n, gone)
        self.nodes = [n for n in self.nodes if n.id not in gone]
        for n in gone.values():
            self._unuse_inputs(n)
        self.rebuild_users()

    def _check_removable(self, node: Node, also_gone: dict[int, Node] | None = None) -> None:
        for o in node.outputs:
            if o.producer is not node:
                continue  # another node defines this value now
            used = [u for u in o.users if also_gone is None or u.id not in also_gone]
            if used or o in self.outputs:
                raise IRError(f"cannot remove {node.describe()}: output {o.ref()} is still used")

    def _unuse_inputs(self, node: Node) -> None:
        for v in node.inputs:
            if v is not None and node in v.users:
                v.users.remove(node)
        self.edits.remove(node)

    def remove_node_keep_output(self, node: Node, producer: Node) -> None:
        """Drop single-input-chain ``node`` (whose input is ``producer``'s only output) and make
        ``producer`` define ``node``'s output value in its place, moving ``producer`` to ``node``'s
        position so every value it now reads (e.g. a fused residual) is defined before it."""
        old = producer.outputs[0]
        new = node.outputs[0]
        self._unuse_inputs(node)
        idx = self.nodes.index(node)
        self.nodes[idx] = producer
        del self.nodes[self.nodes.index(producer)]  # the original, earlier position
        producer.outputs[0] = new
        new.producer = producer
        old.producer = None
        self.edits.rewrite(producer)

    # -- rewiring -------------------------------------------------------------------------------------
    def set_input(self, node: Node, index: int, value: Value | None) -> None:
        """Make input ``index`` of ``node`` read ``value``; absent optional inputs (``None``) fill any gap."""
        if index >= len(node.inputs):
            node.inputs.extend([None] * (index + 1 - len(node.inputs)))
        old = node.inputs[index]
        if old is not None and node in old.users:
            old.users.remove(node)
        node.inputs[index] = value
        if value is not None:
            value.users.append(node)
        self.edits.rewrite(node)

    def replace_all_uses(self, old: Value, new: Value) -> None:
        """Make every user (and graph output) of ``old`` use ``new`` instead, including a fused epilogue's
        residual steps (which name the input they combine)."""
        for user in list(old.users):
            for i, v in enumerate(user.inputs):
                if v is old:
                    self.set_input(user, i, new)
            retarget_residuals(user, old, new)
        self.outputs = [new if o is old else o for o in self.outputs]

    def set_attrs(self, node: Node, **attrs: Any) -> None:
        """Change (or add) attributes of ``node`` in place."""
        node.attrs.update(attrs)
        self.edits.rewrite(node)

    def replace_op(self, node: Node, op: str, attrs: dict[str, Any]) -> None:
        """Make ``node`` apply ``op`` with exactly ``attrs`` (its inputs and outputs stay)."""
        node.op = op
        node.attrs = dict(attrs)
        self.edits.rewrite(node)

    def annotate(self, node: Node, **meta: Any) -> None:
        """Set pass annotations (``node.meta``) that later stages read, e.g. ``inplace=True``."""
        node.meta.update(meta)
        self.edits.rewrite(node)

    def note_fused(self, node: Node, what: str) -> None:
        """Record that ``node`` now also computes ``what`` (shown by the printer and ``cnnjit inspect``)."""
        node.meta.setdefault("fused", []).append(what)
        self.edits.rewrite(node)

    def take_edits(self) -> Edits:
        """What the methods above changed since the last call, and start a fresh record."""
        edits, self.edits = self.edits, Edits()
        return edits

    # -- quantization metadata ------------------------------------------------------------------------
    def record_dequantized(self, value: Value, q: np.ndarray, scale: np.ndarray, zero_point: np.ndarray | None,
                           axis: int) -> None:
        """Remember that constant ``value`` is ``DequantizeLinear(q, scale, zero_point, axis)`` (the values
        themselves are compared by the next ``lint``)."""
        rec = Dequantized(np.asarray(q), np.asarray(scale), None if zero_point is None else np.asarray(zero_point),
                          int(axis))
        self._check_dequantized_type(value, rec)
        self.dequantized[value.id] = rec

    def dequantized_origin(self, value: Value | None) -> Dequantized | None:
        """The integers constant ``value`` was dequantized from, if the frontend recorded them."""
        return None if value is None else self.dequantized.get(value.id)

    @staticmethod
    def _check_dequantized_type(v: Value, rec: Dequantized) -> None:
        if not v.is_const:
            raise IRError(f"{v.ref()}: quantization metadata on a value that is not a constant")
        if rec.q.shape != v.shape or rec.q.dtype.kind not in "iu":
            raise IRError(f"{v.ref()}: quantization metadata {rec} does not fit the constant's type {v.type}")

    def _check_dequantized(self, v: Value, rec: Dequantized) -> None:
        """The record fits ``v`` and its integers dequantize to ``v``'s data (compared once per array)."""
        self._check_dequantized_type(v, rec)
        if v.const is rec.checked:
            return
        if not np.array_equal(rec.dequantize(v.dtype, v.shape), v.const, equal_nan=True):
            raise IRError(f"{v.ref()}: its recorded integers ({rec}) do not dequantize to the constant")
        self.dequantized[v.id] = dataclasses.replace(rec, checked=v.const)

    # -- queries --------------------------------------------------------------------------------------
    def values(self) -> Iterator[Value]:
        """Every value the graph touches, each once: inputs, constants and node outputs."""
        seen: set[int] = set()
        for v in itertools.chain(self.inputs, *(n.inputs for n in self.nodes), *(n.outputs for n in self.nodes),
                                 self.outputs):
            if v is not None and v.id not in seen:
                seen.add(v.id)
                yield v

    def constants(self) -> list[Value]:
        return [v for v in self.values() if v.is_const]

    def rebuild_users(self) -> None:
        """Recompute every ``Value.users`` list from the node list."""
        for v in self.values():
            v.users = []
        for n in self.nodes:
            for v in n.inputs:
                if v is not None:
                    v.users.append(n)

    # -- checking -------------------------------------------------------------------------------------
    def lint(self) -> None:
        """Check the graph's invariants; raise ``IRError`` naming the exact node and value at fault."""
        defined: set[int] = {v.id for v in self.inputs}
        node_ids: set[int] = set()
        readers: dict[int, list[int]] = {}  # value id -> ids of the nodes reading it (once per input slot)
        for n in self.nodes:
            if n.id in node_ids:
                raise IRError(f"{n.describe()} appears twice in the node list")
            node_ids.add(n.id)
            opdef = get_op(n.op)
            if opdef is None:
                raise IRError(f"{n.describe()}: op {n.op!r} is not registered")
            for i, v in enumerate(n.inputs):
                if v is None:
                    continue
                if not v.is_const and v.id not in defined:
                    raise IRError(
                        f"{n.describe()}: input {i} {v.ref()} is used before it is defined (or never defined)"
                    )
                readers.setdefault(v.id, []).append(n.id)
            for o in n.outputs:
                if o.producer is not n:
                    raise IRError(f"{n.describe()}: output {o.ref()} names another producer")
                if o.id in defined:
                    raise IRError(f"{n.describe()}: output {o.ref()} is defined twice")
                if o.is_const:
                    raise IRError(f"{n.describe()}: output {o.ref()} is marked constant")
                defined.add(o.id)
            post = n.attrs.get("post", ())
            ks = iter(residual_positions(n.inputs, post))
            for step in post:
                if step.residual and n.inputs[k := next(ks)] is not step.value:
                    raise IRError(f"{n.describe()}: its epilogue's {step.op} step combines "
                                  f"{'nothing' if step.value is None else step.value.ref()}, not its input {k}")
            try:
                expected = opdef.infer_types(n.inputs, n.attrs)
            except Exception as e:  # noqa: BLE001 - re-raised with the node named
                raise IRError(f"{n.describe()}: type inference failed: {e}") from e
            for i, (o, t) in enumerate(zip(n.outputs, expected)):
                if o.type != t:
                    raise IRError(f"{n.describe()}: output {i} {o.ref()} has type {o.type}, the op infers {t}")
        for o in self.outputs:
            if not o.is_const and o.id not in defined:
                raise IRError(f"graph output {o.ref()} ({o.name!r}) is never defined")
        for v in self.inputs:
            if v.is_const:
                raise IRError(f"graph input {v.ref()} is marked constant")
        self._lint_values(readers)

    def _lint_values(self, readers: dict[int, list[int]]) -> None:
        """``Value.users`` lists exactly the nodes that read each value; quantization metadata is right."""
        for v in self.values():
            want = readers.get(v.id, [])
            got = [u.id for u in v.users]
            if got != want and sorted(got) != sorted(want):
                raise IRError(f"value {v.ref()}: its users list {[u.describe() for u in v.users]} does not "
                              "match the nodes that read it")
            rec = self.dequantized.get(v.id)
            if rec is not None:
                self._check_dequantized(v, rec)

    # -- printing -------------------------------------------------------------------------------------
    def __str__(self) -> str:
        lines = [f"graph {self.name}("]
        for v in self.inputs:
            lines.append(f"    {v.ref()}: {v.type}" + (f"  # {v.name!r}" if v.name else ""))
        lines.append(") {")
        for c in self.constants():
            rec = self.dequantized.get(c.id)
            lines.append(f"  {c.ref()}: {c.type} = const" + (f"  # = {rec}" if rec is not None else ""))
        for n in self.nodes:
            outs = ", ".join(f"{o.ref()}: {o.type}" for o in n.outputs)
            ins = ", ".join("_" if v is None else v.ref() for v in n.inputs)
            attrs = ", ".join(f"{k}={_fmt_attr(v)}" for k, v in sorted(n.attrs.items()))
            tail = []
            if n.meta.get("fused"):
                tail.append("fused: " + "+".join(n.meta["fused"]))
            if n.meta.get("inplace"):
                tail.append("in place")
            lines.append(f"  {outs} = {n.op}({ins}{'; ' + attrs if attrs else ''})"
                         + (f"  # {'; '.join(tail)}" if tail else ""))
        lines.append("  return " + ", ".join(o.ref() for o in self.outputs))
        lines.append("}")
        return "\n".join(lines)


def topo_order(nodes: Iterable[Node]) -> list[Node]:
    """Nodes sorted so that every producer precedes its users (stable for already-ordered input)."""
    nodes = list(nodes)
    members = {n.id for n in nodes}
    done: set[int] = set()
    out: list[Node] = []
    for root in nodes:
        stack = [(root, False)]
        while stack:
            n, expanded = stack.pop()
            if n.id in done:
                continue
            if expanded:
                done.add(n.id)
                out.append(n)
                continue
            stack.append((n, True))
            for v in reversed(n.inputs):
                p = v.producer if v is not None else None
                if p is not None and p.id in members and p.id not in done:
                    stack.append((p, False))
    return out
