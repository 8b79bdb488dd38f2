"""The ``cnnjit`` command line's argument errors and checks (issue 22, items 7 and 9): every error is one line
plus a hint (JSON under ``--json``), names the command's own ``--help`` and suggests close matches; values are
checked before any work; ``conformance`` says why a case fails. In this process (``test_cli.run_cli_here``: what
is checked is what ``cnnjit.cli.main`` prints and answers; ``test_cli.py`` runs the console script itself, error
paths included)."""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper
from test_cli import assert_one_line_error, small_cnn
from test_cli import run_cli_here as run_cli

from cnnjit.conformance import mismatch

#: the keys of every JSON error document (as ``cnnjit.cli._report`` writes them for model errors)
ERROR_KEYS = {"error", "type", "hint", "exit_code"}


@pytest.fixture(scope="module")
def model_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    p = tmp_path_factory.mktemp("clierr") / "small.onnx"
    onnx.save(small_cnn(), p)
    return p


def json_error(r: object, code: int) -> dict:
    """The one JSON error document on stdout, checked to have the shape of every other JSON error."""
    assert_one_line_error(r, code)
    doc = json.loads(r.stdout)  # type: ignore[attr-defined]
    assert set(doc) == ERROR_KEYS and doc["exit_code"] == code, doc
    return doc


# ---- item 9: argparse errors -------------------------------------------------------------------------------
@pytest.mark.parametrize("cmd, extra", [("run", ["--random"]), ("bench", []), ("profile", []), ("warm", []),
                                        ("prune", ["-o", "p.onnx"]),
                                        ("quantize", ["--calibration", "random", "-o", "q.onnx"])])
def test_unknown_flag_names_the_commands_help_and_close_matches(cmd: str, extra: list[str], model_path: Path,
                                                                tmp_path: Path) -> None:
    r = run_cli(cmd, model_path, *extra, "--treads", "2", cwd=tmp_path)
    line = assert_one_line_error(r, 2)
    assert line.startswith(f"cnnjit {cmd}: error: unrecognized arguments: --treads 2")
    assert "did you mean --threads?" in line  # prune and quantize take --threads too
    assert f"hint: 'cnnjit {cmd} --help'" in r.stderr and "'cnnjit --help'" not in r.stderr


def test_unknown_flags_each_get_their_closest_match(model_path: Path) -> None:
    line = assert_one_line_error(run_cli("run", model_path, "--random", "--sed=3", "--unfsed"), 2)
    assert "did you mean --seed or --unfused?" in line


def test_unknown_command_and_choice_suggest_close_matches(model_path: Path) -> None:
    r = run_cli("rnu", model_path)
    line = assert_one_line_error(r, 2)
    assert "invalid choice: 'rnu'" in line and line.endswith("did you mean run?")
    assert "hint: 'cnnjit --help' lists the commands" in r.stderr
    line = assert_one_line_error(run_cli("profile", model_path, "--peak", "fam"), 2)
    assert line.endswith("did you mean fma?")
    line = assert_one_line_error(run_cli("inspect", model_path, "--frobnicate"), 2)
    assert "did you mean" not in line  # nothing close: no guess


@pytest.mark.parametrize("argv", [["run", "{m}", "--no-such-flag", "--json"],
                                  ["--json", "bench", "{m}", "--no-such-flag"],
                                  ["run", "--json"],  # MODEL missing
                                  ["profile", "{m}", "--peak", "fam", "--json"],
                                  ["--json"],  # no command
                                  ["rnu", "{m}", "--json"]])
def test_argument_errors_are_json_under_json(argv: list[str], model_path: Path) -> None:
    r = run_cli(*[a.format(m=model_path) for a in argv])
    doc = json_error(r, 2)
    assert doc["type"] == "UsageError" and doc["hint"]
    assert doc["error"] in r.stderr.splitlines()[0]
    same_shape = run_cli("inspect", model_path.parent / "missing.onnx", "--json")  # a model error
    assert set(json.loads(same_shape.stdout)) == set(doc)


def test_subcommand_json_error_names_its_help(model_path: Path) -> None:
    doc = json_error(run_cli("run", model_path, "--random", "--unfsed", "--json"), 2)
    assert "--unfsed" in doc["error"] and "did you mean --unfused?" in doc["error"]
    assert doc["hint"].startswith("'cnnjit run --help'")


# ---- item 9: values checked up front ----------------------------------------------------------------------
@pytest.mark.parametrize("cmd", ["run", "inspect", "bench", "profile", "warm"])
def test_shape_dims_must_be_positive(cmd: str, model_path: Path) -> None:
    for bad in ("x=0,3,8,8", "x=1,3,-8,8"):
        line = assert_one_line_error(run_cli(cmd, model_path, "--random" if cmd == "run" else "--json",
                                             "--shape", bad), 2)
        assert f"--shape {bad}" in line and ">= 1" in line


@pytest.mark.parametrize("argv, flag, minimum", [(["run", "--random", "--runs", "-1"], "--runs", 0),
                                                 (["run", "--random", "--repeat", "-1"], "--repeat", 0),
                                                 (["bench", "--runs", "0"], "--runs", 1),
                                                 (["profile", "--repeat", "-2"], "--repeat", 1),
                                                 (["bench", "--threads", "0"], "--threads", 1),
                                                 (["warm", "--threads", "-1"], "--threads", 1),
                                                 (["bench", "--warmup", "-1"], "--warmup", 0),
                                                 (["run", "--random", "--seed", "-1"], "--seed", 0),
                                                 (["prune", "--samples", "-1", "-o", "p.onnx"], "--samples", 0),
                                                 (["quantize", "--calibration", "random", "--batches", "-1",
                                                   "-o", "q.onnx"], "--batches", 0)])
def test_counts_are_checked_before_any_work(argv: list[str], flag: str, minimum: int, model_path: Path,
                                            tmp_path: Path) -> None:
    r = run_cli(argv[0], model_path, *argv[1:], cwd=tmp_path)
    line = assert_one_line_error(r, 2)
    assert f"argument {flag}: must be >= {minimum}, got {argv[argv.index(flag) + 1]}" in line
    assert not list(tmp_path.iterdir())  # nothing written
    line = assert_one_line_error(run_cli(argv[0], model_path, *argv[1:argv.index(flag) + 1], "many",
                                         *argv[argv.index(flag) + 2:], cwd=tmp_path), 2)
    assert f"argument {flag}: expected an integer, got 'many'" in line


def test_runs_zero_is_allowed_where_it_means_something(model_path: Path) -> None:
    r = run_cli("run", model_path, "--random", "--runs", "0", "--json")
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["run_ms"] is None  # no timed runs after the first


def test_threads_above_the_usable_cpus_warns_but_runs(model_path: Path) -> None:
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    r = run_cli("run", model_path, "--random", "--runs", "0", "--threads", str(cpus + 1))
    assert r.returncode == 0, r.stderr
    warnings = [ln for ln in r.stderr.splitlines() if "warning" in ln]
    assert warnings == [f"cnnjit run: warning: --threads {cpus + 1} is more than the {cpus} CPU{'s' * (cpus > 1)} "
                        "this process may use: the threads will share them and run slower"], r.stderr
    assert "output 'y'" in r.stdout
    r = run_cli("run", model_path, "--random", "--runs", "0", "--threads", str(cpus), "--json")
    assert r.returncode == 0 and "warning" not in r.stderr, r.stderr
    json.loads(r.stdout)


def test_prune_exclude_unknown_node(model_path: Path, tmp_path: Path) -> None:
    out = tmp_path / "p.onnx"
    r = run_cli("prune", model_path, "--sparsity", "0.5", "--exclude", "fcc", "--exclude", "relu",
                "--exclude", "zzzz", "-o", out)
    line = assert_one_line_error(r, 2)
    assert "--exclude names no node of the model: 'fcc', 'zzzz'; did you mean 'fc'?" in line
    assert "'relu'" not in line  # a real node name is not reported
    assert "hint: its Conv/Gemm/MatMul nodes (2):" in r.stderr and not out.exists()
    doc = json_error(run_cli("prune", model_path, "--sparsity", "0.5", "--exclude", "bnn", "-o", out, "--json"), 2)
    assert "'bnn'" in doc["error"] and "did you mean 'bn'?" in doc["error"]
    r = run_cli("prune", model_path, "--sparsity", "0.5", "--exclude", "fc", "--samples", "0", "-o", out, "--json")
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["layers"] and out.is_file()


def test_quantize_names_the_bad_calibration_file(model_path: Path, tmp_path: Path) -> None:
    cal = tmp_path / "cal"
    cal.mkdir()
    np.save(cal / "a.npy", np.zeros((1, 3, 8, 8), np.float32))
    np.save(cal / "b.npy", np.zeros((1, 4, 8, 8), np.float32))  # channel 4, the model takes 3
    out = tmp_path / "q.onnx"
    r = run_cli("quantize", model_path, "--calibration", cal, "-o", out)
    line = assert_one_line_error(r, 2)
    assert f"calibration file {str(cal / 'b.npy')!r}: input 'x' has shape (1, 4, 8, 8)" in line
    assert "[N, 3, 8, 8]" in line and not out.exists()
    (cal / "b.npy").unlink()
    np.savez(cal / "c.npz", xx=np.zeros((1, 3, 8, 8), np.float32))
    doc = json_error(run_cli("quantize", model_path, "--calibration", cal, "-o", out, "--json"), 2)
    assert str(cal / "c.npz") in doc["error"] and "did you mean 'x'?" in doc["error"]
    (cal / "c.npz").write_bytes(b"not numpy")
    line = assert_one_line_error(run_cli("quantize", model_path, "--calibration", cal, "-o", out), 2)
    assert str(cal / "c.npz") in line and "numpy can read" in line


def test_unsupported_op_hint_names_info(tmp_path: Path) -> None:
    # three operands: an Einsum cnnjit does not rewrite
    node = helper.make_node("Einsum", ["x", "x", "x"], ["y"], equation="ij,ij,ij->ij", name="e")
    graph = helper.make_graph([node], "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 3])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2, 3])])
    m = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    m.ir_version = 8
    onnx.save(m, tmp_path / "einsum.onnx")
    r = run_cli("inspect", tmp_path / "einsum.onnx")
    line = assert_one_line_error(r, 1)
    assert "Einsum" in line
    assert r.stderr.splitlines()[-1].startswith("hint: 'cnnjit info MODEL' lists every op")


# ---- item 7: conformance ----------------------------------------------------------------------------------
def test_conformance_missing_shared_folder(tmp_path: Path) -> None:
    missing = tmp_path / "nonexistent"
    r = run_cli("conformance", "--shared", missing)
    line = assert_one_line_error(r, 1)
    assert f"--shared folder {str(missing)!r} does not exist" in line and "cases passed" not in r.stdout
    assert json_error(run_cli("conformance", "--shared", missing, "--json"), 1)["type"] == "CliError"
    line = assert_one_line_error(run_cli("conformance", "--shared", tmp_path), 1)  # a folder without the cases
    assert str(tmp_path / "onnx-node" / "CASES-BY-OP.csv") in line
    line = assert_one_line_error(run_cli("conformance", env={"CNNJIT_SHARED": str(missing)}), 1)
    assert f"CNNJIT_SHARED folder {str(missing)!r} does not exist" in line


def _case(shared: Path, name: str, x: np.ndarray, expected: np.ndarray) -> None:
    """An onnx-node style case (Relu of ``x``) whose stored output is ``expected``."""
    d = shared / "onnx-node" / name
    (d / "test_data_set_0").mkdir(parents=True)
    graph = helper.make_graph([helper.make_node("Relu", ["x"], ["y"])], name,
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, list(x.shape))],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)])
    m = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    m.ir_version = 8
    onnx.save(m, d / "model.onnx")
    onnx.save_tensor(numpy_helper.from_array(x), d / "test_data_set_0" / "input_0.pb")
    onnx.save_tensor(numpy_helper.from_array(expected), d / "test_data_set_0" / "output_0.pb")


def test_conformance_failures_say_why(tmp_path: Path) -> None:
    x = np.array([[-1.0, 2.0, -3.0], [4.0, -5.0, 6.0]], np.float32)
    right = np.maximum(x, 0)
    off = right.copy()
    off[1, 2] = 6.5  # Relu gives 6: abs error 0.5, relative 0.5 / 6.5
    _case(tmp_path, "test_relu_right", x, right)
    _case(tmp_path, "test_relu_off", x, off)
    _case(tmp_path, "test_relu_shape", x, right.T.copy())
    (tmp_path / "onnx-node" / "CASES-BY-OP.csv").write_text(
        "op,case\nRelu,test_relu_right\nRelu,test_relu_off\nRelu,test_relu_shape\n")
    r = run_cli("conformance", "--shared", tmp_path, "--suite", "onnx-node", "--failures")
    assert r.returncode == 1, r.stderr
    fails = sorted(ln for ln in r.stdout.splitlines() if ln.startswith("FAIL"))
    assert fails == [
        "FAIL onnx-node/test_relu_off: AssertionError: test_data_set_0: output 0: 1 of 6 values outside "
        f"rtol=0.001, atol=1e-07: max abs error 0.5, max rel error {0.5 / 6.5:.4g} (worst at [1, 2]: got 6, "
        "expected 6.5; shape (2, 3))",
        "FAIL onnx-node/test_relu_shape: AssertionError: test_data_set_0: output 0: shape (2, 3), expected (3, 2)"]
    assert "1/3 cases passed" in r.stdout
    doc = json.loads(run_cli("conformance", "--shared", tmp_path, "--suite", "onnx-node", "--json").stdout)
    assert {f["case"]: f["reason"] for f in doc["failures"]} == {f.split(":")[0][len("FAIL onnx-node/"):]:
                                                                 f.split(": ", 1)[1] for f in fails}


def test_conformance_unknown_op_is_an_error_with_close_matches() -> None:
    r = run_cli("conformance", "--op", "Cnov")
    line = assert_one_line_error(r, 2)
    assert "no conformance case has operator 'Cnov'; did you mean Conv" in line
    assert re.search(r"\nhint: The cases cover \d+ operators: Abs, Add, ", r.stderr), r.stderr
    # one unknown op among known ones is not ignored: nothing runs
    r = run_cli("conformance", "--op", "Relu", "--op", "NoSuchOp", "--json")
    doc = json_error(r, 2)
    assert "'NoSuchOp'" in doc["error"] and "did you mean" not in doc["error"]
    assert "per_op" not in r.stdout


def test_mismatch_reasons() -> None:
    """``mismatch`` (the library side of the reasons) against hand-made outputs."""
    a = np.array([1.0, 2.0, np.nan], np.float32)
    assert mismatch([a], [a.copy()], 1e-3, 1e-7) == ""  # NaN where NaN is expected matches
    assert mismatch([a], [a, a], 1e-3, 1e-7) == "2 outputs, expected 1"
    assert mismatch([a], [a.astype(np.float64)], 1e-3, 1e-7) == "output 0: dtype float64, expected float32"
    b = np.array([1.0, 2.0, 0.0], np.float32)
    assert mismatch([a], [b], 1e-3, 1e-7).startswith("output 0: 1 of 3 values outside rtol=0.001, atol=1e-07 "
                                                     "(1 NaN against a number)")
    assert mismatch([np.array([True])], [np.array([False])], 0, 0) == "output 0: 1 of 1 values differ"
    i = np.array([[1, 2], [3, 4]], np.int64)
    assert mismatch([i, i], [i, i + [[0, 0], [0, 3]]], 1e-3, 0).startswith(
        "output 1: 1 of 4 values outside rtol=0.001, atol=0: max abs error 3, max rel error 0.75 (worst at [1, 1]")
