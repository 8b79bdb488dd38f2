"""Direct convolution for small feature maps: SIMD over output channels (plain NCHW in and out).

When the output rows are too short to fill a vector (7x7, 8x8, 25x5 planes), vectorising over output
columns wastes most lanes. This kernel instead holds ``MV`` vectors of ``W`` consecutive output channels
by ``NP`` consecutive output pixels of one row in registers (up to 24 independent FMA chains): for every
input channel and tap it loads ``MV`` weight vectors (re-laid at compile time as ``[C/G * KH * KW, M]``)
and broadcasts each pixel's input value into ``MV`` FMAs. The ``MV`` vectors are written as one
``MV * W``-lane value, which LLVM splits into ``MV`` registers: the source (and numba's compile time)
stays that of a one-vector tile. Out-of-range taps are skipped per pixel
(padding is never materialised). The finished tile is
written four pixels at a time (``channel_stores``: in-register transposes, one 4-element store per channel
plane), a row's last tile (which recomputes pixels past the row's end) with strided stores (one channel plane
per lane); a residual epilogue gathers the same way.
"""

from __future__ import annotations

import numpy as np

from cnnjit.ir import Node

from ..kernel import KernelCall, Param, Target, form, note, variant
from .epilogue import Epilogue, channel_stores, has_residual
from .simd_conv import unrolled_rows
from .simd_pointwise import conv_operands, conv_sizes, is_pointwise
from .template import source

#: the earlier form: every pixel's channels written by a strided store (``vscatter``), whole tiles too
SCATTER = form("cvec_scatter", "cvec / cvec_pointwise: every pixel of a tile stored by a strided scatter, not "
               "whole tiles four pixels at a time (channel_stores)")


def _pixel_tile(ow: int) -> int:
    """Output pixels per register tile: the size in 3..8 that wastes the fewest recomputed pixels on a row
    of ``ow`` (ties: the larger tile)."""
    if ow <= 8:
        return max(ow, 1)
    return min(range(8, 2, -1), key=lambda t: -(-ow // t) * t - ow)


def cvec_source(node: Node, w: int, mv: int, np_: int, scatter: bool = False) -> tuple[str, list]:
    """``mv`` vectors of ``w`` output channels x ``np_`` consecutive output pixels of one row.

    Each tap's column is checked per pixel (a second, unchecked copy of the loop for interior tiles ran no
    faster and doubled the compile time); rows outside the input are skipped per tap row. A tail tile
    recomputes the row's last pixel. ``scatter``: the earlier form's stores (``SCATTER``).
    """
    lanes = mv * w  # the tile's channel vectors as one value (LLVM splits it into mv registers)
    # a residual is gathered (one channel plane per lane)
    epi = Epilogue(node, lanes, False, residual_load=lambda k: f"vgather{lanes}(r{k}b, r{k}o + yq, P)")
    acc = [f"a{j}" for j in range(np_)]
    L = [
        "def kernel(xb, xo, wb, wo, bb, bo, yb, yo, N, C, H, Win, M, OH, OW, KH, KW, sh, sw, ph, pw, dh, dw, G"
        + epi.signature() + "):",
        "    cg = C // G",
        "    mg = M // G",
        "    P = OH * OW",
        "    for n in range(N):",
        f"        for m0 in range(0, M, {lanes}):",
        "            g = m0 // mg",
        f"            b = vload{lanes}(bb, bo + m0)",
        "            for oh in range(OH):",
        "                ihb = oh * sh - ph",
        f"                for ow0 in range(0, OW, {np_}):",
        *[f"                    iw{j} = min(ow0 + {j}, OW - 1) * sw - pw" for j in range(np_)],
        *[f"                    {acc[j]} = b" for j in range(np_)],
        "                    for c in range(cg):",
        "                        xc = xo + (n * C + g * cg + c) * H * Win",
        "                        for kh in range(KH):",
        "                            ih = ihb + kh * dh",
        "                            if ih < 0 or ih >= H:",
        "                                continue",
        "                            xrow = xc + ih * Win",
        "                            wr = wo + ((c * KH + kh) * KW) * M + m0",
        "                            for kw in range(KW):",
        f"                                wv = vload{lanes}(wb, wr + kw * M)",
        "                                kx = kw * dw",
    ]
    for j in range(np_):
        L += [f"                                iw = iw{j} + kx",
              "                                if iw >= 0 and iw < Win:",
              f"                                    {acc[j]} = vfma{lanes}(vbcast{lanes}(xb[U(xrow + iw)]), wv, "
              f"{acc[j]})"]
    # a whole tile: its pixels' channel planes written four pixels at a time (``channel_stores``: in-register
    # transposes and a 4-element store per channel, where a scatter stores element by element); a row's last
    # tile, which recomputes pixels past the row's end, pixel by pixel
    L += ["                    y0 = (n * M + m0) * P + oh * OW + ow0",
          f"                    if ow0 + {np_} <= OW and {not scatter}:"]
    for j in range(np_):
        L.append(f"                        yq = y0 + {j}")
        L += epi.vector(" " * 24, acc[j], "", lanes, False)
    L += channel_stores(" " * 24, acc, "y0", lanes)
    for j in range(np_):
        L += epi.after(" " * 24, [f"for i in range({lanes}):"], f"y0 + {j} + i * P")
    L.append("                    else:")
    for j in range(np_):
        L.append(f"                        if ow0 + {j} < OW:")
        L.append(f"                            yq = y0 + {j}")
        L += epi.vector(" " * 28, acc[j], "", lanes, False)
        L.append(f"                            vscatter{lanes}(yb, yo + yq, P, {acc[j]})")
        L += epi.after(" " * 28, [f"for i in range({lanes}):"], "yq + i * P")
    return source(L), epi.args


def cvec_width(node: Node, target: Target) -> int | None:
    """The vector width to use, or None when this kernel does not apply."""
    x, wt, y = node.inputs[0], node.inputs[1], node.outputs[0]
    a = node.attrs
    if x.dtype != np.float32 or not wt.is_const or len(x.shape) != 4:
        return None
    mg = wt.shape[0] // a["group"]
    if wt.shape[1] * a["group"] != x.shape[1] or a["group"] == x.shape[1] > 1:  # not depthwise
        return None
    host = target.vector_width
    for w in (host, 8):
        if w <= host and mg % w == 0 and y.shape[3] < w:
            return w
    # rows of up to 16 columns with >= 2 channel vectors per group: 8-16 FMA chains beat the
    # column-vector kernel's 4 (measured on ResNet-8's 16x16 layers: 1.05x stride 1, 1.2x stride 2)
    # (not with a fused residual: its per-pixel gathers cost more than the extra chains win here)
    # (nor a Kx1 kernel, whose rows simd_conv unrolls: 3x1 48->48 at 16 columns 25 against 65 GFLOP/s)
    residual = has_residual(node)
    if mg % (2 * host) == 0 and y.shape[3] <= 16 and not residual and not unrolled_rows(node):
        return host
    return None


#: the least share of idle lanes in the pixel-vector kernel's vectors for ``cvec_pointwise`` to take a 1x1
#: conv (AVX2, Conv+SiLU, interleaved: 3x3 maps, 7/16 idle, 2.9x faster than ``simd_pointwise``; an 8x8 map,
#: none idle, 0.53x)
MIN_IDLE_LANES = 0.25


def cvec_pointwise_width(node: Node, target: Target) -> int | None:
    """Vector width for a 1x1 conv on a tiny map (<= 8 columns, <= 64 pixels), else None.

    There the pixel-vector micro-kernel runs mostly masked tails; vectors over output channels keep every
    lane busy (measured on MobileNetV2's 7x7 layers: 1.03-1.26x, a 3x3 map 1.4x; 14x14 maps lose).
    ``packed_pointwise`` comes first where it applies (a whole strip of pixels: 7x7 maps): this kernel reads
    the weights once per output row, which loses once they outgrow the cache.
    """
    x, wt, y = node.inputs[0], node.inputs[1], node.outputs[0]
    if x.dtype != np.float32 or not wt.is_const or len(x.shape) != 4:
        return None
    if y.shape[3] > 8 or y.shape[2] * y.shape[3] > 64:
        return None
    if not is_pointwise(node, grouped=True):
        return None
    mg = wt.shape[0] // node.attrs["group"]
    host = target.vector_width
    pixels = y.shape[2] * y.shape[3]
    if -pixels % host < MIN_IDLE_LANES * -(-pixels // host) * host:
        return None  # the pixel vectors are nearly full (an 8x8 map at 8 lanes: 24 -> 96, 21 vs 11 GFLOP/s)
    # at least 2 channel vectors per tile: with one (e.g. ShuffleNet's 136-channel groups at width 8) the
    # tile has too few FMA chains and loses to the pixel-vector kernel. A map of fewer pixels than a vector
    # (a squeeze-excite 1x1 on a 1x1 map: 96 -> 24 channels) also takes 4-lane vectors: the pixel-vector
    # kernel runs one live lane there (1 GFLOP/s in MobileNetV3-small's SE blocks)
    widths = (host, 8, 4) if y.shape[2] * y.shape[3] < host else (host, 8)
    return next((w for w in widths if w <= host and mg % (2 * w) == 0), None)


def cvec_tile(target: Target, mg: int, ow: int, w: int) -> tuple[int, int]:
    """(MV, NP): channel vectors (of ``w`` lanes, dividing the group's ``mg`` channels) x output pixels of a
    row (``_pixel_tile``) per register tile, at most 24 accumulators, whatever the register file: on AVX2's
    16 registers the 2 x 7 tile of a 13-column row (14 accumulators + 2 weight vectors + the broadcast: one
    spill) measured best, 32-34 GFLOP/s against 32-36 for 4 x 3 and 18-29 for 2 x 6, 1 x 7, 1 x 8, 2 x 4 and
    4 x 2 (a tile that does not divide the row recomputes more pixels than a spill costs)."""
    np_ = _pixel_tile(ow)
    return next(v for v in (4, 2, 1) if mg % (v * w) == 0 and v * np_ <= 24), np_


def gen_simd_cvec(node: Node, target: Target, w: int) -> list[KernelCall]:
    x, wt, bias, y = conv_operands(node)
    a = node.attrs
    N, C, H, Win, M, OH, OW = conv_sizes(node)
    wT = np.ascontiguousarray(wt.const.reshape(M, -1).T, dtype=np.float32)  # [cg*KH*KW, M]
    mv, np_ = cvec_tile(target, M // a["group"], OW, w)
    src, extra = cvec_source(node, w, mv, np_, target.uses(SCATTER))
    args = [x, Param(wT), bias, y, N, C, H, Win, M, OH, OW, *a["kernel_shape"], *a["strides"],
            a["pads"][0], a["pads"][1], *a["dilations"], a["group"], *extra]
    return [KernelCall(src, args, note(node))]


@variant("Conv", name="cvec_pointwise", priority=20, applies=lambda n, t: cvec_pointwise_width(n, t) is not None)
def gen_cvec_pointwise(node: Node, target: Target) -> list[KernelCall]:
    """A 1x1 conv on a tiny map (7x7, 3x3): vectors over output channels."""
    return gen_simd_cvec(node, target, cvec_pointwise_width(node, target))


@variant("Conv", name="cvec", priority=60, applies=lambda n, t: cvec_width(n, t) is not None)
def gen_cvec(node: Node, target: Target) -> list[KernelCall]:
    """A dense or grouped conv whose rows are narrower than a vector: vectors over output channels."""
    return gen_simd_cvec(node, target, cvec_width(node, target))
