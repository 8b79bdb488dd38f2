"""Depthwise 2-D convolution with the layer's geometry in the kernel text (``simd_depthwise_static``).

The same multi-row sweep as ``simd_depthwise`` (each input vector loaded once for every output row whose
window covers it, the bands' rows and accumulators from ``choose_sweep``), with what that kernel pays per
channel and per tap moved out of the inner loop, by generating the kernel for the layer's sizes:

* **literal row strides**: the plane's and the output's row lengths are numbers in the text, so every tap
  of a band is one load at ``base + constant`` (one address register instead of one per input row: the
  generic kernel spilled row pointers and reloaded them from the stack in its inner loop);
* **no padded rows**: the plane holds the input rows only; the bands that reach into the top or bottom
  padding are generated one by one without the taps that fall there (on the 2- and 3-row maps of text-line
  models 40-67% of a 5x5 window is padding), the bands in between run in a loop with every tap;
* **aligned copies**: each channel's rows go into the plane at a vector-aligned column (a misaligned vector
  store that straddles two cache lines costs two), only the row tail masked;
* **stride-2 columns split with two plain loads per 2w columns**: the even and the odd columns of a row go
  to two sub-planes, one ``vload2e`` each (the generic kernel's masked loads at both row ends made its copy
  two thirds of a stride-2 layer's time).

Left and right padding stay in the plane (zero margins written once per call), so the inner loop has no
bounds test. A layer split over threads in bands of output rows (``static_part_space``, where every band
has one accumulator per row) gets a kernel per band, from the input rows it reads, bit for bit the
one-thread result. Stores are whole vectors, a row's short last vector first (its run-on into the next row is
overwritten later), only the call's last vectors masked.

Per output vector of a band of ``R`` rows (AVX2, 16 registers: the weights are broadcast per kernel column,
``kh`` at a time, in a loop over the columns): ``kh * kw`` FMAs, ``((R - 1) * sh + kh) * kw / R`` input loads
and ``kh * kw / R`` weight broadcasts (5x5, R = 7: 25 FMAs, 11.4 loads; 3x3, R = 8: 9 FMAs, 4.9 loads), one
store, the epilogue (HardSwish: one FMA, a max, a min, a mul, each with a constant operand: one instruction
each, checked in the assembly; with PP-LCNetV3's ScaleShift after it, folded, two FMAs, a max and a min:
``epilogue.hardswish_scaleshift``) and the copy (stride 1: a load
and a store per input vector). Zen 3 issues 2 loads and 2 FMAs a cycle, so the loads (under half an FMA's
worth) do not bound the sweep; what is left is the epilogue and the copy beside the FMAs (5x5 with
HardSwish + ScaleShift: 25 FMAs and 5 other vector ops). The inner loop (40x40, 5x5, 8 rows, one column):
40 FMAs, 12 loads, 5 broadcasts, no spill.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from cnnjit.ir import Node

from ..kernel import KernelCall, Scratch, Target, note, variant
from ..parts import node_part, part_space
from .epilogue import Epilogue
from .simd_depthwise import MAX_TAPS, Sweep, choose_sweep, store_row
from .simd_pointwise import conv_operands, conv_sizes, row_width
from .template import source


def _up(v: int, w: int) -> int:
    return -(-v // w) * w


@dataclass(frozen=True)
class Geometry:
    """A depthwise layer's sizes and its plane's layout, all literals of the kernel text.

    ``H, W`` input rows and columns, ``OH, OW`` output's, ``pt, pl`` top and left padding, ``kh, kw`` the
    window, ``sh, sw`` the strides, ``w`` the vector width. The plane (``sw`` sub-planes of ``H`` rows of
    ``PW`` elements: stride 2 keeps the even padded columns in sub-plane 0 and the odd ones in sub-plane
    1, column ``c`` at index ``c // 2``) stores padded column ``c`` of sub-plane ``p`` at ``margins[p] + c``
    (stride 1) or ``margins[p] + c // 2``, the margins chosen so that the copy's stores are aligned."""

    w: int
    H: int
    W: int
    OH: int
    OW: int
    pt: int
    pl: int
    kh: int
    kw: int
    sh: int
    sw: int
    margins: tuple[int, ...]
    PW: int
    top: int = 0
    rows: int = 0

    @property
    def plane(self) -> int:
        """Elements of one plane (all its sub-planes), with a vector of slack for the last tap's lanes."""
        return self.sw * self.rows * self.PW + self.w

    def tap(self, j: int) -> int:
        """The plane offset of kernel column ``j``'s input for output column 0."""
        if self.sw == 1:
            return self.margins[0] + j
        return (j % 2) * self.rows * self.PW + self.margins[j % 2] + j // 2


def geometry(node: Node, w: int, padded: bool = False) -> Geometry:
    """The literal sizes and the plane layout of depthwise Conv ``node`` at vector width ``w``; ``padded``:
    the plane has the top and bottom padding rows too (zeros), else the input rows only."""
    a = node.attrs
    (_, _, H, W), (OH, OW) = node.inputs[0].shape, node.outputs[0].shape[2:]
    (kh, kw), (sh, sw), pads = a["kernel_shape"], a["strides"], a["pads"]
    pt, pl = pads[0], pads[1]
    last = _up(OW, w) - 1  # the last lane any output vector computes
    if sw == 1:
        margins = ((-pl) % w,)
        end = max(last + kw - 1, pl + _up(W, w) - 1)  # the taps' reads, the copy's (tail vector's) writes
        PW = _up(margins[0] + end + 1, w)
    else:
        # even input columns land in sub-plane pl % 2 from index pl // 2, odd ones in the other from
        # (pl + 1) // 2; each sub-plane's margin makes its first store aligned
        first = {pl % 2: pl // 2, (pl + 1) % 2: (pl + 1) // 2}
        margins = tuple((-first[p]) % w for p in (0, 1))
        writes = _up(W, 2 * w) // 2 - 1
        PW = _up(max(margins[p] + max(last + (kw - 1) // 2, first[p] + writes) for p in (0, 1)) + 1, w)
    top, rows = (pt, max(pt + H, (OH - 1) * sh + kh)) if padded else (0, H)
    return Geometry(w, H, W, OH, OW, pt, pl, kh, kw, sh, sw, margins, PW, top, rows)


def _copy_lines(g: Geometry, ind: str) -> list[str]:
    """Input row ``src`` (element offset) into row ``ih`` of the plane at ``pn``: whole vectors, the tail
    masked (its lanes past the row are zeros, stored into the right margin)."""
    w, W, PW = g.w, g.W, g.PW
    if g.sw == 1:
        tail = W - W % w
        L = [f"{ind}dst = pn + ih * {PW} + {g.top * PW + g.margins[0] + g.pl}"]
        if tail:
            L += [f"{ind}for iw in range(0, {tail}, {w}):", f"{ind}    vstore{w}(pb, dst + iw, vload{w}(xb, src + iw))"]
        if tail < W:
            L.append(f"{ind}vstore{w}(pb, dst + {tail}, vloadn{w}(xb, src + {tail}, {W - tail}))")
        return L
    pe, po_ = g.pl % 2, (g.pl + 1) % 2
    de = pe * g.rows * PW + g.margins[pe] + g.pl // 2
    do = po_ * g.rows * PW + g.margins[po_] + (g.pl + 1) // 2
    full = max(0, (W - 1) // (2 * w)) * 2 * w  # blocks whose odd load (columns b + 1 .. b + 2w) is inside
    L = [f"{ind}de = pn + ih * {PW} + {g.top * PW + de}", f"{ind}do = pn + ih * {PW} + {g.top * PW + do}"]
    if full:
        L += [f"{ind}for b in range(0, {full}, {2 * w}):",
              f"{ind}    vstore{w}(pb, de + b // 2, vload2e{w}(xb, src + b))",
              f"{ind}    vstore{w}(pb, do + b // 2, vload2e{w}(xb, src + b + 1))"]
    for b in range(full, W, 2 * w):  # the row's last block(s): lanes past its end read as zeros
        L.append(f"{ind}vstore{w}(pb, de + {b // 2}, vload2er{w}(xb, src + {b}, 0, {min(2 * w - 1, W - b)}))")
        if b + 1 < W:
            L.append(f"{ind}vstore{w}(pb, do + {b // 2}, vload2er{w}(xb, src + {b + 1}, 0, "
                     f"{min(2 * w - 1, W - b - 1)}))")
    return L


def band_window(g: Geometry, rows: int, oh0: int | None, top: int, height: int) -> tuple[int, range]:
    """``(first, inside)`` of a band of ``rows`` output rows from row ``oh0`` (None: a band inside the input,
    ``first`` 0): the row of its first window row in rows of ``height`` holding input row 0 at ``top``, and
    its window's rows (relative) that lie in those rows."""
    if oh0 is None:
        return 0, range(rows * g.sh + g.kh)
    first = oh0 * g.sh - g.pt + top
    return first, range(max(0, -first), min(rows * g.sh + g.kh, height - first))


def yrow_line(g: Geometry, oh0: int | None, ind: str) -> str:
    """The kernel line setting ``yrow``, the output offset of the band's first row (``oh0``, else ``oh``)."""
    return f"{ind}yrow = ((n * M + m) * {g.OH} + {'oh' if oh0 is None else oh0}) * {g.OW}"


def _band(g: Geometry, sweep: Sweep, oh0: int | None, epi: Epilogue, ind: str) -> list[str]:
    """One band of ``sweep.rows`` output rows from row ``oh0`` (a number: a band generated on its own, its
    taps in the padding left out) or from the kernel variable ``oh`` (None: a band inside the input, every
    tap)."""
    w, kh, kw, sh, PW, OW = g.w, g.kh, g.kw, g.sh, g.PW, g.OW
    rows, accs = sweep.rows, sweep.accs
    first, inside = band_window(g, rows, oh0, g.top, g.rows)  # (the plane row of the band's first input row)
    L = [f"{ind}prow = pc + (oh * {sh} + {g.top - g.pt}) * {PW}" if oh0 is None else f"{ind}prow = pc",
         yrow_line(g, oh0, ind)]
    rel = first if oh0 is not None else 0  # the plane row of relative input row t is rel + t
    # (the last vector's column is an argument: a loop LLVM cannot unroll, whose weight broadcasts it cannot
    # hoist all at once: with one vector per row, unrolled, their live ranges spilled 290 vectors)
    L += [f"{ind}for ow0 in range(OWL, -1, -{w}):", f"{ind}    base = prow + ow0",
          f"{ind}    ybase = yrow + ow0"]
    L += [f"{ind}    r{r}_{k} = {'bias' if k == 0 else f'vzero{w}()'}" for r in range(rows) for k in range(accs)]
    ts = sorted({r * sh + i for r in range(rows) for i in range(kh)} & set(inside))

    def column(j: int | str, tap: int | str, wj: str, ind2: str) -> list[str]:
        """Kernel column ``j`` (a number, or a loop variable whose plane offset is ``tap``)."""
        out = []
        if not sweep.resident:
            used = sorted({t - r * sh for t in ts for r in range(rows) if 0 <= t - r * sh < kh})
            out += [f"{ind2}w{i}_{wj} = vbcast{w}(wb[U(wk + {i * kw} + {j})])" for i in used]
        for t in ts:
            out.append(f"{ind2}xv = vload{w}(pb, base + {(rel + t) * PW} + {tap})")
            out += [f"{ind2}r{r}_{i % accs} = vfma{w}(w{i}_{wj}, xv, r{r}_{i % accs})"
                    for r in range(rows) for i in range(kh) if r * sh + i == t]
        return out

    if sweep.resident:  # (stride 2: the even columns first, as the loops below: the same sums in any band)
        for j in (range(kw) if g.sw == 1 else [*range(0, kw, 2), *range(1, kw, 2)]):
            L += column(j, g.tap(j), str(j), ind + "    ")
    else:
        # the kernel columns as a loop (its count an argument, so not unrolled): one column's broadcasts, loads
        # and FMAs live at a time. Unrolled, with every tap at base + a constant, LLVM issued all the loads first
        # and spilled (86 vectors on a 40x40 5x5 layer, 15% slower than the generic kernel)
        for p in range(g.sw):  # stride 2: the even kernel columns (sub-plane 0), then the odd ones
            j = "q" if g.sw == 1 else f"2 * q + {p}"
            L += [f"{ind}    for q in range(J{p}):",
                  *column(j, f"q + {g.tap(p)}", "q", ind + "        ")]
    L.append(f"{ind}    cnt = min({w}, {OW} - ow0)")
    for r in range(rows):
        L += store_row(epi, ind + "    ", f"ybase + {r * OW}", w, r, accs, whole=OW % w == 0)
    return L


def bands(g: Geometry, main: Sweep, registers: int, part: tuple[int, int] | None = None
          ) -> list[tuple[int, Sweep, bool]]:
    """The output bands as ``(first row, sweep, inside)``: ``OH // main.rows`` bands of the main sweep, then
    one of the rows left (its own ``choose_sweep``); ``inside`` when every input row a band reads is in the
    input (those bands run in one loop, the others are generated one by one). ``part``: output rows ``OS ..
    OE`` only, the rows left in a sweep of one accumulator (``row_parts``: the same sums as the whole layer's)."""
    out = []
    R = main.rows
    OS, OE = part or (0, g.OH)
    for b in range((OE - OS) // R):
        oh0 = OS + b * R
        first = oh0 * g.sh - g.pt + g.top
        out.append((oh0, main, first >= 0 and first + (R - 1) * g.sh + g.kh <= g.rows))
    rest = (OE - OS) % R
    if rest:
        out.append((OE - rest, Sweep(rest, 1, main.resident) if part else
                    choose_sweep(rest, g.kh, g.kw, g.sh, 1, registers), False))
    return out


def whole_sweeps(node: Node, target: Target) -> list[Sweep]:
    """The sweeps of the whole layer's bands."""
    a = node.attrs
    OH = node.outputs[0].shape[2]
    (kh, kw), sh, regs = a["kernel_shape"], a["strides"][0], target.vector_registers
    main = choose_sweep(OH, kh, kw, sh, 1, regs)
    return [main] + ([choose_sweep(OH % main.rows, kh, kw, sh, 1, regs)] if OH % main.rows else [])


def static_source(node: Node, g: Geometry, registers: int, part: tuple[int, int] | None = None
                  ) -> tuple[str, list]:
    """The kernel for depthwise Conv ``node`` at geometry ``g`` (see the module docstring); ``part``: output
    rows ``OS .. OE`` only (a layer split over threads in bands), from the input rows they read, no store
    running on past row ``OE - 1`` of a channel (the rows after it are another part's)."""
    w = g.w
    epi = Epilogue(node, w, True)
    main = choose_sweep(g.OH, g.kh, g.kw, g.sh, 1, registers)
    plan = bands(g, main, registers, part)
    resident = any(s.resident for _, s, _ in plan)
    OS, OE = part or (0, g.OH)
    ih0, ih1 = max(0, OS * g.sh - g.pt), min(g.H, (OE - 1) * g.sh - g.pt + g.kh)
    L = [
        "def kernel(xb, xo, wb, wo, bb, bo, yb, yo, pb, po, N, C, M, OWL, J0, J1" + epi.signature() + "):",
        "    mult = M // C",
        f"    lim = N * M * {g.OH * g.OW}",
        f"    pa = po + ({w} - po % {w}) % {w}",  # the planes start on a vector boundary
        f"    for i in range(0, {2 * _up(g.plane, w)}, {w}):",  # margins stay zero: copies write inside only
        f"        vstore{w}(pb, pa + i, vzero{w}())",
        "    for n in range(N):",
        # two planes, used in turn: channel c is copied before channel c - 1 is swept, so the sweep never
        # loads what a store just wrote
        "        for c in range(C + 1):",
        "            if c < C:",
        f"                pn = pa + (c % 2) * {_up(g.plane, w)}",
        f"                xc = xo + (n * C + c) * {g.H * g.W}",
        f"                for ih in range({ih0}, {ih1}):",
        f"                    src = xc + ih * {g.W}",
        *_copy_lines(g, " " * 20),
        "            if c == 0:",
        "                continue",
        f"            pc = pa + ((c - 1) % 2) * {_up(g.plane, w)}",
        "            for m in range((c - 1) * mult, c * mult):",
        *channel_head(g, resident, OE if part else None, " " * 16),
    ]
    L += plan_lines(plan, lambda sweep, oh0, ind: _band(g, sweep, oh0, epi, ind), " " * 16)
    return source(L), epi.args


def channel_head(g: Geometry, resident: bool, OE: int | None, ind: str) -> list[str]:
    """Kernel lines before output channel ``m``'s bands: its weights' offset (and the weight vectors when
    ``resident``), its bias vector, and with ``OE`` (a part of rows) the end of its part's output."""
    w = g.w
    return [f"{ind}wk = wo + m * {g.kh * g.kw}",
            *([f"{ind}w{i}_{j} = vbcast{w}(wb[U(wk + {i * g.kw + j})])"
               for i in range(g.kh) for j in range(g.kw)] if resident else []),
            f"{ind}bias = vbcast{w}(bb[bo + m])",
            *([f"{ind}lim = ((n * M + m) * {g.OH} + {OE}) * {g.OW}"] if OE is not None else [])]


def plan_lines(plan: list[tuple[int, Sweep, bool]], band, ind: str) -> list[str]:
    """Kernel lines of a channel's bands (``bands``): a band reaching into the padding rows on its own
    (``band(sweep, first row, ind)``), consecutive inside bands of one sweep in a loop over ``oh``
    (``band(sweep, None, ind)``)."""
    L: list[str] = []
    k = 0
    while k < len(plan):
        oh0, sweep, inside = plan[k]
        if not inside:
            L += band(sweep, oh0, ind)
            k += 1
            continue
        n = 1
        while k + n < len(plan) and plan[k + n][2] and plan[k + n][1] == sweep:
            n += 1
        L += [f"{ind}for ob in range({n}):", f"{ind}    oh = {oh0} + ob * {sweep.rows}",
              *band(sweep, None, ind + "    ")]
        k += n
    return L


#: from this many bands of the main sweep on, the plane has the padding rows (all bands in one loop; the
#: bands at the edges compute the taps there too): below, each band is generated on its own
LOOP_BANDS = 3


def padded_rows(node: Node, target: Target) -> bool:
    """Whether ``node``'s plane holds its top and bottom padding rows (``LOOP_BANDS``): on tall maps the
    edge bands' padded taps are a small share, and one loop of bands keeps the kernel's text (and its
    compile time) that of one band."""
    a = node.attrs
    OH = node.outputs[0].shape[2]
    main = choose_sweep(OH, a["kernel_shape"][0], a["kernel_shape"][1], a["strides"][0], 1, target.vector_registers)
    return OH // main.rows >= LOOP_BANDS


def simd_depthwise_static_applies(node: Node, target: Target) -> bool:
    """A float32 depthwise Conv (constant weights, any channel multiplier), undilated, strides 1 or 2 each
    way, a window of at most ``MAX_TAPS`` taps."""
    x, wt = node.inputs[0], node.inputs[1]
    a = node.attrs
    return (x.dtype == np.float32 and wt.is_const and len(x.shape) == 4 and a["group"] == x.shape[1] > 1
            and wt.shape[1] == 1 and all(s in (1, 2) for s in a["strides"]) and tuple(a["dilations"]) == (1, 1)
            and a["kernel_shape"][0] * a["kernel_shape"][1] <= MAX_TAPS)


@variant("Conv", name="simd_depthwise_static", priority=48, applies=simd_depthwise_static_applies)
def gen_simd_depthwise_static(node: Node, target: Target) -> list[KernelCall]:
    x, wt, bias, y = conv_operands(node)
    N, C, _, _, M, _, OW = conv_sizes(node)
    g = geometry(node, row_width(target, OW), padded=padded_rows(node, target))
    src, extra = static_source(node, g, target.vector_registers, node_part(node))
    args = [x, wt, bias, y, Scratch(2 * _up(g.plane, g.w) + g.w), N, C, M, (OW - 1) // g.w * g.w,
            (g.kw + 1) // 2 if g.sw == 2 else g.kw, g.kw // 2 if g.sw == 2 else 0, *extra]
    return [KernelCall(src, args, note(node))]


@part_space("Conv", "simd_depthwise_static")
def static_part_space(node: Node, target: Target) -> tuple[int, int] | None:
    """Output rows, any range, where every band of the whole layer has one accumulator per row (a row's taps
    then add up in the same order in any band: bit for bit the one-thread result), else none."""
    return (node.outputs[0].shape[2], 1) if all(s.accs == 1 for s in whole_sweeps(node, target)) else None
