"""A parallel schedule's team run as a *split job* (``runtime/batchrows.py: split_job``, ``Team.run_split``): the
team's workers run their share inside their idle wait, with no Python, GIL or dispatcher between the posted
run and their first part. The results must be the threads=1 results bit for bit whoever runs which part; a
worker alone (``split_job`` on this thread) must be able to run every part; a worker beyond the job's
threads must run nothing; an error on the caller must abort the run and reach the caller; and a worker that
wakes on the caller's CPU must move off it."""

from __future__ import annotations

import os
import time

import numpy as np
import pytest
from numba import njit, types
from test_threads import block_model

import cnnjit
from cnnjit.compiler.codegen import emit, threads
from cnnjit.runtime import batchrows
from cnnjit.runtime import team as team_mod
from cnnjit.runtime.batchrows import (
    S_CALLER,
    S_EP,
    S_NFN,
    native_functions,
    read_split_trace,
    split_desc,
    split_job,
    trace_split,
)
from cnnjit.runtime.cpus import usable_cpus
from cnnjit.runtime.team import BACK, LINE, MASK, SHIFT, SPLIT, SPLIT_DESC, new_state

SIZE = 16  # (block_model's ~240 us of splittable work at 16x16: split when the thresholds are 0)


@pytest.fixture(scope="module", params=[None, 3], ids=["one function", "segments"])
def models(request):
    """The block model at 1 and 2 threads; the 2-thread schedule as one function, or (``SEGMENT_CALLS`` 3)
    in several segments that the caller and the workers each run in order (``emit.step_segments``)."""
    proto = block_model(SIZE)
    x = np.random.default_rng(5).standard_normal((1, 3, SIZE, SIZE)).astype(np.float32)
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(threads, "MIN_PARALLEL_TOTAL_US", 0.0)
        mp.setattr(threads, "ADAPTIVE_BELOW_US", 0.0)  # no serial twin: every call on the team
        one = cnnjit.compile(proto, threads=1)
        if request.param is not None:
            mp.setattr(emit, "SEGMENT_CALLS", request.param)
        two = cnnjit.compile(proto, threads=2)
    segments = two._default_spec().program.meta["segments"]
    assert (segments == 1) if request.param is None else (segments > 1)
    ref = one.run(None, {"x": x})
    return two, x, ref


def test_team_runs_post_a_split_job_and_match_one_thread(models) -> None:
    two, x, ref = models
    spec = two._default_spec()
    run = spec.program.run
    assert spec.program.meta["parallel_layers"] > 0 and spec.twin is None
    run.chooser = None  # always the team when it is free
    for i in range(12):  # the full path and the fast path
        got = two.run(None, {"x": x}) if i % 2 else two(x)
        for a, b in zip(got, ref):
            np.testing.assert_array_equal(a, b)
    t = team_mod._team[0]
    assert t.native_jobs
    descs = [d for d in run._split.values() if d is not None]
    assert descs, "the compiled schedule's team runs were not described as a split job"
    # the last team run was posted as a split job, on one of those descriptions, at the run's epoch
    assert t.words[SPLIT] == t.words[0] == t._jobs
    assert any(t.words[SPLIT_DESC] == d.ctypes.data and d[S_EP] == run.epoch for d, _ in descs)
    # every step was claimed in the last run (the claim words carry its epoch)
    assert all(int(run.state[LINE * (i + 1)]) >> SHIFT == run.epoch for i in range(run.steps))


def test_a_worker_alone_runs_every_part(models) -> None:
    two, x, ref = models
    spec = two._default_spec()
    run = spec.program.run
    bufs = spec._acquire()
    try:
        for _, view in bufs.ins:
            view[...] = x
        for view in bufs.outs:
            view[...] = np.nan
        state = new_state(run.steps)
        fns = native_functions(run.fn)
        assert fns is not None and len(fns) == spec.program.meta["segments"]
        desc = split_desc(fns, bufs.args, state, 2)
        assert desc is not None and desc[S_NFN] == len(fns)
        desc[S_EP] = 1
        trace_split(desc)
        split_job(desc.ctypes.data, 2, 0)  # a thread beyond the job's two: runs nothing
        assert not state[LINE:].any() and read_split_trace(desc)[0] == 0
        split_job(desc.ctypes.data, 1, 123)  # worker 1 with nobody else: claims every part, from the back
        ep, t0, t1, cpu, slept = read_split_trace(desc)  # (its trace: the run, when, its CPU time, asleep since)
        assert ep == 1 and 0 < t0 <= t1 and cpu > 0 and slept == 123
        for view, want in zip(bufs.outs, ref):
            np.testing.assert_array_equal(view, want.reshape(view.shape))
        counts = [(int(state[LINE * (s + 1)]) & MASK) for s in range(run.steps)]
        assert all(c % BACK == 0 and c // BACK >= 1 for c in counts)  # (nothing taken from the front)
    finally:
        spec._release(bufs)


def test_a_failing_caller_aborts_the_split_run() -> None:
    t = team_mod.team(2)
    if not t.native_jobs:
        pytest.skip("the team's workers run no native jobs (numba not loaded)")
    state = new_state(1)
    desc = np.zeros(64, np.int64)  # (0 threads: a worker that reads it runs nothing)

    def entry(*args) -> None:
        raise ValueError("kernel failed")

    with t.busy, pytest.raises(ValueError, match="kernel failed"):
        t.run_split(entry, (), state, 7, desc, team_mod.S_INFLIGHT)
    assert state[team_mod.ABORT] == 7


@pytest.mark.skipif(usable_cpus() < 2 or not hasattr(os, "sched_setaffinity"),
                    reason="one usable CPU, or no affinity: a worker has nowhere to move")
def test_a_worker_on_the_callers_cpu_leaves_it_before_a_split_run(models) -> None:
    """A split job's worker that wakes on the caller's CPU (both pinned to one CPU here) moves to the process's
    other CPUs before it joins the run (``parallel.post`` writes the caller's CPU into the description,
    ``batchrows._off_callers_cpu``), and the results stay the threads=1 results bit for bit."""
    two, x, ref = models
    run = two._default_spec().program.run
    run.chooser = None  # always the team when it is free
    two(x)
    t = team_mod.team(2)
    assert t.native_jobs
    desc = next(d for d, _ in (v for v in run._split.values() if v is not None))
    assert desc[S_CALLER] >= 0  # (written by the last post)
    every = os.sched_getaffinity(0)
    worker, here = t._workers[0].native_id, min(every)
    try:
        os.sched_setaffinity(0, {here})
        os.sched_setaffinity(worker, {here})
        for _ in range(50):  # (until the pinned worker gets a turn and looks at a run)
            for a, b in zip(two.run(None, {"x": x}), ref):
                np.testing.assert_array_equal(a, b)
            if os.sched_getaffinity(worker) != {here}:
                break
            time.sleep(2e-3)
        moved = os.sched_getaffinity(worker)
    finally:
        os.sched_setaffinity(0, every)
        os.sched_setaffinity(worker, every)
    assert moved == every - {here}


def test_call_raw_assumptions_hold_for_compiled_schedules(models) -> None:
    """``call_raw`` calls a schedule by address in numba's calling convention, built by hand: its assumptions
    (``batchrows.raw_callable``) hold for a compiled parallel and serial schedule; the parallel tail it passes
    is the schedule's own parameters (``threads.PARALLEL_SIG``); a buffer of any dtype has uint8's arguments
    but the data pointer's static type; a function outside them is refused (its samples run from Python)."""
    two, _, _ = models
    serial = cnnjit.compile(block_model(SIZE), threads=1, entry="numba")._default_spec().program.run
    assert batchrows._PARALLEL_TAIL == tuple(threads.PARALLEL_SIG)
    for fn in (two._default_spec().program.run.fn, serial):
        for part in getattr(fn, "segments", None) or [fn]:
            assert len(part.overloads) == 1 and batchrows.raw_callable(next(iter(part.overloads.values())).signature)
        assert native_functions(fn)
    for dt in (types.float32, types.float64, types.int8, types.int16, types.int32, types.int64, types.boolean):
        assert batchrows._flat_llvm(types.Array(dt, 1, "C")) == batchrows._flat_llvm(batchrows._U8)

    @njit
    def other(a, b):  # pragma: no cover - compiled
        a[0] = b[0, 0]

    other(np.zeros(2, np.float32), np.ones((2, 2), np.float32))  # (a 2-D buffer: not a schedule's)
    assert not batchrows.raw_callable(next(iter(other.overloads.values())).signature)
    assert native_functions(other) is None
