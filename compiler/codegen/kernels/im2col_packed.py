"""A deep convolution on a small output map as im2col and ``packed_pointwise``'s GEMM micro-kernel.

A VGG-style 512 -> 512 3x3 conv on a 7x7 or 3x3 map has few output pixels and a deep reduction (4608 taps):
the direct kernels (``cblock``: a tile of output-channel vectors over a row of pixels) run such layers at
7-12 GFLOP/s (AVX2, a siamese VGG's 7x7 layers; 4.5 on 3x3), their rows too short to fill a tile and the
9.4 MB of weights re-read per row. Here each image's input is unrolled once into a ``C * KH * KW x OH * OW``
scratch (im2col: row ``(c * KH + i) * KW + j`` holds tap ``(i, j)`` of channel ``c`` at every output pixel,
zero where the tap lies in the padding), and ``packed_pointwise``'s kernel computes the 1x1 conv of that
matrix with the OIHW weights read as ``M x (C * KH * KW)`` (packed at compile time): its strips, register
tiles, whole-map row groups and channel-vector tail, epilogue included. The copy is ``KH * KW`` times the
input (a 512-channel 7x7 map: 0.9 MB), small against the layer's weights.

Split over threads, a layer splits over output channels (no part space): each part unrolls the input again,
a small cost on these maps, and reads only its share of the weights.
"""

from __future__ import annotations

import numpy as np

from cnnjit.ir import Node

from ..kernel import KernelCall, Scratch, Target, note, variant
from .packed_pointwise import MIN_CHANNELS, MIN_ROW_TILES, packed_call, packed_tile

#: the most output pixels: above, ``winograd_f4`` and ``cblock`` fill their tiles and the im2col copy grows
#: with the map (measured crossover: see ``im2col_packed_applies``)
MAX_PIXELS = 64


def im2col_lines() -> tuple[str, list[str]]:
    """The extra kernel parameters and the lines (inside the loop over images ``n``) that unroll image ``n``'s
    input into the scratch ``zb`` (row ``(c * KH + i) * KW + j``, ``P`` pixels each) and set ``x0`` there:
    per tap and output row, the columns whose input lies in the padding are zeros, the rest copied."""
    return ", zb, zo, CI, H, Win, OW, KH, KW, SH, SW, PH, PW, DH, DW", [
        "        x0 = zo",
        "        OH = P // OW",
        "        for ci in range(CI):",
        "            for i in range(KH):",
        "                for j in range(KW):",
        "                    zr = zo + ((ci * KH + i) * KW + j) * P",
        "                    lo = min(OW, max(0, -((j * DW - PW) // SW)))",
        "                    hi = max(lo, min(OW, -((j * DW - PW - Win) // SW)))",
        "                    for oh in range(OH):",
        "                        ih = oh * SH - PH + i * DH",
        "                        zq = zr + oh * OW",
        "                        if ih < 0 or ih >= H:",
        "                            for ow in range(OW):",
        "                                zb[U(zq + ow)] = 0.0",
        "                        else:",
        "                            xr = xo + ((n * CI + ci) * H + ih) * Win + j * DW - PW",
        "                            for ow in range(lo):",
        "                                zb[U(zq + ow)] = 0.0",
        "                            for ow in range(lo, hi):",
        "                                zb[U(zq + ow)] = xb[U(xr + ow * SW)]",
        "                            for ow in range(hi, OW):",
        "                                zb[U(zq + ow)] = 0.0",
    ]


def im2col_packed_applies(node: Node, target: Target) -> bool:
    """A group-1 float32 2-D Conv with constant weights and a kernel larger than 1x1, on a map of at most
    ``MAX_PIXELS`` output pixels, deep enough for the packed micro-kernel (``MIN_CHANNELS`` taps and
    ``MIN_ROW_TILES`` register tiles of output channels)."""
    x, wt = node.inputs[0], node.inputs[1]
    a = node.attrs
    if not (x.dtype == np.float32 and wt.dtype == np.float32 and wt.is_const and len(x.shape) == 4
            and a["group"] == 1 and int(np.prod(a["kernel_shape"])) > 1):
        return False
    P = int(np.prod(node.outputs[0].shape[2:], dtype=np.int64))
    depth = int(np.prod(wt.shape[1:]))
    return P <= MAX_PIXELS and depth >= MIN_CHANNELS and wt.shape[0] >= MIN_ROW_TILES * packed_tile(target)[0]


@variant("Conv", name="im2col_packed", priority=22, applies=im2col_packed_applies)
def gen_im2col_packed(node: Node, target: Target) -> list[KernelCall]:
    """Per image, the im2col unroll into a ``C * KH * KW x OH * OW`` scratch (``im2col_lines``), then
    ``packed_pointwise``'s kernel on it."""
    x, wt = node.inputs[0], node.inputs[1]
    a = node.attrs
    OH, OW = node.outputs[0].shape[2:]
    depth = int(np.prod(wt.shape[1:]))
    return packed_call(node, target, im2col_lines(),
                       (Scratch(depth * OH * OW), x.shape[1], *x.shape[2:], OW, *a["kernel_shape"], *a["strides"],
                        a["pads"][0], a["pads"][1], *a["dilations"]), kchunk=True)
