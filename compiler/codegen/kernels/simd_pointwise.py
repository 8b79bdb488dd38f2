"""Pointwise convolution (and weight-stationary GEMM) as an explicit-SIMD register-tiled micro-kernel.

``Y[n] (M x P) = W (M x C) @ X[n] (C x P) + bias`` in plain NCHW: the pixel axis P is contiguous, so a
register tile of ``MR`` output channels by ``NR`` vectors of pixels accumulates ``MR * NR`` vectors, with
each weight broadcast into the FMA (the reduction over C innermost). Pixel tails use masked loads and
stores; leftover output channels run a one-row tile. The fused epilogue (bias, ReLU/Clip/LeakyReLU,
residual Add) is applied to the accumulators before the store; other activations run over the stored tile
while it is still in L1.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

import numpy as np

from cnnjit.ir import Node, Value

from ..kernel import At, KernelCall, Param, Target, note, shifted, variant
from ..parts import node_part, part_space
from .epilogue import Epilogue
from .template import clipped_loops, source

MR, NR = 4, 2


def row_lanes(sw: int, iw: str = "iw0") -> tuple[str, str]:
    """The lane range ``[lo, hi)`` of a masked row load at column ``iw`` (``row_load``'s edge load): lanes
    inside the row and among the first ``cnt`` output columns (stride 2: element positions)."""
    return f"max(0, -{iw})", f"min(cnt, Win - {iw})" if sw == 1 else f"min(2 * cnt - 1, Win - {iw})"


def row_load(w: int, sw: int, iw: str = "iw0", fill: str | None = None,
             lanes: tuple[str, str] | None = None) -> tuple[str, str, str]:
    """Source for loading ``w`` output columns' inputs from row ``xrow`` starting at column ``iw``.

    Returns (fast load, condition under which it stays inside the row, masked edge load). Stride 1 loads
    contiguously, stride 2 keeps the even lanes of a double load; the edge load reads only lanes inside
    the row (and the first ``cnt``), others are 0 or ``fill``. ``lanes`` names the edge load's lane range
    when the kernel has already worked it out (default: ``row_lanes``).
    """
    f = "" if fill is None else "f"
    tail = "" if fill is None else f", {fill}"
    lo, hi = lanes or row_lanes(sw, iw)
    if sw == 1:
        return (f"vload{w}(xb, xrow + {iw})", f"{iw} >= 0 and {iw} + {w} <= Win",
                f"vloadr{f}{w}(xb, xrow + {iw}, {lo}, {hi}{tail})")
    return (f"vload2e{w}(xb, xrow + {iw})", f"{iw} >= 0 and {iw} + {2 * w} <= Win",
            f"vload2er{f}{w}(xb, xrow + {iw}, {lo}, {hi}{tail})")


def row_taps(ind: str, xc: str, w: int, sw: int, fast_ok: str) -> list[str]:
    """Kernel lines looping over a 2-D window's taps for the output vector at ``oh, ow0`` (rows outside
    the input skipped; ``xrow`` the tap row's start, ``iw0`` its first column), ending in the test for
    the fast (unmasked) load; the caller's lines for the load follow, one level deeper."""
    return [*clipped_loops(ind, ("kh", "KH", "ih", "oh * sh + kh * dh - ph", "H")).split("\n"),
            f"{ind}    xrow = {xc} + ih * Win", f"{ind}    for kw in range(KW):",
            f"{ind}        iw0 = ow0 * {sw} + kw * dw - pw", f"{ind}        if cnt == {w} and {fast_ok}:"]


def row_sections(rows: int, mr: int = MR) -> str:
    """Which row loops a kernel for ``rows`` output rows needs: "tiles" (a multiple of ``mr``), "single" (fewer
    than ``mr``: a batch-1 Gemm) or "both". Leaving out a loop that never runs saves its compile time."""
    return "tiles" if rows % mr == 0 else ("single" if rows < mr else "both")


def pointwise_tile(target: Target, rows: int, w: int, block_bytes: int = 0) -> tuple[int, int]:
    """(MR, NR): output rows by pixel vectors of ``w`` lanes per register tile, for ``rows`` output rows whose
    pixel block of inputs takes ``block_bytes``.

    8 accumulators (the FMA latency times its two pipes) either way; which shape depends on the register
    file and on the block. Every row tile re-reads the block: with 16 registers (AVX2), 2 rows x 4 vectors
    (13 registers) when the block stays in L1 (1x1 convs of 24-96 channels at 52x52 to 104x104: 57-76
    against 41-54 GFLOP/s for 4 x 2), 4 x 2 when it does not (192-768 channels, or whole 13x13 and 26x26
    maps: 2 x 4 re-read them twice as often and lost 10-20%); with 32 (AVX-512, NEON), 4 x 2 as measured
    before.
    """
    if target.vector_registers >= 32 or 4 * w > 128 or block_bytes > BLOCK_BYTES:
        return MR, NR
    return (2, 4) if target.vector_registers >= 2 * 4 + 4 + 1 else (1, 4)


def tile_stores(epi: Epilogue, ind: str, L: int, rows: int, idx: Callable[[int], str], masked: bool) -> list[str]:
    """The stores of a register tile's ``rows`` accumulators ``a{L}_{i}`` (``L`` lanes) at output offsets
    ``idx(i)`` from ``yo``, each after its in-register epilogue; ``masked``: only the first ``cnt`` lanes."""
    out: list[str] = []
    for i in range(rows):
        out += epi.vector(ind, f"a{L}_{i}", idx(i), L, masked)
        out.append(f"{ind}vstoren{L}(yb, yo + {idx(i)}, a{L}_{i}, cnt)" if masked
                   else f"{ind}vstore{L}(yb, yo + {idx(i)}, a{L}_{i})")
    return out


def pointwise_source(node: Node, w: int, bias_along_p: bool = False, rows: str = "both",
                     mr: int = MR, nr: int = NR, pixel_range: bool = False,
                     gather: tuple[str, list[str]] | None = None) -> tuple[str, list]:
    """The kernel source for ``node``'s epilogue at vector width ``w``, and the extra (residual) args.

    The bias is per output row (a conv's channels) or, with ``bias_along_p``, per column (a Gemm's C).
    ``rows`` (see ``row_sections`` with the same ``mr``) says which row loops to emit: the kernel is only
    correct for row counts of that kind. ``mr`` x ``nr``: the register tile (rows x vectors, ``pointwise_tile``).
    ``gather``: (extra parameters, lines) that copy image ``n``'s ``C x P`` input pixels from ``xb`` into the
    scratch ``zb`` from ``zo`` before its tiles, which then read them there (a strided 1x1 conv's subsampled
    input, ``strided_pointwise``).
    """
    src_buf = "zb" if gather else "xb"
    epi = Epilogue(node, w, False)

    def tile(mr: int, nr: int, masked: bool, ind: str) -> list[str]:
        """``mr`` rows x ``nr`` vectors; ``masked``: only the first ``cnt`` columns. Each row's ``nr``
        vectors are one ``nr * w``-lane value (LLVM splits it into ``nr`` registers and FMA chains); names
        carry the lane count, since a numba variable keeps one type throughout the kernel."""
        L = nr * w
        out = []
        for i in range(mr):
            if not bias_along_p:
                out.append(f"{ind}a{L}_{i} = vbcast{L}(bb[bo + m + {i}])")
            elif i:
                out.append(f"{ind}a{L}_{i} = a{L}_0")
            elif masked:
                out.append(f"{ind}a{L}_0 = vloadn{L}(bb, bo + p, cnt)")
            else:
                out.append(f"{ind}a{L}_0 = vload{L}(bb, bo + p)")
        out.append(f"{ind}xi = x0 + p")
        out.append(f"{ind}wi = wo + m * C")
        out.append(f"{ind}for c in range(C):")
        out.append(f"{ind}    v{L} = vloadn{L}({src_buf}, xi, cnt)" if masked
                   else f"{ind}    v{L} = vload{L}({src_buf}, xi)")
        for i in range(mr):
            out.append(f"{ind}    a{L}_{i} = vfma{L}(vbcast{L}(wb[wi + {i} * C]), v{L}, a{L}_{i})")
        out.append(f"{ind}    xi += P")
        out.append(f"{ind}    wi += 1")
        out += tile_stores(epi, ind, L, mr, lambda i: f"y0 - yo + (m + {i}) * P + p", masked)
        # other activations: over the stored tile, still in L1
        span = f"min(cnt, {L})" if masked else str(L)
        return out + epi.after(ind, [f"for i in range({mr}):", f"for j in range({span}):"],
                               "y0 - yo + (m + i) * P + p + j")

    tiles = [
        f"            while m + {mr} <= M:",
        "                p = pb",
        f"                while p + {nr * w} <= pe:",
        *tile(mr, nr, False, " " * 20),
        f"                    p += {nr * w}",
        "                while p < pe:",
        "                    cnt = pe - p",
        *tile(mr, nr, True, " " * 20),
        f"                    p += {nr * w}",
        f"                m += {mr}",
    ]
    single = [
        "            while m < M:",  # leftover rows (a batch-1 Gemm is all leftover): 8 vectors, 8 FMA chains
        "                p = pb",
        f"                while p + {8 * w} <= pe:",
        *tile(1, 8, False, " " * 20),
        f"                    p += {8 * w}",
        "                while p < pe:",
        "                    cnt = pe - p",
        *tile(1, 4, True, " " * 20),
        f"                    p += {4 * w}",
        "                m += 1",
    ]
    lines = [
        "def kernel(xb, xo, wb, wo, bb, bo, yb, yo, N, C, M, P, PB" + (", PS, PE" if pixel_range else "")
        + (gather[0] if gather else "") + epi.signature() + "):",
        "    for n in range(N):",
        *(gather[1] if gather else ["        x0 = xo + n * C * P"]),
        "        y0 = yo + n * M * P",
        # pixel blocks: all output rows of a block while it is in L1
        f"        for pb in range({'PS, PE' if pixel_range else '0, P'}, PB):",
        f"            pe = min({'PE' if pixel_range else 'P'}, pb + PB)",
        "            m = 0",
        *(tiles if rows != "single" else []),
        *(single if rows != "tiles" else []),
    ]
    return source(lines), epi.args


#: bytes of input pixels per block: a block's C x PB inputs stay in L1 while every output-row tile reads them
#: (without blocks, MobileNetV2's 32->16 1x1 conv at 112x112 re-read 1.6 MB four times: 33 GFLOP/s)
BLOCK_BYTES = 32 * 1024


def pixel_block(C: int, P: int, w: int) -> int:
    """Pixels per block: a multiple of 8 vectors (so the tiles never straddle a block end), or all of P
    when the whole input fits in L2 anyway (then blocks only re-read the weights)."""
    if 4 * C * P <= 512 * 1024:
        return P
    step = 8 * w
    pb = max(step, BLOCK_BYTES // (4 * max(C, 1)) // step * step)
    return P if pb >= P else pb


@variant("Conv", name="simd_pointwise", priority=30, applies=lambda n, t: simd_pointwise_applies(n, t))
def gen_simd_pointwise(node: Node, target: Target) -> list[KernelCall]:
    """One call per image and group (a grouped 1x1 conv is ``G`` independent pointwise convs). A part of a
    layer split over threads by pixels (``parts.py``: ``meta["part"]``, ungrouped only) is one call
    computing its pixels of every output channel."""
    x, wt, bias, y, N, C, M, P = pointwise_operands(node)
    G = node.attrs["group"]
    w = target.vector_width
    mr, nr = pointwise_tile(target, M // G, w, 4 * (C // G) * min(P, pixel_block(C // G, P, w)))
    pixels = node_part(node) if G == 1 else None
    src, extra = pointwise_source(node, w, rows=row_sections(M // G, mr), mr=mr, nr=nr,
                                  pixel_range=pixels is not None)
    if G == 1:
        part = list(pixels) if pixels is not None else []
        return [KernelCall(src, [x, wt, bias, y, N, C, M, P, pixel_block(C, P, w), *part, *extra], note(node))]
    cg, mg = C // G, M // G
    calls = []
    for n in range(N):
        for g in range(G):
            xs, ys = (n * C + g * cg) * P, (n * M + g * mg) * P
            res = shifted(extra, ys)
            b_at = At(bias, g * mg) if not isinstance(bias, Param) else Param(bias.array[g * mg:(g + 1) * mg])
            args = [At(x, xs), At(wt, g * mg * cg), b_at, At(y, ys), 1, cg, mg, P, pixel_block(cg, P, w), *res]
            calls.append(KernelCall(src, args, note(node)))
    return calls


#: a pixel part is a multiple of this many vectors (a register tile's width at most: no part ends in a partial
#: tile, so both halves run the fast loop)
PART_VECTORS = 4


@part_space("Conv", "simd_pointwise")
def pointwise_part_space(node: Node, target: Target) -> tuple[int, int] | None:
    """Pixels, in runs of ``PART_VECTORS`` vectors (ungrouped layers only)."""
    if node.attrs.get("group", 1) != 1:
        return None
    return int(np.prod(node.outputs[0].shape[2:], dtype=np.int64)), PART_VECTORS * target.vector_width


def row_width(target: Target, columns: int) -> int:
    """The vector width for output rows of ``columns`` pixels: at most 8 lanes on narrow planes (<= 8
    columns), where a wider vector would waste most of its lanes."""
    return 8 if columns <= 8 and target.vector_width > 8 else target.vector_width


def is_pointwise(node: Node, grouped: bool = False) -> bool:
    """A 1x1, stride-1, unpadded Conv (``grouped``: any group count, else group 1)."""
    a = node.attrs
    return (all(k == 1 for k in a["kernel_shape"]) and all(s == 1 for s in a["strides"])
            and not any(a["pads"]) and (a["group"] == 1 or grouped))


def conv_operands(node: Node) -> tuple[Value, Value, Value | Param, Value]:
    """A float Conv's input, weights, bias (zeros when it has none) and output."""
    b = node.inputs[2] if len(node.inputs) > 2 else None
    M = node.inputs[1].shape[0]
    return node.inputs[0], node.inputs[1], b if b is not None else Param(np.zeros(M, np.float32)), node.outputs[0]


class ConvSizes(NamedTuple):
    """A 2-D Conv's sizes: batch ``N``, input channels ``C``, input rows ``H`` and columns ``W``, output
    channels ``M``, output rows ``OH`` and columns ``OW``."""

    N: int
    C: int
    H: int
    W: int
    M: int
    OH: int
    OW: int


def conv_sizes(node: Node) -> ConvSizes:
    """The sizes every Conv generator passes its kernel (``conv_operands``' shapes, unpacked once)."""
    (N, C, H, W), (OH, OW) = node.inputs[0].shape, node.outputs[0].shape[2:]
    return ConvSizes(N, C, H, W, node.inputs[1].shape[0], OH, OW)


def pointwise_operands(node: Node) -> tuple[Value, Value, Value | Param, Value, int, int, int, int]:
    """``conv_operands`` of a 1x1 Conv and its sizes: batch ``N``, input channels ``C``, output channels
    ``M`` and pixels per channel ``P``."""
    x, wt, bias, y = conv_operands(node)
    return x, wt, bias, y, x.shape[0], x.shape[1], wt.shape[0], int(np.prod(x.shape[2:], dtype=np.int64))


def simd_pointwise_applies(node: Node, target: Target) -> bool:
    """A 1x1, stride-1, unpadded Conv (grouped or not) with constant float32 weights."""
    x = node.inputs[0]
    wt = node.inputs[1]
    return is_pointwise(node, grouped=True) and x.dtype == np.float32 and wt.dtype == np.float32 and wt.is_const


def gemm_simd_applies(node: Node, target: Target) -> bool:
    """Gemm with A in activations (not transposed), a constant B, and a vector (or no) C."""
    A, B = node.inputs[0], node.inputs[1]
    C = node.inputs[2] if len(node.inputs) > 2 else None
    n = node.outputs[0].shape[1]
    return (A.dtype == np.float32 and B.dtype == np.float32 and B.is_const and not node.attrs["transA"]
            and (C is None or (C.is_const and C.type.size in (1, n) and len(C.shape) <= 2
                               and (len(C.shape) < 2 or C.shape[0] == 1))))


@variant("Gemm", name="simd_gemm", priority=20, applies=gemm_simd_applies)
def gen_simd_gemm(node: Node, target: Target) -> list[KernelCall]:
    """``Y = alpha * A @ B + beta * C`` as the pointwise micro-kernel: rows of A broadcast, B's rows as
    vectors (B transposed at compile time if needed, alpha folded into it, beta into the column bias)."""
    A, B = node.inputs[0], node.inputs[1]
    C = node.inputs[2] if len(node.inputs) > 2 else None
    a = node.attrs
    M, K = A.shape
    b = B.const.T if a["transB"] else B.const
    b = np.ascontiguousarray(b.astype(np.float64) * a["alpha"], dtype=np.float32)
    N = b.shape[1]
    bias = np.zeros(N, np.float32) if C is None else np.broadcast_to(
        C.const.reshape(-1).astype(np.float64) * a["beta"], (N,)).astype(np.float32)
    w = target.vector_width
    src, extra = pointwise_source(node, w, bias_along_p=True, rows=row_sections(M))
    # the micro-kernel's "weights" (broadcast) are A's rows, its "pixels" (vectors) are B's columns
    return [KernelCall(src, [Param(b), A, Param(bias), node.outputs[0], 1, K, M, N, pixel_block(K, N, w), *extra],
                       note(node))]
