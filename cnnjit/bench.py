"""Timing compiled models (and onnxruntime, for comparison): interleaved runs after a warm-up.

    from cnnjit.bench import measure
    stats = measure({"cnnjit": lambda: model(x), "onnxruntime": lambda: sess.run(None, {"x": x})}, runs=50)
    stats["cnnjit"]["median_ms"], stats["cnnjit"]["p99_ms"], stats["cnnjit"]["throughput_per_s"]
    measure(fns, seconds=10)  # time-bounded: rounds until 10 s have passed
    peak_rss_bytes()          # the process's peak resident memory so far

Used by ``cnnjit bench``; ``bar_chart`` draws the result with matplotlib (imported only when asked for).
"""

from __future__ import annotations

import gc
import math
import platform
import statistics
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

try:
    import resource
except ImportError:  # pragma: no cover - Windows has no resource module
    resource = None  # type: ignore[assignment]


def percentile(sorted_values: Sequence[float], q: float) -> float:
    """The nearest-rank ``q``-th percentile (0 < q <= 100) of already sorted values: a value that occurred,
    and monotonic in ``q``."""
    if not sorted_values:
        raise ValueError("no values")
    return sorted_values[min(len(sorted_values) - 1, max(0, math.ceil(q / 100 * len(sorted_values)) - 1))]


def summarize(times_ns: Sequence[int]) -> dict[str, Any]:
    """Statistics of per-run times in nanoseconds: runs, median (= p50), min, p90, p99 (nearest rank), mean and
    max in milliseconds, total_s (the time spent in the runs) and throughput_per_s (runs per second of it)."""
    ms = sorted(t / 1e6 for t in times_ns)
    if not ms:
        raise ValueError("no timings")
    med = statistics.median(ms)
    total_s = sum(ms) / 1e3
    return {"runs": len(ms), "median_ms": med, "p50_ms": med, "min_ms": ms[0], "p90_ms": percentile(ms, 90),
            "p99_ms": percentile(ms, 99), "mean_ms": statistics.fmean(ms), "max_ms": ms[-1], "total_s": total_s,
            "throughput_per_s": len(ms) / total_s if total_s else None}


def measure(fns: Mapping[str, Callable[[], Any]], runs: int = 50, warmup: int = 5,
            progress: Callable[[str, int, int], None] | None = None,
            seconds: float | None = None) -> dict[str, dict[str, Any]]:
    """Time each zero-argument callable ``runs`` times, interleaved round-robin, after ``warmup`` rounds.

    Each round calls every candidate once, starting with a different one each round, so none always runs
    right after another's cache damage. The garbage collector is off while timing. ``progress(phase,
    done, total)`` is called after each round (phase ``"warm-up"`` or ``"measure"``). With ``seconds``
    (time-bounded, like benchmark_app ``-t``) ``runs`` is ignored: timed rounds go on until ``seconds``
    have passed since the warm-up began, at least one of them (so at least ``warmup + 1`` runs in all);
    progress then counts milliseconds.
    """
    if runs < 1:
        raise ValueError("runs must be >= 1")
    if seconds is not None and not seconds > 0:
        raise ValueError("seconds must be > 0")
    names = list(fns)
    calls = [fns[n] for n in names]
    start = time.perf_counter()
    for r in range(max(warmup, 0)):
        for f in calls:
            f()
        if progress is not None:
            progress("warm-up", r + 1, warmup)
    times: dict[str, list[int]] = {n: [] for n in names}
    was_enabled = gc.isenabled()
    gc.collect()
    gc.disable()
    clock = time.perf_counter_ns
    r = 0
    try:
        while True:
            for j in range(len(names)):
                i = (r + j) % len(names)
                t0 = clock()
                calls[i]()
                t1 = clock()
                times[names[i]].append(t1 - t0)
            r += 1
            if seconds is None:
                if progress is not None:
                    progress("measure", r, runs)
                if r >= runs:
                    break
            else:
                elapsed = time.perf_counter() - start
                if progress is not None:
                    progress("measure", round(1e3 * min(elapsed, seconds)), round(1e3 * seconds))
                if elapsed >= seconds:
                    break
    finally:
        if was_enabled:
            gc.enable()
    return {n: summarize(times[n]) for n in names}


def peak_rss_bytes() -> int | None:
    """This process's peak resident set size so far, in bytes (Linux: ``VmHWM`` of /proc/self/status, which
    starts afresh at exec, unlike ``getrusage``'s, which keeps the parent's peak; elsewhere ``getrusage``;
    None where unavailable)."""
    try:
        with open("/proc/self/status", encoding="ascii") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024  # kB
    except OSError:
        pass
    if resource is None:
        return None
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return int(peak) if sys.platform == "darwin" else int(peak) * 1024  # macOS: bytes; Linux, BSD: KiB


def ort_session(model_bytes: bytes, threads: int = 1) -> Any:
    """An onnxruntime CPU session (``threads`` intra-op threads, sequential execution)."""
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.intra_op_num_threads = threads
    so.inter_op_num_threads = 1
    so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    so.log_severity_level = 3
    return ort.InferenceSession(model_bytes, so, providers=["CPUExecutionProvider"])


def cpu_name() -> str:
    """The CPU's model name (``/proc/cpuinfo`` on Linux), else what ``platform`` knows, for chart titles."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as f:
            for line in f:
                key, _, value = line.partition(":")
                if key.strip() in ("model name", "Model", "Hardware") and value.strip():
                    return " ".join(value.split())
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown CPU"


def bar_chart(stats: Mapping[str, Mapping[str, float]], path: str | Path, title: str = "") -> Path:
    """A PNG bar chart of median latency per engine, with min..p90 whiskers (matplotlib, Agg backend).

    Each value label sits past its whisker's end (never on it); ``title`` (it may span lines: the CLI puts
    the model, input shape, CPU and thread count there) is drawn and also stored as the PNG's ``Title``.
    """
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError as e:
        raise ImportError("drawing a PNG needs matplotlib: pip install matplotlib "
                          "(or pip install -e \".[bench]\")") from e
    names = list(stats)
    med = [stats[n]["median_ms"] for n in names]
    lo = [stats[n]["median_ms"] - stats[n]["min_ms"] for n in names]
    hi = [stats[n]["p90_ms"] - stats[n]["median_ms"] for n in names]
    top = max(stats[n]["p90_ms"] for n in names)
    title_lines = title.count("\n") + 1 if title else 0
    fig, ax = plt.subplots(figsize=(7, 1.3 + 0.6 * len(names) + 0.2 * title_lines), dpi=100)
    ax.barh(names, med, xerr=[lo, hi], color=["#2563eb", "#9ca3af", "#f59e0b", "#10b981"][: len(names)],
            capsize=4, error_kw={"ecolor": "#374151", "elinewidth": 1})
    for y, n in enumerate(names):
        ax.annotate(f"{med[y]:.3f} ms", (stats[n]["p90_ms"], y), xytext=(8, 0), textcoords="offset points",
                    va="center", ha="left", fontsize=9)
    ax.set_xlabel("latency per inference, ms (bar: median; whiskers: min..p90)")
    ax.set_xlim(0, top * 1.45)
    ax.invert_yaxis()
    ax.spines[["top", "right"]].set_visible(False)
    if title:
        ax.set_title(title.replace("$", r"\$"), fontsize=9, loc="left")  # "$" would start matplotlib mathtext
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path, format="png", metadata={"Title": title or "cnnjit bench", "Software": "cnnjit"})
    plt.close(fig)
    return path


__all__ = ["percentile", "summarize", "measure", "peak_rss_bytes", "ort_session", "bar_chart"]
