"""Patterns from shipped models outside the corpus (issue 17's held-out check), as small generated models
with onnxruntime as the oracle: the real files are not in the repository (licences)."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from conftest import assert_outputs_match, ops_of, ort_session
from onnx import TensorProto, helper, numpy_helper

import cnnjit

F = TensorProto.FLOAT


def _model(nodes: list, inputs: list, outputs: list, inits: tuple = (), opset: int = 13) -> onnx.ModelProto:
    g = helper.make_graph(nodes, "g", inputs, outputs, list(inits))
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", opset)])
    m.ir_version = 8
    return m


def test_clip_bound_computed_at_run_time() -> None:
    """openWakeWord's log-mel front end: ``Clip(db, max(db) - 80, inf)``, plus a runtime upper bound. The
    input carries data, so it must not be specialised on its value: one compile serves every input."""
    nodes = [helper.make_node("ReduceMax", ["x"], ["m"], keepdims=0),
             helper.make_node("Sub", ["m", "range"], ["lo"]),
             helper.make_node("Clip", ["x", "lo", "big"], ["y"]),
             helper.make_node("ReduceMin", ["x"], ["n"], keepdims=0),
             helper.make_node("Add", ["n", "range"], ["hi"]),
             helper.make_node("Clip", ["x", "floor", "hi"], ["z"]),
             helper.make_node("Clip", ["x", "", "hi"], ["w"])]
    inits = [numpy_helper.from_array(np.array(v, np.float32), n)
             for n, v in (("range", 2.0), ("big", 1e30), ("floor", -1.5))]
    m = _model(nodes, [helper.make_tensor_value_info("x", F, [1, 5, 8])],
               [helper.make_tensor_value_info(n, F, [1, 5, 8]) for n in "yzw"], inits)
    compiled = cnnjit.compile(m)
    assert not any(s.by_value for s in compiled.inputs)
    sess = ort_session(m)
    for seed in range(3):
        x = (np.random.default_rng(seed).standard_normal((1, 5, 8)) * (seed + 1)).astype(np.float32)
        assert_outputs_match(list(compiled(x)), sess.run(None, {"x": x}), rtol=0, atol=0, what=f"seed {seed}")


@pytest.mark.parametrize("op", ["ConvInteger", "MatMulInteger"])
@pytest.mark.parametrize("runtime_bias", [True, False])
def test_integer_bias_added_before_the_cast_runs_in_float(op: str, runtime_bias: bool) -> None:
    """ddddocr's older captcha model (``quantize_dynamic`` of its time): ``ConvInteger + int32 bias -> Cast
    -> Mul(scale)``, the bias rounded from the float one with the run-time input scale. It must leave the
    integer kernels (30x slower than onnxruntime there) for the float Conv / Gemm."""
    rng = np.random.default_rng(7)
    conv = op == "ConvInteger"
    # 7-bit weights (quantize_dynamic's reduce_range): onnxruntime's u8 x s8 kernels saturate pairs of
    # products in int16 on AVX2 beyond that, and it is the oracle here
    wq = rng.integers(-64, 64, (6, 3, 3, 3) if conv else (12, 6)).astype(np.int8)
    bias_shape = (1, 6, 1, 1) if conv else (6,)
    nodes = [helper.make_node("DynamicQuantizeLinear", ["x"], ["xq", "xs", "xz"]),
             helper.make_node(op, ["xq", "wq", "xz", "wz"], ["acc"], **({"pads": [1] * 4} if conv else {})),
             helper.make_node("Mul", ["xs", "ws"], ["s"])]
    inits = [numpy_helper.from_array(wq, "wq"), numpy_helper.from_array(np.array(3, np.int8), "wz"),
             numpy_helper.from_array(np.array(0.02, np.float32), "ws")]
    if runtime_bias:
        nodes += [helper.make_node("Div", ["bf", "s"], ["bd"]), helper.make_node("Round", ["bd"], ["br"]),
                  helper.make_node("Cast", ["br"], ["bias"], to=TensorProto.INT32)]
        inits.append(numpy_helper.from_array(rng.standard_normal(bias_shape).astype(np.float32), "bf"))
    else:
        inits.append(numpy_helper.from_array(rng.integers(-500, 500, bias_shape).astype(np.int32), "bias"))
    nodes += [helper.make_node("Add", ["acc", "bias"], ["accb"]),
              helper.make_node("Cast", ["accb"], ["accf"], to=F), helper.make_node("Mul", ["accf", "s"], ["y"])]
    shape = [1, 3, 9, 10] if conv else [5, 12]
    m = _model(nodes, [helper.make_tensor_value_info("x", F, shape)], [helper.make_tensor_value_info("y", F, None)],
               inits, opset=11)
    compiled = cnnjit.compile(m)
    assert not {"ConvInteger", "MatMulInteger"} & {n.op for n in compiled.ir.nodes}
    x = rng.standard_normal(shape).astype(np.float32)
    (want,) = ort_session(m).run(None, {"x": x})
    got = compiled(x)
    np.testing.assert_allclose(got, want, rtol=0, atol=1e-5 * float(np.abs(want).max()))


@pytest.mark.parametrize(("c", "m", "group", "k", "stride", "dilation", "pads"), [
    (129, 128, 1, 3, 1, 1, (1, 1)),   # silero-vad's encoder
    (64, 64, 2, 3, 2, 1, (1, 0)),
    (8, 8, 8, 5, 1, 2, (4, 4)),       # depthwise, dilated
    (16, 24, 1, 1, 1, 1, (0, 0)),     # pointwise
    (1, 20, 1, 16, 8, 1, (0, 0)),     # an STFT: stride 8, kernel 2 strides (silero-vad: 128 and 256)
    (2, 6, 1, 12, 4, 1, (0, 0)),      # the same over 2 channels, 3 strides a kernel
    (1, 10, 1, 16, 5, 1, (0, 0)),     # a mel front end: a kernel of 3.2 strides (openWakeWord: 512 / 160)
    (3, 4, 1, 7, 7, 1, (0, 0)),       # kernel == stride
])
def test_conv1d_runs_on_the_2d_simd_kernels(c, m, group, k, stride, dilation, pads) -> None:
    """A 1-D Conv (audio front ends: silero-vad, openWakeWord) is a 2-D one of height 1, so it runs on the
    SIMD variants (it ran on the scalar ``direct`` kernel, 7 GFLOP/s); a stride above 2, as a stride-1
    Conv over blocks of the input."""
    rng = np.random.default_rng(k)
    length = max(11, k + 2 * stride + 3)
    w = rng.standard_normal((m, c // group, k)).astype(np.float32)
    b = rng.standard_normal(m).astype(np.float32)
    nodes = [helper.make_node("Conv", ["x", "w", "b"], ["c"], kernel_shape=[k], strides=[stride],
                              dilations=[dilation], pads=list(pads), group=group),
             helper.make_node("Relu", ["c"], ["y"])]
    m_ = _model(nodes, [helper.make_tensor_value_info("x", F, [2, c, length])],
                [helper.make_tensor_value_info("y", F, None)],
                [numpy_helper.from_array(w, "w"), numpy_helper.from_array(b, "b")])
    compiled = cnnjit.compile(m_)
    variants = {c.variant for c in compiled._default_spec().program.calls if c.op == "Conv"}
    assert variants and "direct" not in variants, variants
    x = rng.standard_normal((2, c, length)).astype(np.float32)
    (want,) = ort_session(m_).run(None, {"x": x})
    np.testing.assert_allclose(compiled(x), want, rtol=1e-5, atol=1e-5 * float(np.abs(want).max()))


@pytest.mark.parametrize("exponent", [np.float32(2.0), np.full((1, 7), 2.0, np.float32), np.float32(3.0),
                                      np.array([2.0, 0.5, 2.0, 1.0, 2.0, 3.0, 2.0], np.float32)])
def test_pow_squares(exponent: np.ndarray) -> None:
    """``Pow(x, 2)`` (an STFT's power spectrum in silero-vad) is ``x * x``: the same value, no ``pow()``
    call per element (0.14 GFLOP/s); other exponents still take ``pow``."""
    nodes = [helper.make_node("Pow", ["x", "e"], ["y"])]
    m = _model(nodes, [helper.make_tensor_value_info("x", F, [3, 5, 7])], [helper.make_tensor_value_info("y", F, None)],
               [numpy_helper.from_array(np.asarray(exponent), "e")])
    x = np.random.default_rng(2).uniform(0.1, 3.0, (3, 5, 7)).astype(np.float32)
    x[0, 0, 0] = -1.5
    want = np.power(x.astype(np.float64), np.asarray(exponent, np.float64))
    np.testing.assert_allclose(cnnjit.compile(m)(x), want, rtol=1e-6, atol=0)


@pytest.mark.parametrize("width", [4, 8, 16])
@pytest.mark.parametrize("frames", [5, 37])
def test_stft_with_odd_bins_runs_channel_blocked(width: int, frames: int) -> None:
    """openWakeWord's mel front end: an STFT as a 1-D Conv (stride 160, kernel 512) to ``n / 2 + 1`` bins
    (257: prime). simd_conv's tile held one channel (it must divide them): a load per FMA, 8 GFLOP/s on 5
    frames, 40 on 97; ``cblock`` pads the last channel tile. Shrunk: stride 32, kernel 128, 129 bins."""
    rng = np.random.default_rng(frames)
    length = 32 * (frames - 1) + 128
    w = rng.standard_normal((129, 1, 128)).astype(np.float32)
    nodes = [helper.make_node("Conv", ["x", "w"], ["c"], kernel_shape=[128], strides=[32]),
             helper.make_node("Mul", ["c", "c"], ["y"])]
    m = _model(nodes, [helper.make_tensor_value_info("x", F, [1, 1, length])],
               [helper.make_tensor_value_info("y", F, None)], [numpy_helper.from_array(w, "w")])
    compiled = cnnjit.compile(m, vector_width=width)
    # (37 frames: more than one strip of output columns, conv1d_packed's GEMM over shifted windows)
    want = "conv1d_packed" if frames > 16 else "cblock"
    assert {c.variant for c in compiled._default_spec().program.calls if c.op == "Conv"} == {want}
    x = rng.standard_normal((1, 1, length)).astype(np.float32)
    (want,) = ort_session(m).run(None, {"x": x})
    np.testing.assert_allclose(compiled(x), want, rtol=1e-4, atol=1e-5 * float(np.abs(want).max()))


@pytest.mark.parametrize(("m", "k", "stride", "length"), [
    (12, 32, 8, 100),    # basic-pitch's CQT: a 1x256 kernel at strides 4-256 over a height-1 plane, shrunk
    (5, 16, 16, 64),     # kernel == stride
    (7, 20, 6, 51),      # a kernel of 3.3 strides, the last block padded
])
def test_strided_1xk_conv_on_a_height_1_plane(m: int, k: int, stride: int, length: int) -> None:
    """A 2-D Conv over a height-1 input with a 1 x k kernel at a column stride above 2 (basic-pitch's
    constant-Q transform, exported as 2-D) is the 1-D case: a stride-1 Conv over blocks of the input, on the
    SIMD kernels (it ran on the scalar ``direct`` kernel at 0.5-6 GFLOP/s)."""
    rng = np.random.default_rng(k)
    w = rng.standard_normal((m, 1, 1, k)).astype(np.float32)
    b = rng.standard_normal(m).astype(np.float32)
    nodes = [helper.make_node("Conv", ["x", "w", "b"], ["y"], kernel_shape=[1, k], strides=[1, stride])]
    mdl = _model(nodes, [helper.make_tensor_value_info("x", F, [1, 1, 1, length])],
                 [helper.make_tensor_value_info("y", F, None)],
                 [numpy_helper.from_array(w, "w"), numpy_helper.from_array(b, "b")])
    compiled = cnnjit.compile(mdl)
    convs = [c for c in compiled._default_spec().program.calls if c.op == "Conv"]
    assert convs and all(c.variant != "direct" for c in convs), [c.variant for c in convs]
    assert all(n.attrs["strides"] == (1, 1) for n in compiled.ir.nodes if n.op == "Conv")
    x = rng.standard_normal((1, 1, 1, length)).astype(np.float32)
    (want,) = ort_session(mdl).run(None, {"x": x})
    np.testing.assert_allclose(compiled(x), want, rtol=1e-5, atol=1e-5 * float(np.abs(want).max()))


def _conv1d_gelu(bias_shape: tuple, reverse: bool = False) -> tuple[onnx.ModelProto, np.ndarray]:
    """tf2onnx's Keras Conv1D + tanh GELU (magika): a whole-tensor strided Slice, a 5x1 Conv on ``L x 1``, a
    whole-tensor Slice, a Squeeze to ``N x C x L``, the bias Add and GELU written as 9 elementwise ops."""
    rng = np.random.default_rng(0)
    c, m, length = 8, 16, 40
    wt = (0.3 * rng.standard_normal((m, c, 5, 1))).astype(np.float32)
    step = -1 if reverse else 1
    inits = [numpy_helper.from_array(wt, "w"), numpy_helper.from_array(rng.standard_normal(bias_shape).astype(
        np.float32), "b"), numpy_helper.from_array(np.array([0, 0, 0, 0], np.int64), "s0"),
        numpy_helper.from_array(np.array([2**30] * 4, np.int64), "s1"),
        numpy_helper.from_array(np.array([0, 1, 2, 3], np.int64), "ax"),
        numpy_helper.from_array(np.array([1, 1, 1, 1], np.int64), "st"),
        numpy_helper.from_array(np.array([0, -1, 0, 0], np.int64), "r0"),
        numpy_helper.from_array(np.array([2**30, -2**30, 2**30, 2**30], np.int64), "r1"),
        numpy_helper.from_array(np.array([1, step, 1, 1], np.int64), "rs"),
        numpy_helper.from_array(np.array([3], np.int64), "sq")] + [
        numpy_helper.from_array(np.array(v, np.float32), k) for k, v in
        (("half", 0.5), ("one", 1.0), ("k1", 0.044715), ("k2", np.sqrt(2 / np.pi)))]
    nodes = [helper.make_node("Slice", ["x", "s0", "s1", "ax", "st"], ["xs"]),
             helper.make_node("Conv", ["xs", "w"], ["y4"], kernel_shape=[5, 1]),
             helper.make_node("Slice", ["y4", "r0" if reverse else "s0", "r1" if reverse else "s1", "ax", "rs"],
                              ["y4s"]),
             helper.make_node("Squeeze", ["y4s", "sq"], ["y"]),
             helper.make_node("Add", ["y", "b"], ["a"]),
             helper.make_node("Mul", ["k1", "a"], ["a1"]),
             helper.make_node("Mul", ["a", "a1"], ["a2"]),
             helper.make_node("Mul", ["a", "a2"], ["a3"]),
             helper.make_node("Add", ["a", "a3"], ["a4"]),
             helper.make_node("Mul", ["k2", "a4"], ["a5"]),
             helper.make_node("Tanh", ["a5"], ["a6"]),
             helper.make_node("Add", ["one", "a6"], ["a7"]),
             helper.make_node("Mul", ["half", "a7"], ["a8"]),
             helper.make_node("Mul", ["a", "a8"], ["out"])]
    model = _model(nodes, [helper.make_tensor_value_info("x", F, [1, c, length, 1])],
                   [helper.make_tensor_value_info("out", F, None)], inits)
    return model, rng.standard_normal((1, c, length, 1)).astype(np.float32)


def test_conv1d_squeeze_bias_gelu_fuse_into_the_conv() -> None:
    """The whole-tensor Slices go (``remove_identity``), the Squeeze sinks below the bias Add and the GELU
    chain (``sink_reshapes``), and all of it fuses into the Conv: one Conv and its views (``conv_columns``'s and
    the Squeeze), against onnxruntime."""
    model, x = _conv1d_gelu((1, 16, 1))
    compiled = cnnjit.compile(model, threads=1)
    assert [op for op in ops_of(compiled) if op != "Reshape"] == ["Conv"]
    conv = next(n for n in compiled.ir.nodes if n.op == "Conv")
    assert [s.op for s in conv.attrs["post"]] == ["Gelu"] and conv.inputs[2].const.shape == (16,)
    assert_outputs_match([compiled.run(None, {"x": x})[0]], ort_session(model).run(None, {"x": x}),
                         rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize(("bias_shape", "reverse"), [((1, 16, 36), False), ((16, 1), True)])
def test_slices_and_squeezes_left_where_they_move_data(bias_shape: tuple, reverse: bool) -> None:
    """A bias over the whole map still sinks (a constant of the Conv's rank); a Slice reversing the channels
    is not an identity and stays, and the Squeeze above it does not sink (its source is no Conv). The IR only
    (no kernel built): the fused case above runs against onnxruntime."""
    ops = ops_of(cnnjit.compile(_conv1d_gelu(bias_shape, reverse)[0], entry="lazy"))
    # (left unfused, the GELU's Tanh runs after its Mul in one BroadcastMap: fuse_broadcast_map)
    assert ("Slice" in ops) == reverse and ("Tanh" in ops or "BroadcastMap" in ops) == reverse
