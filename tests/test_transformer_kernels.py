"""The transformer block's kernels (SVTR, PP-OCRv4's recognizer head): Softmax rows of any length, and the
GELU after a MatMul with a bias that cannot fold (a 3-D MatMul's) fused into that MatMul.

* ``simd_softmax`` (rows of 1 to 1000 elements, any axis, -inf and NaN entries) at every vector width
  against a float64 numpy softmax; its exp is ``vexpneg`` (2 ulp, ``tests/test_vector_math.py``), its
  reductions trees, so the bound is the float32 sum's: ``rtol`` 1e-5.
* ``simd_transpose`` (a transpose whose last axis is a contiguous run of at least a vector, copied in
  vectors) at every width against numpy's transpose, the variant asserted from the shape.
* A 3-D ``MatMul`` + constant ``Add`` + the erf / tanh GELU spellings becomes one ``MatMul`` with an ``Add``
  residual step and a ``Gelu`` step, against onnxruntime; a GELU-like group with another constant stays
  apart (and still matches).
"""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from onnx import helper
from test_vector_epilogue import WIDTHS, _composite, _model, _ort

import cnnjit


def _softmax64(x: np.ndarray, axis: int, log: bool) -> np.ndarray:
    """Softmax / LogSoftmax in float64 (written apart from the kernel: numpy's max, exp and sum)."""
    x64 = x.astype(np.float64)
    with np.errstate(invalid="ignore"):
        d = x64 - x64.max(axis, keepdims=True)
        s = np.exp(d).sum(axis, keepdims=True)
        return d - np.log(s) if log else np.exp(d) / s


@pytest.mark.parametrize("width", WIDTHS)
@settings(max_examples=8, deadline=None)
@given(rows=st.integers(1, 9), length=st.sampled_from([1, 7, 64, 97, 255, 256, 257, 1000]),
       inner=st.sampled_from([1, 1, 3, 17]), log=st.booleans(), scale=st.sampled_from([1.0, 30.0]),
       special=st.sampled_from(["none", "-inf", "nan"]), seed=st.integers(0, 2 ** 16))
def test_softmax_rows_of_any_length(width: int, rows: int, length: int, inner: int, log: bool, scale: float,
                                    special: str, seed: int) -> None:
    rng = np.random.default_rng(seed)
    x = (rng.standard_normal((rows, length, inner)) * scale).astype(np.float32)
    if special != "none" and length > 1:
        x[0, rng.integers(0, length), 0] = -np.inf if special == "-inf" else np.nan
    op = "LogSoftmax" if log else "Softmax"
    model = _model([helper.make_node(op, ["x"], ["y"], axis=1)], x.shape, {}, ["y"])
    compiled = cnnjit.compile(model, vector_width=width)
    assert {c.variant for c in compiled._default_spec().program.calls} == {"simd_softmax"}
    want = _softmax64(x, 1, log)
    got = compiled(x)
    np.testing.assert_array_equal(np.isnan(got), np.isnan(want))
    ok = ~np.isnan(want)
    np.testing.assert_allclose(got[ok], want[ok], rtol=1e-5, atol=1e-6 * max(1.0, float(np.abs(want[ok]).max())))


def _matmul_bias(kind: str, swap: bool, rng: np.random.Generator) -> tuple:
    """x (1x12x16) @ w (16x24) + b, then the composite ``kind`` into ``y``; the Add's operands swapped if
    ``swap``."""
    inits = {"w": rng.standard_normal((16, 24)).astype(np.float32),
             "b": rng.standard_normal(24).astype(np.float32)}
    head = [helper.make_node("MatMul", ["x", "w"], ["mm"]),
            helper.make_node("Add", ["b", "mm"] if swap else ["mm", "b"], ["p"])]
    return head + _composite(kind, inits), inits


@pytest.mark.parametrize("swap", [False, True])
@pytest.mark.parametrize("kind", ["gelu_div", "gelu_half_first", "gelu_tanh"])
def test_gelu_after_3d_matmul_fuses(kind: str, swap: bool) -> None:
    rng = np.random.default_rng(7)
    nodes, inits = _matmul_bias(kind, swap, rng)
    x = rng.standard_normal((1, 12, 16)).astype(np.float32)
    model = _model(nodes, x.shape, inits, ["y"])
    m = cnnjit.compile(model, vector_width=8)
    assert [n.op for n in m.ir.nodes] == ["MatMul"]
    post = m.ir.nodes[0].attrs["post"]
    assert [s.op for s in post] == ["Add", "Gelu"]
    assert dict(post[1].attrs).get("approximate", "none") == ("tanh" if kind == "gelu_tanh" else "none")
    np.testing.assert_allclose(m(x), _ort(model, x)[0], rtol=1e-4, atol=1e-5)


def test_gelu_with_another_constant_stays_apart() -> None:
    """``x * 0.5 * (1 + erf(x / 1.5))`` is not a GELU: the bias still joins the MatMul, the rest stays."""
    rng = np.random.default_rng(3)
    nodes, inits = _matmul_bias("gelu_div", False, rng)
    inits["sqrt2"] = np.float32(1.5)
    x = rng.standard_normal((1, 12, 16)).astype(np.float32)
    model = _model(nodes, x.shape, inits, ["y"])
    m = cnnjit.compile(model, vector_width=8)
    ops = [n.op for n in m.ir.nodes]
    assert "Erf" in ops and "Gelu" not in [s.op for n in m.ir.nodes for s in n.attrs.get("post", ())]
    np.testing.assert_allclose(m(x), _ort(model, x)[0], rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("width", WIDTHS)
@settings(max_examples=10, deadline=None)
@given(shape=st.lists(st.integers(1, 20), min_size=2, max_size=5), data=st.data())
def test_transpose_runs_in_vectors(width: int, shape: list[int], data: st.DataObject) -> None:
    """A permutation keeping a last axis of at least a vector runs on ``simd_transpose`` (contiguous runs
    copied in vectors, a masked tail), any other on the element copy; both equal numpy's transpose."""
    perm = data.draw(st.permutations(range(len(shape))))
    x = np.random.default_rng(len(shape)).standard_normal(shape).astype(np.float32)
    model = _model([helper.make_node("Transpose", ["x"], ["y"], perm=list(perm))], x.shape, {}, ["y"])
    compiled = cnnjit.compile(model, vector_width=width)
    want = np.transpose(x, perm)
    # the last output axis merged with the ones before it that are contiguous in the input
    run = 1
    for p in reversed(perm):
        if x.shape[p] == 1:
            continue
        if int(np.prod(x.shape[p + 1:])) != run:
            break
        run *= x.shape[p]
    variants = {c.variant for c in compiled._default_spec().program.calls}  # none: a view (unit axes moved)
    assert variants <= {"simd_transpose" if run >= width else "transpose"}, (variants, run)
    np.testing.assert_array_equal(compiled(x), want)
