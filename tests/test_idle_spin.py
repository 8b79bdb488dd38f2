"""An idle team worker spins a bounded time after its last job, then sleeps (``parallel.idle_wait``,
``team.IDLE_SPIN_NS`` in the team's word ``IDLE_SPIN``): a model called back to back finds it awake, and a team
with no work burns no CPU. Timed loosely (a loaded machine deschedules the worker): only upper bounds."""

from __future__ import annotations

import time

import pytest

from cnnjit.runtime import parallel  # noqa: F401 - (numba's idle wait: the workers run native jobs)
from cnnjit.runtime.team import IDLE_SLEEPERS, IDLE_SPIN, IDLE_SPIN_NS, REST, new_state, team


def _worker_cpu_ns(t) -> int:
    """The CPU time of the team's first worker thread (ns)."""
    return time.clock_gettime_ns(time.pthread_getcpuclockid(t._workers[0].ident))


def _job(t) -> None:
    """One job for the whole team, run from Python (the worker returns to Python for it, then waits again)."""
    with t.busy:
        t.run(lambda main, ep, st: None, (), new_state(0), t._jobs + 1, 2)
    deadline = time.monotonic() + 10
    while t._done[1] != t._jobs:  # (the worker back in its idle wait)
        assert time.monotonic() < deadline, "the worker did not take the job"
        time.sleep(1e-3)


def _asleep_within(t, seconds: float) -> bool:
    deadline = time.monotonic() + seconds
    while t.words[IDLE_SLEEPERS] == 0:
        if time.monotonic() > deadline:
            return False
        time.sleep(1e-3)
    return True


@pytest.fixture
def idle_team():
    t = team(2)
    if not t.native_jobs:
        pytest.skip("the team's workers wait in Python (numba not loaded)")
    t.words[REST] = 0
    yield t
    t.words[IDLE_SPIN] = IDLE_SPIN_NS


def test_the_worker_spins_after_a_job_then_sleeps_and_burns_nothing_idle(idle_team) -> None:
    t = idle_team
    assert t.words[IDLE_SPIN] == IDLE_SPIN_NS and 0 < IDLE_SPIN_NS <= 1_000_000  # (bounded: at most 1 ms)
    t.words[IDLE_SPIN] = 60 * 10**9  # spin (for a minute at most) after the next job
    _job(t)
    c0 = _worker_cpu_ns(t)
    time.sleep(0.2)
    assert t.words[IDLE_SLEEPERS] == 0, "the worker slept within its spin window"
    assert _worker_cpu_ns(t) - c0 > 1_000_000, "the worker did not spin (no CPU time in 0.2 s)"
    t.words[IDLE_SPIN] = IDLE_SPIN_NS  # (read live: the spin ends once it has run this long)
    assert _asleep_within(t, 5.0), "the worker kept spinning past its window"
    c0 = _worker_cpu_ns(t)
    time.sleep(0.3)
    idle_ns = _worker_cpu_ns(t) - c0
    assert idle_ns < 1_500_000, f"an idle worker used {idle_ns / 1e6:.2f} ms of CPU in 0.3 s"


def test_after_a_job_the_worker_sleeps_within_its_window(idle_team) -> None:
    t = idle_team
    for spin in (IDLE_SPIN_NS, 0):  # (0: asleep at once after the job)
        t.words[IDLE_SPIN] = spin
        c0 = _worker_cpu_ns(t)
        _job(t)
        assert _asleep_within(t, 5.0)
        # the job itself and a spin of at most ``spin`` (plus the wake-up's and the clock's slack)
        assert _worker_cpu_ns(t) - c0 < spin + 20_000_000


def test_rest_sends_a_spinning_worker_to_sleep(idle_team) -> None:
    t = idle_team
    t.words[IDLE_SPIN] = 60 * 10**9
    _job(t)
    time.sleep(0.05)
    assert t.words[IDLE_SLEEPERS] == 0
    t.words[REST] = 1  # (ParallelRun.rest: the caller runs serial work now)
    try:
        assert _asleep_within(t, 5.0)
    finally:
        t.words[REST] = 0


def test_a_hold_keeps_the_worker_spinning_past_its_window_then_it_sleeps(idle_team) -> None:
    """``HOLD`` (``Team.rouse(hold_ns)``, ``post``'s call rate): the worker spins until then whatever its own
    window, and sleeps after it."""
    t = idle_team
    t.words[IDLE_SPIN] = 0  # (its own window: none)
    _job(t)
    assert _asleep_within(t, 5.0)
    t.rouse(1_000_000_000)  # (held 1 s from now: woken, and spinning)
    time.sleep(0.1)
    c0 = _worker_cpu_ns(t)
    time.sleep(0.3)
    assert t.words[IDLE_SLEEPERS] == 0, "the worker slept within its hold"
    assert _worker_cpu_ns(t) - c0 > 1_000_000, "the worker did not spin (no CPU time in 0.3 s)"
    assert _asleep_within(t, 5.0), "the worker kept spinning past its hold"


def test_post_holds_idle_workers_for_twice_the_call_interval() -> None:
    """``post`` (every job's) sets ``HOLD`` to ``HOLD_CALLS`` times the interval since the previous post, when
    that is at most ``IDLE_HOLD_MAX_NS``: a model called at a steady rate finds its worker awake; one called
    rarely leaves it to sleep after its own window. On words with no room for it (``POSTED``) it holds nothing."""
    import numpy as np

    from cnnjit.runtime.team import HOLD, HOLD_CALLS, IDLE_HOLD_MAX_NS, LINE, POSTED

    w = np.zeros(2 * LINE, np.int64)  # (no worker sleeps on these words: post wakes nobody)
    parallel.post(w)
    first = int(w[POSTED])
    assert first > 0 and w[HOLD] == 0  # (the first post: no interval yet)
    w[POSTED] -= 300_000  # (as if posted 0.3 ms before)
    parallel.post(w)
    gap = int(w[POSTED]) - (first - 300_000)
    assert gap >= 300_000 and w[HOLD] == w[POSTED] + HOLD_CALLS * gap
    held = int(w[HOLD])
    w[POSTED] -= IDLE_HOLD_MAX_NS  # (the next post comes later than the cap allows to hold for)
    parallel.post(w)
    assert w[HOLD] == held
    short = np.zeros(LINE, np.int64)
    parallel.post(short)
    assert short[HOLD] == 0 and short[0] == 1


def test_a_worker_that_missed_a_job_waits_for_the_next_described_one() -> None:
    """A worker that sees job ``k`` posted when split (or native) job ``k + 1`` is already described (it was
    descheduled while the caller ran ``k`` alone and began ``k + 1``: ``Team.run_split`` describes a job before
    it posts it) waits for that post instead of returning to Python for ``k`` (a GIL round trip, and it missed
    ``k + 1``'s start: seen once a worker spun through the gaps between calls at load 5); a job that is neither
    split nor native still returns."""
    import threading

    import numpy as np

    from cnnjit.runtime.team import DESC_WORDS, JOBS, LINE, SPLIT

    w = np.zeros(2 * LINE, np.int64)
    w[IDLE_SPIN], w[JOBS], w[SPLIT] = IDLE_SPIN_NS, 5, 6
    t = threading.Thread(target=parallel.idle_wait, args=(w, 4, 1, np.zeros(DESC_WORDS, np.int64)), daemon=True)
    t.start()
    t.join(timeout=0.3)
    assert t.is_alive(), "the worker returned for a job it had missed"
    w[JOBS] = 7  # (a job from Python: neither split nor native)
    parallel.rouse(w)
    t.join(timeout=10)
    assert not t.is_alive()
