"""A 1x1 convolution of column stride 2 (a ResNet's downsampling shortcut) as a subsample and a pointwise GEMM.

The direct kernels compute such a layer pixel by pixel (``cvec``: a broadcast per input pixel and channel
and strided stores of every output pixel) at a quarter of the FMA peak. Here each image's input pixels at the
output positions (row stride ``SH``, column stride 2: the even lanes of two vector loads, ``vload2e``) are
copied into a contiguous ``C x OH * OW`` scratch, and ``simd_pointwise``'s register-tiled micro-kernel
(``pointwise_source``) computes the 1x1 conv on it, epilogue included: the copy moves a quarter of the input
once, the GEMM runs at the pointwise kernel's rate.

Split over threads (``compiler/codegen/parts.py``), a part is a range of output pixels: it gathers only the
output rows its range touches into a scratch of its own and runs the GEMM on its pixels (the same tiles and
sums per output element as the whole layer: bit-identical), where a channel part would gather the whole input
again.
"""

from __future__ import annotations

import numpy as np

from cnnjit.ir import Node

from ..kernel import KernelCall, Scratch, Target, note, variant
from ..parts import node_part, part_space
from .channel_pointwise import channel_call, takes_pixels
from .im2col_packed import WEIGHT_BYTES
from .packed_pointwise import packed_call, packed_fits, packed_tile
from .simd_pointwise import (
    PART_VECTORS,
    pixel_block,
    pointwise_operands,
    pointwise_source,
    pointwise_tile,
    row_sections,
)


def strided_pointwise_applies(node: Node, target: Target) -> bool:
    """An unpadded, ungrouped 1x1 float32 Conv with constant weights on a 4-D input, column stride 2."""
    x, wt = node.inputs[0], node.inputs[1]
    a = node.attrs
    return (x.dtype == np.float32 and wt.dtype == np.float32 and wt.is_const and len(x.shape) == 4
            and all(k == 1 for k in a["kernel_shape"]) and not any(a["pads"]) and a["group"] == 1
            and a["strides"][1] == 2)


def gather_lines(w: int, pixel_range: bool = False, bounds: tuple[str, str] = ("PS", "PE")) -> tuple[str, list[str]]:
    """The extra kernel parameters and the lines (inside the loop over images ``n``) that copy image ``n``'s
    input at the output positions into the scratch ``zb[zo + c * P + oh * OW + ow]``: whole vectors while both
    of their loads stay inside the row, the rest of the row by element. ``pixel_range``: only the output rows
    that output pixels ``bounds`` (the kernel's parameters of the part's range) lie in."""
    lo, hi = bounds
    rows = f"{lo} // OW, ({hi} + OW - 1) // OW" if pixel_range else "OH"
    return ", zb, zo, H, Win, OH, OW, SH", [
        "        x0 = zo",
        f"        VW = min(OW, Win // 2) // {w} * {w}",
        "        for c in range(C):",
        f"            for oh in range({rows}):",
        "                xr = xo + ((n * C + c) * H + oh * SH) * Win",
        "                zr = zo + c * P + oh * OW",
        f"                for ow0 in range(0, VW, {w}):",
        f"                    vstore{w}(zb, zr + ow0, vload2e{w}(xb, xr + 2 * ow0))",
        "                for ow in range(VW, OW):",
        "                    zb[U(zr + ow)] = xb[U(xr + 2 * ow)]",
    ]


@variant("Conv", name="strided_pointwise", priority=24, applies=strided_pointwise_applies)
def gen_strided_pointwise(node: Node, target: Target) -> list[KernelCall]:
    """One call: per image, the subsample into the scratch, then the pointwise GEMM on it (a part: on its
    range of output pixels)."""
    x, wt, bias, y, N, C, M, _ = pointwise_operands(node)
    pixels = node_part(node)
    H, Win = x.shape[2:]
    OH, OW = node.outputs[0].shape[2:]
    P, w = OH * OW, target.vector_width
    pb = pixel_block(C, P, w)
    mr, nr = pointwise_tile(target, M, w, 4 * C * min(P, pb))
    src, extra = pointwise_source(node, w, rows=row_sections(M, mr), mr=mr, nr=nr, pixel_range=pixels is not None,
                                  gather=gather_lines(w, pixels is not None))
    args = [x, wt, bias, y, N, C, M, P, pb, *(pixels or ()), Scratch(C * P), H, Win, OH, OW, node.attrs["strides"][0],
            *extra]
    return [KernelCall(src, args, note(node))]


@part_space("Conv", "strided_pointwise")
def strided_part_space(node: Node, target: Target) -> tuple[int, int]:
    """Output pixels in runs of ``PART_VECTORS`` vectors (``simd_pointwise``'s: no part ends in a partial
    tile)."""
    return int(np.prod(node.outputs[0].shape[2:], dtype=np.int64)), PART_VECTORS * target.vector_width


def strided_packed_applies(node: Node, target: Target) -> bool:
    """``strided_pointwise``'s layers that ``packed_pointwise`` would take at stride 1 (``packed_fits`` on the
    output's pixels): deep enough to share the strips' copy over ``MIN_ROW_TILES`` register tiles."""
    return strided_pointwise_applies(node, target) and packed_fits(
        node.inputs[1].shape[1], node.inputs[1].shape[0],
        int(np.prod(node.outputs[0].shape[2:], dtype=np.int64)), target)


@variant("Conv", name="strided_packed", priority=23, applies=strided_packed_applies)
def gen_strided_packed(node: Node, target: Target) -> list[KernelCall]:
    """Per image, the subsample into a ``C x OH * OW`` scratch (``gather_lines``), then ``packed_pointwise``'s
    kernel on it: its strips are copied from the scratch (a part: its own output rows and pixels)."""
    x = node.inputs[0]
    OH, OW = node.outputs[0].shape[2:]
    pixels = node_part(node)
    gather = gather_lines(target.vector_width, pixels is not None, ("P0", "P1"))
    return packed_call(node, target, gather, (Scratch(x.shape[1] * OH * OW), *x.shape[2:], OH, OW,
                                              node.attrs["strides"][0]))


@part_space("Conv", "strided_packed")
def strided_packed_part_space(node: Node, target: Target) -> tuple[int, int]:
    """Output pixels in whole strips (``packed_pointwise``'s): each part gathers its own output rows."""
    return int(np.prod(node.outputs[0].shape[2:], dtype=np.int64)), packed_tile(target)[1] * target.vector_width


def strided_channels_applies(node: Node, target: Target) -> bool:
    """``strided_pointwise``'s layers that ``strided_packed`` does not take, on an output map whose pixels
    ``channel_pointwise`` takes at stride 1 (``takes_pixels``), with weights of at least
    ``im2col_packed.WEIGHT_BYTES`` (any, forced): a ResNet-50's last 1024 -> 2048 shortcut (8 MB) at 5x2,
    whose pixel vectors idle 6 of 16 lanes while it streams its weights, 1.9x ``strided_pointwise`` in the
    model (AVX-512, ``benchmarks/heldout.py --before Conv:strided_channels``); shallower layers were not
    measured and keep the pixel-vector kernels."""
    wt = node.inputs[1]
    return (strided_pointwise_applies(node, target) and not strided_packed_applies(node, target)
            and (target.forced.get("Conv") == "strided_channels" or 4 * wt.type.size >= WEIGHT_BYTES)
            and takes_pixels(int(np.prod(node.outputs[0].shape[2:], dtype=np.int64)), target))


@variant("Conv", name="strided_channels", priority=22, applies=strided_channels_applies)
def gen_strided_channels(node: Node, target: Target) -> list[KernelCall]:
    """Per image, the subsample into a ``C x OH * OW`` scratch (``gather_lines``), then ``channel_pointwise``'s
    GEMM on it (output channels as the lanes)."""
    x = node.inputs[0]
    OH, OW = node.outputs[0].shape[2:]
    params, lines = gather_lines(target.vector_width)
    return channel_call(node, target, (params, ["        C = K", *lines]),
                        (Scratch(x.shape[1] * OH * OW), *x.shape[2:], OH, OW, node.attrs["strides"][0]))
