"""Channel-blocked direct convolution (NCHWc-style register tile on plain NCHW tensors).

A register tile holds ``MV`` vectors of ``W`` consecutive output channels (one ``MV * W``-lane value, which
LLVM splits into ``MV`` registers) by ``NP`` output pixels of one row: for every input channel and tap it
loads the tile's weight vectors once (packed at compile time as ``[M / L, C / G, KH, KW, L]``, ``L = MV * W``)
and broadcasts each pixel's input value into ``MV`` FMAs. Loads per FMA do not depend on the stride, so a
stride-2 layer runs as fast as a stride-1 one (the column-vector ``simd_conv`` keeps the even lanes of two
loads per tap there), and short rows keep every lane busy (13x13 maps fill no 8-lane column vector).

The kernel is specialised to its row geometry (input and output width, kernel width, column stride,
dilation and pad): the row's tiles are planned at compile time, the interior ones loop with no border test
and a border tile's code leaves out its taps outside the input, so nothing is tested per tap and nothing is
padded or copied (the kernel allocates nothing: the ahead-of-time targets have no allocator). Kernel rows
outside the input are clipped once per output row. The finished tile is stored with strided stores (one
channel plane per lane) after the fused epilogue in registers; a residual is gathered the same way.
"""

from __future__ import annotations

import numpy as np

from cnnjit.ir import Node

from ..kernel import KernelCall, Param, Target, note, variant
from ..parts import node_part, part_space
from .epilogue import Epilogue, channel_stores, has_residual
from .simd_conv import conv_tile
from .simd_pointwise import conv_operands, conv_sizes, row_width
from .template import source
from .winograd import multiply_ratio, plan, winograd_applies


def row_plan(ow: int, np_: int, inside: tuple[int, int]) -> list[tuple[int, int, int]]:
    """A row of ``ow`` output pixels as tiles of ``np_``: ``(first pixel, pixels, tiles)``, where a run of
    whole tiles all of whose pixels have every tap ``inside`` the input (``[lo, hi)``) is one entry (a loop),
    and every other tile (a border or the short last one) an entry of its own (``tiles == 1``)."""
    lo, hi = inside
    plan: list[tuple[int, int, int]] = []
    for s in range(0, ow, np_):
        t = min(np_, ow - s)
        interior = t == np_ and lo <= s and s + t <= hi
        if interior and plan and plan[-1][1] == np_ and plan[-1][2] > 0 and plan[-1][0] + plan[-1][2] * np_ == s:
            plan[-1] = (plan[-1][0], np_, plan[-1][2] + 1)
        else:
            plan.append((s, t, 1 if interior else 0))
    return [(s, t, max(k, 1)) for s, t, k in plan]


def cblock_source(node: Node, lanes: int, np_: int, geometry: tuple[int, ...], row_range: bool = False,
                  ragged: bool = False) -> tuple[str, list]:
    """``lanes`` output channels (one value) x up to ``np_`` consecutive output pixels of a row per register
    tile, for the ``geometry`` ``(Win, OW, KH, KW, sw, dw, pw)`` (built in: each tile's taps unrolled).
    ``row_range``: the kernel takes ``OH0, OH1`` after ``G`` and computes those output rows only (one
    thread's part of the layer, ``parts.py``). ``ragged``: ``M`` (one group) is not a multiple of ``lanes``;
    the weights are packed with zero channels up to whole tiles, and the bias, a residual and the stores
    of the last tile take its first ``M - m0`` lanes only (masked loads, gathers and scatters).

    The row is planned at compile time (``row_plan``): tiles whose every tap lies inside the input row loop
    with no test; at a border, the taps that fall outside the row are left out of the tile's code, so no
    kernel test, scratch or padding is needed. Kernel rows outside the input are clipped once per output row.
    """
    win, ow, kh_n, kw_n, sw, dw, pw = geometry
    gather = (f"vgathern{lanes}(r{{k}}b, r{{k}}o + yq, P, cnt)" if ragged
              else f"vgather{lanes}(r{{k}}b, r{{k}}o + yq, P)")
    epi = Epilogue(node, lanes, False, residual_load=lambda k: gather.format(k=k))
    L = [
        "def kernel(xb, xo, wb, wo, bb, bo, yb, yo, N, C, H, Win, M, OH, OW, sh, ph, dh, G"
        + (", OH0, OH1" if row_range else "") + epi.signature() + "):",
        "    cg = C // G",
        "    mg = M // G",
        "    P = OH * OW",
        f"    wsz = cg * {kh_n * kw_n * lanes}",
        "    for n in range(N):",
        f"        for oh in range({'OH0, OH1' if row_range else 'OH'}):",
        "            ih0 = oh * sh - ph",
        "            khlo = 0 if ih0 >= 0 else (dh - 1 - ih0) // dh",  # kernel rows inside the input
        f"            khhi = min({kh_n}, (H - 1 - ih0) // dh + 1) if ih0 < H else 0",
        f"            for m0 in range(0, M, {lanes}):",
        "                g = m0 // mg",
        *([f"                cnt = min({lanes}, M - m0)",
           f"                b = vloadn{lanes}(bb, bo + m0, cnt)"] if ragged else
          [f"                b = vload{lanes}(bb, bo + m0)"]),
        f"                wm = wo + (m0 // {lanes}) * wsz",
        "                xg = xo + (n * C + g * cg) * H * Win",
    ]

    def taps(ind: str, first: int, t: int, checked: bool, xr: str, wr: str) -> list[str]:
        """One kernel row's FMAs (input row at ``xr``, its weights at ``wr``), taps outside the row left out."""
        if not checked and kw_n > MAX_UNROLLED_TAPS:  # a long row: one loop of constant trip count, same FMAs
            acc = "".join(f"a{j}, " for j in range(t))
            return [f"{ind}for kw in range({kw_n}):", f"{ind}    wv = vload{lanes}(wb, {wr} + kw * {lanes})",
                    f"{ind}    {acc}= vtaps{lanes}(({acc}), xb, {xr} + kw * {dw}, wv, ("
                    + "".join(f"{j * sw}, " for j in range(t)) + "))"]
        out = []
        for kw in range(kw_n):
            js = [j for j in range(t) if not checked or 0 <= (first + j) * sw + kw * dw - pw < win]
            if js:
                out.append(f"{ind}wv = vload{lanes}(wb, {wr} + {kw * lanes})")
                acc = "".join(f"a{j}, " for j in js)  # one call: the FMAs of these pixels (simd_taps)
                out.append(f"{ind}{acc}= vtaps{lanes}(({acc}), xb, {xr}, wv, ("
                           + "".join(f"{j * sw + kw * dw}, " for j in js) + "))")
        return out

    def tile(ind: str, start: str, first: int, t: int, checked: bool) -> list[str]:
        """A tile of ``t`` pixels from ``start`` (the first one's index ``first`` when ``checked``: its taps
        outside the row are left out). Rows with every kernel row inside the input unroll the kernel rows
        (a loop of one kernel row per input channel cost a 1x1 layer 40%), or for a large tile loop over
        them with a constant trip count (``unroll_rows``); the other rows loop over theirs (the same FMAs in
        the same order either way: bit-identical)."""
        out = [f"{ind}a{j} = b" for j in range(t)]
        loop = [f"{ind}    for c in range(cg):",
                f"{ind}        for kh in range(khlo, khhi):",
                f"{ind}            xr = xg + c * H * Win + (ih0 + kh * dh) * Win + {start} * {sw} - {pw}",
                f"{ind}            wr = wm + (c * {kh_n} + kh) * {kw_n * lanes}",
                *taps(ind + " " * 12, first, t, checked, "xr", "wr")]
        out += [f"{ind}if khlo == 0 and khhi == {kh_n}:",
                f"{ind}    for c in range(cg):",
                f"{ind}        xr = xg + c * H * Win + ih0 * Win + {start} * {sw} - {pw}",
                f"{ind}        wr = wm + c * {kh_n * kw_n * lanes}"]
        if unroll_rows(kh_n, kw_n, t, -(-ow // np_)):
            for kh in range(kh_n):
                out += taps(ind + " " * 8, first, t, checked, f"xr + {kh} * dh * Win", f"wr + {kh * kw_n * lanes}")
        else:
            out += [f"{ind}        for kh in range({kh_n}):",
                    *taps(ind + " " * 12, first, t, checked, "xr + kh * dh * Win", f"wr + kh * {kw_n * lanes}")]
        out += [f"{ind}else:", *loop]
        for j in range(t):
            out += [f"{ind}yq = (n * M + m0) * P + oh * OW + {start} + {j}",
                    *epi.vector(ind, f"a{j}", "", lanes, False)]
            if ragged:
                out.append(f"{ind}vscattern{lanes}(yb, yo + yq, P, a{j}, cnt)")
        first = f"(n * M + m0) * P + oh * OW + {start}"
        if not ragged:
            out += channel_stores(ind, [f"a{j}" for j in range(t)], first, lanes)
        for j in range(t):
            out += epi.after(ind, [f"for i in range({'cnt' if ragged else lanes}):"], f"{first} + {j} + i * P")
        return out

    # output columns whose every tap is inside [0, Win)
    inside = (-(-pw // sw), max(0, (win - 1 - (kw_n - 1) * dw + pw) // sw + 1))
    ind = " " * 16
    for s, t, k in row_plan(ow, np_, inside):
        interior = k > 1 or (inside[0] <= s and s + t <= inside[1])
        if k > 1:
            L.append(f"{ind}for ow0 in range({s}, {s + k * t}, {t}):")
            L += tile(ind + "    ", "ow0", s, t, False)
        else:
            L += tile(ind, str(s), s, t, not interior)
    return source(L), epi.args


#: the most FMAs (kernel taps x tile pixels) a tile unrolls over all its kernel rows on a row of at least
#: ``LOOPED_ROW_TILES`` tiles: above (7x7 kernels on 3-pixel tiles and up), a loop of constant trip count
#: over the rows runs as fast, and the unrolled copy (245 FMAs per tile of the Inception stem, a third of
#: its source) costs compile time only (that kernel: 8.8 -> 2.3 CPU s). AVX2, per call, interleaved, looped /
#: unrolled, median (min): the Inception stem 3->64 7x7 stride 2 at 224x224 0.90-1.01 (0.88-1.04), 32->64 7x7
#: stride 2 at 56x56 0.97 (0.98); on rows of 3 tiles looping cost 6-7% (32->64 and 64->64 7x7 at 14x14) and 13%
#: (5x5 at 13x13 and 14x14): there they stay unrolled, as do 5x5 tiles (125 FMAs) and 3x3 ones; kernels of
#: fewer than ``MIN_LOOPED_TAPS`` taps always unroll (AVX-512's wider 5x5 tiles pass 128 FMAs: not measured)
MAX_UNROLLED_FMAS = 128
#: the most taps of one kernel row an interior tile unrolls; a wider row (a 1-D filter bank's 256 taps: ~1000
#: lines per copy, minutes of numba compile time) loops over its taps (border tiles keep theirs unrolled)
MAX_UNROLLED_TAPS = 16
LOOPED_ROW_TILES = 8
MIN_LOOPED_TAPS = 36


def unroll_rows(kh: int, kw: int, pixels: int, row_tiles: int) -> bool:
    """Whether a tile of ``pixels`` of a ``kh`` x ``kw`` kernel, on a row of ``row_tiles`` tiles, unrolls its
    kernel rows where they are all inside the input (``MAX_UNROLLED_FMAS``; always one kernel row)."""
    return (kh == 1 or kh * kw < MIN_LOOPED_TAPS or kh * kw * pixels <= MAX_UNROLLED_FMAS
            or row_tiles < LOOPED_ROW_TILES)


def cblock_tile(target: Target, mg: int, ow: int, group: int = 1) -> tuple[int, int] | None:
    """(MV, NP): channel vectors x output pixels per register tile, or None when two channel vectors do not
    divide the group's ``mg`` output channels and either there are several groups or whole tiles would
    waste more than ``MAX_RAGGED`` of their lanes (an FFT's 257 bins are 17 tiles of 16: 6% more FMAs).

    Two channel vectors (one vector measured 27-35 against 55-72 GFLOP/s for two on AVX2: one weight vector
    meets ``NP`` broadcast loads, a load per FMA) by as many pixels as the budget allows: ``2 * NP``
    accumulators, two weight vectors and the broadcast in ``vector_registers`` less ``spare_registers`` (AVX2:
    5, AVX-512: 10). Among the counts in the budget's upper third, the one that wastes the fewest recomputed
    pixels on a row of ``ow`` (ties: the larger): 5 on a 13-column row, 4 on 12 and 26 (73 against 59 GFLOP/s
    for 2 x 3 on 96->96 3x3).
    """
    w = target.vector_width
    mv = 2
    tiles = -(-mg // (mv * w))
    if mg % (mv * w) != 0 and (group > 1 or tiles * mv * w - mg > MAX_RAGGED * tiles * mv * w):
        return None
    most = max(1, (target.vector_registers - mv - 1 - spare_registers(target)) // mv)
    if ow <= most:
        return mv, ow
    fewest = max(1, (2 * most + 2) // 3)
    return mv, min(range(most, fewest - 1, -1), key=lambda t: -(-ow // t) * t - ow)


#: vector registers the tile leaves free (LLVM's broadcasts loaded ahead): on AVX2 a 2 x 6 tile (15 of 16
#: registers) spilled, GFLOP/s 2 x 6 / 2 x 5 / 2 x 4 on 3x3 layers: 96->96 at 12x12 44 / 84 / 90, 128->128 at
#: 12x12 43 / 80 / 84, 96->192 stride 2 at 24x24 56 / 53 / 79, 256->256 at 6x6 69 / 73 / 75, 32->64 dilated
#: (2, 1) at 100x64 35 / 61 / 56; 2 x 5 (13 registers) is the best tile of 13-column rows (82 against 72)
SPARE_REGISTERS = 2
#: ... and with 16 lanes and 32 registers (AVX-512): 2 x 13 (29 registers) ran at 62-77% of the FMA peak in the
#: model, 2 x 8-10 at 80-100%. Zen 5, per call in the schedule, best of 3 x 10 runs, interleaved, load ~4.5
#: (the ddddocr detector; 2 spare / 6 / 8): 192->192 3x3 at 13x13 2 x 13 654 us, 2 x 8 470, 2 x 7 437; 96->96
#: at 13x13 160 / 120 / 105-111; stride 2, 2 x 9 either way: 48->96 at 104x104 1088 / 844 / 878, 96->192 at
#: 52x52 1194 / 822 / 879, 192->384 at 26x26 1292 / 1018 / 1002; ddddocr's recognizer 24->96 stride 2 at
#: 32x128 355 / 188 / -, SVTR's 32->64 stride 2 at 16x64 45 / 34 / 34; whole detector 23.1 / 21.0 / 21.3 ms
SPARE_REGISTERS_WIDE = 8


def spare_registers(target: Target) -> int:
    """Vector registers ``cblock_tile`` leaves free: ``SPARE_REGISTERS_WIDE`` with 16 lanes and 32 registers
    (AVX-512, where it was measured), else ``SPARE_REGISTERS`` (AVX2, and NEON's 32 as before)."""
    return SPARE_REGISTERS_WIDE if target.vector_width >= 16 and target.vector_registers >= 32 else SPARE_REGISTERS
#: the most a ragged layer's whole tiles may exceed its output channels by (a fraction of the lanes computed)
MAX_RAGGED = 0.25


def ragged(node: Node, lanes: int) -> bool:
    """Whether ``node``'s output channels leave its last tile of ``lanes`` partial."""
    return node.inputs[1].shape[0] % lanes != 0


def cblock_structural(node: Node, target: Target) -> bool:
    """A dense or grouped (not depthwise) 2-D float32 Conv with constant weights whose group's output
    channels fill whole tiles of channel vectors."""
    x, wt = node.inputs[0], node.inputs[1]
    if x.dtype != np.float32 or wt.dtype != np.float32 or not wt.is_const or len(x.shape) != 4:
        return False
    g = node.attrs["group"]
    if g > 1 and wt.shape[1] == 1:  # depthwise: one input channel per group, simd_depthwise's
        return False
    return cblock_tile(target, wt.shape[0] // g, node.outputs[0].shape[3], g) is not None


#: the fewest output channels ``simd_conv``'s register tile must hold (they divide the group's channels) for a
#: stride-1 layer on a long row to be left to it: with a prime count (an FFT's 257 bins) it holds one, a
#: load per FMA (a 1-D 640-deep conv over 97 columns: 40 against 80 GFLOP/s here)
MIN_SIMD_CONV_CHANNELS = 4
#: the least reduction depth (input channels per group x taps) for which the kernel is chosen: below it the
#: per-tile epilogue and strided stores cost as much as the FMAs (stems: 3 channels x 9 taps at 10-19 against
#: 19-24 GFLOP/s for ``simd_conv``; 1x1 stride 2 from 16 or 32 channels: 0.85-1.0x)
MIN_DEPTH = 128
#: the least reduction depth for a stride-1 layer (not Winograd's) of several kernel columns on rows of
#: exactly two vectors whose group's channels fill whole tiles: there ``simd_conv``'s row is one interior
#: vector and one border tile (or two border tiles when padded) and ``cvec`` tests every tap; AVX2,
#: LeakyReLU, GFLOP/s cblock / simd_conv / cvec at 16 columns: 1x3 48->48 67-68 / 51-53 / 28-29, 1x3 24->48
#: (depth 72) 46-56 / 42-46 / 25-26 (a Kx1 kernel has no border tile: 3x1 48->48 64 / 65 / 25, 8x1 64->128
#: 53 / 59 / 24, left to ``simd_conv``)
MIN_DEPTH_TWO_VECTORS = 64
#: the same for a 1x1 stride-1 layer, against ``simd_pointwise`` (64 and 144 channels: 0.8x, 160-768: 1.1-1.8x)
MIN_DEPTH_POINTWISE = 160
#: and its least output channels per group (to 32 or 64: 0.8-1.0x, 160-384: 1.1-1.8x; MobileNetV2's 14x14 and
#: 28x28 1x1s lost 8% of the model's time)
MIN_CHANNELS_POINTWISE = 128
#: the most kernel taps (KH x KW) of a layer of column stride above 2 that the kernel takes at any reduction
#: depth: no other SIMD variant takes such a layer but ``simd_conv``'s one-row kernels, so the alternative is
#: ``direct`` (basic-pitch's 8->32 5x5 and 1->32 7x7 of column stride 3 at 172x88: 2.2 GFLOP/s there, 58 and
#: 35 with this kernel, thread CPU time, ``conv_variants.py``); the
#: bound keeps the unrolled tile code (taps x pixels) small enough to compile quickly
MAX_WIDE_STRIDE_TAPS = 49
#: a stride-1 3x3 layer that Winograd takes with at least this ``multiply_ratio`` is left to it, short rows
#: included (ms per call, cblock against winograd_f4, AVX2, interleaved: 64->128 at 396x14 (ratio 2.62)
#: 9.8 / 6.0, 64->64 at 28x12 (2.62) 0.57 / 0.21, 24->24 at 104x14 (2.53) 0.24 / 0.20, 48->48 at 32x14
#: (2.8) 0.22 / 0.16, 32->64 at 100x10 (2.4) 0.42 / 0.40, 64->64 at 12x12 (2.25) 0.26 / 0.15; kept where
#: the tiles are mostly padding: 96->96 at 14x14 (2.04) 0.39 / 0.49, 64->64 at 8x8 (2.0) 0.052 / 0.064,
#: 128->128 at 10x10 (1.56) 0.31 / 0.46, 256->256 at 7x7 (1.53) 0.66 / 1.0; 48->48 at 38x10 (2.38) 0.18 /
#: 0.19 is the one loss above it). Since Winograd copies the padded input twice where that drops the dummy tile
#: per row (``winograd.COPY_SAVING``), 96->96 at 14x14 (3.06) and 192->192 at 13x13 (2.64) are above it: 0.60
#: and 0.75 of cblock's time (AVX2, interleaved, load ~6)
MIN_WINOGRAD_RATIO = 2.2
#: ... and with a GEMM register tile of one output channel (a prime count), whose weight broadcast per FMA row
#: costs ~1.8x the issue slots per multiply: 64->257 at 13x13 (ratio 2.64) 1.05-1.07x cblock's time, at 36x36
#: (3.4) 0.64-0.85x (AVX2, interleaved, load ~9)
MIN_WINOGRAD_RATIO_ONE_CHANNEL = 3.0


def winograd_takes(node: Node, target: Target) -> bool:
    """Whether Winograd saves enough multiplies to take a layer cblock computes (``MIN_WINOGRAD_RATIO``)."""
    if not winograd_applies(node, target):
        return False
    least = MIN_WINOGRAD_RATIO if plan(node, target).mr > 1 else MIN_WINOGRAD_RATIO_ONE_CHANNEL
    return multiply_ratio(node, target) >= least


def cblock_applies(node: Node, target: Target) -> bool:
    """Where the channel-blocked kernel beats the others (``benchmarks/conv_variants.py``, AVX2 GFLOP/s):

    * column stride above 2 with at most ``MAX_WIDE_STRIDE_TAPS`` taps, at any depth (else ``direct``);
    * stride 2: 50-72 against 36-40 for ``simd_conv`` (it keeps the even lanes of two loads per tap) and
      32 for ``cvec`` on the ddddocr detector's layers;
    * rows shorter than two vectors (13x13 at 8 lanes): 68-72 against 48 (``simd_conv``) and 35 (``cvec``);
      rows of two vectors in whole channel tiles that Winograd does not take, of kernels several columns
      wide (1xK, 16 columns at 8 lanes), from a depth of ``MIN_DEPTH_TWO_VECTORS``: 46-68 against 42-53
      and 25-29;
    * any row when ``simd_conv``'s tile would hold fewer than ``MIN_SIMD_CONV_CHANNELS`` channels;
    * any row of a dilated layer that Winograd does not take (it takes vertical dilations, ``tile_rows``:
      PLCMOS's 3x3 dilated (2, 1) 64->128 at 196x16 at 180 effective GFLOP/s against ~40 here, load ~5):
      58-71 against 29-52 for ``simd_conv`` with 16-96 channels, 36-62 against 7 with 128 on 20x20;
    * 1x1 on rows shorter than four vectors (13x13 to 26x26 at 8 lanes) with at least
      ``MIN_CHANNELS_POINTWISE`` output channels and no fused residual: 47-65 against 36-47 for
      ``simd_pointwise``, whose pixel vectors run mostly tails there (28x28 and 52x52 were left to it);

    each with a reduction depth of at least ``MIN_DEPTH`` (``MIN_DEPTH_POINTWISE``). Stride-1 3x3 layers on
    longer rows are left to the other variants (and Winograd), and so are those Winograd takes with at least
    ``MIN_WINOGRAD_RATIO`` of its multiply saving, short rows included.
    """
    if not cblock_structural(node, target):
        return False
    a = node.attrs
    ow, w = node.outputs[0].shape[3], target.vector_width
    depth = node.inputs[1].shape[1] * a["kernel_shape"][0] * a["kernel_shape"][1]
    if a["strides"][1] == 1 and all(k == 1 for k in a["kernel_shape"]):
        mg = node.inputs[1].shape[0] // a["group"]
        # a fused residual gathers per pixel: more than the kernel wins over simd_pointwise's vector loads
        return (depth >= MIN_DEPTH_POINTWISE and mg >= MIN_CHANNELS_POINTWISE and ow < 4 * w
                and not has_residual(node))
    mg = node.inputs[1].shape[0] // a["group"]
    if a["strides"][1] > 2 and a["kernel_shape"][0] * a["kernel_shape"][1] <= MAX_WIDE_STRIDE_TAPS:
        return True
    if (ow == 2 * w and depth >= MIN_DEPTH_TWO_VECTORS and mg % (2 * w) == 0 and a["strides"][1] == 1
            and a["kernel_shape"][1] > 1 and not winograd_applies(node, target)):
        return True
    if depth < MIN_DEPTH or winograd_takes(node, target):
        return False
    return (a["strides"][1] == 2 or ow < 2 * w or max(a["dilations"]) > 1
            or conv_tile(target, mg, ow, row_width(target, ow))[0] < MIN_SIMD_CONV_CHANNELS)


@variant("Conv", name="cblock", priority=25, applies=cblock_applies)
def gen_cblock(node: Node, target: Target) -> list[KernelCall]:
    x, wt, bias, y = conv_operands(node)
    a = node.attrs
    N, C, H, Win, M, OH, OW = conv_sizes(node)
    KH, KW = a["kernel_shape"]
    sw, dw = a["strides"][1], a["dilations"][1]
    mv, np_ = cblock_tile(target, M // a["group"], OW, a["group"])
    lanes = mv * target.vector_width
    part = ragged(node, lanes)
    w = wt.const.reshape(M, -1)
    if part:  # zero channels up to whole tiles (their lanes are never stored)
        w = np.concatenate([w, np.zeros((-M % lanes, w.shape[1]), w.dtype)])
    # [M / lanes, C / G, KH, KW, lanes]: a tile's channel vector of one tap contiguous
    packed = np.ascontiguousarray(w.reshape(-1, lanes, w.shape[1]).transpose(0, 2, 1), dtype=np.float32)
    rows = node_part(node)  # a part of a layer split over threads: its output rows (parts.py)
    src, extra = cblock_source(node, lanes, np_, (Win, OW, KH, KW, sw, dw, a["pads"][1]), rows is not None,
                               part)
    args = [x, Param(packed.reshape(-1)), bias, y, N, C, H, Win, M, OH, OW, a["strides"][0], a["pads"][0],
            a["dilations"][0], a["group"], *(rows or ()), *extra]
    return [KernelCall(src, args, note(node))]


@part_space("Conv", "cblock")
def cblock_part_space(node: Node, target: Target) -> tuple[int, int]:
    """Output rows (a stride-2 layer whose channels do not split in pairs of vectors: the detector's 48)."""
    return node.outputs[0].shape[2], 1
