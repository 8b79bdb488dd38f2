"""Depthwise 2-D convolution with explicit SIMD: the kernel's weight vectors stay in registers.

Plain NCHW, one output channel at a time (input channel ``m // multiplier``): its ``KH*KW`` weights are
broadcast into vectors once, then every output row is swept in vectors of ``W`` columns with the taps
unrolled at generation time. Each kernel row accumulates into its own vector (independent FMA chains),
summed at the end with the bias. Interior chunks load directly (stride 2: two loads, even lanes); border
chunks use masked loads that never touch memory outside the input row.
"""

from __future__ import annotations

import numpy as np

from cnnjit.ir import Node

from ..kernel import KernelCall, Target, note, variant
from .epilogue import Epilogue
from .simd_pointwise import conv_operands, row_lanes, row_load, row_width
from .template import source

MAX_TAPS = 49  # up to 7x7 unrolled


def depthwise_source(node: Node, w: int, kh_n: int, kw_n: int, sw: int) -> tuple[str, list]:
    epi = Epilogue(node, w, True)
    L = [
        "def kernel(xb, xo, wb, wo, bb, bo, yb, yo, N, C, H, Win, M, OH, OW, sh, ph, pw, dh, dw"
        + epi.signature() + "):",
        "    mult = M // C",
        "    for n in range(N):",
        "        for m in range(M):",
        "            xc = xo + (n * C + m // mult) * H * Win",
        f"            wk = wo + m * {kh_n * kw_n}",
        *[f"            w{i}_{j} = vbcast{w}(wb[U(wk + {i * kw_n + j})])" for i in range(kh_n) for j in range(kw_n)],
        f"            bias = vbcast{w}(bb[bo + m])",
        "            for oh in range(OH):",
        "                ih0 = oh * sh - ph",
        f"                for ow0 in range(0, OW, {w}):",
        f"                    cnt = min({w}, OW - ow0)",
        f"                    full = cnt == {w}",
    ]
    # each kernel column's input position, and whether its load can skip the edge mask, are the same for
    # every kernel row: worked out once per output vector
    for j in range(kw_n):
        lo, hi = row_lanes(sw, f"iw{j}")
        L += [
            f"                    iw{j} = ow0 * {sw} + {j} * dw - pw",
            f"                    f{j} = full and {row_load(w, sw, f'iw{j}')[1]}",
            f"                    lo{j} = {lo}",
            f"                    hi{j} = {hi}",
        ]
    for i in range(kh_n):
        L += [
            f"                    r{i} = vzero{w}()",
            f"                    ih = ih0 + {i} * dh",
            "                    if ih >= 0 and ih < H:",
            "                        xrow = xc + ih * Win",
        ]
        for j in range(kw_n):
            fast, _, masked = row_load(w, sw, f"iw{j}", lanes=(f"lo{j}", f"hi{j}"))
            L += [
                f"                        if f{j}:",
                f"                            xv = {fast}",
                "                        else:",
                f"                            xv = {masked}",
                f"                        r{i} = vfma{w}(w{i}_{j}, xv, r{i})",
            ]
    total = "bias"
    for i in range(kh_n):
        total = f"vadd{w}({total}, r{i})"
    L.append(f"                    a = {total}")
    idx = "((n * M + m) * OH + oh) * OW + ow0"
    L += epi.vector(" " * 20, "a", idx, w, True)
    L.append(f"                    vstoren{w}(yb, yo + {idx}, a, cnt)")
    L += epi.after(" " * 20, ["for j in range(cnt):"], f"{idx} + j")
    return source(L), epi.args


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
    N, C, H, Win = x.shape
    M = wt.shape[0]
    OW = y.shape[3]
    w = row_width(target, OW)
    kh, kw = a["kernel_shape"]
    src, extra = depthwise_source(node, w, kh, kw, a["strides"][1])
    args = [x, wt, bias, y, N, C, H, Win, M, y.shape[2], OW, a["strides"][0], a["pads"][0], a["pads"][1],
            *a["dilations"], *extra]
    return [KernelCall(src, args, note(node))]
