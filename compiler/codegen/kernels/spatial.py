"""Spatial kernels: direct convolution, pooling, global pooling, BatchNorm (as scale-shift), LRN.

1-D and 2-D ops run through the 3-D kernels with unit leading spatial dims. Every output channel is
computed by the same sequence of operations (no special tail path), so equal weights give equal outputs.
"""

from __future__ import annotations

import numpy as np

from cnnjit.ir import Node

from ..kernel import KernelCall, Param, Target, note, variant
from .dense import MATMUL_SRC
from .epilogue import after_kernel, with_epilogue
from .simd_pointwise import is_pointwise
from .template import Template, bind, clipped_loops, tap_columns

#: the taps of a 3-D window inside the input (``clipped_loops``), from output position ``od, oh, ow``
TAPS3 = (("kd", "KD", "idd", "od * sd + kd * dd - pd", "D"), ("kh", "KH", "ih", "oh * sh + kh * dh - ph", "H"),
         ("kw", "KW", "iw", "ow * sw + kw * dw - pw", "W"))


def as3d(shape: tuple[int, ...], fill: int = 1) -> tuple[int, int, int]:
    """A 1-D/2-D spatial tuple as 3-D, with leading unit dims (or zeros, for pads)."""
    sp = tuple(int(v) for v in shape)
    return (fill,) * (3 - len(sp)) + sp


def window3d(node: Node, ends: bool = False) -> dict[str, int]:
    """A window op's sizes by kernel parameter name (1-D/2-D as 3-D): input ``D, H, W``, output
    ``OD, OH, OW``, kernel ``KD, KH, KW``, strides ``sd, sh, sw``, begin pads ``pd, ph, pw``, dilations
    ``dd, dh, dw`` and, with ``ends``, end pads ``ped, peh, pew``."""
    a = node.attrs
    n = len(a["kernel_shape"])
    groups = {"": node.inputs[0].shape[2:], "O": node.outputs[0].shape[2:], "K": a["kernel_shape"]}
    out = {f"{pre}{ax}": v for pre, sizes in groups.items() for ax, v in zip("DHW", as3d(sizes))}
    steps = {"s": a["strides"], "p": a["pads"][:n], "d": a["dilations"]} | ({"pe": a["pads"][n:]} if ends else {})
    for pre, sizes in steps.items():
        out.update({f"{pre}{ax}": v for ax, v in zip("dhw", as3d(sizes, 0 if pre in ("p", "pe") else 1))})
    return out


CONV_SRC = Template('''
def kernel(xb, xo, wb, wo, bb, bo, yb, yo, N, C, D, H, W, M, OD, OH, OW, KD, KH, KW,
           sd, sh, sw, pd, ph, pw, dd, dh, dw, G, has_bias{PARAMS}):
    cg = C // G
    mg = M // G
    osp = OD * OH * OW
    isp = D * H * W
    for n in range(N):
        for m in range(M):
            g = m // mg
            ybase = yo + (n * M + m) * osp
            b = bb[bo + m] if has_bias else 0.0
            for i in range(osp):
                yb[ybase + i] = b
            for c in range(cg):
                xbase = xo + (n * C + g * cg + c) * isp
                wbase = wo + (m * cg + c) * KD * KH * KW
{TAPS}
{ROWS}
                                    yrow = ybase + (od * OH + oh) * OW
                                    xrow = xbase + (idd * H + ih) * W + offw
                                    for ow in range(lo, hi):
                                        yb[U(yrow + ow)] += wv * xb[U(xrow + ow * sw)]
{EPILOGUE}''', TAPS=tap_columns(" " * 16),
    ROWS=clipped_loops(" " * 28, ("od", "OD", "idd", "od * sd + kd * dd - pd", "D"),
                       ("oh", "OH", "ih", "oh * sh + kh * dh - ph", "H")))


# Conv's variants, in the order they are tried (priority): sparse_pointwise (10, CSR weights), channel_pointwise
# (17), packed_fc (18), packed_pointwise (19), cvec_pointwise (20), simd_pointwise (30), pointwise (40),
# depthwise_flat (45), depthwise_lanes (46), depthwise_direct (47), depthwise_direct_s2 (47),
# simd_depthwise_static (48), simd_depthwise_row (49), simd_depthwise (50), cvec (60), simd_conv (70), direct
# (1000: any Conv). Each lives with its kernel template;
# ``cnnjit.compile(variants={"Conv": name})`` forces one.
@variant("Conv", name="direct", priority=1000)
def gen_conv(node: Node, target: Target) -> list[KernelCall]:
    """Any Conv (1-D to 3-D, groups, dilations, pads): the scalar direct convolution."""
    x, w = node.inputs[0], node.inputs[1]
    b = node.inputs[2] if len(node.inputs) > 2 else None
    y = node.outputs[0]
    bias = b if b is not None else Param(np.zeros(1, x.dtype))
    src, res = with_epilogue(CONV_SRC, node, "ybase - yo + i", " " * 12, "osp", "ybase + i")
    args = bind(src, x=x, w=w, b=bias, y=y, N=x.shape[0], C=x.shape[1], M=w.shape[0], G=node.attrs["group"],
                has_bias=int(b is not None), **window3d(node), **res)
    return [KernelCall(src, args, note(node))]


POOL_SRC = '''
def kernel(xb, xo, yb, yo, NC, D, H, W, OD, OH, OW, KD, KH, KW, sd, sh, sw, pd, ph, pw,
           dd, dh, dw, ped, peh, pew, is_max, count_pad):
    isp = D * H * W
    osp = OD * OH * OW
    for nc in range(NC):
        xbase = xo + nc * isp
        y = yo + nc * osp
        for od in range(OD):
            for oh in range(OH):
                for ow in range(OW):
                    acc = -math.inf if is_max else 0.0
                    cnt = 0
                    padcnt = 0
                    for kd in range(KD):
                        idd = od * sd + kd * dd - pd
                        if idd >= D + ped:
                            continue
                        for kh in range(KH):
                            ih = oh * sh + kh * dh - ph
                            if ih >= H + peh:
                                continue
                            for kw in range(KW):
                                iw = ow * sw + kw * dw - pw
                                if iw >= W + pew:
                                    continue
                                padcnt += 1
                                if idd < 0 or idd >= D or ih < 0 or ih >= H or iw < 0 or iw >= W:
                                    continue
                                v = xb[xbase + (idd * H + ih) * W + iw]
                                cnt += 1
                                if is_max:
                                    if v > acc or v != v:
                                        acc = v
                                else:
                                    acc += v
                    if not is_max:
                        div = padcnt if count_pad else cnt
                        acc = acc / div if div > 0 else 0.0
                    yb[y] = acc
                    y += 1
'''


MAXPOOL_INDEX_SRC = Template('''
def kernel(xb, xo, yb, yo, ib, io, NC, D, H, W, OD, OH, OW, KD, KH, KW, sd, sh, sw, pd, ph, pw,
           dd, dh, dw, col_major):
    isp = D * H * W
    osp = OD * OH * OW
    for nc in range(NC):
        xbase = xo + nc * isp
        y = nc * osp
        for od in range(OD):
            for oh in range(OH):
                for ow in range(OW):
                    acc = -math.inf
                    arg = 0
{TAPS}
                                v = xb[xbase + (idd * H + ih) * W + iw]
                                if v > acc:
                                    acc = v
                                    if col_major:
                                        arg = idd + ih * D + iw * D * H
                                    else:
                                        arg = (idd * H + ih) * W + iw
                    yb[yo + y] = acc
                    ib[io + y] = arg + nc * isp
                    y += 1
''', TAPS=clipped_loops(" " * 20, *TAPS3)).fill()


@variant("MaxPool", "AveragePool", name="pool", priority=1000)
def gen_pool(node: Node, target: Target) -> list[KernelCall]:
    """Any MaxPool / AveragePool (with indices, pads counted or not): the scalar window loop."""
    x, y = node.inputs[0], node.outputs[0]
    NC = x.shape[0] * x.shape[1]
    if node.attrs.get("indices"):
        args = bind(MAXPOOL_INDEX_SRC, x=x, y=y, i=node.outputs[1], NC=NC,
                    col_major=int(node.attrs["storage_order"]), **window3d(node))
        return [KernelCall(MAXPOOL_INDEX_SRC, args, note(node))]
    src = after_kernel(POOL_SRC, node, "NC * OD * OH * OW")
    args = bind(src, x=x, y=y, NC=NC, is_max=int(node.op == "MaxPool"),
                count_pad=int(node.attrs.get("count_include_pad", 0)), **window3d(node, ends=True))
    return [KernelCall(src, args, note(node))]


def plane_max_lines(ind: str) -> str:
    """Lines (at indent ``ind``) that store the largest element of the plane ``xb[base : base + S]`` at
    ``yb[yo + nc]`` one element at a time, a NaN element making it NaN (the scalar GlobalMaxPool's rule)."""
    return "".join(f"{ind}{line}\n" for line in ("acc = -math.inf", "for i in range(S):", "    v = xb[base + i]",
                                                 "    if v > acc or v != v:", "        acc = v",
                                                 "yb[yo + nc] = acc"))


GLOBAL_SRC = '''
def kernel(xb, xo, yb, yo, NC, S, is_max):
    for nc in range(NC):
        base = xo + nc * S
        if is_max:
''' + plane_max_lines(" " * 12) + '''        else:
            acc = 0.0
            for i in range(S):
                acc += xb[U(base + i)]
            yb[yo + nc] = acc / S
'''


def global_avg_source(w: int, mean: bool = True) -> str:
    """Mean (``mean``, else sum) of each plane with 4 vector accumulators (a scalar float sum is one long
    dependency chain)."""
    return f'''
def kernel(xb, xo, yb, yo, NC, S):
    for nc in range(NC):
        base = xo + nc * S
        a0 = vzero{w}()
        a1 = vzero{w}()
        a2 = vzero{w}()
        a3 = vzero{w}()
        i = 0
        while i + {4 * w} <= S:
            a0 = vadd{w}(a0, vload{w}(xb, base + i))
            a1 = vadd{w}(a1, vload{w}(xb, base + i + {w}))
            a2 = vadd{w}(a2, vload{w}(xb, base + i + {2 * w}))
            a3 = vadd{w}(a3, vload{w}(xb, base + i + {3 * w}))
            i += {4 * w}
        while i < S:
            a0 = vadd{w}(a0, vloadn{w}(xb, base + i, S - i))
            i += {w}
        yb[yo + nc] = vhsum{w}(vadd{w}(vadd{w}(a0, a1), vadd{w}(a2, a3))){' / S' if mean else ''}
'''


def plane_width(S: int, target: Target) -> int:
    """The vector width for sums over planes of ``S`` elements: narrower vectors for short planes (fewer dead
    lanes)."""
    return min(8 if S < 32 else 16, target.vector_width)


def _covers_input(node: Node, target: Target) -> bool:
    """An AveragePool whose one window is the whole unpadded plane: a global average."""
    x, y = node.inputs[0], node.outputs[0]
    a = node.attrs
    return (node.op == "AveragePool" and len(x.shape) >= 3 and tuple(a["kernel_shape"]) == tuple(x.shape[2:])
            and not any(a["pads"]) and all(d == 1 for d in y.shape[2:]))


@variant("GlobalAveragePool", "GlobalMaxPool")
@variant("AveragePool", name="global_pool", priority=10, applies=_covers_input)
def gen_global_pool(node: Node, target: Target) -> list[KernelCall]:
    x = node.inputs[0]
    S = int(np.prod(x.shape[2:], dtype=np.int64))
    if node.op != "GlobalMaxPool" and x.dtype == np.float32:
        w = plane_width(S, target)
        return [KernelCall(after_kernel(global_avg_source(w), node, "NC"),
                           [x, node.outputs[0], x.shape[0] * x.shape[1], S], note(node))]
    return [KernelCall(after_kernel(GLOBAL_SRC, node, "NC"), [x, node.outputs[0], x.shape[0] * x.shape[1], S,
                                                             int(node.op == "GlobalMaxPool")], note(node))]


SCALE_SHIFT_SRC = '''
def kernel(xb, xo, sb, so, tb, to, yb, yo, N, C, S):
    i = 0
    for n in range(N):
        for c in range(C):
            a = sb[so + c]
            b = tb[to + c]
            for j in range(S):
                yb[U(yo + i)] = xb[U(xo + i)] * a + b
                i += 1
'''


BN_SRC = '''
def kernel(xb, xo, sb, so, bb, bo, mb, mo, vb, vo, yb, yo, N, C, S, eps):
    i = 0
    for n in range(N):
        for c in range(C):
            a = sb[so + c] / math.sqrt(vb[vo + c] + eps)
            b = bb[bo + c] - mb[mo + c] * a
            for j in range(S):
                yb[U(yo + i)] = xb[U(xo + i)] * a + b
                i += 1
'''


@variant("BatchNormalization")
def gen_batchnorm(node: Node, target: Target) -> list[KernelCall]:
    x = node.inputs[0]
    N, C = x.shape[0], x.shape[1]
    S = int(np.prod(x.shape[2:], dtype=np.int64))
    if not all(v.is_const for v in node.inputs[1:]):  # parameters given at run time
        return [KernelCall(BN_SRC, [*node.inputs, node.outputs[0], N, C, S, float(node.attrs["epsilon"])],
                           note(node))]
    scale, bias, mean, var = (v.const.astype(np.float64) for v in node.inputs[1:])
    a = scale / np.sqrt(var + node.attrs["epsilon"])
    b = bias - mean * a
    return [KernelCall(SCALE_SHIFT_SRC, [x, Param(a.astype(x.dtype)), Param(b.astype(x.dtype)),
                                         node.outputs[0], N, C, S], note(node))]


LRN_SRC = '''
def kernel(xb, xo, yb, yo, N, C, S, lo, hi, alpha_over_size, beta, bias):
    for n in range(N):
        for c in range(C):
            c0 = max(0, c - lo)
            c1 = min(C - 1, c + hi)
            for j in range(S):
                acc = 0.0
                for cc in range(c0, c1 + 1):
                    v = xb[xo + (n * C + cc) * S + j]
                    acc += v * v
                x = xb[xo + (n * C + c) * S + j]
                yb[yo + (n * C + c) * S + j] = x / (bias + alpha_over_size * acc) ** beta
'''


@variant("LRN")
def gen_lrn(node: Node, target: Target) -> list[KernelCall]:
    x = node.inputs[0]
    a = node.attrs
    size = int(a["size"])
    S = int(np.prod(x.shape[2:], dtype=np.int64))
    args = [x, node.outputs[0], x.shape[0], x.shape[1], S, (size - 1) // 2, size // 2,
            float(a["alpha"]) / size, float(a["beta"]), float(a["bias"])]
    return [KernelCall(LRN_SRC, args, note(node))]


@variant("Conv", name="pointwise", priority=40, applies=lambda n, t: is_pointwise(n))
def gen_pointwise(node: Node, target: Target) -> list[KernelCall]:
    """A 1x1, stride-1, unpadded, ungrouped Conv is a matrix product per image: Y[n] = W @ X[n] + b."""
    x, w = node.inputs[0], node.inputs[1]
    b = node.inputs[2] if len(node.inputs) > 2 else None
    N, C = x.shape[:2]
    M = w.shape[0]
    P = int(np.prod(x.shape[2:], dtype=np.int64))
    offs = np.zeros((N, 2), np.int64)
    offs[:, 1] = np.arange(N) * C * P  # A (the weights) is shared; B walks the images
    bias = b if b is not None else Param(np.zeros(1, x.dtype))
    src, res = with_epilogue(MATMUL_SRC, node, "yr - yo + i", " " * 12, "N", "yr + i")
    args = bind(src, a=w, b=x, c=bias, y=node.outputs[0], of=Param(offs.reshape(-1)), nbatch=N, M=M, N=P, K=C,
                sam=C, sak=1, sbk=P, sbn=1, scm=1, scn=0, alpha=1.0, beta=1.0, has_c=int(b is not None), **res)
    return [KernelCall(src, args, note(node))]
