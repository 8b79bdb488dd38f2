"""Neural-network ops: convolution, normalisation, pooling, dense layers, softmax.

Spatial ops are N-dimensional (1-D, 2-D, 3-D); ``pads`` is ONNX-ordered ``[b_1..b_n, e_1..e_n]`` and is
always explicit in the IR (the frontend resolves ``auto_pad``).
"""

from __future__ import annotations

import itertools
from typing import Any

import numpy as np

from ..errors import ShapeError
from ..types import TensorType
from . import REQUIRED, defop, normalize_axis, post_infer, post_ref

_SPATIAL = {"kernel_shape": REQUIRED, "strides": REQUIRED, "pads": REQUIRED, "dilations": REQUIRED}


def conv_out_dim(size: int, k: int, s: int, d: int, pb: int, pe: int, ceil: bool = False) -> int:
    """Output length of a sliding window (ONNX formula; ``ceil`` as pooling's ceil_mode)."""
    span = d * (k - 1) + 1
    num = size + pb + pe - span
    if num < 0:
        raise ShapeError(f"window of extent {span} does not fit input length {size} with pads ({pb}, {pe})")
    out = (-(-num // s) if ceil else num // s) + 1
    if ceil and (out - 1) * s >= size + pb:  # the last window must start inside the input or left pad
        out -= 1
    return out


def _check_spatial(x: TensorType, a: dict[str, Any], what: str) -> int:
    n = x.rank - 2
    if n < 1:
        raise ShapeError(f"{what} needs an input of rank >= 3 (N, C, spatial...), got {x}")
    for key in ("kernel_shape", "strides", "dilations"):
        if len(a[key]) != n or any(int(v) < 1 for v in a[key]):
            raise ShapeError(f"{what}: {key}={list(a[key])} must be {n} positive integers for input {x}")
    if len(a["pads"]) != 2 * n or any(int(p) < 0 for p in a["pads"]):
        raise ShapeError(f"{what}: pads={list(a['pads'])} must be {2 * n} non-negative integers")
    return n


def _spatial_out(x: TensorType, a: dict[str, Any], ceil: bool = False) -> tuple[int, ...]:
    n = x.rank - 2
    return tuple(
        conv_out_dim(x.shape[2 + i], a["kernel_shape"][i], a["strides"][i], a["dilations"][i],
                     a["pads"][i], a["pads"][n + i], ceil)
        for i in range(n)
    )


def _pad_nd(x: np.ndarray, pads: list[int], value: float) -> np.ndarray:
    n = x.ndim - 2
    widths = [(0, 0), (0, 0)] + [(pads[i], pads[n + i]) for i in range(n)]
    return np.pad(x, widths, mode="constant", constant_values=value)


def _windows(xp: np.ndarray, a: dict[str, Any], out_sp: tuple[int, ...]):
    """Yield (kernel index, strided view of xp for that kernel offset) over all kernel positions."""
    n = len(out_sp)
    for kidx in itertools.product(*(range(k) for k in a["kernel_shape"])):
        sl = [slice(None), slice(None)]
        for i in range(n):
            start = kidx[i] * a["dilations"][i]
            sl.append(slice(start, start + (out_sp[i] - 1) * a["strides"][i] + 1, a["strides"][i]))
        yield kidx, xp[tuple(sl)]


# -- Conv ---------------------------------------------------------------------------------------------
def _conv_infer(types: list[TensorType | None], a: dict[str, Any]) -> list[TensorType]:
    x, w = types[0], types[1]
    n = _check_spatial(x, a, "Conv")
    g = a["group"]
    if w.rank != x.rank:
        raise ShapeError(f"Conv: weight {w} must have the input's rank {x.rank}")
    if g < 1 or x.shape[1] % g or w.shape[0] % g or w.shape[1] * g != x.shape[1]:
        raise ShapeError(f"Conv: group={g} does not fit input channels {x.shape[1]} and weight {w}")
    if tuple(w.shape[2:]) != tuple(a["kernel_shape"]):
        raise ShapeError(f"Conv: kernel_shape {list(a['kernel_shape'])} disagrees with weight {w}")
    if len(types) > 2 and types[2] is not None and types[2].shape != (w.shape[0],):
        raise ShapeError(f"Conv: bias {types[2]} must have shape ({w.shape[0]},)")
    del n
    return [TensorType(x.dtype, (x.shape[0], w.shape[0]) + _spatial_out(x, a))]


def conv_ref(ins: list[np.ndarray | None], a: dict[str, Any]) -> np.ndarray:
    x, w = ins[0].astype(np.float64), ins[1].astype(np.float64)
    b = ins[2] if len(ins) > 2 and ins[2] is not None else None
    g = a["group"]
    N, C = x.shape[:2]
    M = w.shape[0]
    out_sp = _spatial_out(TensorType(np.float64, x.shape), a)
    xp = _pad_nd(x, a["pads"], 0.0)
    cg, mg = C // g, M // g
    out = np.zeros((N, g, mg) + out_sp)
    for kidx, win in _windows(xp, a, out_sp):
        wk = w[(slice(None), slice(None)) + kidx].reshape(g, mg, cg)  # (g, mg, cg)
        xw = win.reshape((N, g, cg) + out_sp)
        out += np.einsum("gmc,ngc...->ngm...", wk, xw)
    out = out.reshape((N, M) + out_sp)
    if b is not None:
        out += b.reshape((1, M) + (1,) * len(out_sp))
    return out.astype(ins[0].dtype)


# -- BatchNormalization (inference) ---------------------------------------------------------------------
def _bn_infer(types: list[TensorType | None], a: dict[str, Any]) -> list[TensorType]:
    x = types[0]
    if x.rank < 2:
        raise ShapeError(f"BatchNormalization needs rank >= 2, got {x}")
    for t in types[1:]:
        if t.shape != (x.shape[1],):
            raise ShapeError(f"BatchNormalization: parameter {t} must have shape ({x.shape[1]},)")
    return [TensorType(x.dtype, x.shape)]


@defop("BatchNormalization", inputs=(5, 5), attrs={"epsilon": 1e-5}, infer=_bn_infer)
def bn_ref(ins: list[np.ndarray | None], a: dict[str, Any]) -> np.ndarray:
    x, scale, bias, mean, var = (np.asarray(t, np.float64) for t in ins)
    shp = (1, -1) + (1,) * (x.ndim - 2)
    y = (x - mean.reshape(shp)) / np.sqrt(var.reshape(shp) + a["epsilon"]) * scale.reshape(shp) + bias.reshape(shp)
    return y.astype(ins[0].dtype)


# -- pooling -------------------------------------------------------------------------------------------
def _pool_infer(types: list[TensorType | None], a: dict[str, Any]) -> list[TensorType]:
    x = types[0]
    _check_spatial(x, a, "pooling")
    return [TensorType(x.dtype, x.shape[:2] + _spatial_out(x, a, bool(a["ceil_mode"])))]


def _maxpool_infer(types: list[TensorType | None], a: dict[str, Any]) -> list[TensorType]:
    (y,) = _pool_infer(types, a)
    return [y, TensorType(np.int64, y.shape)] if a["indices"] else [y]


def _flat_index(x_shape: tuple[int, ...], pos: tuple[np.ndarray, ...], col_major: bool) -> np.ndarray:
    """ONNX MaxPool Indices: flat index into the input, spatial part row- or column-major."""
    sp = x_shape[2:]
    idx = np.zeros_like(pos[0])
    if col_major:
        mul = 1
        for p, d in zip(pos, sp):
            idx = idx + p * mul
            mul *= d
    else:
        for p, d in zip(pos, sp):
            idx = idx * d + p
    return idx


def maxpool_ref(ins: list[np.ndarray | None], a: dict[str, Any]) -> list[np.ndarray]:
    x = ins[0]
    out_sp = _pool_infer([TensorType(x.dtype, x.shape)], a)[0].shape[2:]
    if a["indices"]:
        return _maxpool_with_indices(x, a, tuple(out_sp))
    n = x.ndim - 2
    # pad generously at the end so ceil_mode windows can hang over; padded cells never win
    extra = [0] * n + [a["strides"][i] * 2 + a["dilations"][i] * a["kernel_shape"][i] for i in range(n)]
    pads = [p + e for p, e in zip(a["pads"], extra)]
    lowest = -np.inf if np.issubdtype(x.dtype, np.floating) else np.iinfo(x.dtype).min
    xp = _pad_nd(x.astype(np.float64), pads, lowest)
    out = np.full(x.shape[:2] + tuple(out_sp), -np.inf)
    for _, win in _windows(xp, a, tuple(out_sp)):
        out = np.maximum(out, win)
    return [out.astype(x.dtype)]


def _maxpool_with_indices(x: np.ndarray, a: dict[str, Any], out_sp: tuple[int, ...]) -> list[np.ndarray]:
    n = x.ndim - 2
    N, C = x.shape[:2]
    y = np.zeros((N, C) + out_sp, x.dtype)
    ind = np.zeros((N, C) + out_sp, np.int64)
    plane = int(np.prod(x.shape[2:], dtype=np.int64))
    for o in itertools.product(*(range(d) for d in out_sp)):
        best = np.full((N, C), -np.inf)
        where = np.zeros((N, C), np.int64)
        for k in itertools.product(*(range(d) for d in a["kernel_shape"])):
            p = tuple(o[i] * a["strides"][i] + k[i] * a["dilations"][i] - a["pads"][i] for i in range(n))
            if any(p[i] < 0 or p[i] >= x.shape[2 + i] for i in range(n)):
                continue
            v = x[(slice(None), slice(None)) + p].astype(np.float64)
            flat = int(_flat_index(x.shape, tuple(np.asarray(q) for q in p), bool(a["storage_order"])))
            better = v > best
            best = np.where(better, v, best)
            where = np.where(better, flat, where)
        y[(slice(None), slice(None)) + o] = best
        ind[(slice(None), slice(None)) + o] = where + (np.arange(N)[:, None] * C + np.arange(C)[None, :]) * plane
    return [y, ind]


def avgpool_ref(ins: list[np.ndarray | None], a: dict[str, Any]) -> np.ndarray:
    x = ins[0]
    n = x.ndim - 2
    out_sp = tuple(_pool_infer([TensorType(x.dtype, x.shape)], a)[0].shape[2:])
    extra = [0] * n + [a["strides"][i] * 2 + a["dilations"][i] * a["kernel_shape"][i] for i in range(n)]
    pads = [p + e for p, e in zip(a["pads"], extra)]
    xp = _pad_nd(x.astype(np.float64), pads, 0.0)
    # 1 inside the input, 1 in the declared pads if count_include_pad, 0 in the ceil_mode overhang
    inside = np.ones((1, 1) + x.shape[2:])
    ones = _pad_nd(inside, a["pads"], 1.0 if a["count_include_pad"] else 0.0)
    ones = _pad_nd(ones, [0] * n + extra[n:], 0.0)
    total = np.zeros(x.shape[:2] + out_sp)
    count = np.zeros((1, 1) + out_sp)
    wins_x = _windows(xp, a, out_sp)
    wins_c = _windows(ones, a, out_sp)
    for (_, wx), (_, wc) in zip(wins_x, wins_c):
        total += wx
        count += wc
    return (total / np.maximum(count, 1)).astype(x.dtype)


def _global_infer(types: list[TensorType | None], a: dict[str, Any]) -> list[TensorType]:
    x = types[0]
    if x.rank < 3:
        raise ShapeError(f"global pooling needs rank >= 3, got {x}")
    return [TensorType(x.dtype, x.shape[:2] + (1,) * (x.rank - 2))]


def gap_ref(ins: list[np.ndarray | None], a: dict[str, Any]) -> np.ndarray:
    x = ins[0]
    return x.astype(np.float64).mean(axis=tuple(range(2, x.ndim)), keepdims=True).astype(x.dtype)


def gmp_ref(ins: list[np.ndarray | None], a: dict[str, Any]) -> np.ndarray:
    x = ins[0]
    return x.max(axis=tuple(range(2, x.ndim)), keepdims=True)


@defop("LRN", attrs={"size": REQUIRED, "alpha": 1e-4, "beta": 0.75, "bias": 1.0})
def lrn_ref(ins: list[np.ndarray | None], a: dict[str, Any]) -> np.ndarray:
    x = ins[0].astype(np.float64)
    C = x.shape[1]
    size = a["size"]
    lo, hi = (size - 1) // 2, size // 2  # window [c - floor((size-1)/2), c + ceil((size-1)/2)]
    hi = int(np.ceil((size - 1) / 2))
    sq = x * x
    acc = np.zeros_like(x)
    for c in range(C):
        acc[:, c] = sq[:, max(0, c - lo): min(C, c + hi + 1)].sum(axis=1)
    y = x / (a["bias"] + a["alpha"] / size * acc) ** a["beta"]
    return y.astype(ins[0].dtype)


# -- dense ---------------------------------------------------------------------------------------------
def _gemm_infer(types: list[TensorType | None], a: dict[str, Any]) -> list[TensorType]:
    A, B = types[0], types[1]
    if A.rank != 2 or B.rank != 2:
        raise ShapeError(f"Gemm needs 2-D A and B, got {A} and {B}")
    M, K = A.shape[::-1] if a["transA"] else A.shape
    K2, N = B.shape[::-1] if a["transB"] else B.shape
    if K != K2:
        raise ShapeError(f"Gemm: inner dimensions differ ({K} vs {K2}) for A {A}, B {B}")
    if len(types) > 2 and types[2] is not None:
        try:
            np.broadcast_shapes(types[2].shape, (M, N))
        except ValueError as e:
            raise ShapeError(f"Gemm: C {types[2]} does not broadcast to ({M}, {N})") from e
    return [TensorType(A.dtype, (M, N))]


def gemm_ref(ins: list[np.ndarray | None], a: dict[str, Any]) -> np.ndarray:
    A = ins[0].astype(np.float64)
    B = ins[1].astype(np.float64)
    A = A.T if a["transA"] else A
    B = B.T if a["transB"] else B
    y = a["alpha"] * (A @ B)
    if len(ins) > 2 and ins[2] is not None:
        y = y + a["beta"] * ins[2].astype(np.float64)
    return y.astype(ins[0].dtype)


def matmul_shape(a: tuple[int, ...], b: tuple[int, ...]) -> tuple[int, ...]:
    """numpy.matmul's result shape (1-D operands promoted and the added axis removed)."""
    if not a or not b:
        raise ShapeError("MatMul operands must have rank >= 1")
    a2 = (1,) + a if len(a) == 1 else a
    b2 = b + (1,) if len(b) == 1 else b
    if a2[-1] != b2[-2]:
        raise ShapeError(f"MatMul: inner dimensions differ: {a} @ {b}")
    try:
        batch = tuple(np.broadcast_shapes(a2[:-2], b2[:-2]))
    except ValueError as e:
        raise ShapeError(f"MatMul: batch dimensions of {a} and {b} do not broadcast") from e
    out = batch + (a2[-2], b2[-1])
    if len(a) == 1:
        out = out[:-2] + out[-1:]
    if len(b) == 1:
        out = out[:-1]
    return tuple(int(d) for d in out)


def matmul_ref(ins: list[np.ndarray | None], a: dict[str, Any]) -> np.ndarray:
    y = np.matmul(ins[0].astype(np.float64), ins[1].astype(np.float64))
    if len(ins) > 2 and ins[2] is not None:  # the fused per-column bias (``fuse_epilogue``)
        y = y + ins[2].astype(np.float64)
    return y.astype(ins[0].dtype)


def _matmul_infer(types: list[TensorType | None], a: dict[str, Any]) -> list[TensorType]:
    """ONNX's two inputs, and an optional third: a per-column bias of the output's last axis (``[N]``), added
    before the epilogue steps like a Gemm's C (``fuse_epilogue`` puts it there; residuals come after it)."""
    out = TensorType(types[0].dtype, matmul_shape(types[0].shape, types[1].shape))
    bias = types[2] if len(types) > 2 else None
    if bias is not None and (bias.shape != out.shape[-1:] or bias.dtype != out.dtype):
        raise ShapeError(f"MatMul: bias {bias} must be a vector of the output's last axis ({out})")
    return [out]


# -- registration, with fusable epilogues (see ``post_infer``) ----------------------------------------------
_POST = {"post": ()}
defop("Conv", inputs=(2, 8), attrs={**_SPATIAL, "group": 1, **_POST}, infer=post_infer(_conv_infer, 3))(
    post_ref(conv_ref, 3))
defop("Gemm", inputs=(2, 8), attrs={"alpha": 1.0, "beta": 1.0, "transA": 0, "transB": 0, **_POST},
      infer=post_infer(_gemm_infer, 3))(post_ref(gemm_ref, 3))
defop("MatMul", inputs=(2, 8), attrs=dict(_POST), infer=post_infer(_matmul_infer, 3))(post_ref(matmul_ref, 3))
# pools: activations only (no residual), the fuse_epilogue pass puts them there
defop("MaxPool", attrs={**_SPATIAL, "ceil_mode": 0, "indices": 0, "storage_order": 0, **_POST}, outputs=2,
      infer=post_infer(_maxpool_infer, 1))(post_ref(maxpool_ref, 1))
defop("AveragePool", attrs={**_SPATIAL, "ceil_mode": 0, "count_include_pad": 0, **_POST},
      infer=post_infer(_pool_infer, 1))(post_ref(avgpool_ref, 1))
defop("GlobalAveragePool", attrs=dict(_POST), infer=post_infer(_global_infer, 1))(post_ref(gap_ref, 1))
defop("GlobalMaxPool", attrs=dict(_POST), infer=post_infer(_global_infer, 1))(post_ref(gmp_ref, 1))


# -- softmax (opset-13 semantics: one axis) ------------------------------------------------------------
def _softmax_infer(types: list[TensorType | None], a: dict[str, Any]) -> list[TensorType]:
    normalize_axis(a["axis"], types[0].rank)
    return [TensorType(types[0].dtype, types[0].shape)]


@defop("Softmax", attrs={"axis": -1}, infer=_softmax_infer)
def softmax_ref(ins: list[np.ndarray | None], a: dict[str, Any]) -> np.ndarray:
    x = ins[0].astype(np.float64)
    e = np.exp(x - x.max(axis=a["axis"], keepdims=True))
    return (e / e.sum(axis=a["axis"], keepdims=True)).astype(ins[0].dtype)


@defop("LogSoftmax", attrs={"axis": -1}, infer=_softmax_infer)
def logsoftmax_ref(ins: list[np.ndarray | None], a: dict[str, Any]) -> np.ndarray:
    x = ins[0].astype(np.float64)
    m = x - x.max(axis=a["axis"], keepdims=True)
    return (m - np.log(np.exp(m).sum(axis=a["axis"], keepdims=True))).astype(ins[0].dtype)
