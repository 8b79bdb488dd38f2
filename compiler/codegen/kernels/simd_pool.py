"""2-D max and average pooling with explicit SIMD over output columns (plain NCHW).

Each (image, channel) plane is processed row by row in vectors of ``W`` output columns. Stride 1 loads
contiguously, stride 2 keeps the even lanes of a double load; lanes outside the input are masked (never
read) and hold -inf for max pooling or 0 for averaging. Average pooling takes this path only when its
divisor is the same for every window (pads counted, or no pads and no ceil-mode overhang).
"""

from __future__ import annotations

import numpy as np

from cnnjit.ir import Node

from ..kernel import KernelCall, note
from ..simd import host_vector_width
from .simd_pointwise import row_load


def pool_source(w: int, sw: int, is_max: bool) -> str:
    fill = "-math.inf" if is_max else "0.0"
    comb = f"vmax{w}" if is_max else f"vadd{w}"
    fast, fast_ok, edge = row_load(w, sw, fill=fill)
    init = f"vbcast{w}(-math.inf)" if is_max else f"vzero{w}()"
    lines = [
        "def kernel(xb, xo, yb, yo, NC, H, Win, OH, OW, KH, KW, sh, ph, pw, dh, dw, scale):",
        "    for nc in range(NC):",
        "        xc = xo + nc * H * Win",
        "        yc = yo + nc * OH * OW",
        "        for oh in range(OH):",
        f"            for ow0 in range(0, OW, {w}):",
        f"                cnt = min({w}, OW - ow0)",
        f"                acc = {init}",
        "                for kh in range(KH):",
        "                    ih = oh * sh + kh * dh - ph",
        "                    if ih < 0 or ih >= H:",
        "                        continue",
        "                    xrow = xc + ih * Win",
        "                    for kw in range(KW):",
        f"                        iw0 = ow0 * {sw} + kw * dw - pw",
        f"                        if cnt == {w} and {fast_ok}:",
        f"                            v = {fast}",
        "                        else:",
        f"                            v = {edge}",
        f"                        acc = {comb}(acc, v)",
    ]
    if not is_max:
        lines.append(f"                acc = vmul{w}(acc, vbcast{w}(scale))")
    lines.append(f"                vstoren{w}(yb, yc + oh * OW + ow0, acc, cnt)")
    return "\n".join(lines) + "\n"


def simd_pool_applies(node: Node) -> bool:
    x, y = node.inputs[0], node.outputs[0]
    a = node.attrs
    if x.dtype != np.float32 or len(x.shape) != 4 or a["strides"][1] not in (1, 2) or a.get("indices"):
        return False
    if node.op == "AveragePool":
        H, W = x.shape[2:]
        OH, OW = y.shape[2:]
        kh, kw = a["kernel_shape"]
        sh, sw = a["strides"]
        dh, dw = a["dilations"]
        p = a["pads"]
        inside = ((OH - 1) * sh + (kh - 1) * dh < H + p[0] + p[2]) and ((OW - 1) * sw + (kw - 1) * dw < W + p[1] + p[3])
        # every window must hold exactly kh*kw counted cells
        if not inside or not (a["count_include_pad"] or not any(p)):
            return False
    return True


def gen_simd_pool(node: Node) -> list[KernelCall]:
    x, y = node.inputs[0], node.outputs[0]
    a = node.attrs
    N, C, H, Win = x.shape
    OH, OW = y.shape[2:]
    w = host_vector_width()
    if OW <= 8 and w > 8:
        w = 8
    is_max = node.op == "MaxPool"
    kh, kw = a["kernel_shape"]
    src = pool_source(w, a["strides"][1], is_max)
    args = [x, y, N * C, H, Win, OH, OW, kh, kw, a["strides"][0], a["pads"][0], a["pads"][1],
            *a["dilations"], 1.0 / (kh * kw)]
    return [KernelCall(src, args, note(node))]
