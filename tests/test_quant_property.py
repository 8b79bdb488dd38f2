"""Hypothesis property tests: ConvTranspose, ReduceMean and the quantized / integer ops against onnxruntime.

Each test draws operator parameters, builds a one-node ONNX model (``ir_version=8``), compiles it with
``cnnjit.compile`` and compares ``model.run`` with onnxruntime: float outputs to a tight tolerance, integer
outputs exactly. Data comes from ``np.random.default_rng(seed)`` with ``seed`` drawn by hypothesis, so every
falsifying example is reproducible from its printout.

Parameter spaces stay inside what onnxruntime implements: ConvInteger with per-tensor zero points only
(onnxruntime refuses per-channel weight zero points), QLinearConv with a per-tensor weight zero point and
``y`` of ``x``'s type, 7-bit activations and zero points where uint8 meets int8 weights (onnxruntime's x86
u8s8 kernels saturate the int16 sum of two products), ConvTranspose ``output_padding`` smaller than the stride.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import onnx
import pytest
from hypothesis import given
from hypothesis import strategies as st
from kernel_cases import property_settings
from onnx import TensorProto, helper, numpy_helper

import cnnjit

ort = pytest.importorskip("onnxruntime")

_ELEM = {np.dtype(np.float32): TensorProto.FLOAT, np.dtype(np.uint8): TensorProto.UINT8,
         np.dtype(np.int8): TensorProto.INT8, np.dtype(np.uint16): TensorProto.UINT16,
         np.dtype(np.int16): TensorProto.INT16, np.dtype(np.int32): TensorProto.INT32,
         np.dtype(np.int64): TensorProto.INT64}


class Case:
    """A one-node model with its graph-input feeds."""

    def __init__(self, desc: str, model: onnx.ModelProto, feeds: dict[str, np.ndarray]):
        self.desc, self.model, self.feeds = desc, model, feeds

    def __repr__(self) -> str:  # what hypothesis prints for a falsifying example
        return f"Case({self.desc}, feeds={ {k: (v.shape, str(v.dtype)) for k, v in self.feeds.items()} })"


def one_node(desc: str, op: str, inputs: list[str], feeds: dict[str, np.ndarray], inits: dict[str, np.ndarray],
             out_dtype: np.dtype, opset: int, **attrs) -> Case:
    node = helper.make_node(op, inputs, ["y"], **attrs)
    graph = helper.make_graph(
        [node], "quant_property",
        [helper.make_tensor_value_info(k, _ELEM[v.dtype], list(v.shape)) for k, v in feeds.items()],
        [helper.make_tensor_value_info("y", _ELEM[np.dtype(out_dtype)], None)],
        initializer=[numpy_helper.from_array(v, name=k) for k, v in inits.items()],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)], ir_version=8)
    return Case(desc, model, feeds)


def run_ort(case: Case) -> np.ndarray:
    so = ort.SessionOptions()
    so.intra_op_num_threads = 1
    sess = ort.InferenceSession(case.model.SerializeToString(), so, providers=["CPUExecutionProvider"])
    return sess.run(None, case.feeds)[0]


def check(case: Case, rtol: float = 1e-4, atol: float = 1e-5) -> None:
    want = run_ort(case)
    got = cnnjit.compile(case.model).run(None, case.feeds)[0]
    assert got.dtype == want.dtype and got.shape == want.shape, (case, got.dtype, got.shape, want.dtype, want.shape)
    if np.issubdtype(want.dtype, np.integer):
        np.testing.assert_array_equal(got, want, err_msg=repr(case))
    else:
        np.testing.assert_allclose(got, want, rtol=rtol, atol=atol, err_msg=repr(case))


def quant_test(cases: st.SearchStrategy[Case], rtol: float = 1e-4, atol: float = 1e-5) -> Callable[[Case], None]:
    """A test that checks every case drawn from ``cases`` against onnxruntime (``check``)."""

    @property_settings()
    @given(case=cases)
    def test(case: Case) -> None:
        check(case, rtol, atol)

    return test


def _rng(draw) -> np.random.Generator:
    return np.random.default_rng(draw(st.integers(0, 2**32 - 1)))


def _ints(rng: np.random.Generator, dtype, shape) -> np.ndarray:
    info = np.iinfo(dtype)
    return rng.integers(info.min, int(info.max) + 1, size=shape).astype(dtype)


def _acts(rng: np.random.Generator, dtype, weight_dtype, shape) -> np.ndarray:
    """Activation values (or zero points) of ``dtype``: 7-bit where uint8 meets int8 weights, since
    onnxruntime's x86 u8s8 kernels saturate the int16 sum of two products (x0*w0 + x1*w1)."""
    x = _ints(rng, dtype, shape)
    return x >> 1 if np.dtype(dtype) == np.uint8 and np.dtype(weight_dtype) == np.int8 else x


# -- ConvTranspose ---------------------------------------------------------------------------------------
@st.composite
def convtranspose_cases(draw):
    rng = _rng(draw)
    n = draw(st.sampled_from((1, 1, 2, 2, 2, 3)))
    N = draw(st.integers(1, 2))
    g = draw(st.integers(1, 2))
    cg, mg = draw(st.integers(1, 3)), draw(st.integers(1, 3))
    size = [draw(st.integers(1, 5 if n < 3 else 3)) for _ in range(n)]
    k = [draw(st.integers(1, 3)) for _ in range(n)]
    s = [draw(st.integers(1, 3)) for _ in range(n)]
    d = [draw(st.integers(1, 2)) for _ in range(n)]
    full = [(size[i] - 1) * s[i] + (k[i] - 1) * d[i] + 1 for i in range(n)]
    mode = draw(st.sampled_from(("pads", "pads", "SAME_UPPER", "SAME_LOWER", "VALID", "output_shape")))
    attrs: dict = {"strides": s, "dilations": d, "group": g}
    if draw(st.booleans()):
        attrs["kernel_shape"] = k
    op = [draw(st.integers(0, s[i] - 1)) for i in range(n)]
    if mode == "pads":
        b = [draw(st.integers(0, max(0, min(k[i] - 1, (full[i] + op[i] - 1) // 2)))) for i in range(n)]
        e = [draw(st.integers(0, max(0, min(k[i] - 1, full[i] + op[i] - 1 - b[i])))) for i in range(n)]
        attrs["pads"] = b + e
        attrs["output_padding"] = op
    elif mode == "output_shape":
        # onnxruntime accepts an output up to stride - 1 larger than the full result (total padding >= 1 - s)
        attrs["output_shape"] = [full[i] + op[i] - draw(st.integers(op[i] + 1 - s[i], min(3, full[i] + op[i] - 1)))
                                 for i in range(n)]
        attrs["output_padding"] = op
    else:
        attrs["auto_pad"] = mode
        if mode != "VALID":
            attrs["output_padding"] = op
    x = rng.standard_normal((N, g * cg, *size)).astype(np.float32)
    w = rng.standard_normal((g * cg, mg, *k)).astype(np.float32)
    inits = {"w": w}
    names = ["x", "w"]
    if draw(st.booleans()):
        inits["b"] = rng.standard_normal(g * mg).astype(np.float32)
        names.append("b")
    return one_node(f"ConvTranspose {n}-D {mode} {attrs}", "ConvTranspose", names, {"x": x}, inits,
                    np.float32, draw(st.sampled_from((11, 17))), **attrs)


test_convtranspose = quant_test(convtranspose_cases())


# -- ReduceMean ------------------------------------------------------------------------------------------
@st.composite
def reduce_mean_cases(draw):
    rng = _rng(draw)
    rank = draw(st.integers(1, 4))
    shape = [draw(st.integers(1, 4)) for _ in range(rank)]
    x = rng.standard_normal(shape).astype(np.float32)
    axes = draw(st.lists(st.integers(-rank, rank - 1), unique_by=lambda a: a % rank, max_size=rank))
    keepdims = draw(st.integers(0, 1))
    opset = draw(st.sampled_from((13, 18)))
    if opset < 18:
        attrs = {"keepdims": keepdims} | ({"axes": axes} if axes else {})
        return one_node(f"ReduceMean axes={axes}", "ReduceMean", ["x"], {"x": x}, {}, np.float32, opset, **attrs)
    noop = draw(st.integers(0, 1))
    inits = {"axes": np.asarray(axes, np.int64)} if axes or draw(st.booleans()) else {}
    names = ["x", "axes"] if inits else ["x"]
    return one_node(f"ReduceMean axes={axes} noop={noop}", "ReduceMean", names, {"x": x}, inits, np.float32,
                    opset, keepdims=keepdims, noop_with_empty_axes=noop)


test_reduce_mean = quant_test(reduce_mean_cases(), rtol=1e-5, atol=1e-6)


# -- QuantizeLinear --------------------------------------------------------------------------------------
@st.composite
def quantize_cases(draw):
    rng = _rng(draw)
    opset = draw(st.sampled_from((10, 13, 19, 21)))
    rank = draw(st.integers(1, 4))
    shape = [draw(st.integers(1, 5)) for _ in range(rank)]
    modes = ["tensor"] + (["axis"] if opset >= 13 else []) + (["blocked"] if opset >= 21 else [])
    mode = draw(st.sampled_from(modes))
    types = [np.uint8, np.int8] + ([np.uint16, np.int16] if opset >= 21 else [])
    dt = np.dtype(draw(st.sampled_from(types)))
    attrs: dict = {}
    axis = draw(st.integers(-rank, rank - 1))
    if mode == "tensor":
        pshape: tuple = draw(st.sampled_from(((), (1,))))
    elif mode == "axis":
        pshape = (shape[axis],)
        attrs["axis"] = axis
    else:
        bs = draw(st.integers(1, 4))
        pshape = tuple(-(-v // bs) if i == axis % rank else v for i, v in enumerate(shape))
        attrs["axis"] = axis
        attrs["block_size"] = bs
        if int(np.prod(pshape)) == 1:  # onnxruntime takes a one-element scale as per tensor
            mode, pshape, attrs = "tensor", (), {}
    # power-of-two and arbitrary scales; exact .5 ties and saturating values in x
    if draw(st.booleans()):
        scale = (2.0 ** rng.integers(-4, 3, size=pshape)).astype(np.float32)
    else:
        scale = rng.uniform(0.01, 2.0, size=pshape).astype(np.float32)
    info = np.iinfo(dt)
    span = float(info.max) - float(info.min)
    steps = rng.integers(-int(span * 0.7), int(span * 0.7) + 1, size=shape) / 2.0  # multiples of 0.5
    se = np.broadcast_to(scale.reshape(()) if scale.size == 1 and mode == "tensor" else _expand(scale, shape, axis,
                         attrs.get("block_size", 0)), shape)
    x = (steps * se).astype(np.float32)
    if draw(st.booleans()):
        x = (x + rng.standard_normal(shape).astype(np.float32) * se).astype(np.float32)
    inits = {"s": scale}
    names = ["x", "s"]
    if draw(st.booleans()) or (dt not in (np.uint8,) and opset < 21):
        inits["z"] = _ints(rng, dt, pshape)
        names.append("z")
    elif dt != np.uint8:
        attrs["output_dtype"] = _ELEM[dt]
    return one_node(f"QuantizeLinear opset {opset} {mode} {dt} {attrs}", "QuantizeLinear", names, {"x": x}, inits,
                    dt, opset, **attrs)


def _expand(v: np.ndarray, shape: list[int], axis: int, block: int) -> np.ndarray:
    axis %= len(shape)
    if block:
        return np.repeat(v, block, axis=axis).take(np.arange(shape[axis]), axis=axis)
    dims = [1] * len(shape)
    dims[axis] = v.size
    return v.reshape(dims)


test_quantize_linear = quant_test(quantize_cases())


# -- integer convolutions ----------------------------------------------------------------------------------
@st.composite
def _conv_geometry(draw, max_n: int = 2):
    n = draw(st.integers(1, max_n))
    g = draw(st.integers(1, 2))
    cg, mg = draw(st.integers(1, 3)), draw(st.integers(1, 3))
    k = [draw(st.integers(1, 3)) for _ in range(n)]
    s = [draw(st.integers(1, 2)) for _ in range(n)]
    d = [draw(st.integers(1, 2)) for _ in range(n)]
    size = [(k[i] - 1) * d[i] + 1 + draw(st.integers(0, 4)) for i in range(n)]
    pads = [draw(st.integers(0, k[i] - 1)) for i in range(n)] + [draw(st.integers(0, k[i] - 1)) for i in range(n)]
    attrs = {"strides": s, "dilations": d, "group": g, "pads": pads}
    if draw(st.booleans()):
        attrs["kernel_shape"] = k
    return draw(st.integers(1, 2)), g, cg, mg, size, k, attrs


@st.composite
def conv_integer_cases(draw):
    rng = _rng(draw)
    N, g, cg, mg, size, k, attrs = draw(_conv_geometry())
    x = _ints(rng, np.uint8, (N, g * cg, *size))
    w = _ints(rng, np.uint8, (g * mg, cg, *k))
    inits = {"w": w}
    names = ["x", "w"]
    if draw(st.booleans()):
        inits["xz"] = _ints(rng, np.uint8, ())
        inits["wz"] = _ints(rng, np.uint8, ())
        names += ["xz", "wz"]
    return one_node(f"ConvInteger {attrs}", "ConvInteger", names, {"x": x}, inits, np.int32, 10, **attrs)


test_conv_integer = quant_test(conv_integer_cases())


@st.composite
def qlinear_conv_cases(draw):
    rng = _rng(draw)
    N, g, cg, mg, size, k, attrs = draw(_conv_geometry())
    xt = np.dtype(draw(st.sampled_from((np.uint8, np.int8))))
    wt = np.dtype(np.int8) if xt == np.int8 else np.dtype(draw(st.sampled_from((np.uint8, np.int8))))
    M = g * mg
    x = _acts(rng, xt, wt, (N, g * cg, *size))
    w = _ints(rng, wt, (M, cg, *k))
    ws = rng.uniform(0.001, 0.05, size=draw(st.sampled_from(((), (M,))))).astype(np.float32)
    acc_scale = float(np.max(ws)) * 0.05 * np.sqrt(cg * np.prod(k)) * 128 * 128 / 4
    inits = {
        "xs": np.float32(rng.uniform(0.01, 0.1)), "xz": _acts(rng, xt, wt, ()),
        "w": w, "ws": ws, "wz": _ints(rng, wt, ()) if wt == np.uint8 else np.zeros((), wt),
        "ys": np.float32(acc_scale / 128 * rng.uniform(0.2, 2.0)), "yz": _ints(rng, xt, ()),
    }
    names = ["x", "xs", "xz", "w", "ws", "wz", "ys", "yz"]
    if draw(st.booleans()):
        inits["b"] = rng.integers(-5000, 5000, size=M).astype(np.int32)
        names.append("b")
    return one_node(f"QLinearConv {xt}/{wt} {attrs}", "QLinearConv", names, {"x": x}, inits, xt, 10, **attrs)


test_qlinear_conv = quant_test(qlinear_conv_cases())


# -- integer matrix products -------------------------------------------------------------------------------
@st.composite
def _matmul_shapes(draw):
    M, K, N = draw(st.integers(1, 4)), draw(st.integers(1, 6)), draw(st.integers(1, 4))
    batch_a = draw(st.lists(st.integers(1, 3), max_size=2))
    batch_b = list(batch_a[len(batch_a) - draw(st.integers(0, len(batch_a))):])
    if batch_b and draw(st.booleans()):
        batch_b[0] = 1  # a broadcast batch axis
    if draw(st.booleans()):
        batch_a, batch_b = batch_b, batch_a
    return (*batch_a, M, K), (*batch_b, K, N), M, N


@st.composite
def matmul_integer_cases(draw):
    rng = _rng(draw)
    a_shape, b_shape, M, N = draw(_matmul_shapes())
    at = np.dtype(draw(st.sampled_from((np.uint8, np.int8))))
    bt = np.dtype(draw(st.sampled_from((np.uint8, np.int8))))
    feeds = {"a": _acts(rng, at, bt, a_shape)}
    inits = {"b": _ints(rng, bt, b_shape)}
    names = ["a", "b"]
    zp = draw(st.sampled_from(("none", "scalar", "column")))
    if zp != "none":
        inits["az"] = _acts(rng, at, bt, ())
        # per column: (N,) for a 2-D B, else B's rank with a unit K axis (what onnxruntime accepts)
        col = (N,) if len(b_shape) == 2 else (*b_shape[:-2], 1, N)
        inits["bz"] = _ints(rng, bt, () if zp == "scalar" else col)
        names += ["az", "bz"]
    return one_node(f"MatMulInteger {at}x{bt} zp={zp}", "MatMulInteger", names, feeds, inits, np.int32, 10)


test_matmul_integer = quant_test(matmul_integer_cases())


@st.composite
def qlinear_matmul_cases(draw):
    rng = _rng(draw)
    a_shape, b_shape, M, N = draw(_matmul_shapes())
    at = np.dtype(draw(st.sampled_from((np.uint8, np.int8))))
    bt = np.dtype(np.int8) if at == np.int8 else np.dtype(draw(st.sampled_from((np.uint8, np.int8))))
    K = a_shape[-1]
    feeds = {"a": _acts(rng, at, bt, a_shape)}
    pshape = draw(st.sampled_from(((), (1,))))
    # b per column: (N,) for a 2-D B (what onnxruntime accepts)
    bshape = draw(st.sampled_from((pshape, (N,)))) if len(b_shape) == 2 else pshape
    inits = {
        "as": rng.uniform(0.01, 0.1, size=pshape).astype(np.float32), "az": _acts(rng, at, bt, pshape),
        "b": _ints(rng, bt, b_shape),
        "bs": rng.uniform(0.01, 0.1, size=bshape).astype(np.float32), "bz": _ints(rng, bt, bshape),
        "ys": (rng.uniform(0.2, 2.0, size=pshape) * 0.01 * 0.01 * np.sqrt(K) * 128 * 64 / 128).astype(np.float32),
        "yz": _ints(rng, at, pshape),
    }
    names = ["a", "as", "az", "b", "bs", "bz", "ys", "yz"]
    opset = draw(st.sampled_from((10, 21)))
    return one_node(f"QLinearMatMul {at}x{bt} opset {opset}", "QLinearMatMul", names, feeds, inits, at, opset)


test_qlinear_matmul = quant_test(qlinear_matmul_cases())
