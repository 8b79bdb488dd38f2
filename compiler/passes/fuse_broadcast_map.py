"""Broadcast-map fusion: a binary op of two tensors and the activations after it as one ``BroadcastMap``.

Additive (Bahdanau) attention writes ``Tanh(q[:, :, None] + k[:, None, :])``, gated units and
squeeze-excite gates ``Sigmoid(x + b)`` / ``Tanh(x * g)``: a broadcast ``Add`` / ``Sub`` / ``Mul`` / ``Div`` /
``Max`` / ``Min`` (of two tensors broadcasting against each other, or a tensor and a constant) whose result
feeds only a chain of unary activations. Unfused, the sum is written and read back by a second pass (two
calls, the full output through memory twice); fused, one kernel (``elementwise.gen_simd_broadcast_map``)
combines the operands in vectors along the output's contiguous axis and applies the activations in registers
(the ``simd_math`` transcendentals).

Runs after ``fuse_epilogue``: an ``Add`` / ``Mul`` a producer (Conv, Gemm, MatMul) absorbs as a residual or
bias stays there; this pass takes the ones left, e.g. a broadcast that no producer's epilogue can read.
"""

from __future__ import annotations

import numpy as np

from cnnjit.ir import Graph, Node, get_op
from cnnjit.ir.ops import EpilogueStep
from cnnjit.ir.ops.fused import BROADCAST_MAP_OPS

from .fuse_epilogue import ACTIVATIONS
from .manager import Pass

#: the unary ops a ``BroadcastMap`` absorbs after its binary op, in any number and order
MAP_STEPS = (*ACTIVATIONS, "Exp", "Erf", "Abs", "Neg")


def _chain_user(graph: Graph, node: Node) -> Node | None:
    """The single reader of ``node``'s output when it is a same-type unary op of ``MAP_STEPS``, else None."""
    out = node.outputs[0]
    if len(out.users) != 1 or out in graph.outputs:
        return None
    user = out.users[0]
    ins = [v for v in user.inputs if v is not None]
    if user.op not in MAP_STEPS or len(ins) != 1 or len(user.outputs) != 1 or user.outputs[0].type != out.type:
        return None
    return user


class FuseBroadcastMap(Pass):
    name = "fuse_broadcast_map"
    fusion = True

    def apply(self, graph: Graph) -> None:
        for node in list(graph.nodes):
            if node in graph.nodes and self._root(node) and _chain_user(graph, node) is not None:
                self._fuse(graph, node)

    @staticmethod
    def _root(node: Node) -> bool:
        """A two-operand float ``BROADCAST_MAP_OPS`` node (its operands of the output's type, up to broadcast)."""
        ins = [v for v in node.inputs if v is not None]
        dt = node.outputs[0].dtype
        return (node.op in BROADCAST_MAP_OPS and len(ins) == 2 == len(node.inputs) and len(node.outputs) == 1
                and np.issubdtype(dt, np.floating) and all(v.dtype == dt for v in ins))

    @staticmethod
    def _fuse(graph: Graph, node: Node) -> None:
        """``node`` becomes a ``BroadcastMap`` of its op; each activation in the chain after it a ``post`` step."""
        op = node.op
        graph.replace_op(node, "BroadcastMap", {"op": op, "post": ()})
        graph.note_fused(node, op)
        while (user := _chain_user(graph, node)) is not None:
            attrs = get_op(user.op).check_attrs(dict(user.attrs))
            graph.set_attrs(node, post=node.attrs["post"] + (EpilogueStep(user.op, tuple(sorted(attrs.items()))),))
            graph.remove_node_keep_output(user, node)
            graph.note_fused(node, user.op)
