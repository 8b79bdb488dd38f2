"""Depthwise 2-D convolution with explicit SIMD: the kernel's weight vectors stay in registers.

Plain NCHW, one input channel at a time (and its ``multiplier`` output channels): the channel's input plane
is first copied into a zero-padded plane (one of two in a ``Scratch``, used in turn so that the sweep of
channel c runs after the copy of channel c + 1 and never loads what a store just wrote; their borders are
zeroed once per call) wide enough that
every tap of every output vector is one unmasked load with no bounds test (stride 2: the plane is split
into its even and odd columns while it is copied, so a tap is a contiguous load too). Several output rows
are swept together in vectors of ``W`` columns (``Sweep``, sized from the register file by
``choose_sweep``): each input vector is loaded once and feeds every output row whose window covers it, the
taps unrolled at generation time, kernel columns outermost; the ``KH*KW`` weight vectors stay in registers
for the whole channel when they fit beside the accumulators (3x3 on 16 registers, 5x5 on 32), else each
column's ``KH`` weights are broadcast once per output vector and feed all the rows. With few rows, each row
keeps several accumulators (independent FMA chains), summed at the end with the bias.
Stores are whole vectors: a row's short last vector is stored first and may run on into the following
rows, written after it; only the call's last vectors use the masked store (which costs about ten plain
stores on AMD Zen; on 14x14 planes the masked row tails halved the layer's speed). Measured on Zen 3
(AVX2), MobileNetV2's 3x3 layers went from 37-43 to 52-57 GFLOP/s (112x112, 14x14) and PP-OCR's 5x5 ones
from 43-46 to 60-65.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from cnnjit.ir import Node

from ..kernel import KernelCall, Scratch, Target, note, variant
from ..parts import node_part, part_space
from .epilogue import Epilogue
from .simd_pointwise import conv_operands, conv_sizes, row_width
from .template import source

MAX_TAPS = 49  # up to 7x7 unrolled

#: output rows swept together at most (each loaded input vector feeds every row whose window covers it)
MAX_ROWS = 8
#: independent FMA chains wanted in flight: 2 FMA pipes x 4 cycles latency
CHAINS = 8


@dataclass(frozen=True)
class Sweep:
    """How one pass over the output rows is organised: ``rows`` output rows at once, ``accs`` accumulators
    per row (kernel row ``i`` adds into accumulator ``i % accs``: independent FMA chains when there are few
    rows), and whether the ``KH*KW`` weight vectors stay in registers for the whole channel (``resident``)
    or are broadcast again per kernel column in every output vector (a column's ``KH`` weights then feed
    all the rows: ``KH + rows * accs + 2`` registers instead of ``KH*KW + ...``)."""

    rows: int
    accs: int
    resident: bool


def _in_rows(rows: int, kh: int, sh: int, dh: int) -> int:
    """Distinct input rows a sweep of ``rows`` output rows reads."""
    return len({r * sh + i * dh for r in range(rows) for i in range(kh)})


def _sweep_cost(rows: int, kh: int, kw: int, sh: int, dh: int, registers: int) -> tuple[float, Sweep] | None:
    """(estimated issue cycles per output row vector, sweep) of the best sweep of exactly ``rows`` rows:
    FMAs on two pipes, loads (input vectors, plus the weight broadcasts of a non-resident sweep) on two
    ports, the latency of each row's FMA chain, and a fixed cost per row (bias, epilogue, store); None when
    no sweep of that many rows fits the registers (weights, accumulators, the input vector and the bias)."""
    best = None
    for resident in (True, False):
        weights = kh * kw if resident else kh
        accs = max(1, min(kh, -(-CHAINS // rows)))
        while accs > 1 and weights + rows * accs + 2 > registers:
            accs -= 1
        if weights + rows * accs + 2 > registers:
            continue
        loads = _in_rows(rows, kh, sh, dh) * kw + (0 if resident else kh * kw)
        latency = kh * kw / accs * 4 / CHAINS * rows  # each row's chain, CHAINS FMAs in flight
        cost = max(rows * kh * kw / 2, loads / 2, latency) / rows + 2 + accs / 2
        if best is None or cost < best[0] - 1e-9:
            best = (cost, Sweep(rows, accs, resident))
    return best


def choose_sweep(OH: int, kh: int, kw: int, sh: int, dh: int, registers: int) -> Sweep:
    """The sweep for a plane of ``OH`` output rows on a register file of ``registers`` vectors: the row
    count (at most ``MAX_ROWS``) whose bands, and the sweep over the ``OH % rows`` rows left, cost the
    fewest estimated cycles (``_sweep_cost``); more rows on a tie (fewer input loads)."""
    best: tuple[float, Sweep] | None = None
    for rows in range(1, max(1, min(OH, MAX_ROWS)) + 1):
        main = _sweep_cost(rows, kh, kw, sh, dh, registers)
        if main is None:
            continue
        rest = OH % rows
        last = _sweep_cost(rest, kh, kw, sh, dh, registers) if rest else (0.0, None)
        if last is None:
            continue
        total = main[0] * (OH - rest) + last[0] * rest
        if best is None or total <= best[0] + 1e-9:
            best = (total, main[1])
    return best[1] if best else Sweep(1, 1, False)


def plane_size(node: Node, w: int) -> tuple[int, int]:
    """Rows and row length of the zero-padded input plane (``Scratch``): every tap's load of every output
    vector, the last one's unused lanes included, falls inside it. Stride 2 keeps the even and the odd
    padded columns as two planes (rows a whole number of vectors long), so each tap is a contiguous load."""
    x, y = node.inputs[0], node.outputs[0]
    a = node.attrs
    (_, _, H, Win), (OH, OW) = x.shape, y.shape[2:]
    (kh, kw), (sh, sw), (dh, dw) = a["kernel_shape"], a["strides"], a["dilations"]
    ow_vectors = -(-OW // w) * w
    rows = max(a["pads"][0] + H, (OH - 1) * sh + (kh - 1) * dh + 1)
    if sw == 1:
        return rows, max(a["pads"][1] + Win, ow_vectors + (kw - 1) * dw)
    half = max(ow_vectors + (kw - 1) * dw // 2, (a["pads"][1] + Win + 1) // 2)
    return rows, -(-half // w) * w


def _rows(w: int, kh_n: int, kw_n: int, sh: int, sw: int, dh: int, dw: int, sweep: Sweep, epi: Epilogue,
          ind: str) -> list[str]:
    """One sweep over the output rows ``oh .. oh + sweep.rows - 1``: unmasked loads from the padded plane,
    each distinct input vector loaded once and fed to every row whose window covers it (kernel columns
    outermost, so a non-resident sweep broadcasts each weight once per output vector)."""
    rows, accs = sweep.rows, sweep.accs
    # the row's last (short) vector first: its store may then run on into the rows after it, whose stores
    # come later (a masked store costs ~10 plain ones on AMD); only the call's very end stays masked
    L = [f"{ind}for ow0 in range((OW - 1) // {w} * {w}, -1, -{w}):", f"{ind}    base = pc + oh * {sh} * PW + ow0"]
    L += [f"{ind}    r{r}_{k} = {'bias' if k == 0 else f'vzero{w}()'}" for r in range(rows) for k in range(accs)]
    ts = sorted({r * sh + i * dh for r in range(rows) for i in range(kh_n)})
    for j in range(kw_n):
        if not sweep.resident:
            L += [f"{ind}    w{i}_{j} = vbcast{w}(wb[U(wk + {i * kw_n + j})])" for i in range(kh_n)]
        col = f"{j * dw}" if sw == 1 else f"{(j * dw) % 2} * PH * PW + {(j * dw) // 2}"  # stride 2: its plane
        for t in ts:
            L.append(f"{ind}    xv = vload{w}(pb, base + {t} * PW + {col})")
            L += [f"{ind}    r{r}_{i % accs} = vfma{w}(w{i}_{j}, xv, r{r}_{i % accs})"
                  for r in range(rows) for i in range(kh_n) if r * sh + i * dh == t]
    L.append(f"{ind}    cnt = min({w}, OW - ow0)")
    for r in range(rows):
        L += store_row(epi, ind + "    ", f"((n * M + m) * OH + oh + {r}) * OW + ow0", w, r, accs)
    return L


def store_row(epi: Epilogue, ind: str, idx: str, w: int, r: int, accs: int, whole: bool = False) -> list[str]:
    """Kernel lines summing output row ``r``'s ``accs`` accumulators (``r<r>_<k>``) into ``a``, applying the
    epilogue and storing it at output element ``idx``: a whole vector as it is; a short one (``cnt`` lanes)
    whole while it ends before ``lim`` (it runs on into rows stored after it), else masked. ``whole``: every
    vector is whole."""
    total = f"r{r}_0"
    for k in range(1, accs):
        total = f"vadd{w}({total}, r{r}_{k})"
    L = [f"{ind}a = {total}"]
    if whole:
        L += epi.vector(ind, "a", idx, w, False)
        L.append(f"{ind}vstore{w}(yb, yo + {idx}, a)")
    else:
        L.append(f"{ind}if cnt == {w}:")
        L += epi.vector(ind + "    ", "a", idx, w, False)
        L.append(f"{ind}    vstore{w}(yb, yo + {idx}, a)")
        L.append(f"{ind}else:")
        L += epi.vector(ind + "    ", "a", idx, w, True)
        L.append(f"{ind}    if {idx} + {w} <= lim:")
        L.append(f"{ind}        vstore{w}(yb, yo + {idx}, a)")
        L.append(f"{ind}    else:")
        L.append(f"{ind}        vstoren{w}(yb, yo + {idx}, a, cnt)")
    return L + epi.after(ind, ["for j in range(cnt):"], f"{idx} + j")


def _copy_row(w: int, ind: str) -> list[str]:
    """Kernel lines copying input row ``src`` into the padded plane's row ``ih + ph`` at column ``pw``."""
    return [f"{ind}dst = pn + (ih + ph) * PW + pw",
            f"{ind}for iw in range(0, tail, {w}):",
            f"{ind}    vstore{w}(pb, dst + iw, vload{w}(xb, src + iw))",
            f"{ind}if tail < Win:",  # a whole vector: the lanes past the row are zeros, stored into padding
            f"{ind}    vstore{w}(pb, dst + tail, vloadn{w}(xb, src + tail, Win - tail))"]


def _split_row(w: int, ind: str) -> list[str]:
    """Stride 2: input row ``src`` into the even and the odd plane (padded column ``c`` at ``c // 2`` of
    plane ``c % 2``), a vector of each at a time; vectors past the row's ends read only its elements."""
    L = []
    for par in (0, 1):
        L += [f"{ind}dst = pn + {par} * PH * PW + (ih + ph) * PW",
              f"{ind}for k0 in range(0, PW, {w}):",
              f"{ind}    iw = 2 * k0 + {par} - pw",
              f"{ind}    if iw >= 0 and iw + {2 * w} <= Win:",
              f"{ind}        vstore{w}(pb, dst + k0, vload2e{w}(xb, src + iw))",
              f"{ind}    else:",
              f"{ind}        lo = max(0, -iw)",
              f"{ind}        hi = min({2 * w - 1}, Win - iw)",
              f"{ind}        if lo < hi:",
              f"{ind}            vstore{w}(pb, dst + k0, vload2er{w}(xb, src + iw, lo, hi))"]
    return L


def depthwise_source(node: Node, w: int, kh_n: int, kw_n: int, sh: int, sw: int, dh: int, dw: int,
                     sweep: Sweep, last: Sweep | None = None, part: tuple[int, int] | None = None,
                     ) -> tuple[str, list]:
    """The kernel: ``sweep`` over the output rows in bands of ``sweep.rows``, then ``last`` over the
    remaining ``OH % sweep.rows`` rows (None when there are none).

    ``part``: only output rows ``OS .. OE`` (these two more arguments), in bands of ``sweep.rows`` from
    ``OS`` and one of the rows left, from the input rows they read; no store runs on past row ``OE - 1`` of
    a channel (the rows after it are another part's). Only for sweeps of one accumulator per row
    (``row_parts``): a row then sums its taps in the same order in any band, bit for bit."""
    epi = Epilogue(node, w, True)
    resident = [f"                w{i}_{j} = vbcast{w}(wb[U(wk + {i * kw_n + j})])"
                for i in range(kh_n) for j in range(kw_n)]
    rows = sweep.rows
    if part is not None:  # (the rows left after the part's bands: a sweep of one accumulator too)
        last = Sweep((part[1] - part[0]) % rows, 1, sweep.resident) if (part[1] - part[0]) % rows else None
    L = [
        "def kernel(xb, xo, wb, wo, bb, bo, yb, yo, pb, po, N, C, H, Win, M, OH, OW, ph, pw, PH, PW"
        + (", OS, OE" if part else "") + epi.signature() + "):",
        "    mult = M // C",
        "    end = N * M * OH * OW",
        # the borders stay zero: each channel overwrites the interior only (the Scratch is a whole number
        # of vectors long)
        f"    PL = ({sw} * PH * PW + {2 * w - 1}) // {w} * {w}",  # one plane (and a vector of slack)
        f"    for i in range(0, 2 * PL, {w}):",
        f"        vstore{w}(pb, po + i, vzero{w}())",
        f"    tail = Win - Win % {w}",
        # the input rows the output rows read (the padded plane's other rows are not read)
        *([f"    ih0 = max(0, OS * {sh} - ph)", f"    ih1 = min(H, (OE - 1) * {sh} + {(kh_n - 1) * dh + 1} - ph)"]
          if part else ["    ih0 = 0", "    ih1 = H"]),
        "    for n in range(N):",
        # two planes, used in turn: channel c is copied before channel c - 1 is swept, so the sweep never
        # loads what a store just wrote (a load over part of a recent store waits for it: on 7x7 planes
        # that stall cost a third of the time)
        "        for c in range(C + 1):",
        "            if c < C:",
        "                pn = po + (c % 2) * PL",
        "                xc = xo + (n * C + c) * H * Win",
        "                for ih in range(ih0, ih1):",
        "                    src = xc + ih * Win",
        *(_copy_row(w, " " * 20) if sw == 1 else _split_row(w, " " * 20)),
        "            if c == 0:",
        "                continue",
        "            pc = po + ((c - 1) % 2) * PL",
        "            for m in range((c - 1) * mult, c * mult):",
        f"                wk = wo + m * {kh_n * kw_n}",
        *(resident if sweep.resident or (last is not None and last.resident) else []),
        f"                bias = vbcast{w}(bb[bo + m])",
        "                lim = ((n * M + m) * OH + OE) * OW" if part else "                lim = end",
        f"                for ob in range({'(OE - OS)' if part else 'OH'} // {rows}):",
        f"                    oh = {'OS + ' if part else ''}ob * {rows}",
        *_rows(w, kh_n, kw_n, sh, sw, dh, dw, sweep, epi, " " * 20),
    ]
    if last is not None:
        L += [f"                oh = {'OE' if part else 'OH'} - {last.rows}",
              *_rows(w, kh_n, kw_n, sh, sw, dh, dw, last, epi, " " * 16)]
    return source(L), epi.args


def row_parts(main: Sweep, last: Sweep | None) -> bool:
    """Whether a layer with these sweeps can be split into any ranges of output rows, bit for bit: every
    row's sweep has one accumulator (its taps summed in one chain, in the same order in any band)."""
    return main.accs == 1 and (last is None or last.accs == 1)


def sweeps(node: Node, target: Target, w: int) -> tuple[Sweep, Sweep | None]:
    """The main sweep of depthwise Conv ``node`` (``choose_sweep``) and the one for its last
    ``OH % rows`` output rows (None when the bands cover them all)."""
    a = node.attrs
    (kh, kw), sh, dh = a["kernel_shape"], a["strides"][0], a["dilations"][0]
    OH = node.outputs[0].shape[2]
    main = choose_sweep(OH, kh, kw, sh, dh, target.vector_registers)
    rest = OH % main.rows
    return main, (choose_sweep(rest, kh, kw, sh, dh, target.vector_registers) if rest else None)


def simd_depthwise_applies(node: Node, target: Target) -> bool:
    x, wt = node.inputs[0], node.inputs[1]
    a = node.attrs
    return (x.dtype == np.float32 and wt.is_const and len(x.shape) == 4 and a["group"] == x.shape[1] > 1
            and wt.shape[1] == 1 and a["strides"][1] in (1, 2)
            and a["kernel_shape"][0] * a["kernel_shape"][1] <= MAX_TAPS)


@variant("Conv", name="simd_depthwise", priority=50, applies=simd_depthwise_applies)
def gen_simd_depthwise(node: Node, target: Target) -> list[KernelCall]:
    x, wt, bias, y = conv_operands(node)
    a = node.attrs
    N, C, H, Win, M, OH, OW = conv_sizes(node)
    w = row_width(target, OW)
    kh, kw = a["kernel_shape"]
    rows = node_part(node)
    src, extra = depthwise_source(node, w, kh, kw, *a["strides"], *a["dilations"], *sweeps(node, target, w),
                                  part=rows)
    PH, PW = plane_size(node, w)
    planes = a["strides"][1]  # stride 2: the even and the odd columns
    plane = (planes * PH * PW + 2 * w - 1) // w * w  # the kernel's PL: + w, a row's last copied vector runs on
    args = [x, wt, bias, y, Scratch(2 * plane), N, C, H, Win, M, OH, OW,
            a["pads"][0], a["pads"][1], PH, PW, *(rows or ()), *extra]
    return [KernelCall(src, args, note(node))]


@part_space("Conv", "simd_depthwise")
def depthwise_part_space(node: Node, target: Target) -> tuple[int, int] | None:
    """Output rows, any range where every row's sweep has one accumulator (``row_parts``), else none."""
    OH, OW = node.outputs[0].shape[2:]
    return (OH, 1) if row_parts(*sweeps(node, target, row_width(target, OW))) else None
