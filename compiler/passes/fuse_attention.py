"""Scaled dot-product attention recognised and replaced by one ``Attention`` node (a named rewrite):

    [q = Mul(q0, c)]   kt = Transpose(k, last two axes swapped)   s = MatMul(q, kt)
    [s = Mul(s, c) | Div(s, c)]   p = Softmax(s, last axis)   y = MatMul(p, v)

with ``c`` one-element constants (their product the node's ``scale``), q, k and v of one batch shape (no
broadcasting), float32, and every intermediate read by the pattern alone. Its kernel (``kernels/attention``)
computes a row of scores, its softmax and the row's ``@ v`` while the row is in L1: no transpose call, no
scores tensor, no separate softmax pass (a 1x4x64x64 softmax could not reach a quarter of L2 bandwidth on
its own). Anything else (another axis, a mask added to the scores, other ops between) is left as it is.
"""

from __future__ import annotations

import numpy as np

from cnnjit.ir import Graph, Node, Value

from .fuse_layernorm import only_user
from .manager import RootedFusion

#: the most keys (scores per row) the fused kernel takes: its scratch holds ``k^T`` (``D x S``) and a row of
#: scores, which should stay in L1/L2 while a head's rows are computed
MAX_KEYS = 4096


def _scaled(node: Node | None, v: Value) -> tuple[Value, float] | None:
    """``(x, c)`` when ``node`` (the producer of ``v``) is ``x * c``, ``c * x`` or ``x / c`` with a
    one-element constant ``c`` (as ``1 / c``)."""
    if node is None or node.op not in ("Mul", "Div") or len(node.inputs) != 2:
        return None
    a, b = node.inputs
    for x, c, first in ((a, b, True), (b, a, False)):
        if c is not None and c.is_const and c.const.size == 1 and not (x is not None and x.is_const):
            f = float(c.const.reshape(-1)[0])
            if node.op == "Div" and (not first or f == 0.0):
                return None
            return x, (1.0 / f if node.op == "Div" else f)
    return None


def _swaps_last_two(node: Node | None) -> bool:
    """``node`` gives its input with the last two axes swapped: that Transpose, or the Reshape
    ``cancel_transposes`` made of it where one of the two axes has size 1 (the same bytes)."""
    if node is not None and node.op == "Reshape" and len(node.inputs) == 1:
        src, out = tuple(node.inputs[0].shape), tuple(node.outputs[0].shape)
        return (len(src) >= 2 and 1 in src[-2:] and all(isinstance(d, int) for d in src)
                and out == src[:-2] + (src[-1], src[-2]))
    if node is None or node.op != "Transpose":
        return False
    perm = list(node.attrs.get("perm", ()))
    n = len(perm)
    return n >= 2 and perm == list(range(n - 2)) + [n - 1, n - 2]


class FuseAttention(RootedFusion):
    name = "fuse_attention"
    root = "Softmax"

    @staticmethod
    def _fuse(graph: Graph, sm: Node) -> bool:
        x = sm.inputs[0]
        if x.type.rank < 2 or sm.attrs["axis"] % x.type.rank != x.type.rank - 1 or x.producer is None:
            return False
        group, scale = [sm], 1.0
        mm = x.producer
        if (s := _scaled(mm, x)) is not None and len(x.users) == 1 and x not in graph.outputs:
            x, c = s
            group.append(mm)
            scale *= c
            mm = x.producer
        if (mm is None or mm.op != "MatMul" or len(mm.inputs) != 2 or mm.attrs.get("post") or len(x.users) != 1
                or x in graph.outputs):
            return False
        q, kt = mm.inputs
        tr = kt.producer
        if not _swaps_last_two(tr) or only_user(graph, kt, "MatMul") is None:
            return False
        k = tr.inputs[0]
        group += [mm, tr]
        if (s := _scaled(q.producer, q)) is not None and only_user(graph, q, "MatMul") is not None:
            group.append(q.producer)
            q, c = s
            scale *= c
        pv = only_user(graph, sm.outputs[0], "MatMul")
        if pv is None or pv.inputs[0] is not sm.outputs[0] or len(pv.inputs) != 2 or pv.attrs.get("post"):
            return False
        v = pv.inputs[1]
        if (q.type.rank != v.type.rank or k.type.rank != q.type.rank or q.shape[:-2] != k.shape[:-2]
                or q.shape[:-2] != v.shape[:-2] or k.shape[-2] > MAX_KEYS
                or any(t.dtype != np.float32 for t in (q, k, v))):
            return False
        node = Node("Attention", [q, k, v], [pv.outputs[0]], {"scale": scale})
        graph.insert_before(pv, node)
        graph.remove_nodes([pv, *group])
        graph.note_fused(node, "attention")
        return True
