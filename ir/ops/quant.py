"""Quantized and integer ops: QuantizeLinear, QLinearConv, QLinearMatMul, ConvInteger, MatMulInteger.

(DequantizeLinear lives in ``movement.py``.)

Conventions, following the ONNX specification:

* QuantizeLinear: ``y = saturate(round_half_even(x / y_scale) + y_zero_point)``; the division is done in
  ``x``'s float type (or ``precision``'s), as onnx and onnxruntime do. ``dtype`` (the output element type,
  an IR short name such as ``"u8"``) is explicit; the zero point is optional (0).
* Integer products accumulate in int32 (wrapping), from operands with their zero points subtracted; zero
  padding of convolutions is zero *after* subtracting the zero point.
* QLinearConv / QLinearMatMul requantise the int32 accumulator ``acc``:
  ``y = saturate(round_half_even(acc * (x_scale * w_scale / y_scale)) + y_zero_point)`` — the real value
  ``acc * x_scale * w_scale`` divided by ``y_scale``, with the combined multiplier and the product evaluated
  in float32 (as onnxruntime does, so results match it bit for bit).
* Every zero point is an explicit input in the IR (the frontend supplies zeros where ONNX omits one).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ..errors import ShapeError
from ..types import DTYPES, TensorType
from . import REQUIRED, defop
from .nn import _SPATIAL, _conv_infer, conv_ref, matmul_shape

#: output element types QuantizeLinear supports, with their saturation ranges
QUANT_RANGES: dict[str, tuple[int, int]] = {
    "u8": (0, 255), "i8": (-128, 127), "u16": (0, 65535), "i16": (-32768, 32767),
}


def qrange(dtype: np.dtype) -> tuple[int, int]:
    """The saturation range of an integer dtype."""
    info = np.iinfo(dtype)
    return int(info.min), int(info.max)


def expand_qparam(v: np.ndarray, shape: tuple[int, ...], axis: int, block_size: int) -> np.ndarray:
    """A scale/zero point made broadcastable to ``shape``: per tensor, per ``axis``, or blocked along it."""
    v = np.asarray(v)
    if v.size == 1 and not block_size:
        return v.reshape(())
    if not block_size:
        dims = [1] * len(shape)
        dims[axis] = v.size
        return v.reshape(dims)
    v = np.repeat(v, block_size, axis=axis)
    return v.take(np.arange(shape[axis]), axis=axis)


def _check_qparam(p: TensorType, x: TensorType, a: dict[str, Any], what: str) -> None:
    ax, bs = a["axis"], a["block_size"]
    if bs:
        want = tuple(-(-d // bs) if i == ax else d for i, d in enumerate(x.shape))
        if p.shape != want:
            raise ShapeError(f"{what} {p} must have shape {list(want)} for block_size {bs} on axis {ax} of {x}")
    elif p.size != 1 and (p.rank != 1 or x.rank == 0 or p.shape[0] != x.shape[ax]):
        raise ShapeError(f"{what} {p} must be a scalar or have {x.shape[ax] if x.rank else 1} entries "
                         f"(axis {ax} of {x})")


# -- QuantizeLinear -------------------------------------------------------------------------------------
def _q_infer(types: list[TensorType | None], a: dict[str, Any]) -> list[TensorType]:
    x, scale = types[0], types[1]
    if a["dtype"] not in QUANT_RANGES:
        raise ShapeError(f"QuantizeLinear: output type {a['dtype']!r} is not supported")
    if x.rank and not 0 <= a["axis"] < x.rank or a["block_size"] < 0:
        raise ShapeError(f"QuantizeLinear: axis {a['axis']} / block_size {a['block_size']} invalid for {x}")
    _check_qparam(scale, x, a, "QuantizeLinear: y_scale")
    if len(types) > 2 and types[2] is not None:
        zp = types[2]
        _check_qparam(zp, x, a, "QuantizeLinear: y_zero_point")
        if zp.shape != scale.shape and zp.size != scale.size:
            raise ShapeError(f"QuantizeLinear: y_zero_point {zp} and y_scale {scale} differ in shape")
        if zp.dtype != DTYPES[a["dtype"]]:
            raise ShapeError(f"QuantizeLinear: y_zero_point {zp} is not of the output type {a['dtype']}")
    return [TensorType(DTYPES[a["dtype"]], x.shape)]


@defop("QuantizeLinear", inputs=(2, 3), infer=_q_infer,
       attrs={"axis": 0, "block_size": 0, "dtype": REQUIRED, "precision": None})
def quantize_ref(ins: list[np.ndarray | None], a: dict[str, Any]) -> np.ndarray:
    x, scale = ins[0], ins[1]
    zp = ins[2] if len(ins) > 2 and ins[2] is not None else np.zeros(1, np.int64)
    s = expand_qparam(scale, x.shape, a["axis"], a["block_size"])
    z = expand_qparam(zp, x.shape, a["axis"], a["block_size"]) if zp.size > 1 or a["block_size"] else zp.reshape(())
    if a["precision"]:
        p = DTYPES[a["precision"]]
        q = x.astype(p) / s.astype(p)
    else:
        q = x / s  # in the inputs' float type, as the spec's reference does
    q = np.rint(q).astype(np.float64) + z.astype(np.float64)
    lo, hi = QUANT_RANGES[a["dtype"]]
    return np.clip(q, lo, hi).astype(DTYPES[a["dtype"]])


# -- integer convolution and matrix product -----------------------------------------------------------------
def _int_conv(x: np.ndarray, w: np.ndarray, xz: np.ndarray, wz: np.ndarray, a: dict[str, Any]) -> np.ndarray:
    """``conv(x - xz, w - wz)`` accumulated exactly, as int64 (callers wrap to int32)."""
    X = x.astype(np.float64) - np.float64(np.asarray(xz).reshape(()))
    wz = np.asarray(wz, np.float64)
    W = w.astype(np.float64) - (wz.reshape((-1,) + (1,) * (w.ndim - 1)) if wz.size > 1 else wz.reshape(()))
    # float64 sums of integer products are exact below 2**53
    return np.rint(conv_ref([X, W], a)).astype(np.int64)


def _wrap32(v: np.ndarray) -> np.ndarray:
    return np.asarray(v, np.int64).astype(np.int32)


def requantize(acc: np.ndarray, multiplier: np.ndarray, y_zero_point: np.ndarray) -> np.ndarray:
    """``saturate(round_half_even(float32(acc) * multiplier) + y_zero_point)`` in y_zero_point's type."""
    v = np.rint(acc.astype(np.float32) * multiplier.astype(np.float32)).astype(np.float64)
    lo, hi = qrange(y_zero_point.dtype)
    return np.clip(v + y_zero_point.astype(np.float64), lo, hi).astype(y_zero_point.dtype)


def _f32(v: np.ndarray) -> np.ndarray:
    return np.asarray(v).astype(np.float32)


def _conv_integer_infer(types: list[TensorType | None], a: dict[str, Any]) -> list[TensorType]:
    x, w = types[0], types[1]
    (y,) = _conv_infer([x, w], a)
    if len(types) > 2 and types[2] is not None and types[2].size != 1:
        raise ShapeError(f"ConvInteger: x_zero_point {types[2]} must be a scalar")
    if len(types) > 3 and types[3] is not None and types[3].size not in (1, w.shape[0]):
        raise ShapeError(f"ConvInteger: w_zero_point {types[3]} must be a scalar or have {w.shape[0]} entries")
    return [TensorType(np.int32, y.shape)]


def saturating_pointwise(x: np.ndarray, w: np.ndarray, xz: np.ndarray) -> np.ndarray:
    """A 1x1 ConvInteger of uint8 ``x [N, C, ...]`` by int8 ``w [M, C, 1...]`` (zero point 0) as onnxruntime's
    x86 u8 x s8 kernels without VNNI compute it (``vpmaddubsw``): the raw bytes' products of channels ``2i``
    and ``2i + 1`` summed and saturated to int16, those sums accumulated, then ``xz * sum_c w`` subtracted
    (exact), as int64."""
    N, C = x.shape[:2]
    M = w.shape[0]
    X = np.asarray(x, np.int64).reshape(N, C, -1)
    W = np.asarray(w, np.int64).reshape(M, C)
    acc = np.zeros((N, M, X.shape[2]), np.int64)
    for c in range(0, C, 2):
        p = W[None, :, c, None] * X[:, None, c, :]
        if c + 1 < C:
            p = p + W[None, :, c + 1, None] * X[:, None, c + 1, :]
        acc += np.clip(p, -32768, 32767)
    acc -= np.int64(np.asarray(xz).reshape(())) * W.sum(1)[None, :, None]
    return acc.reshape((N, M) + x.shape[2:])


def _conv_integer_checked(types: list[TensorType | None], a: dict[str, Any]) -> list[TensorType]:
    out = _conv_integer_infer(types, a)
    if a.get("saturate"):  # only the form DynamicQuantizeLSTM's projection takes (``saturating_pointwise``)
        x, w = types[0], types[1]
        if (x.dtype != np.uint8 or w.dtype != np.int8 or a["group"] != 1 or any(k != 1 for k in w.shape[2:])
                or any(v != 1 for v in a["strides"]) or any(a["pads"])):
            raise ShapeError(f"ConvInteger(saturate=1): needs a 1x1 group-1 uint8 x int8 convolution, got "
                             f"x {x}, w {w}")
    return out


#: ``saturate`` (not in ONNX; 0 there): the products summed as onnxruntime's x86 kernels without VNNI do
#: (``saturating_pointwise``), set only by the DynamicQuantizeLSTM importer, which reproduces onnxruntime
@defop("ConvInteger", inputs=(4, 4), attrs={**_SPATIAL, "group": 1, "saturate": 0}, infer=_conv_integer_checked)
def conv_integer_ref(ins: list[np.ndarray | None], a: dict[str, Any]) -> np.ndarray:
    x, w, xz, wz = ins
    if a.get("saturate"):
        return _wrap32(saturating_pointwise(x, w, xz))
    return _wrap32(_int_conv(x, w, xz, wz, a))


def _qconv_infer(types: list[TensorType | None], a: dict[str, Any]) -> list[TensorType]:
    x, xs, xz, w, ws, wz, ys, yz = types[:8]
    (y,) = _conv_infer([x, w], a)
    M = w.shape[0]
    for t, what in ((xs, "x_scale"), (xz, "x_zero_point"), (ys, "y_scale"), (yz, "y_zero_point")):
        if t.size != 1:
            raise ShapeError(f"QLinearConv: {what} {t} must be a scalar")
    for t, what in ((ws, "w_scale"), (wz, "w_zero_point")):
        if t.size not in (1, M):
            raise ShapeError(f"QLinearConv: {what} {t} must be a scalar or have {M} entries")
    if len(types) > 8 and types[8] is not None and (types[8].shape != (M,) or types[8].dtype != np.int32):
        raise ShapeError(f"QLinearConv: bias {types[8]} must be int32 of shape ({M},)")
    if yz.dtype.kind not in "iu":
        raise ShapeError(f"QLinearConv: y_zero_point {yz} must be an integer type")
    return [TensorType(yz.dtype, y.shape)]


@defop("QLinearConv", inputs=(8, 9), attrs={**_SPATIAL, "group": 1}, infer=_qconv_infer)
def qlinear_conv_ref(ins: list[np.ndarray | None], a: dict[str, Any]) -> np.ndarray:
    x, xs, xz, w, ws, wz, ys, yz = ins[:8]
    b = ins[8] if len(ins) > 8 else None
    acc = _int_conv(x, w, xz, wz, a)
    if b is not None:
        acc = acc + b.astype(np.int64).reshape((1, -1) + (1,) * (x.ndim - 2))
    acc = _wrap32(acc)
    mult = _f32(xs).reshape(()) * _f32(ws).reshape(-1) / _f32(ys).reshape(())
    mult = mult.reshape((1, -1) + (1,) * (x.ndim - 2)) if mult.size > 1 else mult.reshape(())
    return requantize(acc, mult, np.asarray(yz).reshape(()))


def matmul_qparam(p: np.ndarray | TensorType, a_shape: tuple[int, ...], operand: str) -> tuple[int, ...]:
    """The shape a MatMul zero point/scale broadcasts with: per tensor (``()``), per row of A
    (``(..., M, 1)``) or per column of B (``(..., 1, N)``); 1-D vectors are rows/columns."""
    shape = tuple(p.shape)
    size = int(np.prod(shape, dtype=np.int64)) if shape else 1
    if size == 1:
        return ()
    if len(shape) == 1:
        return (shape[0], 1) if operand == "a" else (1, shape[0])
    return shape


def _mm_param_check(p: TensorType, a_shape: tuple[int, ...], b_shape: tuple[int, ...], op: str, what: str,
                    operand: str) -> None:
    """A per-row (of A / of the output) or per-column (of B) parameter must broadcast to
    ``(batch..., M, 1)`` / ``(batch..., 1, N)`` of the product without growing it."""
    shp = matmul_qparam(p, a_shape, operand)
    if not shp:
        return
    a2 = (1,) + a_shape if len(a_shape) == 1 else a_shape
    b2 = b_shape + (1,) if len(b_shape) == 1 else b_shape
    batch = tuple(np.broadcast_shapes(a2[:-2], b2[:-2]))
    target = batch + ((a2[-2], 1) if operand == "a" else (1, b2[-1]))
    try:
        ok = tuple(np.broadcast_shapes(shp, target)) == target
    except ValueError:
        ok = False
    if not ok:
        raise ShapeError(f"{op}: {what} {p} must be a scalar or broadcast to {list(target)} "
                         f"(per {'row' if operand == 'a' else 'column'}) for the product of "
                         f"{list(a_shape)} and {list(b_shape)}")


def _mm_check(types: list[TensorType | None], op: str) -> tuple[int, ...]:
    A, B = types[0], types[1]
    if A.dtype.kind not in "iu" or B.dtype.kind not in "iu":
        raise ShapeError(f"{op}: operands {A} and {B} must be integers")
    return matmul_shape(A.shape, B.shape)


def _mm_integer_infer(types: list[TensorType | None], a: dict[str, Any]) -> list[TensorType]:
    out = _mm_check(types, "MatMulInteger")
    A, B, az, bz = types
    _mm_param_check(az, A.shape, B.shape, "MatMulInteger", "a_zero_point", "a")
    _mm_param_check(bz, A.shape, B.shape, "MatMulInteger", "b_zero_point", "b")
    return [TensorType(np.int32, out)]


def _mm_operand(v: np.ndarray, zp: np.ndarray, operand: str) -> np.ndarray:
    z = np.asarray(zp, np.int64).reshape(matmul_qparam(zp, v.shape, operand))
    if v.ndim == 1:  # numpy promotes 1-D operands; the zero point follows
        return v.astype(np.int64) - z.reshape(-1)
    return v.astype(np.int64) - z


@defop("MatMulInteger", inputs=(4, 4), infer=_mm_integer_infer)
def matmul_integer_ref(ins: list[np.ndarray | None], a: dict[str, Any]) -> np.ndarray:
    A, B, az, bz = ins
    return _wrap32(np.matmul(_mm_operand(A, az, "a"), _mm_operand(B, bz, "b")))


def _qmm_infer(types: list[TensorType | None], a: dict[str, Any]) -> list[TensorType]:
    out = _mm_check([types[0], types[3]], "QLinearMatMul")
    A, as_, az, B, bs, bz, ys, yz = types
    for t, what, operand in ((as_, "a_scale", "a"), (az, "a_zero_point", "a"), (bs, "b_scale", "b"),
                             (bz, "b_zero_point", "b"), (ys, "y_scale", "a"), (yz, "y_zero_point", "a")):
        if t.rank > 1:
            raise ShapeError(f"QLinearMatMul: {what} {t} must be a scalar or a 1-D tensor")
        _mm_param_check(t, A.shape, B.shape, "QLinearMatMul", what, operand)
    if yz.dtype.kind not in "iu":
        raise ShapeError(f"QLinearMatMul: y_zero_point {yz} must be an integer type")
    return [TensorType(yz.dtype, out)]


@defop("QLinearMatMul", inputs=(8, 8), infer=_qmm_infer)
def qlinear_matmul_ref(ins: list[np.ndarray | None], a: dict[str, Any]) -> np.ndarray:
    A, as_, az, B, bs, bz, ys, yz = ins
    acc = _wrap32(np.matmul(_mm_operand(A, az, "a"), _mm_operand(B, bz, "b")))
    # per-row (a, y) and per-column (b) parameters, as broadcastable arrays
    sa = _f32(as_).reshape(matmul_qparam(as_, A.shape, "a"))
    sb = _f32(bs).reshape(matmul_qparam(bs, B.shape, "b"))
    sy = _f32(ys).reshape(matmul_qparam(ys, acc.shape, "a"))
    zy = np.asarray(yz).reshape(matmul_qparam(yz, acc.shape, "a"))
    if A.ndim == 1:
        sa, sy, zy = sa.reshape(-1), sy.reshape(-1), zy.reshape(-1)
    if B.ndim == 1:
        sb = sb.reshape(-1)
    mult = sa * sb / sy
    return requantize(acc, np.broadcast_to(mult, np.broadcast_shapes(mult.shape, acc.shape)) if mult.ndim else mult,
                      zy)


# -- DynamicQuantizeLinear ---------------------------------------------------------------------------------
def _dql_infer(types: list[TensorType | None], a: dict[str, Any]) -> list[TensorType]:
    x = types[0]
    if x.dtype != np.float32:
        raise ShapeError(f"DynamicQuantizeLinear: input {x} must be float32")
    return [TensorType(np.uint8, x.shape), TensorType(np.float32, ()), TensorType(np.uint8, ())]


@defop("DynamicQuantizeLinear", outputs=3, infer=_dql_infer)
def dynamic_quantize_ref(ins: list[np.ndarray | None], a: dict[str, Any]) -> list[np.ndarray]:
    """uint8 per-tensor quantisation with parameters from the data: the range ``[min(x, 0), max(x, 0)]``
    over 255 steps (scale 1 when that range is empty, as onnxruntime does), in float32 throughout."""
    x = np.asarray(ins[0], np.float32)
    lo = np.float32(min(float(x.min()), 0.0)) if x.size else np.float32(0)
    hi = np.float32(max(float(x.max()), 0.0)) if x.size else np.float32(0)
    scale = np.float32(1.0) if hi == lo else np.float32((hi - lo) / np.float32(255))
    zp = np.float32(np.rint(np.clip(np.float32(0) - lo / scale, 0, 255)))
    y = np.clip(np.rint(x / scale) + zp, 0, 255)
    return [y.astype(np.uint8), np.asarray(scale, np.float32), np.asarray(zp, np.uint8)]
