"""Data-movement kernels: Transpose (strided copy), Concat (block copies), Gather, DequantizeLinear."""

from __future__ import annotations

import numpy as np

from cnnjit.ir import Node

from ..kernel import At, KernelCall, Param, Target, note, variant
from .quant import QPARAM_LOOP, qparam_layout
from .template import source


def transpose_source(rank: int) -> str:
    params = ["xb, xo, yb, yo"] + [f"n{d}" for d in range(rank)] + [f"s{d}" for d in range(rank)]
    lines = [f"def kernel({', '.join(params)}):", "    y = yo", "    p0 = xo"]
    indent = "    "
    for d in range(rank):
        lines.append(f"{indent}for i{d} in range(n{d}):")
        indent += "    "
        if d + 1 < rank:
            lines.append(f"{indent}p{d + 1} = p{d} + i{d} * s{d}")
    lines.append(f"{indent}yb[U(y)] = xb[U(p{rank - 1} + i{rank - 1} * s{rank - 1})]")
    lines.append(f"{indent}y += 1")
    return source(lines)


@variant("Transpose")
def gen_transpose(node: Node, target: Target) -> list[KernelCall]:
    x, y = node.inputs[0], node.outputs[0]
    perm = list(node.attrs["perm"])
    in_strides = [int(np.prod(x.shape[i + 1:], dtype=np.int64)) for i in range(len(x.shape))]
    dims = [x.shape[p] for p in perm]
    strides = [in_strides[p] for p in perm]
    # merge output axes that are also adjacent and contiguous in the input; drop unit axes
    md: list[int] = []
    ms: list[int] = []
    for d, s in zip(dims, strides):
        if d == 1:
            continue
        if md and ms[-1] == s * d:
            md[-1] *= d
            ms[-1] = s
        else:
            md.append(d)
            ms.append(s)
    if not md:
        md, ms = [1], [0]
    return [KernelCall(transpose_source(len(md)), [x, y, *md, *ms], note(node))]


COPY2D_SRC = '''
def kernel(xb, xo, yb, yo, rows, width, ystride):
    for r in range(rows):
        xr = xo + r * width
        yr = yo + r * ystride
        for j in range(width):
            yb[U(yr + j)] = xb[U(xr + j)]
'''


@variant("Concat")
def gen_concat(node: Node, target: Target) -> list[KernelCall]:
    y = node.outputs[0]
    ax = node.attrs["axis"]
    outer = int(np.prod(y.shape[:ax], dtype=np.int64))
    inner = int(np.prod(y.shape[ax + 1:], dtype=np.int64))
    row = y.shape[ax] * inner
    calls, start = [], 0
    for v in node.inputs:
        width = v.shape[ax] * inner
        if width:
            calls.append(KernelCall(COPY2D_SRC, [v, At(y, start), outer, width, row], note(node)))
        start += width
    return calls


GATHER_SRC = '''
def kernel(xb, xo, ib, io, yb, yo, outer, L, inner, nidx):
    y = yo
    for o in range(outer):
        for j in range(nidx):
            k = ib[io + j]
            if k < 0:
                k += L
            if k < 0 or k >= L:
                raise IndexError("Gather: index out of range")
            src = xo + (o * L + k) * inner
            for t in range(inner):
                yb[y] = xb[src + t]
                y += 1
'''


@variant("Gather")
def gen_gather(node: Node, target: Target) -> list[KernelCall]:
    x, idx = node.inputs
    ax = node.attrs["axis"]
    outer = int(np.prod(x.shape[:ax], dtype=np.int64))
    inner = int(np.prod(x.shape[ax + 1:], dtype=np.int64))
    nidx = int(np.prod(idx.shape, dtype=np.int64))
    return [KernelCall(GATHER_SRC, [x, idx, node.outputs[0], outer, x.shape[ax], inner, nidx], note(node))]


DEQUANT_SRC = QPARAM_LOOP.fill(
    PARAMS="", BODY="                yb[yo + i] = (np.float64(xb[xo + i]) - np.float64(zb[zo + k])) * sb[so + k]")


@variant("DequantizeLinear")
def gen_dequantize(node: Node, target: Target) -> list[KernelCall]:
    """Per-tensor, per-axis and blocked dequantisation; scale and zero point may be run-time inputs."""
    x, scale = node.inputs[0], node.inputs[1]
    zp = node.inputs[2] if len(node.inputs) > 2 else None
    if zp is None:
        zp = Param(np.zeros(scale.shape or (1,), x.dtype))
    args = qparam_layout(x, scale, node.attrs["axis"], int(node.attrs["block_size"]))
    return [KernelCall(DEQUANT_SRC, [x, scale, zp, node.outputs[0], *args], note(node))]
