"""The phase-split stem convolution (``stem_packed``, ``kernels/stem_packed.py``): hypothesis cases over its
parameter space (1-4 input channels, 2x2 .. 7x7 kernels up to 196 taps, stride 1 and 2, dilation, pads,
batch, any output channel count: a channel tail tile) at every vector width against the plain-numpy
reference, each asserting that ``stem_packed`` ran with its epilogue in registers; several bands of rows;
non-square kernels and strides; the register tile's budget and cost model; where the table picks it."""

from __future__ import annotations

import numpy as np
import pytest
import reference_np as ref
from hypothesis import given, settings
from hypothesis import strategies as st
from onnx import TensorProto, helper, numpy_helper
from test_cblock import WIDTHS, _check
from test_simd_widths import applicable_variants
from test_stem_conv import _stem_model, stem_cases

import cnnjit
from cnnjit.compiler.codegen.kernel import Target
from cnnjit.compiler.codegen.kernels import stem_packed
from cnnjit.compiler.codegen.kernels.stem_packed import row_cost, stem_packed_tile


@pytest.mark.parametrize("width", WIDTHS)
@settings(max_examples=3, deadline=None)
@given(data=st.data())
def test_stem_packed_matches_reference(width: int, data) -> None:
    # 1-4 channels, square kernels to 75 taps (deeper: test_stem_packed_kernels), rows of one to 7 vectors, output
    # channel counts that leave a narrower channel tile
    case = stem_cases(width, depth=75, ms=(1, 3, 5, 8, 13, 16, 24), vectors=6)
    _check(data.draw(case, label="case"), width, "stem_packed")


@pytest.mark.parametrize("width", WIDTHS)
def test_stem_packed_bands(width: int, monkeypatch) -> None:
    """Phase planes of a few rows only (``BAND_BYTES`` shrunk): several bands, the last one partial, each
    band's copy from its own input rows (the rows above and below in the padding included)."""
    if width == 8:  # a few rows per band: 10, then 3
        monkeypatch.setattr(stem_packed, "BAND_BYTES", 3 * 4 * 4 * 2 * 8 * width)
        _check(dict(n=1, c=2, m=8, g=1, k=5, s=1, d=1, h=13, w=3 * width, pads=[2] * 4, act="SiLU",
                    residual=False, seed=4), width, "stem_packed")
    else:  # one output row per band
        monkeypatch.setattr(stem_packed, "BAND_BYTES", 1)
        _check(dict(n=2, c=3, m=13, g=1, k=3, s=2, d=1, h=9, w=2 * width + 5, pads=[1] * 4, act="Relu",
                    residual=True, seed=3), width, "stem_packed")


@pytest.mark.parametrize(("width", "c", "m", "kernel", "strides", "dilations", "pads"), [
    (8, 3, 64, (7, 7), (2, 2), (1, 1), [3, 3, 3, 3]),  # a ResNet-50 stem (147 taps), shrunk
    (16, 1, 61, (7, 7), (2, 2), (1, 1), [3, 3, 3, 3]),  # a prime channel count: wide tiles and a tail
    (4, 4, 13, (7, 7), (1, 1), (1, 1), [3, 3, 3, 3]),  # the most taps (196)
    (8, 3, 8, (5, 3), (2, 1), (2, 1), [2, 1, 2, 1]),  # rows and columns strided and dilated apart
    (16, 2, 16, (1, 5), (1, 2), (1, 1), [0, 2, 0, 2])])  # a 1-D front end over two channels
def test_stem_packed_kernels(width: int, c: int, m: int, kernel: tuple, strides: tuple, dilations: tuple,
                             pads: list) -> None:
    """Kernels, strides and dilations that differ along rows and columns, against the numpy reference (ReLU
    fused), each picked by the variant table and run by ``stem_packed``."""
    rng = np.random.default_rng(width + c)
    x = rng.standard_normal((1, c, 23, 6 * width + 1)).astype(np.float32)
    wt = rng.standard_normal((m, c, *kernel)).astype(np.float32)
    b = rng.standard_normal(m).astype(np.float32)
    expected = np.maximum(ref.conv(x, wt, b, strides=list(strides), pads=pads, dilations=list(dilations)), 0)
    nodes = [helper.make_node("Conv", ["x", "w", "b"], ["c"], kernel_shape=list(kernel), strides=list(strides),
                              pads=pads, dilations=list(dilations)), helper.make_node("Relu", ["c"], ["y"])]
    graph = helper.make_graph(nodes, "m", [helper.make_tensor_value_info("x", TensorProto.FLOAT, list(x.shape))],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
                              [numpy_helper.from_array(wt, "w"), numpy_helper.from_array(b, "b")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)], ir_version=8)
    assert applicable_variants(model, "Conv", width)[0] == "stem_packed"
    compiled = cnnjit.compile(model, vector_width=width)
    assert {k.variant for k in compiled._default_spec().program.calls if k.op == "Conv"} == {"stem_packed"}
    np.testing.assert_allclose(compiled(x), expected, rtol=1e-4, atol=1e-4 * float(np.abs(expected).max()))


@pytest.mark.parametrize(("width", "registers"), [(4, 16), (8, 16), (16, 32), (16, 8), (4, 32), (8, 8)])
def test_stem_packed_tile_fits_the_register_budget(width: int, registers: int) -> None:
    target = Target(vector_width=width, vector_registers=registers)
    for m in (1, 3, 8, 10, 16, 24, 61, 64):
        for ow in (1, 5, 24, 320):
            mr, nr = stem_packed_tile(target, m, ow)
            assert 1 <= mr <= m and nr >= 1 and (nr - 1) * width < max(ow, 1)
            assert mr * nr + nr + 1 <= max(registers, 3), (m, ow, mr, nr)  # accumulators, pixels, broadcast


def test_stem_packed_tile_cost_model() -> None:
    """The tile is the row's cheapest: 12 accumulators at AVX2 where the channels allow, a prime channel
    count (61) in wide tiles and one narrower tail tile (``stem_conv``'s divisor rule left one-channel
    tiles), a one-tile row in tiles long enough to hide the FMA latency."""
    avx2 = Target(vector_width=8, vector_registers=16)
    assert stem_packed_tile(avx2, 64, 112) in ((4, 3), (6, 2))
    mr, nr = stem_packed_tile(avx2, 61, 32)
    assert mr * nr >= 8 and row_cost(61, mr, 4, nr) < row_cost(61, 1, 4, 4)
    mr, nr = stem_packed_tile(avx2, 8, 16)
    assert mr * nr >= 8
    mr, nr = stem_packed_tile(Target(vector_width=16, vector_registers=32), 64, 320)
    assert mr * nr >= 16


@pytest.mark.parametrize("width", WIDTHS)
def test_variant_table_picks_stem_packed_for_stems(width: int) -> None:
    """Stems (1-4 channels; 3x3 stride 1 or 2, a ResNet-50's 7x7 stride 2, which ``cblock`` took) go to
    ``stem_packed`` (``benchmarks/stem_conv.py``: 1.1-1.7x over ``stem_conv`` and ``cblock``); more channels,
    taps, groups, stride 3, 1x1 or rows shorter than a vector do not apply."""
    for c, k, s in ((3, 3, 2), (1, 3, 2), (3, 3, 1), (4, 3, 1), (1, 7, 2), (3, 7, 2), (4, 7, 1)):
        assert applicable_variants(_stem_model(c, 16, k, s, hw=4 * width), "Conv", width)[0] == "stem_packed", (c, k)
    for c, k, s, g in ((5, 3, 2, 1), (5, 7, 2, 1), (4, 3, 3, 1), (4, 3, 1, 2), (3, 1, 1, 1)):
        assert "stem_packed" not in applicable_variants(_stem_model(c, 16, k, s, g), "Conv", width), (c, k, s, g)
    assert "stem_packed" not in applicable_variants(_stem_model(1, 16, 3, 2, hw=2 * width - 4), "Conv", width)
