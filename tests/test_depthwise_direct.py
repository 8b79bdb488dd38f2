"""``depthwise_direct``: depthwise Conv read straight from the input rows (no plane copy).

* Property test at every vector width (4, 8, 16) against the numpy reference (``reference_np.conv``): windows
  of 1-3 columns and 1-5 rows, row strides 1 and 2, asymmetric padding up to ``k // 2 + 1`` (rows and
  columns wholly in the padding), channel counts that are no multiple of the width, channel multiplier 1
  and 2, rows that end in a short vector, and the fused epilogues (Relu, HardSwish, SiLU, a residual Add);
  asserts the variant ran.
* The default choice for PP-OCRv4's 3x3 depthwise shapes, and where the static kernel stays (5x5, short or
  narrow maps, stride-2 columns).
* Short row tails never write past the call's output; a part of rows (a thread's band) writes its rows only,
  bit for bit the whole layer's.
"""

from __future__ import annotations

import numpy as np
import pytest
from conftest import avx2_registers
from hypothesis import given
from hypothesis import strategies as st
from kernel_cases import property_settings
from test_depthwise_static import _case_model, check_row_parts
from test_simd_widths import compile_variant

import cnnjit
from cnnjit.compiler.codegen.build import load_kernel
from cnnjit.compiler.codegen.kernel import Target, choose
from cnnjit.compiler.codegen.kernels.depthwise_direct import (
    MIN_ROW_VECTORS,
    MIN_ROWS,
    column_vectors,
    depthwise_direct_applies,
    direct_part_space,
    gen_depthwise_direct,
)
from cnnjit.compiler.codegen.kernels.simd_depthwise_static import geometry

WIDTHS = (4, 8, 16)
ACTS = [None, "Relu", "HardSwish", "SiLU", "Add"]
AVX2 = Target(vector_width=8, vector_registers=16)
AVX512 = Target(vector_width=16, vector_registers=32)


@st.composite
def direct_cases(draw, width: int, sw: int = 1, kernels: tuple = ((3, 3), (3, 3), (5, 3), (2, 2), (3, 1)),
                 rows: tuple[int, int] = (MIN_ROWS, 12),
                 vectors: tuple[int, int] = (MIN_ROW_VECTORS, MIN_ROW_VECTORS + 2),
                 acts: list | None = None):
    """A depthwise case of column stride ``sw``: a window of ``kernels``, ``rows`` output rows, output rows of
    ``vectors`` vectors (a short last vector where not a multiple), an epilogue of ``acts`` (default ``ACTS``)."""
    kh, kw = draw(st.sampled_from(kernels))
    pads = [draw(st.integers(0, k // 2 + 1)) for k in (kh, kw, kh, kw)]
    sh = draw(st.integers(1, 2))
    oh = draw(st.integers(*rows))
    h = max(1, (oh - 1) * sh + kh - pads[0] - pads[2])
    ow = vectors[0] * width + draw(st.integers(0, (vectors[1] - vectors[0]) * width))
    w = max(1, sw * (ow - 1) + kw - pads[1] - pads[3])
    c = draw(st.integers(2, 5))
    return dict(c=c, m=c * draw(st.sampled_from([1, 1, 2])), kh=kh, kw=kw, s=[sh, sw], pads=pads, h=h, w=w,
                act=draw(st.sampled_from(acts or ACTS)), seed=draw(st.integers(0, 2**16)))


@pytest.mark.parametrize("width", WIDTHS)
@property_settings(3)
@given(data=st.data())
def test_direct_depthwise_at_width(width: int, data) -> None:
    case = data.draw(direct_cases(width))
    model, x, want, _ = _case_model(case)
    compiled = compile_variant(model, "Conv", width, force="depthwise_direct")
    np.testing.assert_allclose(compiled(x), want, rtol=1e-4, atol=1e-4 * max(1.0, float(np.abs(want).max())))


def _layer(c: int, h: int, w: int, k: int, s: tuple[int, int], width: int = 8):
    model, _, _, _ = _case_model(dict(c=c, m=c, kh=k, kw=k, s=list(s), pads=[k // 2] * 4, h=h, w=w, act="HardSwish",
                                      seed=0))
    (node,) = [n for n in cnnjit.compile(model, vector_width=width, entry="lazy").ir.nodes if n.op == "Conv"]
    return node


@pytest.mark.parametrize("shape", [(16, 24, 160, 3, (1, 1)), (32, 24, 160, 3, (1, 1)), (64, 24, 160, 3, (2, 1)),
                                   (128, 12, 160, 3, (1, 1)), (96, 80, 80, 3, (1, 1)), (32, 6, 96, 3, (1, 1))])
def test_default_for_model_shapes(shape) -> None:
    """PP-OCRv4's 3x3 depthwise layers (recognizer 24x160 and 12x160, detector 80x80, the classifier's 6x96)
    run on ``depthwise_direct`` at AVX2."""
    assert choose(_layer(*shape), AVX2).name == "depthwise_direct"


@pytest.mark.parametrize("shape, target, kept", [
    ((240, 12, 80, 5, (1, 1)), AVX2, "simd_depthwise_static"),  # a 5x5 window: two masked taps at each end of a row
    # stride-2 columns: their own kernel (``depthwise_direct_s2``: the pairs split in registers)
    ((96, 80, 80, 3, (2, 2)), AVX2, "depthwise_direct_s2"),
    ((72, 1, 40, 3, (1, 1)), AVX2, "simd_depthwise_static"),  # a text line of one row
    ((192, 28, 28, 3, (1, 1)), AVX2, "simd_depthwise_static"),  # 28 columns: under 4 vectors
    ((72, 1, 40, 3, (1, 1)), AVX512, "simd_depthwise_static"),
    ((32, 24, 40, 3, (1, 1)), AVX512, "simd_depthwise_static"),  # 40 columns: under 4 vectors of 16
])
def test_static_kernel_kept(shape, target, kept) -> None:
    node = _layer(*shape, width=target.vector_width)
    assert not depthwise_direct_applies(node, target)
    assert choose(node, target).name == kept


def check_column_vectors(column_vectors, stride: int, sizes, inside) -> None:
    """``column_vectors(g)`` of 3xk windows (pads ``pl`` left, ``k - 1 - pl`` right, column stride ``stride``)
    on rows of ``sizes(width)`` columns at every width: every output vector once, ``inner`` exactly those
    for which ``inside(s, k, pl, W, width)``."""
    for width in WIDTHS:
        for k, pl in ((3, 1), (3, 0), (3, 2), (2, 1), (1, 0)):
            for W in sizes(width):
                node = _layer(3, 6, W, 3, (stride, stride), width)
                node.attrs["kernel_shape"], node.attrs["pads"] = [3, k], [1, pl, 1, k - 1 - pl]
                g = geometry(node, width)
                right, inner, left = column_vectors(g)
                starts = sorted([*right, *inner, *left])
                assert starts == list(range(0, g.OW, width))
                for s in starts:
                    assert inside(s, k, pl, W, width) == (s in inner), (width, k, pl, W, s)


def test_column_vectors() -> None:
    """The vectors at a row's ends are those with a tap outside the row; the rest form one range."""
    check_column_vectors(column_vectors, 1, lambda width: (4 * width, 4 * width + 3, 6 * width - 1),
                         lambda s, k, pl, W, width: s - pl >= 0 and s - pl + k - 1 + width <= W)


def _run(call, x, inits, n: int) -> np.ndarray:
    y = np.full(n + 16, 7.5, np.float32)
    load_kernel(call.source)(x.reshape(-1), 0, inits["w"].reshape(-1), 0, inits["b"], 0, y, 0, *call.args[4:])
    return y


@pytest.mark.parametrize("shape", [(3, 5, 37, 3, (1, 1)), (2, 9, 35, 3, (2, 1))])
def test_row_tail_stores_stay_inside_the_output(shape) -> None:
    """Short last vectors are stored whole except at the call's end: the elements after the output keep their
    sentinel."""
    c, h, w, k, s = shape
    model, x, want, inits = _case_model(dict(c=c, m=c, kh=k, kw=k, s=list(s), pads=[k // 2] * 4, h=h, w=w,
                                             act=None, seed=1))
    (node,) = [n for n in cnnjit.compile(model, vector_width=8, entry="lazy").ir.nodes if n.op == "Conv"]
    (call,) = gen_depthwise_direct(node, AVX2)
    y = _run(call, x, inits, want.size)
    np.testing.assert_allclose(y[:want.size].reshape(want.shape), want, rtol=1e-5, atol=1e-5)
    assert (y[want.size:] == 7.5).all()


def test_row_part_writes_its_rows_only() -> None:
    """A part of output rows ``OS .. OE`` (threads' bands, ``direct_part_space``): its rows bit for bit the whole
    layer's, every other element of the output untouched (no run-on store into the next part's rows)."""
    model, x, want, inits = _case_model(dict(c=3, m=3, kh=3, kw=3, s=[1, 1], pads=[1] * 4, h=20, w=35, act=None,
                                             seed=5))
    (node,) = [n for n in cnnjit.compile(model, vector_width=8, entry="lazy").ir.nodes if n.op == "Conv"]
    assert direct_part_space(node, AVX2) == (want.shape[2], 1)
    check_row_parts(node, want, 7, lambda: gen_depthwise_direct(node, AVX2)[0],
                    lambda call: _run(call, x, inits, want.size))


def test_threaded_parts_match_the_reference(monkeypatch: pytest.MonkeyPatch) -> None:
    """Split over two threads in bands of rows (the default at 2 threads for a 124-row map on AVX2's 16
    registers, whose sweeps keep one accumulator a row; with 32 they sum each row in two chains and split by
    channels), each part's short row tails end at its own rows while the other part writes the rows after
    them; bit for bit the one-thread result."""
    avx2_registers(monkeypatch)
    model, x, want, _ = _case_model(dict(c=64, m=64, kh=3, kw=3, s=[1, 1], pads=[1] * 4, h=124, w=125, act=None,
                                         seed=2))
    compiled = cnnjit.compile(model, threads=2, vector_width=8)
    calls = [c for c in compiled._default_spec().program.calls if c.op == "Conv"]
    assert len(calls) == 2 and {c.variant for c in calls} == {"depthwise_direct"}
    assert all("part" in c.note for c in calls)  # bands of rows, not channel halves
    one = cnnjit.compile(model, threads=1, vector_width=8)
    for _ in range(3):
        got = compiled(x)
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)
        np.testing.assert_array_equal(got, one(x))
