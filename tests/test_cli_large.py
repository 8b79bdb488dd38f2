"""Right figures for models of any size (issue 22 item 4): kernel, variant and FLOPs in ``inspect``, ``profile``
and ``graph`` for a graph where Concat runs in place (no kernel call of its own: the old text-matching call
map went blank on such models), and on the PP-OCRv4 recognizer (379 kernel calls) when its wheel is
installed (``pip install --no-deps rapidocr-onnxruntime==1.4.4``; .ci/run installs it). The figures come from
``cnnjit.cli.main`` in this process (``test_cli.run_cli_here``: one import, the kernels compiled once for all five
commands); the onnx-free ``info`` starts the console script, whose imports it checks."""

from __future__ import annotations

import importlib.util
import json
import re
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper
from test_cli import run_cli, run_cli_here


def _concat_model(path: Path) -> Path:
    """Two convs of x concatenated (in place: each conv writes its slice of the Concat output), then Relu."""
    rng = np.random.default_rng(0)
    nodes = [helper.make_node("Conv", ["x", "w1"], ["a"], pads=[1, 1, 1, 1]),
             helper.make_node("Conv", ["x", "w2"], ["b"]), helper.make_node("Concat", ["a", "b"], ["c"], axis=1),
             helper.make_node("Relu", ["c"], ["y"])]
    g = helper.make_graph(nodes, "cat", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 16, 16])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 16, 16, 16])],
                          [numpy_helper.from_array(rng.standard_normal((8, 3, 3, 3)).astype(np.float32), "w1"),
                           numpy_helper.from_array(rng.standard_normal((8, 3, 1, 1)).astype(np.float32), "w2")])
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 13)])
    m.ir_version = 8
    onnx.save(m, path)
    return path


def test_in_place_concat_keeps_kernels_and_flops(tmp_path: Path) -> None:
    model = _concat_model(tmp_path / "cat.onnx")
    r = run_cli_here("inspect", model, "--json")
    assert r.returncode == 0, r.stderr
    doc = json.loads(r.stdout)
    layers = {row["op"]: row for row in doc["layers"]}
    assert layers["Concat"]["kernel"] == "(in place)" and not layers["Concat"]["calls"]
    convs = [row for row in doc["layers"] if row["op"] == "Conv"]
    # 2 x MACs: 16x16 outputs x 8 channels x (3*3*3) and x (3*1*1)
    assert sorted(row["flops"] for row in convs) == [2 * 256 * 8 * 3, 2 * 256 * 8 * 27]
    assert all(row["kernel"].startswith("k") and row["variant"] for row in convs)
    assert doc["totals"]["kernel_calls"] == len(doc["calls"]) == 3
    r = run_cli_here("profile", model, "--json", "--runs", "3")
    assert r.returncode == 0, r.stderr
    calls = json.loads(r.stdout)["calls"]
    assert sorted(c["flops"] for c in calls if c["op"].startswith("Conv")) == [2 * 256 * 8 * 3, 2 * 256 * 8 * 27]
    assert all(c["gflops"] > 0 for c in calls if c["flops"])
    r = run_cli_here("graph", model, "-o", str(tmp_path / "g.dot"))
    assert r.returncode == 0, r.stderr
    dot = (tmp_path / "g.dot").read_text()
    assert dot.count("kernel k") >= 3, dot


REC = ("rapidocr_onnxruntime", "models/ch_PP-OCRv4_rec_infer.onnx")


def _wheel_model(package: str, rel: str) -> Path:
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        pytest.skip(f"{package} is not installed (pip install --no-deps rapidocr-onnxruntime==1.4.4)")
    path = Path(next(iter(spec.submodule_search_locations))) / rel
    if not path.is_file():
        pytest.skip(f"{path} not found")
    return path


@pytest.mark.slow
def test_ppocr_recognizer_runs_and_lists_every_call_with_flops(tmp_path: Path) -> None:
    model = _wheel_model(*REC)
    r = run_cli_here("inspect", model, "--shape", "x=1,3,48,320", "--json")
    assert r.returncode == 0, r.stderr
    doc = json.loads(r.stdout)
    # 379 calls before the fusions of issue 17 (ScaleShift, LayerNormalization, composite HardSwish), then 128,
    # 73 with its attention fused (session 13): still a long schedule
    assert len(doc["calls"]) == doc["totals"]["kernel_calls"] > 60
    assert all(c["kernel"] and c["variant"] and c["layer"] is not None for c in doc["calls"])
    assert sum(c["flops"] for c in doc["calls"]) == doc["totals"]["flops"] > 1e9
    # profile and graph: the same FLOPs per call, a GFLOP/s and % of peak for each, a kernel on every box
    r = run_cli_here("profile", model, "--shape", "x=1,3,48,320", "--runs", "2", "--json")
    assert r.returncode == 0, r.stderr
    prof = json.loads(r.stdout)
    assert prof["flops"] == sum(c["flops"] for c in prof["calls"]) == doc["totals"]["flops"]
    assert sorted(c["flops"] for c in prof["calls"]) == sorted(c["flops"] for c in doc["calls"])
    assert all(c["gflops"] > 0 and c["percent_of_peak"] > 0 for c in prof["calls"] if c["flops"])
    r = run_cli_here("graph", model, "--shape", "x=1,3,48,320", "-o", tmp_path / "rec.dot")
    assert r.returncode == 0, r.stderr
    kernels = {c["kernel"] for c in doc["calls"]}
    labels = re.findall(r"kernel (k\d+(?:,k\d+)*)", (tmp_path / "rec.dot").read_text())
    assert kernels == {k for lbl in labels for k in lbl.split(",")}, (kernels, labels)
    # the done-when command line: random input at the real shape, the result printed
    r = run_cli_here("run", model, "--shape", "x=1,3,48,320", "--random", "--runs", "1")
    assert r.returncode == 0, r.stderr
    assert r.stdout.startswith("output 'softmax_11.tmp_0': float32[1, 40, 6625]  min ") and " max " in r.stdout
    assert "symbolic dimension" not in r.stderr  # --shape chose every dimension
    x = np.random.default_rng(0).uniform(-1, 1, (1, 3, 48, 320)).astype(np.float32)
    np.save(tmp_path / "x.npy", x)
    r = run_cli_here("run", model, "--input", f"x={tmp_path / 'x.npy'}", "-o", str(tmp_path / "y.npy"))
    assert r.returncode == 0, r.stderr
    got = np.load(tmp_path / "y.npy")
    sess = ort.InferenceSession(str(model), providers=["CPUExecutionProvider"])
    np.testing.assert_allclose(got, sess.run(None, {"x": x})[0], rtol=1e-3, atol=1e-5)


def test_ppocr_recognizer_info_prints_inputs_without_onnx() -> None:
    """``cnnjit info`` on the recognizer (issue 22: its inputs in under 1 s, timed in
    ``benchmarks/info_time.py``): the console script prints the symbolic input and the output, and imports
    neither onnx (about a second: ``ml_dtypes``) nor numba (Python's own import log, on stderr)."""
    model = _wheel_model(*REC)
    r = run_cli("info", model, env={"PYTHONPROFILEIMPORTTIME": "1"})
    assert r.returncode == 0, r.stderr
    lines = r.stdout.splitlines()
    rows = {ln.split()[0]: ln.split(None, 3)[1:] for ln in lines if ln.startswith(("input ", "output "))}
    assert rows["input"][:2] == ["x", "float32"] and "[p2o.DynamicDimension.0, 3, ?, p2o.DynamicDimension.1]" \
        in rows["input"][2]
    assert rows["output"][:2] == ["softmax_11.tmp_0", "float32"] and "6625]" in rows["output"][2]
    imported = {ln.rsplit("|", 1)[-1].strip() for ln in r.stderr.splitlines() if ln.startswith("import time:")}
    assert "cnnjit.compiler.frontend.onnx_proto" in imported  # the log is there
    assert not imported & {"onnx", "ml_dtypes", "numba", "llvmlite.binding"}, sorted(imported)
