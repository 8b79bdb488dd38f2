"""Stem convolution on a padded, phase-split copy of the input: a GEMM micro-kernel with shifted loads.

A network's first layer (1-4 input channels, 3x3 .. 7x7, stride 1 or 2: a ResNet-50 stem's 3 -> 64 7x7
stride 2 reduces over 147 taps) has few taps per output and thin input planes. ``stem_conv`` lays out a
patch matrix per block of each output row (one de-interleaving load and store per tap and pixel vector,
``depth`` of them re-done for every output row although 2/3 of the input rows were already laid out for the
row before) and picks a register tile whose rows divide the output channels (a prime count, 61, leaves
one-channel tiles); it ran the real stems at 23-48% of the FMA peak.

Here a band of output rows first gets its input rows once, as ``SH x SW`` phase planes (space-to-depth:
row phase ``py``, column phase ``px`` of every input channel, the padding written as zeros, a stride-2 row
de-interleaved once), so that tap ``(c, kh, kw)`` of output pixel ``(oh, ow)`` is plane
``(c, (kh*dh) % SH, (kw*dw) % SW)`` at row ``oh + (kh*dh) // SH``, column ``ow + (kw*dw) // SW``: every tap
of a tile is one contiguous (unaligned) load per pixel vector at a constant offset, with no border test,
mask or shuffle in the reduction. The layer is then ``Y[M][pixels] = W[M][taps] @ X``: a register tile of
``MR`` output channels by ``NR`` pixel vectors (``stem_packed_tile``: a cost model of the FMA pipes, their
latency and the loads over the whole row and every output channel, the channels past the last whole tile
one narrower tile), the taps unrolled per input channel, each tap ``NR`` loads and ``MR`` broadcast weights
(packed at compile time as ``[tile][tap][MR]``), bias and the fused epilogue in registers, plain vector
stores (output pixels are contiguous; only a row's last vector is masked). A band's planes stay in L2
(``BAND_BYTES``) while its rows are computed.
"""

from __future__ import annotations

import numpy as np

from cnnjit.ir import Node

from ..kernel import KernelCall, Param, Scratch, Target, note, variant
from ..parts import node_part, part_space
from .epilogue import Epilogue
from .simd_pointwise import conv_operands, conv_sizes
from .stem_conv import stem_layer
from .template import source

#: the most input channels and taps (input channels x kernel taps): a ResNet-50 stem's 3 x 7 x 7 = 147
MAX_CHANNELS = 4
MAX_DEPTH = 196
#: bytes of one band's phase planes (kept in L2 while the band's output rows are computed)
BAND_BYTES = 128 * 1024
#: the widest register tile row (pixel vectors) tried
MAX_VECTORS = 4
#: the most output channels per register tile
MAX_ROWS = 8
#: FMA pipes, FMA latency (cycles) and vector loads per cycle of the cost model (Zen 3 / Skylake-like cores)
FMA_PIPES, FMA_LATENCY, LOADS_PER_CYCLE = 2, 4, 2


def tile_cycles(mr: int, nr: int) -> float:
    """Cycles per tap of an ``mr x nr`` register tile: its FMAs on ``FMA_PIPES``, at least one FMA latency
    (each accumulator's chain), its ``mr`` broadcasts and ``nr`` loads at ``LOADS_PER_CYCLE``."""
    return max(mr * nr / FMA_PIPES, FMA_LATENCY, (mr + nr) / LOADS_PER_CYCLE)


def row_cost(m: int, mr: int, vectors: int, nr: int) -> float:
    """Cycles per tap of one output row of ``vectors`` pixel vectors and ``m`` channels in ``mr x nr``
    tiles: whole tiles, the ``m % mr`` channels left as narrower tiles, the ``vectors % nr`` rest as a
    narrower tile."""
    rows = [mr] * (m // mr) + ([m % mr] if m % mr else [])
    cols = [nr] * (vectors // nr) + ([vectors % nr] if vectors % nr else [])
    return sum(tile_cycles(r, c) for r in rows for c in cols)


def stem_packed_tile(target: Target, m: int, ow: int, least_share: float = 0.0) -> tuple[int, int]:
    """(MR, NR): output channels by pixel vectors per register tile for ``m`` channels on rows of ``ow``
    pixels: the cheapest ``row_cost`` among the tiles whose ``MR * NR`` accumulators fit beside the ``NR``
    pixel vectors and one broadcast weight in ``vector_registers`` (and number at least ``least_share`` of
    the most that fit); ties to the more accumulators."""
    w, regs = target.vector_width, target.vector_registers
    vectors = max(1, -(-ow // w))
    cands = [(mr, nr) for nr in range(1, min(MAX_VECTORS, vectors) + 1) for mr in range(1, min(MAX_ROWS, m) + 1)
             if mr * nr + nr + 1 <= regs]
    if not cands:
        return 1, 1
    most = max(mr * nr for mr, nr in cands)
    cands = [t for t in cands if t[0] * t[1] >= least_share * most]
    return min(cands, key=lambda t: (row_cost(m, t[0], vectors, t[1]), -t[0] * t[1], -t[1]))


def geometry(node: Node, w: int) -> dict[str, int]:
    """The layer's sizes the kernel is specialised to: strides, dilations, pads, the extra phase rows and
    columns a tap reaches past its output pixel (``EXH``, ``EXW``), a phase row's length ``WH`` (whole
    vectors covering the row's output vectors and ``EXW``), output rows per band ``RB`` and phase rows
    per band ``RH``."""
    a = node.attrs
    C = node.inputs[0].shape[1]
    KH, KW = a["kernel_shape"]
    (SH, SW), (DH, DW), (PH, PW) = a["strides"], a["dilations"], a["pads"][:2]
    OH, OW = node.outputs[0].shape[2:]
    EXH, EXW = (KH - 1) * DH // SH, (KW - 1) * DW // SW
    vectors = -(-OW // w)
    WH = -(-(vectors * w + EXW) // w) * w
    plane_row = C * SH * SW * WH * 4
    RB = max(1, min(OH, BAND_BYTES // plane_row - EXH))
    return dict(C=C, KH=KH, KW=KW, SH=SH, SW=SW, DH=DH, DW=DW, PH=PH, PW=PW, EXH=EXH, EXW=EXW, WH=WH, RB=RB,
                RH=RB + EXH, OW=OW, V=vectors)


def stem_packed_source(node: Node, w: int, mr: int, nr: int, part: bool = False) -> tuple[str, list]:
    """The kernel for ``node`` at ``w`` lanes: ``mr`` channels (the rest one narrower tile) x ``nr`` vectors
    per register tile; specialised to the layer's channels, kernel, strides, dilations, pads and widths."""
    g = geometry(node, w)
    C, KH, KW, SH, SW, DH, DW = (g[k] for k in ("C", "KH", "KW", "SH", "SW", "DH", "DW"))
    WH, RH, RB, EXH, OW, V, PW = (g[k] for k in ("WH", "RH", "RB", "EXH", "OW", "V", "PW"))
    M = node.inputs[1].shape[0]
    plane = RH * WH
    epi = Epilogue(node, w, True)
    Win = node.inputs[0].shape[3]
    last = OW - (V - 1) * w  # pixels of a row's last vector

    def tile(ind: str, rows: int, n_vec: int, masked: bool) -> list[str]:
        """``rows`` channels from ``m`` x ``n_vec`` pixel vectors from ``ow0`` (``masked``: the last vector
        is the row's last, of ``last`` pixels)."""
        acc = [[f"a{i}_{j}" for j in range(n_vec)] for i in range(rows)]
        out = [f"{ind}{acc[i][j]} = vbcast{w}(bb[bo + m + {i}])" for i in range(rows) for j in range(n_vec)]
        out += [f"{ind}for c in range({C}):",
                f"{ind}    zc = zrow + c * {SH * SW * plane} + ow0",
                f"{ind}    wt = wm + c * {KH * KW * rows}"]
        for kh in range(KH):
            for kw in range(KW):
                t = kh * KW + kw
                off = (((kh * DH) % SH * SW + (kw * DW) % SW) * plane + (kh * DH) // SH * WH + (kw * DW) // SW)
                out += [f"{ind}    x{j} = vload{w}(zb, zc + {off + j * w})" for j in range(n_vec)]
                for i in range(rows):
                    out.append(f"{ind}    wv = vbcast{w}(wb[U(wt + {t * rows + i})])")
                    out += [f"{ind}    {acc[i][j]} = vfma{w}(wv, x{j}, {acc[i][j]})" for j in range(n_vec)]
        for i in range(rows):
            for j in range(n_vec):
                mj = masked and j == n_vec - 1
                idx = f"yrow + (m + {i}) * {node.outputs[0].shape[2] * OW} + ow0 + {j * w}"
                out += epi.vector(ind, acc[i][j], idx, w, mj)
                out.append(f"{ind}vstoren{w}(yb, yo + {idx}, {acc[i][j]}, cnt)" if mj
                           else f"{ind}vstore{w}(yb, yo + {idx}, {acc[i][j]})")
        count = (n_vec - 1) * w + last if masked else n_vec * w
        return out + epi.after(ind, [f"for i in range({rows}):", f"for j in range({count}):"],
                               f"yrow + (m + i) * {node.outputs[0].shape[2] * OW} + ow0 + j")

    def row(ind: str, rows: int) -> list[str]:
        """One output row's pixel tiles for the ``rows`` channels from ``m``."""
        whole, rest = divmod(V, nr)
        masked_whole = last < w and rest == 0  # the last whole tile ends in the masked vector
        loop = whole - 1 if masked_whole else whole
        out = [f"{ind}wm = wo + m * {C * KH * KW}"]
        if loop:
            out += [f"{ind}for ow0 in range(0, {loop * nr * w}, {nr * w}):", *tile(ind + "    ", rows, nr, False)]
        if masked_whole:
            out += [f"{ind}ow0 = {loop * nr * w}", *tile(ind, rows, nr, True)]
        if rest:
            out += [f"{ind}ow0 = {whole * nr * w}", *tile(ind, rows, rest, last < w)]
        return out

    # the phase-row vectors whose every input column lies in the row (no mask): q0 in [qa, qb)
    span = w if SW == 1 else 2 * w
    fast_q = [q0 for q0 in range(0, WH, w) if all(0 <= q0 * SW + px - PW and q0 * SW + px - PW + span <= Win
                                                   for px in range(SW))]
    qa, qb = (fast_q[0], fast_q[-1] + w) if fast_q else (0, 0)
    # phase rows each row phase needs past the band's output rows
    ex = [max([(kh * DH) // SH for kh in range(KH) if (kh * DH) % SH == py], default=0) for py in range(SH)]

    def fill(ind: str, lo: str, hi: str, masked: bool) -> list[str]:
        """Phase-row vectors ``q0`` in ``range(lo, hi)`` of every column phase: all loads, then the stores."""
        out = [f"{ind}for q0 in range({lo}, {hi}, {w}):"]
        for px in range(SW):
            load = "vloadr" if SW == 1 else "vload2er"
            out += ([f"{ind}    iw0 = q0 * {SW} + {px - PW}",
                     f"{ind}    x{px} = {load}{w}(xb, xrow + iw0, max(0, -iw0), min({span - SW + 1}, Win - iw0))"]
                    if masked else [f"{ind}    x{px} = {'vload' if SW == 1 else 'vload2e'}{w}(xb, xrow + q0 * {SW} + "
                                    f"{px - PW})"])
        return out + [f"{ind}    vstore{w}(zb, zr + {px * plane} + q0, x{px})" for px in range(SW)]

    i12, i16, i20, i24 = " " * 12, " " * 16, " " * 20, " " * 24
    L = [
        "def kernel(xb, xo, wb, wo, bb, bo, yb, yo, zb, zo, N, H, Win, M, OH, OW, PH, PW"
        + (", r0, r1" if part else "") + epi.signature() + "):",
        f"    cnt = {last}",
        "    for n in range(N):",
        f"        for oh0 in range({'r0, r1' if part else '0, OH'}, {RB}):",
        f"            nb = min({RB}, {'r1' if part else 'OH'} - oh0)",
        # 1. the band's phase planes: plane (c, py, px) row r = input row (oh0 + r) * SH + py - PH, column q =
        # input column q * SW + px - PW, zero outside the input
        f"{i12}for c in range({C}):",
        f"{i16}for py in range({SH}):",
        f"{i20}for r in range(nb + {ex[0]} if py == 0 else nb + {ex[-1]}):" if SH == 2
        else f"{i20}for r in range(nb + {ex[0]}):",
        f"{i24}ih = (oh0 + r) * {SH} + py - PH",
        f"{i24}zr = zo + (c * {SH} + py) * {SW * plane} + r * {WH}",
        f"{i24}if ih < 0 or ih >= H:",
        f"{i24}    for q0 in range(0, {WH}, {w}):",
        *[f"{i24}        vstore{w}(zb, zr + {px * plane} + q0, vzero{w}())" for px in range(SW)],
        f"{i24}    continue",
        f"{i24}xrow = xo + ((n * {C} + c) * H + ih) * Win",
        *fill(i24, "0", str(qa), True), *fill(i24, str(qa), str(qb), False), *fill(i24, str(qb), str(WH), True),
    ]
    # 2. the band's output rows: every channel tile over the row's pixel tiles
    # (each output row first asks for the next band's input rows of the same place into L2, which the GEMM
    # leaves idle: PP-OCRv4 det's 3 -> 32 stride 2 at 640x640 2.50 against 2.57 ms, best of 40; 7x7 at 224 ~1%)
    L += [f"{i12}for ob in range(nb):",
          f"{i16}for c in range({C}):",
          f"{i16}    for ih in range((oh0 + {RB} + ob) * {SH} - PH, (oh0 + {RB} + ob + 1) * {SH} - PH):",
          f"{i16}        if 0 <= ih < H:",
          f"{i16}            for q in range(0, Win, 16):",
          f"{i16}                prefetch(xb, xo + ((n * {C} + c) * H + ih) * Win + q)",
          f"{i16}zrow = zo + ob * {WH}",
          f"{i16}yrow = (n * M * OH + oh0 + ob) * OW",
          f"{i16}for m in range(0, {M - M % mr}, {mr}):",
          *row(i20, mr)]
    if M % mr:
        L += [f"{i16}m = {M - M % mr}", *row(i16, M % mr)]
    return source(L), epi.args


def stem_packed_applies(node: Node, target: Target) -> bool:
    """A dense (group 1) 2-D float32 Conv with constant weights, at most ``MAX_CHANNELS`` input channels and
    ``MAX_DEPTH`` taps, a kernel wider or taller than 1, row and column strides of 1 or 2 and output rows of
    at least one pixel vector (shorter rows would idle most lanes: ``cvec``)."""
    return stem_layer(node, target, MAX_CHANNELS, MAX_DEPTH) and all(s in (1, 2) for s in node.attrs["strides"])


@variant("Conv", name="stem_packed", priority=24, applies=stem_packed_applies)
def gen_stem_packed(node: Node, target: Target) -> list[KernelCall]:
    """One call for the batch: each band's phase planes in scratch, then its rows' register tiles."""
    n = conv_sizes(node)
    return phase_call(node, target, *stem_packed_tile(target, n.M, n.OW))


def phase_call(node: Node, target: Target, mr: int, nr: int) -> list[KernelCall]:
    """The kernel call of ``node`` with an ``mr x nr`` register tile."""
    x, wt, bias, y = conv_operands(node)
    n = conv_sizes(node)
    g = geometry(node, target.vector_width)
    # [tile][c][kh][kw][rows]: a tile's weights of one tap side by side (the last tile M % mr rows)
    w2 = wt.const.reshape(n.M, -1).astype(np.float32)
    packed = np.ascontiguousarray(np.concatenate([w2[m:m + mr].T.reshape(-1) for m in range(0, n.M, mr)]))
    rows = node_part(node)
    src, extra = stem_packed_source(node, target.vector_width, mr, nr, part=rows is not None)
    args = [x, Param(packed), bias, y, Scratch(n.C * g["SH"] * g["SW"] * g["RH"] * g["WH"]), n.N, n.H, n.W, n.M,
            n.OH, n.OW, g["PH"], g["PW"], *(rows or ()), *extra]
    return [KernelCall(src, args, note(node))]


@part_space("Conv", "stem_packed")
def stem_packed_part_space(node: Node, target: Target) -> tuple[int, int]:
    """Output rows, as ``stem_conv``'s: a band of rows fills only its own phase planes (an output-channel part
    would fill every band's planes again)."""
    return node.outputs[0].shape[2], 1
