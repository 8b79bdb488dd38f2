"""Softmax / LogSoftmax in vectors (float32), over any axis.

The tensor is ``outer x L x inner`` around the softmax axis (length ``L``).

* ``inner == 1`` (the last axis, e.g. a recogniser's 40 x 6625 class scores): each row in vectors of
  ``4 * W`` lanes: the max (a masked tail load fills with -inf), then ``exp(x - max)`` stored and summed
  (Softmax) or only summed (LogSoftmax), then one pass scaling by ``1 / sum`` or subtracting
  ``max + log(sum)``.
* ``inner > 1``: ``W`` neighbouring inner positions at once, one lane each, walking the axis with stride
  ``inner``: the same three passes with a lane-wise max and sum (no horizontal reduction).
"""

from __future__ import annotations

import numpy as np

from cnnjit.ir import Node

from ..kernel import KernelCall, Target, note, variant
from .template import source


def _rows_source(v: int, log: bool) -> str:
    """``inner == 1``: rows of ``L`` contiguous elements, ``v`` lanes per step."""
    L = [
        "def kernel(xb, xo, yb, yo, outer, L):",
        f"    tail = L - L % {v}",
        "    for o in range(outer):",
        "        xr = xo + o * L",
        "        yr = yo + o * L",
        f"        m = vbcast{v}(-math.inf)",
        f"        for j in range(0, tail, {v}):",
        f"            m = vmax{v}(m, vload{v}(xb, xr + j))",
        "        if tail < L:",
        f"            m = vmax{v}(m, vloadrf{v}(xb, xr + tail, 0, L - tail, -math.inf))",
        f"        mx = vbcast{v}(vhmax{v}(m))",
        f"        s = vzero{v}()",
        f"        for j in range(0, tail, {v}):",
        f"            e = vexp{v}(vsub{v}(vload{v}(xb, xr + j), mx))",
        f"            s = vadd{v}(s, e)",
    ]
    if not log:
        L.append(f"            vstore{v}(yb, yr + j, e)")
    L += [
        "        if tail < L:",
        f"            e = vexp{v}(vsub{v}(vloadrf{v}(xb, xr + tail, 0, L - tail, -math.inf), mx))",
        f"            s = vadd{v}(s, e)",
    ]
    if not log:
        L += [
            f"            vstoren{v}(yb, yr + tail, e, L - tail)",
            f"        k = vbcast{v}(1.0 / vhsum{v}(s))",
            f"        for j in range(0, tail, {v}):",
            f"            vstore{v}(yb, yr + j, vmul{v}(vload{v}(yb, yr + j), k))",
            "        if tail < L:",
            f"            vstoren{v}(yb, yr + tail, vmul{v}(vloadn{v}(yb, yr + tail, L - tail), k), L - tail)",
        ]
    else:
        L += [
            f"        k = vadd{v}(mx, vbcast{v}(math.log(vhsum{v}(s))))",
            f"        for j in range(0, tail, {v}):",
            f"            vstore{v}(yb, yr + j, vsub{v}(vload{v}(xb, xr + j), k))",
            "        if tail < L:",
            f"            vstoren{v}(yb, yr + tail, vsub{v}(vloadn{v}(xb, xr + tail, L - tail), k), L - tail)",
        ]
    return source(L)


def _columns_source(v: int, log: bool) -> str:
    """``inner > 1``: ``v`` neighbouring inner positions per step, the axis walked with stride ``inner``
    (masked loads where fewer than ``v`` positions are left)."""
    def ld(buf: str, at: str, fill: str = "-math.inf") -> str:
        return f"vloadrf{v}({buf}, {at}, 0, cnt, {fill})"

    L = [
        "def kernel(xb, xo, yb, yo, outer, L, inner):",
        "    for o in range(outer):",
        f"        for i0 in range(0, inner, {v}):",
        f"            cnt = min({v}, inner - i0)",
        "            base = o * L * inner + i0",
        f"            m = vbcast{v}(-math.inf)",
        "            for j in range(L):",
        f"                m = vmax{v}(m, {ld('xb', 'xo + base + j * inner')})",
        f"            s = vzero{v}()",
        "            for j in range(L):",
        f"                e = vexp{v}(vsub{v}({ld('xb', 'xo + base + j * inner')}, m))",
        f"                s = vadd{v}(s, e)",
    ]
    if not log:
        L += [
            f"                vstoren{v}(yb, yo + base + j * inner, e, cnt)",
            f"            k = vdiv{v}(vbcast{v}(1.0), s)",
            "            for j in range(L):",
            f"                vstoren{v}(yb, yo + base + j * inner, "
            f"vmul{v}(vloadn{v}(yb, yo + base + j * inner, cnt), k), cnt)",
        ]
    else:
        L += [
            f"            k = vadd{v}(m, vlog{v}(s))",
            "            for j in range(L):",
            f"                vstoren{v}(yb, yo + base + j * inner, "
            f"vsub{v}(vloadn{v}(xb, xo + base + j * inner, cnt), k), cnt)",
        ]
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
        return [KernelCall(_rows_source(min(4 * w, 64), log), [node.inputs[0], node.outputs[0], outer, length],
                           note(node))]
    return [KernelCall(_columns_source(w, log), [node.inputs[0], node.outputs[0], outer, length, inner],
                       note(node))]
