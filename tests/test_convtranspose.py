"""ConvTranspose kernels against an independent numpy reference, at every vector width.

The reference is the textbook identity, not the scatter the kernels and the IR reference use: a transposed
convolution is a stride-1 convolution (``reference_np.conv``) of the input spread out by the stride (zeros
between pixels), padded by ``dilation * (k - 1) - pad`` (cropped where negative, ``output_padding`` more
at the end), with each group's weights transposed (in <-> out channels) and flipped in space.

* ``test_simd_shuffle_at_width``: kernel == stride (the upsampler), every row / column stride the variant
  covers, groups, 1-D and 2-D, batches, planes that take the packed-input path; asserts ``simd_shuffle`` ran.
* ``test_convtranspose_at_width``: any kernel / stride / pads / output_padding / group / dilation through a
  variant drawn from those that apply (asserted to be the one that ran).
* ``test_phases_at_width``: the same cases through the default passes: ``convtranspose_phases`` rewrites
  every strided ConvTranspose without dilation, residual or a crop past ``k - 1`` (asserted) into a Conv of
  its output phases and a pixel shuffle, its epilogue fused into the Conv. (The kernel tests above run
  without that pass, so the ConvTranspose node reaches codegen; ``test_quant_property`` checks the default
  path against onnxruntime.)
* ``test_upsampler_vs_onnxruntime``: a small two-upsampler decoder against onnxruntime.
* Resize, the FPN's other upsampler: ``simd_nearest`` (whole factors) against ``np.repeat``, and any nearest
  Resize through a drawn variant against onnx's reference evaluator.
"""

from __future__ import annotations

import numpy as np
import pytest
import reference_np as ref
from hypothesis import given
from hypothesis import strategies as st
from kernel_cases import property_settings
from onnx import TensorProto, helper, numpy_helper
from onnx.reference import ReferenceEvaluator
from test_simd_widths import WIDTHS, applicable_variants, compile_variant

import cnnjit
from cnnjit.compiler.codegen.kernels.simd_convtranspose import pack_stride


def convtranspose_np(x, w, b, strides, pads, dilations, output_padding, group):
    """ConvTranspose of an N-D input as a stride-1 Conv of the stride-spread, padded input (see above)."""
    x = np.asarray(x, np.float64)
    n = x.ndim - 2
    k = w.shape[2:]
    N, C = x.shape[:2]
    cg, mg = C // group, w.shape[1]
    spread = np.zeros((N, C) + tuple((x.shape[2 + i] - 1) * strides[i] + 1 for i in range(n)))
    spread[(slice(None),) * 2 + tuple(slice(None, None, s) for s in strides)] = x
    lo = [dilations[i] * (k[i] - 1) - pads[i] for i in range(n)]
    hi = [dilations[i] * (k[i] - 1) - pads[n + i] + output_padding[i] for i in range(n)]
    spread = np.pad(spread, [(0, 0), (0, 0)] + [(max(a, 0), max(c, 0)) for a, c in zip(lo, hi)])
    spread = spread[(slice(None),) * 2 + tuple(slice(max(-a, 0), spread.shape[2 + i] - max(-c, 0))
                                              for i, (a, c) in enumerate(zip(lo, hi)))]
    wg = np.asarray(w, np.float64).reshape((group, cg, mg) + tuple(k))
    wconv = np.flip(wg.transpose((0, 2, 1) + tuple(range(3, 3 + n))), axis=tuple(range(3, 3 + n)))
    wconv = wconv.reshape((group * mg, cg) + tuple(k))
    return ref.conv(spread, wconv, b, strides=[1] * n, pads=[0] * (2 * n), dilations=list(dilations),
                    group=group)


def _model(x_shape, w, b, attrs, after=(), extra=None):
    """One ConvTranspose, then the ``after`` nodes (reading ``c``, the last one writing ``y``)."""
    inits = [numpy_helper.from_array(w, "w")] + ([numpy_helper.from_array(b, "b")] if b is not None else [])
    inits += [numpy_helper.from_array(v, k) for k, v in (extra or {}).items()]
    node = helper.make_node("ConvTranspose", ["x", "w"] + (["b"] if b is not None else []),
                            ["c" if after else "y"], **attrs)
    g = helper.make_graph([node, *after], "ct",
                          [helper.make_tensor_value_info("x", TensorProto.FLOAT, list(x_shape))],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)], inits)
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", 13)], ir_version=8)


def _epilogue(case: dict, rng, expected):
    """The nodes after the ConvTranspose the passes fuse into it (BatchNormalization, a residual Add, an
    activation with or without a vector form), their constants and the expected result."""
    nodes, extra, cur = [], {}, "c"
    M = expected.shape[1]
    shp = (1, M) + (1,) * (expected.ndim - 2)
    if case["bn"]:
        sc, bb, mu = (rng.standard_normal(M).astype(np.float32) for _ in range(3))
        var = rng.uniform(0.5, 2.0, M).astype(np.float32)
        extra.update(sc=sc, bb=bb, mu=mu, var=var)
        nodes.append(helper.make_node("BatchNormalization", [cur, "sc", "bb", "mu", "var"], ["bn"]))
        expected = (expected - mu.reshape(shp)) / np.sqrt(var.reshape(shp) + 1e-5) * sc.reshape(shp) + bb.reshape(shp)
        cur = "bn"
    if case["residual"]:
        r = rng.standard_normal(expected.shape).astype(np.float32)
        extra["r"] = r
        nodes.append(helper.make_node("Add", [cur, "r"], ["ad"]))
        expected, cur = expected + r, "ad"
    act = case["act"]
    if act is not None:
        nodes.append(helper.make_node(act, [cur], ["y"]))
        expected = ref.relu(expected) if act == "Relu" else ref.sigmoid(expected)
    elif nodes:
        nodes.append(helper.make_node("Identity", [cur], ["y"]))
    return nodes, extra, expected


#: the kernel tests compile without the pass that rewrites most ConvTransposes into Convs
KERNELS_ONLY = ("convtranspose_phases",)


def _phases_fire(case: dict) -> bool:
    """Whether ``convtranspose_phases`` must rewrite ``case``: no dilation or residual, not the upsampler
    kernel's kernel == stride without pads, no pad larger than ``k - 1``."""
    n = len(case["k"])
    upsampler = (case["k"] == case["s"] and not any(case["pads"]) and not any(case["op"])
                 and case["s"][-1] in (1, 2, 4) and case["s"][0] <= 4)
    return (not upsampler and not case["residual"] and all(d == 1 for d in case["d"])
            and all(case["pads"][i] < case["k"][i] and case["pads"][n + i] < case["k"][i] for i in range(n)))


def _check(case: dict, width: int, data=None, expect: str | None = None, phases: bool = False):
    rng = np.random.default_rng(case["seed"])
    g = case["group"]
    x = rng.standard_normal((case["N"], case["C"], *case["size"])).astype(np.float32)
    w = rng.standard_normal((case["C"], case["M"] // g, *case["k"])).astype(np.float32)
    b = rng.standard_normal(case["M"]).astype(np.float32) if case["bias"] else None
    attrs = dict(kernel_shape=case["k"], strides=case["s"], pads=case["pads"], dilations=case["d"],
                 output_padding=case["op"], group=g)
    expected = convtranspose_np(x, w, b, case["s"], case["pads"], case["d"], case["op"], g)
    after, extra, expected = _epilogue(case, rng, expected)
    proto = _model(x.shape, w, b, attrs, after, extra)
    if phases:
        model = cnnjit.compile(proto, vector_width=width)
        ir_ops = [n.op for n in model.ir.nodes]
        if _phases_fire(case):
            assert ir_ops.count("Conv") == 1 and set(ir_ops) <= {"Conv", "Reshape", "Transpose", "Slice", "Pad",
                                                                 "Concat"}, ir_ops
            return model
    else:
        model = compile_variant(proto, "ConvTranspose", width, data, expect, disable=KERNELS_ONLY)
        ir_ops = [n.op for n in model.ir.nodes]
        assert ir_ops == ["ConvTranspose"] or not after, f"the epilogue was not fused: {ir_ops}"
    got = model(x)
    assert got.shape == expected.shape
    np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-4 * max(1.0, float(np.abs(expected).max())))


epilogues = st.fixed_dictionaries({"bn": st.booleans(), "residual": st.booleans(),
                                   "act": st.sampled_from([None, "Relu", "Sigmoid"])})


@st.composite
def upsampler_cases(draw):
    """kernel == stride: column stride 1, 2 or 4, row stride 1..4 (2-D) or a 1-D input."""
    two_d = draw(st.booleans())
    sw = draw(st.sampled_from([1, 2, 2, 4]))
    s = [draw(st.integers(1, 4)), sw] if two_d else [sw]
    g = draw(st.sampled_from([1, 1, 2, 3]))
    C, M = g * draw(st.integers(1, 9)), g * draw(st.sampled_from([1, 2, 3, 5, 8]))
    size = ([draw(st.integers(1, 12))] if two_d else []) + [draw(st.integers(1, 45))]
    n = len(s)
    return dict(N=draw(st.integers(1, 2)), C=C, M=M, group=g, size=size, k=s, s=s, pads=[0] * (2 * n),
                d=[1] * n, op=[0] * n, bias=draw(st.booleans()), seed=draw(st.integers(0, 2**16)), **draw(epilogues))


@pytest.mark.parametrize("width", WIDTHS)
@property_settings(12)
@given(case=upsampler_cases())
def test_simd_shuffle_at_width(width, case) -> None:
    _check(case, width, expect="simd_shuffle")


@st.composite
def general_cases(draw):
    """Any kernel / stride / dilation / group; pads and output_padding within the spec's bounds."""
    n = draw(st.sampled_from([1, 2, 2]))
    k = [draw(st.integers(1, 4)) for _ in range(n)]
    s = [draw(st.integers(1, 4)) for _ in range(n)]
    d = [draw(st.integers(1, 2)) for _ in range(n)]
    size = [draw(st.integers(1, 9)) for _ in range(n)]
    op = [draw(st.integers(0, max(s[i], d[i]) - 1)) for i in range(n)]
    full = [(size[i] - 1) * s[i] + (k[i] - 1) * d[i] + 1 + op[i] for i in range(n)]
    b = [draw(st.integers(0, min(k[i] * d[i], (full[i] - 1) // 2))) for i in range(n)]
    e = [draw(st.integers(0, min(k[i] * d[i], full[i] - 1 - b[i]))) for i in range(n)]
    g = draw(st.sampled_from([1, 1, 2]))
    return dict(N=1, C=g * draw(st.integers(1, 4)), M=g * draw(st.integers(1, 5)), group=g, size=size, k=k,
                s=s, pads=b + e, d=d, op=op, bias=draw(st.booleans()), seed=draw(st.integers(0, 2**16)),
                **draw(epilogues))


@pytest.mark.parametrize("width", WIDTHS)
@property_settings(15)
@given(case=general_cases(), data=st.data())
def test_convtranspose_at_width(width, case, data) -> None:
    _check(case, width, data)


@pytest.mark.parametrize("width", WIDTHS)
@property_settings(8)
@given(case=general_cases())
def test_phases_at_width(width, case) -> None:
    _check(case, width, phases=True)


@pytest.mark.parametrize("width", WIDTHS)
def test_phases_im2col(width) -> None:
    """A decoder's 4x4 stride-2 upsampler (pads 1, BN, Relu) with 8 * 2 * 2 phase channels: its 2x2 phase taps
    folded into a 1x1 Conv's input channels (a Pad, four window Slices, a Concat)."""
    case = dict(N=1, C=5, M=8, group=1, size=[6, 9], k=[4, 4], s=[2, 2], pads=[1, 1, 1, 1], d=[1, 1], op=[0, 0],
                bias=True, seed=5, bn=True, residual=False, act="Relu")
    ops = [n.op for n in _check(case, width, phases=True).ir.nodes]
    assert ops.count("Slice") == 5 and "Concat" in ops, ops


@pytest.mark.parametrize("width", WIDTHS)
@pytest.mark.parametrize(("k", "size"), [([5], [30]), ([3], [17]), ([2, 5], [3, 7]), ([5, 2], [4, 6])])
def test_phases_take_strides_the_upsampler_cannot(width, k, size) -> None:
    """kernel == stride with a column stride the upsampler cannot interleave (3, 5: an EEG U-Net's 1-D stride-5
    upsamplers) or a row stride past ``SH_MAX``: ``convtranspose_phases`` rewrites it into a Conv (asserted in
    ``_check``), against the numpy reference, GELU-like epilogues aside (Relu)."""
    n = len(k)
    case = dict(N=1, C=6, M=8, group=1, size=size, k=k, s=k, pads=[0] * (2 * n), d=[1] * n, op=[0] * n,
                bias=True, seed=7, bn=False, residual=False, act="Relu")
    assert _phases_fire(case)
    _check(case, width, phases=True)


def test_applicability() -> None:
    """simd_shuffle takes exactly the non-overlapping, uncropped kernel == stride layers it can store."""
    def applies(k, s, **kw):
        n = len(k)
        attrs = dict(kernel_shape=k, strides=s, pads=[0] * (2 * n), dilations=[1] * n, output_padding=[0] * n)
        attrs.update(kw)
        w = np.ones((4, 4, *k), np.float32)
        names = applicable_variants(_model((1, 4, *[5] * n), w, None, attrs), "ConvTranspose", 8, KERNELS_ONLY)
        return "simd_shuffle" in names

    assert applies([2, 2], [2, 2]) and applies([4], [4]) and applies([3, 2], [3, 2])
    assert not applies([3, 3], [3, 3])  # column stride 3: no interleave
    assert not applies([3, 3], [2, 2])  # overlapping taps
    assert not applies([2, 2], [2, 2], pads=[1, 0, 0, 0])
    assert not applies([2, 2], [2, 2], output_padding=[1, 1])
    assert not applies([2, 2], [2, 2], dilations=[2, 2])


@pytest.mark.parametrize("width", WIDTHS)
def test_packed_input_path(width) -> None:
    """A 4 KiB-aliased plane (16x64, 2 images) whose row tiles re-read each column block: the block is
    packed into the output's unwritten last rows (all but the last rows of each image), then overwritten."""
    assert pack_stride(16, 12 * 2, 64, width, 2) > 0
    case = dict(N=2, C=16, M=12, group=1, size=[16, 64], k=[2, 2], s=[2, 2], pads=[0] * 4, d=[1, 1],
                op=[0, 0], bias=True, seed=7, bn=True, residual=True, act="Relu")
    _check(case, width, expect="simd_shuffle")


def test_upsampler_vs_onnxruntime() -> None:
    """Two 2x2 stride-2 upsamplers (the PP-OCR det head's shape, scaled down) against onnxruntime."""
    ort = pytest.importorskip("onnxruntime")
    rng = np.random.default_rng(3)
    w1 = rng.standard_normal((8, 8, 2, 2)).astype(np.float32)
    w2 = rng.standard_normal((8, 1, 2, 2)).astype(np.float32)
    b1 = rng.standard_normal(8).astype(np.float32)
    nodes = [helper.make_node("ConvTranspose", ["x", "w1", "b1"], ["h"], kernel_shape=[2, 2], strides=[2, 2]),
             helper.make_node("Relu", ["h"], ["r"]),
             helper.make_node("ConvTranspose", ["r", "w2"], ["y"], kernel_shape=[2, 2], strides=[2, 2])]
    g = helper.make_graph(nodes, "dec", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 8, 12, 20])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
                          [numpy_helper.from_array(v, k) for k, v in (("w1", w1), ("w2", w2), ("b1", b1))])
    model = helper.make_model(g, opset_imports=[helper.make_opsetid("", 13)], ir_version=8)
    x = rng.standard_normal((1, 8, 12, 20)).astype(np.float32)
    compiled = cnnjit.compile(model)
    assert {c.variant for c in compiled._default_spec().program.calls if c.op == "ConvTranspose"} == {"simd_shuffle"}
    sess = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    np.testing.assert_allclose(compiled(x), sess.run(None, {"x": x})[0], rtol=1e-4, atol=1e-4)


# -- Resize: the FPN's other upsampler -------------------------------------------------------------------
def _resize_model(shape, scales, ctm: str, nearest_mode: str):
    node = helper.make_node("Resize", ["x", "", "s"], ["y"], mode="nearest", coordinate_transformation_mode=ctm,
                            nearest_mode=nearest_mode)
    g = helper.make_graph([node], "rs", [helper.make_tensor_value_info("x", TensorProto.FLOAT, list(shape))],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
                          [numpy_helper.from_array(np.asarray(scales, np.float32), "s")])
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", 13)], ir_version=8)


@pytest.mark.parametrize("width", WIDTHS)
@property_settings(10)
@given(n=st.integers(1, 2), c=st.integers(1, 3), h=st.integers(1, 6), w=st.integers(1, 40),
       fh=st.integers(1, 3), fw=st.sampled_from([1, 2, 4]), seed=st.integers(0, 2**16))
def test_simd_nearest_at_width(width, n, c, h, w, fh, fw, seed) -> None:
    """Whole-factor nearest upsampling (asymmetric, floor: the FPN upsample) is each pixel repeated."""
    x = np.random.default_rng(seed).standard_normal((n, c, h, w)).astype(np.float32)
    model = compile_variant(_resize_model(x.shape, [1, 1, fh, fw], "asymmetric", "floor"), "Resize", width,
                            expect="simd_nearest")
    np.testing.assert_array_equal(model(x), x.repeat(fh, axis=2).repeat(fw, axis=3))


@pytest.mark.parametrize("width", WIDTHS)
@property_settings(10)
@given(h=st.integers(1, 5), w=st.integers(1, 19), fh=st.sampled_from([1, 1.5, 2, 3]),
       fw=st.sampled_from([1, 2, 2.5, 3, 4]), ctm=st.sampled_from(["asymmetric", "half_pixel", "align_corners"]),
       nm=st.sampled_from(["floor", "round_prefer_floor", "round_prefer_ceil", "ceil"]),
       seed=st.integers(0, 2**16), data=st.data())
def test_resize_nearest_at_width(width, h, w, fh, fw, ctm, nm, seed, data) -> None:
    """Any nearest Resize through a variant drawn from those that apply, against onnx's reference."""
    x = np.random.default_rng(seed).standard_normal((1, 2, h, w)).astype(np.float32)
    onnx_model = _resize_model(x.shape, [1, 1, fh, fw], ctm, nm)
    expected = ReferenceEvaluator(onnx_model).run(None, {"x": x})[0]
    np.testing.assert_array_equal(compile_variant(onnx_model, "Resize", width, data)(x), expected)
