"""Data-movement kernels: Transpose (strided copy), Concat (block copies), Gather, DequantizeLinear."""

from __future__ import annotations

import numpy as np

from cnnjit.ir import Node

from ..kernel import At, KernelCall, Param, Target, note, variant
from .quant import QPARAM_LOOP, qparam_layout
from .template import source


def transpose_source(rank: int, w: int = 0) -> str:
    """The strided copy over ``rank`` merged output axes: element by element, or (``w``) the last axis, a
    contiguous run of the input, copied in vectors of ``w`` lanes with a masked tail."""
    params = ["xb, xo, yb, yo"] + [f"n{d}" for d in range(rank)] + [f"s{d}" for d in range(rank)]
    lines = [f"def kernel({', '.join(params)}):", "    y = yo", "    p0 = xo"]
    indent = "    "
    last = rank - 1
    for d in range(last if w else rank):
        lines.append(f"{indent}for i{d} in range(n{d}):")
        indent += "    "
        if d + 1 < rank:
            lines.append(f"{indent}p{d + 1} = p{d} + i{d} * s{d}")
    if w:
        lines += [f"{indent}for j in range(0, n{last} - n{last} % {w}, {w}):",
                  f"{indent}    vstore{w}(yb, y + j, vload{w}(xb, p{last} + j))",
                  f"{indent}if n{last} % {w}:",
                  f"{indent}    t = n{last} - n{last} % {w}",
                  f"{indent}    vstoren{w}(yb, y + t, vloadn{w}(xb, p{last} + t, n{last} - t), n{last} - t)",
                  f"{indent}y += n{last}"]
    else:
        lines.append(f"{indent}yb[U(y)] = xb[U(p{last} + i{last} * s{last})]")
        lines.append(f"{indent}y += 1")
    return source(lines)


def _transpose_axes(node: Node) -> tuple[list[int], list[int]]:
    """The output's axes (sizes, input strides), merging axes adjacent and contiguous in the input and
    dropping unit axes."""
    x = node.inputs[0]
    perm = list(node.attrs["perm"])
    in_strides = [int(np.prod(x.shape[i + 1:], dtype=np.int64)) for i in range(len(x.shape))]
    md: list[int] = []
    ms: list[int] = []
    for d, s in zip([x.shape[p] for p in perm], [in_strides[p] for p in perm]):
        if d == 1:
            continue
        if md and ms[-1] == s * d:
            md[-1] *= d
            ms[-1] = s
        else:
            md.append(d)
            ms.append(s)
    return (md, ms) if md else ([1], [0])


def simd_transpose_applies(node: Node, target: Target) -> bool:
    """The last merged axis is a contiguous input run of at least a vector (an attention head's
    ``1x4x64x16 -> 1x64x4x16``: runs of 16), float32."""
    md, ms = _transpose_axes(node)
    return node.inputs[0].dtype == np.float32 and ms[-1] == 1 and md[-1] >= target.vector_width


@variant("Transpose", name="simd_transpose", priority=10, applies=simd_transpose_applies)
def gen_simd_transpose(node: Node, target: Target) -> list[KernelCall]:
    md, ms = _transpose_axes(node)
    return [KernelCall(transpose_source(len(md), target.vector_width), [node.inputs[0], node.outputs[0], *md, *ms],
                       note(node))]


#: the most channels ``deinterleave_transpose`` unrolls (an image's 3 or 4 interleaved channels)
MAX_INTERLEAVED = 8


def interleaved_axes(node: Node) -> tuple[list[int], list[int]] | None:
    """``_transpose_axes`` when the last two output axes are an interleaved block turned planar: the one before
    the last (``C``, at most ``MAX_INTERLEAVED``) contiguous in the input, the last stepping over a whole run of
    it (an NHWC image to NCHW: ``(C, H W)`` from input strides ``(1, C)``), float32; else None."""
    md, ms = _transpose_axes(node)
    ok = (node.inputs[0].dtype == np.float32 and len(md) >= 2 and ms[-2] == 1 and ms[-1] == md[-2]
          and 2 <= md[-2] <= MAX_INTERLEAVED)
    return (md, ms) if ok else None


def deinterleave_source(rank: int, channels: int) -> str:
    """The strided copy of ``transpose_source`` with its last two axes swapped in the loop: per pixel of the last
    axis, its ``channels`` consecutive input elements (unrolled) into the ``channels`` output planes: contiguous
    reads and ``channels`` write streams, which LLVM vectorises as an interleaved group (3 channels of 96x96:
    3.5 against 5.9 us for the channel-major loop of strided reads)."""
    params = ["xb, xo, yb, yo"] + [f"n{d}" for d in range(rank)] + [f"s{d}" for d in range(rank)]
    lines = [f"def kernel({', '.join(params)}):", "    y = yo", "    p0 = xo"]
    indent = "    "
    for d in range(rank - 2):
        lines += [f"{indent}for i{d} in range(n{d}):", f"{indent}    p{d + 1} = p{d} + i{d} * s{d}"]
        indent += "    "
    last = rank - 1
    lines += [f"{indent}for j in range(n{last}):",
              f"{indent}    xp = p{last - 1} + j * {channels}",
              *[f"{indent}    yb[U(y + {c} * n{last} + j)] = xb[U(xp + {c})]" for c in range(channels)],
              f"{indent}y += {channels} * n{last}"]
    return source(lines)


@variant("Transpose", name="deinterleave_transpose", priority=5, applies=lambda n, t: interleaved_axes(n) is not None)
def gen_deinterleave_transpose(node: Node, target: Target) -> list[KernelCall]:
    md, ms = interleaved_axes(node)
    return [KernelCall(deinterleave_source(len(md), md[-2]), [node.inputs[0], node.outputs[0], *md, *ms],
                       note(node))]


@variant("Transpose")
def gen_transpose(node: Node, target: Target) -> list[KernelCall]:
    md, ms = _transpose_axes(node)
    return [KernelCall(transpose_source(len(md)), [node.inputs[0], node.outputs[0], *md, *ms], note(node))]


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
