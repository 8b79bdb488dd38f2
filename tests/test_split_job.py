"""A parallel schedule's team run as a *split job* (``runtime/batchrows.py: split_job``, ``Team.run_split``): the
team's workers run their share inside their idle wait, with no Python, GIL or dispatcher between the posted
run and their first part. The results must be the threads=1 results bit for bit whoever runs which part; a
worker alone (``split_job`` on this thread) must be able to run every part; a worker beyond the job's
threads must run nothing; and an error on the caller must abort the run and reach the caller."""

from __future__ import annotations

import numpy as np
import pytest
from test_threads import block_model

import cnnjit
from cnnjit.compiler.codegen import threads
from cnnjit.runtime import team as team_mod
from cnnjit.runtime.batchrows import S_EP, native_functions, read_split_trace, split_desc, split_job, trace_split
from cnnjit.runtime.team import BACK, LINE, MASK, SHIFT, SPLIT, SPLIT_DESC, new_state

SIZE = 16  # (block_model's ~240 us of splittable work at 16x16: split when the thresholds are 0)


@pytest.fixture(scope="module")
def models():
    proto = block_model(SIZE)
    x = np.random.default_rng(5).standard_normal((1, 3, SIZE, SIZE)).astype(np.float32)
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(threads, "MIN_PARALLEL_TOTAL_US", 0.0)
        mp.setattr(threads, "ADAPTIVE_BELOW_US", 0.0)  # no serial twin: every call on the team
        one = cnnjit.compile(proto, threads=1)
        two = cnnjit.compile(proto, threads=2)
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
        assert fns is not None and len(fns) == 1
        desc = split_desc(fns[0], bufs.args, state, 2)
        assert desc is not None
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
