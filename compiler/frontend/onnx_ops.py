"""Per-op ONNX importers: normalise every opset variant (7 and newer) into the IR's canonical op.

Each importer takes the import context and the node's input values and returns its output values.
Operands the IR wants as attributes (shapes, axes, clip bounds, pads) must be constants by the time they
arrive here; the eager constant folding in ``ImportContext.emit`` makes shape subgraphs so.
"""

from __future__ import annotations

import numpy as np

from cnnjit.ir import Value
from cnnjit.ir.errors import ShapeError
from cnnjit.ir.ops import normalize_axis
from cnnjit.ir.types import short_name

from .onnx_types import elem_dtype
from .registry import IMPORTERS, ImportContext, Importer, Unsupported, importer


def _plain(ir_op: str, keep: tuple[str, ...] = ()) -> Importer:
    """An importer that copies the listed attributes and passes inputs through unchanged."""

    def imp(ctx: ImportContext, ins: list) -> list:
        a = ctx.attrs()
        return ctx.emit(ir_op, ins, {k: a[k] for k in keep if k in a})

    return imp


for _op, _keep in {
    "Relu": (), "Sigmoid": (), "Tanh": (), "HardSwish": (), "Exp": (), "Abs": (), "Neg": (), "Sqrt": (),
    "Erf": (), "Softplus": (), "Mish": (), "Sign": (), "Shrink": ("lambd", "bias"),
    "LeakyRelu": ("alpha",), "HardSigmoid": ("alpha", "beta"),
    "Elu": ("alpha",), "Selu": ("alpha", "gamma"), "Gelu": ("approximate",), "Identity": (),
    "Sum": (), "Max": (), "Min": (), "Mean": (), "MatMul": (), "GlobalAveragePool": (), "GlobalMaxPool": (),
    "LRN": ("size", "alpha", "beta", "bias"), "Gemm": ("alpha", "beta", "transA", "transB"),
}.items():
    IMPORTERS[_op] = _plain(_op, _keep)


@importer("Add", "Sub", "Mul", "Div", "Pow")
def _binary(ctx: ImportContext, ins: list) -> list:
    """Binary arithmetic; before opset 7, ``broadcast=1`` with ``axis`` aligns B with A at ``axis``."""
    a = ctx.attrs()
    x, y = ins
    if ctx.opset < 7 and a.get("broadcast", 0) and "axis" in a:
        ra, rb = len(x.shape), len(y.shape)
        axis = a["axis"] + ra if a["axis"] < 0 else a["axis"]
        trailing = ra - axis - rb
        if trailing < 0:
            raise ShapeError(f"{ctx.where()}: legacy broadcast of {list(y.shape)} at axis {axis} into "
                             f"{list(x.shape)} does not fit")
        if trailing:
            y = _reshape_to(ctx, y, tuple(y.shape) + (1,) * trailing)[0]
    return ctx.emit(ctx.node.op_type, [x, y])


@importer("PRelu")
def _prelu(ctx: ImportContext, ins: list) -> list:
    """PRelu; before opset 7 a 1-D slope is per channel (axis 1), not numpy-broadcast from the right."""
    x, slope = ins
    if ctx.opset < 7 and len(slope.shape) == 1 and slope.shape[0] > 1 and len(x.shape) > 2:
        slope = _reshape_to(ctx, slope, (slope.shape[0],) + (1,) * (len(x.shape) - 2))[0]
    return ctx.emit("PRelu", [x, slope])


@importer("Clip")
def _clip(ctx: ImportContext, ins: list) -> list:
    a = ctx.attrs()
    x = ins[0]
    if ctx.opset < 11:
        lo, hi = a.get("min"), a.get("max")
    else:
        # a bound computed at run time (a log-mel front end's ``max(x) - 80 dB`` floor) is a Max / Min with
        # the scalar: ``min(max(x, lo), hi)`` is Clip's definition, so the order of the two is kept
        bounds = [ins[i] if len(ins) > i else None for i in (1, 2)]
        lo, hi = (None if b is None or not b.is_const else b.const.reshape(()).item() for b in bounds)
        if bounds[0] is not None and not bounds[0].is_const:
            x = ctx.emit("Max", [x, ctx.emit("Reshape", [bounds[0]], {"shape": ()})[0]])[0]
        if bounds[1] is not None and not bounds[1].is_const:
            y = ctx.emit("Clip", [x], {"min": lo, "max": None})[0] if lo is not None else x
            return ctx.emit("Min", [y, ctx.emit("Reshape", [bounds[1]], {"shape": ()})[0]])
    return ctx.emit("Clip", [x], {"min": lo, "max": hi})


@importer("Dropout")
def _dropout(ctx: ImportContext, ins: list) -> list:
    # inference: Dropout is the identity; the optional mask output is all ones
    a = ctx.attrs()
    training = ctx.const_input(ins[2], "Dropout training_mode") if len(ins) > 2 and ins[2] is not None else None
    if (training is not None and bool(training.reshape(()))) or a.get("is_test", 1) == 0 and ctx.opset < 7:
        raise Unsupported("training-mode Dropout is not supported (cnnjit runs inference)")
    y = ctx.emit("Identity", ins[:1])[0]
    mask = ctx.const(np.ones(ins[0].shape, dtype=np.bool_))
    return [y, mask]


@importer("Cast")
def _cast(ctx: ImportContext, ins: list) -> list:
    to = elem_dtype(ctx.attrs()["to"], ctx.where())
    return ctx.emit("Cast", ins, {"to": short_name(to)})


@importer("Constant")
def _constant(ctx: ImportContext, ins: list) -> list:
    a = ctx.attrs()
    if "value" in a:
        return [ctx.const(np.asarray(a["value"]))]
    for key, dt in (("value_float", np.float32), ("value_floats", np.float32), ("value_int", np.int64),
                    ("value_ints", np.int64)):
        if key in a:
            return [ctx.const(np.asarray(a[key], dtype=dt))]
    raise Unsupported(f"Constant with attribute(s) {sorted(a)} (sparse or string constants) is not supported")


@importer("ConstantOfShape")
def _constant_of_shape(ctx: ImportContext, ins: list) -> list:
    shape = ctx.const_input(ins[0], "ConstantOfShape shape").astype(np.int64)
    if np.any(shape < 0):
        raise ShapeError(f"{ctx.where()}: negative dimension in shape {shape.tolist()}")
    value = ctx.attrs().get("value", np.zeros(1, np.float32))
    value = np.asarray(value).reshape(-1)
    size = int(np.prod(shape)) * value.dtype.itemsize
    if size > ctx.max_tensor_bytes:
        raise ShapeError(f"{ctx.where()}: shape {shape.tolist()} is too large")
    return [ctx.const(np.full(tuple(shape.tolist()), value[0], dtype=value.dtype))]


@importer("Shape")
def _shape(ctx: ImportContext, ins: list) -> list:
    a = ctx.attrs()
    shape = np.asarray(ins[0].shape, dtype=np.int64)
    r = len(shape)
    start = a.get("start", 0)
    end = a.get("end", r)
    start = min(max(start + r if start < 0 else start, 0), r)
    end = min(max(end + r if end < 0 else end, 0), r)
    return [ctx.const(shape[start:end])]


def _reshape_target(shape_in: tuple[int, ...], target: np.ndarray, allowzero: bool, where: str) -> tuple:
    target = [int(d) for d in target.reshape(-1)]
    out = []
    for i, d in enumerate(target):
        if d == 0 and not allowzero:
            if i >= len(shape_in):
                raise ShapeError(f"{where}: dim {i} is 0 (copy) but the input has rank {len(shape_in)}")
            out.append(shape_in[i])
        else:
            out.append(d)
    if out.count(-1) > 1:
        raise ShapeError(f"{where}: more than one -1 in shape {target}")
    size = int(np.prod(shape_in, dtype=np.int64))
    if -1 in out:
        known = int(np.prod([d for d in out if d != -1], dtype=np.int64))
        if known == 0 or size % known:
            raise ShapeError(f"{where}: cannot infer the -1 in {target} for input shape {list(shape_in)}")
        out[out.index(-1)] = size // known
    if any(d < 0 for d in out):
        raise ShapeError(f"{where}: invalid dimension in shape {target}")
    return tuple(out)


def _reshape_to(ctx: ImportContext, x: Value, shape: tuple) -> list:
    return ctx.emit("Reshape", [x], {"shape": tuple(int(d) for d in shape)})


@importer("Reshape")
def _reshape(ctx: ImportContext, ins: list) -> list:
    a = ctx.attrs()
    if ctx.opset < 5:
        target = np.asarray(a["shape"])
    else:
        target = ctx.const_input(ins[1], "Reshape shape")
    shape = _reshape_target(ins[0].shape, target, bool(a.get("allowzero", 0)), ctx.where())
    return _reshape_to(ctx, ins[0], shape)


@importer("Flatten")
def _flatten(ctx: ImportContext, ins: list) -> list:
    x = ins[0]
    r = len(x.shape)
    axis = ctx.attrs().get("axis", 1)
    if not -r <= axis <= r:
        raise ShapeError(f"{ctx.where()}: axis {axis} out of range for rank {r}")
    axis = axis + r if axis < 0 else axis
    outer = int(np.prod(x.shape[:axis], dtype=np.int64))
    return _reshape_to(ctx, x, (outer, int(np.prod(x.shape[axis:], dtype=np.int64))))


def _axes(ctx: ImportContext, ins: list, what: str) -> list[int] | None:
    a = ctx.attrs()
    if ctx.opset < 13:
        return a.get("axes")
    v = ctx.const_input(ins[1] if len(ins) > 1 else None, f"{what} axes")
    return None if v is None else [int(i) for i in v.reshape(-1)]


@importer("Squeeze")
def _squeeze(ctx: ImportContext, ins: list) -> list:
    x = ins[0]
    r = len(x.shape)
    axes = _axes(ctx, ins, "Squeeze")
    if axes is None:
        axes = [i for i, d in enumerate(x.shape) if d == 1]
    axes = {normalize_axis(i, r) for i in axes}
    for i in axes:
        if x.shape[i] != 1:
            raise ShapeError(f"{ctx.where()}: cannot squeeze axis {i} of length {x.shape[i]}")
    return _reshape_to(ctx, x, tuple(d for i, d in enumerate(x.shape) if i not in axes))


@importer("Unsqueeze")
def _unsqueeze(ctx: ImportContext, ins: list) -> list:
    x = ins[0]
    axes = _axes(ctx, ins, "Unsqueeze")
    if axes is None:
        raise ShapeError(f"{ctx.where()}: Unsqueeze needs axes")
    r = len(x.shape) + len(axes)
    axes = sorted(normalize_axis(i, r) for i in axes)
    if len(set(axes)) != len(axes):
        raise ShapeError(f"{ctx.where()}: repeated axes {axes}")
    shape = list(x.shape)
    for i in axes:
        shape.insert(i, 1)
    return _reshape_to(ctx, x, tuple(shape))


@importer("Transpose")
def _transpose(ctx: ImportContext, ins: list) -> list:
    perm = ctx.attrs().get("perm")
    if perm is None:
        perm = list(range(len(ins[0].shape)))[::-1]
    return ctx.emit("Transpose", ins, {"perm": tuple(int(p) for p in perm)})


@importer("Concat")
def _concat(ctx: ImportContext, ins: list) -> list:
    a = ctx.attrs()
    if "axis" not in a:
        raise ShapeError(f"{ctx.where()}: Concat needs an axis attribute")
    r = len(ins[0].shape)
    return ctx.emit("Concat", ins, {"axis": normalize_axis(a["axis"], r)})


@importer("Gather")
def _gather(ctx: ImportContext, ins: list) -> list:
    axis = ctx.attrs().get("axis", 0)
    return ctx.emit("Gather", ins, {"axis": normalize_axis(axis, len(ins[0].shape))})


@importer("Softmax", "LogSoftmax")
def _softmax(ctx: ImportContext, ins: list) -> list:
    op = ctx.node.op_type
    x = ins[0]
    r = len(x.shape)
    if ctx.opset >= 13:
        return ctx.emit(op, ins, {"axis": normalize_axis(ctx.attrs().get("axis", -1), r)})
    # before opset 13: coerce to 2-D at `axis` (default 1), softmax over the flattened tail
    axis = ctx.attrs().get("axis", 1)
    axis = axis + r if axis < 0 else axis
    if not 0 <= axis <= r:
        raise ShapeError(f"{ctx.where()}: axis out of range")
    if axis == r - 1:
        return ctx.emit(op, ins, {"axis": axis})
    outer = int(np.prod(x.shape[:axis], dtype=np.int64))
    flat = _reshape_to(ctx, x, (outer, int(np.prod(x.shape[axis:], dtype=np.int64))))[0]
    y = ctx.emit(op, [flat], {"axis": 1})[0]
    return _reshape_to(ctx, y, x.shape)


def _resolve_pads(ctx: ImportContext, x_shape: tuple, kernel: list, strides: list, dilations: list,
                  ceil: bool = False) -> list[int]:
    """Explicit ``[begins..., ends...]`` pads from ``pads`` / ``auto_pad``."""
    a = ctx.attrs()
    n = len(kernel)
    auto = a.get("auto_pad", "NOTSET")
    if auto in ("NOTSET", ""):
        pads = list(a.get("pads", [0] * 2 * n))
        if len(pads) != 2 * n:
            raise ShapeError(f"{ctx.where()}: pads {pads} must have {2 * n} entries")
        return [int(p) for p in pads]
    if auto == "VALID":
        return [0] * 2 * n
    if auto not in ("SAME_UPPER", "SAME_LOWER"):
        raise ShapeError(f"{ctx.where()}: unknown auto_pad {auto!r}")
    begins, ends = [], []
    for i in range(n):
        size = x_shape[2 + i]
        out = -(-size // strides[i])
        total = max(0, (out - 1) * strides[i] + (kernel[i] - 1) * dilations[i] + 1 - size)
        small, big = total // 2, total - total // 2
        b, e = (small, big) if auto == "SAME_UPPER" else (big, small)
        begins.append(b)
        ends.append(e)
    return begins + ends


def _spatial_attrs(ctx: ImportContext, x: Value, kernel: list | None, ceil: bool = False) -> dict:
    a = ctx.attrs()
    n = len(x.shape) - 2
    if n < 1:
        raise ShapeError(f"{ctx.where()}: input of shape {list(x.shape)} has no spatial dimensions")
    kernel = [int(k) for k in (kernel if kernel is not None else a.get("kernel_shape", []))]
    if len(kernel) != n:
        raise ShapeError(f"{ctx.where()}: kernel_shape {kernel} does not match {n} spatial dims")
    strides = [int(s) for s in a.get("strides", [1] * n)]
    dilations = [int(d) for d in a.get("dilations", [1] * n)]
    if len(strides) != n or len(dilations) != n or min(strides + dilations) < 1:
        raise ShapeError(f"{ctx.where()}: strides {strides} / dilations {dilations} invalid for {n}-D")
    pads = _resolve_pads(ctx, x.shape, kernel, strides, dilations, ceil)
    return {"kernel_shape": tuple(kernel), "strides": tuple(strides), "pads": tuple(pads),
            "dilations": tuple(dilations)}


def _space_to_depth_1d(ctx: ImportContext, x: Value, w: Value, k: int, s: int) -> tuple[Value, Value, int, int]:
    """A 1-D Conv of stride ``s`` (an STFT as a Conv: kernel 256, stride 128; a mel front end's 512 / 160)
    as a stride-1 Conv of kernel ``q = ceil(k / s)`` over ``C * s`` channels: ``x[c, o*s + j*s + r]`` is
    ``x'[c*s + r, o + j]`` with ``x' = x`` cut into blocks of ``s`` (the last one padded with zeros) and
    transposed; the weights are regrouped to match, padded with zeros to ``q * s`` taps. Stride 1 is what
    the SIMD kernels run; the scalar kernel ran such a layer at 6 GFLOP/s."""
    N, C, L = x.shape
    M = w.shape[0]
    q = -(-k // s)
    T = (L - k) // s + q  # input blocks the outputs read
    if T * s < L:
        x = ctx.emit("Slice", [x], {"starts": (0, 0, 0), "ends": (N, C, T * s), "steps": (1, 1, 1)})[0]
    elif T * s > L:
        x = ctx.emit("Pad", [x], {"pads": (0, 0, 0, 0, 0, T * s - L), "mode": "constant", "value": 0.0})[0]
    xb = _reshape_to(ctx, x, (N, C, T, s))[0]
    xt = ctx.emit("Transpose", [xb], {"perm": (0, 1, 3, 2)})[0]
    wk = np.zeros((M, C, q * s), np.float32)
    wk[:, :, :k] = w.const
    wt = np.ascontiguousarray(wk.reshape(M, C, q, s).transpose(0, 1, 3, 2)).reshape(M, C * s, q)
    return _reshape_to(ctx, xt, (N, C * s, T))[0], ctx.const(wt), q, 1


@importer("Conv")
def _conv(ctx: ImportContext, ins: list) -> list:
    x, w = ins[0], ins[1]
    a = ctx.attrs()
    kernel = a.get("kernel_shape") or list(w.shape[2:])
    sp = _spatial_attrs(ctx, x, kernel)
    group = int(a.get("group", 1))
    if len(x.shape) == 3 and w.is_const and x.dtype == np.float32:
        # a 1-D Conv (audio front ends, TDNNs) as a 2-D one of height 1: the same memory, and the SIMD
        # variants (pointwise, depthwise, register-tiled) are all written for 2-D
        k, (s,), (d,), (p0, p1) = sp["kernel_shape"][0], sp["strides"], sp["dilations"], sp["pads"]
        if s > 2 and k >= s and d == 1 and group == 1 and p0 == p1 == 0 and x.shape[2] >= k:
            x, w, k, s = _space_to_depth_1d(ctx, x, w, k, s)
        x2 = _reshape_to(ctx, x, (*x.shape[:2], 1, x.shape[2]))[0]
        w2 = _reshape_to(ctx, w, (*w.shape[:2], 1, k))[0]
        y2 = ctx.emit("Conv", [x2, w2, *ins[2:]], {"kernel_shape": (1, k), "strides": (1, s), "pads": (0, p0, 0, p1),
                                                   "dilations": (1, d), "group": group})[0]
        return _reshape_to(ctx, y2, (*y2.shape[:2], y2.shape[3]))
    if (len(x.shape) == 4 and x.shape[2] == 1 and w.is_const and x.dtype == np.float32 and group == 1
            and kernel[0] == 1 and tuple(sp["strides"][:1]) == (1,) and tuple(sp["dilations"]) == (1, 1)
            and not any(sp["pads"]) and sp["strides"][1] > 2 and x.shape[3] >= kernel[1] >= sp["strides"][1]):
        # a 2-D Conv over a height-1 input with a strided 1 x k kernel (basic-pitch's CQT: 1x256 at strides
        # 4-256) is the 1-D case: blocks of the input as channels, a stride-1 Conv (it ran on ``direct``)
        k, s = kernel[1], sp["strides"][1]
        x1 = _reshape_to(ctx, x, (*x.shape[:2], x.shape[3]))[0]
        x1, w1, k, s = _space_to_depth_1d(ctx, x1, ctx.const(w.const.reshape(*w.shape[:2], k)), k, s)
        x2 = _reshape_to(ctx, x1, (*x1.shape[:2], 1, x1.shape[2]))[0]
        w2 = ctx.const(w1.const.reshape(*w1.shape[:2], 1, k))
        return ctx.emit("Conv", [x2, w2, *ins[2:]], {"kernel_shape": (1, k), "strides": (1, s), "pads": (0, 0, 0, 0),
                                                    "dilations": (1, 1), "group": group})
    return ctx.emit("Conv", ins, {**sp, "group": group})


@importer("MaxPool", "AveragePool")
def _pool(ctx: ImportContext, ins: list) -> list:
    op = ctx.node.op_type
    a = ctx.attrs()
    ceil = bool(a.get("ceil_mode", 0))
    sp = _spatial_attrs(ctx, ins[0], None, ceil)
    extra = {"ceil_mode": int(ceil)}
    if op == "AveragePool":
        extra["count_include_pad"] = int(a.get("count_include_pad", 0))
    if op == "MaxPool" and len(ctx.node.output) > 1 and ctx.node.output[1]:
        extra["indices"] = 1
        extra["storage_order"] = int(a.get("storage_order", 0))
    return ctx.emit(op, ins, {**sp, **extra})


@importer("BatchNormalization")
def _batchnorm(ctx: ImportContext, ins: list) -> list:
    a = ctx.attrs()
    if a.get("training_mode", 0) or (ctx.opset < 7 and not a.get("is_test", 0)):
        raise Unsupported("training-mode BatchNormalization is not supported (cnnjit runs inference)")
    if len(ctx.node.output) > 1 and any(ctx.node.output[1:]):
        raise Unsupported("BatchNormalization's training outputs (running mean/var) are not supported")
    if ctx.opset < 9 and a.get("spatial", 1) == 0:
        raise Unsupported("BatchNormalization with spatial=0 is not supported")
    return ctx.emit("BatchNormalization", ins[:5], {"epsilon": float(a.get("epsilon", 1e-5))})


@importer("DequantizeLinear")
def _dequantize(ctx: ImportContext, ins: list) -> list:
    a = ctx.attrs()
    x = ins[0]
    axis = a.get("axis", 1)
    if len(ins[1].shape) and ins[1].type.size > 1 or a.get("block_size", 0):  # per-axis or blocked
        axis = normalize_axis(axis, len(x.shape))
    else:
        axis = 0
    out = ctx.emit("DequantizeLinear", ins, {"axis": axis, "block_size": int(a.get("block_size", 0))})
    if out[0].is_const and not a.get("block_size", 0) and x.dtype.kind in "iu":  # a folded weight/bias:
        # the IR keeps its integers (``Graph.dequantized``) for the integer kernels
        zp = ins[2].const if len(ins) > 2 and ins[2] is not None else None
        ctx.graph.record_dequantized(out[0], x.const, ins[1].const, zp, axis)
    return out
