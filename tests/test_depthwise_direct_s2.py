"""``depthwise_direct_s2``: depthwise Conv of column stride 2 read straight from the input rows, each pair of
vectors split into its even and odd columns in registers (``vload2p``, lanes in a shuffled order put back by
``vunpair``).

* ``vload2p`` / ``vload2pr`` / ``vunpair`` at every width against numpy slicing (masked elements read as zero).
* Property test at every vector width (4, 8, 16) against the numpy reference (``reference_np.conv``): windows
  of 1-3 columns and 1-5 rows, row strides 1 and 2, asymmetric padding up to ``k // 2 + 1``, 1-11 rows of one
  to four vectors and a short one (``test_depthwise_direct.direct_cases``), channel counts that are no
  multiple of the width, channel multiplier 1 and 2, and the fused epilogues (Relu, Clip as ReLU6, HardSwish,
  SiLU, a residual Add); asserts the variant ran.
* The default choice for the 3x3 stride-2 layers of MobileNetV2 / V3 and PP-OCR, the static kernel kept for
  5x5 windows.
* Short row tails never write past the call's output; a part of rows (a thread's band) writes its rows only,
  bit for bit the whole layer's.
"""

from __future__ import annotations

import numba
import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from kernel_cases import property_settings
from test_depthwise_direct import _layer, _run, check_column_vectors, direct_cases
from test_depthwise_static import _case_model, check_row_parts
from test_simd_widths import compile_variant

import cnnjit
from cnnjit.compiler.codegen import simd
from cnnjit.compiler.codegen.kernel import Target, choose
from cnnjit.compiler.codegen.kernels.depthwise_direct_s2 import (
    column_vectors,
    depthwise_direct_s2_applies,
    direct_s2_part_space,
    gen_depthwise_direct_s2,
)

WIDTHS = (4, 8, 16)
ACTS = [None, "Relu", "Clip", "HardSwish", "SiLU", "Add"]
AVX2 = Target(vector_width=8, vector_registers=16)


@pytest.mark.parametrize("width", WIDTHS)
def test_pair_loads(width: int) -> None:
    """``vunpair(vload2p(x, i))`` is ``x[i:i + 2w:2], x[i + 1:i + 2w:2]``; ``vload2pr`` zeroes the elements
    outside ``[lo, hi)`` of the ``2w`` read."""
    load, loadr = getattr(simd, f"vload2p{width}"), getattr(simd, f"vload2pr{width}")
    unpair, store = getattr(simd, f"vunpair{width}"), getattr(simd, f"vstore{width}")

    @numba.njit
    def pairs(x, y, i, lo, hi):
        e, o = load(x, i)
        store(y, 0, unpair(e))
        store(y, width, unpair(o))
        e, o = loadr(x, i, lo, hi)
        store(y, 2 * width, unpair(e))
        store(y, 3 * width, unpair(o))

    x = np.arange(1, 8 * width + 1, dtype=np.float32)
    for i, lo, hi in ((0, 0, 2 * width), (3, 1, 2 * width - 2), (5, 2, 3), (1, 4, 4)):
        y = np.zeros(4 * width, np.float32)
        pairs(x, y, i, lo, hi)
        seg = x[i:i + 2 * width]
        masked = np.where((np.arange(2 * width) >= lo) & (np.arange(2 * width) < hi), seg, 0)
        np.testing.assert_array_equal(y, np.concatenate([seg[0::2], seg[1::2], masked[0::2], masked[1::2]]))


@pytest.mark.parametrize("width", WIDTHS)
@property_settings(4)
@given(data=st.data())
def test_direct_s2_at_width(width: int, data) -> None:
    kernels = ((3, 3), (3, 3), (5, 3), (2, 2), (3, 1), (1, 3), (3, 2))
    case = data.draw(direct_cases(width, 2, kernels, rows=(1, 11), vectors=(1, 4), acts=ACTS))
    model, x, want, _ = _case_model(case)
    compiled = compile_variant(model, "Conv", width, force="depthwise_direct_s2")
    np.testing.assert_allclose(compiled(x), want, rtol=1e-4, atol=1e-4 * max(1.0, float(np.abs(want).max())))


@pytest.mark.parametrize("shape", [(144, 56, 56, 3, (2, 2)), (192, 28, 28, 3, (2, 2)), (96, 112, 112, 3, (2, 2)),
                                   (72, 56, 56, 3, (2, 2)), (96, 80, 80, 3, (2, 2)), (128, 12, 160, 3, (1, 2))])
def test_default_for_model_shapes(shape) -> None:
    """MobileNetV2's and V3's 3x3 stride-2 layers, PP-OCRv4 detector's and the recognizer's stride-(1, 2) one
    run on ``depthwise_direct_s2`` at AVX2."""
    assert choose(_layer(*shape), AVX2).name == "depthwise_direct_s2"


@pytest.mark.parametrize("shape", [(192, 40, 40, 5, (2, 2)), (96, 28, 28, 5, (2, 2))])
def test_static_kernel_kept_for_wide_windows(shape) -> None:
    node = _layer(*shape)
    assert not depthwise_direct_s2_applies(node, AVX2)
    assert choose(node, AVX2).name == "simd_depthwise_static"


def test_column_vectors() -> None:
    """The inner vectors are exactly those whose every pair (``2w`` columns from ``2 * ow0 - pl + p``) lies in
    the row; the rest are end vectors."""
    check_column_vectors(column_vectors, 2, lambda width: (4 * width, 8 * width + 3, 12 * width - 1),
                         lambda s, k, pl, W, width: all(0 <= 2 * s - pl + p and 2 * s - pl + p + 2 * width <= W
                                                        for p in range(0, k, 2)))


def test_row_tail_stores_stay_inside_the_output() -> None:
    """Short last vectors are stored whole except at the call's end: the elements after the output keep their
    sentinel."""
    model, x, want, inits = _case_model(dict(c=3, m=3, kh=3, kw=3, s=[2, 2], pads=[1] * 4, h=9, w=75, act=None,
                                             seed=1))
    (node,) = [n for n in cnnjit.compile(model, vector_width=8, entry="lazy").ir.nodes if n.op == "Conv"]
    (call,) = gen_depthwise_direct_s2(node, AVX2)
    y = _run(call, x, inits, want.size)
    np.testing.assert_allclose(y[:want.size].reshape(want.shape), want, rtol=1e-5, atol=1e-5)
    assert (y[want.size:] == 7.5).all()


def test_row_part_writes_its_rows_only() -> None:
    """A part of output rows ``OS .. OE`` (threads' bands, ``direct_s2_part_space``): its rows bit for bit the
    whole layer's, every other element of the output untouched."""
    model, x, want, inits = _case_model(dict(c=3, m=3, kh=3, kw=3, s=[2, 2], pads=[1] * 4, h=40, w=71, act=None,
                                             seed=5))
    (node,) = [n for n in cnnjit.compile(model, vector_width=8, entry="lazy").ir.nodes if n.op == "Conv"]
    assert direct_s2_part_space(node, AVX2) == (want.shape[2], 1)
    check_row_parts(node, want, 7, lambda: gen_depthwise_direct_s2(node, AVX2)[0],
                    lambda call: _run(call, x, inits, want.size))
