"""General ops real exported CNNs use around their convolutions: rounding and transcendental maps,
comparisons and logic, Where, Mod, Range, arg/top-k selection, more reductions, CumSum/CumProd, index ops
(Gather/ScatterElements, GatherND/ScatterND, OneHot), Trilu and 2-D GridSample.

Comparisons and logic produce ``bool`` tensors. ``Range`` only exists for constant folding (its operands
come from shapes, e.g. YOLO anchor grids, or from graph inputs the model is specialised on); the frontend
refuses one computed from intermediate data. Every reference
is plain numpy, written apart from the kernels in ``codegen/kernels/misc.py``.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ..errors import ShapeError
from ..types import TensorType
from . import REQUIRED, broadcast_infer, broadcast_shapes, defop, normalize_axis
from .nn_extra import _reduce_infer

BOOL = np.dtype(np.bool_)


# -- unary maps ------------------------------------------------------------------------------------------
def _float_unary(name: str, fn) -> None:
    def ref(ins: list[np.ndarray], a: dict[str, Any]) -> np.ndarray:
        x = ins[0]
        with np.errstate(all="ignore"):
            return np.asarray(fn(x.astype(np.float64) if x.dtype.kind == "f" else x)).astype(x.dtype)

    defop(name)(ref)


for _n, _f in (("Floor", np.floor), ("Ceil", np.ceil), ("Round", np.rint), ("Reciprocal", np.reciprocal),
               ("Log", np.log), ("Sin", np.sin), ("Cos", np.cos), ("Tan", np.tan), ("Atan", np.arctan),
               ("Asin", np.arcsin), ("Acos", np.arccos), ("Sinh", np.sinh), ("Cosh", np.cosh),
               ("Asinh", np.arcsinh), ("Acosh", np.arccosh), ("Atanh", np.arctanh),
               ("Softsign", lambda x: x / (1 + np.abs(x)))):
    _float_unary(_n, _f)


def _bool_infer(types: list[TensorType | None], a: dict[str, Any]) -> list[TensorType]:
    return [TensorType(BOOL, types[0].shape)]


defop("Not", infer=_bool_infer)(lambda ins, a: np.logical_not(ins[0]))
defop("IsNaN", infer=_bool_infer)(lambda ins, a: np.isnan(ins[0]))
defop("IsInf", infer=_bool_infer, attrs={"detect_negative": 1, "detect_positive": 1})(
    lambda ins, a: np.isinf(ins[0]) & np.where(ins[0] > 0, bool(a["detect_positive"]), bool(a["detect_negative"])))


# -- comparisons, logic, Mod, Where ----------------------------------------------------------------------
def _compare_infer(types: list[TensorType | None], a: dict[str, Any]) -> list[TensorType]:
    return [TensorType(BOOL, broadcast_infer(types, a)[0].shape)]


for _n, _f in (("Equal", np.equal), ("Greater", np.greater), ("GreaterOrEqual", np.greater_equal),
               ("Less", np.less), ("LessOrEqual", np.less_equal), ("And", np.logical_and),
               ("Or", np.logical_or), ("Xor", np.logical_xor)):
    defop(_n, inputs=(2, 2), infer=_compare_infer)(lambda ins, a, f=_f: f(ins[0], ins[1]))


@defop("Mod", inputs=(2, 2), infer=broadcast_infer, attrs={"fmod": 0})
def mod_ref(ins: list[np.ndarray], a: dict[str, Any]) -> np.ndarray:
    """``fmod=1``: the remainder has the dividend's sign (C fmod); 0: the divisor's (Python %)."""
    x, y = ins
    with np.errstate(all="ignore"):
        r = np.fmod(x, y) if a["fmod"] else np.mod(x, y)
    return np.asarray(r).astype(x.dtype)


def _where_infer(types: list[TensorType | None], a: dict[str, Any]) -> list[TensorType]:
    c, x, y = types
    if c.dtype != BOOL:
        raise ShapeError(f"Where: the condition {c} must be bool")
    if x.dtype != y.dtype:
        raise ShapeError(f"Where: the branches differ in type ({x.dtype} vs {y.dtype})")
    return [TensorType(x.dtype, broadcast_shapes(c.shape, x.shape, y.shape))]


defop("Where", inputs=(3, 3), infer=_where_infer)(lambda ins, a: np.where(ins[0], ins[1], ins[2]))


# -- Range (folded at import) -----------------------------------------------------------------------------
def range_count(start: float, limit: float, delta: float) -> int:
    """How many elements ``Range(start, limit, delta)`` has (``ShapeError`` for a zero delta)."""
    if delta == 0:
        raise ShapeError("Range: delta is 0")
    return max(int(np.ceil((limit - start) / delta)), 0)


def _range_infer(types: list[TensorType | None], a: dict[str, Any]) -> list[TensorType]:
    t = types[0]
    if any(u.dtype != t.dtype or u.size != 1 for u in types):
        raise ShapeError(f"Range: start, limit and delta must be scalars of one type, got {types}")
    return [TensorType(t.dtype, (int(a["count"]),))]


@defop("Range", inputs=(3, 3), infer=_range_infer, attrs={"count": REQUIRED})
def range_ref(ins: list[np.ndarray], a: dict[str, Any]) -> np.ndarray:
    """``start + i * delta`` for ``i < count``; ``count`` is resolved from the constant operands."""
    start, _, delta = (np.asarray(v).reshape(()) for v in ins)
    return (start + np.arange(int(a["count"])).astype(start.dtype) * delta).astype(start.dtype)


# -- ArgMax / ArgMin, TopK ---------------------------------------------------------------------------------
def _arg_infer(types: list[TensorType | None], a: dict[str, Any]) -> list[TensorType]:
    x = types[0]
    ax = normalize_axis(a["axis"], x.rank)
    if x.shape[ax] == 0:
        raise ShapeError(f"{x}: no element to select along axis {ax}")
    shape = tuple(1 if i == ax else d for i, d in enumerate(x.shape)) if a["keepdims"] else \
        tuple(d for i, d in enumerate(x.shape) if i != ax)
    return [TensorType(np.dtype(np.int64), shape)]


def _arg_ref(pick):
    def ref(ins: list[np.ndarray], a: dict[str, Any]) -> np.ndarray:
        x = ins[0]
        ax = normalize_axis(a["axis"], x.ndim)
        if a["select_last_index"]:
            i = x.shape[ax] - 1 - pick(np.flip(x, ax), axis=ax)
        else:
            i = pick(x, axis=ax)
        i = np.asarray(i, np.int64)
        return np.expand_dims(i, ax) if a["keepdims"] else i

    return ref


for _n, _f in (("ArgMax", np.argmax), ("ArgMin", np.argmin)):
    defop(_n, infer=_arg_infer, attrs={"axis": 0, "keepdims": 1, "select_last_index": 0})(_arg_ref(_f))


def _topk_infer(types: list[TensorType | None], a: dict[str, Any]) -> list[TensorType]:
    x = types[0]
    ax = normalize_axis(a["axis"], x.rank)
    if not 0 <= a["k"] <= x.shape[ax]:
        raise ShapeError(f"TopK: k={a['k']} is not within the {x.shape[ax]} elements of axis {ax} of {x}")
    shape = tuple(a["k"] if i == ax else d for i, d in enumerate(x.shape))
    return [TensorType(x.dtype, shape), TensorType(np.dtype(np.int64), shape)]


@defop("TopK", infer=_topk_infer, outputs=2, attrs={"k": REQUIRED, "axis": -1, "largest": 1, "sorted": 1})
def topk_ref(ins: list[np.ndarray], a: dict[str, Any]) -> list[np.ndarray]:
    """The k largest (smallest) along ``axis``, ties broken by the lower index; always sorted."""
    x = ins[0]
    ax = normalize_axis(a["axis"], x.ndim)
    key = -x if a["largest"] else x
    if x.dtype.kind == "u" and a["largest"]:
        key = -x.astype(np.float64)
    idx = np.argsort(key, axis=ax, kind="stable")
    idx = np.take(idx, np.arange(a["k"]), axis=ax)
    return [np.take_along_axis(x, idx, axis=ax), idx.astype(np.int64)]


# -- more reductions --------------------------------------------------------------------------------------
def _reduction(name: str, fn) -> None:
    def ref(ins: list[np.ndarray], a: dict[str, Any]) -> np.ndarray:
        x = ins[0]
        with np.errstate(all="ignore"):
            y = fn(x.astype(np.float64), tuple(a["axes"]), bool(a["keepdims"]))
        return np.asarray(y).astype(x.dtype)

    defop(name, attrs={"axes": REQUIRED, "keepdims": 1}, infer=_reduce_infer)(ref)


def _logsumexp(x: np.ndarray, axes: tuple, keep: bool) -> np.ndarray:
    m = np.max(x, axis=axes, keepdims=True)
    m = np.where(np.isfinite(m), m, 0)
    y = np.log(np.sum(np.exp(x - m), axis=axes, keepdims=True)) + m
    return y if keep else np.squeeze(y, axis=axes)


_reduction("ReduceL1", lambda x, ax, k: np.sum(np.abs(x), axis=ax, keepdims=k))
_reduction("ReduceL2", lambda x, ax, k: np.sqrt(np.sum(x * x, axis=ax, keepdims=k)))
_reduction("ReduceSumSquare", lambda x, ax, k: np.sum(x * x, axis=ax, keepdims=k))
_reduction("ReduceProd", lambda x, ax, k: np.prod(x, axis=ax, keepdims=k))
_reduction("ReduceLogSum", lambda x, ax, k: np.log(np.sum(x, axis=ax, keepdims=k)))
_reduction("ReduceLogSumExp", _logsumexp)


# -- CumSum, CumProd -----------------------------------------------------------------------------------------------
def _cumulative(name: str, fn, unit: int) -> None:
    def ref(ins: list[np.ndarray], a: dict[str, Any]) -> np.ndarray:
        """The running sum (product) along ``axis``; ``exclusive`` leaves out the element itself,
        ``reverse`` runs from the end."""
        x = ins[0]
        ax = normalize_axis(a["axis"], x.ndim)
        y = np.flip(x, ax) if a["reverse"] else x
        acc = x.dtype if x.dtype.kind in "iu" else np.float64
        c = fn(y, axis=ax, dtype=acc)
        if a["exclusive"]:
            c = np.concatenate([np.full_like(np.take(c, [0], axis=ax), unit),
                                np.take(c, np.arange(x.shape[ax] - 1), axis=ax)], axis=ax)
        return (np.flip(c, ax) if a["reverse"] else c).astype(x.dtype)

    defop(name, attrs={"axis": REQUIRED, "exclusive": 0, "reverse": 0})(ref)


_cumulative("CumSum", np.cumsum, 0)
_cumulative("CumProd", np.cumprod, 1)


# -- GatherElements, GatherND, ScatterND ---------------------------------------------------------------------
def _check_index(i: np.ndarray, n: int, what: str) -> np.ndarray:
    i = np.asarray(i, np.int64)
    if np.any(i < -n) or np.any(i >= n):
        raise ShapeError(f"{what}: an index is outside [-{n}, {n})")
    return np.where(i < 0, i + n, i)


def _ge_infer(types: list[TensorType | None], a: dict[str, Any]) -> list[TensorType]:
    x, i = types
    if x.rank != i.rank or i.dtype.kind not in "iu":
        raise ShapeError(f"GatherElements: indices {i} must be integers of the data's rank ({x})")
    ax = normalize_axis(a["axis"], x.rank)
    if any(d > x.shape[k] for k, d in enumerate(i.shape) if k != ax):
        raise ShapeError(f"GatherElements: indices {i} larger than the data {x} off axis {ax}")
    return [TensorType(x.dtype, i.shape)]


@defop("GatherElements", inputs=(2, 2), infer=_ge_infer, attrs={"axis": 0})
def gather_elements_ref(ins: list[np.ndarray], a: dict[str, Any]) -> np.ndarray:
    x, i = ins
    ax = normalize_axis(a["axis"], x.ndim)
    i = _check_index(i, x.shape[ax], "GatherElements")
    sub = x[tuple(slice(0, d) for d in i.shape[:ax] + (x.shape[ax],) + i.shape[ax + 1:])]
    return np.take_along_axis(sub, i, axis=ax)


def _gnd_infer(types: list[TensorType | None], a: dict[str, Any]) -> list[TensorType]:
    x, i = types
    b = a["batch_dims"]
    q = i.shape[-1] if i.rank else 0
    if i.rank < 1 or i.dtype.kind not in "iu" or b < 0 or b >= min(x.rank, i.rank) or not 1 <= q <= x.rank - b \
            or tuple(x.shape[:b]) != tuple(i.shape[:b]):
        raise ShapeError(f"GatherND: indices {i} (batch_dims={b}) do not index data {x}")
    return [TensorType(x.dtype, tuple(i.shape[:-1]) + tuple(x.shape[b + q:]))]


@defop("GatherND", inputs=(2, 2), infer=_gnd_infer, attrs={"batch_dims": 0})
def gather_nd_ref(ins: list[np.ndarray], a: dict[str, Any]) -> np.ndarray:
    x, i = ins
    b = a["batch_dims"]
    q = i.shape[-1]
    lead = int(np.prod(i.shape[:b], dtype=np.int64))
    xs = x.reshape((lead,) + x.shape[b:])
    ix = i.reshape((lead, -1, q))
    out = np.empty((lead, ix.shape[1]) + x.shape[b + q:], x.dtype)
    for n in range(lead):
        for m in range(ix.shape[1]):
            t = tuple(int(_check_index(ix[n, m, k], x.shape[b + k], "GatherND")) for k in range(q))
            out[n, m] = xs[n][t]
    return out.reshape(tuple(i.shape[:-1]) + x.shape[b + q:])


def _se_infer(types: list[TensorType | None], a: dict[str, Any]) -> list[TensorType]:
    x, i, u = types
    if a["reduction"] not in ("none", "add", "mul", "max", "min"):
        raise ShapeError(f"ScatterElements: unknown reduction {a['reduction']!r}")
    if i.shape != u.shape or u.dtype != x.dtype:
        raise ShapeError(f"ScatterElements: updates {u} must have the indices' shape ({i}) and the data's type")
    _ge_infer([x, i], a)
    return [TensorType(x.dtype, x.shape)]


@defop("ScatterElements", inputs=(3, 3), infer=_se_infer, attrs={"axis": 0, "reduction": "none"})
def scatter_elements_ref(ins: list[np.ndarray], a: dict[str, Any]) -> np.ndarray:
    """``y[..., i[j], ...] = u[j]`` along ``axis`` (combined with ``reduction``), in index order."""
    x, i, u = ins
    ax = normalize_axis(a["axis"], x.ndim)
    i = _check_index(i, x.shape[ax], "ScatterElements")
    y = x.copy()
    ops = {"add": np.add, "mul": np.multiply, "max": np.maximum, "min": np.minimum}
    for j in np.ndindex(*i.shape):
        t = j[:ax] + (int(i[j]),) + j[ax + 1:]
        y[t] = u[j] if a["reduction"] == "none" else ops[a["reduction"]](y[t], u[j])
    return y


def _snd_infer(types: list[TensorType | None], a: dict[str, Any]) -> list[TensorType]:
    x, i, u = types
    q = i.shape[-1] if i.rank else 0
    if a["reduction"] not in ("none", "add", "mul", "max", "min"):
        raise ShapeError(f"ScatterND: unknown reduction {a['reduction']!r}")
    if i.rank < 1 or not 1 <= q <= x.rank or u.dtype != x.dtype \
            or tuple(u.shape) != tuple(i.shape[:-1]) + tuple(x.shape[q:]):
        raise ShapeError(f"ScatterND: indices {i} and updates {u} do not fit data {x}")
    return [TensorType(x.dtype, x.shape)]


@defop("ScatterND", inputs=(3, 3), infer=_snd_infer, attrs={"reduction": "none"})
def scatter_nd_ref(ins: list[np.ndarray], a: dict[str, Any]) -> np.ndarray:
    x, i, u = ins
    y = x.copy()
    q = i.shape[-1]
    ix = i.reshape(-1, q)
    uu = u.reshape((ix.shape[0],) + x.shape[q:])
    ops = {"add": np.add, "mul": np.multiply, "max": np.maximum, "min": np.minimum}
    for m in range(ix.shape[0]):
        t = tuple(int(_check_index(ix[m, k], x.shape[k], "ScatterND")) for k in range(q))
        y[t] = uu[m] if a["reduction"] == "none" else ops[a["reduction"]](y[t], uu[m])
    return y


# -- GridSample (2-D) -------------------------------------------------------------------------------------------
def _gs_infer(types: list[TensorType | None], a: dict[str, Any]) -> list[TensorType]:
    x, g = types
    if x.rank != 4 or g.rank != 4 or g.shape[0] != x.shape[0] or g.shape[3] != 2 or g.dtype != x.dtype:
        raise ShapeError(f"GridSample: input {x} and grid {g} must be (N, C, H, W) and (N, Ho, Wo, 2) of one type")
    if a["mode"] not in ("linear", "nearest") or a["padding_mode"] not in ("zeros", "border", "reflection"):
        raise ShapeError(f"GridSample: mode {a['mode']!r} / padding_mode {a['padding_mode']!r} not supported")
    return [TensorType(x.dtype, (x.shape[0], x.shape[1], g.shape[1], g.shape[2]))]


def grid_reflect(v: np.ndarray, lo: float, hi: float) -> np.ndarray:
    """Reflect coordinates off the bounds ``[lo, hi]`` until they fall inside (as PyTorch's grid_sample)."""
    rng = hi - lo
    if rng <= 0:
        return np.full_like(v, lo)
    d = np.where(v < lo, lo - v, v - hi)
    k = np.floor(d / rng)
    r = d - k * rng
    even = k % 2 == 0
    low = np.where(even, lo + r, hi - r)
    high = np.where(even, hi - r, lo + r)
    return np.where(v < lo, low, np.where(v > hi, high, v))


@defop("GridSample", inputs=(2, 2), infer=_gs_infer,
       attrs={"mode": "linear", "padding_mode": "zeros", "align_corners": 0})
def grid_sample_ref(ins: list[np.ndarray], a: dict[str, Any]) -> np.ndarray:
    """Sample X at the grid's normalised (x, y) points; ``padding_mode`` decides points outside the image."""
    x, grid = ins[0].astype(np.float64), ins[1].astype(np.float64)
    N, C, H, W = x.shape
    pad, ac = a["padding_mode"], bool(a["align_corners"])

    def coord(n: np.ndarray, size: int) -> np.ndarray:
        v = (n + 1) / 2 * (size - 1) if ac else ((n + 1) * size - 1) / 2
        if a["mode"] == "nearest":
            v = np.rint(v)
        lo, hi = (0.0, size - 1.0) if ac else (-0.5, size - 0.5)
        if pad == "border":
            v = np.where((v < lo) | (v > hi), np.clip(v, 0, size - 1), v)
        elif pad == "reflection":
            v = grid_reflect(v, lo, hi)
        return v

    def fetch(img: np.ndarray, iy: np.ndarray, ix: np.ndarray) -> np.ndarray:
        """img (C, H, W) at integer points, by the padding rule."""
        if pad == "border":
            iy, ix = np.clip(iy, 0, H - 1), np.clip(ix, 0, W - 1)
        elif pad == "reflection":
            lo = 0.0 if ac else -0.5
            iy = grid_reflect(iy.astype(np.float64), lo, H - 1.0 if ac else H - 0.5).astype(np.int64)
            ix = grid_reflect(ix.astype(np.float64), lo, W - 1.0 if ac else W - 0.5).astype(np.int64)
        inside = (iy >= 0) & (iy < H) & (ix >= 0) & (ix < W)
        return np.where(inside, img[:, np.clip(iy, 0, H - 1), np.clip(ix, 0, W - 1)], 0.0)

    out = np.empty((N, C) + grid.shape[1:3])
    for n in range(N):
        gx, gy = coord(grid[n, ..., 0], W), coord(grid[n, ..., 1], H)
        if a["mode"] == "nearest":
            out[n] = fetch(x[n], gy.astype(np.int64), gx.astype(np.int64))
            continue
        x0, y0 = np.floor(gx).astype(np.int64), np.floor(gy).astype(np.int64)
        fx, fy = gx - x0, gy - y0
        out[n] = ((1 - fy) * ((1 - fx) * fetch(x[n], y0, x0) + fx * fetch(x[n], y0, x0 + 1))
                  + fy * ((1 - fx) * fetch(x[n], y0 + 1, x0) + fx * fetch(x[n], y0 + 1, x0 + 1)))
    return out.astype(ins[0].dtype)


# -- Trilu, OneHot ---------------------------------------------------------------------------------------------
def _trilu_infer(types: list[TensorType | None], a: dict[str, Any]) -> list[TensorType]:
    if types[0].rank < 2:
        raise ShapeError(f"Trilu needs a matrix (rank >= 2), got {types[0]}")
    return [TensorType(types[0].dtype, types[0].shape)]


@defop("Trilu", infer=_trilu_infer, attrs={"k": 0, "upper": 1})
def trilu_ref(ins: list[np.ndarray], a: dict[str, Any]) -> np.ndarray:
    """The upper (lower) triangle from diagonal ``k`` on the last two axes; zeros elsewhere."""
    return (np.triu if a["upper"] else np.tril)(ins[0], int(a["k"]))


def _onehot_infer(types: list[TensorType | None], a: dict[str, Any]) -> list[TensorType]:
    i, v = types
    if i.dtype.kind not in "iuf" or v.size != 2 or a["depth"] < 1:
        raise ShapeError(f"OneHot: indices {i}, values {v} (off, on) and depth {a['depth']} are invalid")
    ax = normalize_axis(a["axis"], i.rank + 1)
    return [TensorType(v.dtype, tuple(i.shape[:ax]) + (int(a["depth"]),) + tuple(i.shape[ax:]))]


@defop("OneHot", inputs=(2, 2), infer=_onehot_infer, attrs={"depth": REQUIRED, "axis": -1})
def onehot_ref(ins: list[np.ndarray], a: dict[str, Any]) -> np.ndarray:
    """``on`` where the (wrapped) index equals the position along the new axis, ``off`` elsewhere."""
    idx, vals = ins
    depth = int(a["depth"])
    ax = normalize_axis(a["axis"], idx.ndim + 1)
    i = np.trunc(idx).astype(np.int64)
    i = np.where(i < 0, i + depth, i)
    pos = np.arange(depth).reshape((depth,) + (1,) * (idx.ndim - ax))
    hit = np.expand_dims(i, ax) == pos
    return np.where(hit, vals.reshape(-1)[1], vals.reshape(-1)[0]).astype(vals.dtype)
