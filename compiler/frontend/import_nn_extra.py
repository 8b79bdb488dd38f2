"""Importers for ConvTranspose, InstanceNormalization, ReduceMean and LayerNormalization.

ConvTranspose's ``auto_pad`` and ``output_shape`` are resolved here into explicit ``pads`` and
``output_padding`` (see ``cnnjit.ir.ops.nn_extra``), following the ONNX formula
``total = stride * (in - 1) + output_padding + (k - 1) * dilation + 1 - output_shape``:
SAME_UPPER puts ``total // 2`` at the start, NOTSET and SAME_LOWER put ``total - total // 2`` there. A negative
``total`` from an explicit ``output_shape`` (larger than the full result) becomes extra ``output_padding``; for
``auto_pad`` SAME_* (target ``in * stride``) a negative ``total`` is taken as 0, as onnx shape inference and
onnxruntime do (the onnx reference implementation instead pads at the start).
"""

from __future__ import annotations

from cnnjit.ir.errors import ShapeError
from cnnjit.ir.ops import normalize_axis
from cnnjit.ir.ops.nn_extra import convtranspose_full_dim

from .registry import CONST_OPERANDS, ImportContext, Unsupported, importer

CONST_OPERANDS["ReduceMean"] = frozenset({1})
for _op in ("ReduceSum", "ReduceMax", "ReduceMin"):
    CONST_OPERANDS[_op] = frozenset({1})

#: the opset from which each reduction takes ``axes`` as an input instead of an attribute
_AXES_INPUT_FROM = {"ReduceMean": 18, "ReduceSum": 13, "ReduceMax": 18, "ReduceMin": 18}


def _ints(v, n: int, default: int, what: str, where: str) -> list[int]:
    out = [int(i) for i in v] if v is not None else [default] * n
    if len(out) != n:
        raise ShapeError(f"{where}: {what} {out} must have {n} entries")
    return out


@importer("ConvTranspose")
def _conv_transpose(ctx: ImportContext, ins: list) -> list:
    x, w = ins[0], ins[1]
    a = ctx.attrs()
    n = len(x.shape) - 2
    where = ctx.where()
    if n < 1:
        raise ShapeError(f"{where}: input of shape {list(x.shape)} has no spatial dimensions")
    kernel = _ints(a.get("kernel_shape") or list(w.shape[2:]), n, 1, "kernel_shape", where)
    strides = _ints(a.get("strides"), n, 1, "strides", where)
    dilations = _ints(a.get("dilations"), n, 1, "dilations", where)
    out_pad = _ints(a.get("output_padding"), n, 0, "output_padding", where)
    if min(strides + dilations + kernel) < 1 or min(out_pad) < 0:
        raise ShapeError(f"{where}: invalid strides {strides}, dilations {dilations} or output_padding {out_pad}")
    auto = a.get("auto_pad", "NOTSET") or "NOTSET"
    if auto not in ("NOTSET", "VALID", "SAME_UPPER", "SAME_LOWER"):
        raise ShapeError(f"{where}: unknown auto_pad {auto!r}")
    out_shape = a.get("output_shape")
    if out_shape is not None and len(out_shape) == n + 2:  # some exporters include N and C
        out_shape = list(out_shape)[2:]
    if out_shape is not None or auto in ("SAME_UPPER", "SAME_LOWER"):
        target = (_ints(out_shape, n, 0, "output_shape", where) if out_shape is not None
                  else [x.shape[2 + i] * strides[i] for i in range(n)])
        begins, ends = [], []
        for i in range(n):
            total = convtranspose_full_dim(x.shape[2 + i], kernel[i], strides[i], dilations[i]) + out_pad[i] \
                - target[i]
            if total < 0 and out_shape is None:
                # SAME with a stride larger than the kernel's extent: onnx shape inference and onnxruntime
                # keep the full result (no padding) rather than growing it to in * stride
                total = 0
            if total < 0:  # larger than the full result: zeros (or contributions) appended at the end
                out_pad[i] -= total
                begins.append(0)
                ends.append(0)
                continue
            b = total // 2 if auto == "SAME_UPPER" else total - total // 2
            begins.append(b)
            ends.append(total - b)
        pads = begins + ends
    elif auto == "VALID":
        pads = [0] * 2 * n
    else:
        pads = _ints(a.get("pads"), 2 * n, 0, "pads", where)
    attrs = {"kernel_shape": tuple(kernel), "strides": tuple(strides), "pads": tuple(pads),
             "dilations": tuple(dilations), "output_padding": tuple(out_pad), "group": int(a.get("group", 1))}
    return ctx.emit("ConvTranspose", ins[:3], attrs)


@importer("InstanceNormalization")
def _instance_norm(ctx: ImportContext, ins: list) -> list:
    return ctx.emit("InstanceNormalization", ins, {"epsilon": float(ctx.attrs().get("epsilon", 1e-5))})


@importer("ReduceMean", "ReduceSum", "ReduceMax", "ReduceMin")
def _reduce_mean(ctx: ImportContext, ins: list) -> list:
    op = ctx.node.op_type
    a = ctx.attrs()
    x = ins[0]
    r = len(x.shape)
    keepdims = int(a.get("keepdims", 1))
    if ctx.opset < _AXES_INPUT_FROM[op]:
        axes = a.get("axes")
        noop = 0
    else:
        v = ctx.const_input(ins[1] if len(ins) > 1 else None, f"{op} axes")
        axes = None if v is None else [int(i) for i in v.reshape(-1)]
        noop = int(a.get("noop_with_empty_axes", 0))
    if not axes:
        if noop or r == 0:
            return ctx.emit("Identity", ins[:1])
        axes = list(range(r))
    norm = sorted(normalize_axis(int(i), r, "ReduceMean axis") for i in axes)
    if len(set(norm)) != len(norm):
        raise ShapeError(f"{ctx.where()}: repeated axes {list(axes)}")
    return ctx.emit(op, ins[:1], {"axes": tuple(norm), "keepdims": keepdims})


@importer("LayerNormalization")
def _layer_norm(ctx: ImportContext, ins: list) -> list:
    """Opset 17's LayerNormalization, output Y only (a model that uses Mean or InvStdDev is refused by
    name). A run-time scale or bias must have the normalized shape (a constant one may broadcast)."""
    x = ins[0]
    a = ctx.attrs()
    axis = normalize_axis(int(a.get("axis", -1)), len(x.shape), "LayerNormalization axis")
    norm = tuple(x.shape[axis:])
    for v in ins[1:3]:
        if v is not None and not v.is_const and tuple(v.shape) != norm:
            raise Unsupported(f"a run-time scale or bias of shape {tuple(v.shape)} (broadcast to {norm})")
    return ctx.emit("LayerNormalization", ins[:3], {"axis": axis, "epsilon": float(a.get("epsilon", 1e-5))})
