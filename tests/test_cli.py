"""The ``cnnjit`` command line, through the real console script (subprocesses), success and error paths."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

import cnnjit

CNNJIT = shutil.which("cnnjit") or str(Path(sys.executable).parent / "cnnjit")
if not Path(CNNJIT).is_file():  # pragma: no cover - the package is always installed with its script
    pytest.skip("the cnnjit console script is not installed (pip install -e .)", allow_module_level=True)

#: a node name that would break naive DOT or terminal output
EVIL = 'conv "evil" \\ name\n[bold red]}{<b>'


def run_cli(*args: str, env: dict | None = None, cwd: Path | None = None, timeout: int = 240
            ) -> subprocess.CompletedProcess:
    e = dict(os.environ)
    e.update(env or {})
    return subprocess.run([CNNJIT, *map(str, args)], capture_output=True, text=True, env=e, cwd=cwd,
                          timeout=timeout)


def assert_one_line_error(r: subprocess.CompletedProcess, code: int) -> str:
    assert r.returncode == code, (r.returncode, r.stdout, r.stderr)
    assert "Traceback" not in r.stderr
    lines = [ln for ln in r.stderr.splitlines() if ln.strip() and not ln.startswith("note:")]
    assert 1 <= len(lines) <= 2, r.stderr
    assert ": error: " in lines[0]
    if len(lines) == 2:
        assert lines[1].startswith("hint: ")
    return lines[0]


def small_cnn() -> onnx.ModelProto:
    """Conv + BatchNormalization + Relu (one fused group) + pool + Flatten + Gemm + Softmax, batch symbolic."""
    rng = np.random.default_rng(0)
    inits = [numpy_helper.from_array(rng.standard_normal((4, 3, 3, 3)).astype(np.float32), "w"),
             numpy_helper.from_array(rng.standard_normal(4).astype(np.float32), "b"),
             numpy_helper.from_array(rng.uniform(0.5, 1.5, 4).astype(np.float32), "bn_s"),
             numpy_helper.from_array(rng.standard_normal(4).astype(np.float32), "bn_b"),
             numpy_helper.from_array(rng.standard_normal(4).astype(np.float32), "bn_m"),
             numpy_helper.from_array(rng.uniform(0.5, 1.5, 4).astype(np.float32), "bn_v"),
             numpy_helper.from_array(rng.standard_normal((6, 4)).astype(np.float32), "fc_w"),
             numpy_helper.from_array(rng.standard_normal(6).astype(np.float32), "fc_b")]
    nodes = [helper.make_node("Conv", ["x", "w", "b"], ["c"], name=EVIL, pads=[1, 1, 1, 1]),
             helper.make_node("BatchNormalization", ["c", "bn_s", "bn_b", "bn_m", "bn_v"], ["n"], name="bn"),
             helper.make_node("Relu", ["n"], ["r"], name="relu"),
             helper.make_node("GlobalAveragePool", ["r"], ["p"], name="pool"),
             helper.make_node("Flatten", ["p"], ["f"], name="flatten"),
             helper.make_node("Gemm", ["f", "fc_w", "fc_b"], ["g"], name="fc", transB=1),
             helper.make_node("Softmax", ["g"], ["y"], name="softmax", axis=1)]
    graph = helper.make_graph(nodes, "small_cnn",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 3, 8, 8])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 6])], inits)
    m = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    m.ir_version = 8
    return m


@pytest.fixture(scope="module")
def model_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    p = tmp_path_factory.mktemp("cli") / "small.onnx"
    onnx.save(small_cnn(), p)
    return p


# ---- global ----------------------------------------------------------------------------------------------
def test_version_and_help() -> None:
    r = run_cli("--version")
    assert r.returncode == 0 and r.stdout.startswith(f"cnnjit {cnnjit.__version__}")
    r = run_cli("--help")
    assert r.returncode == 0
    for cmd in ("run", "inspect", "graph", "bench", "profile", "conformance"):
        assert cmd in r.stdout


@pytest.mark.parametrize("cmd", ["run", "inspect", "graph", "bench", "profile", "conformance"])
def test_subcommand_help_has_example(cmd: str) -> None:
    r = run_cli(cmd, "--help")
    assert r.returncode == 0, r.stderr
    assert "example:" in r.stdout and f"cnnjit {cmd}" in r.stdout and "--json" in r.stdout


def test_usage_errors_exit_2(model_path: Path) -> None:
    assert_one_line_error(run_cli("frobnicate"), 2)
    assert_one_line_error(run_cli("graph", model_path), 2)  # -o is required


_EXTRA = {"graph": ["-o", "g.svg"], "run": ["--random"]}


@pytest.mark.parametrize("cmd", ["run", "inspect", "graph", "bench", "profile"])
def test_each_subcommand_bad_flag_and_bad_model(cmd: str, model_path: Path, tmp_path: Path) -> None:
    line = assert_one_line_error(run_cli(cmd, model_path, *_EXTRA.get(cmd, []), "--no-such-flag", cwd=tmp_path), 2)
    assert "--no-such-flag" in line
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(b"this is not a protobuf \x00\xff\x13")
    line = assert_one_line_error(run_cli(cmd, bad, *_EXTRA.get(cmd, []), cwd=tmp_path), 1)
    assert "not a valid ONNX" in line


def test_missing_model_file_json(tmp_path: Path) -> None:
    r = run_cli("inspect", tmp_path / "missing.onnx", "--json")
    line = assert_one_line_error(r, 1)
    assert "does not exist" in line and json.loads(r.stdout)["type"] == "ModelError"


def test_debug_shows_traceback(tmp_path: Path) -> None:
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(b"garbage")
    r = run_cli("inspect", bad, "--debug")
    assert r.returncode == 1 and "Traceback" in r.stderr


# ---- run -------------------------------------------------------------------------------------------------
def test_run_random_prints_shapes_top5_and_time(model_path: Path, tmp_path: Path) -> None:
    out = tmp_path / "y.npz"
    r = run_cli("run", model_path, "--random", "--output", out)
    assert r.returncode == 0, r.stderr
    assert "symbolic dimension 'N'" in r.stderr and "set to 1" in r.stderr
    assert "float32[1, 6]" in r.stdout and "top-5:" in r.stdout and "time:" in r.stdout
    assert "cnnjit: INFO" not in r.stderr  # logging is quiet by default
    y = np.load(out)["output_0"]
    x = np.random.default_rng(0).standard_normal((1, 3, 8, 8)).astype(np.float32)  # --seed 0 default
    np.testing.assert_allclose(y, cnnjit.compile(model_path)(x), rtol=1e-5, atol=1e-6)


def test_run_input_file_json_and_verbose(model_path: Path, tmp_path: Path) -> None:
    x = np.random.default_rng(3).standard_normal((2, 3, 8, 8)).astype(np.float32)
    np.save(tmp_path / "x.npy", x)
    r = run_cli("run", model_path, "--input", f"x={tmp_path / 'x.npy'}", "--json", "--verbose")
    assert r.returncode == 0, r.stderr
    doc = json.loads(r.stdout)
    assert doc["outputs"][0]["shape"] == [2, 6]
    expect = cnnjit.compile(model_path)(x)
    assert doc["outputs"][0]["top"][0][0] == int(expect[0].argmax())
    assert "cnnjit: INFO: compiled" in r.stderr and "kernel cache" in r.stderr


def test_run_input_errors(model_path: Path, tmp_path: Path) -> None:
    line = assert_one_line_error(run_cli("run", model_path), 2)  # no inputs, no --random
    assert "no data for input" in line
    assert_one_line_error(run_cli("run", model_path, "--input", f"x={tmp_path / 'nope.npy'}"), 2)
    np.save(tmp_path / "wrong.npy", np.zeros((1, 4, 8, 8), np.float32))
    line = assert_one_line_error(run_cli("run", model_path, "--input", f"x={tmp_path / 'wrong.npy'}"), 1)
    assert "dimension 1 must be 3" in line


# ---- inspect ---------------------------------------------------------------------------------------------
def test_inspect_table(model_path: Path) -> None:
    r = run_cli("inspect", model_path)
    assert r.returncode == 0, r.stderr
    assert "Conv+BatchNormalization+Relu" in r.stdout
    assert "arena" in r.stdout and "intermediate" in r.stdout
    assert "\x1b" not in r.stdout  # no escape sequences from model names


def test_inspect_json_and_unfused(model_path: Path) -> None:
    r = run_cli("inspect", model_path, "--json", "--shape", "x=2,3,8,8")
    assert r.returncode == 0, r.stderr
    doc = json.loads(r.stdout)
    conv = next(row for row in doc["layers"] if row["op"].startswith("Conv"))
    assert conv["name"] == EVIL
    assert {f["op"] for f in conv["fused_from"]} == {"BatchNormalization", "Relu"}
    assert conv["flops"] == 2 * (2 * 4 * 8 * 8) * (3 * 3 * 3) + 2 * 4 * 8 * 8  # MACs + one fused epilogue step
    assert conv["kernel"].startswith("k")
    t = doc["totals"]
    assert t["nodes_before_fusion"] > t["nodes"] and t["arena_bytes"] > 0 and t["intermediate_bytes"] > 0
    r = run_cli("inspect", model_path, "--json", "--unfused")
    doc = json.loads(r.stdout)
    assert r.returncode == 0 and not doc["fused"]
    assert all("+" not in row["op"] for row in doc["layers"])


def test_inspect_after_pass(model_path: Path) -> None:
    r = run_cli("inspect", model_path, "--after", "fuse_epilogue")
    assert r.returncode == 0, r.stderr
    assert "IR after pass fuse_epilogue" in r.stdout and "fused:" in r.stdout
    line = assert_one_line_error(run_cli("inspect", model_path, "--after", "no_such_pass"), 2)
    assert "unknown pass" in line
    assert_one_line_error(run_cli("inspect", model_path, "--after", "fuse_epilogue", "--unfused"), 2)


# ---- graph -----------------------------------------------------------------------------------------------
needs_dot = pytest.mark.skipif(shutil.which("dot") is None, reason="Graphviz 'dot' not installed")


@needs_dot
def test_graph_svg_and_png(model_path: Path, tmp_path: Path) -> None:
    svg = tmp_path / "g.svg"
    r = run_cli("graph", model_path, "-o", svg)
    assert r.returncode == 0, r.stderr
    root = ET.parse(svg).getroot()
    assert root.tag.endswith("svg")
    text = "".join(root.itertext())
    assert "fused: Conv+BatchNormalization+Relu" in text and "before fusion" in text and "after fusion" in text
    assert 'conv "evil"' in text  # the name survives escaping intact (newline shown as '?')
    png = tmp_path / "g.png"
    r = run_cli("graph", model_path, "-o", png, "--json")
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["rendered"] is True
    data = png.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    try:
        from PIL import Image
    except ImportError:
        return
    with Image.open(png) as im:
        assert im.size[0] > 100 and im.size[1] > 100


def test_graph_without_dot_writes_dot_file(model_path: Path, tmp_path: Path) -> None:
    out = tmp_path / "g.svg"
    r = run_cli("graph", model_path, "-o", out, env={"CNNJIT_DOT": str(tmp_path / "no-dot-here")})
    assert r.returncode == 0, r.stderr
    assert "'dot' not found" in r.stderr and not out.exists()
    dot = (tmp_path / "g.dot").read_text()
    assert dot.startswith("digraph cnnjit {") and "cluster_before" in dot
    # the model's name is escaped: quotes and backslashes can't end a DOT string, newlines are dropped
    assert 'conv \\"evil\\" \\\\ name?[bold red]}{<b>' in dot
    assert "\n[bold" not in dot


def test_graph_bad_format(model_path: Path, tmp_path: Path) -> None:
    assert_one_line_error(run_cli("graph", model_path, "-o", tmp_path / "g.jpg"), 2)


# ---- bench / profile -------------------------------------------------------------------------------------
def test_bench_vs_onnxruntime_json(model_path: Path) -> None:
    pytest.importorskip("onnxruntime")
    r = run_cli("bench", model_path, "--vs", "onnxruntime", "--runs", "5", "--warmup", "1", "--json")
    assert r.returncode == 0, r.stderr
    doc = json.loads(r.stdout)
    assert set(doc["results"]) == {"cnnjit", "onnxruntime"}
    for s in doc["results"].values():
        assert s["runs"] == 5 and 0 < s["min_ms"] <= s["median_ms"] <= s["p90_ms"]
        assert s["gflops"] > 0
    assert doc["results"]["cnnjit"]["ratio"] == 1.0
    assert doc["max_abs_diff"]["onnxruntime"] < 1e-4


def test_bench_table_and_png(model_path: Path, tmp_path: Path) -> None:
    pytest.importorskip("matplotlib")
    png = tmp_path / "b.png"
    r = run_cli("bench", model_path, "--runs", "3", "--warmup", "1", "--png", png)
    assert r.returncode == 0, r.stderr
    assert "median ms" in r.stdout and "GFLOP/s" in r.stdout and "cnnjit" in r.stdout
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    try:
        from PIL import Image
    except ImportError:
        return
    with Image.open(png) as im:
        assert im.size[0] >= 300 and im.size[1] >= 100


def test_profile(model_path: Path) -> None:
    r = run_cli("profile", model_path, "--runs", "3", "--json")
    assert r.returncode == 0, r.stderr
    doc = json.loads(r.stdout)
    calls = doc["calls"]
    assert calls and doc["peak_gflops"] > 0 and "FMA" in doc["peak_method"]
    assert doc["mode"] == "timed" and doc["entry"] == "numba"  # 5 calls: the numba entry, timed inside
    assert [c["median_ms"] for c in calls] == sorted((c["median_ms"] for c in calls), reverse=True)
    assert abs(sum(c["percent"] for c in calls) - 100) < 1e-6
    assert any(c["op"].startswith("Conv") and c["flops"] > 0 for c in calls)
    assert doc["run_ms"] > 0 and doc["sum_ms"] > 0 and doc["total_ms"] == doc["sum_ms"]
    r = run_cli("profile", model_path, "--runs", "2")
    assert r.returncode == 0 and "slowest first" in r.stdout and "% peak" in r.stdout and "cycle counter" in r.stdout
    r = run_cli("profile", model_path, "--runs", "2", "--uninlined", "--peak", "sgemm", "--json")
    assert r.returncode == 0, r.stderr
    doc = json.loads(r.stdout)
    assert doc["mode"] == "calls" and doc["entry"] == "python" and "sgemm" in doc["peak_method"]


# ---- conformance -----------------------------------------------------------------------------------------
def test_conformance_subset(tmp_path: Path) -> None:
    r = run_cli("conformance", "--op", "Relu", "--op", "Sigmoid", "--json", "--out", tmp_path / "conf")
    assert r.returncode == 0, r.stderr
    doc = json.loads(r.stdout)
    assert doc["per_op"] and not doc["failures"]
    assert all({"Relu", "Sigmoid"} & set(row["op"].split("+")) for row in doc["per_op"])
    assert json.loads((tmp_path / "conf.json").read_text())["totals"] == doc["totals"]
    assert (tmp_path / "conf.md").read_text().startswith("| suite |")
    assert_one_line_error(run_cli("conformance", "--suite", "nope"), 2)
    assert_one_line_error(run_cli("conformance", "--no-such-flag"), 2)
    assert_one_line_error(run_cli("conformance", "--op", "NoSuchOperator"), 2)
