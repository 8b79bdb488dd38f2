"""Softmax / LogSoftmax in vectors (float32), over any axis.

The tensor is ``outer x L x inner`` around the softmax axis (length ``L``).

Every form: the max with ``maxps`` (``vmaxf``), ``exp(x - max)`` with ``vexpneg`` (an exp for arguments
that are never positive, 19 instructions against ``vexp``'s 30, 2 ulp), row reductions as trees
(``vhmaxt`` / ``vhsumt``; AVX2, in the SVTR block: 4x64x64 12.8 -> ~9 us, 64x97 6.1 -> ~4.5 us).

* ``inner == 1`` (the last axis, e.g. a recogniser's 40 x 6625 class scores): each row in vectors of
  ``4 * W`` lanes: the max (a masked tail load fills with -inf), then ``exp(x - max)`` stored and summed
  (Softmax) or only summed (LogSoftmax), then one pass scaling by ``1 / sum`` or subtracting
  ``max + log(sum)``. Rows of at most ``SHORT_ROW`` elements (an attention head's scores) go
  ``ROWS_AT_ONCE`` at a time in one-vector steps, so independent rows hide each other's reduction chains
  (AVX2, with the call: 4x64x64 26 -> 22 us, 64x97 15.7 -> 11.7, 64 rows of 8 10.3 -> 4.3; 40x6625 stays
  one row at a time, which is faster there).
* ``inner > 1``: ``W`` neighbouring inner positions at once, one lane each, walking the axis with stride
  ``inner``: the same three passes with a lane-wise max and sum (no horizontal reduction).
"""

from __future__ import annotations

import numpy as np

from cnnjit.ir import Node

from ..kernel import KernelCall, Scratch, Target, form, note, variant
from .template import source

#: the exp of ``x - max`` (an intrinsic family name): ``vexpsm`` (``simd_math.VecMath.exp_softmax``, 16
#: instructions: 0.49 -> 0.43 ns per element in a softmax loop at AVX2 against ``vexpneg``'s 22); the form
#: ``EXP_BEFORE`` calls the earlier ``vexpneg`` instead (``benchmarks/small_ops.py``'s "before")
EXP = "vexpsm"
EXP_BEFORE = form("softmax_vexpneg", "Softmax's and Attention's exp(x - max) as vexpneg, not vexpsm",
                  swap=(EXP, "vexpneg"))
#: rows of at most this many elements are computed ``ROWS_AT_ONCE`` at a time: each row's max and sum are
#: chains of dependent vector operations and two horizontal reductions, which a short row (an attention
#: head's 64 scores) cannot hide; independent rows interleaved in one loop can
SHORT_ROW = 256
ROWS_AT_ONCE = 4
#: vectors per step of each of those rows
SHORT_LANES = 1


def _rows_body(v: int, log: bool, rows: int, ind: str) -> list[str]:
    """The three passes over ``rows`` rows starting at row ``o``, interleaved (one loop per pass for all)."""
    R = range(rows)
    L = [f"xr{r} = xo + (o + {r}) * L" for r in R] + [f"yr{r} = yo + (o + {r}) * L" for r in R]
    L += [f"m{r} = vbcast{v}(-math.inf)" for r in R]
    L += [f"for j in range(0, tail, {v}):"] + [f"    m{r} = vmaxf{v}(m{r}, vload{v}(xb, xr{r} + j))" for r in R]
    L += ["if tail < L:"]
    L += [f"    m{r} = vmaxf{v}(m{r}, vloadrf{v}(xb, xr{r} + tail, 0, L - tail, -math.inf))" for r in R]
    L += [f"mx{r} = vbcast{v}(vhmaxt{v}(m{r}))" for r in R] + [f"s{r} = vzero{v}()" for r in R]
    L += [f"for j in range(0, tail, {v}):"]
    for r in R:
        L += [f"    e{r} = {EXP}{v}(vsub{v}(vload{v}(xb, xr{r} + j), mx{r}))", f"    s{r} = vadd{v}(s{r}, e{r})"]
        if not log:
            L.append(f"    vstore{v}(yb, yr{r} + j, e{r})")
    L += ["if tail < L:"]
    for r in R:
        L += [f"    e{r} = {EXP}{v}(vsub{v}(vloadrf{v}(xb, xr{r} + tail, 0, L - tail, -math.inf), mx{r}))",
              f"    s{r} = vadd{v}(s{r}, e{r})"]
        if not log:
            L.append(f"    vstoren{v}(yb, yr{r} + tail, e{r}, L - tail)")
    # the last pass: Softmax scales the stored exponentials by 1 / sum, LogSoftmax subtracts max + log(sum)
    # from the input
    if log:
        L += [f"k{r} = vadd{v}(mx{r}, vbcast{v}(math.log(vhsumt{v}(s{r}))))" for r in R]
        op, b, at = "vsub", "xb", "xr"
    else:
        L += [f"k{r} = vbcast{v}(1.0 / vhsumt{v}(s{r}))" for r in R]
        op, b, at = "vmul", "yb", "yr"
    L += [f"for j in range(0, tail, {v}):"]
    L += [f"    vstore{v}(yb, yr{r} + j, {op}{v}(vload{v}({b}, {at}{r} + j), k{r}))" for r in R]
    L += ["if tail < L:"]
    L += [f"    vstoren{v}(yb, yr{r} + tail, {op}{v}(vloadn{v}({b}, {at}{r} + tail, L - tail), k{r}), L - tail)"
          for r in R]
    return [ind + ln for ln in L]


def _rows_source(v: int, log: bool, rows: int = 1) -> str:
    """``inner == 1``: rows of ``L`` contiguous elements, ``v`` lanes per step, ``rows`` rows at a time (the
    rows left over one by one)."""
    L = ["def kernel(xb, xo, yb, yo, outer, L):", f"    tail = L - L % {v}", "    o = 0"]
    if rows > 1:
        L += [f"    while o + {rows} <= outer:", *_rows_body(v, log, rows, " " * 8), f"        o += {rows}"]
    L += ["    while o < outer:", *_rows_body(v, log, 1, " " * 8), "        o += 1"]
    return source(L)


def _columns_body(v: int, log: bool, masked: bool, ind: str) -> list[str]:
    """The three passes over ``v`` inner positions from ``base``, walking the axis with stride ``inner``:
    plain vector loads and stores, or (``masked``, the last ``cnt`` positions) masked ones, which are
    microcoded on AMD and so kept out of the full steps."""
    def ld(buf: str, at: str, fill: str = "-math.inf") -> str:
        return f"vloadrf{v}({buf}, {at}, 0, cnt, {fill})" if masked else f"vload{v}({buf}, {at})"

    def st(at: str, val: str) -> str:
        return f"vstoren{v}(yb, {at}, {val}, cnt)" if masked else f"vstore{v}(yb, {at}, {val})"

    x_at, y_at = "xo + base + j * inner", "yo + base + j * inner"
    L = [f"m = vbcast{v}(-math.inf)", "for j in range(L):", f"    m = vmaxf{v}(m, {ld('xb', x_at)})",
         f"s = vzero{v}()", "for j in range(L):", f"    e = {EXP}{v}(vsub{v}({ld('xb', x_at)}, m))",
         f"    s = vadd{v}(s, e)"]
    if not log:
        scaled = f"vmul{v}({ld('yb', y_at, '0.0')}, k)"
        L += ["    " + st(y_at, "e"), f"k = vdiv{v}(vbcast{v}(1.0), s)", "for j in range(L):",
              "    " + st(y_at, scaled)]
    else:
        shifted = f"vsub{v}({ld('xb', x_at, '0.0')}, k)"
        L += [f"k = vadd{v}(m, vlog{v}(s))", "for j in range(L):", "    " + st(y_at, shifted)]
    return [ind + ln for ln in L]


def _columns_source(v: int, log: bool) -> str:
    """``inner > 1``: ``v`` neighbouring inner positions per step, the axis walked with stride ``inner``
    (the last fewer than ``v`` positions with masked loads and stores)."""
    L = ["def kernel(xb, xo, yb, yo, outer, L, inner):", f"    full = inner - inner % {v}",
         "    cnt = inner - full", "    for o in range(outer):", f"        for i0 in range(0, full, {v}):",
         "            base = o * L * inner + i0", *_columns_body(v, log, False, " " * 12),
         "        if cnt:", "            base = o * L * inner + full", *_columns_body(v, log, True, " " * 12)]
    return source(L)


def _axis_split(node: Node) -> tuple[int, int, int]:
    x = node.inputs[0]
    ax = node.attrs["axis"] % len(x.shape)
    return (int(np.prod(x.shape[:ax], dtype=np.int64)), x.shape[ax],
            int(np.prod(x.shape[ax + 1:], dtype=np.int64)))


def simd_softmax_applies(node: Node, target: Target) -> bool:
    x = node.inputs[0]
    return x.dtype == np.float32 and len(x.shape) >= 1 and x.type.size > 0


@variant("Softmax", "LogSoftmax", name="simd_softmax", priority=10, applies=simd_softmax_applies)
def gen_simd_softmax(node: Node, target: Target) -> list[KernelCall]:
    outer, length, inner = _axis_split(node)
    log = node.op == "LogSoftmax"
    w = target.vector_width
    if inner == 1:
        rows, v = (ROWS_AT_ONCE, SHORT_LANES * w) if length <= SHORT_ROW else (1, min(4 * w, 64))
        return [KernelCall(_rows_source(v, log, rows), [node.inputs[0], node.outputs[0], outer, length],
                           note(node))]
    return [KernelCall(_columns_source(w, log), [node.inputs[0], node.outputs[0], outer, length, inner],
                       note(node))]


# -- across rows -------------------------------------------------------------------------------------------
#: rows ``softmax_across_rows`` takes: from one vector to below this many vectors. The row form pays two
#: horizontal reductions and a masked tail per row, which only rows this short feel: AVX2, both with
#: ``vexpsm``, in the schedule (``benchmarks/small_ops.py``), 100 rows of 8: 0.73 -> 0.69 us (min 1.29x),
#: where rows of 16 (1344 x 16: 13.4 -> 14.6 us), 40 (8x40x40: 6.9 -> 7.3) and 80 (256 x 80: 9.5 -> 11.4) are
#: slower across rows: the exp, not the reductions, sets their pace, and the transposes add to it
ACROSS_MAX_VECTORS = 2
#: independent sum chains of the exp pass (a row's sum is a chain of dependent adds)
ACROSS_SUMS = 2


def _across_chunks(w: int, body: list[str]) -> list[str]:
    """``body`` (lines using ``c``) for every chunk of ``w`` columns: the whole chunks, then, when ``w`` does
    not divide ``L``, the last ``w`` columns (overlapping the chunk before: those columns are computed
    again from the same values, so the max, the stored exponentials and the outputs are unchanged)."""
    return ([f"for c in range(0, full, {w}):", *["    " + ln for ln in body], "if full < L:", f"    c = L - {w}",
             *["    " + ln for ln in body]])


def across_rows_source(w: int) -> str:
    """``kernel(xb, xo, yb, yo, zb, zo, outer, L)``: Softmax over rows of ``L >= w`` contiguous elements,
    ``w`` rows at a time with one row per lane (see ``gen_softmax_across_rows``); the rows left over (fewer
    than ``w``) by the row form, one at a time."""
    C = range(w)
    cols = ", ".join(f"t{j}" for j in C)
    load = [f"{cols} = vloadtr{w}(xb, xo + base + c, L)"]
    load += [f"vstore{w}(zb, zo + (c + {j}) * {w}, t{j})" for j in C]
    load += [f"m = vmaxf{w}(m, t{j})" for j in C]
    store = [f"t{j} = vmul{w}(vload{w}(zb, zo + (c + {j}) * {w}), k)" for j in C]
    store += [f"vstoretr{w}(yb, yo + base + c, L, ({cols},))"]
    S = range(ACROSS_SUMS)
    body = ["base = o * L", f"m = vbcast{w}(-math.inf)", *_across_chunks(w, load)]
    body += [f"s{a} = vzero{w}()" for a in S] + [f"for j in range(0, L - L % {ACROSS_SUMS}, {ACROSS_SUMS}):"]
    for a in S:
        at = f"zo + (j + {a}) * {w}"
        body += [f"    e = {EXP}{w}(vsub{w}(vload{w}(zb, {at}), m))", f"    s{a} = vadd{w}(s{a}, e)",
                 f"    vstore{w}(zb, {at}, e)"]
    body += [f"for j in range(L - L % {ACROSS_SUMS}, L):", f"    e = {EXP}{w}(vsub{w}(vload{w}(zb, zo + j * {w}), m))",
             f"    s0 = vadd{w}(s0, e)", f"    vstore{w}(zb, zo + j * {w}, e)"]
    total = "s0" if ACROSS_SUMS == 1 else f"vadd{w}(s0, s1)"
    body += [f"k = vdiv{w}(vbcast{w}(1.0), {total})", *_across_chunks(w, store)]
    L = ["def kernel(xb, xo, yb, yo, zb, zo, outer, L):", f"    full = L - L % {w}", "    tail = full",
         f"    blocks = outer - outer % {w}", f"    for o in range(0, blocks, {w}):", *["        " + ln for ln in body],
         "    o = blocks", "    while o < outer:", *_rows_body(w, False, 1, " " * 8), "        o += 1"]
    return source(L)


def softmax_across_rows_applies(node: Node, target: Target) -> bool:
    """A float32 Softmax over the last axis (``inner == 1``) of rows from one vector to less than
    ``ACROSS_MAX_VECTORS`` long, at least a vector of them, at a machine vector width."""
    if not simd_softmax_applies(node, target) or node.op != "Softmax" or target.vector_width not in (4, 8, 16):
        return False
    outer, length, inner = _axis_split(node)
    w = target.vector_width
    return inner == 1 and w <= length < ACROSS_MAX_VECTORS * w and outer >= w


@variant("Softmax", name="softmax_across_rows", priority=5, applies=softmax_across_rows_applies)
def gen_softmax_across_rows(node: Node, target: Target) -> list[KernelCall]:
    """Rows of one to two vectors (a DFL's 16 bins on the last axis at AVX-512, 8-12 scores) ``W`` at a time,
    one row per lane: each ``W x W`` block loaded and transposed in registers (``vloadtr``) into a scratch of ``L``
    column vectors, the rows' max, ``exp(x - max)`` (``vexpneg``) and sum lane-wise over the columns (no
    horizontal reductions, ``W`` independent exps per instruction), then ``* 1 / sum`` transposed back
    (``vstoretr``). A row length that is not a multiple of ``W`` ends with an overlapping chunk (no masked
    loads or stores: microcoded on AMD)."""
    outer, length, _ = _axis_split(node)
    w = target.vector_width
    return [KernelCall(across_rows_source(w), [node.inputs[0], node.outputs[0], Scratch(w * length), outer, length],
                       note(node))]
