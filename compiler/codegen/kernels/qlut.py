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
