"""Epilogue fusion: activations, residual adds and bias adds computed in the producing kernel's store.

Conv / ConvTranspose / Gemm / MatMul absorb, while their output has a single consumer:
* a constant per-output-channel ``Add`` into the bias (before any other epilogue step);
* ``MatMul`` (2-D) + a constant bias ``Add`` becomes a ``Gemm`` with ``C``;
* elementwise activations (Relu, Clip/ReLU6, LeakyRelu, HardSwish, HardSigmoid, Sigmoid, Tanh, and
  ``x * Sigmoid(x)`` as SiLU);
* an ``Add`` of another tensor of the output's shape (a residual), and whatever activation follows it.
"""

from __future__ import annotations

import numpy as np

from cnnjit.ir import Graph, Node, Value, get_op
from cnnjit.ir.ops import EpilogueStep

from .manager import Pass

ACTIVATIONS = ("Relu", "Clip", "LeakyRelu", "HardSwish", "HardSigmoid", "Sigmoid", "Tanh", "Elu", "Selu",
               "Softplus", "SiLU")
PRODUCERS = ("Conv", "ConvTranspose", "Gemm", "MatMul")


def _single_user(graph: Graph, v: Value) -> Node | None:
    if len(v.users) != 1 or v in graph.outputs:
        return None
    return v.users[0]


def _channel_vector(node: Node, c: Value) -> np.ndarray | None:
    """The per-output-channel vector of a constant Add operand, if it is one."""
    y = node.outputs[0].shape
    if node.op in ("Conv", "ConvTranspose"):
        want = (y[1],) + (1,) * (len(y) - 2)
        shape = tuple(c.shape)
        if len(shape) <= len(y) and (shape == want[-len(shape):] if shape else True) or shape == (1,) + want:
            return np.broadcast_to(c.const.reshape(-1) if c.const.size == y[1] else c.const.reshape(()), (y[1],))
        return None
    n = y[-1]
    if c.const.size in (1, n) and (len(c.shape) <= 1 or all(d == 1 for d in c.shape[:-1])):
        return np.broadcast_to(c.const.reshape(-1), (n,))
    return None


class FuseEpilogue(Pass):
    name = "fuse_epilogue"
    fusion = True

    def apply(self, graph: Graph) -> None:
        for node in list(graph.nodes):
            if node.op in PRODUCERS and node in graph.nodes:
                while self._absorb_one(graph, node):
                    pass

    def _absorb_silu(self, graph: Graph, node: Node) -> bool:
        """``Mul(y, Sigmoid(y))`` (either operand order) on the producer's output ``y``: SiLU."""
        out = node.outputs[0]
        if len(out.users) != 2 or out in graph.outputs:
            return False
        sig = next((u for u in out.users if u.op == "Sigmoid"), None)
        mul = next((u for u in out.users if u.op == "Mul"), None)
        if sig is None or mul is None or sig.outputs[0] in graph.outputs or sig.outputs[0].users != [mul]:
            return False
        if {id(v) for v in mul.inputs} != {id(out), id(sig.outputs[0])}:
            return False
        graph.set_attrs(node, post=tuple(node.attrs.get("post", ())) + (EpilogueStep("SiLU"),))
        graph.remove_node_keep_output(mul, node)
        graph.remove_node(sig)
        graph.note_fused(node, "SiLU")
        return True

    def _absorb_one(self, graph: Graph, node: Node) -> bool:
        out = node.outputs[0]
        if np.issubdtype(out.dtype, np.floating) and self._absorb_silu(graph, node):
            return True
        user = _single_user(graph, out)
        if user is None or user.outputs[0].dtype != out.dtype or not np.issubdtype(out.dtype, np.floating):
            return False
        post = tuple(node.attrs.get("post", ()))
        if user.op in ("Add", "Sum") and len(user.inputs) == 2:
            other = user.inputs[1] if user.inputs[0] is out else user.inputs[0]
            if other is out:
                return False
            if other.is_const and not post and user.outputs[0].shape == out.shape:
                if self._fold_bias(graph, node, other):
                    graph.remove_node_keep_output(user, node)
                    graph.note_fused(node, "Add(bias)")
                    return True
            if other.shape == out.shape and other.dtype == out.dtype:
                # the residual becomes a new last input (after the optional bias of Conv / Gemm)
                k = max(len(node.inputs), 3) if node.op in ("Conv", "ConvTranspose", "Gemm") \
                    else len(node.inputs)
                graph.set_input(node, k, other)
                graph.set_attrs(node, post=post + (EpilogueStep("Add", value=other),))
                graph.remove_node_keep_output(user, node)
                graph.note_fused(node, "Add")
                return True
            return False
        if user.op in ACTIVATIONS and len(user.inputs) == 1:
            attrs = get_op(user.op).check_attrs(dict(user.attrs))
            graph.set_attrs(node, post=post + (EpilogueStep(user.op, tuple(sorted(attrs.items()))),))
            graph.remove_node_keep_output(user, node)
            graph.note_fused(node, user.op)
            return True
        return False

    @staticmethod
    def _fold_bias(graph: Graph, node: Node, c: Value) -> bool:
        vec = _channel_vector(node, c)
        if vec is None:
            return False
        if node.op == "MatMul":
            if len(node.inputs[0].shape) != 2 or len(node.inputs[1].shape) != 2:
                return False
            graph.replace_op(node, "Gemm", {"alpha": 1.0, "beta": 1.0, "transA": 0, "transB": 0, "post": ()})
            graph.set_input(node, 2, graph.const(vec.astype(node.outputs[0].dtype)))
            return True
        b = node.inputs[2] if len(node.inputs) > 2 else None
        if b is not None and not b.is_const:
            return False
        if node.op == "Gemm":
            beta = node.attrs["beta"]
            n = node.outputs[0].shape[1]
            if b is not None and b.const.size not in (1, n):
                return False
            base = np.zeros(n) if b is None else np.broadcast_to(b.const.reshape(-1) * beta, (n,))
            graph.set_attrs(node, beta=1.0)
            new = base + vec
        else:
            base = np.zeros(len(vec)) if b is None else b.const.astype(np.float64)
            new = base + vec
        graph.set_input(node, 2, graph.const(np.asarray(new, node.outputs[0].dtype)))
        return True
