"""Shared measurement utilities for the benchmark scripts.

    from benchmarks.harness import single_thread, measure, ort_session, write_json, write_markdown, bar_chart
    single_thread()                       # first: before numba/onnxruntime/numpy spin up their thread pools
    stats = measure({"a": fa, "b": fb}, runs=50, warmup=5)   # interleaved, per-run perf_counter_ns
    stats["a"]["median_ms"], stats["a"]["min_ms"], stats["a"]["p90_ms"], stats["a"]["mean_ms"]

Results go to ``benchmarks/results/`` (JSON with ``machine_info()`` embedded, a markdown table, a PNG bar
chart drawn with matplotlib's Agg backend; ``pip install -e ".[bench]"``).
"""

from __future__ import annotations

import contextlib
import gc
import json
import math
import os
import platform
import random
import statistics
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

RESULTS_DIR = Path(__file__).resolve().parent / "results"

_THREAD_VARS = ("NUMBA_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS",
                "VECLIB_MAXIMUM_THREADS", "NUMEXPR_NUM_THREADS")


# =========================================================================================================
# single-thread setup
# =========================================================================================================
def single_thread(threads: int = 1, cnnjit_default: bool = False) -> None:
    """Pin numba, OpenMP, MKL, OpenBLAS and cnnjit's default (``CNNJIT_NUM_THREADS``: a ``cnnjit.compile``
    without ``threads=`` would use every usable core) to ``threads`` thread(s); ``cnnjit_default`` leaves
    cnnjit's default alone (a benchmark of what ``cnnjit.compile(model)`` does out of the box).

    The environment variables only take effect for libraries not yet imported: call this at the top of a
    benchmark script, before importing numpy/numba/onnxruntime/cnnjit. If numba is already imported, its
    thread count is lowered with ``numba.set_num_threads`` as well. ORT sessions made with
    ``ort_session`` use ``threads`` intra-op and 1 inter-op thread.
    """
    for var in _THREAD_VARS:
        os.environ[var] = str(threads)
    if not cnnjit_default:
        os.environ["CNNJIT_NUM_THREADS"] = str(threads)
    if "numba" in sys.modules:
        try:
            import numba

            numba.set_num_threads(min(threads, numba.config.NUMBA_NUM_THREADS))
        except Exception:  # noqa: BLE001 - best effort: numba may not be fully initialised
            pass


def ort_session_options(threads: int = 1):
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.intra_op_num_threads = threads
    so.inter_op_num_threads = 1
    so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    return so


def ort_session(model, threads: int = 1, optimize: bool = True):
    """An onnxruntime CPU session for a ModelProto / bytes / path, single-threaded by default."""
    import onnx
    import onnxruntime as ort

    so = ort_session_options(threads)
    if not optimize:
        so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    if isinstance(model, onnx.ModelProto):
        model = model.SerializeToString()
    elif isinstance(model, os.PathLike):
        model = os.fspath(model)
    return ort.InferenceSession(model, so, providers=["CPUExecutionProvider"])


# =========================================================================================================
# measuring
# =========================================================================================================
def summarize(times_ns: Sequence[int]) -> dict[str, Any]:
    """median / min / p90 / mean / stdev (ms) of per-run times in nanoseconds, plus the raw times."""
    ts = sorted(int(t) for t in times_ns)
    if not ts:
        raise ValueError("no timings")
    ms = [t / 1e6 for t in ts]
    p90_idx = min(len(ms) - 1, max(0, math.ceil(0.9 * len(ms)) - 1))  # nearest-rank percentile
    return {
        "runs": len(ms),
        "median_ms": statistics.median(ms),
        "min_ms": ms[0],
        "p90_ms": ms[p90_idx],
        "mean_ms": statistics.fmean(ms),
        "stdev_ms": statistics.stdev(ms) if len(ms) > 1 else 0.0,
        "max_ms": ms[-1],
        "times_ns": [int(t) for t in times_ns],
    }


def cpu_ns(pids: Sequence[int]) -> int:
    """Nanoseconds on a CPU so far of every thread of the processes ``pids`` (Linux
    ``/proc/<pid>/task/<tid>/schedstat``; 0 where that is not readable)."""
    total = 0
    for pid in pids:
        tasks = Path(f"/proc/{pid}/task")
        try:
            tids = list(tasks.iterdir())
        except OSError:
            continue
        for t in tids:
            try:
                total += int((t / "schedstat").read_text().split()[0])
            except (OSError, ValueError, IndexError):
                pass  # (the thread ended meanwhile)
    return total


def quiesce(pids: Sequence[int] | None = None, share: float = 0.05, window_s: float = 0.005,
            max_s: float = 0.5) -> float:
    """Wait until the processes ``pids`` (default: this one) use less than ``share`` of a CPU over
    ``window_s``, at most ``max_s``; returns the seconds waited.

    Between two libraries' turns: onnxruntime's default thread pool keeps spinning for tens of ms after a
    call returns (measured on the 2-core VM, VWW batch 8: its worker held ~30% of a core for ~110 ms at load
    5, on the core the next library's second thread needs), longer than a fixed settle of 50 ms; a turn
    that starts before it stops times the other library on one core. Waiting for quiet is the same for
    both libraries (cnnjit's team sleeps ~0.1 ms after a run)."""
    pids = [os.getpid()] if pids is None else list(pids)
    t_start = time.perf_counter()
    while True:
        c0, t0 = cpu_ns(pids), time.perf_counter()
        time.sleep(window_s)
        c1, t1 = cpu_ns(pids), time.perf_counter()
        if (c1 - c0) / 1e9 < share * (t1 - t0) or t1 - t_start >= max_s:
            return t1 - t_start


def measure(fns: Mapping[str, Callable[[], Any]], runs: int = 50, warmup: int = 5, *,
            disable_gc: bool = True, min_time_s: float = 0.0,
            clock: Callable[[], int] = time.perf_counter_ns) -> dict[str, dict[str, Any]]:
    """Time each zero-argument callable ``runs`` times, interleaved.

    Every run calls each candidate once, in a fresh seeded random order, so every candidate follows every
    other equally often on average (with a fixed rotation of three candidates, one of them followed the
    cache-polluting third in 2 of 3 rounds, the other in 1); each call is timed with ``clock`` (nanoseconds:
    ``time.perf_counter_ns``, or ``time.thread_time_ns`` on a loaded machine, for 1-thread runs: time this
    thread was not running does not count).
    ``warmup`` untimed rounds come first. ``min_time_s`` keeps adding rounds beyond ``runs`` until that
    much wall time has passed (0: exactly ``runs``). Returns ``{name: summarize(times)}``.
    """
    names = list(fns)
    if not names:
        return {}
    if runs < 1:
        raise ValueError("runs must be >= 1")
    calls = [fns[n] for n in names]
    for _ in range(max(warmup, 0)):
        for f in calls:
            f()
    times: dict[str, list[int]] = {n: [] for n in names}
    gc_was_enabled = gc.isenabled()
    if disable_gc:
        gc.collect()
        gc.disable()
    try:
        t_start = time.perf_counter()
        r = 0
        rng = random.Random(0)
        order = list(range(len(names)))
        while r < runs or time.perf_counter() - t_start < min_time_s:
            rng.shuffle(order)
            for i in order:
                f = calls[i]
                t0 = clock()
                f()
                t1 = clock()
                times[names[i]].append(t1 - t0)
            r += 1
    finally:
        if disable_gc and gc_was_enabled:
            gc.enable()
    return {n: summarize(times[n]) for n in names}


def kernel_calls(program: Any) -> int:
    """Kernel calls in a compiled cnnjit schedule (a ``Program``)."""
    return len(program.calls)


# =========================================================================================================
# machine info
# =========================================================================================================
def _cpuinfo() -> dict[str, Any]:
    model, flags = "", set()
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                key, _, val = line.partition(":")
                key = key.strip()
                if key == "model name" and not model:
                    model = val.strip()
                elif key == "flags" and not flags:
                    flags = set(val.split())
    except OSError:
        pass
    return {"cpu": model or platform.processor() or platform.machine(), "flags": flags}


def machine_info() -> dict[str, Any]:
    """CPU model and SIMD flags, core counts, thread settings, and library versions."""
    info = _cpuinfo()
    flags = info.pop("flags")
    out: dict[str, Any] = {
        "cpu": info["cpu"],
        "avx512f": "avx512f" in flags,
        "avx2": "avx2" in flags,
        "fma": "fma" in flags,
        "logical_cpus": os.cpu_count(),
        "affinity_cpus": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None,
        "platform": platform.platform(),
        "python": platform.python_version(),
        "thread_env": {v: os.environ.get(v) for v in _THREAD_VARS},
        "time": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }
    for mod in ("numpy", "numba", "llvmlite", "onnx", "onnxruntime", "cnnjit"):
        try:
            out[mod] = __import__(mod).__version__
        except Exception:  # noqa: BLE001 - a missing library is just not listed
            out[mod] = None
    if "numba" in sys.modules:
        import numba

        out["numba_threads"] = numba.get_num_threads()
        try:
            import llvmlite.binding as llvm

            out["llvm_cpu"] = llvm.get_host_cpu_name()
        except Exception:  # noqa: BLE001
            pass
    return out


# =========================================================================================================
# writing results
# =========================================================================================================
def results_path(name: str, ext: str, out_dir: str | os.PathLike | None = None) -> Path:
    d = Path(out_dir) if out_dir is not None else RESULTS_DIR
    d.mkdir(parents=True, exist_ok=True)
    return d / f"{name}.{ext}"


def _jsonable(o: Any) -> Any:
    try:
        import numpy as np

        if isinstance(o, np.generic):
            return o.item()
        if isinstance(o, np.ndarray):
            return o.tolist()
    except ImportError:
        pass
    if isinstance(o, Path):
        return str(o)
    if isinstance(o, (set, tuple)):
        return list(o)
    raise TypeError(f"not JSON serialisable: {type(o).__name__}")


def write_json(name: str, payload: Mapping[str, Any], out_dir: str | os.PathLike | None = None,
               with_machine: bool = True) -> Path:
    """Write ``payload`` (plus ``"machine": machine_info()``) to ``<out_dir>/<name>.json``."""
    data = dict(payload)
    if with_machine and "machine" not in data:
        data["machine"] = machine_info()
    path = results_path(name, "json", out_dir)
    path.write_text(json.dumps(data, indent=2, default=_jsonable, allow_nan=True) + "\n")
    return path


def fmt(v: Any, digits: int = 3) -> str:
    """A table cell: floats with ``digits`` significant figures, None as an empty cell."""
    if v is None:
        return ""
    if isinstance(v, bool):
        return "yes" if v else "no"
    if isinstance(v, float):
        if math.isnan(v):
            return "nan"
        if v != 0 and (abs(v) >= 1e5 or abs(v) < 1e-3):
            return f"{v:.{digits - 1}e}"
        return f"{v:.{digits}g}" if abs(v) < 10 ** digits else f"{v:.0f}"
    return str(v)


def markdown_table(headers: Sequence[str], rows: Sequence[Sequence[Any]],
                   align: Sequence[str] | None = None) -> str:
    """A GitHub markdown table; ``align`` per column is 'l' or 'r' (default: numbers right, text left)."""
    cells = [[fmt(c) for c in row] for row in rows]
    if align is None:
        align = ["r" if rows and all(isinstance(r[i], (int, float)) and not isinstance(r[i], bool)
                                     for r in rows if r[i] is not None) else "l" for i in range(len(headers))]
    sep = ["---:" if a == "r" else "---" for a in align]
    lines = ["| " + " | ".join(headers) + " |", "| " + " | ".join(sep) + " |"]
    lines += ["| " + " | ".join(c.replace("|", "\\|") for c in row) + " |" for row in cells]
    return "\n".join(lines)


def machine_line(info: Mapping[str, Any] | None = None) -> str:
    m = info or machine_info()
    simd = "avx512f" if m.get("avx512f") else ("avx2" if m.get("avx2") else "no avx2")
    return (f"{m.get('cpu')} ({simd}), {m.get('logical_cpus')} logical CPUs; python {m.get('python')}, "
            f"numba {m.get('numba')}, onnxruntime {m.get('onnxruntime')}, numpy {m.get('numpy')}")


def write_markdown(name: str, headers: Sequence[str], rows: Sequence[Sequence[Any]], *, title: str = "",
                   notes: Sequence[str] = (), out_dir: str | os.PathLike | None = None,
                   machine: Mapping[str, Any] | None = None) -> Path:
    """Write ``<out_dir>/<name>.md``: title, machine line, the table, then notes as bullet points."""
    parts = []
    if title:
        parts += [f"# {title}", ""]
    parts += [f"Machine: {machine_line(machine)}", "", markdown_table(headers, rows), ""]
    if notes:
        parts += [f"* {n}" for n in notes] + [""]
    path = results_path(name, "md", out_dir)
    path.write_text("\n".join(parts))
    return path


def bar_chart(name: str, labels: Sequence[str], series: Mapping[str, Sequence[float]], *, ylabel: str = "",
              title: str = "", errors: Mapping[str, Sequence[tuple[float, float]]] | None = None,
              log: bool = False, annotate: Mapping[str, Sequence[str]] | None = None,
              out_dir: str | os.PathLike | None = None) -> Path | None:
    """Grouped bar chart PNG: one group per label, one bar per series (e.g. fused / unfused).

    ``errors[series]`` gives (low, high) per bar drawn as an error bar around the value (e.g. min..p90);
    ``annotate[series]`` gives a short text drawn above each bar. Returns None if matplotlib is missing.
    """
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("matplotlib is not installed (pip install -e '.[bench]'): no chart written", file=sys.stderr)
        return None
    n_series = max(len(series), 1)
    width = 0.8 / n_series
    fig, ax = plt.subplots(figsize=(max(6.0, 0.9 * len(labels) * max(1, n_series / 2) + 2), 4.8))
    xs = list(range(len(labels)))
    for k, (sname, vals) in enumerate(series.items()):
        pos = [x - 0.4 + width * (k + 0.5) for x in xs]
        yerr = None
        if errors and sname in errors:
            lo_hi = errors[sname]
            yerr = [[max(v - lo, 0.0) for v, (lo, _) in zip(vals, lo_hi)],
                    [max(hi - v, 0.0) for v, (_, hi) in zip(vals, lo_hi)]]
        bars = ax.bar(pos, vals, width, label=sname, yerr=yerr, capsize=2 if yerr else 0)
        if annotate and sname in annotate:
            tops = [max(v, hi) for v, (_, hi) in zip(vals, errors[sname])] if yerr else list(vals)
            for b, top, text in zip(bars, tops, annotate[sname]):
                ax.annotate(text, (b.get_x() + b.get_width() / 2, top), ha="center", va="bottom",
                            fontsize=7, xytext=(0, 2), textcoords="offset points")
    ax.set_xticks(xs)
    ax.set_xticklabels(labels, rotation=30, ha="right", fontsize=8)
    if log:
        ax.set_yscale("log")
    ax.set_ylabel(ylabel)
    ax.set_title(title, fontsize=10)
    if len(series) > 1:
        ax.legend(fontsize=8)
    ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    path = results_path(name, "png", out_dir)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def print_table(headers: Sequence[str], rows: Sequence[Sequence[Any]], title: str = "") -> None:
    """Print a table to the terminal (rich if installed, markdown otherwise)."""
    try:
        from rich.console import Console
        from rich.table import Table
    except ImportError:
        if title:
            print(title)
        print(markdown_table(headers, rows))
        return
    t = Table(title=title or None)
    for h in headers:
        t.add_column(h, justify="left")
    for row in rows:
        t.add_row(*(fmt(c) for c in row))
    console = Console() if sys.stdout.isatty() else Console(width=240)
    console.print(t)


@contextlib.contextmanager
def variants_without(removed: list[tuple[str, str]]):
    """The kernel variant tables without the ``removed`` (op, variant) pairs, restored when the context ends (an
    A/B of a variant against the table's next choice)."""
    from cnnjit.compiler.codegen import kernel

    unknown = [f"{op}:{name}" for op, name in removed
               if name not in {v.name for v in kernel.VARIANTS.get(op, [])}]
    if unknown:  # (a misspelt name would time the table unchanged as the "before")
        raise ValueError(f"no such kernel variant: {', '.join(unknown)}")
    saved = {op: list(kernel.VARIANTS[op]) for op, _ in removed}
    try:
        for op, name in removed:
            kernel.VARIANTS[op] = [v for v in kernel.VARIANTS[op] if v.name != name]
        yield
    finally:
        kernel.VARIANTS.update(saved)


def schedule_call(graph: Any, target: Any, x: Any) -> tuple[Callable[[], Any], Any, set[str]]:
    """A one-input IR ``graph`` generated for ``target`` as a numba schedule (as ``cnnjit.compile`` makes):
    (a zero-argument call of its compiled entry on input ``x``, bypassing the dispatcher; its first output;
    the variants its calls ran)."""
    from cnnjit.compiler.codegen.emit import generate
    from cnnjit.runtime.model import Specialization, entry_point

    prog = generate(graph, target, entry="numba")
    spec = Specialization(graph, prog)
    out = spec.run({graph.inputs[0].name: x})[0]
    bufs = spec._acquire()
    bufs.ins[0][1][...] = x
    entry, args = entry_point(prog.run), bufs.args
    return (lambda: entry(*args)), out, {c.variant for c in prog.calls}
