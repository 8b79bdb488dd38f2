"""ONNX ``If`` (``frontend/import_control.py``), with onnxruntime as the oracle.

The patterns are the ones shipped models use: a wake-word model that runs a verifier network when its
first score passes a threshold (a condition known only at run time: both branches and a ``Where``), a
voice-activity model whose sample-rate input picks a sub-network (a small integer input: specialised on its
value), and exporters' shape checks (``Equal(Shape(x)[0], 1)`` → Squeeze or Identity, nested in branches:
folded at the static shape).
"""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from conftest import assert_outputs_match, ort_session
from onnx import TensorProto, helper, numpy_helper

import cnnjit
from cnnjit.ir.errors import UnsupportedOpError

F = TensorProto.FLOAT


def _model(nodes: list, inputs: list, outputs: list, inits: tuple = ()) -> onnx.ModelProto:
    g = helper.make_graph(nodes, "g", inputs, outputs, list(inits))
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 15)])
    m.ir_version = 8
    return m


def _squeeze_if_batch1(x: str, out: str, tag: str) -> list:
    """An exporter's shape check: ``out`` is ``x`` squeezed on axis 0 when that axis is 1, else ``x``."""
    axes = numpy_helper.from_array(np.array([0], np.int64), f"{tag}_axes")
    then = helper.make_graph([helper.make_node("Squeeze", [x, f"{tag}_axes"], [f"{tag}_sq"])], f"{tag}_then",
                             [], [helper.make_tensor_value_info(f"{tag}_sq", F, None)], [axes])
    other = helper.make_graph([helper.make_node("Identity", [x], [f"{tag}_id"])], f"{tag}_else", [],
                              [helper.make_tensor_value_info(f"{tag}_id", F, None)])
    return [
        helper.make_node("Shape", [x], [f"{tag}_shape"]),
        helper.make_node("Gather", [f"{tag}_shape", f"{tag}_zero"], [f"{tag}_n"], axis=0),
        helper.make_node("Equal", [f"{tag}_n", f"{tag}_one"], [f"{tag}_c"]),
        helper.make_node("If", [f"{tag}_c"], [out], then_branch=then, else_branch=other),
    ]


def _shape_consts(tag: str) -> list:
    return [numpy_helper.from_array(np.array(0, np.int64), f"{tag}_zero"),
            numpy_helper.from_array(np.array(1, np.int64), f"{tag}_one")]


def _verifier_model() -> onnx.ModelProto:
    """score = sigmoid(mean(x)); where score >= 0.5 the result is a second network's (a MatMul with the
    branch's own weight, on the outer ``x``, squeezed by a nested shape check), else the score broadcast."""
    w = numpy_helper.from_array(np.random.default_rng(3).standard_normal((8, 4)).astype(np.float32), "w")
    then_nodes = [helper.make_node("MatMul", ["x", "w"], ["h"]), helper.make_node("Sigmoid", ["h"], ["hs"]),
                  *_squeeze_if_batch1("hs", "t_out", "in")]
    then = helper.make_graph(then_nodes, "verify", [], [helper.make_tensor_value_info("t_out", F, None)],
                             [w, *_shape_consts("in")])
    other = helper.make_graph([helper.make_node("Expand", ["score", "shape4"], ["e_out"])], "keep", [],
                              [helper.make_tensor_value_info("e_out", F, None)])
    nodes = [helper.make_node("ReduceMean", ["x"], ["m"], keepdims=0),
             helper.make_node("Sigmoid", ["m"], ["score"]),
             helper.make_node("GreaterOrEqual", ["score", "half"], ["c"]),
             helper.make_node("If", ["c"], ["y"], then_branch=then, else_branch=other)]
    inits = [numpy_helper.from_array(np.array(0.5, np.float32), "half"),
             numpy_helper.from_array(np.array([4], np.int64), "shape4")]
    return _model(nodes, [helper.make_tensor_value_info("x", F, [1, 8])],
                  [helper.make_tensor_value_info("y", F, None)], inits)


@pytest.mark.parametrize("sign", [1.0, -1.0])
def test_runtime_condition_runs_both_branches(sign: float) -> None:
    m = _verifier_model()
    x = (np.abs(np.random.default_rng(0).standard_normal((1, 8))) * sign).astype(np.float32)
    compiled = cnnjit.compile(m, input_shapes={"x": (1, 8)})
    assert "Where" in [n.op for n in compiled.ir.nodes]  # both branches imported
    expected = ort_session(m).run(None, {"x": x})
    assert_outputs_match([compiled(x)], expected, rtol=1e-5, atol=1e-6, what=f"If sign {sign}")


def _rate_model() -> onnx.ModelProto:
    """``sr == 16000`` picks a branch with a different output shape (only possible on a known value)."""
    then = helper.make_graph([helper.make_node("Relu", ["x"], ["a"])], "sr16k", [],
                             [helper.make_tensor_value_info("a", F, None)])
    other = helper.make_graph([helper.make_node("AveragePool", ["x"], ["b"], kernel_shape=[2], strides=[2])],
                              "sr8k", [], [helper.make_tensor_value_info("b", F, None)])
    nodes = [helper.make_node("Equal", ["sr", "k16"], ["c"]),
             helper.make_node("If", ["c"], ["y0"], then_branch=then, else_branch=other),
             *_squeeze_if_batch1("y0", "y", "top")]
    inits = [numpy_helper.from_array(np.array(16000, np.int64), "k16"), *_shape_consts("top")]
    return _model(nodes, [helper.make_tensor_value_info("x", F, [1, 2, 12]),
                          helper.make_tensor_value_info("sr", TensorProto.INT64, [])],
                  [helper.make_tensor_value_info("y", F, None)], inits)


def test_small_integer_condition_input_is_specialised_on_its_value() -> None:
    m = _rate_model()
    compiled = cnnjit.compile(m)
    sess = ort_session(m)
    x = np.random.default_rng(1).standard_normal((1, 2, 12)).astype(np.float32)
    for sr in (16000, 8000):
        feeds = {"x": x, "sr": np.array(sr, np.int64)}
        assert_outputs_match([compiled(**feeds)], sess.run(None, feeds), rtol=1e-6, atol=1e-6, what=f"sr={sr}")


def test_runtime_condition_with_branch_shapes_that_differ_is_refused() -> None:
    then = helper.make_graph([helper.make_node("Relu", ["x"], ["a"])], "same", [],
                             [helper.make_tensor_value_info("a", F, None)])
    other = helper.make_graph([helper.make_node("ReduceSum", ["x"], ["b"], keepdims=0)], "smaller", [],
                              [helper.make_tensor_value_info("b", F, None)])
    nodes = [helper.make_node("ReduceMax", ["x"], ["m"], keepdims=0),
             helper.make_node("Greater", ["m", "zero"], ["c"]),
             helper.make_node("If", ["c"], ["y"], then_branch=then, else_branch=other)]
    m = _model(nodes, [helper.make_tensor_value_info("x", F, [2, 3])], [helper.make_tensor_value_info("y", F, None)],
               [numpy_helper.from_array(np.array(0.0, np.float32), "zero")])
    with pytest.raises(UnsupportedOpError, match="one static shape"):
        cnnjit.compile(m, input_shapes={"x": (2, 3)})


def test_unsupported_op_inside_a_branch_is_listed() -> None:
    then = helper.make_graph([helper.make_node("NoSuchOp", ["x"], ["a"])], "bad", [],
                             [helper.make_tensor_value_info("a", F, None)])
    other = helper.make_graph([helper.make_node("Identity", ["x"], ["b"])], "ok", [],
                              [helper.make_tensor_value_info("b", F, None)])
    g = helper.make_graph([helper.make_node("If", ["c"], ["y"], then_branch=then, else_branch=other)], "g",
                          [helper.make_tensor_value_info("x", F, [2]), helper.make_tensor_value_info("c", 9, [])],
                          [helper.make_tensor_value_info("y", F, None)])
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 15)])
    with pytest.raises(UnsupportedOpError, match="NoSuchOp"):
        cnnjit.compile(m)
