"""``conv_columns``: a Kx1 Conv on a one-column plane (tf2onnx's Conv1D, ``N x C x L x 1``) runs as a 1xK Conv on
the one-row view of the same memory.

* every vector width (4, 8, 16) over its parameter space (batch, channels, groups up to depthwise, kernel
  heights, strides, dilations and pads along the column, a fused ReLU and a residual Add of a constant or of
  another input) against a float64 numpy reference, the rewrite asserted in the IR;
* the layers it leaves alone: wider planes, wider kernels, padded columns;
* Magika's shape (256 -> 512, 5x1 at 512x1) runs ``simd_conv`` on the row view.
"""

from __future__ import annotations

import numpy as np
import pytest
import reference_np as ref
from hypothesis import given
from hypothesis import strategies as st
from kernel_cases import property_settings
from onnx import TensorProto, helper
from test_winograd import conv_model

import cnnjit

WIDTHS = [4, 8, 16]


def row_convs(compiled) -> list[tuple[int, ...]]:
    """The (input shape, kernel shape) of every Conv of the compiled IR."""
    return [(n.inputs[0].shape, tuple(n.attrs["kernel_shape"])) for n in compiled.ir.nodes if n.op == "Conv"]


@st.composite
def cases(draw):
    g = draw(st.sampled_from(["one", "depthwise", "two"]))
    c = draw(st.integers(1, 24)) * (2 if g == "two" else 1)
    group = {"one": 1, "depthwise": c, "two": 2}[g]
    m = c if g == "depthwise" else draw(st.integers(1, 20)) * group
    kh, dh = draw(st.integers(2, 7)), draw(st.integers(1, 2))
    top, bottom = draw(st.integers(0, kh - 1)), draw(st.integers(0, kh - 1))
    h = draw(st.integers(max(1, (kh - 1) * dh + 1 - top - bottom), 60))
    return dict(n=draw(st.integers(1, 2)), c=c, m=m, group=group, h=h, kh=kh, sh=draw(st.integers(1, 3)), dh=dh,
                pads=(top, 0, bottom, 0), act=draw(st.sampled_from([None, "Relu"])),
                residual=draw(st.sampled_from([None, "const", "input"])), seed=draw(st.integers(0, 2**16)))


@pytest.mark.parametrize("width", WIDTHS)
@property_settings(max_examples=10)
@given(case=cases())
def test_column_conv_at_width(width: int, case: dict) -> None:
    """Rewritten (the IR's Conv reads a one-row input with a 1xK kernel) and within float32 rounding of the
    float64 reference, relative to each output's scale ``sum |w| |x| + |b| + |r|``."""
    rng = np.random.default_rng(case["seed"])
    x = rng.standard_normal((case["n"], case["c"], case["h"], 1)).astype(np.float32)
    wt = rng.standard_normal((case["m"], case["c"] // case["group"], case["kh"], 1)).astype(np.float32)
    b = rng.standard_normal(case["m"]).astype(np.float32)
    kw = dict(strides=(case["sh"], 1), pads=case["pads"], dilations=(case["dh"], 1), group=case["group"])
    conv = ref.conv(x, wt, b, **kw)
    r = rng.standard_normal(conv.shape).astype(np.float32) if case["residual"] else None
    scale = ref.conv(np.abs(x), np.abs(wt), np.abs(b), **kw) + np.abs(r if r is not None else 0.0)
    expected = conv + (r if r is not None else 0.0)
    if case["act"] == "Relu":
        expected = np.maximum(expected, 0.0)
    attrs = dict(strides=[case["sh"], 1], dilations=[case["dh"], 1], group=case["group"])
    model = conv_model(x.shape, wt, b, case["pads"], case["act"], r if case["residual"] == "const" else None,
                       **attrs)
    feeds = {"x": x}
    if case["residual"] == "input":
        model.graph.input.append(helper.make_tensor_value_info("r", TensorProto.FLOAT, list(conv.shape)))
        model.graph.node.insert(1, helper.make_node("Add", ["c", "r"], ["c2"]))
        model.graph.node[2].input[0] = "c2"
        feeds["r"] = r
    # (conv_dead_taps off: it may shrink a kernel whose end taps read only padding, which this rule does not see)
    compiled = cnnjit.compile(model, vector_width=width, disable=["conv_dead_taps"])
    assert row_convs(compiled) == [((case["n"], case["c"], 1, case["h"]), (1, case["kh"]))]
    got = compiled.run(None, feeds)[0]
    assert got.shape == expected.shape
    err = np.abs(got.astype(np.float64) - expected)
    assert np.all(err <= 1e-5 * scale + 1e-6), err.max()


@pytest.mark.parametrize(("x_shape", "k", "pads"), [
    ((1, 4, 12, 2), (3, 1), (1, 0, 1, 0)),  # two columns
    ((1, 4, 12, 1), (3, 3), (1, 1, 1, 1)),  # a kernel three columns wide (on a padded column)
    ((1, 4, 12, 1), (3, 1), (1, 1, 1, 1)),  # a padded column: the output is three columns wide
    ((1, 4, 12, 1), (1, 1), (0, 0, 0, 0)),  # 1x1: the pointwise kernels run pixels, not rows
])
def test_left_alone(x_shape, k, pads) -> None:
    wt = np.ones((8, x_shape[1], *k), np.float32)
    model = conv_model(x_shape, wt, np.zeros(8, np.float32), pads)
    # (conv_dead_taps off: the padded column's outer kernel columns read only padding, and dropping them would
    # leave a Kx1 that this pass then takes; test_dead_side_columns_then_a_row checks that)
    assert row_convs(cnnjit.compile(model, entry="lazy", disable=["conv_dead_taps"])) == [(x_shape, k)]


def test_dead_side_columns_then_a_row() -> None:
    """A 3x3 on a padded one-column plane: ``conv_dead_taps`` drops its outer columns (they read only padding),
    and the 3x1 left runs as 1x3 on the one-row view."""
    wt = np.ones((8, 4, 3, 3), np.float32)
    model = conv_model((1, 4, 12, 1), wt, np.zeros(8, np.float32), (1, 1, 1, 1))
    assert row_convs(cnnjit.compile(model, entry="lazy")) == [((1, 4, 1, 12), (1, 3))]


def test_magika_shape_on_conv1d_packed() -> None:
    """256 -> 512, 5x1 on 512x1 (Magika's Conv1D, unpadded): ``conv1d_packed`` on the 1x512 view (it was
    ``simd_conv`` before that variant), against the reference."""
    rng = np.random.default_rng(0)
    x = rng.standard_normal((1, 256, 512, 1)).astype(np.float32)
    wt = (0.05 * rng.standard_normal((512, 256, 5, 1))).astype(np.float32)
    b = rng.standard_normal(512).astype(np.float32)
    compiled = cnnjit.compile(conv_model(x.shape, wt, b, (0, 0, 0, 0), "Relu"), threads=1)
    assert {c.variant for c in compiled._default_spec().program.calls if c.op == "Conv"} == {"conv1d_packed"}
    expected = np.maximum(ref.conv(x, wt, b), 0.0)
    np.testing.assert_allclose(compiled(x), expected, rtol=1e-4, atol=1e-4)
