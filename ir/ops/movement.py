"""Data movement and quantization-boundary ops: Reshape, Transpose, Concat, Gather, DequantizeLinear.

Flatten, Squeeze, Unsqueeze and Dropout never reach the IR: the frontend expresses them as ``Reshape``
(with the target shape fully resolved) or ``Identity``.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ..errors import ShapeError
from ..types import TensorType
from . import REQUIRED, defop, normalize_axis


def _reshape_infer(types: list[TensorType | None], a: dict[str, Any]) -> list[TensorType]:
    x = types[0]
    shape = tuple(int(d) for d in a["shape"])
    if any(d < 0 for d in shape) or int(np.prod(shape, dtype=np.int64)) != x.size:
        raise ShapeError(f"Reshape: cannot reshape {x} to {list(shape)}")
    return [TensorType(x.dtype, shape)]


@defop("Reshape", attrs={"shape": REQUIRED}, infer=_reshape_infer, view=True)
def reshape_ref(ins: list[np.ndarray | None], a: dict[str, Any]) -> np.ndarray:
    return ins[0].reshape(tuple(a["shape"]))


def _transpose_infer(types: list[TensorType | None], a: dict[str, Any]) -> list[TensorType]:
    x = types[0]
    perm = list(a["perm"])
    if sorted(perm) != list(range(x.rank)):
        raise ShapeError(f"Transpose: perm {perm} is not a permutation of {x.rank} axes")
    return [TensorType(x.dtype, tuple(x.shape[p] for p in perm))]


@defop("Transpose", attrs={"perm": REQUIRED}, infer=_transpose_infer)
def transpose_ref(ins: list[np.ndarray | None], a: dict[str, Any]) -> np.ndarray:
    return np.array(np.transpose(ins[0], a["perm"]), order="C")


def _concat_infer(types: list[TensorType | None], a: dict[str, Any]) -> list[TensorType]:
    first = types[0]
    ax = normalize_axis(a["axis"], first.rank)
    total = 0
    for t in types:
        if t.rank != first.rank or t.dtype != first.dtype or any(
            t.shape[i] != first.shape[i] for i in range(first.rank) if i != ax
        ):
            raise ShapeError(f"Concat on axis {a['axis']}: {t} does not match {first}")
        total += t.shape[ax]
    return [TensorType(first.dtype, first.shape[:ax] + (total,) + first.shape[ax + 1:])]


@defop("Concat", inputs=(1, 1 << 16), attrs={"axis": REQUIRED}, infer=_concat_infer)
def concat_ref(ins: list[np.ndarray | None], a: dict[str, Any]) -> np.ndarray:
    return np.concatenate(ins, axis=a["axis"])


def _gather_infer(types: list[TensorType | None], a: dict[str, Any]) -> list[TensorType]:
    x, idx = types
    ax = normalize_axis(a["axis"], x.rank)
    if idx.dtype.kind not in "iu":
        raise ShapeError(f"Gather: indices must be integers, got {idx}")
    return [TensorType(x.dtype, x.shape[:ax] + idx.shape + x.shape[ax + 1:])]


@defop("Gather", inputs=(2, 2), attrs={"axis": 0}, infer=_gather_infer)
def gather_ref(ins: list[np.ndarray | None], a: dict[str, Any]) -> np.ndarray:
    x, idx = ins
    ax = a["axis"] % x.ndim
    idx = idx.astype(np.int64)
    if np.any(idx >= x.shape[ax]) or np.any(idx < -x.shape[ax]):
        raise ShapeError(f"Gather: an index is out of range for axis {ax} of length {x.shape[ax]}")
    return np.take(x, np.where(idx < 0, idx + x.shape[ax], idx), axis=ax)


def _dq_infer(types: list[TensorType | None], a: dict[str, Any]) -> list[TensorType]:
    return [TensorType(types[1].dtype, types[0].shape)]


@defop("DequantizeLinear", inputs=(2, 3), attrs={"axis": 1, "block_size": 0}, infer=_dq_infer)
def dequantize_ref(ins: list[np.ndarray | None], a: dict[str, Any]) -> np.ndarray:
    x, scale = ins[0], ins[1]
    zp = ins[2] if len(ins) > 2 and ins[2] is not None else np.zeros_like(scale, dtype=x.dtype)
    if scale.ndim == 0 or scale.size == 1 and x.ndim == 0:
        return ((x.astype(np.float64) - zp.astype(np.float64)) * scale).astype(scale.dtype)
    ax = a["axis"] % x.ndim
    if a["block_size"]:
        scale = np.repeat(scale, a["block_size"], axis=ax)
        zp = np.repeat(zp, a["block_size"], axis=ax)
        sl = tuple(slice(0, d) for d in x.shape)
        scale, zp = scale[sl], zp[sl]
    else:
        shp = [1] * x.ndim
        shp[ax] = -1
        scale, zp = scale.reshape(shp), zp.reshape(shp)
    return ((x.astype(np.float64) - zp.astype(np.float64)) * scale.astype(np.float64)).astype(scale.dtype)
