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

import numpy as np
from numba import njit, types

from .atomics import (
    atomic_add,
    atomic_load,
    compare_swap,
    cpu_pause,
    current_cpu,
    futex_wait,
    futex_wait_idle,
    futex_wake,
    monotonic_ns,
    sched_yield,
    spin_clock,
)
from .batchrows import (
    CALLER_CPU,
    CPU_WORDS,
    EPOCH,
    S_CALLER,
    SPLIT_WORDS,
    THREADS,
    VAR,
    batch_rows,
    describe,
    split_job,
    split_run_desc,
    words_at,
)
from .cpus import default_threads, usable_cpus
from .numba_cache import LoadWithoutRefresh
from .team import (
    ABORT,
    BACK,
    HOLD,
    HOLD_CALLS,
    IDLE_HOLD_MAX_NS,
    IDLE_SLEEPERS,
    IDLE_SPIN,
    JOBS,
    LINE,
    MASK,
    NATIVE,
    POSTED,
    PROTOCOL_VERSION,
    REST,
    SEQ,
    SHIFT,
    SLEEPERS,
    SPIN,
    SPIN_CHECK,
    SPIN_NS,
    SPLIT,
    SPLIT_DESC,
    SYS_FUTEX,
    ParallelRun,
    Team,
    new_state,
    team,
    use_idle_wait,
)

#: The step protocol's signatures, given up front: a parallel schedule calls each function with its step index
#: and part count as literal ints, and a dispatcher free to compile would specialise on every literal (one
#: compile per step and function: a 78-step schedule made 234 overloads, its cold compile 240 s, 93 s without).
#: Declared, each function compiles once and every call converts its literals to int64 (LLVM still folds them).
_ST = types.Array(types.int64, 1, "C")


@njit(types.int64(_ST, types.int64, types.int64, types.int64, types.boolean), nogil=True, cache=True)
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


@njit(types.void(_ST, types.int64, types.int64), nogil=True, cache=True)
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


@njit(types.boolean(_ST, types.int64, types.int64, types.int64), nogil=True, cache=True)
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
def idle_wait(w: np.ndarray, seen: int, tid: int, d: np.ndarray) -> None:  # pragma: no cover - compiled
    """An idle team worker's wait for the next job (``team.Team``): until ``w[JOBS]`` differs from ``seen``,
    spinning ``w[IDLE_SPIN]`` ns after its last job (``team.IDLE_SPIN_NS``, with the pause hint) and in any
    case until ``w[HOLD]`` (``team.HOLD_CALLS``; not at all once ``w[REST]`` is set), then sleeping on its
    futex (``post`` wakes sleepers; ``rouse`` too, and they spin again). A native job (``w[NATIVE]``: a
    batch's samples, ``runtime/batchrows.py``) it runs here, as thread ``tid`` of the job described in ``d``,
    and waits on, and a split job (``w[SPLIT]``: a parallel schedule's
    run, described at ``w[SPLIT_DESC]``, ``batchrows.split_job``) too: it never returns to Python (nor takes the
    GIL) for one. Where there is no futex it polls, yielding the CPU between polls after ``SPIN`` of them."""
    polls = start = slept_at = 0
    while True:
        job = atomic_load(w, JOBS)
        if job != seen:
            if atomic_load(w, NATIVE) == job:
                batch_rows(d, tid, False)
            elif atomic_load(w, SPLIT) == job:
                split_job(atomic_load(w, SPLIT_DESC), tid, slept_at)
            elif atomic_load(w, SPLIT) > job or atomic_load(w, NATIVE) > job:
                continue  # (job missed, over: the next is described and about to be posted; not a Python job)
            else:
                return
            seen = job
            polls = start = slept_at = 0  # (spin again: the next job may follow at once)
            continue
        polls += 1
        if not SYS_FUTEX:
            if polls > SPIN:
                sched_yield()
            continue
        if atomic_load(w, REST) == 0 and start >= 0:
            cpu_pause()
            if polls % SPIN_CHECK:
                continue
            now = monotonic_ns()
            if start == 0:
                start = now
            if now - start < atomic_load(w, IDLE_SPIN) or now < atomic_load(w, HOLD):
                continue
            start = -1  # (spun long enough: sleep until woken)
        atomic_add(w, IDLE_SLEEPERS, 1)
        if atomic_load(w, JOBS) == seen:  # (post() wakes only sleepers it sees)
            if slept_at == 0:
                slept_at = monotonic_ns()  # (the split job's trace: it found this worker asleep)
            if futex_wait_idle(w, JOBS, seen) == 0:  # woken, not timed out: by post(), or rouse() (spin again)
                polls = start = 0
        atomic_add(w, IDLE_SLEEPERS, -1)


@njit(nogil=True, cache=True)
def post(w: np.ndarray) -> int:  # pragma: no cover - compiled
    """Count one job posted to a team's idle workers and wake those asleep; the new count. A split job's
    description (the job about to be counted) gets the caller's CPU (``batchrows.S_CALLER``: a worker woken
    onto it moves off it, ``batchrows._off_callers_cpu``). Jobs posted at most ``IDLE_HOLD_MAX_NS /
    HOLD_CALLS`` apart keep the idle workers spinning ``HOLD_CALLS`` times that interval (``w[HOLD]``)."""
    w[REST] = 0
    if len(w) > POSTED:  # (a team's words: ``Team.words``)
        now = monotonic_ns()
        gap = now - w[POSTED]
        w[POSTED] = now
        if HOLD_CALLS * gap <= IDLE_HOLD_MAX_NS and now + HOLD_CALLS * gap > w[HOLD]:
            w[HOLD] = now + HOLD_CALLS * gap
    if atomic_load(w, SPLIT) == w[JOBS] + 1:  # (Team.run_split: its description is alive and current)
        words_at(w[SPLIT_DESC], SPLIT_WORDS)[S_CALLER] = current_cpu()
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


@njit(nogil=True, cache=True)
def run_batch(w: np.ndarray, d: np.ndarray, job: int) -> int:  # pragma: no cover - compiled
    """Post native job ``job`` (``Team.native_job``; a batch described in ``d``) to the team's idle workers
    and run the caller's part (thread 0): claim and run samples, then wait until every sample is finished
    (``batchrows.batch_rows``). How many samples the caller ran."""
    d[CALLER_CPU] = current_cpu()  # (a worker woken onto this CPU moves off it: batchrows._off_callers_cpu)
    w[NATIVE] = job  # (before the job count: a worker that sees the count sees the job native)
    post(w)
    return batch_rows(d, 0, True)


#: the argument types a team worker calls ``idle_wait`` with (``Team._work``: words, seen, tid, desc)
IDLE_WAIT_TYPES = (types.Array(types.int64, 1, "C"), types.int64, types.int64, types.Array(types.int64, 1, "C"))


def ready() -> None:
    """Compile ``idle_wait`` for a team worker's arguments (``IDLE_WAIT_TYPES``) on the calling thread, or load it
    from the disk cache (~0.02-0.06 s), before a team's first worker starts (``Team.grow``).

    Left to the worker's first call, a cold cache (a fresh install or clone, or ``runtime/__pycache__`` cleared)
    compiled it there, 2-7 s at load 1-6, while the worker ran no job: every batch ran on the caller alone
    (measured: VWW batch 8 on 2 threads, the worker's count 0 in 40 of 40 batches) and parallel schedules had
    no second thread, while the compile took the GIL from the caller's Python; and it reached the disk cache
    only if the process lived that long (a few seconds' script compiled it again in every run)."""
    idle_wait.compile(IDLE_WAIT_TYPES)


def prepare_batches() -> None:
    """Compile (or load from the disk cache) the native batch loop now (``run_batch``, ``batch_rows``,
    ``describe``), not at
    the first batch: on a description of an empty batch and words of no team. A threads=1 model's batches
    run natively only once this has run in the process (``Specialization.batch_native``)."""
    d = np.zeros(VAR, np.int64)
    d[EPOCH] = d[THREADS] = 1  # (one thread, no sample)
    describe(np.zeros(VAR, np.int64), d, np.zeros(CPU_WORDS, np.int64), 1, 0, 0)  # (Desc.fill's)
    run_batch(np.zeros(2 * LINE, np.int64), d, 1)
    batch_rows(d, 0, True)  # (its own entry: what a batch on the caller alone calls)
    rouse(np.zeros(2 * LINE, np.int64))  # (a split batch rouses the team first: loaded now, not in the first batch)


for _fn in (idle_wait, post, rouse, run_batch):
    try:
        _fn._cache = LoadWithoutRefresh(_fn.py_func)  # its first team run loads fast
    except Exception:  # noqa: BLE001 - a numba without this internal layout: its own cache stays  # pragma: no cover
        pass

use_idle_wait(idle_wait, post, rouse, ready)

__all__ = ["SPIN_NS", "PROTOCOL_VERSION", "monotonic_ns", "spin_clock", "claim", "done", "wait", "atomic_load",
           "atomic_add", "compare_swap",
           "sched_yield", "futex_wait", "futex_wake", "idle_wait", "post", "rouse", "run_batch", "prepare_batches",
           "ready", "IDLE_WAIT_TYPES",
           "new_state", "Team", "team", "ParallelRun", "split_run_desc", "default_threads", "usable_cpus"]
