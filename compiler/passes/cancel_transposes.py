"""Transpose chains collapsed: consecutive Transposes compose into one, and identity permutations vanish.

Models converted from TFLite carry NHWC↔NCHW Transpose pairs around blocks; after this pass a pair that
undoes itself costs nothing (also when the first Transpose has other users: the second one's users then
read the first one's input). A Transpose sinks below elementwise ops (constants permuted; Transposes of the
same permutation on the other operands merged into one) until it meets its inverse or an op of another kind:
a PyTorch export of a TF model wraps every Conv's bias, BN, residual Add and Relu in NHWC between such pairs
(108 Transposes, 28% of its time).

A Reshape that only drops or inserts unit dims does not stop it: Transpose -> such a Reshape is the Reshape of
the Transpose's input (a view) then a Transpose of the Reshape's rank (madmom's Keras-converted CNNs squeeze
the batch axis between every NHWC pair: Transpose -> Squeeze -> BN -> Relu -> Unsqueeze -> Transpose, two
full-map copies per layer), and a Transpose that moves only unit dims is a Reshape.
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


def _non_unit(shape: tuple) -> list[int]:
    return [i for i, d in enumerate(shape) if d != 1]


def _order_kept(node: Node) -> bool:
    """A Transpose that moves only unit dims (its non-unit axes stay in order): a Reshape."""
    x = node.inputs[0]
    kept = [a for a in node.attrs["perm"] if x.shape[a] != 1]
    return kept == sorted(kept) and all(isinstance(d, int) for d in x.shape)


def _unit_reshape(node: Node) -> bool:
    """A Reshape that only drops or inserts dims of size 1 (static shapes)."""
    src, out = node.inputs[0].shape, node.outputs[0].shape
    return (node.op == "Reshape" and all(isinstance(d, int) for d in (*src, *out))
            and [d for d in src if d != 1] == [d for d in out if d != 1])


def below_unit_reshape(node: Node, z: tuple) -> tuple[tuple, tuple]:
    """(X', q): Transpose(p) of ``x`` then a unit Reshape to ``z`` is ``Transpose(q)`` of ``x`` reshaped to
    ``X'`` (``x``'s non-unit dims in ``x``'s order, then ``z``'s unit dims: a view)."""
    s, p = node.inputs[0].shape, node.attrs["perm"]
    axes = [p[i] for i in _non_unit(tuple(s[a] for a in p))]  # x's axis of each non-unit dim, in z's order
    rank = {a: k for k, a in enumerate(sorted(axes))}
    units = [j for j, d in enumerate(z) if d == 1]
    xs = tuple([s[a] for a in sorted(axes)] + [1] * len(units))
    q = [0] * len(z)
    for j, a in zip(_non_unit(z), axes):
        q[j] = rank[a]
    for k, j in enumerate(units):
        q[j] = len(axes) + k
    return xs, tuple(q)


def move_below(graph: Graph, user: Node, ins: list[Value | None], shape: tuple, op: str, attrs: dict) -> Value:
    """Elementwise ``user`` replaced by the same op on ``ins`` (giving ``shape``) followed by the layout op
    ``op(attrs)`` back to its own output's type; the new op's output (a layout op sunk below ``user``)."""
    pre = Value(TensorType(user.outputs[0].dtype, shape))
    graph.insert_before(user, Node(user.op, ins, [pre], dict(user.attrs), user.name))
    out = Value(user.outputs[0].type, user.outputs[0].name)
    graph.insert_before(user, Node(op, [pre], [out], attrs))
    graph.replace_all_uses(user.outputs[0], out)
    graph.remove_node(user)
    return pre


def _sink(graph: Graph, node: Node) -> bool:
    """Transpose ``node`` moved below its only user when that is elementwise (its shape kept, its elements no
    wider) and its other operands are constants of at most its rank (permuted back) or Transposes of the same
    permutation that feed nothing else (those go too: one Transpose after the op instead of one per operand).
    Cost-neutral or better; it brings inverse pairs together (a chain of bias, BN and Relu in NHWC between
    them, or two such branches joined by a residual Add). Whether it moved."""
    v, p = node.outputs[0], tuple(node.attrs["perm"])
    if len(v.users) != 1 or v in graph.outputs:
        return False
    user = v.users[0]
    od = get_op(user.op)
    if (od is None or not od.elementwise or len(user.outputs) != 1 or user.outputs[0].shape != v.shape
            or user.outputs[0].dtype.itemsize > v.dtype.itemsize):  # not below a widening Cast: more bytes to move
        return False
    back = tuple(int(i) for i in np.argsort(p))
    ins, peers = [], []
    for i in user.inputs:
        src = None if i is None else i.producer
        if i is None or i is v:
            ins.append(i if i is None else node.inputs[0])
        elif i.is_const and len(i.shape) <= len(p):
            c = i.const.reshape((1,) * (len(p) - i.const.ndim) + i.const.shape)
            ins.append(graph.const(np.ascontiguousarray(c.transpose(back))))
        elif (src is not None and src.op == "Transpose" and tuple(src.attrs["perm"]) == p and i.shape == v.shape
              and all(u is user for u in i.users) and i not in graph.outputs):
            ins.append(src.inputs[0])
            peers.append(src)
        else:
            return False
    move_below(graph, user, ins, tuple(node.inputs[0].shape), "Transpose", {"perm": p})
    for t in dict.fromkeys([node, *peers]):
        graph.remove_node(t)
    return True


class CancelTransposes(Pass):
    name = "cancel_transposes"
    fusion = True

    def apply(self, graph: Graph) -> None:
        while self._sweep(graph):  # a Transpose moved below an op: another sweep may cancel or move it again
            pass

    def _sweep(self, graph: Graph) -> bool:
        moved = False
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
            elif _order_kept(node) and not (node.outputs[0] in graph.outputs and node.inputs[0] in graph.inputs):
                out = node.outputs[0]
                graph.insert_before(node, Node("Reshape", [node.inputs[0]], [out2 := Value(out.type, out.name)],
                                               {"shape": tuple(out.shape)}))
                graph.replace_all_uses(out, out2)
                graph.remove_node(node)
                moved = True
            elif self._below_reshape(graph, node):
                moved = True
            elif _sink(graph, node):
                moved = True
        return moved

    @staticmethod
    def _below_reshape(graph: Graph, node: Node) -> bool:
        """Transpose ``node`` moved below its users when they are unit Reshapes (``below_unit_reshape``): its
        only user, or several whose each feeds only a Transpose that the moved one then cancels into a view
        (madmom's notes CNN reads one NHWC map in three heads, each through Reshape -> Transpose back: three
        copies; one Transpose per head would be more copies where they do not cancel). Whether it moved."""
        v = node.outputs[0]
        users = list(dict.fromkeys(v.users))
        if not users or v in graph.outputs or not all(_unit_reshape(r) and r.outputs[0] not in graph.outputs
                                                      for r in users) \
                or not all(isinstance(d, int) for d in node.inputs[0].shape):
            return False
        moves = [(r, *below_unit_reshape(node, tuple(r.outputs[0].shape))) for r in users]
        if len(users) > 1:
            for r, xs, q in moves:
                nxt = r.outputs[0].users
                if len(nxt) != 1 or nxt[0].op != "Transpose":
                    return False
                c = [q[i] for i in nxt[0].attrs["perm"]]
                kept = [a for a in c if xs[a] != 1]
                if kept != sorted(kept):
                    return False
        for r, xs, q in moves:
            view = Value(TensorType(v.dtype, xs))
            graph.insert_before(r, Node("Reshape", [node.inputs[0]], [view], {"shape": xs}))
            out = Value(r.outputs[0].type, r.outputs[0].name)
            graph.insert_before(r, Node("Transpose", [view], [out], {"perm": q}))
            graph.replace_all_uses(r.outputs[0], out)
            graph.remove_node(r)
        graph.remove_node(node)
        return True

    def ensures(self, graph: Graph) -> None:
        left = next((n for n in graph.nodes if n.op == "Transpose" and _dispensable(graph, n)), None)
        if left is not None:
            raise IRError(f"{left.describe()} has the identity permutation and was kept")
