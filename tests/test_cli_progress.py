"""Live compile progress (issue 22 items 1, 2, 12): kernel events from the library, the bar on a terminal,
streamed ``-v`` logs, ``run``'s stage times, and Ctrl-C ending the compile workers."""

from __future__ import annotations

import json
import os
import pty
import re
import select
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import onnx
import psutil
import pytest
from onnx import TensorProto, helper, numpy_helper

from cnnjit.cli import main as cli_main
from cnnjit.cli import progress
from cnnjit.compiler.codegen.precompile import KernelEvent, observe_kernels
from cnnjit.compiler.stages import CompileOptions, Hooks, specialize
from cnnjit.compiler.target import compile_for_target
from cnnjit.errors import CompileError

CNNJIT = str(Path(sys.executable).parent / "cnnjit")
READY = ("memory", "disk cache", "compiled", "compiled by worker", "lazy")


def many_ops() -> onnx.ModelProto:
    """13 different ops in a chain: 12 distinct kernels unfused (enough misses for parallel compile workers)."""
    rng = np.random.default_rng(0)
    inits = [numpy_helper.from_array(rng.standard_normal((4, 3, 3, 3)).astype(np.float32), "w"),
             numpy_helper.from_array(rng.standard_normal((5, 4)).astype(np.float32), "fw")]
    chain = [("Conv", {"pads": [1, 1, 1, 1]}, ["w"]), ("Relu", {}, []), ("Sigmoid", {}, []), ("Tanh", {}, []),
             ("Abs", {}, []), ("Neg", {}, []), ("Exp", {}, []), ("MaxPool", {"kernel_shape": [2, 2]}, []),
             ("AveragePool", {"kernel_shape": [2, 2]}, []), ("GlobalAveragePool", {}, []), ("Flatten", {}, []),
             ("Gemm", {"transB": 1}, ["fw"]), ("Softmax", {"axis": 1}, [])]
    nodes, prev = [], "x"
    for i, (op, attrs, extra) in enumerate(chain):
        nodes.append(helper.make_node(op, [prev, *extra], [f"t{i}"], name=f"n{i}", **attrs))
        prev = f"t{i}"
    g = helper.make_graph(nodes, "many", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 3, 8, 8])],
                          [helper.make_tensor_value_info(prev, TensorProto.FLOAT, ["N", 5])], inits)
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 13)])
    m.ir_version = 8
    return m


@pytest.fixture(scope="module")
def model_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    p = tmp_path_factory.mktemp("progress") / "many.onnx"
    onnx.save(many_ops(), p)
    return p


def cold_env(tmp_path: Path, **extra: str) -> dict[str, str]:
    """The environment of a process with an empty kernel cache of its own."""
    return dict(os.environ, CNNJIT_CACHE_DIR=str(tmp_path / "cache"), TERM="xterm", COLUMNS="160", **extra)


# ---- the library ------------------------------------------------------------------------------------------
@pytest.mark.parametrize("entry", ["python", "numba"])
def test_kernel_events_match_the_compile_report(entry: str) -> None:
    events: list[KernelEvent] = []
    spec = specialize(many_ops(), {"x": (1, 3, 8, 8)}, CompileOptions(fuse=False, entry=entry),
                      hooks=Hooks(on_kernel=events.append))
    report = spec.program.meta["compile_report"]
    begin = events[0]
    assert begin.origin == "begin" and events[-1].origin == "end"
    ready = [e for e in events if e.origin in READY]
    total = len(spec.program.kernel_sources)
    assert total == 12 and begin.total == total
    # every kernel that needed work once, counted on from those ready at the start, with the report's origin
    assert [e.done for e in ready] == list(range(begin.done + 1, total + 1))
    assert {e.name: e.origin for e in ready} == {r.name: r.origin for r in report.rows if r.name in
                                                 {e.name for e in ready}}
    assert {e.name: e.ops for e in ready} == {r.name: r.ops for r in report.rows if r.name in {e.name for e in ready}}
    if begin.done < total:
        assert all(r.origin in ("memory", "lazy") for r in report.rows if r.name not in {e.name for e in ready})
    else:  # nothing to make ready: every kernel already loaded in this process (an earlier test compiled the
        # same ones), or the whole numba schedule came from a cache
        assert not ready and all(r.origin in ("memory", "disk cache") for r in report.rows)
    # a kernel being compiled is announced before it is ready ("loading" when the disk cache held it at the
    # start: another process sharing the cache may replace the entry before the load, which then compiles)
    for i, e in enumerate(events):
        if e.origin in ("compiled", "compiled by worker"):
            assert any(p.origin in ("compiling", "loading") and p.name == e.name for p in events[:i])


_COLD = """
import json, sys
sys.path.insert(0, sys.argv[1])
from test_cli_progress import many_ops
from cnnjit.compiler.stages import CompileOptions, Hooks, specialize
events = []
spec = specialize(many_ops(), {"x": (1, 3, 8, 8)}, CompileOptions(fuse=False, entry="python"),
                  hooks=Hooks(on_kernel=lambda e: events.append(e.__dict__)))
rows = {r.name: r.origin for r in spec.program.meta["compile_report"].rows}
print(json.dumps({"events": events, "rows": rows}))
"""


def test_cold_parallel_compile_events(tmp_path: Path) -> None:
    """A cold cache with a compile worker: every kernel announced, then ready once (from either stream)."""
    r = subprocess.run([sys.executable, "-c", _COLD, str(Path(__file__).parent)], capture_output=True, text=True,
                       env=cold_env(tmp_path, CNNJIT_COMPILE_JOBS="2"), timeout=300)
    assert r.returncode == 0, r.stderr
    doc = json.loads(r.stdout)
    events, rows = [KernelEvent(**e) for e in doc["events"]], doc["rows"]
    assert events[0] == KernelEvent(0, 12, origin="begin", misses=12) and events[-1].origin == "end"
    ready = [e for e in events if e.origin in READY]
    assert sorted(e.name for e in ready) == sorted(rows) and [e.done for e in ready] == list(range(1, 13))
    assert "compiled by worker" in {e.origin for e in ready}  # the parallel path ran
    for e in ready:
        assert e.origin.startswith("compiled") and rows[e.name].startswith("compiled")
        assert [x.origin for x in events if x.name == e.name] == ["compiling", e.origin]


def test_kernel_events_end_after_a_failed_compile() -> None:
    """A compile that fails after its "begin" still sends the "end" (the display closes its bar); one that
    fails before it began sends neither: begins and ends pair up."""
    events: list[KernelEvent] = []
    with pytest.raises(CompileError, match="simd_depthwise"):  # fails in code generation, before any kernel
        specialize(many_ops(), {"x": (1, 3, 8, 8)}, CompileOptions(variants=(("Conv", "simd_depthwise"),)),
                   hooks=Hooks(on_kernel=events.append))
    assert [e.origin for e in events].count("begin") == [e.origin for e in events].count("end")

    def failing(ev: KernelEvent) -> None:
        events.append(ev)
        if ev.origin == "begin":
            raise RuntimeError("the observer fails on begin")

    events.clear()
    with pytest.raises(RuntimeError, match="observer fails"):
        specialize(many_ops(), {"x": (1, 3, 8, 8)}, CompileOptions(), hooks=Hooks(on_kernel=failing))
    assert events[0].origin == "begin" and events[-1].origin == "end"


def test_target_compile_streams_its_worker_kernels() -> None:
    """``cnnjit compile`` (aarch64): the worker process's kernels arrive as events while it runs."""
    events: list[tuple[float, KernelEvent]] = []
    with observe_kernels(lambda e: events.append((time.monotonic(), e))):
        art = compile_for_target(many_ops(), target="aarch64-linux-gnu", fuse=False)
    kinds = [e.origin for _, e in events]
    assert kinds[-1] == "end" and "begin" in kinds and "schedule" in kinds
    compiled = [(t, e) for t, e in events if e.origin == "compiled"]
    assert sorted(e.name for _, e in compiled) == sorted(set(art.kernels.values()))
    assert [e.done for _, e in compiled] == list(range(1, len(compiled) + 1)) and compiled[-1][1].total == 12
    assert compiled[-1][0] - compiled[0][0] > 0.05  # streamed, not all at once at the end
    ops = {e.ops for _, e in compiled}
    assert {"Conv", "Gemm", "Softmax", "MaxPool"} <= ops and all(e.variant for _, e in compiled)


# ---- the command line -------------------------------------------------------------------------------------
def run_on_pty(args: list[str], env: dict[str, str], timeout: float = 300) -> tuple[int, str, str]:
    """Run the console script with stderr on a pseudo-terminal (stdout a pipe); (code, stdout, terminal)."""
    master, slave = pty.openpty()
    proc = subprocess.Popen([CNNJIT, *args], stdout=subprocess.PIPE, stderr=slave, env=env)
    os.close(slave)
    seen = b""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        r, _, _ = select.select([master], [], [], 0.2)
        if r:
            try:
                chunk = os.read(master, 65536)
            except OSError:
                break
            if not chunk:
                break
            seen += chunk
        elif proc.poll() is not None:
            break
    os.close(master)
    out = proc.communicate(timeout=60)[0]
    return proc.returncode, out.decode(), seen.decode(errors="replace")


def test_cold_warm_shows_kernels_on_a_terminal(model_path: Path, tmp_path: Path) -> None:
    code, out, term = run_on_pty(["warm", str(model_path), "--unfused"], cold_env(tmp_path, CNNJIT_COMPILE_JOBS="1"))
    assert code == 0, term
    assert "kernels of" in out  # the table on stdout, the bar on the terminal only
    assert "kernels 0/12" in term and "kernels" not in out.split("kernels of", 1)[0]
    assert "compiling k0 (Conv" in term  # the kernel being compiled, with its op
    assert "kernels 11/12" in term or "kernels 12/12" in term


def test_json_and_a_pipe_stay_quiet(model_path: Path, tmp_path: Path) -> None:
    code, out, term = run_on_pty(["warm", str(model_path), "--unfused", "--json"], cold_env(tmp_path))
    assert code == 0, term
    assert json.loads(out)["compiled"] == 12
    assert "kernels 0/" not in term and "\x1b[" not in term
    r = subprocess.run([CNNJIT, "warm", str(model_path), "--unfused", "--shape", "x=2,3,8,8"], capture_output=True,
                       text=True, env=cold_env(tmp_path))
    assert r.returncode == 0 and r.stderr == "", r.stderr


def test_verbose_logs_stream_during_the_compile(model_path: Path, tmp_path: Path) -> None:
    """-vv: one line as each kernel starts and is ready, while the compile runs (not all at the end)."""
    proc = subprocess.Popen([CNNJIT, "-vv", "warm", str(model_path), "--unfused"], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=cold_env(tmp_path, CNNJIT_COMPILE_JOBS="1"))
    assert proc.stderr is not None
    stamped = [(time.monotonic(), line) for line in proc.stderr]
    proc.wait(timeout=60)
    assert proc.returncode == 0
    lines = [line for _, line in stamped]
    first = next(i for i, ln in enumerate(lines) if "kernel 1/12 k0 (Conv" in ln and ": compiled," in ln)
    last = next(i for i, ln in enumerate(lines) if "kernel 12/12" in ln)
    assert any("compiling kernel k0 (Conv" in ln for ln in lines[:first])
    assert first < last < next(i for i, ln in enumerate(lines) if "INFO: compiled 'many'" in ln)
    # each kernel's line was printed when it was ready: a cold compile of the other 11 takes time
    assert stamped[last][0] - stamped[first][0] > 0.3


def test_run_reports_each_stage_truthfully(model_path: Path, tmp_path: Path) -> None:
    """A symbolic batch compiles at the run's shapes before the first call; the compile gets the time."""
    r = subprocess.run([CNNJIT, "run", str(model_path), "--random", "--unfused", "--json", "--shape",
                        "x=2,3,8,8", "--runs", "1"], capture_output=True, text=True, env=cold_env(tmp_path))
    assert r.returncode == 0, r.stderr
    doc = json.loads(r.stdout)
    assert doc["kernels"] == "12 kernels: 12 compiled" or "compiled by worker" in doc["kernels"]
    assert doc["compile_ms"] > 500  # 12 cold kernel compiles
    assert doc["first_run_ms"] < doc["compile_ms"] / 10
    assert 0 <= doc["import_ms"] < doc["compile_ms"] and doc["load_ms"] >= 0
    r = subprocess.run([CNNJIT, "run", str(model_path), "--random", "--unfused"], capture_output=True, text=True,
                       env=cold_env(tmp_path))
    assert r.returncode == 0, r.stderr
    line = " ".join(r.stdout[r.stdout.rindex("time: "):].split())  # the time line, wrapped at 80 columns
    assert line.startswith("time: load ") and ", import " in line and ", compile " in line
    assert "first call" in line and "loads kernels" not in line


def compiled_kernels(cache: Path) -> int:
    """Kernels with machine code in the cache ``cache`` (numba writes a kernel's index as its compile ends)."""
    return len(list(cache.rglob("k_*.nbi")))


def test_ctrl_c_ends_the_compile_workers(model_path: Path, tmp_path: Path) -> None:
    """Ctrl-C mid-compile ends the command (130, "interrupted") and its compile workers with it, and no kernel
    compile starts after it: at most the two in flight (one per stream) finish.

    Judged by what the processes did, not by a wall-clock bound: the parent sees SIGINT only when the LLVM
    call it is in returns, which took 7 s on a loaded machine (a 2 s bound failed while passing alone).

    The command starts with SIGINT at its default, as a terminal's foreground job does: a suite started in the
    background of a shell without job control (``bash .ci/run &``) has SIGINT ignored, every process it starts
    inherits that, and Python then never turns SIGINT into KeyboardInterrupt (sessions 17 and 20 saw this test
    fail so, returncode 0 with the compile unfinished, in such runs only)."""
    env = cold_env(tmp_path, CNNJIT_COMPILE_JOBS="2")
    cache = Path(env["CNNJIT_CACHE_DIR"])
    as_foreground = ("import os, signal, sys; signal.signal(signal.SIGINT, signal.SIG_DFL); "
                     "os.execv(sys.argv[1], sys.argv[1:])")
    proc = subprocess.Popen([sys.executable, "-c", as_foreground, CNNJIT, "warm", str(model_path), "--unfused"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, env=env)
    parent = psutil.Process(proc.pid)
    workers: list[psutil.Process] = []
    deadline = time.monotonic() + 120
    while not workers and time.monotonic() < deadline and proc.poll() is None:
        workers = [c for c in parent.children(recursive=True)
                   if "cnnjit.compiler.codegen.precompile" in " ".join(c.cmdline())]
        time.sleep(0.05)
    assert workers, "no compile worker started"
    time.sleep(0.1)  # mid-compile (its 12 kernels take ~1 s over two workers: 0.5 s let a fast run finish first)
    done = compiled_kernels(cache)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=120)  # (timing out here fails the test too)
    assert proc.returncode == 130 and "interrupted" in err, err
    alive = [w for w in workers if w.is_running() and w.status() != psutil.STATUS_ZOMBIE]
    assert not alive, (alive, err)  # the parent ended its workers before it exited
    assert compiled_kernels(cache) <= done + 2 < 12, (done, compiled_kernels(cache))  # 12 kernels: cut short


#: every command that compiles a model, with what it needs besides MODEL ("{d}": a scratch folder)
COMPILING = {"run": ["--random", "--runs", "0"],
             "bench": ["--runs", "1", "--warmup", "0"], "profile": ["--runs", "1"], "warm": [],
             "quantize": ["--calibration", "random", "--batches", "1", "-o", "{d}/q.onnx"]}
#: the commands that show a model's schedule without running it: its kernels are bound, never compiled
SCHEDULE_ONLY = {"inspect": [], "graph": ["-o", "{d}/g.dot"]}


@pytest.mark.parametrize("cmd", list(SCHEDULE_ONLY))
def test_inspect_and_graph_compile_no_kernel(cmd: str, model_path: Path, tmp_path: Path,
                                             monkeypatch: pytest.MonkeyPatch) -> None:
    """``inspect`` and ``graph`` on an empty cache: no kernel event (so no bar) and no machine code in the
    cache, while ``run`` under the same observer sends its compile's events (the observer really listens)."""
    cache = tmp_path / "cache"
    monkeypatch.setenv("CNNJIT_CACHE_DIR", str(cache))
    events: list[KernelEvent] = []
    with observe_kernels(events.append):
        assert cli_main([cmd, str(model_path), *(a.format(d=tmp_path) for a in SCHEDULE_ONLY[cmd])]) == 0
        assert not events and not list(cache.rglob("*.nbi"))
        assert cli_main(["run", str(model_path), *COMPILING["run"]]) == 0
    kinds = [e.origin for e in events]
    assert kinds and kinds[0] == "begin" and kinds[-1] == "end" and events[0].total > 0, events


@pytest.mark.parametrize("cmd", list(COMPILING))
def test_every_compiling_command_feeds_the_live_display(cmd: str, model_path: Path, tmp_path: Path,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    """Item 1 for each command (in process; the bar itself is drawn on a terminal in the tests around): its
    compile's kernel events reach ``CompileDisplay`` while the command runs, a begin and an end per compile."""
    events: list[KernelEvent] = []

    class Recording(progress.CompileDisplay):
        def __init__(self, enabled: bool = True) -> None:
            super().__init__(enabled)
            self.enabled = enabled  # as on a terminal

        def __call__(self, ev: KernelEvent) -> None:
            events.append(ev)

    monkeypatch.setattr(progress, "CompileDisplay", Recording)
    assert cli_main([cmd, str(model_path), *(a.format(d=tmp_path) for a in COMPILING[cmd])]) == 0
    kinds = [e.origin for e in events]
    assert kinds and kinds[0] == "begin" and kinds[-1] == "end" and kinds.count("begin") == kinds.count("end")
    assert all(e.total > 0 for e in events if e.origin == "begin"), events
    events.clear()
    assert cli_main([cmd, str(model_path), *(a.format(d=tmp_path) for a in COMPILING[cmd]), "--json"]) == 0
    assert not events  # --json: no display at all


def test_bench_shows_the_kernels_inside_its_own_bars(model_path: Path, tmp_path: Path) -> None:
    """Item 1's bench/profile case: a cold compile shows as a kernel bar under bench's own bar (which no
    longer sits at 0% with nothing else moving)."""
    code, out, term = run_on_pty(["bench", str(model_path), "--unfused", "--runs", "1", "--warmup", "0"],
                                 cold_env(tmp_path, CNNJIT_COMPILE_JOBS="1"))
    assert code == 0, term
    assert "compiling" in term and "kernels 0/12" in term and "compiling k0 (Conv" in term
    assert "kernels 11/12" in term or "kernels 12/12" in term
    assert "median ms" in out and "kernels 0/" not in out  # the bar on the terminal only
    # the compile gets the compile's time (item 2, in bench's footer too): the first run loads nothing
    compile_ms, first_ms = map(float, re.search(r"compile ([\d.]+) ms \(load, passes, kernels\), first run "
                                                r"([\d.]+) ms", out).groups())
    assert first_ms < compile_ms / 10 and "loads kernels" not in out
