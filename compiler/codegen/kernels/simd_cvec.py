"""Direct convolution for small feature maps: SIMD over output channels (plain NCHW in and out).

When the output rows are too short to fill a vector (7x7, 8x8, 25x5 planes), vectorising over output
columns wastes most lanes. This kernel instead holds ``W`` consecutive output channels in a vector and a
tile of ``NP`` output pixels in registers: for every input channel and tap it loads one vector of weights
(re-laid at compile time as ``[C/G * KH * KW, M]``) and broadcasts each pixel's input value into an FMA.
Out-of-range taps are skipped per pixel (padding is never materialised). The finished tile is written
with strided stores (one channel plane per lane); a residual epilogue gathers the same way.
"""

from __future__ import annotations

import numpy as np

from cnnjit.ir import Node

from ..kernel import KernelCall, Param, flit, note
from ..simd import host_vector_width
from .simd_pointwise import residual_operands

NP = 6  # output pixels per register tile


def _epi(node: Node, acc: str, w: int) -> tuple[list[str], bool]:
    lines = []
    for step in node.attrs.get("post", ()):
        op = step[0]
        if op == "Add":
            lines.append(f"{acc} = vadd{w}({acc}, vgather{w}(r{step[1]}b, r{step[1]}o + yq, P))")
        elif op == "Relu":
            lines.append(f"{acc} = vmax{w}({acc}, vzero{w}())")
        elif op == "Clip":
            a = dict(step[1])
            if a.get("min") is not None:
                lines.append(f"{acc} = vmax{w}({acc}, vbcast{w}({flit(a['min'])}))")
            if a.get("max") is not None:
                lines.append(f"{acc} = vmin{w}({acc}, vbcast{w}({flit(a['max'])}))")
        else:
            return [], False
    return lines, True


def cvec_source(node: Node, w: int) -> tuple[str, list]:
    from .elementwise import epilogue

    res_params, res_args = residual_operands(node)
    epi, in_reg = _epi(node, "a", w)
    scalar_lines, _, _ = epilogue(node, 3, "q", "")
    L = [
        "def kernel(xb, xo, wb, wo, bb, bo, yb, yo, N, C, H, Win, M, OH, OW, KH, KW, sh, sw, ph, pw, dh, dw, G"
        + "".join(", " + p for p in res_params) + "):",
        "    cg = C // G",
        "    mg = M // G",
        "    P = OH * OW",
        "    for n in range(N):",
        f"        for m0 in range(0, M, {w}):",
        "            g = m0 // mg",
        f"            for p0 in range(0, P, {NP}):",
        f"                bias = vload{w}(bb, bo + m0)",
    ]
    for j in range(NP):
        L += [
            f"                a{j} = bias",
            f"                q{j} = min(p0 + {j}, P - 1)",  # a tail tile recomputes the last pixel
            f"                oh{j} = q{j} // OW",
            f"                ih{j} = oh{j} * sh - ph",
            f"                iw{j} = (q{j} - oh{j} * OW) * sw - pw",
        ]
    L += [
        "                for c in range(cg):",
        "                    xc = xo + (n * C + g * cg + c) * H * Win",
        "                    for kh in range(KH):",
        "                        for kw in range(KW):",
        f"                            wv = vload{w}(wb, wo + ((c * KH + kh) * KW + kw) * M + m0)",
    ]
    for j in range(NP):
        L += [
            f"                            ih = ih{j} + kh * dh",
            f"                            iw = iw{j} + kw * dw",
            "                            if ih >= 0 and ih < H and iw >= 0 and iw < Win:",
            f"                                a{j} = vfma{w}(vbcast{w}(xb[U(xc + ih * Win + iw)]), wv, a{j})",
        ]
    for j in range(NP):
        L.append(f"                if p0 + {j} < P:")
        L.append(f"                    yq = (n * M + m0) * P + q{j}")
        if in_reg:
            L += [f"                    {ln.replace('a =', f'a{j} =').replace('(a,', f'(a{j},')}" for ln in epi]
            L.append(f"                    vscatter{w}(yb, yo + yq, P, a{j})")
        else:
            L.append(f"                    vscatter{w}(yb, yo + yq, P, a{j})")
            if scalar_lines:
                L += [
                    f"                    for i in range({w}):",
                    "                        q = yq + i * P",
                    "                        v = yb[U(yo + q)]",
                    *[f"                        {ln.strip()}" for ln in scalar_lines],
                    "                        yb[U(yo + q)] = v",
                ]
    return "\n".join(L) + "\n", res_args


def cvec_width(node: Node) -> int | None:
    """The vector width to use, or None when this kernel does not apply."""
    x, wt, y = node.inputs[0], node.inputs[1], node.outputs[0]
    a = node.attrs
    if x.dtype != np.float32 or not wt.is_const or len(x.shape) != 4:
        return None
    mg = wt.shape[0] // a["group"]
    if wt.shape[1] * a["group"] != x.shape[1] or a["group"] == x.shape[1] > 1:  # not depthwise
        return None
    host = host_vector_width()
    for w in (host, 8):
        if w <= host and mg % w == 0 and y.shape[3] < w:
            return w
    return None


def gen_simd_cvec(node: Node, w: int) -> list[KernelCall]:
    x, wt = node.inputs[0], node.inputs[1]
    b = node.inputs[2] if len(node.inputs) > 2 else None
    y = node.outputs[0]
    a = node.attrs
    N, C, H, Win = x.shape
    M = wt.shape[0]
    wT = np.ascontiguousarray(wt.const.reshape(M, -1).T, dtype=np.float32)  # [cg*KH*KW, M]
    bias = b if b is not None else Param(np.zeros(M, np.float32))
    src, extra = cvec_source(node, w)
    args = [x, Param(wT), bias, y, N, C, H, Win, M, y.shape[2], y.shape[3], *a["kernel_shape"], *a["strides"],
            a["pads"][0], a["pads"][1], *a["dilations"], a["group"], *extra]
    return [KernelCall(src, args, note(node))]
