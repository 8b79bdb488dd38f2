"""More neural-network ops: ConvTranspose, InstanceNormalization, ReduceMean, LayerNormalization.

ConvTranspose is N-dimensional like Conv. Its ``pads`` (``[b_1..b_n, e_1..e_n]``, non-negative) crop the
"full" transposed-convolution result, whose length per axis is ``(in - 1) * stride + (k - 1) * dilation + 1``;
``output_padding`` appends zeros-or-contributions at the high end. The frontend resolves ``auto_pad`` and
``output_shape`` into these two (an output larger than the full result becomes extra ``output_padding``).
"""

from __future__ import annotations

import itertools
from typing import Any

import numpy as np

from ..errors import ShapeError
from ..types import TensorType
from . import REQUIRED, defop, normalize_axis, post_infer, post_ref


# -- ConvTranspose ---------------------------------------------------------------------------------------
def convtranspose_full_dim(size: int, k: int, s: int, d: int) -> int:
    """Length of the uncropped transposed-convolution output along one axis."""
    return (size - 1) * s + (k - 1) * d + 1


def _ct_out_sp(x_shape: tuple[int, ...], a: dict[str, Any]) -> tuple[int, ...]:
    n = len(x_shape) - 2
    return tuple(
        convtranspose_full_dim(x_shape[2 + i], a["kernel_shape"][i], a["strides"][i], a["dilations"][i])
        + a["output_padding"][i] - a["pads"][i] - a["pads"][n + i]
        for i in range(n)
    )


def _ct_infer(types: list[TensorType | None], a: dict[str, Any]) -> list[TensorType]:
    x, w = types[0], types[1]
    n = x.rank - 2
    if n < 1:
        raise ShapeError(f"ConvTranspose needs an input of rank >= 3 (N, C, spatial...), got {x}")
    for key in ("kernel_shape", "strides", "dilations"):
        if len(a[key]) != n or any(int(v) < 1 for v in a[key]):
            raise ShapeError(f"ConvTranspose: {key}={list(a[key])} must be {n} positive integers for input {x}")
    if len(a["pads"]) != 2 * n or any(int(p) < 0 for p in a["pads"]):
        raise ShapeError(f"ConvTranspose: pads={list(a['pads'])} must be {2 * n} non-negative integers")
    if len(a["output_padding"]) != n or any(int(p) < 0 for p in a["output_padding"]):
        raise ShapeError(f"ConvTranspose: output_padding={list(a['output_padding'])} must be {n} integers >= 0")
    g = a["group"]
    if w.rank != x.rank:
        raise ShapeError(f"ConvTranspose: weight {w} must have the input's rank {x.rank}")
    if g < 1 or x.shape[1] % g or w.shape[0] != x.shape[1]:
        raise ShapeError(f"ConvTranspose: group={g} does not fit input channels {x.shape[1]} and weight {w}")
    if tuple(w.shape[2:]) != tuple(a["kernel_shape"]):
        raise ShapeError(f"ConvTranspose: kernel_shape {list(a['kernel_shape'])} disagrees with weight {w}")
    M = w.shape[1] * g
    if len(types) > 2 and types[2] is not None and types[2].shape != (M,):
        raise ShapeError(f"ConvTranspose: bias {types[2]} must have shape ({M},)")
    out_sp = _ct_out_sp(x.shape, a)
    if any(d < 1 for d in out_sp):
        raise ShapeError(f"ConvTranspose: pads {list(a['pads'])} leave no output for input {x}")
    return [TensorType(x.dtype, (x.shape[0], M) + out_sp)]


def convtranspose_ref(ins: list[np.ndarray | None], a: dict[str, Any]) -> np.ndarray:
    x, w = ins[0].astype(np.float64), ins[1].astype(np.float64)
    b = ins[2] if len(ins) > 2 else None
    g = a["group"]
    N, C = x.shape[:2]
    in_sp = x.shape[2:]
    n = len(in_sp)
    cg, mg = C // g, w.shape[1]
    full = tuple(
        convtranspose_full_dim(in_sp[i], a["kernel_shape"][i], a["strides"][i], a["dilations"][i])
        + a["output_padding"][i]
        for i in range(n)
    )
    buf = np.zeros((N, g, mg) + full)
    xg = x.reshape((N, g, cg) + in_sp)
    wg = w.reshape((g, cg, mg) + tuple(a["kernel_shape"]))
    for kidx in itertools.product(*(range(k) for k in a["kernel_shape"])):
        contrib = np.einsum("ngc...,gcm->ngm...", xg, wg[(Ellipsis,) + kidx])
        sl = tuple(
            slice(kidx[i] * a["dilations"][i], kidx[i] * a["dilations"][i] + (in_sp[i] - 1) * a["strides"][i] + 1,
                  a["strides"][i])
            for i in range(n)
        )
        buf[(slice(None),) * 3 + sl] += contrib
    crop = tuple(slice(a["pads"][i], full[i] - a["pads"][n + i]) for i in range(n))
    y = buf[(slice(None),) * 3 + crop].reshape((N, g * mg) + tuple(full[i] - a["pads"][i] - a["pads"][n + i]
                                                                  for i in range(n)))
    if b is not None:
        y = y + b.astype(np.float64).reshape((1, -1) + (1,) * n)
    return y.astype(ins[0].dtype)


# with a fusable epilogue (``post``, see ``post_infer``), like Conv
defop("ConvTranspose", inputs=(2, 8), infer=post_infer(_ct_infer, 3),
      attrs={"kernel_shape": REQUIRED, "strides": REQUIRED, "pads": REQUIRED, "dilations": REQUIRED,
             "output_padding": REQUIRED, "group": 1, "post": ()})(post_ref(convtranspose_ref, 3))


# -- InstanceNormalization --------------------------------------------------------------------------------
def _in_infer(types: list[TensorType | None], a: dict[str, Any]) -> list[TensorType]:
    x = types[0]
    if x.rank < 3:
        raise ShapeError(f"InstanceNormalization needs rank >= 3 (N, C, spatial...), got {x}")
    for t in types[1:]:
        if t.shape != (x.shape[1],):
            raise ShapeError(f"InstanceNormalization: parameter {t} must have shape ({x.shape[1]},)")
    return [TensorType(x.dtype, x.shape)]


@defop("InstanceNormalization", inputs=(3, 3), attrs={"epsilon": 1e-5}, infer=_in_infer)
def instancenorm_ref(ins: list[np.ndarray | None], a: dict[str, Any]) -> np.ndarray:
    x, s, b = (np.asarray(t, np.float64) for t in ins)
    axes = tuple(range(2, x.ndim))
    mean = x.mean(axis=axes, keepdims=True)
    var = ((x - mean) ** 2).mean(axis=axes, keepdims=True)
    shp = (1, -1) + (1,) * (x.ndim - 2)
    y = s.reshape(shp) * (x - mean) / np.sqrt(var + a["epsilon"]) + b.reshape(shp)
    return y.astype(ins[0].dtype)


# -- ReduceMean --------------------------------------------------------------------------------------------
def _reduce_infer(types: list[TensorType | None], a: dict[str, Any]) -> list[TensorType]:
    x = types[0]
    axes = [normalize_axis(int(i), x.rank, "ReduceMean axis") for i in a["axes"]]
    if not axes or len(set(axes)) != len(axes) or list(axes) != sorted(axes):
        raise ShapeError(f"ReduceMean: axes {list(a['axes'])} must be distinct, sorted and non-empty")
    if any(x.shape[i] == 0 for i in axes):
        raise ShapeError(f"ReduceMean: cannot average over an empty axis of {x}")
    if a["keepdims"]:
        shape = tuple(1 if i in axes else d for i, d in enumerate(x.shape))
    else:
        shape = tuple(d for i, d in enumerate(x.shape) if i not in axes)
    return [TensorType(x.dtype, shape)]


@defop("ReduceMean", attrs={"axes": REQUIRED, "keepdims": 1}, infer=_reduce_infer)
def reduce_mean_ref(ins: list[np.ndarray | None], a: dict[str, Any]) -> np.ndarray:
    x = ins[0]
    y = x.astype(np.float64).mean(axis=tuple(a["axes"]), keepdims=bool(a["keepdims"]))
    if np.issubdtype(x.dtype, np.integer):
        y = np.trunc(y)
    return np.asarray(y).astype(x.dtype)


def _reduce_ref(fn):
    def ref(ins: list[np.ndarray | None], a: dict[str, Any]) -> np.ndarray:
        x = ins[0]
        y = fn(x.astype(np.float64), axis=tuple(a["axes"]), keepdims=bool(a["keepdims"]))
        return np.asarray(y).astype(x.dtype)

    return ref


for _name, _fn in (("ReduceSum", np.sum), ("ReduceMax", np.max), ("ReduceMin", np.min)):
    defop(_name, attrs={"axes": REQUIRED, "keepdims": 1}, infer=_reduce_infer)(_reduce_ref(_fn))


# -- LayerNormalization ------------------------------------------------------------------------------------
def _ln_infer(types: list[TensorType | None], a: dict[str, Any]) -> list[TensorType]:
    x = types[0]
    axis = a["axis"]
    if not 0 <= axis < x.rank:
        raise ShapeError(f"LayerNormalization: axis {axis} must be in [0, {x.rank}) for input {x}")
    norm = x.shape[axis:]
    for t in types[1:]:
        if t is not None and (t.rank > len(norm) or np.broadcast_shapes(t.shape, norm) != norm):
            raise ShapeError(f"LayerNormalization: scale/bias {t} does not broadcast to the normalized shape {norm}")
    if any(d == 0 for d in norm):
        raise ShapeError(f"LayerNormalization: cannot normalize over an empty axis of {x}")
    return [TensorType(x.dtype, x.shape)]


@defop("LayerNormalization", inputs=(2, 3), attrs={"axis": REQUIRED, "epsilon": 1e-5}, infer=_ln_infer)
def layernorm_ref(ins: list[np.ndarray | None], a: dict[str, Any]) -> np.ndarray:
    """``(x - mean) / sqrt(var + epsilon) * scale + bias`` over the axes from ``axis`` on (float64)."""
    x = np.asarray(ins[0], np.float64)
    axes = tuple(range(a["axis"], x.ndim))
    mean = x.mean(axis=axes, keepdims=True)
    var = ((x - mean) ** 2).mean(axis=axes, keepdims=True)
    y = (x - mean) / np.sqrt(var + a["epsilon"]) * np.asarray(ins[1], np.float64)
    if len(ins) > 2 and ins[2] is not None:
        y = y + np.asarray(ins[2], np.float64)
    return y.astype(ins[0].dtype)
