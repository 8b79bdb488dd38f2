"""The ``cnnjit`` command line, through the real console script (subprocesses), success and error paths; a few
checks of what a command prints call ``cnnjit.cli.main`` in this process (``run_cli_here``)."""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import os
import re
import shutil
import subprocess
import sys
import xml.etree.ElementTree as ET
from io import StringIO
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

import cnnjit
from cnnjit.cli import COMMANDS, build_parser
from cnnjit.compiler.passes import PassManager, default_pipeline, manager, parse_dump_ir, pass_names
from cnnjit.errors import CnnjitError, InputError

CNNJIT = shutil.which("cnnjit") or str(Path(sys.executable).parent / "cnnjit")
if not Path(CNNJIT).is_file():  # pragma: no cover - the package is always installed with its script
    pytest.skip("the cnnjit console script is not installed (pip install -e .)", allow_module_level=True)

#: a node name that would break naive DOT or terminal output
EVIL = 'conv "evil" \\ name\n[bold red]}{<b>'


def run_cli(*args: str, env: dict | None = None, cwd: Path | None = None, timeout: int = 240
            ) -> subprocess.CompletedProcess:
    # tables are fitted to COLUMNS when stdout is not a terminal: a fixed, wide one (pytest-xdist workers inherit
    # a narrow COLUMNS); tests of narrow tables pass their own
    e = dict(os.environ, COLUMNS="160")
    e.update(env or {})
    return subprocess.run([CNNJIT, *map(str, args)], capture_output=True, text=True, env=e, cwd=cwd,
                          timeout=timeout)


def run_cli_here(*args: str, env: dict | None = None, cwd: Path | None = None) -> subprocess.CompletedProcess:
    """``run_cli`` in this process (``cnnjit.cli.main``, what the console script calls), for checks of what the
    command prints and answers rather than of the script or its process: no interpreter start and imports
    (~1.5 s of CPU a call). The same environment (``COLUMNS=160`` unless ``env`` says otherwise), ``cwd`` and
    captured output; the ``cnnjit`` logger's handlers and level as they were afterwards."""
    from cnnjit.cli import main

    out, err = StringIO(), StringIO()
    log = logging.getLogger("cnnjit")
    handlers, level = list(log.handlers), log.level
    with pytest.MonkeyPatch.context() as mp, contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        for k, v in {"COLUMNS": "160", **(env or {})}.items():
            mp.setenv(k, v)
        if cwd is not None:
            mp.chdir(cwd)
        try:
            code = main([str(a) for a in args])
        finally:
            log.handlers[:] = handlers
            log.setLevel(level)
    return subprocess.CompletedProcess([CNNJIT, *map(str, args)], code, out.getvalue(), err.getvalue())


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
    line = assert_one_line_error(run_cli_here(cmd, model_path, *_EXTRA.get(cmd, []), "--no-such-flag", cwd=tmp_path), 2)
    assert "--no-such-flag" in line
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(b"this is not a protobuf \x00\xff\x13")
    line = assert_one_line_error(run_cli_here(cmd, bad, *_EXTRA.get(cmd, []), cwd=tmp_path), 1)
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
    assert "unknown pass 'no_such_pass'" in line
    assert all(p.name in line for p in default_pipeline())  # lists the real passes
    assert_one_line_error(run_cli("inspect", model_path, "--after", "fuse_epilogue", "--unfused"), 2)


# ---- graph -----------------------------------------------------------------------------------------------
needs_dot = pytest.mark.skipif(shutil.which("dot") is None, reason="Graphviz 'dot' not installed")


@needs_dot
def test_graph_svg_and_png(model_path: Path, tmp_path: Path) -> None:
    svg = tmp_path / "g.svg"
    r = run_cli("graph", model_path, "-o", svg, "--view", "both")  # the default view is after-only
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
    r = run_cli("graph", model_path, "-o", out, "--view", "both", env={"CNNJIT_DOT": str(tmp_path / "no-dot-here")})
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
    r = run_cli_here("profile", model_path, "--runs", "3", "--json")
    assert r.returncode == 0, r.stderr
    doc = json.loads(r.stdout)
    calls = doc["calls"]
    assert calls and doc["peak_gflops"] > 0 and "FMA" in doc["peak_method"]
    assert doc["mode"] == "timed" and doc["entry"] == "numba"  # 5 calls: the numba entry, timed inside
    assert [c["median_ms"] for c in calls] == sorted((c["median_ms"] for c in calls), reverse=True)
    assert abs(sum(c["percent"] for c in calls) - 100) < 1e-6
    assert any(c["op"].startswith("Conv") and c["flops"] > 0 for c in calls)
    assert doc["run_ms"] > 0 and doc["sum_ms"] > 0 and doc["total_ms"] == doc["sum_ms"]
    r = run_cli_here("profile", model_path, "--runs", "2")
    assert r.returncode == 0 and "slowest first" in r.stdout and "% peak" in r.stdout and "cycle counter" in r.stdout
    r = run_cli_here("profile", model_path, "--runs", "2", "--uninlined", "--peak", "sgemm", "--json")
    assert r.returncode == 0, r.stderr
    doc = json.loads(r.stdout)
    assert doc["mode"] == "calls" and doc["entry"] == "python" and "sgemm" in doc["peak_method"]


# ---- conformance -----------------------------------------------------------------------------------------
def test_conformance_subset(tmp_path: Path) -> None:
    r = run_cli_here("conformance", "--op", "Relu", "--op", "Sigmoid", "--json", "-o", tmp_path / "conf")
    assert r.returncode == 0, r.stderr
    doc = json.loads(r.stdout)
    assert doc["per_op"] and not doc["failures"]
    assert all({"Relu", "Sigmoid"} & set(row["op"].split("+")) for row in doc["per_op"])
    assert json.loads((tmp_path / "conf.json").read_text())["totals"] == doc["totals"]
    assert (tmp_path / "conf.md").read_text().startswith("| suite |")
    assert_one_line_error(run_cli_here("conformance", "--suite", "nope"), 2)
    assert_one_line_error(run_cli_here("conformance", "--no-such-flag"), 2)
    assert_one_line_error(run_cli_here("conformance", "--op", "NoSuchOperator"), 2)


# ---- the shared flags: declared once, the same on every command ------------------------------------------
#: the commands that compile a model, with the arguments each one also needs
COMPILING = {"run": [], "inspect": [], "graph": ["-o", "g.svg"], "bench": [], "profile": [], "warm": [],
             "compile": ["--target", "aarch64-linux-gnu", "-o", "build"]}


def _subparser(cmd: str) -> argparse.ArgumentParser:
    sub = next(a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction))
    return sub.choices[cmd]


def _actions(cmd: str) -> dict[str, argparse.Action]:
    return {o: a for a in _subparser(cmd)._actions for o in a.option_strings}


@pytest.mark.parametrize("cmd", list(COMPILING))
def test_compile_flags_on_every_compiling_command(cmd: str) -> None:
    args = build_parser().parse_args([cmd, "m.onnx", *COMPILING[cmd], "--shape", "a=1,2", "--shape", "b=3x4",
                                      "--threads", "3", "--unfused"])
    assert args.model == "m.onnx" and args.shape == ["a=1,2", "b=3x4"] and args.threads == 3 and args.unfused
    defaults = build_parser().parse_args([cmd, "m.onnx", *COMPILING[cmd]])
    assert defaults.shape is None and defaults.threads == 1 and not defaults.unfused
    acts, ref = _actions(cmd), _actions("run")
    for flag in ("--shape", "--threads", "--unfused", "--json", "--verbose", "--debug"):
        assert acts[flag].help == ref[flag].help and acts[flag].dest == ref[flag].dest, (cmd, flag)


@pytest.mark.parametrize("cmd,default", [("run", 10), ("bench", 50), ("profile", 20)])
def test_runs_everywhere_and_repeat_alias(cmd: str, default: int, capsys: pytest.CaptureFixture) -> None:
    p = build_parser()
    assert p.parse_args([cmd, "m.onnx"]).runs == default
    assert p.parse_args([cmd, "m.onnx", "--runs", "7"]).runs == 7
    assert p.parse_args([cmd, "m.onnx", "--repeat", "4"]).runs == 4  # old spelling: still works...
    assert "--repeat is deprecated: use --runs" in capsys.readouterr().err  # ...and says so
    assert "--repeat" not in _subparser(cmd).format_help()  # hidden


def test_output_is_o_everywhere_and_top_means_one_thing(capsys: pytest.CaptureFixture) -> None:
    p = build_parser()
    needs = {"conformance": [], "run": ["m.onnx"], "graph": ["m.onnx"], "compile": ["m.onnx", "--target", "t"],
             "prune": ["m.onnx"], "quantize": ["m.onnx", "--calibration", "random"]}
    for cmd, extra in needs.items():
        assert p.parse_args([cmd, *extra, "-o", "X"]).output == "X"
        assert p.parse_args([cmd, *extra, "--output", "X"]).output == "X"
    assert p.parse_args(["conformance", "--out", "P"]).output == "P"  # conformance's old spelling
    # --top is run's top-K classes only; profile's row count is --rows (its old --top still parses into it)
    tops = [cmd for cmd in COMMANDS if "--top" in _actions(cmd) and _actions(cmd)["--top"].help != argparse.SUPPRESS]
    assert tops == ["run"] and p.parse_args(["run", "m.onnx", "--top", "3"]).top == 3
    assert p.parse_args(["profile", "m.onnx", "--top", "4"]).rows == 4
    assert "--top is deprecated: use --rows" in capsys.readouterr().err
    assert p.parse_args(["profile", "m.onnx", "--rows", "6"]).rows == 6


def test_inspect_and_profile_take_the_compile_options(model_path: Path) -> None:
    fused = json.loads(run_cli_here("inspect", model_path, "--json").stdout)
    unfused = json.loads(run_cli_here("inspect", model_path, "--json", "--unfused", "--threads", "2").stdout)
    assert not unfused["fused"] and unfused["totals"]["kernel_calls"] > fused["totals"]["kernel_calls"]
    # every kernel call names its kernel and variant, and the layer it computes
    for doc in (fused, unfused):
        assert len(doc["calls"]) == doc["totals"]["kernel_calls"]
        assert all(c["kernel"] and c["variant"] and c["layer"] is not None for c in doc["calls"])
        # a layer's FLOPs are split over its calls, and every FLOP of the layers is in some call
        assert sum(c["flops"] for c in doc["calls"]) == sum(r["flops"] for r in doc["layers"] if r["calls"])
        assert all(r["variant"] for r in doc["layers"] if r["calls"])
    r = run_cli_here("profile", model_path, "--json", "--unfused", "--runs", "2")
    assert r.returncode == 0, r.stderr
    assert len(json.loads(r.stdout)["calls"]) == unfused["totals"]["kernel_calls"]
    line = assert_one_line_error(run_cli_here("compile", model_path, "--target", "aarch64-linux-gnu", "--threads", "2",
                                              "-o", str(model_path.parent / "build")), 2)
    assert "does not support --threads" in line


def two_in_two_out() -> onnx.ModelProto:
    """s = a + b, p = a * b; both inputs [N, 3] with a symbolic N."""
    nodes = [helper.make_node("Add", ["a", "b"], ["s"]), helper.make_node("Mul", ["a", "b"], ["p"])]
    graph = helper.make_graph(nodes, "two", [helper.make_tensor_value_info(n, TensorProto.FLOAT, ["N", 3])
                                             for n in "ab"],
                              [helper.make_tensor_value_info(n, TensorProto.FLOAT, ["N", 3]) for n in "sp"])
    m = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    m.ir_version = 8
    return m


def test_run_shape_repeated_and_outputs(tmp_path: Path) -> None:
    path = tmp_path / "two.onnx"
    onnx.save(two_in_two_out(), path)
    out = tmp_path / "y.npz"
    r = run_cli("run", path, "--random", "--shape", "a=4,3", "--shape", "b=4x3", "-o", out, "--json")
    assert r.returncode == 0, r.stderr
    doc = json.loads(r.stdout)
    assert doc["inputs"] == {"a": {"shape": [4, 3], "dtype": "float32"}, "b": {"shape": [4, 3], "dtype": "float32"}}
    assert "symbolic dimension" not in r.stderr  # --shape chose both, nothing set to 1
    rng = np.random.default_rng(0)  # --seed 0: a then b, standard normal
    a, b = rng.standard_normal((4, 3)).astype(np.float32), rng.standard_normal((4, 3)).astype(np.float32)
    with np.load(out) as z:
        assert sorted(z.files) == ["output_0", "output_1"]
        np.testing.assert_array_equal(z["output_0"], a + b)
        np.testing.assert_array_equal(z["output_1"], a * b)
    line = assert_one_line_error(run_cli("run", path, "--random", "-o", tmp_path / "y.npy"), 2)
    assert "2 outputs" in line and not (tmp_path / "y.npy").exists()
    line = assert_one_line_error(run_cli("run", path, "--random", "--shape", "a=4,3", "--shape", "a=2,3"), 2)
    assert "twice" in line
    line = assert_one_line_error(run_cli("run", path, "--random", "--shape", "c=1,3"), 2)
    assert "unknown input" in line and "'c'" in line


def test_run_o_writes_the_named_npy_and_new_flags(model_path: Path, tmp_path: Path) -> None:
    out = tmp_path / "out.npy"
    r = run_cli("run", model_path, "--random", "--shape", "x=2,3,8,8", "--threads", "2", "--unfused",
                "--repeat", "3", "-o", out)
    assert r.returncode == 0, r.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.npy"]  # not out.npy.npz
    assert "(median of 3)" in r.stdout and "--repeat is deprecated" in r.stderr
    x = np.random.default_rng(0).standard_normal((2, 3, 8, 8)).astype(np.float32)
    np.testing.assert_allclose(np.load(out), cnnjit.compile(model_path)(x), rtol=1e-5, atol=1e-6)
    # any name: exactly that file, .npy data; the default shape 1x3x8x8 draws the first sample of the 2x3x8x8 above
    raw = tmp_path / "raw.bin"
    assert run_cli("run", model_path, "--random", "--runs", "0", "-o", raw).returncode == 0
    assert raw.is_file() and not (tmp_path / "raw.bin.npy").exists()
    np.testing.assert_allclose(np.load(raw), np.load(out)[:1], rtol=1e-5, atol=1e-6)


# ---- pass names: CNNJIT_DUMP_IR and --after ---------------------------------------------------------------
def test_pass_names_are_the_pipeline() -> None:
    assert pass_names() == sorted({p.name for p in default_pipeline()})


def test_dump_ir_unknown_pass_is_an_error(monkeypatch: pytest.MonkeyPatch) -> None:
    real = pass_names()
    with pytest.raises(InputError) as e:
        parse_dump_ir("after:fold,dce")
    assert "unknown passes 'fold', 'dce' in CNNJIT_DUMP_IR" in str(e.value)
    assert all(n in str(e.value) for n in real)
    with pytest.raises(InputError, match="not 'before:PASS"):
        parse_dump_ir("fold_constants")
    assert parse_dump_ir("before:fold_pad;after:fold_constants,dead_code") == ({"fold_pad"},
                                                                              {"fold_constants", "dead_code"})
    assert parse_dump_ir("after:*") == (set(), {"*"})
    monkeypatch.setenv("CNNJIT_DUMP_IR", "after:fold_constants,no_such_pass")
    with pytest.raises(CnnjitError, match="no_such_pass"):
        PassManager(default_pipeline())
    with pytest.raises(ValueError, match="unknown pass 'nope' in dump_before"):  # an InputError is a ValueError
        PassManager(default_pipeline(), dump_before={"nope"})


def test_dump_ir_docs_name_real_passes() -> None:
    """Every CNNJIT_DUMP_IR example in the pass manager's docstring and the README parses."""
    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text(encoding="utf-8")
    examples = re.findall(r'CNNJIT_DUMP_IR=["`]?([a-z_:,;*]+)', (manager.__doc__ or "") + readme)
    assert len(examples) >= 2
    for ex in examples:
        parse_dump_ir(ex)


def test_dump_ir_prints_the_named_pass(model_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CNNJIT_DUMP_IR", "after:fold_batchnorm")
    buf = StringIO()
    graph = cnnjit.compile(model_path, input_shapes={"x": (1, 3, 8, 8)})._default_spec().graph
    PassManager(default_pipeline(), out=buf).run(graph)
    assert buf.getvalue().count("// ---- IR after pass") == 1 and "pass fold_batchnorm" in buf.getvalue()


def test_cli_dump_ir_unknown_pass(model_path: Path) -> None:
    line = assert_one_line_error(run_cli("run", model_path, "--random", env={"CNNJIT_DUMP_IR": "after:fold"}), 2)
    assert "unknown pass 'fold' in CNNJIT_DUMP_IR" in line and "fold_constants" in line


def test_example_model_from_a_fresh_clone() -> None:
    """``--example`` (and ``cnnjit.example_model()``) is the model shipped inside the package: it needs nothing
    beside the repository. Oracle: onnxruntime on the same file."""
    path = cnnjit.example_model()
    assert Path(path).is_file() and Path(path).stat().st_size < 100_000
    r = run_cli("run", "--example", "--random", "--json")
    assert r.returncode == 0, r.stderr
    doc = json.loads(r.stdout)
    assert doc["outputs"][0]["shape"] == [1, 12]
    x = np.zeros((1, 49, 10, 1), np.float32)
    sess = ort.InferenceSession(path, providers=["CPUExecutionProvider"])
    np.testing.assert_allclose(cnnjit.compile(path)(x), sess.run(None, {"input_1": x})[0], rtol=1e-5, atol=1e-6)
    assert_one_line_error(run_cli("run", "--example", path, "--random"), 2)  # MODEL and --example
    assert_one_line_error(run_cli("run", "--random"), 2)  # neither
