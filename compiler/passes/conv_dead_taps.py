"""Kernel taps that only ever read padding dropped from a Conv: a smaller kernel, smaller pads, the same output.

A dilated Conv whose dilation reaches past its input reads zeros with its outer taps at every output pixel:
a TCN's ``5x1`` at dilations 1..1024 on 996 steps (madmom's beat tracker) spends 4/5 of its last layer's work
(and 2/5 of the two before) on padding, and a 3x3 at dilation 24 on a 16x16 map (an ASPP branch) is its centre
tap alone. Per spatial axis, the first and last taps that meet the input at some output position bound the kept
kernel; the pads shrink by the dropped taps' span, so every output pixel sums the same products (only zero
products go). A kernel left one tap wide on an axis loses its dilation there (a 1x1 runs on the pointwise
kernels). Skipped where the new pads would be negative (a crop of the input: not done here).
"""

from __future__ import annotations

import numpy as np

from cnnjit.ir import Graph, Node

from .manager import Pass


def live_taps(size: int, out: int, k: int, stride: int, dilation: int, pad: int) -> tuple[int, int] | None:
    """(first, last) tap of one axis that reads an input element (``0 <= o * stride + t * dilation - pad <
    size``) for some output position ``o``; None if none does."""
    live = [t for t in range(k) if _meets(size, out, t * dilation - pad, stride)]
    return (live[0], live[-1]) if live else None


def _meets(size: int, out: int, first: int, stride: int) -> bool:
    """Some ``first + o * stride`` (``0 <= o < out``) lies in ``[0, size)``."""
    o = max(0, (stride - 1 - first) // stride)  # the least o with first + o * stride >= 0
    return o < out and first + o * stride < size


def trimmed(node: Node) -> tuple[tuple[int, int], tuple[int, int], list[int]] | None:
    """((t0h, t0w), (kh', kw'), pads') of ``node``'s kept kernel, or None when nothing can be dropped."""
    x, y, a = node.inputs[0], node.outputs[0], node.attrs
    if (node.op != "Conv" or len(x.shape) != 4 or not node.inputs[1].is_const
            or not all(isinstance(d, int) for d in (*x.shape, *y.shape))):
        return None
    first, ks, pads = [], [], list(a["pads"])
    for ax in (0, 1):
        k, s, d = a["kernel_shape"][ax], a["strides"][ax], a["dilations"][ax]
        size, out, pb = x.shape[2 + ax], y.shape[2 + ax], pads[ax]
        live = live_taps(size, out, k, s, d, pb)
        if live is None:
            return None  # every tap reads padding: the output is the bias (rare; left to the kernels)
        t0, t1 = live
        nb = pb - t0 * d
        ne = (out - 1) * s + (t1 - t0) * d + 1 - size - nb  # the end pad that keeps the output size
        if nb < 0 or ne < 0:
            return None
        first.append(t0)
        ks.append(t1 - t0 + 1)
        pads[ax], pads[2 + ax] = nb, ne
    if tuple(ks) == tuple(a["kernel_shape"]):
        return None
    return (first[0], first[1]), (ks[0], ks[1]), pads


class ConvDeadTaps(Pass):
    name = "conv_dead_taps"
    fusion = True

    def apply(self, graph: Graph) -> None:
        for node in list(graph.nodes):
            cut = trimmed(node)
            if cut is None:
                continue
            (h0, w0), (kh, kw), pads = cut
            wt = node.inputs[1].const[:, :, h0:h0 + kh, w0:w0 + kw]
            graph.set_input(node, 1, graph.const(np.ascontiguousarray(wt)))
            dil = [d if k > 1 else 1 for d, k in zip(node.attrs["dilations"], (kh, kw))]
            graph.set_attrs(node, kernel_shape=[kh, kw], pads=pads, dilations=dil)
