"""IR ownership: Graph methods for constants and rewiring, passes that report what they changed, quantization
metadata in the IR (printed and linted), and ``fuse=False`` meaning no fusion of any kind.

Oracles: hand-counted changes of small graphs; the recorded integers dequantized again by the IR's own
DequantizeLinear reference; onnxruntime with graph optimisations off (the unfused float path of a QDQ model),
against which an unfused cnnjit compile must agree.
"""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

import cnnjit
from cnnjit.compiler.frontend.onnx_import import import_model
from cnnjit.compiler.passes import (
    DeadCode,
    FuseEpilogue,
    Pass,
    PassManager,
    PassResult,
    QDQToInteger,
    RemoveIdentity,
    default_pipeline,
    select_passes,
)
from cnnjit.ir import Graph, IRError, Node, TensorType, Value

SHARED = Path(os.environ.get("CNNJIT_SHARED", Path(__file__).resolve().parents[1].parent / "shared"))
TINY = SHARED / "models" / "mlperf-tiny"
#: ops only the fusion passes make (none may appear in an unfused compile)
FUSED_OPS = {"QConvNHWC", "QAdd", "QAvgPoolNHWC"}


def _conv_relu_graph() -> tuple[Graph, Node, Node]:
    g = Graph("t")
    x = g.add_input(TensorType(np.float32, (1, 2, 4, 4)), "x")
    w = g.const(np.ones((3, 2, 1, 1), np.float32))
    y = Value(TensorType(np.float32, (1, 3, 4, 4)))
    conv = g.add_node(Node("Conv", [x, w], [y], {"strides": [1, 1], "pads": [0, 0, 0, 0], "dilations": [1, 1],
                                                  "group": 1, "kernel_shape": [1, 1]}))
    z = Value(TensorType(np.float32, (1, 3, 4, 4)))
    relu = g.add_node(Node("Relu", [y], [z]))
    g.outputs = [z]
    g.lint()
    return g, conv, relu


def _qdq_conv_model() -> onnx.ModelProto:
    """x(u8) -> DQ -> Conv(DQ(w int8 per channel), DQ(b int32)) -> Relu -> Q(u8): one QConvNHWC when fused."""
    rng = np.random.default_rng(7)
    m, c = 6, 3
    w = rng.integers(-127, 128, size=(m, c, 3, 3)).astype(np.int8)
    ws = (rng.random(m) * 0.02 + 0.005).astype(np.float32)
    xs, ys = np.float32(0.05), np.float32(0.11)
    b = rng.integers(-300, 300, size=m).astype(np.int32)
    inits = [numpy_helper.from_array(a, n) for a, n in [
        (w, "w"), (ws, "ws"), (np.zeros(m, np.int8), "wz"), (np.array(xs), "xs"), (np.array(3, np.uint8), "xz"),
        (np.array(ys), "ys"), (np.array(5, np.uint8), "yz"), (b, "b"), ((xs * ws).astype(np.float32), "bs")]]
    nodes = [helper.make_node("DequantizeLinear", ["x", "xs", "xz"], ["xf"]),
             helper.make_node("DequantizeLinear", ["w", "ws", "wz"], ["wf"], axis=0),
             helper.make_node("DequantizeLinear", ["b", "bs"], ["bf"], axis=0),
             helper.make_node("Conv", ["xf", "wf", "bf"], ["c"], pads=[1, 1, 1, 1]),
             helper.make_node("Relu", ["c"], ["r"]),
             helper.make_node("QuantizeLinear", ["r", "ys", "yz"], ["y"])]
    graph = helper.make_graph(nodes, "qdq", [helper.make_tensor_value_info("x", TensorProto.UINT8, [1, c, 8, 8])],
                              [helper.make_tensor_value_info("y", TensorProto.UINT8, [1, m, 8, 8])], inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)], ir_version=8)


# -- Graph methods ----------------------------------------------------------------------------------------------
def test_const_is_a_contiguous_constant() -> None:
    a = np.arange(12, dtype=np.float32).reshape(3, 4).T  # not C-contiguous
    v = Graph.const(a, "w")
    assert v.is_const and v.const.flags.c_contiguous and v.type == TensorType(np.float32, (4, 3))
    np.testing.assert_array_equal(v.const, a)


def test_rewiring_keeps_users_consistent_and_lint_catches_a_stale_one() -> None:
    g, conv, _ = _conv_relu_graph()
    old_w = conv.inputs[1]
    b = g.const(np.zeros(3, np.float32))
    g.set_input(conv, 2, b)  # past the end: the gap would be filled with None
    new_w = g.const(np.full((3, 2, 1, 1), 2, np.float32))
    g.set_input(conv, 1, new_w)
    assert conv.inputs[2] is b and b.users == [conv] and new_w.users == [conv] and old_w.users == []
    g.lint()
    new_w.users.append(conv)  # a users list that no longer matches the node list
    with pytest.raises(IRError, match="users list"):
        g.lint()


def test_replacing_a_value_retargets_fused_residuals_and_lint_checks_them() -> None:
    """A Conv whose fused residual ``Add`` reads a value: ``replace_all_uses`` moves the input and the step
    together (``conv_columns`` replaced a column Conv's output under a later Conv's residual and left the step
    naming the old value: a ``CompileError`` at code generation), and ``lint`` names a step that disagrees."""
    from cnnjit.ir.ops import EpilogueStep

    g, conv, relu = _conv_relu_graph()
    x, y, z = conv.inputs[0], conv.outputs[0], relu.outputs[0]
    out = Value(TensorType(np.float32, (1, 3, 4, 4)))
    w = g.const(np.ones((3, 3, 1, 1), np.float32))
    second = g.add_node(Node("Conv", [z, w, None, z], [out], {**conv.attrs, "post": (EpilogueStep("Add", (), z),)}))
    g.outputs = [out]
    g.lint()
    moved = Value(TensorType(np.float32, (1, 3, 4, 4)))
    g.insert_before(second, Node("Sigmoid", [y], [moved]))
    g.replace_all_uses(z, moved)
    g.lint()
    assert second.inputs[0] is second.inputs[3] is second.attrs["post"][0].value is moved
    second.attrs["post"] = (EpilogueStep("Add", (), x),)
    with pytest.raises(IRError, match="Add step combines .* not its input 3"):
        g.lint()


def test_remove_node_refuses_a_used_output() -> None:
    g, conv, _ = _conv_relu_graph()
    with pytest.raises(IRError, match="still used"):
        g.remove_node(conv)


# -- passes report what they changed ----------------------------------------------------------------------------
def test_pass_result_counts_fusion() -> None:
    g, conv, relu = _conv_relu_graph()
    res = FuseEpilogue().run(g)
    # the Relu is gone, the Conv now computes it: one node removed, one rewritten, none added
    assert res == PassResult(added=0, removed=1, rewritten=1) and res
    assert g.nodes == [conv] and conv.meta["fused"] == ["Relu"]
    assert [(s.op, s.attrs, s.value) for s in conv.attrs["post"]] == [("Relu", (), None)]
    again = FuseEpilogue().run(g)
    assert again == PassResult() and not again


def test_pass_manager_report_lists_the_changes() -> None:
    g, _, _ = _conv_relu_graph()
    z = g.outputs[0]
    ident = Value(TensorType(np.float32, z.shape))
    g.add_node(Node("Identity", [z], [ident]))
    g.outputs = [ident]
    pm = PassManager([RemoveIdentity(), FuseEpilogue(), DeadCode()])
    pm.run(g)
    rows = {r.name: r for r in pm.records}
    assert rows["remove_identity"].result == PassResult(removed=1)
    assert rows["fuse_epilogue"].result == PassResult(removed=1, rewritten=1)
    assert not rows["dead_code"].changed
    lines = pm.report().splitlines()
    assert lines[0].split() == ["pass", "changed", "added", "removed", "rewritten", "ms", "nodes"]
    fe = next(ln.split() for ln in lines if ln.startswith("fuse_epilogue"))
    assert fe[1:5] == ["True", "0", "1", "1"] and fe[-1] == "2->1"


def test_post_condition_failure_names_the_pass() -> None:
    class Lazy(RemoveIdentity):
        def apply(self, graph: Graph) -> None:  # promises no Identity, removes none
            pass

    g, _, _ = _conv_relu_graph()
    z = g.outputs[0]
    ident = Value(TensorType(np.float32, z.shape))
    g.add_node(Node("Identity", [z], [ident]))
    g.outputs = [ident]
    with pytest.raises(IRError, match="after pass 'remove_identity'.*Identity"):
        PassManager([Lazy()]).run(g)


def test_a_pass_answering_a_bool_still_runs() -> None:
    class Old(Pass):
        name = "old"

        def run(self, graph: Graph) -> bool:  # the interface before PassResult
            return True

    g, _, _ = _conv_relu_graph()
    pm = PassManager([Old()])
    pm.run(g)
    assert pm.records[0].changed and "old" in pm.report()


# -- quantization metadata in the IR ----------------------------------------------------------------------------
def test_dequantized_constants_are_printed_and_linted() -> None:
    g = import_model(_qdq_conv_model(), {"x": (1, 3, 8, 8)})
    conv = next(n for n in g.nodes if n.op == "Conv")
    w, b = conv.inputs[1], conv.inputs[2]
    rw, rb = g.dequantized_origin(w), g.dequantized_origin(b)
    assert rw is not None and rw.q.dtype == np.int8 and rw.axis == 0 and rw.scale.shape == (6,)
    assert rb is not None and rb.q.dtype == np.int32 and rb.zero_point is None
    # an independent dequantization of the recorded integers gives the folded constant
    np.testing.assert_array_equal(w.const, (rw.q.astype(np.float32) * rw.scale.reshape(6, 1, 1, 1)))
    text = str(g)
    assert f"{w.ref()}: f32[6x3x3x3] = const  # = DequantizeLinear(i8[6x3x3x3], scale f32[6], zero point i8[6], " \
           "axis 0)" in text
    assert f"{b.ref()}: f32[6] = const  # = DequantizeLinear(i32[6], scale f32[6], axis 0)" in text
    g.lint()
    # a constant whose data no longer matches its integers is an IR error
    good = w.const
    bad = good.copy()
    bad[0, 0, 0, 0] += 1.0
    w.const = bad
    with pytest.raises(IRError, match="do not dequantize"):
        g.lint()
    w.const = good
    g.lint()
    # and so are integers recorded wrongly, or on a value that is not a constant
    g.record_dequantized(w, rw.q, rw.scale * 2, rw.zero_point, 0)
    with pytest.raises(IRError, match="do not dequantize"):
        g.lint()
    with pytest.raises(IRError, match="not a constant"):
        g.record_dequantized(g.inputs[0], rw.q, rw.scale, None, 0)


def test_qdq_to_integer_reads_the_metadata() -> None:
    g = import_model(_qdq_conv_model(), {"x": (1, 3, 8, 8)})
    PassManager([QDQToInteger(), DeadCode()]).run(g)
    assert "QConvNHWC" in {n.op for n in g.nodes}
    g2 = import_model(_qdq_conv_model(), {"x": (1, 3, 8, 8)})
    g2.dequantized.clear()  # without the integers the weights cannot be used exactly: the float path stays
    PassManager([QDQToInteger(), DeadCode()]).run(g2)
    assert "QConvNHWC" not in {n.op for n in g2.nodes} and "Conv" in {n.op for n in g2.nodes}


def test_tensor_type_has_no_layout_tag() -> None:
    assert [f.name for f in dataclasses.fields(TensorType)] == ["dtype", "shape"]


# -- fuse=False: no fusion of any kind --------------------------------------------------------------------------
def test_fuse_false_drops_every_fusion_pass() -> None:
    unfused = {p.name for p in select_passes(default_pipeline(), None, None, fuse=False)}
    fusing = {p.name for p in default_pipeline() if p.fusion}
    assert "qdq_to_integer" in fusing and "fuse_epilogue" in fusing
    # mixed_precision only marks the layers precision="bf16" keeps in fp32: it fuses nothing
    assert not unfused & fusing and unfused == {"remove_identity", "fold_constants", "dead_code", "mixed_precision"}


def _ort_unfused(model: onnx.ModelProto | str):
    ort = pytest.importorskip("onnxruntime")
    so = ort.SessionOptions()
    so.intra_op_num_threads = so.inter_op_num_threads = 1
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL  # the float path, as written
    data = model if isinstance(model, str) else model.SerializeToString()
    return ort.InferenceSession(data, so, providers=["CPUExecutionProvider"])


def _check_unfused(model: onnx.ModelProto | str, low: int, high: int, max_lsb: int, runs: int = 5) -> None:
    """Compile ``model`` with ``fuse=False``: no fused node, and onnxruntime's unfused float path computes the
    same on ``runs`` random integer inputs in ``[low, high)`` (within ``max_lsb``, all but one run exact)."""
    sess = _ort_unfused(model)
    inp = sess.get_inputs()[0]
    shape = [d if isinstance(d, int) else 1 for d in inp.shape]
    m = cnnjit.compile(model, fuse=False, input_shapes={inp.name: shape})
    ops = {n.op for n in m.ir.nodes}
    assert not ops & FUSED_OPS and {"QuantizeLinear", "DequantizeLinear"} <= ops, ops
    assert not any(n.meta.get("fused") or n.attrs.get("post") or n.meta.get("inplace") for n in m.ir.nodes)
    dtype = np.uint8 if low >= 0 else np.int8
    diffs = []
    for seed in range(runs):
        x = np.random.default_rng(seed).integers(low, high, size=shape).astype(dtype)
        want = sess.run(None, {inp.name: x})[0]
        diffs.append(int(np.abs(want.astype(np.int32) - m(x).astype(np.int32)).max()))
    # float summation order may move a value across a rounding boundary; measured: always exact (AVX-512 host)
    assert max(diffs) <= max_lsb and sum(d == 0 for d in diffs) >= runs - 1, diffs


def test_fuse_false_runs_a_qdq_model_in_float() -> None:
    model = _qdq_conv_model()
    assert "QConvNHWC" in {n.op for n in cnnjit.compile(model, entry="lazy").ir.nodes}  # the default fuses
    assert {"Conv", "Relu"} <= {n.op for n in cnnjit.compile(model, fuse=False, entry="lazy").ir.nodes}
    _check_unfused(model, 0, 256, max_lsb=0)


@pytest.mark.parametrize("name", ["kws_ref_model", "ad01_int8"])
def test_fuse_false_mlperf_int8_matches_onnxruntime_float_path(name: str) -> None:
    path = TINY / f"{name}.tf2onnx.onnx"
    if not path.is_file():
        pytest.skip(f"{path} not found (the shared MLPerf Tiny models live in <repo>/../shared)")
    _check_unfused(str(path), -128, 128, max_lsb=1)
