"""LayerNormalization as one vectorised kernel: per row of ``L`` normalized elements, the mean and the
variance (two passes over the row, in vectors of the target's width, while the row is in L1, reduced as
trees) and then ``(x - mean) * (scale / sqrt(var + eps)) + bias`` in one fused multiply-add per vector;
``ROWS_AT_ONCE`` rows interleaved."""

from __future__ import annotations

import numpy as np

from cnnjit.ir import Node, Value

from ..kernel import KernelCall, Param, Target, note, variant
from .template import source

#: rows normalized at once: each row's mean and variance are chains of dependent vector adds and two
#: reductions, which a short row (a transformer's 64 channels) cannot hide; independent rows interleaved
#: in one loop can (AVX2, 1x64x64: 1.8 -> 1.0 us in the SVTR block)
ROWS_AT_ONCE = 4


def _rows(w: int, rows: int, ind: str) -> list[str]:
    """The three passes over ``rows`` rows from row ``r``: the sum, the squared deviations (a masked
    tail's lanes hold the mean, so they add 0), then ``(x - mean) * inv * scale + bias``."""
    R = range(rows)
    L = [f"x{i} = xo + (r + {i}) * L" for i in R] + [f"y{i} = yo + (r + {i}) * L" for i in R]
    L += [f"a{i} = vzero{w}()" for i in R] + [f"for j in range(0, full, {w}):"]
    L += [f"    a{i} = vadd{w}(a{i}, vload{w}(xb, x{i} + j))" for i in R] + ["if full < L:"]
    L += [f"    a{i} = vadd{w}(a{i}, vloadn{w}(xb, x{i} + full, L - full))" for i in R]
    L += [f"m{i} = vhsumt{w}(a{i}) / L" for i in R] + [f"nm{i} = vbcast{w}(-m{i})" for i in R]
    L += [f"a{i} = vzero{w}()" for i in R] + [f"for j in range(0, full, {w}):"]
    for i in R:
        L += [f"    d{i} = vadd{w}(vload{w}(xb, x{i} + j), nm{i})", f"    a{i} = vfma{w}(d{i}, d{i}, a{i})"]
    L += ["if full < L:"]
    for i in R:
        L += [f"    d{i} = vadd{w}(vloadrf{w}(xb, x{i} + full, 0, L - full, m{i}), nm{i})",
              f"    a{i} = vfma{w}(d{i}, d{i}, a{i})"]
    L += [f"k{i} = vbcast{w}(1.0 / math.sqrt(vhsumt{w}(a{i}) / L + eps))" for i in R]
    L += [f"for j in range(0, full, {w}):", f"    s = vload{w}(sb, so + j)", f"    b = vload{w}(bb, bo + j)"]
    L += [f"    vstore{w}(yb, y{i} + j, vfma{w}(vmul{w}(vadd{w}(vload{w}(xb, x{i} + j), nm{i}), k{i}), s, b))"
          for i in R]
    L += ["if full < L:", "    c = L - full", f"    s = vloadn{w}(sb, so + full, c)",
          f"    b = vloadn{w}(bb, bo + full, c)"]
    L += [f"    vstoren{w}(yb, y{i} + full, "
          f"vfma{w}(vmul{w}(vadd{w}(vloadn{w}(xb, x{i} + full, c), nm{i}), k{i}), s, b), c)" for i in R]
    return [ind + ln for ln in L]


def layernorm_source(w: int, rows: int = ROWS_AT_ONCE) -> str:
    """The kernel at vector width ``w``: ``rows`` rows at a time (the rows left over one by one), full
    vectors then a masked tail in each pass."""
    L = ["def kernel(xb, xo, sb, so, bb, bo, yb, yo, R, L, eps):", f"    full = L - L % {w}", "    r = 0"]
    if rows > 1:
        L += [f"    while r + {rows} <= R:", *_rows(w, rows, " " * 8), f"        r += {rows}"]
    L += ["    while r < R:", *_rows(w, 1, " " * 8), "        r += 1"]
    return source(L)


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
