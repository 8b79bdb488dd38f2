"""Hypothesis property tests of cnnjit's kernel families against independent numpy references.

Every test draws operator parameters, builds a one-node ONNX model (opset 17 unless noted, float32,
weights as initializers), compiles it with ``cnnjit.compile`` and compares ``model.run`` against the
float64 reference in ``tests/reference_np.py``.  Input data comes from ``np.random.default_rng(seed)``
with ``seed`` drawn by hypothesis, so every falsifying example is reproducible from its printout.

``test_reference_matches_onnxruntime`` runs the same case generators through onnxruntime to keep the
oracle itself honest.
"""

from __future__ import annotations

import math

import numpy as np
import onnx
import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp
from onnx import TensorProto, helper, numpy_helper

try:  # package-style import (tests/__init__.py present) or rootdir-on-sys.path style
    from . import reference_np as ref
except ImportError:  # pragma: no cover
    import reference_np as ref

OPSET = 17
RTOL = 1e-4
ATOL = 1e-5


def _settings(max_examples: int = 25):
    """Per-test settings on top of the loaded profile (tests/conftest.py: "ci" = 25 derandomized examples).

    ``max_examples`` is given relative to the ci profile's 25 and scaled with the active profile, so
    ``HYPOTHESIS_PROFILE=dev`` still runs many more examples.  No deadline: the first compile of a new
    kernel variant takes about a second.
    """
    base = settings.default.max_examples
    return settings(
        deadline=None,
        max_examples=max(1, round(max_examples * base / 25)),
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.filter_too_much],
    )


# ---------------------------------------------------------------------------------------------
# model construction / comparison helpers
# ---------------------------------------------------------------------------------------------

class Case:
    """One generated test case: a model, its feeds and the reference outputs.

    ``ort_ok`` is False where onnxruntime does not implement the ONNX spec (the oracle self-check skips
    those cases).
    """

    def __init__(self, desc: str, model: onnx.ModelProto, feeds: dict[str, np.ndarray],
                 expected: list[np.ndarray], atol: float = ATOL, rtol: float = RTOL, ort_ok: bool = True):
        self.desc, self.model, self.feeds, self.expected = desc, model, feeds, expected
        self.atol, self.rtol, self.ort_ok = atol, rtol, ort_ok

    def __repr__(self) -> str:  # what hypothesis prints for a falsifying example
        shapes = {k: v.shape for k, v in self.feeds.items()}
        return f"Case({self.desc}, feeds={shapes}, out={[e.shape for e in self.expected]})"


def make_model(nodes, inputs: dict[str, np.ndarray], outputs: dict[str, tuple],
               initializers: dict[str, np.ndarray] | None = None, opset: int = OPSET) -> onnx.ModelProto:
    graph = helper.make_graph(
        nodes,
        "kernel_property",
        [helper.make_tensor_value_info(k, TensorProto.FLOAT, list(v.shape)) for k, v in inputs.items()],
        [helper.make_tensor_value_info(k, TensorProto.FLOAT, list(s)) for k, s in outputs.items()],
        initializer=[numpy_helper.from_array(np.asarray(v, dtype=np.float32), name=k)
                     for k, v in (initializers or {}).items()],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)],
                              producer_name="cnnjit-kernel-property-tests")
    model.ir_version = 8
    onnx.checker.check_model(model)
    return model


def one_node_case(desc, op, inputs, initializers, input_names, expected, *, attrs=None, opset=OPSET,
                  atol=ATOL, rtol=RTOL, ort_ok=True, seed=None) -> Case:
    """``input_names`` is the node's input list (may include "" for omitted optional inputs)."""
    if seed is not None:
        desc = f"{desc} seed={seed}"
    expected = np.asarray(expected, dtype=np.float64)
    node = helper.make_node(op, input_names, ["y"], **(attrs or {}))
    model = make_model([node], inputs, {"y": expected.shape}, initializers, opset)
    return Case(desc, model, inputs, [expected], atol=atol, rtol=rtol, ort_ok=ort_ok)


def check_cnnjit(case: Case) -> None:
    import cnnjit  # lazily, so the oracle self-check below runs even while the compiler is broken

    feeds_before = {k: v.copy() for k, v in case.feeds.items()}
    compiled = cnnjit.compile(case.model)
    outs = compiled.run(None, dict(case.feeds))
    assert len(outs) == len(case.expected), f"{len(outs)} outputs, expected {len(case.expected)}"
    for i, (got, exp) in enumerate(zip(outs, case.expected, strict=True)):
        got = np.asarray(got)
        assert got.shape == exp.shape, f"output {i}: shape {got.shape} != expected {exp.shape}"
        assert got.dtype == np.float32, f"output {i}: dtype {got.dtype} != float32"
        np.testing.assert_allclose(got.astype(np.float64), exp, rtol=case.rtol, atol=case.atol,
                                   err_msg=f"output {i} of {case.desc}")
    for k, v in feeds_before.items():
        np.testing.assert_array_equal(case.feeds[k], v, err_msg=f"input {k!r} was modified in place")


def run_onnxruntime(case: Case) -> list[np.ndarray]:
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    so.intra_op_num_threads = 1
    so.inter_op_num_threads = 1
    so.log_severity_level = 3  # ORT's own shape inference disagrees with its ceil_mode kernels: mute
    sess = ort.InferenceSession(case.model.SerializeToString(), so, providers=["CPUExecutionProvider"])
    return sess.run(None, case.feeds)


def _rng(draw) -> tuple[int, np.random.Generator]:
    seed = draw(st.integers(0, 2**32 - 1))
    return seed, np.random.default_rng(seed)


def _normal(rng, shape, scale=1.0) -> np.ndarray:
    return np.asarray(rng.standard_normal(shape) * scale, dtype=np.float32)


def _f32(v: float) -> float:
    """Round a python float to the nearest float32 (ONNX float attributes are float32)."""
    return float(np.float32(v))


# ---------------------------------------------------------------------------------------------
# Conv
# ---------------------------------------------------------------------------------------------

@st.composite
def conv_cases(draw, ndims=(1, 1, 2, 2, 2, 3)):
    seed, rng = _rng(draw)
    nd = draw(st.sampled_from(ndims))
    gmode = draw(st.sampled_from(["one", "one", "depthwise", "depthwise_x2", "divisor"]))
    if gmode == "one":
        group, c_in, m_out = 1, draw(st.integers(1, 4)), draw(st.integers(1, 4))
    elif gmode == "depthwise":
        c_in = draw(st.integers(1, 4))
        group, m_out = c_in, c_in
    elif gmode == "depthwise_x2":
        c_in = draw(st.integers(1, 3))
        group, m_out = c_in, 2 * c_in
    else:
        group = draw(st.integers(2, 3))
        c_in = group * draw(st.integers(1, 2))
        m_out = group * draw(st.integers(1, 2))
    kmax = 5 if nd < 3 else 3
    # "pointwise": 1x1, stride 1, no padding (a separate GEMM-like code path when group == 1)
    pointwise = draw(st.integers(0, 4)) == 0
    kernel = [1 if pointwise else draw(st.integers(1, kmax)) for _ in range(nd)]
    strides = [1 if pointwise else draw(st.integers(1, 3)) for _ in range(nd)]
    dilations = [draw(st.integers(1, 2)) for _ in range(nd)]
    auto_pad = draw(st.sampled_from(["NOTSET", "NOTSET", "NOTSET", "SAME_UPPER", "SAME_LOWER", "VALID"]))
    pads = [0 if pointwise else draw(st.integers(0, 3)) for _ in range(2 * nd)] if auto_pad == "NOTSET" else None
    eff = [(k - 1) * d + 1 for k, d in zip(kernel, dilations, strict=True)]
    if auto_pad == "NOTSET":
        lo = [max(1, eff[i] - pads[i] - pads[i + nd]) for i in range(nd)]
    elif auto_pad == "VALID":
        lo = eff
    else:
        lo = [1] * nd
    extra = 6 if nd < 3 else 3
    spatial = [lo[i] + draw(st.integers(0, extra)) for i in range(nd)]
    batch = draw(st.integers(1, 2))
    bias = draw(st.booleans())
    # which optional attributes are spelled out (defaults must be honoured)
    spell_strides = draw(st.booleans()) or any(s != 1 for s in strides)
    spell_dil = draw(st.booleans()) or any(d != 1 for d in dilations)
    spell_kernel = draw(st.booleans())

    x = _normal(rng, (batch, c_in, *spatial))
    w = _normal(rng, (m_out, c_in // group, *kernel), scale=1.0 / math.sqrt(max(1, c_in // group)))
    b = _normal(rng, (m_out,)) if bias else None
    expected = ref.conv(x, w, b, strides=strides, pads=pads, dilations=dilations, group=group,
                        auto_pad=auto_pad)
    assert min(expected.shape[2:]) >= 1

    attrs = {"group": group}
    if spell_kernel:
        attrs["kernel_shape"] = kernel
    if spell_strides:
        attrs["strides"] = strides
    if spell_dil:
        attrs["dilations"] = dilations
    if auto_pad == "NOTSET":
        if any(pads) or draw(st.booleans()):
            attrs["pads"] = pads
    else:
        attrs["auto_pad"] = auto_pad
    # weights are normally initializers; sometimes they are graph inputs (known only at run time)
    runtime_w = draw(st.integers(0, 5)) == 0
    inputs, inits = {"x": x}, {}
    (inputs if runtime_w else inits)["w"] = w
    names = ["x", "w"]
    if bias:
        (inputs if runtime_w else inits)["b"] = b
        names.append("b")
    red = (c_in // group) * int(np.prod(kernel))
    desc = (f"Conv{nd}d group={group}({gmode}) C_in={c_in} M={m_out} kernel={kernel} strides={strides} "
            f"dilations={dilations} auto_pad={auto_pad} pads={pads} bias={bias} attrs={sorted(attrs)}"
            f"{' W/B as graph inputs' if runtime_w else ''}")
    # onnxruntime refuses SAME_* auto_pad with dilation > 1 (the spec does not)
    ort_ok = auto_pad not in ("SAME_UPPER", "SAME_LOWER") or all(d == 1 for d in dilations)
    return one_node_case(desc, "Conv", inputs, inits, names, expected, attrs=attrs,
                         atol=ATOL * max(1.0, math.sqrt(red)), ort_ok=ort_ok, seed=seed)


@_settings(60)
@given(case=conv_cases(ndims=(1, 2)))
def test_conv_1d_2d(case):
    check_cnnjit(case)


@_settings(20)
@given(case=conv_cases(ndims=(3,)))
def test_conv_3d(case):
    check_cnnjit(case)


# ---------------------------------------------------------------------------------------------
# Pooling
# ---------------------------------------------------------------------------------------------

@st.composite
def pool_cases(draw, op=None, ndims=(1, 2, 2, 3)):
    seed, rng = _rng(draw)
    op = op or draw(st.sampled_from(["MaxPool", "AveragePool"]))
    nd = draw(st.sampled_from(ndims))
    kmax = 4 if nd < 3 else 3
    kernel = [draw(st.integers(1, kmax)) for _ in range(nd)]
    strides = [draw(st.integers(1, 3)) for _ in range(nd)]
    dilations = [draw(st.integers(1, 2)) for _ in range(nd)] if op == "MaxPool" else [1] * nd
    pads = [draw(st.integers(0, kernel[i % nd] - 1)) for i in range(2 * nd)]  # ONNX: pad < kernel
    ceil_mode = draw(st.integers(0, 1))
    count_include_pad = draw(st.integers(0, 1))
    eff = [(k - 1) * d + 1 for k, d in zip(kernel, dilations, strict=True)]
    extra = 5 if nd < 3 else 3
    spatial = [max(1, eff[i] - pads[i] - pads[i + nd]) + draw(st.integers(0, extra)) for i in range(nd)]
    batch = draw(st.integers(1, 2))
    channels = draw(st.integers(1, 3))
    x = _normal(rng, (batch, channels, *spatial))
    if op == "MaxPool":
        expected = ref.max_pool(x, kernel, strides=strides, pads=pads, dilations=dilations,
                                ceil_mode=ceil_mode)
    else:
        expected = ref.avg_pool(x, kernel, strides=strides, pads=pads, ceil_mode=ceil_mode,
                                count_include_pad=count_include_pad)
    # a window made only of padding (possible with dilation / ceil_mode) has no well-defined value
    assume(np.isfinite(expected).all())

    attrs = {"kernel_shape": kernel}
    if any(s != 1 for s in strides) or draw(st.booleans()):
        attrs["strides"] = strides
    if any(pads) or draw(st.booleans()):
        attrs["pads"] = pads
    if ceil_mode or draw(st.booleans()):
        attrs["ceil_mode"] = ceil_mode
    if op == "MaxPool":
        if any(d != 1 for d in dilations) or draw(st.booleans()):
            attrs["dilations"] = dilations
    elif count_include_pad or draw(st.booleans()):
        attrs["count_include_pad"] = count_include_pad
    desc = (f"{op}{nd}d kernel={kernel} strides={strides} pads={pads} ceil_mode={ceil_mode} "
            + (f"dilations={dilations}" if op == "MaxPool" else f"count_include_pad={count_include_pad}")
            + f" attrs={sorted(attrs)}")
    return one_node_case(desc, op, {"x": x}, {}, ["x"], expected, attrs=attrs, seed=seed)


@_settings(40)
@given(case=pool_cases(op="MaxPool"))
def test_maxpool(case):
    check_cnnjit(case)


@_settings(40)
@given(case=pool_cases(op="AveragePool"))
def test_averagepool(case):
    check_cnnjit(case)


@st.composite
def global_pool_cases(draw):
    seed, rng = _rng(draw)
    op = draw(st.sampled_from(["GlobalAveragePool", "GlobalMaxPool"]))
    nd = draw(st.integers(1, 3))
    shape = (draw(st.integers(1, 2)), draw(st.integers(1, 4)), *[draw(st.integers(1, 7)) for _ in range(nd)])
    x = _normal(rng, shape)
    expected = ref.global_avg_pool(x) if op == "GlobalAveragePool" else ref.global_max_pool(x)
    return one_node_case(f"{op} shape={shape}", op, {"x": x}, {}, ["x"], expected, seed=seed)


@_settings(15)
@given(case=global_pool_cases())
def test_global_pool(case):
    check_cnnjit(case)


# ---------------------------------------------------------------------------------------------
# Elementwise with broadcasting
# ---------------------------------------------------------------------------------------------

def _operand(rng, shape, op, position):
    if op == "Div" and position == 1:  # denominator: |v| in [0.5, 2], random sign
        mag = rng.uniform(0.5, 2.0, size=shape)
        return np.asarray(mag * rng.choice([-1.0, 1.0], size=shape), dtype=np.float32)
    v = _normal(rng, shape, scale=2.0)
    if op in ("Max", "Min") and v.size > 1:
        # make ties between operands likely
        v.flat[:: 3] = np.round(v.flat[:: 3])
    return v


@st.composite
def binary_cases(draw):
    seed, rng = _rng(draw)
    op = draw(st.sampled_from(sorted(ref.BINARY_OPS)))
    bs = draw(hnp.mutually_broadcastable_shapes(num_shapes=2, min_dims=0, max_dims=5, min_side=1, max_side=5))
    sa, sb = bs.input_shapes
    scalars = draw(st.sampled_from(["none"] * 5 + ["a", "b", "both"]))  # rank-0 operands, explicitly
    if scalars in ("a", "both"):
        sa = ()
    if scalars in ("b", "both"):
        sb = ()
    a, b = _operand(rng, sa, op, 0), _operand(rng, sb, op, 1)
    where_b = draw(st.sampled_from(["input", "initializer", "initializer_first"]))
    expected = ref.binary(op, a, b)
    assert expected.shape == np.broadcast_shapes(sa, sb)
    if where_b == "input":
        inputs, inits = {"a": a, "b": b}, {}
    elif where_b == "initializer":
        inputs, inits = {"a": a}, {"b": b}
    else:  # constant first operand, graph input second
        inputs, inits = {"b": b}, {"a": a}
    desc = f"{op} a{sa} b{sb} -> {expected.shape} ({where_b})"
    return one_node_case(desc, op, inputs, inits, ["a", "b"], expected, seed=seed)


@_settings(50)
@given(case=binary_cases())
def test_binary_broadcast(case):
    check_cnnjit(case)


@st.composite
def variadic_cases(draw):
    seed, rng = _rng(draw)
    op = draw(st.sampled_from(["Sum", "Sum", "Max", "Min"]))
    n = 3 if op == "Sum" and draw(st.booleans()) else draw(st.integers(1, 3))
    bs = draw(hnp.mutually_broadcastable_shapes(num_shapes=n, min_dims=0, max_dims=5, min_side=1, max_side=4))
    xs = [_operand(rng, s, op, 0) for s in bs.input_shapes]
    names = [f"x{i}" for i in range(n)]
    n_const = draw(st.integers(0, n - 1))
    inputs = {nm: v for nm, v in zip(names[n_const:], xs[n_const:], strict=True)}
    inits = {nm: v for nm, v in zip(names[:n_const], xs[:n_const], strict=True)}
    expected = ref.variadic(op, *xs)
    desc = f"{op} of {n}: {list(bs.input_shapes)} -> {bs.result_shape} ({n_const} constant)"
    return one_node_case(desc, op, inputs, inits, names, expected, seed=seed)


@_settings(30)
@given(case=variadic_cases())
def test_variadic_broadcast(case):
    check_cnnjit(case)


# ---------------------------------------------------------------------------------------------
# Unary activations
# ---------------------------------------------------------------------------------------------

_SHAPES = hnp.array_shapes(min_dims=0, max_dims=4, min_side=1, max_side=6)


def _activation_input(rng, shape, kinks):
    """Normal data (scale 3) with some entries replaced by kink points (and neighbours) / big values."""
    x = _normal(rng, shape, scale=3.0)
    specials = []
    for k in kinks:
        k32 = np.float32(k)
        specials += [k32, np.nextafter(k32, np.float32(np.inf)), np.nextafter(k32, np.float32(-np.inf)),
                     k32 + np.float32(1e-3), k32 - np.float32(1e-3)]
    specials += [np.float32(v) for v in (0.0, -0.0, 30.0, -30.0, 100.0, -100.0)]
    specials = np.array(specials, dtype=np.float32)
    flat = x.reshape(-1)
    mask = rng.random(flat.size) < 0.4
    flat[mask] = rng.choice(specials, size=int(mask.sum()))
    return flat.reshape(shape)


@st.composite
def activation_cases(draw):
    seed, rng = _rng(draw)
    op = draw(st.sampled_from(["Relu", "LeakyRelu", "Sigmoid", "HardSigmoid", "HardSwish", "Tanh"]))
    shape = draw(_SHAPES)
    attrs = {}
    if op == "LeakyRelu":
        alpha = draw(st.sampled_from([None, 0.01, 0.1, 0.2, 1.5, -0.5]))
        if alpha is not None:
            attrs["alpha"] = alpha
        x = _activation_input(rng, shape, [0.0])
        expected = ref.leaky_relu(x, _f32(0.01 if alpha is None else alpha))
    elif op == "HardSigmoid":
        alpha = draw(st.sampled_from([None, 0.2, 1 / 6, 0.5, 1.0]))
        beta = draw(st.sampled_from([None, 0.5, 0.25, 0.0]))
        a = _f32(0.2 if alpha is None else alpha)
        bt = _f32(0.5 if beta is None else beta)
        if alpha is not None:
            attrs["alpha"] = alpha
        if beta is not None:
            attrs["beta"] = beta
        x = _activation_input(rng, shape, [(0.0 - bt) / a, (1.0 - bt) / a])
        expected = ref.hard_sigmoid(x, a, bt)
    elif op == "HardSwish":
        x = _activation_input(rng, shape, [-3.0, 3.0, 0.0])
        expected = ref.hard_swish(x)
    elif op == "Relu":
        x = _activation_input(rng, shape, [0.0])
        expected = ref.relu(x)
    else:
        x = _activation_input(rng, shape, [0.0])
        expected = ref.UNARY_OPS[op](x)
    desc = f"{op} shape={shape} attrs={attrs}"
    return one_node_case(desc, op, {"x": x}, {}, ["x"], np.asarray(expected), attrs=attrs, seed=seed)


@_settings(40)
@given(case=activation_cases())
def test_activation(case):
    check_cnnjit(case)


@st.composite
def clip_cases(draw):
    seed, rng = _rng(draw)
    shape = draw(_SHAPES)
    mode = draw(st.sampled_from(["both", "both", "min_only", "max_only", "none"]))
    lo = draw(st.sampled_from([0.0, -1.0, -0.5, 1.0])) if mode in ("both", "min_only") else None
    hi = draw(st.sampled_from([6.0, 1.0, 0.5, 2.5])) if mode in ("both", "max_only") else None
    if lo is not None and hi is not None:
        assume(lo <= hi)
    x = _activation_input(rng, shape, [v for v in (lo, hi) if v is not None] or [0.0])
    inits = {}
    names = ["x"]
    if lo is not None:
        inits["lo"] = np.array(lo, dtype=np.float32)
    if hi is not None:
        inits["hi"] = np.array(hi, dtype=np.float32)
    if mode == "both":
        names = ["x", "lo", "hi"]
    elif mode == "min_only":
        names = ["x", "lo"]
    elif mode == "max_only":
        names = ["x", "", "hi"]
    expected = ref.clip(x, lo, hi)
    return one_node_case(f"Clip(opset13) {mode} min={lo} max={hi} shape={shape}", "Clip", {"x": x}, inits,
                         names, expected, seed=seed)


@_settings(20)
@given(case=clip_cases())
def test_clip(case):
    check_cnnjit(case)


# ---------------------------------------------------------------------------------------------
# Gemm / MatMul
# ---------------------------------------------------------------------------------------------

@st.composite
def gemm_cases(draw):
    seed, rng = _rng(draw)
    m, k, n = draw(st.integers(1, 7)), draw(st.integers(1, 9)), draw(st.integers(1, 7))
    trans_a, trans_b = draw(st.integers(0, 1)), draw(st.integers(0, 1))
    alpha = draw(st.sampled_from([None, 1.0, 0.5, -2.0, 0.0]))
    beta = draw(st.sampled_from([None, 1.0, 0.25, -1.5, 0.0]))
    c_kind = draw(st.sampled_from(["absent", "scalar", "one", "vector_n", "row", "column", "matrix"]))
    c_shape = {"absent": None, "scalar": (), "one": (1,), "vector_n": (n,), "row": (1, n),
               "column": (m, 1), "matrix": (m, n)}[c_kind]
    b_const = draw(st.booleans())
    c_const = draw(st.booleans())
    a = _normal(rng, (k, m) if trans_a else (m, k))
    b = _normal(rng, (n, k) if trans_b else (k, n))
    c = _normal(rng, c_shape) if c_shape is not None else None
    attrs = {}
    for key, val in (("alpha", alpha), ("beta", beta)):
        if val is not None:
            attrs[key] = val
    if trans_a or draw(st.booleans()):
        attrs["transA"] = trans_a
    if trans_b or draw(st.booleans()):
        attrs["transB"] = trans_b
    expected = ref.gemm(a, b, c, alpha=1.0 if alpha is None else alpha, beta=1.0 if beta is None else beta,
                        trans_a=trans_a, trans_b=trans_b)
    inputs, inits = {"a": a}, {}
    (inits if b_const else inputs)["b"] = b
    names = ["a", "b"]
    if c is not None:
        (inits if c_const else inputs)["c"] = c
        names.append("c")
    desc = (f"Gemm M={m} K={k} N={n} attrs={attrs} C={c_kind}{c_shape} "
            f"B={'const' if b_const else 'input'} C={'const' if c_const else 'input'}")
    return one_node_case(desc, "Gemm", inputs, inits, names, expected, attrs=attrs,
                         atol=ATOL * max(1.0, math.sqrt(k)) * 2, seed=seed)


@_settings(30)
@given(case=gemm_cases())
def test_gemm(case):
    check_cnnjit(case)


@st.composite
def matmul_cases(draw):
    seed, rng = _rng(draw)
    bs = draw(hnp.mutually_broadcastable_shapes(signature=np.matmul.signature, max_dims=3, min_side=1,
                                                max_side=6))
    sa, sb = bs.input_shapes
    a, b = _normal(rng, sa), _normal(rng, sb)
    b_const = draw(st.booleans())
    expected = ref.matmul(a, b)
    inputs, inits = {"a": a}, {}
    (inits if b_const else inputs)["b"] = b
    k = sa[-1]
    desc = f"MatMul a{sa} b{sb} -> {expected.shape} B={'const' if b_const else 'input'}"
    return one_node_case(desc, "MatMul", inputs, inits, ["a", "b"], expected,
                         atol=ATOL * max(1.0, math.sqrt(k)) * 2, seed=seed)


@_settings(30)
@given(case=matmul_cases())
def test_matmul(case):
    check_cnnjit(case)


# ---------------------------------------------------------------------------------------------
# Softmax
# ---------------------------------------------------------------------------------------------

@st.composite
def softmax_cases(draw, opset=13):
    seed, rng = _rng(draw)
    shape = draw(hnp.array_shapes(min_dims=1, max_dims=4, min_side=1, max_side=6))
    r = len(shape)
    axis = draw(st.one_of(st.none(), st.integers(-r, r - 1)))
    scale = draw(st.sampled_from([1.0, 5.0, 40.0]))  # 40: large logits, exercises max-subtraction
    x = _normal(rng, shape, scale=scale)
    if opset >= 13:
        expected = ref.softmax(x, axis=-1 if axis is None else axis)
    else:
        expected = ref.softmax_v11(x, axis=1 if axis is None else axis)
        assume(axis is not None or r >= 2)  # default axis=1 needs rank >= 2
    attrs = {} if axis is None else {"axis": axis}
    return one_node_case(f"Softmax(opset{opset}) shape={shape} axis={axis} scale={scale}", "Softmax",
                         {"x": x}, {}, ["x"], expected, attrs=attrs, opset=opset, seed=seed)


@_settings(25)
@given(case=softmax_cases(opset=13))
def test_softmax_opset13(case):
    check_cnnjit(case)


@_settings(20)
@given(case=softmax_cases(opset=11))
def test_softmax_opset11(case):
    check_cnnjit(case)


# ---------------------------------------------------------------------------------------------
# small chains (exercise fusion: broadcasting inside fused groups, intermediates that are outputs)
# ---------------------------------------------------------------------------------------------

_CHAIN_UNARY = {
    "Relu": (ref.relu, {}),
    "Sigmoid": (ref.sigmoid, {}),
    "Tanh": (ref.tanh, {}),
    "HardSwish": (ref.hard_swish, {}),
    "LeakyRelu": (lambda v: ref.leaky_relu(v, _f32(0.1)), {"alpha": 0.1}),
}
_CHAIN_BINARY = ["Add", "Sub", "Mul", "Max", "Min"]


@st.composite
def elementwise_chain_cases(draw):
    """x -> 2..5 elementwise steps (unary, or binary with a fresh broadcastable operand) -> y.

    Binary operands may broadcast *up* the running shape.  One intermediate is sometimes also a graph
    output (so a fused group must still materialise it).
    """
    seed, rng = _rng(draw)
    shape = draw(hnp.array_shapes(min_dims=0, max_dims=4, min_side=1, max_side=4))
    x = _normal(rng, shape)
    inputs, inits, nodes = {"x": x}, {}, []
    cur_name, cur = "x", ref._f64(x)
    steps, values = [], {}
    for i in range(draw(st.integers(2, 5))):
        out = f"t{i}"
        if draw(st.booleans()):
            op = draw(st.sampled_from(sorted(_CHAIN_UNARY)))
            fn, attrs = _CHAIN_UNARY[op]
            nodes.append(helper.make_node(op, [cur_name], [out], **attrs))
            cur = fn(cur)
            steps.append(op)
        else:
            op = draw(st.sampled_from(_CHAIN_BINARY))
            oshape = draw(hnp.mutually_broadcastable_shapes(num_shapes=1, base_shape=cur.shape, max_dims=4,
                                                            min_side=1, max_side=4)).input_shapes[0]
            oname = f"c{i}"
            operand = _normal(rng, oshape)
            (inits if draw(st.booleans()) else inputs)[oname] = operand
            pair = [cur_name, oname] if draw(st.booleans()) else [oname, cur_name]
            nodes.append(helper.make_node(op, pair, [out]))
            vals = {cur_name: cur, oname: ref._f64(operand)}
            cur = ref.binary(op, vals[pair[0]], vals[pair[1]])
            steps.append(f"{op}{oshape}{'(swapped)' if pair[0] == oname else ''}")
        values[out] = cur
        cur_name = out
    outputs = {cur_name: cur.shape}
    expected = [cur]
    if len(values) > 1 and draw(st.booleans()):
        mid = draw(st.sampled_from(sorted(values)[:-1]))
        outputs[mid] = values[mid].shape
        expected.append(values[mid])
    model = make_model(nodes, inputs, outputs, inits)
    desc = f"chain x{shape}: {' -> '.join(steps)} outputs={list(outputs)} consts={sorted(inits)} seed={seed}"
    return Case(desc, model, inputs, expected, atol=1e-4)


@_settings(40)
@given(case=elementwise_chain_cases())
def test_elementwise_chain(case):
    check_cnnjit(case)


@st.composite
def conv_block_cases(draw):
    """Conv -> epilogue (bias-like / BN-like / residual adds, activations, swish) -> optional pool."""
    seed, rng = _rng(draw)
    n, c, m = draw(st.integers(1, 2)), draw(st.integers(1, 4)), draw(st.integers(1, 4))
    depthwise = draw(st.booleans())
    if depthwise:
        m, group = c, c
    else:
        group = 1
    k = draw(st.sampled_from([1, 3]))
    h, w_ = draw(st.integers(2, 7)), draw(st.integers(2, 7))
    stride = draw(st.integers(1, 2))
    pad = k // 2
    x = _normal(rng, (n, c, h, w_))
    wt = _normal(rng, (m, c // group, k, k), scale=0.5)
    bias = _normal(rng, (m,)) if draw(st.booleans()) else None
    inputs, inits = {"x": x}, {"w": wt}
    conv_in = ["x", "w"]
    if bias is not None:
        inits["b"] = bias
        conv_in.append("b")
    nodes = [helper.make_node("Conv", conv_in, ["conv"], kernel_shape=[k, k], strides=[stride, stride],
                              pads=[pad] * 4, group=group)]
    cur = ref.conv(x, wt, bias, strides=[stride] * 2, pads=[pad] * 4, group=group)
    conv_out = cur
    cur_name, steps = "conv", []
    for i in range(draw(st.integers(1, 3))):
        kind = draw(st.sampled_from(["Relu", "Clip06", "HardSwish", "swish", "chan_add", "chan_mul",
                                     "residual"]))
        out = f"e{i}"
        if kind == "Relu":
            nodes.append(helper.make_node("Relu", [cur_name], [out]))
            cur = ref.relu(cur)
        elif kind == "Clip06":
            inits.setdefault("zero", np.array(0.0, np.float32))
            inits.setdefault("six", np.array(6.0, np.float32))
            nodes.append(helper.make_node("Clip", [cur_name, "zero", "six"], [out]))
            cur = ref.clip(cur, 0.0, 6.0)
        elif kind == "HardSwish":
            nodes.append(helper.make_node("HardSwish", [cur_name], [out]))
            cur = ref.hard_swish(cur)
        elif kind == "swish":  # x * sigmoid(x): the running value has two consumers
            nodes.append(helper.make_node("Sigmoid", [cur_name], [f"sig{i}"]))
            nodes.append(helper.make_node("Mul", [cur_name, f"sig{i}"], [out]))
            cur = cur * ref.sigmoid(cur)
        elif kind in ("chan_add", "chan_mul"):
            v = _normal(rng, (m, 1, 1))
            inits[f"p{i}"] = v
            op = "Add" if kind == "chan_add" else "Mul"
            nodes.append(helper.make_node(op, [cur_name, f"p{i}"], [out]))
            cur = ref.binary(op, cur, v)
        else:
            r = _normal(rng, cur.shape)
            inputs[f"r{i}"] = r
            nodes.append(helper.make_node("Add", [f"r{i}", cur_name], [out]))
            cur = cur + ref._f64(r)
        steps.append(kind)
        cur_name = out
    pool = draw(st.sampled_from(["none", "MaxPool", "AveragePool", "GlobalAveragePool"]))
    if pool in ("MaxPool", "AveragePool") and min(cur.shape[2:]) >= 2:
        nodes.append(helper.make_node(pool, [cur_name], ["pooled"], kernel_shape=[2, 2], strides=[2, 2]))
        cur = (ref.max_pool if pool == "MaxPool" else ref.avg_pool)(cur, [2, 2], strides=[2, 2])
        cur_name = "pooled"
    elif pool == "GlobalAveragePool":
        nodes.append(helper.make_node(pool, [cur_name], ["pooled"]))
        cur = ref.global_avg_pool(cur)
        cur_name = "pooled"
    else:
        pool = "none"
    outputs, expected = {cur_name: cur.shape}, [cur]
    if draw(st.booleans()):  # the conv result is also a graph output
        outputs["conv"] = conv_out.shape
        expected.append(conv_out)
    model = make_model(nodes, inputs, outputs, inits)
    desc = (f"Conv{k}x{k}/s{stride} {'depthwise' if depthwise else 'dense'} C={c} M={m} "
            f"bias={bias is not None} -> {' -> '.join(steps)} -> pool={pool} outputs={list(outputs)} "
            f"seed={seed}")
    return Case(desc, model, inputs, expected, atol=1e-4)


@_settings(30)
@given(case=conv_block_cases())
def test_conv_block(case):
    check_cnnjit(case)


# ---------------------------------------------------------------------------------------------
# the oracle itself must agree with onnxruntime
# ---------------------------------------------------------------------------------------------

_FAMILIES = {
    "conv": conv_cases(),
    "maxpool": pool_cases(op="MaxPool"),
    "averagepool": pool_cases(op="AveragePool"),
    "global_pool": global_pool_cases(),
    "binary": binary_cases(),
    "variadic": variadic_cases(),
    "activation": activation_cases(),
    "clip": clip_cases(),
    "gemm": gemm_cases(),
    "matmul": matmul_cases(),
    "softmax13": softmax_cases(opset=13),
    "softmax11": softmax_cases(opset=11),
    "elementwise_chain": elementwise_chain_cases(),
    "conv_block": conv_block_cases(),
}


@pytest.mark.parametrize("family", sorted(_FAMILIES))
@_settings(15)
@given(data=st.data())
def test_reference_matches_onnxruntime(family, data):
    case = data.draw(_FAMILIES[family], label="case")
    assume(case.ort_ok)
    outs = run_onnxruntime(case)
    assert len(outs) == len(case.expected)
    for got, exp in zip(outs, case.expected, strict=True):
        assert got.shape == exp.shape, f"onnxruntime shape {got.shape} != reference {exp.shape}"
        np.testing.assert_allclose(got.astype(np.float64), exp, rtol=case.rtol, atol=case.atol)


def _residual_cases() -> list[Case]:
    """Fused residual Adds whose inputs sit at unusual places: the conv's own input as its residual, one
    tensor added twice, and a MatMul (two base inputs, no bias slot)."""
    rng = np.random.default_rng(16)
    x, r = _normal(rng, (1, 8, 5, 5)), _normal(rng, (1, 8, 5, 5))
    w, a = _normal(rng, (8, 8, 1, 1)), _normal(rng, (24, 16))
    c = ref.conv(x, w)
    mx, mr = _normal(rng, (3, 24)), _normal(rng, (3, 16))
    mm = ref._f64(mx) @ ref._f64(a) + ref._f64(mr)
    return [
        Case("Relu(Conv(x) + x)", make_model(
            [helper.make_node("Conv", ["x", "w"], ["c"]), helper.make_node("Add", ["c", "x"], ["s"]),
             helper.make_node("Relu", ["s"], ["y"])], {"x": x}, {"y": c.shape}, {"w": w}),
            {"x": x}, [np.maximum(c + ref._f64(x), 0)]),
        Case("r + (Conv(x) + r)", make_model(
            [helper.make_node("Conv", ["x", "w"], ["c"]), helper.make_node("Add", ["c", "r"], ["s"]),
             helper.make_node("Add", ["r", "s"], ["y"])], {"x": x, "r": r}, {"y": c.shape}, {"w": w}),
            {"x": x, "r": r}, [c + 2 * ref._f64(r)]),
        Case("Sigmoid(MatMul(x, A) + r)", make_model(
            [helper.make_node("MatMul", ["x", "a"], ["c"]), helper.make_node("Add", ["c", "r"], ["s"]),
             helper.make_node("Sigmoid", ["s"], ["y"])], {"x": mx, "r": mr}, {"y": mm.shape}, {"a": a}),
            {"x": mx, "r": mr}, [1 / (1 + np.exp(-mm))]),
    ]


@pytest.mark.parametrize("case", _residual_cases(), ids=repr)
def test_fused_residual_inputs(case):
    check_cnnjit(case)
