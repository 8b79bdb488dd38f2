"""The stem convolution (``stem_conv``, ``kernels/stem_conv.py``): hypothesis cases over its parameter space
(1-4 input channels, kernel size, stride 1 and 2, dilation, pads, batch, rows spanning several blocks,
every fused activation with SiLU and a residual Add) at every vector width against the plain-numpy
reference, each asserting that ``stem_conv`` ran with its epilogue in registers; its register tile within
every budget; and where the variant table picks it (stems) or leaves a layer to the others."""

from __future__ import annotations

import numpy as np
import pytest
import reference_np as ref
from hypothesis import given, settings
from hypothesis import strategies as st
from onnx import TensorProto, helper, numpy_helper
from test_cblock import ACTS, WIDTHS, _check
from test_simd_widths import applicable_variants

import cnnjit
from cnnjit.compiler.codegen.kernel import Target
from cnnjit.compiler.codegen.kernels.stem_conv import MAX_CHANNELS, MAX_DEPTH, block_pixels, stem_tile
from cnnjit.compiler.stages import CompileOptions


@st.composite
def stem_cases(draw, width: int, depth: int = MAX_DEPTH, ms: tuple[int, ...] = (1, 3, 8, 12, 16, 24),
               vectors: int = 0):
    """Layers ``stem_conv`` applies to: 1-4 input channels, a square kernel within ``depth`` taps, any
    output channel count of ``ms`` (odd ones leave one-channel tiles), rows from one vector to past two blocks
    (``vectors``: to that many vectors past the first)."""
    c = draw(st.integers(1, MAX_CHANNELS))
    k = draw(st.sampled_from([k for k in (2, 3, 5, 7) if c * k * k <= depth]))
    s = draw(st.sampled_from([1, 2]))
    d = draw(st.sampled_from([1, 1, 2]))
    span = (k - 1) * d + 1
    pads = [draw(st.integers(0, k // 2 + 1)) for _ in range(4)]
    hlo = max(1, span - pads[0] - pads[2])
    h = draw(st.integers(hlo, hlo + 5))
    lo = max(1, (width - 1) * s + span - pads[1] - pads[3])  # output rows of at least one vector
    if vectors:
        w = draw(st.integers(lo, lo + vectors * width * s))
    else:
        blk = block_pixels(c * k * k, stem_tile(Target(vector_width=width), 8, 1000)[1] * width)
        w = draw(st.integers(lo, max(lo, min(2 * blk + 9, 300) * s)))  # past two blocks at times
    return dict(n=draw(st.sampled_from([1, 1, 2])), c=c, m=draw(st.sampled_from(ms)), g=1,
                k=k, s=s, d=d, h=h, w=w, pads=pads, act=draw(st.sampled_from(ACTS)), residual=draw(st.booleans()),
                seed=draw(st.integers(0, 2**16)))


@pytest.mark.parametrize("width", WIDTHS)
@settings(max_examples=6, deadline=None)
@given(data=st.data())
def test_stem_conv_matches_reference(width: int, data) -> None:
    _check(data.draw(stem_cases(width), label="case"), width, "stem_conv")


@pytest.mark.parametrize("width", WIDTHS)
def test_stem_conv_model_stems(width: int) -> None:
    """The real models' stems, shrunk: PP-OCR's 3->16 stride 2 (BN folded) and its classifier's 3->8 with
    HardSwish, ddddocr's 1->24 stride 2 with SiLU, ResNet-8's 3->16 stride 1 with a residual and ReLU."""
    for case in (dict(c=3, m=16, k=3, s=2, h=7, w=70, pads=[1] * 4, act=None, residual=False),
                 dict(c=3, m=8, k=3, s=2, h=5, w=38, pads=[1] * 4, act="HardSwish", residual=False),
                 dict(c=1, m=24, k=3, s=2, h=6, w=50, pads=[1] * 4, act="SiLU", residual=False),
                 dict(c=3, m=16, k=3, s=1, h=5, w=32, pads=[1] * 4, act="Relu", residual=True)):
        _check(dict(case, n=1, g=1, d=1, seed=5), width, "stem_conv")


@pytest.mark.parametrize("width", WIDTHS)
def test_stem_conv_rows_ending_in_every_rest(width: int) -> None:
    """Rows of whole tiles and then 0 .. nr - 1 whole vectors (each rest one narrower tile) and a masked
    part vector (MobileNetV2's 112-pixel rows: four 4 x 3 tiles and a 2-vector tile at 8 lanes)."""
    nr = stem_tile(CompileOptions(vector_width=width).host_target(), 16, 1000)[1]
    for rest in range(nr):
        ow = (nr + rest) * width + 3
        prog = _check(dict(n=1, c=3, m=16, g=1, k=3, s=1, d=1, h=4, w=ow, pads=[1] * 4, act="Relu",
                           residual=False, seed=rest), width, "stem_conv")
        if rest > 1:
            (src,) = {prog.kernel_sources[c.kernel] for c in prog.calls if c.op == "Conv"}
            assert f"if ow0 + {rest * width} <= be:" in src


@pytest.mark.parametrize(("width", "registers"), [(4, 16), (8, 16), (16, 32), (16, 8), (4, 32), (8, 8)])
def test_stem_tile_fits_the_register_budget(width: int, registers: int) -> None:
    target = Target(vector_width=width, vector_registers=registers)
    for m in (1, 3, 8, 16, 24, 64):
        for ow in (1, 5, 24, 320):
            mr, nr = stem_tile(target, m, ow)
            assert m % mr == 0 and nr >= 1 and (nr - 1) * width < max(ow, 1)
            assert mr * nr + nr + 1 <= max(registers, 3), (m, ow, mr, nr)  # accumulators, pixels, broadcast
    assert stem_tile(Target(vector_width=8, vector_registers=16), 16, 320) == (4, 3)
    assert stem_tile(Target(vector_width=16, vector_registers=32), 16, 320) == (8, 3)


def _stem_model(c: int, m: int, k: int, s: int, group: int = 1, hw: int = 40):
    rng = np.random.default_rng(0)
    wt = rng.standard_normal((m, c // group, k, k)).astype(np.float32)
    node = helper.make_node("Conv", ["x", "w"], ["y"], kernel_shape=[k, k], strides=[s, s], pads=[k // 2] * 4,
                            group=group)
    graph = helper.make_graph([node], "m", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, c, hw, hw])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
                              [numpy_helper.from_array(wt, "w")])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)], ir_version=8)


@pytest.mark.parametrize("width", WIDTHS)
def test_variant_table_picks_stem_conv_for_stems(width: int) -> None:
    """Stems (1-4 channels, 3x3, stride 1 or 2) go to ``stem_packed``, then ``stem_conv`` (measured 1.1-1.8x
    over ``simd_conv`` on the real models' stems); more channels, taps, groups, stride 3 or rows shorter than
    a vector do not apply."""
    for c, k, s in ((3, 3, 2), (1, 3, 2), (3, 3, 1), (4, 3, 1), (1, 7, 2)):
        names = applicable_variants(_stem_model(c, 16, k, s), "Conv", width)
        assert [v for v in names if v != "stem_packed"][0] == "stem_conv", (c, k, s, names)
    for c, k, s, g in ((5, 3, 2, 1), (3, 5, 1, 1), (4, 3, 3, 1), (4, 3, 1, 2), (3, 1, 1, 1)):
        assert "stem_conv" not in applicable_variants(_stem_model(c, 16, k, s, g), "Conv", width), (c, k, s, g)
    # output rows shorter than a vector (the keyword model's 5 columns): most lanes would idle
    assert "stem_conv" not in applicable_variants(_stem_model(1, 16, 3, 2, hw=2 * width - 4), "Conv", width)


@pytest.mark.parametrize("width", WIDTHS)
@pytest.mark.parametrize(("c", "kernel", "strides", "pads"), [
    (1, (10, 4), (2, 2), [4, 1, 5, 2]),  # MLPerf KWS / DS-CNN's first layer on MFCCs
    (2, (1, 5), (1, 2), [0, 2, 0, 2]),   # a 1-D front end over two channels
    (3, (5, 3), (2, 1), [2, 1, 2, 1])])  # rows and columns strided apart
def test_stem_conv_non_square_kernels(width: int, c: int, kernel: tuple, strides: tuple, pads: list) -> None:
    """Kernels and strides that differ along rows and columns, against the numpy reference (ReLU fused)."""
    rng = np.random.default_rng(width + c)
    x = rng.standard_normal((1, c, 23, 37)).astype(np.float32)
    wt = rng.standard_normal((24, c, *kernel)).astype(np.float32)
    b = rng.standard_normal(24).astype(np.float32)
    expected = np.maximum(ref.conv(x, wt, b, strides=list(strides), pads=pads), 0)
    nodes = [helper.make_node("Conv", ["x", "w", "b"], ["c"], kernel_shape=list(kernel), strides=list(strides),
                              pads=pads), helper.make_node("Relu", ["c"], ["y"])]
    graph = helper.make_graph(nodes, "m", [helper.make_tensor_value_info("x", TensorProto.FLOAT, list(x.shape))],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
                              [numpy_helper.from_array(wt, "w"), numpy_helper.from_array(b, "b")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)], ir_version=8)
    names = applicable_variants(model, "Conv", width)
    assert [v for v in names if v != "stem_packed"][0] == "stem_conv", names  # next after stem_packed
    compiled = cnnjit.compile(model, vector_width=width, variants={"Conv": "stem_conv"})
    assert {k.variant for k in compiled._default_spec().program.calls if k.op == "Conv"} == {"stem_conv"}
    np.testing.assert_allclose(compiled(x), expected, rtol=1e-4, atol=1e-4 * float(np.abs(expected).max()))
