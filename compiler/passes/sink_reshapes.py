"""A Reshape that only drops or inserts unit dims of a Conv's output sinks below the elementwise ops after it.

tf2onnx writes Keras' Conv1D as a 2-D Conv on ``N x C x L x 1`` followed by a Squeeze to ``N x C x L`` and
then the bias Add and the activation (magika: Conv -> Squeeze -> Add(bias) -> tanh-GELU as 9 ops): the
Reshape between them keeps ``fuse_epilogue`` from seeing the chain, so each op is its own pass over the map
(10 memory-bound calls, ~0.9 ms of magika's ~12). The bytes are the same in both shapes, so each
elementwise op whose non-constant operands are all such Reshapes of same-shaped values runs on the Conv's
shape instead (constants given the Conv's rank) and one Reshape (a view: no data moves) follows it; the
chain then reaches ``fuse_epilogue`` whole. Runs after ``cancel_transposes`` (which leaves such Reshapes where
an NHWC pair cancelled) and before ``fold_batchnorm``, so a scale in that chain folds into the Conv too.
"""

from __future__ import annotations

import numpy as np

from cnnjit.ir import Graph, Node, Value, get_op

from .cancel_transposes import move_below
from .manager import Pass


def _squeezed(shape: tuple) -> tuple:
    return tuple(d for d in shape if d != 1)


def _unit_reshape(node: Node | None) -> bool:
    """A Reshape of a 4-D value that only drops or inserts dims of size 1 (same bytes, same order)."""
    if node is None or node.op != "Reshape":
        return False
    src, out = node.inputs[0].shape, node.outputs[0].shape
    return (len(src) == 4 and all(isinstance(d, int) for d in (*src, *out))
            and _squeezed(src) == _squeezed(out) and src != out)


def _const_for(c: np.ndarray, out: tuple, src: tuple) -> np.ndarray | None:
    """Constant ``c`` (broadcast against shape ``out``) reshaped to broadcast against ``src`` the same way,
    or None where it does not map (it widens a unit dim of ``out``)."""
    if c.ndim > len(out):
        return None
    full = (1,) * (len(out) - c.ndim) + c.shape
    if any(d != 1 for d, o in zip(full, out) if o == 1):
        return None
    kept = iter(d for d, o in zip(full, out) if o != 1)
    return c.reshape(tuple(1 if s == 1 else next(kept) for s in src))


def _sink(graph: Graph, user: Node, sunk: set[Value]) -> bool:
    """Elementwise ``user`` rewritten on the Reshapes' source shape when each of its operands is a constant
    or a unit Reshape (``_unit_reshape``) of a Conv's output or of an op this pass rewrote, the sources all
    of one shape and the output of its operands' shape. Whether it moved."""
    od = get_op(user.op)
    if od is None or not od.elementwise or len(user.outputs) != 1:
        return False
    out = user.outputs[0].shape
    views = [i for i in user.inputs if i is not None and not i.is_const]
    if not views or not all(_unit_reshape(v.producer) and v.shape == out for v in views):
        return False
    srcs = [v.producer.inputs[0] for v in views]
    src = srcs[0].shape
    if any(s.shape != src for s in srcs) or not all(
            s in sunk or s.producer is not None and s.producer.op == "Conv" for s in srcs):
        return False
    ins: list[Value | None] = []
    for i in user.inputs:
        if i is None or not i.is_const:
            ins.append(i if i is None else i.producer.inputs[0])
            continue
        c = _const_for(i.const, out, src)
        if c is None:
            return False
        ins.append(graph.const(np.ascontiguousarray(c)))
    sunk.add(move_below(graph, user, ins, tuple(src), "Reshape", {"shape": tuple(out)}))
    return True


class SinkReshapes(Pass):
    name = "sink_reshapes"
    fusion = True

    def apply(self, graph: Graph) -> None:
        sunk: set[Value] = set()
        for node in list(graph.nodes):  # topological: a rewritten op's Reshape is seen by its users after it
            _sink(graph, node, sunk)
        for node in list(graph.nodes):  # the Reshapes whose users all moved
            if node.op == "Reshape" and not node.outputs[0].users and node.outputs[0] not in graph.outputs:
                graph.remove_node(node)
