"""Depthwise 2-D convolution with explicit SIMD: the kernel's weight vectors stay in registers.

Plain NCHW, one output channel at a time (input channel ``m // multiplier``): the channel's input plane is
first copied into a zero-padded plane (a ``Scratch``, its borders zeroed once per call) wide enough that
every tap of every output vector is one unmasked load with no bounds test (stride 2: the plane is split
into its even and odd columns while it is copied, so a tap is a contiguous load too); its ``KH*KW``
weights are broadcast into vectors once. Two output rows are swept together in vectors of ``W`` columns
with the taps unrolled at generation time, the input vectors they share loaded once; each (output row,
kernel row) accumulates into its own vector (independent FMA chains), summed at the end with the bias;
only the store of a row's last vector is short. (Masked loads and a bounds test at every tap, the earlier
form, ran 3-4x slower than onnxruntime on 14x14 planes.)
"""

from __future__ import annotations

import numpy as np

from cnnjit.ir import Node

from ..kernel import KernelCall, Scratch, Target, note, variant
from .epilogue import Epilogue
from .simd_pointwise import conv_operands, row_width
from .template import source

MAX_TAPS = 49  # up to 7x7 unrolled


#: output rows computed together: the input rows they share are loaded once
ROWS = 2


def plane_size(node: Node, w: int) -> tuple[int, int]:
    """Rows and row length of the zero-padded input plane (``Scratch``): every tap's load of every output
    vector, the last one's unused lanes included, falls inside it. Stride 2 keeps the even and the odd
    padded columns as two planes (rows a whole number of vectors long), so each tap is a contiguous load."""
    x, y = node.inputs[0], node.outputs[0]
    a = node.attrs
    (_, _, H, Win), (OH, OW) = x.shape, y.shape[2:]
    (kh, kw), (sh, sw), (dh, dw) = a["kernel_shape"], a["strides"], a["dilations"]
    ow_vectors = -(-OW // w) * w
    rows = max(a["pads"][0] + H, (OH - 1) * sh + (kh - 1) * dh + 1)
    if sw == 1:
        return rows, max(a["pads"][1] + Win, ow_vectors + (kw - 1) * dw)
    half = max(ow_vectors + (kw - 1) * dw // 2, (a["pads"][1] + Win + 1) // 2)
    return rows, -(-half // w) * w


def _rows(w: int, kh_n: int, kw_n: int, sh: int, sw: int, dh: int, dw: int, rows: int, epi: Epilogue,
          ind: str) -> list[str]:
    """One sweep over the output row(s) ``oh .. oh + rows - 1``: unmasked loads from the padded plane, one
    accumulator per (output row, kernel row), each distinct input vector loaded once."""
    L = [f"{ind}for ow0 in range(0, OW, {w}):", f"{ind}    cnt = min({w}, OW - ow0)",
         f"{ind}    base = po + oh * {sh} * PW + ow0"]
    L += [f"{ind}    r{r}_{i} = vzero{w}()" for r in range(rows) for i in range(kh_n)]
    for t in sorted({r * sh + i * dh for r in range(rows) for i in range(kh_n)}):
        for j in range(kw_n):
            col = f"{j * dw}" if sw == 1 else f"{(j * dw) % 2} * PH * PW + {(j * dw) // 2}"  # stride 2: its plane
            L.append(f"{ind}    xv = vload{w}(pb, base + {t} * PW + {col})")
            L += [f"{ind}    r{r}_{i} = vfma{w}(w{i}_{j}, xv, r{r}_{i})"
                  for r in range(rows) for i in range(kh_n) if r * sh + i * dh == t]
    for r in range(rows):
        total = "bias"
        for i in range(kh_n):
            total = f"vadd{w}({total}, r{r}_{i})"
        idx = f"((n * M + m) * OH + oh + {r}) * OW + ow0"
        L.append(f"{ind}    a = {total}")
        L += epi.vector(ind + "    ", "a", idx, w, True)
        L.append(f"{ind}    vstoren{w}(yb, yo + {idx}, a, cnt)")
        L += epi.after(ind + "    ", ["for j in range(cnt):"], f"{idx} + j")
    return L


def _copy_row(w: int) -> list[str]:
    """Kernel lines copying input row ``src`` into the padded plane's row ``ih + ph`` at column ``pw``."""
    ind = " " * 20
    return [f"{ind}dst = po + (ih + ph) * PW + pw",
            f"{ind}for iw in range(0, tail, {w}):",
            f"{ind}    vstore{w}(pb, dst + iw, vload{w}(xb, src + iw))",
            f"{ind}if tail < Win:",
            f"{ind}    vstoren{w}(pb, dst + tail, vloadn{w}(xb, src + tail, Win - tail), Win - tail)"]


def _split_row(w: int) -> list[str]:
    """Stride 2: input row ``src`` into the even and the odd plane (padded column ``c`` at ``c // 2`` of
    plane ``c % 2``), a vector of each at a time; vectors past the row's ends read only its elements."""
    ind = " " * 20
    L = []
    for par in (0, 1):
        L += [f"{ind}dst = po + {par} * PH * PW + (ih + ph) * PW",
              f"{ind}for k0 in range(0, PW, {w}):",
              f"{ind}    iw = 2 * k0 + {par} - pw",
              f"{ind}    if iw >= 0 and iw + {2 * w} <= Win:",
              f"{ind}        vstore{w}(pb, dst + k0, vload2e{w}(xb, src + iw))",
              f"{ind}    else:",
              f"{ind}        lo = max(0, -iw)",
              f"{ind}        hi = min({2 * w - 1}, Win - iw)",
              f"{ind}        if lo < hi:",
              f"{ind}            vstore{w}(pb, dst + k0, vload2er{w}(xb, src + iw, lo, hi))"]
    return L


def depthwise_source(node: Node, w: int, kh_n: int, kw_n: int, sh: int, sw: int, dh: int,
                     dw: int) -> tuple[str, list]:
    epi = Epilogue(node, w, True)
    L = [
        "def kernel(xb, xo, wb, wo, bb, bo, yb, yo, pb, po, N, C, H, Win, M, OH, OW, ph, pw, PH, PW"
        + epi.signature() + "):",
        "    mult = M // C",
        # the borders stay zero: each channel overwrites the interior only (the Scratch is a whole number
        # of vectors long)
        f"    for i in range(0, {sw} * PH * PW, {w}):",
        f"        vstore{w}(pb, po + i, vzero{w}())",
        f"    tail = Win - Win % {w}",
        "    for n in range(N):",
        "        for m in range(M):",
        "            if m % mult == 0:",
        "                xc = xo + (n * C + m // mult) * H * Win",
        "                for ih in range(H):",
        "                    src = xc + ih * Win",
        *(_copy_row(w) if sw == 1 else _split_row(w)),
        f"            wk = wo + m * {kh_n * kw_n}",
        *[f"            w{i}_{j} = vbcast{w}(wb[U(wk + {i * kw_n + j})])" for i in range(kh_n) for j in range(kw_n)],
        f"            bias = vbcast{w}(bb[bo + m])",
        f"            for ob in range(OH // {ROWS}):",
        f"                oh = ob * {ROWS}",
        *_rows(w, kh_n, kw_n, sh, sw, dh, dw, ROWS, epi, " " * 16),
        f"            if OH % {ROWS}:",
        f"                oh = OH - OH % {ROWS}",
        *_rows(w, kh_n, kw_n, sh, sw, dh, dw, 1, epi, " " * 16),
    ]
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
    src, extra = depthwise_source(node, w, kh, kw, *a["strides"], *a["dilations"])
    PH, PW = plane_size(node, w)
    planes = a["strides"][1]  # stride 2: the even and the odd columns
    args = [x, wt, bias, y, Scratch(-(-planes * PH * PW // w) * w), N, C, H, Win, M, y.shape[2], OW,
            a["pads"][0], a["pads"][1], PH, PW, *extra]
    return [KernelCall(src, args, note(node))]
