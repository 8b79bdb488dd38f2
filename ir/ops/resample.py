"""Resampling and region ops: Pad, Slice, Split, Expand, Tile and Resize.

Every operand ONNX lets a model compute (pads, starts/ends, split sizes, scales, sizes, roi) is a fully
resolved, full-rank attribute here:

* ``Pad``: ``pads`` ``[begin_0.., end_0..]`` for every axis (negative = crop), ``mode``, ``value``.
* ``Slice``: ``starts``/``ends``/``steps`` for every axis (ONNX clamping still applies).
* ``Split``: ``axis`` and the explicit size of every output.
* ``Resize``: the output ``sizes`` and the ``scales`` the coordinate transformation uses, per axis; ``roi``
  (``[start_0.., end_0..]``) and ``nearest_mode`` per axis. DepthToSpace, SpaceToDepth and Upsample never
  reach the IR: the frontend expresses them as Reshape/Transpose and Resize.

``resize_axis_taps`` is the Resize specification for one axis (coordinate transformation, interpolation
weights, antialiasing, ``exclude_outside``, extrapolation); the reference applies it axis by axis.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from ..errors import ShapeError
from ..types import TensorType
from . import REQUIRED, broadcast_shapes, defop, normalize_axis

PAD_MODES = ("constant", "reflect", "edge", "wrap")


# -- Pad ----------------------------------------------------------------------------------------------------
def _pad_infer(types: list[TensorType | None], a: dict[str, Any]) -> list[TensorType]:
    x = types[0]
    r = x.rank
    pads = [int(p) for p in a["pads"]]
    if len(pads) != 2 * r:
        raise ShapeError(f"Pad: pads {pads} must have {2 * r} entries for rank {r}")
    if a["mode"] not in PAD_MODES:
        raise ShapeError(f"Pad: unknown mode {a['mode']!r}")
    shape = tuple(x.shape[i] + pads[i] + pads[r + i] for i in range(r))
    if any(d < 0 for d in shape):
        raise ShapeError(f"Pad: pads {pads} crop more than the input {list(x.shape)} holds")
    if a["mode"] != "constant":
        for i in range(r):
            kept = x.shape[i] + min(pads[i], 0) + min(pads[r + i], 0)
            grow = max(pads[i], 0) + max(pads[r + i], 0)
            if grow and kept < 1:
                raise ShapeError(f"Pad: {a['mode']} padding of an empty axis {i}")
            if grow and a["mode"] == "reflect" and kept < 2:
                raise ShapeError(f"Pad: reflect padding needs at least 2 elements on axis {i}")
    return [TensorType(x.dtype, shape)]


@defop("Pad", attrs={"pads": REQUIRED, "mode": REQUIRED, "value": REQUIRED}, infer=_pad_infer)
def pad_ref(ins: list[np.ndarray | None], a: dict[str, Any]) -> np.ndarray:
    """Negative pads crop first; the remaining positive pads are applied as ``numpy.pad`` does."""
    x = ins[0]
    r = x.ndim
    pads = [int(p) for p in a["pads"]]
    crop = tuple(slice(max(-pads[i], 0), x.shape[i] - max(-pads[r + i], 0)) for i in range(r))
    x = x[crop]
    width = [(max(pads[i], 0), max(pads[r + i], 0)) for i in range(r)]
    if a["mode"] == "constant":
        return np.pad(x, width, mode="constant", constant_values=np.asarray(a["value"]).astype(x.dtype))
    return np.pad(x, width, mode=a["mode"])


# -- Slice --------------------------------------------------------------------------------------------------
def slice_range(dim: int, start: int, end: int, step: int) -> range:
    """The indices ONNX Slice selects on one axis of length ``dim`` (its clamping rules)."""
    if step == 0:
        raise ShapeError("Slice: step 0")
    if start < 0:
        start += dim
    if end < 0:
        end += dim
    if step > 0:
        start, end = min(max(start, 0), dim), min(max(end, 0), dim)
    else:
        start, end = min(max(start, 0), dim - 1), min(max(end, -1), dim - 1)
    return range(start, end, step)


def _slice_infer(types: list[TensorType | None], a: dict[str, Any]) -> list[TensorType]:
    x = types[0]
    n = x.rank
    if not len(a["starts"]) == len(a["ends"]) == len(a["steps"]) == n:
        raise ShapeError(f"Slice: starts/ends/steps must have {n} entries")
    return [TensorType(x.dtype, tuple(len(slice_range(x.shape[i], int(a["starts"][i]), int(a["ends"][i]),
                                                       int(a["steps"][i]))) for i in range(n)))]


@defop("Slice", attrs={"starts": REQUIRED, "ends": REQUIRED, "steps": REQUIRED}, infer=_slice_infer)
def slice_ref(ins: list[np.ndarray | None], a: dict[str, Any]) -> np.ndarray:
    x = ins[0]
    for i in range(x.ndim):
        idx = np.asarray(slice_range(x.shape[i], int(a["starts"][i]), int(a["ends"][i]), int(a["steps"][i])),
                         dtype=np.int64)
        x = np.take(x, idx, axis=i)
    return x


# -- Split --------------------------------------------------------------------------------------------------
def _split_infer(types: list[TensorType | None], a: dict[str, Any]) -> list[TensorType]:
    x = types[0]
    ax = normalize_axis(a["axis"], x.rank)
    split = [int(s) for s in a["split"]]
    if any(s < 0 for s in split) or sum(split) != x.shape[ax]:
        raise ShapeError(f"Split: sizes {split} do not add up to {x.shape[ax]} (axis {ax} of {x})")
    return [TensorType(x.dtype, x.shape[:ax] + (s,) + x.shape[ax + 1:]) for s in split]


@defop("Split", attrs={"axis": REQUIRED, "split": REQUIRED}, infer=_split_infer)
def split_ref(ins: list[np.ndarray | None], a: dict[str, Any]) -> list[np.ndarray]:
    x = ins[0]
    ax = a["axis"] % x.ndim
    cuts = np.cumsum([int(s) for s in a["split"]])[:-1]
    return [np.ascontiguousarray(p) for p in np.split(x, cuts, axis=ax)]


# -- Expand, Tile ---------------------------------------------------------------------------------------------
def _expand_infer(types: list[TensorType | None], a: dict[str, Any]) -> list[TensorType]:
    x = types[0]
    shape = tuple(int(d) for d in a["shape"])
    if len(shape) < x.rank or broadcast_shapes(x.shape, shape) != shape:
        raise ShapeError(f"Expand: {x} does not broadcast to exactly {list(shape)}")
    return [TensorType(x.dtype, shape)]


@defop("Expand", attrs={"shape": REQUIRED}, infer=_expand_infer)
def expand_ref(ins: list[np.ndarray | None], a: dict[str, Any]) -> np.ndarray:
    """``shape`` is the resolved output shape (ONNX's shape operand broadcast with the input's)."""
    return np.ascontiguousarray(np.broadcast_to(ins[0], tuple(a["shape"])))


def _tile_infer(types: list[TensorType | None], a: dict[str, Any]) -> list[TensorType]:
    x = types[0]
    reps = [int(r) for r in a["repeats"]]
    if len(reps) != x.rank or any(r < 0 for r in reps):
        raise ShapeError(f"Tile: repeats {reps} invalid for {x}")
    return [TensorType(x.dtype, tuple(d * r for d, r in zip(x.shape, reps)))]


@defop("Tile", attrs={"repeats": REQUIRED}, infer=_tile_infer)
def tile_ref(ins: list[np.ndarray | None], a: dict[str, Any]) -> np.ndarray:
    return np.tile(ins[0], tuple(int(r) for r in a["repeats"]))


# -- Resize -------------------------------------------------------------------------------------------------
RESIZE_MODES = ("nearest", "linear", "cubic")
COORD_MODES = ("half_pixel", "half_pixel_symmetric", "pytorch_half_pixel", "align_corners", "asymmetric",
               "tf_half_pixel_for_nn", "tf_crop_and_resize")
NEAREST_MODES = ("round_prefer_floor", "round_prefer_ceil", "floor", "ceil")


def resize_source_coords(n_in: int, n_out: int, scale: float, coord_mode: str,
                         roi: tuple[float, float] = (0.0, 1.0)) -> np.ndarray:
    """``x_original`` of every output index on one axis (the spec's coordinate_transformation_mode).

    ``scale`` is the given scale, or ``n_out / n_in`` when sizes were given; ``length_resized`` in the
    spec's formulas is the integer output length ``n_out``.
    """
    j = np.arange(n_out, dtype=np.float64)
    scale = float(scale)
    if coord_mode == "half_pixel":
        return (j + 0.5) / scale - 0.5
    if coord_mode == "half_pixel_symmetric":
        adjustment = n_out / (scale * n_in)
        offset = n_in / 2 * (1 - adjustment)
        return offset + (j + 0.5) / scale - 0.5
    if coord_mode == "pytorch_half_pixel":
        return (j + 0.5) / scale - 0.5 if n_out > 1 else np.zeros(n_out)
    if coord_mode == "align_corners":
        return j * (n_in - 1) / (n_out - 1) if n_out > 1 else np.zeros(n_out)
    if coord_mode == "asymmetric":
        return j / scale
    if coord_mode == "tf_half_pixel_for_nn":
        return (j + 0.5) / scale
    if coord_mode == "tf_crop_and_resize":
        start, end = float(roi[0]), float(roi[1])
        if n_out > 1:
            return start * (n_in - 1) + j * (end - start) * (n_in - 1) / (n_out - 1)
        return np.full(n_out, 0.5 * (start + end) * (n_in - 1))
    raise ShapeError(f"Resize: unknown coordinate_transformation_mode {coord_mode!r}")


def _cubic_kernel(t: np.ndarray, A: float) -> np.ndarray:
    t = np.abs(t)
    near = ((A + 2) * t - (A + 3)) * t * t + 1
    far = ((A * t - 5 * A) * t + 8 * A) * t - 4 * A
    return np.where(t <= 1, near, np.where(t < 2, far, 0.0))


def resize_axis_taps(n_in: int, n_out: int, scale: float, a: dict[str, Any], axis: int
                     ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Resize along one axis as taps: ``(index[n_out, K], weight[n_out, K], outside[n_out])``.

    Output ``j`` is ``sum_k weight[j, k] * x[index[j, k]]`` (indices already clamped into the input, which
    is the spec's edge handling), or ``extrapolation_value`` where ``outside[j]`` (tf_crop_and_resize
    sampling outside the input).
    """
    roi = (a["roi"][axis], a["roi"][len(a["roi"]) // 2 + axis])
    x = resize_source_coords(n_in, n_out, scale, a["coordinate_transformation_mode"], roi)
    outside = np.zeros(n_out, dtype=bool)
    if a["coordinate_transformation_mode"] == "tf_crop_and_resize":
        outside = (x < 0) | (x > n_in - 1)
    mode = a["mode"]
    if mode == "nearest":
        nm = a["nearest_mode"][axis]
        fl = np.floor(x)
        frac = x - fl
        if nm == "round_prefer_floor":
            up = frac > 0.5
        elif nm == "round_prefer_ceil":
            up = frac >= 0.5
        elif nm == "floor":
            up = np.zeros(n_out, dtype=bool)
        elif nm == "ceil":
            up = frac > 0
        else:
            raise ShapeError(f"Resize: unknown nearest_mode {nm!r}")
        idx = (fl + up).astype(np.int64)[:, None]
        w = np.ones((n_out, 1))
    else:
        # the filter: linear (support 1) or cubic (support 2), stretched by 1/scale when antialiasing
        support = 1 if mode == "linear" else 2
        s = min(float(scale), 1.0) if a["antialias"] else 1.0
        first = math.floor(-support / s) + 1
        taps = 2 - 2 * first
        # the window of taps around x (at an integer x, the window ending at x: the spec's neighbours)
        base = np.floor(x)
        base = np.where(base == x, x - 1, base).astype(np.int64)
        idx = base[:, None] + np.arange(first, first + taps)[None, :]
        t = s * (idx - x[:, None])
        if mode == "linear":
            w = np.clip(1 - np.abs(t), 0, 1)
        else:
            w = _cubic_kernel(t, float(a["cubic_coeff_a"]))
        if a["antialias"]:
            w = w / w.sum(axis=1, keepdims=True)
        if a["exclude_outside"]:
            w = np.where((idx < 0) | (idx >= n_in), 0.0, w)
            total = w.sum(axis=1, keepdims=True)
            w = w / np.where(total == 0, 1.0, total)
    idx = np.clip(idx, 0, max(n_in - 1, 0))
    return idx, w, outside


def _resize_infer(types: list[TensorType | None], a: dict[str, Any]) -> list[TensorType]:
    x = types[0]
    r = x.rank
    sizes = tuple(int(s) for s in a["sizes"])
    if len(sizes) != r or len(a["scales"]) != r or len(a["roi"]) != 2 * r or len(a["nearest_mode"]) != r:
        raise ShapeError(f"Resize: sizes/scales/nearest_mode need {r} entries and roi {2 * r}")
    if a["mode"] not in RESIZE_MODES:
        raise ShapeError(f"Resize: unknown mode {a['mode']!r}")
    if a["coordinate_transformation_mode"] not in COORD_MODES:
        raise ShapeError(f"Resize: unknown coordinate_transformation_mode {a['coordinate_transformation_mode']!r}")
    if any(m not in NEAREST_MODES for m in a["nearest_mode"]):
        raise ShapeError(f"Resize: unknown nearest_mode in {a['nearest_mode']}")
    if any(s < 0 for s in sizes) or any(not (float(s) > 0 and math.isfinite(float(s))) for s in a["scales"]):
        raise ShapeError(f"Resize: invalid sizes {list(sizes)} or scales {list(a['scales'])}")
    if any(n > 0 and x.shape[i] == 0 for i, n in enumerate(sizes)):
        raise ShapeError(f"Resize: cannot resize an empty axis of {x} to {list(sizes)}")
    return [TensorType(x.dtype, sizes)]


@defop("Resize", attrs={
    "mode": REQUIRED, "sizes": REQUIRED, "scales": REQUIRED, "coordinate_transformation_mode": REQUIRED,
    "roi": REQUIRED, "nearest_mode": REQUIRED, "cubic_coeff_a": REQUIRED, "exclude_outside": REQUIRED,
    "extrapolation_value": REQUIRED, "antialias": REQUIRED,
}, infer=_resize_infer)
def resize_ref(ins: list[np.ndarray | None], a: dict[str, Any]) -> np.ndarray:
    """Separable: each axis is resampled with its taps as a dense (n_out x n_in) matrix."""
    x = ins[0]
    y = x if a["mode"] == "nearest" else x.astype(np.float64)
    outside = np.zeros(tuple(a["sizes"]), dtype=bool)
    for d in range(x.ndim):
        n_in, n_out = x.shape[d], int(a["sizes"][d])
        if n_out == 0 or n_in == 0:
            y = np.take(y, np.zeros(0, np.int64), axis=d)
            continue
        idx, w, out = resize_axis_taps(n_in, n_out, float(a["scales"][d]), a, d)
        if a["mode"] == "nearest":
            y = np.take(y, idx[:, 0], axis=d)
        else:
            m = np.zeros((n_out, n_in))
            np.add.at(m, (np.repeat(np.arange(n_out), idx.shape[1]), idx.ravel()), w.ravel())
            y = np.moveaxis(np.tensordot(m, y, axes=([1], [d])), 0, d)
        shape = [1] * x.ndim
        shape[d] = n_out
        outside = outside | out.reshape(shape)
    if np.issubdtype(x.dtype, np.integer) and y.dtype != x.dtype:
        info = np.iinfo(x.dtype)
        y = np.clip(np.rint(y), info.min, info.max)
    y = y.astype(x.dtype)
    if outside.any():
        y = np.where(outside, np.asarray(a["extrapolation_value"]).astype(x.dtype), y)
    return y
