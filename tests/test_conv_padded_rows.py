"""``simd_conv`` on short padded rows (``padded_rows``): each image is copied with its rows widened by the
column padding, so the row's border tiles (masked loads, each tap tested) become unmasked interior tiles
(openWakeWord's 1x3 convs on 32-column rows: half the tiles were border tiles). Hypothesis cases at every
vector width against the float64 numpy reference, the variant forced and the copy asserted in its source."""

from __future__ import annotations

import numpy as np
import reference_np as ref
from hypothesis import given, settings
from hypothesis import strategies as st
from onnx import TensorProto, helper, numpy_helper

import cnnjit
from cnnjit.compiler.codegen.kernels import simd_conv

COPY = "Wq = Win + 2 * pw"  # the kernel line that only the padded form has


def _model(c: int, m: int, g: int, h: int, w: int, k: tuple, s: int, d: int, pads: list, seed: int):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((1, c, h, w)).astype(np.float32)
    wt = rng.standard_normal((m, c // g) + k).astype(np.float32)
    b = rng.standard_normal(m).astype(np.float32)
    kw = dict(strides=[1, s], dilations=[1, d], pads=pads, group=g)
    expected = np.maximum(ref.conv(x, wt, b, **kw), 0)
    nodes = [helper.make_node("Conv", ["x", "w", "b"], ["c"], kernel_shape=list(k), **kw),
             helper.make_node("Relu", ["c"], ["y"])]
    graph = helper.make_graph(nodes, "m", [helper.make_tensor_value_info("x", TensorProto.FLOAT, list(x.shape))],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
                              [numpy_helper.from_array(wt, "w"), numpy_helper.from_array(b, "b")])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)], ir_version=8), x, expected


def _run(model, x, expected, width: int) -> str:
    compiled = cnnjit.compile(model, vector_width=width, variants={"Conv": "simd_conv"})
    prog = compiled._default_spec().program
    (call,) = [c for c in prog.calls if c.op.startswith("Conv")]
    assert call.variant == "simd_conv"
    np.testing.assert_allclose(compiled(x), expected, rtol=1e-4, atol=1e-4 * max(1.0, float(np.abs(expected).max())))
    return prog.kernel_sources[call.kernel]


@settings(max_examples=4, deadline=None)
@given(width=st.sampled_from([4, 8, 16]), g=st.sampled_from([1, 1, 2]), kh=st.integers(1, 3), kw=st.integers(2, 5),
       s=st.sampled_from([1, 1, 2]), d=st.sampled_from([1, 1, 2]), pw=st.integers(1, 3), ph=st.integers(0, 1),
       vectors=st.integers(1, simd_conv.MAX_PADDED_ROW_VECTORS), part=st.integers(0, 3), seed=st.integers(0, 2**16))
def test_short_padded_rows_run_on_a_padded_copy(width, g, kh, kw, s, d, pw, ph, vectors, part, seed) -> None:
    ow = max(1, vectors * width - part)  # whole vectors and a tail
    w = max(1, (ow - 1) * s + (kw - 1) * d + 1 - 2 * pw)
    model, x, expected = _model(2 * g, 2 * g, g, 3, w, (kh, kw), s, d, [ph, pw, ph, pw], seed)
    if expected.shape[3] <= simd_conv.MAX_PADDED_ROW_VECTORS * width:
        assert COPY in _run(model, x, expected, width)


def test_long_or_unevenly_padded_rows_do_not_copy() -> None:
    """Rows past ``MAX_PADDED_ROW_VECTORS`` vectors, and left and right pads that differ, keep the masked
    border tiles (both still correct)."""
    width = 8
    long_row = _model(4, 4, 1, 2, simd_conv.MAX_PADDED_ROW_VECTORS * width + 3, (1, 3), 1, 1, [0, 1, 0, 1], 1)
    uneven = _model(4, 4, 1, 2, 20, (1, 3), 1, 1, [0, 2, 0, 1], 2)
    assert COPY not in _run(*long_row, width) and COPY not in _run(*uneven, width)
