"""``BroadcastMap``: a binary op of two broadcasting tensors and the activations after it, one kernel.

* every vector width (4, 8, 16): random broadcast patterns of two operands of rank <= 4 (either may
  broadcast on any axis, one may have a lower rank or be a constant), each binary op, chains of one or two
  activations (transcendental and not), against a float64 numpy reference written here, the variant
  (``simd_broadcast_map``) asserted;
* the scalar variant (``broadcast_map``) where the contiguous output axis is shorter than a vector;
* the pass (``fuse_broadcast_map``): the chain becomes one call, and it stops at a value read elsewhere or
  returned; a producer's residual Add stays in the producer's epilogue.
"""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from kernel_cases import property_settings
from onnx import TensorProto, helper, numpy_helper

import cnnjit

WIDTHS = [4, 8, 16]
OPS = ["Add", "Sub", "Mul", "Div", "Max", "Min"]
#: float64 references of the activations, written apart from the kernels' formulas
ACTS = {
    "Tanh": np.tanh,
    "Sigmoid": lambda x: 0.5 * (1.0 + np.tanh(0.5 * x)),
    "Relu": lambda x: np.maximum(x, 0.0),
    "HardSwish": lambda x: x * np.clip(x / 6.0 + 0.5, 0.0, 1.0),
    "Exp": np.exp,
    "Abs": np.abs,
}
#: activation chains drawn (few distinct kernels: each compiles once per width)
CHAINS = [("Tanh",), ("Sigmoid",), ("Relu",), ("HardSwish",), ("Exp",), ("Abs", "Tanh")]
BINARY = {"Add": np.add, "Sub": np.subtract, "Mul": np.multiply, "Div": np.divide, "Max": np.maximum,
          "Min": np.minimum}


def chain_model(op: str, chain: tuple[str, ...], a_shape: tuple, b_shape: tuple,
                b_const: np.ndarray | None = None, outputs: tuple[str, ...] = ("y",)):
    """``chain(op(a, b))``; ``b`` an input, or an initializer when ``b_const`` is given; values ``s`` (the op's
    result), ``t0``.. (the activations'), the last named ``y``."""
    names = ["s"] + [f"t{i}" for i in range(len(chain) - 1)] + ["y"]
    nodes = [helper.make_node(op, ["a", "b"], [names[0]])]
    nodes += [helper.make_node(act, [names[i]], [names[i + 1]]) for i, act in enumerate(chain)]
    ins = [helper.make_tensor_value_info("a", TensorProto.FLOAT, list(a_shape))]
    inits = []
    if b_const is None:
        ins.append(helper.make_tensor_value_info("b", TensorProto.FLOAT, list(b_shape)))
    else:
        inits.append(numpy_helper.from_array(b_const, "b"))
    outs = [helper.make_tensor_value_info(o, TensorProto.FLOAT, None) for o in outputs]
    g = helper.make_graph(nodes, "m", ins, outs, inits)
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)


def reference(op: str, chain: tuple[str, ...], a: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(the chain in float64, the error scale: ``|a| + |b|`` times the chain's largest slope along it, + 1)."""
    x = BINARY[op](a.astype(np.float64), b.astype(np.float64))
    scale = np.abs(a.astype(np.float64)) + np.abs(b.astype(np.float64)) + 1.0
    if op == "Div":
        scale = scale / np.abs(b.astype(np.float64)) ** 2 * (1.0 + np.abs(b))
    for act in chain:
        y = ACTS[act](x)
        if act == "Exp":
            scale = scale * np.maximum(y, 1.0)
        x = y
    return x, scale


def variants_of(model) -> list[str]:
    return [c.variant for c in model._default_spec().program.calls]


@st.composite
def patterns(draw):
    """Output shape (rank 1-4, contiguous axis 4-37 long), and each operand's shape: the output's with
    axes set to 1 at random and leading axes dropped at random; ``b`` constant at times."""
    rank = draw(st.integers(1, 4))
    out = [draw(st.integers(1, 5)) for _ in range(rank - 1)] + [draw(st.integers(4, 37))]

    def operand():
        shape = [d if draw(st.booleans()) else 1 for d in out]
        return tuple(shape[draw(st.integers(0, rank - 1)):])

    a, b = operand(), operand()
    # at least one operand spans each output axis (else the output is smaller)
    full = (1,) * (rank - len(a)) + a
    a = tuple(o if f == 1 and ((1,) * (rank - len(b)) + b)[i] == 1 else f for i, (f, o) in enumerate(zip(full, out)))
    return dict(a=a, b=b, op=draw(st.sampled_from(OPS)), chain=draw(st.sampled_from(CHAINS)),
                const=draw(st.booleans()), seed=draw(st.integers(0, 2**16)))


def operands(case: dict) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(case["seed"])
    a = rng.standard_normal(case["a"]).astype(np.float32)
    b = rng.standard_normal(case["b"]).astype(np.float32)
    if case["op"] == "Div":  # away from 0
        b = (np.sign(b) * (0.5 + np.abs(b))).astype(np.float32)
    return a, b


def check(case: dict, width: int, variant: str) -> None:
    a, b = operands(case)
    model = chain_model(case["op"], case["chain"], a.shape, b.shape, b if case["const"] else None)
    compiled = cnnjit.compile(model, vector_width=width, threads=1, variants={"BroadcastMap": variant})
    assert variants_of(compiled) == [variant]
    got = compiled.run(None, {"a": a} if case["const"] else {"a": a, "b": b})[0]
    want, scale = reference(case["op"], case["chain"], a, b)
    assert got.shape == want.shape
    err = np.abs(got.astype(np.float64) - want)
    assert np.all(err <= 4e-7 * scale + 2.5e-7 * np.abs(want)), (err - 4e-7 * scale).max()


@pytest.mark.parametrize("width", WIDTHS)
@property_settings(max_examples=8)
@given(case=patterns())
def test_broadcast_map_at_width(width: int, case: dict) -> None:
    """The SIMD variant (forced, asserted) over every broadcast pattern, op and chain, within float32
    rounding of the float64 reference (the op's rounding carried through the chain's slope, and the
    activation's own 2 ulp)."""
    check(case, width, "simd_broadcast_map")


@pytest.mark.parametrize(("a", "b"), [((5, 3), (5, 1)), ((2, 3, 1), (1, 3, 3))])
def test_scalar_variant_short_rows(a: tuple, b: tuple) -> None:
    """A contiguous output axis of 3 (no vector to fill): the default is the scalar ``broadcast_map``,
    which is right too."""
    case = dict(a=a, b=b, op="Add", chain=("Tanh",), const=False, seed=1)
    model = chain_model("Add", ("Tanh",), a, b)
    assert variants_of(cnnjit.compile(model, threads=1)) == ["broadcast_map"]
    check(case, 8, "broadcast_map")


def test_fusion_chain_and_its_limits() -> None:
    """``Add -> Tanh -> Sigmoid`` is one ``BroadcastMap`` call with both steps; a result that is also a
    graph output ends the chain there (the ``Sigmoid`` stays its own call)."""
    one = cnnjit.compile(chain_model("Add", ("Tanh", "Sigmoid"), (1, 16, 1, 24), (1, 1, 7, 24)), threads=1)
    node = one.ir.nodes[0]
    assert [n.op for n in one.ir.nodes] == ["BroadcastMap"]
    assert node.attrs["op"] == "Add" and [s.op for s in node.attrs["post"]] == ["Tanh", "Sigmoid"]
    split = cnnjit.compile(chain_model("Add", ("Tanh", "Sigmoid"), (1, 16, 1, 24), (1, 1, 7, 24),
                                       outputs=("y", "t0")), threads=1)
    assert [n.op for n in split.ir.nodes] == ["BroadcastMap", "Sigmoid"]
    assert [s.op for s in split.ir.nodes[0].attrs["post"]] == ["Tanh"]
    rng = np.random.default_rng(0)
    a, b = rng.standard_normal((1, 16, 1, 24)).astype(np.float32), rng.standard_normal((1, 1, 7, 24)).astype(np.float32)
    y, t0 = split.run(["y", "t0"], {"a": a, "b": b})
    want = np.tanh(a.astype(np.float64) + b)
    np.testing.assert_allclose(t0, want, rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(y, ACTS["Sigmoid"](want), rtol=1e-6, atol=1e-6)


def test_producer_residual_stays_in_epilogue() -> None:
    """A MatMul's same-shape Add and Tanh stay in the MatMul's epilogue (``fuse_epilogue`` runs first); the
    broadcast Add after another MatMul becomes a ``BroadcastMap``."""
    rng = np.random.default_rng(0)
    w = rng.standard_normal((8, 8)).astype(np.float32)
    nodes = [helper.make_node("MatMul", ["a", "w"], ["m"]), helper.make_node("Add", ["m", "r"], ["s"]),
             helper.make_node("Tanh", ["s"], ["u"]), helper.make_node("MatMul", ["u", "w"], ["m2"]),
             helper.make_node("Add", ["m2", "q"], ["s2"]), helper.make_node("Tanh", ["s2"], ["y"])]
    g = helper.make_graph(nodes, "m", [helper.make_tensor_value_info(n, TensorProto.FLOAT, s) for n, s in
                                       (("a", [4, 8]), ("r", [4, 8]), ("q", [1, 3, 1, 8]))],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
                          [numpy_helper.from_array(w, "w")])
    model = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)
    compiled = cnnjit.compile(model, threads=1)
    assert [n.op for n in compiled.ir.nodes] == ["MatMul", "MatMul", "BroadcastMap"]
    assert [s.op for s in compiled.ir.nodes[0].attrs["post"]] == ["Add", "Tanh"]
    feeds = {"a": rng.standard_normal((4, 8)).astype(np.float32), "r": rng.standard_normal((4, 8)).astype(np.float32),
             "q": rng.standard_normal((1, 3, 1, 8)).astype(np.float32)}
    a64 = {k: v.astype(np.float64) for k, v in feeds.items()}
    want = np.tanh(np.tanh(a64["a"] @ w + a64["r"]) @ w + a64["q"])
    np.testing.assert_allclose(compiled.run(None, feeds)[0], want, rtol=1e-5, atol=1e-5)
