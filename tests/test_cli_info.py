"""``cnnjit info``, through the real console script: checked against onnx itself (inputs, outputs, op counts,
parameters), onnxruntime (output shapes) and ``cnnjit inspect --json`` (FLOPs at the same shape)."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper
from test_cli import assert_one_line_error, run_cli, run_cli_here

import cnnjit
import cnnjit.compiler.codegen.emit
import cnnjit.compiler.stages
from cnnjit.cli import main as cli_main
from cnnjit.cli.output import si


def _declared(vi: onnx.ValueInfoProto) -> list:
    """The oracle for a declared shape: dim_value, else dim_param, else None."""
    return [d.dim_value if d.HasField("dim_value") else (d.dim_param or None)
            for d in vi.type.tensor_type.shape.dim]


def _info(*args: str) -> dict:
    """``info --json``'s document, from ``cnnjit.cli.main`` in this process (the documents do not depend on
    the process; the console script's own runs are the tests' ``run_cli`` calls)."""
    r = run_cli_here("info", *args, "--json")
    assert r.returncode == 0, r.stderr
    return json.loads(r.stdout)


def _inspect_flops(*args: str) -> int:
    r = run_cli_here("inspect", *args, "--json")
    assert r.returncode == 0, r.stderr
    return json.loads(r.stdout)["totals"]["flops"]


def test_info_example_against_onnx_and_inspect() -> None:
    m = onnx.load(cnnjit.example_model())
    g = m.graph
    doc = _info("--example")
    assert doc["name"] == g.name and doc["producer"] == {"name": m.producer_name, "version": m.producer_version}
    assert doc["opsets"] == {imp.domain or "ai.onnx": imp.version for imp in m.opset_import}
    inits = {t.name for t in g.initializer}
    real_inputs = [vi for vi in g.input if vi.name not in inits]
    assert [(i["name"], i["shape"]) for i in doc["inputs"]] == [(vi.name, _declared(vi)) for vi in real_inputs]
    assert [(o["name"], o["shape"]) for o in doc["outputs"]] == [(vi.name, _declared(vi)) for vi in g.output]
    assert all(i["dtype"] == "float32" for i in doc["inputs"] + doc["outputs"])
    assert doc["nodes"] == len(g.node) and doc["op_counts"] == dict(Counter(n.op_type for n in g.node))
    assert doc["params"] == doc["initializer_params"] == sum(numpy_helper.to_array(t).size for t in g.initializer)
    assert doc["initializers"] == len(g.initializer) and doc["constant_params"] == 0
    assert doc["supported"] and doc["unsupported"] == [] and doc["value_inputs"] == []
    # the symbolic batch is set to 1, and the note says so by its name
    assert doc["shapes"] == {"input_1": [1, 49, 10, 1]}
    assert any("'unk__122'" in n and "set to 1" in n for n in doc["notes"])
    assert doc["flops"] == _inspect_flops("--example") > 0
    # at another shape: FLOPs as inspect counts them there, output shapes as onnxruntime computes them
    doc2 = _info("--example", "--shape", "input_1=3,49,10,1")
    assert doc2["notes"] == [] and doc2["shapes"] == {"input_1": [3, 49, 10, 1]}
    assert doc2["flops"] == _inspect_flops("--example", "--shape", "input_1=3,49,10,1") == 3 * doc["flops"]
    sess = ort.InferenceSession(cnnjit.example_model(), providers=["CPUExecutionProvider"])
    ys = sess.run(None, {"input_1": np.zeros((3, 49, 10, 1), np.float32)})
    assert [o["shape_at"] for o in doc2["outputs"]] == [list(y.shape) for y in ys]


def test_info_example_table() -> None:
    doc = _info("--example")
    r = run_cli("info", "--example")
    assert r.returncode == 0, r.stderr
    assert "note: symbolic dimension 'unk__122' of input 'input_1' set to 1" in r.stderr
    out = r.stdout
    assert "input_1" in out and "[unk__122, 49, 10, 1]" in out and "1x49x10x1" in out
    assert f"{doc['nodes']} nodes: " in out and all(f"{op} {n}" in out for op, n in doc["op_counts"].items())
    assert f"parameters: {doc['params']:,} " in out
    assert f"FLOPs: {si(doc['flops'], 'FLOP')} per run at input_1=1x49x10x1" in out
    assert "unsupported ops: none" in out


def test_info_compiles_nothing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture
                               ) -> None:
    """No code generation (in process: generate() raises) and no kernel written to the cache (console script)."""
    def refuse(*a: object, **k: object) -> None:
        raise AssertionError("cnnjit info generated code")

    monkeypatch.setattr(cnnjit.compiler.stages, "generate", refuse)
    monkeypatch.setattr(cnnjit.compiler.codegen.emit, "generate", refuse)
    assert cli_main(["info", "--example", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["flops"] > 0
    cache = tmp_path / "cache"
    r = run_cli("info", "--example", env={"CNNJIT_CACHE_DIR": str(cache)})
    assert r.returncode == 0, r.stderr
    assert not cache.exists() or not any(cache.rglob("*")), sorted(cache.rglob("*"))


def _model(graph: onnx.GraphProto, opsets: dict[str, int]) -> onnx.ModelProto:
    m = helper.make_model(graph, opset_imports=[helper.make_opsetid(d, v) for d, v in opsets.items()])
    m.ir_version = 8
    return m


def _saved(model: onnx.ModelProto, path: Path) -> Path:
    onnx.save(model, path)
    return path


def unsupported_model() -> onnx.ModelProto:
    """Relu, then a NonMaxSuppression (not a CNN op) and a custom-domain op: what ``run`` refuses."""
    rng = np.random.default_rng(0)
    w = numpy_helper.from_array(rng.standard_normal((1, 16, 4)).astype(np.float32), "w")
    r = numpy_helper.from_array(rng.standard_normal((1, 16, 4)).astype(np.float32), "r")
    nodes = [helper.make_node("Relu", ["x"], ["a"], name="relu"),
             helper.make_node("NonMaxSuppression", ["a", "w", "r"], ["h"], name="nms"),
             helper.make_node("Frobnicate", ["h"], ["y"], name="custom", domain="com.example")]
    graph = helper.make_graph(nodes, "unsupported", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [5, 1, 4])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)], [w, r])
    return _model(graph, {"": 14, "com.example": 1})


def test_info_unsupported_ops_listed_all_at_once(tmp_path: Path) -> None:
    path = _saved(unsupported_model(), tmp_path / "unsupported.onnx")
    doc = _info(str(path))
    assert not doc["supported"]
    assert [(u["op"], u["name"], u["opset"]) for u in doc["unsupported"]] == [("NonMaxSuppression", "nms", 14),
                                                                             ("Frobnicate", "custom", 14)]
    assert "post-processing" in doc["unsupported"][0]["reason"] and "com.example" in doc["unsupported"][1]["reason"]
    assert doc["flops"] is None and "not support" in doc["flops_unavailable"]
    # everything else is still there
    assert doc["op_counts"] == {"Relu": 1, "NonMaxSuppression": 1, "Frobnicate": 1}
    assert doc["opsets"] == {"ai.onnx": 14, "com.example": 1} and doc["params"] == 2 * 16 * 4
    assert doc["inputs"] == [{"name": "x", "dtype": "float32", "shape": [5, 1, 4]}]
    r = run_cli("info", path)
    assert r.returncode == 0, r.stderr
    assert "unsupported ops: 2 node(s)" in r.stdout and "nms" in r.stdout and "custom" in r.stdout
    assert "FLOPs: not counted" in r.stdout
    # run refuses the same model, and its hint points at info
    r = run_cli("run", path, "--random")
    line = assert_one_line_error(r, 1)
    assert "NonMaxSuppression" in line and "Frobnicate" in line and "hint: 'cnnjit info MODEL'" in r.stderr


def symbolic_model() -> onnx.ModelProto:
    """x[N, 3, H, W] * c (a Constant node) + b (an initializer), then a 3x3 average pool: nothing fits H = W = 1."""
    c = numpy_helper.from_array(np.full((1, 3, 1, 1), 0.5, np.float32), "c")
    b = numpy_helper.from_array(np.ones((1, 3, 1, 1), np.float32), "b")
    nodes = [helper.make_node("Constant", [], ["c"], name="const", value=c),
             helper.make_node("Mul", ["x", "c"], ["m"], name="scale"),
             helper.make_node("Add", ["m", "b"], ["a"], name="shift"),
             helper.make_node("AveragePool", ["a"], ["y"], name="pool", kernel_shape=[3, 3])]
    graph = helper.make_graph(nodes, "symbolic",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 3, "H", "W"])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 3, "H2", None])], [b])
    return _model(graph, {"": 13})


def test_info_symbolic_input_with_and_without_shape(tmp_path: Path) -> None:
    path = _saved(symbolic_model(), tmp_path / "symbolic.onnx")
    # without --shape: the symbols are set to 1 (noted), where the pool does not fit; info still describes it
    doc = _info(str(path))
    assert doc["inputs"] == [{"name": "x", "dtype": "float32", "shape": ["N", 3, "H", "W"]}]
    assert doc["outputs"][0]["shape"] == ["N", 3, "H2", None]
    assert doc["shapes"] == {"x": [1, 3, 1, 1]} and len(doc["notes"]) == 3
    assert doc["flops"] is None and "--shape" in doc["flops_unavailable"]
    assert (doc["params"], doc["initializer_params"], doc["constant_params"]) == (6, 3, 3)
    r = run_cli("info", path)
    assert r.returncode == 0, r.stderr
    assert all(f"symbolic dimension '{s}' of input 'x' set to 1" in r.stderr for s in "NHW")
    assert "[N, 3, H, W]" in r.stdout and "[N, 3, H2, ?]" in r.stdout and "FLOPs: not counted" in r.stdout
    assert "parameters: 6 (3 in 1 initializers, 3 in 1 Constant nodes)" in r.stdout
    # with --shape: FLOPs as inspect counts them, linear in the batch; the output shape as onnxruntime's
    one = _info(str(path), "--shape", "x=1,3,8,8")
    two = _info(str(path), "--shape", "x=2,3,8,8")
    assert one["notes"] == [] and one["flops_unavailable"] is None
    assert one["flops"] == _inspect_flops(str(path), "--shape", "x=1,3,8,8") > 3 * 6 * 6 * 9
    assert two["flops"] == 2 * one["flops"]
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    y = sess.run(None, {"x": np.zeros((2, 3, 8, 8), np.float32)})[0]
    assert two["outputs"][0]["shape_at"] == list(y.shape) == [2, 3, 6, 6]
    # a --shape for an input the model does not have is an error, naming the real inputs
    line = assert_one_line_error(run_cli("info", path, "--shape", "nope=1,3,8,8"), 1)
    assert "nope" in line and "x: float32[N, 3, H, W]" in line


def test_info_help_and_hints(tmp_path: Path) -> None:
    r = run_cli("info", "--help")
    assert r.returncode == 0
    assert "example:" in r.stdout and "cnnjit info" in r.stdout and "--shape" in r.stdout
    assert "--example" in r.stdout and "--threads" not in r.stdout
    # the hint for a wrong input name points at info, which shows the inputs
    r = run_cli("inspect", "--example", "--shape", "nope=1,2")
    assert_one_line_error(r, 2)  # a --shape naming no input: a usage error, as on every command
    assert "hint: 'cnnjit info MODEL' shows the model's inputs" in r.stderr
