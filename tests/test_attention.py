"""Scaled dot-product attention (``fuse_attention`` -> ``Attention`` -> ``simd_attention``).

* The pattern as exporters write it (``q * c`` before the MatMul or ``/ c`` / ``* c`` on the scores, ``k``
  transposed by a Transpose of its last two axes, Softmax over the last axis, ``@ v``) becomes one
  ``Attention`` node run by ``simd_attention`` at every vector width, against a float64 numpy reference
  written apart from the kernel (``np.einsum`` scores, numpy's max / exp / sum): rows of 1 to 300 keys
  (not multiples of the width), head sizes 1 to 40 (value rows not a multiple of a chunk), scores scaled up
  to overflow a plain exp, and rows with an -inf or a NaN in ``q`` (NaN rows as the reference's).
* Anything else stays unfused and still matches onnxruntime: the Softmax over another axis, a mask added to
  the scores, another op between the Softmax and ``@ v``, ``k`` not transposed by a Transpose.
* ``svtr_block`` (the generated SVTR model) against onnxruntime with its attention fused.
"""

from __future__ import annotations

import sys

import numpy as np
import onnxruntime as ort
import pytest
from conftest import REPO_DIR
from hypothesis import given, settings
from hypothesis import strategies as st
from onnx import helper
from test_vector_epilogue import WIDTHS, _model, _ort

import cnnjit


def _attention64(q: np.ndarray, k: np.ndarray, v: np.ndarray, scale: float) -> np.ndarray:
    """``softmax(scale * q k^T) v`` in float64: einsum scores, numpy's max, exp and sum."""
    s = np.einsum("btd,bsd->bts", q.astype(np.float64), k.astype(np.float64)) * scale
    with np.errstate(invalid="ignore"):
        e = np.exp(s - s.max(-1, keepdims=True))
        p = e / e.sum(-1, keepdims=True)
    return np.einsum("bts,bsd->btd", p, v.astype(np.float64))


def _graph(T: int, S: int, D: int, DV: int, heads: int, scale: float, where: str, tail: list | None = None,
           scores_op: str = "Softmax", axis: int = -1) -> tuple:
    """x [heads, T + 2 S, D'] split into q [heads, T, D], k [heads, S, D] and v [heads, S, DV] (D' = the
    larger of D and DV, sliced), the attention of them with the scale at ``where`` ('q': Mul on q, 'mul' /
    'div': on the scores); ``tail`` nodes between the Softmax (``p``) and ``@ v`` (reading ``p``, writing
    ``p2``)."""
    W = max(D, DV)
    mk = helper.make_node
    inits = {"s0": np.array([0, 0, 0], np.int64), "s1": np.array([heads, T, D], np.int64),
             "k0": np.array([0, T, 0], np.int64), "k1": np.array([heads, T + S, D], np.int64),
             "v0": np.array([0, T + S, 0], np.int64), "v1": np.array([heads, T + 2 * S, DV], np.int64),
             "c": np.float32(1.0 / scale if where == "div" else scale)}
    nodes = [mk("Slice", ["x", "s0", "s1"], ["q"]), mk("Slice", ["x", "k0", "k1"], ["k"]),
             mk("Slice", ["x", "v0", "v1"], ["v"]), mk("Transpose", ["k"], ["kt"], perm=[0, 2, 1])]
    if where == "q":
        nodes += [mk("Mul", ["q", "c"], ["qs"]), mk("MatMul", ["qs", "kt"], ["sc"])]
    else:
        nodes += [mk("MatMul", ["q", "kt"], ["s"]), mk("Mul" if where == "mul" else "Div", ["s", "c"], ["sc"])]
    nodes.append(mk(scores_op, ["sc"], ["p"], axis=axis))
    nodes += tail or []
    nodes.append(mk("MatMul", ["p2" if tail else "p", "v"], ["y"]))
    return nodes, inits, (heads, T + 2 * S, W)


def _variants(m) -> set[str]:
    return {c.variant for c in m._default_spec().program.calls}


@pytest.mark.parametrize("width", WIDTHS)
@settings(max_examples=6, deadline=None)
@given(T=st.integers(1, 20), S=st.sampled_from([1, 3, 8, 17, 40, 64, 65, 300]), D=st.sampled_from([1, 4, 15, 16]),
       DV=st.sampled_from([1, 5, 15, 16, 40]), heads=st.integers(1, 3), where=st.sampled_from(["q", "mul", "div"]),
       scale=st.sampled_from([0.25, 8.0]), special=st.sampled_from(["none", "-inf", "nan"]),
       seed=st.integers(0, 2 ** 16))
def test_attention_fuses_and_matches(width: int, T: int, S: int, D: int, DV: int, heads: int, where: str,
                                     scale: float, special: str, seed: int) -> None:
    nodes, inits, shape = _graph(T, S, D, DV, heads, scale, where)
    x = np.random.default_rng(seed).standard_normal(shape).astype(np.float32) * 3
    if special != "none":  # one query entry: its row of scores is +-inf or NaN
        x[0, 0, 0] = -np.inf if special == "-inf" else np.nan
    m = cnnjit.compile(_model(nodes, shape, inits, ["y"]), vector_width=width)
    assert [n.op for n in m.ir.nodes if n.op not in ("Slice",)] == ["Attention"]
    assert "simd_attention" in _variants(m) and not _variants(m) & {"simd_softmax", "softmax", "transpose",
                                                                   "simd_transpose"}
    q, k, v = x[:, :T, :D], x[:, T:T + S, :D], x[:, T + S:, :DV]
    want = _attention64(q, k, v, scale)
    got = m(x)
    np.testing.assert_array_equal(np.isnan(got), np.isnan(want))
    ok = ~np.isnan(want)
    # each output is a convex combination of v's entries: the bound is relative to their size
    np.testing.assert_allclose(got[ok], want[ok], rtol=1e-5, atol=2e-5 * float(np.abs(v).max()))


_MASK = [helper.make_node("Add", ["sc", "mask"], ["sm"])]


@pytest.mark.parametrize("case", ["axis", "log", "mask", "between"])
def test_other_patterns_stay_unfused(case: str) -> None:
    """Softmax over axis 1, a LogSoftmax, a mask added to the scores, a Mul between the Softmax and ``@ v``:
    no ``Attention``, and the model still matches onnxruntime."""
    T = S = 12
    if case == "axis":
        nodes, inits, shape = _graph(T, S, 8, 8, 2, 0.5, "q", axis=1)
    elif case == "log":
        nodes, inits, shape = _graph(T, S, 8, 8, 2, 0.5, "q", scores_op="LogSoftmax")
    elif case == "between":
        nodes, inits, shape = _graph(T, S, 8, 8, 2, 0.5, "q", tail=[helper.make_node("Mul", ["p", "two"], ["p2"])])
        inits["two"] = np.float32(2.0)
    else:  # scores + mask -> Softmax
        nodes, inits, shape = _graph(T, S, 8, 8, 2, 0.5, "mul")
        inits["mask"] = np.triu(np.full((T, S), -1e4, np.float32), 1)
        i = next(j for j, n in enumerate(nodes) if n.op_type == "Softmax")
        nodes[i:i] = _MASK
        nodes[i + 1].input[0] = "sm"
    x = np.random.default_rng(1).standard_normal(shape).astype(np.float32)
    model = _model(nodes, shape, inits, ["y"])
    m = cnnjit.compile(model, vector_width=8)
    assert "Attention" not in [n.op for n in m.ir.nodes]
    np.testing.assert_allclose(m(x), _ort(model, x)[0], rtol=1e-4, atol=1e-5)


def test_svtr_block_attention_matches_onnxruntime() -> None:
    sys.path.insert(0, str(REPO_DIR))
    from benchmarks.corpus import ALL_MODELS

    entry = ALL_MODELS["svtr_block"]
    model = entry.build()
    x = np.random.default_rng(0).standard_normal(entry.input_shape).astype(np.float32)
    m = cnnjit.compile(model, threads=1)
    assert [n.op for n in m.ir.nodes].count("Attention") == 2
    sess = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    want = sess.run(None, {model.graph.input[0].name: x})[0]
    got = m(x)
    assert np.abs(got - want).max() <= 1e-3 * np.abs(want).max()
