"""The step protocol's constants and the team of threads that runs a parallel schedule, without numba.

A parallel schedule (``runtime/parallel.py`` for the numba form, ``compiler/target/steps_ir.py`` for the
native object of the compiled-program cache) is run by every thread of a ``Team`` at once: each calls
``fn(*args, main, epoch, state)`` on one shared step state (``new_state``: per step a claim and a done
counter, see ``runtime/parallel.py`` for the protocol). This module needs only the standard library and
numpy, so a warm start from the compiled-program cache (``runtime/native.py``) can run a parallel native
program without importing numba.
"""

from __future__ import annotations

import os
import platform
import sys
import threading
import time
from collections.abc import Callable, Sequence

import numpy as np

from .cpus import usable_cpus

#: polls of a counter before a wait goes to sleep: a few hundred microseconds of spinning, longer than a part
#: of a split layer usually keeps the other thread waiting, far less than a time slice. A wait that slept
#: paid the futex wake-up at nearly every step (~50 us on a virtual machine: MobileNetV2 2 threads only 1.16x
#: faster than 1 with 5,000 polls; 1.18x with 30,000, 1.56x with 100,000, 1.64x with 300,000, measured
#: interleaved at load 1). Sleeping still matters on a busy machine: Linux schedules a session's threads as
#: one group (autogroup), so a thread spinning or yielding there takes CPU time from the thread it waits for
#: (measured: MobileNetV2 with 2 threads 1.8x slower than 1 at load average 12 on 2 cores, waiting with
#: sched_yield and no bound)
SPIN = 200_000
#: a sleeping wait wakes up after this long at the latest (nanoseconds) to look again (a safety net: every
#: completion that a sleeper may wait for wakes it)
SLEEP_NS = 1_000_000
#: a counter word is ``epoch << SHIFT | count``
SHIFT = 24
MASK = (1 << SHIFT) - 1
#: state layout (int64 words): the abort word, the sleepers' wake-up sequence (a futex on its low 32 bits)
#: and how many threads sleep; then per step a claim and a done counter, each step on its own cache line
ABORT, SEQ, SLEEPERS, LINE = 0, 1, 2, 8
#: the version of the step protocol below, in every parallel schedule's text (part of its disk-cache key)
PROTOCOL_VERSION = 3
#: the futex system call number (Linux), or 0 where waits yield the CPU instead of sleeping
SYS_FUTEX = {"x86_64": 202, "amd64": 202, "aarch64": 98, "arm64": 98}.get(platform.machine().lower(), 0) \
    if sys.platform.startswith("linux") else 0
FUTEX_WAIT_PRIVATE, FUTEX_WAKE_PRIVATE = 128, 129


#: a team's words (``Team.words``, int64): the number of jobs posted (a futex on its low 32 bits), how
#: many idle workers sleep on it, and a flag telling idle workers to sleep at once instead of spinning
#: (``ParallelRun.rest``: the caller will run serial schedules for a while)
JOBS, IDLE_SLEEPERS, REST = 0, 1, 2
#: how idle workers wait for the next job: ``(idle_wait(words, seen), post(words) -> jobs)``, compiled (nogil)
#: by ``runtime/parallel.py`` when numba is loaded; None: a semaphore per worker
_idle_wait: tuple[Callable[..., None], Callable[..., int]] | None = None


def use_idle_wait(wait: Callable[..., None], post: Callable[..., int]) -> None:
    """Make teams started from now on wait for jobs with ``wait(words, seen)`` (until ``words[JOBS] != seen``:
    spin, then sleep) and post them with ``post(words)`` (count one job, wake sleepers; returns the count).

    Waking an idle worker through a semaphore costs a futex wake-up and the GIL (measured on the shared
    2-core VM, ResNet-8 at 2 threads: the worker's first part began 52 us after the run's start (median), and
    in half the runs it ran nothing: the 400 us run was over first). A worker that spins (the step waits'
    ``SPIN`` polls, then sleeps) sees the job at once and needs only the GIL, which the caller gives up
    inside the compiled schedule."""
    global _idle_wait
    _idle_wait = (wait, post)


def new_state(steps: int) -> np.ndarray:
    """A fresh step state for a schedule of ``steps`` steps (all counters at epoch 0)."""
    return np.zeros(LINE * (steps + 1), np.int64)


class Team:
    """``size - 1`` persistent worker threads. ``run(fn, args, state, ep)`` calls ``fn(*args, main, ep,
    state)`` on every thread, the caller's with ``main`` True: the caller's call waits for every step to
    complete, so when it returns the run's results are written (workers may still be catching up: they
    claim nothing more)."""

    def __init__(self, size: int):
        self.size = size
        self.busy = threading.Lock()
        self._job: tuple | None = None
        self._jobs = 0
        self._go = [threading.Semaphore(0) for _ in range(size - 1)]
        self.words = np.zeros(LINE, np.int64)  # JOBS, IDLE_SLEEPERS (own cache line)
        self._idle = _idle_wait
        self._done = [0] * size  # per thread: the last job it returned from
        self._errors: list[BaseException] = []
        self._workers = [threading.Thread(target=self._work, args=(t,), name=f"cnnjit-worker-{t}", daemon=True)
                         for t in range(1, size)]
        for w in self._workers:
            w.start()

    def _work(self, tid: int) -> None:
        go = self._go[tid - 1]
        seen = 0
        while True:
            if self._idle is None:
                go.acquire()
            else:
                self._idle[0](self.words, seen)
            job, fn, args, state, ep = self._job  # one read: the job's number with its arguments
            seen = job
            try:
                fn(*args, False, ep, state)
            except BaseException as e:  # noqa: BLE001 - raised again by the caller; the team stays usable
                state[ABORT] = ep
                self._errors.append(e)
            self._done[tid] = job

    def run(self, fn: Callable[..., None], args: Sequence[object], state: np.ndarray, ep: int) -> None:
        """Run ``fn`` on the whole team as run ``ep`` of ``state`` (the caller holds ``busy``)."""
        self._jobs += 1
        self._job = (self._jobs, fn, args, state, ep)
        if self._idle is None:
            for go in self._go:
                go.release()
        else:
            self._idle[1](self.words)
        try:
            fn(*args, True, ep, state)
        except BaseException as e:  # noqa: BLE001 - raised below, once the workers have stopped
            state[ABORT] = ep
            self._errors.append(e)
        if state[ABORT] >= ep:
            while any(d != self._jobs for d in self._done[1:]):
                time.sleep(1e-4)  # a worker may still be running a part it claimed: it writes our buffers
            err, self._errors = self._errors[0], []
            raise err


_teams: dict[int, Team] = {}
_teams_lock = threading.Lock()


def team(size: int) -> Team:
    """The process-wide team of ``size`` threads (started at first use)."""
    t = _teams.get(size)
    if t is None:
        with _teams_lock:
            t = _teams.get(size)
            if t is None:
                t = _teams[size] = Team(size)
    return t


def _forget_teams() -> None:
    _teams.clear()  # a forked child has none of its parent's threads


os.register_at_fork(after_in_child=_forget_teams)


class ParallelRun:
    """A parallel schedule as a callable on the schedule's buffers, like a serial one: ``run(*buffers)``.

    ``fn(*buffers, _main, _ep, _st)`` is the compiled schedule of ``steps`` steps (its layers split for
    ``threads`` threads), run on the process-wide team of ``team_size`` threads when it is free, else by the
    calling thread alone (on a fresh state). ``team_size`` is ``threads``, at most the CPUs this process may
    use: a thread beyond them can only be descheduled while it holds a part the others wait for (measured on
    the shared 2-core machine, ResNet-8: 4 threads 5x slower than 2), so its parts go to the others.
    """

    def __init__(self, fn: Callable[..., None], steps: int, threads: int):
        self.fn = fn
        self.py_func = getattr(fn, "py_func", fn)  # what profilers read the kernels' namespace from
        self.steps = steps
        self.threads = threads
        self.team_size = max(1, min(threads, usable_cpus()))
        self.state = new_state(steps)
        self.epoch = 0

    def rest(self) -> None:
        """Tell the team's idle workers to stop spinning and sleep until the next job: the caller is about to
        run serial work (a small model's serial twin, ``runtime/adaptive.py``), and a worker spinning after
        the last parallel run would take CPU time from it on a busy machine."""
        t = _teams.get(self.team_size)
        if t is not None:
            t.words[REST] = 1

    def alone(self) -> Callable[..., None]:
        """This schedule run by the calling thread only, with a fresh step state of its own instead of the
        team's (several threads can each run one sample at once)."""
        return lambda *buffers: self.fn(*buffers, True, 1, new_state(self.steps))

    def __call__(self, *buffers: object) -> None:
        if self.team_size == 1:
            self.fn(*buffers, True, 1, new_state(self.steps))
            return
        t = team(self.team_size)
        if t.busy.acquire(blocking=False):
            try:
                self.epoch += 1
                t.run(self.fn, buffers, self.state, self.epoch)
            finally:
                t.busy.release()
        else:
            self.fn(*buffers, True, 1, new_state(self.steps))


__all__ = ["SPIN", "SLEEP_NS", "SHIFT", "MASK", "ABORT", "SEQ", "SLEEPERS", "LINE", "PROTOCOL_VERSION", "SYS_FUTEX",
           "FUTEX_WAIT_PRIVATE", "FUTEX_WAKE_PRIVATE", "JOBS", "IDLE_SLEEPERS", "REST", "use_idle_wait", "new_state",
           "Team", "team", "ParallelRun"]
