"""Kernels for ConvTranspose (scatter form), InstanceNormalization and the Reduce ops.

ConvTranspose runs 1-D and 2-D through the 3-D kernel with unit leading spatial dims, like Conv.
"""

from __future__ import annotations

import numpy as np

from cnnjit.ir import Node

from ..kernel import KernelCall, Param, Target, note, variant
from .epilogue import after_kernel, with_epilogue
from .spatial import as3d, global_avg_source, plane_max_lines, plane_width
from .template import Template, clipped_loops, source, tap_columns

CONVT_SRC = Template('''
def kernel(xb, xo, wb, wo, bb, bo, yb, yo, N, C, D, H, W, M, OD, OH, OW, KD, KH, KW,
           sd, sh, sw, pd, ph, pw, dd, dh, dw, G, has_bias{PARAMS}):
    cg = C // G
    mg = M // G
    osp = OD * OH * OW
    isp = D * H * W
    ksz = KD * KH * KW
    for n in range(N):
        for m in range(M):
            ybase = yo + (n * M + m) * osp
            b = bb[bo + m] if has_bias else 0.0
            for i in range(osp):
                yb[U(ybase + i)] = b
        for c in range(C):
            g = c // cg
            xbase = xo + (n * C + c) * isp
            for mm in range(mg):
                m = g * mg + mm
                ybase = yo + (n * M + m) * osp
                wbase = wo + (c * mg + mm) * ksz
{TAPS}
{ROWS}
                                    yrow = ybase + (od * OH + oh) * OW + offw
                                    xrow = xbase + (idd * H + ih) * W
                                    for iw in range(lo, hi):
                                        yb[U(yrow + iw * sw)] += wv * xb[U(xrow + iw)]
{EPILOGUE}''', TAPS=tap_columns(" " * 16, transposed=True),
    ROWS=clipped_loops(" " * 28, ("idd", "D", "od", "idd * sd + kd * dd - pd", "OD"),
                       ("ih", "H", "oh", "ih * sh + kh * dh - ph", "OH")))


@variant("ConvTranspose")
def gen_conv_transpose(node: Node, target: Target) -> list[KernelCall]:
    x, w = node.inputs[0], node.inputs[1]
    b = node.inputs[2] if len(node.inputs) > 2 else None
    y = node.outputs[0]
    a = node.attrs
    n = len(a["kernel_shape"])
    N, C = x.shape[:2]
    M = y.shape[1]
    bias = b if b is not None else Param(np.zeros(1, x.dtype))
    args = [x, w, bias, y, N, C, *as3d(x.shape[2:]), M, *as3d(y.shape[2:]), *as3d(a["kernel_shape"]),
            *as3d(a["strides"]), *as3d(a["pads"][:n], 0), *as3d(a["dilations"]), int(a["group"]),
            int(b is not None)]
    # the fused epilogue (BN is folded into the weights and bias) over the finished output
    src, res = with_epilogue(CONVT_SRC, node, "i", "    ", "N * M * osp", "yo + i")
    return [KernelCall(src, [*args, *res.values()], note(node))]


INSTANCENORM_SRC = '''
def kernel(xb, xo, sb, so, bb, bo, yb, yo, N, C, S, eps):
    for n in range(N):
        for c in range(C):
            base = (n * C + c) * S
            acc = 0.0
            for j in range(S):
                acc += xb[U(xo + base + j)]
            mean = acc / S
            var = 0.0
            for j in range(S):
                d = xb[U(xo + base + j)] - mean
                var += d * d
            a = sb[so + c] / math.sqrt(var / S + eps)
            t = bb[bo + c] - mean * a
            for j in range(S):
                yb[U(yo + base + j)] = xb[U(xo + base + j)] * a + t
'''


@variant("InstanceNormalization")
def gen_instance_norm(node: Node, target: Target) -> list[KernelCall]:
    x, s, b = node.inputs
    S = int(np.prod(x.shape[2:], dtype=np.int64))
    return [KernelCall(INSTANCENORM_SRC, [x, s, b, node.outputs[0], x.shape[0], x.shape[1], S,
                                          float(node.attrs["epsilon"])], note(node))]


def reduce_source(nk: int, nr: int, integer: bool, kind: str = "mean") -> str:
    """Mean over ``nr`` (merged) reduced axes for each point of ``nk`` (merged) kept axes, kept axes outermost."""
    params = (["xb, xo, yb, yo"] + [f"n{i}" for i in range(nk)] + [f"s{i}" for i in range(nk)]
              + [f"r{i}" for i in range(nr)] + [f"t{i}" for i in range(nr)] + ["cnt"])
    lines = [f"def kernel({', '.join(params)}):", "    y = yo", "    p0 = xo"]
    ind = "    "
    for i in range(nk):
        lines.append(f"{ind}for i{i} in range(n{i}):")
        ind += "    "
        lines.append(f"{ind}p{i + 1} = p{i} + i{i} * s{i}")
    lines.append(f"{ind}acc = {'-math.inf' if kind == 'max' else 'math.inf' if kind == 'min' else '0.0'}")
    lines.append(f"{ind}q0 = p{nk}")
    rind = ind
    for j in range(nr):
        lines.append(f"{rind}for j{j} in range(r{j}):")
        rind += "    "
        lines.append(f"{rind}q{j + 1} = q{j} + j{j} * t{j}")
    if kind in ("max", "min"):
        lines.append(f"{rind}acc = {kind}(acc, xb[U(q{nr})])")
    else:
        lines.append(f"{rind}acc += xb[U(q{nr})]")
    res = "acc / cnt" if kind == "mean" else "acc"
    lines.append(f"{ind}yb[y] = {'int(' + res + ')' if integer else res}")
    lines.append(f"{ind}y += 1")
    return source(lines)


@variant("ReduceMean", "ReduceSum", "ReduceMax", "ReduceMin")
def gen_reduce_mean(node: Node, target: Target) -> list[KernelCall]:
    x = node.inputs[0]
    kept, red, cnt = reduce_layout(x.shape, node.attrs["axes"])
    integer = bool(np.issubdtype(x.dtype, np.integer))
    src = reduce_source(len(kept), len(red), integer, node.op[len("Reduce"):].lower())
    args = [x, node.outputs[0], *[k[0] for k in kept], *[k[1] for k in kept], *[r[0] for r in red],
            *[r[1] for r in red], cnt]
    return [KernelCall(src, args, note(node))]


def reduce_layout(shape: tuple[int, ...], reduced: tuple[int, ...]) -> tuple[list[list[int]], list[list[int]], int]:
    """The kept and the reduced axes of a contiguous ``shape`` as ``[size, stride]`` runs (adjacent axes of
    one kind merged, unit axes dropped), and the number of reduced elements."""
    axes = set(reduced)
    strides = [int(np.prod(shape[i + 1:], dtype=np.int64)) for i in range(len(shape))]
    # merge runs of adjacent axes of the same kind (kept / reduced); drop unit axes
    kept: list[list[int]] = []
    red: list[list[int]] = []
    last = None
    for i, d in enumerate(shape):
        if d == 1:
            continue
        kind = i in axes
        group = red if kind else kept
        if last is kind and group:
            group[-1][0] *= d
            group[-1][1] = strides[i]
        else:
            group.append([d, strides[i]])
        last = kind
    return kept, red, int(np.prod([shape[i] for i in axes], dtype=np.int64))


REDUCE_ROWS_SRC = '''
def kernel(xb, xo, yb, yo, n0, s0, R, T, L, mean):
    for a in range(n0):
        y = yo + a * L
        p = xo + a * s0
        for i in range(L):
            yb[U(y + i)] = xb[U(p + i)]
        for j in range(1, R):
            q = p + j * T
            for i in range(L):
                yb[U(y + i)] += xb[U(q + i)]
        if mean:
            for i in range(L):
                yb[U(y + i)] /= R
'''


def _rows_layout(node: Node) -> tuple[int, int, int, int, int] | None:
    """``(n0, s0, R, T, L)`` when the reduced axes merge into one run (``R`` rows ``T`` apart) with a
    contiguous kept run of ``L`` elements inside it and at most one kept run (``n0`` blocks ``s0`` apart)
    outside it, else None."""
    kept, red, _ = reduce_layout(node.inputs[0].shape, node.attrs["axes"])
    if len(red) != 1 or not kept or kept[-1][1] != 1 or len(kept) > 2:
        return None
    (R, T), L = red[0], kept[-1][0]
    if T != L or (len(kept) == 2 and kept[0][1] != R * T):
        return None
    n0, s0 = kept[0] if len(kept) == 2 else (1, 0)
    return n0, s0, R, T, L


def reduce_rows_applies(node: Node, target: Target) -> bool:
    """A float32 ReduceSum / ReduceMean over outer axes of rows of at least one vector that are kept (NCHW's
    channel axis, magika's ReduceSum over 512 rows of 256): the generic kernel walks each output's reduction
    with a stride of a whole row, one element per row (0.18 ms for 512 x 256, AVX2); here whole rows are
    added into the output row, contiguous and vectorised (float32 accumulation, as onnxruntime's)."""
    layout = _rows_layout(node) if node.inputs[0].dtype == np.float32 else None
    return layout is not None and layout[4] >= target.vector_width


@variant("ReduceSum", "ReduceMean", name="reduce_rows", priority=90, applies=reduce_rows_applies)
def gen_reduce_rows(node: Node, target: Target) -> list[KernelCall]:
    """The output rows accumulated from the input rows in order (``REDUCE_ROWS_SRC``)."""
    n0, s0, R, T, L = _rows_layout(node)
    return [KernelCall(REDUCE_ROWS_SRC, [node.inputs[0], node.outputs[0], n0, s0, R, T, L,
                                         int(node.op == "ReduceMean")], note(node))]


def _planes_layout(node: Node) -> tuple[int, int] | None:
    """``(P, S)`` when the reduced axes merge into one trailing contiguous run of ``S`` elements and the kept
    axes into one run of ``P`` such planes outside it (NCHW's ``axes=(2, 3)``: a global pool), else None."""
    kept, red, _ = reduce_layout(node.inputs[0].shape, node.attrs["axes"])
    if len(red) != 1 or red[0][1] != 1 or len(kept) > 1 or (kept and kept[0][1] != red[0][0]):
        return None
    return (kept[0][0] if kept else 1), red[0][0]


def reduce_planes_applies(node: Node, target: Target) -> bool:
    """A float32 ReduceSum / ReduceMean (ReduceMax / ReduceMin: ``reduce_planes_max``) over the trailing
    contiguous axes (PP-OCR's squeeze-excite means over
    H, W) of at least a vector: the generic kernel adds one element at a time into one scalar, a dependency
    chain of one add latency per element (48 x 12 x 80 in 41 us, AVX2); ``global_avg_source`` keeps 4 vector
    accumulators."""
    layout = _planes_layout(node) if node.inputs[0].dtype == np.float32 else None
    return layout is not None and layout[1] >= target.vector_width


@variant("ReduceSum", "ReduceMean", name="reduce_planes", priority=90, applies=reduce_planes_applies)
def gen_reduce_planes(node: Node, target: Target) -> list[KernelCall]:
    """Each plane's sum (or mean) in vector accumulators (``global_avg_source``)."""
    P, S = _planes_layout(node)
    src = global_avg_source(plane_width(S, target), mean=node.op == "ReduceMean")
    return [KernelCall(src, [node.inputs[0], node.outputs[0], P, S], note(node))]


def plane_extreme_source(w: int, smallest: bool, nan: bool = False) -> str:
    """The largest element of each plane of ``S >= w`` elements (``smallest``: the smallest, as minus the largest
    of the negated elements) in 4 vector accumulators of ``maxnum`` (NaN elements ignored, as ``vhmax``); the
    plane's last vector is loaded ending at its end, so no masked tail (elements seen twice do not change a
    maximum). ``nan``: a NaN element makes the plane's result NaN (``GLOBAL_SRC``'s rule): the accumulators take
    ``vmaxnan``, and a plane whose lanes end NaN or infinite is redone by the scalar rule."""
    vmax = f"vmaxnan{w}" if nan else f"vmax{w}"

    def load(at: str) -> str:
        v = f"vload{w}(xb, {at})"
        return f"vsub{w}(z, {v})" if smallest else v

    return f'''
def kernel(xb, xo, yb, yo, NC, S):
    z = vzero{w}()
    for nc in range(NC):
        base = xo + nc * S
        a0 = {load("base")}
        a1 = a0
        a2 = a0
        a3 = a0
        i = {w}
        while i + {4 * w} <= S:
            a0 = {vmax}(a0, {load("base + i")})
            a1 = {vmax}(a1, {load(f"base + i + {w}")})
            a2 = {vmax}(a2, {load(f"base + i + {2 * w}")})
            a3 = {vmax}(a3, {load(f"base + i + {3 * w}")})
            i += {4 * w}
        while i + {w} <= S:
            a0 = {vmax}(a0, {load("base + i")})
            i += {w}
        if i < S:
            a0 = {vmax}(a0, {load(f"base + S - {w}")})
        a = {vmax}({vmax}(a0, a1), {vmax}(a2, a3))
        m = vhmax{w}(a)
        yb[yo + nc] = {"-m" if smallest else "m"}
''' + (f"        if vhsum{w}(vmul{w}(a, z)) != 0.0:\n" + plane_max_lines(" " * 12) if nan else "")


def global_max_applies(node: Node, target: Target) -> bool:
    """A float32 GlobalMaxPool over planes of at least a vector."""
    x = node.inputs[0]
    return x.dtype == np.float32 and int(np.prod(x.shape[2:], dtype=np.int64)) >= target.vector_width


@variant("GlobalMaxPool", name="global_max_planes", priority=90, applies=global_max_applies)
def gen_global_max_planes(node: Node, target: Target) -> list[KernelCall]:
    """Each plane's largest element in vector accumulators, NaN kept (``plane_extreme_source(nan=True)``), a
    fused activation after: ``global_pool``'s scalar loop is one compare-and-select chain per element (magika's
    512 x 508 in 0.28 ms on AVX-512, onnxruntime's 25 us)."""
    x = node.inputs[0]
    S = int(np.prod(x.shape[2:], dtype=np.int64))
    src = after_kernel(plane_extreme_source(plane_width(S, target), smallest=False, nan=True), node, "NC")
    return [KernelCall(src, [x, node.outputs[0], x.shape[0] * x.shape[1], S], note(node))]


@variant("ReduceMax", "ReduceMin", name="reduce_planes_max", priority=90, applies=reduce_planes_applies)
def gen_reduce_planes_max(node: Node, target: Target) -> list[KernelCall]:
    """Each plane's largest (smallest) element in vector accumulators (``plane_extreme_source``): the generic
    kernel compares one element at a time into one scalar (a dependency chain of one compare and select per
    element)."""
    P, S = _planes_layout(node)
    src = plane_extreme_source(plane_width(S, target), smallest=node.op == "ReduceMin")
    return [KernelCall(src, [node.inputs[0], node.outputs[0], P, S], note(node))]
