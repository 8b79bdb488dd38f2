"""BatchNormalization folded into the preceding Conv, ConvTranspose or Gemm: scaled weights, shifted bias.

Fires when the BN's parameters and the producer's weights (and bias) are constants, the producer's output
feeds only the BN, and the producer has no epilogue yet. A BN that stays alone runs as a scale-shift.

The scale of a BN that an exporter wrote as arithmetic (``Conv -> Mul(scale) -> Add(shift)``: a PyTorch
model with its BNs frozen, onnxruntime's ConvMulFusion) folds the same way: a Mul of a Conv's output by a
constant that varies along the channels only (or not at all), or a Div by one (the constant second),
scales the weights and bias; the shift that follows is ``fuse_epilogue``'s bias Add. A per-channel Add or
Sub (the constant second) of a Conv's output, a BN's mean subtracted before its scale, shifts the bias here,
so the scale after it reaches the Conv too.
"""

from __future__ import annotations

import numpy as np

from cnnjit.ir import Graph, Node

from .fuse_epilogue import channel_vector
from .manager import Pass

#: the scalings folded into a Conv's weights (``FoldBatchNorm._fold_scale``)
SCALES = ("Mul", "Div")
#: the per-channel shifts folded into a Conv's bias (``FoldBatchNorm._fold_shift``)
SHIFTS = ("Add", "Sub")


def _bias(conv: Node) -> np.ndarray:
    """``conv``'s constant bias in float64 (zeros when it has none)."""
    b = conv.inputs[2] if len(conv.inputs) > 2 else None
    return np.zeros(conv.inputs[1].shape[0]) if b is None else b.const.astype(np.float64)


class FoldBatchNorm(Pass):
    name = "fold_batchnorm"
    fusion = True

    def apply(self, graph: Graph) -> None:
        for bn in list(graph.nodes):
            if bn.op in SCALES or bn.op in SHIFTS:
                (self._fold_scale if bn.op in SCALES else self._fold_shift)(graph, bn)
                continue
            if bn.op != "BatchNormalization" or not all(v.is_const for v in bn.inputs[1:5]):
                continue
            src = bn.inputs[0].producer
            if src is None or src.op not in ("Conv", "ConvTranspose", "Gemm") or src.attrs.get("post"):
                continue
            if len(bn.inputs[0].users) != 1 or bn.inputs[0] in graph.outputs:
                continue
            if not all(v is None or v.is_const for v in src.inputs[1:3]):
                continue
            if src.op == "Gemm" and not self._gemm_ok(src):
                continue
            self._fold(graph, src, bn)

    @staticmethod
    def _conv_operand(graph: Graph, node: Node) -> tuple[Node, np.ndarray] | None:
        """The Conv (constant float weights and bias, no epilogue, no other user) that produces one operand of
        binary ``node``, and ``node``'s other operand as a per-output-channel vector (``channel_vector``);
        None when there are no such (a Sub or Div must have the constant second)."""
        i = next((k for k, v in enumerate(node.inputs) if v.is_const), None)
        if i is None or len(node.inputs) != 2 or (i == 0 and node.op in ("Div", "Sub")):
            return None
        x = node.inputs[1 - i]
        src = x.producer
        if (src is None or src.op != "Conv" or src.attrs.get("post") or len(x.users) != 1 or x in graph.outputs
                or node.outputs[0].shape != x.shape or src.inputs[1].dtype.kind != "f"
                or not all(v is None or v.is_const for v in src.inputs[1:3])):
            return None
        c = channel_vector(src, node.inputs[i])
        return None if c is None else (src, c)

    def _fold_shift(self, graph: Graph, node: Node) -> None:
        """``node`` (a ``SHIFTS`` op) of a per-output-channel constant folded into the bias of the Conv that
        produces its other operand: a BN written as ``Sub(mean) -> Mul(scale) -> Add(beta)`` after the Conv
        (a PyTorch export of a TF model), so its scale then folds into the weights too."""
        found = self._conv_operand(graph, node)
        if found is None:
            return
        src, c = found
        b = _bias(src) + c if node.op == "Add" else _bias(src) - c
        graph.set_input(src, 2, graph.const(b.astype(src.inputs[1].dtype)))
        graph.note_fused(src, f"{node.op}(bias)")  # as fuse_epilogue names a bias Add
        graph.remove_node_keep_output(node, src)

    def _fold_scale(self, graph: Graph, node: Node) -> None:
        """``node`` (a ``SCALES`` op) folded into the Conv that produces its other operand, when its constant
        operand is per output channel (``channel_vector``)."""
        found = self._conv_operand(graph, node)
        if found is None:
            return
        src, c = found
        if node.op == "Div" and not np.all(c):
            return
        c = c.astype(np.float64)
        w = src.inputs[1].const.astype(np.float64)
        m = w.shape[0]
        b = _bias(src)
        s = c if node.op == "Mul" else 1.0 / c
        w, b = w * s.reshape((m,) + (1,) * (w.ndim - 1)), b * s
        dt = src.inputs[1].dtype
        graph.set_input(src, 1, graph.const(w.astype(dt)))
        graph.set_input(src, 2, graph.const(b.astype(dt)))
        graph.note_fused(src, node.op)
        graph.remove_node_keep_output(node, src)

    @staticmethod
    def _gemm_ok(g: Node) -> bool:
        c = g.inputs[2] if len(g.inputs) > 2 else None
        n = g.outputs[0].shape[1]
        return c is None or c.const.size in (1, n) and c.shape in ((), (1,), (n,), (1, n))

    @staticmethod
    def _fold(graph: Graph, src: Node, bn: Node) -> None:
        scale, beta, mean, var = (v.const.astype(np.float64) for v in bn.inputs[1:5])
        s = scale / np.sqrt(var + bn.attrs["epsilon"])
        w = src.inputs[1].const.astype(np.float64)
        dt = src.inputs[1].dtype
        if src.op in ("Conv", "ConvTranspose"):
            if src.op == "Conv":
                m = w.shape[0]
                w2 = w * s.reshape((m,) + (1,) * (w.ndim - 1))
            else:  # weights (C, M / group, k...): output channel g * M / group + j is [group g's rows, j]
                g, mg = src.attrs["group"], w.shape[1]
                m = g * mg
                sp = (1,) * (w.ndim - 2)
                w2 = (w.reshape((g, -1, mg) + w.shape[2:]) * s.reshape((g, 1, mg) + sp)).reshape(w.shape)
            b = src.inputs[2].const.astype(np.float64) if len(src.inputs) > 2 and src.inputs[2] is not None \
                else np.zeros(m)
            b2 = (b - mean) * s + beta
        else:  # Gemm: output column n is scaled by s[n]; C becomes a per-column bias
            a = src.attrs
            w2 = w * (s.reshape(-1, 1) if a["transB"] else s.reshape(1, -1))
            c = src.inputs[2] if len(src.inputs) > 2 else None
            cb = np.zeros(len(s)) if c is None else np.broadcast_to(c.const.astype(np.float64) * a["beta"],
                                                                   (len(s),))
            b2 = ((cb / a["alpha"]) - mean / a["alpha"]) * s + beta / a["alpha"]
            # y = alpha * (A @ B') + beta' * C' with beta' = alpha so the bias is not rescaled again
            graph.set_attrs(src, beta=float(a["alpha"]))
        graph.set_input(src, 1, graph.const(w2.astype(dt)))
        graph.set_input(src, 2, graph.const(b2.astype(dt)))
        graph.note_fused(src, "BatchNormalization")
        graph.remove_node_keep_output(bn, src)  # the producer now computes the BN's output value
