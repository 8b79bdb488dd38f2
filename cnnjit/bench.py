"""Timing compiled models (and onnxruntime, for comparison): interleaved runs after a warm-up.

    from cnnjit.bench import measure
    stats = measure({"cnnjit": lambda: model(x), "onnxruntime": lambda: sess.run(None, {"x": x})}, runs=50)
    stats["cnnjit"]["median_ms"], stats["cnnjit"]["min_ms"], stats["cnnjit"]["p90_ms"]

Used by ``cnnjit bench``; ``bar_chart`` draws the result with matplotlib (imported only when asked for).
"""

from __future__ import annotations

import gc
import math
import platform
import statistics
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any


def summarize(times_ns: Sequence[int]) -> dict[str, Any]:
    """median / min / p90 (nearest rank) / mean / max in milliseconds of per-run times in nanoseconds."""
    ms = sorted(t / 1e6 for t in times_ns)
    if not ms:
        raise ValueError("no timings")
    p90 = ms[min(len(ms) - 1, max(0, math.ceil(0.9 * len(ms)) - 1))]
    return {"runs": len(ms), "median_ms": statistics.median(ms), "min_ms": ms[0], "p90_ms": p90,
            "mean_ms": statistics.fmean(ms), "max_ms": ms[-1]}


def measure(fns: Mapping[str, Callable[[], Any]], runs: int = 50, warmup: int = 5,
            progress: Callable[[str, int, int], None] | None = None) -> dict[str, dict[str, Any]]:
    """Time each zero-argument callable ``runs`` times, interleaved round-robin, after ``warmup`` rounds.

    Each round calls every candidate once, starting with a different one each round, so none always runs
    right after another's cache damage. The garbage collector is off while timing. ``progress(phase,
    done, total)`` is called after each round (phase ``"warm-up"`` or ``"measure"``).
    """
    if runs < 1:
        raise ValueError("runs must be >= 1")
    names = list(fns)
    calls = [fns[n] for n in names]
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
    try:
        for r in range(runs):
            for j in range(len(names)):
                i = (r + j) % len(names)
                t0 = clock()
                calls[i]()
                t1 = clock()
                times[names[i]].append(t1 - t0)
            if progress is not None:
                progress("measure", r + 1, runs)
    finally:
        if was_enabled:
            gc.enable()
    return {n: summarize(times[n]) for n in names}


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


__all__ = ["summarize", "measure", "ort_session", "bar_chart"]
