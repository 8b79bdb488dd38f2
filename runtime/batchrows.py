"""A batch's samples run natively on every thread: no Python, and no GIL, between them or on the workers.

A ``BatchLoop`` (``runtime/batchloop.py``) splits a batch's samples over the team's threads. Run from Python,
each sample re-took the GIL (the copy in, the schedule's call and return, the copy out), and every worker took
it to start its share and to return; a thread waiting for the GIL wakes only some tens of microseconds after
the holder lets go (milliseconds on a busy machine), by which time the holder has taken it again. Measured on
the shared 2-core VM (MLPerf VWW, batch 8, 0.2 ms a sample): in most batches one thread ran all eight samples
while the other waited for the GIL, and the split ran no faster than one thread, often slower.

Here a batch is a *native job*: its description (``Desc``: the schedule's native functions, the threads' work
sets, the batched inputs and outputs, all as addresses) is written into an int64 array, and ``batch_rows`` runs
it on every thread: it claims the next sample (an epoch-tagged counter, so a late thread takes fewer and one
from an earlier batch takes none), copies its input rows into the thread's work set, calls the compiled
schedule's native functions (by address, with numba's calling convention: compiled once, not per model or
batch size, and cached on disk), copies the output rows out and counts the sample finished. The team's
workers run it inside their idle wait (``parallel.idle_wait``) without returning to Python; the caller runs it
through ``parallel.run_batch`` (post the job, run a share, wait until every sample is finished: spinning
``SPIN_NS``, then on a futex). A sample whose schedule fails stops the batch: no sample is claimed after it,
the caller waits for those in flight and the Python side runs the failed sample again through the schedule's
Python entry, which raises the error the kernel raised (``Specialization.batch_native``). A worker that finds
itself on the caller's CPU (``CALLER_CPU``, written by the caller) moves to the process's other CPUs before it
runs a sample it claimed (``_off_callers_cpu``): two threads taking turns on one CPU are slower than the caller alone.
"""

from __future__ import annotations

import ctypes
import os
from collections.abc import Callable, Sequence

import numpy as np
from llvmlite import ir
from numba import njit, types
from numba.core import cgutils
from numba.core.registry import cpu_target
from numba.extending import intrinsic

from . import atomics as _at
from .atomics import atomic_add, atomic_load, compare_swap, futex_wait, futex_wake, spin_clock
from .atomics import monotonic_ns as clock_ns
from .atomics import thread_cpu_ns as cpu_ns
from .numba_cache import LoadWithoutRefresh
from .team import ABORT, C_BEGIN, C_DONE, C_OUT, DESC_WORDS, LINE, MASK, S_INFLIGHT, SHIFT, SYS_FUTEX

#: a description's words (``Desc``). Line 0: the batch's epoch (every counter below is tagged with it), how
#: many threads take part, the batch size, the schedule's buffers, native functions, inputs and outputs, and
#: the epoch base of the threads' step states (sample ``i`` runs a parallel schedule alone at epoch
#: ``EPBASE + 1 + i``); line 1: a step state's length, where the per-thread blocks start and their length
EPOCH, THREADS, BATCH, NBUF, NFN, NIN, NOUT, EPBASE = range(8)
STN, PT, PTSIZE = LINE, LINE + 1, LINE + 2
#: the claim counter (``epoch << SHIFT | samples claimed``, ``STOPPED`` set once a sample failed), the
#: finished counter (each on a cache line of its own: every thread writes them), then the failed sample
#: (``epoch << SHIFT | index``), the futex sequence the caller sleeps on and how many sleep there
NEXT, FINISHED, FAILED, SEQ, SLEEPERS = 2 * LINE, 3 * LINE, 4 * LINE, 4 * LINE + 1, 4 * LINE + 2
#: where in the description a trace of the batch is written (0: none; ``trace``): per thread (at most
#: ``TRACE_THREADS``) ``TRACE_ROW`` words from that offset, then per sample ``TRACE_ROW`` words (see ``batch_rows``)
TRACE = 4 * LINE + 3
TRACE_ROW, TRACE_THREADS = 4, 16
#: a traced sample's first word is its thread + ``TRACE_CPU`` * (its CPU + 1)
TRACE_CPU = 1 << 16
#: line 5: the CPU the caller runs on (written as it posts the batch and before each sample it claims,
#: ``run_batch``, ``batch_rows``); lines 6-7: the CPUs the process may use (a ``cpu_set_t`` of ``CPU_WORDS``
#: words, ``cpu_set_words``; all 0: unknown, workers stay where they are). A worker that finds itself on the
#: caller's CPU moves off it (``_off_callers_cpu``)
CALLER_CPU = 5 * LINE
#: then the caller's clock (``team.C_BEGIN``, monotonic ns, three clock reads by the caller's ``batch_rows`` in
#: every batch): when it began, ran out of samples to claim, and saw every sample finished. With its count they
#: give what the batch would have cost on the caller alone (``BatchLoop``: no tries of it while the split wins)
assert (C_BEGIN, C_OUT, C_DONE) == (CALLER_CPU + 1, CALLER_CPU + 2, CALLER_CPU + 3)  # (team.py's, read there)
CPUS, CPU_WORDS = 6 * LINE, 2 * LINE
#: where the variable part starts: the native functions' addresses; per input (batched array's address, bytes
#: per sample); per output the same; then per thread: per buffer (address, items, item size), its inputs' and
#: outputs' places (addresses) in that thread's work set, and the address of its step state (0: serial)
VAR = 8 * LINE
#: ``Desc``'s default for ``keep_off_caller``: write the process's CPUs into each description, so workers move
#: off the caller's CPU (0 words: they never move; ``benchmarks/batch_split.py`` times both)
KEEP_OFF_CALLER = True
#: the flag of a stopped claim counter (no claim succeeds once it is set; the count below it is the number
#: of samples claimed before): batches must be smaller
STOPPED = 1 << 22
#: the most buffers a schedule may take here (two call sites each in ``call_raw``, compiled once: 12 took
#: 6.4 s to compile cold at load 6, 8 took 4.6 s; VWW and MobileNetV2 have 2); more run from Python
MAX_BUFFERS = 8


@intrinsic
def copy_bytes(typingctx, dst, src, n):
    """``memcpy(dst, src, n)`` on addresses (int64)."""
    if not all(isinstance(t, types.Integer) for t in (dst, src, n)):
        return None

    def codegen(context, builder, sig, args):
        d, s = (builder.inttoptr(a, cgutils.voidptr_t) for a in args[:2])
        cgutils.raw_memcpy(builder, d, s, args[2], 1)
        return context.get_dummy_value()

    return types.none(dst, src, n), codegen


_U8 = types.Array(types.uint8, 1, "C")
_I64 = types.Array(types.int64, 1, "C")
#: what ``call_raw`` passes a parallel schedule after its buffers: the caller flag, the epoch, the step state
#: (``compiler/codegen/threads.PARALLEL_SIG``, the schedule's own parameters)
_PARALLEL_TAIL = (types.boolean, types.int64, _I64)


def _flat_llvm(ty: types.Type) -> list[str]:
    """numba's LLVM argument types of ``ty`` in its calling convention, flattened, every pointer as ``ptr``
    (their machine representation is one: only the static pointee type differs)."""
    out: list[str] = []

    def walk(t: object) -> None:
        if isinstance(t, tuple):
            for x in t:
                walk(x)
        else:
            out.append("ptr" if isinstance(t, ir.PointerType) else str(t))

    walk(cpu_target.target_context.data_model_manager[ty].get_argument_type())
    return out


def raw_callable(signature: object) -> bool:
    """Whether ``call_raw`` can call a compiled function of this numba ``signature`` by address: it returns
    None and takes buffers (1-D C-contiguous arrays, passed as uint8 arrays: numba's calling convention
    gives them the same arguments but for the data pointer's static type), then, for a parallel schedule,
    the ``_PARALLEL_TAIL``. Every assumption ``call_raw`` makes about the callee, in one place."""
    args = tuple(signature.args)
    if args[-3:] == _PARALLEL_TAIL:
        args = args[:-3]
    return signature.return_type == types.none and len(args) > 0 and all(
        isinstance(a, types.Array) and a.ndim == 1 and a.layout == "C" and _flat_llvm(a) == _flat_llvm(_U8)
        for a in args)


def _raw_array(context, builder, aryty, addr, items, itemsize):
    """A numba array value of type ``aryty`` (1-D, C) over ``items`` items of ``itemsize`` bytes at address
    ``addr``, owned by nobody (no meminfo: the callee's reference counting of it does nothing)."""
    ary = context.make_array(aryty)(context, builder)
    ary.meminfo = cgutils.get_null_value(ary.meminfo.type)
    ary.parent = cgutils.get_null_value(ary.parent.type)
    ary.nitems = items
    ary.itemsize = itemsize
    ary.data = builder.inttoptr(addr, ary.data.type)
    ary.shape = cgutils.pack_array(builder, [items])
    ary.strides = cgutils.pack_array(builder, [itemsize])
    return ary._getvalue()


@intrinsic
def call_raw(typingctx, fn, d, at, nbuf, st, ep, main):
    """Call the compiled schedule whose native function (numba's calling convention, returning None) is at
    address ``fn`` on ``nbuf`` 1-D buffers described at ``d[at:at + 3 * nbuf]`` (address, items, item size
    each), followed, when ``st`` (an address) is not 0, by ``(main != 0, ep, <step state at st, d[STN]
    items>)``: a parallel schedule run by this thread alone (``main`` 1), or as a worker of a team's run
    (``main`` 0, ``split_job``). 1 if it raised, else 0.

    Every buffer is passed as a uint8 array with the real item count and size: the arguments' machine
    representation is the callee's (only the data pointer's static type differs, which the call does not
    see). One call site per buffer count up to ``MAX_BUFFERS``."""
    if not isinstance(d, types.Array) or d.dtype != types.int64:
        return None

    def codegen(context, builder, sig, args):
        fn_v, d_v, at_v, nbuf_v, st_v, ep_v, main_v = args
        i64 = ir.IntType(64)
        words = context.make_array(sig.args[1])(context, builder, d_v).data

        def word(k):
            return builder.load(builder.gep(words, [k]))

        failed = cgutils.alloca_once_value(builder, ir.Constant(i64, 0))
        conv = context.call_conv
        end = builder.append_basic_block("call_raw.end")
        switch = builder.switch(nbuf_v, end)
        for n in range(1, MAX_BUFFERS + 1):
            case = builder.append_basic_block(f"call_raw.{n}")
            switch.add_case(ir.Constant(i64, n), case)
            builder.position_at_end(case)
            bufs = []
            for k in range(n):
                base = builder.add(at_v, ir.Constant(i64, 3 * k))
                bufs.append(_raw_array(context, builder, _U8, word(base),
                                       word(builder.add(base, ir.Constant(i64, 1))),
                                       word(builder.add(base, ir.Constant(i64, 2)))))
            serial = cgutils.is_null(builder, st_v)
            with builder.if_else(serial) as (then, otherwise):
                with then:
                    status, _ = conv.call_function(
                        builder, builder.inttoptr(fn_v, conv.get_function_type(types.none, [_U8] * n).as_pointer()),
                        types.none, [_U8] * n, bufs)
                    builder.store(builder.zext(status.is_error, i64), failed)
                with otherwise:
                    argtys = [_U8] * n + list(_PARALLEL_TAIL)
                    state = _raw_array(context, builder, _I64, st_v, word(ir.Constant(i64, STN)), ir.Constant(i64, 8))
                    status, _ = conv.call_function(
                        builder, builder.inttoptr(fn_v, conv.get_function_type(types.none, argtys).as_pointer()),
                        types.none, argtys,
                        [*bufs, builder.icmp_unsigned("!=", main_v, ir.Constant(i64, 0)), ep_v, state])
                    builder.store(builder.zext(status.is_error, i64), failed)
            builder.branch(end)
        builder.position_at_end(end)
        return builder.load(failed)

    return types.int64(types.int64, d, types.int64, types.int64, types.int64, types.int64, types.int64), codegen


@njit(nogil=True, cache=True, inline="always")
def _count(d, at, ep):  # pragma: no cover - compiled
    """The count of the epoch-tagged word ``d[at]`` in batch ``ep`` (0 while it holds an earlier batch's)."""
    c = atomic_load(d, at)
    return (c & MASK) if (c >> SHIFT) == ep else 0


@njit(nogil=True, cache=True, inline="always")
def _claim(d, ep, batch):  # pragma: no cover - compiled
    """The next sample of batch ``ep`` this thread now owns, or -1 (all claimed, stopped, or a later batch)."""
    while True:
        c = atomic_load(d, NEXT)
        e = c >> SHIFT
        if e > ep:
            return -1
        k = (c & MASK) if e == ep else 0
        if k >= batch:  # (STOPPED is larger than any batch)
            return -1
        if compare_swap(d, NEXT, c, (ep << SHIFT) | (k + 1)):
            return k


@njit(nogil=True, cache=True, inline="always")
def _wake(d):  # pragma: no cover - compiled
    """Wake the caller sleeping in ``_wait_all`` (after what it waits for has changed)."""
    if SYS_FUTEX and atomic_load(d, SLEEPERS) > 0:
        atomic_add(d, SEQ, 1)
        futex_wake(d, SEQ)


@njit(nogil=True, cache=True, inline="always")
def _stop(d, ep):  # pragma: no cover - compiled
    """Claim nothing more in batch ``ep``: set ``STOPPED`` on the claim counter, keeping the count claimed."""
    while True:
        c = atomic_load(d, NEXT)
        if (c >> SHIFT) != ep or (c & STOPPED):
            return
        if compare_swap(d, NEXT, c, c | STOPPED):
            return


@njit(nogil=True, cache=True, inline="always")
def _finish(d, ep):  # pragma: no cover - compiled
    """Count one claimed sample of batch ``ep`` finished (after its rows are written, or it failed)."""
    while True:
        c = atomic_load(d, FINISHED)
        n = (c & MASK) + 1 if (c >> SHIFT) == ep else 1
        if compare_swap(d, FINISHED, c, (ep << SHIFT) | n):
            break
    _wake(d)


@njit(nogil=True, cache=True, inline="always")
def _all_finished(d, ep, batch):  # pragma: no cover - compiled
    """Every sample of batch ``ep`` finished, or once it stopped, every sample claimed before."""
    k = _count(d, NEXT, ep)
    target = (k & (STOPPED - 1)) if k & STOPPED else batch
    return _count(d, FINISHED, ep) >= target


@njit(nogil=True, cache=True, inline="always")
def _nap(d, ep, batch):  # pragma: no cover - compiled
    """Sleep on the futex until a finisher wakes us (``_finish``; or ``SLEEP_NS``), unless all is finished
    once we are counted among the sleepers (a finisher wakes only sleepers it sees counted)."""
    seq = atomic_load(d, SEQ)
    atomic_add(d, SLEEPERS, 1)
    if not _all_finished(d, ep, batch):
        futex_wait(d, SEQ, seq)
    atomic_add(d, SLEEPERS, -1)


@njit(nogil=True, cache=True, inline="always")
def _wait_all(d, ep, batch):  # pragma: no cover - compiled
    """Until ``_all_finished``: spin ``SPIN_NS``, then sleep (``_nap``) until it is."""
    polls = start = 0
    while not _all_finished(d, ep, batch):
        polls += 1
        start = spin_clock(polls, start)
        if start < 0:
            _nap(d, ep, batch)


@njit(nogil=True, cache=True, inline="always")
def _off_callers_cpu(d, caller, cpus):  # pragma: no cover - compiled
    """If this worker runs on the CPU the caller of the job described by ``d`` runs on (``d[caller]``: a
    batch's ``CALLER_CPU``, a split job's ``S_CALLER``), let it run only on the process's other CPUs (the
    ``CPU_WORDS`` words from ``d[cpus]``): the kernel moves it there at once, and it stays off that CPU until
    a later job finds it on the caller's again.

    A sleeping worker woken by the caller is often placed on the caller's own CPU when no CPU is idle
    (wake-affine: another process busy on the other core): the two threads then take turns on one CPU,
    the worker preempting the caller right after the post, and a split batch costs more than the caller
    alone (measured, VWW batch 8 on 2 threads: 2.0 ms against 1.7 ms alone and 0.9 ms on two CPUs)."""
    here = _at.current_cpu()
    if here < 0 or here >= 64 * CPU_WORDS or here != atomic_load(d, caller):
        return
    mask = np.empty(CPU_WORDS, np.int64)
    rest = 0
    for k in range(CPU_WORDS):
        mask[k] = d[cpus + k]
        if k == here // 64:
            mask[k] &= ~(np.int64(1) << (here % 64))
        rest |= mask[k]
    if rest != 0:  # (another CPU to go to; a refusal leaves the worker where it is)
        _at.set_thread_affinity(mask)


@njit(nogil=True, cache=True)
def batch_rows(d, tid, wait):  # pragma: no cover - compiled
    """Thread ``tid``'s part of the batch described by ``d`` (see the module's docstring and ``Desc``):
    claim samples and run each, until none is left; ``wait`` (the caller): then wait until every sample is
    finished. How many samples this thread ran (one that failed not counted)."""
    ep = atomic_load(d, EPOCH)
    n = 0
    if tid >= d[THREADS]:
        return 0
    tr = d[TRACE] if tid < TRACE_THREADS else 0
    if wait:
        d[C_BEGIN] = clock_ns()
    if tr:  # (thread: when it began, ran out of samples, stopped waiting, its CPU time in the batch)
        d[tr + TRACE_ROW * tid] = clock_ns()
        d[tr + TRACE_ROW * tid + 3] = -cpu_ns()
    while True:
        if tid == 0:  # (where the caller is now: a worker on its CPU would take turns with it)
            d[CALLER_CPU] = _at.current_cpu()
        batch = d[BATCH]
        i = _claim(d, ep, batch)
        if i < 0:
            break
        if tid:  # (a worker with a sample to run)
            _off_callers_cpu(d, CALLER_CPU, CPUS)
        at = tr + TRACE_ROW * (TRACE_THREADS + i) if tr else 0
        if at + TRACE_ROW > len(d):  # (a sample beyond the trace's room)
            at = 0
        if at:  # (sample: which thread ran it and on which CPU, when it began and ended, its CPU time)
            d[at], d[at + 1], d[at + 3] = tid + TRACE_CPU * (_at.current_cpu() + 1), clock_ns(), -cpu_ns()
        # (a sample claimed in batch ``ep``: the batch is not over, so ``d`` still describes it)
        nbuf, nfn, nin, nout = d[NBUF], d[NFN], d[NIN], d[NOUT]
        io = VAR + nfn
        mine = d[PT] + tid * d[PTSIZE]
        places = mine + 3 * nbuf
        for k in range(nin):
            size = d[io + 2 * k + 1]
            copy_bytes(d[places + k], d[io + 2 * k] + i * size, size)
        st = d[places + nin + nout]
        failed = 0
        for f in range(nfn):
            failed = call_raw(d[VAR + f], d, mine, nbuf, st, d[EPBASE] + 1 + i, 1)
            if failed:
                break
        if failed:
            d[FAILED] = (ep << SHIFT) | i
            _stop(d, ep)
        else:
            outs = io + 2 * nin
            for k in range(nout):
                size = d[outs + 2 * k + 1]
                copy_bytes(d[outs + 2 * k] + i * size, d[places + nin + k], size)
            n += 1
        if at:
            d[at + 2] = clock_ns()
            d[at + 3] += cpu_ns()
        _finish(d, ep)
        if failed:
            break
    if tr:
        d[tr + TRACE_ROW * tid + 1] = clock_ns()
    if wait:
        d[C_OUT] = clock_ns()
        _wait_all(d, ep, d[BATCH])
        d[C_DONE] = clock_ns()
    if tr:
        d[tr + TRACE_ROW * tid + 2] = clock_ns()
        d[tr + TRACE_ROW * tid + 3] += cpu_ns()
    return n


@njit(nogil=True, cache=True)
def describe(d, made, cpus, ep, batch, epbase):  # pragma: no cover - compiled
    """Batch ``ep`` of ``batch`` samples described in ``d`` from ``made`` (``Desc._made_for``: the native
    functions, the header and the threads' blocks) and the process's CPUs ``cpus``, its step states' epoch
    base ``epbase``; the rows' words (``Desc.fill``) written already. A traced batch's rows are cleared (a
    thread that takes no part leaves its row 0). The epoch last: a late thread of an earlier batch reads it
    first. One native call, not ten numpy slice copies (~10-18 us of Python in a split batch's set-up)."""
    io = VAR + made[NFN]
    for k in range(VAR, io):
        d[k] = made[k]
    for k in range(io + 2 * (made[NIN] + made[NOUT]), len(made)):
        d[k] = made[k]
    for k in range(THREADS, PTSIZE + 1):
        d[k] = made[k]
    d[BATCH], d[EPBASE] = batch, epbase
    for k in range(CPU_WORDS):
        d[CPUS + k] = cpus[k]
    tr = d[TRACE]
    if tr:
        for k in range(tr, min(tr + TRACE_ROW * (TRACE_THREADS + batch), len(d))):
            d[k] = 0
    d[EPOCH] = ep


@intrinsic
def words_at(typingctx, addr, n):
    """The ``n`` int64 words at address ``addr`` as a 1-D array owned by nobody (a split job's description,
    or a step state, known by address only)."""
    if not all(isinstance(t, types.Integer) for t in (addr, n)):
        return None

    def codegen(context, builder, sig, args):
        return _raw_array(context, builder, _I64, args[0], args[1], ir.Constant(ir.IntType(64), 8))

    return _I64(addr, n), codegen


#: a split job's description (``split_desc``: one per parallel schedule and set of buffers, rewritten only
#: in its epoch word): the run's epoch, how many native functions the schedule is (its segments, addresses
#: at ``S_FNS``), its buffer count, its step state's address, how many threads take part; the state's length
#: (at ``STN``, where ``call_raw`` reads it); the workers running it now (own line: only an aborted run's
#: caller reads it); the buffers (``call_raw``)
S_EP, S_NFN, S_NBUF, S_ST, S_THREADS = range(5)
#: the CPU the caller posted the last run from (``parallel.post``), and where the process's CPUs are written
#: (``cpu_set_words``; zeros: workers stay where they are): a worker on the caller's CPU moves off it
#: (``_off_callers_cpu``) before it joins the run
S_CALLER = 5
S_BUF = 3 * LINE  # (S_INFLIGHT, 2 * LINE: in team.py, which reads it without numba)
S_CPUS = S_BUF + 3 * MAX_BUFFERS
#: the schedule's native functions (``native_functions``: its segments, run in order), at most ``MAX_FNS``
S_FNS = S_CPUS + CPU_WORDS
MAX_FNS = 4 * LINE
SPLIT_WORDS = S_FNS + MAX_FNS
#: a split job's trace (``trace_split``; line 1, after ``STN``): non-zero to write it, then the last worker run's
#: epoch, start and end (monotonic ns), its CPU ns, and when that worker had gone to sleep in its idle wait
#: before the job (monotonic ns; 0: it was spinning when the job came)
S_TRACE = STN + 1
S_TRACE_WORDS = 6


def split_desc(fns: Sequence[int], buffers: Sequence[np.ndarray], state: np.ndarray,
               threads: int) -> np.ndarray | None:
    """The description of a parallel schedule's runs on ``threads`` threads of a team as a *split job*
    (``split_job``): its native functions at addresses ``fns`` (``native_functions``: its segments, in
    order), each called on ``buffers`` (1-D, C-contiguous, at most ``MAX_BUFFERS``) with the step state
    ``state``; None if they do not fit. The caller keeps ``buffers`` and ``state`` alive as long as the
    description may be run."""
    if len(fns) > MAX_FNS or len(buffers) > MAX_BUFFERS or not all(
            isinstance(b, np.ndarray) and b.ndim == 1 and b.flags.c_contiguous for b in buffers):
        return None
    s = np.zeros(SPLIT_WORDS, np.int64)
    s[S_NFN], s[S_NBUF], s[S_ST], s[S_THREADS], s[STN] = len(fns), len(buffers), state.ctypes.data, threads, len(state)
    s[S_FNS:S_FNS + len(fns)] = fns
    s[S_CALLER] = -1
    if KEEP_OFF_CALLER:
        s[S_CPUS:S_CPUS + CPU_WORDS] = cpu_set_words()
    for k, b in enumerate(buffers):
        s[S_BUF + 3 * k:S_BUF + 3 * k + 3] = b.ctypes.data, b.size, b.itemsize
    return s


def split_run_desc(fn: Callable[..., None], buffers: Sequence[np.ndarray], state: np.ndarray,
                   threads: int) -> np.ndarray | None:
    """``split_desc`` of the compiled parallel schedule ``fn`` (numba dispatchers compiled for one signature:
    ``native_functions``), or None where it is not compiled so: ``ParallelRun``'s ``split``."""
    fns = native_functions(fn)
    return split_desc(fns, buffers, state, threads) if fns else None


@njit(nogil=True, cache=True)
def split_job(addr, tid, slept_at):  # pragma: no cover - compiled
    """Team worker ``tid``'s share of a parallel schedule's run described at address ``addr``
    (``split_desc``), run inside its idle wait (``parallel.idle_wait``): the schedule as a worker (claiming
    parts from the back, waiting only for its steps' dependencies), with no Python, GIL or dispatcher between
    the posted job and its first part. The description is the schedule's own and changes only in its epoch,
    so a worker that reads it late runs a later run of the same schedule (the epoch-tagged counters make it
    claim nothing of a finished one). A part that raises aborts the run (the state's abort word). ``slept_at``:
    when the worker went to sleep before this job (0: it was spinning), for the trace (``S_TRACE``)."""
    s = words_at(addr, SPLIT_WORDS)
    if tid >= s[S_THREADS]:
        return
    _off_callers_cpu(s, S_CALLER, S_CPUS)
    atomic_add(s, S_INFLIGHT, 1)
    ep = atomic_load(s, S_EP)
    traced = s[S_TRACE] != 0
    t0 = c0 = 0
    if traced:
        t0, c0 = clock_ns(), cpu_ns()
    for f in range(s[S_NFN]):
        if call_raw(s[S_FNS + f], s, S_BUF, s[S_NBUF], s[S_ST], ep, 0):
            st = words_at(s[S_ST], ABORT + 1)
            st[ABORT] = ep  # (every wait of the run gives up)
            break
    if traced:
        s[S_TRACE + 2], s[S_TRACE + 3], s[S_TRACE + 4], s[S_TRACE + 5] = t0, clock_ns(), cpu_ns() - c0, slept_at
        s[S_TRACE + 1] = ep
    atomic_add(s, S_INFLIGHT, -1)


for _fn in (batch_rows, split_job, describe):
    try:
        _fn._cache = LoadWithoutRefresh(_fn.py_func)  # (its first job loads fast)
    except Exception:  # noqa: BLE001 - a numba without this internal layout: its own cache stays  # pragma: no cover
        pass


def trace_split(desc: np.ndarray, on: bool = True) -> None:
    """Make the worker runs of the split job described by ``desc`` (``split_desc``) write their trace
    (``S_TRACE``; ``on`` False stops it): for diagnostics (``read_split_trace``)."""
    desc[S_TRACE:S_TRACE + S_TRACE_WORDS] = 0
    desc[S_TRACE] = int(on)


def read_split_trace(desc: np.ndarray) -> tuple[int, int, int, int, int]:
    """The trace of the last worker run of the split job described by ``desc`` (``trace_split``): its epoch (0
    if no worker ran it since tracing began), start and end (monotonic ns), its thread CPU ns, and when that
    worker had gone to sleep before it (0: it was spinning)."""
    ep, t0, t1, cpu, slept = (int(v) for v in desc[S_TRACE + 1:S_TRACE + S_TRACE_WORDS])
    return ep, t0, t1, cpu, slept


def stopped_at(d: np.ndarray) -> int | None:
    """The sample whose failure stopped the batch last described by ``d``, or None if it did not stop."""
    ep = int(d[EPOCH])
    c, f = int(d[NEXT]), int(d[FAILED])
    if c >> SHIFT != ep or not c & STOPPED or f >> SHIFT != ep:
        return None
    return f & MASK


def start_trace(d: np.ndarray, at: int = DESC_WORDS // 4) -> None:
    """Make the batches described in ``d`` (a team's ``desc``) write their trace from word ``at`` on (see
    ``TRACE``): for diagnostics (``read_trace``); ``at`` 0 stops it."""
    if at and at < VAR or at + TRACE_ROW * TRACE_THREADS > len(d):
        raise ValueError(f"a trace cannot start at word {at} of a {len(d)}-word description")
    d[TRACE] = at


def read_trace(d: np.ndarray, threads: int, batch: int, cpus: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """The trace of the last batch described in ``d`` (``start_trace``): per thread (when it began, ran out of
    samples and stopped waiting, monotonic ns, 0 if it took no part; its CPU ns in the batch) and per sample
    (the thread that ran it, when it began and ended, its CPU ns), as two int64 arrays of 4 columns; ``cpus``:
    the samples' have a fifth, the CPU the sample began on (-1: unknown)."""
    at = int(d[TRACE])
    rows = d[at:at + TRACE_ROW * (TRACE_THREADS + batch)].reshape(-1, TRACE_ROW).copy()
    samples = rows[TRACE_THREADS:TRACE_THREADS + batch]
    cpu = samples[:, :1] // TRACE_CPU - 1
    samples[:, 0] %= TRACE_CPU
    return rows[:threads], np.hstack([samples, cpu]) if cpus else samples


def native_functions(run: Callable[..., None]) -> list[int] | None:
    """The addresses of the native functions of a numba schedule ``run`` (one compiled signature each, on
    1-D C buffers, returning None), in the order a call runs them: the schedule, or its segments
    (``segments``, ``compiler/codegen/emit.py``); None when it is not compiled that way (a Python or lazily
    compiled schedule: samples run from Python) or ``call_raw`` cannot call it (``raw_callable``)."""
    parts = getattr(run, "segments", None) or [run]
    found = []
    for part in parts:
        overloads = getattr(part, "overloads", None)
        if overloads is None or len(overloads) != 1:
            return None
        cres = next(iter(overloads.values()))
        if not raw_callable(cres.signature):
            return None
        try:
            found.append(int(cres.library.get_pointer_to_function(cres.fndesc.llvm_func_name)))
        except Exception:  # noqa: BLE001 - a numba without this layout: samples run from Python
            return None
        if not found[-1]:
            return None
    return found


def address(a: np.ndarray) -> int:
    """The address of a C-contiguous array's first byte: through ctypes' buffer protocol (~0.5 us, C code),
    else (read-only or empty) ``a.ctypes.data`` (~1.5 us warm, Python code: in a split batch's preparation,
    after the samples' work has evicted the interpreter's caches, its two calls took ~10 us of the ~45 us
    before the caller's first sample, VWW batch 8)."""
    try:
        return ctypes.addressof(ctypes.c_char.from_buffer(a))
    except (TypeError, ValueError, BufferError):
        return a.ctypes.data


def cpu_set_words() -> np.ndarray:
    """The CPUs this process may run on (``os.sched_getaffinity``) as the ``CPUS`` words of a description
    (bit ``c % 64`` of word ``c // 64``; CPUs beyond ``64 * CPU_WORDS`` left out); zeros where unknown."""
    words = np.zeros(CPU_WORDS, np.int64)
    try:
        cpus = os.sched_getaffinity(0)
    except AttributeError:  # (not Linux: workers never move)
        return words
    for c in cpus:
        if c < 64 * CPU_WORDS:
            words[c // 64] |= np.int64(1 << (c % 64)) if c % 64 < 63 else np.int64(-1 << 63)
    return words


class Desc:
    """Writes batch descriptions for one schedule: its native functions ``fns``, buffer count and (for a
    parallel schedule run alone) step state length ``stn`` (0: serial)."""

    #: batches this large or larger run from Python (their counts would reach ``STOPPED``)
    max_batch = STOPPED

    def __init__(self, fns: Sequence[int], nbuf: int, nin: int, nout: int, stn: int,
                 keep_off_caller: bool | None = None):
        self.fns = np.asarray(fns, np.int64)
        #: the ``CPUS`` words of its descriptions: the process's CPUs (workers move off the caller's CPU), or
        #: zeros (they stay where the kernel puts them)
        self.cpus = cpu_set_words() if (KEEP_OFF_CALLER if keep_off_caller is None else keep_off_caller) \
            else np.zeros(CPU_WORDS, np.int64)
        self.nbuf, self.nin, self.nout, self.stn = nbuf, nin, nout, stn
        self.ptsize = 3 * nbuf + nin + nout + 1
        self.pt = VAR + len(fns) + 2 * (nin + nout)
        #: descriptions already written for a set of thread blocks and step states (by their ids: the entry
        #: keeps them alive), all but the batch's rows: a call copies one in and writes the rows' addresses
        #: (~3 us, against ~23 us word by word from Python: a 0.2 ms sample's batch waited for it)
        self._made: dict[tuple[int, ...], tuple[np.ndarray, Sequence[np.ndarray], Sequence[np.ndarray | None]]] = {}

    def words(self, threads: int) -> int:
        """The length of a description for ``threads`` threads."""
        return self.pt + threads * self.ptsize

    @staticmethod
    def thread_block(bufs: Sequence[np.ndarray], ins: Sequence[np.ndarray], outs: Sequence[np.ndarray]) -> np.ndarray:
        """A thread's block for one work set: its buffers, its inputs' and outputs' places (the state's address,
        the block's last word, is filled per batch)."""
        words = [w for b in bufs for w in (b.ctypes.data, b.size, b.itemsize)]
        words += [v.ctypes.data for v in [*ins, *outs]]
        return np.array([*words, 0], np.int64)

    def _made_for(self, blocks: Sequence[np.ndarray], states: Sequence[np.ndarray | None]) -> np.ndarray:
        """The description of a batch on these thread blocks and step states, but its rows, batch size, step
        state epochs and epoch (written once per set, then reused)."""
        key = (*map(id, blocks), *map(id, states))
        made = self._made.get(key)
        if made is not None:
            return made[0]
        nfn = len(self.fns)
        d = np.zeros(self.words(len(blocks)), np.int64)
        d[VAR:VAR + nfn] = self.fns
        for t, (block, st) in enumerate(zip(blocks, states)):
            at = self.pt + t * self.ptsize
            d[at:at + self.ptsize] = block
            d[at + self.ptsize - 1] = 0 if st is None else st.ctypes.data
        d[STN], d[PT], d[PTSIZE] = self.stn, self.pt, self.ptsize
        d[THREADS], d[NBUF], d[NFN], d[NIN], d[NOUT] = len(blocks), self.nbuf, nfn, self.nin, self.nout
        if len(self._made) >= 16:  # (work sets come and go: keep the recent ones)
            self._made.clear()
        self._made[key] = (d, list(blocks), list(states))
        return d

    def fill(self, d: np.ndarray, ep: int, batch: int, rows_in: Sequence[np.ndarray], rows_out: Sequence[np.ndarray],
             blocks: Sequence[np.ndarray], states: Sequence[np.ndarray | None], epbase: int) -> None:
        """Describe batch ``ep`` in ``d`` (its header last: a late thread of an earlier batch reads the
        epoch first). ``rows_in``/``rows_out``: the batched arrays (C-contiguous, ``batch`` rows); ``blocks``
        and ``states``: per thread, its work set's ``thread_block`` and its step state (or None)."""
        made = self._made_for(blocks, states)
        io = VAR + len(self.fns)
        for x in rows_in:
            d[io], d[io + 1] = address(x), x.nbytes // batch
            io += 2
        for x in rows_out:
            d[io], d[io + 1] = address(x), x.nbytes // batch
            io += 2
        describe(d, made, self.cpus, ep, batch, epbase)


__all__ = ["STOPPED", "MAX_BUFFERS", "DESC_WORDS", "TRACE", "CALLER_CPU", "C_BEGIN", "C_OUT", "C_DONE",
           "CPUS", "CPU_WORDS", "KEEP_OFF_CALLER",
           "S_CALLER", "S_CPUS", "cpu_set_words", "SPLIT_WORDS", "S_EP", "S_TRACE", "copy_bytes", "call_raw",
           "batch_rows", "describe", "words_at", "split_desc", "split_run_desc", "split_job", "trace_split",
           "read_split_trace", "stopped_at",
           "start_trace", "read_trace", "native_functions", "address", "Desc"]
