"""The step protocol of a parallel schedule in LLVM IR, for the host object of the compiled-program cache.

``runtime/parallel.py`` runs a parallel schedule as a numba function that every thread of a team calls with
its ``main`` flag, the run's epoch and the shared step state; its ``claim``, ``done`` and ``wait`` are numba
functions on LLVM atomics. A host object (``host.py``) holds the same schedule as a C entry, built here with
the same protocol written directly in LLVM IR (the same state layout and constants, from ``runtime/team.py``:
epoch-tagged claim and done counters, ``SPIN`` polls then a futex sleep, the abort word), so a warm start
runs it on the same ``runtime.team`` threads through ctypes, without numba:

    int32 <name>_run(int8 *scratch, int64 *state, int64 main, int64 epoch)

At each step a thread waits for the step's dependencies, then claims parts and runs them (``emit_call``
writes a kernel call); a kernel that fails sets the abort word to the epoch, wakes sleepers and returns
``status_kernel``; a wait that sees the run aborted returns 0 (the team's caller raises the error). The
caller (``main``) returns once the terminal steps are complete, so the outputs are written.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from llvmlite import ir

from cnnjit.runtime.team import (
    ABORT,
    BACK,
    FUTEX_WAIT_PRIVATE,
    FUTEX_WAKE_PRIVATE,
    LINE,
    MASK,
    SEQ,
    SHIFT,
    SLEEP_NS,
    SLEEPERS,
    SPIN,
)

I1, I32, I64 = ir.IntType(1), ir.IntType(32), ir.IntType(64)
P64 = I64.as_pointer()


def _c(v: int) -> ir.Constant:
    return ir.Constant(I64, v)


def _word(b: ir.IRBuilder, st: ir.Value, idx: ir.Value | int) -> ir.Value:
    return b.gep(st, [_c(idx) if isinstance(idx, int) else idx])


def _load(b: ir.IRBuilder, st: ir.Value, idx: ir.Value | int) -> ir.Value:
    return b.load_atomic(_word(b, st, idx), "acquire", 8)


def _function(mod: ir.Module, name: str, ret: ir.Type, args: Sequence[ir.Type]) -> ir.Function:
    fn = ir.Function(mod, ir.FunctionType(ret, list(args)), name)
    fn.linkage = "internal"
    return fn


def _futex(b: ir.IRBuilder, syscall: ir.Function, st: ir.Value, op: int, val: ir.Value, timeout_ns: int,
           sys_futex: int) -> None:
    """``syscall(SYS_futex, low 32 bits of st[SEQ], op, val, timeout)`` (little-endian: the low half)."""
    word = b.ptrtoint(_word(b, st, SEQ), I64)
    tp: ir.Value = _c(0)
    if timeout_ns:
        spec_t = ir.LiteralStructType([I64, I64])
        with b.goto_entry_block():  # (not in the wait loop: an alloca there grows the stack every sleep)
            spec = b.alloca(spec_t)
        b.store(ir.Constant(spec_t, [timeout_ns // 10**9, timeout_ns % 10**9]), spec)
        tp = b.ptrtoint(spec, I64)
    b.call(syscall, [_c(sys_futex), word, _c(op), b.zext(b.trunc(val, I32), I64), tp])


def protocol(mod: ir.Module, prefix: str, sys_futex: int) -> tuple[ir.Function, ir.Function, ir.Function]:
    """``claim``, ``done`` and ``wait`` in ``mod`` (internal functions named ``<prefix>_claim``...), the IR
    twins of ``runtime.parallel``'s: ``claim(st, step, ep, parts, front) -> i64`` (a part index or -1),
    ``done(st, step, ep)``, ``wait(st, step, ep, parts) -> i1`` (False: the run was aborted).
    ``sys_futex``: the futex system call number, 0 to yield the CPU between polls instead of sleeping."""
    syscall = ir.Function(mod, ir.FunctionType(I64, [I64], var_arg=True), "syscall")
    yield_fn = ir.Function(mod, ir.FunctionType(I32, []), "sched_yield")

    # claim (the caller, ``front`` != 0, from the first part up; workers from the last down: parallel.claim)
    claim = _function(mod, f"{prefix}_claim", I64, [P64, I64, I64, I64, I64])
    st, step, ep, parts, front = claim.args
    b = ir.IRBuilder(claim.append_basic_block("entry"))
    loop, give_up, try_it, got = (claim.append_basic_block(n) for n in ("loop", "none", "try", "got"))
    idx = b.mul(b.add(step, _c(1)), _c(LINE))
    is_front = b.icmp_signed("!=", front, _c(0))
    b.branch(loop)
    b.position_at_end(loop)
    c = _load(b, st, idx)
    e = b.ashr(c, _c(SHIFT))
    late = b.or_(b.icmp_signed(">", e, ep), b.icmp_signed(">=", _load(b, st, ABORT), ep))
    k = b.select(b.icmp_signed("==", e, ep), b.and_(c, _c(MASK)), _c(0))
    lo, hi = b.and_(k, _c(BACK - 1)), b.lshr(k, _c(BACK.bit_length() - 1))
    b.cbranch(b.or_(late, b.icmp_signed(">=", b.add(lo, hi), parts)), give_up, try_it)
    b.position_at_end(give_up)
    b.ret(_c(-1))
    b.position_at_end(try_it)
    new = b.or_(b.shl(ep, _c(SHIFT)), b.add(k, b.select(is_front, _c(1), _c(BACK))))
    ok = b.extract_value(b.cmpxchg(_word(b, st, idx), c, new, "seq_cst", "seq_cst"), 1)
    b.cbranch(ok, got, loop)
    b.position_at_end(got)
    b.ret(b.select(is_front, lo, b.sub(b.sub(parts, _c(1)), hi)))

    # done
    done = _function(mod, f"{prefix}_done", ir.VoidType(), [P64, I64, I64])
    st, step, ep = done.args
    b = ir.IRBuilder(done.append_basic_block("entry"))
    loop, counted, out = (done.append_basic_block(n) for n in ("loop", "counted", "out"))
    idx = b.add(b.mul(b.add(step, _c(1)), _c(LINE)), _c(1))
    b.branch(loop)
    b.position_at_end(loop)
    c = _load(b, st, idx)
    n = b.select(b.icmp_signed("==", b.ashr(c, _c(SHIFT)), ep), b.add(b.and_(c, _c(MASK)), _c(1)), _c(1))
    ok = b.extract_value(b.cmpxchg(_word(b, st, idx), c, b.or_(b.shl(ep, _c(SHIFT)), n), "seq_cst", "seq_cst"), 1)
    b.cbranch(ok, counted, loop)
    b.position_at_end(counted)
    if sys_futex:  # (after the count: a sleeper re-checks after counting itself in)
        wake = done.append_basic_block("wake")
        b.cbranch(b.icmp_signed(">", _load(b, st, SLEEPERS), _c(0)), wake, out)
        b.position_at_end(wake)
        b.atomic_rmw("add", _word(b, st, SEQ), _c(1), "seq_cst")
        _futex(b, syscall, st, FUTEX_WAKE_PRIVATE, _c(2**31 - 1), 0, sys_futex)
    b.branch(out)
    b.position_at_end(out)
    b.ret_void()

    # wait
    wait = _function(mod, f"{prefix}_wait", I1, [P64, I64, I64, I64])
    st, step, ep, parts = wait.args
    b = ir.IRBuilder(wait.append_basic_block("entry"))
    names = ("loop", "complete", "check_abort", "aborted", "poll", "sleep", "again")
    loop, complete, check_abort, aborted, poll, sleep, again = (wait.append_basic_block(n) for n in names)
    idx = b.add(b.mul(b.add(step, _c(1)), _c(LINE)), _c(1))
    want = b.or_(b.shl(ep, _c(SHIFT)), parts)
    entry = b.block
    b.branch(loop)
    b.position_at_end(loop)
    polls = b.phi(I64)
    polls.add_incoming(_c(0), entry)

    def finished(bb: ir.IRBuilder, c: ir.Value) -> ir.Value:
        return bb.or_(bb.icmp_signed("==", c, want), bb.icmp_signed(">", bb.ashr(c, _c(SHIFT)), ep))

    b.cbranch(finished(b, _load(b, st, idx)), complete, check_abort)
    b.position_at_end(complete)
    b.ret(ir.Constant(I1, 1))
    b.position_at_end(check_abort)
    b.cbranch(b.icmp_signed(">=", _load(b, st, ABORT), ep), aborted, poll)
    b.position_at_end(aborted)
    b.ret(ir.Constant(I1, 0))
    b.position_at_end(poll)
    polls1 = b.add(polls, _c(1))
    b.cbranch(b.icmp_signed("<=", polls1, _c(SPIN)), again, sleep)
    b.position_at_end(sleep)
    if not sys_futex:
        b.call(yield_fn, [])
        b.branch(again)
    else:
        nap = wait.append_basic_block("nap")
        seq = _load(b, st, SEQ)
        b.atomic_rmw("add", _word(b, st, SLEEPERS), _c(1), "seq_cst")
        # completed meanwhile? (done() wakes only the sleepers it sees)
        b.cbranch(finished(b, _load(b, st, idx)), again, nap)
        b.position_at_end(nap)
        _futex(b, syscall, st, FUTEX_WAIT_PRIVATE, seq, SLEEP_NS, sys_futex)
        b.branch(again)
    b.position_at_end(again)
    if sys_futex:
        # the sleeper's count is taken back on every way out of ``sleep`` (``again`` from ``poll`` skips it)
        came_from_sleep = b.phi(I1)
        came_from_sleep.add_incoming(ir.Constant(I1, 0), poll)
        came_from_sleep.add_incoming(ir.Constant(I1, 1), sleep)
        came_from_sleep.add_incoming(ir.Constant(I1, 1), nap)
        with b.if_then(came_from_sleep):
            b.atomic_rmw("add", _word(b, st, SLEEPERS), _c(-1), "seq_cst")
    polls.add_incoming(polls1, b.block)
    b.branch(loop)
    return claim, done, wait


def parallel_entry(mod: ir.Module, name: str, steps: Sequence[tuple[int, int, Sequence[int]]],
                   terminal: Sequence[int], sys_futex: int, status_argument: int, status_kernel: int,
                   emit_call: Callable[[ir.IRBuilder, dict[str, ir.Value], int, ir.Block], None],
                   scratch_bases: Callable[[ir.IRBuilder, ir.Value], dict[str, ir.Value]]) -> ir.Function:
    """The C entry ``<name>_run(scratch, state, main, epoch) -> i32`` of a parallel schedule in ``mod``.

    ``steps``: per step (first call, parts, dependencies), as ``compiler.codegen.threads.plan_steps`` makes
    them; ``terminal``: the steps the caller waits for. ``scratch_bases(builder, scratch)`` gives each
    buffer's base pointer; ``emit_call(builder, bases, call index, fail block)`` writes one kernel call
    that branches to ``fail`` on an error and leaves the builder after it on success."""
    claim, done, wait = protocol(mod, name, sys_futex)
    i8p = ir.IntType(8).as_pointer()
    fn = ir.Function(mod, ir.FunctionType(I32, [i8p, P64, I64, I64]), f"{name}_run")
    scratch, st, main, ep = fn.args
    scratch.name, st.name, main.name, ep.name = "scratch", "state", "main", "epoch"
    entry, bad_arg, failed, stop, body = (fn.append_basic_block(n) for n in
                                          ("entry", "bad_argument", "kernel_error", "aborted", "body"))
    b = ir.IRBuilder(entry)
    null = b.or_(b.icmp_unsigned("==", scratch, ir.Constant(i8p, None)),
                 b.icmp_unsigned("==", st, ir.Constant(P64, None)))
    b.cbranch(null, bad_arg, body)
    ir.IRBuilder(bad_arg).ret(ir.Constant(I32, status_argument))
    ir.IRBuilder(stop).ret(ir.Constant(I32, 0))
    fb = ir.IRBuilder(failed)  # abort the run: every wait of this epoch gives up
    fb.store_atomic(ep, _word(fb, st, ABORT), "seq_cst", 8)
    if sys_futex:
        fb.atomic_rmw("add", _word(fb, st, SEQ), _c(1), "seq_cst")
        _futex(fb, mod.get_global("syscall"), st, FUTEX_WAKE_PRIVATE, _c(2**31 - 1), 0, sys_futex)
    fb.ret(ir.Constant(I32, status_kernel))
    b = ir.IRBuilder(body)
    bases = scratch_bases(b, scratch)
    for i, (first, parts, deps) in enumerate(steps):
        for d in deps:  # wait first, then claim: a thread never holds a part it cannot start
            ok = b.call(wait, [st, _c(d), ep, _c(steps[d][1])])
            nxt = fn.append_basic_block(f"s{i}_after_{d}")
            b.cbranch(ok, nxt, stop)
            b.position_at_end(nxt)
        following = fn.append_basic_block(f"s{i}_end")
        if parts == 1:
            run = fn.append_basic_block(f"s{i}_run")
            b.cbranch(b.icmp_signed("==", b.call(claim, [st, _c(i), ep, _c(1), main]), _c(0)), run, following)
            b.position_at_end(run)
            emit_call(b, bases, first, failed)
            b.call(done, [st, _c(i), ep])
            b.branch(following)
        else:
            loop, dispatch, count = (fn.append_basic_block(f"s{i}_{n}") for n in ("claim", "dispatch", "done"))
            b.branch(loop)
            b.position_at_end(loop)
            p = b.call(claim, [st, _c(i), ep, _c(parts), main])
            b.cbranch(b.icmp_signed("<", p, _c(0)), following, dispatch)
            b.position_at_end(dispatch)
            blocks = [fn.append_basic_block(f"s{i}_p{j}") for j in range(parts)]
            sw = b.switch(p, blocks[-1])
            for j, blk in enumerate(blocks[:-1]):
                sw.add_case(_c(j), blk)
            for j, blk in enumerate(blocks):
                b.position_at_end(blk)
                emit_call(b, bases, first + j, failed)
                b.branch(count)
            b.position_at_end(count)
            b.call(done, [st, _c(i), ep])
            b.branch(loop)
        b.position_at_end(following)
    last = fn.append_basic_block("main_waits")
    out = fn.append_basic_block("return")
    b.cbranch(b.icmp_signed("!=", main, _c(0)), last, out)
    b.position_at_end(last)
    for t in terminal:
        b.call(wait, [st, _c(t), ep, _c(steps[t][1])])
    b.branch(out)
    b.position_at_end(out)
    b.ret(ir.Constant(I32, 0))
    return fn


__all__ = ["protocol", "parallel_entry"]
