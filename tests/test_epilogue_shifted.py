"""Kernels called once per matrix or group pass their fused epilogue's arguments shifted to each call's slice.

A batched MatMul whose B is batched (attention's ``q @ k^T``), a grouped 1x1 Conv and a grouped ConvTranspose
make one kernel call per output matrix / group, each with the residual tensors seen at that call's output
offset. Their epilogue's arguments are not only tensors: a ScaleShift's constants (attention's ``* scale``,
PP-LCNetV3's learnable affine) are float kernel arguments, which stay as they are (a YOLO11 attention block's
``MatMul * scale`` failed to compile). Each case forces its variant, asserts it ran, and checks against a
float64 numpy reference at every vector width.
"""

from __future__ import annotations

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st
from onnx import TensorProto, helper, numpy_helper

import cnnjit

OPSET = 20
WIDTHS = st.sampled_from([4, 8, 16])


def _model(nodes, inputs: dict, inits: dict):
    g = helper.make_graph(nodes, "m", [helper.make_tensor_value_info(k, TensorProto.FLOAT, list(v.shape))
                                       for k, v in inputs.items()],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
                          [numpy_helper.from_array(np.asarray(v, np.float32), k) for k, v in inits.items()])
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", OPSET)], ir_version=9)


def _affine_residual(src: str, s: float, b: float) -> tuple[list, dict]:
    """``src * s + b + r`` into ``y`` (``r`` an input of the output's shape): a ScaleShift then a residual Add."""
    mk = helper.make_node
    return [mk("Mul", [src, "s"], ["m"]), mk("Add", ["m", "b"], ["a"]), mk("Add", ["a", "r"], ["y"])], \
        {"s": np.float32(s), "b": np.float32(b)}


def _run(model, feeds: dict, width: int, op: str, variant: str, want_post: list[str]) -> np.ndarray:
    compiled = cnnjit.compile(model, vector_width=width, variants={op: variant})
    calls = [c for c in compiled._default_spec().program.calls if c.op == op]
    assert len(calls) > 1 and {c.variant for c in calls} == {variant}
    assert [s.op for s in calls[0].node.attrs["post"]] == want_post
    return compiled.run(None, feeds)[0]


def _check(got: np.ndarray, want: np.ndarray) -> None:
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4 * max(1.0, float(np.abs(want).max())))


@settings(max_examples=6, deadline=None)
@given(width=WIDTHS, b=st.integers(1, 2), h=st.integers(2, 3), m=st.integers(1, 9), k=st.integers(1, 12),
       n=st.integers(1, 21), s=st.floats(-2, 2).filter(lambda v: abs(v) > 0.1), seed=st.integers(0, 99))
def test_batched_matmul_scale_shift_residual(width: int, b: int, h: int, m: int, k: int, n: int, s: float,
                                             seed: int) -> None:
    """``(A @ B) * s + c + R`` with A and B batched (one ``simd_matmul`` call per output matrix)."""
    rng = np.random.default_rng(seed)
    feeds = {"A": rng.standard_normal((b, h, m, k)).astype(np.float32),
             "B": rng.standard_normal((b, h, k, n)).astype(np.float32),
             "r": rng.standard_normal((b, h, m, n)).astype(np.float32)}
    tail, inits = _affine_residual("p", s, -0.25)
    model = _model([helper.make_node("MatMul", ["A", "B"], ["p"]), *tail], feeds, inits)
    got = _run(model, feeds, width, "MatMul", "simd_matmul", ["ScaleShift", "Add"])
    A, B, R = (feeds[x].astype(np.float64) for x in "ABr")
    _check(got, (A @ B) * np.float32(s) - 0.25 + R)


@settings(max_examples=6, deadline=None)
@given(width=WIDTHS, g=st.integers(2, 3), cg=st.integers(1, 6), mg=st.integers(1, 9), hw=st.integers(1, 40),
       s=st.floats(-2, 2).filter(lambda v: abs(v) > 0.1), seed=st.integers(0, 99))
def test_grouped_pointwise_scale_shift_residual(width: int, g: int, cg: int, mg: int, hw: int, s: float,
                                                seed: int) -> None:
    """A grouped 1x1 Conv, Relu, ``* s + c``, ``+ R`` on ``simd_pointwise`` (one call per group)."""
    rng = np.random.default_rng(seed)
    feeds = {"x": rng.standard_normal((1, g * cg, 2, hw)).astype(np.float32),
             "r": rng.standard_normal((1, g * mg, 2, hw)).astype(np.float32)}
    w = rng.standard_normal((g * mg, cg, 1, 1)).astype(np.float32)
    tail, inits = _affine_residual("q", s, 0.5)
    mk = helper.make_node
    model = _model([mk("Conv", ["x", "w"], ["p"], kernel_shape=[1, 1], group=g), mk("Relu", ["p"], ["q"]), *tail],
                   feeds, {"w": w, **inits})
    got = _run(model, feeds, width, "Conv", "simd_pointwise", ["Relu", "ScaleShift", "Add"])
    x = feeds["x"].astype(np.float64).reshape(g, cg, -1)
    p = np.einsum("gmc,gcp->gmp", w.astype(np.float64).reshape(g, mg, cg), x).reshape(got.shape)
    _check(got, np.maximum(p, 0) * np.float32(s) + 0.5 + feeds["r"])


@settings(max_examples=6, deadline=None)
@given(width=WIDTHS, g=st.integers(2, 3), cg=st.integers(1, 5), mg=st.integers(1, 6), wd=st.integers(1, 20),
       st_=st.integers(1, 2), s=st.floats(-2, 2).filter(lambda v: abs(v) > 0.1), seed=st.integers(0, 99))
def test_grouped_convtranspose_scale_shift_residual(width: int, g: int, cg: int, mg: int, wd: int, st_: int,
                                                    s: float, seed: int) -> None:
    """A grouped ConvTranspose (kernel == stride), Relu, ``* s + c``, ``+ R`` on ``simd_shuffle`` (one call
    per group)."""
    rng = np.random.default_rng(seed)
    H = 3
    feeds = {"x": rng.standard_normal((1, g * cg, H, wd)).astype(np.float32),
             "r": rng.standard_normal((1, g * mg, H * st_, wd * st_)).astype(np.float32)}
    w = rng.standard_normal((g * cg, mg, st_, st_)).astype(np.float32)
    tail, inits = _affine_residual("q", s, -1.0)
    mk = helper.make_node
    model = _model([mk("ConvTranspose", ["x", "w"], ["p"], kernel_shape=[st_, st_], strides=[st_, st_], group=g),
                    mk("Relu", ["p"], ["q"]), *tail], feeds, {"w": w, **inits})
    got = _run(model, feeds, width, "ConvTranspose", "simd_shuffle", ["Relu", "ScaleShift", "Add"])
    x = feeds["x"].astype(np.float64).reshape(g, cg, H, wd)
    wg = w.astype(np.float64).reshape(g, cg, mg, st_, st_)
    # each input pixel spreads over a st_ x st_ block of the output: y[g, m, i*s+a, j*s+b] = sum_c x * w
    p = np.einsum("gcij,gcmab->gmiajb", x, wg).reshape(1, g * mg, H * st_, wd * st_)
    _check(got, np.maximum(p, 0) * np.float32(s) - 1.0 + feeds["r"])
