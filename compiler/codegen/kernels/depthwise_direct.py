"""Depthwise 2-D convolution read straight from the input rows, no plane copy (``depthwise_direct``).

``simd_depthwise_static`` copies each channel into a zero-padded plane before its sweep: one load and one
store per input vector, in a phase of its own that does not overlap the FMAs. On a 3x3 layer that copy is a
fifth of the time (16x24x160, PP-OCRv4's recognizer: 23.2 us with it, 18.2 us without), and where the plane
pair outgrows L1 (two 24x176 planes: 36 KB) the sweep reads it back from L2. For a column stride of 1 the
plane is not needed: every tap of an output vector is an unaligned load of the input row at a constant
offset, and the padding is handled where it is:

* **rows**: the bands of output rows whose window reaches the top or bottom padding are generated one by one
  without the taps there (``simd_depthwise_static``'s edge bands); the bands in between run in one loop
  with every tap;
* **columns**: an output vector whose taps all lie inside the row (every vector but the first and the last
  one or two) loads them plainly, in a loop over the vectors in ascending order (the order the hardware
  prefetchers follow: descending, a 48x160x160 layer from L3 ran 1.6x slower), which also prefetches the
  rows the next band adds (``prefetch``, into L2: 16x320x320 from L3 513 us against 726 without); the
  vectors at the row's ends run first, in one loop of their own whose loads are masked to the lanes inside
  the row (``vloadr``: the lanes outside read as zeros and are never accessed; the masks are computed per
  kernel column, so one body serves both ends of every row).

The sweep itself is ``simd_depthwise_static``'s (bands of ``choose_sweep`` rows, each input vector loaded
once for every output row whose window covers it, weights resident or broadcast per kernel column), so a
band's sums are bit for bit that kernel's. Stores as there: whole vectors, a row's short last vector first
(its run-on into the next row is overwritten later), only the call's last vectors masked. Applies to
undilated depthwise Convs of column stride 1 (row stride 1 or 2); the stride-2 columns keep the static
kernel, whose copy also splits the even and the odd columns. Where it applies (``depthwise_direct_applies``:
3 kernel columns at most, rows of 4 vectors and more, 4 rows and more: measured against the static kernel,
the end vectors' masked loads and the edge bands cost more than the copy on narrower, shorter maps and wider
windows) it ran 1.05-1.25x faster on 3x3 layers (``python benchmarks/depthwise.py --before
simd_depthwise_static``).
"""

from __future__ import annotations

import numpy as np

from cnnjit.ir import Node

from ..kernel import KernelCall, Target, note, variant
from ..parts import node_part, part_space
from .epilogue import Epilogue
from .simd_depthwise import MAX_TAPS, Sweep, choose_sweep, store_row
from .simd_depthwise_static import (
    Geometry,
    band_window,
    bands,
    channel_head,
    geometry,
    plan_lines,
    whole_sweeps,
    yrow_line,
)
from .simd_pointwise import conv_operands, conv_sizes, row_width
from .template import source

#: kernel columns at most: a wider window's end vectors (two or more taps masked at each end of a row) cost
#: more than the copy they save (5x5 on 40x40, 192 channels: 229 us against the static kernel's 206; 3x3 on
#: 16x24x160 21.0 against 24.0, 96x80x80 197 against 231; ``benchmarks/depthwise.py --before
#: simd_depthwise_static``)
MAX_KW = 3
#: output vectors per row at least: on shorter rows the end vectors, each tap a masked load, are most of the
#: work (5x5 on 20x20 and 14x14: 0.71-0.66x the static kernel)
MIN_ROW_VECTORS = 4
#: output rows at least: on the 1-3 row maps of text lines every band reaches into the padding rows and the
#: plane copy is cheap (3x3, 40-64 columns: 1 row 0.88x, 2 rows 0.84x, 3 rows 0.84x the static kernel; 4 rows
#: 1.02x, 6 rows 1.03-1.07x, 8 rows 1.08x)
MIN_ROWS = 4


def depthwise_direct_applies(node: Node, target: Target) -> bool:
    """A float32 depthwise Conv (constant weights, any channel multiplier), undilated, column stride 1, row
    stride 1 or 2, at most ``MAX_KW`` kernel columns and ``MAX_TAPS`` taps, at least ``MIN_ROWS`` output rows
    of at least ``MIN_ROW_VECTORS`` vectors."""
    x, wt = node.inputs[0], node.inputs[1]
    a = node.attrs
    if len(x.shape) != 4:  # (a 1-D or 3-D Conv)
        return False
    (kh, kw), (OH, OW) = a["kernel_shape"], node.outputs[0].shape[2:]
    return (x.dtype == np.float32 and wt.is_const and a["group"] == x.shape[1] > 1
            and wt.shape[1] == 1 and a["strides"][0] in (1, 2) and a["strides"][1] == 1
            and tuple(a["dilations"]) == (1, 1) and kw <= MAX_KW and kh * kw <= MAX_TAPS
            and OH >= MIN_ROWS and OW >= MIN_ROW_VECTORS * row_width(target, OW))


def column_vectors(g: Geometry) -> tuple[list[int], range, list[int]]:
    """The output vectors of a row by their first column: ``(right, inner, left)``, ``right`` the vectors
    past the last whose taps all lie inside the input row (descending), ``inner`` those (a range, descending),
    ``left`` the ones before them (descending)."""
    w = g.w
    starts = list(range(0, g.OW, w))
    inside = [s for s in starts if s - g.pl >= 0 and s - g.pl + g.kw - 1 + w <= g.W]
    if not inside:
        return sorted(starts, reverse=True), range(0), []
    a, b = inside[0], inside[-1]
    return ([s for s in reversed(starts) if s > b], range(b, a - 1, -w),
            [s for s in reversed(starts) if s < a])


def _load(g: Geometry, row: int, edge: bool, j: int | str) -> str:
    """The input vector of kernel column ``j`` (a number or the loop variable ``q``) at input row offset
    ``row`` from ``base``: a plain load for a vector inside the row, else (``edge``: the output vector at the
    kernel variable ``ow0``) a masked load of the lanes inside the row, zeros elsewhere."""
    w = g.w
    idx = f"base + {row} + {j}"
    if not edge:
        return f"vload{w}(xb, {idx})"
    start = f"ow0 + {j - g.pl if isinstance(j, int) else f'{j} - {g.pl}'}"  # the input column of lane 0
    return f"vloadr{w}(xb, {idx}, max(0, -({start})), min({w}, {g.W} - ({start})))"


def _band(g: Geometry, sweep: Sweep, oh0: int | None, epi: Epilogue, ind: str) -> list[str]:
    """One band of ``sweep.rows`` output rows from row ``oh0`` (a number: a band generated on its own, its
    taps in the padding rows left out) or from the kernel variable ``oh`` (None: every tap inside): first
    the output vectors at the row's ends (one body, its column masks computed), then the ones inside."""
    w, kh, kw, sh, W, OW = g.w, g.kh, g.kw, g.sh, g.W, g.OW
    rows, accs = sweep.rows, sweep.accs
    first, inside = band_window(g, rows, oh0, 0, g.H)  # (the input row of the band's first window row)
    L = [f"{ind}xrow = xc + (oh * {sh} - {g.pt}) * {W} - {g.pl}" if oh0 is None else
         f"{ind}xrow = xc + {first * W - g.pl}", yrow_line(g, oh0, ind)]
    ts = sorted({r * sh + i for r in range(rows) for i in range(kh)} & set(inside))
    used = sorted({t - r * sh for t in ts for r in range(rows) if 0 <= t - r * sh < kh})

    def column(edge: bool, j: int | str, ind2: str) -> list[str]:
        """Kernel column ``j`` (a number: resident weights, or the loop variable ``q``)."""
        wj = str(j)
        out = [] if isinstance(j, int) else [f"{ind2}w{i}_q = vbcast{w}(wb[U(wk + {i * kw} + q)])" for i in used]
        for t in ts:
            out.append(f"{ind2}xv = {_load(g, t * W, edge, j)}")
            out += [f"{ind2}r{r}_{i % accs} = vfma{w}(w{i}_{wj}, xv, r{r}_{i % accs})"
                    for r in range(rows) for i in range(kh) if r * sh + i == t]
        return out

    def vector(edge: bool, ind2: str) -> list[str]:
        """The output vector at column ``ow0`` (a kernel variable)."""
        out = [f"{ind2}base = xrow + ow0", f"{ind2}ybase = yrow + ow0"]
        if not edge:  # the next band's new input rows, into L2 while this band is swept
            nxt = (rows - 1) * sh + kh
            out += [f"{ind2}prefetch(xb, base + {(nxt + t) * W + g.pl + w})" for t in range(rows * sh)]
        out += [f"{ind2}r{r}_{k} = {'bias' if k == 0 else f'vzero{w}()'}" for r in range(rows) for k in range(accs)]
        if sweep.resident and not edge:
            for j in range(kw):
                out += column(edge, j, ind2)
        else:
            # the kernel columns as a loop (its count an argument, so not unrolled: one column's broadcasts,
            # loads and FMAs live at a time; unrolled, LLVM hoisted the loads and spilled)
            out += [f"{ind2}for q in range(J):", *column(edge, "q", ind2 + "    ")]
        out.append(f"{ind2}cnt = min({w}, {OW} - ow0)")
        for r in range(rows):
            out += store_row(epi, ind2, f"ybase + {r * OW}", w, r, accs, whole=OW % w == 0)
        return out

    right, inner, left = column_vectors(g)
    if right or left:
        # the row's ends, the last vectors first (descending: a row's short last vector runs on into the next
        # row's first vector, which is stored after it: an end vector, or the first inner one)
        nr, last = len(right), max(right, default=0)
        L += [f"{ind}for e in range({nr + len(left)}):",
              f"{ind}    ow0 = {last} - e * {w} if e < {nr} else (e - {nr}) * {w}",
              *vector(True, ind + "    ")]
    if len(inner):
        # ascending (the order the prefetchers follow); the bounds are arguments: a loop LLVM cannot unroll,
        # whose weight broadcasts it cannot hoist
        L += [f"{ind}for ow0 in range(OWA, OWB + 1, {w}):", *vector(False, ind + "    ")]
    return L


def direct_source(node: Node, g: Geometry, registers: int, part: tuple[int, int] | None = None,
                  band=None, arguments: str = "OWB, OWA, J") -> tuple[str, list]:
    """The kernel for depthwise Conv ``node`` at geometry ``g`` (a plane-less one: ``top`` 0, ``rows`` the
    input's); ``part``: output rows ``OS .. OE`` only (a layer split over threads in bands), no store running
    on past row ``OE - 1`` of a channel. ``band(g, sweep, oh0, epi, ind)`` gives a band's lines (default this
    kernel's, ``depthwise_direct_s2`` passes its own), ``arguments`` the kernel's arguments after ``M``."""
    band = band or _band
    epi = Epilogue(node, g.w, True)
    main = choose_sweep(g.OH, g.kh, g.kw, g.sh, 1, registers)
    plan = bands(g, main, registers, part)
    resident = any(s.resident for _, s, _ in plan)
    L = [
        f"def kernel(xb, xo, wb, wo, bb, bo, yb, yo, N, C, M, {arguments}" + epi.signature() + "):",
        "    mult = M // C",
        f"    lim = N * M * {g.OH * g.OW}",
        "    for n in range(N):",
        "        for m in range(M):",
        f"            xc = xo + (n * C + m // mult) * {g.H * g.W}",
        *channel_head(g, resident, part[1] if part else None, " " * 12),
    ]
    L += plan_lines(plan, lambda sweep, oh0, ind: band(g, sweep, oh0, epi, ind), " " * 12)
    return source(L), epi.args


@variant("Conv", name="depthwise_direct", priority=47, applies=depthwise_direct_applies)
def gen_depthwise_direct(node: Node, target: Target) -> list[KernelCall]:
    x, wt, bias, y = conv_operands(node)
    N, C, _, _, M, _, OW = conv_sizes(node)
    g = geometry(node, row_width(target, OW))
    src, extra = direct_source(node, g, target.vector_registers, node_part(node))
    _, inner, _ = column_vectors(g)
    bounds = (inner[0], inner[-1]) if len(inner) else (0, 0)
    return [KernelCall(src, [x, wt, bias, y, N, C, M, *bounds, g.kw, *extra], note(node))]


@part_space("Conv", "depthwise_direct")
def direct_part_space(node: Node, target: Target) -> tuple[int, int] | None:
    """Output rows, any range, where every band of the whole layer has one accumulator per row (a row's taps
    then add up in the same order in any band: bit for bit the one-thread result), else none."""
    return (node.outputs[0].shape[2], 1) if all(s.accs == 1 for s in whole_sweeps(node, target)) else None
