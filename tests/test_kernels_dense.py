"""Property tests of the kernels without a spatial window, against the numpy references in ``reference_np.py``:
elementwise ops (binary and variadic, with broadcasting), unary activations, Clip, Gemm, MatMul, Softmax
(opsets 11 and 13), and elementwise chains that fusion groups. The machinery is in ``kernel_cases.py``.
"""

from __future__ import annotations

import math

import numpy as np
import reference_np as ref
from hypothesis import assume
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp
from kernel_cases import ATOL, Case, draw_rng, f32, kernel_test, make_model, normal, one_node_case, reference_test
from onnx import helper

# ---------------------------------------------------------------------------------------------
# Elementwise with broadcasting
# ---------------------------------------------------------------------------------------------

def _operand(rng, shape, op, position):
    if op == "Div" and position == 1:  # denominator: |v| in [0.5, 2], random sign
        mag = rng.uniform(0.5, 2.0, size=shape)
        return np.asarray(mag * rng.choice([-1.0, 1.0], size=shape), dtype=np.float32)
    v = normal(rng, shape, scale=2.0)
    if op in ("Max", "Min") and v.size > 1:
        # make ties between operands likely
        v.flat[:: 3] = np.round(v.flat[:: 3])
    return v


@st.composite
def binary_cases(draw):
    seed, rng = draw_rng(draw)
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


test_binary_broadcast = kernel_test(binary_cases(), 50)


@st.composite
def variadic_cases(draw):
    seed, rng = draw_rng(draw)
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


test_variadic_broadcast = kernel_test(variadic_cases(), 30)


# ---------------------------------------------------------------------------------------------
# Unary activations
# ---------------------------------------------------------------------------------------------

_SHAPES = hnp.array_shapes(min_dims=0, max_dims=4, min_side=1, max_side=6)


def _activation_input(rng, shape, kinks):
    """Normal data (scale 3) with some entries replaced by kink points (and neighbours) / big values."""
    x = normal(rng, shape, scale=3.0)
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
    seed, rng = draw_rng(draw)
    op = draw(st.sampled_from(["Relu", "LeakyRelu", "Sigmoid", "HardSigmoid", "HardSwish", "Tanh"]))
    shape = draw(_SHAPES)
    attrs = {}
    if op == "LeakyRelu":
        alpha = draw(st.sampled_from([None, 0.01, 0.1, 0.2, 1.5, -0.5]))
        if alpha is not None:
            attrs["alpha"] = alpha
        x = _activation_input(rng, shape, [0.0])
        expected = ref.leaky_relu(x, f32(0.01 if alpha is None else alpha))
    elif op == "HardSigmoid":
        alpha = draw(st.sampled_from([None, 0.2, 1 / 6, 0.5, 1.0]))
        beta = draw(st.sampled_from([None, 0.5, 0.25, 0.0]))
        a = f32(0.2 if alpha is None else alpha)
        bt = f32(0.5 if beta is None else beta)
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


test_activation = kernel_test(activation_cases(), 40)


@st.composite
def clip_cases(draw):
    seed, rng = draw_rng(draw)
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


test_clip = kernel_test(clip_cases(), 20)


# ---------------------------------------------------------------------------------------------
# small chains (exercise fusion: broadcasting inside fused groups, intermediates that are outputs)


# ---------------------------------------------------------------------------------------------

_CHAIN_UNARY = {
    "Relu": (ref.relu, {}),
    "Sigmoid": (ref.sigmoid, {}),
    "Tanh": (ref.tanh, {}),
    "HardSwish": (ref.hard_swish, {}),
    "LeakyRelu": (lambda v: ref.leaky_relu(v, f32(0.1)), {"alpha": 0.1}),
}
_CHAIN_BINARY = ["Add", "Sub", "Mul", "Max", "Min"]


@st.composite
def elementwise_chain_cases(draw):
    """x -> 2..5 elementwise steps (unary, or binary with a fresh broadcastable operand) -> y.

    Binary operands may broadcast *up* the running shape.  One intermediate is sometimes also a graph
    output (so a fused group must still materialise it).
    """
    seed, rng = draw_rng(draw)
    shape = draw(hnp.array_shapes(min_dims=0, max_dims=4, min_side=1, max_side=4))
    x = normal(rng, shape)
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
            operand = normal(rng, oshape)
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


test_elementwise_chain = kernel_test(elementwise_chain_cases(), 40)


# ---------------------------------------------------------------------------------------------
# Gemm / MatMul
# ---------------------------------------------------------------------------------------------

@st.composite
def gemm_cases(draw):
    seed, rng = draw_rng(draw)
    m, k, n = draw(st.integers(1, 7)), draw(st.integers(1, 9)), draw(st.integers(1, 7))
    trans_a, trans_b = draw(st.integers(0, 1)), draw(st.integers(0, 1))
    alpha = draw(st.sampled_from([None, 1.0, 0.5, -2.0, 0.0]))
    beta = draw(st.sampled_from([None, 1.0, 0.25, -1.5, 0.0]))
    c_kind = draw(st.sampled_from(["absent", "scalar", "one", "vector_n", "row", "column", "matrix"]))
    c_shape = {"absent": None, "scalar": (), "one": (1,), "vector_n": (n,), "row": (1, n),
               "column": (m, 1), "matrix": (m, n)}[c_kind]
    b_const = draw(st.booleans())
    c_const = draw(st.booleans())
    a = normal(rng, (k, m) if trans_a else (m, k))
    b = normal(rng, (n, k) if trans_b else (k, n))
    c = normal(rng, c_shape) if c_shape is not None else None
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


test_gemm = kernel_test(gemm_cases(), 30)


@st.composite
def matmul_cases(draw):
    seed, rng = draw_rng(draw)
    bs = draw(hnp.mutually_broadcastable_shapes(signature=np.matmul.signature, max_dims=3, min_side=1,
                                                max_side=6))
    sa, sb = bs.input_shapes
    a, b = normal(rng, sa), normal(rng, sb)
    b_const = draw(st.booleans())
    expected = ref.matmul(a, b)
    inputs, inits = {"a": a}, {}
    (inits if b_const else inputs)["b"] = b
    k = sa[-1]
    desc = f"MatMul a{sa} b{sb} -> {expected.shape} B={'const' if b_const else 'input'}"
    return one_node_case(desc, "MatMul", inputs, inits, ["a", "b"], expected,
                         atol=ATOL * max(1.0, math.sqrt(k)) * 2, seed=seed)


test_matmul = kernel_test(matmul_cases(), 30)


# ---------------------------------------------------------------------------------------------
# Softmax
# ---------------------------------------------------------------------------------------------

@st.composite
def softmax_cases(draw, opset=13):
    seed, rng = draw_rng(draw)
    shape = draw(hnp.array_shapes(min_dims=1, max_dims=4, min_side=1, max_side=6))
    r = len(shape)
    axis = draw(st.one_of(st.none(), st.integers(-r, r - 1)))
    scale = draw(st.sampled_from([1.0, 5.0, 40.0]))  # 40: large logits, exercises max-subtraction
    x = normal(rng, shape, scale=scale)
    if opset >= 13:
        expected = ref.softmax(x, axis=-1 if axis is None else axis)
    else:
        expected = ref.softmax_v11(x, axis=1 if axis is None else axis)
        assume(axis is not None or r >= 2)  # default axis=1 needs rank >= 2
    attrs = {} if axis is None else {"axis": axis}
    return one_node_case(f"Softmax(opset{opset}) shape={shape} axis={axis} scale={scale}", "Softmax",
                         {"x": x}, {}, ["x"], expected, attrs=attrs, opset=opset, seed=seed)


test_softmax_opset13 = kernel_test(softmax_cases(opset=13), 25)


test_softmax_opset11 = kernel_test(softmax_cases(opset=11), 20)


# ---------------------------------------------------------------------------------------------
# the oracle itself must agree with onnxruntime
# ---------------------------------------------------------------------------------------------

test_reference_matches_onnxruntime = reference_test({
    "binary": binary_cases(),
    "variadic": variadic_cases(),
    "activation": activation_cases(),
    "clip": clip_cases(),
    "elementwise_chain": elementwise_chain_cases(),
    "gemm": gemm_cases(),
    "matmul": matmul_cases(),
    "softmax13": softmax_cases(opset=13),
    "softmax11": softmax_cases(opset=11),
})
