"""Max pools of one input with growing "same" windows as a cascade (YOLO's SPP: 5x5, 9x9, 13x13).

A stride-1, dilation-1 MaxPool whose odd window is padded by half of it on every side (output size = input
size) takes the maximum over the input cells within ``r = (k - 1) / 2`` of each output cell (per axis). Two
of them in a row take it within ``r1 + r2``: any input cell inside that distance is reached through a cell
between it and the output cell, which lies inside the input too. So a pool of window ``kb`` on ``x`` equals
a pool of window ``kb - ka + 1`` on the output of a pool of window ``ka <= kb`` on the same ``x``, exactly
(maxima only: no rounding). The pass points each such pool at the largest smaller window already computed
from its input, which shrinks SPP's 25 + 81 + 169 compares per output to 3 x 25.
"""

from __future__ import annotations

from cnnjit.ir import Graph, Node, Value

from .manager import Pass


def same_window(node: Node) -> tuple[int, ...] | None:
    """The kernel shape of a MaxPool this pass can rewrite (2-D or more, stride 1, dilation 1, odd windows
    padded by half on both sides, no indices output, nothing fused), else None."""
    if node.op != "MaxPool" or node.attrs.get("indices") or node.attrs.get("post"):
        return None
    if len([o for o in node.outputs if o is not None]) != 1:
        return None
    a = node.attrs
    k = tuple(int(v) for v in a["kernel_shape"])
    n = len(k)
    pads = tuple(int(p) for p in a["pads"])
    if (n < 2 or any(int(s) != 1 for s in a["strides"]) or any(int(d) != 1 for d in a["dilations"])
            or any(v % 2 == 0 for v in k)):
        return None
    half = tuple((v - 1) // 2 for v in k)
    return k if pads == half + half else None


class CascadeMaxPool(Pass):
    name = "cascade_maxpool"
    fusion = True  # a structural rewrite, like the other graph rewrites: ``fuse=False`` keeps the graph as imported

    def apply(self, graph: Graph) -> None:
        # input value id -> [(window, value holding the max over that window of the input)]
        done: dict[int, list[tuple[tuple[int, ...], Value]]] = {}
        for node in list(graph.nodes):
            kb = same_window(node)
            if kb is None:
                continue
            x = node.inputs[0]
            smaller = [(ka, v) for ka, v in done.get(x.id, []) if ka != kb and all(a <= b for a, b in zip(ka, kb))]
            done.setdefault(x.id, []).append((kb, node.outputs[0]))
            if not smaller:
                continue
            ka, src = max(smaller, key=lambda e: sum(e[0]))
            k = tuple(b - a + 1 for a, b in zip(ka, kb))
            half = tuple((v - 1) // 2 for v in k)
            graph.set_attrs(node, kernel_shape=k, pads=half + half)
            graph.set_input(node, 0, src)
