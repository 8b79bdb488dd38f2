"""Integer kernels for QConvNHWC (dense, pointwise, depthwise, fully connected) and QAdd.

Dense convolution (group 1, also 1x1 and Gemm/MatMul as a 1x1 conv on ``[N, 1, 1, K]``) is a register-tiled
direct convolution in channels-last layout: a tile of ``MR`` output pixels of one row by ``NR`` vectors of
``n`` output channels accumulates ``MR * NR`` int32 vectors; for every kernel tap and group of 4 input
channels, each pixel's 4 input bytes are broadcast and meet ``NR`` vectors of packed weights in one
``ivdot`` (``vpdpbusd`` with AVX512-VNNI: 64 multiply-adds per instruction). Weights are packed at compile
time as ``[M/n][tap][C/4][n][4]``. ``vpdpbusd`` multiplies *unsigned* activations by signed weights, so int8
activations are biased by +128 (an xor of the sign bit) and the constant ``x_zero_point * sum(w)`` (with the
biased zero point) is folded into the int32 bias; padding taps contribute the zero point's bytes, so they
cancel exactly as QLinearConv's zero padding does. Pixels whose window crosses the left/right border run a
one-pixel tile that substitutes the zero point per tap. The epilogue requantises in registers
(``ivrqstore``: float32 multiply, clamp, round half to even, zero point, narrow, masked byte store).

Depthwise convolution vectorises over channels (widened i32 multiply-adds), with the kernel's taps unrolled
and its weights held in registers across the output plane. Other grouped convolutions run a plain loop.
"""

from __future__ import annotations

import numpy as np

from cnnjit.ir import Node
from cnnjit.ir.ops.qint import qadd_fixed

from ..kernel import KernelCall, Param, generator, note
from ..simd_int import host_int_width

#: output pixels per tile for a tile of NR channel vectors, by register-file size (32 or 16 vectors)
_MR32 = {1: 12, 2: 12, 3: 8, 4: 6}
_MR16 = {1: 8, 2: 5, 3: 3, 4: 2}
_FLIP = -2139062144  # 0x80808080 as int32: adds 128 to each byte of an int8 (as uint8)


def _i32(v: int) -> int:
    v &= 0xFFFFFFFF
    return v - (1 << 32) if v >= 1 << 31 else v


def dense_source(n: int, mr: int, nr: int, signed_x: bool, crem: int) -> str:
    """The kernel source for one structural variant (vector width, tile, input signedness, C % 4)."""
    b4 = 4 * n
    extra = 1 if crem else 0

    def xval(idx: str) -> str:
        return f"ivbcast4x{n}(xb, {idx})" if signed_x else f"ivbcast4_{n}(xb, {idx})"

    def partial(idx: str, ind: str, name: str) -> list[str]:
        """The last, partial group of 4 channels assembled from ``crem`` bytes (never reads past C)."""
        parts = " | ".join(f"((np.int32(xb[{idx} + {k}]) & 255) << {8 * k})" for k in range(crem))
        if signed_x:
            parts = f"({parts}) ^ {_FLIP}"
        return [f"{ind}{name} = ivset{n}({parts})"]

    def tile(m: int, ind: str) -> list[str]:
        L = [f"{ind}a{i}_{j} = ivload{n}(bb, bo + (jb + {j}) * {n})" for i in range(m) for j in range(nr)]
        L += [
            f"{ind}for kh in range(KH):",
            f"{ind}    ih = oh * sh - ph + kh * dh",
            f"{ind}    wt = wj + kh * KW * G4 * {b4}",
            f"{ind}    if ih < 0 or ih >= H:",
            f"{ind}        for g in range(KW * G4):",
            *[f"{ind}            a{i}_{j} = ivdot{n}(a{i}_{j}, PAT, ivload{n}(wb, wt + g * {b4} + {j} * BS))"
              for j in range(nr) for i in range(m)],
            f"{ind}        continue",
            f"{ind}    for kw in range(KW):",
            f"{ind}        iw = ow * sw - pw + kw * dw",
            f"{ind}        wk = wt + kw * G4 * {b4}",
        ]
        body = ind + "        "
        if m == 1:  # one pixel: its tap may be outside the row
            L += [f"{body}if iw < 0 or iw >= W:",
                  f"{body}    for g in range(G4):",
                  *[f"{body}        a0_{j} = ivdot{n}(a0_{j}, PAT, ivload{n}(wb, wk + g * {b4} + {j} * BS))"
                    for j in range(nr)],
                  f"{body}    continue"]
        L += [f"{body}xp = xo + ((b * H + ih) * W + iw) * C",
              f"{body}for g in range(C4):"]
        L += [f"{body}    w{j} = ivload{n}(wb, wk + g * {b4} + {j} * BS)" for j in range(nr)]
        for i in range(m):
            L.append(f"{body}    x{i} = {xval(f'xp + {i} * sC + 4 * g')}")
            L += [f"{body}    a{i}_{j} = ivdot{n}(a{i}_{j}, x{i}, w{j})" for j in range(nr)]
        if crem:  # 4-byte loads while they stay inside the tensor (the extra bytes meet zero weights)
            L += [f"{body}w{j} = ivload{n}(wb, wk + C4 * {b4} + {j} * BS)" for j in range(nr)]
            L.append(f"{body}if xp + {m - 1} * sC + 4 * C4 + 4 <= xend:")
            for i in range(m):
                L.append(f"{body}    x{i} = {xval(f'xp + {i} * sC + 4 * C4')}")
            L.append(f"{body}else:")
            for i in range(m):
                L += partial(f"xp + {i} * sC + 4 * C4", body + "    ", f"x{i}")
            for i in range(m):
                L += [f"{body}a{i}_{j} = ivdot{n}(a{i}_{j}, x{i}, w{j})" for j in range(nr)]
        for i in range(m):
            for j in range(nr):
                L.append(f"{ind}ivrqstore{n}(yb, ybase + (ow + {i}) * M + (jb + {j}) * {n}, a{i}_{j}, mb, "
                         f"mo + (jb + {j}) * {n}, yz, lo, hi, M - (jb + {j}) * {n})")
        return L

    L = [
        "def kernel(xb, xo, wb, wo, bb, bo, mb, mo, yb, yo, N, H, W, C, OH, OW, M, KH, KW, sh, sw, ph, pw, dh, dw,"
        " MB, owlo, owhi, pat, yz, lo, hi):",
        f"    PAT = ivset{n}(pat)",
        "    C4 = C // 4",
        f"    G4 = C4 + {extra}",
        f"    BS = KH * KW * G4 * {b4}",
        "    sC = sw * C",
        "    xend = xo + N * H * W * C",
        "    for b in range(N):",
        "        for oh in range(OH):",
        "            ybase = yo + (b * OH + oh) * OW * M",
        f"            for jb in range(0, MB, {nr}):",
        "                wj = wo + jb * BS",
        "                ow = 0",
        "                while ow < OW:",
        f"                    if ow >= owlo and ow + {mr} <= owhi:",
        *tile(mr, " " * 24),
        f"                        ow += {mr}",
        "                    else:",
        *tile(1, " " * 24),
        "                        ow += 1",
    ]
    return "\n".join(L) + "\n"


def depthwise_source(n: int, kh: int, kw: int) -> str:
    T = kh * kw
    L = [
        "def kernel(xb, xo, wb, wo, bb, bo, mb, mo, yb, yo, N, H, W, C, Cp, OH, OW, sh, sw, ph, pw, dh, dw, xz, yz,"
        " lo, hi):",
        f"    XZ = ivset{n}(xz)",
        "    for b in range(N):",
        f"        for c0 in range(0, C, {n}):",
        f"            cnt = min({n}, C - c0)",
        *[f"            w{t} = ivload8_{n}(wb, wo + {t} * Cp + c0, {n})" for t in range(T)],
        f"            bias = ivload{n}(bb, bo + c0)",
        "            for oh in range(OH):",
        *[f"                ih{r} = oh * sh - ph + {r} * dh" for r in range(kh)],
        *[f"                r{r} = ih{r} >= 0 and ih{r} < H" for r in range(kh)],
        "                for ow in range(OW):",
        "                    acc = bias",
    ]
    for c in range(kw):
        L += [f"                    iw{c} = ow * sw - pw + {c} * dw",
              f"                    q{c} = iw{c} >= 0 and iw{c} < W"]
    for r in range(kh):
        for c in range(kw):
            t = r * kw + c
            L += [f"                    if r{r} and q{c}:",
                  f"                        xv = ivload8_{n}(xb, xo + ((b * H + ih{r}) * W + iw{c}) * C + c0, cnt)",
                  "                    else:",
                  "                        xv = XZ",
                  f"                    acc = ivadd{n}(acc, ivmul{n}(xv, w{t}))"]
    L += ["                    ivrqstore{n}(yb, yo + ((b * OH + oh) * OW + ow) * C + c0, acc, mb, mo + c0, yz, lo, hi,"
          " cnt)".replace("{n}", str(n))]
    return "\n".join(L) + "\n"


GENERIC_SRC = '''
def kernel(xb, xo, wb, wo, bb, bo, mb, mo, yb, yo, N, H, W, C, OH, OW, M, KH, KW, sh, sw, ph, pw, dh, dw, G,
           xz, yz, lo, hi):
    cg = C // G
    mg = M // G
    for b in range(N):
        for oh in range(OH):
            for ow in range(OW):
                for m in range(M):
                    g = m // mg
                    acc = np.int64(bb[bo + m])
                    for kh in range(KH):
                        ih = oh * sh - ph + kh * dh
                        if ih < 0 or ih >= H:
                            continue
                        for kw in range(KW):
                            iw = ow * sw - pw + kw * dw
                            if iw < 0 or iw >= W:
                                continue
                            xp = xo + ((b * H + ih) * W + iw) * C + g * cg
                            wp = wo + ((m * KH + kh) * KW + kw) * cg
                            for c in range(cg):
                                acc += (np.int64(xb[xp + c]) - xz) * np.int64(wb[wp + c])
                    v = np.float32(np.float32(np.int32(acc)) * mb[mo + m])
                    v = min(max(v, np.float32(lo - yz)), np.float32(hi - yz))
                    yb[yo + ((b * OH + oh) * OW + ow) * M + m] = np.int32(np.rint(v)) + yz
'''


def _geometry(node: Node) -> dict:
    x, w = node.inputs[0], node.inputs[1]
    y = node.outputs[0]
    a = node.attrs
    N, H, W, C = x.shape
    M, KH, KW, _ = w.shape
    return {"N": N, "H": H, "W": W, "C": C, "M": M, "KH": KH, "KW": KW, "OH": y.shape[1], "OW": y.shape[2],
            "sh": a["strides"][0], "sw": a["strides"][1], "ph": a["pads"][0], "pw": a["pads"][1],
            "dh": a["dilations"][0], "dw": a["dilations"][1]}


def gen_generic(node: Node) -> list[KernelCall]:
    x, w, b, m = node.inputs
    g = _geometry(node)
    a = node.attrs
    args = [x, Param(np.ascontiguousarray(w.const)), b, m, node.outputs[0], g["N"], g["H"], g["W"], g["C"], g["OH"],
            g["OW"], g["M"], g["KH"], g["KW"], g["sh"], g["sw"], g["ph"], g["pw"], g["dh"], g["dw"], a["group"],
            a["x_zero_point"], a["y_zero_point"], a["lo"], a["hi"]]
    return [KernelCall(GENERIC_SRC, args, note(node))]


def pack_dense(w: np.ndarray, n: int) -> np.ndarray:
    """``[M, KH, KW, C]`` int8 weights as ``[ceil(M/n)][KH*KW][ceil(C/4)][n][4]`` (zero padded)."""
    M, KH, KW, C = w.shape
    MB, G4 = -(-M // n), -(-C // 4)
    p = np.zeros((MB * n, KH * KW, G4 * 4), np.int8)
    p[:M, :, :C] = w.reshape(M, KH * KW, C)
    return np.ascontiguousarray(p.reshape(MB, n, KH * KW, G4, 4).transpose(0, 2, 3, 1, 4)).reshape(-1)


def gen_dense(node: Node, n: int) -> list[KernelCall]:
    x, w, b, m = node.inputs
    a = node.attrs
    g = _geometry(node)
    wq = w.const
    M = g["M"]
    MB = -(-M // n)
    signed_x = x.dtype == np.int8
    xzu = a["x_zero_point"] + (128 if signed_x else 0)
    bias = np.zeros(MB * n, np.int64)
    bias[:M] = b.const.astype(np.int64) - xzu * wq.reshape(M, -1).astype(np.int64).sum(1)
    mult = np.zeros(MB * n, np.float32)
    mult[:M] = m.const
    nr = next(d for d in (4, 3, 2, 1) if MB % d == 0)
    mr = (_MR32 if n == 16 else _MR16)[nr]
    H, W, OH, OW = g["H"], g["W"], g["OH"], g["OW"]
    pointwise = g["KH"] == g["KW"] == 1 and g["sh"] == g["sw"] == 1 and not any(a["pads"])
    if pointwise:  # the plane is one long row of pixels
        H, W, OH, OW = 1, H * W, 1, OH * OW
    owlo = -(-g["pw"] // g["sw"])
    span = W - 1 + g["pw"] - (g["KW"] - 1) * g["dw"]
    owhi = min(OW, span // g["sw"] + 1) if span >= 0 else 0
    src = dense_source(n, mr, nr, signed_x, g["C"] % 4)
    args = [x, Param(pack_dense(wq, n)), Param(bias.astype(np.int32)), Param(mult), node.outputs[0], g["N"], H, W,
            g["C"], OH, OW, M, g["KH"], g["KW"], g["sh"], g["sw"], g["ph"], g["pw"], g["dh"], g["dw"], MB,
            owlo, max(owhi, owlo), _i32(xzu * 0x01010101), a["y_zero_point"], a["lo"], a["hi"]]
    return [KernelCall(src, args, note(node))]


def gen_depthwise(node: Node, n: int) -> list[KernelCall]:
    x, w, b, m = node.inputs
    a = node.attrs
    g = _geometry(node)
    C = g["C"]
    Cp = -(-C // n) * n
    T = g["KH"] * g["KW"]
    wt = np.zeros((T, Cp), np.int8)
    wt[:, :C] = w.const.reshape(C, T).T
    xz = a["x_zero_point"]
    bias = np.zeros(Cp, np.int64)
    bias[:C] = b.const.astype(np.int64) - xz * w.const.reshape(C, T).astype(np.int64).sum(1)
    mult = np.zeros(Cp, np.float32)
    mult[:C] = m.const
    src = depthwise_source(n, g["KH"], g["KW"])
    args = [x, Param(wt.reshape(-1)), Param(bias.astype(np.int32)), Param(mult), node.outputs[0], g["N"], g["H"],
            g["W"], C, Cp, g["OH"], g["OW"], g["sh"], g["sw"], g["ph"], g["pw"], g["dh"], g["dw"], xz,
            a["y_zero_point"], a["lo"], a["hi"]]
    return [KernelCall(src, args, note(node))]


#: set to False to force the plain loop kernel (tests compare both)
FAST = True


@generator("QConvNHWC")
def gen_qconv(node: Node) -> list[KernelCall]:
    w = node.inputs[1]
    if not (FAST and all(v.is_const for v in node.inputs[1:])):
        return gen_generic(node)
    n = host_int_width()
    G = node.attrs["group"]
    C = node.inputs[0].shape[3]
    if G == 1:
        return gen_dense(node, n)
    if G == C == w.shape[0] and w.shape[1] * w.shape[2] <= 49:
        return gen_depthwise(node, n)
    return gen_generic(node)


QADD_SRC = '''
def kernel(ab, ao, bb, bo, yb, yo, count, ra, rb, fixed, lo, hi):
    ra32 = np.float32(ra)
    rb32 = np.float32(rb)
    fx = np.float32(fixed)
    lo32 = np.float32(lo)
    hi32 = np.float32(hi)
    for i in range(count):
        v = (fx + np.float32(ab[U(ao + i)]) * ra32) + np.float32(bb[U(bo + i)]) * rb32
        v = min(max(np.rint(v), lo32), hi32)
        yb[U(yo + i)] = np.int32(v)
'''


@generator("QAdd")
def gen_qadd(node: Node) -> list[KernelCall]:
    a = node.attrs
    x, y = node.inputs
    return [KernelCall(QADD_SRC, [x, y, node.outputs[0], x.type.size, float(np.float32(a["ra"])),
                                  float(np.float32(a["rb"])), float(qadd_fixed(a)), float(a["lo"]), float(a["hi"])],
                       note(node))]


QAVGPOOL_SRC = '''
def kernel(xb, xo, yb, yo, N, H, W, C, OH, OW, KH, KW, sh, sw, ph, pw, incl, xz, xs, ys, yz, lo, hi):
    fxz = np.float32(xz)
    fxs = np.float32(xs)
    fys = np.float32(ys)
    lo32 = np.float32(lo - yz)
    hi32 = np.float32(hi - yz)
    for b in range(N):
        for oh in range(OH):
            hs = oh * sh - ph
            h0 = max(hs, 0)
            h1 = min(hs + KH, H)
            for ow in range(OW):
                ws = ow * sw - pw
                w0 = max(ws, 0)
                w1 = min(ws + KW, W)
                cnt = np.float32(KH * KW) if incl else np.float32((h1 - h0) * (w1 - w0))
                yp = yo + ((b * OH + oh) * OW + ow) * C
                for c in range(C):
                    acc = np.float32(0.0)
                    for h in range(h0, h1):
                        xp = xo + ((b * H + h) * W) * C + c
                        for w in range(w0, w1):
                            acc += (np.float32(xb[U(xp + w * C)]) - fxz) * fxs
                    v = np.rint(np.float32(np.float32(acc / cnt) / fys))
                    v = min(max(v, lo32), hi32)
                    yb[U(yp + c)] = np.int32(v) + yz
'''


@generator("QAvgPoolNHWC")
def gen_qavgpool(node: Node) -> list[KernelCall]:
    """Float32 taps summed in window order (onnxruntime's float path, see ``cnnjit.ir.ops.qint``)."""
    a = node.attrs
    x, y = node.inputs[0], node.outputs[0]
    N, H, W, C = x.shape
    return [KernelCall(QAVGPOOL_SRC, [x, y, N, H, W, C, y.shape[1], y.shape[2], *a["kernel_shape"], *a["strides"],
                                      a["pads"][0], a["pads"][1], int(a["count_include_pad"]), float(a["x_zero_point"]),
                                      float(a["x_scale"]), float(a["y_scale"]), a["y_zero_point"], a["lo"], a["hi"]],
                       note(node))]
