"""Patterns from shipped models outside the corpus (issue 17's held-out check), as small generated models
with onnxruntime as the oracle: the real files are not in the repository (licences)."""

from __future__ import annotations

import numpy as np
import onnx
from conftest import assert_outputs_match, ort_session
from onnx import TensorProto, helper, numpy_helper

import cnnjit

F = TensorProto.FLOAT


def _model(nodes: list, inputs: list, outputs: list, inits: tuple = (), opset: int = 13) -> onnx.ModelProto:
    g = helper.make_graph(nodes, "g", inputs, outputs, list(inits))
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", opset)])
    m.ir_version = 8
    return m


def test_clip_bound_computed_at_run_time() -> None:
    """openWakeWord's log-mel front end: ``Clip(db, max(db) - 80, inf)``, plus a runtime upper bound. The
    input carries data, so it must not be specialised on its value: one compile serves every input."""
    nodes = [helper.make_node("ReduceMax", ["x"], ["m"], keepdims=0),
             helper.make_node("Sub", ["m", "range"], ["lo"]),
             helper.make_node("Clip", ["x", "lo", "big"], ["y"]),
             helper.make_node("ReduceMin", ["x"], ["n"], keepdims=0),
             helper.make_node("Add", ["n", "range"], ["hi"]),
             helper.make_node("Clip", ["x", "floor", "hi"], ["z"]),
             helper.make_node("Clip", ["x", "", "hi"], ["w"])]
    inits = [numpy_helper.from_array(np.array(v, np.float32), n)
             for n, v in (("range", 2.0), ("big", 1e30), ("floor", -1.5))]
    m = _model(nodes, [helper.make_tensor_value_info("x", F, [1, 5, 8])],
               [helper.make_tensor_value_info(n, F, [1, 5, 8]) for n in "yzw"], inits)
    compiled = cnnjit.compile(m)
    assert not any(s.by_value for s in compiled.inputs)
    sess = ort_session(m)
    for seed in range(3):
        x = (np.random.default_rng(seed).standard_normal((1, 5, 8)) * (seed + 1)).astype(np.float32)
        assert_outputs_match(list(compiled(x)), sess.run(None, {"x": x}), rtol=0, atol=0, what=f"seed {seed}")
