"""A large-kernel convolution on a map of any size as a GEMM over im2col chunk panels (``packed_pointwise``'s
micro-kernel).

A conv whose kernel has many taps (madmom's chord CNN: 64 -> 128, 9x12 on 288x22; basic-pitch's 3x39, a
text recognizer's 32x4, 7x3 pitch filters) runs on ``cblock`` (a tile of output-channel vectors over a row's
pixels, every tap re-reading the tile's weights) or ``simd_conv``: on such layers 10-45 GFLOP/s at AVX2, their
rows short against the kernel width. The layer is a GEMM of the ``M x (C * KH * KW)`` weights and the
im2col of the input; ``im2col_packed`` unrolls the whole map, which grows ``KH * KW`` times the input (85 MB
for madmom's layer) and so serves maps of 64 pixels only.

Here the output pixels run in blocks (``BLOCK_PIXELS``, whole strips of ``packed_pointwise``) and the
reduction in chunks of whole kernel rows (``C * KH`` input rows of ``KW`` taps): each chunk of a block is
unrolled straight into a scratch panel of ``KC x ZS`` floats (``band_lines``; pixel ``p`` of tap ``t`` at
``(t - kc) * ZS + p - pb``, the block's pixels contiguous per tap, so each output row's run of a tap is one
copy of consecutive input columns at stride 1, vector by vector), which stays in L2 while every row group of
output channels runs ``packed_pointwise``'s register tiles over its strips, the partial sums kept in the
output between chunks. The copy costs about one load and store per ``w`` panel floats, each of which meets
``M`` FMAs. A kernel row's ``KW`` taps share the row index arithmetic.

Split over threads, a layer splits along its pixels in whole strips (``bands_part_space``): a part's strips
are the whole layer's, the same sums.
"""

from __future__ import annotations

import numpy as np

from cnnjit.ir import Node

from ..kernel import KernelCall, Param, Scratch, Target, note, variant
from ..parts import node_part, part_space
from .packed_pointwise import MIN_CHANNELS, pack_weights, packed_pointwise_source, packed_tile
from .simd_pointwise import conv_operands

#: output pixels per block (whole strips): a block's weights pass (all ``M x K`` of them, from L3 for large
#: layers) is shared by this many pixels, and a chunk's panel is ``KC x BLOCK_PIXELS``
BLOCK_PIXELS = 256
#: floats per cache line
LINE_FLOATS = 16
#: bytes of a chunk's panel (``KC`` taps of a block's pixels): it stays in L2 while every row group runs over it
CHUNK_PANEL_BYTES = 128 * 1024
#: bytes of a row group's weights of one chunk: they stay in L2 while the block's strips run under them
GROUP_WEIGHT_BYTES = 64 * 1024
#: the fewest kernel taps (``KH * KW``): larger than 5x5. Smaller kernels have the Winograd, depthwise, stem
#: and direct variants, tuned for them
MIN_TAPS = 26
#: the fewest register tiles of output channels: the copy of a panel float is shared by ``M`` FMAs (AVX2, one
#: Conv + ReLU, ``benchmarks/large_kernel.py``, against the table without it: 30 -> 30 1x35 on 198x142 1.46x,
#: 30 -> 18 0.98x, 30 -> 12 1.05x, 8 -> 8 3x39 0.78x; 64 -> 36 9x12 1.2x)
MIN_ROW_TILES = 5
#: the fewest input channels: 1-4 channel stems are ``stem_packed``'s (its phase planes, no ``KH * KW``-fold copy)
MIN_INPUT_CHANNELS = 5


def band_blocking(K: int, kw: int, M: int, P: int, strip: int, unit: int) -> tuple[int, int, int, int]:
    """(PB, ZS, RG, KC): pixels per block (whole strips); floats per tap row of a chunk panel (``PB`` plus a
    strip, since a copy's last vector may write past the block's pixels, in an odd number of cache lines: a
    strip's taps, read one per row, then fall in every L1 set, where at an even count they share a few (256
    pixels: 4 of 64) and a chunk's strip misses L1); output rows per row group (a multiple of ``unit``); taps
    per chunk (whole kernel rows of ``kw``)."""
    whole = -(-P // strip) * strip
    pb = min(whole, BLOCK_PIXELS // strip * strip or strip)
    lines = -(-(pb + strip) // LINE_FLOATS)
    zs = (lines + 1 - lines % 2) * LINE_FLOATS
    kc = min(K, max(kw, CHUNK_PANEL_BYTES // (4 * zs) // kw * kw))
    rg = min(M, max(1, GROUP_WEIGHT_BYTES // (4 * kc * unit)) * unit)
    return pb, zs, rg, kc


def band_lines(geometry: tuple[int, ...], w: int) -> tuple[str, list[str]]:
    """The extra parameters and the lines (inside the chunk loop, taps ``kc .. kce``, ``kc`` a multiple of
    ``KW``) that unroll image ``n``'s input for the block's pixels ``pb .. pe`` into the chunk panel at ``so``
    (tap row ``t`` at ``so + (t - kc) * ZS``), zeros where a tap lies in the padding. ``geometry``:
    ``(KH, KW, SH, SW, PH, PW, DH, DW)``, built into the text; a stride-1 row's run is copied ``w`` lanes at a
    time, its last vector a masked load and a whole store (Zen 3's masked store costs ~10 plain ones): the
    lanes past the run land on the next run's columns (written after it, in pixel order), on the padding
    zeros written after the copy, or past the block's pixels (``ZS`` leaves room)."""
    kh, kw, sh, sw, ph, pw, dh, dw = geometry
    ind = " " * 32
    if sw == 1:
        copy = [f"{ind}q = lo",
                f"{ind}while q + {w} <= hi:",
                f"{ind}    vstore{w}(sb, zj + q, vload{w}(xb, xj + q))",
                f"{ind}    q += {w}",
                f"{ind}if q < hi:",  # a whole vector stored: the lanes past ``hi`` are rewritten after it
                f"{ind}    vstore{w}(sb, zj + q, vloadn{w}(xb, xj + q, hi - q))"]
    else:
        copy = [f"{ind}for q in range(lo, hi):", f"{ind}    sb[U(zj + q)] = xb[U(xj + q * {sw})]"]
    return ", CI, H, Win, OW, ZS", [
        f"                r = kc // {kw}",  # the chunk's first kernel row (ci, i)
        f"                ci = r // {kh}",
        f"                i = r - ci * {kh}",
        f"                while r * {kw} < kce:",
        f"                    zr = so + (r * {kw} - kc) * ZS - pb",
        "                    p = pb",
        "                    while p < pe:",
        "                        oh = p // OW",
        "                        ow0 = p - oh * OW",
        "                        ow1 = min(OW, ow0 + pe - p)",
        "                        zq = zr + p - ow0",  # column ow of this output row's run at zq + ow
        f"                        ih = oh * {sh} - {ph} + i * {dh}",
        "                        if ih < 0 or ih >= H:",
        f"                            for j in range({kw}):",
        "                                for q in range(ow0, ow1):",
        "                                    sb[U(zq + j * ZS + q)] = np.float32(0.0)",
        "                        else:",
        f"                            xr = xo + ((n * CI + ci) * H + ih) * Win - {pw}",
        f"                            for j in range({kw}):",
        f"                                lo = min(ow1, max(ow0, -((j * {dw} - {pw}) // {sw})))",
        f"                                hi = max(lo, min(ow1, -((j * {dw} - {pw} - Win) // {sw})))",
        "                                zj = zq + j * ZS",
        f"                                xj = xr + j * {dw}",
        "                                for q in range(ow0, lo):",
        "                                    sb[U(zj + q)] = np.float32(0.0)",
        *copy,
        "                                for q in range(hi, ow1):",
        "                                    sb[U(zj + q)] = np.float32(0.0)",
        "                        p += ow1 - ow0",
        "                    r += 1",
        "                    i += 1",
        f"                    if i == {kh}:",
        "                        i = 0",
        "                        ci += 1",
    ]


def im2col_bands_applies(node: Node, target: Target) -> bool:
    """A group-1 float32 2-D Conv with constant weights on more than one strip of output pixels (forced: that
    is all), with a kernel of at least ``MIN_TAPS`` taps, a reduction of ``MIN_CHANNELS`` taps,
    ``MIN_ROW_TILES`` register tiles of output channels, ``MIN_INPUT_CHANNELS`` input channels and column
    stride 1 (the copy's vectors; ``cblock`` keeps strided rows: 32 -> 64 9x9 stride 2 ran 0.77x here). In
    the table after ``conv1d_packed`` (one-row maps: its shifted windows need no copy) and ``im2col_packed``
    (small maps, the whole im2col at once), before ``stem_packed`` and ``cblock``."""
    x, wt, y = node.inputs[0], node.inputs[1], node.outputs[0]
    a = node.attrs
    if not (x.dtype == np.float32 and wt.dtype == np.float32 and wt.is_const and len(x.shape) == 4
            and a["group"] == 1):
        return False
    mr, nr = packed_tile(target)
    if y.shape[2] * y.shape[3] <= nr * target.vector_width:
        return False
    if target.forced.get("Conv") == "im2col_bands":
        return True
    return (int(np.prod(a["kernel_shape"])) >= MIN_TAPS and int(np.prod(wt.shape[1:])) >= MIN_CHANNELS
            and wt.shape[0] >= MIN_ROW_TILES * mr and x.shape[1] >= MIN_INPUT_CHANNELS and a["strides"][1] == 1)


@variant("Conv", name="im2col_bands", priority=23, applies=im2col_bands_applies)
def gen_im2col_bands(node: Node, target: Target) -> list[KernelCall]:
    """One call for the batch (or a part's pixels: ``meta["part"]``); the scratch holds one chunk panel."""
    x, wt, bias, y = conv_operands(node)
    N, CI, H, Win = x.shape
    M, K = wt.shape[0], int(np.prod(wt.shape[1:]))
    OH, OW = y.shape[2:]
    a = node.attrs
    kh, kw = a["kernel_shape"]
    mr, nr = packed_tile(target)
    w = target.vector_width
    geometry = (kh, kw, *a["strides"], a["pads"][0], a["pads"][1], *a["dilations"])
    pixels = node_part(node)
    src, extra = packed_pointwise_source(node, w, mr, nr, M % mr, registers=target.vector_registers,
                                         pixel_range=pixels is not None, kchunk=True,
                                         band=band_lines(geometry, w))
    packed = pack_weights(wt.const.reshape(M, K), mr)
    pb, zs, rg, kc = band_blocking(K, kw, M, OH * OW, nr * w, mr)
    return [KernelCall(src, [x, Param(packed), bias, y, Scratch(kc * zs), N, K, M, OH * OW, pb, rg, kc,
                             *(pixels or ()), CI, H, Win, OW, zs, *extra], note(node))]


@part_space("Conv", "im2col_bands")
def bands_part_space(node: Node, target: Target) -> tuple[int, int]:
    """Output pixels, in whole strips: a part's strips are the whole layer's (the same sums)."""
    return int(np.prod(node.outputs[0].shape[2:], dtype=np.int64)), packed_tile(target)[1] * target.vector_width
