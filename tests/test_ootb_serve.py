"""The served-process timing of ``benchmarks/ootb.py`` (``--ootb-procs``, ``batch.py --procs``): the request
protocol of ``serve`` and the turns ``alternate`` gives, on stand-in engines (no model, no timing asserted)."""

from __future__ import annotations

import argparse
import io
import json
import os
import random
import subprocess
import sys
from pathlib import Path

import pytest

from benchmarks import ootb


def _serve(monkeypatch, capsys, requests: list[dict], fns: dict) -> list[dict]:
    monkeypatch.setattr(sys, "stdin", io.StringIO("".join(json.dumps(r) + "\n" for r in requests)))
    assert ootb.serve({"model": "m"}, fns, warmup=2) == 0
    return [json.loads(line[len(ootb.MARK):]) for line in capsys.readouterr().out.splitlines()
            if line.startswith(ootb.MARK)]


def test_serve_block_times_the_first_call_apart_then_k_calls(monkeypatch, capsys) -> None:
    calls = {"a": 0, "b": 0}
    fns = {k: (lambda k=k: calls.__setitem__(k, calls[k] + 1)) for k in calls}
    out = _serve(monkeypatch, capsys, [{"block": "a", "calls": 4}, {}, {"block": "b", "calls": 9}], fns)
    assert out[0] == {"ready": {"model": "m"}, "names": ["a", "b"]}
    assert sorted(out[1]) == ["a", "a" + ootb.FIRST] and len(out[1]["a"]) == 4  # the first call apart
    assert len(out[1]["a" + ootb.FIRST]) == 1
    assert len(out) == 2  # ``{}`` ended it: the request after it never ran
    assert calls == {"a": 2 + 1 + 4, "b": 2}  # warm-up, the untimed call, the timed ones


def test_serve_rounds_time_every_call_once_per_round(monkeypatch, capsys) -> None:
    calls = {"a": 0, "b": 0, "c": 0}
    fns = {k: (lambda k=k: calls.__setitem__(k, calls[k] + 1)) for k in calls}
    out = _serve(monkeypatch, capsys, [{"rounds": 3}, {}], fns)
    assert {k: len(v) for k, v in out[1].items()} == {"a": 3, "b": 3, "c": 3}
    assert calls == {"a": 5, "b": 5, "c": 5}


def test_serve_stats_replies_what_the_engine_counted_without_timing(monkeypatch, capsys) -> None:
    """``{"stats": 1}`` (``ask_stats``: ``batch.py`` asks how many of cnnjit's batches ran split) writes the
    engine's ``stats()`` as one line, between other requests, and ``{}`` without a ``stats``."""
    calls = {"a": 0}
    fns = {"a": lambda: calls.__setitem__("a", calls["a"] + 1)}
    reqs = [{"stats": 1}, {"block": "a", "calls": 2}, {"stats": 1}, {}]
    monkeypatch.setattr(sys, "stdin", io.StringIO("".join(json.dumps(r) + "\n" for r in reqs)))
    assert ootb.serve({"model": "m"}, fns, warmup=1, stats=lambda: {"a": calls["a"]}) == 0
    out = [json.loads(line[len(ootb.MARK):]) for line in capsys.readouterr().out.splitlines()
           if line.startswith(ootb.MARK)]
    assert out[1] == {"a": 1} and sorted(out[2]) == ["a", "a" + ootb.FIRST] and out[3] == {"a": 4}
    assert _serve(monkeypatch, capsys, [{"stats": 1}, {}], fns)[1] == {}


def test_serve_tells_its_calls_which_phase_they_run_in(monkeypatch, capsys) -> None:
    """``ootb.PHASE`` (read by ``batch.py --trace-calls``' logging calls): warm-up, a turn's untimed first call,
    its timed calls, rounds of single calls."""
    seen: list[str] = []
    _serve(monkeypatch, capsys, [{"block": "a", "calls": 2}, {"rounds": 1}, {}],
           {"a": lambda: seen.append(ootb.PHASE["kind"])})
    assert seen == ["warmup", "warmup", "first", "block", "block", "single"]


#: a stand-in served engine: names from argv, each call sleeps a little
_CHILD = ("import sys, time\nsys.path.insert(0, {root!r})\nfrom benchmarks import ootb\n"
          "names = sys.argv[1].split(',')\n"
          "fns = {{n: (lambda: time.sleep(1e-4)) for n in names}}\n"
          "raise SystemExit(ootb.serve({{'engine': sys.argv[2]}}, fns, 1))")


def test_alternate_gives_every_label_its_turns_and_single_calls(tmp_path) -> None:
    root = str(Path(ootb.__file__).resolve().parents[1])
    code = _CHILD.format(root=root)
    with open(tmp_path / "errs", "w+") as errs:
        procs = ootb.served({"x": [sys.executable, "-c", code, "x1,x2", "x"],
                             "y": [sys.executable, "-c", code, "y1", "y"]}, errs)
        try:
            args = argparse.Namespace(runs=5, block=2, block_calls=3, settle=0.0)
            res = ootb.alternate(procs, args, random.Random(0))
        finally:
            ootb.stop(procs)
    assert res["ready"] == {"x": {"engine": "x"}, "y": {"engine": "y"}}
    assert {k: v["runs"] for k, v in res["timing"].items()} == {"x1": 15, "x2": 15, "y1": 15}  # 5 turns of 3
    assert {k: v["runs"] for k, v in res["timing_first"].items()} == {"x1": 5, "x2": 5, "y1": 5}  # one a turn
    assert {k: v["runs"] for k, v in res["timing_single"].items()} == {"x1": 5, "x2": 5, "y1": 5}
    assert all(p.returncode == 0 for p in procs.values())  # (stop ended both)


_QUIESCE_CHECK = """
import json, threading, time
from benchmarks.harness import quiesce
stop = time.perf_counter() + 0.15
def spin():
    while time.perf_counter() < stop:
        pass
t = threading.Thread(target=spin)
t.start()
waited = quiesce(max_s=2.0)
t.join()
print(json.dumps({"waited": waited, "after_stop": time.perf_counter() >= stop, "idle": quiesce(max_s=2.0)}))
"""


@pytest.mark.skipif(not os.path.exists("/proc/self/task"), reason="no per-thread CPU time to watch")
def test_quiesce_waits_until_a_spinning_thread_stops() -> None:
    """``harness.quiesce`` (between two libraries' turns) returns once this process's threads are idle: not
    while a thread spins (as onnxruntime's pool does for tens of ms after a call), soon when none does. In a
    process of its own: a test worker's other threads (a previous test's compile or team threads) are not
    this process's quiet to judge."""
    out = subprocess.run([sys.executable, "-c", _QUIESCE_CHECK], capture_output=True, text=True, timeout=60,
                         cwd=Path(__file__).resolve().parents[1], check=True).stdout
    r = json.loads(out.strip().splitlines()[-1])
    assert r["after_stop"] and r["waited"] >= 0.1
    assert r["idle"] < 1.0
