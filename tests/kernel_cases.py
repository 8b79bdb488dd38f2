"""Shared machinery of the kernel property tests (``test_kernels_*.py``): one-node models, settings, checks.

Every test draws operator parameters, builds a one-node ONNX model (opset 17 unless noted, float32,
weights as initializers), compiles it with ``cnnjit.compile`` and compares ``model.run`` against the
float64 reference in ``tests/reference_np.py``.  Input data comes from ``np.random.default_rng(seed)``
with ``seed`` drawn by hypothesis, so every falsifying example is reproducible from its printout.

Each test file's ``test_reference_matches_onnxruntime`` runs its case generators through onnxruntime
(``check_reference``) to keep the oracle itself honest.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st
from onnx import TensorProto, helper, numpy_helper

import cnnjit

OPSET = 17
RTOL = 1e-4
ATOL = 1e-5


def property_settings(max_examples: int = 25):
    """Per-test settings on top of the loaded profile (tests/conftest.py: "ci" = 25 derandomized examples).

    ``max_examples`` is given relative to the ci profile's 25 and scaled with the active profile, so
    ``HYPOTHESIS_PROFILE=dev`` still runs many more examples.  No deadline: the first compile of a new
    kernel variant takes about a second.
    """
    base = settings.default.max_examples
    return settings(
        deadline=None,
        max_examples=max(1, round(max_examples * base / 25)),
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.filter_too_much],
    )


# ---------------------------------------------------------------------------------------------
# model construction / comparison helpers
# ---------------------------------------------------------------------------------------------

class Case:
    """One generated test case: a model, its feeds and the reference outputs.

    ``ort_ok`` is False where onnxruntime does not implement the ONNX spec (the oracle self-check skips
    those cases).
    """

    def __init__(self, desc: str, model: onnx.ModelProto, feeds: dict[str, np.ndarray],
                 expected: list[np.ndarray], atol: float = ATOL, rtol: float = RTOL, ort_ok: bool = True):
        self.desc, self.model, self.feeds, self.expected = desc, model, feeds, expected
        self.atol, self.rtol, self.ort_ok = atol, rtol, ort_ok

    def __repr__(self) -> str:  # what hypothesis prints for a falsifying example
        shapes = {k: v.shape for k, v in self.feeds.items()}
        return f"Case({self.desc}, feeds={shapes}, out={[e.shape for e in self.expected]})"


def make_model(nodes, inputs: dict[str, np.ndarray], outputs: dict[str, tuple],
               initializers: dict[str, np.ndarray] | None = None, opset: int = OPSET) -> onnx.ModelProto:
    graph = helper.make_graph(
        nodes,
        "kernel_property",
        [helper.make_tensor_value_info(k, TensorProto.FLOAT, list(v.shape)) for k, v in inputs.items()],
        [helper.make_tensor_value_info(k, TensorProto.FLOAT, list(s)) for k, s in outputs.items()],
        initializer=[numpy_helper.from_array(np.asarray(v, dtype=np.float32), name=k)
                     for k, v in (initializers or {}).items()],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)],
                              producer_name="cnnjit-kernel-property-tests")
    model.ir_version = 8
    onnx.checker.check_model(model)
    return model


def one_node_case(desc, op, inputs, initializers, input_names, expected, *, attrs=None, opset=OPSET,
                  atol=ATOL, rtol=RTOL, ort_ok=True, seed=None) -> Case:
    """``input_names`` is the node's input list (may include "" for omitted optional inputs)."""
    if seed is not None:
        desc = f"{desc} seed={seed}"
    expected = np.asarray(expected, dtype=np.float64)
    node = helper.make_node(op, input_names, ["y"], **(attrs or {}))
    model = make_model([node], inputs, {"y": expected.shape}, initializers, opset)
    return Case(desc, model, inputs, [expected], atol=atol, rtol=rtol, ort_ok=ort_ok)


def check_cnnjit(case: Case) -> None:
    """cnnjit's outputs match the case's reference outputs, and the feeds are left untouched."""
    feeds_before = {k: v.copy() for k, v in case.feeds.items()}
    compiled = cnnjit.compile(case.model)
    outs = compiled.run(None, dict(case.feeds))
    assert len(outs) == len(case.expected), f"{len(outs)} outputs, expected {len(case.expected)}"
    for i, (got, exp) in enumerate(zip(outs, case.expected, strict=True)):
        got = np.asarray(got)
        assert got.shape == exp.shape, f"output {i}: shape {got.shape} != expected {exp.shape}"
        assert got.dtype == np.float32, f"output {i}: dtype {got.dtype} != float32"
        np.testing.assert_allclose(got.astype(np.float64), exp, rtol=case.rtol, atol=case.atol,
                                   err_msg=f"output {i} of {case.desc}")
    for k, v in feeds_before.items():
        np.testing.assert_array_equal(case.feeds[k], v, err_msg=f"input {k!r} was modified in place")


def run_onnxruntime(case: Case) -> list[np.ndarray]:
    so = ort.SessionOptions()
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    so.intra_op_num_threads = 1
    so.inter_op_num_threads = 1
    so.log_severity_level = 3  # ORT's own shape inference disagrees with its ceil_mode kernels: mute
    sess = ort.InferenceSession(case.model.SerializeToString(), so, providers=["CPUExecutionProvider"])
    return sess.run(None, case.feeds)


def draw_rng(draw) -> tuple[int, np.random.Generator]:
    seed = draw(st.integers(0, 2**32 - 1))
    return seed, np.random.default_rng(seed)


def normal(rng, shape, scale=1.0) -> np.ndarray:
    return np.asarray(rng.standard_normal(shape) * scale, dtype=np.float32)


def f32(v: float) -> float:
    """Round a python float to the nearest float32 (ONNX float attributes are float32)."""
    return float(np.float32(v))


def check_reference(case: Case) -> None:
    """The numpy reference outputs of ``case`` agree with onnxruntime (where it follows the spec)."""
    assume(case.ort_ok)
    outs = run_onnxruntime(case)
    assert len(outs) == len(case.expected)
    for got, exp in zip(outs, case.expected, strict=True):
        assert got.shape == exp.shape, f"onnxruntime shape {got.shape} != reference {exp.shape}"
        np.testing.assert_allclose(got.astype(np.float64), exp, rtol=case.rtol, atol=case.atol)


def kernel_test(cases: st.SearchStrategy[Case], max_examples: int) -> Callable[[Case], None]:
    """A test that compiles ``max_examples`` cases drawn from ``cases`` and checks each (``check_cnnjit``)."""

    @property_settings(max_examples)
    @given(case=cases)
    def test(case: Case) -> None:
        check_cnnjit(case)

    return test


def reference_test(families: dict[str, st.SearchStrategy[Case]]) -> Callable[[str, st.DataObject], None]:
    """A test, parametrized by family, that the numpy references of each family's cases agree with
    onnxruntime (``check_reference``)."""

    @pytest.mark.parametrize("family", sorted(families))
    @property_settings(15)
    @given(data=st.data())
    def test(family: str, data: st.DataObject) -> None:
        check_reference(data.draw(families[family], label="case"))

    return test


def pool_attrs_and_reference(case: dict, x: np.ndarray) -> tuple[dict, np.ndarray]:
    """A pool case's ONNX attributes and its float64 numpy reference (``reference_np``): ``case`` has op
    (MaxPool: with dilations ``d``; AveragePool: pads counted in the divisor), kernel ``k``, strides ``s``,
    ``pads`` and ``ceil`` mode."""
    import reference_np as ref

    k, s, pads = case["k"], case["s"], case["pads"]
    attrs = dict(kernel_shape=k, strides=s, pads=pads, ceil_mode=case["ceil"])
    if case["op"] == "MaxPool":
        attrs["dilations"] = case["d"]
        return attrs, ref.max_pool(x, k, strides=s, pads=pads, dilations=case["d"], ceil_mode=case["ceil"])
    attrs["count_include_pad"] = 1
    return attrs, ref.avg_pool(x, k, strides=s, pads=pads, ceil_mode=case["ceil"], count_include_pad=1)
