"""``scale * HardSwish(x) + shift`` folded into one epilogue step of four vector operations
(``epilogue.hardswish_scaleshift``: PP-LCNetV3's learnable affine after each HardSwish), checked against a
numpy reference written apart, at every vector width, for negative, zero and positive scales (the clamp's
bounds swap sign), on a depthwise and a pointwise Conv, the kernel's text asserted to carry the folded form;
and the expression's special values (NaN stays NaN, +-inf as HardSwish then the affine map gives them)."""

from __future__ import annotations

import numpy as np
import pytest
from onnx import helper
from test_simd_widths import _model

import cnnjit
from cnnjit.compiler.codegen.build import load_kernel
from cnnjit.compiler.codegen.kernel import Target
from cnnjit.compiler.codegen.kernels.epilogue import _Param, _steps, hardswish_scaleshift
from cnnjit.compiler.codegen.kernels.simd_depthwise_static import gen_simd_depthwise_static

WIDTHS = (4, 8, 16)


def _reference(t: np.ndarray, scale: float, shift: float) -> np.ndarray:
    t = t.astype(np.float64)
    return scale * (t * np.minimum(np.maximum(t + 3.0, 0.0), 6.0) / 6.0) + shift


def _conv_model(kind: str, scale: float, shift: float):
    rng = np.random.default_rng(3)
    c = 12
    if kind == "depthwise":
        wt, attrs = rng.standard_normal((c, 1, 3, 3)).astype(np.float32), dict(group=c, pads=[1] * 4)
    else:
        wt, attrs = rng.standard_normal((c, c, 1, 1)).astype(np.float32), {}
    b = rng.standard_normal(c).astype(np.float32)
    nodes = [helper.make_node("Conv", ["x", "w", "b"], ["t"], kernel_shape=list(wt.shape[2:]), **attrs),
             helper.make_node("HardSwish", ["t"], ["h"]), helper.make_node("Mul", ["h", "s"], ["u"]),
             helper.make_node("Add", ["u", "a"], ["y"])]
    inits = {"w": wt, "b": b, "s": np.float32(scale), "a": np.float32(shift)}
    model = _model(nodes, [1, c, 6, 21], inits)
    model.opset_import[0].version = 14  # HardSwish
    return model, wt, b, attrs


@pytest.mark.parametrize("width", WIDTHS)
@pytest.mark.parametrize("kind", ["depthwise", "pointwise"])
def test_folded_epilogue_matches_reference(width: int, kind: str) -> None:
    for scale, shift in ((-0.7, 0.25), (0.0, -0.5), (1.3, 0.1)):
        model, wt, b, attrs = _conv_model(kind, scale, shift)
        x = (np.random.default_rng(width).standard_normal((1, 12, 6, 21)) * 2.0).astype(np.float32)
        compiled = cnnjit.compile(model, vector_width=width)
        (conv,) = [c for c in compiled._default_spec().program.calls if c.op == "Conv"]
        assert conv.variant in ("simd_depthwise_static", "depthwise_direct", "simd_pointwise", "cvec_pointwise",
                                "channel_pointwise")
        ref_t = _conv_ref(x, wt, b, kind)
        assert (ref_t < -3).any() and (ref_t > 3).any() and (np.abs(ref_t) < 3).any()  # every part of the clamp
        want = _reference(ref_t, scale, shift)
        np.testing.assert_allclose(compiled(x), want, rtol=1e-5, atol=1e-5 * max(1.0, float(np.abs(want).max())))


def _conv_ref(x: np.ndarray, wt: np.ndarray, b: np.ndarray, kind: str) -> np.ndarray:
    """The Conv in float64 (3x3 depthwise with padding 1, or 1x1 dense)."""
    x64 = x.astype(np.float64)[0]
    if kind == "pointwise":
        return (np.einsum("mc,chw->mhw", wt[:, :, 0, 0].astype(np.float64), x64) + b[:, None, None])[None]
    p = np.pad(x64, ((0, 0), (1, 1), (1, 1)))
    out = np.zeros_like(x64)
    for i in range(3):
        for j in range(3):
            out += wt[:, 0, i, j, None, None] * p[:, i:i + x64.shape[1], j:j + x64.shape[2]]
    return (out + b[:, None, None])[None]


def test_kernel_text_carries_the_folded_step() -> None:
    """The depthwise kernel's epilogue is the folded step (two compare-select clamps, no multiply), with the
    scale and shift as kernel arguments."""
    model, *_ = _conv_model("depthwise", 0.9, -0.02)
    (node,) = [n for n in cnnjit.compile(model, vector_width=8, entry="lazy").ir.nodes if n.op == "Conv"]
    assert [op for op, _, _ in _steps(node)] == ["HardSwish", "ScaleShift"]
    (call,) = gen_simd_depthwise_static(node, Target(vector_width=8, vector_registers=16))
    assert "vminf8(vmaxf8(vfma8(" in call.source and "vmul8(" not in call.source
    assert call.args[-2:] == [pytest.approx(0.9), pytest.approx(-0.02)]


@pytest.mark.parametrize("width", WIDTHS)
def test_special_values(width: int) -> None:
    """NaN in, NaN out; +inf gives scale * inf + shift; -inf NaN (HardSwish's -inf * 0, as numpy's)."""
    L = ["def kernel(xb, yb, e_scale, e_shift):",
         f"    for i in range(0, {2 * width}, {width}):",
         f"        a = vload{width}(xb, i)",
         f"        a = {hardswish_scaleshift(_Param('e_scale'), _Param('e_shift'), width, 'a')}",
         f"        vstore{width}(yb, i, a)"]
    kernel = load_kernel("\n".join(L) + "\n")
    vals = np.array([np.nan, np.inf, -np.inf, 0.0, -3.0, 3.0, -1.5, 2.0], np.float32)
    x = np.resize(vals, 2 * width).astype(np.float32)
    for scale, shift in ((-0.7, 0.25), (0.0, -0.5), (1.3, 0.1)):
        y = np.zeros_like(x)
        kernel(x, y, scale, shift)
        with np.errstate(invalid="ignore"):
            want = _reference(x, scale, shift)
        want[np.isneginf(x)] = np.nan
        want[np.isposinf(x) & (scale == 0.0)] = np.nan  # 0 * inf
        np.testing.assert_allclose(y, want, rtol=1e-6, atol=1e-6, equal_nan=True)
