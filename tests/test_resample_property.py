"""Property tests: Pad, Slice, Split and Resize compiled by cnnjit against onnxruntime (an independent oracle).

Each example builds a one-node ONNX model (opset 19, ir_version 8) with ``onnx.helper``, runs it with
onnxruntime and with cnnjit (the generated kernels), and also checks the IR interpreter (the ops' numpy
references) against onnxruntime. Operands that must be compile-time constants are sometimes given as
graph inputs, which exercises cnnjit's specialisation on their values.

Where the spec and onnxruntime disagree the strategies stay clear of it: Resize ``tf_crop_and_resize`` is
drawn with ``sizes`` only (the spec sizes a ``scales`` crop as ``floor(in * (roi_end - roi_start) * scale)``,
onnxruntime as ``floor(in * scale)``), and Resize cases whose output shape equals the input shape are
skipped (onnxruntime then copies the input, ignoring scales other than 1 and any roi), as are crops of
axes whose size does not change (onnxruntime ignores their roi).
"""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st
from onnx import TensorProto, helper, numpy_helper

import cnnjit

ort = pytest.importorskip("onnxruntime")

OPSET = 19
SETTINGS = settings(max_examples=25, deadline=None)
ELEM = {np.dtype(np.float32): TensorProto.FLOAT, np.dtype(np.int32): TensorProto.INT32,
        np.dtype(np.int64): TensorProto.INT64, np.dtype(np.uint8): TensorProto.UINT8}


def _model(op: str, x: np.ndarray, operands: list[tuple[str, np.ndarray | None, bool]], attrs: dict,
           n_out: int = 1, opset: int = OPSET) -> tuple[onnx.ModelProto, dict[str, np.ndarray]]:
    """A one-node model; ``operands`` are (name, value or None for absent, given as graph input?)."""
    inputs = [helper.make_tensor_value_info("x", ELEM[x.dtype], x.shape)]
    inits, names, feeds = [], ["x"], {"x": x}
    for name, value, as_input in operands:
        if value is None:
            names.append("")
            continue
        names.append(name)
        if as_input:
            inputs.append(helper.make_tensor_value_info(name, ELEM[value.dtype], value.shape))
            feeds[name] = value
        else:
            inits.append(numpy_helper.from_array(value, name))
    while names and names[-1] == "":
        names.pop()
    outs = [f"y{i}" for i in range(n_out)]
    node = helper.make_node(op, names, outs, **attrs)
    graph = helper.make_graph([node], op.lower(), inputs,
                              [helper.make_tensor_value_info(o, ELEM[x.dtype], None) for o in outs], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)], ir_version=8)
    return model, feeds


def _check(model: onnx.ModelProto, feeds: dict[str, np.ndarray], rtol: float = 0.0, atol: float = 0.0,
           skip_same_shape: bool = False) -> None:
    from cnnjit.compiler.frontend.onnx_import import import_model
    from cnnjit.ir.interp import interpret

    sess = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    expected = sess.run(None, feeds)
    if skip_same_shape:
        assume(expected[0].shape != feeds["x"].shape)
    got = cnnjit.compile(model).run(None, feeds)
    x = feeds["x"]
    graph = import_model(model, {"x": x.shape}, input_values={k: v for k, v in feeds.items() if k != "x"})
    interpreted = interpret(graph, [x] if graph.inputs else [])
    for e, g, r in zip(expected, got, interpreted, strict=True):
        keep = np.ones(e.shape, dtype=bool)
        if graph.nodes and graph.nodes[0].op == "Resize" and graph.nodes[0].attrs["mode"] == "nearest":
            keep = ~_nearest_ties(x.shape, graph.nodes[0].attrs)
        for what, a in (("kernels", g), ("reference", r)):
            assert a.shape == e.shape and a.dtype == e.dtype, f"{what}: {a.shape} {a.dtype} vs {e.shape} {e.dtype}"
            np.testing.assert_allclose(a[keep].astype(np.float64), e[keep].astype(np.float64), rtol=rtol,
                                       atol=atol, err_msg=what)


def _nearest_ties(in_shape: tuple[int, ...], attrs: dict) -> np.ndarray:
    """Output positions whose source coordinate lies within 1e-4 of a nearest-rounding boundary on some axis.

    onnxruntime computes coordinates in float32, cnnjit (and the spec's arithmetic) in float64: a coordinate
    that is mathematically on a boundary (x = 1 exactly, through an inexact 1 / 3) may round either way.
    """
    from cnnjit.ir.ops.resample import resize_source_coords

    sizes = tuple(int(s) for s in attrs["sizes"])
    mask = np.zeros(sizes, dtype=bool)
    r = len(in_shape)
    for d in range(r):
        xs = resize_source_coords(in_shape[d], sizes[d], attrs["scales"][d],
                                  attrs["coordinate_transformation_mode"], (attrs["roi"][d], attrs["roi"][r + d]))
        frac = xs - np.floor(xs)
        boundary = 0.5 if attrs["nearest_mode"][d].startswith("round") else 0.0
        dist = np.abs(frac - boundary)
        if boundary == 0.0:
            dist = np.minimum(dist, 1 - frac)
        shape = [1] * r
        shape[d] = sizes[d]
        mask = mask | (dist < 1e-4).reshape(shape)
    return mask


def _array(draw, shape: tuple[int, ...], dtype: np.dtype) -> np.ndarray:
    seed = draw(st.integers(0, 2**31 - 1))
    rng = np.random.default_rng(seed)
    if dtype.kind == "f":
        return rng.standard_normal(shape).astype(dtype)
    info = np.iinfo(dtype)
    return rng.integers(max(info.min, -1000), min(info.max, 1000), size=shape, endpoint=True).astype(dtype)


shapes = st.lists(st.integers(1, 5), min_size=1, max_size=4).map(tuple)
dtypes = st.sampled_from([np.dtype(np.float32), np.dtype(np.int32), np.dtype(np.int64), np.dtype(np.uint8)])


# -- Pad --------------------------------------------------------------------------------------------------
@st.composite
def pad_cases(draw):
    shape = draw(shapes)
    dtype = draw(dtypes)
    mode = draw(st.sampled_from(["constant", "reflect", "edge", "wrap"]))
    r = len(shape)
    use_axes = draw(st.booleans())
    axes = sorted(draw(st.sets(st.integers(0, r - 1), min_size=1))) if use_axes else list(range(r))
    begins, ends = [], []
    for ax in axes:
        n = shape[ax]
        if mode == "constant":
            b = draw(st.integers(-n + 1, 3))
            e = draw(st.integers(-(n - 1 - max(-b, 0)), 3))
        else:  # non-constant modes: pad within the axis length (reflect needs >= 2 elements to pad)
            limit = 0 if mode == "reflect" and n < 2 else n - 1
            b, e = draw(st.integers(0, limit)), draw(st.integers(0, limit))
        begins.append(b)
        ends.append(e)
    x = _array(draw, shape, dtype)
    value = np.array(draw(st.integers(-5, 5)), dtype=dtype) if dtype.kind != "u" else np.array(7, dtype)
    axes_arr = np.array([a - r if draw(st.booleans()) else a for a in axes], np.int64)
    pads_as_input = draw(st.booleans())
    return x, mode, np.array(begins + ends, np.int64), value, axes_arr if use_axes else None, pads_as_input


@SETTINGS
@given(pad_cases())
def test_pad_matches_onnxruntime(case) -> None:
    x, mode, pads, value, axes, pads_as_input = case
    operands = [("pads", pads, pads_as_input), ("value", value if mode == "constant" else None, False),
                ("axes", axes, False)]
    model, feeds = _model("Pad", x, operands, {"mode": mode})
    _check(model, feeds)


# -- Slice ------------------------------------------------------------------------------------------------
@st.composite
def slice_cases(draw):
    shape = draw(shapes)
    r = len(shape)
    axes = draw(st.permutations(range(r)))[:draw(st.integers(1, r))]
    bound = st.integers(-8, 8) | st.sampled_from([-(2**62), 2**62])
    starts = [draw(bound) for _ in axes]
    ends = [draw(bound) for _ in axes]
    steps = [draw(st.sampled_from([1, 2, 3, -1, -2])) for _ in axes]
    x = _array(draw, shape, draw(dtypes))
    neg = [a - r if draw(st.booleans()) else a for a in axes]
    return x, np.array(starts, np.int64), np.array(ends, np.int64), np.array(neg, np.int64), \
        np.array(steps, np.int64), draw(st.booleans())


@SETTINGS
@given(slice_cases())
def test_slice_matches_onnxruntime(case) -> None:
    x, starts, ends, axes, steps, as_inputs = case
    operands = [("starts", starts, as_inputs), ("ends", ends, as_inputs), ("axes", axes, False),
                ("steps", steps, False)]
    model, feeds = _model("Slice", x, operands, {})
    _check(model, feeds)


# -- Split ------------------------------------------------------------------------------------------------
@st.composite
def split_cases(draw):
    shape = draw(shapes)
    axis = draw(st.integers(-len(shape), len(shape) - 1))
    n = shape[axis]
    x = _array(draw, shape, draw(dtypes))
    if draw(st.booleans()):
        # num_outputs: parts of ceil(n / k), the last one smaller (onnxruntime refuses an empty last part)
        k = draw(st.integers(1, n).filter(lambda k: n - -(-n // k) * (k - 1) >= 1))
        return x, axis, None, k
    cuts = sorted(draw(st.lists(st.integers(0, n), min_size=0, max_size=3)))
    sizes = np.diff([0, *cuts, n]).astype(np.int64)
    return x, axis, sizes, len(sizes)


@SETTINGS
@given(split_cases())
def test_split_matches_onnxruntime(case) -> None:
    x, axis, sizes, k = case
    attrs = {"axis": axis} if sizes is not None else {"axis": axis, "num_outputs": k}
    model, feeds = _model("Split", x, [("split", sizes, False)], attrs, n_out=k)
    _check(model, feeds)


# -- Resize -----------------------------------------------------------------------------------------------
COORD = ["half_pixel", "half_pixel_symmetric", "pytorch_half_pixel", "align_corners", "asymmetric",
         "tf_crop_and_resize"]
#: scales exact in binary (float32 and float64 agree, so nearest-rounding ties are the same in both)
SCALES = [0.25, 0.5, 0.625, 0.75, 1.0, 1.25, 1.5, 2.0, 2.5, 3.0]


@st.composite
def resize_cases(draw):
    mode = draw(st.sampled_from(["nearest", "linear", "cubic"]))
    # onnxruntime interpolates (linear, cubic) 2-D inputs, or 4-D NCHW inputs on H and W only
    rank = draw(st.integers(2, 4)) if mode == "nearest" else draw(st.sampled_from([2, 4]))
    movable = set(range(rank)) if mode == "nearest" or rank == 2 else {2, 3}
    shape = tuple(draw(st.integers(1, 6)) for _ in range(rank))
    coord = draw(st.sampled_from(COORD))
    use_axes = draw(st.booleans())
    axes = sorted(draw(st.sets(st.sampled_from(sorted(movable)), min_size=1))) if use_axes else list(range(rank))
    if use_axes and draw(st.booleans()):
        axes = axes[::-1]
    attrs: dict = {"mode": mode, "coordinate_transformation_mode": coord}
    if use_axes:
        attrs["axes"] = axes

    def factor(a: int) -> float:
        return draw(st.sampled_from(SCALES)) if a in movable else 1.0

    def size(a: int) -> int:
        n = shape[a] * factor(a)
        if mode == "nearest" and n != int(n):
            # keep out/in exact in binary: otherwise float32 (onnxruntime) and float64 may round an exact
            # nearest-neighbour tie differently
            n = shape[a] * 2
        return max(1, int(n))

    use_sizes = coord == "tf_crop_and_resize" or draw(st.booleans())
    scales = sizes = roi = None
    if use_sizes:
        sizes = np.array([size(a) for a in axes], np.int64)
        if draw(st.booleans()) and (use_axes or movable == set(range(rank))):
            attrs["keep_aspect_ratio_policy"] = draw(st.sampled_from(["stretch", "not_larger", "not_smaller"]))
    else:
        scales = np.array([factor(a) for a in axes], np.float32)
        scales = np.where(np.floor(scales * np.array([shape[a] for a in axes])) < 1, 1.0, scales).astype(np.float32)
    if coord == "tf_crop_and_resize":
        # onnxruntime ignores the roi of an axis whose size does not change: crop only resized axes
        crop = [a in movable and sizes[i] != shape[a] for i, a in enumerate(axes)]
        lo = [draw(st.sampled_from([0.0, 0.125, 0.25, -0.25])) if c else 0.0 for c in crop]
        hi = [draw(st.sampled_from([1.0, 0.75, 0.875, 1.25])) if c else 1.0 for c in crop]
        roi = np.array(lo + hi, np.float32)
        attrs["extrapolation_value"] = draw(st.sampled_from([0.0, 10.0, -2.5]))
    if mode == "nearest":
        attrs["nearest_mode"] = draw(st.sampled_from(["round_prefer_floor", "round_prefer_ceil", "floor", "ceil"]))
    else:
        if draw(st.booleans()):
            attrs["antialias"] = 1
        if mode == "cubic":
            attrs["cubic_coeff_a"] = draw(st.sampled_from([-0.75, -0.5]))
            attrs["exclude_outside"] = int(draw(st.booleans()))
    dtype = np.dtype(np.uint8) if mode == "nearest" and draw(st.booleans()) else np.dtype(np.float32)
    x = _array(draw, shape, dtype)
    return x, attrs, roi, scales, sizes


@SETTINGS
@given(resize_cases())
def test_resize_matches_onnxruntime(case) -> None:
    x, attrs, roi, scales, sizes = case
    operands = [("roi", roi, False), ("scales", scales, False), ("sizes", sizes, False)]
    model, feeds = _model("Resize", x, operands, attrs)
    tol = (0.0, 0.0) if attrs["mode"] == "nearest" else (1e-4, 1e-5)
    _check(model, feeds, *tol, skip_same_shape=True)


# -- older opsets and the ops lowered by the frontend -------------------------------------------------------
_X4 = np.random.default_rng(0).standard_normal((1, 8, 4, 6)).astype(np.float32)
_F32 = np.float32
LEGACY = {
    "upsample7_nearest": ("Upsample", 7, _X4, [], {"mode": "nearest", "scales": [1.0, 1.0, 2.0, 3.0]}),
    "upsample9_linear": ("Upsample", 9, _X4, [("s", np.array([1, 1, 2, 1.5], _F32), False)], {"mode": "linear"}),
    "resize10_nearest_down": ("Resize", 10, _X4, [("s", np.array([1, 1, 0.75, 0.5], _F32), False)],
                              {"mode": "nearest"}),
    "resize10_linear": ("Resize", 10, _X4, [("s", np.array([1, 1, 1.5, 0.5], _F32), False)], {"mode": "linear"}),
    "resize11_tf_half_pixel_for_nn": ("Resize", 11, _X4, [("roi", np.zeros(0, _F32), False),
                                                          ("s", np.array([1, 1, 1.5, 2.5], _F32), False)],
                                      {"mode": "nearest", "coordinate_transformation_mode": "tf_half_pixel_for_nn"}),
    "resize13_cubic_sizes": ("Resize", 13, _X4, [("roi", None, False), ("s", None, False),
                                                 ("sz", np.array([1, 8, 7, 3], np.int64), True)],
                             {"mode": "cubic", "coordinate_transformation_mode": "pytorch_half_pixel"}),
    "pad7_reflect": ("Pad", 7, _X4, [], {"mode": "reflect", "pads": [0, 0, 2, 1, 0, 0, 1, 3]}),
    "pad11_edge": ("Pad", 11, _X4, [("p", np.array([0, 1, 2, 0, 0, 0, 1, 5], np.int64), True)], {"mode": "edge"}),
    "pad13_constant_crop": ("Pad", 13, _X4, [("p", np.array([0, -2, 1, -1, 0, 1, -1, 2], np.int64), False),
                                             ("v", np.array(2.5, _F32), False)], {"mode": "constant"}),
    "slice9_attrs": ("Slice", 9, _X4, [], {"starts": [1, -1], "ends": [7, -5], "axes": [1, 3]}),
    "split11_attr": ("Split", 11, _X4, [], {"axis": 1, "split": [3, 1, 4]}),
    "depthtospace11_crd": ("DepthToSpace", 11, _X4, [], {"blocksize": 2, "mode": "CRD"}),
    "depthtospace11_dcr": ("DepthToSpace", 11, _X4, [], {"blocksize": 2, "mode": "DCR"}),
    "spacetodepth13": ("SpaceToDepth", 13, _X4, [], {"blocksize": 2}),
    "expand13": ("Expand", 13, np.arange(3, dtype=np.int64).reshape(3, 1),
                 [("shape", np.array([2, 1, 4], np.int64), True)], {}),
    "tile13": ("Tile", 13, np.arange(6, dtype=_F32).reshape(2, 3), [("r", np.array([2, 3], np.int64), False)], {}),
}


@pytest.mark.parametrize("name", sorted(LEGACY))
def test_opset_variants_match_onnxruntime(name: str) -> None:
    op, opset, x, operands, attrs = LEGACY[name]
    n_out = len(attrs["split"]) if op == "Split" else 1
    model, feeds = _model(op, x, operands, attrs, n_out=n_out, opset=opset)
    _check(model, feeds, 1e-5, 1e-6)
