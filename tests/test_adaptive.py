"""A small parallel schedule compiled with its serial twin (``runtime/adaptive.py``): each call runs the
one that has been faster lately. Both must give the threads=1 result bit for bit, both must actually run,
and the ``Chooser`` must follow the faster one while trying the other only as often as documented."""

from __future__ import annotations

import itertools

import numpy as np
from test_threads import block_model

import cnnjit
from cnnjit.compiler.codegen import threads
from cnnjit.runtime.adaptive import EXPLORE_COST, EXPLORE_MAX, EXPLORE_MIN, WARM_PERIOD, WINDOW, Chooser
from cnnjit.runtime.batchloop import BATCH_EXPLORE_MAX, BATCH_MARGIN, BATCH_RECHECK


def _drive(ch: Chooser, cost: tuple[float, float], runs: int) -> list[int]:
    picks = []
    for _ in range(runs):
        w = ch.pick()
        ch.record(w, cost[w])
        picks.append(w)
    return picks


def test_chooser_follows_the_faster_and_explores_rarely() -> None:
    ch = Chooser()
    picks = _drive(ch, (1.0, 3.5), 2000)  # the parallel schedule 3.5x faster than the serial one
    warm = WARM_PERIOD * (WINDOW // 2 + 1)
    # each measured first: the serial one every WARM_PERIOD-th run, the parallel one otherwise
    assert picks[:warm] == [int((i + 1) % WARM_PERIOD == 0) for i in range(warm)]
    tail = picks[warm:]
    assert ch.best == 0
    # a 3.5x slower one: tried once per 250 runs (its cost, 2.5 runs a try, is 1% of the time)
    assert tail.count(1) <= len(tail) // int(EXPLORE_COST * 2.5) + 1
    assert tail.count(1) >= 1  # but tried again


def test_chooser_switches_when_the_load_changes() -> None:
    ch = Chooser()
    _drive(ch, (1.0, 1.3), 500)
    assert ch.best == 0
    picks = _drive(ch, (2.0, 1.3), 2000)  # the other core got busy: the parallel runs now take 2.0
    assert ch.best == 1
    assert picks[-500:].count(1) >= 500 - 500 // int(EXPLORE_COST * (2.0 / 1.3 - 1)) - 1  # the parallel one tried
    # small differences are checked often: a 1.05x slower one every shortest period
    ch2 = Chooser()
    picks = _drive(ch2, (1.0, 1.05), 1200)
    assert abs(picks[100:].count(1) - 1100 / EXPLORE_MIN) <= 3


def test_tries_that_stall_now_and_then_are_made_rarer() -> None:
    """The period between tries of the slower way follows its mean time, not only its median: on a loaded
    machine a try of the team is a little slower most times and milliseconds slower now and then (a worker
    descheduled holding a part), and the tries must stay ~1/EXPLORE_COST of the time."""

    def tries(team_times: list[float], runs: int = 6000) -> int:
        ch, k, picks = Chooser(), 0, []
        for _ in range(runs):
            w = ch.pick()
            if w == 0:
                t, k = team_times[k % len(team_times)], k + 1
            else:
                t = 1.0
            ch.record(w, t)
            picks.append(w)
        assert ch.best == 1
        return picks[500:].count(0)

    steady = tries([1.3])
    stalls = [1.3, 1.3, 1.3, 1.3, 10.0]  # (the same median; one try in five stalls: mean 3.04)
    rare = tries(stalls)
    assert rare < steady / 3, (rare, steady)
    # what the tries cost: ~1% of the serial time (each costs its time - 1 run)
    cost = rare * (sum(stalls) / len(stalls) - 1.0)
    assert cost <= 5500 / EXPLORE_COST * 1.5, cost


def test_small_parallel_model_runs_both_schedules_bit_identically(monkeypatch) -> None:
    proto = block_model(16)
    x = np.random.default_rng(3).standard_normal((1, 3, 16, 16)).astype(np.float32)
    monkeypatch.setattr(threads, "MIN_PARALLEL_TOTAL_US", 100.0)  # (the default may change; this model is ~240)
    one = cnnjit.compile(proto, threads=1)
    two = cnnjit.compile(proto, threads=2)
    ref = one.run(None, {"x": x})
    spec = two._default_spec()
    assert spec.program.meta["parallel_layers"] > 0 and spec.twin is not None
    assert spec.twin.program.meta.get("parallel_layers", 0) == 0
    assert spec.program.run.chooser is None  # one choice (team or serial twin), not the team's own as well
    for i in range(2 * WINDOW + 4):  # the full path and the fast path
        got = two.run(None, {"x": x}) if i % 2 else two(x)
        for a, b in zip(got, ref):
            np.testing.assert_array_equal(a, b)
    assert min(spec.chooser.share) > 0  # both schedules ran


def _back_on_the_parallel(ch: Chooser, burst: int) -> int:
    """Runs after a burst of ``burst`` runs in which the parallel way took 4.0 against 1.8 (then 1.0 against
    1.8) until it runs 20 times in a row."""
    picks = []
    for i in range(burst + 400):
        w = ch.pick()
        ch.record(w, ((4.0, 1.8) if i < burst else (1.0, 1.8))[w])
        picks.append(w)
    after = picks[burst:]
    return next(i for i in range(len(after)) if after[i:i + 20] == [0] * 20)


def test_a_batch_chooser_returns_to_the_split_soon_after_a_burst() -> None:
    """``BatchLoop``'s chooser (``BATCH_EXPLORE_MAX``, ``BATCH_RECHECK``): a split that looked slow during a
    burst of load is back within ~50 batches of the burst's end, where the defaults took 100+ (longer than a
    benchmark's calls); a noise-sized advantage of the caller alone (< ``BATCH_MARGIN``) keeps the split."""
    batch = (BATCH_EXPLORE_MAX, BATCH_RECHECK, BATCH_MARGIN)
    for burst in (10, 20, 40):
        assert _back_on_the_parallel(Chooser(*batch), burst) <= BATCH_EXPLORE_MAX + 4 * BATCH_RECHECK, burst
    assert max(_back_on_the_parallel(Chooser(), burst) for burst in (20, 40)) > 100  # (why the batch's own)
    ch = Chooser(*batch)
    _drive(ch, (1.0, 0.95), 300)  # (the caller alone 5% faster: within the margin)
    assert ch.best == 0
    _drive(ch, (1.0, 0.8), 300)  # (20% faster: taken)
    assert ch.best == 1
    assert Chooser().margin == 0.0 and Chooser().explore_max == EXPLORE_MAX  # (the other choosers unchanged)


def test_upcoming_is_the_next_pick_and_counts_nothing() -> None:
    """``Chooser.upcoming`` says what the next ``pick`` returns (a caller wakes the team's worker one call
    before a try of the team) and leaves the choice where it was: the picks are the same with and without it."""
    costs = [(1.0, 1.3)] * 300 + [(2.0, 1.3)] * 600 + [(1.0, 1.05)] * 300  # (warm-up, switch, near-equal)
    plain, asked = Chooser(), Chooser()
    for c in costs:
        nxt = asked.upcoming()
        assert asked.upcoming() == nxt  # (asking again changes nothing)
        w, w0 = asked.pick(), plain.pick()
        assert w == nxt == w0
        asked.record(w, c[w])
        plain.record(w0, c[w0])
    assert asked.median(1) == 1.05 and Chooser().median(0) is None


class _Run:
    """A stand-in for a small model's ``ParallelRun``: what ``before_serial`` asks of it."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, int]] = []

    def rest(self) -> None:
        self.calls.append(("rest", 0))

    def rouse(self, hold_ns: int = 0) -> None:
        self.calls.append(("rouse", hold_ns))


def test_the_serial_call_before_a_try_of_the_team_keeps_its_worker_awake() -> None:
    """Before a serial call (``model.before_serial``) the team's idle worker is sent to sleep (``rest``), unless
    the next call tries the team: then it is woken and held spinning through this call
    (``HOLD_SERIAL_CALLS`` times the serial way's median), so the try does not begin a futex wake-up late."""
    from cnnjit.runtime.model import HOLD_SERIAL_CALLS, before_serial
    from cnnjit.runtime.team import IDLE_HOLD_MAX_NS

    ch, run = Chooser(), _Run()
    for _ in range(3000):
        w = ch.pick()
        if w:
            nxt = ch.upcoming()
            run.calls.clear()
            before_serial(ch, run)
            if nxt == 0:
                assert run.calls[0][0] == "rouse" and len(run.calls) == 1
                serial = ch.median(1)
                assert run.calls[0][1] == (int(HOLD_SERIAL_CALLS * serial * 1e9) if serial else IDLE_HOLD_MAX_NS)
            else:
                assert run.calls == [("rest", 0)]
        ch.record(w, (1.3e-4, 1.0e-4)[w])  # (the serial way faster: the team tried now and then)
    assert ch.best == 1


def _drive_cold(ch: Chooser, cost: tuple[float, float], runs: int, cold: float = 1.5) -> list[int]:
    """``_drive`` where the first call after a switch of ways costs ``cold`` times more (two programs: the
    way not in use has its code and data out of the caches)."""
    picks: list[int] = []
    for _ in range(runs):
        w = ch.pick()
        ch.record(w, cost[w] * (cold if picks and picks[-1] != w else 1.0))
        picks.append(w)
    return picks


def test_paired_tries_count_only_their_second_call() -> None:
    """Tries of one call after the other way's runs measure a cold program: the chooser keeps whichever it
    has. Paired (``Chooser(paired=True)``, a small model's split schedule and serial twin) a try runs two
    calls and counts the second, at half the rate: the same share of calls, and the faster way wins."""
    cost = (1.0, 0.9)  # the serial way 10% faster, a cold first call 1.5x
    single, paired = Chooser(), Chooser(paired=True)
    _drive_cold(single, (0.9, 1.0), 300)  # (the team faster first: both start on it)
    picks = _drive_cold(paired, (0.9, 1.0), 300)
    assert single.best == paired.best == 0
    _drive_cold(single, cost, 3000)
    picks = _drive_cold(paired, cost, 3000)
    assert single.best == 0, "(the bias this guards against: one cold call per try keeps the slower way)"
    assert paired.best == 1
    runs = [len(list(g)) for k, g in itertools.groupby(picks[1000:]) if k == 0]
    assert runs and all(r == 2 for r in runs)  # (the team's tries: two calls each)
    assert sum(runs) <= 2 * len(picks[1000:]) / (2 * EXPLORE_MIN) + 2


def test_a_negative_margin_keeps_the_serial_way_unless_the_team_is_clearly_faster() -> None:
    """``TWIN_MARGIN`` (a small model's chooser): the split schedule is the usual choice only while it is
    that share faster than its serial twin."""
    from cnnjit.runtime.model import TWIN_MARGIN

    for team, best in ((1.0 - TWIN_MARGIN / 2, 1), (1.0 - 2 * TWIN_MARGIN, 0)):
        ch = Chooser(margin=-TWIN_MARGIN, paired=True)
        _drive(ch, (team, 1.0), 1000)
        assert ch.best == best, (team, ch.best)


def _drive_estimated(ch: Chooser, cost: tuple[float, float], runs: int) -> list[int]:
    """``_drive`` for ``Chooser(estimated=True)``: every run of way 0 also records way 1's estimate (its cost,
    as ``BatchLoop`` records what the caller alone would have taken from a split batch)."""
    picks = []
    for _ in range(runs):
        w = ch.pick()
        ch.record(w, cost[w], cost[1] if w == 0 else None)
        picks.append(w)
    return picks


def test_an_estimated_way_is_never_run_as_a_try_while_the_parallel_one_wins() -> None:
    """``Chooser(estimated=True)`` (a ``BatchLoop``'s, ``batchloop.ESTIMATE_ALONE``): way 1's times come with way
    0's runs, so while way 0 is the choice way 1 never runs (no warm-up share, no tries: a whole batch on the
    caller alone cost 1.7 ms against 0.9 split, VWW batch 8); once the estimates say way 1 is faster it is
    taken, and way 0 is then tried as usual (its runs bring the estimates again), and taken back."""
    batch = (BATCH_EXPLORE_MAX, BATCH_RECHECK, BATCH_MARGIN)
    ch = Chooser(*batch, estimated=True)
    assert _drive_estimated(ch, (1.0, 1.8), 500) == [0] * 500  # (not even in the warm-up)
    assert ch.best == 0 and ch.median(1) == 1.8
    picks = _drive_estimated(ch, (3.0, 1.8), 500)  # (the split slow now: a busy machine)
    assert ch.best == 1 and picks[-300:].count(0) >= 300 // BATCH_EXPLORE_MAX  # (the split still tried)
    picks = _drive_estimated(ch, (1.0, 1.8), 300)  # (quiet again)
    assert ch.best == 0 and picks[-100:] == [0] * 100
    plain = Chooser(*batch)
    assert _drive(plain, (1.0, 1.8), 500).count(1) >= WINDOW // 2 + 1  # (without estimates: tried)
