"""Stem convolution: few input channels (1-4), a small filter, stride 1 or 2, on long rows (plain NCHW).

A network's first layer reduces over only ``C * KH * KW`` taps (3 x 3 x 3 = 27), so ``simd_conv``'s tile,
which loads (stride 2: de-interleaves) a tap's input vector and meets it with ``MR`` broadcast weights
before the next tap, spends as much on loads, shuffles and its per-row tap loops as on FMAs (ddddocr's
1->24 stride-2 stem: 39 GFLOP/s, ResNet-8's 3->16: 52). Here each block of an output row is first laid out
as a small patch matrix ``P[tap][pixel]`` in scratch (one de-interleaving load per tap and vector of
pixels, the taps outside the input zero), and the layer becomes a GEMM ``Y[M][pixels] = W[M][taps] @ P``:
a register tile of ``MR`` output channels by ``NR`` pixel vectors (``stem_tile``: 4 x 3 on AVX2, 8 x 3 on
AVX-512), each tap one contiguous load per pixel vector and one broadcast weight per channel, with the
bias, the fused epilogue (activations, residual Add) in registers and plain vector stores (output pixels
are contiguous: no scatter, unlike ``cblock``). The block is as many pixels as keep ``P`` within
``PATCH_BYTES`` (a share of L1), so the patches are written and read back in L1.
"""

from __future__ import annotations

import numpy as np

from cnnjit.ir import Node

from ..kernel import KernelCall, Param, Scratch, Target, note, variant
from ..parts import node_part, part_space
from .epilogue import Epilogue
from .simd_pointwise import conv_operands, conv_sizes, row_load
from .template import source

#: the most input channels and taps (input channels x kernel taps) a stem layer reduces over
MAX_CHANNELS = 4
MAX_DEPTH = 64
#: bytes of one block's patch matrix (taps x block pixels): half of a 32 KiB L1 data cache
PATCH_BYTES = 16 * 1024
#: the widest register tile row (pixel vectors) tried
MAX_VECTORS = 4


def stem_tile(target: Target, m: int, ow: int) -> tuple[int, int]:
    """(MR, NR): output channels (dividing ``m``) by pixel vectors per register tile.

    The most accumulators ``MR * NR`` that fit beside the ``NR`` pixel vectors and one broadcast weight in
    ``vector_registers`` (AVX2: 12 of 16, AVX-512: 24 of 32), no more pixel vectors than the row has; among
    those, the fewest loads per FMA (``(MR + NR) / (MR * NR)``), then the fewer pixel vectors (a row's whole
    vectors past its last tile run as one narrower tile)."""
    w, regs = target.vector_width, target.vector_registers
    most_nr = max(1, min(MAX_VECTORS, -(-ow // w)))
    cands = [(mr, nr) for nr in range(1, most_nr + 1) for mr in range(1, 17)
             if m % mr == 0 and mr * nr + nr + 1 <= regs]
    if not cands:
        return 1, 1
    return max(cands, key=lambda t: (t[0] * t[1], -(t[0] + t[1]) / (t[0] * t[1]), -t[1]))


def block_pixels(depth: int, lanes: int) -> int:
    """Output pixels per block: a multiple of the register tile's ``lanes`` whose patch matrix
    (``depth`` taps) fits ``PATCH_BYTES``, at least one tile."""
    return max(lanes, PATCH_BYTES // (4 * depth) // lanes * lanes)


def stem_source(node: Node, w: int, mr: int, nr: int, cb: int, part: bool = False) -> tuple[str, list]:
    """The kernel for ``node`` at ``w`` lanes: ``mr`` channels x ``nr`` vectors per register tile, blocks of
    ``cb`` output pixels; specialised to the layer's channels, kernel, strides, dilations and pads. ``part``:
    output rows ``r0 <= oh < r1`` only (two more arguments; a part of a layer split over threads by rows,
    ``stem_part_space``)."""
    x = node.inputs[0]
    a = node.attrs
    C = x.shape[1]
    KH, KW = a["kernel_shape"]
    sw, dw, pw = a["strides"][1], a["dilations"][1], a["pads"][1]
    depth = C * KH * KW
    lanes = nr * w
    epi = Epilogue(node, w, True)
    lo, hi = "max(0, -iw0)", f"min({w if sw == 1 else 2 * w - 1}, Win - iw0)"
    fast, fast_ok, edge = row_load(w, sw, lanes=(lo, hi))

    def tile(ind: str, n_vec: int, masked: bool) -> list[str]:
        """``n_vec`` pixel vectors from ``ow0`` (``masked``: one vector, its first ``cnt`` lanes stored)."""
        acc = [[f"a{i}_{j}" for j in range(n_vec)] for i in range(mr)]
        out = [f"{ind}{acc[i][j]} = vbcast{w}(bb[bo + m + {i}])" for i in range(mr) for j in range(n_vec)]
        out += [f"{ind}for t in range({depth}):",
                f"{ind}    pt = zo + t * {cb} + ow0 - b0",
                f"{ind}    wt = wm + t * {mr}",
                *[f"{ind}    x{j} = vload{w}(zb, pt + {j * w})" for j in range(n_vec)]]
        for i in range(mr):
            out.append(f"{ind}    wv = vbcast{w}(wb[U(wt + {i})])")
            out += [f"{ind}    {acc[i][j]} = vfma{w}(wv, x{j}, {acc[i][j]})" for j in range(n_vec)]
        for i in range(mr):
            for j in range(n_vec):
                idx = f"((n * M + m + {i}) * OH + oh) * OW + ow0 + {j * w}"
                out += epi.vector(ind, acc[i][j], idx, w, masked)
                out.append(f"{ind}vstoren{w}(yb, yo + {idx}, {acc[i][j]}, cnt)" if masked
                           else f"{ind}vstore{w}(yb, yo + {idx}, {acc[i][j]})")
        count = "cnt" if masked else str(n_vec * w)
        return out + epi.after(ind, [f"for i in range({mr}):", f"for j in range({count}):"],
                               "((n * M + m + i) * OH + oh) * OW + ow0 + j")

    i16, i20, i24 = " " * 16, " " * 20, " " * 24
    L = [
        "def kernel(xb, xo, wb, wo, bb, bo, yb, yo, zb, zo, N, H, Win, M, OH, OW, sh, ph, dh"
        + (", r0, r1" if part else "") + epi.signature() + "):",
        "    for n in range(N):",
        f"        for oh in range({'r0, r1' if part else 'OH'}):",
        f"            for b0 in range(0, OW, {cb}):",
        f"                be = min(OW, b0 + {cb})",
        # 1. the block's patch matrix: tap (c, kh, kw) at zb[zo + tap * cb + pixel - b0]; taps outside zero
        f"                for c in range({C}):",
        f"                    for kh in range({KH}):",
        "                        ih = oh * sh + kh * dh - ph",
        "                        xrow = xo + ((n * " + str(C) + " + c) * H + ih) * Win",
        f"                        pr = zo + (c * {KH} + kh) * {KW * cb} - b0",
        "                        if ih < 0 or ih >= H:",
        f"                            for ow0 in range(b0, be, {w}):",
        *[f"{i16}                vstore{w}(zb, pr + {kw * cb} + ow0, vzero{w}())" for kw in range(KW)],
        "                            continue",
        f"                        for ow0 in range(b0, be, {w}):",
    ]
    for kw in range(KW):
        L += [f"{i24}    iw0 = ow0 * {sw} + {kw * dw - pw}",
              f"{i24}    if {fast_ok}:", f"{i24}        xv = {fast}",
              f"{i24}    else:", f"{i24}        xv = {edge}",
              f"{i24}    vstore{w}(zb, pr + {kw * cb} + ow0, xv)"]
    # 2. the GEMM over the block: whole tiles of nr vectors; the k < nr whole vectors left as one k-vector tile
    # (one-vector tiles' MR accumulators left the FMA pipes waiting on their latency: MobileNetV2's 3->32
    # stride 2, 112-pixel rows of four 4 x 3 tiles and 2 vectors, 4-5% faster alone; of the ifs at most one
    # runs), then the masked last vector
    L += [f"{i16}for m in range(0, M, {mr}):",
          f"{i20}wm = wo + m * {depth}",
          f"{i20}ow0 = b0",
          f"{i20}while ow0 + {lanes} <= be:",
          *tile(i24, nr, False),
          f"{i24}ow0 += {lanes}"]
    for k in range(nr - 1, 0, -1):
        L += [f"{i20}if ow0 + {k * w} <= be:", *tile(i24, k, False), f"{i24}ow0 += {k * w}"]
    L += [f"{i20}if ow0 < be:",
          f"{i24}cnt = be - ow0",
          *tile(i24, 1, True)]
    return source(L), epi.args


def stem_layer(node: Node, target: Target, channels: int, depth: int) -> bool:
    """A dense (group 1) 2-D float32 Conv with constant weights, at most ``channels`` input channels and
    ``depth`` taps, a kernel wider or taller than 1 and output rows of at least one pixel vector."""
    x, wt = node.inputs[0], node.inputs[1]
    a = node.attrs
    if x.dtype != np.float32 or wt.dtype != np.float32 or not wt.is_const or len(x.shape) != 4:
        return False
    C, (KH, KW) = x.shape[1], a["kernel_shape"]
    return (a["group"] == 1 and C <= channels and C * KH * KW <= depth and KH * KW > 1
            and node.outputs[0].shape[3] >= target.vector_width)


def stem_applies(node: Node, target: Target) -> bool:
    """A dense (group 1) 2-D float32 Conv with constant weights, at most ``MAX_CHANNELS`` input channels
    and ``MAX_DEPTH`` taps, a kernel wider or taller than 1, a column stride of 1 or 2, and output rows of at
    least one pixel vector.

    Measured against ``simd_conv`` (AVX2, per-call times interleaved, best of 20-30): ResNet-8's 3->16 at
    32x32 11.7 against 16.9 us, ddddocr's 1->24 stride 2 at 64x256 24.7 against 44.9, the PP-OCR classifier's
    3->8 stride 2 at 48x192 15.1 against 19.3, PP-OCRv4 rec's 3->16 stride 2 at 48x320 51.3 against 61.1, its
    detector's at 640x640 1.57-1.65 against 1.70-1.75 ms; LeNet's 1->6 5x5 at 28x28 even. With 16 or 32 input
    channels (ResNet's stride-2 16->32 and 32->64) it lost to ``cblock`` (38.8 against 38.0 us, 29.7 against
    26.6): hence ``MAX_CHANNELS``. On rows shorter than a vector most lanes idle: the MLPerf keyword model's
    1->64 10x4 stride 2 stem (5 output columns) ran the whole model in 96 us against 89 with ``cvec``
    (interleaved, 400 runs)."""
    return stem_layer(node, target, MAX_CHANNELS, MAX_DEPTH) and node.attrs["strides"][1] in (1, 2)


@variant("Conv", name="stem_conv", priority=58, applies=stem_applies)
def gen_stem_conv(node: Node, target: Target) -> list[KernelCall]:
    x, wt, bias, y = conv_operands(node)
    a = node.attrs
    N, C, H, Win, M, OH, OW = conv_sizes(node)
    w = target.vector_width
    mr, nr = stem_tile(target, M, OW)
    depth = C * a["kernel_shape"][0] * a["kernel_shape"][1]
    cb = block_pixels(depth, nr * w)
    # [M / mr, taps, mr]: the tile's mr weights of one tap side by side
    packed = np.ascontiguousarray(wt.const.reshape(M // mr, mr, -1).transpose(0, 2, 1), dtype=np.float32)
    rows = node_part(node)
    src, extra = stem_source(node, w, mr, nr, cb, part=rows is not None)
    args = [x, Param(packed.reshape(-1)), bias, y, Scratch(depth * cb), N, H, Win, M, OH, OW, a["strides"][0],
            a["pads"][0], a["dilations"][0], *(rows or ()), *extra]
    return [KernelCall(src, args, note(node))]


@part_space("Conv", "stem_conv")
def stem_part_space(node: Node, target: Target) -> tuple[int, int]:
    """Output rows: each row's blocks build their own patch matrices, so a band of rows repeats nothing (an
    output-channel part builds every patch again: MobileNetV2's 3 -> 32 stride-2 stem at AVX2, channel
    halves 165 + 155 us against 287 for the whole layer, parts timed one by one)."""
    return node.outputs[0].shape[2], 1
