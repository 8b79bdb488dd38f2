"""Transpose chains collapsed: consecutive Transposes compose into one, and identity permutations vanish.

Models converted from TFLite carry NHWC↔NCHW Transpose pairs around blocks; after this pass a pair that
undoes itself costs nothing (also when the first Transpose has other users: the second one's users then
read the first one's input). A Transpose whose output runs through a chain of elementwise ops (one operand the
chain's, the others constants) into the inverse Transpose is sunk to meet it: the chain runs on the first
Transpose's input with its constants permuted, and both Transposes go (a PyTorch export of a TF model wraps
every Conv's bias, BN and Relu in NHWC between such a pair: 108 Transposes, 28% of its time).
"""

from __future__ import annotations

import numpy as np

from cnnjit.ir import Graph, Node, TensorType, Value, get_op
from cnnjit.ir.errors import IRError

from .manager import Pass


def _dispensable(graph: Graph, node: Node) -> bool:
    """An identity Transpose, unless it is the one copy between a graph input and a graph output (an output
    must not be an input buffer)."""
    perm = tuple(node.attrs["perm"])
    return perm == tuple(range(len(perm))) and not (node.outputs[0] in graph.outputs
                                                    and node.inputs[0] in graph.inputs)


def _inverse(p: tuple[int, ...], q: tuple[int, ...]) -> bool:
    """Transpose(q) undoes Transpose(p)."""
    return tuple(p[i] for i in q) == tuple(range(len(q)))


def _chain(graph: Graph, node: Node) -> tuple[list[Node], Node] | None:
    """The elementwise ops between Transpose ``node`` and an inverse Transpose that follows them, each the only
    user of the value before it and reading it once, beside constants of at most its rank; and that
    Transpose. None when there is no such chain."""
    p, v, ops = tuple(node.attrs["perm"]), node.outputs[0], []
    while len(v.users) == 1 and v not in graph.outputs:
        u = v.users[0]
        if u.op == "Transpose":
            return (ops, u) if ops and _inverse(p, tuple(u.attrs["perm"])) else None
        od = get_op(u.op)
        others = [i for i in u.inputs if i is not None and i is not v]
        if (od is None or not od.elementwise or len(u.outputs) != 1 or u.outputs[0].shape != v.shape
                or list(u.inputs).count(v) != 1 or any(not i.is_const or len(i.shape) > len(p) for i in others)):
            return None
        ops.append(u)
        v = u.outputs[0]
    return None


def _sink(graph: Graph, node: Node, ops: list[Node], last: Node) -> None:
    """``ops`` recomputed on ``node``'s input (constants permuted back), replacing ``last``'s output."""
    p = tuple(node.attrs["perm"])
    back = tuple(int(i) for i in np.argsort(p))
    prev, cur = node.outputs[0], node.inputs[0]
    for op in ops:
        ins = []
        for i in op.inputs:
            if i is None or i is prev:
                ins.append(i if i is None else cur)
                continue
            c = i.const.reshape((1,) * (len(p) - i.const.ndim) + i.const.shape)
            ins.append(graph.const(np.ascontiguousarray(c.transpose(back))))
        out = Value(TensorType(op.outputs[0].dtype, tuple(cur.shape)))
        graph.insert_before(last, Node(op.op, ins, [out], dict(op.attrs), op.name))
        prev, cur = op.outputs[0], out
    graph.replace_all_uses(last.outputs[0], cur)
    for n in [last, *reversed(ops), node]:
        graph.remove_node(n)


class CancelTransposes(Pass):
    name = "cancel_transposes"
    fusion = True

    def apply(self, graph: Graph) -> None:
        for node in list(graph.nodes):
            if node.op != "Transpose" or node not in graph.nodes:
                continue
            src = node.inputs[0].producer
            # Transpose(q) of Transpose(p) with p used only here: one Transpose(p[q[i]])
            if src is not None and src.op == "Transpose" and len(src.outputs[0].users) == 1 \
                    and src.outputs[0] not in graph.outputs:
                p = tuple(src.attrs["perm"])
                graph.set_input(node, 0, src.inputs[0])
                graph.remove_node(src)
                graph.set_attrs(node, perm=tuple(p[i] for i in node.attrs["perm"]))
            elif src is not None and src.op == "Transpose" and node.outputs[0] not in graph.outputs \
                    and _inverse(src.attrs["perm"], node.attrs["perm"]):
                # an inverse pair whose first half has other users: the second half reads the source directly
                graph.replace_all_uses(node.outputs[0], src.inputs[0])
                graph.remove_node(node)
                continue
            if _dispensable(graph, node):
                graph.replace_all_uses(node.outputs[0], node.inputs[0])
                graph.remove_node(node)
            elif (found := _chain(graph, node)) is not None:
                _sink(graph, node, *found)

    def ensures(self, graph: Graph) -> None:
        left = next((n for n in graph.nodes if n.op == "Transpose" and _dispensable(graph, n)), None)
        if left is not None:
            raise IRError(f"{left.describe()} has the identity permutation and was kept")
