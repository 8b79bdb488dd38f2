"""The decomposed layer normalisation that exporters write (PaddlePaddle, older PyTorch, TF) recognised and
replaced by one ``LayerNormalization`` node:

    m = ReduceMean(x, trailing axes)   d = Sub(x, m)   v = ReduceMean(Pow(d, 2) or Mul(d, d), same axes)
    y = Div(d, Sqrt(Add(v, eps)))      [y = Mul(y, scale)]   [y = Add(y, bias)]

with constant ``eps``, ``scale`` and ``bias`` (each broadcasting over the normalized axes only) and every
intermediate used by the pattern alone. Seven to nine small kernels (each a pass over the tensor) become
one kernel that reads the tensor three times while a row is in L1.
"""

from __future__ import annotations

import numpy as np

from cnnjit.ir import Graph, Node, Value

from .manager import RootedFusion


def only_user(graph: Graph, v: Value, op: str) -> Node | None:
    """The single user of ``v`` if it applies ``op`` (and ``v`` is not a graph output)."""
    if len(v.users) != 1 or v in graph.outputs or v.users[0].op != op:
        return None
    return v.users[0]


def _other(node: Node, v: Value) -> Value | None:
    """The operand of binary ``node`` that is not ``v`` (None unless ``v`` is exactly one of the two)."""
    a, b = node.inputs[0], node.inputs[1]
    if (a is v) == (b is v):
        return None
    return b if a is v else a


def _scalar(v: Value | None) -> float | None:
    if v is None or not v.is_const or v.const.size != 1:
        return None
    return float(v.const.reshape(-1)[0])


def _row_const(v: Value | None, x: Value, axis: int) -> np.ndarray | None:
    """Constant ``v`` as an array of the normalized shape, if it broadcasts over the normalized axes only."""
    if v is None or not v.is_const or v.dtype != x.dtype:
        return None
    norm = tuple(x.shape[axis:])
    shape = tuple(v.shape)
    if len(shape) > len(x.shape) or any(d != 1 for d in shape[:max(0, len(shape) - len(norm))]):
        return None
    tail = shape[max(0, len(shape) - len(norm)):]
    try:
        if np.broadcast_shapes(tail, norm) != norm:
            return None
    except ValueError:
        return None
    return np.ascontiguousarray(np.broadcast_to(v.const.reshape(tail), norm))


class FuseLayerNorm(RootedFusion):
    name = "fuse_layernorm"
    root = "ReduceMean"

    def _fuse(self, graph: Graph, mean: Node) -> bool:
        x = mean.inputs[0]
        r = len(x.shape)
        axes = tuple(mean.attrs["axes"])
        if (x.dtype.kind != "f" or not mean.attrs["keepdims"] or not axes
                or axes != tuple(range(r - len(axes), r))):
            return False
        sub = only_user(graph, mean.outputs[0], "Sub")
        if sub is None or sub.inputs[0] is not x or sub.inputs[1] is not mean.outputs[0]:
            return False
        d = sub.outputs[0]
        if len({u.id for u in d.users}) != 2 or d in graph.outputs:  # Mul(d, d) lists its node twice
            return False
        sq = next((u for u in d.users if (u.op == "Pow" and u.inputs[0] is d and _scalar(u.inputs[1]) == 2.0)
                   or (u.op == "Mul" and u.inputs[0] is d and u.inputs[1] is d)), None)
        div = next((u for u in d.users if u.op == "Div" and u.inputs[0] is d), None)
        if sq is None or div is None:
            return False
        var = only_user(graph, sq.outputs[0], "ReduceMean")
        if var is None or tuple(var.attrs["axes"]) != axes or not var.attrs["keepdims"]:
            return False
        add = only_user(graph, var.outputs[0], "Add")
        eps = _scalar(_other(add, var.outputs[0])) if add is not None else None
        sqrt = only_user(graph, add.outputs[0], "Sqrt") if eps is not None else None
        if sqrt is None or div.inputs[1] is not sqrt.outputs[0] or len(sqrt.outputs[0].users) != 1:
            return False
        chain = [mean, sub, sq, var, add, sqrt, div]
        axis = axes[0]
        scale = np.ones(x.shape[axis:], x.dtype)
        bias = None
        out = div.outputs[0]
        mul = only_user(graph, out, "Mul")
        if mul is not None and (s := _row_const(_other(mul, out), x, axis)) is not None:
            scale, out = s, mul.outputs[0]
            chain.append(mul)
        badd = only_user(graph, out, "Add")
        if badd is not None and (b := _row_const(_other(badd, out), x, axis)) is not None:
            bias, out = b, badd.outputs[0]
            chain.append(badd)
        inputs = [x, graph.const(scale)] + ([graph.const(bias)] if bias is not None else [])
        ln = Node("LayerNormalization", inputs, [out], {"axis": axis, "epsilon": eps})
        graph.insert_before(chain[-1], ln)
        graph.remove_nodes(chain)
        graph.note_fused(ln, f"{len(chain)} ops")  # short: the label is a column of the profile tables
        return True
