"""MatMulInteger with a constant B on packed 16-bit column panels (``packed_matmul_i16``), and the 1x1
ConvInteger with its constant weights on the left (``pointwise_i16``, at the end of this file).

``Y (M x N, int32) = (A - a_zero_point) @ (B - b_zero_point)`` for 8-bit A and a constant 8-bit B: what
onnxruntime's ``quantize_dynamic`` writes for a classifier (``DynamicQuantizeLinear -> MatMulInteger -> Cast
-> Mul(scale) -> Add(bias)``, the CRNN's 1024 x 8210 head). Both operands minus their zero points fit 16 bits
([-255, 255]), so the products meet in pairs of k in one ``ivmaddw`` (``vpmaddwd`` + ``vpaddd`` on AVX2, one
``vpdpwssd`` with AVX512-VNNI) exactly: every pair sum is below 2 * 255 * 255 and the int32 accumulator wraps
like ONNX's int32 arithmetic.

Why: run as a float GEMM (``integer_to_float``) the weights take 4 bytes each (the CRNN head's 33 MB miss the
last-level cache, and each run streams them from DRAM); as ``int16`` pairs they take half of that, and a
``vpmaddwd`` does 16 multiply-adds where an FMA does 8. B is packed at compile time as ``ceil(N / NC)`` panels
of ``NC = nr * n`` columns, ``[K / 2][NC][2]`` each (zero pads past ``K`` and ``N``); A's rows minus its zero
point are widened once per call into a 16-bit scratch row block. A register tile is ``mr`` rows by ``nr``
vectors; each step over a pair of k loads ``nr`` panel vectors (one sequential stream) and broadcasts the
pair of each row.
"""

from __future__ import annotations

import numpy as np

from cnnjit.ir import Node

from ...passes.integer_to_float import int16_matmul_fits, int16_pointwise_fits
from ..kernel import KernelCall, Param, Scratch, Target, note, variant
from .template import source

#: vectors per tile row (two chains per row at least; the rows add the rest)
NR = 2
#: at most this many rows per tile
MR_MAX = 8


def tile(M: int, registers: int) -> tuple[int, int]:
    """``(mr, nr)``: ``mr * nr`` accumulators + ``nr`` panel vectors + one broadcast within ``registers``;
    among the row counts that fit, the one that wastes fewest rows of ``M`` (ties: the larger)."""
    top = max(1, min(MR_MAX, (registers - NR - 1) // NR, M))
    mr = min(range(1, top + 1), key=lambda r: (-(-M // r) * r - M, -r))
    return mr, NR


def pack_i16(b: np.ndarray, zb: np.ndarray, nc: int) -> np.ndarray:
    """``(b - zb)`` ``[K, N]`` as int16 panels ``[N / nc][K / 2][nc][2]`` (zeros past ``K`` and ``N``), flat."""
    K, N = b.shape
    K2, npan = -(-K // 2), -(-N // nc)
    d = np.zeros((2 * K2, npan * nc), np.int16)
    d[:K, :N] = b.astype(np.int16) - np.broadcast_to(zb.astype(np.int16).reshape(1, -1), (1, N))
    return np.ascontiguousarray(d.reshape(K2, 2, npan, nc).transpose(2, 0, 3, 1)).reshape(-1)


def madd_step(ind: str, n: int, mr: int, nr: int, vec, pair, dot: bool = False, load: str = "ivload") -> list[str]:
    """One step over a pair of k of an ``mr`` x ``nr`` tile of i32 accumulators ``c{i}_{h}``: the ``nr``
    vectors ``v{h}`` loaded from ``vec(h)`` (``"buffer, index"``) by ``load`` (``ivloadsx``: int8 widened to
    the int16 pairs), each row's i32 pair broadcast from ``pair(i)`` into ``ivmaddw`` with every vector
    (``dot``: four k of uint8 vectors by int8 broadcasts into ``ivdotsat``)."""
    lines = [f"{ind}v{h} = {load}{n}({vec(h)})" for h in range(nr)]
    for i in range(mr):
        lines.append(f"{ind}x = ivbcast4_{n}({pair(i)})")
        lines += [f"{ind}c{i}_{h} = ivdotsat{n}(c{i}_{h}, v{h}, x)" if dot else
                  f"{ind}c{i}_{h} = ivmaddw{n}(c{i}_{h}, x, v{h})" for h in range(nr)]
    return lines


def _tile(ind: str, n: int, mr: int, nr: int, vec: tuple[str, str], pair: tuple[str, str], row: str,
          left: str, dot: bool = False, fix: str = "") -> list[str]:
    """The body of a step over one pair of k (inside its loop, at ``ind`` + 4) and the tile's stores (at
    ``ind``): ``nr`` vectors from ``vec`` = (buffer, offset), for each of the ``mr`` rows the i32 pair from
    ``pair`` (offset with ``{i}`` for the row) broadcast into ``ivmaddw`` (``dot``: ``madd_step``'s four bytes
    of k into ``ivdotsat``); ``fix`` (with ``{i}``), an i32 added to every lane of row ``i`` before it is
    stored; row ``i`` is stored at ``row`` (with ``{i}``) if ``m + i < M``, whole vectors while ``left``
    columns remain, the last one masked."""
    lines = madd_step(ind + "    ", n, mr, nr, lambda h: f"{vec[0]}, {vec[1]} + {(4 if dot else 2) * n * h}",
                      lambda i: f"{pair[0]}, {pair[1].format(i=i)}", dot)
    if fix:
        for i in range(mr):
            lines.append(f"{ind}zc = ivset{n}({fix.format(i=i)})")
            lines += [f"{ind}c{i}_{h} = ivadd{n}(c{i}_{h}, zc)" for h in range(nr)]
    for i in range(mr):
        lines.append(f"{ind}if m + {i} < M:")
        for h in range(nr):
            at = f"{row.format(i=i)} + {h * n}"
            lines += [f"{ind}    if {left} >= {(h + 1) * n}:", f"{ind}        ivstore{n}(yb, {at}, c{i}_{h})",
                      f"{ind}    elif {left} > {h * n}:",
                      f"{ind}        ivstoreb{n}(yb, {at}, c{i}_{h}, 4 * ({left} - {h * n}))"]
    return lines


def i16_source(n: int, mr: int, nr: int) -> str:
    """The kernel for vector width ``n`` and a tile of ``mr`` rows by ``nr`` vectors."""
    nc = nr * n
    lines = ["def kernel(ab, ao, azb, azo, bb, bo, yb, yo, M, K, N, K2, sb, so):",
             "    za = np.int32(azb[azo])",
             "    for m in range(M):",
             "        r = m * 2 * K2",
             "        for k in range(K):",
             "            sb[so + r + k] = np.int16(np.int32(ab[U(ao + m * K + k)]) - za)",
             "        for k in range(K, 2 * K2):",
             "            sb[so + r + k] = np.int16(0)",
             f"    NT = (M + {mr - 1}) // {mr}",
             f"    for j in range((N + {nc - 1}) // {nc}):",
             f"        p = j * {nc}",
             f"        pan = bo + j * K2 * {2 * nc}",
             f"        for m in range(0, M, {mr}):"]
    ind = " " * 12
    lines += [f"{ind}r{i} = so + min(m + {i}, M - 1) * 2 * K2" for i in range(mr)]
    lines += [f"{ind}c{i}_{h} = ivzero{n}()" for i in range(mr) for h in range(nr)]
    lines += [f"{ind}pf = pan + K2 * {2 * nc} + (m // {mr}) * ((K2 * {2 * nc}) // NT)",
              f"{ind}for k in range(K2):", f"{ind}    bi = pan + k * {2 * nc}"]
    # this row tile's share of the next panel (32 int16 = one cache line), prefetched while this one runs (as
    # ``packed_gemm``: a B past the last-level cache streams from DRAM at the rate the multiply-adds use it)
    lines += [f"{ind}    prefetch(bb, pf + (k * {2 * nc}) // NT + {32 * i})" for i in range(-(-2 * nc // 32))]
    lines += _tile(ind, n, mr, nr, ("bb", "bi"), ("sb", "r{i} + 2 * k"), "yo + (m + {i}) * N + p", "N - p")
    return source(lines)


@variant("MatMulInteger", name="packed_matmul_i16", priority=10, applies=lambda node, t: int16_matmul_fits(node))
def gen_packed_matmul_i16(node: Node, target: Target) -> list[KernelCall]:
    """The packed int16 panels and one call over all rows of A."""
    A, B, az = node.inputs[:3]
    bz = node.inputs[3] if len(node.inputs) > 3 else None
    M, K = (int(d) for d in A.shape)
    N = int(B.shape[1])
    n = target.int_width
    mr, nr = tile(M, target.vector_registers)
    zb = np.zeros(1, np.int16) if bz is None else np.asarray(bz.const).reshape(-1)
    K2 = -(-K // 2)
    packed = pack_i16(np.asarray(B.const), zb, nr * n)
    args = [A, az, Param(packed), node.outputs[0], M, K, N, K2, Scratch(M * 2 * K2, np.dtype(np.int16))]
    return [KernelCall(i16_source(n, mr, nr), args, note(node))]


# -- 1x1 ConvInteger: the constant weights on the left ---------------------------------------------------------
def pack_w16(w: np.ndarray, wz: np.ndarray) -> np.ndarray:
    """``(w - wz)`` ``[M, C]`` as int16 ``[M][C / 2][2]`` (a zero past ``C``), flat: one i32 broadcast per
    output channel and pair of input channels."""
    M, C = w.shape
    d = np.zeros((M, 2 * -(-C // 2)), np.int16)
    d[:, :C] = w.astype(np.int16) - wz.astype(np.int16).reshape(-1, 1)
    return d.reshape(-1)


def pointwise_i16_source(n: int, mr: int, nr: int) -> str:
    """``Y[b, m, p] = sum_c (W[m, c] - wz[m]) (X[b, c, p] - xz)``: per image, X less its zero point is
    repacked once into channel pairs ``[C / 2][PP][2]`` int16 (pixels padded to whole tiles with zeros), then a
    tile of ``mr`` output channels by ``nr`` vectors of ``n`` pixels broadcasts each channel's weight pair
    against the pixel vectors' pairs (``ivmaddw``)."""
    lines = ["def kernel(xb, xo, xzb, xzo, wb, wo, yb, yo, NB, C, P, M, C2, PP, sb, so):",
             "    za = np.int32(xzb[xzo])",
             "    for bi in range(NB):",
             "        x0 = xo + bi * C * P",
             "        for c2 in range(C2):",
             "            r = so + c2 * PP * 2",
             "            for p in range(P):",
             "                sb[r + 2 * p] = np.int16(np.int32(xb[U(x0 + 2 * c2 * P + p)]) - za)",
             "                sb[r + 2 * p + 1] = np.int16(np.int32(xb[U(x0 + (2 * c2 + 1) * P + p)]) - za) "
             "if 2 * c2 + 1 < C else np.int16(0)",
             "            for p in range(P, PP):",
             "                sb[r + 2 * p] = np.int16(0)",
             "                sb[r + 2 * p + 1] = np.int16(0)"]
    return source(lines + _pointwise_tiles(n, mr, nr, 2))


def _pointwise_tiles(n: int, mr: int, nr: int, g: int, fix: str = "") -> list[str]:
    """The pointwise kernels' loops over tiles of ``mr`` output channels by ``nr`` vectors of ``n`` pixels,
    reading the repacked input ``[C / g][PP][g]`` (``g`` = 2: int16 pairs into ``ivmaddw``; 4: bytes into
    ``ivdotsat``) and the weights ``[M][C / g][g]``; ``fix`` as ``_tile``'s."""
    lines = [f"        for m in range(0, M, {mr}):"]
    ind = " " * 12
    lines += [f"{ind}w{i} = wo + min(m + {i}, M - 1) * {g} * C{g}" for i in range(mr)]
    lines += [f"{ind}for p0 in range(0, P, {nr * n}):"]
    ind2 = ind + "    "
    lines += [f"{ind2}c{i}_{h} = ivzero{n}()" for i in range(mr) for h in range(nr)]
    lines += [f"{ind2}for c{g} in range(C{g}):", f"{ind2}    xi = so + (c{g} * PP + p0) * {g}"]
    return lines + _tile(ind2, n, mr, nr, ("sb", "xi"), ("wb", f"w{{i}} + {g} * c{g}"),
                         "yo + (bi * M + m + {i}) * P + p0", "P - p0", dot=g == 4, fix=fix)


def _pointwise_sizes(node: Node, pt: int, g: int) -> tuple[int, ...]:
    """A 1x1 ConvInteger's images, channels, pixels, output channels, pixels padded to whole tiles of ``pt``
    and channel groups of ``g``."""
    x, w = node.inputs[:2]
    C, P = int(x.shape[1]), int(np.prod(x.shape[2:], dtype=np.int64))
    return int(x.shape[0]), C, P, int(w.shape[0]), -(-P // pt) * pt, -(-C // g)


@variant("ConvInteger", name="pointwise_i16", priority=10, applies=lambda node, t: int16_pointwise_fits(node))
def gen_pointwise_i16(node: Node, target: Target) -> list[KernelCall]:
    """The packed int16 weights and one call over every image."""
    x, w, xz, wz = node.inputs
    n = target.int_width
    mr, nr = tile(int(w.shape[0]), target.vector_registers)
    NB, C, P, M, PP, C2 = _pointwise_sizes(node, nr * n, 2)
    wq = np.asarray(w.const).reshape(M, C)
    args = [x, xz, Param(pack_w16(wq, np.broadcast_to(np.asarray(wz.const).reshape(-1), (M,)))), node.outputs[0],
            NB, C, P, M, C2, PP, Scratch(C2 * PP * 2, np.dtype(np.int16))]
    return [KernelCall(pointwise_i16_source(n, mr, nr), args, note(node))]


# -- 1x1 ConvInteger as onnxruntime computes it on x86 without VNNI (DynamicQuantizeLSTM's projection) -------
def pack_w8(w: np.ndarray) -> np.ndarray:
    """int8 ``w [M, C]`` as ``[M][C / 4][4]`` (zeros past ``C``), flat: one i32 broadcast per output channel
    and group of four input channels."""
    M, C = w.shape
    d = np.zeros((M, 4 * -(-C // 4)), np.int8)
    d[:, :C] = w
    return d.reshape(-1)


def pointwise_u8s8_source(n: int, mr: int, nr: int) -> str:
    """``Y[b, m, p] = sum_i sat16(X[2i] W[m, 2i] + X[2i+1] W[m, 2i+1]) - xz * sum_c W[m, c]`` over the raw
    uint8 ``X[b, :, p]`` (``ir.ops.quant.saturating_pointwise``): per image, X is repacked once into groups of
    four channels ``[C / 4][PP][4]`` bytes (pixels padded to whole tiles, channels past ``C`` with zeros), then
    a tile of ``mr`` output channels by ``nr`` vectors of ``n`` pixels meets each channel's four weight bytes,
    broadcast, in ``ivdotsat`` (x86 AVX2: ``vpmaddubsw`` + ``vpmaddwd``, 32 multiply-adds in three
    instructions where the exact int16 pairs of ``pointwise_i16`` take four); ``cb`` holds ``sum_c W``."""
    lines = ["def kernel(xb, xo, xzb, xzo, wb, wo, cb, co, yb, yo, NB, C, P, M, C4, PP, sb, so):",
             "    za = np.int32(xzb[xzo])",
             "    for bi in range(NB):",
             "        x0 = xo + bi * C * P",
             "        for c4 in range(C4):",
             "            r = so + c4 * PP * 4",
             "            for j in range(4):",
             "                c = 4 * c4 + j",
             "                for p in range(P):",
             "                    sb[r + 4 * p + j] = xb[U(x0 + c * P + p)] if c < C else np.uint8(0)",
             "                for p in range(P, PP):",
             "                    sb[r + 4 * p + j] = np.uint8(0)"]
    return source(lines + _pointwise_tiles(n, mr, nr, 4, "-za * np.int32(cb[co + min(m + {i}, M - 1)])"))


def saturating_pointwise_fits(node: Node) -> bool:
    """A ``saturate`` 1x1 ConvInteger (uint8 x, int8 weights with a zero point of 0, constant, one x zero
    point): what ``pointwise_u8s8`` computes (the IR checks the rest)."""
    if node.op != "ConvInteger" or not node.attrs.get("saturate"):
        return False
    x, w, xz, wz = node.inputs
    return (w.is_const and wz.is_const and not np.any(np.asarray(wz.const)) and xz.type.size == 1
            and x.dtype == np.uint8 and w.dtype == np.int8)


#: three accumulator rows: a ``vpmaddubsw`` and a ``vpmaddwd`` result and the constant ones of the pair sum
#: need registers too (``tile``'s rows for the int16 pairs spilled here)
U8S8_MR = 4


@variant("ConvInteger", name="pointwise_u8s8", priority=5, applies=lambda node, t: saturating_pointwise_fits(node))
def gen_pointwise_u8s8(node: Node, target: Target) -> list[KernelCall]:
    """The packed int8 weights, their row sums and one call over every image."""
    x, w, xz, _ = node.inputs
    n = target.int_width
    mr, nr = min(U8S8_MR, int(w.shape[0])), NR
    NB, C, P, M, PP, C4 = _pointwise_sizes(node, nr * n, 4)
    wq = np.asarray(w.const).reshape(M, C)
    args = [x, xz, Param(pack_w8(wq)), Param(wq.astype(np.int32).sum(1).astype(np.int32)), node.outputs[0],
            NB, C, P, M, C4, PP, Scratch(C4 * PP * 4, np.dtype(np.uint8))]
    return [KernelCall(pointwise_u8s8_source(n, mr, nr), args, note(node))]


# -- the same 1x1 on a few pixels: output channels as the lanes (a recurrent layer's projection at one step) --
#: pixels per register tile of ``channel_u8s8`` (two accumulator vectors each: 8 + the two weight vectors, the
#: broadcast and ``ivdotsat``'s temporaries within AVX2's 16 registers)
CHANNEL_U8S8_PR = 4


def pixel_lane_fill(P: int, pt: int) -> float:
    """The share of useful lanes of ``pointwise_u8s8``'s pixel vectors on ``P`` pixels in tiles of ``pt``."""
    return P / (-(-P // pt) * pt)


def channel_lanes_fit(node: Node, target: Target) -> bool:
    """``channel_u8s8`` applies: what ``pointwise_u8s8`` takes, on maps where output channels fill the
    vector lanes better than pixels do (a streaming LSTM's projection at one step: 1 pixel, 1/16 of each
    pixel vector used) and that are at most ``CHANNEL_U8S8_PR`` register tiles of pixels (each tile streams
    all the weights once)."""
    if not saturating_pointwise_fits(node):
        return False
    x, w = node.inputs[:2]
    P = int(np.prod(x.shape[2:], dtype=np.int64))
    bw = NR * target.int_width
    M = int(w.shape[0])
    return (P * int(x.shape[0]) <= CHANNEL_U8S8_PR * CHANNEL_U8S8_PR
            and M / (-(-M // bw) * bw) > pixel_lane_fill(P, bw))


def pack_w8_lanes(w: np.ndarray, bw: int) -> np.ndarray:
    """int8 ``w [M, C]`` as ``[M / bw][C / 4][bw][4]`` (zeros past ``M`` and ``C``), flat: per block of ``bw``
    output channels and group of four input channels, one run of ``bw`` channels' four bytes."""
    M, C = w.shape
    nb, C4 = -(-M // bw), -(-C // 4)
    d = np.zeros((nb * bw, C4 * 4), np.int8)
    d[:M, :C] = w
    return np.ascontiguousarray(d.reshape(nb, bw, C4, 4).transpose(0, 2, 1, 3)).reshape(-1)


def channel_u8s8_source(n: int, pr: int) -> str:
    """``pointwise_u8s8``'s sums with output channels as the lanes: X repacked pixel-major (``[NB * P][C / 4]
    [4]`` bytes), then per block of ``2n`` output channels and tile of ``pr`` pixels, each step over four
    input channels loads the block's two weight vectors (``pack_w8_lanes``: one sequential stream) and
    broadcasts each pixel's four bytes into ``ivdotsat`` (the same pair sums, saturated the same way); the
    block's ``-xz * sum_c W`` is added as one vector; a one-pixel map stores the lanes as a run, others
    through ``tb`` (lane ``m`` is output element ``m * P``)."""
    bw = 2 * n
    lines = ["def kernel(xb, xo, xzb, xzo, wb, wo, cb, co, yb, yo, NB, C, P, M, C4, sb, so, tb, to):",
             "    za = np.int32(xzb[xzo])",
             "    NP = NB * P",
             "    for bi in range(NB):",
             "        for c in range(C4 * 4):",
             "            for p in range(P):",
             "                sb[so + (bi * P + p) * C4 * 4 + c] = xb[U(xo + (bi * C + c) * P + p)] if c < C "
             "else np.uint8(0)",
             f"    for m0 in range(0, M, {bw}):",
             f"        cnt = min({bw}, M - m0)",
             "        wp = wo + m0 * C4 * 4",
             f"        zf0 = ivmul{n}(ivset{n}(-za), ivload{n}(cb, co + m0))",
             f"        zf1 = ivmul{n}(ivset{n}(-za), ivload{n}(cb, co + m0 + {n}))",
             f"        for q0 in range(0, NP, {pr}):"]
    ind = " " * 12
    lines += [f"{ind}c{i}_{v} = ivzero{n}()" for i in range(pr) for v in (0, 1)]
    lines += [f"{ind}x{i} = so + min(q0 + {i}, NP - 1) * C4 * 4" for i in range(pr)]
    lines += [f"{ind}for c4 in range(C4):", f"{ind}    wi = wp + c4 * {4 * bw}",
              f"{ind}    v0 = ivload{n}(wb, wi)", f"{ind}    v1 = ivload{n}(wb, wi + {4 * n})"]
    for i in range(pr):
        lines += [f"{ind}    x = ivbcast4_{n}(sb, x{i} + 4 * c4)",
                  f"{ind}    c{i}_0 = ivdotsat{n}(c{i}_0, x, v0)", f"{ind}    c{i}_1 = ivdotsat{n}(c{i}_1, x, v1)"]
    for i in range(pr):
        lines += [f"{ind}if q0 + {i} < NP:",
                  f"{ind}    c{i}_0 = ivadd{n}(c{i}_0, zf0)", f"{ind}    c{i}_1 = ivadd{n}(c{i}_1, zf1)",
                  f"{ind}    bq = (q0 + {i}) // P",
                  f"{ind}    at = yo + (bq * M + m0) * P + (q0 + {i}) - bq * P",
                  f"{ind}    if P == 1 and cnt == {bw}:",
                  f"{ind}        ivstore{n}(yb, at, c{i}_0)", f"{ind}        ivstore{n}(yb, at + {n}, c{i}_1)",
                  f"{ind}    else:",
                  f"{ind}        ivstore{n}(tb, to, c{i}_0)", f"{ind}        ivstore{n}(tb, to + {n}, c{i}_1)",
                  f"{ind}        for ln in range(cnt):", f"{ind}            yb[U(at + ln * P)] = tb[to + ln]"]
    return source(lines)


@variant("ConvInteger", name="channel_u8s8", priority=4, applies=channel_lanes_fit)
def gen_channel_u8s8(node: Node, target: Target) -> list[KernelCall]:
    """The int8 weights packed by blocks of output channels, their row sums (zero past ``M``) and one call."""
    x, w, xz, _ = node.inputs
    n = target.int_width
    bw = NR * n
    NB, C, P, M, _, C4 = _pointwise_sizes(node, 1, 4)
    wq = np.asarray(w.const).reshape(M, C)
    rows = np.zeros(-(-M // bw) * bw, np.int32)
    rows[:M] = wq.astype(np.int32).sum(1)
    args = [x, xz, Param(pack_w8_lanes(wq, bw)), Param(rows), node.outputs[0], NB, C, P, M, C4,
            Scratch(NB * P * C4 * 4, np.dtype(np.uint8)), Scratch(bw, np.dtype(np.int32))]
    return [KernelCall(channel_u8s8_source(n, min(CHANNEL_U8S8_PR, NB * P)), args, note(node))]
