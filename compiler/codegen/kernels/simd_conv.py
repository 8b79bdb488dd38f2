"""Direct 2-D convolution (dense, grouped and depthwise) with explicit SIMD over output columns.

Plain NCHW: a register tile holds ``MR`` (up to 8) output channels (of one group) by one vector of ``W``
consecutive output columns of one output row. For every input channel of the group and kernel tap the
input vector is loaded once and feeds ``MR`` FMAs with broadcast weights. Stride 1 loads contiguously,
stride 2 loads two vectors and keeps the even lanes; chunks at the left/right border or the row's end use
masked loads whose lanes outside the input are never read (and are zero). Bias, the in-register epilogue
(ReLU, Clip, LeakyReLU, residual Add) and masked tail stores happen once per tile.
"""

from __future__ import annotations

import numpy as np

from cnnjit.ir import Node

from ..kernel import KernelCall, Target, note, variant
from .epilogue import Epilogue
from .simd_pointwise import conv_operands, row_load, row_taps, row_width
from .template import source


def conv_source(node: Node, w: int, mr: int, sw: int) -> tuple[str, list]:
    epi = Epilogue(node, w, True)
    fast, fast_ok, edge = row_load(w, sw)
    L = [
        "def kernel(xb, xo, wb, wo, bb, bo, yb, yo, N, C, H, Win, M, OH, OW, KH, KW, sh, ph, pw, dh, dw, G"
        + epi.signature() + "):",
        "    cg = C // G",
        "    mg = M // G",
        "    ksz = KH * KW",
        "    for n in range(N):",
        f"        for m in range(0, M, {mr}):",
        "            g = m // mg",
        "            for oh in range(OH):",
        f"                for ow0 in range(0, OW, {w}):",
        f"                    cnt = min({w}, OW - ow0)",
        *[f"                    a{i} = vbcast{w}(bb[bo + m + {i}])" for i in range(mr)],
        "                    for c in range(cg):",
        "                        xc = xo + (n * C + g * cg + c) * H * Win",
        "                        wbase = wo + (m * cg + c) * ksz",
        *row_taps(" " * 24, "xc", w, sw, fast_ok),
        f"                                    xv = {fast}",
        "                                else:",
        f"                                    xv = {edge}",
        "                                wk = wbase + kh * KW + kw",
        *[f"                                a{i} = vfma{w}(vbcast{w}(wb[U(wk + {i} * cg * ksz)]), xv, a{i})"
          for i in range(mr)],
    ]
    for i in range(mr):
        idx = f"((n * M + m + {i}) * OH + oh) * OW + ow0"
        L += epi.vector(" " * 20, f"a{i}", idx, w, True)
        L.append(f"                    vstoren{w}(yb, yo + {idx}, a{i}, cnt)")
    L += epi.after(" " * 20, [f"for i in range({mr}):", "for j in range(cnt):"],
                   "((n * M + m + i) * OH + oh) * OW + ow0 + j")
    return source(L), epi.args


def simd_conv_applies(node: Node, target: Target) -> bool:
    x, wt = node.inputs[0], node.inputs[1]
    return (x.dtype == np.float32 and wt.dtype == np.float32 and wt.is_const and len(x.shape) == 4
            and node.attrs["strides"][1] in (1, 2))


@variant("Conv", name="simd_conv", priority=70, applies=simd_conv_applies)
def gen_simd_conv(node: Node, target: Target) -> list[KernelCall]:
    x, wt, bias, y = conv_operands(node)
    a = node.attrs
    N, C, H, Win = x.shape
    M = wt.shape[0]
    mg = M // a["group"]
    mr = next(r for r in (8, 4, 2, 1) if mg % r == 0)  # 8 FMA chains: 1.1-1.2x on stride-2 stem convs
    OW = y.shape[3]
    w = row_width(target, OW)
    src, extra = conv_source(node, w, mr, a["strides"][1])
    args = [x, wt, bias, y, N, C, H, Win, M, y.shape[2], OW, *a["kernel_shape"], a["strides"][0],
            a["pads"][0], a["pads"][1], *a["dilations"], a["group"], *extra]
    return [KernelCall(src, args, note(node))]
