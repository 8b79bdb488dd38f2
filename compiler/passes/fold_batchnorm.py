"""BatchNormalization folded into the preceding Conv, ConvTranspose or Gemm: scaled weights, shifted bias.

Fires when the BN's parameters and the producer's weights (and bias) are constants, the producer's output
feeds only the BN, and the producer has no epilogue yet. A BN that stays alone runs as a scale-shift.
"""

from __future__ import annotations

import numpy as np

from cnnjit.ir import Graph, Node

from .manager import Pass


class FoldBatchNorm(Pass):
    name = "fold_batchnorm"
    fusion = True

    def apply(self, graph: Graph) -> None:
        for bn in list(graph.nodes):
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
