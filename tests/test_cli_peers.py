"""What the peers' command lines have, from ``cnnjit.cli.main`` in this process (``test_cli.run_cli_here``): the
per-op-type summary and Chrome trace of ``cnnjit profile``, time-bounded runs, percentiles, throughput, memory and
input files in ``cnnjit bench``, and fill modes in ``cnnjit run``. Structure and invariants only: no performance
figure is asserted."""

from __future__ import annotations

import json
import time
from collections import defaultdict
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest
from test_cli import assert_one_line_error
from test_cli import run_cli_here as run_cli

import cnnjit
from cnnjit.bench import measure, percentile

EXAMPLE_SHAPE = (1, 49, 10, 1)  # the example model's input_1, batch (symbolic) set to 1


# ---- profile ---------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def profiled(tmp_path_factory: pytest.TempPathFactory) -> tuple[dict, dict]:
    """(profile --json document, the Chrome trace it wrote) of the example model, 3 runs (odd: the traced run
    of median total is the median run itself)."""
    out = tmp_path_factory.mktemp("prof") / "trace.json"
    r = run_cli("profile", "--example", "--runs", "3", "--trace", out, "--json")
    assert r.returncode == 0, r.stderr
    doc = json.loads(r.stdout)
    assert doc["trace_file"] == str(out)
    return doc, json.loads(out.read_text())


def test_profile_by_op_summary_adds_up(profiled: tuple[dict, dict]) -> None:
    doc, _ = profiled
    calls, by_op = doc["calls"], doc["by_op"]
    want: dict[str, list[float]] = defaultdict(list)
    for c in calls:
        want[c["op"]].append(c["median_ms"])
    assert {g["op"] for g in by_op} == set(want)
    for g in by_op:
        assert g["calls"] == len(want[g["op"]])
        assert g["total_ms"] == pytest.approx(sum(want[g["op"]]))
        assert g["flops"] == sum(c["flops"] for c in calls if c["op"] == g["op"])
        assert g["gflops"] == pytest.approx(g["flops"] / g["total_ms"] / 1e6) if g["flops"] else g["gflops"] == 0
    assert sum(g["calls"] for g in by_op) == len(calls)
    assert sum(g["percent"] for g in by_op) == pytest.approx(100)
    assert [g["total_ms"] for g in by_op] == sorted((g["total_ms"] for g in by_op), reverse=True)
    assert any(g["op"].startswith("Conv") and g["calls"] > 1 for g in by_op)  # the example has 9 Conv calls


def test_profile_chrome_trace_structure(profiled: tuple[dict, dict]) -> None:
    doc, tr = profiled
    events = tr["traceEvents"]
    by_call = {c["call"]: c for c in doc["calls"]}
    assert len(events) == len(by_call)
    for e in events:
        assert {"name", "ph", "ts", "dur", "pid", "tid"} <= set(e), e
        assert e["ph"] == "X" and e["dur"] >= 0 and isinstance(e["pid"], int) and isinstance(e["tid"], int)
        row = by_call[e["args"]["call"]]
        assert (e["args"]["kernel"], e["args"]["variant"], e["args"]["op"], e["args"]["flops"]) == \
            (row["kernel"], row["variant"], row["op"], row["flops"])
        assert e["dur"] == pytest.approx(row["trace_ms"] * 1e3)
    # schedule order, back to back, no overlap
    assert [e["args"]["call"] for e in events] == sorted(by_call)
    assert events[0]["ts"] == 0
    for a, b in zip(events, events[1:]):
        assert b["ts"] == pytest.approx(a["ts"] + a["dur"])
    # the durations add up to one profiled run: the median of the 3 (first to last cycle-counter read)
    total_ms = sum(e["dur"] for e in events) / 1e3
    assert total_ms == pytest.approx(doc["trace_run_ms"])
    assert doc["mode"] == "timed"
    assert total_ms == pytest.approx(doc["timed_run_ms"], rel=1e-4, abs=1e-5 * len(events))
    assert doc["timed_run_min_ms"] <= total_ms * (1 + 1e-4) + 1e-5 * len(events)
    assert tr["otherData"]["run"] == doc["trace_run"] and 0 <= doc["trace_run"] < 3


def test_profile_tables_and_trace_errors(tmp_path: Path) -> None:
    out = tmp_path / "t.json"
    r = run_cli("profile", "--example", "--runs", "2", "--trace", out)
    assert r.returncode == 0, r.stderr
    assert "time per kernel call" in r.stdout and "time per op type" in r.stdout
    assert r.stdout.index("time per kernel call") < r.stdout.index("time per op type")
    assert "calls" in r.stdout and "total ms" in r.stdout and f"wrote {out}" in r.stdout.replace("\n", "")
    assert json.loads(out.read_text())["traceEvents"]
    line = assert_one_line_error(run_cli("profile", "--example", "--runs", "1", "--trace",
                                         tmp_path / "no" / "such" / "t.json"), 1)
    assert "t.json" in line


# ---- bench -----------------------------------------------------------------------------------------------
def test_measure_time_bounded() -> None:
    """--seconds: rounds until the time has passed; at least warmup + 1 calls however short the bound."""
    n = [0]

    def f() -> None:
        n[0] += 1
        time.sleep(0.002)

    t0 = time.perf_counter()
    s = measure({"f": f}, warmup=2, seconds=0.1)["f"]
    assert time.perf_counter() - t0 >= 0.1
    assert n[0] == s["runs"] + 2 and s["runs"] >= 1
    n[0] = 0
    s = measure({"f": f}, runs=50, warmup=3, seconds=1e-9)["f"]
    assert s["runs"] == 1 and n[0] == 4  # the bound ignores --runs, yet one timed run after the warm-up
    with pytest.raises(ValueError):
        measure({"f": f}, seconds=0)


def test_percentile_nearest_rank() -> None:
    v = list(range(1, 101))
    assert (percentile(v, 50), percentile(v, 90), percentile(v, 99), percentile(v, 100)) == (50, 90, 99, 100)
    assert percentile([7.0], 99) == 7.0 and percentile([1, 2], 50) == 1


def _check_stats(s: dict) -> None:
    assert 0 < s["min_ms"] <= s["p50_ms"] <= s["p90_ms"] <= s["p99_ms"] <= s["max_ms"]
    assert s["p50_ms"] == s["median_ms"]
    assert s["throughput_per_s"] > 0 and s["throughput_per_s"] == pytest.approx(s["runs"] / s["total_ms"] * 1e3)


def test_bench_seconds_percentiles_memory() -> None:
    r = run_cli("bench", "--example", "--seconds", "0.3", "--warmup", "2", "--json")
    assert r.returncode == 0, r.stderr
    doc = json.loads(r.stdout)
    s = doc["results"]["cnnjit"]
    _check_stats(s)
    assert doc["time_limit_ms"] == 300 and doc["runs"] == s["runs"] >= 1
    assert s["total_ms"] <= 300 + s["max_ms"]  # the timed runs all fit in the bound plus one last round
    assert doc["batch"] == 1 and s["samples_per_s"] == pytest.approx(s["throughput_per_s"])
    mem = doc["memory"]
    assert mem["arena_bytes"] > 0 and mem["peak_rss_bytes"] > mem["arena_bytes"]
    assert doc["inputs"] == {"input_1": "random"}
    r = run_cli("bench", "--example", "--seconds", "1e-9", "--warmup", "2", "--runs", "40", "--json")
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["results"]["cnnjit"]["runs"] == 1
    line = assert_one_line_error(run_cli("bench", "--example", "--seconds", "0"), 2)
    assert "--seconds" in line


def test_bench_input_file_sets_shape_and_batch(tmp_path: Path) -> None:
    x = np.random.default_rng(1).standard_normal((3, *EXAMPLE_SHAPE[1:])).astype(np.float32)
    np.save(tmp_path / "x.npy", x)
    r = run_cli("bench", "--example", "--input", f"input_1={tmp_path / 'x.npy'}", "--runs", "4", "--warmup", "1",
                "--json")
    assert r.returncode == 0, r.stderr
    doc = json.loads(r.stdout)
    assert doc["batch"] == 3 and doc["shapes"] == {"input_1": [3, 49, 10, 1]}
    assert doc["inputs"] == {"input_1": "file"} and doc["runs"] == 4
    s = doc["results"]["cnnjit"]
    _check_stats(s)
    assert s["samples_per_s"] == pytest.approx(3 * s["throughput_per_s"])
    # a bare FILE.npy names the model's only input; the table shows batch, percentiles, throughput, memory
    r = run_cli("bench", "--example", "--input", tmp_path / "x.npy", "--runs", "3", "--warmup", "0")
    assert r.returncode == 0, r.stderr
    for text in ("input_1=3x49x10x1", "batch 3", "p99 ms", "inf/s", "peak RSS", "arena", "from files: input_1"):
        assert text in r.stdout, text
    line = assert_one_line_error(run_cli("bench", "--example", "--input", f"input_1={tmp_path / 'x.npy'}",
                                         "--shape", "input_1=1,49,10,1"), 2)
    assert "does not match" in line
    assert_one_line_error(run_cli("bench", "--example", "--input", f"input_1={tmp_path / 'none.npy'}"), 2)


# ---- run --fill ------------------------------------------------------------------------------------------
def test_run_fill_modes_match_onnxruntime(tmp_path: Path) -> None:
    sess = ort.InferenceSession(cnnjit.example_model(), providers=["CPUExecutionProvider"])
    for mode, x in (("zeros", np.zeros(EXAMPLE_SHAPE, np.float32)), ("ones", np.ones(EXAMPLE_SHAPE, np.float32))):
        out = tmp_path / f"{mode}.npy"
        r = run_cli("run", "--example", "--fill", mode, "--runs", "0", "-o", out)
        assert r.returncode == 0, r.stderr
        np.testing.assert_allclose(np.load(out), sess.run(None, {"input_1": x})[0], rtol=1e-4, atol=1e-5)
    # --fill random is --random (same seeded data), and differs from the constant fills
    outs = {}
    for flags in (["--random"], ["--fill", "random"], ["--random", "--seed", "3"]):
        out = tmp_path / f"{'_'.join(flags)}.npy"
        r = run_cli("run", "--example", *flags, "--runs", "0", "-o", out)
        assert r.returncode == 0, r.stderr
        outs[" ".join(flags)] = np.load(out)
    assert np.array_equal(outs["--random"], outs["--fill random"])
    assert not np.array_equal(outs["--random"], outs["--random --seed 3"])
    assert not np.allclose(outs["--random"], np.load(tmp_path / "zeros.npy"))
    line = assert_one_line_error(run_cli("run", "--example"), 2)
    assert "no data for input" in line
    assert_one_line_error(run_cli("run", "--example", "--fill", "twos"), 2)
