"""ONNX → IR for Pad, Slice, Split, DepthToSpace, SpaceToDepth, Expand, Tile, Resize and Upsample.

Every opset variant is resolved to the IR's explicit full-rank attributes (see ``cnnjit.ir.ops.resample``):
pads/starts/ends/split sizes/scales/sizes given as inputs must be compile-time constants (the JIT
specialises on graph inputs that feed them, via ``CONST_OPERANDS``). DepthToSpace and SpaceToDepth become
Reshape → Transpose → Reshape; Upsample and opset-10 Resize become Resize.
"""

from __future__ import annotations

import math

import numpy as np

from cnnjit.ir.errors import ShapeError
from cnnjit.ir.ops import normalize_axis

from .registry import CONST_OPERANDS, ImportContext, Unsupported, importer

CONST_OPERANDS.update({
    "Pad": frozenset({1, 2, 3}),
    "Slice": frozenset({1, 2, 3, 4}),
    "Split": frozenset({1}),
    "Resize": frozenset({1, 2, 3}),
    "Upsample": frozenset({1}),
    "Expand": frozenset({1}),
    "Tile": frozenset({1}),
})


def _ints(v: np.ndarray | list | None) -> list[int] | None:
    return None if v is None else [int(i) for i in np.asarray(v).reshape(-1)]


def _axes_list(axes: list[int] | None, rank: int, n: int, where: str) -> list[int]:
    """Normalised ``axes`` (default ``0..n-1``); ``ShapeError`` on out-of-range or repeated axes."""
    if axes is None:
        if n > rank:
            raise ShapeError(f"{where}: {n} entries for rank {rank}")
        return list(range(n))
    out = [normalize_axis(a, rank) for a in axes]
    if len(set(out)) != len(out):
        raise ShapeError(f"{where}: repeated axes {axes}")
    if len(out) != n:
        raise ShapeError(f"{where}: {n} entries for {len(out)} axes")
    return out


def _opt(ins: list, i: int):
    return ins[i] if len(ins) > i else None


# -- Pad ------------------------------------------------------------------------------------------------
@importer("Pad")
def _pad(ctx: ImportContext, ins: list) -> list:
    a = ctx.attrs()
    x = ins[0]
    r = len(x.shape)
    mode = a.get("mode", "constant")
    if ctx.opset < 11:
        pads = _ints(a.get("pads", a.get("paddings")))
        value = float(a.get("value", 0.0))
        axes = None
    else:
        pads = _ints(ctx.const_input(_opt(ins, 1), "Pad pads"))
        cv = ctx.const_input(_opt(ins, 2), "Pad constant_value")
        value = 0 if cv is None or cv.size == 0 else np.asarray(cv).reshape(-1)[0].item()
        axes = _ints(ctx.const_input(_opt(ins, 3), "Pad axes"))
    if pads is None:
        raise ShapeError(f"{ctx.where()}: Pad needs pads")
    if mode not in ("constant", "reflect", "edge", "wrap") or (mode == "wrap" and ctx.opset < 19):
        raise ShapeError(f"{ctx.where()}: unknown Pad mode {mode!r}")
    if len(pads) % 2:
        raise ShapeError(f"{ctx.where()}: pads {pads} has an odd number of entries")
    n = len(pads) // 2
    if axes is None and n != r:
        raise ShapeError(f"{ctx.where()}: pads {pads} must have {2 * r} entries for rank {r}")
    axes = _axes_list(axes, r, n, ctx.where())
    full = [0] * (2 * r)
    for i, ax in enumerate(axes):
        full[ax], full[r + ax] = pads[i], pads[n + i]
    if x.dtype.kind in "iub":
        value = int(value) if x.dtype.kind != "b" else bool(value)
    else:
        value = float(value)
    return ctx.emit("Pad", [x], {"pads": tuple(full), "mode": mode, "value": value})


# -- Slice ----------------------------------------------------------------------------------------------
@importer("Slice")
def _slice(ctx: ImportContext, ins: list) -> list:
    x = ins[0]
    r = len(x.shape)
    if ctx.opset < 10:
        a = ctx.attrs()
        starts, ends, axes, steps = _ints(a.get("starts")), _ints(a.get("ends")), _ints(a.get("axes")), None
    else:
        starts = _ints(ctx.const_input(_opt(ins, 1), "Slice starts"))
        ends = _ints(ctx.const_input(_opt(ins, 2), "Slice ends"))
        axes = _ints(ctx.const_input(_opt(ins, 3), "Slice axes"))
        steps = _ints(ctx.const_input(_opt(ins, 4), "Slice steps"))
    if starts is None or ends is None or len(starts) != len(ends):
        raise ShapeError(f"{ctx.where()}: Slice needs starts and ends of the same length")
    n = len(starts)
    axes = _axes_list(axes, r, n, ctx.where())
    steps = steps if steps is not None else [1] * n
    if len(steps) != n or 0 in steps:
        raise ShapeError(f"{ctx.where()}: invalid steps {steps}")
    fs, fe, ft = [0] * r, list(x.shape), [1] * r
    for i, ax in enumerate(axes):
        fs[ax], fe[ax], ft[ax] = starts[i], ends[i], steps[i]
    return ctx.emit("Slice", [x], {"starts": tuple(fs), "ends": tuple(fe), "steps": tuple(ft)})


# -- Split ----------------------------------------------------------------------------------------------
@importer("Split")
def _split(ctx: ImportContext, ins: list) -> list:
    a = ctx.attrs()
    x = ins[0]
    r = len(x.shape)
    ax = normalize_axis(a.get("axis", 0), r)
    dim = x.shape[ax]
    nout = len(ctx.node.output)
    if ctx.opset < 13:
        split = _ints(a.get("split"))
        if split is None and len(ins) > 1 and ins[1] is not None:  # Split-1 took split as an input
            split = _ints(ctx.const_input(ins[1], "Split split"))
    else:
        split = _ints(ctx.const_input(_opt(ins, 1), "Split split"))
    if split is not None and len(split) == 0:
        split = None
    if split is None:
        if ctx.opset >= 18:
            if "num_outputs" not in a:
                raise ShapeError(f"{ctx.where()}: Split needs the split input or num_outputs")
            k = int(a["num_outputs"])
            if k < 1 or k != nout:
                raise ShapeError(f"{ctx.where()}: num_outputs {k} but {nout} outputs")
            chunk = -(-dim // k)  # equal parts, the last one smaller
            last = dim - chunk * (k - 1)
            if last < 0:
                raise ShapeError(f"{ctx.where()}: axis length {dim} cannot be split into {k} parts "
                                 f"of {chunk} with a smaller last part")
            split = [chunk] * (k - 1) + [last]
        else:
            if dim % nout:
                raise ShapeError(f"{ctx.where()}: axis length {dim} does not split into {nout} equal parts")
            split = [dim // nout] * nout
    if len(split) != nout:
        raise ShapeError(f"{ctx.where()}: {len(split)} split sizes for {nout} outputs")
    return ctx.emit("Split", [x], {"axis": ax, "split": tuple(split)})


# -- DepthToSpace / SpaceToDepth ------------------------------------------------------------------------
def _block(ctx: ImportContext, x) -> tuple[int, int, int, int, int]:
    if len(x.shape) != 4:
        raise ShapeError(f"{ctx.where()}: input must be 4-D (NCHW), got {list(x.shape)}")
    b = int(ctx.attrs().get("blocksize", 0))
    if b < 1:
        raise ShapeError(f"{ctx.where()}: blocksize must be positive")
    return (b, *x.shape)


@importer("DepthToSpace")
def _depth_to_space(ctx: ImportContext, ins: list) -> list:
    x = ins[0]
    b, n, c, h, w = _block(ctx, x)
    if c % (b * b):
        raise ShapeError(f"{ctx.where()}: channels {c} not divisible by blocksize² {b * b}")
    co = c // (b * b)
    if ctx.attrs().get("mode", "DCR") == "CRD":
        t = ctx.emit("Reshape", [x], {"shape": (n, co, b, b, h, w)})[0]
        t = ctx.emit("Transpose", [t], {"perm": (0, 1, 4, 2, 5, 3)})[0]
    else:
        t = ctx.emit("Reshape", [x], {"shape": (n, b, b, co, h, w)})[0]
        t = ctx.emit("Transpose", [t], {"perm": (0, 3, 4, 1, 5, 2)})[0]
    return ctx.emit("Reshape", [t], {"shape": (n, co, h * b, w * b)})


@importer("SpaceToDepth")
def _space_to_depth(ctx: ImportContext, ins: list) -> list:
    x = ins[0]
    b, n, c, h, w = _block(ctx, x)
    if h % b or w % b:
        raise ShapeError(f"{ctx.where()}: spatial size {h}x{w} not divisible by blocksize {b}")
    t = ctx.emit("Reshape", [x], {"shape": (n, c, h // b, b, w // b, b)})[0]
    t = ctx.emit("Transpose", [t], {"perm": (0, 3, 5, 1, 2, 4)})[0]
    return ctx.emit("Reshape", [t], {"shape": (n, c * b * b, h // b, w // b)})


# -- Expand / Tile --------------------------------------------------------------------------------------
@importer("Expand")
def _expand(ctx: ImportContext, ins: list) -> list:
    x = ins[0]
    shape = _ints(ctx.const_input(_opt(ins, 1), "Expand shape"))
    if shape is None:
        raise ShapeError(f"{ctx.where()}: Expand needs a shape")
    try:
        out = tuple(int(d) for d in np.broadcast_shapes(tuple(x.shape), tuple(shape)))
    except ValueError:
        raise ShapeError(f"{ctx.where()}: {list(x.shape)} does not broadcast with {shape}") from None
    if len(out) > len(x.shape):
        x = ctx.emit("Reshape", [x], {"shape": (1,) * (len(out) - len(x.shape)) + tuple(x.shape)})[0]
    return ctx.emit("Expand", [x], {"shape": out})


@importer("Tile")
def _tile(ctx: ImportContext, ins: list) -> list:
    reps = _ints(ctx.const_input(_opt(ins, 1), "Tile repeats"))
    if reps is None or len(reps) != len(ins[0].shape):
        raise ShapeError(f"{ctx.where()}: repeats must have one entry per input axis")
    return ctx.emit("Tile", ins[:1], {"repeats": tuple(reps)})


# -- Resize / Upsample ----------------------------------------------------------------------------------
def _resize_attrs(r: int, mode: str, sizes: list[int], scales: list[float], **kw) -> dict:
    out = {
        "mode": mode, "sizes": tuple(int(s) for s in sizes), "scales": tuple(float(s) for s in scales),
        "coordinate_transformation_mode": "half_pixel", "roi": (0.0,) * r + (1.0,) * r,
        "nearest_mode": ("round_prefer_floor",) * r, "cubic_coeff_a": -0.75, "exclude_outside": 0,
        "extrapolation_value": 0.0, "antialias": 0,
    }
    out.update(kw)
    return out


def _legacy_resize(ctx: ImportContext, x, mode: str, scales: list[float] | None) -> list:
    """Upsample (7, 9) and Resize-10: ``floor(in * scale)``, asymmetric coordinates; nearest rounds down
    when upsampling an axis and up when downsampling it (onnxruntime's behaviour for these opsets)."""
    r = len(x.shape)
    if scales is None or len(scales) != r:
        raise ShapeError(f"{ctx.where()}: scales must have {r} entries")
    if any(not (s > 0 and math.isfinite(s)) for s in scales):
        raise ShapeError(f"{ctx.where()}: invalid scales {scales}")
    if mode not in ("nearest", "linear", "bilinear"):
        raise ShapeError(f"{ctx.where()}: unknown mode {mode!r}")
    mode = "linear" if mode == "bilinear" else mode
    sizes = [int(math.floor(d * s)) for d, s in zip(x.shape, scales)]
    nearest = tuple("floor" if s >= 1 else "ceil" for s in scales)
    return ctx.emit("Resize", [x], _resize_attrs(r, mode, sizes, scales, nearest_mode=nearest,
                                                 coordinate_transformation_mode="asymmetric"))


@importer("Upsample")
def _upsample(ctx: ImportContext, ins: list) -> list:
    a = ctx.attrs()
    if ctx.opset < 9:
        scales = a.get("scales")
        scales = None if scales is None else [float(s) for s in scales]
    else:
        sc = ctx.const_input(_opt(ins, 1), "Upsample scales")
        scales = None if sc is None else [float(s) for s in np.asarray(sc, np.float32).reshape(-1)]
    return _legacy_resize(ctx, ins[0], a.get("mode", "nearest"), scales)


@importer("Resize")
def _resize(ctx: ImportContext, ins: list) -> list:
    a = ctx.attrs()
    x = ins[0]
    r = len(x.shape)
    mode = a.get("mode", "nearest")
    if ctx.opset < 11:
        sc = ctx.const_input(_opt(ins, 1), "Resize scales")
        scales = None if sc is None else [float(s) for s in np.asarray(sc, np.float32).reshape(-1)]
        return _legacy_resize(ctx, x, mode, scales)
    if mode not in ("nearest", "linear", "cubic"):
        raise ShapeError(f"{ctx.where()}: unknown mode {mode!r}")
    coord = a.get("coordinate_transformation_mode", "half_pixel")
    if coord == "tf_half_pixel_for_nn" and ctx.opset >= 13:
        raise ShapeError(f"{ctx.where()}: tf_half_pixel_for_nn was removed in opset 13")
    if coord == "half_pixel_symmetric" and ctx.opset < 19:
        raise ShapeError(f"{ctx.where()}: half_pixel_symmetric needs opset 19")
    antialias = int(a.get("antialias", 0))
    if antialias and mode == "nearest":
        raise Unsupported("antialias with mode nearest is not defined")
    roi = ctx.const_input(_opt(ins, 1), "Resize roi")
    sc = ctx.const_input(_opt(ins, 2), "Resize scales")
    sz = ctx.const_input(_opt(ins, 3), "Resize sizes")
    scales = None if sc is None or sc.size == 0 else [float(s) for s in np.asarray(sc, np.float32).reshape(-1)]
    sizes = None if sz is None or sz.size == 0 else _ints(sz)
    if (scales is None) == (sizes is None):
        raise ShapeError(f"{ctx.where()}: exactly one of scales and sizes must be given")
    given = scales if scales is not None else sizes
    axes = _axes_list(_ints(a.get("axes")) if ctx.opset >= 18 else None, r, len(given), ctx.where())
    if len(axes) != r and "axes" not in a:
        raise ShapeError(f"{ctx.where()}: scales/sizes must have {r} entries")

    full_roi = [0.0] * r + [1.0] * r
    if coord == "tf_crop_and_resize":
        if roi is None or roi.size == 0:
            raise ShapeError(f"{ctx.where()}: tf_crop_and_resize needs roi")
        rv = [float(v) for v in np.asarray(roi, np.float64).reshape(-1)]
        if len(rv) != 2 * len(axes):
            raise ShapeError(f"{ctx.where()}: roi needs {2 * len(axes)} entries, got {len(rv)}")
        for i, ax in enumerate(axes):
            full_roi[ax], full_roi[r + ax] = rv[i], rv[len(axes) + i]

    out_sizes = list(x.shape)
    out_scales = [1.0] * r
    if scales is not None:
        if any(not (s > 0 and math.isfinite(s)) for s in scales):
            raise ShapeError(f"{ctx.where()}: scales must be positive, got {scales}")
        for s, ax in zip(scales, axes):
            # the spec: floor(input_dimension * (roi_end - roi_start) * scale); roi is [0, 1] unless cropping
            extent = full_roi[r + ax] - full_roi[ax]
            out_sizes[ax] = int(math.floor(x.shape[ax] * extent * s))
            out_scales[ax] = s
    else:
        if any(s < 0 for s in sizes):
            raise ShapeError(f"{ctx.where()}: negative sizes {sizes}")
        if any(x.shape[ax] == 0 for ax in axes):
            raise ShapeError(f"{ctx.where()}: cannot resize an empty axis")
        policy = a.get("keep_aspect_ratio_policy", "stretch")
        ratios = [s / x.shape[ax] for s, ax in zip(sizes, axes)]
        if policy == "stretch":
            for s, q, ax in zip(sizes, ratios, axes):
                out_sizes[ax], out_scales[ax] = s, q
        elif policy in ("not_larger", "not_smaller"):
            q = min(ratios) if policy == "not_larger" else max(ratios)
            for ax in axes:
                out_sizes[ax] = int(math.floor(q * x.shape[ax] + 0.5))  # round half up
                out_scales[ax] = q
        else:
            raise ShapeError(f"{ctx.where()}: unknown keep_aspect_ratio_policy {policy!r}")
    if any(s <= 0 for s in out_scales):
        raise ShapeError(f"{ctx.where()}: resizing to an empty axis ({out_sizes}) is not supported")
    nearest = a.get("nearest_mode", "round_prefer_floor")
    return ctx.emit("Resize", [x], _resize_attrs(
        r, mode, out_sizes, out_scales, coordinate_transformation_mode=coord, roi=tuple(full_roi),
        nearest_mode=(nearest,) * r, cubic_coeff_a=float(a.get("cubic_coeff_a", -0.75)),
        exclude_outside=int(a.get("exclude_outside", 0)),
        extrapolation_value=float(a.get("extrapolation_value", 0.0)), antialias=antialias))
