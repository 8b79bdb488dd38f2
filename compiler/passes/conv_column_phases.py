"""A 3x3 Conv dilated along the columns as ``d`` undilated column phases side by side, for Winograd.

A Conv of column dilation ``d`` (DeepLab's ASPP, CRAFT's refiner, dilated audio nets) makes output column
``p + d k`` (phase ``p``) from the padded input columns ``p + d (k + j)``, ``j = 0..2``: per phase, an
undilated correlation over that phase's columns. So the zero-padded input (width ``d L``, ``L`` columns per
phase) is reshaped and transposed phase-major (a Reshape to ``[.., L, d]``, a Transpose to ``[.., d, L]``, a
Reshape back: phase ``p``'s columns one after the other, its padding included), convolved with the column
dilation dropped and the right pad 2 (the row dilation and pads kept: the Winograd kernel takes row
dilations, ``tile_rows``), and shuffled back the same way, a Slice keeping the ``OW`` real columns. Each
phase's last two output columns read into the next phase: computed and dropped.

Why: dilated layers reached only ``cblock`` (CRAFT's refiner, 64->128 at 160x160 rates 6-24: 18-20% of FMA
peak, 75% of the model's time); as phases they run on ``winograd_f4``. The phases and the row phases round
up to whole 4x4 tiles, so the rewrite only pays where the Winograd tiles still save ``MIN_RATIO`` of the
direct multiplies on the real outputs (``_ratio``). Measured (AVX2, 1 thread, load ~5, interleaved, min time,
``/work/exp/s14/dil/colph.py``), 64->128 at 160x160 against ``cblock``: rate 6 (ratio 3.46) 1.8x,
rate 12 (2.78) 1.15-1.36x, rate 24 (2.47) 1.0x, rate 18 (2.37) 0.89x.

Runs after epilogue fusion: activations and the bias are per element or per channel and go along with the
Conv; tensor-valued steps (residuals, PRelu slopes) are in the output's layout, so such Convs are left alone.
"""

from __future__ import annotations

import numpy as np

from cnnjit.ir import Graph, Node, TensorType, Value

from .manager import Pass, insert_op

#: outputs per Winograd F(4x4, 3x3) tile side, inputs per patch side (``codegen/kernels/winograd.py``)
TILE, PATCH = 4, 6
#: the least direct-over-Winograd multiply ratio on the real outputs (see the module docstring)
MIN_RATIO = 2.7
#: the fewest input and output channels (the Winograd kernel's own crossover, ``winograd.MIN_CHANNELS``)
MIN_CHANNELS = 8


def _cdiv(a: int, b: int) -> int:
    return -(-a // b)


def _geometry(node: Node) -> tuple[int, int]:
    """``(L, TY)``: padded columns per phase, and tile rows of the row phases (``winograd.tile_rows``)."""
    dh, d = node.attrs["dilations"]
    oh, ow = node.outputs[0].shape[2:]
    return _cdiv(ow, d) + 2, dh * _cdiv(_cdiv(oh, dh), TILE)


def _ratio(node: Node) -> float:
    """The direct convolution's multiplies on the real outputs over the phase Conv's Winograd tiles'."""
    d = node.attrs["dilations"][1]
    oh, ow = node.outputs[0].shape[2:]
    cols, ty = _geometry(node)
    return 9 * oh * ow / (PATCH * PATCH * ty * _cdiv(d * cols, TILE))


def _applies(node: Node) -> bool:
    """A dense float32 3x3 stride-1 Conv with constant weights, dilated along the columns, whose activations
    (if any) are per element, that the Winograd kernel would take as phases with ``MIN_RATIO`` saved."""
    if node.op != "Conv" or len(node.inputs[0].shape) != 4:
        return False
    x, wt, a = node.inputs[0], node.inputs[1], node.attrs
    if x.dtype != np.float32 or wt.dtype != np.float32 or not wt.is_const:
        return False
    if (tuple(a["kernel_shape"]) != (3, 3) or tuple(a["strides"]) != (1, 1) or a["group"] != 1
            or a["dilations"][1] < 2 or min(x.shape[1], wt.shape[0]) < MIN_CHANNELS):
        return False
    if any(st.value is not None for st in a.get("post", ())):
        return False
    return _ratio(node) >= MIN_RATIO


class ConvColumnPhases(Pass):
    name = "conv_column_phases"
    fusion = True  # a structural rewrite: ``fuse=False`` keeps the dilated Conv as imported

    def apply(self, graph: Graph) -> None:
        for node in [n for n in graph.nodes if _applies(n)]:
            self._rewrite(graph, node)

    @staticmethod
    def _swap(graph: Graph, anchor: Node, v: Value, outer: int, inner: int) -> Value:
        """``v`` (``[N, C, H, outer inner]``) with column ``inner i + j`` moved to ``outer j + i``."""
        n, c, h = v.shape[:3]
        v = insert_op(graph, anchor, "Reshape", v, (n, c, h, outer, inner))
        v = insert_op(graph, anchor, "Transpose", v, (n, c, h, inner, outer), perm=(0, 1, 2, 4, 3))
        return insert_op(graph, anchor, "Reshape", v, (n, c, h, outer * inner))

    def _rewrite(self, graph: Graph, node: Node) -> None:
        a, x, y = node.attrs, node.inputs[0], node.outputs[0]
        d, pads = int(a["dilations"][1]), tuple(int(p) for p in a["pads"])
        cols, _ = _geometry(node)
        n, c, h, w = x.shape
        xp = insert_op(graph, node, "Pad", x, (n, c, h, d * cols), mode="constant", value=0.0,
                       pads=(0, 0, 0, pads[1], 0, 0, 0, d * cols - w - pads[1]))
        ph = self._swap(graph, node, xp, cols, d)  # column d k + p to phase-major L p + k
        m, oh, ow = y.shape[1:]
        out_ph = Value(TensorType(y.dtype, (n, m, oh, d * cols)))
        attrs = dict(a, dilations=(int(a["dilations"][0]), 1), pads=(pads[0], 0, pads[2], 2))
        conv = graph.insert_before(node, Node("Conv", [ph, *node.inputs[1:]], [out_ph], attrs, node.name))
        conv.meta.update(node.meta)
        back = self._swap(graph, node, out_ph, d, cols)  # and back
        out = Value(y.type, y.name)
        graph.insert_before(node, Node("Slice", [back], [out], {"starts": (0, 0, 0, 0), "ends": (n, m, oh, ow),
                                                                "steps": (1, 1, 1, 1)}))
        graph.replace_all_uses(y, out)
        graph.remove_node(node)
        graph.note_fused(conv, "column phases")
