"""Hypothesis property tests of the Gemm, MatMul and Softmax kernels (transposes, alpha/beta, broadcast
biases and batch dimensions, constant or run-time operands, opset 11 and 13 Softmax), against numpy
references.

The machinery (one-node models, settings, the comparison) is in ``kernel_cases.py``; the references are in
``reference_np.py``.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import reference_np as ref
from hypothesis import assume, given
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp
from kernel_cases import (
    ATOL,
    check_cnnjit,
    check_reference,
    draw_rng,
    kernel_settings,
    normal,
    one_node_case,
)

# ---------------------------------------------------------------------------------------------
# Gemm / MatMul
# ---------------------------------------------------------------------------------------------

@st.composite
def gemm_cases(draw):
    seed, rng = draw_rng(draw)
    m, k, n = draw(st.integers(1, 7)), draw(st.integers(1, 9)), draw(st.integers(1, 7))
    trans_a, trans_b = draw(st.integers(0, 1)), draw(st.integers(0, 1))
    alpha = draw(st.sampled_from([None, 1.0, 0.5, -2.0, 0.0]))
    beta = draw(st.sampled_from([None, 1.0, 0.25, -1.5, 0.0]))
    c_kind = draw(st.sampled_from(["absent", "scalar", "one", "vector_n", "row", "column", "matrix"]))
    c_shape = {"absent": None, "scalar": (), "one": (1,), "vector_n": (n,), "row": (1, n),
               "column": (m, 1), "matrix": (m, n)}[c_kind]
    b_const = draw(st.booleans())
    c_const = draw(st.booleans())
    a = normal(rng, (k, m) if trans_a else (m, k))
    b = normal(rng, (n, k) if trans_b else (k, n))
    c = normal(rng, c_shape) if c_shape is not None else None
    attrs = {}
    for key, val in (("alpha", alpha), ("beta", beta)):
        if val is not None:
            attrs[key] = val
    if trans_a or draw(st.booleans()):
        attrs["transA"] = trans_a
    if trans_b or draw(st.booleans()):
        attrs["transB"] = trans_b
    expected = ref.gemm(a, b, c, alpha=1.0 if alpha is None else alpha, beta=1.0 if beta is None else beta,
                        trans_a=trans_a, trans_b=trans_b)
    inputs, inits = {"a": a}, {}
    (inits if b_const else inputs)["b"] = b
    names = ["a", "b"]
    if c is not None:
        (inits if c_const else inputs)["c"] = c
        names.append("c")
    desc = (f"Gemm M={m} K={k} N={n} attrs={attrs} C={c_kind}{c_shape} "
            f"B={'const' if b_const else 'input'} C={'const' if c_const else 'input'}")
    return one_node_case(desc, "Gemm", inputs, inits, names, expected, attrs=attrs,
                         atol=ATOL * max(1.0, math.sqrt(k)) * 2, seed=seed)


@kernel_settings(30)
@given(case=gemm_cases())
def test_gemm(case):
    check_cnnjit(case)


@st.composite
def matmul_cases(draw):
    seed, rng = draw_rng(draw)
    bs = draw(hnp.mutually_broadcastable_shapes(signature=np.matmul.signature, max_dims=3, min_side=1,
                                                max_side=6))
    sa, sb = bs.input_shapes
    a, b = normal(rng, sa), normal(rng, sb)
    b_const = draw(st.booleans())
    expected = ref.matmul(a, b)
    inputs, inits = {"a": a}, {}
    (inits if b_const else inputs)["b"] = b
    k = sa[-1]
    desc = f"MatMul a{sa} b{sb} -> {expected.shape} B={'const' if b_const else 'input'}"
    return one_node_case(desc, "MatMul", inputs, inits, ["a", "b"], expected,
                         atol=ATOL * max(1.0, math.sqrt(k)) * 2, seed=seed)


@kernel_settings(30)
@given(case=matmul_cases())
def test_matmul(case):
    check_cnnjit(case)


# ---------------------------------------------------------------------------------------------
# Softmax
# ---------------------------------------------------------------------------------------------

@st.composite
def softmax_cases(draw, opset=13):
    seed, rng = draw_rng(draw)
    shape = draw(hnp.array_shapes(min_dims=1, max_dims=4, min_side=1, max_side=6))
    r = len(shape)
    axis = draw(st.one_of(st.none(), st.integers(-r, r - 1)))
    scale = draw(st.sampled_from([1.0, 5.0, 40.0]))  # 40: large logits, exercises max-subtraction
    x = normal(rng, shape, scale=scale)
    if opset >= 13:
        expected = ref.softmax(x, axis=-1 if axis is None else axis)
    else:
        expected = ref.softmax_v11(x, axis=1 if axis is None else axis)
        assume(axis is not None or r >= 2)  # default axis=1 needs rank >= 2
    attrs = {} if axis is None else {"axis": axis}
    return one_node_case(f"Softmax(opset{opset}) shape={shape} axis={axis} scale={scale}", "Softmax",
                         {"x": x}, {}, ["x"], expected, attrs=attrs, opset=opset, seed=seed)


@kernel_settings(25)
@given(case=softmax_cases(opset=13))
def test_softmax_opset13(case):
    check_cnnjit(case)


@kernel_settings(20)
@given(case=softmax_cases(opset=11))
def test_softmax_opset11(case):
    check_cnnjit(case)


# ---------------------------------------------------------------------------------------------
# the oracle itself must agree with onnxruntime
# ---------------------------------------------------------------------------------------------

_FAMILIES = {
    "gemm": gemm_cases(),
    "matmul": matmul_cases(),
    "softmax13": softmax_cases(opset=13),
    "softmax11": softmax_cases(opset=11),
}


@pytest.mark.parametrize("family", sorted(_FAMILIES))
@kernel_settings(15)
@given(data=st.data())
def test_reference_matches_onnxruntime(family, data):
    check_reference(data.draw(_FAMILIES[family], label="case"))
