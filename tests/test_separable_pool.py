"""``separable_pool``: stride-1 (along the columns) MaxPool / AveragePool as a padded scratch plane reduced
over each row's columns, then over the window's rows.

* every vector width (4, 8, 16) over its parameter space (3x3 to 5x5 and 2x5 / 5x2 windows, row strides 1-2,
  pads on each side, dilations for MaxPool, ceil mode, planes narrower and wider than a vector, a fused
  activation) against the float64 numpy reference (``reference_np``), with the variant asserted;
* ``flat_pool`` (stride 1 along both axes: the row reductions in an unpadded plane, one contiguous column
  step) likewise at every width, on planes from 1x1 (smaller than a vector: spills past every row) to wider
  than two vectors, with the variant asserted;
* split over channels on 2 threads: each part its own scratch, bit-identical to one thread;
* the variant table: ``flat_pool`` takes stride-1 windows of 3x3 and more (YOLO's SPP / SPPF 5x5s),
  ``separable_pool`` those with a row stride above 1, and both leave 2x2 windows, column strides above 1 and
  averages whose divisor counts cells (pads not counted) to ``simd_pool``.
"""

from __future__ import annotations

import numpy as np
import pytest
import reference_np as ref
from hypothesis import given
from hypothesis import strategies as st
from kernel_cases import make_model, pool_attrs_and_reference, property_settings
from onnx import helper

import cnnjit
from cnnjit.compiler.codegen.kernel import VARIANTS

WIDTHS = [4, 8, 16]
ACTS = {None: lambda y: y, "Relu": ref.relu, "HardSwish": ref.hard_swish}


def pool_variants(model, op: str) -> set[str]:
    return {c.variant for c in model._default_spec().program.calls if c.op == op}


@st.composite
def cases(draw, flat: bool = False):
    """A pool case; ``flat``: stride 1 both ways on maps from 1x1 (pads only around one cell) to 2.5 vectors of
    16 lanes wide, else row strides 1-2 on maps at least a window wide."""
    op = draw(st.sampled_from(["MaxPool", "AveragePool"]))
    kh, kw = draw(st.sampled_from([(3, 3), (5, 5), (2, 5), (5, 2), (3, 4)]))
    dh, dw = (draw(st.integers(1, 2)), draw(st.integers(1, 2))) if op == "MaxPool" else (1, 1)
    pads = [draw(st.integers(0, kh // 2)), draw(st.integers(0, kw // 2)), draw(st.integers(0, kh // 2)),
            draw(st.integers(0, kw // 2))]
    if flat:
        h = draw(st.integers(max(1, dh * (kh - 1) + 1 - pads[0] - pads[2]), 13))
        w = draw(st.integers(max(1, dw * (kw - 1) + 1 - pads[1] - pads[3]), 40))
        stride = [1, 1]
    else:
        h = draw(st.integers(dh * (kh - 1) + 1, 14))
        w = draw(st.integers(dw * (kw - 1) + 1, 37))
        stride = [draw(st.integers(1, 2)), 1]
    return dict(op=op, k=[kh, kw], d=[dh, dw], s=stride, pads=pads, h=h, w=w,
                ceil=draw(st.integers(0, 1)) if op == "MaxPool" else 0, c=draw(st.integers(1, 3)),
                act=draw(st.sampled_from(sorted(ACTS, key=str))), seed=draw(st.integers(0, 2**16)))


def _model_and_reference(case: dict, x: np.ndarray):
    attrs, y = pool_attrs_and_reference(case, x)  # an average's divisor: the window's size, the variant's
    nodes = [helper.make_node(case["op"], ["x"], ["p" if case["act"] else "y"], **attrs)]
    if case["act"]:
        nodes.append(helper.make_node(case["act"], ["p"], ["y"]))
    y = ACTS[case["act"]](y)
    return make_model(nodes, {"x": x}, {"y": y.shape}), y


@pytest.mark.parametrize("width", WIDTHS)
@property_settings(12)
@given(case=cases())
def test_separable_pool_at_width(width: int, case: dict) -> None:
    _check_forced(case, width, "separable_pool")


def _check_forced(case: dict, width: int, variant: str) -> None:
    """``case`` compiled at ``width`` with ``variant`` forced: it ran, and matches the reference."""
    x = np.random.default_rng(case["seed"]).standard_normal((1, case["c"], case["h"], case["w"])).astype(np.float32)
    model, y = _model_and_reference(case, x)
    compiled = cnnjit.compile(model, vector_width=width, variants={case["op"]: variant})
    assert pool_variants(compiled, case["op"]) == {variant}
    np.testing.assert_allclose(compiled(x), y, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("width", WIDTHS)
@property_settings(12)
@given(case=cases(flat=True))
def test_flat_pool_at_width(width: int, case: dict) -> None:
    _check_forced(case, width, "flat_pool")


def test_split_over_threads_is_bit_identical() -> None:
    """A pool large enough to split over channels on 2 threads: each part gets its own scratch planes."""
    case = dict(op="MaxPool", k=[5, 5], d=[1, 1], s=[1, 1], pads=[2] * 4, h=20, w=20, ceil=0, c=64, act=None)
    x = np.random.default_rng(1).standard_normal((1, 64, 20, 20)).astype(np.float32)
    model, y = _model_and_reference(case, x)
    one, two = (cnnjit.compile(model, threads=t, input_shapes={"x": x.shape}) for t in (1, 2))
    assert pool_variants(one, "MaxPool") == {"flat_pool"}
    np.testing.assert_array_equal(two(x), one(x))
    np.testing.assert_allclose(one(x), y, rtol=0, atol=0)


@pytest.mark.parametrize("attrs, shape, want", [
    (dict(kernel_shape=[5, 5], pads=[2] * 4), (1, 8, 13, 13), "flat_pool"),  # YOLOX's SPP cascade
    (dict(kernel_shape=[3, 3], pads=[1] * 4), (1, 8, 28, 28), "flat_pool"),  # Inception's stride-1 pool
    (dict(kernel_shape=[3, 3], strides=[2, 1], pads=[1] * 4), (1, 8, 28, 28), "separable_pool"),  # row stride 2
    (dict(kernel_shape=[2, 2]), (1, 8, 9, 9), "simd_pool"),  # 4 taps: fewer than rows + columns + copy
    (dict(kernel_shape=[3, 3], strides=[1, 2], pads=[1] * 4), (1, 8, 9, 9), "simd_pool"),  # column stride 2
])
def test_variant_table_takes_stride_1_windows_of_3x3_and_more(attrs: dict, shape: tuple, want: str) -> None:
    x = np.zeros(shape, np.float32)
    model = make_model([helper.make_node("MaxPool", ["x"], ["y"], **attrs)], {"x": x},
                       {"y": tuple(ref.max_pool(x, attrs["kernel_shape"], strides=attrs.get("strides"),
                                                pads=attrs.get("pads")).shape)})
    assert pool_variants(cnnjit.compile(model, entry="lazy"), "MaxPool") == {want}
    avg = make_model([helper.make_node("AveragePool", ["x"], ["y"], kernel_shape=[3, 3], pads=[1] * 4)],
                     {"x": np.zeros((1, 2, 9, 9), np.float32)}, {"y": (1, 2, 9, 9)})
    assert pool_variants(cnnjit.compile(avg, entry="lazy"), "AveragePool") == {"simd_pool"}  # pads not counted
    names = [v.name for v in VARIANTS["MaxPool"]]
    assert names.index("flat_pool") < names.index("separable_pool") < names.index("simd_pool")
