"""Direct 2-D convolution (dense, grouped and depthwise) with explicit SIMD over output columns.

Plain NCHW, an implicit GEMM over (input channel, kernel row, kernel column): a register tile holds ``MR``
output channels (of one group) by ``NR`` vectors of ``W`` consecutive output columns of one output row
(``MR * NR`` accumulators, sized from the target's register budget by ``conv_tile``). For every input
channel of the group and kernel tap the tile's ``NR * W`` inputs are loaded once (one ``NR * W``-lane value,
which LLVM splits into ``NR`` registers) and meet ``MR`` broadcast weights, re-laid at compile time so a
tile's ``MR`` weights of one tap are adjacent. Stride 1 loads contiguously, stride 2 loads two vectors and
keeps the even lanes. A row's interior tiles load unmasked with no per-tap test (their kernel row
unrolled); the one-vector tiles left and right of it test each tap and load masked at the border (lanes
outside the input are never read and are zero). Every channel tile of an output row runs while its input
rows are in cache (a stride-2 layer with a 4 MB input re-read it per channel tile: 20 against 45 GFLOP/s).
Bias, the in-register epilogue (ReLU, Clip, LeakyReLU, residual Add) and the stores happen once per tile.
"""

from __future__ import annotations

import re

import numpy as np

from cnnjit.ir import Node

from ..kernel import KernelCall, Param, Scratch, Target, note, variant
from .epilogue import Epilogue
from .simd_pointwise import conv_operands, conv_sizes, row_lanes, row_load, row_width
from .template import clipped_loops, source

#: the widest tile row (lanes) a stride-2 kernel may load: its double-width loads must be a vector length
MAX_ROW_LANES = 64


def conv_source(node: Node, w: int, mr: int, sw: int, nr: int = 1, padded: bool = False) -> tuple[str, list]:
    """The kernel for ``node``: ``mr`` channels x ``nr`` vectors of ``w`` columns per register tile, input
    column stride ``sw``; weights laid out as ``[M / mr, C / G, KH, KW, mr]``; the kernel is specialised to
    the node's kernel width (its taps unrolled).

    Each output row is swept in two parts: the interior, whose tiles load every tap's inputs unmasked and
    unchecked (worked out once per row), and the columns left and right of it, in one-vector tiles whose
    taps at the border load masked. ``padded`` (``padded_rows``): each image is first copied into the scratch
    ``sb`` with its rows widened by the column padding (zeros), and the kernel runs on that copy without
    column padding, so a short row's border tiles (half of a 32-column row's, at 8 lanes) become interior.
    """
    lanes = nr * w
    kh_n, kw_n = node.attrs["kernel_shape"]
    span = lanes if sw == 1 else 2 * lanes  # input columns one unmasked load reads
    epi = Epilogue(node, lanes, True)

    def fmas(ind: str, n_lanes: int, wk: str) -> list[str]:
        return [f"{ind}a{n_lanes}_{i} = vfma{n_lanes}(vbcast{n_lanes}(wb[U({wk} + {i})]), xv{n_lanes}, a{n_lanes}_{i})"
                for i in range(mr)]

    def tile(ind: str, n_lanes: int, taps: list[str], masked: bool, outer: tuple[str, ...] = ()) -> list[str]:
        """A tile of ``n_lanes`` columns: bias, the ``taps`` of every input channel (inside the ``outer``
        loop's lines, if any: its body one level deeper), epilogue, store."""
        acc = [f"a{n_lanes}_{i}" for i in range(mr)]
        out = [f"{ind}{acc[i]} = vbcast{n_lanes}(bb[bo + m + {i}])" for i in range(mr)]
        out += [ind + ln for ln in outer]
        cind = ind + "    " * bool(outer)
        out += [f"{cind}for c in range(cg):",
                f"{cind}    xc = xo + (n * C + g * cg + c) * H * Win",
                f"{cind}    wc = wm + c * ksz * {mr}", *taps]
        for i in range(mr):
            idx = f"((n * M + m + {i}) * OH + oh) * OW + ow0"
            out += epi.vector(ind, acc[i], idx, n_lanes, masked)
            out.append(f"{ind}vstoren{n_lanes}(yb, yo + {idx}, {acc[i]}, cnt)" if masked
                       else f"{ind}vstore{n_lanes}(yb, yo + {idx}, {acc[i]})")
        return out + epi.after(ind, [f"for i in range({mr}):", f"for j in range({'cnt' if masked else lanes}):"],
                               "((n * M + m + i) * OH + oh) * OW + ow0 + j")

    load = "vload" if sw == 1 else "vload2e"
    ind = " " * 28
    inner = [*clipped_loops(" " * 24, ("kh", "KH", "ih", "oh * sh + kh * dh - ph", "H")).split("\n"),
             f"{ind}xrow = xc + ih * Win + ow0 * {sw} - pw", f"{ind}wk = wc + kh * KW * {mr}"]
    if kw_n <= MAX_UNROLLED_TAPS:  # the kernel row's taps unrolled: no loop or checks between the FMAs
        for j in range(kw_n):
            inner += [f"{ind}xv{lanes} = {load}{lanes}(xb, xrow + {j} * dw)", *fmas(ind, lanes, f"wk + {j * mr}")]
    else:  # a long row (a 1-D filter bank's 256 taps): a loop of constant trip count, same FMAs, same order
        inner += [f"{ind}for j in range({kw_n}):", f"{ind}    xv{lanes} = {load}{lanes}(xb, xrow + j * dw)",
                  *fmas(ind + "    ", lanes, f"wk + j * {mr}")]
    if unrolled_rows(node):  # output rows whose every kernel row is inside the input: the kernel rows unrolled
        full = [f"{ind}xrow = xc + ihf * Win + ow0 * {sw} - pw"]
        for kh in range(kh_n):
            for j in range(kw_n):
                full += [f"{ind}xv{lanes} = {load}{lanes}(xb, xrow + {kh} * dh * Win + {j} * dw)",
                         *fmas(ind, lanes, f"wc + {(kh * kw_n + j) * mr}")]
        inner = [" " * 24 + "if full:", *full, " " * 24 + "else:", *("    " + ln for ln in inner)]
    # a border tile's lanes past the row's end are computed and not stored: a load inside the row is unmasked.
    # Kernel columns outermost: a column's position, unmasked test and lane range (its mask) are the same for
    # every channel and kernel row, worked out once per column (the taps of a 26-column row's two border tiles
    # tested per tap cost 40 against 53 GFLOP/s on 96->96 3x3)
    lo, hi = row_lanes(sw)
    fast, fast_ok, edge = row_load(w, sw, lanes=("lo", "hi"))
    outer = ("for kw in range(KW):", f"    iw0 = ow0 * {sw} + kw * dw - pw", f"    f0 = {fast_ok}",
             f"    lo = {lo}", f"    hi = {hi}")
    bind = ind + "    "
    border = [*clipped_loops(bind, ("kh", "KH", "ih", "oh * sh + kh * dh - ph", "H")).split("\n"),
              f"{bind}    xrow = xc + ih * Win", f"{bind}    if f0:", f"{bind}        xv{w} = {fast}",
              f"{bind}    else:", f"{bind}        xv{w} = {edge}", f"{bind}    wk = wc + (kh * KW + kw) * {mr}",
              *fmas(bind + "    ", w, "wk")]
    head = ["def kernel(xb, xo, wb, wo, bb, bo, yb, yo, N, C, H, Win, M, OH, OW, KH, KW, sh, ph, pw, dh, dw, G"
            + (", sb, so" if padded else "") + epi.signature() + "):"]
    if padded:  # the body reads the copy: xq / xoq / Wq / pq for xb / xo / Win / pw
        head += ["    Wq = Win + 2 * pw", "    pq = 0", "    xq = sb"]
    else:
        head += ["    Wq = Win", "    pq = pw", "    xq = xb", "    xoq = xo"]
    copy = ["        xoq = so - n * C * H * Wq",
            "        for r in range(C * H):",
            "            xs = xo + (n * C * H + r) * Win",
            "            xd = so + r * Wq",
            "            for j in range(pw):",
            "                sb[U(xd + j)] = np.float32(0.0)",
            "                sb[U(xd + pw + Win + j)] = np.float32(0.0)",
            "            for j in range(Win):",  # unsigned indices: LLVM turns it into vector copies
            "                sb[U(xd + pw + j)] = xb[U(xs + j)]"] if padded else []
    L = [
        "    cg = C // G",
        "    mg = M // G",
        "    ksz = KH * KW",
        # the interior: output columns ow0 whose every tap's load stays inside the row, from the first
        # multiple of w on (the columns left of it are one border tile)
        f"    olo = ((pw + {sw - 1}) // {sw} + {w - 1}) // {w} * {w}",
        f"    ohi = (Win - {span} - (KW - 1) * dw + pw) // {sw}",
        "    for n in range(N):",
        "COPY",
        "        for oh in range(OH):",  # every channel tile of one output row while its input rows are in cache
        *(["            ihf = oh * sh - ph", f"            full = ihf >= 0 and ihf + {kh_n - 1} * dh < H"]
          if unrolled_rows(node) else []),
        f"            for m in range(0, M, {mr}):",
        "                g = m // mg",
        "                wm = wo + m * cg * ksz",
        "                ow0 = olo",
        f"                while ow0 <= ohi and ow0 + {lanes} <= OW:",
        *tile(" " * 20, lanes, inner, False),
        f"                    ow0 += {lanes}",
        "                iend = ow0",
        "                for side in range(2):",  # the columns left and right of the interior
        "                    ow0 = 0 if side == 0 else iend",
        "                    oe = min(olo, OW) if side == 0 else OW",
        "                    while ow0 < oe:",
        f"                        cnt = min({w}, oe - ow0)",
        *tile(" " * 24, w, border, True, outer),
        f"                        ow0 += {w}",
    ]
    ren = {"xb": "xq", "xo": "xoq", "Win": "Wq", "pw": "pq"}
    body = [re.sub(r"\b(xb|xo|Win|pw)\b", lambda mt: ren[mt.group(1)], ln) for ln in L]
    at = body.index("COPY")
    return source(head + body[:at] + copy + body[at + 1:]), epi.args


#: the most taps of a kernel row ``conv_source`` unrolls in a row's interior tiles; wider rows loop over their
#: taps (basic-pitch's constant-Q filter bank, 1x256 kernels: an unrolled copy was 3458 lines, minutes of numba
#: compile time for the same FMAs). Looped / unrolled, AVX2, 36 channels, run time (compile s): 1x8 1.03 (1.2
#: against 2.5 s), 1x12 1.00 (1.3 / 2.4), 1x24 0.97 (1.2 / 4.9), 1x32 0.98 (1.3 / 7.8); the model's cold
#: compile 533 -> 151 s with this and cblock's loop (load ~12)
MAX_UNROLLED_TAPS = 8
#: the most kernel rows ``conv_source`` unrolls for a one-column kernel
MAX_UNROLLED_ROWS = 9


#: rows of at most this many vectors are copied with their column padding (``padded_rows``)
MAX_PADDED_ROW_VECTORS = 8


def padded_rows(node: Node, target: Target) -> bool:
    """Whether ``conv_source`` copies each image with its rows widened by the column padding: a padded layer
    (left and right alike) whose output rows span at most ``MAX_PADDED_ROW_VECTORS`` vectors, where the
    border tiles (one vector each side, masked, each tap tested) are a large share of the row and a copy
    of the input a small cost against the kernel's taps."""
    a = node.attrs
    pads = a["pads"]
    ow = node.outputs[0].shape[3]
    return (pads[1] > 0 and pads[1] == pads[3] and a["kernel_shape"][1] > 1
            and ow <= MAX_PADDED_ROW_VECTORS * target.vector_width)


def unrolled_rows(node: Node) -> bool:
    """Whether ``conv_source`` unrolls the kernel rows too (not only a row's columns) for output rows whose
    every kernel row lies inside the input: Kx1 kernels (2 <= K <= ``MAX_UNROLLED_ROWS``), whose loop over
    kernel rows does one load and ``MR`` FMAs per iteration (64->64 3x1 at 32x32: 66 against 46 GFLOP/s;
    unrolling 3x3 kernels too lost 3-10%)."""
    kh, kw = node.attrs["kernel_shape"]
    return kw == 1 and 1 < kh <= MAX_UNROLLED_ROWS


def conv_tile(target: Target, mg: int, ow: int, w: int) -> tuple[int, int]:
    """(MR, NR): output channels (dividing the group's ``mg``) by vectors of ``w`` columns per register tile.

    One vector of columns and as many channels as fit beside it, the input vector and one broadcast weight
    (at most 12: 16 registers leave two spare): each tap's input is loaded once for ``MR`` FMAs. Measured on
    AVX2 (16 registers), 12 x 1 beat 6 x 2 and 4 x 2 on most dense 3x3 layers (96->96 at 52x52: 44-58 against
    39-45 GFLOP/s; only few-channel rows at 208 columns liked 6 x 2 better, by 5-10%; 6 x 2's 16-column
    interior also leaves more of a 52- or 26-column row to the border tiles). More vectors per row only when
    the channels are too few for 8 FMA chains (the FMA latency times its two pipes).
    """
    regs = target.vector_registers
    if regs >= 32 and w >= 16:
        # 16 lanes x 32 registers (AVX-512): the tile measured there, 8 channels x 1 vector (8 FMA chains:
        # 1.1-1.2x over 4 on stride-2 stem convs)
        return next(r for r in (8, 4, 2, 1) if mg % r == 0), 1
    mr = max(r for r in range(1, max(1, min(12, regs - 4)) + 1) if mg % r == 0)
    nr = 1
    while mr * nr < 8 and mr * 2 * nr + 2 * nr + 1 <= regs and 2 * nr * w <= MAX_ROW_LANES and nr * w < ow:
        nr *= 2
    return mr, nr


def simd_conv_applies(node: Node, target: Target) -> bool:
    x, wt = node.inputs[0], node.inputs[1]
    return (x.dtype == np.float32 and wt.dtype == np.float32 and wt.is_const and len(x.shape) == 4
            and node.attrs["strides"][1] in (1, 2))


@variant("Conv", name="simd_conv", priority=70, applies=simd_conv_applies)
def gen_simd_conv(node: Node, target: Target) -> list[KernelCall]:
    x, wt, bias, y = conv_operands(node)
    a = node.attrs
    N, C, H, Win, M, OH, OW = conv_sizes(node)
    mg = M // a["group"]
    w = row_width(target, OW)
    mr, nr = conv_tile(target, mg, OW, w)
    # [M / mr, C / G, KH, KW, mr]: the tile's mr weights of one tap side by side
    packed = np.ascontiguousarray(wt.const.reshape(M // mr, mr, -1).transpose(0, 2, 1), dtype=np.float32)
    padded = padded_rows(node, target)
    src, extra = conv_source(node, w, mr, a["strides"][1], nr, padded)
    args = [x, Param(packed.reshape(-1)), bias, y, N, C, H, Win, M, OH, OW, *a["kernel_shape"],
            a["strides"][0], a["pads"][0], a["pads"][1], *a["dilations"], a["group"]]
    if padded:
        args.append(Scratch(C * H * (Win + 2 * a["pads"][1])))
    args += extra
    return [KernelCall(src, args, note(node))]
