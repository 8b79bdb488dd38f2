"""Channel shuffle (Reshape → Transpose → Reshape, as in ShuffleNet) folded into the producing Conv.

``[N, C, ...] → [N, g, C/g, ...] → transpose(g, C/g) → [N, C, ...]`` only permutes channels. When the
shuffled tensor comes from a Conv with constant weights that feeds nothing else (and whose fused epilogue
is per-channel: activations, no residual), the Conv computes its output channels in the shuffled order —
its weight rows and bias are permuted — and the three data-movement nodes disappear.
"""

from __future__ import annotations

import numpy as np

from cnnjit.ir import Graph, Node
from cnnjit.ir.ops import retarget_residuals

from .manager import Pass


def shuffle_permutation(r1: Node, t: Node, r2: Node) -> np.ndarray | None:
    """``src`` with ``out[:, j] = in[:, src[j]]`` if the three nodes form a channel shuffle."""
    x, mid, y = r1.inputs[0], r1.outputs[0], r2.outputs[0]
    if x.shape != y.shape or len(x.shape) < 2 or len(mid.shape) != len(x.shape) + 1:
        return None
    n, c = x.shape[:2]
    if mid.shape[0] != n or mid.shape[3:] != x.shape[2:] or mid.shape[1] * mid.shape[2] != c:
        return None
    if tuple(t.attrs["perm"]) != (0, 2, 1) + tuple(range(3, len(mid.shape))):
        return None
    g, k = mid.shape[1], mid.shape[2]
    return np.arange(c).reshape(g, k).T.reshape(-1)


class FoldChannelShuffle(Pass):
    name = "fold_channel_shuffle"
    fusion = True

    def apply(self, graph: Graph) -> None:
        for t in list(graph.nodes):
            if t.op != "Transpose" or t not in graph.nodes:
                continue
            r1, users = t.inputs[0].producer, t.outputs[0].users
            if r1 is None or r1.op != "Reshape" or len(users) != 1 or users[0].op != "Reshape":
                continue
            r2 = users[0]
            if any(v in graph.outputs or len(v.users) != 1 for v in (r1.outputs[0], t.outputs[0])):
                continue
            conv = r1.inputs[0].producer
            if conv is None or conv.op != "Conv" or len(r1.inputs[0].users) != 1 or r1.inputs[0] in graph.outputs:
                continue
            if any(step.residual for step in conv.attrs.get("post", ())):
                continue
            if not conv.inputs[1].is_const or (len(conv.inputs) > 2 and conv.inputs[2] is not None
                                               and not conv.inputs[2].is_const):
                continue
            if conv.attrs["group"] != 1:  # permuting a grouped conv's outputs would mix groups
                continue
            src = shuffle_permutation(r1, t, r2)
            if src is None:
                continue
            self._permute(graph, conv, src)
            y = r2.outputs[0]
            users = list(y.users)
            graph.replace_all_uses(y, conv.outputs[0])
            for u in users:  # a fused residual Add of ``y`` now adds the conv's output
                retarget_residuals(u, y, conv.outputs[0])
            for n in (r2, t, r1):
                graph.remove_node(n)
            graph.note_fused(conv, "ChannelShuffle")

    @staticmethod
    def _permute(graph: Graph, conv: Node, src: np.ndarray) -> None:
        graph.set_input(conv, 1, graph.const(conv.inputs[1].const[src]))
        if len(conv.inputs) > 2 and conv.inputs[2] is not None:
            graph.set_input(conv, 2, graph.const(conv.inputs[2].const[src]))
