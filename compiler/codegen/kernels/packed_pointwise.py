"""Pointwise convolution on packed input strips: the GEMM micro-kernel with both operands streamed in order.

``Y (M x P) = W (M x C) @ X (C x P) + bias`` per image, in plain NCHW. ``simd_pointwise`` reads its pixel
vectors straight from the input's channel planes: every channel of a tile's reduction is another plane (a
stride of ``P`` floats), so a deep reduction touches ``C`` lines per vector (two when the plane width is not
a multiple of the line: 26x26, 52x52...) and the prefetchers follow ``C`` streams at once; measured at 40-55
GFLOP/s on the ddddocr detector's 1x1s (192 -> 48 at 52x52, 384 -> 96 at 26x26), half the FMA peak.

Here the pixels run in strips of ``L = NR * W`` columns, a block of strips at a time (``block_pixels``). A
block's inputs are copied once into scratch, each strip's ``C x L`` inputs as one contiguous panel (every
channel's row of the block read in one run), and every output-row tile then reads its strip's panel in
order (one ``L``-lane load per channel) with the weights packed at compile time as ``[M / MR][C][MR]``
(one broadcast per row per channel, also in order). On small planes with weights in L2 (``fills``) the copy
is made by the first row tile of each strip as it reads the input (its loads and stores use ports the tile
leaves free; the block copy ran with the FMA pipes idle: 10-16% of MobileNetV2's 1x1 projects), and the rows
left after whole tiles run over two strips at once where they are too few for the FMA latency (``pairs``).
The tile is ``MR`` rows by ``NR`` vectors with ``MR``
from the register budget of the ``Target``: ``MR * NR`` accumulators plus ``NR`` loaded vectors and one
broadcast (AVX2, 16 registers: 6 x 2, 12 accumulators; 32 registers: 8 x 2, kept at 16 accumulators). The
fused epilogue (bias, activations with a vector form, residual Add/Mul) runs on the accumulators before
the store.

A map whose pixels are not whole strips ends in a part-filled one, which costs a whole strip: a 7x7 map is 3
strips of 16 pixels and one of 1 (AVX2), a quarter of the time for 2% of the work. Those last pixels (fewer
than ``nr * mr``, ``channel_tail``) run on vectors of one row tile's output channels instead, read straight
from the packed weights (``[C][mr]`` per tile: one load per channel), each pixel broadcast from the strip
(``tail_source``), after whole vectors as a narrower strip tile where that is cheaper (``tail_vectors``: 8-11
pixels at 8 lanes, AVX-512's 7x7 maps' 17 at 16). AVX2, in the schedule: MobileNetV2's 7x7 1x1s 72-75 ->
85-93 GFLOP/s, its 14x14 ones (a 4-pixel tail) 1.05x, 5x8 192 -> 192 (8 pixels past two strips) 77 -> 88,
the ddddocr detector's 13x13 ones (9 pixels: 8 + 1) 1.01-1.04x.
"""


from __future__ import annotations

import numpy as np

from cnnjit.ir import Node

from ..kernel import KernelCall, Param, Scratch, Target, form, note, runs_bf16, variant
from ..parts import node_part, part_space
from ..simd_bf16 import bf16_pairs
from .epilogue import Epilogue
from .simd_pointwise import is_pointwise, pointwise_operands, tile_stores
from .stem_packed import FMA_LATENCY, FMA_PIPES
from .template import source

#: pixel vectors per register tile row (a strip is ``NR * vector_width`` columns)
NR = 2
#: at most this many output rows per tile: beyond 16 accumulators the tile only adds register pressure
MAX_MR = 8


def packed_tile(target: Target) -> tuple[int, int]:
    """(MR, NR) of the register tile: as many rows as the register file holds beside ``NR`` loaded vectors
    and one broadcast weight, at most ``MAX_MR``."""
    mr = (target.vector_registers - NR - 1) // NR
    return max(1, min(MAX_MR, mr)), NR


#: bytes of a block's packed input strips: each channel's row of the block is read in one run (48 planes
#: read a strip at a time were 48 prefetch streams), and the block stays in L2 while its strips are computed
PANEL_BYTES = 64 * 1024


def block_pixels(C: int, P: int, strip: int) -> int:
    """Pixels per block: whole strips of ``strip`` columns within ``PANEL_BYTES`` (at least one strip), at
    most all of ``P`` rounded up to whole strips."""
    most = -(-P // strip) * strip
    return min(most, max(strip, PANEL_BYTES // (4 * C) // strip * strip))


#: weights of more bytes than this (half of L2) stream from L3 or memory. Then a map whose strips all fit in
#: ``MAP_PANEL_BYTES`` is one block, and its output rows run in groups of about ``ROW_GROUP_BYTES`` of weights,
#: each group over every strip and the tail before the next: each weight comes from L3 once, not once per
#: strip (MobileNetV2's 7x7 1x1s, 0.4-1.6 MB of weights, 3 strips and a tail pixel: 4 trips)
WEIGHT_STREAM_BYTES = 256 * 1024
MAP_PANEL_BYTES = 256 * 1024
ROW_GROUP_BYTES = 64 * 1024


def blocking(C: int, M: int, P: int, strip: int, unit: int) -> tuple[int, int]:
    """(PB, RG): pixels per block (``block_pixels``, or the whole map: see ``WEIGHT_STREAM_BYTES``) and
    output rows per row group (all ``M``, or a multiple of ``unit`` rows: the register tile's rows times
    the row tiles the tail computes together)."""
    whole = -(-P // strip) * strip
    if 4 * M * C <= WEIGHT_STREAM_BYTES or 4 * C * whole > MAP_PANEL_BYTES:
        return block_pixels(C, P, strip), M
    return whole, min(M, max(1, ROW_GROUP_BYTES // (4 * C * unit)) * unit)


#: the largest channel plane (bytes) whose strips the first row tile copies as it reads them (``fills``)
FILL_PLANE_BYTES = 48 * 1024
#: the earlier forms: every block's strips copied before its tiles run; tiles of few accumulators on one chain
#: set each
BLOCK_COPY = form("packed_block_copy", "packed_pointwise: every block's strips copied to the panel before its "
                  "row tiles, not by the first row tile as it reads them")
SERIAL_ROWS = form("packed_serial_rows", "packed_pointwise: the rows left after whole tiles on one strip at a time, "
                   "not on two strips at once")


def fills(C: int, M: int, P: int, target: Target) -> bool:
    """Whether the first row tile of each whole strip reads it from the input and stores it to the panel
    (``packed_pointwise_source``'s ``fill``) instead of a copy of the block's strips before its tiles: the
    copy runs with the FMA pipes idle (10-16% of a 1x1 project layer's time: 192 -> 32 at 28x28, 576 -> 96
    at 14x14), the fill's loads and stores go to ports the tile leaves free. On channel planes of at most
    ``FILL_PLANE_BYTES``; on larger ones (maps from 112x112, megabytes of input streamed from L3 or memory)
    the copy's long runs per channel are what the prefetchers follow and the fill's one line per channel and
    strip lost (AVX2, per call, best of 40: 96 -> 24 at 160x160 0.74x, 24 -> 24 at 208x208 0.77x, 128 -> 32
    at 112x112 0.92x, 32 -> 96 at 112x112 0.97x; 104x104 and smaller 1.01-1.16x). Not where the weights
    stream (``WEIGHT_STREAM_BYTES``: MobileNetV2's 7x7 1x1s, whose copy is a few percent of their time: 0.91-1.0x
    in the schedule)."""
    return 4 * P <= FILL_PLANE_BYTES and 4 * M * C <= WEIGHT_STREAM_BYTES and not target.uses(BLOCK_COPY)


#: bytes of one reduction chunk's panel over the whole map (``kchunk``): it stays in L2 while every row group
#: runs over it
CHUNK_PANEL_BYTES = 128 * 1024


def chunked_blocking(C: int, M: int, P: int, strip: int, unit: int) -> tuple[int, int, int]:
    """(PB, RG, KC) of a chunked reduction (``packed_pointwise_source``'s ``kchunk``): the whole map one block,
    chunks of ``KC`` channels whose panel over it fits ``CHUNK_PANEL_BYTES``, and row groups of about
    ``ROW_GROUP_BYTES`` of a chunk's weights (a multiple of ``unit`` rows), each reused from L1/L2 over
    every strip: each weight is read once."""
    whole = -(-P // strip) * strip
    kc = min(C, max(1, CHUNK_PANEL_BYTES // (4 * whole)))
    return whole, min(M, max(1, ROW_GROUP_BYTES // (4 * kc * unit)) * unit), kc


def pack_weights(w: np.ndarray, mr: int) -> np.ndarray:
    """``w`` (M x C) as consecutive row tiles of ``mr`` rows (the last one ``M % mr`` rows, when not 0),
    each stored channel-major (``[C][rows]``): the tile starting at row ``m`` begins at ``m * C``."""
    M = w.shape[0]
    parts = [np.ascontiguousarray(w[m:m + mr].T).reshape(-1) for m in range(0, M, mr)]
    return np.concatenate(parts).astype(np.float32)


def pack_weights_bf16(w: np.ndarray, mr: int) -> np.ndarray:
    """``pack_weights`` of the bf16 channel pairs of ``w`` (M x C; ``bf16_pairs``): row tiles of ``[K][rows]``
    32-bit pairs (``K = (C + 1) // 2``, half the bytes of the float32 weights), the tile at row ``m`` from
    ``m * K``; int32."""
    return pack_weights(bf16_pairs(w).view(np.float32), mr).view(np.int32)


def tail_lanes(mr: int) -> int:
    """Lanes of the output-channel vectors of the tail pixels: one row tile's ``mr`` rows (8 or 4 lanes)."""
    return 4 if mr <= 4 else 8


def channel_tail(tail: int, mr: int, nr: int) -> bool:
    """Whether the last ``tail`` pixels of a map (fewer than a strip) run on output-channel vectors of a row
    tile's ``mr`` rows rather than as a part-filled strip: a strip costs ``nr`` FMAs per output row and
    channel whatever its fill, a pixel on channel vectors ``1 / mr`` of one, so below ``nr * mr`` pixels (a 7x7
    map's last pixel at 16 lanes: 1 of the 4 strips' 8 FMAs per row and channel becomes 1/6)."""
    return 0 < tail < nr * mr


def tail_vectors(tail: int, w: int, mr: int, nr: int) -> int | None:
    """How the last ``tail`` pixels of a map (fewer than a strip of ``nr`` vectors of ``w``) run: ``k`` whole
    vectors as a narrower strip tile (``k`` FMAs per output row and channel), the rest on output-channel
    vectors (``1 / mr`` each); None: as a part-filled strip (``nr``). The cheapest, a split only where it costs
    at most ``SPLIT_SHARE`` of the strip (its strided stores and shorter loops cost extra): AVX-512's 7x7 maps
    (a 32-lane strip and 17 pixels) run 16 + 1 pixels, 1.125 against 2; AVX2's 7x7 (1 pixel), 14x14 (4) and
    13x13 (9 pixels: 8 + 1) maps likewise."""
    if tail <= 0:
        return None
    k = tail // w
    costs = {0: tail / mr} if channel_tail(tail, mr, nr) else {}
    if k:
        costs[k] = k + (tail - k * w) / mr
    best = min(costs, key=lambda v: (costs[v], v), default=None)
    return best if best is not None and (best == 0 or costs[best] <= SPLIT_SHARE * nr) else None


#: the most a split tail (whole vectors + channel vectors) may cost against the part-filled strip
SPLIT_SHARE = 0.75


def tail_tile(tail: int, registers: int) -> tuple[int, int]:
    """(TP, G): tail pixels per chunk (at most 4) and row tiles per group, ``G * TP`` accumulators (about 12,
    at least 8 FMA chains where the registers allow) beside ``G`` weight vectors and one broadcast."""
    tp = min(tail, 4)
    return tp, max(1, min(12 // tp, (registers - 1) // (tp + 1)))


def tail_source(node: Node, L: int, mr: int, M: int, tail: int, registers: int, ind: str,
                first: int = 0, kchunk: bool = False) -> list[str]:
    """Lines computing the map's last ``tail`` pixels (the first ``tail`` columns of the strip at ``ps``) on
    vectors of a row tile's output channels, for the output rows of the row group ``mg .. mge`` (whole row
    tiles, the last group also the ``M % mr`` rows left): each step over the channels loads ``G`` row
    tiles' packed weights (``[C][mr]`` per tile, one vector each, lanes past ``mr`` read the next tile's:
    never stored) and broadcasts ``TP`` pixels; the tile's stores are strided (one channel plane per lane).
    ``first``: the strip's column of the first of these pixels. ``kchunk``: channels ``kc .. kce`` only
    (``packed_pointwise_source``), from and to the partial sums in the output."""
    tl = tail_lanes(mr)
    tp, G = tail_tile(tail, registers)
    full, rem = divmod(M, mr)
    epi = {r: Epilogue(node, tl, False, residual_load=lambda k, r=r: f"vgathern{tl}(r{k}b, r{k}o + yq, P, {r})")
           for r in {mr, rem} - {0}}

    def group(g: int, rows: int, ind: str) -> list[str]:
        """``g`` row tiles of ``rows`` rows from row ``m`` x every tail pixel, ``tp`` pixels at a time."""
        out = []
        for j0 in range(0, tail, tp):
            n = min(tp, tail - j0)
            init = [f"t{tl}_{h}_{j} = vloadn{tl}(bb, bo + m + {h * mr}, {rows})" for h in range(g) for j in range(n)]
            if kchunk:  # a later chunk starts from the partial sums
                part = [f"t{tl}_{h}_{j} = vgathern{tl}(yb, y0 + (m + {h * mr}) * P + p + {first + j0 + j}, P, {rows})"
                        for h in range(g) for j in range(n)]
                out += [f"{ind}if kc == 0:", *[f"{ind}    {ln}" for ln in init], f"{ind}else:",
                        *[f"{ind}    {ln}" for ln in part]]
            else:
                out += [ind + ln for ln in init]
            out += [f"{ind}si = ps + {first + j0}{' + kc * ' + str(L) if kchunk else ''}",
                    f"{ind}wi = wo + m * C{' + kc * ' + str(rows) if kchunk else ''}",
                    f"{ind}for c in range({'kc, kce' if kchunk else 'C'}):"]
            out += [f"{ind}    u{tl}_{h} = vload{tl}(wb, wi + {h * mr} * C)" for h in range(g)]
            for j in range(n):
                out.append(f"{ind}    x{tl} = vbcast{tl}(sb[U(si + {j})])")
                out += [f"{ind}    t{tl}_{h}_{j} = vfma{tl}(x{tl}, u{tl}_{h}, t{tl}_{h}_{j})" for h in range(g)]
            out += [f"{ind}    si += {L}", f"{ind}    wi += {rows}"]
            sind = ind + "    " if kchunk else ind
            raw, last = [], []
            for h in range(g):
                for j in range(n):
                    acc = f"t{tl}_{h}_{j}"
                    yq = f"{sind}yq = y0 - yo + (m + {h * mr}) * P + p + {first + j0 + j}"
                    scatter = f"{sind}vscattern{tl}(yb, yo + yq, P, {acc}, {rows})"
                    raw += [yq, scatter]
                    last += [yq, *epi[rows].vector(sind, acc, "", tl, False), scatter,
                             *epi[rows].after(sind, [f"for i in range({rows}):"], "yq + i * P")]
            out += [f"{ind}if kce < C:", *raw, f"{ind}else:", *last] if kchunk else last
        return out

    lines = [f"{ind}m = mg"]
    if full >= G:
        lines += [f"{ind}while m + {G * mr} <= mge:", *group(G, mr, ind + "    "), f"{ind}    m += {G * mr}"]
    if full % G:
        lines += [f"{ind}while m + {mr} <= mge:", *group(1, mr, ind + "    "), f"{ind}    m += {mr}"]
    return lines + ([f"{ind}if m < mge:", *group(1, rem, ind + "    ")] if rem else [])


#: independent accumulator chains that keep the FMA pipes busy (``FMA_PIPES`` x ``FMA_LATENCY``)
CHAINS = FMA_PIPES * FMA_LATENCY


def pairs(rows: int, nr: int, registers: int) -> bool:
    """Whether a tile of the ``rows`` output rows left after whole tiles runs over two strips at once: it has
    fewer than ``CHAINS`` accumulators (the 2 rows of 32 output channels after 6-row tiles: 4 chains, each
    step a full FMA latency for 4 FMAs) and the register file holds twice them beside both strips' loaded
    vectors and one broadcast. Each row's sums stay the unpaired tile's (channel order): a layer split over
    threads by output channels, whose parts leave other rows over, computes the same bits."""
    return rows * nr < CHAINS and 2 * rows * nr + 2 * nr + 1 <= registers


def strip_copy(L: int, src: str = "xb") -> list[str]:
    """The block's strips into the scratch, strip k's ``C x L`` panel at ``so + k * C * L`` (zeros past the
    last column): each channel's row of the block (in ``src`` from ``x0``) is read in order, once."""
    return [
        "            for c in range(C):",
        "                xi = x0 + c * P + pb",
        f"                si = so + c * {L}",
        "                p = pb",
        f"                while p + {L} <= pe:",
        f"                    vstore{L}(sb, si, vload{L}({src}, xi))",
        f"                    xi += {L}",
        f"                    si += C * {L}",
        f"                    p += {L}",
        "                if p < pe:",
        f"                    vstore{L}(sb, si, vloadn{L}({src}, xi, pe - p))",
    ]


def tail_copy(L: int) -> list[str]:
    """``strip_copy`` of the block's part-filled last strip only (``fill``: the first row tile copies each whole
    strip as it reads it)."""
    return [
        f"            pt = pb + (pe - pb) // {L} * {L}",
        "            if pt < pe:",
        f"                st = so + (pt - pb) // {L} * C * {L}",
        "                for c in range(C):",
        f"                    vstore{L}(sb, st + c * {L}, vloadn{L}(xb, x0 + c * P + pt, pe - pt))",
    ]


def strip_copy_bf16(L: int) -> list[str]:
    """``strip_copy`` of channel pairs rounded to bf16: strip k's ``K x L`` panel of 32-bit pairs (channel
    ``2c`` low, ``2c + 1`` high; a zero high channel past an odd ``C``) at ``so + k * K * L``."""
    return [
        "            for c in range(K):",
        "                xi = x0 + 2 * c * P + pb",
        "                hs = P if 2 * c + 1 < C else 0",  # an odd C's last pair: its high half is masked to 0
        f"                si = so + c * {L}",
        "                p = pb",
        "                while p < pe:",
        f"                    k = min({L}, pe - p)",
        f"                    lo = vloadn{L}(xb, xi, k)",
        f"                    vbf16store{L}(sb, si, vbf16pair{L}(lo, vloadn{L}(xb, xi + hs, k if hs else 0)))",
        f"                    xi += {L}",
        f"                    si += K * {L}",
        f"                    p += {L}",
    ]


def _window_copy(ind: str, src: str, dst: str, n: int, w: int) -> list[str]:
    """Lines copying input columns ``src .. src + n`` of row ``xr`` (``Win`` long; zeros outside it) to
    ``sb[dst ..]``, ``w`` lanes at a time: a vector inside the row is one load, one wholly outside it zeros,
    one across an edge column by column (``n`` a multiple of ``w``)."""
    return [
        f"{ind}for j in range(0, {n}, {w}):",
        f"{ind}    q = {src} + j",
        f"{ind}    if q >= 0 and q + {w} <= Win:",
        f"{ind}        vstore{w}(sb, {dst} + j, vload{w}(xb, xr + q))",
        f"{ind}    elif q + {w} <= 0 or q >= Win:",
        f"{ind}        vstore{w}(sb, {dst} + j, vbcast{w}(np.float32(0.0)))",
        f"{ind}    else:",
        f"{ind}        for i in range({w}):",
        f"{ind}            sb[U({dst} + j + i)] = xb[U(xr + q + i)] if q + i >= 0 and q + i < Win "
        "else np.float32(0.0)",
    ]


def tap_stride(L: int, dw: int) -> int:
    """Floats between consecutive taps' windows in a ``taps`` strip's panel: ``DW`` (the windows overlap: one
    window of the row holds them all) up to ``L``; a wider dilation stores each tap's ``L`` columns alone
    (``KW * L`` floats, not ``L + (KW - 1) * DW``: madmom's TCN, dilations to 1024 on 996 columns, copied
    up to 129x the columns it used, and its reduction ran in 4-channel chunks for a panel that big)."""
    return min(dw, L)


def tap_strip_copy(L: int, SL: int, w: int, kw: int = 1, dw: int = 1) -> list[str]:
    """``strip_copy`` of a one-row input for ``taps`` (``packed_pointwise_source``): strip k's ``C x SL`` panel at
    ``so + k * C * SL``, channel c's row holding input columns ``p - PW .. p - PW + SL`` of the strip's first
    output column ``p`` (zeros outside the input row), so tap ``t``'s inputs to the strip are the shifted window
    ``t * DW .. t * DW + L`` of it (no ``KW``-fold im2col copy); with a dilation past ``L`` (``tap_stride``),
    tap ``t``'s ``L`` columns from ``p - PW + t * DW`` at ``t * L``. A window inside the row is copied ``w``
    lanes at a time, one at an edge vector by vector (``_window_copy``)."""
    ind = " " * 24
    if tap_stride(L, dw) == dw:
        copy = [f"                    if i0 >= 0 and i0 + {SL} <= Win:",
                f"                        for j in range(0, {SL}, {w}):",
                f"                            vstore{w}(sb, si + j, vload{w}(xb, xr + i0 + j))",
                "                    else:",
                *_window_copy(ind, "i0", "si", SL, w)]
    else:
        copy = [ln for t in range(kw) for ln in _window_copy(ind[:-4], f"i0 + {t * dw}", f"si + {t * L}", L, w)]
    return [
        "            for c in range(C):",
        "                xr = x0 + c * Win",
        f"                si = so + c * {SL}",
        "                p = pb",
        "                while p < pe:",
        "                    i0 = p - PW",
        *copy,
        f"                    si += C * {SL}",
        f"                    p += {L}",
    ]


def tap_row(L: int, kw: int, dw: int, w: int) -> int:
    """Floats per channel row of a ``taps`` strip's panel: the ``L`` outputs' window widened by the taps'
    span (``tap_stride`` apart), whole vectors of ``w`` lanes."""
    return -(-(L + (kw - 1) * tap_stride(L, dw)) // w) * w


def packed_pointwise_source(node: Node, w: int, mr: int, nr: int, rem: int, tail: int = 0,
                            registers: int = 16, pixel_range: bool = False, bf16: bool = False,
                            gather: tuple[str, list[str]] | None = None, kchunk: bool = False,
                            taps: tuple[int, int] | None = None,
                            band: tuple[str, list[str]] | None = None, fill: bool = False,
                            serial_rem: bool = False) -> tuple[str, list]:
    """The kernel for ``node``'s epilogue at vector width ``w``: tiles of ``mr`` rows, then one of ``rem``
    rows (the output rows left over, 0: none); returns the source and the residual arguments. With ``tail``
    (the map's pixels past its last whole strip) that ``tail_vectors`` splits, those pixels run as whole
    vectors and on output-channel vectors (``tail_source``) instead of a part-filled strip. ``pixel_range``:
    the kernel computes only pixels ``P0 .. P1`` (two more arguments; ``P0`` a multiple of the strip, so
    every strip and the tail are the whole layer's: the same sums, bit for bit).

    ``bf16``: the reduction runs over channel pairs (``K = (C + 1) // 2``): the strip copy rounds the
    inputs to bf16 and stores channels ``2k`` and ``2k + 1`` as one 32-bit pair per pixel (``vbf16pair``, a
    zero channel past an odd ``C``), the weights are bf16 pairs (``pack_weights_bf16``) and every step is one
    ``vdotbf16`` per accumulator (fp32); no split tail (its channel vectors are fp32).

    ``gather``: (extra parameters, lines) that copy image ``n``'s ``C x P`` input pixels from ``xb`` into the
    scratch ``zb`` and set ``x0`` there, the strips then copied from it (a strided 1x1 conv's subsampled input,
    ``strided_pointwise.gather_lines``; a KxK conv's im2col rows, ``im2col_packed.im2col_lines``); float32
    only.

    ``kchunk``: the reduction runs in chunks of ``KC`` channels (one more argument), each over every row group
    and strip of the block before the next, the partial sums kept in the output (the same sums in the same
    order: bit for bit the unchunked kernel's). A deep reduction on a small map (``chunked_blocking``): the
    chunk's panel stays in L2 for all the output rows, so each weight is read once per block, not once per
    strip.

    ``taps``: ``(KW, DW)`` of a stride-1 ``1 x KW`` Conv (dilation ``DW``) on a one-row input of ``Win`` columns,
    left pad ``PW`` (two more arguments): each strip's panel holds every channel's input window
    (``tap_strip_copy``) and a channel's step is ``KW`` shifted loads of it, each meeting that tap's ``mr``
    weights (``pack_weights`` of the ``M x (C * KW)`` weights: ``[C][KW][mr]`` per row tile); ``C`` is the
    input channels, ``P`` the output columns. float32, no split tail (a part-filled strip).

    ``band``: (extra parameters, lines) that write each reduction chunk's rows ``kc .. kce`` of a block's
    im2col straight into the scratch (row ``c`` at ``so + (c - kc) * ZS``, pixel ``p`` at column ``p - pb``;
    ``im2col_bands.band_lines``), run inside the chunk loop: no whole-map copy and no strip copy, so a conv of
    any map size runs on chunk panels that stay in L2. Needs ``kchunk``; no split tail.

    ``fill`` (a plain ``C x P`` float32 input, no ``kchunk``; ``fills``): the block copies only its part-filled
    last strip (``tail_copy``); the first row group's first tile of each whole strip loads the strip's channel
    rows from the input (one ``L``-lane load per channel, as from the panel) and stores them to the panel,
    where the other tiles read them.

    The ``rem`` rows left after whole tiles run over two whole strips at once where ``pairs`` says (a plain
    float32 ``C x P`` input, no ``kchunk``; ``serial_rem``: one strip at a time, the earlier form)."""
    assert not (bf16 and gather), "the bf16 strip copy reads the input itself"
    assert not (band and (bf16 or gather or taps or not kchunk)), "a band is its own chunked float32 copy"
    assert not (taps and (bf16 or gather)), "taps read the one-row input itself"
    assert not (fill and (bf16 or gather or taps or band or kchunk)), "a fill reads a plain C x P input"
    L = nr * w
    epi = Epilogue(node, L, False)
    split = None if bf16 or taps or band else tail_vectors(tail, w, mr, nr)
    M = node.inputs[1].shape[0]
    kw, dw = taps or (1, 1)
    SL = tap_row(L, kw, dw, w) if taps else L  # floats per channel of a strip's panel
    ts = tap_stride(L, dw)  # floats between taps' windows in it
    step = ("    {a} = vdotbf16_{lanes}({a}, v{lanes}, vbf16bcast{lanes}(wb, wi + {o}))"
            if bf16 else "    {a} = vfma{lanes}(vbcast{lanes}(wb[U(wi + {o})]), v{lanes}, {a})")
    pair = rem > 0 and not (serial_rem or kchunk or bf16 or taps or band or gather) and pairs(rem, nr, registers)

    def tile(rows: int, ind: str, lanes: int = L, fills: bool = False, paired: bool = False) -> list[str]:
        """One register tile of ``rows`` output rows from row ``m`` over the packed strip; stores the first
        ``cnt`` columns (all ``L`` when the strip is whole); with ``lanes`` < ``L``, that many whole columns.
        ``kchunk``: over channels ``kc .. kce``, a later chunk from the partial sums in the output, the last
        one through the epilogue. ``fills``: the tile reads the strip from the input and stores it to the
        panel (``fill``). ``paired``: the tile also runs over the strip before (whole, its panel ``K * SL``
        before), twice the accumulators on one broadcast per row and channel (``pairs``); each row's sums
        are the unpaired tile's, bit for bit."""

        def idx(i: int) -> str:
            return f"y0 - yo + (m + {i}) * P + p"

        init = [f"a{lanes}_{i} = vbcast{lanes}(bb[U(bo + m + {i})])" for i in range(rows)]
        count = "cnt" if lanes == L else str(lanes)
        out = [ind + ln for ln in init]
        # a later chunk's partial sums: whole vectors where the strip is whole (a masked store costs ~10x a
        # plain one on Zen 3, and a chunk's tile stores one per accumulator)
        whole = [f"a{lanes}_{i} = vload{lanes}(yb, yo + {idx(i)})" for i in range(rows)]
        masked = [f"a{lanes}_{i} = vloadn{lanes}(yb, yo + {idx(i)}, {count})" for i in range(rows)]
        if kchunk:
            out = [f"{ind}if kc == 0:", *[f"{ind}    {ln}" for ln in init],
                   *([f"{ind}elif cnt == {L}:", *[f"{ind}    {ln}" for ln in whole]] if lanes == L else []),
                   f"{ind}else:", *[f"{ind}    {ln}" for ln in (masked if lanes == L else whole)]]
        if fills:
            out.append(f"{ind}xi = x0 + p")
        if paired:
            out += [f"{ind}b{lanes}_{i} = a{lanes}_{i}" for i in range(rows)]
        out += [f"{ind}si = ps{' + kc * ' + str(SL) if kchunk and not band else ''}",
                f"{ind}wi = wo + m * K{f' * {kw}' if taps else ''}{' + kc * ' + str(rows * kw) if kchunk else ''}",
                f"{ind}for c in range({'kc, kce' if kchunk else 'K'}):"]
        load = "vbf16load" if bf16 else "vload"
        for t in range(kw):  # a channel's taps: shifted windows of its row in the strip's panel
            if fills:  # (1x1 only) the input's strip, stored to the panel for the other row tiles
                out += [f"{ind}    v{lanes} = vload{lanes}(xb, xi)", f"{ind}    vstore{lanes}(sb, si, v{lanes})",
                        f"{ind}    xi += P"]
            else:
                out.append(f"{ind}    v{lanes} = {load}{lanes}(sb, si{f' + {t * ts}' if t else ''})")
            if paired:  # (1x1 only) the strip before's inputs, the same broadcast weight
                out.append(f"{ind}    u{lanes} = vload{lanes}(sb, si - K * {SL})")
                for i in range(rows):
                    out += [f"{ind}    bw{lanes} = vbcast{lanes}(wb[U(wi + {i})])",
                            f"{ind}    a{lanes}_{i} = vfma{lanes}(bw{lanes}, v{lanes}, a{lanes}_{i})",
                            f"{ind}    b{lanes}_{i} = vfma{lanes}(bw{lanes}, u{lanes}, b{lanes}_{i})"]
            else:
                out += [ind + step.format(lanes=lanes, a=f"a{lanes}_{i}", o=f"{t * rows + i}") for i in range(rows)]
        out += [f"{ind}    si += {'ZS' if band else SL}", f"{ind}    wi += {rows * kw}"]
        if paired:  # the strip before (whole), then this one below (whole too)
            swap = [f"{ind}a{lanes}_{i}, b{lanes}_{i} = b{lanes}_{i}, a{lanes}_{i}" for i in range(rows)]
            out += [*swap, *tile_stores(epi, ind, L, rows, lambda i: f"{idx(i)} - {L}", False),
                    *epi.after(ind, [f"for i in range({rows}):", f"for j in range({L}):"],
                               f"y0 - yo + (m + i) * P + p - {L} + j"), *swap]
        if kchunk:  # an earlier chunk stores its partial sums as they are
            plain = [f"vstore{lanes}(yb, yo + {idx(i)}, a{lanes}_{i})" for i in range(rows)]
            part = ([f"if cnt == {L}:", *[f"    {ln}" for ln in plain], "else:",
                     *[f"    vstoren{lanes}(yb, yo + {idx(i)}, a{lanes}_{i}, {count})" for i in range(rows)]]
                    if lanes == L else plain)
            out += [f"{ind}if kce < K:", *[f"{ind}    {ln}" for ln in part], f"{ind}else:"]
            ind += "    "

        if lanes < L:
            out += tile_stores(epi, ind, lanes, rows, idx, False)
            return out + epi.after(ind, [f"for i in range({rows}):", f"for j in range({lanes}):"],
                                   "y0 - yo + (m + i) * P + p + j")
        out.append(f"{ind}if cnt == {L}:")
        out += tile_stores(epi, ind + "    ", L, rows, idx, False)
        out.append(f"{ind}else:")
        out += tile_stores(epi, ind + "    ", L, rows, idx, True)
        return out + epi.after(ind, [f"for i in range({rows}):", "for j in range(cnt):"],
                               "y0 - yo + (m + i) * P + p + j")

    def row_tiles(ind: str, lanes: int) -> list[str]:
        """The row group's tiles (``mg .. mge``: whole row tiles, the last group also the ``rem`` rows left)
        over the strip at ``ps``; with ``fill``, the first row group's first tile of a whole strip fills its
        panel; with ``pair``, the ``rem`` rows of an even strip of the block wait for the next one when it is
        whole, and run over both there."""
        first = []
        if fill and lanes == L:
            first = [f"{ind}if mg == 0 and cnt == {L}:", f"{ind}    if mge >= {mr}:",
                     *tile(mr, ind + " " * 8, L, True), f"{ind}        m += {mr}"]
            if rem:
                first += [f"{ind}    else:", *tile(rem, ind + " " * 8, L, True), f"{ind}        m += {rem}"]
        last = [f"{ind}if m < mge:", *tile(rem, ind + "    ", lanes)] if rem else []
        if pair and lanes == L:
            last = [f"{ind}if m < mge:", f"{ind}    if cnt == {L} and (p - pb) // {L} % 2 == 1:",
                    *tile(rem, ind + " " * 8, L, paired=True),
                    f"{ind}    elif cnt < {L} or p + {2 * L} > pe:", *tile(rem, ind + " " * 8, L)]
        return [f"{ind}m = mg", *first, f"{ind}while m + {mr} <= mge:", *tile(mr, ind + "    ", lanes),
                f"{ind}    m += {mr}", *last]

    lines = [
        "def kernel(xb, xo, wb, wo, bb, bo, yb, yo, sb, so, N, C, M, P, PB, RG" + (", KC" if kchunk else "")
        + (", P0, P1" if pixel_range else "") + (gather[0] if gather else "") + (", Win, PW" if taps else "")
        + (band[0] if band else "")
        + epi.signature() + "):",
        f"    K = {'(C + 1) // 2' if bf16 else 'C'}",
        "    for n in range(N):",
        *(gather[1] if gather else [f"        x0 = xo + n * C * {'Win' if taps else 'P'}"]),
        "        y0 = yo + n * M * P",
        f"        for pb in range({'P0, P1' if pixel_range else '0, P'}, PB):",
        f"            pe = min({'P1' if pixel_range else 'P'}, pb + PB)",
        *([] if band else strip_copy_bf16(L) if bf16 else tap_strip_copy(L, SL, w, kw, dw) if taps
          else tail_copy(L) if fill else strip_copy(L, "zb" if gather else "xb")),
    ]
    body = [
        "            for mg in range(0, M, RG):",
        "                mge = min(M, mg + RG)",
        "                ps = so",
        "                p = pb",
        f"                while {'p < pe' if split is None else 'p + ' + str(L) + ' <= pe'}:",
        f"                    cnt = min({L}, pe - p)",
        *row_tiles(" " * 20, L),
        f"                    p += {L}",
        f"                    ps += {L if band else f'K * {SL}'}",
    ]
    if split is not None:
        body.append("                if p < pe:")
        if split:
            body += row_tiles(" " * 20, split * w)
        if tail > split * w:
            body += tail_source(node, L, mr, M, tail - split * w, registers, " " * 20, split * w, kchunk)
    if kchunk:
        body = ["            for kc in range(0, K, KC):", "                kce = min(K, kc + KC)",
                *(band[1] if band else []), *["    " + ln for ln in body]]
    return source(lines + body), epi.args


#: the least input channels: below, the strip copy costs about what it saves (AVX2 GFLOP/s against
#: ``simd_pointwise``, Conv+SiLU: 24 -> 24 at 104x104 0.76x, 32 -> 16 at 112x112 0.71x, 16 -> 96 at 112x112
#: 1.0x; 48 -> 48 at 104x104 1.07x, 96 -> 96 at 52x52 1.2x, 192-768 channels 1.3-1.6x, also against ``cblock``)
MIN_CHANNELS = 48
#: the least row tiles per strip, over which the copy is shared (96 -> 24 at 56x56, 4 tiles: 0.95x; 48 -> 24
#: at 104x104: 0.83x; 8 tiles and more: 1.07x and up)
MIN_ROW_TILES = 8
#: shallower and narrower layers (from ``SHALLOW_CHANNELS`` input channels and ``SHALLOW_ROW_TILES`` row tiles)
#: where the alternatives are slow: a layer whose input and output exceed ``STREAM_BYTES`` (L2: they stream
#: from L3 or memory, and ``simd_pointwise``'s many row streams stall), or a map of at most ``SMALL_MAP``
#: pixels that ``simd_pointwise``'s rows of 4 vectors would part-fill (``channel_pointwise`` otherwise: strided
#: stores). Re-measured (AVX2, per call in the schedule, interleaved, best of 3 x 40-100 runs,
#: ``benchmarks/pointwise_thresholds.py`` and the corpus models' profiles): 16 -> 32 at 320x320 1.76x, 32 -> 48
#: at 160x160 1.74x, 12 -> 96 at 160x160 1.47x, 96 -> 18 at 80x80 1.24x, 16 -> 96 at 112x112 (SiLU) 1.22x,
#: 24 -> 24 and 48 -> 24 at 104x104 (SiLU) 1.17x, 1.15x, 24 -> 96 at 56x56 1.58x; MobileNetV3's 4x4 maps
#: 96 -> 40, 40 -> 240, 240 -> 40, 40 -> 120 1.47-1.96x, 16 -> 64 at 10x10 1.83x. Smaller maps that fill the
#: rows lost (MobileNetV3's 8x8 and 16x16 1x1s with HardSwish 0.88-0.94x, the PP-OCR classifier's 8 -> 24 at
#: 12x96 0.84x, 104 -> 32 at 2x96 0.83x), and 2 row tiles lost on 32 -> 16 at 112x112 (0.93x)
SHALLOW_CHANNELS = 8
SHALLOW_ROW_TILES = 3
STREAM_BYTES = 512 * 1024
SMALL_MAP = 100
#: on a streaming layer over at least ``WIDE_MAP`` pixels, ``WIDE_ROW_TILES`` row tiles share the copy well
#: enough (a detector head's 48 -> 12 at 160x160 ran at 23% of peak in ``simd_pointwise``). Per call in the
#: schedule, interleaved, best of 3 x 40 runs, AVX2 (6-row tiles: 12 to 17 output channels), load 8-11:
#: 48 -> 12 at 160x160 1.57x (Relu) 1.48x (SiLU), 24 -> 12 at 320x320 1.68x, 16 -> 12 at 320x320 1.41x,
#: 32 -> 12 at 160x160 1.31x, 24 -> 14 at 160x160 (SiLU) 1.23x, 96 -> 12 and 64 -> 16 at 80x80 1.12x, 1.09x,
#: 8 -> 12 at 160x160 1.0x; below it lost (128 -> 12 at 40x40 0.89x), and one tile always lost (96 -> 8 at
#: 40x40 0.78x)
WIDE_MAP = 4096
WIDE_ROW_TILES = 2
#: where the first row tile fills the strips (``fills``), the copy no longer needs ``MIN_ROW_TILES`` tiles to pay:
#: from ``FILL_CHANNELS`` input channels, ``FILL_ROW_TILES`` row tiles and ``FILL_PIXELS`` pixels. Per call in the
#: schedule against ``simd_pointwise`` (AVX2, best of 120, load ~3; MobileNetV3 / PP-LCNet shapes): 200 -> 40 at
#: 14x14 1.35x, 120 -> 40 (+ Add) at 28x28 1.13x, 40 -> 120 at 28x28 1.11x, 48 -> 24 at 40x40 1.07x, 96 -> 32 at
#: 20x20 1.0x
FILL_CHANNELS = 40
FILL_ROW_TILES = 4
FILL_PIXELS = 196
#: at these (vector width, vector registers) (least input channels, least row tiles) for any map of a whole strip
#: (AVX-512's 32 registers of 16 lanes; an AVX2 host compiling at width 16 keeps the 8-lane rules): with 16 lanes
#: ``simd_pointwise``'s rows of 4 vectors (64 pixels) part-fill or stream far more, and the strip copy paid from
#: 2 row tiles (16 output channels) of 16 input channels. Zen 5, per call in the schedule, best of 3 x 10 runs,
#: interleaved, load ~5.5 (simd_pointwise -> this): SqueezeNet's 128 -> 16 at 55x55 69 -> 60 us, 64 -> 16 30 ->
#: 28, 32 -> 128 at 27x27 29-31 -> 25, 384 -> 48 at 13x13 45 -> 33, 256 -> 48 24 -> 23; the PP-OCR
#: classifier's 16 -> 88 at 3x96 4.3 -> 3.6, 200 -> 32 at 2x96 11.2 -> 9.5 (whole model 0.159 -> 0.145 ms);
#: MLPerf VWW's 32 -> 64 at 12x12 2.9 -> 2.4; MobileNetV3-small's 8x8 1x1s 1.0-1.5 -> 0.9-1.3; even: 16 -> 32 at
#: 24x24, 32 -> 32 at 16x16; MobileNetV3-small's 16 -> 16 at 16x16 0.5 -> 0.6
WIDE_FITS = {(16, 32): (16, 2)}
#: at these (vector width, vector registers), as ``WIDE_FITS``, a map of fewer whole strips than this is left to
#: ``channel_pointwise`` (output channels as lanes) where it applies (``few_strips``). In the model, as above
#: (packed_pointwise -> channel_pointwise): MobileNetV2's 7x7 1x1s 576 -> 160 65-67 -> 53-54 us, 960 -> 160 105-109 ->
#: 89-91, 160 -> 960 89-92 -> 79-82, 960 -> 320 209 -> 177, 320 -> 1280 273-283 -> 229-232 (sum of the model's calls
#: 3.43 -> 3.29 ms); MLPerf VWW and MobileNet-v1's 6x6 64 -> 128 and 128 -> 128 1.1x; PP-OCRv4 rec's 1x40 60 -> 120 8.8
#: -> 7.9 and 4.4 -> 5.4
WIDE_STRIPS = {(16, 32): 2}


def few_strips(P: int, target: Target) -> bool:
    """Whether ``P`` pixels are fewer whole strips than ``WIDE_STRIPS`` wants at the target's width."""
    w = target.vector_width
    return P < WIDE_STRIPS.get((w, target.vector_registers), 0) * packed_tile(target)[1] * w


def packed_pointwise_applies(node: Node, target: Target) -> bool:
    """A group-1 1x1, stride-1, unpadded float32 Conv with constant weights, at least ``MIN_CHANNELS``
    input channels, ``MIN_ROW_TILES`` register tiles of output rows (``FILL_CHANNELS``, ``FILL_ROW_TILES`` and
    ``FILL_PIXELS`` where the first tile fills the strips; ``WIDE_FITS`` at 16 lanes; or
    ``SHALLOW_CHANNELS`` and
    ``SHALLOW_ROW_TILES`` on large and on small maps, ``WIDE_ROW_TILES`` on wide streaming ones: see there)
    and one whole strip of pixels
    (``simd_pointwise`` takes the rest, grouped ones included).

    It comes before ``cvec_pointwise`` in the table: on the 6x6 and 7x7 maps both take, ``cvec_pointwise``
    re-reads all the weights once per output row (MobileNetV2's 320 -> 1280 at 7x7, 1.6 MB of weights: 25
    GFLOP/s against 72 here; whole models, AVX2, interleaved: MobileNetV2 1.07-1.34x, MLPerf VWW 1.24x,
    MobileNet-v1 0.25 1.30x, MobileNetV3-small and the YOLOv8 head unchanged)."""
    x, wt = node.inputs[0], node.inputs[1]
    if not (is_pointwise(node) and x.dtype == np.float32 and wt.dtype == np.float32 and wt.is_const):
        return False
    return packed_fits(wt.shape[1], wt.shape[0], int(np.prod(x.shape[2:], dtype=np.int64)), target)


def packed_fits(C: int, M: int, P: int, target: Target) -> bool:
    """Whether a ``C -> M`` 1x1 on ``P`` pixels is worth the strips' copy (see ``packed_pointwise_applies``)."""
    mr, nr = packed_tile(target)
    w = target.vector_width
    if P < nr * w:
        return False
    if C >= MIN_CHANNELS and M >= MIN_ROW_TILES * mr:
        return True
    wide = WIDE_FITS.get((w, target.vector_registers))
    if wide and C >= wide[0] and M >= wide[1] * mr:
        return True
    if C >= FILL_CHANNELS and M >= FILL_ROW_TILES * mr and P >= FILL_PIXELS and fills(C, M, P, target):
        return True
    stream = 4 * (C + M) * P > STREAM_BYTES
    slow_others = stream or (P <= SMALL_MAP and P % (4 * w) != 0)
    tiles = WIDE_ROW_TILES if stream and P >= WIDE_MAP else SHALLOW_ROW_TILES
    return C >= SHALLOW_CHANNELS and M >= tiles * mr and slow_others


@variant("Conv", name="packed_pointwise", priority=19, applies=packed_pointwise_applies)
def gen_packed_pointwise(node: Node, target: Target) -> list[KernelCall]:
    """One call for the whole batch (or a part's pixels: ``meta["part"]``); the scratch holds one block of
    strips (``block_pixels``)."""
    return packed_call(node, target)


def packed_call(node: Node, target: Target, gather: tuple[str, list[str]] | None = None,
                gather_args: tuple = (), kchunk: bool = False) -> list[KernelCall]:
    """``gen_packed_pointwise``'s call on the output's ``P`` pixels; ``gather`` (``packed_pointwise_source``)
    with its arguments ``gather_args`` (after the part's range) for an input that is not ``C x P``;
    ``kchunk``: the reduction in chunks (``chunked_blocking``)."""
    x, wt, bias, y, N, _, M, _ = pointwise_operands(node)
    C = int(np.prod(wt.shape[1:]))  # the reduction: input channels x taps (an im2col'd Conv's rows)
    P = int(np.prod(node.outputs[0].shape[2:], dtype=np.int64))
    mr, nr = packed_tile(target)
    w = target.vector_width
    pixels = node_part(node)
    fill = gather is None and not kchunk and fills(C, M, P, target)
    src, extra = packed_pointwise_source(node, w, mr, nr, M % mr, P % (nr * w), target.vector_registers,
                                         pixels is not None, gather=gather, kchunk=kchunk, fill=fill,
                                         serial_rem=target.uses(SERIAL_ROWS))
    # padded by one tail vector: the tail's weight loads of the last row tile read past its rows
    packed = np.concatenate([pack_weights(wt.const.reshape(M, C), mr), np.zeros(tail_lanes(mr), np.float32)])
    tail = P % (nr * w)
    split = tail_vectors(tail, w, mr, nr)
    chan = 0 if split is None else tail - split * w  # the tail's pixels on output-channel vectors
    unit = mr * (tail_tile(chan, target.vector_registers)[1] if chan else 1)
    pb, rg, *kc = chunked_blocking(C, M, P, nr * w, unit) if kchunk else blocking(C, M, P, nr * w, unit)
    return [KernelCall(src, [x, Param(packed), bias, y, Scratch(C * pb), N, C, M, P, pb, rg, *kc, *(pixels or ()),
                             *gather_args, *extra], note(node))]


@part_space("Conv", "packed_pointwise")
def packed_part_space(node: Node, target: Target) -> tuple[int, int]:
    """Pixels, in whole strips (``NR`` vectors): a part's strips and tail are the whole layer's."""
    return int(np.prod(node.outputs[0].shape[2:], dtype=np.int64)), packed_tile(target)[1] * target.vector_width


def packed_pointwise_bf16_applies(node: Node, target: Target) -> bool:
    """``precision="bf16"``: every group-1 1x1, stride-1, unpadded float32 Conv with constant weights."""
    x, wt = node.inputs[0], node.inputs[1]
    return (runs_bf16(node, target) and is_pointwise(node) and x.dtype == np.float32
            and wt.dtype == np.float32 and wt.is_const)


@variant("Conv", name="packed_pointwise_bf16", priority=2, applies=packed_pointwise_bf16_applies)
def gen_packed_pointwise_bf16(node: Node, target: Target) -> list[KernelCall]:
    """``gen_packed_pointwise`` on bf16 pairs: weights rounded at compile time, inputs in the strip copy."""
    x, wt, bias, y, N, C, M, P = pointwise_operands(node)
    mr, nr = packed_tile(target)
    w = target.vector_width
    src, extra = packed_pointwise_source(node, w, mr, nr, M % mr, bf16=True)
    packed = pack_weights_bf16(wt.const.reshape(M, C), mr)
    K = (C + 1) // 2
    pb = block_pixels(K, P, nr * w)
    return [KernelCall(src, [x, Param(packed), bias, y, Scratch(K * pb), N, C, M, P, pb, M, *extra], note(node))]
