"""The step protocol in LLVM IR (``compiler/target/steps_ir.py``), run on ``runtime.team`` teams without numba.

Each test builds a parallel entry for a random step graph whose "kernels" only stamp a shared clock
(atomically) when they start and end, links it with llvmlite's MCJIT and runs it on teams of 1-4 threads,
several epochs on one state: every part must run exactly once, and after every part of the steps it
depends on has ended. A kernel can be told to fail (a word in the scratch block): the run raises, nothing
that depends on the failed step runs, and the team runs the next epoch normally. The oracle is the step
graph itself.
"""

from __future__ import annotations

import ctypes

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from llvmlite import binding as ll
from llvmlite import ir

from cnnjit.compiler.target import steps_ir
from cnnjit.compiler.target.steps_ir import parallel_entry
from cnnjit.runtime import team as teams
from cnnjit.runtime.native import _register_protocol_symbols

I64 = ir.IntType(64)
#: scratch layout (int64 words): the clock, the call to fail (k + 1; 0: none), then per call start, end, runs
CLOCK, FAIL, STAMPS = 0, 1, 2
#: clock polls per kernel (tens of microseconds: the threads' kernels overlap in time)
WORK_POLLS = 200000


class Failed(Exception):
    pass


def _build(steps: list[tuple[int, int, list[int]]], sys_futex: int, spin: int = teams.SPIN):
    """(engine, ctypes entry) for ``steps`` (first call, parts, deps), terminal steps computed here; waits
    poll ``spin`` times before they sleep."""
    mod = ir.Module(name="steps_test")
    mod.triple = ll.get_process_triple()

    def bases(b: ir.IRBuilder, scratch: ir.Value) -> dict[str, ir.Value]:
        return {"w": b.bitcast(scratch, I64.as_pointer())}

    def call(b: ir.IRBuilder, base: dict[str, ir.Value], k: int, fail: ir.Block) -> None:
        w = base["w"]

        def word(i: int) -> ir.Value:
            return b.gep(w, [ir.Constant(I64, i)])

        one = ir.Constant(I64, 1)
        b.store(b.add(b.atomic_rmw("add", word(CLOCK), one, "seq_cst"), one), word(STAMPS + 3 * k))
        # some work (polls of the clock no compiler removes), so that the team's threads overlap
        pre, body, after = (b.block, b.function.append_basic_block(f"c{k}_work"),
                            b.function.append_basic_block(f"c{k}_run"))
        b.branch(body)
        b.position_at_end(body)
        i = b.phi(I64)
        i.add_incoming(ir.Constant(I64, 0), pre)
        b.load_atomic(word(CLOCK), "acquire", 8)
        i1 = b.add(i, one)
        i.add_incoming(i1, body)
        b.cbranch(b.icmp_signed("<", i1, ir.Constant(I64, WORK_POLLS)), body, after)
        b.position_at_end(after)
        b.atomic_rmw("add", word(STAMPS + 3 * k + 2), one, "seq_cst")
        ok = b.icmp_signed("!=", b.load_atomic(word(FAIL), "acquire", 8), ir.Constant(I64, k + 1))
        cont = b.function.append_basic_block(f"c{k}_ok")
        b.cbranch(ok, cont, fail)
        b.position_at_end(cont)
        b.store(b.add(b.atomic_rmw("add", word(CLOCK), one, "seq_cst"), one), word(STAMPS + 3 * k + 1))

    listed = {d for _, _, ds in steps for d in ds}
    terminal = [i for i in range(len(steps)) if i not in listed]
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(steps_ir, "SPIN", spin)
        parallel_entry(mod, "t", steps, terminal, sys_futex, 2, 1, call, bases)
    ll.initialize_native_target()
    ll.initialize_native_asmprinter()
    _register_protocol_symbols(ll)
    tm = ll.Target.from_default_triple().create_target_machine(opt=2, jit=True)
    m = ll.parse_assembly(str(mod))
    m.verify()
    engine = ll.create_mcjit_compiler(m, tm)
    engine.finalize_object()
    fn = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.c_void_p, ctypes.c_void_p, ctypes.c_int64, ctypes.c_int64)(
        engine.get_function_address("t_run"))
    return engine, fn


def _runner(engine, fn):
    def run(scratch: np.ndarray, main: bool, ep: int, state: np.ndarray, _engine=engine) -> None:
        # (a worker catching up after the caller returned still runs the engine's code: keep it alive)
        status = fn(scratch.ctypes.data, state.ctypes.data, int(main), ep)
        if status:
            raise Failed(status)
    return run


@st.composite
def step_graphs(draw):
    n = draw(st.integers(1, 10))
    parts = [draw(st.integers(1, 4)) for _ in range(n)]
    deps = [sorted(draw(st.sets(st.integers(0, t - 1), max_size=3))) if t else [] for t in range(n)]
    firsts = np.cumsum([0, *parts]).tolist()
    return [(firsts[i], parts[i], deps[i]) for i in range(n)]


def _check(steps: list[tuple[int, int, list[int]]], words: np.ndarray) -> None:
    stamps = words[STAMPS:].reshape(-1, 3)
    assert (stamps[:, 2] == 1).all()  # every part ran, once
    for first, parts, deps in steps:
        for d in deps:
            f, p, _ = steps[d]
            assert stamps[f:f + p, 1].max() < stamps[first:first + parts, 0].min()


@settings(max_examples=12, deadline=None)
@given(steps=step_graphs(), threads=st.integers(1, 4), futex=st.booleans(), spin=st.sampled_from([2, teams.SPIN]))
def test_every_part_runs_once_after_its_dependencies(steps, threads, futex, spin) -> None:
    engine, fn = _build(steps, teams.SYS_FUTEX if futex else 0, spin)  # (spin 2: waits sleep or yield at once)
    calls = steps[-1][0] + steps[-1][1]
    team = teams.team(threads)  # sizes above this machine's CPUs too
    state = teams.new_state(len(steps))
    for ep in range(1, 4):  # several runs (epochs) on one state
        words = np.zeros(STAMPS + 3 * calls, np.int64)
        with team.busy:
            team.run(_runner(engine, fn), (words,), state, ep)
        _check(steps, words)


@pytest.mark.parametrize("threads", [1, 2, 3])
def test_a_failing_kernel_aborts_the_run_and_the_team_recovers(threads) -> None:
    steps = [(0, 2, []), (2, 2, [0]), (4, 2, [1])]
    engine, fn = _build(steps, teams.SYS_FUTEX)
    team = teams.team(threads)
    state = teams.new_state(len(steps))
    words = np.zeros(STAMPS + 3 * 6, np.int64)
    words[FAIL] = 3 + 1  # the second part of step 1
    with team.busy, pytest.raises(Failed):
        team.run(_runner(engine, fn), (words,), state, 1)
    assert state[teams.ABORT] == 1
    assert (words[STAMPS:].reshape(-1, 3)[4:, 2] == 0).all()  # nothing after the failing step ran
    words[:] = 0
    with team.busy:
        team.run(_runner(engine, fn), (words,), state, 2)
    _check(steps, words)
    # the parallel entry refuses a null scratch block or state (status 2)
    assert fn(None, state.ctypes.data, 1, 3) == 2 and fn(words.ctypes.data, None, 1, 3) == 2


@pytest.mark.parametrize("parts", [1, 2, 3, 5])
def test_the_caller_claims_from_the_front_workers_from_the_back(parts) -> None:
    """A thread alone runs a step's parts in order, first to last as the caller (``main``), last to first as a
    worker (spatial affinity: with 2 threads each keeps its own end of every split layer)."""
    steps = [(0, parts, [])]
    engine, fn = _build(steps, teams.SYS_FUTEX)
    for main, order in ((1, list(range(parts))), (0, list(range(parts))[::-1])):
        words = np.zeros(STAMPS + 3 * parts, np.int64)
        assert fn(words.ctypes.data, teams.new_state(1).ctypes.data, main, 1) == 0
        _check(steps, words)
        starts = words[STAMPS:].reshape(-1, 3)[:, 0]
        assert np.argsort(starts).tolist() == order
