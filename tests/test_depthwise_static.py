"""``simd_depthwise_static``: the depthwise kernel generated for its layer's sizes.

* Property test at every vector width (4, 8, 16) against the numpy reference (``reference_np.conv``):
  windows 2..7 (square and not), strides 1 and 2 along each axis independently, asymmetric padding up to
  ``k // 2 + 1`` (rows and columns wholly in the padding), channel counts that are no multiple of the
  width, channel multiplier 1 and 2, maps of one row to tall ones (the padded-row plane and its band loop),
  and the fused epilogues (Relu, Clip, HardSwish, HardSigmoid, SiLU, a residual Add); asserts the variant ran.
* The plane layout (``geometry``): the copy's stores start on a vector boundary, the taps' reads and the
  copy's writes stay inside a plane row.
* The default choice for the PP-OCR / MobileNetV3 depthwise shapes, and a short row's whole-vector stores
  never write past the call's output.
"""

from __future__ import annotations

import numpy as np
import pytest
import reference_np as ref
from hypothesis import given
from hypothesis import strategies as st
from kernel_cases import property_settings
from onnx import helper
from test_simd_widths import _model, compile_variant

import cnnjit
from cnnjit.compiler.codegen.build import load_kernel
from cnnjit.compiler.codegen.kernel import Target, choose
from cnnjit.compiler.codegen.kernels.simd_depthwise_static import (
    gen_simd_depthwise_static,
    geometry,
    static_part_space,
)

WIDTHS = (4, 8, 16)
ACTS = [None, "Relu", "Clip", "HardSwish", "HardSigmoid", "SiLU", "Add"]


@st.composite
def static_cases(draw):
    kh, kw = draw(st.sampled_from([(3, 3), (5, 5), (7, 7), (2, 2), (3, 5)]))
    pads = [draw(st.integers(0, k // 2 + 1)) for k in (kh, kw, kh, kw)]
    h = draw(st.integers(max(1, kh - pads[0] - pads[2]), 20))
    w = draw(st.integers(max(1, kw - pads[1] - pads[3]), 37))
    c = draw(st.integers(2, 11))
    return dict(c=c, m=c * draw(st.sampled_from([1, 1, 2])), kh=kh, kw=kw, s=[draw(st.integers(1, 2)) for _ in "hw"],
                pads=pads, h=h, w=w, act=draw(st.sampled_from(ACTS)), seed=draw(st.integers(0, 2**16)))


def _case_model(case: dict) -> tuple:
    """The case's Conv (+ epilogue) model, its input, the numpy reference output and the initializers (``d``:
    the dilations, default 1)."""
    rng = np.random.default_rng(case["seed"])
    c, m = case["c"], case["m"]
    x = rng.standard_normal((1, c, case["h"], case["w"])).astype(np.float32)
    wt = rng.standard_normal((m, 1, case["kh"], case["kw"])).astype(np.float32)
    b = rng.standard_normal(m).astype(np.float32)
    d = case.get("d", [1, 1])
    want = ref.conv(x, wt, b, strides=case["s"], pads=case["pads"], dilations=d, group=c)
    nodes = [helper.make_node("Conv", ["x", "w", "b"], ["t"], kernel_shape=[case["kh"], case["kw"]],
                              strides=case["s"], pads=case["pads"], dilations=d, group=c)]
    inits = {"w": wt, "b": b}
    act = case["act"]
    if act == "Relu":
        nodes.append(helper.make_node("Relu", ["t"], ["y"]))
        want = ref.relu(want)
    elif act == "Clip":
        inits.update(lo=np.float32(0), hi=np.float32(6))
        nodes.append(helper.make_node("Clip", ["t", "lo", "hi"], ["y"]))
        want = ref.clip(want, 0, 6)
    elif act == "HardSwish":
        nodes.append(helper.make_node("HardSwish", ["t"], ["y"]))
        want = ref.hard_swish(want)
    elif act == "HardSigmoid":
        nodes.append(helper.make_node("HardSigmoid", ["t"], ["y"], alpha=0.2, beta=0.5))
        want = ref.hard_sigmoid(want, 0.2, 0.5)
    elif act == "SiLU":
        nodes += [helper.make_node("Sigmoid", ["t"], ["sg"]), helper.make_node("Mul", ["t", "sg"], ["y"])]
        want = want * ref.sigmoid(want)
    elif act == "Add":
        r = rng.standard_normal(want.shape).astype(np.float32)
        inits["r"] = r
        nodes.append(helper.make_node("Add", ["t", "r"], ["y"]))
        want = want + r
    else:
        nodes.append(helper.make_node("Identity", ["t"], ["y"]))
    return _model(nodes, list(x.shape), inits), x, want, inits


@pytest.mark.parametrize("width", WIDTHS)
@property_settings(3)
@given(case=static_cases())
def test_static_depthwise_at_width(width: int, case: dict) -> None:
    model, x, want, _ = _case_model(case)
    compiled = compile_variant(model, "Conv", width, force="simd_depthwise_static")
    got = compiled(x)
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4 * max(1.0, float(np.abs(want).max())))


class _Node:
    """The parts of a Conv node ``geometry`` reads."""

    def __init__(self, c, h, w, k, s, pads):
        class V:
            def __init__(self, shape):
                self.shape = shape

        oh = (h + pads[0] + pads[2] - k[0]) // s[0] + 1
        ow = (w + pads[1] + pads[3] - k[1]) // s[1] + 1
        self.inputs, self.outputs = [V((1, c, h, w))], [V((1, c, oh, ow))]
        self.attrs = {"kernel_shape": list(k), "strides": list(s), "pads": list(pads)}


@pytest.mark.parametrize("width", WIDTHS)
def test_plane_layout(width: int) -> None:
    """Every copy store starts on a vector boundary of its (vector-aligned) plane row, and every tap read and
    copy write of a row stays inside the row."""
    for k in (2, 3, 5, 7):
        for s in ((1, 1), (2, 2), (2, 1), (1, 2)):
            for pl in range(k // 2 + 2):
                for w in (1, 5, 16, 17, 40, 79, 80):
                    node = _Node(3, k + 1, w, (k, k), s, (1, pl, 1, k // 2))
                    g = geometry(node, width)
                    assert g.PW % width == 0
                    last = -(-g.OW // width) * width - 1
                    if s[1] == 1:
                        assert (g.margins[0] + pl) % width == 0
                        assert g.margins[0] + last + k - 1 < g.PW
                        assert g.margins[0] + pl + -(-w // width) * width <= g.PW
                    else:
                        first = {pl % 2: pl // 2, (pl + 1) % 2: (pl + 1) // 2}
                        for p in (0, 1):
                            assert (g.margins[p] + first[p]) % width == 0
                            assert g.margins[p] + last + (k - 1) // 2 < g.PW
                            assert g.margins[p] + first[p] + -(-w // (2 * width)) * width <= g.PW


def _layer(c: int, h: int, w: int, k: int, s: tuple[int, int]):
    model, _, _, _ = _case_model(dict(c=c, m=c, kh=k, kw=k, s=list(s), pads=[k // 2] * 4, h=h, w=w, act="HardSwish",
                                   seed=0))
    (node,) = [n for n in cnnjit.compile(model, vector_width=8, entry="lazy").ir.nodes if n.op == "Conv"]
    return node


@pytest.mark.parametrize("shape,variant", [
    ((240, 12, 80, 5, (1, 1)), "simd_depthwise_static"), ((480, 6, 80, 5, (2, 1)), "simd_depthwise_static"),
    ((200, 2, 96, 5, (1, 1)), "simd_depthwise_static"), ((96, 80, 80, 3, (2, 2)), "depthwise_direct_s2"),
    ((960, 7, 7, 3, (1, 1)), "simd_depthwise_static"), ((72, 1, 40, 3, (1, 1)), "simd_depthwise_static")])
def test_default_for_model_shapes(shape, variant) -> None:
    """PP-OCR's recognizer / classifier / detector and MobileNetV3's depthwise layers (text lines of 1-3 rows
    included) and MobileNetV2's 3x3 on 7x7 run on ``simd_depthwise_static`` at AVX2 and AVX-512, the detector's
    3x3 stride-2 layer on ``depthwise_direct_s2`` (1.30x there, ``results/depthwise_direct_s2.md``; MobileNetV3's
    5x5 on 7x7, 4x4 and 2x2 maps on ``depthwise_lanes``: ``test_depthwise_lanes.py``)."""
    node = _layer(*shape)
    for target in (Target(vector_width=8, vector_registers=16), Target(vector_width=16, vector_registers=32)):
        assert choose(node, target).name == variant


@pytest.mark.parametrize("shape", [(3, 5, 13, 3, (1, 1)), (2, 7, 7, 5, (1, 1)), (4, 9, 20, 3, (2, 2)),
                                   (3, 4, 21, 5, (2, 1))])
def test_row_tail_stores_stay_inside_the_output(shape) -> None:
    """Short last vectors are stored whole except at the call's end: the elements after the output keep
    their sentinel (the plane's scratch starts as NaN: the kernel zeroes its margins itself)."""
    c, h, w, k, s = shape
    model, x, want, inits = _case_model(dict(c=c, m=c, kh=k, kw=k, s=list(s), pads=[k // 2] * 4, h=h, w=w, act=None,
                                      seed=1))
    (node,) = [n for n in cnnjit.compile(model, vector_width=8, entry="lazy").ir.nodes if n.op == "Conv"]
    (call,) = gen_simd_depthwise_static(node, Target(vector_width=8, vector_registers=16))
    kernel = load_kernel(call.source)
    wt, b = inits["w"], inits["b"]
    n = want.size
    y = np.full(n + 16, 7.5, np.float32)
    scratch = np.full(call.args[4].elems, np.nan, np.float32)
    kernel(x.reshape(-1), 0, wt.reshape(-1), 0, b, 0, y, 0, scratch, 0, *call.args[5:])
    np.testing.assert_allclose(y[:n].reshape(want.shape), want, rtol=1e-5, atol=1e-5)
    assert (y[n:] == 7.5).all()


def test_threaded_parts_match_the_reference() -> None:
    """Split over two threads (in bands of rows), each part's short row tails end at its own rows while the
    other part writes the rows after them; bit for bit the one-thread result."""
    model, x, want, _ = _case_model(dict(c=64, m=64, kh=3, kw=3, s=[1, 1], pads=[1] * 4, h=124, w=125, act=None,
                                         seed=2))
    forced = {"Conv": "simd_depthwise_static"}  # (the default for this map is depthwise_direct's)
    compiled = cnnjit.compile(model, threads=2, vector_width=8, variants=forced)
    calls = [c for c in compiled._default_spec().program.calls if c.op == "Conv"]
    assert len(calls) == 2 and {c.variant for c in calls} == {"simd_depthwise_static"}
    one = cnnjit.compile(model, threads=1, vector_width=8, variants=forced)
    for _ in range(3):
        got = compiled(x)
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)
        np.testing.assert_array_equal(got, one(x))


@pytest.mark.parametrize("shape", [(3, 16, 13, 5, (1, 1), 4), (2, 17, 21, 3, (2, 2), 3), (3, 20, 11, 7, (2, 1), 7)])
def test_row_part_writes_its_rows_only(shape) -> None:
    """A part of output rows ``OS .. OE`` (threads' bands, ``static_part_space``): its rows bit for bit the whole
    layer's, every other element of the output untouched (no run-on store into the next part's rows)."""
    c, h, w, k, s, cut = shape
    model, x, want, inits = _case_model(dict(c=c, m=c, kh=k, kw=k, s=list(s), pads=[k // 2] * 4, h=h, w=w, act=None,
                                             seed=5))
    (node,) = [n for n in cnnjit.compile(model, vector_width=8, entry="lazy").ir.nodes if n.op == "Conv"]
    target = Target(vector_width=8, vector_registers=16)
    OH = want.shape[2]
    assert static_part_space(node, target) == (OH, 1)

    def run(call) -> np.ndarray:
        y = np.full(want.size + 16, 7.5, np.float32)
        scratch = np.full(call.args[4].elems, np.nan, np.float32)
        load_kernel(call.source)(x.reshape(-1), 0, inits["w"].reshape(-1), 0, inits["b"], 0, y, 0, scratch, 0,
                                 *call.args[5:])
        return y

    check_row_parts(node, want, cut, lambda: gen_simd_depthwise_static(node, target)[0], run)


def check_row_parts(node, want: np.ndarray, cut: int, generate, run) -> None:
    """The layer's kernel (``generate()``, run by ``run(call)`` into a sentinel-filled output with 16 elements
    of slack) whole, then as the parts of rows ``0 .. cut`` and ``cut .. OH``: each part's rows bit for bit the
    whole layer's, every other element untouched."""
    OH = want.shape[2]
    whole = None
    for part in (None, (0, cut), (cut, OH)):
        node.meta.pop("part", None)
        if part is not None:
            node.meta["part"] = part
        y = run(generate())
        got = y[:want.size].reshape(want.shape)
        if part is None:
            whole = got
            np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)
            continue
        rows = np.zeros(OH, bool)
        rows[part[0]:part[1]] = True
        np.testing.assert_array_equal(got[:, :, rows], whole[:, :, rows])
        assert (got[:, :, ~rows] == 7.5).all() and (y[want.size:] == 7.5).all()
    node.meta.pop("part", None)
