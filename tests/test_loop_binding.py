"""A loop body's segments bound for one run of the loop (``runtime.control.SegmentSession``,
``runtime.model.BoundCaller``, ``keep_inputs``).

* ``BoundCaller`` on a program compiled with ``keep_inputs``: an input passed again as the same array is not
  copied in again (shown by overwriting its place in the arena between calls: the next call computes from
  what is there), a new array is; without ``keep_inputs`` every call copies. Oracle: numpy, written apart.
* The memory plan with ``keep_inputs``: no other value and no scratch is ever placed over an input.
* A decoder-like loop against onnxruntime whose body reads a loop-invariant outer value late (after values
  that would reuse its place), a carried buffer read by a by-value ``Slice`` and rewritten by
  ``ScatterElements`` in the same iteration, a carried value read as the old value after its successor is
  computed (swapped into another carried value), a carried value read only for its shape, and a ``Tile``
  whose repeats come from a ``Shape`` (compiled, not a by-value run).
"""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from conftest import assert_outputs_match, ort_session
from onnx import TensorProto, helper, numpy_helper

import cnnjit
from cnnjit.compiler.codegen.emit import call_inplace, call_scratch, lower
from cnnjit.compiler.codegen.memory import plan_memory
from cnnjit.runtime import control

F, I64, B = TensorProto.FLOAT, TensorProto.INT64, TensorProto.BOOL


def _vi(name: str, elem: int = F, shape: list | None = None) -> onnx.ValueInfoProto:
    return helper.make_tensor_value_info(name, elem, shape)


def _model(nodes: list, inputs: list, outputs: list, inits: list = ()) -> onnx.ModelProto:
    m = helper.make_model(helper.make_graph(nodes, "g", inputs, outputs, list(inits)),
                          opset_imports=[helper.make_opsetid("", 17)])
    m.ir_version = 8
    return m


def _two_input_model() -> onnx.ModelProto:
    """``y = tanh(a @ b) * 2 + a @ b`` with ``a`` read again at the end (after intermediates)."""
    return _model([helper.make_node("MatMul", ["a", "b"], ["p"]), helper.make_node("Tanh", ["p"], ["t"]),
                   helper.make_node("Add", ["t", "t"], ["t2"]), helper.make_node("Add", ["t2", "p"], ["q"]),
                   helper.make_node("Mul", ["q", "a"], ["y"])],
                  [_vi("a", F, [8, 8]), _vi("b", F, [8, 8])], [_vi("y", F, [8, 8])])


def _reference(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    p = a.astype(np.float64) @ b
    return (np.tanh(p) * 2 + p) * a


@pytest.mark.parametrize("keep", [True, False])
def test_bound_caller_copies_an_unchanged_input_once(keep: bool) -> None:
    rng = np.random.default_rng(0)
    a, b1, b2 = (rng.standard_normal((8, 8)).astype(np.float32) for _ in range(3))
    spec = cnnjit.compile(_two_input_model(), threads=1, keep_inputs=keep)._last
    assert spec.program.meta["inputs_kept"] is keep
    bound = spec.bind(["a", "b"])
    try:
        np.testing.assert_allclose(bound([a, b1])[0], _reference(a, b1), rtol=1e-5, atol=1e-5)
        place = dict(bound.bufs.ins)["a"]
        place[...] = 0.5  # what a skipped copy leaves the next call to read
        got = bound([a, b2])[0]  # the same array object
        np.testing.assert_allclose(got, _reference(np.full_like(a, 0.5) if keep else a, b2), rtol=1e-5, atol=1e-5)
        np.testing.assert_allclose(bound([a.copy(), b2])[0], _reference(a, b2), rtol=1e-5, atol=1e-5)
    finally:
        bound.close()
    assert any(p is bound.bufs for p in spec._pool)  # the arena set went back to the pool


def test_kept_inputs_are_never_overwritten() -> None:
    """With ``keep_inputs`` no value (other than the input's views) and no scratch overlaps an input's place."""
    spec = cnnjit.compile(_two_input_model(), threads=1, keep_inputs=True)._last
    g = spec.graph
    lowered, _ = lower(g, cnnjit.compiler.stages.CompileOptions().host_target())
    plan = plan_memory(g, call_scratch(g, lowered), inplace=call_inplace(g, lowered), keep_inputs=True)
    viewed = {n.outputs[0].id for n in g.nodes if n.inputs and n.inputs[0] in g.inputs and n.op == "Reshape"}
    for x in g.inputs:
        s = plan.slot(x)
        lo, hi = s.offset, s.offset + x.type.size
        others = [(plan.slot(v), v.type.size) for v in g.values()
                  if not v.is_const and v is not x and v.id not in viewed]
        others += [(slot, sc.elems) for sc, slot in plan.scratch.items()]
        for slot, size in others:
            if slot.kind == s.kind and slot.dtype == s.dtype:
                assert slot.offset >= hi or slot.offset + size <= lo, f"{x.name} is overwritten"


# -- a decoder-like loop against onnxruntime ---------------------------------------------------------------
N, D, S = 6, 16, 5  # rows of the carried buffer, width, encoder positions


def _decoder() -> onnx.ModelProto:
    c = [numpy_helper.from_array(np.array(v, np.int64), k) for k, v in
         (("one", [1]), ("ax1", [1]), ("one_s", 1), ("shape_r", [1, 1, 1]), ("zero", [0]), ("two", [2]),
          ("three", [3]), ("row_shape", [1, 1, D]))]
    body = helper.make_graph([
        # attention over the outer value ``enc`` (read first and again after the Softmax)
        helper.make_node("Transpose", ["enc"], ["encT"], perm=[1, 0]),
        helper.make_node("MatMul", ["h", "encT"], ["s"]), helper.make_node("Softmax", ["s"], ["p"], axis=-1),
        helper.make_node("MatMul", ["p", "enc"], ["ctx"]),
        helper.make_node("Add", ["ctx", "g"], ["pre"]), helper.make_node("Tanh", ["pre"], ["h2"]),   # [1, D]
        # the row written this iteration: i .. min(i + 1, rows) (``buf``'s shape only, then a by-value Slice)
        helper.make_node("Add", ["i1", "one"], ["e1"]), helper.make_node("Shape", ["buf"], ["bs"]),
        helper.make_node("Gather", ["bs", "ax1"], ["rows"], axis=0), helper.make_node("Min", ["e1", "rows"], ["e"]),
        helper.make_node("Slice", ["buf", "i1", "e", "ax1"], ["row"]),                           # [1, 1, D]
        helper.make_node("Reshape", ["h2", "row_shape"], ["h3"]), helper.make_node("Add", ["h3", "row"], ["upd"]),
        helper.make_node("Squeeze", ["i1"], ["i0"]), helper.make_node("Squeeze", ["e"], ["e0"]),
        helper.make_node("Range", ["i0", "e0", "one_s"], ["r"]),
        helper.make_node("Reshape", ["r", "shape_r"], ["r3"]),
        # the Tile's repeats from the row's shape (as PaddlePaddle writes it): compiled, not per iteration
        helper.make_node("Shape", ["row"], ["rs"]), helper.make_node("Slice", ["rs", "zero", "one"], ["rs0"]),
        helper.make_node("Slice", ["rs", "two", "three"], ["rs2"]),
        helper.make_node("Concat", ["rs0", "one", "rs2"], ["rep"], axis=0),
        helper.make_node("Tile", ["r3", "rep"], ["idx"]),
        helper.make_node("ScatterElements", ["buf", "idx", "upd"], ["buf2"], axis=1),
        helper.make_node("Identity", ["h"], ["g2"]),  # the old h, carried on as g
        helper.make_node("Identity", ["cond"], ["go"]), helper.make_node("Identity", ["e1"], ["i2"]),
        helper.make_node("Identity", ["h2"], ["h_scan"])],
        "body", [_vi("i", I64, []), _vi("cond", B, []), _vi("i1", I64, [1]), _vi("h", F, [1, D]),
                 _vi("g", F, [1, D]), _vi("buf", F, [1, N, D])],
        [_vi("go", B, []), _vi("i2", I64, [1]), _vi("h2", F, [1, D]), _vi("g2", F, [1, D]),
         _vi("buf2", F, [1, N, D]), _vi("h_scan", F, [1, D])], c)
    return _model([helper.make_node("Relu", ["enc_in"], ["enc"]),
                   helper.make_node("Loop", ["n", "", "i_0", "h0", "g0", "b0"],
                                    ["i_n", "h_n", "g_n", "b_n", "hs"], body=body)],
                  [_vi("n", I64, []), _vi("enc_in", F, [S, D]), _vi("i_0", I64, [1]), _vi("h0", F, [1, D]),
                   _vi("g0", F, [1, D]), _vi("b0", F, [1, N, D])],
                  [_vi("i_n", I64, None), _vi("h_n", F, None), _vi("g_n", F, None), _vi("b_n", F, None),
                   _vi("hs", F, None)])


def test_bound_loop_body_matches_onnxruntime(monkeypatch) -> None:
    from cnnjit.runtime.model import BoundCaller

    bound: list[tuple[BoundCaller, object]] = []  # each held caller and the arena set it held
    plain_init = BoundCaller.__init__

    def init(self, spec, names) -> None:  # noqa: ANN001 - BoundCaller's own
        plain_init(self, spec, names)
        bound.append((self, self.bufs))

    monkeypatch.setattr(BoundCaller, "__init__", init)
    model = _decoder()
    rng = np.random.default_rng(5)
    feeds = {"enc_in": rng.standard_normal((S, D)).astype(np.float32), "i_0": np.array([0], np.int64),
             "h0": rng.standard_normal((1, D)).astype(np.float32),
             "g0": rng.standard_normal((1, D)).astype(np.float32),
             "b0": rng.standard_normal((1, N, D)).astype(np.float32)}
    compiled = cnnjit.compile(model, threads=1)
    sess = ort_session(model)
    for trips in (N, 3, N):  # every row, fewer, and again (a new loop run: its bindings start afresh)
        f = {**feeds, "n": np.array(trips, np.int64)}
        assert_outputs_match(compiled.run(None, f), sess.run(None, f), 1e-5, 1e-6, f"{trips} iterations")
    loop = next(s for s in compiled._last.block.steps if isinstance(s, control.LoopStep))
    segs = loop.body.steps
    numpy_runs = [s for s in segs if "numpy" in s.what]
    assert len(numpy_runs) == 1, [s.what for s in segs]  # Slice and Range only: the Tile is compiled
    compiled_segs = [s for s in segs if "numpy" not in s.what]
    for s in compiled_segs:
        ((_, runner),) = s._compiled.items()
        assert runner.spec is not None and runner.spec.program.meta["inputs_kept"], s.what
        # each loop run bound each compiled body segment (from its second iteration on)
        assert sum(b.spec is runner.spec for b, _ in bound) == 3, s.what
    assert all(b.call is None and any(p is held for p in b.spec._pool) for b, held in bound)  # released at the end
    first = next(s for s in compiled_segs if "enc" in s.inputs)  # the loop-invariant value reaches the body
    bindings = {b.name: b for b in next(iter(first._compiled.values())).spec.program.inputs}
    assert bindings["buf"].read is False  # read for its shape only: not copied in
    assert all(b.read for n, b in bindings.items() if n != "buf")


def test_bound_parallel_schedule_and_its_twin(monkeypatch) -> None:
    """A small parallel schedule with its serial twin binds both (``Chosen``): each call as the chooser
    picks, bit-identical to threads=1, both run, both arena sets go back to their pools."""
    from test_threads import block_model

    from cnnjit.compiler.codegen import threads
    from cnnjit.runtime.adaptive import WINDOW
    from cnnjit.runtime.model import Chosen

    proto = block_model(16)
    x = np.random.default_rng(3).standard_normal((1, 3, 16, 16)).astype(np.float32)
    monkeypatch.setattr(threads, "MIN_PARALLEL_TOTAL_US", 100.0)  # (as test_adaptive: this model is ~240)
    ref = cnnjit.compile(proto, threads=1).run(None, {"x": x})
    spec = cnnjit.compile(proto, threads=2, keep_inputs=True)._default_spec()
    assert spec.twin is not None and spec.program.meta["inputs_kept"] and spec.twin.program.meta["inputs_kept"]
    bound = spec.bind(["x"])
    assert isinstance(bound, Chosen)
    held = [b.bufs for b in bound.both]
    try:
        for _ in range(2 * WINDOW + 4):
            for a, b in zip(bound([x]), ref):
                np.testing.assert_array_equal(a, b)
    finally:
        bound.close()
    assert min(spec.chooser.share) > 0  # both schedules ran
    assert any(p is held[0] for p in spec._pool)
    assert any(p is held[1] for p in spec.twin._pool)
