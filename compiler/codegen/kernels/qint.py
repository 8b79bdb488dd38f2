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

Depthwise convolution also runs on ``vpdpbusd``: with at most 4 kernel rows (``depthwise_col_source``) the
rows of one input column are byte-transposed so that each i32 lane holds one channel's vertical taps, and the
sliding row of outputs reuses every transposed column for all kernel columns that touch it (3x3: 12
``vpdpbusd`` per 64 channels and pixel instead of 36 i32 multiplies); taller kernels or horizontal dilation
use one ``vpdpbusd`` per tap and 16 channels (``depthwise_dot_source``); the widened i32 multiply-add kernel
(``depthwise_source``) is the variant ``qconv_depthwise``, used only when forced. Other grouped convolutions
run a plain loop (``qconv_generic``).
"""

from __future__ import annotations

import numpy as np

from cnnjit.ir import Node
from cnnjit.ir.ops.qint import qadd_fixed

from ..kernel import KernelCall, Param, Scratch, Target, note, row_lag, variant
from ..simd_int import has_vnni
from .qgemm16 import madd_step
from .template import columns_inside, source

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
    return source(L)


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
    L += [f"                    ivrqstore{n}(yb, yo + ((b * OH + oh) * OW + ow) * C + c0, acc, mb, mo + c0, yz, lo,"
          " hi, cnt)"]
    return source(L)


def depthwise_dot_source(n: int, kh: int, kw: int, signed_x: bool) -> str:
    """Depthwise convolution on the byte dot product: a block of ``4n`` channels is one ``4n``-byte load per
    tap; four accumulators ``a0..a3`` take the channels ``c0 + 4l + k`` (lane ``l`` of ``ak``), each meeting
    the tap's weights with only byte ``k`` of every 4-byte group non-zero (packed at compile time as
    ``[block][tap][k][4n]``), so one ``ivdot`` (``vpdpbusd``) multiplies 16 channels with no widening. The
    requantised accumulators interleave back into ``4n`` output bytes in channel order (``ivpack4``): one
    store per block and pixel. Padding taps read the (biased) zero point; int8 activations are biased by
    +128 like the dense kernel's."""
    T = kh * kw
    B = 4 * n

    def xload(addr: str, full: bool) -> str:
        v = f"ivload{n}(xb, {addr})" if full else f"ivloadb{n}(xb, {addr}, cnt)"
        return f"ivxor{n}({v}, FLIP)" if signed_x else v

    def pixel(ind: str, full: bool, checked: bool) -> list[str]:
        L = [f"{ind}a{k} = b{k}" for k in range(4)]
        if checked:
            for c in range(kw):
                L += [f"{ind}iw{c} = ow * sw - pw + {c} * dw", f"{ind}q{c} = iw{c} >= 0 and iw{c} < W"]
        else:
            L.append(f"{ind}xp = xrow + (ow * sw - pw) * C")
        for r in range(kh):
            for c in range(kw):
                t = r * kw + c
                if checked:
                    L += [f"{ind}if r{r} and q{c}:",
                          f"{ind}    xv = {xload(f'xo + ((b * H + ih{r}) * W + iw{c}) * C + c0', full)}",
                          f"{ind}else:",
                          f"{ind}    xv = XZ"]
                else:
                    L.append(f"{ind}xv = {xload(f'xp + {r} * dhC + {c} * dwC', full)}")
                L += [f"{ind}a{k} = ivdot{n}(a{k}, xv, ivload{n}(wb, wq + {(4 * t + k) * B}))" for k in range(4)]
        L.append(f"{ind}v = ivpack4_{n}(" + ", ".join(f"ivrq{n}(a{k}, mb, mq + {k * n}, yz, lo, hi)"
                                                      for k in range(4)) + ")")
        yaddr = "yo + ((b * OH + oh) * OW + ow) * C + c0"
        L.append(f"{ind}ivstore{n}(yb, {yaddr}, v)" if full else f"{ind}ivstoreb{n}(yb, {yaddr}, v, cnt)")
        return L

    def rows(ind: str, full: bool) -> list[str]:
        L = [f"{ind}for oh in range(OH):",
             *[f"{ind}    ih{r} = oh * sh - ph + {r} * dh" for r in range(kh)],
             *[f"{ind}    r{r} = ih{r} >= 0 and ih{r} < H" for r in range(kh)],
             f"{ind}    inner = " + " and ".join(f"r{r}" for r in range(kh)),
             f"{ind}    xrow = xo + ((b * H + oh * sh - ph) * W) * C + c0",
             f"{ind}    for ow in range(OW):"]
        if full:
            L.append(f"{ind}        if inner and ow >= owlo and ow < owhi:")
            L += pixel(ind + "            ", True, False)
            L.append(f"{ind}        else:")
            L += pixel(ind + "            ", True, True)
        else:
            L += pixel(ind + "        ", False, True)
        return L

    L = [
        "def kernel(xb, xo, wb, wo, bb, bo, mb, mo, yb, yo, N, H, W, C, OH, OW, sh, sw, ph, pw, dh, dw, owlo, owhi,"
        " pat, yz, lo, hi):",
        f"    XZ = ivset{n}(pat)",
        f"    FLIP = ivset{n}({_FLIP})",
        "    dhC = dh * W * C",
        "    dwC = dw * C",
        "    for b in range(N):",
        f"        for c0 in range(0, C, {B}):",
        f"            cnt = min({B}, C - c0)",
        f"            wq = wo + (c0 // {B}) * {T * 4 * B}",
        "            mq = mo + c0",
        *[f"            b{k} = ivload{n}(bb, bo + c0 + {k * n})" for k in range(4)],
        f"            if cnt == {B}:",
        *rows(" " * 16, True),
        "            else:",
        *rows(" " * 16, False),
    ]
    return source(L)


def depthwise_col_source(n: int, kh: int, kw: int, sw: int, signed_x: bool) -> str:
    """Depthwise convolution (``KH <= 4``, horizontal dilation 1) with four vertical taps per byte group: for a
    block of ``4n`` channels, the ``KH`` input rows of one input column are loaded and byte-transposed
    (``ivtr*``) into four vectors whose i32 lanes hold one channel's ``KH`` taps, so one ``ivdot``
    (``vpdpbusd``) does ``KH`` taps of 16 channels. A row of outputs slides along the input columns: each
    transposed column is built once and meets the weights of every kernel column that uses it (``KW - sw``
    columns carry over to the next pixel). Weights ``[block][kw][k][4n]`` and bias / multipliers are packed
    at compile time in the transposed channel order; ``ivpackq`` restores channel order for the byte store.
    Columns outside the image and rows outside it read the (biased) zero point."""
    B = 4 * n
    keep = max(kw - sw, 0)

    def col(ind: str, j: int, iw: str, full: bool) -> list[str]:
        def ld(r: int) -> str:
            v = f"ivload{n}(xb, x{r} + {iw} * C)" if full else f"ivloadb{n}(xb, x{r} + {iw} * C, cnt)"
            return f"ivxor{n}({v}, FLIP)" if signed_x else v
        L = [f"{ind}if {iw} >= 0 and {iw} < W:"]
        for r in range(kh):
            L += [f"{ind}    if r{r}:", f"{ind}        v{r} = {ld(r)}", f"{ind}    else:", f"{ind}        v{r} = XZ"]
        rows = ", ".join(f"v{r}" if r < kh else "XZ" for r in range(4))
        L += [f"{ind}    y{j}_{k} = ivtr{k}_{n}({rows})" for k in range(4)]
        L += [f"{ind}else:"] + [f"{ind}    y{j}_{k} = ZT{k}" for k in range(4)]
        return L

    def rows(ind: str, full: bool) -> list[str]:
        L = [f"{ind}for oh in range(OH):",
             *[f"{ind}    r{r} = oh * sh - ph + {r} * dh >= 0 and oh * sh - ph + {r} * dh < H" for r in range(kh)],
             *[f"{ind}    x{r} = xo + (b * H + oh * sh - ph + {r} * dh) * W * C + c0" for r in range(kh)]]
        for j in range(keep):
            L += col(ind + "    ", j, f"({j} - pw)", full)
        L.append(f"{ind}    for ow in range(OW):")
        body = ind + "        "
        for j in range(keep, kw):
            L += col(body, j, f"(ow * {sw} - pw + {j})", full)
        L += [f"{body}a{k} = b{k}" for k in range(4)]
        for j in range(kw):
            L += [f"{body}a{k} = ivdot{n}(a{k}, y{j}_{k}, ivload{n}(wb, wq + {(4 * j + k) * B}))" for k in range(4)]
        L.append(f"{body}v = ivpackq{n}(" + ", ".join(f"ivrq{n}(a{k}, mb, mq + {k * n}, yz, lo, hi)"
                                                   for k in range(4)) + ")")
        yaddr = "yo + ((b * OH + oh) * OW + ow) * C + c0"
        L.append(f"{body}ivstore{n}(yb, {yaddr}, v)" if full else f"{body}ivstoreb{n}(yb, {yaddr}, v, cnt)")
        for j in range(keep):
            L += [f"{body}y{j}_{k} = y{j + sw}_{k}" for k in range(4)]
        return L

    L = [
        "def kernel(xb, xo, wb, wo, bb, bo, mb, mo, yb, yo, N, H, W, C, OH, OW, sh, ph, pw, dh, pat, yz, lo, hi):",
        f"    XZ = ivset{n}(pat)",
        f"    FLIP = ivset{n}({_FLIP})",
        *[f"    ZT{k} = ivtr{k}_{n}(XZ, XZ, XZ, XZ)" for k in range(4)],
        "    for b in range(N):",
        f"        for c0 in range(0, C, {B}):",
        f"            cnt = min({B}, C - c0)",
        f"            wq = wo + (c0 // {B}) * {kw * 4 * B}",
        "            mq = mo + c0",
        *[f"            b{k} = ivload{n}(bb, bo + c0 + {k * n})" for k in range(4)],
        f"            if cnt == {B}:",
        *rows(" " * 16, True),
        "            else:",
        *rows(" " * 16, False),
    ]
    return source(L)


def pack_depthwise_col(w: np.ndarray, n: int) -> np.ndarray:
    """``[C, KH, KW, 1]`` weights (KH <= 4) as ``[ceil(C/4n)][kw][k][n lanes][4 rows]`` bytes in ``ivtr``'s
    channel order (lane ``(L, j)`` of vector ``k`` is channel ``16L + 4k + j`` of the block)."""
    C, KH, KW = w.shape[:3]
    B = 4 * n
    NB = -(-C // B)
    wt = np.zeros((NB * B, 4, KW), np.int8)
    wt[:C, :KH] = w[..., 0]
    blk = wt.reshape(NB, n // 4, 4, 4, 4, KW)  # [NB][L][k][j][row][kw]
    return np.ascontiguousarray(blk.transpose(0, 5, 2, 1, 3, 4)).reshape(-1)  # [NB][kw][k][L][j][row]


def _tr_order(v: np.ndarray, n: int) -> np.ndarray:
    """Per-channel vector (padded to blocks of 4n) in ``ivtr``'s order ``[block][k][L][j]``."""
    return np.ascontiguousarray(v.reshape(-1, n // 4, 4, 4).transpose(0, 2, 1, 3)).reshape(-1)


def pack_depthwise_dot(w: np.ndarray, n: int) -> np.ndarray:
    """``[C, KH, KW, 1]`` weights as ``[ceil(C/4n)][tap][k][4n]`` bytes: byte ``4l + k`` of row ``k`` holds
    channel ``4l + k`` of the block, the other bytes 0."""
    C = w.shape[0]
    T = w.shape[1] * w.shape[2]
    B = 4 * n
    NB = -(-C // B)
    wt = np.zeros((NB * B, T), np.int8)
    wt[:C] = w.reshape(C, T)
    blk = wt.reshape(NB, B, T).transpose(0, 2, 1)  # [NB][T][B]
    out = np.zeros((NB, T, 4, B), np.int8)
    for k in range(4):
        out[:, :, k, k::4] = blk[:, :, k::4]
    return out.reshape(-1)


def _lane_order(v: np.ndarray, n: int) -> np.ndarray:
    """Per-channel vector (zero padded to blocks of 4n) reordered so lane ``l`` of vector ``k`` of a block is
    channel ``4l + k``: ``[block][k][l]``."""
    return np.ascontiguousarray(v.reshape(-1, n, 4).transpose(0, 2, 1)).reshape(-1)


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


def _fast(node: Node) -> bool:
    """Weights, bias and multipliers are constants: they can be packed for the vector kernels."""
    return all(v.is_const for v in node.inputs[1:])


def _depthwise(node: Node, target: Target) -> bool:
    w = node.inputs[1]
    return (_fast(node) and node.attrs["group"] == node.inputs[0].shape[3] == w.shape[0]
            and w.shape[1] * w.shape[2] <= 49)


# QConvNHWC's variants, in the order they are tried: dense (vpdpbusd over 4 input channels), depthwise_col
# (vpdpbusd over 3 vertical taps), depthwise_dot (one vpdpbusd per tap and 16 channels), depthwise (widened
# i32 multiplies: never chosen over depthwise_dot, kept to be forced and compared), generic (any QConvNHWC).
@variant("QConvNHWC", name="qconv_generic", priority=1000)
def gen_generic(node: Node, target: Target) -> list[KernelCall]:
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


@variant("QConvNHWC", name="qconv_dense", priority=10, applies=lambda n, t: _fast(n) and n.attrs["group"] == 1)
def gen_dense(node: Node, target: Target) -> list[KernelCall]:
    n = target.int_width
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
    owlo, owhi = columns_inside(-g["pw"], (g["KW"] - 1) * g["dw"] - g["pw"], g["sw"], W, OW)
    src = dense_source(n, mr, nr, signed_x, g["C"] % 4)
    args = [x, Param(pack_dense(wq, n)), Param(bias.astype(np.int32)), Param(mult), node.outputs[0], g["N"], H, W,
            g["C"], OH, OW, M, g["KH"], g["KW"], g["sh"], g["sw"], g["ph"], g["pw"], g["dh"], g["dw"], MB,
            owlo, owhi, _i32(xzu * 0x01010101), a["y_zero_point"], a["lo"], a["hi"]]
    # output rows in order (a pointwise conv is one row: with one block of channels, its pixels in order)
    one = pointwise and MB == nr
    lag = row_lag(g["N"] * OW if one else g["N"], 1 if one else H, g["C"] if one else W * g["C"], 1 if one else OH,
                  M if one else OW * M, 1 if one else g["sh"], 0 if one else g["ph"])
    return [KernelCall(src, args, note(node), inplace=((0, lag),) if lag < node.outputs[0].type.size else ())]



# -- dense convolution on 16-bit pairs (x86 without VNNI) ------------------------------------------------------
#: (vector registers -> output-channel vectors per tile); the tile's pixels fill the rest of the register file
_I16_NR = {16: 2, 32: 4}


def dense_i16_source(n: int, mr: int, nr: int, byte_weights: bool = False) -> str:
    """``qconv_dense_i16``: the input less its zero point is widened once per call into a zero-padded int16
    scratch ``[N][Hp][Wp][CC]`` (so a padding tap is a zero and every tap is inside), then a tile of ``mr``
    output pixels (consecutive in the whole output plane, across rows) by ``nr`` vectors of ``n`` output
    channels meets, per pair of the window's values, each pixel's broadcast int16 pair and ``nr`` packed
    weight vectors in one ``ivmaddw`` (``vpmaddwd`` + ``vpaddd``: 16 exact multiply-adds per 256-bit
    instruction, where the exact byte ``ivdot`` without VNNI takes two ``vpmaddubsw`` for 32).

    The pairs run over ``G2`` pairs of ``KWL`` runs per kernel row: undilated columns (``KWL = 1``, ``CC = C``)
    make a kernel row's ``KW * C`` values one contiguous run of the scratch, paired whole (a 7x7 stem on one
    channel: 4 pairs per row, not 7 half-empty ones; an odd run's last pair reads one value more, which meets
    a zero weight); dilated columns pair the channels of each tap (``KWL = KW``, ``CC = 2 * ceil(C / 2)``).
    ``byte_weights``: the packed weights are int8 (same layout), widened to the pairs as they are loaded
    (``ivloadsx``: ``vpmovsxbw``), half the bytes to read (``qconv_gemv_i16``)."""
    L = [
        "def kernel(xb, xo, wb, wo, bb, bo, mb, mo, yb, yo, N, H, W, C, OH, OW, M, KH, KW, sh, sw, ph, pw, dh, dw,"
        " Hp, Wp, CC, KWL, G2, MBP, xz, yz, lo, hi, sb, so, pxb, pxo):",
        "    for b in range(N):",
        "        for h in range(Hp):",
        "            ih = h - ph",
        "            for w in range(Wp):",
        "                iw = w - pw",
        "                d = so + ((b * Hp + h) * Wp + w) * CC",
        "                if ih >= 0 and ih < H and iw >= 0 and iw < W:",
        "                    s = xo + ((b * H + ih) * W + iw) * C",
        "                    for c in range(C):",
        "                        sb[U(d + c)] = np.int16(np.int32(xb[U(s + c)]) - xz)",
        "                    for c in range(C, CC):",
        "                        sb[U(d + c)] = np.int16(0)",
        "                else:",
        "                    for c in range(CC):",
        "                        sb[U(d + c)] = np.int16(0)",
        f"    BS = KH * KWL * G2 * {2 * n}",
        "    P = OH * OW",
        "    for q in range(P):  # each output pixel's first input value in an image's scratch (no division per tile)",
        "        r = q // OW",
        "        pxb[U(pxo + q)] = ((r * sh) * Wp + (q - r * OW) * sw) * CC",
        "    for b in range(N):",
        "        pb = so + b * Hp * Wp * CC",
        "        yb0 = yo + b * P * M",
        f"        for jb in range(0, MBP, {nr}):",
        "            wj = wo + jb * BS",
        f"            for p in range(0, P, {mr}):",
    ]
    ind = " " * 16
    for i in range(mr):
        L.append(f"{ind}x{i} = pb + pxb[U(pxo + min(p + {i}, P - 1))]")
    L += [f"{ind}c{i}_{j} = ivload{n}(bb, bo + (jb + {j}) * {n})" for i in range(mr) for j in range(nr)]
    L += [f"{ind}for kh in range(KH):",
          f"{ind}    for kw in range(KWL):",
          f"{ind}        t = (kh * dh * Wp + kw * dw) * CC",
          f"{ind}        wk = wj + (kh * KWL + kw) * G2 * {2 * n}",
          f"{ind}        for g in range(G2):"]
    L += madd_step(ind + " " * 12, n, mr, nr, lambda j: f"wb, wk + g * {2 * n} + {j} * BS",
                   lambda i: f"sb, x{i} + t + 2 * g", load="ivloadsx" if byte_weights else "ivload")
    for i in range(mr):
        L.append(f"{ind}if p + {i} < P:")
        for j in range(nr):
            L += [f"{ind}    if (jb + {j}) * {n} < M:",
                  f"{ind}        ivrqstore{n}(yb, yb0 + (p + {i}) * M + (jb + {j}) * {n}, c{i}_{j}, mb, "
                  f"mo + (jb + {j}) * {n}, yz, lo, hi, M - (jb + {j}) * {n})"]
    return source(L)


def pack_dense_i16(w: np.ndarray, n: int, blocks: int, kwl: int) -> np.ndarray:
    """``[M, KH, KW, C]`` int8 weights as int16 ``[blocks][KH * kwl][G2][n][2]``: per kernel row ``kwl`` runs of
    ``KW / kwl`` taps' channels, each zero padded to ``2 * G2`` values, flat."""
    M, KH, KW, C = w.shape
    run = KW // kwl * C
    G2 = -(-run // 2)
    p = np.zeros((blocks * n, KH * kwl, 2 * G2), np.int16)
    p[:M, :, :run] = w.reshape(M, KH * kwl, run)
    return np.ascontiguousarray(p.reshape(blocks, n, KH * kwl, G2, 2).transpose(0, 2, 3, 1, 4)).reshape(-1)


#: output pixels (all images) from which ``qconv_dense_i16`` is preferred: below, the layer is a GEMV-like
#: read of its weights (a squeeze-excite 1x1 or a classifier on one pixel), where the byte form's half-size
#: weights beat the int16 pairs (mobilenet_v3_small_qstatic's 1-pixel layers: 1.1-1.7 us vs 0.9-1.2 us, its
#: 1024-wide head 31.5 vs 21.1 us; its layers over planes 2.2-5.8 us vs 3.1-7.8 us)
I16_MIN_PIXELS = 4


def _i16_preferred(node: Node, target: Target) -> bool:
    """x86 without a byte dot product instruction (``has_vnni``): 16-bit pairs do twice the exact
    multiply-adds per multiply instruction of the byte form; with VNNI (and on aarch64) the byte form wins."""
    N, OH, OW, _ = node.outputs[0].shape
    return (target.isa == "x86_64" and not target.triple and not has_vnni(target.int_width)
            and N * OH * OW >= I16_MIN_PIXELS)


def _gemv_i16_preferred(node: Node, target: Target) -> bool:
    """x86 without a byte dot product instruction, a layer of fewer than ``I16_MIN_PIXELS`` output pixels
    (a GEMV-like read of its weights: an MLP's fully connected layers, a classifier, a squeeze-excite 1x1)
    of at least ``GEMV_MIN_MACS`` multiply-adds per pixel."""
    N, OH, OW, M = node.outputs[0].shape
    return (target.isa == "x86_64" and not target.triple and not has_vnni(target.int_width)
            and N * OH * OW < I16_MIN_PIXELS and M * node.inputs[1].const[0].size >= GEMV_MIN_MACS)


#: at most this many channel vectors per tile of ``qconv_gemv_i16`` (one pixel: the register file holds the
#: accumulators; anomaly int8, whole schedule: 2 -> 6.5 us, 4 -> 6.2, 8 -> 5.9; qconv_dense 8.3)
GEMV_NR = 8
#: multiply-adds per output pixel from which ``qconv_gemv_i16`` is preferred to ``qconv_dense``: below, its
#: fixed costs (the input widened into its scratch, one more tile of bias loads) outweigh the faster loop
#: (``benchmarks/qgemv.py``: 100->37 and smaller 0.69-0.93x of qconv_dense's speed, 128->128 1.05x,
#: 576->144 1.33x, 1024->1000 1.82x)
GEMV_MIN_MACS = 8192


@variant("QConvNHWC", name="qconv_dense_i16", priority=5,
         applies=lambda n, t: _fast(n) and n.attrs["group"] == 1
         and (t.forced.get("QConvNHWC") == "qconv_dense_i16" or _i16_preferred(n, t)))
def gen_dense_i16(node: Node, target: Target, byte_weights: bool = False) -> list[KernelCall]:
    g, a, n = _geometry(node), node.attrs, target.int_width
    x, w, b, m = node.inputs
    M = g["M"]
    MB = -(-M // n)
    pointwise = g["KH"] == g["KW"] == 1 and g["sh"] == g["sw"] == 1 and not any(a["pads"])
    if byte_weights:  # every pixel of the (1-3 pixel) plane in the tile, GEMV_NR accumulators at most, the
        # widest tile of as many channel vectors, fewest padded vectors first
        mr = min(3, g["OH"] * g["OW"] * (g["N"] if pointwise else 1))
        nr = min(range(1, min(max(1, GEMV_NR // mr), MB) + 1), key=lambda d: (-(-MB // d) * d, -d))
    else:
        nr = min(_I16_NR.get(target.vector_registers, 2), MB)
        mr = min(8, (target.vector_registers - nr - 1) // nr)  # (a taller tile of one vector adds code, no reuse)
    MBP = -(-MB // nr) * nr
    bias = np.zeros(MBP * n, np.int32)
    bias[:M] = b.const
    mult = np.zeros(MBP * n, np.float32)
    mult[:M] = m.const
    H, W, OH, OW = g["H"], g["W"], g["OH"], g["OW"]
    NB = g["N"]
    if pointwise:  # every image's plane is one long row of pixels (a Gemm's rows too)
        NB, H, W, OH, OW = 1, 1, NB * H * W, 1, NB * OH * OW
    mr = min(mr, OH * OW)  # no tile taller than the plane (a GEMV: one pixel)
    ph, pw = (0, 0) if pointwise else (g["ph"], g["pw"])
    # rows / columns of the padded scratch: every tap of every output pixel inside
    Hp = max(ph + H, (OH - 1) * g["sh"] + (g["KH"] - 1) * g["dh"] + 1)
    Wp = max(pw + W, (OW - 1) * g["sw"] + (g["KW"] - 1) * g["dw"] + 1)
    C, KW = g["C"], g["KW"]
    kwl = KW if g["dw"] > 1 else 1  # undilated: a kernel row's taps are one contiguous run of the scratch
    CC = 2 * -(-C // 2) if kwl > 1 else C
    G2 = -(-(KW // kwl * C) // 2)
    wp = pack_dense_i16(w.const, n, MBP, kwl)
    args = [x, Param(wp.astype(np.int8) if byte_weights else wp), Param(bias), Param(mult), node.outputs[0], NB, H,
            W, C, OH, OW, M, g["KH"], KW, g["sh"], g["sw"], ph, pw, g["dh"], g["dw"], Hp, Wp, CC, kwl, G2, MBP,
            a["x_zero_point"], a["y_zero_point"], a["lo"], a["hi"],
            Scratch(NB * Hp * Wp * CC + 2, np.dtype(np.int16)),  # + the odd run's last read
            Scratch(OH * OW, np.dtype(np.int64))]
    return [KernelCall(dense_i16_source(n, mr, nr, byte_weights), args, note(node))]


@variant("QConvNHWC", name="qconv_gemv_i16", priority=7,
         applies=lambda n, t: _fast(n) and n.attrs["group"] == 1
         and (t.forced.get("QConvNHWC") == "qconv_gemv_i16" or _gemv_i16_preferred(n, t)))
def gen_gemv_i16(node: Node, target: Target) -> list[KernelCall]:
    """``qconv_dense_i16`` on int8 weights widened as they are loaded (``dense_i16_source``'s
    ``byte_weights``), ``GEMV_NR`` channel vectors per tile: on a layer of a few pixels each weight is read
    once per call, so the int8 weights keep the byte form's read (half the int16 pairs') while each 16 exact
    multiply-adds take one ``vpmaddwd`` (the byte form without VNNI: two ``vpmaddubsw`` and two ``vpmaddwd``
    per 32)."""
    return gen_dense_i16(node, target, byte_weights=True)


def _block_width(C: int, n: int) -> int:
    """Vector width for blocks of ``4n`` channels: 8 instead of 16 when C <= 32 (one block either way; a
    256-bit ``vpdpbusd`` costs half a 512-bit one on cores that split 512-bit operations, Zen 4). With more
    blocks the per-pixel work (requantisation, transposes, addressing) outweighs the wasted lanes of a
    partial 64-channel block (measured: C = 96 and 144 are slower in 32-channel blocks)."""
    if n == 16 and has_vnni(8) and C <= 32:
        return 8
    return n


def _depthwise_constants(node: Node, C: int, T: int, B: int) -> tuple[bool, int, np.ndarray, np.ndarray]:
    """Whether x is int8, x's zero point in the u8 domain, and the bias (with the zero point's share of
    the weights folded in) and multipliers padded to whole blocks of ``B`` channels."""
    x, w, b, m = node.inputs
    signed_x = x.dtype == np.int8
    xzu = node.attrs["x_zero_point"] + (128 if signed_x else 0)
    Cp = -(-C // B) * B
    bias = np.zeros(Cp, np.int64)
    bias[:C] = b.const.astype(np.int64) - xzu * w.const.reshape(C, T).astype(np.int64).sum(1)
    mult = np.zeros(Cp, np.float32)
    mult[:C] = m.const
    return signed_x, xzu, bias, mult


@variant("QConvNHWC", name="qconv_depthwise_col", priority=20,
         applies=lambda n, t: (_depthwise(n, t) and n.inputs[1].shape[1] <= 4 and n.attrs["dilations"][1] == 1
                               and t.int_width % 4 == 0))
def gen_depthwise_col(node: Node, target: Target) -> list[KernelCall]:
    n = target.int_width
    x, w = node.inputs[:2]
    a = node.attrs
    g = _geometry(node)
    C = g["C"]
    n = _block_width(C, n)
    signed_x, xzu, bias, mult = _depthwise_constants(node, C, g["KH"] * g["KW"], 4 * n)
    src = depthwise_col_source(n, g["KH"], g["KW"], g["sw"], signed_x)
    args = [x, Param(pack_depthwise_col(w.const, n)), Param(_tr_order(bias.astype(np.int32), n)),
            Param(_tr_order(mult, n)), node.outputs[0], g["N"], g["H"], g["W"], C, g["OH"], g["OW"], g["sh"],
            g["ph"], g["pw"], g["dh"], _i32(xzu * 0x01010101), a["y_zero_point"], a["lo"], a["hi"]]
    return [KernelCall(src, args, note(node))]


@variant("QConvNHWC", name="qconv_depthwise_dot", priority=30, applies=lambda n, t: _depthwise(n, t))
def gen_depthwise_dot(node: Node, target: Target) -> list[KernelCall]:
    n = target.int_width
    x, w = node.inputs[:2]
    a = node.attrs
    g = _geometry(node)
    C = g["C"]
    signed_x, xzu, bias, mult = _depthwise_constants(node, C, g["KH"] * g["KW"], 4 * n)
    owlo, owhi = columns_inside(-g["pw"], (g["KW"] - 1) * g["dw"] - g["pw"], g["sw"], g["W"], g["OW"])
    src = depthwise_dot_source(n, g["KH"], g["KW"], signed_x)
    args = [x, Param(pack_depthwise_dot(w.const, n)), Param(_lane_order(bias.astype(np.int32), n)),
            Param(_lane_order(mult, n)), node.outputs[0], g["N"], g["H"], g["W"], C, g["OH"], g["OW"], g["sh"],
            g["sw"], g["ph"], g["pw"], g["dh"], g["dw"], owlo, owhi, _i32(xzu * 0x01010101),
            a["y_zero_point"], a["lo"], a["hi"]]
    return [KernelCall(src, args, note(node))]


@variant("QConvNHWC", name="qconv_depthwise", priority=40, applies=lambda n, t: _depthwise(n, t))
def gen_depthwise(node: Node, target: Target) -> list[KernelCall]:
    n = target.int_width
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


@variant("QAdd")
def gen_qadd(node: Node, target: Target) -> list[KernelCall]:
    a = node.attrs
    x, y = node.inputs
    same = x.shape == y.shape == node.outputs[0].shape
    # element i of the output depends on element i of each input only: either may be written over in place
    return [KernelCall(QADD_SRC, [x, y, node.outputs[0], x.type.size, float(np.float32(a["ra"])),
                                  float(np.float32(a["rb"])), float(qadd_fixed(a)), float(a["lo"]), float(a["hi"])],
                       note(node), inplace=((0, 0), (1, 0)) if same else ())]



def simd_qadd_source(n: int) -> str:
    """``QADD_SRC`` a vector of ``n`` elements at a time: ``ivdq`` with zero point 0 and scale 1 widens the
    bytes to float32 exactly, the products and the sum round to float32 one step at a time as the scalar
    kernel does (``vmul`` / ``vadd``: no fused multiply-add), and ``ivq`` with scale 1 and zero point 0 clamps
    to ``[lo, hi]`` and rounds half to even (clamping before rounding equals it after: integer bounds)."""
    def step(tail: bool) -> list[str]:
        d, q, r = ("ivdqn", "ivqn", ", r") if tail else ("ivdq", "ivq", "")
        return [f"v = vadd{n}(vadd{n}(fx, vmul{n}({d}{n}(ab, ao + j, 0, one{r}), ra32)),"
                f" vmul{n}({d}{n}(bb, bo + j, 0, one{r}), rb32))",
                f"{q}{n}(yb, yo + j, v, one, 0, lo, hi{r})"]

    return source([
        "def kernel(ab, ao, bb, bo, yb, yo, count, ra, rb, fixed, lo, hi):",
        "    one = np.float32(1.0)",
        f"    ra32 = vbcast{n}(np.float32(ra))",
        f"    rb32 = vbcast{n}(np.float32(rb))",
        f"    fx = vbcast{n}(np.float32(fixed))",
        f"    nv = count - count % {n}",
        f"    for j in range(0, nv, {n}):",
        *["        " + t for t in step(False)],
        "    r = count - nv",
        "    if r > 0:",
        "        j = nv",
        *["        " + t for t in step(True)],
    ])


@variant("QAdd", name="simd_qadd", priority=10,
         applies=lambda node, t: node.inputs[0].type.size == node.inputs[1].type.size == node.outputs[0].type.size)
def gen_simd_qadd(node: Node, target: Target) -> list[KernelCall]:
    """``gen_qadd``'s call on the vector kernel (the same arguments, bit for bit the same bytes)."""
    (call,) = gen_qadd(node, target)
    return [KernelCall(simd_qadd_source(target.vector_width), call.args, call.note, inplace=call.inplace)]


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


@variant("QAvgPoolNHWC")
def gen_qavgpool(node: Node, target: Target) -> list[KernelCall]:
    """Float32 taps summed in window order (onnxruntime's float path, see ``cnnjit.ir.ops.qint``)."""
    a = node.attrs
    x, y = node.inputs[0], node.outputs[0]
    N, H, W, C = x.shape
    return [KernelCall(QAVGPOOL_SRC, [x, y, N, H, W, C, y.shape[1], y.shape[2], *a["kernel_shape"], *a["strides"],
                                      a["pads"][0], a["pads"][1], int(a["count_include_pad"]), float(a["x_zero_point"]),
                                      float(a["x_scale"]), float(a["y_scale"]), a["y_zero_point"], a["lo"], a["hi"]],
                       note(node))]
