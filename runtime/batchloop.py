"""A new batch size of a batch-separable model without compiling: a loop over its batch-1 specialisation.

``CompiledModel`` (``runtime/model.py``) runs a batch of a model whose ops keep samples apart
(``compiler/batching.py``) as a ``BatchLoop`` over the batch-1 ``Specialization`` (or a warm start's
``NativeSpecialization``): the samples split over the threads of the process's team, each thread running
the samples it claims one after another on one work set of its own, or all on the caller, whichever has been
faster lately (``runtime/adaptive.py``). A numba schedule's batch is a native job (``batch_native``,
``runtime/batchrows.py``): no Python and no GIL between samples, none at all on the workers; otherwise each
thread runs its share from Python (``run_samples``).
"""

from __future__ import annotations

import itertools
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any

import numpy as np

from .adaptive import Chooser
from .cpus import usable_cpus
from .team import ABORT, C_BEGIN, C_DONE, HOLD, HOLD_CALLS, IDLE_HOLD_MAX_NS, new_state, team

#: a batch's chooser (split over the team, or every sample on the caller: ``Chooser``'s arguments): the
#: slower way tried at least every ``BATCH_EXPLORE_MAX`` batches, every ``BATCH_RECHECK`` batches after a try
#: that beat the usual choice, and the caller alone chosen only when its median is ``BATCH_MARGIN`` below the
#: split's. The defaults (up to 4,096 batches between tries, 12 between rechecks, no margin) kept a split that
#: had looked slow for a while (a burst of load, a worker still starting) off for 130-150 batches after it won
#: again (simulated: split 4.0 vs alone 1.8 for the first 20-40 batches, then 1.0 vs 1.8), longer than a
#: benchmark's 60 calls; with these, 7-40 batches, for ~2% more time than the defaults under a load that makes
#: the split 1.6x slower at the median (``tests/test_batch.py``)
BATCH_EXPLORE_MAX, BATCH_RECHECK, BATCH_MARGIN = 48, 3, 0.1
#: a split native batch also says what the caller alone would have taken (``_on_team``: its Python around the
#: samples, and the batch at the caller's own rate per sample, from its clock words in the description,
#: ``team.C_BEGIN``), recorded as the caller alone's time while the split is the choice: the chooser then never
#: runs a whole batch on the caller alone as a try while the split is faster (``Chooser(estimated=True)``).
#: Before, the tries and the warm-up's every third batch were 3-9% of a served process's VWW batch-8 calls
#: (``benchmarks/batch.py --procs``, quiet or one busy thread beside it; 22% in a run at load 1) at 1.6-1.9 ms
#: against 0.9-1.1 ms split. False: the tries as before
ESTIMATE_ALONE = True
#: after a split batch whose loop has been called back to back (a quarter of its last ``GAPS`` gaps between
#: one call's end and the next one's start at most ``team.IDLE_HOLD_MAX_NS / HOLD_CALLS``), the team's idle
#: workers keep spinning ``BATCH_HOLD_NS`` plus ``HOLD_CALLS`` times that gap (``team.HOLD``: set as the batch
#: starts, with its median length ahead, so a worker that ran out of samples first spins through the end gap,
#: and again at its end), so the next batch finds them awake. The worker's idle time between two batches is the
#: caller's Python after the last sample, its gap and its Python before the post (~0.1-0.2 ms, more than the
#: worker's own ``IDLE_SPIN_NS``), and ``post``'s own hold (twice the interval between posts, up to 1 ms) never
#: covers a batch of 1 ms or more. A sleeping worker cost a batch ~80 us even when roused as the call starts
#: (VWW batch 8 on a quiet machine: 0.98 against 0.90 ms; with another process busy on the other core it often
#: came a whole batch late). 0: no hold
BATCH_HOLD_NS = 200_000
GAPS = 8
#: only batches whose usual length (the split's median) is under ``IDLE_HOLD_MAX_NS`` are held (a sleeping worker
#: costs a batch ~0.1 ms whatever its length, and the risk below is the same: VWW batch 32, 3.4 ms, held gained
#: nothing quiet, 0.98-1.02x, and measured 0.72-0.93x at load 5; unheld 1.00x), and only after ``CALM_BATCHES``
#: split batches in a row that found the worker's CPU its own (the worker ran a sample, and the caller, out of
#: samples, waited less than one of its samples for the worker's last): a worker held spinning on a CPU another
#: process wants spends its time slice there and is preempted in the middle of a later batch, holding a sample
#: the caller then waits milliseconds for. Measured with one busy thread beside the benchmark (VWW batch 8,
#: ``benchmarks/batch.py --procs --before`` in an autogroup at nice -20 beside a busy loop in its own): held
#: always, the median 0.96-1.40 ms against 1.07-1.63 unheld, but the mean 1.47-1.80 against 1.26-1.44 (a tenth
#: of the batches 4-5 ms)
CALM_BATCHES = 8


def run_rows(sample: Callable[[int], None], order: Iterator[int], batch: int) -> int:
    """``sample(i)`` for ``i = next(order)``, ... while ``i < batch``; how many ran (``run_samples``)."""
    n = 0
    while (i := next(order)) < batch:
        sample(i)
        n += 1
    return n


def on_places(ins: Sequence[tuple[np.ndarray, np.ndarray]], call: Callable[[], None],
              outs: Sequence[tuple[np.ndarray, np.ndarray]]) -> Callable[[int], None]:
    """Sample ``i`` of a batch run through one work set: ``ins`` pairs each batched input with its place in
    the work set (a batch-1 view), ``call()`` runs the batch-1 program there, ``outs`` pairs each output's
    place with the batched output it is copied into (row ``i``)."""

    def sample(i: int) -> None:
        for x, place in ins:
            place[...] = x[i:i + 1]
        call()
        for place, y in outs:
            y[i:i + 1] = place

    return sample


class BatchLoop:
    """A batch of ``batch`` samples run one by one through a compiled batch-1 specialisation.

    Used for a batch-separable model (``batch_separable`` of its batch-1 ``Specialization``, or of a warm
    start's ``NativeSpecialization``) called with a new batch size: no import, passes or numba compile, only
    a loop over samples that slices the inputs along axis 0 and writes each sample's outputs into its rows of
    the batched outputs. ``graph``, ``program`` and the reports are the batch-1 specialisation's (made by
    the full compiler on first use for a native one).
    """

    def __init__(self, base: Any, batch: int, threads: int = 1):
        self.base = base
        self.batch = batch
        #: split the samples over this many threads, each running the schedule alone (``alone``), when the
        #: batch has at least as many samples; 1: one sample after another, each on the whole team
        self.threads = max(1, min(threads, usable_cpus()))
        #: run by run, the samples split over the threads (0) or all run by the caller alone (1), whichever
        #: has been faster lately (``runtime/adaptive.py``): on a machine whose other processes hold the cores,
        #: a descheduled sample thread (holding the GIL, or the batch's last sample) stalls the split
        self.chooser: Chooser | None = Chooser(BATCH_EXPLORE_MAX, BATCH_RECHECK, BATCH_MARGIN,
                                               estimated=ESTIMATE_ALONE) \
            if self.threads > 1 and batch >= self.threads else None
        #: the recent gaps between one call's end and the next one's start (seconds; ``BATCH_HOLD_NS``), and
        #: when the last call ended (``time.perf_counter``)
        self._gaps: list[float] = []
        self._ended = 0.0
        self._hold_ns = 0  # (this split batch's hold, ns; 0: none)
        self._calm = 0  # (split batches in a row that found the worker's CPU its own: ``CALM_BATCHES``)
        #: the last split native batch's estimate of the caller alone's time (seconds; None: none)
        self._estimate: float | None = None
        self._state, self._epoch = new_state(0), 0  # (the team run's abort word)
        self.timings: dict[str, float] = {}
        self.batch_separable = True
        self._outputs = [(dt, tuple(shape[1:])) for dt, shape in base.output_specs]
        #: the last samples of a split batch (``batch % threads``, when the batch-1 schedule itself splits over
        #: the team) each run split over the team layer by layer, not one per thread with the others idle:
        #: batch 7 on 2 threads takes 3 rounds of 2 samples and one sample at the 2-thread schedule's speed,
        #: not 4 rounds
        self.tail = batch % self.threads if self.chooser is not None and _splits_a_sample(base) else 0
        #: how many samples each thread ran in the last call, in the order they finished, and how many ran
        #: split layer by layer after them (the tail; diagnostics)
        self.ran: list[int] = []
        self.tail_ran = 0
        #: whether the last call ran as a native job (``batch_native``), not from Python, and whether it ran
        #: split over the team (diagnostics)
        self.native = self.split = False

    graph = property(lambda self: self.base.graph)
    program = property(lambda self: self.base.program)
    pass_report = property(lambda self: self.base.pass_report)

    def run(self, feeds: Mapping[str, np.ndarray]) -> list[np.ndarray]:
        """Run on validated arrays whose leading size is ``batch``; outputs are fresh batched arrays."""
        chooser = self.chooser
        which = 1 if chooser is None else chooser.pick()
        t0 = time.perf_counter()
        gaps = self._gaps
        gaps.append(t0 - self._ended)
        if len(gaps) > GAPS:
            del gaps[0]
        if which == 0:  # (the team's sleeping workers wake while the call is prepared, not after it is posted)
            gap = sorted(gaps)[len(gaps) // 4]  # (held through the batch and after it: ``BATCH_HOLD_NS``)
            med = chooser.median(0)  # (the batch's usual length: only short ones are held)
            ahead = IDLE_HOLD_MAX_NS if med is None else int(med * 1e9)
            self._hold_ns = BATCH_HOLD_NS + int(HOLD_CALLS * gap * 1e9) if BATCH_HOLD_NS and ahead < IDLE_HOLD_MAX_NS \
                and self._calm >= CALM_BATCHES and HOLD_CALLS * gap * 1e9 <= IDLE_HOLD_MAX_NS else 0
            team(self.threads).rouse(self._hold_ns and self._hold_ns + ahead)
        outs = [np.empty((self.batch, *shape), dt) for dt, shape in self._outputs]
        native = getattr(self.base, "batch_native", None)  # (a numba schedule's specialisation)
        if native is not None:  # C-contiguous rows, which its native job copies from (no-op for the usual array)
            feeds = {k: np.ascontiguousarray(x) for k, x in feeds.items()}
        self.native, self.split, self.tail_ran = False, False, 0
        if chooser is None:  # (one thread, or fewer samples than threads)
            self._alone(native, feeds, outs, False)
            return outs
        self._estimate = None
        self.split = not which and self._on_team(native, feeds, outs)
        if not self.split:
            self._alone(native, feeds, outs, True)
        if (self.split or which) and self._ended:  # (not a batch that found the team busy: it tells nothing of
            # the split's speed; nor the loop's first, which pays for the work sets' and the team's first use)
            wall = time.perf_counter() - t0
            chooser.estimated = estimated = ESTIMATE_ALONE and self.native  # (from native batches only)
            # (while the split is the choice: once the caller alone is, its own runs time it, and the split's
            # tries are weighed against them as before)
            est = wall + self._estimate if estimated and self._estimate is not None and chooser.best == 0 else None
            chooser.record(which, wall, est)
        self._ended = time.perf_counter()
        return outs

    def _alone(self, native: Callable[..., int | None] | None, feeds: Mapping[str, np.ndarray],
               outs: list[np.ndarray], solo: bool) -> None:
        """Every sample on the calling thread: one native call, else from Python."""
        n = None if native is None else native(feeds, outs, None, solo)
        if n is None:
            self._from_python(feeds, outs, solo, None)
        else:
            self.ran, self.native = [n], True

    def _from_python(self, feeds: Mapping[str, np.ndarray], outs: list[np.ndarray], solo: bool,
                     t: Any) -> None:
        """The samples (rows) of ``feeds`` run from Python (``run_samples``) into ``outs``: on the calling
        thread, or on every thread of team ``t`` (whose busy lock the caller holds)."""
        batch = len(outs[0]) if outs else self.batch
        # each thread takes the next sample not yet taken (``next`` on a count is atomic under the GIL): a
        # thread that starts late or is descheduled (a busy machine) runs fewer samples instead of holding
        # the batch up by its fixed share
        order = itertools.count()
        ran: list[int] = []
        self.ran = ran
        finished = threading.Event()

        def samples(solo: bool) -> None:
            ran.append(self.base.run_samples(feeds, outs, order, batch, solo))  # (atomic under the GIL)
            if sum(ran) == batch:  # (the last thread to finish sees every count)
                finished.set()

        if t is None:
            samples(solo)
            return
        self._epoch += 1
        t.run(_sample_job, (samples, finished), self._state, self._epoch, self.threads)

    def _on_team(self, native: Callable[..., int | None] | None, feeds: Mapping[str, np.ndarray],
                 outs: list[np.ndarray]) -> bool:
        """The batch on ``threads`` threads of the process's team (``runtime/team.py``: its idle workers spin a
        while after a job, so a batch that follows another starts on both threads at once; a thread pool's
        sleeping thread took 40-80 us to start): a native job when the specialisation and the team run one
        (``native``), else the samples from Python on every thread; returns when every sample is done: True;
        False if another thread holds the team (nothing ran). A sample's error is raised here once every
        thread has stopped. The ``tail`` then runs sample by sample, each split over the team."""
        t = team(self.threads)
        if not t.busy.acquire(blocking=False):
            return False
        head = self.batch - self.tail
        try:
            rows, places = (feeds, outs) if not self.tail else (
                {k: x[:head] for k, x in feeds.items()}, [o[:head] for o in outs])
            n = native(rows, places, t, True, self.threads) if native is not None and t.native_jobs else None
            if n is None:
                self._from_python(rows, places, True, t)
            else:
                self.ran, self.native = [n, head - n], True  # (the caller's count, the workers')
                begin, out, done = t.desc[C_BEGIN:C_DONE + 1].tolist()
                if n > 0 and begin <= out <= done:  # (the caller alone: its Python, and every sample at its rate)
                    self._estimate = ((out - begin) * self.batch / n - (done - begin)) * 1e-9
                    calm = n < head and (done - out) * n < out - begin  # (the worker ran, and came in time)
                    self._calm = self._calm + 1 if calm else 0
        finally:
            t.busy.release()
        if self._hold_ns:  # (from the batch's end; set from its start as it was posted, its median length ahead)
            t.words[HOLD] = max(int(t.words[HOLD]), time.monotonic_ns() + self._hold_ns)
        t0 = time.perf_counter()
        for i in range(head, self.batch):  # (the batch-1 schedule on the team, or its serial twin if faster lately)
            self.base.run_into({k: x[i:i + 1] for k, x in feeds.items()}, [o[i:i + 1] for o in outs])
        if self.tail and self._estimate is not None:  # (the tail's time is in the call's, not in the estimate's)
            self._estimate -= time.perf_counter() - t0
        self.tail_ran = self.tail
        return True


def _splits_a_sample(base: Any) -> bool:
    """Whether the batch-1 specialisation ``base`` runs a sample split over the team (a parallel schedule: a
    ``Specialization``'s program or a ``NativeSpecialization``'s object; read without making a native one's
    full specialisation)."""
    own = vars(base)
    run = own["program"].run if "program" in own else own.get("parallel")
    return getattr(run, "alone", None) is not None and getattr(run, "team_size", 1) > 1


def _sample_job(samples: Callable[[bool], None], finished: threading.Event, main: bool, ep: int,
                state: np.ndarray) -> None:
    """A ``BatchLoop`` run on a team thread (``Team.run``'s job): claim and run samples; the caller (``main``)
    then waits until every sample is done, or a worker's error aborted the run."""
    samples(True)
    if main:
        while not finished.wait(1e-3):
            if state[ABORT] >= ep:
                return


def ready_for_batches(spec: Any, threads: int) -> None:
    """Make a batch-separable batch-1 specialisation's first ``BatchLoop`` as cheap as its next ones: start
    the team's threads and give the specialisation a work set per thread now, its pages mapped (the
    first new batch size's call cost that much more than its next calls: MobileNetV2 +16 ms of CPU, and
    the new threads' start, which a busy machine may delay by tens of ms)."""
    n = max(1, min(threads, usable_cpus()))
    if n < 2 or not getattr(spec, "batch_separable", False):
        return
    spec.prefill(n)  # (first: a numba specialisation loads the team's native idle wait before the team starts)
    team(n)


__all__ = ["BatchLoop", "run_rows", "on_places", "ready_for_batches", "BATCH_EXPLORE_MAX", "BATCH_RECHECK",
           "BATCH_MARGIN"]
