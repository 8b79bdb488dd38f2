"""Run by run, the faster of a small model's two schedules: split over the team, or serial on the caller.

A model whose layers take 20-300 us each (ResNet-8, the MLPerf Tiny models, a text-direction classifier) wins
from a second thread only when that thread is there: a worker asleep reaches a run some 20-50 us after it
starts (one spinning, at once: ``Team.run_split``), and on a machine whose other processes hold the other
core it does not come at all, so the caller
runs every part itself, a little slower than the whole layers (measured on the shared 2-core VM, ResNet-8
with every layer split: 2 threads 0.27 ms at best against 0.33 ms for 1, but 0.48-0.58 ms against 0.31-0.34
at the median under load 2-6). Such a specialisation is compiled twice (``compiler/stages.py``: the
parallel program and the serial one, ``compiler/codegen/threads.py: ADAPTIVE_BELOW_US``; both compute the
same arithmetic, so their results are bit-identical), and a ``Chooser`` times the runs of each and runs the
faster, trying the other now and then: how often depends on how much slower it was, so exploring costs
under 1% of the time while following a machine whose load comes and goes.

Every parallel schedule also chooses, run by run, between the team and the calling thread alone running the
same parts one after another (``runtime/team.py: ParallelRun``; no second compile, the same bits): a large
model on a machine whose other processes hold the cores runs at about its serial time instead of stalling at
every step a descheduled worker holds.
"""

from __future__ import annotations

#: how many recent run times per schedule the choice compares (their median: one descheduled run does not
#: decide)
WINDOW = 9
#: runs between two tries of the slower schedule: a try costs (its mean time over the usual one's median - 1)
#: runs, so the period is that times EXPLORE_COST (1%: a parallel schedule 18x slower than the serial one, its
#: worker descheduled on a machine at load 8, is tried once every 1,700 runs), within [EXPLORE_MIN,
#: EXPLORE_MAX]. The mean, not the median: on a loaded machine a try of the team is usually a little slower
#: but now and then milliseconds slower (a worker descheduled holding a part; ResNet-8 at load 12: the worker
#: began a median 0.9-3.9 ms after the call, ``benchmarks/idle_spin.py``), and those tries are what they cost
EXPLORE_COST = 100
EXPLORE_MIN, EXPLORE_MAX = 12, 4096
#: until the other way (1) has its first ``WINDOW // 2 + 1`` times, it runs once every this many runs, the
#: parallel one (0, the expected faster) otherwise. Alternating them from the first run made a benchmark's
#: first rounds half serial, and decided on five noisy times each: MobileNetV2 at 2 threads measured 6.3,
#: 8.8 and 6.6 ms (median of 20 runs after 3) in three processes, the 8.8 being the caller alone's time
WARM_PERIOD = 3


class Chooser:
    """Which of two ways to run (0: parallel; 1: serial, or the caller alone) next, from their recent times.

    ``pick()`` says which; ``record(which, seconds)`` reports how long it took (the caller's wall time of the
    whole call). Until the other (1) has ``WINDOW // 2 + 1`` times it runs every ``WARM_PERIOD``-th time, the
    parallel one (0) otherwise; then the one with the lower
    median of its last ``WINDOW`` times runs, and the other once a period (``EXPLORE_COST``: from the other's
    mean time, what its tries cost; the shortest after
    a try that beat the usual choice's median: the load has changed, look again soon). Not locked: calls
    from several threads may interleave their updates, which only blurs the statistics.

    ``paired``: a try of the other way (after the warm-up) runs two calls, and only the second's time counts,
    once per twice the period (the same share of calls). For two different programs (a small model's split
    schedule and its serial twin): the first call after the other program's runs finds its code, weights
    and scratch out of the core's caches (and the team's worker asleep). Measured on ResNet-8 at real-time
    priority, load 10: the serial twin's first call after 20 team calls 0.295 ms, then 0.257, 0.248, 0.243
    (steady ~0.22): tries of one call made the way not in use look 1.4-1.6x slower than it runs, so the
    chooser kept whichever it had (the team at 1.05x the serial time in one run).

    ``estimated``: a run of way 0 also says what way 1 would have taken (``record(0, seconds, estimate)``: a
    split batch, the caller alone at its own rate per sample, ``runtime/batchloop.py``), so way 1 never runs as
    a try (nor in the warm-up) while way 0 is the choice; once way 1 is, way 0 is tried as usual.
    """

    def __init__(self, explore_max: int = EXPLORE_MAX, recheck_period: int = EXPLORE_MIN, margin: float = 0.0,
                 paired: bool = False, estimated: bool = False):
        self.times: tuple[list[float], list[float]] = ([], [])
        #: the longest period between two tries of the slower way, and the period of the tries after one
        #: that beat the usual choice
        self.explore_max, self.recheck_period = explore_max, recheck_period
        #: the other way (1) is the usual choice only while its median is below (1 - margin) times the
        #: parallel one's (0, the expected faster): noise between two near-equal ways keeps the parallel one
        self.margin = margin
        self.best = 0
        self.period = min(EXPLORE_MIN, explore_max)
        self.recheck = 0  # tries of the other schedule still to make at the shortest period
        self.runs = 0
        self.paired = paired
        #: the other way's (1) times are also recorded as estimates from the parallel one's runs (a split batch
        #: says what the caller alone would have taken: ``BatchLoop``): it is never run as a try while the
        #: parallel one is the choice, and those estimates start no rechecks
        self.estimated = estimated
        #: a paired try's second call: its way (-1: none pending), and whether the next ``record`` is the
        #: first call's (not counted)
        self._second, self._skip = -1, False
        #: per way, the median and the sum of its recent times (None, 0 before its first)
        self._med: list[float | None] = [None, None]
        self._sum = [0.0, 0.0]

    def pick(self) -> int:
        self.runs += 1
        if self._second >= 0:
            w, self._second = self._second, -1
            return w
        w = self._choice(self.runs)
        if self.paired and w != self.best and min(map(len, self.times)) > WINDOW // 2:
            self._second, self._skip = w, True
        return w

    def upcoming(self) -> int:
        """What the next ``pick()`` will return unless a ``record`` changes the choice meanwhile (not counted as
        a pick): a caller about to run the serial way can wake the team's worker for a try of the parallel one
        that comes next (``runtime/model.py: Chosen``)."""
        return self._second if self._second >= 0 else self._choice(self.runs + 1)

    def _choice(self, runs: int) -> int:
        if self.estimated and self.best == 0:
            return 0
        a, b = self.times
        warm = WINDOW // 2 + 1
        if len(b) < warm:
            return 1 if runs % WARM_PERIOD == 0 else 0
        if len(a) < warm:  # (the team was busy, or the other was decided at once)
            return 0
        period = (self.recheck_period if self.recheck else self.period) * (2 if self.paired else 1)
        return 1 - self.best if runs % period == 0 else self.best

    def record(self, which: int, seconds: float, estimate: float | None = None) -> None:
        """Way ``which`` took ``seconds``; ``estimate`` (an ``estimated`` chooser's run of way 0): what way 1
        would have taken, recorded as its time in the same call."""
        if self._skip:  # (a paired try's first call)
            self._skip = False
            return
        self._add(which, seconds)
        if estimate is not None:
            self._add(1, estimate)
        a, b = self._med
        if a is None or b is None:
            return
        if which != self.best and not (self.estimated and which == 1):
            if self.recheck:
                self.recheck -= 1
            elif seconds < (b if self.best else a):  # a try beat the usual choice: the load has changed?
                self.recheck = WINDOW // 2
        self.best = 0 if b >= a * (1.0 - self.margin) else 1
        other = 1 - self.best
        ratio = max(a, b, self._sum[other] / len(self.times[other])) / max(min(a, b), 1e-12)  # (see EXPLORE_COST)
        self.period = int(min(max(EXPLORE_COST * (ratio - 1.0), EXPLORE_MIN), self.explore_max))

    def _add(self, which: int, seconds: float) -> None:
        ts = self.times[which]
        ts.append(seconds)
        if len(ts) > WINDOW:
            del ts[0]
        # (only this way's median and sum change: the other's are kept; per call of a small model, ~2x faster)
        self._med[which], self._sum[which] = sorted(ts)[len(ts) // 2], sum(ts)

    def median(self, which: int) -> float | None:
        """The median of the recent times of way ``which`` (seconds), None before its first."""
        return self._med[which]

    @property
    def share(self) -> tuple[int, int]:
        """How many of the recorded times (at most ``WINDOW`` each) each schedule has: for tests."""
        return len(self.times[0]), len(self.times[1])


__all__ = ["Chooser", "WINDOW", "EXPLORE_COST", "EXPLORE_MIN", "EXPLORE_MAX", "WARM_PERIOD"]
