"""LayerNormalization as one vectorised kernel: per row of ``L`` normalized elements, the mean and the
variance (two passes over the row, in vectors of the target's width, while the row is in L1) and then
``(x - mean) * (scale / sqrt(var + eps)) + bias`` in one fused multiply-add per vector."""

from __future__ import annotations

import numpy as np

from cnnjit.ir import Node, Value

from ..kernel import KernelCall, Param, Target, note, variant
from .template import source


def layernorm_source(w: int) -> str:
    """The kernel at vector width ``w``: full vectors, then a masked tail (a scalar tail for the variance,
    where a masked lane would add ``mean**2``)."""
    return source([
        "def kernel(xb, xo, sb, so, bb, bo, yb, yo, R, L, eps):",
        "    for r in range(R):",
        "        x0 = xo + r * L",
        "        y0 = yo + r * L",
        f"        acc = vzero{w}()",
        "        j = 0",
        f"        while j + {w} <= L:",
        f"            acc = vadd{w}(acc, vload{w}(xb, x0 + j))",
        f"            j += {w}",
        "        if j < L:",
        f"            acc = vadd{w}(acc, vloadn{w}(xb, x0 + j, L - j))",
        f"        mean = vhsum{w}(acc) / L",
        f"        nm = vbcast{w}(-mean)",
        f"        acc = vzero{w}()",
        "        j = 0",
        f"        while j + {w} <= L:",
        f"            d = vadd{w}(vload{w}(xb, x0 + j), nm)",
        f"            acc = vfma{w}(d, d, acc)",
        f"            j += {w}",
        f"        var = vhsum{w}(acc)",
        "        for t in range(j, L):",
        "            e = xb[U(x0 + t)] - mean",
        "            var += e * e",
        "        inv = vbcast{w}(1.0 / math.sqrt(var / L + eps))".replace("{w}", str(w)),
        "        j = 0",
        f"        while j + {w} <= L:",
        f"            d = vmul{w}(vadd{w}(vload{w}(xb, x0 + j), nm), inv)",
        f"            vstore{w}(yb, y0 + j, vfma{w}(d, vload{w}(sb, so + j), vload{w}(bb, bo + j)))",
        f"            j += {w}",
        "        if j < L:",
        "            c = L - j",
        f"            d = vmul{w}(vadd{w}(vloadn{w}(xb, x0 + j, c), nm), inv)",
        f"            vstoren{w}(yb, y0 + j, vfma{w}(d, vloadn{w}(sb, so + j, c), vloadn{w}(bb, bo + j, c)), c)",
    ])


def _row_operand(v: Value | None, norm: tuple[int, ...], dtype: np.dtype, fill: float) -> Value | Param:
    """Scale or bias as ``L`` contiguous elements: a run-time value of the normalized shape as it is, a
    constant broadcast at compile time, an absent bias as zeros."""
    if v is None:
        return Param(np.full(int(np.prod(norm, dtype=np.int64)), fill, dtype))
    if v.is_const:
        return Param(np.ascontiguousarray(np.broadcast_to(v.const, norm).reshape(-1), dtype))
    return v


@variant("LayerNormalization", name="layernorm")
def gen_layernorm(node: Node, target: Target) -> list[KernelCall]:
    x, y = node.inputs[0], node.outputs[0]
    axis = node.attrs["axis"]
    norm = tuple(x.shape[axis:])
    R = int(np.prod(x.shape[:axis], dtype=np.int64))
    L = int(np.prod(norm, dtype=np.int64))
    w = target.vector_width
    scale = _row_operand(node.inputs[1], norm, x.dtype, 1.0)
    bias = _row_operand(node.inputs[2] if len(node.inputs) > 2 else None, norm, x.dtype, 0.0)
    return [KernelCall(layernorm_source(w), [x, scale, bias, y, R, L, float(node.attrs["epsilon"])], note(node))]
