"""Hypothesis property tests of the elementwise kernels (binary and variadic ops with broadcasting, unary
activations, Clip) and of elementwise chains that fusion groups, against numpy references.

The machinery (one-node models, settings, the comparison) is in ``kernel_cases.py``; the references are in
``reference_np.py``.
"""

from __future__ import annotations

import numpy as np
import pytest
import reference_np as ref
from hypothesis import assume, given
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp
from kernel_cases import (
    Case,
    check_cnnjit,
    check_reference,
    draw_rng,
    f32,
    kernel_settings,
    make_model,
    normal,
    one_node_case,
)
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


@kernel_settings(50)
@given(case=binary_cases())
def test_binary_broadcast(case):
    check_cnnjit(case)


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


@kernel_settings(30)
@given(case=variadic_cases())
def test_variadic_broadcast(case):
    check_cnnjit(case)


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


@kernel_settings(40)
@given(case=activation_cases())
def test_activation(case):
    check_cnnjit(case)


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


@kernel_settings(20)
@given(case=clip_cases())
def test_clip(case):
    check_cnnjit(case)


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


@kernel_settings(40)
@given(case=elementwise_chain_cases())
def test_elementwise_chain(case):
    check_cnnjit(case)


# ---------------------------------------------------------------------------------------------
# the oracle itself must agree with onnxruntime
# ---------------------------------------------------------------------------------------------

_FAMILIES = {
    "binary": binary_cases(),
    "variadic": variadic_cases(),
    "activation": activation_cases(),
    "clip": clip_cases(),
    "elementwise_chain": elementwise_chain_cases(),
}


@pytest.mark.parametrize("family", sorted(_FAMILIES))
@kernel_settings(15)
@given(data=st.data())
def test_reference_matches_onnxruntime(family, data):
    check_reference(data.draw(_FAMILIES[family], label="case"))
