"""Kernel template helpers (``compiler/codegen/kernels/template.py``) and the epilogue module."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from cnnjit.compiler.codegen.kernels import epilogue, template
from cnnjit.compiler.codegen.kernels.template import Template, bind, columns_inside
from cnnjit.ir import CompileError, Node, TensorType, Value
from cnnjit.ir.ops import EpilogueStep

SRC = "def kernel(xb, xo, ofs, ofo, n, alpha{P}):\n    {BODY}\n"


def test_template_slots_are_checked_and_parsed() -> None:
    t = Template(SRC, P="")
    assert t.fill(BODY="pass").startswith("def kernel(xb, xo, ofs, ofo, n, alpha):")
    with pytest.raises(CompileError, match="slots"):
        t.fill()  # BODY has no default
    with pytest.raises(CompileError, match="slots"):
        t.fill(BODY="pass", EXTRA="x")
    with pytest.raises(CompileError, match="not valid Python"):
        t.fill(BODY="return (")
    with pytest.raises(CompileError, match="not valid Python"):
        Template(SRC, P=", (", BODY="pass")  # parsed when made, with every slot at its default
    # filled text is not scanned again for slots
    assert "{P}" in t.fill(BODY="s = '{P}'")


def test_a_text_is_parsed_once_and_errors_every_time(monkeypatch: pytest.MonkeyPatch) -> None:
    parsed: list[str] = []
    real = template.ast.parse
    monkeypatch.setattr(template, "_PARSED", set())
    monkeypatch.setattr(template.ast, "parse", lambda text: parsed.append(text) or real(text))
    t = Template(SRC, P="")
    good = t.fill(BODY="return 4711")
    assert t.fill(BODY="return 4711") == good and template.source(good.splitlines()) == good
    assert parsed.count(good) == 1  # the same text again: from the memo
    for _ in range(2):  # a text that does not parse is never remembered
        with pytest.raises(CompileError, match="not valid Python"):
            t.fill(BODY="return (4711")
    assert len(parsed) == 3


def test_bind_orders_by_parameter_name() -> None:
    src = Template(SRC, P=", r3b, r3o", BODY="pass").fill()
    assert bind(src, alpha=2.0, n=5, x="X", of="OF", r3="R") == ["X", "OF", 5, 2.0, "R"]
    with pytest.raises(CompileError, match="missing \\['r3'\\]"):
        bind(src, alpha=2.0, n=5, x="X", of="OF")
    with pytest.raises(CompileError, match="unknown \\['m'\\]"):
        bind(src, alpha=2.0, n=5, x="X", of="OF", r3="R", m=1)


@given(first=st.integers(-6, 3), width=st.integers(0, 8), sw=st.integers(1, 3), W=st.integers(1, 20),
       OW=st.integers(0, 12))
def test_columns_inside_matches_brute_force(first: int, width: int, sw: int, W: int, OW: int) -> None:
    last = first + width
    inside = [ow for ow in range(OW) if ow * sw + first >= 0 and ow * sw + last <= W - 1]
    lo, hi = columns_inside(first, last, sw, W, OW)
    assert lo <= hi
    if inside:  # the inside columns are one contiguous run
        assert (lo, hi) == (inside[0], inside[-1] + 1)
    else:
        assert all(not (ow * sw + first >= 0 and ow * sw + last <= W - 1) for ow in range(lo, hi))
        assert hi == lo or hi <= 0 or lo >= OW


@pytest.mark.parametrize("transposed", [False, True])
@given(offw=st.integers(-7, 7), sw=st.integers(1, 3), W=st.integers(1, 12), OW=st.integers(1, 12))
def test_window_lines_select_the_inside_columns(transposed: bool, offw: int, sw: int, W: int, OW: int) -> None:
    body = "\n".join(template.window_lines(" " * 8, transposed))
    src = (f"def f(offw, sw, W, OW):\n    for _ in range(1):\n{body}\n"
           "        return list(range(lo, hi))\n    return []\n")
    ns: dict = {}
    exec(compile(src, "<window>", "exec"), ns)  # our own helper's text
    got = ns["f"](offw, sw, W, OW)
    if transposed:  # input columns iw whose output column iw * sw + offw is inside [0, OW)
        want = [iw for iw in range(W) if 0 <= iw * sw + offw < OW]
    else:  # output columns ow whose input column ow * sw + offw is inside [0, W)
        want = [ow for ow in range(OW) if 0 <= ow * sw + offw < W]
    assert got == want


def _conv_with(post_of) -> Node:
    f32 = np.dtype(np.float32)
    x = Value(TensorType(f32, (1, 4, 3, 3)), "x")
    w = Value(TensorType(f32, (4, 4, 1, 1)), "w", const=np.ones((4, 4, 1, 1), f32))
    r = Value(TensorType(f32, (1, 4, 3, 3)), "r")
    y = Value(TensorType(f32, (1, 4, 3, 3)), "y")
    return Node("Conv", [x, w, None, r], [y], {"post": post_of(r)})


def test_epilogue_forms() -> None:
    node = _conv_with(lambda r: (EpilogueStep("Add", value=r), EpilogueStep("Clip", (("max", 6.0), ("min", 0.0)))))
    lines, ok = epilogue.vector_lines(node, "a", "i", 8, False)
    assert ok and lines == ["a = vadd8(a, vload8(r3b, r3o + i))", "a = vmin8(vmax8(a, vbcast8(0.0)), vbcast8(6.0))"]
    scalar, params, args = epilogue.scalar_lines(node, "i", "")
    assert params == ["r3b, r3o"] and args == [node.inputs[3]] and scalar[0] == "v = v + r3b[U(r3o + i)]"
    assert epilogue.clamp_code(node) is None  # a residual is not a clamp
    sig = _conv_with(lambda r: (EpilogueStep("Sigmoid"),))
    assert epilogue.vector_lines(sig, "a", "i", 8, False) == (["a = vsigmoid8(a)"], True)
    assert epilogue.Epilogue(sig, 8, False).after("", ["for j in range(n):"], "j") == []  # in registers
    # a step without a vector form runs over the stored elements
    sqrt = _conv_with(lambda r: (EpilogueStep("Sigmoid"), EpilogueStep("Sqrt")))
    assert not epilogue.vector_lines(sqrt, "a", "i", 8, False)[1]
    assert epilogue.Epilogue(sqrt, 8, False).after("", ["for j in range(n):"], "j") == [
        "for j in range(n):", "    q = j", "    v = yb[U(yo + q)]", "    x = v",
        "    v = 1.0 / (1.0 + math.exp(-x))", "    x = v", "    v = math.sqrt(x)", "    yb[U(yo + q)] = v"]


def test_stale_residual_is_an_error() -> None:
    other = Value(TensorType(np.dtype(np.float32), (1, 4, 3, 3)), "other")
    node = _conv_with(lambda r: (EpilogueStep("Add", value=other),))
    with pytest.raises(CompileError, match="residual"):
        epilogue.residual_operands(node)
