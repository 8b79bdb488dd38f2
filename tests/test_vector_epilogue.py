"""Fused activations in registers, composite activations fused, and the vector unary / Softmax kernels.

* Every activation the fusion pass puts in a producer's epilogue, after each SIMD kernel family (1x1
  pointwise, depthwise, dense 3x3, Gemm) at every vector width: the kernel applies it to the accumulator
  before the store (its source calls the vector form and has no scalar loop over the stored tile), and
  the model matches onnxruntime.
* The exported spellings of SiLU, HardSwish, Mish and the two GELUs (several elementwise nodes) become one
  epilogue step, and the fused model matches the unfused one and onnxruntime.
* Standalone activations and Softmax/LogSoftmax over any axis run on their vector variants
  (``simd_unary``, ``simd_softmax``) and match onnxruntime.
* A ScaleShift's constants are kernel arguments: same-shape layers with other constants share a kernel.
"""

from __future__ import annotations

import math
import re

import numpy as np
import onnxruntime as ort
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from onnx import TensorProto, helper, numpy_helper

import cnnjit
from cnnjit.compiler.codegen.kernels.epilogue import vector_expr

WIDTHS = (4, 8, 16)
OPSET = 20
#: (op, attrs, extra inputs) of every activation the fusion pass absorbs; Clip's bounds are inputs
ACTIVATIONS = [
    ("Relu", {}), ("Clip", {}), ("LeakyRelu", {"alpha": 0.1}), ("LeakyRelu", {"alpha": -1.7}),
    ("HardSigmoid", {"alpha": 0.3, "beta": 0.4}), ("HardSwish", {}), ("Sigmoid", {}), ("Tanh", {}),
    ("Softplus", {}), ("Elu", {"alpha": 0.8}), ("Selu", {}), ("Gelu", {}), ("Gelu", {"approximate": "tanh"}),
    ("Mish", {}),
]
#: a marker of the scalar loop over the stored tile (``epilogue.store_loop``)
SCALAR_EPILOGUE = "v = yb[U(yo + q)]"


def _model(nodes, x_shape, inits, outputs, opset=OPSET):
    g = helper.make_graph(nodes, "m", [helper.make_tensor_value_info("x", TensorProto.FLOAT, list(x_shape))],
                          [helper.make_tensor_value_info(o, TensorProto.FLOAT, None) for o in outputs],
                          [numpy_helper.from_array(np.asarray(v), k) for k, v in inits.items()])
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", opset)], ir_version=9)


def _ort(model, x):
    sess = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    return sess.run(None, {"x": x})


def _act_node(op, attrs, src, dst, inits):
    if op == "Clip":
        inits.update(lo=np.float32(-0.5), hi=np.float32(1.5))
        return helper.make_node("Clip", [src, "lo", "hi"], [dst])
    return helper.make_node(op, [src], [dst], **attrs)


def _branches(kind: str, rng) -> tuple:
    """One producer per activation, all reading x: (model, x, producer op)."""
    c = 8
    x = rng.standard_normal((1, c, 9, 13)).astype(np.float32)
    nodes, inits, outs = [], {}, []
    for i, (op, attrs) in enumerate(ACTIVATIONS):
        if kind == "gemm":
            inits[f"w{i}"] = (rng.standard_normal((9 * 13, 20)) * 0.3).astype(np.float32)
            inits[f"b{i}"] = rng.standard_normal(20).astype(np.float32)
            nodes.append(helper.make_node("Gemm", ["xf", f"w{i}", f"b{i}"], [f"p{i}"]))
        else:
            k, g, m = {"pointwise": (1, 1, 16), "depthwise": (3, c, c), "dense": (3, 1, 12)}[kind]
            inits[f"w{i}"] = (rng.standard_normal((m, c // g, k, k)) * 0.5).astype(np.float32)
            inits[f"b{i}"] = rng.standard_normal(m).astype(np.float32)
            nodes.append(helper.make_node("Conv", ["x", f"w{i}", f"b{i}"], [f"p{i}"], kernel_shape=[k, k],
                                          pads=[k // 2] * 4, group=g))
        nodes.append(_act_node(op, attrs, f"p{i}", f"y{i}", inits))
        outs.append(f"y{i}")
    if kind == "gemm":
        inits["shape"] = np.array([c, 9 * 13], np.int64)
        nodes.insert(0, helper.make_node("Reshape", ["x", "shape"], ["xf"]))
    return _model(nodes, x.shape, inits, outs), x, "Gemm" if kind == "gemm" else "Conv"


def assert_in_registers(compiled, op: str, width: int) -> None:
    """Every ``op`` call's kernel applies its fused activation in vectors (at any lane count: tile rows may
    span several machine vectors), none over the stored tile."""
    prog = compiled._default_spec().program
    calls = [c for c in prog.calls if c.op == op]
    assert calls
    for call in calls:
        src = prog.kernel_sources[call.kernel]
        steps = call.node.attrs.get("post", ())
        assert steps, f"{call.node.describe()}: nothing fused"
        assert SCALAR_EPILOGUE not in src, f"{call.variant}: scalar epilogue for {[s.op for s in steps]}"
        for i, s in enumerate(steps):
            fn = re.match(r"[a-z]+", vector_expr(s.op, dict(s.attrs), width, "ACC")).group()
            if s.op == "HardSwish" and steps[i + 1:i + 2] and steps[i + 1].op == "ScaleShift":
                fn = "vminf"  # folded with the ScaleShift after it (``epilogue.hardswish_scaleshift``)
            assert re.search(fn + r"\d+\(", src), f"{call.variant}: {s.op}'s vector form {fn} is not in the kernel"


#: each family at one width, every width covered (the math itself is checked at every width in
#: test_vector_math.py; test_simd_widths.py draws fused activations for every family at every width)
FAMILY_WIDTHS = [("pointwise", 4), ("depthwise", 16), ("dense", 8), ("gemm", 16)]


@pytest.mark.parametrize("kind, width", FAMILY_WIDTHS)
def test_every_activation_in_registers(kind: str, width: int) -> None:
    model, x, op = _branches(kind, np.random.default_rng(width))
    compiled = cnnjit.compile(model, vector_width=width)
    variants = {c.variant for c in compiled._default_spec().program.calls if c.op == op}
    want = {"pointwise": {"simd_pointwise", "cvec_pointwise", "channel_pointwise"},
            "depthwise": {"simd_depthwise", "simd_depthwise_row", "simd_depthwise_static", "depthwise_lanes",
                          "depthwise_direct", "depthwise_direct_s2"},
            "dense": {"simd_conv", "cvec", "winograd_f4"}, "gemm": {"simd_gemm"}}[kind]
    assert variants <= want, variants
    assert_in_registers(compiled, op, width)
    for got, ref in zip(compiled(x), _ort(model, x)):
        np.testing.assert_allclose(got, ref, rtol=1e-4, atol=1e-4 * max(1.0, float(np.abs(ref).max())))


# -- composite activations -------------------------------------------------------------------------------
def _c(inits, name, v):
    inits[name] = np.float32(v)
    return name


def _composite(kind: str, inits: dict) -> list:
    """Nodes computing activation ``kind`` of ``p`` into ``y``, as exporters spell it."""
    mk = helper.make_node
    if kind == "silu":
        return [mk("Sigmoid", ["p"], ["s"]), mk("Mul", ["p", "s"], ["y"])]
    if kind == "silu_swapped":
        return [mk("Sigmoid", ["p"], ["s"]), mk("Mul", ["s", "p"], ["y"])]
    if kind == "hardswish_hardsigmoid":
        return [mk("HardSigmoid", ["p"], ["s"], alpha=1 / 6, beta=0.5), mk("Mul", ["p", "s"], ["y"])]
    if kind == "hardswish_clip":  # PaddlePaddle / older PyTorch: x * clip(x + 3, 0, 6) / 6
        return [mk("Add", ["p", _c(inits, "three", 3.0)], ["a"]),
                mk("Clip", ["a", _c(inits, "zero", 0.0), _c(inits, "six", 6.0)], ["cl"]),
                mk("Mul", ["p", "cl"], ["m"]), mk("Div", ["m", "six"], ["y"])]
    if kind == "mish":
        return [mk("Softplus", ["p"], ["sp"]), mk("Tanh", ["sp"], ["t"]), mk("Mul", ["p", "t"], ["y"])]
    if kind == "gelu_div":  # PyTorch: x * 0.5 * (1 + erf(x / sqrt 2)) with the 0.5 last
        return [mk("Div", ["p", _c(inits, "sqrt2", math.sqrt(2))], ["d"]), mk("Erf", ["d"], ["e"]),
                mk("Add", ["e", _c(inits, "one", 1.0)], ["a"]), mk("Mul", ["p", "a"], ["m"]),
                mk("Mul", ["m", _c(inits, "half", 0.5)], ["y"])]
    if kind == "gelu_half_first":
        return [mk("Mul", ["p", _c(inits, "half", 0.5)], ["h"]),
                mk("Mul", ["p", _c(inits, "rs2", 1 / math.sqrt(2))], ["d"]), mk("Erf", ["d"], ["e"]),
                mk("Add", [_c(inits, "one", 1.0), "e"], ["a"]), mk("Mul", ["h", "a"], ["y"])]
    if kind == "gelu_tanh":
        return [mk("Pow", ["p", _c(inits, "three", 3.0)], ["p3"]),
                mk("Mul", ["p3", _c(inits, "k", 0.044715)], ["q"]), mk("Add", ["p", "q"], ["s"]),
                mk("Mul", ["s", _c(inits, "c", math.sqrt(2 / math.pi))], ["u"]), mk("Tanh", ["u"], ["t"]),
                mk("Add", ["t", _c(inits, "one", 1.0)], ["a"]), mk("Mul", ["p", "a"], ["m"]),
                mk("Mul", ["m", _c(inits, "half", 0.5)], ["y"])]
    raise AssertionError(kind)


COMPOSITES = {"silu": "SiLU", "silu_swapped": "SiLU", "hardswish_hardsigmoid": "HardSwish",
              "hardswish_clip": "HardSwish", "mish": "Mish", "gelu_div": "Gelu", "gelu_half_first": "Gelu",
              "gelu_tanh": "Gelu"}


@pytest.mark.parametrize("producer", ["conv", "gemm"])
@pytest.mark.parametrize("kind", list(COMPOSITES))
def test_composite_activation_fuses(kind: str, producer: str) -> None:
    rng = np.random.default_rng(len(kind))
    inits: dict = {}
    if producer == "conv":
        x = rng.standard_normal((1, 4, 7, 9)).astype(np.float32)
        inits.update(w=(rng.standard_normal((8, 4, 1, 1)) * 2).astype(np.float32),
                     b=rng.standard_normal(8).astype(np.float32))
        head = [helper.make_node("Conv", ["x", "w", "b"], ["p"], kernel_shape=[1, 1])]
    else:
        x = rng.standard_normal((3, 10)).astype(np.float32)
        inits.update(w=(rng.standard_normal((10, 24)) * 2).astype(np.float32),
                     b=rng.standard_normal(24).astype(np.float32))
        head = [helper.make_node("Gemm", ["x", "w", "b"], ["p"])]
    model = _model(head + _composite(kind, inits), x.shape, inits, ["y"])
    fused = cnnjit.compile(model, vector_width=8)
    nodes = fused.ir.nodes
    assert [n.op for n in nodes] == [head[0].op_type], [n.op for n in nodes]
    post = nodes[0].attrs["post"]
    assert [s.op for s in post] == [COMPOSITES[kind]]
    if kind == "gelu_tanh":
        assert dict(post[0].attrs)["approximate"] == "tanh"
    assert_in_registers(fused, head[0].op_type, 8)
    want = _ort(model, x)[0]
    np.testing.assert_allclose(fused(x), want, rtol=1e-4, atol=1e-5)
    if producer == "conv":  # the unfused graph (each node its own kernel) agrees too
        np.testing.assert_allclose(cnnjit.compile(model, fuse=False)(x), want, rtol=1e-4, atol=1e-5)


def test_composite_not_fused_when_it_is_another_function() -> None:
    """x * HardSigmoid(x) with the default alpha 0.2 is not HardSwish; a middle value read elsewhere
    blocks the group."""
    rng = np.random.default_rng(0)
    x = rng.standard_normal((1, 4, 5, 5)).astype(np.float32)
    inits = {"w": rng.standard_normal((4, 4, 1, 1)).astype(np.float32)}
    mk = helper.make_node
    conv = mk("Conv", ["x", "w"], ["p"], kernel_shape=[1, 1])
    other = _model([conv, mk("HardSigmoid", ["p"], ["s"]), mk("Mul", ["p", "s"], ["y"])], x.shape, inits, ["y"])
    shared = _model([conv, mk("Sigmoid", ["p"], ["s"]), mk("Mul", ["p", "s"], ["y"])], x.shape, inits, ["y", "s"])
    for model in (other, shared):
        m = cnnjit.compile(model)
        assert "Mul" in [n.op for n in m.ir.nodes]
        got_all = m(x)
        for got, want in zip([got_all] if isinstance(got_all, np.ndarray) else got_all, _ort(model, x)):
            np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)


# -- standalone kernels ----------------------------------------------------------------------------------
UNARY = [("Sigmoid", {}), ("Tanh", {}), ("Exp", {}), ("Erf", {}), ("Gelu", {}), ("Mish", {}), ("Softplus", {}),
         ("HardSwish", {}), ("Elu", {"alpha": 1.3}), ("LeakyRelu", {"alpha": 3.0}), ("Neg", {})]


@pytest.mark.parametrize("width", WIDTHS)
@settings(max_examples=3, deadline=None)
@given(n=st.integers(1, 300), scale=st.sampled_from([0.5, 4.0, 30.0]), seed=st.integers(0, 2 ** 16))
def test_unary_kernels_vectorised(width: int, n: int, scale: float, seed: int) -> None:
    x = (np.random.default_rng(seed).standard_normal((1, n)) * scale).astype(np.float32)
    nodes = [helper.make_node(op, ["x"], [f"y{i}"], **attrs) for i, (op, attrs) in enumerate(UNARY)]
    model = _model(nodes, x.shape, {}, [f"y{i}" for i in range(len(UNARY))])
    compiled = cnnjit.compile(model, vector_width=width)
    assert {c.variant for c in compiled._default_spec().program.calls} == {"simd_unary"}
    for (op, _), got, want in zip(UNARY, compiled(x), _ort(model, x)):
        scale_ = max(1.0, float(np.abs(want).max()))
        np.testing.assert_allclose(got, want, rtol=2e-6 if op != "Exp" else 1e-5, atol=1e-6 * scale_, err_msg=op)


@pytest.mark.parametrize("width", WIDTHS)
@settings(max_examples=8, deadline=None)
@given(shape=st.lists(st.integers(1, 40), min_size=1, max_size=3), axis=st.integers(-3, 2),
       log=st.booleans(), scale=st.sampled_from([1.0, 30.0]), seed=st.integers(0, 2 ** 16))
def test_softmax_vectorised(width: int, shape: list[int], axis: int, log: bool, scale: float, seed: int) -> None:
    axis = axis % len(shape)
    x = (np.random.default_rng(seed).standard_normal(shape) * scale).astype(np.float32)
    op = "LogSoftmax" if log else "Softmax"
    model = _model([helper.make_node(op, ["x"], ["y"], axis=axis)], x.shape, {}, ["y"])
    compiled = cnnjit.compile(model, vector_width=width)
    assert {c.variant for c in compiled._default_spec().program.calls} == {"simd_softmax"}
    want = _ort(model, x)[0]
    np.testing.assert_allclose(compiled(x), want, rtol=1e-5, atol=1e-6 * max(1.0, float(np.abs(want).max())))


NARY_REFS = {"Add": np.add, "Sub": np.subtract, "Mul": np.multiply, "Div": np.divide, "Max": np.maximum,
             "Min": np.minimum, "PRelu": lambda a, b: np.where(a >= 0, a, a * b), "Mean": lambda a, b: (a + b) / 2}


@st.composite
def nary_cases(draw):
    """Two operands broadcasting against each other: each axis of the second is the first's or 1, and the
    second may have fewer axes."""
    shape = draw(st.lists(st.integers(1, 19), min_size=1, max_size=4))
    other = [d if draw(st.booleans()) else 1 for d in shape][draw(st.integers(0, len(shape) - 1)):]
    return draw(st.sampled_from(sorted(NARY_REFS))), shape, other or [1]


@pytest.mark.parametrize("width", WIDTHS)
@settings(max_examples=8, deadline=None)
@given(case=nary_cases(), seed=st.integers(0, 2 ** 16))
def test_nary_kernels_vectorised(width: int, case, seed: int) -> None:
    """Broadcasting arithmetic against numpy: the vector variant runs whenever the last collapsed axis
    is long and walked contiguously or broadcast by every operand (always for a per-channel operand)."""
    op, shape, other = case
    rng = np.random.default_rng(seed)
    x = rng.standard_normal(shape).astype(np.float32)
    b = rng.standard_normal(other).astype(np.float32) + (4.0 if op == "Div" else 0.0)
    model = _model([helper.make_node(op, ["x", "b"], ["y"])], x.shape, {"b": b}, ["y"], opset=13)
    compiled = cnnjit.compile(model, vector_width=width)
    ran = {c.variant for c in compiled._default_spec().program.calls if c.op == op}
    if other == [1] * len(other) and x.size >= 4:
        assert ran == {"simd_nary"}  # a scalar operand: one contiguous axis, always the vector variant
    assert ran <= {"simd_nary", "nary"}
    np.testing.assert_allclose(compiled(x), NARY_REFS[op](x, b), rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("op, a, b", [("Mul", (1, 16, 7, 9), (1, 16, 1, 1)), ("Add", (2, 5, 33), (33,)),
                                      ("PRelu", (1, 6, 5, 7), (6, 1, 1)), ("Sub", (3, 1, 20), (1, 4, 20))])
def test_nary_vector_variant_cases(op: str, a: tuple, b: tuple) -> None:
    """Per-channel scale (squeeze-excite), bias over the last axis, per-channel PRelu slope, two-sided
    broadcast: on the vector variant, matching onnxruntime."""
    rng = np.random.default_rng(1)
    x = rng.standard_normal(a).astype(np.float32)
    model = _model([helper.make_node(op, ["x", "b"], ["y"])], a, {"b": rng.standard_normal(b).astype(np.float32)},
                   ["y"], opset=13)
    compiled = cnnjit.compile(model, vector_width=8)
    assert {c.variant for c in compiled._default_spec().program.calls} == {"simd_nary"}
    np.testing.assert_allclose(compiled(x), _ort(model, x)[0], rtol=1e-6, atol=1e-6)


def test_scale_shift_around_activation_fuses() -> None:
    """PP-LCNetV3's learnable affine block: conv, ``* s + b``, an exported HardSwish, ``* s2 + b2`` (and a
    ``c - y`` / ``y / c``). Straight after the conv, ``* s`` folds into its weights and ``+ b`` into its bias
    (``fold_batchnorm``): one conv with HardSwish, ScaleShift in registers. After an epilogue the conv already
    has (a Relu), the weights cannot take it: Relu, ScaleShift, HardSwish, ScaleShift in registers."""
    rng = np.random.default_rng(3)
    x = rng.standard_normal((1, 4, 6, 10)).astype(np.float32)
    mk = helper.make_node
    for lead, want in (([], ["HardSwish", "ScaleShift"]), ([mk("Relu", ["c0"], ["r0"])],
                                                           ["Relu", "ScaleShift", "HardSwish", "ScaleShift"])):
        inits = {"w": rng.standard_normal((8, 4, 1, 1)).astype(np.float32)}
        nodes = [mk("Conv", ["x", "w"], ["c0"], kernel_shape=[1, 1]), *lead,
                 mk("Mul", [_c(inits, "s1", 1.7), "r0" if lead else "c0"], ["c1"]),
                 mk("Add", ["c1", _c(inits, "b1", -0.3)], ["p"])]
        nodes += _composite("hardswish_clip", inits)
        nodes += [mk("Sub", [_c(inits, "s2", 0.5), "y"], ["z1"]), mk("Div", ["z1", _c(inits, "d", 3.0)], ["z"])]
        model = _model(nodes, x.shape, inits, ["z"])
        compiled = cnnjit.compile(model, vector_width=8)
        (conv,) = compiled.ir.nodes
        assert [s.op for s in conv.attrs["post"]] == want
        assert_in_registers(compiled, "Conv", 8)
        np.testing.assert_allclose(compiled(x), _ort(model, x)[0], rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("width", [4, 8, 16])
def test_max_min_with_a_constant_fuse_as_clip(width: int) -> None:
    """tf2onnx's ``tf.math.maximum(LeakyRelu(conv), c)`` (openWakeWord's embedding model) and a ``Min`` with
    the constant first: Clip steps after the LeakyRelu, in registers (a separate pass over the output each)."""
    rng = np.random.default_rng(5)
    x = rng.standard_normal((1, 3, 5, 19)).astype(np.float32)
    inits = {"w": rng.standard_normal((8, 3, 3, 3)).astype(np.float32)}
    mk = helper.make_node
    nodes = [mk("Conv", ["x", "w"], ["c0"], kernel_shape=[3, 3], pads=[1] * 4),
             mk("LeakyRelu", ["c0"], ["c1"], alpha=0.2), mk("Max", ["c1", _c(inits, "lo", -0.1)], ["c2"]),
             mk("Min", [_c(inits, "hi", 2.5), "c2"], ["y"])]
    model = _model(nodes, x.shape, inits, ["y"])
    compiled = cnnjit.compile(model, vector_width=width)
    (conv,) = compiled.ir.nodes
    assert [s.op for s in conv.attrs["post"]] == ["LeakyRelu", "Clip", "Clip"]
    assert_in_registers(compiled, "Conv", width)
    want = _ort(model, x)[0]
    assert (want == np.float32(-0.1)).any() and (want == np.float32(2.5)).any()  # both bounds bite
    np.testing.assert_allclose(compiled(x), want, rtol=1e-5, atol=1e-5)


def test_prelu_with_one_slope_fuses() -> None:
    """A PRelu whose slope is one constant (any sign and size) becomes the conv's LeakyRelu step."""
    rng = np.random.default_rng(4)
    x = rng.standard_normal((1, 3, 5, 17)).astype(np.float32)
    inits = {"w": rng.standard_normal((6, 3, 3, 3)).astype(np.float32), "a": np.full((1, 1, 1), -1.5, np.float32)}
    model = _model([helper.make_node("Conv", ["x", "w"], ["p"], kernel_shape=[3, 3], pads=[1] * 4),
                    helper.make_node("PRelu", ["p", "a"], ["y"])], x.shape, inits, ["y"])
    compiled = cnnjit.compile(model, vector_width=4)
    (conv,) = compiled.ir.nodes
    assert [s.op for s in conv.attrs["post"]] == ["LeakyRelu"]
    assert_in_registers(compiled, "Conv", 4)
    np.testing.assert_allclose(compiled(x), _ort(model, x)[0], rtol=1e-5, atol=1e-5)


def _affine_branches(kind: str, rng, n: int = 3) -> tuple:
    """``n`` producers of one shape reading x, each with its own learnable affine block around a HardSwish
    (``* s + b``, HardSwish, ``* s2 + b2``, as PP-LCNetV3): (model, x, producer op, the constants). A Conv's
    block starts after a Relu (a ``* s`` straight after a Conv folds into its weights: ``fold_batchnorm``)."""
    model, x, op = _branches(kind, rng)
    nodes, inits = list(model.graph.node), {t.name: numpy_helper.to_array(t) for t in model.graph.initializer}
    mk = helper.make_node
    keep = [nd for nd in nodes if not nd.output[0].startswith("y")][: (n + 1 if kind == "gemm" else n)]
    consts, outs = [], []
    for i in range(n):
        s1, b1, s2, b2 = (float(v) for v in rng.uniform(0.5, 2.0, 4) * rng.choice([-1, 1], 4))
        consts += [s1, b1, s2, b2]
        if kind != "gemm":
            keep.append(mk("Relu", [f"p{i}"], [f"r{i}"]))
        keep += [mk("Mul", [f"r{i}" if kind != "gemm" else f"p{i}", _c(inits, f"s1_{i}", s1)], [f"m{i}"]),
                 mk("Add", [f"m{i}", _c(inits, f"b1_{i}", b1)], [f"a{i}"]),
                 mk("HardSwish", [f"a{i}"], [f"h{i}"]),
                 mk("Mul", [f"h{i}", _c(inits, f"s2_{i}", s2)], [f"n{i}"]),
                 mk("Add", [f"n{i}", _c(inits, f"b2_{i}", b2)], [f"y{i}"])]
        outs.append(f"y{i}")
    used = {name for nd in keep for name in nd.input}
    return _model(keep, x.shape, {k: v for k, v in inits.items() if k in used}, outs), x, op, consts


@pytest.mark.parametrize("kind, width", FAMILY_WIDTHS)
def test_scale_shift_constants_are_kernel_arguments(kind: str, width: int) -> None:
    """Layers of one shape whose learnable affine blocks differ share one kernel (one cold compile, not one
    each): the ScaleShift constants are arguments, not literals of the source; each layer gets its own."""
    model, x, op, consts = _affine_branches(kind, np.random.default_rng(100 + width))
    compiled = cnnjit.compile(model, vector_width=width)
    prog = compiled._default_spec().program
    calls = [c for c in prog.calls if c.op == op]
    want = ["Relu"] * (op == "Conv") + ["ScaleShift", "HardSwish", "ScaleShift"]
    assert len(calls) == 3 and all([s.op for s in c.node.attrs["post"]] == want for c in calls)
    assert len({c.kernel for c in calls}) == 1, [c.variant for c in calls]
    assert_in_registers(compiled, op, width)
    src = prog.kernel_sources[calls[0].kernel]
    assert not any(repr(float(np.float32(v))) in src or repr(v) in src for v in consts)
    for got, ref in zip(compiled(x), _ort(model, x)):
        np.testing.assert_allclose(got, ref, rtol=1e-4, atol=1e-4 * max(1.0, float(np.abs(ref).max())))
