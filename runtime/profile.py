"""Per-kernel-call timing of a compiled schedule: run ``Program.source`` one call at a time.

    from cnnjit.runtime.profile import profile_calls
    spec = model.specialization({"x": (1, 3, 32, 32)})
    for c in sorted(profile_calls(spec, repeat=50), key=lambda c: -c.median_s):
        print(c.index, c.kernel, c.note, c.median_s)

The schedule is a straight-line ``def run(<buffers>)`` whose body makes one kernel call per line. Each line
becomes a small function over the same buffers; one repetition writes the inputs into a private copy of
the arenas and runs every line in order (so each call sees exactly the data it sees in a normal run),
timing each call with ``perf_counter_ns``. The first repetitions are warm-up (numba compiles or loads a
kernel on its first call).
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from .model import Specialization
from .program import Program


@dataclass
class CallTiming:
    """One kernel call of the schedule: position, kernel name, the schedule's comment, and its timings."""

    index: int
    kernel: str
    note: str
    line: str
    times_ns: list[int] = field(default_factory=list)

    @property
    def op(self) -> str:
        """The op named by the schedule comment (its first word), or the kernel name."""
        return self.note.split(" ", 1)[0] if self.note else self.kernel

    @property
    def median_s(self) -> float:
        return statistics.median(self.times_ns) / 1e9 if self.times_ns else 0.0

    @property
    def min_s(self) -> float:
        return min(self.times_ns) / 1e9 if self.times_ns else 0.0


def schedule_calls(program: Program) -> list[tuple[str, str, str]]:
    """(kernel name, call statement, comment) for every call line of the schedule, in order."""
    out = []
    for line in program.source.splitlines()[1:]:
        stmt = line.strip()
        if not stmt or stmt.startswith("#") or stmt == "pass":
            continue
        call, _, note = stmt.partition("  # ")
        out.append((call.split("(", 1)[0].strip(), call.strip(), note.strip()))
    return out


def _namespace(program: Program) -> dict[str, Any]:
    """The globals the schedule runs in (they hold the kernel dispatchers k0, k1, ...)."""
    fn = getattr(program.run, "py_func", program.run)  # entry="numba": the dispatcher wraps the Python function
    return fn.__globals__


def _buffers(program: Program) -> dict[str, np.ndarray]:
    """Fresh arenas (and the shared constant pools) for this program, like a Specialization's own."""
    bufs: dict[str, np.ndarray] = {}
    for name in program.buffer_names:
        if name in program.const_buffers:
            bufs[name] = program.const_buffers[name]
        else:
            bufs[name] = np.zeros(max(program.arena_sizes.get(name, 0), 1), program.arena_dtypes[name])
    return bufs


def random_feeds(program: Program, seed: int = 0) -> dict[str, np.ndarray]:
    """Seeded inputs of the program's shapes: standard normal floats, small non-negative integers."""
    rng = np.random.default_rng(seed)
    feeds = {}
    for b in program.inputs:
        dt = np.dtype(b.dtype)
        if dt.kind == "f":
            feeds[b.name] = rng.standard_normal(b.shape).astype(dt)
        elif dt.kind == "b":
            feeds[b.name] = rng.integers(0, 2, b.shape).astype(dt)
        else:
            feeds[b.name] = rng.integers(0, 10, b.shape).astype(dt)
    return feeds


def profile_calls(spec: Specialization, feeds: Mapping[str, np.ndarray] | None = None, repeat: int = 20,
                  warmup: int = 2) -> list[CallTiming]:
    """Time every kernel call of ``spec``'s schedule over ``repeat`` full runs (after ``warmup`` runs).

    ``feeds`` are the inputs by name (default: ``random_feeds``); they must have the specialisation's
    shapes and dtypes. Returns one ``CallTiming`` per call, in schedule order.
    """
    p = spec.program
    feeds = dict(feeds) if feeds is not None else random_feeds(p)
    for b in p.inputs:
        if b.name not in feeds:
            raise KeyError(f"no input {b.name!r} given")
    ns = _namespace(p)
    params = ", ".join(p.buffer_names)
    calls = schedule_calls(p)
    steps: list[Callable[..., None]] = []
    for i, (_, stmt, _) in enumerate(calls):
        local: dict[str, Any] = {}
        exec(compile(f"def _step({params}):\n    {stmt}\n", f"<cnnjit call {i}>", "exec"), ns, local)  # noqa: S102
        steps.append(local["_step"])
    bufs = _buffers(p)
    args = [bufs[n] for n in p.buffer_names]
    timings = [CallTiming(i, k, note, stmt) for i, (k, stmt, note) in enumerate(calls)]
    clock = time.perf_counter_ns
    for r in range(max(warmup, 0) + max(repeat, 1)):
        for b in p.inputs:
            if b.size:
                bufs[b.buffer][b.offset:b.offset + b.size] = np.asarray(feeds[b.name], b.dtype).reshape(-1)
        for step, t in zip(steps, timings):
            t0 = clock()
            step(*args)
            t1 = clock()
            if r >= warmup:
                t.times_ns.append(t1 - t0)
    return timings


_PEAK_SCRIPT = """
import time, numpy as np
n, repeat = {n}, {repeat}
rng = np.random.default_rng(0)
a = rng.standard_normal((n, n), dtype=np.float32)
b = rng.standard_normal((n, n), dtype=np.float32)
a @ b
best = min((lambda t0: (a @ b, time.perf_counter() - t0)[1])(time.perf_counter()) for _ in range(repeat))
print(2.0 * n ** 3 / best / 1e9)
"""

_peak_cache: dict[tuple[int, int], float] = {}


def peak_gflops(n: int = 512, threads: int = 1, repeat: int = 5) -> float:
    """A simple machine peak: float32 GFLOP/s of numpy's n x n matrix multiply (BLAS sgemm), best of ``repeat``.

    Measured once per process, in a child process whose BLAS is limited to ``threads`` thread(s) (the
    thread count of an already-loaded BLAS cannot be changed portably).
    """
    key = (n, threads)
    if key not in _peak_cache:
        import os
        import subprocess
        import sys

        env = dict(os.environ)
        for var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS", "VECLIB_MAXIMUM_THREADS"):
            env[var] = str(threads)
        out = subprocess.run([sys.executable, "-c", _PEAK_SCRIPT.format(n=int(n), repeat=int(repeat))], env=env,
                             capture_output=True, text=True, timeout=120, check=True)
        _peak_cache[key] = float(out.stdout.strip().splitlines()[-1])
    return _peak_cache[key]


__all__ = ["CallTiming", "schedule_calls", "profile_calls", "random_feeds", "peak_gflops"]
