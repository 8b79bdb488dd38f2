"""One parallel region per inference: persistent worker threads, and completion counters between steps.

A ``threads=T`` schedule (``compiler/codegen/threads.py``) is one function ``run(<buffers>, _main, _ep,
_st)`` that every thread of a team calls at once. It walks the same list of steps on every thread; a step
is one kernel call, or a layer split into parts. At each step a thread waits until the steps it depends on
are complete (their completion counters), then *claims* parts (an atomic compare-and-swap on the step's
counter), runs each and counts it done; a step with nothing left to claim is skipped. So

* independent steps (branches of a detector head, a concat's inputs) run side by side, dependent ones wait
  for exactly what they read or overwrite, and no thread ever waits for a thread that has no work for it;
* a thread the operating system has descheduled (a machine busier than its cores) holds nobody up: the
  others claim its parts, and when it runs again it finds everything claimed and catches up in
  microseconds. A fixed assignment of parts to threads with a barrier per layer collapsed under load
  (measured on the shared 2-core machine: 2 threads 3-18x slower than 1 on an elementwise chain).

Counters are tagged with the run's *epoch* (``word = epoch << SHIFT | count``), so they are never reset and a
worker still catching up from the previous run claims nothing in the next. Waits spin ``SPIN_NS`` (100 us on the
monotonic clock; ``runtime/team.py`` says why so long), then sleep on a futex that every completion wakes
when someone sleeps (``sched_yield`` between polls where there is no futex): pure spinning is ~1000x slower
when threads outnumber free cores (see /work/shared/notes/parallel-schedule.md), and yielding still burns the
CPU share of the waiting thread's own process. A call that raises on any thread records the epoch in the
state's abort word: every wait of that run gives up and the caller raises the error once every worker has
returned.

The team is process-wide, one for every schedule, started once and grown to the largest thread count asked
(``team(T)``, in ``runtime/team.py`` with the protocol's constants: no numba there, so the compiled-program
cache's native parallel programs run on the same team): daemon threads that wait for a job (``idle_wait``),
run it if it wants that many threads, and wait again. A caller that finds the team busy
(another Python thread is running a model on it) runs the schedule alone instead of queueing, so concurrent
callers add one thread each, not a team.
"""

from __future__ import annotations

import ctypes
from collections.abc import Callable

import numpy as np
from llvmlite import binding as llvm_binding
from llvmlite import ir
from numba import njit, types
from numba.core import cgutils
from numba.extending import intrinsic

from .cpus import default_threads, usable_cpus
from .numba_cache import LoadWithoutRefresh
from .team import (
    ABORT,
    BACK,
    FUTEX_WAIT_PRIVATE,
    FUTEX_WAKE_PRIVATE,
    IDLE_SLEEPERS,
    JOBS,
    LINE,
    MASK,
    PROTOCOL_VERSION,
    REST,
    SEQ,
    SHIFT,
    SLEEP_NS,
    SLEEPERS,
    SPIN,
    SPIN_CHECK,
    SPIN_NS,
    SYS_FUTEX,
    ParallelRun,
    Team,
    new_state,
    team,
    use_idle_wait,
)


def _register_libc(*names: str) -> None:
    """Make libc functions resolvable by name in JIT-compiled (and disk-cached) code: the intrinsics below
    declare the symbols, so cached machine code holds no process-specific address."""
    for name in names:
        try:
            fn = getattr(ctypes.CDLL(None), name)
        except (OSError, AttributeError):  # pragma: no cover - not a POSIX libc: LLVM resolves it or fails loudly
            continue
        llvm_binding.add_symbol(name, ctypes.cast(fn, ctypes.c_void_p).value)


_register_libc("sched_yield", "syscall", "clock_gettime")
#: ``clock_gettime``'s monotonic clock (Linux; only read where there is a futex, see ``spin_clock``)
CLOCK_MONOTONIC = 1


def _word_pointer(context, builder, aryty, ary, idx):
    arr = context.make_array(aryty)(context, builder, ary)
    return cgutils.get_item_pointer(context, builder, aryty, arr, [idx])


def _on_word(result: types.Type, nargs: int, emit: Callable[..., ir.Value]) -> Callable[..., object]:
    """An intrinsic ``f(arr, idx, *ints)`` on the int64 word ``arr[idx]`` (``arr`` an int64 array, ``nargs``
    int64 operands, at most 2) returning ``result``: its code is ``emit(builder, word pointer, operands)``."""

    def codegen(context, builder, sig, args):
        return emit(builder, _word_pointer(context, builder, sig.args[0], args[0], args[1]), args[2:])

    def typed(arr):
        if not (isinstance(arr, types.Array) and arr.dtype == types.int64):
            return None
        return result(arr, types.intp, *[types.int64] * nargs), codegen

    # numba's intrinsics take fixed parameters (no *args)
    typers = [lambda typingctx, arr, idx: typed(arr), lambda typingctx, arr, idx, a: typed(arr),
              lambda typingctx, arr, idx, a, b: typed(arr)]
    return intrinsic(typers[nargs])


#: ``atomic_load(arr, idx)``: ``arr[idx]`` read with acquire ordering (a poll no compiler hoists from a loop)
atomic_load = _on_word(types.int64, 0, lambda b, ptr, ops: b.load_atomic(ptr, "acquire", 8))
#: ``atomic_add(arr, idx, v)``: ``arr[idx] += v`` as one sequentially consistent operation; the old value
atomic_add = _on_word(types.int64, 1, lambda b, ptr, ops: b.atomic_rmw("add", ptr, ops[0], "seq_cst"))
#: ``compare_swap(arr, idx, old, new)``: atomically ``arr[idx] = new`` if it holds ``old``; True if it did
compare_swap = _on_word(types.boolean, 2, lambda b, ptr, ops: b.extract_value(
    b.cmpxchg(ptr, ops[0], ops[1], "seq_cst", "seq_cst"), 1))


def _futex(builder, ptr, op: int, val: ir.Value, timeout_ns: int) -> ir.Value:
    """``syscall(SYS_futex, low 32 bits of *ptr, op, val, timeout)``."""
    i64, i32 = ir.IntType(64), ir.IntType(32)
    word = builder.bitcast(ptr, i32.as_pointer())  # little-endian: the low half (both platforms of SYS_FUTEX)
    fn = cgutils.get_or_insert_function(builder.module, ir.FunctionType(i64, [i64], var_arg=True), "syscall")
    tp: ir.Value = ir.Constant(i64, 0)
    if timeout_ns:
        spec_t = ir.LiteralStructType([i64, i64])
        spec = cgutils.alloca_once(builder, spec_t)
        builder.store(ir.Constant(spec_t, [timeout_ns // 10**9, timeout_ns % 10**9]), spec)
        tp = builder.ptrtoint(spec, i64)
    return builder.call(fn, [ir.Constant(i64, SYS_FUTEX), builder.ptrtoint(word, i64), ir.Constant(i64, op),
                             builder.zext(builder.trunc(val, i32), i64), tp])


#: ``futex_wait(arr, idx, expected)``: sleep while the low 32 bits of ``arr[idx]`` equal those of ``expected``
#: (until woken, or ``SLEEP_NS``); returns at once if they differ
futex_wait = _on_word(types.int64, 1, lambda b, ptr, ops: _futex(b, ptr, FUTEX_WAIT_PRIVATE, ops[0], SLEEP_NS))
#: ``futex_wake(arr, idx)``: wake every thread sleeping in ``futex_wait`` on ``arr[idx]``
futex_wake = _on_word(types.int64, 0, lambda b, ptr, ops: _futex(
    b, ptr, FUTEX_WAKE_PRIVATE, ir.Constant(ir.IntType(64), 2**31 - 1), 0))


@intrinsic
def sched_yield(typingctx):
    """The ``sched_yield`` system call: give the CPU to another runnable thread."""
    sig = types.int32()

    def codegen(context, builder, sig, args):
        fn = cgutils.get_or_insert_function(builder.module, ir.FunctionType(ir.IntType(32), []), "sched_yield")
        return builder.call(fn, [])

    return sig, codegen


@njit(nogil=True, cache=True)
def claim(st: np.ndarray, step: int, ep: int, parts: int, front: bool) -> int:  # pragma: no cover - compiled
    """The index of a part of ``step`` this thread now owns in run ``ep``, or -1 if none is left (or the
    run was aborted). The caller (``front``) takes parts from the first up, the workers from the last down
    (``BACK``): with 2 threads each runs the same part of every step, so a band of rows a layer writes is
    read by the next layer on the thread that wrote it, from its own cache (spatial affinity), unless one
    thread came late and the other took its part."""
    i = LINE * (step + 1)
    while True:
        c = atomic_load(st, i)
        e = c >> SHIFT
        if e > ep or atomic_load(st, ABORT) >= ep:
            return -1
        k = (c & MASK) if e == ep else 0
        lo, hi = k & (BACK - 1), k // BACK  # parts taken from the front, from the back
        if lo + hi >= parts:
            return -1
        if compare_swap(st, i, c, (ep << SHIFT) | (k + (1 if front else BACK))):
            return lo if front else parts - 1 - hi


@njit(nogil=True, cache=True)
def done(st: np.ndarray, step: int, ep: int) -> None:  # pragma: no cover - compiled
    """Count one part of ``step`` complete in run ``ep`` (after its results are written)."""
    i = LINE * (step + 1) + 1
    while True:
        c = atomic_load(st, i)
        n = (c & MASK) + 1 if (c >> SHIFT) == ep else 1
        if compare_swap(st, i, c, (ep << SHIFT) | n):
            break
    if SYS_FUTEX and atomic_load(st, SLEEPERS) > 0:  # (after the count: a sleeper re-checks after counting)
        atomic_add(st, SEQ, 1)
        futex_wake(st, SEQ)


@intrinsic
def monotonic_ns(typingctx):
    """``clock_gettime(CLOCK_MONOTONIC)`` in nanoseconds (Linux: the vDSO, ~20 ns, no system call)."""
    sig = types.int64()

    def codegen(context, builder, sig, args):
        i64, i32 = ir.IntType(64), ir.IntType(32)
        spec_t = ir.LiteralStructType([i64, i64])  # struct timespec on 64-bit Linux
        spec = cgutils.alloca_once(builder, spec_t)
        fn = cgutils.get_or_insert_function(builder.module, ir.FunctionType(i32, [i32, spec_t.as_pointer()]),
                                            "clock_gettime")
        builder.call(fn, [ir.Constant(i32, CLOCK_MONOTONIC), spec])
        zero = ir.Constant(i32, 0)
        sec = builder.load(builder.gep(spec, [zero, zero]))
        nsec = builder.load(builder.gep(spec, [zero, ir.Constant(i32, 1)]))
        return builder.add(builder.mul(sec, ir.Constant(i64, 10**9)), nsec)

    return sig, codegen


@njit(nogil=True, cache=True, inline="always")
def spin_clock(polls: int, start: int) -> int:  # pragma: no cover - compiled
    """A spinning wait's clock after its ``polls``-th poll: ``start`` is when it began spinning (0 before the
    first clock read), the result the same, or -1 once it has spun ``SPIN_NS``: sleep. Where there is no futex
    it never sleeps: after ``SPIN`` polls every poll yields the CPU."""
    if not SYS_FUTEX:
        if polls > SPIN:
            sched_yield()
        return start
    if start < 0 or polls % SPIN_CHECK != 0:
        return start
    now = monotonic_ns()
    if start == 0:
        return now
    return start if now - start < SPIN_NS else -1


@njit(nogil=True, cache=True)
def wait(st: np.ndarray, step: int, ep: int, parts: int) -> bool:  # pragma: no cover - compiled
    """Wait until all ``parts`` of ``step`` are complete in run ``ep``: True, or False if the run was
    aborted (the caller then stops)."""
    i = LINE * (step + 1) + 1
    want = (ep << SHIFT) | parts
    polls = start = 0
    while True:
        c = atomic_load(st, i)
        if c == want or (c >> SHIFT) > ep:
            return True
        if atomic_load(st, ABORT) >= ep:
            return False
        polls += 1
        start = spin_clock(polls, start)
        if start >= 0:
            continue
        seq = atomic_load(st, SEQ)
        atomic_add(st, SLEEPERS, 1)
        c = atomic_load(st, i)  # completed meanwhile? (done() wakes only sleepers it sees)
        if c != want and (c >> SHIFT) <= ep:
            futex_wait(st, SEQ, seq)
        atomic_add(st, SLEEPERS, -1)


@njit(nogil=True, cache=True)
def idle_wait(w: np.ndarray, seen: int) -> None:  # pragma: no cover - compiled
    """An idle team worker's wait for the next job (``team.Team``): until ``w[JOBS]`` differs from ``seen``,
    spinning ``SPIN_NS`` (not at all once ``w[REST]`` is set), then sleeping on its futex (``post`` wakes
    sleepers; ``rouse`` too, and they spin ``SPIN_NS`` again)."""
    polls = start = 0
    while atomic_load(w, JOBS) == seen:
        polls += 1
        if atomic_load(w, REST) == 0:
            start = spin_clock(polls, start)
            if start >= 0:
                continue
        atomic_add(w, IDLE_SLEEPERS, 1)
        if atomic_load(w, JOBS) == seen:  # (post() wakes only sleepers it sees)
            if futex_wait(w, JOBS, seen) == 0:  # woken, not timed out: by post(), or rouse() (spin again)
                polls = start = 0
        atomic_add(w, IDLE_SLEEPERS, -1)


@njit(nogil=True, cache=True)
def post(w: np.ndarray) -> int:  # pragma: no cover - compiled
    """Count one job posted to a team's idle workers and wake those asleep; the new count."""
    w[REST] = 0
    n = atomic_add(w, JOBS, 1) + 1
    if SYS_FUTEX and atomic_load(w, IDLE_SLEEPERS) > 0:
        futex_wake(w, JOBS)
    return n


@njit(nogil=True, cache=True)
def rouse(w: np.ndarray) -> None:  # pragma: no cover - compiled
    """Wake a team's sleeping idle workers without a job: they spin ``SPIN_NS`` again, so the job posted
    within that time starts on them at once instead of after a futex wake-up (~25-50 us on a VM)."""
    w[REST] = 0
    if SYS_FUTEX and atomic_load(w, IDLE_SLEEPERS) > 0:
        futex_wake(w, JOBS)


for _fn in (idle_wait, post, rouse):
    try:
        _fn._cache = LoadWithoutRefresh(_fn.py_func)  # its first team run loads fast
    except Exception:  # noqa: BLE001 - a numba without this internal layout: its own cache stays  # pragma: no cover
        pass

use_idle_wait(idle_wait, post, rouse)

__all__ = ["SPIN_NS", "PROTOCOL_VERSION", "monotonic_ns", "spin_clock", "claim", "done", "wait", "atomic_load",
           "atomic_add", "compare_swap",
           "sched_yield", "futex_wait", "futex_wake", "idle_wait", "post", "rouse",
           "new_state", "Team", "team", "ParallelRun", "default_threads", "usable_cpus"]
