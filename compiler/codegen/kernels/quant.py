"""Kernels for QuantizeLinear, ConvInteger / QLinearConv and MatMulInteger / QLinearMatMul.

Scales and zero points are read from buffers (they may be run-time inputs). Integer products accumulate
exactly in int64 and are wrapped to int32 at the end, which equals int32 (two's complement) accumulation.
Requantisation evaluates ``round_half_even(float32(acc) * float32(x_scale * w_scale / y_scale))`` with every
step rounded to float32 (as the IR reference does), then adds the zero point and saturates.
These are correct, simple kernels (direct loops); fast integer kernels are separate work.
"""

from __future__ import annotations

import numpy as np

from cnnjit.ir import Node, Value
from cnnjit.ir.ops.quant import QUANT_RANGES, matmul_qparam, qrange
from cnnjit.ir.types import DTYPES

from ..kernel import KernelCall, Param, Target, note, variant
from .epilogue import int32_store, requantize
from .spatial import TAPS3, window3d
from .template import Template, bind, clipped_loops

#: element ``i`` of a tensor and its quantisation parameters ``k`` (per tensor, per axis or blocked: see
#: ``qparam_layout``); ``BODY`` maps ``xb[xo + i]`` to ``yb[yo + i]``
QPARAM_LOOP = Template('''
def kernel(xb, xo, sb, so, zb, zo, yb, yo, outer, C, inner, B, s_o, s_c, s_t{PARAMS}):
    i = 0
    for o in range(outer):
        for c in range(C):
            q = o * s_o + (c // B) * s_c
            for t in range(inner):
                k = q + t * s_t
{BODY}
                i += 1
''')
_QUANT_BODY = '''                v = np.rint({FT}({FT}(xb[xo + i]) / {FT}(sb[so + k]))) + np.float64(zb[zo + k])
                v = min(max(v, lo), hi)
                yb[yo + i] = np.int64(v)'''

#: ``FT``: the float type the division runs in
QUANT_SRC = Template(QPARAM_LOOP.fill(PARAMS=", lo, hi", BODY=_QUANT_BODY))


def qparam_layout(x: Value, scale: Value, axis: int, block: int) -> list[int]:
    """``QPARAM_LOOP``'s ``outer, C, inner, B, s_o, s_c, s_t`` for ``x`` with quantisation parameters of
    ``scale``'s shape (one for all, one per index of ``axis``, or per ``block`` indices of it)."""
    if scale.type.size == 1 and not block:  # per tensor
        return [1, 1, int(np.prod(x.shape, dtype=np.int64)), 1, 0, 0, 0]
    outer = int(np.prod(x.shape[:axis], dtype=np.int64))
    C = x.shape[axis]
    inner = int(np.prod(x.shape[axis + 1:], dtype=np.int64))
    if block:  # scale has x's rank, with ceil(C / B) entries on the axis
        return [outer, C, inner, block, scale.shape[axis] * inner, inner, 1]
    return [outer, C, inner, 1, 0, 1, 0]

#: the float type the division runs in -> its name in kernel source (our own table, never model text)
_FLOAT_NAMES = {np.dtype(np.float32): "np.float32", np.dtype(np.float64): "np.float64"}


@variant("QuantizeLinear")
def gen_quantize(node: Node, target: Target) -> list[KernelCall]:
    x, scale = node.inputs[0], node.inputs[1]
    zp = node.inputs[2] if len(node.inputs) > 2 else None
    a = node.attrs
    y = node.outputs[0]
    if zp is None:
        zp = Param(np.zeros(scale.type.size, y.dtype))
    ft = DTYPES[a["precision"]] if a["precision"] else np.result_type(x.dtype, scale.dtype)
    fname = _FLOAT_NAMES.get(np.dtype(ft), "np.float64")
    shape_args = qparam_layout(x, scale, a["axis"], int(a["block_size"]))
    lo, hi = QUANT_RANGES[a["dtype"]]
    src = QUANT_SRC.fill(FT=fname)
    return [KernelCall(src, [x, scale, zp, y, *shape_args, float(lo), float(hi)], note(node))]


# -- convolutions ------------------------------------------------------------------------------------------
CONV_INT_SRC = Template('''
def kernel(xb, xo, wb, wo, xzb, xzo, wzb, wzo, yb, yo, N, C, D, H, W, M, OD, OH, OW, KD, KH, KW,
           sd, sh, sw, pd, ph, pw, dd, dh, dw, G, swz{params}):
    cg = C // G
    mg = M // G
    ksz = KD * KH * KW
    isp = D * H * W
    xz = np.int64(xzb[xzo])
    y = yo
    for n in range(N):
        for m in range(M):
            g = m // mg
            wz = np.int64(wzb[wzo + m * swz])
{prologue}
            for od in range(OD):
                for oh in range(OH):
                    for ow in range(OW):
                        acc = 0
                        for c in range(cg):
                            xbase = xo + (n * C + g * cg + c) * isp
                            wbase = wo + (m * cg + c) * ksz
{TAPS}
                                        acc += (np.int64(xb[xrow + iw]) - xz) * (np.int64(wb[wrow + kw]) - wz)
{epilogue}
                        y += 1
''', TAPS=clipped_loops(" " * 28, *TAPS3[:2]) + "\n"
    + "\n".join(" " * 36 + ln for ln in ("xrow = xbase + (idd * H + ih) * W", "wrow = wbase + (kd * KH + kh) * KW"))
    + "\n" + clipped_loops(" " * 36, TAPS3[2]))

_QLINEAR_PARAMS = ", xsb, xso, wsb, wso, ysb, yso, yzb, yzo, bb, bo, sws, has_bias, lo, hi"
_QLINEAR_PROLOGUE = '''            mult = np.float32(np.float32(np.float32(xsb[xso]) * np.float32(wsb[wso + m * sws]))
                              / np.float32(ysb[yso]))
            yz = np.float64(yzb[yzo])
            bias = np.int64(bb[bo + m]) if has_bias else 0'''
_QLINEAR_EPILOGUE = "                        acc32 = np.int32(acc + bias)\n" + requantize(" " * 24, "acc32")

CONV_INTEGER_SRC = CONV_INT_SRC.fill(params="", prologue="            pass", epilogue=int32_store(" " * 24))
QLINEAR_CONV_SRC = CONV_INT_SRC.fill(params=_QLINEAR_PARAMS, prologue=_QLINEAR_PROLOGUE, epilogue=_QLINEAR_EPILOGUE)


def _conv_args(node: Node, x: Value, w: Value, xz: Value, wz: Value) -> dict:
    """The integer convolutions' arguments by parameter name (``CONV_INT_SRC``)."""
    return dict(x=x, w=w, xz=xz, wz=wz, y=node.outputs[0], N=x.shape[0], C=x.shape[1], M=w.shape[0],
                G=int(node.attrs["group"]), swz=1 if wz.type.size > 1 else 0, **window3d(node))


@variant("ConvInteger", applies=lambda node, t: not node.attrs.get("saturate"))
def gen_conv_integer(node: Node, target: Target) -> list[KernelCall]:
    x, w, xz, wz = node.inputs
    return [KernelCall(CONV_INTEGER_SRC, bind(CONV_INTEGER_SRC, **_conv_args(node, x, w, xz, wz)), note(node))]


@variant("QLinearConv")
def gen_qlinear_conv(node: Node, target: Target) -> list[KernelCall]:
    x, xs, xz, w, ws, wz, ys, yz = node.inputs[:8]
    b = node.inputs[8] if len(node.inputs) > 8 else None
    y = node.outputs[0]
    lo, hi = qrange(y.dtype)
    bias = b if b is not None else Param(np.zeros(1, np.int32))
    args = bind(QLINEAR_CONV_SRC, xs=xs, ws=ws, ys=ys, yz=yz, b=bias, sws=1 if ws.type.size > 1 else 0,
                has_bias=int(b is not None), lo=float(lo), hi=float(hi), **_conv_args(node, x, w, xz, wz))
    return [KernelCall(QLINEAR_CONV_SRC, args, note(node))]


# -- matrix products ---------------------------------------------------------------------------------------
MATMUL_INT_SRC = Template('''
def kernel(ab, ao, bb, bo, azb, azo, bzb, bzo, yb, yo, ofs, ofo, nbatch, M, N, K, saz, sbz{params}):
    for t in range(nbatch):
        a0 = ao + ofs[ofo + 4 * t]
        b0 = bo + ofs[ofo + 4 * t + 1]
        za0 = azo + ofs[ofo + 4 * t + 2]
        zb0 = bzo + ofs[ofo + 4 * t + 3]
        y = yo + t * M * N
        for m in range(M):
            za = np.int64(azb[za0 + m * saz])
{prologue}
            for n in range(N):
                zb = np.int64(bzb[zb0 + n * sbz])
                acc = 0
                for k in range(K):
                    acc += (np.int64(ab[a0 + m * K + k]) - za) * (np.int64(bb[b0 + k * N + n]) - zb)
{epilogue}
                y += 1
''')

_MM_QPARAMS = ", asb, aso, bsb, bso, ysb, yso, yzb, yzo, sas, sbs, sys, syz, lo, hi"
_MM_QPROLOGUE = '''            sa = np.float32(asb[aso + m * sas])
            sy = np.float32(ysb[yso + m * sys])
            yz = np.float64(yzb[yzo + m * syz])'''
_MM_QEPILOGUE = ("                mult = np.float32(np.float32(sa * np.float32(bsb[bso + n * sbs])) / sy)\n"
                 + requantize(" " * 16, "np.int32(acc)"))

MATMUL_INTEGER_SRC = MATMUL_INT_SRC.fill(params="", prologue="            pass", epilogue=int32_store(" " * 16))
QLINEAR_MATMUL_SRC = MATMUL_INT_SRC.fill(params=_MM_QPARAMS, prologue=_MM_QPROLOGUE, epilogue=_MM_QEPILOGUE)


def _batch_offsets(shape: tuple[int, ...], batch: tuple[int, ...], mat: int) -> np.ndarray:
    """Element offset of each output batch's matrix inside a (broadcast) operand of ``shape``."""
    bshape = shape[:-2]
    ids = np.arange(int(np.prod(bshape, dtype=np.int64)) if bshape else 1).reshape(bshape or ())
    return np.broadcast_to(ids, batch).reshape(-1) * mat


def _mm_layout(node: Node, A, B, az, bz) -> tuple[list, tuple[int, ...]]:
    a_shape = (1,) + A.shape if len(A.shape) == 1 else A.shape
    b_shape = B.shape + (1,) if len(B.shape) == 1 else B.shape
    M, K = a_shape[-2:]
    N = b_shape[-1]
    batch = tuple(int(d) for d in np.broadcast_shapes(a_shape[:-2], b_shape[:-2]))
    nb = int(np.prod(batch, dtype=np.int64)) if batch else 1
    offs = np.zeros((nb, 4), np.int64)
    offs[:, 0] = _batch_offsets(a_shape, batch, M * K)
    offs[:, 1] = _batch_offsets(b_shape, batch, K * N)
    za = matmul_qparam(az, A.shape, "a")
    zb = matmul_qparam(bz, B.shape, "b")
    saz = sbz = 0
    if za:
        offs[:, 2] = _batch_offsets(za, batch, za[-2]) if len(za) > 2 else 0
        saz = 1 if za[-2] > 1 else 0
    if zb:
        offs[:, 3] = _batch_offsets(zb, batch, zb[-1]) if len(zb) > 2 else 0
        sbz = 1 if zb[-1] > 1 else 0
    return [A, B, az, bz, node.outputs[0], Param(offs.reshape(-1)), nb, M, N, K, saz, sbz], batch


@variant("MatMulInteger")
def gen_matmul_integer(node: Node, target: Target) -> list[KernelCall]:
    A, B, az, bz = node.inputs
    args, _ = _mm_layout(node, A, B, az, bz)
    return [KernelCall(MATMUL_INTEGER_SRC, args, note(node))]


@variant("QLinearMatMul")
def gen_qlinear_matmul(node: Node, target: Target) -> list[KernelCall]:
    A, as_, az, B, bs, bz, ys, yz = node.inputs
    args, _ = _mm_layout(node, A, B, az, bz)
    lo, hi = qrange(node.outputs[0].dtype)

    def per(v) -> int:  # per-row / per-column parameters are 1-D here (QLinearMatMul allows rank <= 1)
        return 1 if v.type.size > 1 else 0

    args += [as_, bs, ys, yz, per(as_), per(bs), per(ys), per(yz), float(lo), float(hi)]
    return [KernelCall(QLINEAR_MATMUL_SRC, args, note(node))]


# -- DynamicQuantizeLinear ---------------------------------------------------------------------------------
def dynamic_qparams(scale: str, zp: str, indent: str) -> str:
    """Kernel lines setting ``scale`` and ``zp`` (float32, an exact integer in [0, 255]) from the float32
    locals ``lo`` <= 0 <= ``hi``: onnxruntime's ``GetQuantizationParameter`` for uint8, in float32 like the
    reference. DynamicQuantizeLinear and the DynamicQuantizeLSTM state quantisation both use it."""
    return (f"{indent}{scale} = np.float32(1.0) if hi == lo else np.float32(np.float32(hi - lo) / np.float32(255.0))\n"
            f"{indent}{zp} = np.float32(np.rint(min(max(np.float32(np.float32(0.0) - np.float32(lo / {scale})), "
            f"np.float32(0.0)),\n{indent}    np.float32(255.0))))")


DYNAMIC_QUANT_SRC = f'''
def kernel(xb, xo, yb, yo, sb, so, zb, zo, n):
    lo = np.float32(0.0)
    hi = np.float32(0.0)
    for i in range(n):
        v = xb[U(xo + i)]
        lo = min(lo, v)
        hi = max(hi, v)
{dynamic_qparams("scale", "zp", "    ")}
    sb[so] = scale
    zb[zo] = np.uint8(zp)
    for i in range(n):
        q = np.rint(np.float32(xb[U(xo + i)] / scale)) + zp
        yb[U(yo + i)] = np.uint8(min(max(q, np.float32(0.0)), np.float32(255.0)))
'''


@variant("DynamicQuantizeLinear")
def gen_dynamic_quantize(node: Node, target: Target) -> list[KernelCall]:
    """One pass for the range, one to quantise (parameters computed in float32, like the reference)."""
    x = node.inputs[0]
    y, s, z = node.outputs
    return [KernelCall(DYNAMIC_QUANT_SRC, [x, y, s, z, x.type.size], note(node))]
