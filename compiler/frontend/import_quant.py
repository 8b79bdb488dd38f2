"""Importers for QuantizeLinear, QLinearConv, QLinearMatMul, ConvInteger and MatMulInteger.

Every absent zero point becomes an explicit constant 0 of the right type; QuantizeLinear's output type
(from the zero point, ``output_dtype``, else uint8) becomes the explicit ``dtype`` attribute.
"""

from __future__ import annotations

import numpy as np

from cnnjit.ir import Value
from cnnjit.ir.errors import ShapeError
from cnnjit.ir.ops import normalize_axis
from cnnjit.ir.ops.quant import QUANT_RANGES
from cnnjit.ir.types import short_name

from .onnx_ops import _spatial_attrs
from .onnx_types import elem_dtype
from .registry import ImportContext, Unsupported, importer


def _zero_like(ctx: ImportContext, v: Value | None, dtype: np.dtype) -> Value:
    """``v``, or a constant scalar 0 of ``dtype`` when the optional zero point is absent."""
    return v if v is not None else ctx.const(np.zeros((), dtype))


def _arg(ins: list, i: int) -> Value | None:
    return ins[i] if len(ins) > i else None


@importer("QuantizeLinear")
def _quantize(ctx: ImportContext, ins: list) -> list:
    a = ctx.attrs()
    x, scale, zp = ins[0], ins[1], _arg(ins, 2)
    if zp is not None:
        dtype = zp.dtype
    elif a.get("output_dtype"):
        dtype = elem_dtype(a["output_dtype"], ctx.where())
    else:
        dtype = np.dtype(np.uint8)
    name = short_name(dtype) if dtype in (np.dtype(t) for t in (np.uint8, np.int8, np.uint16, np.int16)) else ""
    if name not in QUANT_RANGES:
        raise Unsupported(f"QuantizeLinear to {dtype} is not supported (int8, uint8, int16, uint16 are)")
    block = int(a.get("block_size", 0))
    if block < 0:
        raise ShapeError(f"{ctx.where()}: block_size {block} must be >= 0")
    if block or scale.type.size > 1:
        if ctx.opset < 13:
            raise ShapeError(f"{ctx.where()}: y_scale must be a scalar before opset 13")
        axis = normalize_axis(int(a.get("axis", 1)), len(x.shape))
    else:
        axis = 0
    precision = None
    if a.get("precision"):
        precision = short_name(elem_dtype(a["precision"], ctx.where()))
    attrs = {"axis": axis, "block_size": block, "dtype": name, "precision": precision}
    return ctx.emit("QuantizeLinear", [x, scale, zp], attrs)


def _kernel(a: dict, w: Value) -> list[int]:
    return list(a.get("kernel_shape") or w.shape[2:])


@importer("ConvInteger")
def _conv_integer(ctx: ImportContext, ins: list) -> list:
    x, w = ins[0], ins[1]
    a = ctx.attrs()
    sp = _spatial_attrs(ctx, x, _kernel(a, w))
    xz, wz = _zero_like(ctx, _arg(ins, 2), x.dtype), _zero_like(ctx, _arg(ins, 3), w.dtype)
    return ctx.emit("ConvInteger", [x, w, xz, wz], {**sp, "group": int(a.get("group", 1))})


@importer("QLinearConv")
def _qlinear_conv(ctx: ImportContext, ins: list) -> list:
    x, xs, xz, w, ws, wz, ys, yz = (_arg(ins, i) for i in range(8))
    a = ctx.attrs()
    sp = _spatial_attrs(ctx, x, _kernel(a, w))
    xz, wz, yz = _zero_like(ctx, xz, x.dtype), _zero_like(ctx, wz, w.dtype), _zero_like(ctx, yz, x.dtype)
    return ctx.emit("QLinearConv", [x, xs, xz, w, ws, wz, ys, yz, _arg(ins, 8)],
                    {**sp, "group": int(a.get("group", 1))})


@importer("MatMulInteger")
def _matmul_integer(ctx: ImportContext, ins: list) -> list:
    A, B = ins[0], ins[1]
    az, bz = _zero_like(ctx, _arg(ins, 2), A.dtype), _zero_like(ctx, _arg(ins, 3), B.dtype)
    return ctx.emit("MatMulInteger", [A, B, az, bz])


@importer("QLinearMatMul")
def _qlinear_matmul(ctx: ImportContext, ins: list) -> list:
    A, as_, az, B, bs, bz, ys, yz = (_arg(ins, i) for i in range(8))
    az, bz, yz = _zero_like(ctx, az, A.dtype), _zero_like(ctx, bz, B.dtype), _zero_like(ctx, yz, A.dtype)
    return ctx.emit("QLinearMatMul", [A, as_, az, B, bs, bz, ys, yz])


@importer("DynamicQuantizeLinear")
def _dynamic_quantize(ctx: ImportContext, ins: list) -> list:
    return ctx.emit("DynamicQuantizeLinear", ins[:1])
