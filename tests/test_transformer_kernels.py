"""The transformer block's kernels (SVTR, PP-OCRv4's recognizer head): Softmax rows of any length, and a
3-D MatMul's per-column bias and the activation after it fused into that MatMul.

* ``simd_softmax`` (rows of 1 to 1000 elements, any axis, -inf and NaN entries) at every vector width
  against a float64 numpy softmax; its exp is ``vexpsm`` (2 ulp, ``tests/test_vector_math.py``), its
  reductions trees, so the bound is the float32 sum's: ``rtol`` 1e-5. ``softmax_across_rows`` (rows of one
  to two vectors, one row per lane) the same way, chosen by the table where it applies.
* ``simd_transpose`` (a transpose whose last axis is a contiguous run of at least a vector, copied in
  vectors) at every width against numpy's transpose, the variant asserted from the shape.
* A 3-D ``MatMul`` + constant per-column ``Add`` + the erf / tanh GELU spellings (or any activation) becomes
  one ``MatMul`` with the bias as its third input (a ``[N]`` vector: no constant of the output's shape) and
  a ``Gelu`` step, against onnxruntime; a GELU-like group with another constant stays apart (and still
  matches); a constant that is not per column (per row) is no bias and stays an ``Add``.
* The bias on every MatMul variant (``packed_matmul``, ``simd_matmul`` folded or per matrix, the scalar
  ``matmul``) at every vector width against a float64 numpy ``x @ w + b`` then the activation.
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
    # forced: rows of one to two vectors are softmax_across_rows' by default (tested below)
    compiled = cnnjit.compile(model, vector_width=width, variants={op: "simd_softmax"})
    assert {c.variant for c in compiled._default_spec().program.calls} == {"simd_softmax"}
    want = _softmax64(x, 1, log)
    got = compiled(x)
    np.testing.assert_array_equal(np.isnan(got), np.isnan(want))
    ok = ~np.isnan(want)
    np.testing.assert_allclose(got[ok], want[ok], rtol=1e-5, atol=1e-6 * max(1.0, float(np.abs(want[ok]).max())))


@pytest.mark.parametrize("width", WIDTHS)
@settings(max_examples=8, deadline=None)
@given(data=st.data(), lead=st.sampled_from([(), (2,), (1, 3)]), scale=st.sampled_from([1.0, 30.0]),
       special=st.sampled_from(["none", "-inf", "nan"]), seed=st.integers(0, 2 ** 16))
def test_softmax_across_rows(width: int, data: st.DataObject, lead: tuple, scale: float, special: str,
                             seed: int) -> None:
    """Rows of ``width`` to ``2 * width - 1`` elements (an overlapping last chunk unless a whole vector),
    blocks of ``width`` rows and the rows left over (row form), -inf and NaN entries: the default table picks
    ``softmax_across_rows``; against a float64 numpy softmax."""
    length = data.draw(st.integers(width, 2 * width - 1))
    rows = data.draw(st.integers(width, 3 * width + 2))
    rng = np.random.default_rng(seed)
    x = (rng.standard_normal((*lead, rows, length)) * scale).astype(np.float32)
    if special != "none":
        x.reshape(-1, length)[rng.integers(0, rows), rng.integers(0, length)] = (-np.inf if special == "-inf"
                                                                                  else np.nan)
    model = _model([helper.make_node("Softmax", ["x"], ["y"], axis=-1)], x.shape, {}, ["y"])
    compiled = cnnjit.compile(model, vector_width=width)
    assert {c.variant for c in compiled._default_spec().program.calls} == {"softmax_across_rows"}
    want = _softmax64(x, -1, False)
    got = compiled(x)
    np.testing.assert_array_equal(np.isnan(got), np.isnan(want))
    ok = ~np.isnan(want)
    np.testing.assert_allclose(got[ok], want[ok], rtol=1e-5, atol=1e-6)

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
    node = m.ir.nodes[0]
    post = node.attrs["post"]
    assert [s.op for s in post] == ["Gelu"]
    assert len(node.inputs) == 3 and node.inputs[2].shape == (24,)  # the bias vector, not expanded
    np.testing.assert_array_equal(node.inputs[2].const, inits["b"])
    assert dict(post[0].attrs).get("approximate", "none") == ("tanh" if kind == "gelu_tanh" else "none")
    np.testing.assert_allclose(m(x), _ort(model, x)[0], rtol=1e-4, atol=1e-5)


def test_per_row_constant_is_no_bias() -> None:
    """A constant ``[M, 1]`` added to a 3-D MatMul (along the rows) is not a per-column bias: the Add stays
    (nothing expanded), and the model still matches onnxruntime."""
    rng = np.random.default_rng(5)
    inits = {"w": rng.standard_normal((16, 24)).astype(np.float32),
             "r": rng.standard_normal((12, 1)).astype(np.float32)}
    nodes = [helper.make_node("MatMul", ["x", "w"], ["mm"]), helper.make_node("Add", ["mm", "r"], ["p"]),
             helper.make_node("Relu", ["p"], ["y"])]
    x = rng.standard_normal((1, 12, 16)).astype(np.float32)
    model = _model(nodes, x.shape, inits, ["y"])
    m = cnnjit.compile(model, vector_width=8)
    # (the Add and its Relu run as one BroadcastMap: fuse_broadcast_map)
    assert [n.op for n in m.ir.nodes] == ["MatMul", "BroadcastMap"]
    bmap = m.ir.nodes[1]
    assert bmap.attrs["op"] == "Add" and [st.op for st in bmap.attrs["post"]] == ["Relu"]
    assert len(m.ir.nodes[0].inputs) == 2  # no bias, no constant of the output's shape
    assert all(not v.is_const or v.shape != (1, 12, 24) for n in m.ir.nodes for v in n.inputs)
    np.testing.assert_allclose(m(x), _ort(model, x)[0], rtol=1e-4, atol=1e-5)


#: (variant, A's shape, B's shape or None for ``A^T`` (an activation, one matrix per batch entry))
_BIAS_CASES = [("packed_matmul", (2, 13, 40), (40, 37)),
               ("simd_matmul", (1, 3, 5, 9), (9, 21)),
               ("simd_matmul", (2, 7, 9), None),
               ("matmul", (3, 6, 5), (5, 11))]
_ACTS = {"Relu": lambda v: np.maximum(v, 0.0), "Sigmoid": lambda v: 1.0 / (1.0 + np.exp(-v)),
         "Tanh": np.tanh, "none": lambda v: v}


@pytest.mark.parametrize("width", WIDTHS)
@pytest.mark.parametrize("case", range(len(_BIAS_CASES)))
@settings(max_examples=4, deadline=None)
@given(act=st.sampled_from(sorted(_ACTS)), swap=st.booleans(), lead=st.integers(0, 2), seed=st.integers(0, 2 ** 16))
def test_matmul_bias_on_every_variant(width: int, case: int, act: str, swap: bool, lead: int, seed: int) -> None:
    variant, a_shape, b_shape = _BIAS_CASES[case]
    rng = np.random.default_rng(seed)
    x = rng.standard_normal(a_shape).astype(np.float32)
    if b_shape is None:  # x @ x^T: B is an activation
        w = np.swapaxes(x, -1, -2)
        nodes, inits = [helper.make_node("Transpose", ["x"], ["w"], perm=[0, 2, 1])], {}
    else:
        w = rng.standard_normal(b_shape).astype(np.float32)
        nodes, inits = [], {"w": w}
    n = w.shape[-1]
    b = rng.standard_normal(n).astype(np.float32).reshape((1,) * lead + (n,))
    inits["b"] = b
    out = "p" if act != "none" else "y"
    nodes += [helper.make_node("MatMul", ["x", "w"], ["mm"]),
              helper.make_node("Add", ["b", "mm"] if swap else ["mm", "b"], [out])]
    if act != "none":
        nodes.append(helper.make_node(act, ["p"], ["y"]))
    model = _model(nodes, x.shape, inits, ["y"])
    m = cnnjit.compile(model, vector_width=width, variants={"MatMul": variant})
    assert {c.variant for c in m._default_spec().program.calls if c.op == "MatMul"} == {variant}
    (node,) = [n for n in m.ir.nodes if n.op == "MatMul"]
    assert len(node.inputs) == 3 and node.inputs[2].shape == (n,)
    want = _ACTS[act](np.matmul(x.astype(np.float64), w.astype(np.float64)) + b.astype(np.float64))
    np.testing.assert_allclose(m(x), want, rtol=1e-4, atol=1e-5 * max(1.0, float(np.abs(want).max())))


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
    expected = "simd_transpose" if run >= width else "deinterleave_transpose" if _interleaved(x.shape, perm) \
        else "transpose"
    assert variants <= {expected}, (variants, run)
    np.testing.assert_array_equal(compiled(x), want)


def _interleaved(shape: list[int], perm: list[int]) -> bool:
    """Whether the output's last two axes (unit axes dropped, axes contiguous in the input merged) are 2-8
    channels contiguous in the input and a last axis stepping over them (NHWC -> NCHW's ``(C, H W)``)."""
    axes: list[list[int]] = []  # [size, input stride]
    for p in perm:
        size, stride = shape[p], int(np.prod(shape[p + 1:]))
        if size == 1:
            continue
        if axes and axes[-1][1] == size * stride:
            axes[-1] = [axes[-1][0] * size, stride]
        else:
            axes.append([size, stride])
    return len(axes) >= 2 and axes[-2][1] == 1 and axes[-1][1] == axes[-2][0] and 2 <= axes[-2][0] <= 8


@pytest.mark.parametrize("width", WIDTHS)
@settings(max_examples=6, deadline=None)
@given(outer=st.lists(st.integers(1, 4), max_size=2), pixels=st.lists(st.integers(1, 30), min_size=1, max_size=2),
       channels=st.integers(2, 8))
def test_channels_last_to_planes(width: int, outer: list[int], pixels: list[int], channels: int) -> None:
    """An interleaved block turned planar (NHWC -> NCHW, 2-8 channels, leading axes kept) runs on
    ``deinterleave_transpose`` at every width and equals numpy's transpose."""
    shape = [*outer, *pixels, channels]
    k = len(outer)
    perm = [*range(k), len(shape) - 1, *range(k, len(shape) - 1)]
    x = np.random.default_rng(len(shape)).standard_normal(shape).astype(np.float32)
    model = _model([helper.make_node("Transpose", ["x"], ["y"], perm=perm)], x.shape, {}, ["y"])
    compiled = cnnjit.compile(model, vector_width=width)
    if int(np.prod(pixels)) > 1:
        assert {c.variant for c in compiled._default_spec().program.calls} == {"deinterleave_transpose"}
    np.testing.assert_array_equal(compiled(x), np.transpose(x, perm))
