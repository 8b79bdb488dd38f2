"""Structural checks of an ONNX graph before import: every problem is a ``ModelError`` naming the node.

Checked: duplicate graph-input / initializer / node-output names, values produced twice, node inputs that
nothing produces (dangling), graph outputs that nothing produces, cycles, duplicate attributes,
initializers whose stored data does not match their declared shape. A graph whose nodes are not in
topological order (but acyclic) is re-ordered (on a copy when asked to leave the input untouched).
"""

from __future__ import annotations

import heapq

import numpy as np

from cnnjit.ir.errors import ModelError

from . import onnx_proto as onnx
from .onnx_types import PACKED_4BIT, elem_dtype


def node_label(node: onnx.NodeProto, index: int) -> str:
    """``node 'name' (OpType)`` or, for an unnamed node, ``node #index (OpType)``."""
    return f"node {node.name!r} ({node.op_type})" if node.name else f"node #{index} ({node.op_type})"


def _check_tensor_data(t: onnx.TensorProto, what: str) -> None:
    """The tensor's stored data must have exactly the element count its dims declare."""
    if t.data_location == onnx.TensorProto.EXTERNAL:
        raise ModelError(f"{what} refers to external data, which was not loaded")
    n = 1
    for d in t.dims:
        if d < 0:
            raise ModelError(f"{what} has a negative dimension in its shape {list(t.dims)}")
        n *= int(d)
    if t.data_type in (onnx.TensorProto.UNDEFINED,):
        raise ModelError(f"{what} has no element type")
    if t.data_type == onnx.TensorProto.STRING:
        if len(t.string_data) != n:
            raise ModelError(f"{what}: shape {list(t.dims)} needs {n} strings, the model stores "
                             f"{len(t.string_data)}")
        return
    packed = t.data_type in PACKED_4BIT
    if t.HasField("raw_data"):
        try:
            size = elem_dtype(t.data_type, what).itemsize
        except ModelError:
            return  # an element type we cannot size: the importer refuses it with its own message
        need = (n + 1) // 2 if packed else n * size
        if len(t.raw_data) != need:
            raise ModelError(f"{what}: shape {list(t.dims)} of {np.dtype(elem_dtype(t.data_type, what))} needs "
                             f"{need} bytes of raw data, the model stores {len(t.raw_data)}")
        return
    stored = max(len(t.float_data), len(t.int32_data), len(t.int64_data), len(t.double_data),
                 len(t.uint64_data))
    if t.data_type in (onnx.TensorProto.COMPLEX64, onnx.TensorProto.COMPLEX128):
        stored //= 2
    need = (n + 1) // 2 if packed else n
    if stored != need:
        raise ModelError(f"{what}: shape {list(t.dims)} needs {n} elements, the model stores {stored}")


def validate_graph(model: onnx.ModelProto, copy: bool = True) -> onnx.ModelProto:
    """Check the top-level graph of ``model``; return it (or a re-ordered copy if its nodes were unsorted).

    With ``copy`` false, a re-ordering is done in place.
    """
    g = model.graph
    inits: dict[str, int] = {}
    for i, t in enumerate(g.initializer):
        if t.name in inits:
            raise ModelError(f"initializer {t.name!r} is defined twice")
        inits[t.name] = i
        _check_tensor_data(t, f"initializer {t.name!r}")
    inputs: set[str] = set()
    for vi in g.input:
        if vi.name in inputs:
            raise ModelError(f"graph input {vi.name!r} is declared twice")
        inputs.add(vi.name)
    available = set(inits) | inputs
    if "" in available:
        raise ModelError("a graph input or initializer has an empty name")

    producer: dict[str, int] = {}
    nodes = list(g.node)
    for i, n in enumerate(nodes):
        seen_attrs: set[str] = set()
        for a in n.attribute:
            if a.name in seen_attrs:
                raise ModelError(f"{node_label(n, i)}: attribute {a.name!r} is given twice")
            seen_attrs.add(a.name)
            if a.HasField("t"):
                _check_tensor_data(a.t, f"{node_label(n, i)}: tensor attribute {a.name!r}")
        for o in n.output:
            if not o:
                continue
            if o in producer:
                j = producer[o]
                raise ModelError(f"{node_label(n, i)}: output {o!r} is also produced by "
                                 f"{node_label(nodes[j], j)}; every value must be produced once")
            if o in available:
                kind = "graph input" if o in inputs else "initializer"
                raise ModelError(f"{node_label(n, i)}: output {o!r} has the name of a {kind}; every value "
                                 "must be produced once")
            producer[o] = i
    for i, n in enumerate(nodes):
        for k, nm in enumerate(n.input):
            if nm and nm not in available and nm not in producer:
                raise ModelError(f"{node_label(n, i)}: input {k} {nm!r} is not produced by any node, "
                                 "initializer or graph input (a dangling input)")
    outs: set[str] = set()
    for vi in g.output:
        if not vi.name:
            raise ModelError("a graph output has an empty name")
        if vi.name in outs:
            raise ModelError(f"graph output {vi.name!r} is declared twice")
        outs.add(vi.name)
        if vi.name not in available and vi.name not in producer:
            raise ModelError(f"graph output {vi.name!r} is not produced by any node, initializer or graph input")

    # topological order (Kahn), stable: keep the model's order whenever it is already valid
    deps = [{producer[nm] for nm in n.input if nm in producer} for n in nodes]
    in_order = all(j < i for i, d in enumerate(deps) for j in d)
    if in_order:
        return model
    users: list[list[int]] = [[] for _ in nodes]
    remaining = [len(d) for d in deps]
    for i, d in enumerate(deps):
        for j in d:
            users[j].append(i)
    ready = [i for i, r in enumerate(remaining) if r == 0]
    order: list[int] = []
    heapq.heapify(ready)
    while ready:
        i = heapq.heappop(ready)
        order.append(i)
        for u in users[i]:
            remaining[u] -= 1
            if remaining[u] == 0:
                heapq.heappush(ready, u)
    if len(order) != len(nodes):
        raise ModelError("the graph has a cycle: " + _describe_cycle(nodes, deps, set(order)))
    if copy:
        m = onnx.ModelProto()
        m.CopyFrom(model)
        model = m
    sorted_nodes = [nodes[i] for i in order]
    copies = []
    for n in sorted_nodes:
        c = onnx.NodeProto()
        c.CopyFrom(n)
        copies.append(c)
    del model.graph.node[:]
    model.graph.node.extend(copies)
    return model


def _describe_cycle(nodes: list[onnx.NodeProto], deps: list[set[int]], done: set[int]) -> str:
    """One cycle among the nodes not in ``done``, as ``a -> b -> a``."""
    start = min(i for i in range(len(nodes)) if i not in done)
    path: list[int] = []
    pos: dict[int, int] = {}
    i = start
    while i not in pos:
        pos[i] = len(path)
        path.append(i)
        i = min(j for j in deps[i] if j not in done)  # every node left over depends on another one
    cycle = path[pos[i]:] + [i]
    return " -> ".join(node_label(nodes[k], k) for k in reversed(cycle))
