"""The per-test cost log (``cost_log.py``): off by default, one row per test when asked, and its ranking."""

from __future__ import annotations

import json
from pathlib import Path

import cost_log
import pytest


class FakeItem:
    nodeid = "t.py::compiles"


def run_hook(monkeypatch: pytest.MonkeyPatch, prefix: str | None) -> None:
    if prefix is None:
        monkeypatch.delenv(cost_log.ENV, raising=False)
    else:
        monkeypatch.setenv(cost_log.ENV, prefix)
    monkeypatch.setenv("PYTEST_XDIST_WORKER", "gw7")
    from cnnjit.compiler.codegen import precompile

    monkeypatch.setattr(precompile, "ON_COMPILED", precompile.ON_COMPILED)  # (restored afterwards)
    gen = cost_log.pytest_runtest_protocol(FakeItem(), None)
    next(gen)
    monkeypatch.setitem(precompile.STATS, "compiled", precompile.STATS["compiled"] + 3)  # as if it compiled three
    if precompile.ON_COMPILED is not None:  # (the log installs the library's hook; off, nothing is kept)
        for key in ("k1/s1", "k2/s1", "k3/s1"):
            precompile.ON_COMPILED(key)
    with pytest.raises(StopIteration):
        next(gen)


def test_off_without_the_variable(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.chdir(tmp_path)
    run_hook(monkeypatch, None)
    assert list(tmp_path.iterdir()) == []


def test_one_row_per_test_and_the_ranking(monkeypatch: pytest.MonkeyPatch, tmp_path: Path,
                                          capsys: pytest.CaptureFixture[str]) -> None:
    prefix = str(tmp_path / "run")
    run_hook(monkeypatch, prefix)
    (row,) = [json.loads(line) for line in (tmp_path / "run.gw7.jsonl").open()]
    assert row["id"] == "t.py::compiles" and row["worker"] == "gw7"
    assert row["kernels"] == {"compiled": 3} and row["compiled_keys"] == ["k1/s1", "k2/s1", "k3/s1"]
    assert row["cpu"] >= 0 and row["child_cpu"] >= 0 and row["wall"] >= 0
    (tmp_path / "run.gw8.jsonl").write_text(json.dumps(
        {"id": "t.py::long", "worker": "gw8", "start": 0, "wall": 9.0, "cpu": 5.0, "child_cpu": 2.0,
         "kernels": {"compiled by worker": 4}, "load": 1.0}) + "\n")
    assert cost_log.main([prefix]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0].startswith("2 tests,") and out[0].endswith("7 kernels compiled")
    assert out[1] == "compiled by more than one worker (same kernel and signatures): 0"  # (no key compiled twice)
    assert out[3].endswith("t.py::long") and out[4].endswith("t.py::compiles")  # by CPU seconds


def test_compiles_done_by_two_workers_are_counted(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A kernel compiled with the same signatures by two workers counts once as done twice; twice by one
    worker (a second test of the same worker: not possible through its memory cache) does not."""
    rows = {"gw0": [("t.py::a", ["k1/s1", "k2/s1"]), ("t.py::b", ["k3/s1"])], "gw1": [("t.py::c", ["k1/s1", "k3/s2"])]}
    for worker, tests in rows.items():
        (tmp_path / f"run.{worker}.jsonl").write_text("".join(json.dumps(
            {"id": t, "worker": worker, "start": 0, "wall": 1.0, "cpu": 1.0, "child_cpu": 0.0,
             "kernels": {"compiled": len(keys)}, "load": 1.0, "compiled_keys": keys}) + "\n" for t, keys in tests))
    assert cost_log.main([str(tmp_path / "run")]) == 0
    assert "compiled by more than one worker (same kernel and signatures): 1" in capsys.readouterr().out
