"""Activations fused after pools: MaxPool / AveragePool / GlobalAveragePool / GlobalMaxPool followed by an
activation become one kernel call whose ``post`` step applies it (in registers in ``simd_pool``, over the
stored output in the scalar kernels).

Oracles: numpy in float64 (``reference_np``) for the property tests, which force each pool variant at every
vector width and assert the variant ran and the activation was fused; onnxruntime for a small model.
"""

from __future__ import annotations

import numpy as np
import onnxruntime as ort
import pytest
import reference_np as ref
from hypothesis import given
from hypothesis import strategies as st
from kernel_cases import make_model, property_settings
from onnx import helper
from test_simd_widths import WIDTHS

import cnnjit

ACTS = {"Relu": ref.relu, "Sigmoid": ref.sigmoid, "HardSwish": ref.hard_swish, "Tanh": ref.tanh,
        "Softplus": lambda x: np.log1p(np.exp(-np.abs(x))) + np.maximum(x, 0)}


def _fused(compiled, op: str) -> tuple[set[str], list[str]]:
    calls = [c for c in compiled._default_spec().program.calls if c.op == op]
    (node,) = [n for n in compiled.ir.nodes if n.op == op]
    return {c.variant for c in calls}, [s.op for s in node.attrs["post"]]


@pytest.mark.parametrize("width", WIDTHS)
@property_settings(5)
@given(is_max=st.booleans(), k=st.integers(1, 3), s=st.integers(1, 2), pad=st.booleans(),
       act=st.sampled_from(sorted(ACTS)), variant=st.sampled_from(["simd_pool", "pool"]),
       hw=st.tuples(st.integers(3, 12), st.integers(3, 21)), seed=st.integers(0, 2**16))
def test_pool_then_activation_at_width(width, is_max, k, s, pad, act, variant, hw, seed) -> None:
    x = np.random.default_rng(seed).standard_normal((1, 3) + hw).astype(np.float32)
    pads = [k // 2 if pad else 0] * 4
    op = "MaxPool" if is_max else "AveragePool"
    attrs = dict(kernel_shape=[k, k], strides=[s, s], pads=pads)
    y = (ref.max_pool(x, [k, k], strides=[s, s], pads=pads) if is_max
         else ref.avg_pool(x, [k, k], strides=[s, s], pads=pads))
    y = ACTS[act](y)
    nodes = [helper.make_node(op, ["x"], ["p"], **attrs), helper.make_node(act, ["p"], ["y"])]
    compiled = cnnjit.compile(make_model(nodes, {"x": x}, {"y": y.shape}), vector_width=width,
                              variants={op: variant})
    assert _fused(compiled, op) == ({variant}, [act])
    np.testing.assert_allclose(compiled(x), y, rtol=1e-5, atol=2e-6)


@pytest.mark.parametrize("width", WIDTHS)
@pytest.mark.parametrize("op, act", [("GlobalAveragePool", "HardSwish"), ("GlobalMaxPool", "Sigmoid"),
                                     ("GlobalAveragePool", "Softplus")])
def test_global_pool_then_activation_at_width(width, op, act) -> None:
    x = np.random.default_rng(width).standard_normal((2, 5, 7, 9)).astype(np.float32)
    y = ACTS[act](ref.global_avg_pool(x) if op == "GlobalAveragePool" else ref.global_max_pool(x))
    nodes = [helper.make_node(op, ["x"], ["p"]), helper.make_node(act, ["p"], ["y"])]
    compiled = cnnjit.compile(make_model(nodes, {"x": x}, {"y": y.shape}), vector_width=width)
    assert _fused(compiled, op)[1] == [act]
    np.testing.assert_allclose(compiled(x), y, rtol=1e-5, atol=2e-6)


def test_pool_activation_matches_onnxruntime_and_not_fused_when_shared() -> None:
    """MaxPool -> Relu fuses; a pool output read twice (here also a graph output) keeps its own Relu."""
    x = np.random.default_rng(0).standard_normal((1, 4, 10, 10)).astype(np.float32)
    nodes = [helper.make_node("MaxPool", ["x"], ["p"], kernel_shape=[2, 2], strides=[2, 2]),
             helper.make_node("Relu", ["p"], ["y"]),
             helper.make_node("AveragePool", ["x"], ["q"], kernel_shape=[3, 3], pads=[1, 1, 1, 1]),
             helper.make_node("Tanh", ["q"], ["z"])]
    model = make_model(nodes, {"x": x}, {"y": (1, 4, 5, 5), "z": (1, 4, 10, 10), "q": (1, 4, 10, 10)})
    compiled = cnnjit.compile(model)
    assert _fused(compiled, "MaxPool")[1] == ["Relu"]
    assert _fused(compiled, "AveragePool")[1] == []
    want = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, {"x": x})
    for got, w in zip(compiled.run(None, {"x": x}), want):
        np.testing.assert_allclose(got, w, rtol=1e-5, atol=1e-6)
