"""Importers for the general ops around a CNN's convolutions (IR ops in ``cnnjit.ir.ops.misc``); ops
rewritten into existing IR ops at import (Einsum, GroupNormalization, LpNormalization, Swish, CastLike,
ThresholdedRelu, Celu) or folded to constants (Size, EyeLike); and the com.microsoft quantized ops
onnxruntime's quantization tool writes (QLinearAdd, QLinearMul, QLinearSigmoid, QLinearLeakyRelu,
QLinear(Global)AveragePool, QLinearConcat, QLinearSoftmax, QLinearWhere, QGemm), each rewritten as
DequantizeLinear → float op → QuantizeLinear, which is how onnxruntime defines them.

Range, Size and the anchor arithmetic around them only see constants at a static input shape, so
``ImportContext.emit`` folds them away. A Range, TopK k, CumSum axis, ... computed from a graph input's
data makes the model specialise on that input's values (``CONST_OPERANDS``); one computed from
intermediate data is refused.
"""

from __future__ import annotations

import string

import numpy as np

from cnnjit.ir import Value
from cnnjit.ir.errors import ShapeError
from cnnjit.ir.ops import normalize_axis
from cnnjit.ir.ops.misc import range_count
from cnnjit.ir.types import short_name

from . import onnx_proto as onnx
from .import_nn_extra import _AXES_INPUT_FROM, _reduce_mean
from .import_quant import _arg, _quantize, _zero_like
from .onnx_ops import _dequantize, _reshape_to, _spatial_attrs
from .onnx_types import elem_dtype
from .registry import CONST_OPERANDS, IMPORTERS, VARIANT_CHECKS, ImportContext, Unsupported, importer

CONST_OPERANDS.update({"Range": frozenset({0, 1, 2}), "TopK": frozenset({1}), "CumSum": frozenset({1}),
                       "CumProd": frozenset({1}),
                       "Trilu": frozenset({1}), "OneHot": frozenset({1})})


def _simple(ctx: ImportContext, ins: list) -> list:
    """IR op of the ONNX op's name; every attribute is copied (the IR op's schema checks them)."""
    return ctx.emit(ctx.node.op_type, ins, ctx.attrs())


for _op in ("Floor", "Ceil", "Round", "Reciprocal", "Log", "Sin", "Cos", "Tan", "Atan", "Asin", "Acos", "Sinh",
            "Cosh", "Asinh", "Acosh", "Atanh", "Softsign", "Not", "IsNaN", "IsInf", "Equal", "Greater",
            "GreaterOrEqual", "Less", "LessOrEqual", "And", "Or", "Xor", "Mod",
            "Where", "GatherND", "ScatterND"):
    IMPORTERS[_op] = _simple

_REDUCE_MORE = ("ReduceL1", "ReduceL2", "ReduceSumSquare", "ReduceProd", "ReduceLogSum", "ReduceLogSumExp")
_AXES_INPUT_FROM.update(dict.fromkeys(_REDUCE_MORE, 18))
CONST_OPERANDS.update(dict.fromkeys(_REDUCE_MORE, frozenset({1})))
importer(*_REDUCE_MORE)(_reduce_mean)


@importer("Range")
def _range(ctx: ImportContext, ins: list) -> list:
    vals = [ctx.const_input(v, f"Range {w}") for v, w in zip(ins, ("start", "limit", "delta"))]
    start, limit, delta = (float(np.asarray(v).reshape(-1)[0]) for v in vals)
    if delta == 0:
        raise ShapeError(f"{ctx.where()}: Range delta is 0")
    count = range_count(start, limit, delta)
    return ctx.emit("Range", ins, {"count": count})


@importer("Size")
def _size(ctx: ImportContext, ins: list) -> list:
    return [ctx.const(np.asarray(ins[0].type.size, np.int64))]


@importer("CastLike")
def _cast_like(ctx: ImportContext, ins: list) -> list:
    return ctx.emit("Cast", ins[:1], {"to": short_name(ins[1].dtype)})


@importer("ArgMax", "ArgMin")
def _argmax(ctx: ImportContext, ins: list) -> list:
    a = ctx.attrs()
    attrs = {"axis": normalize_axis(int(a.get("axis", 0)), len(ins[0].shape)), "keepdims": int(a.get("keepdims", 1)),
             "select_last_index": int(a.get("select_last_index", 0))}
    return ctx.emit(ctx.node.op_type, ins, attrs)


@importer("TopK")
def _topk(ctx: ImportContext, ins: list) -> list:
    a = ctx.attrs()
    k = a.get("k") if ctx.opset < 10 else ctx.const_input(ins[1], "TopK k")
    if k is None:
        raise ShapeError(f"{ctx.where()}: TopK needs k")
    attrs = {"k": int(np.asarray(k).reshape(-1)[0]), "axis": normalize_axis(int(a.get("axis", -1)), len(ins[0].shape)),
             "largest": int(a.get("largest", 1)), "sorted": int(a.get("sorted", 1))}
    return ctx.emit("TopK", ins[:1], attrs)


@importer("CumSum", "CumProd")
def _cumsum(ctx: ImportContext, ins: list) -> list:
    a = ctx.attrs()
    axis = int(ctx.const_input(ins[1], f"{ctx.node.op_type} axis").reshape(-1)[0])
    return ctx.emit(ctx.node.op_type, ins[:1], {"axis": normalize_axis(axis, len(ins[0].shape)),
                                        "exclusive": int(a.get("exclusive", 0)), "reverse": int(a.get("reverse", 0))})


@importer("GatherElements", "ScatterElements", "Scatter")
def _gather_elements(ctx: ImportContext, ins: list) -> list:
    a = ctx.attrs()
    a["axis"] = normalize_axis(int(a.get("axis", 0)), len(ins[0].shape))
    op = ctx.node.op_type
    return ctx.emit("ScatterElements" if op == "Scatter" else op, ins, a)  # Scatter: its opset 9-10 name


# -- rewrites into existing IR ops ---------------------------------------------------------------------------
def _transpose(ctx: ImportContext, x: Value, perm: list[int]) -> Value:
    if list(perm) == list(range(len(perm))):
        return x
    return ctx.emit("Transpose", [x], {"perm": tuple(perm)})[0]


def _reshape(ctx: ImportContext, x: Value, shape: tuple) -> Value:
    return x if tuple(x.shape) == tuple(shape) else _reshape_to(ctx, x, shape)[0]


def _einsum_terms(eq: str, ranks: list[int]) -> tuple[list[str], str]:
    """Input and output index strings, each ``...`` spelled out as upper-case letters (right-aligned, as
    numpy broadcasts them)."""
    eq = eq.replace(" ", "")
    lhs, arrow, rhs = eq.partition("->")
    terms = lhs.split(",")
    if len(terms) != len(ranks):
        raise ShapeError(f"Einsum equation {eq!r} has {len(terms)} operands, the node {len(ranks)}")
    extra = [r - (len(t) - 3) for t, r in zip(terms, ranks) if "..." in t]
    if any(n < 0 for n in extra):
        raise ShapeError(f"Einsum equation {eq!r} does not fit input ranks {ranks}")
    ell = "".join(c for c in string.ascii_uppercase if c not in eq)[:max(extra, default=0)]
    out_terms = []
    for t, r in zip(terms, ranks):
        if "..." in t:
            n = r - (len(t) - 3)
            t = t.replace("...", ell[len(ell) - n:] if n else "")
        if len(t) != r or (t and not t.isalpha()):
            raise ShapeError(f"Einsum term {t!r} does not fit rank {r}")
        out_terms.append(t)
    if not arrow:
        joined = "".join(out_terms)
        rhs = ell + "".join(sorted(c for c in set(joined) if joined.count(c) == 1 and c.islower()))
    else:
        rhs = rhs.replace("...", ell)
    return out_terms, rhs


_EINSUM_UNSUPPORTED = "Einsum with more than two operands or a repeated index (a diagonal) is not supported"


def _einsum_check(node: onnx.NodeProto) -> str:
    eq = next((a.s for a in node.attribute if a.name == "equation"), b"")
    eq = (eq.decode("utf-8", errors="replace") if isinstance(eq, bytes) else eq).replace(" ", "")
    terms = eq.replace("...", "").replace("->", ",").split(",")
    return _EINSUM_UNSUPPORTED if len(node.input) > 2 or any(len(set(t)) != len(t) for t in terms) else ""


VARIANT_CHECKS["Einsum"] = _einsum_check


@importer("Einsum")
def _einsum(ctx: ImportContext, ins: list) -> list:
    """Einsum of one or two operands without repeated indices in a term: Transpose / ReduceSum, or a
    (batched) MatMul between Transpose+Reshape of each side."""
    terms, out = _einsum_terms(str(ctx.attrs()["equation"]), [len(v.shape) for v in ins])
    if len(ins) > 2 or any(len(set(t)) != len(t) for t in terms + [out]):
        raise Unsupported(_EINSUM_UNSUPPORTED)
    if any(c not in "".join(terms) for c in out):
        raise ShapeError(f"{ctx.where()}: Einsum output index not in any input")
    size = {}
    for t, v in zip(terms, ins):
        for c, d in zip(t, v.shape):
            if size.setdefault(c, d) != d:
                raise Unsupported(f"Einsum index {c!r} with sizes {size[c]} and {d} (broadcast) is not supported")
    # sum away indices that appear in one operand only and not in the output
    vals, keep = [], []
    for j, (t, v) in enumerate(zip(terms, ins)):
        others = "".join(terms[:j] + terms[j + 1:]) + out
        drop = [i for i, c in enumerate(t) if c not in others]
        if drop:
            v = ctx.emit("ReduceSum", [v], {"axes": tuple(drop), "keepdims": 0})[0]
            t = "".join(c for c in t if c in others)
        vals.append(v)
        keep.append(t)
    if len(vals) == 1:
        return [_transpose(ctx, vals[0], [keep[0].index(c) for c in out])]
    (ta, tb), (a, b) = keep, vals
    batch = [c for c in ta if c in tb and c in out]
    contract = [c for c in ta if c in tb and c not in out]
    fa = [c for c in ta if c not in tb]
    fb = [c for c in tb if c not in ta]

    def n(cs: list[str]) -> int:
        return int(np.prod([size[c] for c in cs], dtype=np.int64))

    if not contract:  # no summation: a broadcast product
        a = _reshape(ctx, _transpose(ctx, a, [ta.index(c) for c in batch + fa]),
                     tuple(size[c] for c in batch + fa) + (1,) * len(fb))
        b = _reshape(ctx, _transpose(ctx, b, [tb.index(c) for c in batch + fb]),
                     tuple(size[c] for c in batch) + (1,) * len(fa) + tuple(size[c] for c in fb))
        y = ctx.emit("Mul", [a, b])[0]
        order = batch + fa + fb
        return [_transpose(ctx, y, [order.index(c) for c in out])]
    a = _transpose(ctx, a, [ta.index(c) for c in batch + fa + contract])
    b = _transpose(ctx, b, [tb.index(c) for c in batch + contract + fb])
    lead = (n(batch),) if batch else ()
    a = _reshape(ctx, a, lead + (n(fa), n(contract)))
    b = _reshape(ctx, b, lead + (n(contract), n(fb)))
    y = ctx.emit("MatMul", [a, b])[0]
    order = batch + fa + fb
    y = _reshape(ctx, y, tuple(size[c] for c in order))
    return [_transpose(ctx, y, [order.index(c) for c in out])]


@importer("GroupNormalization")
def _group_norm(ctx: ImportContext, ins: list) -> list:
    """Normalise (N, G, C/G * spatial) with InstanceNormalization, then scale and shift per channel (a
    per-group scale before opset 21 is repeated over its channels)."""
    x, scale, bias = ins
    a = ctx.attrs()
    G = int(a["num_groups"])
    N, C = x.shape[:2]
    if G < 1 or C % G:
        raise ShapeError(f"{ctx.where()}: {C} channels do not split into {G} groups")
    shp = (C,) + (1,) * (len(x.shape) - 2)
    per_channel = []
    for v in (scale, bias):
        if v.type.size == G and C != G:  # opset 18: one value per group, repeated over its channels
            v = ctx.const(np.repeat(ctx.const_input(v, "a per-group GroupNormalization scale or bias"), C // G))
        if v.type.size != C:
            raise ShapeError(f"{ctx.where()}: scale/bias {v.type} fit neither {C} channels nor {G} groups")
        per_channel.append(_reshape(ctx, v, shp))
    flat = _reshape(ctx, x, (N, G, int(np.prod(x.shape[1:], dtype=np.int64)) // G))
    unit = [ctx.const(np.ones(G, x.dtype)), ctx.const(np.zeros(G, x.dtype))]
    y = ctx.emit("InstanceNormalization", [flat, *unit], {"epsilon": float(a.get("epsilon", 1e-5))})[0]
    y = _reshape(ctx, y, x.shape)
    y = ctx.emit("Mul", [y, per_channel[0]])[0]
    return ctx.emit("Add", [y, per_channel[1]])


@importer("LpNormalization")
def _lp_norm(ctx: ImportContext, ins: list) -> list:
    a = ctx.attrs()
    p = int(a.get("p", 2))
    if p not in (1, 2):
        raise ShapeError(f"{ctx.where()}: LpNormalization p={p} (1 or 2 are defined)")
    axis = normalize_axis(int(a.get("axis", -1)), len(ins[0].shape))
    norm = ctx.emit("ReduceL1" if p == 1 else "ReduceL2", ins, {"axes": (axis,), "keepdims": 1})[0]
    # a zero norm means a zero row: divide it by 1 (onnx's reference gives 0 there, not 0 / 0)
    zero, one = (ctx.const(np.asarray(v, norm.dtype)) for v in (0, 1))
    norm = ctx.emit("Where", [ctx.emit("Equal", [norm, zero])[0], one, norm])[0]
    return ctx.emit("Div", [ins[0], norm])


@importer("Hardmax")
def _hardmax(ctx: ImportContext, ins: list) -> list:
    """One-hot of the first maximum along ``axis`` (opset 13); before 13 over the flattened tail from
    ``axis`` (default 1)."""
    x = ins[0]
    r = len(x.shape)
    axis = normalize_axis(int(ctx.attrs().get("axis", -1 if ctx.opset >= 13 else 1)), r)
    flat = x
    if ctx.opset < 13 and axis != r - 1:
        flat = _reshape(ctx, x, (int(np.prod(x.shape[:axis], dtype=np.int64)),
                                 int(np.prod(x.shape[axis:], dtype=np.int64))))
        axis = 1
    am = ctx.emit("ArgMax", [flat], {"axis": axis, "keepdims": 0, "select_last_index": 0})[0]
    y = ctx.emit("OneHot", [am, ctx.const(np.array([0, 1], x.dtype))], {"depth": flat.shape[axis], "axis": axis})[0]
    return [_reshape(ctx, y, x.shape)]


@importer("MeanVarianceNormalization")
def _mvn(ctx: ImportContext, ins: list) -> list:
    """``(x - mean) / sqrt(var)`` over ``axes`` (default N, H, W), as onnx's function body (no epsilon)."""
    x = ins[0]
    axes = tuple(sorted(normalize_axis(int(i), len(x.shape)) for i in ctx.attrs().get("axes", [0, 2, 3])))
    mean = ctx.emit("ReduceMean", [x], {"axes": axes, "keepdims": 1})[0]
    d = ctx.emit("Sub", [x, mean])[0]
    var = ctx.emit("ReduceMean", [ctx.emit("Mul", [d, d])[0]], {"axes": axes, "keepdims": 1})[0]
    return ctx.emit("Div", [d, ctx.emit("Sqrt", [var])[0]])


@importer("Swish")
def _swish(ctx: ImportContext, ins: list) -> list:
    alpha = float(ctx.attrs().get("alpha", 1.0))
    if alpha == 1.0:
        return ctx.emit("SiLU", ins)
    ax = ctx.emit("Mul", [ins[0], ctx.const(np.asarray(alpha, ins[0].dtype))])[0]
    return ctx.emit("Mul", [ins[0], ctx.emit("Sigmoid", [ax])[0]])


@importer("ThresholdedRelu", "Celu")
def _thresholded(ctx: ImportContext, ins: list) -> list:
    """ThresholdedRelu: ``x if x > alpha else 0``; Celu: ``max(0, x) + min(0, alpha * (exp(x / alpha) - 1))``
    (``alpha * Elu(x / alpha)`` below 0)."""
    x = ins[0]
    a = ctx.attrs()
    alpha = float(a.get("alpha", 1.0))
    zero = ctx.const(np.zeros((), x.dtype))
    if ctx.node.op_type == "ThresholdedRelu":
        keep = ctx.emit("Greater", [x, ctx.const(np.asarray(alpha, x.dtype))])[0]
        return ctx.emit("Where", [keep, x, zero])
    k = ctx.const(np.asarray(alpha, x.dtype))
    e = ctx.emit("Elu", [ctx.emit("Div", [x, k])[0]], {"alpha": 1.0})[0]
    return ctx.emit("Mul", [e, k])


# -- com.microsoft quantized ops ----------------------------------------------------------------------------
def _deq(ctx: ImportContext, x: Value, scale: Value, zp: Value | None, axis: int = 0) -> Value:
    per_axis = scale.type.size > 1
    return ctx.emit("DequantizeLinear", [x, scale, _zero_like(ctx, zp, x.dtype)],
                    {"axis": normalize_axis(axis, len(x.shape)) if per_axis else 0, "block_size": 0})[0]


def _quant(ctx: ImportContext, y: Value, scale: Value, zp: Value | None, like: Value) -> list:
    zp = _zero_like(ctx, zp, like.dtype)
    return ctx.emit("QuantizeLinear", [y, scale, zp],
                    {"axis": 0, "block_size": 0, "dtype": short_name(zp.dtype), "precision": None})


@importer("com.microsoft:QLinearAdd", "com.microsoft:QLinearMul")
def _qlinear_binary(ctx: ImportContext, ins: list) -> list:
    a, asc, az, b, bsc, bz, ysc, yz = (_arg(ins, i) for i in range(8))
    y = ctx.emit(ctx.node.op_type[len("QLinear"):], [_deq(ctx, a, asc, az), _deq(ctx, b, bsc, bz)])[0]
    return _quant(ctx, y, ysc, yz, a)


@importer("com.microsoft:QLinearSigmoid", "com.microsoft:QLinearLeakyRelu")
def _qlinear_unary(ctx: ImportContext, ins: list) -> list:
    x, xs, xz, ys, yz = (_arg(ins, i) for i in range(5))
    op = ctx.node.op_type[len("QLinear"):]
    attrs = {"alpha": float(ctx.attrs().get("alpha", 0.01))} if op == "LeakyRelu" else {}
    return _quant(ctx, ctx.emit(op, [_deq(ctx, x, xs, xz)], attrs)[0], ys, yz, x)


@importer("com.microsoft:QLinearGlobalAveragePool", "com.microsoft:QLinearAveragePool")
def _qlinear_pool(ctx: ImportContext, ins: list) -> list:
    x, xs, xz, ys, yz = (_arg(ins, i) for i in range(5))
    last = bool(ctx.attrs().get("channels_last", 0))
    f = _deq(ctx, x, xs, xz)
    r = len(x.shape)
    if last:  # NHWC: pool the NCHW view
        f = _transpose(ctx, f, [0, r - 1] + list(range(1, r - 1)))
    if ctx.node.op_type == "QLinearGlobalAveragePool":
        y = ctx.emit("GlobalAveragePool", [f])[0]
    else:
        a = ctx.attrs()
        y = ctx.emit("AveragePool", [f], {**_spatial_attrs(ctx, f, None), "ceil_mode": int(a.get("ceil_mode", 0)),
                                          "count_include_pad": int(a.get("count_include_pad", 0))})[0]
    if last:
        y = _transpose(ctx, y, [0] + list(range(2, r)) + [1])
    return _quant(ctx, y, ys, yz, x)


@importer("com.microsoft:QLinearConcat")
def _qlinear_concat(ctx: ImportContext, ins: list) -> list:
    ys, yz, rest = ins[0], ins[1], ins[2:]
    if not rest or len(rest) % 3:
        raise ShapeError(f"{ctx.where()}: QLinearConcat takes (Y_scale, Y_zp) then (X, scale, zp) triples")
    xs = [_deq(ctx, rest[i], rest[i + 1], rest[i + 2]) for i in range(0, len(rest), 3)]
    axis = normalize_axis(int(ctx.attrs()["axis"]), len(xs[0].shape))
    return _quant(ctx, ctx.emit("Concat", xs, {"axis": axis})[0], ys, yz, rest[0])


@importer("com.microsoft:QLinearSoftmax")
def _qlinear_softmax(ctx: ImportContext, ins: list) -> list:
    """Softmax over ``axis``; before opset 13 (the ``opset`` attribute) over the flattened tail from it."""
    x, xs, xz, ys, yz = (_arg(ins, i) for i in range(5))
    a = ctx.attrs()
    r = len(x.shape)
    old = int(a.get("opset", 13)) < 13
    axis = normalize_axis(int(a.get("axis", 1 if old else -1)), r)
    f = _deq(ctx, x, xs, xz)
    if old and axis != r - 1:
        outer = int(np.prod(x.shape[:axis], dtype=np.int64))
        flat = _reshape(ctx, f, (outer, int(np.prod(x.shape[axis:], dtype=np.int64))))
        y = _reshape(ctx, ctx.emit("Softmax", [flat], {"axis": 1})[0], x.shape)
    else:
        y = ctx.emit("Softmax", [f], {"axis": axis})[0]
    return _quant(ctx, y, ys, yz, x)


@importer("com.microsoft:QLinearWhere")
def _qlinear_where(ctx: ImportContext, ins: list) -> list:
    c, x, xs, xz, y, ys, yz, zs, zz = (_arg(ins, i) for i in range(9))
    return _quant(ctx, ctx.emit("Where", [c, _deq(ctx, x, xs, xz), _deq(ctx, y, ys, yz)])[0], zs, zz, x)


@importer("com.microsoft:QGemm")
def _qgemm(ctx: ImportContext, ins: list) -> list:
    """``alpha * (A' @ B' + C * a_scale * b_scale)`` (C, the int32 bias, is quantized with scale
    ``alpha * a_scale * b_scale``), quantized when y_scale is given."""
    A, asc, az, B, bsc, bz, C, ysc, yz = (_arg(ins, i) for i in range(9))
    a = ctx.attrs()
    tb = int(a.get("transB", 0))
    fa = _deq(ctx, A, asc, az)
    fb = _deq(ctx, B, bsc, bz, axis=0 if tb else 1)
    gin = [fa, fb]
    if C is not None:
        cs = ctx.emit("Mul", [asc, bsc])[0]
        gin.append(ctx.emit("Mul", [ctx.emit("Cast", [C], {"to": short_name(cs.dtype)})[0], cs])[0])
    alpha = float(a.get("alpha", 1.0))
    y = ctx.emit("Gemm", gin, {"alpha": alpha, "beta": alpha, "transA": int(a.get("transA", 0)), "transB": tb})[0]
    return [y] if ysc is None else _quant(ctx, y, ysc, yz, A)


# the contrib twins of the standard ops
IMPORTERS.update({"com.microsoft:QuantizeLinear": _quantize, "com.microsoft:DequantizeLinear": _dequantize})


_GRID_MODES = {"bilinear": "linear", "linear": "linear", "nearest": "nearest"}


def _grid_check(node: onnx.NodeProto) -> str:
    mode = next((a.s for a in node.attribute if a.name == "mode"), b"linear")
    mode = mode.decode("utf-8", errors="replace") if isinstance(mode, bytes) else mode
    return "" if mode in _GRID_MODES else f"GridSample mode {mode!r} is not supported (linear and nearest are)"


VARIANT_CHECKS["GridSample"] = _grid_check


@importer("GridSample")
def _grid_sample(ctx: ImportContext, ins: list) -> list:
    """2-D GridSample; opset 16's mode names (bilinear, bicubic) are opset 20's (linear, cubic)."""
    a = ctx.attrs()
    if len(ins[0].shape) != 4:
        raise Unsupported("GridSample of a volume (5-D input) is not supported")
    mode = a.get("mode", "linear" if ctx.opset >= 20 else "bilinear")
    if mode not in _GRID_MODES:
        raise Unsupported(_grid_check(ctx.node))
    return ctx.emit("GridSample", ins, {"mode": _GRID_MODES[mode], "padding_mode": a.get("padding_mode", "zeros"),
                                        "align_corners": int(a.get("align_corners", 0))})


@importer("EyeLike")
def _eye_like(ctx: ImportContext, ins: list) -> list:
    """A constant: the output depends on the input's shape only."""
    a = ctx.attrs()
    x = ins[0]
    if len(x.shape) != 2:
        raise ShapeError(f"{ctx.where()}: EyeLike needs a 2-D input, got shape {list(x.shape)}")
    dtype = elem_dtype(a["dtype"], ctx.where()) if "dtype" in a else x.dtype
    return [ctx.const(np.eye(x.shape[0], x.shape[1], int(a.get("k", 0)), dtype=dtype))]


@importer("Trilu")
def _trilu(ctx: ImportContext, ins: list) -> list:
    k = ctx.const_input(ins[1] if len(ins) > 1 else None, "Trilu k")
    return ctx.emit("Trilu", ins[:1], {"k": 0 if k is None else int(k.reshape(-1)[0]),
                                       "upper": int(ctx.attrs().get("upper", 1))})


@importer("OneHot")
def _onehot(ctx: ImportContext, ins: list) -> list:
    depth = ctx.const_input(ins[1], "OneHot depth")
    return ctx.emit("OneHot", [ins[0], ins[2]], {"depth": int(np.asarray(depth).reshape(-1)[0]),
                                                 "axis": int(ctx.attrs().get("axis", -1))})
