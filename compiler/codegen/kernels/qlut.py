"""The kernel for QLut: a per-channel (or per-tensor) byte-to-byte table lookup.

``QLut`` is what the ``qdq_lut`` pass makes of a quantized elementwise chain (``DequantizeLinear ->
BatchNormalization / HardSwish / ... -> QuantizeLinear``): one byte load, one table load and one byte store
per element instead of a float dequantize, a float op and a float quantize. With ``C`` rows the table row is
the index along the channel axis (``outer x C x inner`` loop); one row is the ``C = 1`` case.
"""

from __future__ import annotations

import numpy as np

from cnnjit.ir import Node

from ..kernel import KernelCall, Target, note, variant

QLUT_SRC = '''
def kernel(xb, xo, tb, to, yb, yo, outer, C, inner, rs):
    i = 0
    for o in range(outer):
        for c in range(C):
            base = to + c * rs
            for t in range(inner):
                yb[U(yo + i)] = tb[U(base + (np.int32(xb[U(xo + i)]) & 255))]
                i += 1
'''


@variant("QLut")
def gen_qlut(node: Node, target: Target) -> list[KernelCall]:
    x, table = node.inputs
    ax = node.attrs["axis"]
    if table.shape[0] == 1:
        outer, C, inner, rs = 1, 1, x.type.size, 0
    else:
        outer = int(np.prod(x.shape[:ax], dtype=np.int64))
        C, inner, rs = x.shape[ax], int(np.prod(x.shape[ax + 1:], dtype=np.int64)), 256
    return [KernelCall(QLUT_SRC, [x, table, node.outputs[0], outer, C, inner, rs], note(node))]


QCMUL_SRC = '''
def kernel(xb, xo, sb, so, xtb, xto, stb, sto, yb, yo, N, P, C, ys, yz, lo, hi):
    ys32 = np.float32(ys)
    i = 0
    for b in range(N):
        for p in range(P):
            for c in range(C):
                g = stb[U(sto + (np.int32(sb[U(so + b * C + c)]) & 255))]
                v = np.float32(xtb[U(xto + (np.int32(xb[U(xo + i)]) & 255))] * g)
                q = np.float64(np.rint(np.float32(v / ys32))) + yz
                yb[U(yo + i)] = np.int32(min(max(q, lo), hi))
                i += 1
'''


@variant("QChannelMulNHWC")
def gen_qchannel_mul(node: Node, target: Target) -> list[KernelCall]:
    x, s, xt, st = node.inputs
    a = node.attrs
    N, H, W, C = x.shape
    return [KernelCall(QCMUL_SRC, [x, s, xt, st, node.outputs[0], N, H * W, C, float(np.float32(a["y_scale"])),
                                   float(a["y_zero_point"]), float(a["lo"]), float(a["hi"])], note(node))]
