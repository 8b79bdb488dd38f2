"""A deep convolution on a small output map as im2col and ``packed_pointwise``'s GEMM micro-kernel.

A VGG-style 512 -> 512 3x3 conv on a 7x7 or 3x3 map has few output pixels and a deep reduction (4608 taps):
the direct kernels (``cblock``: a tile of output-channel vectors over a row of pixels) run such layers at
7-12 GFLOP/s (AVX2, a siamese VGG's 7x7 layers; 4.5 on 3x3), their rows too short to fill a tile and the
9.4 MB of weights re-read per row. Here each image's input is unrolled once into a ``C * KH * KW x OH * OW``
scratch (im2col: row ``(c * KH + i) * KW + j`` holds tap ``(i, j)`` of channel ``c`` at every output pixel,
zero where the tap lies in the padding), and ``packed_pointwise``'s kernel computes the 1x1 conv of that
matrix with the OIHW weights read as ``M x (C * KH * KW)`` (packed at compile time): its strips, register
tiles and channel-vector tail, epilogue included, with the reduction in chunks whose panel over the whole map
stays in L2 (``chunked_blocking``): each weight is read once. The copy is ``KH * KW`` times the input (a
512-channel 7x7 map: 0.9 MB), small against the layer's weights. The table takes it from ``WEIGHT_BYTES``
of weights, where ``cblock``'s re-reads leave the cache: with fewer, ``cblock`` is faster, and on maps of
more than ``MAX_PIXELS`` output pixels ``winograd_f4``.

Split over threads, a layer splits over output channels (no part space): each part unrolls the input again,
a small cost on these maps, and reads only its share of the weights.

``im2col_channels`` (before it in the table, maps of ``channel_pointwise.MIN_PIXELS`` pixels and more): the same
unroll, then ``channel_pointwise``'s GEMM, the output channels as the lanes. The pixel strips fill 9, 10 or 49
of 16, 16 or 64 lanes on 3x3, 5x2 or 7x7 maps at AVX-512 and broadcast every weight; the channel panels load
the weights as whole vectors and broadcast the few pixels. Measured on AVX-512 (Zen 5, 1 thread, in the model,
interleaved, load 5): 512 -> 512 at 7x7 2.05 -> 1.45 ms, 3x3 0.65 -> 0.39 ms; 486 -> 486 at 5x2 0.66 -> 0.41 ms,
onnxruntime's own 0.41 ms.
"""

from __future__ import annotations

import numpy as np

from cnnjit.ir import Node

from ..kernel import KernelCall, Scratch, Target, variant
from .channel_pointwise import MIN_PIXELS, channel_call
from .packed_pointwise import MIN_CHANNELS, MIN_ROW_TILES, packed_call, packed_tile

#: the most output pixels: above, ``winograd_f4`` and ``cblock`` fill their tiles and the im2col copy grows
#: with the map (AVX2 GFLOP/s, ``benchmarks/conv_variants.py``, weights hot: 3x3 stride 1 at 10x10 and 14x14
#: ``winograd_f4`` 90-162 effective against 66-70 here; 512 -> 512 at 7x7 64-68 against ``cblock`` 53-59 and
#: ``winograd_f4`` 60-63; 256 -> 256 at 8x8 70-74 against 75-79 and 67)
MAX_PIXELS = 64
#: the fewest bytes of weights: ``cblock`` re-reads all of them once per output row, which costs little while
#: they stay in the cache a core can count on and everything once they do not. Measured in model context
#: (``benchmarks/cold_weights.py --force im2col_packed``: chains of same-shape 3x3 layers whose weights together
#: pass L3, so each comes cold; AVX2, 2-core VM, load 9-15), this variant against the table without it:
#: 128-256 channels at 7x7 and 4x4 (0.56-2.25 MB) 0.81-0.96x, 320 at 7x7 (3.5 MB) 1.01x, 384 at 7x7 and 4x4
#: (5.1 MB) 1.08x and 1.31x, 512 at 7x7 (9.4 MB) 1.15x; a siamese VGG's 256 -> 512 and 512 -> 512 at 7x7 (4.7
#: and 9.4 MB) 10-32 ms -> 1.6-10 ms a call in its profile
WEIGHT_BYTES = 4 * 1024 * 1024


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


def im2col_fits(node: Node, target: Target, name: str) -> bool:
    """A group-1 float32 2-D Conv with constant weights and a kernel larger than 1x1 on a map of at most
    ``MAX_PIXELS`` output pixels, with weights of at least ``WEIGHT_BYTES`` (any, where the variant ``name`` is
    forced)."""
    x, wt = node.inputs[0], node.inputs[1]
    a = node.attrs
    if not (x.dtype == np.float32 and wt.dtype == np.float32 and wt.is_const and len(x.shape) == 4
            and a["group"] == 1 and int(np.prod(a["kernel_shape"])) > 1):
        return False
    P = int(np.prod(node.outputs[0].shape[2:], dtype=np.int64))
    return P <= MAX_PIXELS and (target.forced.get("Conv") == name or 4 * wt.type.size >= WEIGHT_BYTES)


def im2col_packed_applies(node: Node, target: Target) -> bool:
    """``im2col_fits``, with the packed micro-kernel's depth of ``MIN_CHANNELS`` taps and ``MIN_ROW_TILES``
    register tiles of output channels."""
    wt = node.inputs[1]
    return (im2col_fits(node, target, "im2col_packed") and int(np.prod(wt.shape[1:])) >= MIN_CHANNELS
            and wt.shape[0] >= MIN_ROW_TILES * packed_tile(target)[0])


@variant("Conv", name="im2col_packed", priority=22, applies=im2col_packed_applies)
def gen_im2col_packed(node: Node, target: Target) -> list[KernelCall]:
    """Per image, the im2col unroll into a ``C * KH * KW x OH * OW`` scratch (``im2col_lines``), then
    ``packed_pointwise``'s kernel on it."""
    return packed_call(node, target, im2col_lines(), im2col_args(node), kchunk=True)


def im2col_args(node: Node) -> tuple:
    """The arguments ``im2col_lines`` takes after the GEMM's own: the ``C * KH * KW x OH * OW`` scratch and
    the layer's geometry."""
    x, wt = node.inputs[0], node.inputs[1]
    a = node.attrs
    OH, OW = node.outputs[0].shape[2:]
    return (Scratch(int(np.prod(wt.shape[1:])) * OH * OW), x.shape[1], *x.shape[2:], OW, *a["kernel_shape"],
            *a["strides"], a["pads"][0], a["pads"][1], *a["dilations"])


def im2col_channels_applies(node: Node, target: Target) -> bool:
    """``im2col_fits`` on a map of at least ``channel_pointwise.MIN_PIXELS`` output pixels (fewer: too few
    FMA chains per panel step)."""
    return (im2col_fits(node, target, "im2col_channels")
            and int(np.prod(node.outputs[0].shape[2:], dtype=np.int64)) >= MIN_PIXELS)


@variant("Conv", name="im2col_channels", priority=21, applies=im2col_channels_applies)
def gen_im2col_channels(node: Node, target: Target) -> list[KernelCall]:
    """Per image, the im2col unroll (``im2col_lines``), then ``channel_pointwise``'s GEMM on it: the output
    channels as the lanes, ``W^T`` packed into panels of ``nr * w`` channels read as whole vectors, each of the
    tile's ``mr`` pixels broadcast from the unrolled matrix."""
    return channel_call(node, target, im2col_lines(), im2col_args(node))
