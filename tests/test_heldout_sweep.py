"""``benchmarks/heldout.py``: the held-out sweep over a generated folder of tiny models (two that run, one that
cannot be fed, one that onnxruntime refuses), its outputs (JSON, markdown, PNG) and its error measure."""

from __future__ import annotations

import json
import math
import sys

import numpy as np
import onnx
import pytest
from conftest import REPO_DIR
from onnx import TensorProto, helper, numpy_helper

sys.path.insert(0, str(REPO_DIR))
from benchmarks import heldout  # noqa: E402


def _conv_model(batch: int | str, width: int | str) -> onnx.ModelProto:
    """x[N,3,8,W] -> Conv 3x3 (4 channels) -> Relu -> GlobalAveragePool."""
    rng = np.random.default_rng(0)
    w = numpy_helper.from_array(rng.standard_normal((4, 3, 3, 3)).astype(np.float32), "w")
    nodes = [helper.make_node("Conv", ["x", "w"], ["c"], pads=[1, 1, 1, 1]), helper.make_node("Relu", ["c"], ["r"]),
             helper.make_node("GlobalAveragePool", ["r"], ["y"])]
    g = helper.make_graph(nodes, "tiny", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [batch, 3, 8, width])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, [batch, 4, 1, 1])], [w])
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])


def test_sweep_writes_rows_and_reports_failures(tmp_path, capsys):
    d = tmp_path / "models"
    d.mkdir()
    onnx.save(_conv_model("N", 8), d / "static_ok.onnx")          # a symbolic batch runs at 1
    onnx.save(_conv_model(1, "W"), d / "sidecar_ok.onnx")         # its width comes from heldout.json
    onnx.save(_conv_model(1, "W"), d / "no_spec.onnx")            # no entry: cannot be fed
    bad = _conv_model(1, 8)
    bad.graph.node[1].op_type = "NoSuchOp"
    onnx.save(bad, d / "bad_op.onnx")                             # onnxruntime refuses it
    (d / "heldout.json").write_text(json.dumps({"sidecar_ok": {"from": "generated==1", "inputs": {
        "x": {"shape": [1, 3, 8, 8], "fill": "normal"}}}}))
    out = tmp_path / "out"
    assert heldout.main(["--dir", str(d), "--out", str(out), "--runs", "3", "--warmup", "1", "--budget-s", "0.5",
                         "--timeout", "600"]) == 0
    doc = json.loads((out / "heldout.json").read_text())
    rows = {r["model"]: r for r in doc["rows"]}
    assert set(rows) == {"static_ok", "sidecar_ok", "no_spec", "bad_op"}
    for name in ("static_ok", "sidecar_ok"):
        r = rows[name]
        assert r["ok"], r
        assert r["rel_err"] < 1e-5 and r["rel_err_output"] == "y"
        assert r["inputs"] == {"x": [1, 3, 8, 8]}
        assert r["runs"] >= 5 and r["ratio_median"] > 0 and r["cnnjit_min_ms"] <= r["cnnjit_median_ms"]
        assert r["kernel_calls"] >= 1
    assert rows["sidecar_ok"]["from"] == "generated==1"
    assert not rows["no_spec"]["ok"] and rows["no_spec"]["error_class"] == "SpecError"
    assert "symbolic dimension 3" in rows["no_spec"]["error"]
    assert not rows["bad_op"]["ok"] and rows["bad_op"]["error_class"]
    assert sorted(doc["summary"]["failed"]) == ["bad_op", "no_spec"]
    md = (out / "heldout.md").read_text()
    assert "| static_ok |" in md and "FAIL SpecError" in md
    assert (out / "heldout.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    err = capsys.readouterr().err
    assert "FAIL no_spec: SpecError:" in err and "FAIL bad_op:" in err
    # --resume keeps the rows that ran (and runs the failed one again)
    assert heldout.main(["--dir", str(d), "--out", str(out), "--resume", "--only", "static_ok,bad_op"]) == 0
    again = json.loads((out / "heldout.json").read_text())["rows"]
    assert sorted(r["model"] for r in again) == ["bad_op", "static_ok"]
    assert {r["model"]: r for r in again}["static_ok"] == rows["static_ok"]


def test_output_errors_are_relative_per_output():
    ref = [np.array([1.0, -4.0], np.float32), np.array([[3, 5]], np.int64), np.zeros(3, np.float32)]
    got = [np.array([1.0, -3.0], np.float32), np.array([[3, 7]], np.int64), np.zeros(4, np.float32)]
    errs = heldout.output_errors(["a", "b", "c"], got, ref)
    assert errs["a"] == pytest.approx(0.25)       # 1 over the output's largest magnitude 4
    assert errs["b"] == 2.0                       # integers: LSB
    assert math.isinf(errs["c"])                  # a wrong shape
    both_nan = heldout.output_errors(["n"], [np.array([np.nan, 1.0])], [np.array([np.nan, 1.0])])
    assert both_nan["n"] == 0.0
    assert math.isinf(heldout.output_errors(["n"], [np.array([np.nan, 1.0])], [np.array([0.0, 1.0])])["n"])


def test_fills_and_bad_specs():
    a = heldout.fill({"shape": [2, 3], "fill": "uniform", "lo": 5, "hi": 6})
    assert a.dtype == np.float32 and a.shape == (2, 3) and a.min() >= 5 and a.max() <= 6
    assert heldout.fill({"shape": [], "fill": "value", "value": 7, "dtype": "int64"}).dtype == np.int64
    assert np.abs(heldout.fill({"shape": [1, 800], "fill": "audio"})).max() < 0.4
    with pytest.raises(heldout.SpecError, match="unknown fill"):
        heldout.fill({"shape": [1], "fill": "sawtooth"})
    dyn = heldout.dynamicize(_conv_model(1, 8))
    dims = [d.dim_param or d.dim_value for d in dyn.graph.input[0].type.tensor_type.shape.dim]
    assert dims == ["d0", 3, "d2", "d3"]
