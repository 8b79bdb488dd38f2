"""Earlier forms of kernel code by name (``codegen.kernel.FORMS``, ``cnnjit.compile(forms=...)``): what a
benchmark's "before" compiles beside the current kernels, as a compile option (no module setting flipped).

* Each form changes the generated source the way it says (Softmax's and Attention's exp ``vexpneg`` for
  ``vexpsm``, Tanh's ``vtanh`` for ``vtanhr``, Attention's ``k^T`` without register transposes and its output
  rows in two-vector chunks), and both forms match a float64 numpy reference written apart from the kernels.
* A compile without forms afterwards has the current kernels (nothing leaks between compiles); an unknown
  name is an ``InputError`` naming the forms.
"""

from __future__ import annotations

import re

import numpy as np
import pytest
from onnx import helper
from test_attention import _attention64, _graph
from test_vector_epilogue import _model

import cnnjit
from cnnjit.compiler.codegen.kernel import FORMS
from cnnjit.errors import InputError

W = 8  # (the forms are the same at every width: the names and chunk sizes below are at 8 lanes)


def _softmax64(x: np.ndarray) -> np.ndarray:
    e = np.exp(x.astype(np.float64) - x.max(-1, keepdims=True))
    return e / e.sum(-1, keepdims=True)


def test_attention_forms_change_its_kernel_and_both_match() -> None:
    T, S, D, DV = 5, 17, 16, 5  # D >= W: k^T in register blocks; DV <= W: one-vector output chunks
    nodes, inits, shape = _graph(T, S, D, DV, 2, 0.25, "mul")
    proto = _model(nodes, shape, inits, ["y"])
    x = np.random.default_rng(3).standard_normal(shape).astype(np.float32)
    want = _attention64(x[:, :T, :D], x[:, T:T + S, :D], x[:, T + S:, :DV], 0.25)
    now = cnnjit.compile(proto, vector_width=W, threads=1)
    before = cnnjit.compile(proto, vector_width=W, threads=1,
                            forms=["softmax_vexpneg", "attention_scalar_kt", "attention_wide_rows"])
    for m in (now, before):
        assert "simd_attention" in {c.variant for c in m._default_spec().program.calls}
        np.testing.assert_allclose(m(x), want, rtol=1e-5, atol=2e-5 * float(np.abs(x).max()))
    a, b = now.source(), before.source()
    assert "vexpsm8(" in a and "vloadtr8(" in a and f"dvf = DV - DV % {W}" in a and "vexpneg" not in a
    assert "vexpneg8(" in b and "vexpsm" not in b and "vloadtr" not in b and f"dvf = DV - DV % {2 * W}" in b


@pytest.mark.parametrize("form, op, now, then", [("softmax_vexpneg", "Softmax", "vexpsm", "vexpneg"),
                                                  ("tanh_vtanh", "Tanh", "vtanhr", "vtanh")])
def test_a_function_swap_form_changes_every_call_and_both_match(form: str, op: str, now: str, then: str) -> None:
    shape = (3, 37)
    nodes = [helper.make_node("Add", ["x", "c"], ["a"]), helper.make_node(op, ["a"], ["y"], **(
        {"axis": -1} if op == "Softmax" else {}))]
    proto = _model(nodes, shape, {"c": np.float32(0.5)}, ["y"])
    x = np.random.default_rng(4).standard_normal(shape).astype(np.float32) * 3
    want = _softmax64(x + 0.5) if op == "Softmax" else np.tanh(x.astype(np.float64) + 0.5)
    assert FORMS[form].swap == (now, then)
    got = {}
    for forms in ([form], []):  # the default compile after: nothing of the form stays behind
        m = cnnjit.compile(proto, vector_width=W, threads=1, forms=forms)
        src = m.source()
        calls = set(re.findall(rf"\b({now}|{then})\d+\(", src))  # (at any lanes: 2 vectors a step here)
        assert calls == ({then} if forms else {now})
        got[bool(forms)] = m(x)
        np.testing.assert_allclose(got[bool(forms)], want, rtol=2e-6, atol=2e-7)


def test_an_unknown_form_is_refused_by_name() -> None:
    proto = _model([helper.make_node("Relu", ["x"], ["y"])], (1, 4), {}, ["y"])
    with pytest.raises(InputError, match="no kernel form named 'vexp_fast'.*softmax_vexpneg"):
        cnnjit.compile(proto, forms=["vexp_fast"])
    for bad in (3, "tanh_vtanh", [1]):  # not a list of names: one clear error, not a TypeError
        with pytest.raises(InputError, match="forms must be a list of form names"):
            cnnjit.compile(proto, forms=bad)
