"""Kernels of the general ops in ``cnnjit.ir.ops.misc``: unary maps, comparisons / logic / Mod / Where over
broadcast operands, ArgMax/ArgMin, TopK, more reductions, CumSum/CumProd, Gather/ScatterElements,
GatherND/ScatterND, GridSample, Trilu and OneHot.

These ops sit beside a CNN's convolutions (post-processing, anchors, masks), so the kernels are plain
scalar loops that LLVM vectorises where it can. Axis ops see their input as ``(outer, L, inner)`` around
the axis.
"""

from __future__ import annotations

import textwrap

import numpy as np

from cnnjit.ir import Node
from cnnjit.ir.ops import normalize_axis

from ..kernel import KernelCall, Param, Scratch, Target, note, variant
from .elementwise import broadcast_calls
from .nn_extra import reduce_layout
from .template import Template, source

#: scalar expression (in ``x``) of each unary map; numbers and our own names only
UNARY = {
    "Floor": "np.floor(x)", "Ceil": "np.ceil(x)", "Round": "np.rint(x)", "Reciprocal": "1.0 / x",
    "Log": "np.log(x)", "Sin": "np.sin(x)", "Cos": "np.cos(x)", "Tan": "np.tan(x)", "Atan": "np.arctan(x)",
    "Asin": "np.arcsin(x)", "Acos": "np.arccos(x)", "Sinh": "np.sinh(x)", "Cosh": "np.cosh(x)",
    "Asinh": "np.arcsinh(x)", "Acosh": "np.arccosh(x)", "Atanh": "np.arctanh(x)",
    "Softsign": "x / (1.0 + abs(x))", "Not": "not x", "IsNaN": "np.isnan(x)",
}


def _isinf(node: Node) -> str:
    pos, neg = int(node.attrs["detect_positive"]), int(node.attrs["detect_negative"])
    return f"(x == math.inf and {pos} == 1) or (x == -math.inf and {neg} == 1)"


@variant(*UNARY, "IsInf")
def gen_map(node: Node, target: Target) -> list[KernelCall]:
    """One scalar expression per element."""
    expr = _isinf(node) if node.op == "IsInf" else UNARY[node.op]
    src = ("def kernel(xb, xo, yb, yo, n):\n"
           "    for i in range(n):\n"
           "        x = xb[U(xo + i)]\n"
           f"        yb[U(yo + i)] = {expr}\n")
    return [KernelCall(src, [node.inputs[0], node.outputs[0], node.outputs[0].type.size], note(node))]


_COMPARE = {"Equal": "==", "Greater": ">", "GreaterOrEqual": ">=", "Less": "<", "LessOrEqual": "<=",
            "And": "and", "Or": "or", "Xor": "!="}


def _mod_expr(node: Node, a: str, b: str) -> str:
    if not node.attrs["fmod"]:
        return f"{a} % {b}"  # numba follows Python: the remainder takes the divisor's sign, as ONNX fmod=0
    if node.inputs[0].dtype.kind == "f":
        return f"np.fmod({a}, {b})"
    return f"(abs({a}) % abs({b})) * (1 if {a} >= 0 else -1)"  # C's remainder: the dividend's sign


@variant(*_COMPARE, "Mod", "Where")
def gen_select(node: Node, target: Target) -> list[KernelCall]:
    """Comparisons, logic, Mod and Where over numpy-broadcast operands."""
    if node.op == "Where":
        return broadcast_calls(node, lambda n: f"{n[1]} if {n[0]} else {n[2]}")
    if node.op == "Mod":
        return broadcast_calls(node, lambda n: _mod_expr(node, n[0], n[1]))
    if node.op in ("And", "Or", "Xor"):
        return broadcast_calls(node, lambda n: f"bool({n[0]}) {_COMPARE[node.op]} bool({n[1]})")
    return broadcast_calls(node, lambda n: f"{n[0]} {_COMPARE[node.op]} {n[1]}")


def _around(shape: tuple[int, ...], axis: int) -> tuple[int, int, int]:
    """``(outer, L, inner)``: the sizes before, at and after ``axis``."""
    return (int(np.prod(shape[:axis], dtype=np.int64)), int(shape[axis]),
            int(np.prod(shape[axis + 1:], dtype=np.int64)))


ARG_SRC = Template('''
def kernel(xb, xo, yb, yo, sb, so, outer, L, inner):
    for o in range(outer):
        xrow = xo + o * L * inner
        yrow = yo + o * inner
        for t in range(inner):
            sb[U(so + t)] = xb[U(xrow + t)]
            yb[U(yrow + t)] = 0
        for j in range(1, L):
            row = xrow + j * inner
            for t in range(inner):
                v = xb[U(row + t)]
                b = sb[U(so + t)]
                take = v {CMP} b
                sb[U(so + t)] = v if take else b
                yb[U(yrow + t)] = j if take else yb[U(yrow + t)]
''', CMP=">")


@variant("ArgMax", "ArgMin")
def gen_argmax(node: Node, target: Target) -> list[KernelCall]:
    """Row by row along the axis, the best value and index so far kept per inner position (the values in a
    ``Scratch``), so the inner loops stream and vectorise (select, no branch); ties go to the first index, or
    the last with ``select_last_index`` (a non-strict comparison)."""
    x = node.inputs[0]
    cmp = ">" if node.op == "ArgMax" else "<"
    src = ARG_SRC.fill(CMP=cmp + "=" if node.attrs["select_last_index"] else cmp)
    outer, L, inner = _around(x.shape, node.attrs["axis"])
    return [KernelCall(src, [x, node.outputs[0], Scratch(inner, x.dtype), outer, L, inner], note(node))]


TOPK_SRC = Template('''
def kernel(xb, xo, vb, vo, ib, io, outer, L, inner, k):
    for o in range(outer):
        for t in range(inner):
            base = xo + o * L * inner + t
            ob = o * k * inner + t
            cnt = 0
            for j in range(L):
                v = xb[U(base + j * inner)]
                if cnt == k and not (v {CMP} vb[U(vo + ob + (k - 1) * inner)]):
                    continue
                pos = cnt
                while pos > 0 and v {CMP} vb[U(vo + ob + (pos - 1) * inner)]:
                    pos -= 1
                q = cnt if cnt < k else k - 1
                while q > pos:
                    vb[U(vo + ob + q * inner)] = vb[U(vo + ob + (q - 1) * inner)]
                    ib[U(io + ob + q * inner)] = ib[U(io + ob + (q - 1) * inner)]
                    q -= 1
                vb[U(vo + ob + pos * inner)] = v
                ib[U(io + ob + pos * inner)] = j
                if cnt < k:
                    cnt += 1
''', CMP=">")


@variant("TopK")
def gen_topk(node: Node, target: Target) -> list[KernelCall]:
    """Insertion into the k kept so far (sorted, ties by the lower index): O(L * k) per row."""
    x = node.inputs[0]
    k = int(node.attrs["k"])
    if k == 0:
        return []
    src = TOPK_SRC.fill(CMP=">" if node.attrs["largest"] else "<")
    return [KernelCall(src, [x, *node.outputs, *_around(x.shape, node.attrs["axis"]), k], note(node))]


#: reduction -> (initial accumulator, update of ``acc`` with element ``v``, result from ``acc``)
REDUCE = {
    "ReduceL1": ("0.0", "acc += abs(v)", "acc"),
    "ReduceL2": ("0.0", "acc += v * v", "math.sqrt(acc)"),
    "ReduceSumSquare": ("0.0", "acc += v * v", "acc"),
    "ReduceProd": ("1.0", "acc *= v", "acc"),
    "ReduceLogSum": ("0.0", "acc += v", "np.log(acc)"),
    "ReduceLogSumExp": ("0.0", "acc += math.exp(v - m)", "np.log(acc) + m"),
}


def reduce_more_source(op: str, nk: int, nr: int, integer: bool) -> str:
    """``op`` over ``nr`` merged reduced axes for each point of ``nk`` merged kept axes; LogSumExp first
    finds the maximum (subtracted inside the exponential)."""
    params = (["xb, xo, yb, yo"] + [f"n{i}" for i in range(nk)] + [f"s{i}" for i in range(nk)]
              + [f"r{i}" for i in range(nr)] + [f"t{i}" for i in range(nr)])
    lines = [f"def kernel({', '.join(params)}):", "    y = yo", "    p0 = xo"]
    ind = "    "
    for i in range(nk):
        lines += [f"{ind}for i{i} in range(n{i}):", f"{ind}    p{i + 1} = p{i} + i{i} * s{i}"]
        ind += "    "

    def walk(body: str) -> None:
        lines.append(f"{ind}q0 = p{nk}")
        rind = ind
        for j in range(nr):
            lines.extend([f"{rind}for j{j} in range(r{j}):", f"{rind}    q{j + 1} = q{j} + j{j} * t{j}"])
            rind += "    "
        lines.extend([f"{rind}v = xb[U(q{nr})]", f"{rind}{body}"])

    init, step, result = REDUCE[op]
    if op == "ReduceLogSumExp":
        lines.append(f"{ind}m = -math.inf")
        walk("m = max(m, np.float64(v))")
        lines.append(f"{ind}m = m if math.isfinite(m) else 0.0")
    lines.append(f"{ind}acc = {init}")
    walk(step)
    lines += [f"{ind}yb[y] = {'int(' + result + ')' if integer else result}", f"{ind}y += 1"]
    return source(lines)


@variant(*REDUCE)
def gen_reduce_more(node: Node, target: Target) -> list[KernelCall]:
    x = node.inputs[0]
    kept, red, _ = reduce_layout(x.shape, node.attrs["axes"])
    src = reduce_more_source(node.op, len(kept), len(red), bool(np.issubdtype(x.dtype, np.integer)))
    args = [x, node.outputs[0], *[k[0] for k in kept], *[k[1] for k in kept], *[r[0] for r in red],
            *[r[1] for r in red]]
    return [KernelCall(src, args, note(node))]


CUMULATIVE_SRC = Template('''
def kernel(xb, xo, yb, yo, outer, L, inner, exclusive, reverse):
    for o in range(outer):
        base = o * L * inner
        for jj in range(L):
            p = base + (L - 1 - jj if reverse else jj) * inner
            q = p + inner if reverse else p - inner
            if jj == 0:
                for t in range(inner):
                    yb[U(yo + p + t)] = {UNIT} if exclusive else xb[U(xo + p + t)]
            elif exclusive:
                for t in range(inner):
                    yb[U(yo + p + t)] = yb[U(yo + q + t)] {OP} xb[U(xo + q + t)]
            else:
                for t in range(inner):
                    yb[U(yo + p + t)] = yb[U(yo + q + t)] {OP} xb[U(xo + p + t)]
''', UNIT="0", OP="+")


@variant("CumSum", "CumProd")
def gen_cumulative(node: Node, target: Target) -> list[KernelCall]:
    """Row by row along the axis (each row from the previous one), so the inner loops stream."""
    x = node.inputs[0]
    a = node.attrs
    src = CUMULATIVE_SRC.fill(UNIT="0", OP="+") if node.op == "CumSum" else CUMULATIVE_SRC.fill(UNIT="1", OP="*")
    args = [x, node.outputs[0], *_around(x.shape, a["axis"]), int(a["exclusive"]), int(a["reverse"])]
    return [KernelCall(src, args, note(node))]


def _strides(shape: tuple[int, ...]) -> np.ndarray:
    return np.array([int(np.prod(shape[i + 1:], dtype=np.int64)) for i in range(len(shape))] or [1], np.int64)


def wrap_index(indent: str, op: str) -> str:
    """Kernel lines making index ``c`` into axis length ``L`` non-negative, raising if out of range."""
    return textwrap.indent(f'''if c < 0:
    c += L
if c < 0 or c >= L:
    raise IndexError("{op}: index out of range")''', indent)


#: where element ``f`` of the indices of GatherElements / ScatterElements points in the data: ``dst``
ELEMENT_OFFSET = '''
        rem = f
        dst = 0
        for d in range(rank):
            c = rem // sb[so + d]
            rem -= c * sb[so + d]
            if d == axis:
                c = ib[U(io + f)]
{WRAP}
            dst += c * tb[to + d]
'''

GATHER_ELEMENTS_SRC = Template('''
def kernel(xb, xo, ib, io, yb, yo, sb, so, tb, to, n, rank, axis, L):
    for f in range(n):
{OFFSET}
        yb[U(yo + f)] = xb[U(xo + dst)]
''', OFFSET=ELEMENT_OFFSET.replace("{WRAP}", wrap_index(" " * 16, "GatherElements"))).fill()


@variant("GatherElements")
def gen_gather_elements(node: Node, target: Target) -> list[KernelCall]:
    x, idx = node.inputs
    ax = node.attrs["axis"]
    args = [x, idx, node.outputs[0], Param(_strides(idx.shape)), Param(_strides(x.shape)), idx.type.size,
            len(x.shape), ax, x.shape[ax]]
    return [KernelCall(GATHER_ELEMENTS_SRC, args, note(node))]


SCATTER_ELEMENTS_SRC = Template('''
def kernel(xb, xo, ib, io, ub, uo, yb, yo, sb, so, tb, to, n, m, rank, axis, L):
    for e in range(n):
        yb[U(yo + e)] = xb[U(xo + e)]
    for f in range(m):
{OFFSET}
        v = ub[U(uo + f)]
        yb[U(yo + dst)] = {COMBINE}
''', OFFSET=ELEMENT_OFFSET.replace("{WRAP}", wrap_index(" " * 16, "ScatterElements")), COMBINE="v")


@variant("ScatterElements")
def gen_scatter_elements(node: Node, target: Target) -> list[KernelCall]:
    x, idx, upd = node.inputs
    ax = node.attrs["axis"]
    src = SCATTER_ELEMENTS_SRC.fill(COMBINE=_SCATTER[node.attrs["reduction"]].replace("dst + e", "dst"))
    args = [x, idx, upd, node.outputs[0], Param(_strides(idx.shape)), Param(_strides(x.shape)), x.type.size,
            idx.type.size, len(x.shape), ax, x.shape[ax]]
    return [KernelCall(src, args, note(node))]


#: where one index tuple of GatherND / ScatterND points: ``dst``, from the q indices at ``ip``
ND_OFFSET = '''
            dst = 0
            for d in range(q):
                c = ib[U(ip + d)]
                L = db[do + d]
{WRAP}
                dst += c * tb[to + d]
'''

GATHER_ND_SRC = Template('''
def kernel(xb, xo, ib, io, yb, yo, db, do, tb, to, lead, m, q, inner, bstride):
    y = yo
    for b in range(lead):
        for t in range(m):
            ip = io + (b * m + t) * q
{OFFSET}
            src = xo + b * bstride + dst
            for e in range(inner):
                yb[U(y)] = xb[U(src + e)]
                y += 1
''', OFFSET=ND_OFFSET.replace("{WRAP}", wrap_index(" " * 16, "GatherND"))).fill()


def _nd_params(shape: tuple[int, ...], first: int, q: int) -> list[Param]:
    """The sizes and element strides of the ``q`` indexed axes from ``first`` of a contiguous ``shape``."""
    st = _strides(shape)
    return [Param(np.array(shape[first:first + q], np.int64)), Param(st[first:first + q].copy())]


@variant("GatherND")
def gen_gather_nd(node: Node, target: Target) -> list[KernelCall]:
    x, idx = node.inputs
    b, q = int(node.attrs["batch_dims"]), idx.shape[-1]
    lead = int(np.prod(idx.shape[:b], dtype=np.int64))
    m = int(np.prod(idx.shape[b:-1], dtype=np.int64))
    inner = int(np.prod(x.shape[b + q:], dtype=np.int64))
    args = [x, idx, node.outputs[0], *_nd_params(x.shape, b, q), lead, m, q, inner,
            int(np.prod(x.shape[b:], dtype=np.int64))]
    return [KernelCall(GATHER_ND_SRC, args, note(node))]


SCATTER_ND_SRC = Template('''
def kernel(xb, xo, ib, io, ub, uo, yb, yo, db, do, tb, to, n, m, q, inner):
    for e in range(n):
        yb[U(yo + e)] = xb[U(xo + e)]
    for t in range(m):
        ip = io + t * q
{OFFSET}
        for e in range(inner):
            v = ub[U(uo + t * inner + e)]
            yb[U(yo + dst + e)] = {COMBINE}
''', OFFSET=ND_OFFSET.replace("{WRAP}", wrap_index(" " * 16, "ScatterND")).replace("\n" + " " * 12, "\n" + " " * 8),
    COMBINE="v")

_SCATTER = {"none": "v", "add": "yb[U(yo + dst + e)] + v", "mul": "yb[U(yo + dst + e)] * v",
            "max": "max(yb[U(yo + dst + e)], v)", "min": "min(yb[U(yo + dst + e)], v)"}


@variant("ScatterND")
def gen_scatter_nd(node: Node, target: Target) -> list[KernelCall]:
    x, idx, upd = node.inputs
    q = idx.shape[-1]
    src = SCATTER_ND_SRC.fill(COMBINE=_SCATTER[node.attrs["reduction"]])
    args = [x, idx, upd, node.outputs[0], *_nd_params(x.shape, 0, q), x.type.size,
            int(np.prod(idx.shape[:-1], dtype=np.int64)), q, int(np.prod(x.shape[q:], dtype=np.int64))]
    return [KernelCall(src, args, note(node))]



GRID_SRC = Template('''
def kernel(xb, xo, gb, go, yb, yo, N, C, H, W, P):
    for n in range(N):
        for p in range(P):
            g = go + (n * P + p) * 2
            u = gb[U(g)]
            w = gb[U(g + 1)]
{X}
{Y}
            for c in range(C):
                base = xo + (n * C + c) * H * W
                out = yo + (n * C + c) * P + p
{BODY}
''')


def _grid_axis(v: str, size: str, a: dict) -> list[str]:
    """Lines making the normalised coordinate ``v`` into pixel indices ``{v}0``/``{v}1`` with weight
    ``f{v}`` and flags ``{v}ok0``/``{v}ok1`` (inside the image: zeros padding)."""
    ac, pad, linear = bool(a["align_corners"]), a["padding_mode"], a["mode"] == "linear"
    lo, hi = ("0.0", f"{size} - 1.0") if ac else ("-0.5", f"{size} - 0.5")
    lines = [f"{v} = ({v} + 1.0) * 0.5 * ({size} - 1)" if ac else f"{v} = (({v} + 1.0) * {size} - 1.0) * 0.5"]
    if not linear:
        lines.append(f"{v} = np.rint({v})")
    reflect = [f"rng = {hi} - ({lo})",
               "if rng <= 0.0:", f"    {{T}} = {lo}",
               f"elif {{T}} < {lo}:", f"    d = {lo} - {{T}}", "    k = np.floor(d / rng)", "    r = d - k * rng",
               f"    {{T}} = {lo} + r if k % 2 == 0 else {hi} - r",
               f"elif {{T}} > {hi}:", f"    d = {{T}} - ({hi})", "    k = np.floor(d / rng)", "    r = d - k * rng",
               f"    {{T}} = {hi} - r if k % 2 == 0 else {lo} + r"]
    if pad == "border":
        lines.append(f"{v} = min(max({v}, 0.0), {size} - 1.0)")
    elif pad == "reflection":
        lines += [s.replace("{T}", v) for s in reflect]
    lines.append(f"{v}0 = int(np.floor({v}))")
    lines += [f"f{v} = {v} - {v}0", f"{v}1 = {v}0 + 1"] if linear else [f"{v}1 = {v}0"]
    for k in ("0", "1") if linear else ("0",):
        i = f"{v}{k}"
        if pad == "border":
            lines.append(f"{i} = min(max({i}, 0), {size} - 1)")
        elif pad == "reflection":
            lines += [f"t = float({i})"] + [s.replace("{T}", "t") for s in reflect] + [f"{i} = int(t)"]
        lines.append(f"{v}ok{k} = {i} >= 0 and {i} < {size}")
    return [" " * 12 + s for s in lines]


@variant("GridSample")
def gen_grid_sample(node: Node, target: Target) -> list[KernelCall]:
    """Coordinates and padding worked out once per output point, then every channel sampled there."""
    x, grid = node.inputs
    a = node.attrs

    def at(i: str, j: str) -> str:
        return f"xb[U(base + w{i} * W + u{j})] if wok{i} and uok{j} else 0.0"

    if a["mode"] == "linear":
        body = [f"v{i}{j} = {at(i, j)}" for i in "01" for j in "01"]
        body.append("yb[U(out)] = (1.0 - fw) * ((1.0 - fu) * v00 + fu * v01) + fw * ((1.0 - fu) * v10 + fu * v11)")
    else:
        body = [f"yb[U(out)] = {at('0', '0')}"]
    src = GRID_SRC.fill(X="\n".join(_grid_axis("u", "W", a)), Y="\n".join(_grid_axis("w", "H", a)),
                        BODY="\n".join(" " * 16 + s for s in body))
    N, C, H, W = x.shape
    return [KernelCall(src, [x, grid, node.outputs[0], N, C, H, W, grid.shape[1] * grid.shape[2]], note(node))]


TRILU_SRC = Template('''
def kernel(xb, xo, yb, yo, B, R, C, k):
    for b in range(B):
        for i in range(R):
            row = b * R * C + i * C
            for j in range(C):
                yb[U(yo + row + j)] = xb[U(xo + row + j)] if j - i {CMP} k else 0
''', CMP=">=")


@variant("Trilu")
def gen_trilu(node: Node, target: Target) -> list[KernelCall]:
    x = node.inputs[0]
    R, C = x.shape[-2:]
    src = TRILU_SRC.fill(CMP=">=" if node.attrs["upper"] else "<=")
    return [KernelCall(src, [x, node.outputs[0], x.type.size // max(R * C, 1), R, C, int(node.attrs["k"])],
                       note(node))]


ONEHOT_SRC = '''
def kernel(ib, io, vb, vo, yb, yo, outer, depth, inner):
    off = vb[vo]
    on = vb[vo + 1]
    for o in range(outer):
        for d in range(depth):
            row = yo + (o * depth + d) * inner
            for t in range(inner):
                i = int(ib[U(io + o * inner + t)])
                if i < 0:
                    i += depth
                yb[U(row + t)] = on if i == d else off
'''


@variant("OneHot")
def gen_onehot(node: Node, target: Target) -> list[KernelCall]:
    idx, vals = node.inputs
    y = node.outputs[0]
    ax = normalize_axis(node.attrs["axis"], len(idx.shape) + 1)
    outer, depth, inner = _around(y.shape, ax)
    return [KernelCall(ONEHOT_SRC, [idx, vals, y, outer, depth, inner], note(node))]
