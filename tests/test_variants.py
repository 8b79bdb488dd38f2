"""The kernel variant table: every variant of the multi-variant families (Conv, Gemm, pooling) computes a
case built for it, at every vector width, and the schedule says which variant ran; forcing a variant that
cannot compute a node, or one that does not exist, is a clear error. Oracle: onnxruntime."""

from __future__ import annotations

import numpy as np
import onnxruntime as ort
import pytest
from conftest import avx2_registers
from onnx import TensorProto, helper, numpy_helper
from test_simd_widths import applicable_variants

import cnnjit
from cnnjit.compiler.codegen.kernel import VARIANTS
from cnnjit.ir.errors import CompileError

WIDTHS = (4, 8, 16)


def _model(op: str, x_shape: tuple[int, ...], inits: dict[str, np.ndarray], **attrs) -> tuple:
    inputs = ["x", *inits]
    g = helper.make_graph([helper.make_node(op, inputs, ["y"], **attrs)], "v",
                          [helper.make_tensor_value_info("x", TensorProto.FLOAT, list(x_shape))],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
                          [numpy_helper.from_array(v, k) for k, v in inits.items()])
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", 13)], ir_version=8), x_shape


def _conv(c: int, m: int, hw: int, k: int = 1, group: int = 1, stride: int = 1, zeros: float = 0.0,
          scale: float = 1.0) -> tuple:
    rng = np.random.default_rng(c * 100 + m + k)
    w = (rng.standard_normal((m, c // group, k, k)) * scale).astype(np.float32)
    w[rng.random(w.shape) < zeros] = 0.0
    return _model("Conv", (1, c, hw, hw), {"w": w, "b": rng.standard_normal(m).astype(np.float32)},
                  kernel_shape=[k, k], pads=[k // 2] * 4, group=group, strides=[stride, stride])


#: one case per variant: (op, variant) -> model where that variant applies at every vector width
CASES = {
    ("Conv", "sparse_pointwise"): _conv(8, 16, 6, zeros=0.9),
    ("Conv", "cvec_pointwise"): _conv(8, 32, 3),
    ("Conv", "channel_pointwise"): _conv(4, 20, 5),
    ("Conv", "simd_pointwise"): _conv(4, 16, 9),
    ("Conv", "strided_pointwise"): _conv(12, 20, 11, stride=2),  # an odd map: the row's last column by element
    ("Conv", "packed_pointwise"): _conv(48, 64, 9),
    ("Conv", "strided_packed"): _conv(48, 64, 17, stride=2),  # 9x9 outputs: two strips and a tail at 16 lanes
    ("Conv", "packed_fc"): _conv(40, 24, 1),
    ("Conv", "im2col_packed"): _conv(256, 512, 7, k=3),  # 4.5 MiB of weights on a 7x7 map
    ("Conv", "im2col_channels"): _conv(256, 512, 5, k=3),  # 4.5 MiB of weights on a 5x5 map
    ("Conv", "strided_channels"): _conv(1024, 1024, 4, stride=2),  # 4 MiB of weights onto 2x2
    ("Conv", "im2col_bands"): _conv(6, 32, 9, k=7),  # a 7x7 kernel on a 9x9 map: past a strip at 16 lanes
    ("Conv", "conv1d_packed"): _model("Conv", (1, 24, 1, 70), {  # a Conv1D: 1x5 on one row, 70 columns
        "w": np.random.default_rng(9).standard_normal((32, 24, 1, 5)).astype(np.float32),
        "b": np.random.default_rng(10).standard_normal(32).astype(np.float32)}, kernel_shape=[1, 5], pads=[0, 2, 0, 2]),
    ("Conv", "pointwise"): _conv(4, 16, 9),
    ("Conv", "simd_depthwise"): _conv(8, 8, 17, k=3, group=8),  # rows longer than a vector at every width
    ("Conv", "simd_depthwise_row"): _conv(8, 8, 2, k=5, group=8),  # 2x2 planes: most of the window is padding
    ("Conv", "simd_depthwise_static"): _conv(8, 8, 19, k=5, group=8, stride=2),  # 10x10 from 19x19, 5x5
    ("Conv", "depthwise_lanes"): _conv(16, 16, 3, k=5, group=16),  # 3x3 maps, 5x5: channels in the lanes
    ("Conv", "depthwise_flat"): _model("Conv", (1, 3, 24, 2), {  # 2-column rows: the plane as flat vectors
        "w": np.random.default_rng(11).standard_normal((3, 1, 3, 3)).astype(np.float32),
        "b": np.random.default_rng(12).standard_normal(3).astype(np.float32)}, kernel_shape=[3, 3], pads=[1] * 4,
        group=3),
    ("Conv", "depthwise_direct"): _conv(8, 8, 64, k=3, group=8),  # rows of 4 vectors at every width: no plane
    ("Conv", "depthwise_direct_s2"): _conv(8, 8, 40, k=3, group=8, stride=2),  # 20x20 from 40x40: pairs split
    ("Conv", "cvec"): _conv(4, 32, 6, k=3),  # 4 input channels: below winograd_f4 at every width
    ("Conv", "simd_conv"): _conv(3, 8, 11, k=3, stride=2),
    ("Conv", "cblock"): _conv(16, 32, 9, k=3, stride=2),
    ("Conv", "direct"): _conv(4, 6, 7, k=3, group=2),
    ("Conv", "winograd_f4"): _conv(16, 16, 16, k=3),
    # 2x2 tiles, channels in whole vectors at 16 lanes; He-normal weights (a Winograd kernel's error scales with
    # sum |w| |x|: 288 standard-normal products would put it at the tolerance, test_winograd_channels.py bounds it)
    ("Conv", "winograd_f4_channels"): _conv(32, 32, 8, k=3, scale=float(np.sqrt(2 / 288))),
    ("Conv", "stem_conv"): _conv(3, 16, 33, k=3, stride=2),
    ("Conv", "stem_packed"): _conv(3, 16, 33, k=3, stride=2),
    ("Conv", "phase_packed"): _conv(8, 5, 32, k=3, stride=2),  # 5 channels: no cblock tile; 16-pixel rows
    ("Gemm", "sparse_gemm"): _model("Gemm", (2, 24), {"b": np.where(np.random.default_rng(1).random((24, 10)) < 0.97,
                                                                    0, 1).astype(np.float32)}),
    ("Gemm", "simd_gemm"): _model("Gemm", (2, 24), {"b": np.random.default_rng(2).standard_normal((24, 10))
                                                     .astype(np.float32)}),
    ("Gemm", "gemm"): _model("Gemm", (2, 24), {"b": np.random.default_rng(3).standard_normal((24, 10))
                                                .astype(np.float32)}, transA=0, alpha=0.5),
    ("MaxPool", "separable_pool"): _model("MaxPool", (1, 3, 9, 9), {}, kernel_shape=[3, 3], pads=[1, 1, 1, 1]),
    ("MaxPool", "flat_pool"): _model("MaxPool", (1, 3, 7, 11), {}, kernel_shape=[5, 5], pads=[2, 2, 2, 2]),
    ("MaxPool", "simd_pool"): _model("MaxPool", (1, 3, 9, 9), {}, kernel_shape=[3, 3], strides=[2, 2]),
    ("MaxPool", "pool"): _model("MaxPool", (1, 3, 9, 9), {}, kernel_shape=[3, 3], strides=[3, 3]),
    ("AveragePool", "global_pool"): _model("AveragePool", (1, 3, 5, 7), {}, kernel_shape=[5, 7]),
    ("AveragePool", "separable_pool"): _model("AveragePool", (1, 3, 9, 9), {}, kernel_shape=[3, 3],
                                              pads=[1, 1, 1, 1], count_include_pad=1),
    ("AveragePool", "flat_pool"): _model("AveragePool", (1, 3, 7, 11), {}, kernel_shape=[3, 3], pads=[1, 1, 1, 1],
                                         count_include_pad=1),
    ("AveragePool", "simd_pool"): _model("AveragePool", (1, 3, 9, 9), {}, kernel_shape=[2, 2], pads=[1, 1, 1, 1]),
    ("AveragePool", "pool"): _model("AveragePool", (1, 3, 9, 9), {}, kernel_shape=[3, 3], strides=[3, 3],
                                    pads=[1, 1, 1, 1], count_include_pad=1),
    ("MatMul", "simd_matmul"): _model("MatMul", (2, 3, 24), {"b": np.random.default_rng(4).standard_normal((24, 10))
                                                              .astype(np.float32)}),
    ("MatMul", "matmul"): _model("MatMul", (2, 24), {"b": np.random.default_rng(5).standard_normal(24)
                                                      .astype(np.float32)}),
    ("ConvTranspose", "simd_shuffle"): _model("ConvTranspose", (1, 4, 5, 7), {
        "w": np.random.default_rng(4).standard_normal((4, 6, 2, 2)).astype(np.float32),
        "b": np.random.default_rng(5).standard_normal(6).astype(np.float32)}, kernel_shape=[2, 2], strides=[2, 2]),
    # dilated: the scatter kernel's own case (convtranspose_phases makes the undilated ones Convs)
    ("ConvTranspose", "conv_transpose"): _model("ConvTranspose", (1, 4, 5, 7), {
        "w": np.random.default_rng(6).standard_normal((4, 6, 3, 3)).astype(np.float32)}, kernel_shape=[3, 3],
        strides=[2, 2], pads=[1, 1, 1, 1], dilations=[2, 2]),
    ("Resize", "simd_nearest"): _model("Resize", (1, 3, 5, 7), {"roi": np.zeros(0, np.float32),
                                                                "s": np.array([1, 1, 2, 2], np.float32)}),
    ("Resize", "resize"): _model("Resize", (1, 3, 5, 7), {"roi": np.zeros(0, np.float32),
                                                          "s": np.array([1, 1, 1.5, 2], np.float32)}),
    ("Gemm", "packed_gemm"): _model("Gemm", (5, 64), {"b": np.random.default_rng(7).standard_normal((110, 64))
                                                       .astype(np.float32)}, transB=1),
    ("MatMul", "packed_matmul"): _model("MatMul", (2, 3, 64), {"b": np.random.default_rng(8)
                                                                .standard_normal((64, 180)).astype(np.float32)}),
}


#: the ``precision="bf16"`` variants: (op, variant) -> a model they apply to under bf16 at every vector width
BF16_CASES = {
    ("Conv", "packed_pointwise_bf16"): CASES[("Conv", "packed_pointwise")],
    ("Conv", "packed_fc_bf16"): CASES[("Conv", "packed_fc")],
    ("Gemm", "packed_gemm_bf16"): CASES[("Gemm", "packed_gemm")],
    ("MatMul", "packed_matmul_bf16"): CASES[("MatMul", "packed_matmul")],
}


def test_every_multi_variant_family_has_a_case_per_variant() -> None:
    for op in ("Conv", "Gemm", "MaxPool", "AveragePool", "MatMul", "ConvTranspose", "Resize"):
        assert {name for o, name in {**CASES, **BF16_CASES} if o == op} == {v.name for v in VARIANTS[op]}, op


@pytest.mark.parametrize("width", WIDTHS)
@pytest.mark.parametrize("key", list(BF16_CASES), ids=lambda k: f"{k[0]}-{k[1]}")
def test_bf16_variant_matches_onnxruntime(key: tuple[str, str], width: int) -> None:
    """Each bf16 variant, forced under ``precision="bf16-emulated"``, ran and is within bf16 error of
    onnxruntime's fp32 (inputs and weights rounded to 8 significant bits: 3 * 2^-7 of the output scale; the
    exact bf16 arithmetic is ``test_bf16.py``'s)."""
    op, name = key
    model, shape = BF16_CASES[key]
    # the mixed-precision policy off: it keeps the Gemm / MatMul / 1x1-map cases in fp32 (its own tests are in
    # test_bf16.py); the kernel is what is checked here
    compiled = cnnjit.compile(model, vector_width=width, variants={op: name}, precision="bf16-emulated",
                              disable=["mixed_precision"])
    assert {c.variant for c in compiled._default_spec().program.calls if c.op == op} == {name}
    x = np.random.default_rng(width).standard_normal(shape).astype(np.float32)
    want = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, {"x": x})[0]
    got = compiled(x)
    assert not np.array_equal(got, want)
    np.testing.assert_allclose(got, want, rtol=0, atol=3 * 2 ** -7 * float(np.abs(want).max()))


#: cases sized for AVX2's register file (``conftest.avx2_registers``): im2col_bands' 5 register tiles of
#: output channels are 32 channels in tiles of 6 rows, 40 in 32 registers' tiles of 8; winograd_f4_channels'
#: tile share is measured for AVX2's registers (4 lanes on 32 registers is no host's)
AVX2_SIZED = {("Conv", "im2col_bands"), ("Conv", "winograd_f4_channels")}


@pytest.mark.parametrize("width", WIDTHS)
@pytest.mark.parametrize("key", list(CASES), ids=lambda k: f"{k[0]}-{k[1]}")
def test_variant_matches_onnxruntime(monkeypatch: pytest.MonkeyPatch, key: tuple[str, str], width: int) -> None:
    op, name = key
    model, shape = CASES[key]
    if key in AVX2_SIZED:
        avx2_registers(monkeypatch)
    keep = ("conv_dead_taps",)  # (each case's kernel as written: the pass would drop taps that read only padding)
    assert name in applicable_variants(model, op, width, disable=keep)
    compiled = cnnjit.compile(model, vector_width=width, variants={op: name}, disable=keep)
    assert {c.variant for c in compiled._default_spec().program.calls if c.op == op} == {name}
    x = np.random.default_rng(width).standard_normal(shape).astype(np.float32)
    sess = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    np.testing.assert_allclose(compiled(x), sess.run(None, {"x": x})[0], rtol=1e-4, atol=1e-4)


def test_forcing_errors() -> None:
    model, _ = CASES[("Conv", "simd_depthwise")]
    with pytest.raises(CompileError, match="does not apply"):
        cnnjit.compile(model, variants={"Conv": "sparse_pointwise"})
    with pytest.raises(ValueError, match="no kernel variant 'winograd'.*direct"):
        cnnjit.compile(model, variants={"Conv": "winograd"})
    with pytest.raises(ValueError, match="no such op"):
        cnnjit.compile(model, variants={"Convolution": "direct"})
    with pytest.raises(ValueError, match="vector_width"):
        cnnjit.compile(model, vector_width=5)


def test_default_choice_is_the_first_that_applies() -> None:
    for (op, name), (model, _) in CASES.items():
        chosen = {c.variant for c in cnnjit.compile(model, entry="lazy")._default_spec().program.calls if c.op == op}
        assert chosen == {applicable_variants(model, op, 16)[0]}, (op, name)


@pytest.mark.parametrize("width", WIDTHS)
@pytest.mark.parametrize("m", [8, 24, 40])
@pytest.mark.parametrize(("hw", "variant"), [(1, "packed_fc"), (2, "channel_pointwise")])
def test_squeeze_excite_1x1_on_tiny_maps(width: int, m: int, hw: int, variant: str) -> None:
    """A 1x1 conv on a 1x1 map (a squeeze-excite block's squeeze, ``C -> C / 4``) runs as a GEMV on packed
    panels (``packed_fc``); on a 2x2 map it runs ``channel_pointwise`` (the map's 4 pixels as a tile's rows,
    output channels as lanes, on panels narrowed to keep their lanes busy), not the pixel-vector kernel with
    a few live lanes."""
    model, shape = _conv(4 * m, m, hw)
    compiled = cnnjit.compile(model, vector_width=width)
    assert {c.variant for c in compiled._default_spec().program.calls if c.op == "Conv"} == {variant}
    x = np.random.default_rng(m).standard_normal(shape).astype(np.float32)
    sess = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    np.testing.assert_allclose(compiled(x), sess.run(None, {"x": x})[0], rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("width", [8, 16])
def test_channel_vectors_only_where_pixel_vectors_idle(width: int) -> None:
    """A 1x1 conv on a small map runs on output-channel vectors (``channel_pointwise``) where the pixel vectors
    would idle lanes: a 3x3 map (9 pixels) yes, an 8x8 map of a layer too shallow for ``packed_pointwise``
    (7 input channels) filling whole rows of 4 8- or 16-lane vectors no (``simd_pointwise``)."""
    for (c, m, hw), want in [((128, 256, 3), "channel_pointwise"), ((7, 96, 8), "simd_pointwise")]:
        model, shape = _conv(c, m, hw)
        compiled = cnnjit.compile(model, vector_width=width)
        assert {c.variant for c in compiled._default_spec().program.calls if c.op == "Conv"} == {want}, (hw, width)
        x = np.random.default_rng(hw).standard_normal(shape).astype(np.float32)
        sess = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
        np.testing.assert_allclose(compiled(x), sess.run(None, {"x": x})[0], rtol=1e-4, atol=1e-4)
