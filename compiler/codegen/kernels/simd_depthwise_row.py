"""Depthwise 2-D convolution on rows no longer than one vector (``simd_depthwise_row``): masked loads.

For a stride-1 depthwise conv whose output rows fit in one vector of the row's width (``row_width``) and
whose window lies mostly in the padding (MobileNetV3's 5x5 layers on 2x2 planes), the padded plane
(``simd_depthwise``) sweeps every tap; this kernel skips the kernel rows outside the input: one output
channel at a time, its ``KH*KW`` weights broadcast once, each output row one vector with the taps unrolled,
border taps as masked loads that never touch memory outside the input row. Measured (Zen 3, AVX2) on
576 channels of 2x2 with a 5x5 window: 5.3 us against 15.3 us; on 4x4 and 7x7 planes the padded plane's
multi-row sweep is faster, so they stay there.
"""

from __future__ import annotations

from cnnjit.ir import Node

from ..kernel import KernelCall, Target, note, variant
from .epilogue import Epilogue
from .simd_depthwise import simd_depthwise_applies
from .simd_pointwise import conv_operands, conv_sizes, row_lanes, row_load, row_width
from .template import source


def row_depthwise_source(node: Node, w: int, kh_n: int, kw_n: int, sw: int) -> tuple[str, list]:
    epi = Epilogue(node, w, True)
    L = [
        "def kernel(xb, xo, wb, wo, bb, bo, yb, yo, N, C, H, Win, M, OH, OW, sh, ph, pw, dh, dw"
        + epi.signature() + "):",
        "    mult = M // C",
        "    end = N * M * OH * OW",
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
    # rows are stored in order, so a whole-vector store may run on into the next rows (written after it): only
    # the call's last vectors need the masked store (~10 plain ones on AMD)
    L += [f"                    if {idx} + {w} <= end:", f"                        vstore{w}(yb, yo + {idx}, a)",
          "                    else:", f"                        vstoren{w}(yb, yo + {idx}, a, cnt)"]
    L += epi.after(" " * 20, ["for j in range(cnt):"], f"{idx} + j")
    return source(L), epi.args


def inside_fraction(node: Node) -> float:
    """The fraction of (output row, kernel row) pairs of a Conv whose input row lies inside the input (not in
    its padding): the share of the taps a kernel that skips padded rows still computes."""
    a = node.attrs
    H, OH = node.inputs[0].shape[2], node.outputs[0].shape[2]
    kh, sh, dh, ph = a["kernel_shape"][0], a["strides"][0], a["dilations"][0], a["pads"][0]
    inside = sum(0 <= oh * sh + i * dh - ph < H for oh in range(OH) for i in range(kh))
    return inside / (OH * kh)


#: at most this fraction of the window inside the input: skipping the rest beats the padded plane's full sweep
MAX_INSIDE = 0.5


def simd_depthwise_row_applies(node: Node, target: Target) -> bool:
    """A depthwise conv ``simd_depthwise`` takes, stride 1, whose output rows fit in one row-width vector and
    whose window lies mostly in the padding (``inside_fraction`` at most ``MAX_INSIDE``: MobileNetV3's 5x5
    layers on 2x2 planes, 2.9x faster than the padded plane's sweep; at 4x4 and 7x7, where more than half
    the window is inside, the padded plane's multi-row sweep is 1.1-1.5x faster)."""
    return (simd_depthwise_applies(node, target) and node.attrs["strides"][1] == 1
            and node.outputs[0].shape[3] <= row_width(target, node.outputs[0].shape[3])
            and inside_fraction(node) <= MAX_INSIDE)


@variant("Conv", name="simd_depthwise_row", priority=49, applies=simd_depthwise_row_applies)
def gen_simd_depthwise_row(node: Node, target: Target) -> list[KernelCall]:
    x, wt, bias, y = conv_operands(node)
    a = node.attrs
    N, C, H, Win, M, OH, OW = conv_sizes(node)
    w = row_width(target, OW)
    kh, kw = a["kernel_shape"]
    src, extra = row_depthwise_source(node, w, kh, kw, a["strides"][1])
    args = [x, wt, bias, y, N, C, H, Win, M, OH, OW, a["strides"][0], a["pads"][0], a["pads"][1],
            *a["dilations"], *extra]
    return [KernelCall(src, args, note(node))]
