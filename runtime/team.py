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

from cnnjit.ir.errors import CompileError

from .adaptive import Chooser
from .cpus import usable_cpus

#: how long a wait spins before it goes to sleep (nanoseconds, the monotonic clock): longer than a part of a
#: split layer usually keeps the other thread waiting, far less than a time slice. A wait that slept paid the
#: futex wake-up at nearly every step (~50 us on a virtual machine: MobileNetV2 2 threads only 1.16x faster
#: than 1 spinning 5,000 polls; 1.18x with 30,000, 1.56x with 100,000, 1.64x with 300,000, measured
#: interleaved at load 1; a poll of the step wait takes ~0.5 ns on this Zen 3, so 200,000 polls are ~100 us).
#: Measured in time, not polls: a poll's cost differs from machine to machine several-fold. Sleeping still
#: matters on a busy machine: Linux schedules a session's threads as one group (autogroup), so a thread
#: spinning or yielding there takes CPU time from the thread it waits for (measured: MobileNetV2 with 2
#: threads 1.8x slower than 1 at load average 12 on 2 cores, waiting with sched_yield and no bound)
SPIN_NS = 100_000
#: how long an idle team worker keeps spinning (with the CPU's pause hint) after its last job before it sleeps
#: (nanoseconds; ``Team.words[IDLE_SPIN]``): a model called back to back (a loop, Python between the calls)
#: finds its worker awake, where a sleeping one starts on a run a futex wake-up late (~25-50 us on a VM, a
#: tenth of ResNet-8's run). Bounded: a team with no work burns at most this much CPU per worker after each
#: run (onnxruntime's pool spins for tens of milliseconds)
IDLE_SPIN_NS = 100_000
#: an idle worker also keeps spinning while the team's ``HOLD`` word (monotonic ns) is ahead: ``post`` sets it
#: to ``HOLD_CALLS`` times the time since the previous post (the call rate: a model called every 0.3 ms finds
#: its worker awake even with Python between the calls), unless that is over ``IDLE_HOLD_MAX_NS``; and
#: ``Team.rouse(hold_ns)`` for a caller about to run on the team (``runtime/model.py: Chosen``). A sleeping
#: worker starts on a job a futex wake-up late: 15-40 us on this VM when the other vCPU is idle (it halts, and
#: the wake-up is an interrupt to it), ~0.1-0.3 ms under load (ResNet-8's whole 2-thread run is ~0.17 ms)
HOLD_CALLS = 2
IDLE_HOLD_MAX_NS = 2_000_000
#: a spinning wait reads the clock once every this many polls (a power of two; a clock read is ~20 ns)
SPIN_CHECK = 64
#: the native protocol's spin (``compiler/target/steps_ir.py``, no clock there): polls before a wait sleeps
#: (~``SPIN_NS`` on the machine it was measured on), and where there is no futex, polls before every further
#: poll yields the CPU
SPIN = 200_000
#: a sleeping wait wakes up after this long at the latest (nanoseconds) to look again (a safety net: every
#: completion that a sleeper may wait for wakes it)
SLEEP_NS = 1_000_000
#: the same for an idle team worker (``parallel.idle_wait``): every job and ``rouse`` wakes it, so this is only
#: the net; at ``SLEEP_NS`` an idle worker woke 1000 times a second (measured: ~8-9 ms of CPU a second)
IDLE_SLEEP_NS = 1_000_000_000
#: a counter word is ``epoch << SHIFT | count``
SHIFT = 24
#: a claim counter's count is ``parts taken from the back * BACK + parts taken from the front``
#: (``runtime/parallel.claim``: the caller claims from the front, workers from the back)
BACK = 1 << 12
MASK = (1 << SHIFT) - 1
#: state layout (int64 words): the abort word, the sleepers' wake-up sequence (a futex on its low 32 bits)
#: and how many threads sleep; then per step a claim and a done counter, each step on its own cache line
ABORT, SEQ, SLEEPERS, LINE = 0, 1, 2, 8
#: the word of a split job's description (``batchrows.split_desc``) counting the workers inside the job
S_INFLIGHT = 2 * LINE
#: the version of the step protocol below, in every parallel schedule's text (part of its disk-cache key)
PROTOCOL_VERSION = 5
#: the futex system call number (Linux), or 0 where waits yield the CPU instead of sleeping
SYS_FUTEX = {"x86_64": 202, "amd64": 202, "aarch64": 98, "arm64": 98}.get(platform.machine().lower(), 0) \
    if sys.platform.startswith("linux") else 0
FUTEX_WAIT_PRIVATE, FUTEX_WAKE_PRIVATE = 128, 129


#: a team's words (``Team.words``, int64): the number of jobs posted (a futex on its low 32 bits), how
#: many idle workers sleep on it, a flag telling idle workers to sleep at once instead of spinning
#: (``ParallelRun.rest``: the caller will run serial schedules for a while), the number of the last
#: native job (``Team.native_job``: workers run it inside their idle wait, described in ``Team.desc``), and
#: the number of the last split job with its description's address (``Team.run_split``: a parallel schedule's
#: run, which the workers also run inside their idle wait), and how long an idle worker spins after a job
#: before it sleeps (``IDLE_SPIN_NS``, nanoseconds; a word so a benchmark or test can change it at run time),
#: until when idle workers spin in any case (``HOLD``, monotonic ns, see ``HOLD_CALLS``) and when the last job
#: was posted (``POSTED``, monotonic ns; on the second cache line of the words: the caller's, each post)
JOBS, IDLE_SLEEPERS, REST, NATIVE, SPLIT, SPLIT_DESC, IDLE_SPIN, HOLD = 0, 1, 2, 3, 4, 5, 6, 7
POSTED = LINE
#: the words of a team's native job description (``Team.desc``, ``runtime/batchrows.py``)
DESC_WORDS = 4096
#: where a batch's description keeps the caller's clock (``batchrows.C_BEGIN``: its line 5, after the CPU the
#: caller runs on): when the caller began, ran out of samples and saw every sample finished (monotonic ns)
C_BEGIN, C_OUT, C_DONE = 5 * LINE + 1, 5 * LINE + 2, 5 * LINE + 3
#: how idle workers wait for the next job: ``(idle_wait(words, seen, tid, desc), post(words) -> jobs,
#: rouse(words), ready())``, compiled (nogil) by ``runtime/parallel.py`` when numba is loaded; None: a
#: semaphore per worker (and no native jobs)
_idle_wait: tuple[Callable[..., None], Callable[..., int], Callable[..., None], Callable[[], None]] | None = None


def use_idle_wait(wait: Callable[..., None], post: Callable[..., int], rouse: Callable[..., None],
                  ready: Callable[[], None] = lambda: None) -> None:
    """Make teams started from now on wait for jobs with ``wait(words, seen, tid, desc)`` (until
    ``words[JOBS] != seen`` for a job that is not native: spin, then sleep; worker ``tid`` runs a native job
    described in ``desc`` there, ``Team.native_job``) and post them with ``post(words)`` (count one job, wake
    sleepers; returns the count); ``rouse(words)`` wakes sleepers to spin again without a job (``Team.rouse``);
    ``ready()`` makes ``wait`` callable without compiling (on the thread that starts a worker, before it starts).

    Waking an idle worker through a semaphore costs a futex wake-up and the GIL (measured on the shared
    2-core VM, ResNet-8 at 2 threads: the worker's first part began 52 us after the run's start (median), and
    in half the runs it ran nothing: the 400 us run was over first). A worker that spins (``SPIN_NS``, as the step
    waits, then sleeps) sees the job at once and needs only the GIL, which the caller gives up
    inside the compiled schedule."""
    global _idle_wait
    _idle_wait = (wait, post, rouse, ready)


def new_state(steps: int) -> np.ndarray:
    """A fresh step state for a schedule of ``steps`` steps (all counters at epoch 0)."""
    return np.zeros(LINE * (steps + 1), np.int64)


class Team:
    """Persistent worker threads (``size - 1``; ``grow`` adds more). ``run(fn, args, state, ep, threads)``
    calls ``fn(*args, main, ep, state)`` on the caller's thread (``main`` True) and on workers 1 ..
    ``threads - 1``: the caller's call waits for every step to complete, so when it returns the run's results
    are written (workers may still be catching up: they claim nothing more). Every worker sees every job
    (one futex word); those beyond the job's ``threads`` skip it."""

    def __init__(self, size: int):
        self.size = 1
        self.busy = threading.Lock()
        self._job: tuple | None = None
        self._jobs = 0
        self._go: list[threading.Semaphore] = []
        self.words = np.zeros(2 * LINE, np.int64)  # JOBS, IDLE_SLEEPERS, REST, ... (own cache lines)
        self.words[IDLE_SPIN] = IDLE_SPIN_NS
        self._idle = _idle_wait
        #: a native job's description (``runtime/batchrows.py``), read by the workers in their idle wait, and
        #: the epoch of the last one (its counters are tagged with it)
        self.desc = np.zeros(DESC_WORDS, np.int64)
        self.desc_epoch = 0
        self._done = [0]  # per thread: the last job it returned from (a Python job: native ones never return)
        self._errors: list[BaseException] = []
        self._workers: list[threading.Thread] = []
        self.grow(size)

    def grow(self, size: int) -> None:
        """Start workers until the team has ``size`` threads (the caller holds ``busy``, or no run has begun)."""
        if self._idle is not None and self.size < size:
            self._idle[3]()  # (the idle wait compiled or loaded here, not by each new worker: see parallel.ready)
        while self.size < size:
            tid = self.size
            self._go.append(threading.Semaphore(0))
            self._done.append(self._jobs)
            w = threading.Thread(target=self._work, args=(tid, self._jobs), name=f"cnnjit-worker-{tid}", daemon=True)
            self._workers.append(w)
            self.size += 1
            w.start()

    def _work(self, tid: int, seen: int) -> None:
        go = self._go[tid - 1]
        while True:
            if self._idle is None:
                go.acquire()
            else:
                self._idle[0](self.words, seen, tid, self.desc)
            job, threads, fn, args, state, ep = self._job  # one read: the job's number with its arguments
            seen = job
            if tid < threads:
                try:
                    fn(*args, False, ep, state)
                except BaseException as e:  # noqa: BLE001 - raised again by the caller; the team stays usable
                    state[ABORT] = ep
                    self._errors.append(e)
            self._done[tid] = job

    def rouse(self, hold_ns: int = 0) -> None:
        """Wake the idle workers that sleep so they spin for a job about to be posted (``SPIN_NS``): called
        before a run's inputs are copied in, their futex wake-up overlaps the copy instead of delaying the
        run's first steps (the worker sleeps once ``SPIN_NS`` has passed since its last job: a model
        called now and then, or beside other work). ``hold_ns``: keep them spinning at least that long from
        now (``HOLD``; a job expected after work of that length on the caller)."""
        if self._idle is None:
            return
        if hold_ns > 0:
            self.words[HOLD] = max(int(self.words[HOLD]), time.monotonic_ns() + hold_ns)
            self.words[REST] = 0
        if self.words[IDLE_SLEEPERS] > 0:
            self._idle[2](self.words)

    @property
    def native_jobs(self) -> bool:
        """Whether the workers run native jobs in their idle wait (``native_job``): numba was loaded when the
        team started."""
        return self._idle is not None

    def native_job(self) -> int:
        """Count a native job (the caller holds ``busy``, has described it in ``desc`` and posts it with
        ``parallel.run_batch``): its number. Workers run it in their idle wait, never returning to Python for
        it; one that does return sees a job for no thread."""
        self._jobs += 1
        self._job = (self._jobs, 0, None, (), None, 0)
        return self._jobs

    def run_split(self, entry: Callable[..., None], args: Sequence[object], state: np.ndarray, ep: int,
                  desc: np.ndarray, inflight: int) -> bool:
        """Run ``entry`` (a compiled parallel schedule) on ``args`` as run ``ep`` of ``state`` on the team,
        the workers' share as a *split job* (``runtime/batchrows.py: split_job``, described by ``desc``, the
        schedule's ``split_desc``, whose word ``inflight`` counts the workers inside it): they run it in their
        idle wait, without the GIL or numba's dispatcher, so a worker spinning there starts on the run's
        parts at once (returning to Python first cost ~25 us a run: ResNet-8's whole run is ~250 us). The
        caller holds ``busy``. False if a worker's part raised (the run was aborted and no worker is inside it
        any more: the caller finds the error by running it alone), True otherwise."""
        self._jobs += 1
        self._job = (self._jobs, 0, None, (), None, 0)  # (a worker that returns to Python runs nothing)
        desc[0] = ep  # (batchrows.S_EP; a worker that reads the description late runs this run)
        w = self.words
        w[SPLIT_DESC] = desc.ctypes.data
        w[SPLIT] = self._jobs  # (before the job count: a worker that sees the count sees the job split)
        self._idle[1](w)
        try:
            entry(*args, True, ep, state)
        except BaseException:
            state[ABORT] = ep
            while desc[inflight]:
                time.sleep(1e-4)  # (a worker may still be running a part it claimed: it writes our buffers)
            raise
        if state[ABORT] < ep:
            return True
        while desc[inflight]:
            time.sleep(1e-4)
        return False

    def run(self, fn: Callable[..., None], args: Sequence[object], state: np.ndarray, ep: int,
            threads: int | None = None) -> None:
        """Run ``fn`` as run ``ep`` of ``state`` on ``threads`` threads of the team (default: all; the
        caller holds ``busy``)."""
        self._jobs += 1
        self._job = (self._jobs, self.size if threads is None else threads, fn, args, state, ep)
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


_team: list[Team] = []  # the process's one team, once started
_team_lock = threading.Lock()


def team(size: int) -> Team:
    """The process-wide team, started at first use and grown to at least ``size`` threads.

    One team for every schedule, each run on as many of its threads as it was split for (pthreadpool's and
    onnxruntime's global pool): a team per thread count would leave one team's workers spinning after its
    run while the next model's team runs beside them, on the same cores."""
    t = _team[0] if _team else None
    if t is None or t.size < size:
        with _team_lock:
            if not _team:
                _team.append(Team(size))
            t = _team[0]
            if t.size < size:
                with t.busy:  # (no run in flight: a new worker starts at the current job count)
                    t.grow(size)
    return t


def _forget_teams() -> None:
    _team.clear()  # a forked child has none of its parent's threads


os.register_at_fork(after_in_child=_forget_teams)


class ParallelRun:
    """A parallel schedule as a callable on the schedule's buffers, like a serial one: ``run(*buffers)``.

    ``fn(*buffers, _main, _ep, _st)`` is the compiled schedule of ``steps`` steps (its layers split for
    ``threads`` threads), run on ``team_size`` threads of the process-wide team when it is free, else by the
    calling thread alone (``run_alone``, on a step state of its own). ``team_size`` is ``threads``, at most the
    CPUs this process may use: a thread beyond them can only be descheduled while it holds a part the others
    wait for (measured on the shared 2-core machine, ResNet-8: 4 threads 5x slower than 2), so its parts go to
    the others.

    Run by run, a ``Chooser`` (``runtime/adaptive.py``; unless ``chooser`` is None) picks the team or the
    caller alone (the same parts one after another: the same results bit for bit, about the serial time):
    whichever has been faster lately. On a machine whose other processes take the cores, a worker descheduled
    while it holds a part stalls every step after it (measured at load 10 on 2 cores: a recurrent model 3.9x
    slower with 2 threads than with 1); the chooser then runs the caller alone, trying the team now and then.

    ``split(fn, buffers, state, threads)``: the description of a team run of ``fn`` as a split job, or None
    (``batchrows.split_run_desc``, passed by the numba side: this module stays free of numba); None: team runs
    from Python.
    """

    def __init__(self, fn: Callable[..., None], steps: int, threads: int,
                 split: Callable[..., np.ndarray | None] | None = None):
        self.fn = fn
        self.split = split
        self.py_func = getattr(fn, "py_func", fn)  # what profilers read the kernels' namespace from
        self.steps = steps
        self.threads = threads
        self.team_size = max(1, min(threads, usable_cpus()))
        self.state = new_state(steps)
        self.epoch = 0
        #: team or caller alone, run by run; None: always the team when it is free (a small model's
        #: specialisation chooses between this schedule and its serial twin instead: one choice, not two)
        self.chooser: Chooser | None = Chooser()
        #: idle step states for runs by one calling thread, with the last epoch each ran (popped and pushed
        #: back like the arena sets: several threads may each run one alone at once)
        self._solo: list[tuple[np.ndarray, int]] = []
        #: per step state and set of buffers (their ids), the team runs' split-job description (``split_job``)
        #: with the arrays it points into (kept alive with it), or None: runs from Python
        self._split: dict[tuple[int, ...], tuple[np.ndarray, Sequence[object]] | None] = {}
        self._entry: Callable[..., None] | None = None

    def rest(self) -> None:
        """Tell the team's idle workers to stop spinning and sleep until the next job: the caller is about to
        run serial work (a small model's serial twin, ``runtime/adaptive.py``), and a worker spinning after
        the last parallel run would take CPU time from it on a busy machine."""
        if _team:
            _team[0].words[REST] = 1

    def rouse(self, hold_ns: int = 0) -> None:
        """Before a call's inputs are copied in: wake the team's sleeping workers if this schedule will
        likely run on the team (``Team.rouse``; ``hold_ns``: spinning at least that long)."""
        if _team and self.team_size > 1 and (self.chooser is None or self.chooser.best == 0):
            _team[0].rouse(hold_ns)

    def run_alone(self, *buffers: object) -> None:
        """This schedule run by the calling thread only, on an idle step state of its own (reused: its next
        epoch, so no counter needs resetting) instead of the team's: several threads can each run one sample
        at once."""
        try:
            st, ep = self._solo.pop()  # (list.pop / append are atomic: no lock on the per-call path)
        except IndexError:
            st, ep = np.zeros_like(self.state), 0  # (the team state's length: a traced schedule's is longer)
        try:
            self.fn(*buffers, True, ep + 1, st)
        finally:
            self._solo.append((st, ep + 1))

    def alone(self) -> Callable[..., None]:
        """``run_alone`` as a callable on the buffers."""
        return self.run_alone

    def _split_desc(self, buffers: Sequence[object]) -> np.ndarray | None:
        """The split-job description of team runs on ``buffers`` (``Team.run_split``), made at the first such
        run once the schedule is compiled (one native function per segment), or None: the schedule is not
        compiled so (a native program's, or not yet), or its buffers do not fit a description."""
        key = (id(self.state), *map(id, buffers))
        got = self._split.get(key, False)
        if got is False:
            segments = getattr(self.fn, "segments", None)  # (a schedule in several functions: emit.py)
            overloads = [getattr(f, "overloads", None) for f in segments or [self.fn]]
            if not all(overloads):
                return None  # (not compiled yet: look again at the next run)
            desc = None if self.split is None else self.split(self.fn, buffers, self.state, self.team_size)
            got = None if desc is None else (desc, (self.state, *buffers))
            if len(self._split) >= 16:  # (arena sets come and go: keep the recent ones)
                self._split.clear()
            self._split[key] = got
            # the caller's share: the compiled entry itself (numba's dispatcher resolves types every call),
            # or the Python function calling the segments in order
            self._entry = self.fn if segments else next(iter(overloads[0].values())).entry_point
        return None if got is None else got[0]

    def on_team(self, *buffers: object) -> bool:
        """Run on the team if it is free: True; False if another thread holds it (nothing ran). A compiled
        schedule runs as a split job (``Team.run_split``) on a team whose workers run native jobs."""
        t = team(self.team_size)
        if not t.busy.acquire(blocking=False):
            return False
        try:
            self.epoch += 1
            desc = self._split_desc(buffers) if t.native_jobs else None
            if desc is None:
                t.run(self.fn, buffers, self.state, self.epoch, self.team_size)
            elif not t.run_split(self._entry, buffers, self.state, self.epoch, desc, S_INFLIGHT):
                self.run_alone(*buffers)  # (a worker's part raised: the error, raised on this thread)
                raise CompileError("a worker's part of a parallel run failed but not when the run was repeated on "
                                   "one thread (a compiler bug; please report it with the model)")
        finally:
            t.busy.release()
        return True

    def __call__(self, *buffers: object) -> None:
        if self.team_size == 1:
            self.run_alone(*buffers)
            return
        chooser = self.chooser
        if chooser is None:  # (the choice is made outside: Specialization.with_twin)
            if not self.on_team(*buffers):
                self.run_alone(*buffers)
            return
        which = chooser.pick()
        t0 = time.perf_counter()
        if which == 0 and self.on_team(*buffers):
            chooser.record(0, time.perf_counter() - t0)
            return
        if which:
            self.rest()
        self.run_alone(*buffers)
        if which:  # (not a run that found the team busy: it tells nothing of the team's speed)
            chooser.record(1, time.perf_counter() - t0)


__all__ = ["SPIN_NS", "IDLE_SPIN_NS", "HOLD_CALLS", "IDLE_HOLD_MAX_NS", "SPIN_CHECK", "SPIN",
           "SLEEP_NS", "IDLE_SLEEP_NS", "SHIFT", "BACK", "MASK", "ABORT", "SEQ", "SLEEPERS", "LINE", "S_INFLIGHT",
           "PROTOCOL_VERSION", "SYS_FUTEX",
           "FUTEX_WAIT_PRIVATE", "FUTEX_WAKE_PRIVATE", "JOBS", "IDLE_SLEEPERS", "REST", "NATIVE", "SPLIT", "SPLIT_DESC",
           "IDLE_SPIN", "HOLD", "POSTED",
           "DESC_WORDS", "C_BEGIN", "C_OUT", "C_DONE",
           "use_idle_wait", "new_state",
           "Team", "team", "ParallelRun"]
