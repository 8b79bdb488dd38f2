"""The general ops of issue 17 (``ir/ops/misc.py``, ``frontend/import_misc.py``, ``kernels/misc.py``).

Oracles, independent of cnnjit:

* onnx's own node test cases, generated in-process from the installed wheel's case modules
  (``onnx.backend.test.case.node.<op>``: the same cases as shared/onnx-node, whose selection lacks these
  ops), each compared with its expected output;
* onnxruntime on small generated models for the com.microsoft quantized ops (hypothesis over shapes and
  quantization parameters), a ``quantize_static`` QOperator model, and a YOLOv8-style anchor grid built
  from the input's shape;
* onnx's reference implementation (``onnx.reference``) for the axis kernels over drawn shapes and
  attributes at every vector width.
"""

from __future__ import annotations

import importlib
import warnings

import numpy as np
import onnx
import pytest
from conftest import assert_outputs_match, graph_input_names, ort_session
from hypothesis import given
from hypothesis import strategies as st
from kernel_cases import property_settings
from onnx import TensorProto, helper, numpy_helper
from onnx.reference import ReferenceEvaluator

import cnnjit

# -- onnx's node cases ---------------------------------------------------------------------------------------
#: the onnx case modules of the ops this file covers
CASE_MODULES = (
    "floor", "ceil", "round", "reciprocal", "log", "sin", "cos", "tan", "atan", "asin", "acos", "sinh", "cosh",
    "asinh", "acosh", "atanh", "softsign", "not_", "isnan", "isinf", "scatterelements",
    "equal", "greater", "greater_or_equal", "less", "less_or_equal", "and_", "or_", "xor", "mod", "where",
    "rangeop", "argmax", "argmin", "topk", "cumsum", "gatherelements", "gathernd", "scatternd", "reducel1",
    "reducel2", "reduceprod", "reduce_log_sum_exp", "reduce_log_sum", "reducesumsquare", "einsum",
    "groupnormalization", "lpnormalization", "swish", "castlike", "size", "thresholdedrelu", "celu", "gridsample",
    "eyelike", "trilu", "onehot", "cumprod", "hardmax", "meanvariancenormalization", "scatter",
)

#: element types cnnjit computes in; a case using any other (float16, bfloat16, strings, 4/8-bit floats)
#: is not collected
_TYPES = {getattr(TensorProto, t) for t in ("FLOAT", "DOUBLE", "INT8", "INT16", "INT32", "INT64", "UINT8",
                                           "UINT16", "UINT32", "UINT64", "BOOL")}

#: collected cases expected to fail, with the reason (strict: one that passes must be removed here)
CASES_NOT_YET = {
    "test_einsum_batch_diagonal": "Einsum with a repeated index (a diagonal) is not rewritten",
    **{f"test_gridsample_{c}": "GridSample: bicubic and volumetric (5-D) sampling are not implemented"
       for c in ("bicubic", "bicubic_align_corners_0_additional_1", "bicubic_align_corners_1_additional_1",
                 "volumetric_nearest_align_corners_0", "volumetric_nearest_align_corners_1",
                 "volumetric_bilinear_align_corners_0", "volumetric_bilinear_align_corners_1")},
    **{f"test_reduce_{op}_empty_set": "a reduction over an empty axis is refused (as for ReduceSum)"
       for op in ("l1", "l2", "prod", "log_sum_exp", "log_sum", "sum_square")},
}


def _types_ok(model: onnx.ModelProto) -> bool:
    vis = list(model.graph.input) + list(model.graph.output)
    return all(v.type.tensor_type.elem_type in _TYPES for v in vis) and all(
        a.name != "to" or a.i in _TYPES for n in model.graph.node for a in n.attribute)


def _node_cases() -> list:
    from onnx.backend.test.case import node as case_node

    start = len(case_node._NodeTestCases)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for m in CASE_MODULES:
            importlib.import_module(f"onnx.backend.test.case.node.{m}")
    params = []
    for c in case_node._NodeTestCases[start:]:
        # "_expanded" cases run onnx's function body of the op (other ops) instead of the op: left out to
        # keep the suite fast; the op itself is what this file tests
        if not _types_ok(c.model) or "_expanded" in c.name:
            continue
        marks = [pytest.mark.xfail(strict=True, reason=CASES_NOT_YET[c.name])] if c.name in CASES_NOT_YET else []
        params.append(pytest.param(c, id=c.name, marks=marks))
    return params


NODE_CASES = _node_cases()


def test_node_cases_cover_every_op() -> None:
    """The selection is not empty and names no case that was not generated."""
    names = {p.id for p in NODE_CASES}
    assert len(names) > 300
    assert set(CASES_NOT_YET) <= names, sorted(set(CASES_NOT_YET) - names)


@pytest.mark.parametrize("case", NODE_CASES)
def test_onnx_node_case(case) -> None:
    inputs, expected = ([numpy_helper.to_array(t) if isinstance(t, onnx.TensorProto) else np.asarray(t) for t in ts]
                        for ts in case.data_sets[0])
    feeds = dict(zip(graph_input_names(case.model), inputs, strict=True))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        outs = cnnjit.compile(case.model).run(None, feeds)
    assert_outputs_match(list(outs), expected, case.rtol or 1e-3, case.atol or 1e-7, what=case.name)


# -- axis kernels over drawn shapes, at every vector width -----------------------------------------------
def _model(nodes: list, inputs: dict[str, np.ndarray], outs: list[str] | dict[str, int], opset: int = 18,
           consts: dict | None = None, contrib: bool = False) -> onnx.ModelProto:
    """A model of ``nodes`` with graph ``inputs`` (arrays, for their types), outputs (names, or names with
    element types), initializers ``consts`` (arrays, or TensorProtos) and, if ``contrib``, the
    com.microsoft domain."""
    vis = [helper.make_tensor_value_info(n, helper.np_dtype_to_tensor_dtype(a.dtype), a.shape)
           for n, a in inputs.items()]
    outs = outs if isinstance(outs, dict) else dict.fromkeys(outs, TensorProto.UNDEFINED)
    inits = [a if isinstance(a, onnx.TensorProto) else numpy_helper.from_array(a, n) for n, a in (consts or {}).items()]
    g = helper.make_graph(nodes, "m", vis, [helper.make_tensor_value_info(o, t, None) for o, t in outs.items()],
                          inits)
    ops = [helper.make_opsetid("", opset)] + ([helper.make_opsetid("com.microsoft", 1)] if contrib else [])
    return helper.make_model(g, opset_imports=ops, ir_version=8)


def _check_reference(model: onnx.ModelProto, feeds: dict[str, np.ndarray], width: int, op: str,
                     rtol: float = 1e-5, atol: float = 1e-6) -> None:
    """cnnjit at vector ``width`` against onnx.reference, with the op's one kernel variant in the schedule."""
    want = ReferenceEvaluator(model).run(None, feeds)
    compiled = cnnjit.compile(model, vector_width=width)
    ran = {c.variant for c in compiled._default_spec().program.calls if c.op == op}
    assert len(ran) == 1, f"{op}: the schedule ran {ran}"
    got = compiled.run(None, feeds)
    assert_outputs_match(list(got), [np.asarray(w) for w in want], rtol, atol, what=op)


shapes = st.lists(st.integers(1, 5), min_size=1, max_size=4)


@pytest.mark.parametrize("width", [4, 8, 16])
@property_settings(max_examples=4)
@given(shape=shapes, data=st.data(), seed=st.integers(0, 2**16))
def test_axis_kernels(width: int, shape: list[int], data, seed: int) -> None:
    """ArgMax/ArgMin, TopK, CumSum and GatherElements on one drawn axis against onnx.reference."""
    rng = np.random.default_rng(seed)
    x = rng.integers(-4, 5, shape).astype(np.float32)  # small integers: ties exercise the index rules
    axis = data.draw(st.integers(-len(shape), len(shape) - 1), label="axis")
    n = shape[axis]
    which = data.draw(st.sampled_from(["ArgMax", "ArgMin", "TopK", "CumSum", "GatherElements"]), label="op")
    feeds, consts = {"x": x}, {}
    if which in ("ArgMax", "ArgMin"):
        node = helper.make_node(which, ["x"], ["y"], axis=axis, keepdims=data.draw(st.integers(0, 1)),
                                select_last_index=data.draw(st.integers(0, 1)))
        outs = ["y"]
    elif which == "TopK":
        consts["k"] = np.array([data.draw(st.integers(1, n), label="k")], np.int64)
        node = helper.make_node("TopK", ["x", "k"], ["v", "i"], axis=axis, largest=data.draw(st.integers(0, 1)))
        outs = ["v", "i"]
    elif which == "CumSum":
        consts["a"] = np.array(axis, np.int64)
        node = helper.make_node("CumSum", ["x", "a"], ["y"], exclusive=data.draw(st.integers(0, 1)),
                                reverse=data.draw(st.integers(0, 1)))
        outs = ["y"]
    else:
        ishape = list(shape)
        ishape[axis] = data.draw(st.integers(1, 4), label="m")
        feeds["i"] = rng.integers(-n, n, ishape).astype(np.int64)
        node = helper.make_node("GatherElements", ["x", "i"], ["y"], axis=axis)
        outs = ["y"]
    _check_reference(_model([node], feeds, outs, consts=consts), feeds, width, which)


@pytest.mark.parametrize("width", [4, 8, 16])
@property_settings(max_examples=4)
@given(shape=shapes, data=st.data(), seed=st.integers(0, 2**16))
def test_reductions(width: int, shape: list[int], data, seed: int) -> None:
    x = np.random.default_rng(seed).uniform(0.5, 1.5, shape).astype(np.float32)
    op = data.draw(st.sampled_from(["ReduceL1", "ReduceL2", "ReduceSumSquare", "ReduceProd", "ReduceLogSum",
                                    "ReduceLogSumExp"]), label="op")
    axes = data.draw(st.lists(st.integers(0, len(shape) - 1), min_size=1, unique=True), label="axes")
    node = helper.make_node(op, ["x", "axes"], ["y"], keepdims=data.draw(st.integers(0, 1)))
    model = _model([node], {"x": x}, ["y"], consts={"axes": np.array(axes, np.int64)})
    _check_reference(model, {"x": x}, width, op, rtol=1e-4)


@property_settings(max_examples=6)
@given(data=st.data(), seed=st.integers(0, 2**16))
def test_gather_scatter_nd(data, seed: int) -> None:
    rng = np.random.default_rng(seed)
    shape = data.draw(st.lists(st.integers(1, 4), min_size=1, max_size=4), label="shape")
    q = data.draw(st.integers(1, len(shape)), label="q")
    m = data.draw(st.integers(1, 3), label="m")
    x = rng.standard_normal(shape).astype(np.float32)
    idx = np.stack([rng.integers(-d, d, m) for d in shape[:q]], axis=-1).astype(np.int64)
    if data.draw(st.booleans(), label="scatter"):
        # distinct targets: with repeats the order of a plain scatter's updates is unspecified
        flat = rng.permutation(int(np.prod(shape[:q])))[:m]
        idx = np.stack(np.unravel_index(flat, shape[:q]), axis=-1).astype(np.int64)
        upd = rng.standard_normal((len(idx),) + tuple(shape[q:])).astype(np.float32)
        red = data.draw(st.sampled_from(["none", "add", "mul", "max", "min"]), label="reduction")
        feeds = {"x": x, "i": idx, "u": upd}
        node, op = helper.make_node("ScatterND", ["x", "i", "u"], ["y"], reduction=red), "ScatterND"
    else:
        feeds = {"x": x, "i": idx}
        node, op = helper.make_node("GatherND", ["x", "i"], ["y"]), "GatherND"
    _check_reference(_model([node], feeds, ["y"]), feeds, 8, op)


@pytest.mark.parametrize("width", [4, 8, 16])
@property_settings(max_examples=6)
@given(mode=st.sampled_from(["linear", "nearest"]), pad=st.sampled_from(["zeros", "border", "reflection"]),
       align=st.integers(0, 1), h=st.integers(1, 5), w=st.integers(1, 5), seed=st.integers(0, 2**16))
def test_grid_sample(width: int, mode: str, pad: str, align: int, h: int, w: int, seed: int) -> None:
    """GridSample against onnx.reference, with grid points well outside [-1, 1] (padding, reflection)."""
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((2, 3, h, w)).astype(np.float32)
    grid = rng.uniform(-2.5, 2.5, (2, 4, 3, 2)).astype(np.float32)
    node = helper.make_node("GridSample", ["x", "g"], ["y"], mode=mode, padding_mode=pad, align_corners=align)
    _check_reference(_model([node], {"x": x, "g": grid}, ["y"], opset=20), {"x": x, "g": grid}, width,
                     "GridSample", rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("eq,shapes", [
    ("bij,bjk->bik", [(2, 3, 4), (2, 4, 5)]),
    ("ij,kj->ik", [(3, 4), (5, 4)]),
    ("bhqd,bhkd->bhqk", [(1, 2, 3, 4), (1, 2, 5, 4)]),
    ("...ij,...jk->...ik", [(2, 3, 4), (2, 4, 2)]),
    ("nchw->nhwc", [(1, 2, 3, 4)]),
    ("ij,j->i", [(3, 4), (4,)]),
    ("bi,bi->b", [(3, 4), (3, 4)]),
    ("ij,ij->ji", [(2, 3), (2, 3)]),
    ("i,j->ij", [(3,), (4,)]),
])
def test_einsum_rewrites(eq: str, shapes: list[tuple[int, ...]]) -> None:
    """Einsum becomes Transpose / ReduceSum / MatMul at import: no Einsum reaches the IR."""
    rng = np.random.default_rng(0)
    feeds = {f"x{i}": rng.standard_normal(s).astype(np.float32) for i, s in enumerate(shapes)}
    model = _model([helper.make_node("Einsum", list(feeds), ["y"], equation=eq)], feeds, ["y"], opset=13)
    compiled = cnnjit.compile(model)
    assert "Einsum" not in {n.op for n in compiled.ir.nodes}
    np.testing.assert_allclose(compiled.run(None, feeds)[0], np.einsum(eq, *feeds.values()), rtol=1e-5, atol=1e-5)


# -- anchors from the input's shape fold away --------------------------------------------------------------
def test_anchor_grid_from_shape_folds_to_constants() -> None:
    """A YOLOv8-style grid: Shape → Gather → Range → Unsqueeze/Expand/Concat → Add to the head's output.
    At a static input shape every anchor op is a constant: the IR keeps only the compute."""
    i64 = lambda v: numpy_helper.from_array(np.asarray(v, np.int64))  # noqa: E731
    f32 = lambda v: numpy_helper.from_array(np.asarray(v, np.float32))  # noqa: E731
    nodes = [
        helper.make_node("Conv", ["x", "w"], ["h"]),
        helper.make_node("Shape", ["h"], ["s"]),
        helper.make_node("Constant", [], ["i2"], value=i64(2)),
        helper.make_node("Constant", [], ["i3"], value=i64(3)),
        helper.make_node("Gather", ["s", "i2"], ["H"]),
        helper.make_node("Gather", ["s", "i3"], ["W"]),
        helper.make_node("Constant", [], ["z"], value=i64(0)),
        helper.make_node("Constant", [], ["one"], value=i64(1)),
        helper.make_node("Range", ["z", "H", "one"], ["ry"]),
        helper.make_node("Range", ["z", "W", "one"], ["rx"]),
        helper.make_node("Cast", ["ry"], ["fy"], to=TensorProto.FLOAT),
        helper.make_node("Cast", ["rx"], ["fx"], to=TensorProto.FLOAT),
        helper.make_node("Constant", [], ["half"], value=f32(0.5)),
        helper.make_node("Add", ["fy", "half"], ["cy"]),
        helper.make_node("Add", ["fx", "half"], ["cx"]),
        helper.make_node("Constant", [], ["ax1"], value=i64([1])),
        helper.make_node("Constant", [], ["ax0"], value=i64([0])),
        helper.make_node("Unsqueeze", ["cy", "ax1"], ["cy2"]),
        helper.make_node("Unsqueeze", ["cx", "ax0"], ["cx2"]),
        helper.make_node("Unsqueeze", ["H", "ax0"], ["H1"]),
        helper.make_node("Unsqueeze", ["W", "ax0"], ["W1"]),
        helper.make_node("Concat", ["H1", "W1"], ["hw"], axis=0),
        helper.make_node("Expand", ["cy2", "hw"], ["gy"]),
        helper.make_node("Expand", ["cx2", "hw"], ["gx"]),
        helper.make_node("Add", ["gy", "gx"], ["grid"]),
        helper.make_node("Add", ["h", "grid"], ["y"]),
    ]
    w = np.random.default_rng(0).standard_normal((2, 3, 1, 1)).astype(np.float32)
    x = np.random.default_rng(1).standard_normal((1, 3, 5, 7)).astype(np.float32)
    g = helper.make_graph(nodes, "anchors", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 5, 7])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
                          [numpy_helper.from_array(w, "w")])
    model = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)
    compiled = cnnjit.compile(model)
    assert {n.op for n in compiled.ir.nodes} <= {"Conv", "Add"}, [n.op for n in compiled.ir.nodes]
    np.testing.assert_allclose(compiled.run(None, {"x": x})[0], ort_session(model).run(None, {"x": x})[0],
                               rtol=1e-5, atol=1e-5)


# -- com.microsoft quantized ops against onnxruntime -------------------------------------------------------
def _qparams(rng: np.random.Generator, name: str) -> list[onnx.TensorProto]:
    return [numpy_helper.from_array(np.asarray(rng.uniform(0.01, 0.05), np.float32), f"{name}_s"),
            numpy_helper.from_array(np.asarray(rng.integers(90, 160), np.uint8), f"{name}_z")]


def _lsb_match(model: onnx.ModelProto, feeds: dict[str, np.ndarray], what: str) -> None:
    """cnnjit's integer outputs within 1 LSB of onnxruntime's (its contrib kernels round via float or
    lookup tables)."""
    want = ort_session(model).run(None, feeds)
    got = cnnjit.compile(model).run(None, feeds)
    for g, w in zip(got, want, strict=True):
        assert g.dtype == w.dtype and g.shape == w.shape, (what, g.dtype, w.dtype, g.shape, w.shape)
        assert np.abs(g.astype(np.int32) - w.astype(np.int32)).max() <= 1, what


@pytest.mark.parametrize("op", ["QLinearAdd", "QLinearMul", "QLinearSigmoid", "QLinearLeakyRelu",
                                "QLinearGlobalAveragePool", "QLinearAveragePool", "QLinearConcat", "QLinearSoftmax",
                                "QLinearWhere"])
@property_settings(max_examples=3)
@given(c=st.integers(1, 6), hw=st.integers(1, 6), bcast=st.booleans(), seed=st.integers(0, 2**16))
def test_qlinear_contrib_ops(op: str, c: int, hw: int, bcast: bool, seed: int) -> None:
    rng = np.random.default_rng(seed)
    x = rng.integers(0, 256, (1, c, hw, hw)).astype(np.uint8)
    b = rng.integers(0, 256, (1, c, 1, 1) if bcast else (1, c, hw, hw)).astype(np.uint8)
    inits = _qparams(rng, "x") + _qparams(rng, "b") + _qparams(rng, "y")
    feeds, attrs = {"x": x}, {}
    if op in ("QLinearAdd", "QLinearMul"):
        ins, feeds["b"] = ["x", "x_s", "x_z", "b", "b_s", "b_z", "y_s", "y_z"], b
    elif op == "QLinearConcat":
        ins, feeds["b"], attrs = ["y_s", "y_z", "x", "x_s", "x_z", "b", "b_s", "b_z"], b, {"axis": 1 if bcast else 3}
        if bcast:
            feeds["b"] = rng.integers(0, 256, (1, 2, hw, hw)).astype(np.uint8)
    elif op == "QLinearWhere":
        feeds["c"], feeds["b"] = rng.integers(0, 2, (1, 1, hw, hw)).astype(bool), b
        ins = ["c", "x", "x_s", "x_z", "b", "b_s", "b_z", "y_s", "y_z"]
    elif op == "QLinearSoftmax":
        # the output scale of a probability: 1/256, zero point 0 (as onnxruntime's quantizer writes it)
        inits = inits[:2] + [numpy_helper.from_array(np.asarray(1 / 256, np.float32), "y_s"),
                             numpy_helper.from_array(np.asarray(0, np.uint8), "y_z")]
        ins, attrs = ["x", "x_s", "x_z", "y_s", "y_z"], {"axis": -1 if bcast else 1, "opset": 13}
    else:
        ins = ["x", "x_s", "x_z", "y_s", "y_z"]
        attrs = {"alpha": 0.2} if op == "QLinearLeakyRelu" else \
            {"kernel_shape": [min(2, hw)] * 2, "strides": [1, 1]} if op == "QLinearAveragePool" else {}
    node = helper.make_node(op, ins, ["y"], domain="com.microsoft", **attrs)
    model = _model([node], feeds, {"y": TensorProto.UINT8}, 13, {t.name: t for t in inits}, contrib=True)
    _lsb_match(model, feeds, op)


@property_settings(max_examples=4)
@given(m=st.integers(1, 4), k=st.integers(1, 9), n=st.integers(1, 7), trans_b=st.integers(0, 1),
       quantized_out=st.booleans(), seed=st.integers(0, 2**16))
def test_qgemm(m: int, k: int, n: int, trans_b: int, quantized_out: bool, seed: int) -> None:
    rng = np.random.default_rng(seed)
    a = rng.integers(0, 256, (m, k)).astype(np.uint8)
    # 7-bit weights: onnxruntime's u8s8 kernel on AVX2 adds products in pairs into saturating int16
    # (its quantizer's reduce_range), so full-range int8 weights can make the oracle itself wrong
    w = rng.integers(-63, 64, (n, k) if trans_b else (k, n)).astype(np.int8)
    inits = _qparams(rng, "a") + [
        numpy_helper.from_array(w, "w"), numpy_helper.from_array(np.asarray(0.02, np.float32), "w_s"),
        numpy_helper.from_array(np.asarray(0, np.int8), "w_z"),
        numpy_helper.from_array(rng.integers(-500, 500, n).astype(np.int32), "c")] + _qparams(rng, "y")
    ins = ["a", "a_s", "a_z", "w", "w_s", "w_z", "c"] + (["y_s", "y_z"] if quantized_out else [])
    node = helper.make_node("QGemm", ins, ["y"], domain="com.microsoft", transB=trans_b, alpha=0.5)
    out_t = TensorProto.UINT8 if quantized_out else TensorProto.FLOAT
    model = _model([node], {"a": a}, {"y": out_t}, 13, {t.name: t for t in inits}, contrib=True)
    if quantized_out:
        _lsb_match(model, {"a": a}, "QGemm")
    else:
        want = ort_session(model).run(None, {"a": a})[0]
        np.testing.assert_allclose(cnnjit.compile(model).run(None, {"a": a})[0], want, rtol=1e-5, atol=1e-4)


def test_quantize_static_qoperator_model(tmp_path) -> None:
    """A float model quantized by onnxruntime's ``quantize_static`` in the QOperator format (its contrib ops:
    QLinearAdd/Mul/Sigmoid/LeakyRelu/Concat/AveragePool/GlobalAveragePool, QGemm) matches onnxruntime to
    within one step of the output's quantization."""
    quant = pytest.importorskip("onnxruntime.quantization")
    rng = np.random.default_rng(0)

    def init(name: str, shape: tuple) -> onnx.TensorProto:
        return numpy_helper.from_array((rng.standard_normal(shape) * 0.5).astype(np.float32), name)

    nodes = [
        helper.make_node("Mul", ["x", "k"], ["m0"]),
        helper.make_node("Sigmoid", ["m0"], ["s1"]),
        helper.make_node("Mul", ["m0", "s1"], ["m1"]),
        helper.make_node("LeakyRelu", ["m1"], ["l2"], alpha=0.1),
        helper.make_node("Add", ["l2", "x"], ["a2"]),
        helper.make_node("Concat", ["a2", "m0"], ["cat"], axis=1),
        helper.make_node("AveragePool", ["cat"], ["ap"], kernel_shape=[2, 2], strides=[2, 2]),
        helper.make_node("GlobalAveragePool", ["ap"], ["gp"]),
        helper.make_node("Flatten", ["gp"], ["f"]),
        helper.make_node("Gemm", ["f", "wg", "bg"], ["y"], transB=1),
    ]
    g = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4, 8, 8])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 5])],
                          [init("k", (1, 4, 1, 1)), init("wg", (5, 8)), init("bg", (5,))])
    fp, qp = tmp_path / "f.onnx", tmp_path / "q.onnx"
    onnx.save(helper.make_model(g, opset_imports=[helper.make_opsetid("", 13)], ir_version=8), fp)
    calib = iter([{"x": rng.standard_normal((1, 4, 8, 8)).astype(np.float32)} for _ in range(8)])

    class Reader(quant.CalibrationDataReader):
        def get_next(self):
            return next(calib, None)

    quant.quantize_static(str(fp), str(qp), Reader(), quant_format=quant.QuantFormat.QOperator)
    q = onnx.load(str(qp))
    contrib = {n.op_type for n in q.graph.node if n.domain == "com.microsoft"}
    assert {"QLinearAdd", "QLinearMul", "QLinearSigmoid", "QGemm"} <= contrib, contrib
    x = rng.standard_normal((1, 4, 8, 8)).astype(np.float32)
    want = ort_session(q).run(None, {"x": x})[0]
    got = cnnjit.compile(q).run(None, {"x": x})[0]
    y_scale = next(numpy_helper.to_array(t) for t in q.graph.initializer if t.name == "y_scale")
    assert np.abs(got - want).max() <= 1.01 * float(y_scale), (np.abs(got - want).max(), y_scale)


# -- what stays unsupported is named, all at once ------------------------------------------------------------
def test_unsupported_ops_listed_together() -> None:
    nodes = [helper.make_node("NonZero", ["x"], ["nz"], name="n1"),
             helper.make_node("Einsum", ["x"], ["d"], name="n3", equation="ii->i"),
             helper.make_node("FusedMatMul", ["x", "x"], ["y"], name="n2", domain="com.microsoft")]
    m = _model(nodes, {"x": np.zeros((2, 2), np.float32)}, ["y"], 17, contrib=True)
    with pytest.raises(cnnjit.UnsupportedOpError) as ei:
        cnnjit.compile(m)
    msg = str(ei.value)
    assert "NonZero" in msg and "'n1'" in msg and "FusedMatMul" in msg and "'n2'" in msg and "opset 17" in msg
    assert "Einsum" in msg and "'n3'" in msg and "diagonal" in msg


def test_range_from_data_specialises_on_values() -> None:
    """A Range whose limit is computed from an input's data (not its shape) is specialised on that input's
    values, like a Reshape target: each new value compiles again and the result is right."""
    nodes = [helper.make_node("ReduceMax", ["x"], ["hi"], keepdims=0),
             helper.make_node("Range", ["lo", "hi", "d"], ["y"], name="r")]
    g = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [3])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
                          [numpy_helper.from_array(np.asarray(0.5, np.float32), "lo"),
                           numpy_helper.from_array(np.asarray(1.5, np.float32), "d")])
    compiled = cnnjit.compile(helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)], ir_version=8))
    for x in (np.array([1.0, 7.0, 2.0], np.float32), np.array([3.0, 0.0, -1.0], np.float32)):
        np.testing.assert_array_equal(compiled.run(None, {"x": x})[0], np.arange(0.5, x.max(), 1.5, dtype=np.float32))
