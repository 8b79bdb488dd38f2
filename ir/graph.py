"""Values, nodes and graphs: the whole data model of the IR.

A closed set of kinds, as in torch.fx: a ``Value`` is a graph input, a constant, or the output of exactly
one ``Node``; a ``Node`` applies one registered op to values. Graph nodes are kept in topological order.
Names that came from the model are kept for messages and printing only; they never reach generated code.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable, Iterator
from typing import Any

import numpy as np

from .errors import IRError
from .ops import get_op
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


def _fmt_attr(v: Any) -> str:
    if isinstance(v, float):
        return f"{v:g}"
    if isinstance(v, np.ndarray):
        return f"array{list(v.shape)}"
    if isinstance(v, (list, tuple)):
        return "[" + ",".join(_fmt_attr(x) for x in v) + "]"
    return repr(v) if isinstance(v, str) else str(v)


class Graph:
    """A static-shape dataflow graph: inputs, nodes in topological order, outputs."""

    def __init__(self, name: str = "graph"):
        self.name = name
        self.inputs: list[Value] = []
        self.outputs: list[Value] = []
        self.nodes: list[Node] = []

    # -- construction ---------------------------------------------------------------------------------
    def add_input(self, type: TensorType, name: str = "") -> Value:
        v = Value(type, name)
        self.inputs.append(v)
        return v

    def add_node(self, node: Node) -> Node:
        """Append a node (its inputs must already be defined) and register it as a user of its inputs."""
        self.nodes.append(node)
        for v in node.inputs:
            if v is not None:
                v.users.append(node)
        return node

    def insert_before(self, anchor: Node, node: Node) -> Node:
        self.nodes.insert(self.nodes.index(anchor), node)
        for v in node.inputs:
            if v is not None:
                v.users.append(node)
        return node

    def remove_node(self, node: Node) -> None:
        """Remove a node whose outputs are no longer used."""
        for o in node.outputs:
            if o.users or o in self.outputs:
                raise IRError(f"cannot remove {node.describe()}: output {o.ref()} is still used")
        self.nodes.remove(node)
        for v in node.inputs:
            if v is not None and node in v.users:
                v.users.remove(node)

    def remove_node_keep_output(self, node: Node, producer: Node) -> None:
        """Drop single-input-chain ``node`` (whose input is ``producer``'s only output) and make
        ``producer`` define ``node``'s output value in its place, moving ``producer`` to ``node``'s
        position so every value it now reads (e.g. a fused residual) is defined before it."""
        old = producer.outputs[0]
        new = node.outputs[0]
        for v in node.inputs:
            if v is not None and node in v.users:
                v.users.remove(node)
        idx = self.nodes.index(node)
        self.nodes[idx] = producer
        del self.nodes[self.nodes.index(producer)]  # the original, earlier position
        producer.outputs[0] = new
        new.producer = producer
        old.producer = None

    def set_input(self, node: Node, index: int, value: Value | None) -> None:
        old = node.inputs[index]
        if old is not None and node in old.users:
            old.users.remove(node)
        node.inputs[index] = value
        if value is not None:
            value.users.append(node)

    def replace_all_uses(self, old: Value, new: Value) -> None:
        """Make every user (and graph output) of ``old`` use ``new`` instead."""
        for user in list(old.users):
            for i, v in enumerate(user.inputs):
                if v is old:
                    self.set_input(user, i, new)
        self.outputs = [new if o is old else o for o in self.outputs]

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
                if n not in v.users:
                    raise IRError(f"{n.describe()}: input {i} {v.ref()} does not list the node as a user")
            for o in n.outputs:
                if o.producer is not n:
                    raise IRError(f"{n.describe()}: output {o.ref()} names another producer")
                if o.id in defined:
                    raise IRError(f"{n.describe()}: output {o.ref()} is defined twice")
                if o.is_const:
                    raise IRError(f"{n.describe()}: output {o.ref()} is marked constant")
                defined.add(o.id)
            try:
                expected = opdef.infer_types(n.inputs, n.attrs)
            except Exception as e:  # noqa: BLE001 - re-raised with the node named
                raise IRError(f"{n.describe()}: type inference failed: {e}") from e
            for i, (o, t) in enumerate(zip(n.outputs, expected)):
                if o.type.dtype != t.dtype or o.type.shape != t.shape:
                    raise IRError(f"{n.describe()}: output {i} {o.ref()} has type {o.type}, the op infers {t}")
        for o in self.outputs:
            if not o.is_const and o.id not in defined:
                raise IRError(f"graph output {o.ref()} ({o.name!r}) is never defined")
        for v in self.inputs:
            if v.is_const:
                raise IRError(f"graph input {v.ref()} is marked constant")

    # -- printing -------------------------------------------------------------------------------------
    def __str__(self) -> str:
        lines = [f"graph {self.name}("]
        for v in self.inputs:
            lines.append(f"    {v.ref()}: {v.type}" + (f"  # {v.name!r}" if v.name else ""))
        lines.append(") {")
        for c in self.constants():
            lines.append(f"  {c.ref()}: {c.type} = const")
        for n in self.nodes:
            outs = ", ".join(f"{o.ref()}: {o.type}" for o in n.outputs)
            ins = ", ".join("_" if v is None else v.ref() for v in n.inputs)
            attrs = ", ".join(f"{k}={_fmt_attr(v)}" for k, v in sorted(n.attrs.items()))
            tail = []
            if n.meta.get("fused"):
                tail.append("fused: " + "+".join(n.meta["fused"]))
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
