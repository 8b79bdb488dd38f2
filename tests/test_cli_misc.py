"""The ``cnnjit`` command line, issue 22 items 3, 6, 8 and 11 (tables), through the real console script (or
``cnnjit.cli.main`` in this process, ``run_cli_here``, where only the output is checked): ``--shape`` checked
against the model on every command, shape errors at symbolic dimensions the tool set to 1 blamed on the tool,
``warm --threads``, ``prune --seed/--shape``, one time unit in JSON, tables that fit 80 columns in one style with
human size units, the prune agreement warning."""

from __future__ import annotations

import json
import re
import time
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper
from test_cli import assert_one_line_error, run_cli, run_cli_here, small_cnn

from cnnjit.cli.output import nbytes


def _model(nodes: list, inputs: list, outputs: list, inits: list = (), name: str = "m") -> onnx.ModelProto:
    m = helper.make_model(helper.make_graph(nodes, name, inputs, outputs, list(inits)),
                          opset_imports=[helper.make_opsetid("", 13)])
    m.ir_version = 8
    return m


def _float(name: str, dims: list) -> onnx.ValueInfoProto:
    return helper.make_tensor_value_info(name, TensorProto.FLOAT, dims)


def symbolic_hw() -> onnx.ModelProto:
    """x [1, 3, H, W] -> Conv 3x3 (pads 1) -> AveragePool 3x3 (no pads): needs H, W >= 3."""
    w = numpy_helper.from_array(np.random.default_rng(0).standard_normal((4, 3, 3, 3)).astype(np.float32), "w")
    nodes = [helper.make_node("Conv", ["x", "w"], ["c"], name="conv", pads=[1, 1, 1, 1]),
             helper.make_node("AveragePool", ["c"], ["y"], name="pool", kernel_shape=[3, 3])]
    return _model(nodes, [_float("x", [1, 3, "H", "W"])], [_float("y", [1, 4, None, None])], [w], "symhw")


def fixed_batch() -> onnx.ModelProto:
    """x [1, 3, 8, 8] (batch fixed at 1) -> Conv -> Relu."""
    w = numpy_helper.from_array(np.random.default_rng(1).standard_normal((4, 3, 3, 3)).astype(np.float32), "w")
    nodes = [helper.make_node("Conv", ["x", "w"], ["c"], pads=[1, 1, 1, 1]), helper.make_node("Relu", ["c"], ["y"])]
    return _model(nodes, [_float("x", [1, 3, 8, 8])], [_float("y", [1, 4, 8, 8])], [w], "fixed")


def splittable_conv() -> onnx.ModelProto:
    """x [N, 64, 32, 32] -> Conv 3x3 to 128 channels: large enough for threads=2 to split it in two calls
    (threads.MIN_PARALLEL_TOTAL_US)."""
    w = numpy_helper.from_array(np.random.default_rng(2).standard_normal((128, 64, 3, 3)).astype(np.float32), "w")
    return _model([helper.make_node("Conv", ["x", "w"], ["y"], pads=[1, 1, 1, 1])], [_float("x", ["N", 64, 32, 32])],
                  [_float("y", ["N", 128, 32, 32])], [w], "big")


def collapsing_classifier() -> onnx.ModelProto:
    """y = |x| @ W + b with class 0's weights very negative and b = [1, 0, 0, 0]: on standard-normal inputs the
    top class is never 0, but with every weight pruned away the output is b, whose top class is 0."""
    w = np.full((8, 4), 0.5, np.float32)
    w[:, 0] = -10
    inits = [numpy_helper.from_array(w, "w"), numpy_helper.from_array(np.array([1, 0, 0, 0], np.float32), "b")]
    nodes = [helper.make_node("Abs", ["x"], ["a"]), helper.make_node("Gemm", ["a", "w", "b"], ["y"], name="fc")]
    return _model(nodes, [_float("x", ["N", 8])], [_float("y", ["N", 4])], inits, "collapse")


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("cli_misc")
    out = {}
    for name, make in (("symhw", symbolic_hw), ("fixed", fixed_batch), ("big", splittable_conv),
                       ("collapse", collapsing_classifier), ("small", small_cnn)):
        out[name] = d / f"{name}.onnx"
        onnx.save(make(), out[name])
    return out


def _json(r: Any) -> Any:
    assert r.returncode == 0, r.stderr
    return json.loads(r.stdout)


# ---- item 3: symbolic height and width -------------------------------------------------------------------
@pytest.mark.parametrize("cmd,extra", [("inspect", []), ("run", ["--random"]), ("prune", ["--sparsity", "0.5"]),
                                       ("quantize", ["--calibration", "random", "--batches", "1"])])
def test_defaulted_symbolic_dims_blame_the_tool(cmd: str, extra: list, models: dict, tmp_path: Path) -> None:
    """H and W set to 1 make the 3x3 pool impossible: the error says cnnjit chose the 1 and asks for --shape
    (naming the input and its symbols), not that the model's shapes are inconsistent."""
    o = ["-o", tmp_path / "out.onnx"] if cmd in ("prune", "quantize") else []
    r = run_cli(cmd, models["symhw"], *extra, *o)
    line = assert_one_line_error(r, 2)
    assert "set to 1 by cnnjit" in line and "'H', 'W'" in line and "input 'x'" in line, line
    assert "hint: pass --shape x=1,3,H,W with numbers for H, W" in r.stderr
    assert "onnx.checker" not in r.stderr and "inconsistent" not in r.stderr
    assert "ONNXRuntimeError" not in r.stderr and "onnxruntime_src" not in r.stderr  # no raw onnxruntime log


def test_shape_makes_symbolic_hw_work(models: dict, tmp_path: Path) -> None:
    doc = _json(run_cli_here("inspect", models["symhw"], "--shape", "x=1,3,10,12", "--json"))
    assert doc["shapes"] == {"x": [1, 3, 10, 12]}
    assert doc["layers"][-1]["outputs"] == ["1x4x8x10"]  # 3x3 window, no pads: 10x12 -> 8x10
    # prune: the deviation report runs the original and the pruned model at the --shape given
    out = tmp_path / "p.onnx"
    doc = _json(run_cli_here("prune", models["symhw"], "--sparsity", "0.5", "--prune-first-last", "--shape",
                             "x=1,3,10,12", "--samples", "1", "-o", out, "--json"))
    assert doc["deviation"]["samples"] == 1 and out.is_file()
    # quantize: random calibration (--seed 0) at the --shape; on its first batch, the QDQ model stays close
    # to the float one (onnxruntime without graph optimizations: the plain Q/DQ semantics; its fused
    # QLinearAveragePool differs by up to 1.7 here)
    q = tmp_path / "q.onnx"
    doc = _json(run_cli_here("quantize", models["symhw"], "--calibration", "random", "--batches", "2", "--shape",
                             "x=1,3,10,12", "-o", q, "--json"))
    x = np.random.default_rng(0).standard_normal((1, 3, 10, 12)).astype(np.float32)  # calibration batch 0
    ref = ort.InferenceSession(str(models["symhw"]), providers=["CPUExecutionProvider"]).run(None, {"x": x})[0]
    plain = ort.SessionOptions()
    plain.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    got = ort.InferenceSession(str(q), plain, providers=["CPUExecutionProvider"]).run(None, {"x": x})[0]
    assert got.shape == (1, 4, 8, 10) and np.abs(got - ref).max() < 0.05 * np.abs(ref).max()


# ---- item 6: --shape checked against the model, the same error everywhere; warm --threads ---------------
COMMANDS = {"run": ["--random"], "inspect": [], "graph": ["-o", "g.svg"], "bench": ["--runs", "1"],
            "profile": ["--runs", "1"], "warm": [], "prune": ["--sparsity", "0.5", "-o", "p.onnx"],
            "quantize": ["--calibration", "random", "-o", "q.onnx"],
            "compile": ["--target", "aarch64-linux-gnu", "--no-shared", "-o", "build"]}


def test_shape_checked_up_front_with_one_error(models: dict, tmp_path: Path) -> None:
    """A batch of 2 on a model whose batch is fixed at 1: every command refuses it with the same usage error,
    before compiling or writing anything."""
    errors = {}
    for cmd, extra in COMMANDS.items():
        r = run_cli_here(cmd, models["fixed"], "--shape", "x=2,3,8,8", *extra, cwd=tmp_path)
        errors[cmd] = assert_one_line_error(r, 2).split(": error: ", 1)[1]
    assert set(errors.values()) == {"--shape x=2,3,8,8: dimension 0 is fixed at 1 by the model: "
                                    "x: float32[1, 3, 8, 8]"}, errors
    assert sorted(p.name for p in tmp_path.iterdir()) == []  # nothing written
    line = assert_one_line_error(run_cli_here("warm", models["fixed"], "--shape", "x=1,3,8"), 2)
    assert "rank 3" in line and "rank 4" in line
    line = assert_one_line_error(run_cli_here("prune", models["fixed"], "--shape", "y=1,3,8,8", "--sparsity", "0.5",
                                              "-o", tmp_path / "p.onnx"), 2)
    assert "unknown input" in line and "'y'" in line


def test_warm_threads_reaches_the_compile(models: dict) -> None:
    """--threads 2 splits the large Conv into two parts (two calls of its kernel), as inspect shows too."""
    one = _json(run_cli_here("warm", models["big"], "--json"))
    two = _json(run_cli_here("warm", models["big"], "--threads", "2", "--json"))
    assert (one["threads"], two["threads"]) == (1, 2)
    assert sum(k["calls"] for k in one["kernels"]) == 1
    assert sum(k["calls"] for k in two["kernels"]) == 2
    calls = _json(run_cli_here("inspect", models["big"], "--threads", "2", "--json"))["calls"]
    assert [c["parts"] for c in calls] == [2, 2]  # the layer's two part calls


# ---- item 8: prune --seed, times in ms -------------------------------------------------------------------
def _ort_deviation(original: Path, pruned: Path, shape: tuple, samples: int, seed: int) -> float:
    s0 = ort.InferenceSession(str(original), providers=["CPUExecutionProvider"])
    s1 = ort.InferenceSession(str(pruned), providers=["CPUExecutionProvider"])
    rng = np.random.default_rng(seed)
    mx = 0.0
    for _ in range(samples):
        x = rng.standard_normal(shape).astype(np.float32)
        mx = max(mx, float(np.abs(s0.run(None, {"x": x})[0].astype(np.float64) - s1.run(None, {"x": x})[0]).max()))
    return mx


def test_prune_seed_and_shape_choose_the_deviation_inputs(models: dict, tmp_path: Path) -> None:
    """Oracle: onnxruntime on the written model, fed the documented inputs (standard normal, --seed, --shape)."""
    out = tmp_path / "p.onnx"
    devs = []
    for seed in (1, 2):
        doc = _json(run_cli("prune", models["small"], "--sparsity", "0.7", "--prune-first-last", "--shape",
                            "x=3,3,8,8", "--samples", "2", "--seed", seed, "-o", out, "--json"))
        want = _ort_deviation(models["small"], out, (3, 3, 8, 8), 2, seed)
        assert doc["deviation"]["max_abs_diff"] == pytest.approx(want, rel=1e-4, abs=1e-6)
        devs.append(doc["deviation"]["max_abs_diff"])
    assert devs[0] != devs[1]  # the seed changes the inputs


def _keys(doc: Any) -> list[str]:
    if isinstance(doc, dict):
        return [k for k, v in doc.items() for k in [k, *_keys(v)]]
    if isinstance(doc, list):
        return [k for v in doc for k in _keys(v)]
    return []


def test_json_times_are_milliseconds(models: dict) -> None:
    """No key in seconds; the millisecond values are of the size a wall clock around the process allows."""
    docs = {}
    for cmd, extra in (("run", ["--random", "--runs", "2"]), ("warm", []), ("bench", ["--runs", "2"])):
        t0 = time.perf_counter()
        docs[cmd] = _json(run_cli(cmd, models["fixed"], *extra, "--json"))
        wall_ms = (time.perf_counter() - t0) * 1e3
        keys = _keys(docs[cmd])
        assert not [k for k in keys if k.endswith("_s") and not k.endswith("_per_s") or k == "seconds"], (cmd, keys)
        times = [v for k, v in _flat(docs[cmd]) if k.endswith("_ms") and v is not None]
        assert times and all(0 <= v < wall_ms for v in times), (cmd, times, wall_ms)
    assert {"compile_ms", "first_run_ms", "run_ms"} <= set(docs["run"])
    assert docs["run"]["run_ms"] > 1e-3  # a run of a real Conv takes more than a microsecond: not seconds
    assert docs["warm"]["total_ms"] > 1.0 and all("ready_ms" in k for k in docs["warm"]["kernels"])
    assert "compile_ms" in docs["bench"] and "first_run_ms" in docs["bench"]


def _flat(doc: Any) -> list[tuple[str, Any]]:
    if isinstance(doc, dict):
        return [kv for k, v in doc.items() for kv in ([(k, v)] if not isinstance(v, (dict, list)) else _flat(v))]
    if isinstance(doc, list):
        return [kv for v in doc for kv in _flat(v)]
    return []


# ---- item 11: tables ---------------------------------------------------------------------------------------
def _table_body(stdout: str) -> list[str]:
    """The lines between a table's header rule (a line of '─') and the first line after it that is not a row."""
    lines = stdout.splitlines()
    start = next(i for i, ln in enumerate(lines) if ln and set(ln.strip()) == {"─"})
    return lines[start + 1:]


def test_inspect_table_fits_80_columns(models: dict) -> None:
    r = run_cli("inspect", models["small"], env={"COLUMNS": "80"})
    assert r.returncode == 0, r.stderr
    doc = _json(run_cli("inspect", models["small"], "--json"))
    n = len(doc["layers"])
    body = _table_body(r.stdout)
    rows = body[:n]
    assert all(len(ln) <= 80 for ln in r.stdout.splitlines()), r.stdout
    assert [ln.split()[0] for ln in rows] == [str(i) for i in range(n)], r.stdout  # one line per layer
    assert "Conv+BN+Relu" in rows[0] and "BatchNormalization" not in r.stdout  # short label in the table...
    assert doc["layers"][0]["op"] == "Conv+BatchNormalization+Relu"  # ...the full name in --json
    assert "not shown in 80 columns" in r.stdout
    wide = run_cli("inspect", models["small"], env={"COLUMNS": "200"})
    assert "Conv+BatchNormalization+Relu" in wide.stdout and "not shown" not in wide.stdout


TABLE_COMMANDS = {"info": [], "bench": ["--runs", "2", "--vs", "onnxruntime"], "profile": ["--runs", "2"],
                  "warm": [], "prune": ["--sparsity", "0.5", "-o", "p.onnx"],
                  "quantize": ["--calibration", "random", "--batches", "1", "-o", "q.onnx"]}


def test_every_table_fits_80_columns(models: dict, tmp_path: Path) -> None:
    """Item 11 beyond inspect: at 80 columns every command's tables are at most 80 wide (rich pads each row to
    the width of the header rule, and no cell wraps), cache info's too."""
    for cmd, extra in [*TABLE_COMMANDS.items(), ("cache", None)]:
        argv = ["cache", "info"] if extra is None else [cmd, models["small"], *extra]
        r = run_cli_here(*argv, cwd=tmp_path, env={"COLUMNS": "80"})
        assert r.returncode == 0, r.stderr
        rules = [ln for ln in r.stdout.splitlines() if ln and set(ln.strip()) == {"─"}]
        assert rules and all(len(ln) <= 80 for ln in rules), (cmd, r.stdout)


def test_prune_and_quantize_one_table_style(models: dict, tmp_path: Path) -> None:
    outs = [run_cli_here("prune", models["small"], "--sparsity", "0.5", "-o", tmp_path / "p.onnx"),
            run_cli_here("quantize", models["small"], "--calibration", "random", "--batches", "2",
                         "-o", tmp_path / "q.onnx"),
            run_cli_here("inspect", models["small"])]
    for r in outs:
        assert r.returncode == 0, r.stderr
        assert any(ln and set(ln.strip()) == {"─"} for ln in r.stdout.splitlines()), r.stdout  # header rule
        assert not set("┃│┏┡└") & set(r.stdout), r.stdout  # no boxed tables
    assert "sparsity" in outs[0].stdout and "zero point" in outs[1].stdout and "min scale" in outs[1].stdout


def test_sizes_in_human_units(models: dict) -> None:
    """The arena of a 16x64x32x32 input (4 MiB) and its 8 MiB output: shown in MiB, not as thousands of KiB."""
    doc = _json(run_cli("inspect", models["big"], "--shape", "x=16,64,32,32", "--json"))
    arena = doc["totals"]["arena_bytes"]
    assert arena > 2**21
    r = run_cli("inspect", models["big"], "--shape", "x=16,64,32,32")
    assert f"arena {arena / 2**20:.1f} MiB" in r.stdout and "KiB" not in r.stdout
    assert [nbytes(512), nbytes(64 * 1024 + 410), nbytes(196429.4 * 1024), nbytes(3 * 2**30)] == \
        ["512 B", "64.4 KiB", "191.8 MiB", "3.00 GiB"]


def test_scalar_operands_are_named(tmp_path: Path) -> None:
    """A rank-0 input shows as 'scalar' in the kernel call notes (not an empty string between commas)."""
    m = _model([helper.make_node("Add", ["x", "s"], ["y"])], [_float("x", [1, 3, 8, 8]), _float("s", [])],
               [_float("y", [1, 3, 8, 8])])
    onnx.save(m, tmp_path / "scalar.onnx")
    doc = _json(run_cli("inspect", tmp_path / "scalar.onnx", "--json"))
    assert [c["note"] for c in doc["calls"]] == ["Add 1x3x8x8,scalar -> 1x3x8x8"]


def test_prune_warns_when_the_top_class_changes(models: dict, tmp_path: Path) -> None:
    out = tmp_path / "p.onnx"
    r = run_cli("prune", models["collapse"], "--sparsity", "1.0", "--prune-first-last", "--samples", "3",
                "-o", out, "--json")
    doc = _json(r)
    assert doc["deviation"]["argmax_agreement"] == 0.0
    assert "warning: the pruned model's top class differs from the original's on 100%" in r.stderr
    # the oracle: onnxruntime's top class for the original is never class 0, for the pruned one always
    x = np.abs(np.random.default_rng(0).standard_normal((3, 8))).astype(np.float32)
    for path, want in ((models["collapse"], False), (out, True)):
        y = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run(None, {"x": x})[0]
        assert bool((y.argmax(1) == 0).all()) is want and bool((y.argmax(1) == 0).any()) is want
    r = run_cli("prune", models["collapse"], "--sparsity", "0.1", "--samples", "3", "-o", out)
    assert r.returncode == 0 and "warning" not in r.stderr and "argmax agreement 100%" in r.stdout


# ---- done when: the README's command-line section shows current output -----------------------------------
README = Path(__file__).resolve().parents[1] / "README.md"
#: the README's example command lines, as run here ($M: the example model; files written to a scratch folder)
README_COMMANDS = {"info": ["info", "--example"], "run": ["run", "--example", "--random"],
                   "inspect": ["inspect", "--example"], "graph": ["graph", "--example", "-o", "graph.svg"],
                   "bench": ["bench", "--example", "--vs", "onnxruntime", "--runs", "20"],
                   "profile": ["profile", "--example", "--rows", "5"], "cache": ["cache", "info"]}


def _readme_outputs() -> dict[str, list[str]]:
    """The output lines the README's command-line block shows under each ``cnnjit CMD`` line (its ``# ``
    lines; comments in parentheses and elisions left out)."""
    text = README.read_text(encoding="utf-8")
    block = text[text.index("## Command line"):].split("```bash", 1)[1].split("```", 1)[0]
    shown: dict[str, list[str]] = {}
    cmd, comment = None, False
    for line in block.splitlines():
        text = line[2:].strip()
        if line.startswith("cnnjit "):
            cmd = line.split()[1]
            shown.setdefault(cmd, [])
        elif comment or text.startswith("("):  # a comment in parentheses, over one line or more
            comment = not text.endswith(")")
        elif cmd and line.startswith("# ") and not text.startswith("..."):
            shown[cmd].append(line[2:])
    return shown


def _shape_of(line: str) -> str:
    """A line with its numbers, plurals of them and runs of spaces made uniform: what stays the same from run
    to run (and machine to machine: the default thread count is the CPUs')."""
    # sizes: a subprocess's peak RSS includes its parent's (Linux keeps ru_maxrss across exec), so under a
    # test runner it may print in another unit or with a thousands separator
    line = re.sub(r"\d[\d,]*(\.\d+)? [KMG]iB", "N iB", line)
    # the kernel cache's folder: under the user's home (or CNNJIT_CACHE_DIR), named by versions and CPU
    line = re.sub(r"\S*/kernels-\S+", "KERNEL_DIR", line)
    return re.sub(r"[-+]?\d+(\.\d+)?(e[-+]\d+)?", "N", " ".join(line.split())).replace("N threads", "N thread")


def test_readme_command_line_shows_current_output(tmp_path: Path) -> None:
    shown = _readme_outputs()
    assert set(README_COMMANDS) <= set(shown) and all(shown[c] for c in README_COMMANDS), shown
    # the README shows a warm cache ("6 kernels: 6 disk cache"): the first compile of the example model must
    # not be the one compared (info, inspect and graph compile nothing, so no other command fills it first)
    assert run_cli("run", "--example", "--random", cwd=tmp_path).returncode == 0
    for cmd, argv in README_COMMANDS.items():
        r = run_cli(*argv, cwd=tmp_path, env={"COLUMNS": "200"})
        assert r.returncode == 0, r.stderr
        lines = (r.stdout + r.stderr).splitlines()
        actual = {_shape_of(ln) for ln in lines}
        # text lines wrap at 80 columns where their words end, which moves with the numbers in them: a shown
        # line that is not a whole line of the output must be a run of words of its unwrapped text
        text = f" {' '.join(map(_shape_of, lines))} "
        missing = [ln for ln in shown[cmd] if _shape_of(ln) not in actual and f" {_shape_of(ln)} " not in text]
        assert not missing, (cmd, missing, r.stdout)
    # info has no timings: its lines are shown exactly (the README leaves out the tables' header rules)
    r = run_cli("info", "--example", env={"COLUMNS": "200"})
    lines = [ln.rstrip() for ln in (r.stderr + r.stdout).splitlines() if set(ln.strip()) != {"─"}]
    assert lines == shown["info"]
