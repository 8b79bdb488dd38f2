"""Independent plain-numpy reference implementations used as the oracle by the kernel property tests.

Everything here is deliberately naive (explicit loops over kernel offsets / pooling windows, einsum,
``np.matmul``) and accumulates in float64.  Nothing is imported from cnnjit: the point is to have an
oracle that shares no code (and hopefully no bugs) with the compiler.  ``test_kernels_property.py``
also cross-checks these functions against onnxruntime so the oracle itself stays honest.

Conventions follow the ONNX operator spec:

* ``pads`` is ``[x1_begin, x2_begin, ..., x1_end, x2_end, ...]``;
* ``kernel``/``strides``/``dilations`` are per-spatial-axis sequences;
* tensors are NC<spatial...> (batch, channels, spatial axes).
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence

import numpy as np

__all__ = [
    "ceil_div", "same_pads", "resolve_pads", "conv_output_shape", "conv", "conv_layer",
    "pool_output_shape", "max_pool", "avg_pool", "global_avg_pool", "global_max_pool",
    "gemm", "matmul", "softmax", "softmax_v11",
    "BINARY_OPS", "VARIADIC_OPS", "binary", "variadic",
    "relu", "leaky_relu", "clip", "sigmoid", "hard_sigmoid", "hard_swish", "tanh", "UNARY_OPS",
]


def _f64(a) -> np.ndarray:
    return np.asarray(a, dtype=np.float64)


def ceil_div(a: int, b: int) -> int:
    return -(-a // b)


# ---------------------------------------------------------------------------------------------
# padding / output-shape arithmetic
# ---------------------------------------------------------------------------------------------

def same_pads(in_spatial: Sequence[int], kernel: Sequence[int], strides: Sequence[int],
              dilations: Sequence[int], auto_pad: str) -> list[int]:
    """Pads for ``auto_pad`` SAME_UPPER / SAME_LOWER per the ONNX spec.

    Output size is ``ceil(in / stride)``; the total padding needed is
    ``max(0, (out - 1) * stride + (k - 1) * dilation + 1 - in)``.  SAME_UPPER puts the odd extra pad
    at the end, SAME_LOWER at the beginning.
    """
    begins, ends = [], []
    for n, k, s, d in zip(in_spatial, kernel, strides, dilations, strict=True):
        out = ceil_div(n, s)
        total = max(0, (out - 1) * s + (k - 1) * d + 1 - n)
        small, big = total // 2, total - total // 2
        if auto_pad == "SAME_UPPER":
            begins.append(small)
            ends.append(big)
        elif auto_pad == "SAME_LOWER":
            begins.append(big)
            ends.append(small)
        else:
            raise ValueError(auto_pad)
    return begins + ends


def resolve_pads(in_spatial: Sequence[int], kernel: Sequence[int], strides: Sequence[int],
                 dilations: Sequence[int], auto_pad: str = "NOTSET",
                 pads: Sequence[int] | None = None) -> list[int]:
    nd = len(in_spatial)
    if auto_pad in ("NOTSET", "", None):
        return list(pads) if pads is not None else [0] * (2 * nd)
    if auto_pad == "VALID":
        return [0] * (2 * nd)
    return same_pads(in_spatial, kernel, strides, dilations, auto_pad)


def _defaults(nd: int, strides, dilations):
    strides = list(strides) if strides is not None else [1] * nd
    dilations = list(dilations) if dilations is not None else [1] * nd
    return strides, dilations


def conv_output_shape(in_spatial, kernel, strides=None, pads=None, dilations=None,
                      auto_pad="NOTSET") -> list[int]:
    nd = len(in_spatial)
    strides, dilations = _defaults(nd, strides, dilations)
    p = resolve_pads(in_spatial, kernel, strides, dilations, auto_pad, pads)
    return [(n + p[i] + p[i + nd] - ((k - 1) * d + 1)) // s + 1
            for i, (n, k, s, d) in enumerate(zip(in_spatial, kernel, strides, dilations, strict=True))]


# ---------------------------------------------------------------------------------------------
# Conv
# ---------------------------------------------------------------------------------------------

def conv(x, w, b=None, *, strides=None, pads=None, dilations=None, group: int = 1,
         auto_pad: str = "NOTSET") -> np.ndarray:
    """ONNX Conv: x [N, C, *S], w [M, C/group, *K], b [M] -> y [N, M, *O] (float64)."""
    x, w = _f64(x), _f64(w)
    n_batch, c_in = x.shape[:2]
    m_out = w.shape[0]
    ks = w.shape[2:]
    nd = len(ks)
    assert x.ndim == nd + 2
    assert c_in % group == 0 and m_out % group == 0 and w.shape[1] == c_in // group
    strides, dilations = _defaults(nd, strides, dilations)
    p = resolve_pads(x.shape[2:], ks, strides, dilations, auto_pad, pads)
    xp = np.pad(x, [(0, 0), (0, 0)] + [(p[i], p[i + nd]) for i in range(nd)])
    out_sp = [(xp.shape[2 + i] - ((ks[i] - 1) * dilations[i] + 1)) // strides[i] + 1 for i in range(nd)]
    if min(out_sp, default=1) < 1:
        raise ValueError(f"empty conv output {out_sp}")
    y = np.zeros((n_batch, m_out, *out_sp))
    cg, mg = c_in // group, m_out // group
    for g in range(group):
        xg = xp[:, g * cg:(g + 1) * cg]
        wg = w[g * mg:(g + 1) * mg]
        for koff in itertools.product(*[range(k) for k in ks]):
            sl = tuple(
                slice(koff[i] * dilations[i], koff[i] * dilations[i] + (out_sp[i] - 1) * strides[i] + 1,
                      strides[i])
                for i in range(nd)
            )
            patch = xg[(slice(None), slice(None)) + sl]           # [N, cg, *O]
            wk = wg[(slice(None), slice(None)) + koff]             # [mg, cg]
            y[:, g * mg:(g + 1) * mg] += np.einsum("nc...,mc->nm...", patch, wk)
    if b is not None:
        y += _f64(b).reshape((1, m_out) + (1,) * nd)
    return y


def conv_layer(rng: np.random.Generator, x, w, b, act: str | None = None, residual: bool = False,
               **geo) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """A Conv layer with a fused epilogue: (the float64 output ``conv(x, w, b, **geo)`` plus a standard normal
    float32 residual drawn from ``rng`` when ``residual``, then ReLU when ``act`` is "Relu"; the scale of its
    float32 rounding, ``conv(|x|, |w|, |b|) + |r|``; the residual or None)."""
    y = conv(x, w, b, **geo)
    scale = conv(np.abs(x), np.abs(w), np.abs(b), **geo)
    r = rng.standard_normal(y.shape).astype(np.float32) if residual else None
    if r is not None:
        y, scale = y + r, scale + np.abs(r)
    return (np.maximum(y, 0.0) if act == "Relu" else y), scale, r


# ---------------------------------------------------------------------------------------------
# Pooling
# ---------------------------------------------------------------------------------------------

def pool_output_shape(in_spatial, kernel, strides=None, pads=None, dilations=None,
                      ceil_mode: int = 0) -> list[int]:
    """ONNX pooling output size (explicit pads).

    With ``ceil_mode`` the size is rounded up, but a window that would *start* beyond the input plus
    the begin pad (i.e. entirely inside the end padding / overhang) is dropped -- the PyTorch /
    onnxruntime rule, also in the ONNX spec text.
    """
    nd = len(in_spatial)
    strides, dilations = _defaults(nd, strides, dilations)
    pads = list(pads) if pads is not None else [0] * (2 * nd)
    out = []
    for i, (n, k, s, d) in enumerate(zip(in_spatial, kernel, strides, dilations, strict=True)):
        pb, pe = pads[i], pads[i + nd]
        span = n + pb + pe - ((k - 1) * d + 1)
        if ceil_mode:
            o = ceil_div(span, s) + 1
            if (o - 1) * s >= n + pb:
                o -= 1
        else:
            o = span // s + 1
        out.append(o)
    return out


def _pool_windows(x, kernel, strides, pads, dilations, ceil_mode):
    """Yield (out_index, valid_positions_per_axis, padded_count_per_axis) for every output position."""
    nd = len(kernel)
    in_sp = x.shape[2:]
    strides, dilations = _defaults(nd, strides, dilations)
    pads = list(pads) if pads is not None else [0] * (2 * nd)
    out_sp = pool_output_shape(in_sp, kernel, strides, pads, dilations, ceil_mode)
    if min(out_sp, default=1) < 1:
        raise ValueError(f"empty pool output {out_sp}")
    per_axis = []
    for i in range(nd):
        entries = []
        for o in range(out_sp[i]):
            start = o * strides[i] - pads[i]
            pos = [start + j * dilations[i] for j in range(kernel[i])]
            valid = [q for q in pos if 0 <= q < in_sp[i]]
            # positions inside the explicitly padded extent [-pad_begin, in + pad_end)
            in_padded = sum(1 for q in pos if -pads[i] <= q < in_sp[i] + pads[i + nd])
            entries.append((valid, in_padded))
        per_axis.append(entries)
    return out_sp, per_axis


def max_pool(x, kernel, *, strides=None, pads=None, dilations=None, ceil_mode: int = 0) -> np.ndarray:
    """ONNX MaxPool (output Y only).  A window with no real input element yields -inf."""
    x = _f64(x)
    out_sp, per_axis = _pool_windows(x, kernel, strides, pads, dilations, ceil_mode)
    y = np.full(x.shape[:2] + tuple(out_sp), -np.inf)
    for oidx in itertools.product(*[range(o) for o in out_sp]):
        valids = [per_axis[i][o][0] for i, o in enumerate(oidx)]
        if any(len(v) == 0 for v in valids):
            continue
        win = x[(slice(None), slice(None)) + np.ix_(*valids)]
        y[(slice(None), slice(None)) + oidx] = win.reshape(x.shape[0], x.shape[1], -1).max(axis=2)
    return y


def avg_pool(x, kernel, *, strides=None, pads=None, ceil_mode: int = 0,
             count_include_pad: int = 0) -> np.ndarray:
    """ONNX AveragePool (opset <= 18: no dilations).

    ``count_include_pad=1`` divides by the number of window positions inside the explicitly padded
    input (the ceil_mode overhang beyond the end pad is never counted); ``count_include_pad=0``
    divides by the number of real input elements.  An empty window yields NaN.
    """
    x = _f64(x)
    out_sp, per_axis = _pool_windows(x, kernel, strides, pads, None, ceil_mode)
    y = np.full(x.shape[:2] + tuple(out_sp), np.nan)
    for oidx in itertools.product(*[range(o) for o in out_sp]):
        valids = [per_axis[i][o][0] for i, o in enumerate(oidx)]
        if any(len(v) == 0 for v in valids):
            continue
        win = x[(slice(None), slice(None)) + np.ix_(*valids)]
        total = win.reshape(x.shape[0], x.shape[1], -1).sum(axis=2)
        if count_include_pad:
            div = int(np.prod([per_axis[i][o][1] for i, o in enumerate(oidx)]))
        else:
            div = int(np.prod([len(v) for v in valids]))
        y[(slice(None), slice(None)) + oidx] = total / div
    return y


def global_avg_pool(x) -> np.ndarray:
    x = _f64(x)
    return x.mean(axis=tuple(range(2, x.ndim)), keepdims=True)


def global_max_pool(x) -> np.ndarray:
    x = _f64(x)
    return x.max(axis=tuple(range(2, x.ndim)), keepdims=True)


# ---------------------------------------------------------------------------------------------
# Gemm / MatMul / Softmax
# ---------------------------------------------------------------------------------------------

def gemm(a, b, c=None, *, alpha: float = 1.0, beta: float = 1.0, trans_a: int = 0,
         trans_b: int = 0) -> np.ndarray:
    a, b = _f64(a), _f64(b)
    if trans_a:
        a = a.T
    if trans_b:
        b = b.T
    y = float(alpha) * (a @ b)
    if c is not None:
        y = y + float(beta) * _f64(c)  # unidirectional broadcast of C to [M, N]
    return y


def matmul(a, b) -> np.ndarray:
    """numpy.matmul semantics (which is what ONNX MatMul specifies), in float64."""
    return np.matmul(_f64(a), _f64(b))


def softmax(x, axis: int = -1) -> np.ndarray:
    """Opset-13 Softmax: normalise along a single axis."""
    x = _f64(x)
    e = np.exp(x - x.max(axis=axis, keepdims=True))
    return e / e.sum(axis=axis, keepdims=True)


def softmax_v11(x, axis: int = 1) -> np.ndarray:
    """Opset-1..11 Softmax: coerce to 2-D [prod(shape[:axis]), prod(shape[axis:])], softmax rows."""
    x = _f64(x)
    axis = axis % x.ndim if x.ndim else 0
    rows = int(np.prod(x.shape[:axis], dtype=np.int64))
    flat = x.reshape(rows, -1)
    return softmax(flat, axis=1).reshape(x.shape)


# ---------------------------------------------------------------------------------------------
# Elementwise
# ---------------------------------------------------------------------------------------------

BINARY_OPS = {
    "Add": np.add,
    "Sub": np.subtract,
    "Mul": np.multiply,
    "Div": np.divide,
    "Max": np.maximum,
    "Min": np.minimum,
}

VARIADIC_OPS = {
    "Sum": np.add,
    "Max": np.maximum,
    "Min": np.minimum,
}


def binary(op: str, a, b) -> np.ndarray:
    return BINARY_OPS[op](_f64(a), _f64(b))


def variadic(op: str, *xs) -> np.ndarray:
    fn = VARIADIC_OPS[op]
    acc = _f64(xs[0])
    for v in xs[1:]:
        acc = fn(acc, _f64(v))
    # a single input still has to come out with its own shape
    return np.broadcast_to(acc, np.broadcast_shapes(*[np.shape(v) for v in xs])).copy()


def relu(x) -> np.ndarray:
    x = _f64(x)
    return np.where(x > 0, x, 0.0)


def leaky_relu(x, alpha: float = 0.01) -> np.ndarray:
    x = _f64(x)
    return np.where(x >= 0, x, float(alpha) * x)


def clip(x, lo=None, hi=None) -> np.ndarray:
    """ONNX Clip: min(max(x, lo), hi); a missing bound is unbounded."""
    y = _f64(x)
    if lo is not None:
        y = np.maximum(y, float(lo))
    if hi is not None:
        y = np.minimum(y, float(hi))
    return y


def sigmoid(x) -> np.ndarray:
    x = _f64(x)
    # numerically stable in both tails
    return np.where(x >= 0, 1.0 / (1.0 + np.exp(-np.abs(x))), np.exp(-np.abs(x)) / (1.0 + np.exp(-np.abs(x))))


def hard_sigmoid(x, alpha: float = 0.2, beta: float = 0.5) -> np.ndarray:
    x = _f64(x)
    return np.clip(float(alpha) * x + float(beta), 0.0, 1.0)


def hard_swish(x) -> np.ndarray:
    x = _f64(x)
    return x * np.clip(x / 6.0 + 0.5, 0.0, 1.0)


def tanh(x) -> np.ndarray:
    return np.tanh(_f64(x))


UNARY_OPS = {
    "Relu": relu,
    "Sigmoid": sigmoid,
    "Tanh": tanh,
    "HardSwish": hard_swish,
}
