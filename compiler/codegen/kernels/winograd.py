"""Winograd F(4x4, 3x3) convolution for stride-1, 3x3, dense float convs (plain NCHW in and out).

A 4x4 block of outputs (a *tile*) of one output channel is ``A^T [sum_c (G g_c G^T) * (B^T d_c B)] A``
with ``d_c`` the tile's 6x6 input patch of channel ``c``: 36 multiplies per tile and channel pair instead of
the direct convolution's 144 (4x fewer), plus the transforms, which are per tile and channel only.

The kernel works on *bands* of tile rows sized so the band's scratch stays in L2 (``band_rows``), or
grown to pad fewer tiles (``plan``):

1. the band's input rows are copied into a padded scratch ``pb[C][6][2][tiles * 4]``: for patch row ``r``,
   the rows of every tile one after the other, ``4 TX`` columns each, twice: from the padded row's column 0
   and from its column 4, so that tile ``t``'s patch column ``j`` is ``pb[..][0][4 t + j]`` (``j < 4``) or
   ``pb[..][1][4 t + j - 4]`` for every tile of the band, across tile rows: a vector of ``W`` tiles is four
   plain loads and in-lane 4x4 transposes (``quads``: the tiles in a fixed order within the vector), whatever
   the map's width (a 8x8 map's 2 tiles per row would otherwise waste 3/4 of an AVX2 vector). Where the second
   copy saves less than ``COPY_SAVING``, one copy ``pb[C][6][tiles * 4]`` with a dummy tile per row (whose
   columns 4-5 are the next tile's 0-1): 1/8 more tiles at 32 columns, 1/4 more at 16;
2. the input transform ``B^T d B`` (one ``vwbts`` call, ``simd_winograd``), ``W`` tiles per vector, into
   ``vb[36][C][T]`` (tiles contiguous; the sizes are literals in the kernel, so that the 36 planes are constant
   offsets from one pointer: with the sizes as arguments, 36 pointers were kept, spilled, and took as long as the
   arithmetic);
3. per ``MR`` output channels: 36 small GEMMs ``M[xi] (MR x T) = U[xi] (MR x C) @ V[xi] (C x T)`` on a
   register tile of ``MR`` channels x ``NR`` vectors of tiles (a broadcast weight per FMA; the tile from the
   register budget and the tiles it pads to, ``plan``; ``U`` the weights transformed and packed at compile
   time as ``[36][M / MR][C][MR]``), then the output transform
   ``A^T M A`` (one ``vwatl`` call) with the four columns of each tile transposed back (``vtrq``) into output rows of
   an output band ``ob[M][4][tiles * 4]``;
4. the band's output rows are copied into ``y`` with the bias and the fused epilogue (activations, residual
   Add) in registers, masked at the row's end.

A layer dilated vertically (``dilations = (d, 1)``, an audio model's time axis) is ``d`` undilated layers over
the input rows of each residue mod ``d``: output row ``p + d i`` reads input rows ``p - ph + d (i + ky)``. Its
tile rows are ``d`` phases of ``TYP`` each (``tile_rows``); the band copy reads a phase's rows ``d`` apart and
the output copy writes them ``d`` apart (the same kernel otherwise: no copy of the input, no other code).

Error: the transforms' constants (up to 8 in ``A``, 5 in ``B``, 1/24 in ``G``) amplify float32 rounding;
relative to each output's scale ``sum |w| |x| + |b|`` it measured 1.2-2.0e-6 on He-normal weights at 16-128
channels, and ``ERROR_BOUND`` (tested against a float64 reference) leaves 10x. ``applies`` chooses the
kernel per layer from the measured crossover (``winograd_applies``).
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

from cnnjit.ir import Node

from ..kernel import KernelCall, Param, Scratch, Target, form, note, variant
from ..parts import node_part, part_space, staged_split
from ..simd_winograd import TM, TP  # outputs per tile side, patch side
from .epilogue import Epilogue
from .simd_pointwise import conv_operands, conv_sizes
from .template import source

#: F(4x4, 3x3) (Lavin & Gray): input transform B^T (6x6), weight transform G (6x3), output transform A^T (4x6)
BT = np.array([[4, 0, -5, 0, 1, 0], [0, -4, -4, 1, 1, 0], [0, 4, -4, -1, 1, 0],
               [0, -2, -1, 2, 1, 0], [0, 2, -1, -2, 1, 0], [0, 4, 0, -5, 0, 1]], np.float64)
G = np.array([[1 / 4, 0, 0], [-1 / 6, -1 / 6, -1 / 6], [-1 / 6, 1 / 6, -1 / 6],
              [1 / 24, 1 / 12, 1 / 6], [1 / 24, -1 / 12, 1 / 6], [0, 0, 1]], np.float64)
AT = np.array([[1, 1, 1, 1, 1, 0], [0, 1, -1, 2, -2, 0], [0, 1, 1, 4, 4, 0], [0, 1, -1, 8, -8, 1]], np.float64)
#: the error bound, relative to each output's scale ``sum_c,taps |w| |x| + |b|``: measured at 1.2-2.0e-6 on
#: He-normal weights at 16-128 channels (tests/test_winograd.py)
ERROR_BOUND = 2e-5
#: bytes of a band's scratch (padded input, transformed input, GEMM results, output band): within L2
BAND_BYTES = 256 * 1024
#: ``plan`` grows a band up to this when that pads fewer tiles: a band of one tile row computes its row's
#: dummy tile and rounds up to whole register tiles (16 tiles a row: 17 -> 24 or 32), which cost more than
#: the larger scratch's L2 misses (AVX2, the CRNNs' layers: 32->64 at 16x64 0.35 -> 0.26 ms, 24->24 at
#: 32x128 0.52 -> 0.35 ms, 64->256 at 8x32 -9%; 96->96 at 52x52 pads as much either way and keeps its band)
BAND_MAX_BYTES = 1024 * 1024
#: ... but takes the smallest scratch among the bands within this factor of the fewest tiles (in the CRNN,
#: 32->64 at 16x64 in bands of 2 rows (80 tiles, 440 KB) ran faster than in one of 4 (72 tiles, 880 KB))
BAND_SLACK = 1.125
#: ``plan`` copies each band row twice (no dummy tile per row: the copy from column 4 gives the tiles' columns
#: 4-5) when that lowers the GEMMs' issue cost by at least this fraction: the second copy and its zeroing cost
#: the small layers as much as 1/8 of the tiles (AVX2, per call against one copy: 16->16 at 32x32 (72 -> 64
#: tiles, 3% of the cost) 1.05-1.2x slower; 32->32 at 16x16 (24 -> 16 tiles, 27%) ~0.85x)
COPY_SAVING = 0.2
#: the fewest input (and output) channels, and the least ratio of GEMM instructions saved (``slot_ratio``)
#: worth the transforms: the measured crossover (see ``winograd_applies``)
MIN_CHANNELS = 8
MIN_RATIO = 0.9
#: the crossover at these (vector width, vector registers) as a multiple of ``MIN_RATIO`` (AVX2's; an AVX2 host
#: compiling at width 16, 8 registers of 16 lanes, keeps 1.0: unmeasured there). At 16 lanes a 13x13 map's 16
#: tiles are one vector, the register tile 8-12 channels x 1 vector (a broadcast and a tile load per 8-12 FMAs),
#: and ``cvec`` reaches 85-88% of the FMA peak there. Zen 5 (AVX-512), per call in the model, best of 3-4 x
#: 10-20 runs, ``benchmarks/profile_ab.py --without Conv:winograd_f4``, load ~4.5: losses at slot ratio 1.17-1.22
#: (13x13: the ddddocr detector's 192->192 645 us against cvec's 496, 96->96 165 against 126, SqueezeNet's
#: 64->256 250 against 222 and 48->192 152 against 125); wins from 1.58 (96->96 at 26x26 350 against
#: simd_conv's 718, 32->32 at 16x16 (1.78) 13 against 26, 64->256 at 8x32 (1.78) 312-334 against 354, 48->192 at
#: 16x64 (2.40) 2.6x, 96->96 at 52x52 (1.81) 2.9x)
WIDE_RATIO = {(16, 32): 1.5}
#: at these (vector width, vector registers) (AVX-512's: an AVX2 host at width 16 keeps the rule of 8 lanes): the
#: transformed weights' bytes (``36 C M`` floats, 4x the direct kernel's) between which a layer of one vector of
#: tiles (``plan``'s ``tiles`` at most the width: each weight is broadcast for one FMA) needs ``STREAM_RATIO``.
#: Zen 5 (AVX-512, 1 MiB L2, 32 MiB L3), per call in the real models (held-out, whose weights do not stay
#: cached between runs), ``benchmarks/profile_ab.py --heldout DIR --without winograd_streamed``, load 2-3.6,
#: winograd_f4's time over cblock's: open_nsfw's 128->128 at 14x14 (2.4 MB) 1.15-1.19, malviz's 256->256 at
#: 14x14 (9.4 MB) 1.02-1.12, capspot's 256->256 and 128->256 at 15x15 0.95-1.03; but tumor_vgg16's 512->512 at
#: 15x15 (37.7 MB, beyond L3: streamed from memory at 21 GB/s where the 2.4 MB ran at 8) 0.41-0.65. In a small
#: model whose weights stay in L3 Winograd wins from 13x13 at 128 channels (``benchmarks/winograd_wide.py``):
#: the rule is about weights read cold. Within L2 (64 channels) it wins either way; from 2 MiB since 96 channels
#: (1.3 MB) were measured only with the weights in L3 (14x14 1.66x for Winograd).
WIDE_STREAM_BYTES = {(16, 32): (2 << 20, 16 << 20)}
#: ... unless its slot ratio reaches this: 64->256 at 8x32 (2.4 MB, 1.78) 312-334 us against 354 (h-av22, in the
#: model, see ``WIDE_RATIO``), where 14x14 (1.36) and 15x15 (1.56) lost or tied
STREAM_RATIO = 1.7
#: the earlier weight layout of ``winograd_f4``: ``[36][M / mr][C][mr]`` read per ``mr`` channels plane by plane,
#: 36 streams of ``4 mr C`` bytes each (4 KB at 128 channels: a page, where the hardware prefetcher stops)
PLANES_FIRST = form("winograd_planes_first", "winograd_f4's transformed weights plane by plane ([36][M/mr][C][mr]), "
                    "not in its GEMMs' order")
#: the "before" of ``WIDE_STREAM_BYTES`` (a benchmark's A/B: ``heldout.py --before winograd_streamed``)
STREAMED = form("winograd_streamed", "winograd_f4 on a band of one tile vector whatever its weights' bytes "
                "(before WIDE_STREAM_BYTES)")


def transform_weights(w: np.ndarray, mr: int, blocks_first: bool = False) -> np.ndarray:
    """``U = G g G^T`` per (output, input) channel pair in float64, packed as ``[36][M / mr][C][mr]``
    (``blocks_first``: ``[M / mr][36][C][mr]``, each block's weights one stream)."""
    M, C = w.shape[:2]
    u = np.einsum("ki,mcij,lj->klmc", G, w.astype(np.float64), G).reshape(TP * TP, M // mr, mr, C)
    return np.ascontiguousarray(u.transpose(*((1, 0) if blocks_first else (0, 1)), 3, 2), dtype=np.float32).reshape(-1)


def quads(w: int, at: str) -> str:
    """The columns 0-3 of the ``w`` tiles whose patch rows start 4 apart from ``zb[at]``: four plain loads
    and ``vtrq`` (in-lane 4x4 transposes). Tile ``t0 + (w / 4) j + q`` lands in lane ``4 q + j``: every
    stage keeps that order within a vector of tiles (the GEMMs are lane-wise) and the output transform's
    ``vtrq`` undoes it."""
    return f"vtrq{w}(" + ", ".join(f"vload{w}(zb, {at} + {j * w})" for j in range(4)) + ")"


def _row_copy(ind: str, dst: str, src: str, n: str, w: int) -> list[str]:
    """Lines copying ``n`` input floats from ``xb[src]`` to ``zb[dst]``: whole vectors unmasked (masked stores
    are slow on AMD), the tail by element."""
    return [f"{ind}for i0 in range(0, {n} - {w - 1}, {w}):",
            f"{ind}    vstore{w}(zb, {dst} + i0, vload{w}(xb, {src} + i0))",
            f"{ind}for x in range({n} // {w} * {w}, {n}):",
            f"{ind}    zb[U({dst} + x)] = xb[U({src} + x)]"]


def _row_copy_short(ind: str, dst: str, src: str, n: str) -> list[str]:
    """``_row_copy`` for the short rows of a small map (``winograd_f4_channels``): 4-float vectors, the last one
    ending at the row's end (overlapping the one before), elements only when the row is shorter than 4."""
    return [f"{ind}if {n} >= 4:",
            f"{ind}    for i0 in range(0, {n} - 4, 4):",
            f"{ind}        vstore4(zb, {dst} + i0, vload4(xb, {src} + i0))",
            f"{ind}    vstore4(zb, {dst} + {n} - 4, vload4(xb, {src} + {n} - 4))",
            f"{ind}else:",
            f"{ind}    for x in range({n}):",
            f"{ind}        zb[U({dst} + x)] = xb[U({src} + x)]"]


def tile_rows(node: Node) -> tuple[int, int]:
    """``(TYP, TY)``: tile rows per row phase and in all (``d`` phases of ``TYP`` for a vertical dilation
    ``d``; one phase of ``ceil(OH / 4)`` undilated). A phase's last tile row may end past ``OH`` (dropped)."""
    d, oh = node.attrs["dilations"][0], node.outputs[0].shape[2]
    rows = -(-oh // d)  # output rows of the longest phase (phase 0)
    typ = -(-rows // TM)
    return typ, d * typ


def _row_of(r: int | str, dilated: bool) -> str:
    """The band's tile row ``ty0 + tyl``'s ``r``-th row (patch or output) before the pad: ``4 ty + r``, or with a
    vertical dilation ``DH`` the phase's ``p + DH (4 t + r)`` (``p, t = divmod(ty, TYP)``)."""
    if not dilated:
        return f"4 * (ty0 + tyl) + {r}"
    return f"(ty0 + tyl) // TYP + DH * (4 * ((ty0 + tyl) % TYP) + {r})"


def winograd_source(node: Node, w: int, mr: int, nr: int, T: int, band_range: bool = False,
                    copies: int = 1, lanes_channels: bool = False, planes_first: bool = False,
                    stage: str = "") -> tuple[str, list]:
    """The kernel for ``node`` at ``w`` lanes with an ``mr`` x ``nr`` register tile (channels x vectors of
    tiles), bands of ``T`` tiles and ``copies`` of the padded input (1: a dummy tile per row; ``plan``); the
    sizes are arguments, and the input channels and ``T`` literals too in the offsets of the transforms' 36
    planes. ``band_range``: the kernel takes ``TY0, TY1`` after ``T`` and computes the tile rows ``TY0..TY1``
    only (one thread's part, ``parts.py``). A vertically dilated layer's kernel takes ``DH, TYP`` last
    (``tile_rows``). ``lanes_channels``: the GEMMs' vectors hold ``w`` output channels (``mr = nr w``: ``nr``
    channel vectors) by 4 tiles, each tile's transformed input broadcast, the results stored as the tiles' rows
    (``vscatter4t``): ``winograd_f4_channels``, for maps of a few tiles (``plan_channels``). The transformed
    weights are read as ``transform_weights(blocks_first=True)`` packs them, in the GEMMs' order (per ``mr``
    channels, the 36 planes): one stream; ``planes_first``: the earlier layout (``PLANES_FIRST``).

    ``stage`` (a layer split over threads in two steps, ``winograd_stages``; one band of all tile rows):
    ``"transform"`` does steps 1-2 only, for the input channels ``C0..C1`` (arguments after ``T``), into the
    shared scratch ``zb``; ``"gemm"`` does steps 3-4 only, for the output channels ``M0..M1`` (multiples of
    ``mr``), reading the transformed input from ``zb`` and keeping its GEMM results and output band in its own
    scratch (``qb, qo`` after ``T``, then ``M0, M1``; ``qb`` is the same arena as ``zb``)."""
    C = node.inputs[0].shape[1]
    dilated = node.attrs["dilations"][0] > 1
    L = 4 if lanes_channels else nr * w  # tiles per register tile row (nr vectors)
    tw = 4 if lanes_channels else w  # tiles per vector of the transforms (4: in order, ``quads``)
    epi = Epilogue(node, w, True)
    i20, i24, i28 = " " * 20, " " * 24, " " * 28
    tr, gm = stage in ("", "transform"), stage in ("", "gemm")  # which steps the kernel does
    cs = "C0, C1" if stage == "transform" else "C"  # its input channels
    m0, m1, dm = ("M0", "M1", " - M0") if stage == "gemm" else ("0", "M", "")  # its output channels
    lines = [
        "def kernel(xb, xo, ub, uo, bb, bo, yb, yo, zb, zo, N, C, H, Win, M, OH, OW, ph, pw, TX, TY, RB, T"
        + (", TY0, TY1" if band_range else "") + {"transform": ", C0, C1", "gemm": ", qb, qo, M0, M1"}.get(stage, "")
        + epi.signature() + (", DH, TYP" if dilated else "") + "):",
        f"    RL = 4 * (TX + {2 - copies})",  # a tile row's columns in the band (one copy: a dummy tile)
        "    LB = 4 * T + 8",  # one (channel, patch row, copy) of the band, with slack for the last strided loads
        # the scratch (``zb`` from ``zo``, see ``scratch_elems``): padded input (one or two copies),
        # transformed input, GEMM results, output band
        "    po = zo",
        f"    vo = po + C * {6 * copies} * LB",
        "    mo = qo" if stage == "gemm" else "    mo = vo + 36 * C * T",
        f"    oo = mo + 36 * {mr} * T",
        # zeros once: the pad columns left and right of every row stay zero (data is only ever copied between
        # them), and past a band's tiles (padding tiles, whose outputs are dropped) the values stay finite
        *([f"    for i in range(C0 * {6 * copies} * LB, C1 * {6 * copies} * LB):" if stage else
           f"    for i in range(C * {6 * copies} * LB):", "        zb[U(po + i)] = np.float32(0.0)"] if tr else []),
        # each band row from the padded row's column 0 and (two copies) from its column 4 (the tiles' columns
        # 4-5 at the offsets of their columns 0-1): where (d0, d4) and from which input column (s0, s4), how many
        "    d0, s0 = pw, 0",
        "    n0 = min(Win, RL - pw)",
        *(["    d4, s4 = max(0, pw - 4), max(0, 4 - pw)", "    n4 = min(Win - s4, RL - d4)"] if copies == 2 else []),
        "    for n in range(N):",
        f"        for ty0 in range({'TY0, TY1' if band_range else '0, TY'}, RB):",
        f"            rb = min(RB, {'TY1' if band_range else 'TY'} - ty0)",
        f"            nt = rb * (TX + {2 - copies})",
        f"            ntp = (nt + {L - 1}) // {L} * {L}",
    ]
    lines += [
        # 1. the band's padded input rows
        f"            for c in range({cs}):",
        "                xc = xo + (n * C + c) * H * Win",
        "                for r in range(6):",
        f"                    base = po + (c * 6 + r) * {copies} * LB",
        "                    for tyl in range(rb):",
        f"                        ih = {_row_of('r', dilated)} - ph",
        "                        ro = base + tyl * RL",
        "                        if ih < 0 or ih >= H:",
        "                            for x in range(RL):",
        "                                zb[U(ro + x)] = np.float32(0.0)",
        *(["                                zb[U(ro + LB + x)] = np.float32(0.0)"] if copies == 2 else []),
        "                            continue",
        "                        xr = xc + ih * Win",
        *(_row_copy_short(" " * 24, "ro + d0", "xr + s0", "n0") if lanes_channels else
          _row_copy(" " * 24, "ro + d0", "xr + s0", "n0", w)),
        *((_row_copy_short(" " * 24, "ro + LB + d4", "xr + s4", "n4") if lanes_channels else
           _row_copy(" " * 24, "ro + LB + d4", "xr + s4", "n4", w)) if copies == 2 else []),
        # 2. the input transform, w tiles per vector
        f"            for c in range({cs}):",
        f"                for t0 in range(0, ntp, {tw}):",
        f"                    pc = po + c * {6 * copies} * LB + 4 * t0",
        *[ln for r in range(TP) for ln in (
            f"{i20}d{r}_0, d{r}_1, d{r}_2, d{r}_3 = {quads(tw, f'pc + {copies * r} * LB')}",
            f"{i20}d{r}_4, d{r}_5, dx{r}_2, dx{r}_3 = "
            + quads(tw, f"pc + {2 * r + 1} * LB" if copies == 2 else f"pc + {r} * LB + 4"))],
        # B^T d B into the 36 planes, at constant offsets from one pointer (simd_winograd)
        f"{i20}vwbts{tw}(zb, vo + c * T + t0, {C * T}, ("
        + ", ".join(f"d{r}_{j}" for r in range(TP) for j in range(TP)) + "))",
    ] if tr else []
    if not gm:
        return source(lines), epi.args
    lines += [
        # 3. per mr output channels: the 36 GEMMs, then the output transform into the output band
        f"            for m in range({m0}, {m1}, {mr}):",
        "                for xi in range(36):",
        "                    uw = uo + (xi * M + m) * C" if planes_first else
        f"                    uw = uo + (m * 36 + xi * {mr}) * C",
        *(_gemm_channels(w, mr // w) if lanes_channels else [
            f"                    for p0 in range(0, ntp, {L}):",
            *[f"{i24}a{i}_{j} = vzero{w}()" for i in range(mr) for j in range(nr)],
            "                        vi = vo + xi * C * T + p0",
            "                        wi = uw",
            "                        for c in range(C):",
            *[f"{i28}v{j} = vload{w}(zb, vi + {j * w})" for j in range(nr)],
            *[ln for i in range(mr) for ln in (f"{i28}b = vbcast{w}(ub[U(wi + {i})])",
                                               *[f"{i28}a{i}_{j} = vfma{w}(b, v{j}, a{i}_{j})" for j in range(nr)])],
            "                            vi += T",
            f"                            wi += {mr}",
            *[f"{i24}vstore{w}(zb, mo + (xi * {mr} + {i}) * T + p0 + {j * w}, a{i}_{j})" for i in range(mr)
              for j in range(nr)]]),
        f"                for i in range({mr}):",
        f"                    orow = oo + (m{dm} + i) * 16 * T",
        f"                    for t0 in range(0, ntp, {tw}):",
        f"{i24}mq = mo + i * T + t0",
        # A^T m A of the 36 planes (simd_winograd)
        f"{i24}" + ", ".join(f"o{k}_{l}" for k in range(TM) for l in range(TM)) + f" = vwatl{tw}(zb, mq, {mr * T})",
    ]
    for r in range(TM):  # the tiles' four columns back into 4 w-lane vectors of one output row (``vtrq``)
        lines += [f"{i24}e0, e1, e2, e3 = vtrq{tw}(o{r}_0, o{r}_1, o{r}_2, o{r}_3)",
                  f"{i24}orr = orow + {r} * 4 * T + 4 * t0",
                  *[f"{i24}vstore{tw}(zb, orr + {j * tw}, e{j})" for j in range(4)]]
    # 4. the band's output rows into y: bias and the epilogue in registers
    idx = "((n * M + m) * OH + oh) * OW + ow0"
    lines += [
        "            for m in range(M0, M1):" if dm else "            for m in range(M):",
        f"                bv = vbcast{w}(bb[bo + m])",
        "                for tyl in range(rb):",
        "                    for r in range(4):",
        f"                        oh = {_row_of('r', dilated)}",
        "                        if oh >= OH:",
        "                            break",
        f"                        src = oo + ((m{dm}) * 4 + r) * 4 * T + tyl * RL" if dm else
        "                        src = oo + (m * 4 + r) * 4 * T + tyl * RL",
        f"                        for ow0 in range(0, OW - {w - 1}, {w}):",  # whole vectors unmasked
        f"                            acc = vadd{w}(vload{w}(zb, src + ow0), bv)",
        *epi.vector(" " * 28, "acc", idx, w, False),
        f"                            vstore{w}(yb, yo + {idx}, acc)",
        *epi.after(" " * 28, [f"for j in range({w}):"], f"{idx} + j"),
        f"                        ow0 = OW // {w} * {w}",
        "                        if ow0 < OW:",
        "                            cnt = OW - ow0",
        f"                            acc = vadd{w}(vloadn{w}(zb, src + ow0, cnt), bv)",
        *epi.vector(" " * 28, "acc", idx, w, True),
        f"                            vstoren{w}(yb, yo + {idx}, acc, cnt)",
        *epi.after(" " * 28, ["for j in range(cnt):"], f"{idx} + j"),
    ]
    return source(lines), epi.args


def _gemm_channels(w: int, mv: int) -> list[str]:
    """``winograd_f4_channels``' GEMM of one Winograd plane ``xi`` for ``mv w`` output channels from ``m``: per 4
    tiles (in order: its transforms run on vectors of 4 tiles),
    ``mv`` channel vectors of transformed weights by each tile's input broadcast, ``4 mv`` accumulators; each
    channel vector's four tiles stored as rows of the results' channel planes (``vscatter4t``), the layout
    the output transform reads."""
    i24, i28 = " " * 24, " " * 28
    return [
        "                    for p0 in range(0, ntp, 4):",
        *[f"{i24}a{i}_{t} = vzero{w}()" for i in range(mv) for t in range(4)],
        "                        vi = vo + xi * C * T + p0",
        "                        wi = uw",
        "                        for c in range(C):",
        *[f"{i28}u{i} = vload{w}(ub, wi + {i * w})" for i in range(mv)],
        *[ln for t in range(4) for ln in (f"{i28}b = vbcast{w}(zb[U(vi + {t})])",
                                          *[f"{i28}a{i}_{t} = vfma{w}(u{i}, b, a{i}_{t})" for i in range(mv)])],
        "                            vi += T",
        f"                            wi += {mv * w}",
        *[f"{i24}vscatter4t{w}(zb, mo + (xi * {mv * w} + {i * w}) * T + p0, T, "
          + ", ".join(f"a{i}_{t}" for t in range(4)) + ")" for i in range(mv)]]


#: the most output channels per GEMM register tile with 16 vector registers (AVX2): 12 (all that fit beside one
#: vector of tiles) ran 1.2-1.6x slower than 8 wherever the channels offered both (AVX2, per-call times
#: interleaved: 96->96 at 26x26 980 -> 615 us, 24->24 at 104x104 940 -> 745, 12->24 at 208x208 2450 -> 1860,
#: 48->48 at 104x104 3450 -> 2570, 192->192 at 13x13 1710 -> 1310, 24->24 at 32x128 360 -> 294; the 16-, 32-
#: and 64-channel layers had 8 already); with 32 registers (AVX-512) 12 leaves room and stays
MAX_TILE_CHANNELS = 8
MAX_TILE_CHANNELS_WIDE = 12
#: the most vectors of tiles per GEMM register tile
MAX_TILE_VECTORS = 4


def gemm_tiles(target: Target, m: int) -> list[tuple[int, int]]:
    """The GEMM register tiles ``(MR, NR)`` that fit: ``MR`` output channels dividing ``m`` (at most
    ``MAX_TILE_CHANNELS``, ``MAX_TILE_CHANNELS_WIDE`` with 32 or more registers) by ``NR`` vectors of tiles
    (at most ``MAX_TILE_VECTORS``), the ``MR x NR`` accumulators, the ``NR`` tile vectors and one broadcast
    weight within ``Target.vector_registers``."""
    most = MAX_TILE_CHANNELS_WIDE if target.vector_registers >= 32 else MAX_TILE_CHANNELS
    out = [(mr, nr) for nr in range(1, MAX_TILE_VECTORS + 1) for mr in range(1, most + 1)
           if m % mr == 0 and mr * nr + nr + 1 <= target.vector_registers]
    return out or [(1, 1)]


def issue_cost(mr: int, nr: int) -> float:
    """Issue slots per multiply-add of an ``mr x nr`` register tile: each channel step issues ``mr * nr`` FMAs,
    ``mr`` weight broadcasts (the layer's transformed weights for ``mr`` channels: L1) and ``nr`` tile-vector
    loads, counted twice (they stream the band's transformed input, ``36 x C x T``, from L2, once per ``mr``
    channels): ``(mr nr + mr + 2 nr) / (mr nr)``. With the tiles a tile shape pads to, it ranks the tiles as
    measured (AVX2, per call in a model, one thread, interleaved): ResNet-8's 16->16 at 32x32 4x3 41 us, 4x2
    43-46, 8x1 52-54, 2x4 77; 32->32 at 16x16 4x3 35-36, 8x1 50-52, 4x2 60-62 (32 tiles against 24); the
    detector's 96->96 at 52x52 6x2 2.55 ms, 4x2 2.67, 4x3 3.8 (14 tiles a row pad to 24); 24->24 at 104x104 6x2
    and 4x2 0.84-0.88 ms, 8x1 1.07, 4x3 1.07; 64->64 at 20x20 4x2 196 us, 2x4 and 8x1 210-220, 4x3 276."""
    return (mr * nr + mr + 2 * nr) / (mr * nr)


class Plan(NamedTuple):
    """``plan``'s choice for a layer (see there)."""

    mr: int
    nr: int
    rb: int
    T: int
    tiles: int
    copies: int


def plan(node: Node, target: Target) -> Plan:
    """(MR, NR, RB, T, tiles, copies): the register tile (channels x vectors of tiles), the band
    (``band_rows``), the tiles the GEMMs compute (padded to whole register tiles per band, dummy tiles
    included) and the copies of the padded input (``COPY_SAVING``).

    Per register tile (``gemm_tiles``), its band: among the bands within ``BAND_SLACK`` of its fewest tiles,
    the smallest scratch. Then the tile whose padded tiles cost the fewest instructions (``issue_cost``):
    wider tiles issue fewer loads per FMA but pad a small map more (AVX2, effective GFLOP/s with one against
    two vectors: 64->64 at 8x8 (6 tiles) 79 against 41, 32->32 at 16x16 89 against 65, 192->192 at 13x13 90
    against 65)."""
    C, M = node.inputs[0].shape[1], node.inputs[1].shape[0]
    TX, TY = -(-node.outputs[0].shape[3] // TM), tile_rows(node)[1]
    best = {}
    for copies in (1, 2):
        row = TX + 2 - copies  # tiles a band row computes
        for mr, nr in gemm_tiles(target, M):
            step = nr * target.vector_width
            lo = band_rows(C, M, mr, row, TY, step, copies)[0]
            hi = band_rows(C, M, mr, row, TY, step, copies, max(BAND_BYTES, BAND_MAX_BYTES))[0]
            cands = []
            for rb in range(lo, hi + 1):
                T = -(-rb * row // step) * step
                full, rest = divmod(TY, rb)
                cands.append(Plan(mr, nr, rb, T, full * T + (-(-rest * row // step) * step if rest else 0), copies))
            fewest = min(c.tiles for c in cands)  # within BAND_SLACK of the fewest tiles, the smallest scratch
            near = [c for c in cands if c.tiles <= fewest * BAND_SLACK]
            pick = min(near, key=lambda c: scratch_elems(C, M, c.mr, c.T, copies))
            key = (pick.tiles * issue_cost(mr, nr), scratch_elems(C, M, mr, pick.T, copies))
            if copies not in best or key < best[copies][0]:
                best[copies] = (key, pick)
    two = best[2][0][0] <= (1 - COPY_SAVING) * best[1][0][0]
    return best[2 if two else 1][1]


def band_rows(C: int, M: int, mr: int, TX: int, TY: int, step: int, copies: int = 1,
              limit: int | None = None) -> tuple[int, int]:
    """(RB, T): tile rows per band (of ``TX`` tiles each) and the band's tile capacity (a multiple of
    ``step``, the register tile's tiles), with ``copies`` of the padded input: as many rows as keep the
    scratch within ``limit`` bytes (default ``BAND_BYTES``), or within a quarter of the transformed weights
    when they are larger (every band streams all of them: 192->192 at 13x13 with its 5.3 MB in 4 bands of one
    tile row ran at 36 effective GFLOP/s, in one band at 61), at least one row."""
    per_tile = 4 * (24 * copies * C + 36 * C + 16 * M + 36 * mr)
    budget = max(BAND_BYTES if limit is None else limit, 4 * TP * TP * C * M // 4)
    rb = max(1, min(TY, budget // (per_tile * TX)))
    return rb, -(-rb * TX // step) * step


def scratch_elems(C: int, M: int, mr: int, T: int, copies: int = 1) -> int:
    """The kernel's scratch in floats for a band of ``T`` tiles: the padded input ``C x 6 x copies x (4 T + 8)``, the
    transformed input ``36 x C x T``, the GEMM results ``36 x mr x T`` and the output band ``M x 16 x T``."""
    return C * 6 * copies * (4 * T + 8) + 36 * C * T + 36 * mr * T + M * 16 * T


def winograd_ok(node: Node) -> bool:
    """What the kernel computes: a dense (group 1) 3x3, stride-1 float32 Conv with constant weights on a 4-D
    input, undilated or dilated vertically only (``tile_rows``)."""
    x, wt = node.inputs[0], node.inputs[1]
    a = node.attrs
    return (x.dtype == np.float32 and wt.dtype == np.float32 and wt.is_const and len(x.shape) == 4
            and tuple(a["kernel_shape"]) == (3, 3) and tuple(a["strides"]) == (1, 1)
            and a["dilations"][1] == 1 and a["group"] == 1)


def multiply_ratio(node: Node, target: Target) -> float:
    """The direct convolution's multiplies over the Winograd kernel's (``plan``'s tiles): how much less the
    GEMMs do."""
    OH, OW = node.outputs[0].shape[2:]
    return 9 * OH * OW / (TP * TP * plan(node, target).tiles)


def slot_ratio(node: Node, target: Target) -> float:
    """``multiply_ratio`` over the issue slots per multiply-add of ``plan``'s register tile (``issue_cost``):
    the GEMMs' instructions saved against a direct kernel that issues about one per multiply-add. On a short
    or narrow map the tiles are few (2x40: 4-row tiles half padding, 16 tiles padded to whole register tiles),
    so the register tile is narrow and each FMA also pays for a weight broadcast and a tile load."""
    p = plan(node, target)
    return multiply_ratio(node, target) / issue_cost(p.mr, p.nr)


def winograd_applies(node: Node, target: Target) -> bool:
    """``winograd_ok``, with at least ``MIN_CHANNELS`` input and output channels and at least ``MIN_RATIO``
    of the GEMM instructions saved (``slot_ratio``): the measured crossover (``benchmarks/winograd.py
    --short``, AVX2, time of the variant the table chooses without it over winograd_f4's, best of 15-21
    interleaved, load 6-13; slot ratio in brackets). Below it: 480->60 at 2x40 (0.68) 0.67-0.68x,
    128->128 at 2x40 (0.63) 0.66-0.75x, 256->256 at 2x20 (0.56) 0.75-0.87x, 128->128 and 256->256 at 7x7
    (0.68) 0.79-0.81x, 512->512 at 7x7 (0.68) 0.93x, 32->32 at 8x8 (0.89) 0.77-0.86x, 64->64 at 8x8 (0.89)
    0.95-1.06x. Around it a wash: 64->64 at 2x80 (0.91) 1.10-1.14x, 128->128 at 3x40 (0.94) 0.97x, the
    pruned ResNet's 61->61 at 38x16 (0.95, one channel per register tile) 0.80x and 122->122 at 19x8 (0.95)
    1.19x. Above: 64->257 at 36x36 (1.04) 1.24x, 480->60 at 4x40 and 96->96 at 3x80 (1.36) 1.7x, 192->192 at
    13x13 (1.44) 3.3x, 96->96 at 52x52 (1.77) 2.9x, 8->8 and 16->16 at 32x32 (1.94) 1.2x and 1.6x. (The
    multiply ratio alone, the rule before, was 1.25-2.0 for the losses above: their alternatives, ``cblock``
    and the padded-row ``simd_conv``, run at 65-110 GFLOP/s where ``cvec`` ran at 35-40.) At 16 lanes the
    crossover is ``WIDE_RATIO`` times higher, and ``STREAM_RATIO`` for a layer of one tile vector whose transformed
    weights' bytes are in ``WIDE_STREAM_BYTES``' window (``streams_weights``; both measured on Zen 5: see there)."""
    if not winograd_ok(node):
        return False
    C, M = node.inputs[0].shape[1], node.inputs[1].shape[0]
    least = MIN_RATIO * WIDE_RATIO.get((target.vector_width, target.vector_registers), 1.0)
    if streams_weights(node, target):
        least = max(least, STREAM_RATIO)
    return min(C, M) >= MIN_CHANNELS and slot_ratio(node, target) >= least


def streams_weights(node: Node, target: Target) -> bool:
    """Whether ``plan``'s tiles, all bands together, are one vector while the transformed weights' bytes are
    within ``WIDE_STREAM_BYTES``' window for the target: the GEMMs wait on the weights (see there)."""
    window = WIDE_STREAM_BYTES.get((target.vector_width, target.vector_registers))
    if window is None or target.uses(STREAMED):
        return False
    C, M = node.inputs[0].shape[1], node.inputs[1].shape[0]
    return window[0] < 4 * TP * TP * C * M <= window[1] and plan(node, target).tiles <= target.vector_width


@variant("Conv", name="winograd_f4", priority=55, applies=winograd_applies)
def gen_winograd(node: Node, target: Target) -> list[KernelCall]:
    band = node_part(node)  # a part of a layer split over threads: its bands of tile rows (parts.py)
    return _kernel_call(node, target, plan(node, target), band)


def _kernel_call(node: Node, target: Target, p: Plan, band: tuple[int, int] | None,
                 lanes_channels: bool = False) -> list[KernelCall]:
    """The kernel call of ``node`` on plan ``p`` (``band``: a thread's tile rows; see ``winograd_source``)."""
    C, M, wt = node.inputs[0].shape[1], node.inputs[1].shape[0], node.inputs[1]
    planes_first = not lanes_channels and target.uses(PLANES_FIRST)
    src, extra = winograd_source(node, target.vector_width, p.mr, p.nr, T=p.T, band_range=band is not None,
                                 copies=p.copies, lanes_channels=lanes_channels, planes_first=planes_first)
    u = Param(transform_weights(wt.const, p.mr, not planes_first))
    args = _args(node, u, Scratch(scratch_elems(C, M, p.mr, p.T, p.copies)), p.rb, p.T, [*(band or ()), *extra])
    return [KernelCall(src, args, note(node))]


def _args(node: Node, u: Param, scratch: Scratch, rb: int, T: int, more: list) -> list:
    """A kernel call's arguments (``winograd_source``'s signature): ``more`` after ``T``."""
    x, _, bias, y = conv_operands(node)
    a = node.attrs
    N, C, H, Win, M, OH, OW = conv_sizes(node)
    (TYP, TY), TX = tile_rows(node), -(-OW // TM)
    return [x, u, bias, y, scratch, N, C, H, Win, M, OH, OW, a["pads"][0], a["pads"][1], TX, TY, rb, T, *more,
            *((a["dilations"][0], TYP) if a["dilations"][0] > 1 else ())]


#: ``winograd_stages`` applies where the shared scratch (the whole map's padded and transformed input) is at
#: most this many bytes: the GEMM parts stream the transformed input from L2 (or L3) once per register tile
STAGED_MAX_BYTES = 2 * 1024 * 1024


@staged_split("Conv", "winograd_f4")
def winograd_stages(node: Node, target: Target, parts: int, ranges) -> list[list[KernelCall]] | None:
    """``node`` split over threads in two steps of ``parts`` parts, so that no part repeats another's work: the
    whole map's input transform (one band of all tile rows) over ranges of input channels into a shared scratch,
    then the GEMMs and output transform over ranges of output channels (multiples of the register tile's
    ``mr``) reading it (``winograd_source``'s ``stage``); or None where the shared scratch exceeds
    ``STAGED_MAX_BYTES`` or the channels do not divide (``ranges(n, align)``: balanced ranges or None). The
    per-tile arithmetic is the whole layer's: bit-identical to one thread. (Channel halves each transform the
    whole input: the ddddocr detector's 96 -> 96 at 26x26 1.18-1.29x the whole layer in all.)"""
    if node_part(node) is not None:
        return None
    p, w = plan(node, target), target.vector_width
    C, M, OW = node.inputs[0].shape[1], node.inputs[1].shape[0], node.outputs[0].shape[3]
    TY, L = tile_rows(node)[1], p.nr * w
    T = -(-TY * (-(-OW // TM) + 2 - p.copies) // L) * L  # one band: every tile row
    shared = C * 6 * p.copies * (4 * T + 8) + 36 * C * T
    ins, outs = ranges(C, 1), ranges(M, p.mr)
    if 4 * shared > STAGED_MAX_BYTES or not ins or not outs:
        return None
    ins, outs = ins[:parts], outs[:parts]
    planes_first = target.uses(PLANES_FIRST)
    u, sh, tag = Param(transform_weights(node.inputs[1].const, p.mr, not planes_first)), Scratch(shared), note(node)
    calls = []
    for stage, rngs, n in (("transform", ins, C), ("gemm", outs, M)):
        src, extra = winograd_source(node, w, p.mr, p.nr, T=T, copies=p.copies, planes_first=planes_first, stage=stage)
        calls.append([KernelCall(src, _args(node, u, sh, TY, T, [*((lo, hi) if stage == "transform" else (
            Scratch(36 * p.mr * T + (hi - lo) * 16 * T), lo, hi)), *extra]),
            f"{tag} [{'input ' if stage == 'transform' else ''}channels {lo}:{hi} of {n}]", "winograd_f4")
            for lo, hi in rngs])
    return calls


@part_space("Conv", "winograd_f4")
def winograd_part_space(node: Node, target: Target) -> tuple[int, int]:
    """Tile rows (4 output rows each, of every row phase: ``tile_rows``), in whole bands: each part fills and
    transforms its own bands in its own scratch."""
    return tile_rows(node)[1], plan(node, target).rb


#: ``winograd_f4_channels``: the most channel vectors per GEMM register tile (4 tiles each: ``4 mv``
#: accumulators, ``mv`` weight vectors and a broadcast within the registers)
MAX_CHANNEL_VECTORS = 3
#: where it applies (``channels_applies``), from the measured crossover (AVX2, one layer with residual Add and
#: Relu per call, ``benchmarks/winograd.py --channels``): at least this many input channels (16->16 at 8x8:
#: 8.6 us against cblock's 7.3; 32->32 at 8x8 15.9 against 17.4, 64->64 36 against 54),
MIN_CHANNEL_INPUTS = 32
#: at least this multiply saving over the direct convolution (``9 OH OW / (36 x tiles)``, the tiles rounded up
#: to 4 per band: 64->64 at 4x4 (1 tile, 1.0) 30 us against cblock's 16.5; at 7x7 (3.06) 41 against 48, at 12x12
#: (3.0) 91 against 129 and winograd_f4's 128),
MIN_CHANNEL_RATIO = 3.0
#: at most this share of ``winograd_f4``'s tiles, per (vector width, vector registers) (its vectors of ``w``
#: tiles pad a map of few tiles: 8 lanes for 8x8's 4; AVX2, 32->32 at 16x16, 16 tiles either way, 49 us against
#: its 46; 4 lanes of 16 registers (x86), where neither pads 8x8, 1.20x winograd_f4's speed at 64->64 on 8x8,
#: 1.19x at 32->32, 1.05x on 12x12, 1.01x at 32->32 on 16x16); other targets (NEON's 32 registers, AVX-512: not
#: measured) the least of these,
MAX_CHANNEL_TILE_SHARE = {(8, 16): 0.75, (4, 16): 1.0}
#: and at most these bytes of transformed weights (``36 C M`` floats, 4x the direct kernel's, read once per
#: band: 128->128 at 8x8 (2.4 MB) 109 us against cblock's 208; larger ones not measured)
MAX_CHANNEL_WEIGHT_BYTES = 4 * 1024 * 1024


def plan_channels(node: Node, target: Target) -> Plan:
    """``winograd_f4_channels``' plan: ``mr = nr w`` output channels (``nr`` channel vectors, the most that
    divide the layer's channels within ``MAX_CHANNEL_VECTORS`` and the registers), bands within
    ``BAND_BYTES`` (``band_rows``), ``T`` the band's tiles rounded up to 4 (the transforms' vectors), and
    the copies of the padded input that give the fewest GEMM tiles (one copy on a tie); ``tiles``: the
    GEMMs' tiles over all bands."""
    C, M, w = node.inputs[0].shape[1], node.inputs[1].shape[0], target.vector_width
    TX, TY = -(-node.outputs[0].shape[3] // TM), tile_rows(node)[1]
    mv = max([v for v in range(1, MAX_CHANNEL_VECTORS + 1)
              if M % (v * w) == 0 and 5 * v + 1 <= target.vector_registers] or [1])
    best = None
    for copies in (1, 2):
        row = TX + 2 - copies
        rb, T = band_rows(C, M, mv * w, row, TY, 4, copies)
        full, rest = divmod(TY, rb)
        tiles = full * T + (-(-rest * row // 4) * 4 if rest else 0)
        if best is None or tiles < best.tiles:
            best = Plan(mv * w, mv, rb, T, tiles, copies)
    return best


def channels_applies(node: Node, target: Target) -> bool:
    """``winograd_ok`` with output channels in whole vectors, at least ``MIN_CHANNEL_INPUTS`` input channels,
    transformed weights within ``MAX_CHANNEL_WEIGHT_BYTES``, at least ``MIN_CHANNEL_RATIO`` of the multiplies
    saved, on at most ``MAX_CHANNEL_TILE_SHARE`` of ``winograd_f4``'s tiles (for the target): small maps of a
    few tiles."""
    if not winograd_ok(node):
        return False
    C, M, w = node.inputs[0].shape[1], node.inputs[1].shape[0], target.vector_width
    if M % w or C < MIN_CHANNEL_INPUTS or 4 * TP * TP * C * M > MAX_CHANNEL_WEIGHT_BYTES:
        return False
    OH, OW = node.outputs[0].shape[2:]
    tiles = plan_channels(node, target).tiles
    share = MAX_CHANNEL_TILE_SHARE.get((w, target.vector_registers), min(MAX_CHANNEL_TILE_SHARE.values()))
    return 9 * OH * OW / (TP * TP * tiles) >= MIN_CHANNEL_RATIO and tiles <= share * plan(node, target).tiles


@variant("Conv", name="winograd_f4_channels", priority=21, applies=channels_applies)
def gen_winograd_channels(node: Node, target: Target) -> list[KernelCall]:
    """Winograd F(4x4, 3x3) whose GEMMs vectorise output channels (4 tiles per register tile): a small map's
    few tiles fill the registers, where ``winograd_f4`` pads them to ``w`` tile lanes (see ``winograd_source``)."""
    return _kernel_call(node, target, plan_channels(node, target), None, lanes_channels=True)
