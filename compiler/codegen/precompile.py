"""Eager compilation of a schedule's kernels for the exact argument types it passes, and the compile report.

Code generation knows every kernel call's arguments (buffers of known dtype, int and float literals), so
the numba signature of each call is known before the first run: ``precompile`` asks numba for exactly
those signatures (``dispatcher.compile(sig)``), loading them from the on-disk cache when present. The first
call of a compiled model then compiles nothing, and the report says which kernel came from where.

Independent cache misses can be compiled in parallel worker processes (``python -m
cnnjit.compiler.codegen.precompile``, fed pickled ``(source, signatures)`` tasks on stdin) that write into
the shared on-disk cache; the parent then loads them from it. ``CNNJIT_COMPILE_JOBS`` sets the number of
compile streams (the parent counts as one; default ``auto``: the CPUs not busy with other processes, from
the load average; ``1`` = no workers), and workers are only started when at least ``MIN_PARALLEL_MISSES``
kernels miss the cache (below that a worker's start-up, about 0.7 s of import and numba set-up, costs more
than it saves). Workers end with their parent: an exception in the parent (Ctrl-C) kills them.

Progress: observers installed with ``observe_kernels(fn)`` (or ``compiler.stages.Hooks.on_kernel``) receive a
``KernelEvent`` as each kernel starts compiling and as it becomes ready, so that a command line can show
a cold compile live and a log can stream it.
"""

from __future__ import annotations

import contextlib
import json
import os
import pickle
import queue
import signal
import struct
import subprocess
import sys
import threading
import time
import warnings
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextvars import ContextVar
from dataclasses import asdict, dataclass, field
from typing import Any

import numba
import numpy as np
from numba.core import types

from cnnjit.runtime.program import Arg, Buf, Int

from .build import compile_lock, load_kernel, source_key
from .pipeline import fast_typing

#: start worker processes only when at least this many kernels must be compiled. Measured on 2 CPUs
#: (benchmarks/compile_time.py, cold vs cold par): MobileNetV2 (13 kernels) 9.1 -> 6.7 s, VWW (12) 6.1 ->
#: 4.3 s, MLPerf ResNet (10) 4.5 -> 3.5 s; kws (6 small kernels) 1.9 -> 2.0 s
MIN_PARALLEL_MISSES = 8

#: kernels compiled/loaded by this process (for ``cnnjit cache info``): origin -> count, plus seconds
STATS: dict[str, float] = {"memory": 0, "disk cache": 0, "compiled": 0, "compiled by worker": 0,
                           "compile_s": 0.0, "load_s": 0.0}
#: when set, called with ``<kernel key>/<signatures digest>`` for each kernel this process compiles (here or
#: in its workers): the test suite's cost log sets it to count the compiles two processes both did
#: (``tests/cost_log.py``); unset, nothing is kept
ON_COMPILED: Callable[[str], None] | None = None
_stats_lock = threading.Lock()


# -- signatures ---------------------------------------------------------------------------------------------
def arg_type(a: Arg, buf_types: Mapping[str, Any], literal: bool = False) -> Any:
    """The numba type a kernel sees for the schedule argument ``a``: a buffer's array type, an integer as
    int64 (or, ``literal`` and written as a literal, ``Literal[int]`` as numba types it in a compiled
    caller), a float as float64."""
    if isinstance(a, Buf):
        return buf_types[a.name]
    if isinstance(a, Int):
        return types.literal(a.value) if literal and a.form == "lit" else types.int64
    return types.float64


def call_signatures(call_args: Mapping[str, Iterable[Sequence[Arg]]], arena_dtypes: Mapping[str, np.dtype],
                    const_buffers: Mapping[str, np.ndarray], literal: bool = False) -> dict[str, list[tuple]]:
    """Per kernel, the distinct numba argument-type tuples of its calls.

    ``call_args[kernel]`` lists each call's arguments (``runtime.program.Buf`` / ``Int`` / ``Float``). Buffer
    types come from ``numba.typeof`` on the same kind of array the runtime passes, so they match what the
    dispatcher computes at call time.
    """
    buf_types: dict[str, Any] = {}
    for name, dt in arena_dtypes.items():
        buf_types[name] = numba.typeof(np.empty(1, dt))
    for name, arr in const_buffers.items():
        buf_types[name] = numba.typeof(arr)
    out: dict[str, list[tuple]] = {}
    for kname, calls in call_args.items():
        sigs: list[tuple] = []
        for args in calls:
            sig = tuple(arg_type(a, buf_types, literal) for a in args)
            if sig not in sigs:
                sigs.append(sig)
        out[kname] = sigs
    return out


# -- the report ---------------------------------------------------------------------------------------------
@dataclass
class KernelCompile:
    """One kernel of a schedule: where its machine code came from and what it cost."""

    name: str
    ops: str
    calls: int
    signatures: int
    origin: str  # memory | disk cache | compiled | compiled by worker | lazy
    seconds: float  # wall time spent in this process to have it ready (load or compile)
    compile_s: float  # cold compile time (here or in a worker); 0 when loaded
    key: str = ""


@dataclass
class CompileReport:
    """Per-kernel compile report of one specialisation (``CompiledModel.compile_report()``)."""

    rows: list[KernelCompile] = field(default_factory=list)
    jobs: int = 1
    wall_s: float = 0.0

    def counts(self) -> dict[str, int]:
        out: dict[str, int] = {}
        for r in self.rows:
            out[r.origin] = out.get(r.origin, 0) + 1
        return out

    @property
    def compiled(self) -> int:
        """Kernels compiled (here or by a worker) for this specialisation: 0 when all came from a cache."""
        return sum(1 for r in self.rows if r.origin.startswith("compiled"))

    @property
    def cache_hits(self) -> int:
        return sum(1 for r in self.rows if r.origin in ("memory", "disk cache"))

    def to_dicts(self) -> list[dict[str, Any]]:
        return [asdict(r) for r in self.rows]

    def summary(self) -> str:
        c = self.counts()
        parts = [f"{n} {k}" for k, n in c.items()]
        return (f"{len(self.rows)} kernels ({', '.join(parts) or 'none'}) in {self.wall_s:.2f} s"
                + (f" with {self.jobs} compile streams" if self.jobs > 1 else ""))

    def table(self) -> str:
        head = ("kernel", "ops", "calls", "sigs", "origin", "ready s", "compile s")
        rows = [(r.name, r.ops, str(r.calls), str(r.signatures), r.origin, f"{r.seconds:.3f}",
                 f"{r.compile_s:.3f}") for r in self.rows]
        w = [max(len(h), *(len(r[i]) for r in rows)) if rows else len(h) for i, h in enumerate(head)]
        right = {2, 3, 5, 6}

        def fmt(r: Sequence[str]) -> str:
            return "  ".join(v.rjust(w[i]) if i in right else v.ljust(w[i]) for i, v in enumerate(r))

        lines = [fmt(head), "  ".join("-" * x for x in w), *(fmt(r) for r in rows), self.summary()]
        return "\n".join(lines)

    def __str__(self) -> str:
        return self.table()

    def __len__(self) -> int:
        return len(self.rows)

    def __iter__(self):
        return iter(self.rows)


# -- progress -----------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class KernelEvent:
    """One step of making a specialisation's kernels ready (for progress displays and logs).

    ``origin`` says what happened: ``"begin"`` (``total`` kernels, ``done`` of them ready already: in
    memory, compiled lazily, or the whole schedule loaded from the cache; ``misses`` to compile),
    ``"compiling"`` (kernel ``name`` started compiling, here or in a worker; ``"loading"`` for a disk-cache
    load), then the kernel ready, with its origin as in ``KernelCompile.origin`` (``disk cache``,
    ``compiled``, ``compiled by worker``; ``done`` counts it), ``"schedule"`` /
    ``"schedule compiled"`` around the compile of a numba schedule, ``"end"`` when the specialisation is
    finished (or failed). ``ops`` are the ops the kernel computes, ``variant`` its kernel variant."""

    done: int
    total: int
    name: str = ""
    ops: str = ""
    origin: str = ""
    seconds: float = 0.0
    misses: int = 0
    variant: str = ""


KernelObserver = Callable[[KernelEvent], None]

#: the observers of the current context (``observe_kernels``); compiles in other threads see their own
_OBSERVERS: ContextVar[tuple[KernelObserver, ...]] = ContextVar("cnnjit_kernel_observers", default=())
#: "begin" events not yet closed by an "end" in this context: a specialisation that compiled nothing through
#: ``precompile`` (a native object's lowering, a lazy entry) sends no "end" either, so begins and ends pair up
_OPEN: ContextVar[int] = ContextVar("cnnjit_kernel_begins_open", default=0)


@contextlib.contextmanager
def observe_kernels(fn: KernelObserver | None) -> Iterator[None]:
    """Call ``fn(event)`` for every ``KernelEvent`` of the compiles run inside this block (in this thread or
    context); ``None`` observes nothing. Observers nest. The block counts its own open "begin" events, so a
    compile that failed between its "begin" and its "end" earlier in this context cannot close one here."""
    opened = _OPEN.set(0)
    token = _OBSERVERS.set((*_OBSERVERS.get(), fn)) if fn is not None else None
    try:
        yield
    finally:
        if token is not None:
            _OBSERVERS.reset(token)
        _OPEN.reset(opened)


class _Notifier:
    """The observers of one ``precompile`` call, callable from its worker threads: events are serialised
    and counted; an observer's exception is kept and raised in the calling thread afterwards."""

    def __init__(self, total: int, variants: Mapping[str, str] | None = None) -> None:
        self.observers = _OBSERVERS.get()
        self.variants = variants or {}
        self.total, self.done = total, 0
        self.error: BaseException | None = None
        self._lock = threading.Lock()

    def __call__(self, origin: str, name: str = "", ops: str = "", seconds: float = 0.0, misses: int = 0,
                 ready: bool = False) -> None:
        if not self.observers:
            return
        with self._lock:
            self.done += ready
            ev = KernelEvent(self.done, self.total, name, ops, origin, seconds, misses, self.variants.get(name, ""))
            for fn in self.observers:
                try:
                    fn(ev)
                except Exception as e:  # noqa: BLE001 - raised again by ``check`` in the calling thread
                    if threading.current_thread() is threading.main_thread():
                        raise
                    self.error = self.error or e

    def begin(self, done: int, misses: int) -> None:
        """The ``"begin"`` event: ``done`` kernels need nothing, ``misses`` of the others must be compiled."""
        self.done = done
        _OPEN.set(_OPEN.get() + 1)
        self("begin", misses=misses)

    def check(self) -> None:
        if self.error is not None:
            raise self.error


def notify(ev: KernelEvent) -> None:
    """Send ``ev`` to the current observers (for compiles outside ``precompile``: a target's worker)."""
    if ev.origin == "begin":
        _OPEN.set(_OPEN.get() + 1)
    for fn in _OBSERVERS.get():
        fn(ev)


def kernels_finished() -> None:
    """Tell the current observers that a specialisation is finished (``KernelEvent`` origin ``"end"``), if
    its compile began one."""
    if _OPEN.get() > 0:
        _OPEN.set(_OPEN.get() - 1)
        notify(KernelEvent(0, 0, origin="end"))


@contextlib.contextmanager
def schedule_progress(kernels: int) -> Iterator[None]:
    """Around the compile of a numba schedule calling ``kernels`` kernels: ``"schedule"`` before,
    ``"schedule compiled"`` (with its seconds) after, to the current observers."""
    observers = _OBSERVERS.get()
    for fn in observers:
        fn(KernelEvent(kernels, kernels, "schedule", origin="schedule"))
    t = time.perf_counter()
    yield
    for fn in observers:
        fn(KernelEvent(kernels, kernels, "schedule", origin="schedule compiled", seconds=time.perf_counter() - t))


# -- compiling ----------------------------------------------------------------------------------------------
def compile_jobs() -> int:
    """Compile streams to use: ``CNNJIT_COMPILE_JOBS=N`` (not a number: 1); ``auto`` or unset: the CPUs
    that other processes leave idle (a worker competing for a busy core makes the compile slower, not
    faster), see benchmarks/results/compile_time.md."""
    v = os.environ.get("CNNJIT_COMPILE_JOBS", "").strip().lower() or "auto"
    if v != "auto":
        try:
            return max(1, int(v))
        except ValueError:
            warnings.warn(f"CNNJIT_COMPILE_JOBS={v!r} is neither a number nor 'auto': compiling in this process "
                          "only", RuntimeWarning, stacklevel=2)
            return 1
    cpus = os.cpu_count() or 1
    try:
        others = max(0.0, os.getloadavg()[0] - 1.0)  # the load besides this process
    except (AttributeError, OSError):
        others = 0.0
    return max(1, min(cpus, int(cpus - others + 0.5)))


def _in_disk_cache(disp: Any, sig: tuple) -> bool:
    cache = getattr(disp, "_cache", None)
    try:
        key = cache._index_key(sig, disp.targetctx.codegen())
        return key in cache._cache_file._load_index()
    except Exception:  # noqa: BLE001 - no cache, a corrupt index, another numba layout: treat as a miss
        return False


_NO_WRAPPERS = ("no_cpython_wrapper", "no_cfunc_wrapper")


@contextlib.contextmanager
def _native_only(disp: Any) -> Iterator[None]:
    """Compile ``disp`` without numba's Python and C wrappers (restoring its options afterwards)."""
    opts = disp.targetoptions
    before = {k: opts[k] for k in _NO_WRAPPERS if k in opts}
    opts.update(dict.fromkeys(_NO_WRAPPERS, True))
    try:
        yield
    finally:
        for k in _NO_WRAPPERS:
            opts.pop(k, None)
        opts.update(before)


def _compile_sigs(disp: Any, sigs: Sequence[tuple]) -> tuple[float, int, int]:
    """Compile (or load) ``sigs`` on ``disp``; returns (seconds, hits, misses) from numba's counters.

    A signature with constant (literal) sizes is only ever called from a numba schedule, never from Python
    (which passes plain ints): it is compiled without numba's Python and C wrappers, which took a fifth of
    a kernel's compile (unboxing code for every argument)."""
    h0, m0 = sum(disp.stats.cache_hits.values()), sum(disp.stats.cache_misses.values())
    t = time.perf_counter()
    todo = any(tuple(s) not in disp.overloads for s in sigs)
    with fast_typing(), compile_lock(disp) if todo else contextlib.nullcontext():
        for sig in sigs:
            literal = any(isinstance(a, types.Literal) for a in sig)
            with _native_only(disp) if literal else contextlib.nullcontext():
                disp.compile(sig)
    dt = time.perf_counter() - t
    return dt, sum(disp.stats.cache_hits.values()) - h0, sum(disp.stats.cache_misses.values()) - m0


def precompile(dispatchers: Mapping[str, Any], sources: Mapping[str, str], signatures: Mapping[str, list[tuple]],
               calls: Mapping[str, int] | None = None, ops: Mapping[str, str] | None = None,
               jobs: int | None = None, variants: Mapping[str, str] | None = None) -> CompileReport:
    """Make every kernel ready for its exact signatures now; compile misses in workers when that wins.

    The observers of ``observe_kernels`` see each kernel start and become ready (``KernelEvent``, with its
    ``ops`` and its kernel variant from ``variants``)."""
    t_start = time.perf_counter()
    jobs = compile_jobs() if jobs is None else max(1, jobs)
    notify = _Notifier(len(dispatchers), variants)
    rows: dict[str, KernelCompile] = {}
    todo: list[str] = []
    for name, disp in dispatchers.items():
        sigs = signatures.get(name, [])
        row = KernelCompile(name, (ops or {}).get(name, ""), (calls or {}).get(name, 0), len(sigs), "memory",
                            0.0, 0.0, source_key(sources[name]))
        rows[name] = row
        if not sigs:
            row.origin = "lazy"  # numba compiles it at the first call
        elif any(tuple(s) not in disp.overloads for s in sigs):
            todo.append(name)
    misses = [n for n in todo if not all(_in_disk_cache(dispatchers[n], s) for s in signatures[n])]
    notify.begin(len(rows) - len(todo), len(misses))
    workers_used = 1
    worker_times: dict[str, float] = {}
    if jobs > 1 and len(misses) >= MIN_PARALLEL_MISSES:
        worker_times = _parallel(misses, dispatchers, sources, signatures, jobs, notify, rows)
        workers_used = min(jobs, len(misses))
    for name in todo:
        if name in worker_times:
            continue  # compiled by the parallel pass (worker or here)
        r = rows[name]
        notify("compiling" if name in misses else "loading", name, r.ops)
        dt, hits, miss = _compile_sigs(dispatchers[name], signatures[name])
        r.seconds = dt
        r.origin = "compiled" if miss else "disk cache"
        r.compile_s = dt if miss else 0.0
        notify(r.origin, name, r.ops, dt, ready=True)
    for name, (origin, ready, cold) in worker_times.items():
        r = rows[name]
        r.origin, r.seconds, r.compile_s = origin, ready, cold
    notify.check()
    with _stats_lock:
        for r in rows.values():
            STATS[r.origin] = STATS.get(r.origin, 0) + 1
            if r.origin.startswith("compiled"):
                STATS["compile_s"] += r.compile_s
                if ON_COMPILED is not None:
                    ON_COMPILED(f"{r.key}/{source_key(repr(signatures[r.name]))[:8]}")
            elif r.origin == "disk cache":
                STATS["load_s"] += r.seconds
    return CompileReport(list(rows.values()), workers_used, time.perf_counter() - t_start)


def load_entry_only(entry: Any, entry_sig: tuple, dispatchers: Mapping[str, Any], sources: Mapping[str, str],
                    signatures: Mapping[str, list[tuple]], calls: Mapping[str, int] | None = None,
                    ops: Mapping[str, str] | None = None) -> CompileReport | None:
    """Make the numba schedule ``entry`` ready for ``entry_sig`` when that compiles nothing; else None.

    The schedule's machine code links in (and mostly inlines) every kernel it calls, so when it is already
    compiled in this process or sits in the disk cache, the kernels' own machine code is not needed and is
    not loaded (numba loads a kernel from the disk cache later if something calls it from Python). The
    report then gives every kernel the schedule's origin ("memory" or "disk cache"), the load time on the
    first row. None when the schedule is not cached (or its cache entry fails to load and would be
    recompiled): the caller compiles kernels and schedule as usual.
    """
    t_start = time.perf_counter()
    if tuple(entry_sig) in entry.overloads:
        origin = "memory"
    elif _in_disk_cache(entry, entry_sig):
        misses = sum(entry.stats.cache_misses.values())
        hits = sum(entry.stats.cache_hits.values())
        cache = entry._cache
        entry._cache = _NoCompile(cache)  # a failing load must not compile here (the kernels first)
        try:
            entry.compile(entry_sig)
        except _WouldCompile:
            return None
        finally:
            entry._cache = cache
        if sum(entry.stats.cache_misses.values()) != misses or sum(entry.stats.cache_hits.values()) == hits:
            return None  # pragma: no cover - numba compiled after all
        origin = "disk cache"
    else:
        return None
    dt = time.perf_counter() - t_start
    rows = [KernelCompile(name, (ops or {}).get(name, ""), (calls or {}).get(name, 0),
                          len(signatures.get(name, [])), origin, dt if i == 0 else 0.0, 0.0,
                          source_key(sources[name]))
            for i, name in enumerate(dispatchers)]
    _Notifier(len(rows)).begin(len(rows), 0)  # all ready at once
    with _stats_lock:
        STATS[origin] = STATS.get(origin, 0) + len(rows)
        if origin == "disk cache":
            STATS["load_s"] += dt
    return CompileReport(rows, 1, dt)


class _WouldCompile(Exception):
    """Raised instead of compiling when a disk-cache load of the schedule failed."""


class _NoCompile:
    """A dispatcher cache wrapper whose load miss raises ``_WouldCompile`` (so nothing compiles)."""

    def __init__(self, cache: Any) -> None:
        self._cache = cache

    def load_overload(self, sig: Any, target_context: Any) -> Any:
        got = self._cache.load_overload(sig, target_context)
        if got is None:
            raise _WouldCompile
        return got

    def __getattr__(self, name: str) -> Any:
        return getattr(self._cache, name)


#: an interrupt recorded by ``interrupt()``
_INTERRUPTED = threading.Event()


def interrupt() -> None:
    """Record a Ctrl-C (the command line's SIGINT handler calls it besides raising KeyboardInterrupt): Python
    raises the exception wherever the signal lands, and inside a C callback (llvmlite's object-cache
    notification while numba compiles a kernel) it is printed and dropped, so the compile would go on to its
    end. A parallel kernel compile (``_parallel``) takes no kernel after it and raises KeyboardInterrupt."""
    _INTERRUPTED.set()


def interrupted(clear: bool = False) -> bool:
    """Whether ``interrupt()`` was called (and, ``clear``, forget it: a new command starts)."""
    was = _INTERRUPTED.is_set()
    if clear:
        _INTERRUPTED.clear()
    return was


def _parallel(names: list[str], dispatchers: Mapping[str, Any], sources: Mapping[str, str],
              signatures: Mapping[str, list[tuple]], jobs: int, notify: _Notifier,
              rows: Mapping[str, KernelCompile]) -> dict[str, tuple[str, float, float]]:
    """Compile the kernels ``names`` with this process plus ``jobs - 1`` workers pulling from one queue
    (slowest-looking first); the workers' results are then loaded from the disk cache here. Any exception
    here (KeyboardInterrupt included) kills the workers before it propagates."""
    tasks: queue.Queue[str] = queue.Queue()
    for n in sorted(names, key=lambda n: -len(sources[n])):  # long sources tend to compile longest
        tasks.put(n)
    out: dict[str, tuple[str, float, float]] = {}
    lock = threading.Lock()
    workers: list[_Worker] = []
    stop = threading.Event()

    def take() -> Iterator[str]:
        """Kernel names from the shared queue until it is empty or the compile is stopped."""
        while not stop.is_set() and not _INTERRUPTED.is_set():
            try:
                yield tasks.get_nowait()
            except queue.Empty:
                return

    def local() -> None:
        for n in take():
            notify("compiling", n, rows[n].ops)
            dt, _, miss = _compile_sigs(dispatchers[n], signatures[n])
            with lock:
                out[n] = ("compiled" if miss else "disk cache", dt, dt if miss else 0.0)
            notify(out[n][0], n, rows[n].ops, dt, ready=True)

    def remote() -> None:
        try:
            w = _Worker()
        except OSError:
            return
        with lock:
            workers.append(w)
        try:
            for n in take():
                notify("compiling", n, rows[n].ops)
                try:
                    cold = w.compile(sources[n], signatures[n])
                except Exception:  # noqa: BLE001 - a dead or failing worker: compile it here instead
                    tasks.put(n)
                    return
                with lock:
                    out[n] = ("compiled by worker", 0.0, cold)
                notify("compiled by worker", n, rows[n].ops, cold, ready=True)
        finally:
            w.close()

    threads = [threading.Thread(target=remote, daemon=True) for _ in range(min(jobs, len(names)) - 1)]
    try:
        for t in threads:
            t.start()
        local()
        if _INTERRUPTED.is_set():
            raise KeyboardInterrupt  # (one a C callback swallowed: ``interrupt``)
        for t in threads:
            t.join()
        local()  # anything a failed worker handed back
    except BaseException:
        stop.set()
        with lock:
            for w in workers:
                w.kill()
        raise
    for n, (origin, _, cold) in list(out.items()):
        if origin == "compiled by worker":
            dt, _, miss = _compile_sigs(dispatchers[n], signatures[n])  # now a disk-cache load
            out[n] = ("compiled" if miss else "compiled by worker", dt, cold + (dt if miss else 0.0))
    return out


class _Worker:
    """A compile worker process: reads length-prefixed pickled tasks on stdin, answers JSON lines."""

    def __init__(self) -> None:
        env = dict(os.environ, CNNJIT_COMPILE_JOBS="1")
        self.proc = subprocess.Popen([sys.executable, "-m", "cnnjit.compiler.codegen.precompile"],
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                                     env=env)

    def compile(self, source: str, sigs: list[tuple]) -> float:
        blob = pickle.dumps((source, list(sigs)))
        assert self.proc.stdin is not None and self.proc.stdout is not None
        self.proc.stdin.write(struct.pack("<Q", len(blob)) + blob)
        self.proc.stdin.flush()
        line = self.proc.stdout.readline()
        if not line:
            raise RuntimeError("compile worker exited")
        res = json.loads(line)
        if not res.get("ok"):
            raise RuntimeError(res.get("error", "compile worker failed"))
        return float(res["seconds"])

    def close(self) -> None:
        with contextlib.suppress(Exception):
            assert self.proc.stdin is not None
            self.proc.stdin.close()
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.kill()

    def kill(self) -> None:
        """End the worker now (mid-compile): the parent is giving up (an exception, Ctrl-C)."""
        with contextlib.suppress(OSError):
            self.proc.kill()
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.proc.wait(timeout=5)


def _worker_main() -> int:
    """Worker loop: compile each task's kernel for its signatures into the shared on-disk cache.

    Ctrl-C in a terminal reaches the whole process group: the worker then just ends (no traceback), and
    its parent, interrupted too, stops handing out work and kills any worker still running."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)
    inp, outp = sys.stdin.buffer, sys.stdout
    while True:
        head = inp.read(8)
        if len(head) < 8:
            return 0
        (n,) = struct.unpack("<Q", head)
        source, sigs = pickle.loads(inp.read(n))  # noqa: S301 - from our parent process, over a pipe
        try:
            dt, _, _ = _compile_sigs(load_kernel(source), sigs)
            outp.write(json.dumps({"ok": True, "seconds": dt}) + "\n")
        except Exception as e:  # noqa: BLE001
            outp.write(json.dumps({"ok": False, "error": f"{type(e).__name__}: {e}"}) + "\n")
        outp.flush()


if __name__ == "__main__":
    sys.exit(_worker_main())
