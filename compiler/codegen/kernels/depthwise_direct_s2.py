"""Depthwise 2-D convolution of column stride 2 read straight from the input rows (``depthwise_direct_s2``).

``simd_depthwise_static`` splits each channel's rows into an even and an odd column plane before its sweep:
per ``2w`` input columns four loads, two even/odd shuffles (each an in-lane and a cross-lane one on AVX2) and
two stores, in a phase of its own, then the sweep loads the planes back. On MobileNetV2's stride-2 layers
that copy and its reload held the kernel at 20-24% of the FMA peak even with the input in cache
(``python benchmarks/depthwise.py --strided``). Here every input row an output vector reads is loaded where
it is, ``2w`` columns at a time, and split in registers (``vload2p``: two loads, one in-lane ``shufps`` for
the even and one for the odd columns): the pair at offset ``p`` feeds kernel column ``p`` (evens) and
``p + 1`` (odds), so a 3x3 window costs two pairs per input row (columns 0/1 and 2). The in-lane shuffle
leaves the output columns in a lane order of their own (``vload2p``'s: 0 1 4 5 2 3 6 7 at 8 lanes); the
accumulators stay in that order (weights and bias are broadcasts) and one ``vunpair`` per output vector puts
the sum back in column order before the epilogue and the store.

The rest is ``depthwise_direct``'s: bands of output rows (``choose_sweep``; each input pair loaded once for
every output row whose window covers it), the bands in the top or bottom padding generated without their
taps there, the vectors at a row's ends (whose pairs reach past the row) first with masked loads
(``vload2pr``), the inner ones in ascending order prefetching the next band's rows. A row's taps add up in
the same order in any band (kernel column pairs, then input rows), so bands of rows split over threads give
the one-thread result bit for bit.
"""

from __future__ import annotations

import numpy as np

from cnnjit.ir import Node

from ..kernel import KernelCall, Target, note, variant
from ..parts import node_part, part_space
from .depthwise_direct import direct_source
from .epilogue import Epilogue
from .simd_depthwise import MAX_TAPS, Sweep, choose_sweep, store_row
from .simd_depthwise_static import Geometry, band_window, geometry, yrow_line
from .simd_pointwise import conv_operands, conv_sizes, row_width

#: kernel columns at most: a 5x5 window's three pairs per input row (six loads, five shuffles) cost more than
#: the static kernel's plane copy, whose loads serve five columns (``python benchmarks/depthwise.py --strided
#: --in-schedule --before simd_depthwise_static``: 32x40x40 5x5 0.78-0.86x; 3x3 1.1-1.6x)
MAX_KW = 3
#: output vectors per row at least: on rows of less than one vector (14x14 to 7x7) every vector is an end
#: vector and the static kernel is as fast (96x14x14: 1.01x)
MIN_ROW_VECTORS = 1


def depthwise_direct_s2_applies(node: Node, target: Target) -> bool:
    """A float32 depthwise Conv (constant weights, any channel multiplier) of 2-D input, undilated, column
    stride 2, row stride 1 or 2, at most ``MAX_KW`` kernel columns and ``MAX_TAPS`` taps, output rows of at least
    ``MIN_ROW_VECTORS`` vectors."""
    x, wt = node.inputs[0], node.inputs[1]
    a = node.attrs
    if len(x.shape) != 4:  # (a 1-D or 3-D Conv)
        return False
    kh, kw = a["kernel_shape"]
    return (x.dtype == np.float32 and wt.is_const and a["group"] == x.shape[1] > 1 and wt.shape[1] == 1
            and a["strides"][0] in (1, 2) and a["strides"][1] == 2 and tuple(a["dilations"]) == (1, 1)
            and kw <= MAX_KW and kh * kw <= MAX_TAPS
            and node.outputs[0].shape[3] >= MIN_ROW_VECTORS * row_width(target, node.outputs[0].shape[3]))


def pair_offsets(kw: int) -> list[int]:
    """The kernel columns that start a pair (``p``: columns ``p`` and ``p + 1``, or ``p`` alone at the end)."""
    return list(range(0, kw, 2))


def column_vectors(g: Geometry) -> tuple[list[int], range, list[int]]:
    """The output vectors of a row by their first column: ``(right, inner, left)``, ``inner`` (a range,
    ascending) those whose every pair (``2w`` input columns from ``2 * ow0 - pl + p``) lies inside the input
    row, ``right`` the ones after them and ``left`` the ones before (descending)."""
    w = g.w
    starts = list(range(0, g.OW, w))
    last = pair_offsets(g.kw)[-1]
    inside = [s for s in starts if 2 * s - g.pl >= 0 and 2 * s - g.pl + last + 2 * w <= g.W]
    if not inside:
        return sorted(starts, reverse=True), range(0), []
    a, b = inside[0], inside[-1]
    return ([s for s in reversed(starts) if s > b], range(a, b + 1, w), [s for s in reversed(starts) if s < a])


def _pair(g: Geometry, row: int, p: int | str, ow0: int | None) -> str | None:
    """The ``(evens, odds)`` of the pair at kernel column ``p`` (a number or ``2 * q``) of input row offset
    ``row`` from ``base``: plain loads inside the row; for an end vector (``ow0`` a number) masked to the
    elements inside the row (the mask a constant), None when none is."""
    w = g.w
    idx = f"base + {row} + {p}"
    if ow0 is None:
        return f"vload2p{w}(xb, {idx})"
    start = 2 * ow0 + int(p) - g.pl  # the input column of the pair's first element
    lo, hi = max(0, -start), min(2 * w, g.W - start)
    if hi <= lo:
        return None
    return f"vload2p{w}(xb, {idx})" if (lo, hi) == (0, 2 * w) else f"vload2pr{w}(xb, {idx}, {lo}, {hi})"


def _band(g: Geometry, sweep: Sweep, oh0: int | None, epi: Epilogue, ind: str) -> list[str]:
    """One band of ``sweep.rows`` output rows from row ``oh0`` (a number: a band generated on its own, its
    taps in the padding rows left out) or from the kernel variable ``oh`` (None: every tap inside): the
    output vectors at the row's ends (each generated on its own: its masks are constants), then the ones
    inside in a loop."""
    w, kh, kw, sh, W, OW = g.w, g.kh, g.kw, g.sh, g.W, g.OW
    rows, accs = sweep.rows, sweep.accs
    first, inside = band_window(g, rows, oh0, 0, g.H)
    L = [f"{ind}xrow = xc + (oh * {sh} - {g.pt}) * {W} - {g.pl}" if oh0 is None else
         f"{ind}xrow = xc + {first * W - g.pl}", yrow_line(g, oh0, ind)]
    ts = sorted({r * sh + i for r in range(rows) for i in range(kh)} & set(inside))
    used = sorted({t - r * sh for t in ts for r in range(rows) if 0 <= t - r * sh < kh})

    def fmas(t: int, col: str, xv: str, ind2: str) -> list[str]:
        """The FMAs of input row ``t``'s vector ``xv`` with the weights of kernel column ``col``."""
        return [f"{ind2}r{r}_{i % accs} = vfma{w}(w{i}_{col}, {xv}, r{r}_{i % accs})"
                for r in range(rows) for i in range(kh) if r * sh + i == t]

    def pair(p: int | str, cols: tuple[str, ...], ow0: int | None, ind2: str) -> list[str]:
        """The pair at kernel column ``p``: its evens to column ``cols[0]``, its odds to ``cols[1]`` if any."""
        out = []
        for t in ts:
            load = _pair(g, t * W, p, ow0)
            if load is None:  # (all in the padding)
                continue
            out.append(f"{ind2}xe, xo_ = {load}")
            out += fmas(t, cols[0], "xe", ind2)
            if len(cols) > 1:
                out += fmas(t, cols[1], "xo_", ind2)
        return out

    def vector(ow0: int | None, ind2: str) -> list[str]:
        """The output vector at column ``ow0`` (an end vector: a number) or the kernel variable ``ow0``."""
        out = [f"{ind2}ow0 = {ow0}"] if ow0 is not None else []
        out += [f"{ind2}base = xrow + 2 * ow0", f"{ind2}ybase = yrow + ow0"]
        if ow0 is None:  # the next band's new input rows, into L2 while this band is swept
            nxt = (rows - 1) * sh + kh
            out += [f"{ind2}prefetch(xb, base + {(nxt + t) * W + g.pl + 2 * w})" for t in range(rows * sh)]
        out += [f"{ind2}r{r}_{k} = {'bias' if k == 0 else f'vzero{w}()'}" for r in range(rows) for k in range(accs)]
        if sweep.resident or ow0 is not None:
            for p in pair_offsets(kw):  # (an end vector's masks are constants: its pairs unrolled)
                cols = tuple(str(j) for j in (p, p + 1) if j < kw)
                if not sweep.resident:
                    out += [f"{ind2}w{i}_{j} = vbcast{w}(wb[U(wk + {i * kw + int(j)})])" for j in cols for i in used]
                out += pair(p, cols, ow0, ind2)
        elif ts:  # (none: every row of the band's windows is in the padding, the output is the bias)
            # the whole pairs as a loop (its count an argument, so not unrolled: one pair's broadcasts, loads
            # and FMAs live at a time), then an odd window's last column alone
            ind3 = ind2 + "    "
            out += [f"{ind2}for q in range(JP):",
                    *[f"{ind3}w{i}_e = vbcast{w}(wb[U(wk + {i * kw} + 2 * q)])" for i in used],
                    *[f"{ind3}w{i}_o = vbcast{w}(wb[U(wk + {i * kw} + 2 * q + 1)])" for i in used],
                    *pair("2 * q", ("e", "o"), None, ind3)]
            if kw % 2:
                out += [f"{ind2}w{i}_{kw - 1} = vbcast{w}(wb[U(wk + {i * kw + kw - 1})])" for i in used]
                out += pair(kw - 1, (str(kw - 1),), None, ind2)
        out.append(f"{ind2}cnt = min({w}, {OW} - ow0)")
        for r in range(rows):
            lines = store_row(epi, ind2, f"ybase + {r * OW}", w, r, accs, whole=OW % w == 0)
            out += [lines[0], f"{ind2}a = vunpair{w}(a)", *lines[1:]]  # (the sum back in column order)
        return out

    right, inner, left = column_vectors(g)
    # the row's ends, the last vectors first (descending: a row's short last vector runs on into the next
    # row's first vector, which is stored after it: an end vector, or the first inner one)
    for ow0 in right + left:
        L += vector(ow0, ind)
    if len(inner):
        # ascending (the order the prefetchers follow); the bounds are arguments: a loop LLVM cannot unroll,
        # whose weight broadcasts it cannot hoist
        L += [f"{ind}for ow0 in range(OWA, OWB + 1, {w}):", *vector(None, ind + "    ")]
    return L


def direct_s2_source(node: Node, g: Geometry, registers: int, part: tuple[int, int] | None = None
                     ) -> tuple[str, list]:
    """The kernel for depthwise Conv ``node`` at geometry ``g``; ``part``: output rows ``OS .. OE`` only (a
    layer split over threads in bands), no store running on past row ``OE - 1`` of a channel
    (``depthwise_direct``'s kernel with this one's bands)."""
    return direct_source(node, g, registers, part, band=_band, arguments="OWA, OWB, JP")


def sweep_registers(node: Node, target: Target) -> int:
    """The registers ``choose_sweep`` may count on: the target's less a pair's odd vector and the odd kernel
    column's weights, live beside the evens' (counted, 16 registers, 3x3: 24x56x56 stride 2 went from 27.8
    to 31.7 GFLOP/s; the sweep of all 16 spilled)."""
    return target.vector_registers - node.attrs["kernel_shape"][0] - 1


def _sweeps(node: Node, target: Target) -> list[Sweep]:
    """The sweeps of the whole layer's bands (``simd_depthwise_static.whole_sweeps`` on this kernel's
    registers)."""
    (kh, kw), sh, OH = node.attrs["kernel_shape"], node.attrs["strides"][0], node.outputs[0].shape[2]
    regs = sweep_registers(node, target)
    main = choose_sweep(OH, kh, kw, sh, 1, regs)
    return [main] + ([choose_sweep(OH % main.rows, kh, kw, sh, 1, regs)] if OH % main.rows else [])


@variant("Conv", name="depthwise_direct_s2", priority=47, applies=depthwise_direct_s2_applies)
def gen_depthwise_direct_s2(node: Node, target: Target) -> list[KernelCall]:
    x, wt, bias, y = conv_operands(node)
    N, C, _, _, M, _, OW = conv_sizes(node)
    g = geometry(node, row_width(target, OW))
    src, extra = direct_s2_source(node, g, sweep_registers(node, target), node_part(node))
    _, inner, _ = column_vectors(g)
    bounds = (inner[0], inner[-1]) if len(inner) else (0, -1)
    return [KernelCall(src, [x, wt, bias, y, N, C, M, *bounds, g.kw // 2, *extra], note(node))]


@part_space("Conv", "depthwise_direct_s2")
def direct_s2_part_space(node: Node, target: Target) -> tuple[int, int] | None:
    """Output rows, any range, where every band of the whole layer has one accumulator per row (a row's taps
    then add up in the same order in any band: bit for bit the one-thread result), else none."""
    return (node.outputs[0].shape[2], 1) if all(s.accs == 1 for s in _sweeps(node, target)) else None
