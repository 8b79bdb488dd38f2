"""``phase_packed`` (``kernels/phase_packed.py``): ``stem_packed``'s phase planes and packed tile on inputs of
more than 4 channels. Hypothesis cases over its parameter space (5-24 input channels; 1x3, 3x1, 2x2, 1x5,
3x3 and 5x5 kernels, strides and dilations that differ along rows and columns, pads, batch, output channel
counts that leave a narrower channel tile, fused activations and a residual) at every vector width against
the plain-numpy reference, each asserting that ``phase_packed`` ran with its epilogue in registers; its
register tile; where the table picks it and where it leaves a layer to the others."""

from __future__ import annotations

import numpy as np
import pytest
import reference_np as ref
from hypothesis import given, settings
from hypothesis import strategies as st
from onnx import TensorProto, helper, numpy_helper
from test_cblock import ACTS, WIDTHS, _act
from test_simd_widths import applicable_variants

import cnnjit
from cnnjit.compiler.codegen.kernel import Target
from cnnjit.compiler.codegen.kernels.phase_packed import MAX_TAPS, MIN_ACCUMULATOR_SHARE, phase_tile


def phase_model(case: dict) -> tuple:
    """(model, input, float64 reference) of one Conv (+ residual Add) (+ activation): ``case`` has ``n, c, m,
    h, w``, ``k``, ``s``, ``d`` as (rows, columns), ``pads``, ``act``, ``residual``, ``seed``."""
    rng = np.random.default_rng(case["seed"])
    x = rng.standard_normal((case["n"], case["c"], case["h"], case["w"])).astype(np.float32)
    wt = rng.standard_normal((case["m"], case["c"], *case["k"])).astype(np.float32)
    b = rng.standard_normal(case["m"]).astype(np.float32)
    expected = ref.conv(x, wt, b, strides=list(case["s"]), pads=case["pads"], dilations=list(case["d"]))
    nodes = [helper.make_node("Conv", ["x", "w", "b"], ["c"], kernel_shape=list(case["k"]), strides=list(case["s"]),
                              dilations=list(case["d"]), pads=case["pads"])]
    cur, inits = "c", {"w": wt, "b": b}
    if case["residual"]:
        inits["r"] = rng.standard_normal(expected.shape).astype(np.float32)
        nodes.append(helper.make_node("Add", [cur, "r"], ["a"]))
        cur, expected = "a", expected + inits["r"]
    expected = _act(nodes, cur, case["act"], expected)
    graph = helper.make_graph(nodes, "m", [helper.make_tensor_value_info("x", TensorProto.FLOAT, list(x.shape))],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
                              [numpy_helper.from_array(v, k) for k, v in inits.items()])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)], ir_version=8), x, expected


def check_phase(case: dict, width: int) -> None:
    """``case`` picked by the table at ``width`` and run by ``phase_packed`` (epilogue in registers, no
    allocation in the kernel), against the reference."""
    model, x, expected = phase_model(case)
    assert applicable_variants(model, "Conv", width)[0] == "phase_packed", case
    compiled = cnnjit.compile(model, vector_width=width)
    prog = compiled._default_spec().program
    calls = [c for c in prog.calls if c.op == "Conv"]
    assert [c.variant for c in calls] == ["phase_packed"], case
    src = prog.kernel_sources[calls[0].kernel]
    assert "v = yb[U(yo + q)]" not in src and "np." not in src, case
    got = compiled(x)
    assert got.shape == expected.shape
    np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-4 * max(1.0, float(np.abs(expected).max())))


@st.composite
def phase_cases(draw, width: int):
    """Layers the table gives ``phase_packed`` at ``width``: output channels that fill three quarters of
    ``cblock``'s two-vector tiles (``3 * width``) or none (5: no tile), rows of whole vectors at stride 2
    (the rule's lane fill), any row of at least a vector at stride 1; no 3x3 stride 1 (Winograd's)."""
    k = draw(st.sampled_from([(1, 3), (3, 1), (2, 2), (1, 5), (3, 3), (5, 5)]))
    s = draw(st.sampled_from([(1, 1), (2, 2), (1, 2), (2, 1)] if k in ((3, 3), (5, 5)) else [(1, 1), (1, 2)]))
    if k == (3, 3) and s == (1, 1):
        s = (2, 2)
    d = (1, 1) if max(s) > 1 else draw(st.sampled_from([(1, 1), (1, 2), (2, 1)]))
    m = draw(st.sampled_from([5, 3 * width]))
    pads = [draw(st.integers(0, kk // 2)) for kk in k] * 2
    span = [(kk - 1) * dd + 1 for kk, dd in zip(k, d)]
    lo_h = max(1, span[0] - pads[0] - pads[2])
    h = draw(st.integers(lo_h, lo_h + 6))
    ow = draw(st.integers(1, 3)) * width if max(s) > 1 or m != 5 else draw(st.integers(width, 3 * width + 3))
    w = (ow - 1) * s[1] + span[1] - pads[1] - pads[3]
    return dict(n=draw(st.sampled_from([1, 1, 2])), c=draw(st.integers(5, 24)), m=m, k=k, s=s, d=d, h=h, w=w,
                pads=pads, act=draw(st.sampled_from(ACTS)), residual=draw(st.booleans()),
                seed=draw(st.integers(0, 2**16)))


@pytest.mark.parametrize("width", WIDTHS)
@settings(max_examples=4, deadline=None)
@given(data=st.data())
def test_phase_packed_matches_reference(width: int, data) -> None:
    check_phase(data.draw(phase_cases(width), label="case"), width)


@pytest.mark.parametrize("width", [8, 16])
def test_phase_packed_real_shapes(width: int) -> None:
    """PP-OCRv6's HGNetV2 stem (48 -> 24 3x3 stride 2; its 2x2 convs padded on the bottom and right) and
    openWakeWord's 1x3 / 3x1 pair (LeakyReLU), shrunk to a few rows (at 4 lanes 24 channels fill
    ``cblock``'s tiles: the stride-2 layer is its there)."""
    base = dict(n=1, d=(1, 1), residual=False, seed=5)
    for case in (dict(c=48, m=24, k=(3, 3), s=(2, 2), h=7, w=4 * width, pads=[1] * 4, act="Relu"),
                 dict(c=24, m=12, k=(2, 2), s=(1, 1), h=5, w=2 * width, pads=[0, 0, 1, 1], act="Relu"),
                 dict(c=24, m=24, k=(1, 3), s=(1, 1), h=6, w=4 * width, pads=[0, 1, 0, 1], act="LeakyRelu"),
                 dict(c=24, m=24, k=(3, 1), s=(1, 1), h=6, w=4 * width, pads=[0] * 4, act="LeakyRelu")):
        check_phase(dict(base, **case), width)


def _layer(c: int, m: int, k: tuple, s: tuple, h: int, w: int, pads: list) -> object:
    return phase_model(dict(n=1, c=c, m=m, k=k, s=s, d=(1, 1), h=h, w=w, pads=pads, act=None, residual=False,
                            seed=0))[0]


def test_variant_table_leaves_other_layers() -> None:
    """At AVX2: stems (1-4 channels) stay ``stem_packed``'s, Winograd keeps 3x3 stride 1, ``cblock`` stride 2
    where its channel tiles are whole (64 -> 64 at 28 columns: 56x56's measured loss), ``im2col_bands``
    the large kernels it takes; more than ``MAX_TAPS`` taps, 1x1, groups and rows shorter than a vector do not
    apply."""
    def names(model) -> list[str]:
        return applicable_variants(model, "Conv", 8)

    assert names(_layer(3, 24, (3, 3), (2, 2), 16, 64, [1] * 4))[0] == "stem_packed"
    assert names(_layer(32, 24, (3, 3), (1, 1), 16, 32, [1] * 4))[0] == "winograd_f4"
    assert "phase_packed" not in names(_layer(32, 24, (3, 3), (1, 1), 16, 32, [1] * 4))
    assert "phase_packed" not in names(_layer(64, 64, (3, 3), (2, 2), 16, 56, [1] * 4))
    assert names(_layer(64, 64, (3, 3), (2, 2), 16, 56, [1] * 4))[0] == "cblock"
    assert names(_layer(16, 48, (9, 9), (1, 1), 12, 40, [4] * 4))[0] == "im2col_bands"
    assert MAX_TAPS < 9 * 9 and "phase_packed" not in names(_layer(8, 8, (9, 9), (1, 1), 12, 40, [4] * 4))
    assert "phase_packed" not in names(_layer(24, 24, (1, 1), (1, 1), 8, 32, [0] * 4))
    assert "phase_packed" not in names(_layer(24, 24, (1, 3), (1, 1), 8, 7, [0, 1, 0, 1]))
    # the real shapes: PP-OCRv6 det's stem, openWakeWord's 24- and 72-channel layers
    assert names(_layer(48, 24, (3, 3), (2, 2), 8, 64, [1] * 4))[0] == "phase_packed"
    assert names(_layer(24, 24, (1, 3), (1, 1), 8, 32, [0, 1, 0, 1]))[0] == "phase_packed"
    assert names(_layer(72, 72, (3, 1), (1, 1), 8, 8, [0] * 4))[0] == "phase_packed"


@pytest.mark.parametrize(("width", "registers"), [(4, 16), (8, 16), (16, 32), (8, 8)])
def test_phase_tile_fits_the_register_budget(width: int, registers: int) -> None:
    """Accumulators, pixel vectors and a broadcast within the budget, at least ``MIN_ACCUMULATOR_SHARE`` of
    the most that fit (128 channels on 4 vectors at AVX2: not ``stem_packed``'s 2 x 4)."""
    target = Target(vector_width=width, vector_registers=registers)
    for m in (5, 12, 24, 72, 128):
        for ow in (width, 4 * width, 320):
            mr, nr = phase_tile(target, m, ow)
            assert mr * nr + nr + 1 <= registers and (nr - 1) * width < ow, (m, ow, mr, nr)
    mr, nr = phase_tile(Target(vector_width=8, vector_registers=16), 128, 32)
    assert mr * nr >= MIN_ACCUMULATOR_SHARE * 12  # 6 x 2 and 4 x 3 hold 12 there
