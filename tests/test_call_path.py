"""The per-call fast path of ``CompiledModel`` (issue 18): ``model(x)`` on an already compiled shape runs
``Specialization.caller`` (the numba schedule's compiled entry point called directly, no dict of feeds).
It must give what the full path gives (``model.run``, checked against ``onnx.reference``), fresh outputs
every call, and the same errors."""

from __future__ import annotations

import inspect

import numpy as np
import pytest
from onnx import TensorProto, helper, numpy_helper
from onnx.reference import ReferenceEvaluator

import cnnjit
from cnnjit.errors import InputError


def _conv_model(outputs: int = 1):
    rng = np.random.default_rng(7)
    w = numpy_helper.from_array(rng.standard_normal((4, 3, 3, 3)).astype(np.float32), "W")
    nodes = [helper.make_node("Conv", ["X", "W"], ["c"], pads=[1, 1, 1, 1]), helper.make_node("Relu", ["c"], ["Y"])]
    outs = [helper.make_tensor_value_info("Y", TensorProto.FLOAT, [1, 4, 6, 6])]
    if outputs == 2:
        nodes.append(helper.make_node("Neg", ["c"], ["Z"]))
        outs.append(helper.make_tensor_value_info("Z", TensorProto.FLOAT, [1, 4, 6, 6]))
    g = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("X", TensorProto.FLOAT, [1, 3, 6, 6])], outs, [w])
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])


@pytest.mark.parametrize("outputs", [1, 2])
@pytest.mark.parametrize("entry", ["numba", "python"])
def test_fast_path_matches_reference_with_fresh_outputs(outputs: int, entry: str) -> None:
    proto = _conv_model(outputs)
    m = cnnjit.compile(proto, entry=entry)
    ref = ReferenceEvaluator(proto)
    rng = np.random.default_rng(0)
    xs = [rng.standard_normal((1, 3, 6, 6)).astype(np.float32) for _ in range(3)]
    got = [m(x) for x in xs]  # the first call compiles the shape, the others take the fast path
    assert (m._callers.get((xs[0].shape,)) or (None,))[0] is m._last  # the fast path ran
    for x, g in zip(xs, got):
        want = ref.run(None, {"X": x})
        g = [g] if outputs == 1 else g
        for a, b in zip(g, want):
            np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5)  # fresh arrays: earlier results intact
    again = m.run(None, {"X": xs[0]})  # the full path agrees bit for bit
    for a, b in zip(again, [got[0]] if outputs == 1 else got[0]):
        np.testing.assert_array_equal(a, b)


def test_fast_path_refuses_what_the_full_path_refuses() -> None:
    m = cnnjit.compile(_conv_model())
    x = np.zeros((1, 3, 6, 6), np.float32)
    m(x)
    m(x)
    with pytest.raises(InputError):
        m(x.astype(np.float64).reshape(1, 3, 36))  # wrong rank and dtype: the checks of the full path
    with pytest.raises(InputError):
        m(np.zeros((1, 3, 6, 7), np.float32))
    np.testing.assert_array_equal(m(x.astype(">f4")), m(x))  # another byte order: converted, same result


def test_fast_path_names_an_out_of_range_index() -> None:
    """A Gather index out of range raises ``InputError`` on the first (full) and later (fast) calls."""
    data = numpy_helper.from_array(np.arange(12, dtype=np.float32).reshape(4, 3), "D")
    g = helper.make_graph([helper.make_node("Gather", ["D", "I"], ["Y"], axis=0)], "g",
                          [helper.make_tensor_value_info("I", TensorProto.INT64, [2])],
                          [helper.make_tensor_value_info("Y", TensorProto.FLOAT, [2, 3])], [data])
    m = cnnjit.compile(helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)]))
    ok = np.array([3, 0], np.int64)
    np.testing.assert_array_equal(m(ok), np.arange(12, dtype=np.float32).reshape(4, 3)[[3, 0]])
    np.testing.assert_array_equal(m(ok), np.arange(12, dtype=np.float32).reshape(4, 3)[[3, 0]])
    for _ in range(2):
        with pytest.raises(InputError, match="out-of-range"):
            m(np.array([9, 0], np.int64))


def test_one_input_call_takes_its_closure_any_strides_fresh_unaliased_results() -> None:
    """A one-input model's ``model(x)`` runs its ``_calls`` closure (``CompiledModel._ones``) with the direct
    copies to and from the arena's one input and output place (``Arena.in1`` / ``out1``): an input of
    any strides (sliced, Fortran order, read-only) gives the reference's result, every result is a fresh
    array of its own (not the input, not an arena, not the next call's result)."""
    proto = _conv_model()
    m = cnnjit.compile(proto, threads=1)
    ref = ReferenceEvaluator(proto)
    rng = np.random.default_rng(1)
    x = rng.standard_normal((1, 3, 6, 6)).astype(np.float32)
    m(x)
    first = m(x)  # (the first call compiles; the second makes the per-shape callers)
    spec, one = m._ones[x.shape]
    assert spec is m._last and one.__qualname__ == "_calls.<locals>.call"
    assert {k: v for k, v in inspect.getclosurevars(one).nonlocals.items() if k in ("one_in", "one_out")} == {
        "one_in": True, "one_out": True}  # the serial schedule's one input and one output: copied directly
    wide = rng.standard_normal((2, 3, 6, 12)).astype(np.float32)
    ro = x.copy()
    ro.flags.writeable = False
    for a in (x, wide[1:, :, :, ::2], np.asfortranarray(x), ro):
        got = m(a)
        assert m._last is spec and not np.shares_memory(got, a)
        np.testing.assert_allclose(got, ref.run(None, {"X": np.ascontiguousarray(a)})[0], rtol=1e-4, atol=1e-5)
    np.testing.assert_array_equal(m(x), first)
    before = first.copy()
    second = m(wide[:1, :, :, :6].copy())
    assert not np.shares_memory(first, second)
    np.testing.assert_array_equal(first, before)  # the next call leaves an earlier result alone
    with pytest.raises(InputError, match="dtype"):
        m(x.astype(np.float64))  # same shape, other dtype: the full path's clear error, not the closure
