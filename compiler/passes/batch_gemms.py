"""Gemms that share a large constant B and read independent A rows run as one Gemm over the stacked rows.

A recurrent layer unrolled by its exporter (a PyTorch ``LSTMCell`` loop traced into ONNX: a captcha CRNN's
``x_t @ W_ih^T + b_ih`` per time step) multiplies every step's input by the same weights. Each of those
Gemms streams all of B for one row of A (a 4096 x 400 B, 6.5 MB, once per step: memory-bound at ~12
GFLOP/s); stacked, the rows share one pass over B on the GEMM micro-kernel. The Gemms join when they have
the same B, C and attributes, C is a bias along the rows (or absent), and no one's A depends on another's
output (the recurrent ``h_t @ W_hh^T`` do not join: each step's A is the last step's result). The group
becomes ``Concat(A..., axis 0) -> Gemm -> Split(axis 0)`` into the members' own outputs, and the nodes are
put back in a topological order (the members' A producers, interleaved with the steps, move before the
batched Gemm).
"""

from __future__ import annotations

import heapq

import numpy as np

from cnnjit.ir import Graph, Node, TensorType, Value
from cnnjit.ir.errors import IRError

from .manager import Pass

#: the least bytes of B worth batching: below it B stays in L2 from one Gemm to the next
MIN_B_BYTES = 512 * 1024


def _key(n: Node) -> tuple | None:
    """What Gemms must share to be batched, or None when ``n`` cannot join a batch."""
    if n.op != "Gemm" or len(n.inputs) < 2 or n.attrs.get("post") or n.attrs.get("transA"):
        return None
    a, b = n.inputs[0], n.inputs[1]
    c = n.inputs[2] if len(n.inputs) > 2 else None
    if a.is_const or not b.is_const or b.const.nbytes < MIN_B_BYTES or len(a.shape) != 2 or a.dtype != np.float32:
        return None
    cols = n.outputs[0].shape[1]
    if c is not None and (not c.is_const or c.shape not in ((cols,), (1, cols))):
        return None  # a bias along the rows (or none) is the same for stacked rows
    return (b.id, None if c is None else c.id, a.shape, tuple(sorted((k, str(v)) for k, v in n.attrs.items())))


def _ancestors(node: Node, memo: dict[int, set[int]]) -> set[int]:
    """Ids of the nodes ``node`` depends on (transitively), memoised in ``memo``."""
    out: set[int] = set()
    stack = [v.producer for v in node.inputs if v is not None and v.producer is not None]
    while stack:
        p = stack.pop()
        if p.id in out:
            continue
        if p.id in memo:
            out |= memo[p.id] | {p.id}
            continue
        out.add(p.id)
        stack += [v.producer for v in p.inputs if v is not None and v.producer is not None]
    memo[node.id] = out
    return out


def topological(nodes: list[Node]) -> list[Node]:
    """``nodes`` in a topological order that keeps their current order wherever it already is one."""
    pos = {n.id: i for i, n in enumerate(nodes)}
    need = {n.id: {v.producer.id for v in n.inputs if v is not None and v.producer is not None
                   and v.producer.id in pos} for n in nodes}
    users: dict[int, list[Node]] = {n.id: [] for n in nodes}
    for n in nodes:
        for p in need[n.id]:
            users[p].append(n)
    ready = [(pos[n.id], n.id) for n in nodes if not need[n.id]]
    heapq.heapify(ready)
    by_id = {n.id: n for n in nodes}
    order = []
    while ready:
        _, i = heapq.heappop(ready)
        order.append(by_id[i])
        for u in users[i]:
            need[u.id].discard(i)
            if not need[u.id]:
                heapq.heappush(ready, (pos[u.id], u.id))
    if len(order) != len(nodes):
        raise IRError("batch_gemms: the reordered graph has a cycle")
    return order


class BatchGemms(Pass):
    name = "batch_gemms"
    fusion = True

    def apply(self, graph: Graph) -> None:
        groups: dict[tuple, list[Node]] = {}
        for n in graph.nodes:
            key = _key(n)
            if key is not None:
                groups.setdefault(key, []).append(n)
        memo: dict[int, set[int]] = {}
        batched = False
        for members in groups.values():
            chosen: list[Node] = []
            for m in members:  # in node order: an earlier member never depends on a later one
                if not {c.id for c in chosen} & _ancestors(m, memo):
                    chosen.append(m)
            if len(chosen) >= 2:
                self._batch(graph, chosen)
                batched = True
        if batched:
            graph.nodes[:] = topological(graph.nodes)

    @staticmethod
    def _batch(graph: Graph, chosen: list[Node]) -> None:
        first = chosen[0]
        (rows, depth), cols, dt = first.inputs[0].shape, first.outputs[0].shape[1], first.outputs[0].dtype
        k = len(chosen)
        a = Value(TensorType(dt, (k * rows, depth)))
        y = Value(TensorType(dt, (k * rows, cols)))
        outs = [m.outputs[0] for m in chosen]
        graph.add_node(Node("Concat", [m.inputs[0] for m in chosen], [a], {"axis": 0}))
        gemm = graph.add_node(Node("Gemm", [a, *first.inputs[1:]], [y], dict(first.attrs), first.name))
        graph.add_node(Node("Split", [y], outs, {"axis": 0, "split": [rows] * k}))
        for m in chosen:
            graph.remove_node(m)
        graph.note_fused(gemm, f"{k} Gemms")
