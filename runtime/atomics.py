"""The atomic operations, futex waits and clock of the runtime's compiled thread protocols, as numba intrinsics.

The step protocol of a parallel schedule (``runtime/parallel.py``), the team's idle wait and a batch's
native sample loop (``runtime/batchrows.py``) are built from these: an acquire load, a sequentially
consistent add and compare-and-swap on an int64 array word, a futex wait and wake on a word's low 32 bits, the
monotonic clock and ``sched_yield``. The libc functions they call are declared by name (no process-specific
address in cached machine code).
"""

from __future__ import annotations

import ctypes
import platform
from collections.abc import Callable

from llvmlite import binding as llvm_binding
from llvmlite import ir
from numba import njit, types
from numba.core import cgutils
from numba.extending import intrinsic

from .team import FUTEX_WAIT_PRIVATE, FUTEX_WAKE_PRIVATE, IDLE_SLEEP_NS, SLEEP_NS, SPIN, SPIN_CHECK, SPIN_NS, SYS_FUTEX


def _register_libc(*names: str) -> None:
    """Make libc functions resolvable by name in JIT-compiled (and disk-cached) code: the intrinsics below
    declare the symbols, so cached machine code holds no process-specific address."""
    for name in names:
        try:
            fn = getattr(ctypes.CDLL(None), name)
        except (OSError, AttributeError):  # pragma: no cover - not a POSIX libc: LLVM resolves it or fails loudly
            continue
        llvm_binding.add_symbol(name, ctypes.cast(fn, ctypes.c_void_p).value)


_register_libc("sched_yield", "syscall", "clock_gettime", "sched_getcpu", "sched_setaffinity")
llvm_binding.initialize_native_asmparser()  # (``cpu_pause``'s inline assembly; numba initialises the printer only)
#: ``clock_gettime``'s monotonic clock (Linux; only read where there is a futex, see ``spin_clock``)
CLOCK_MONOTONIC = 1
#: ``clock_gettime``'s clock of the calling thread's CPU time (Linux)
CLOCK_THREAD_CPUTIME_ID = 3


def _word_pointer(context, builder, aryty, ary, idx):
    arr = context.make_array(aryty)(context, builder, ary)
    return cgutils.get_item_pointer(context, builder, aryty, arr, [idx])


def _on_word(result: types.Type, nargs: int, emit: Callable[..., ir.Value]) -> Callable[..., object]:
    """An intrinsic ``f(arr, idx, *ints)`` on the int64 word ``arr[idx]`` (``arr`` an int64 array, ``nargs``
    int64 operands, at most 2) returning ``result``: its code is ``emit(builder, word pointer, operands)``."""

    def codegen(context, builder, sig, args):
        return emit(builder, _word_pointer(context, builder, sig.args[0], args[0], args[1]), args[2:])

    def typed(arr):
        if not (isinstance(arr, types.Array) and arr.dtype == types.int64):
            return None
        return result(arr, types.intp, *[types.int64] * nargs), codegen

    # numba's intrinsics take fixed parameters (no *args)
    typers = [lambda typingctx, arr, idx: typed(arr), lambda typingctx, arr, idx, a: typed(arr),
              lambda typingctx, arr, idx, a, b: typed(arr)]
    return intrinsic(typers[nargs])


#: ``atomic_load(arr, idx)``: ``arr[idx]`` read with acquire ordering (a poll no compiler hoists from a loop)
atomic_load = _on_word(types.int64, 0, lambda b, ptr, ops: b.load_atomic(ptr, "acquire", 8))
#: ``atomic_add(arr, idx, v)``: ``arr[idx] += v`` as one sequentially consistent operation; the old value
atomic_add = _on_word(types.int64, 1, lambda b, ptr, ops: b.atomic_rmw("add", ptr, ops[0], "seq_cst"))
#: ``compare_swap(arr, idx, old, new)``: atomically ``arr[idx] = new`` if it holds ``old``; True if it did
compare_swap = _on_word(types.boolean, 2, lambda b, ptr, ops: b.extract_value(
    b.cmpxchg(ptr, ops[0], ops[1], "seq_cst", "seq_cst"), 1))


def _futex(builder, ptr, op: int, val: ir.Value, timeout_ns: int) -> ir.Value:
    """``syscall(SYS_futex, low 32 bits of *ptr, op, val, timeout)``."""
    i64, i32 = ir.IntType(64), ir.IntType(32)
    word = builder.bitcast(ptr, i32.as_pointer())  # little-endian: the low half (both platforms of SYS_FUTEX)
    fn = cgutils.get_or_insert_function(builder.module, ir.FunctionType(i64, [i64], var_arg=True), "syscall")
    tp: ir.Value = ir.Constant(i64, 0)
    if timeout_ns:
        spec_t = ir.LiteralStructType([i64, i64])
        spec = cgutils.alloca_once(builder, spec_t)
        builder.store(ir.Constant(spec_t, [timeout_ns // 10**9, timeout_ns % 10**9]), spec)
        tp = builder.ptrtoint(spec, i64)
    return builder.call(fn, [ir.Constant(i64, SYS_FUTEX), builder.ptrtoint(word, i64), ir.Constant(i64, op),
                             builder.zext(builder.trunc(val, i32), i64), tp])


#: ``futex_wait(arr, idx, expected)``: sleep while the low 32 bits of ``arr[idx]`` equal those of ``expected``
#: (until woken, or ``SLEEP_NS``); returns at once if they differ
futex_wait = _on_word(types.int64, 1, lambda b, ptr, ops: _futex(b, ptr, FUTEX_WAIT_PRIVATE, ops[0], SLEEP_NS))
#: ``futex_wait_idle(arr, idx, expected)``: ``futex_wait`` until woken, or ``IDLE_SLEEP_NS`` (an idle worker)
futex_wait_idle = _on_word(types.int64, 1, lambda b, ptr, ops: _futex(b, ptr, FUTEX_WAIT_PRIVATE, ops[0],
                                                                      IDLE_SLEEP_NS))
#: ``futex_wake(arr, idx)``: wake every thread sleeping in ``futex_wait`` on ``arr[idx]``
futex_wake = _on_word(types.int64, 0, lambda b, ptr, ops: _futex(
    b, ptr, FUTEX_WAKE_PRIVATE, ir.Constant(ir.IntType(64), 2**31 - 1), 0))


@intrinsic
def sched_yield(typingctx):
    """The ``sched_yield`` system call: give the CPU to another runnable thread."""
    sig = types.int32()

    def codegen(context, builder, sig, args):
        fn = cgutils.get_or_insert_function(builder.module, ir.FunctionType(ir.IntType(32), []), "sched_yield")
        return builder.call(fn, [])

    return sig, codegen


@intrinsic
def current_cpu(typingctx):
    """``sched_getcpu()``: the CPU the calling thread runs on now, or -1 (Linux: the vDSO or rseq, no system
    call)."""
    sig = types.int64()

    def codegen(context, builder, sig, args):
        fn = cgutils.get_or_insert_function(builder.module, ir.FunctionType(ir.IntType(32), []), "sched_getcpu")
        return builder.sext(builder.call(fn, []), ir.IntType(64))

    return sig, codegen


@intrinsic
def set_thread_affinity(typingctx, mask):
    """``sched_setaffinity(0, ...)``: let the calling thread run only on the CPUs whose bits are set in
    ``mask`` (a 1-D int64 array: a ``cpu_set_t``, CPU ``c`` is bit ``c % 64`` of word ``c // 64``); the
    kernel moves the thread before the call returns. 0, or -1 if refused (no allowed CPU in the set)."""
    if not (isinstance(mask, types.Array) and mask.dtype == types.int64 and mask.ndim == 1):
        return None
    sig = types.int64(mask)

    def codegen(context, builder, sig, args):
        i32, i64 = ir.IntType(32), ir.IntType(64)
        arr = context.make_array(sig.args[0])(context, builder, args[0])
        nbytes = builder.mul(builder.extract_value(arr.shape, 0), ir.Constant(i64, 8))
        fn = cgutils.get_or_insert_function(builder.module, ir.FunctionType(i32, [i32, i64, cgutils.voidptr_t]),
                                            "sched_setaffinity")
        got = builder.call(fn, [ir.Constant(i32, 0), nbytes, builder.bitcast(arr.data, cgutils.voidptr_t)])
        return builder.sext(got, i64)

    return sig, codegen


#: the spin-wait hint of this machine's CPU (inline assembly), or "" where none is known
PAUSE_ASM = {"x86_64": "pause", "amd64": "pause", "aarch64": "yield", "arm64": "yield"}.get(
    platform.machine().lower(), "")


@intrinsic
def cpu_pause(typingctx):
    """A spin-wait hint (x86 ``pause``, Arm ``yield``): a poll loop issues fewer loads and leaves the core's
    other hardware thread (a VM's other vCPU may be it) its issue slots; nothing where none is known."""
    sig = types.none()

    def codegen(context, builder, sig, args):
        if PAUSE_ASM:
            builder.asm(ir.FunctionType(ir.VoidType(), []), PAUSE_ASM, "~{memory}", [], side_effect=True)
        return context.get_dummy_value()

    return sig, codegen


def _clock_ns(clock: int, doc: str) -> Callable[..., object]:
    """An intrinsic ``f()``: ``clock_gettime(clock)`` in nanoseconds."""

    def codegen(context, builder, sig, args):
        i64, i32 = ir.IntType(64), ir.IntType(32)
        spec_t = ir.LiteralStructType([i64, i64])  # struct timespec on 64-bit Linux
        spec = cgutils.alloca_once(builder, spec_t)
        fn = cgutils.get_or_insert_function(builder.module, ir.FunctionType(i32, [i32, spec_t.as_pointer()]),
                                            "clock_gettime")
        builder.call(fn, [ir.Constant(i32, clock), spec])
        zero = ir.Constant(i32, 0)
        sec = builder.load(builder.gep(spec, [zero, zero]))
        nsec = builder.load(builder.gep(spec, [zero, ir.Constant(i32, 1)]))
        return builder.add(builder.mul(sec, ir.Constant(i64, 10**9)), nsec)

    def clock_ns(typingctx):
        return types.int64(), codegen

    clock_ns.__doc__ = doc
    return intrinsic(clock_ns)


#: ``monotonic_ns()``: ``clock_gettime(CLOCK_MONOTONIC)`` in nanoseconds (Linux: the vDSO, ~20 ns, no system call)
monotonic_ns = _clock_ns(CLOCK_MONOTONIC, "clock_gettime(CLOCK_MONOTONIC) in nanoseconds")
#: ``thread_cpu_ns()``: the calling thread's CPU time in nanoseconds (a system call: diagnostics only)
thread_cpu_ns = _clock_ns(CLOCK_THREAD_CPUTIME_ID, "the calling thread's CPU time in nanoseconds")


@njit(nogil=True, cache=True, inline="always")
def spin_clock(polls: int, start: int) -> int:  # pragma: no cover - compiled
    """A spinning wait's clock after its ``polls``-th poll: ``start`` is when it began spinning (0 before the
    first clock read), the result the same, or -1 once it has spun ``SPIN_NS``: sleep. Where there is no futex
    it never sleeps: after ``SPIN`` polls every poll yields the CPU."""
    if not SYS_FUTEX:
        if polls > SPIN:
            sched_yield()
        return start
    if start < 0 or polls % SPIN_CHECK != 0:
        return start
    now = monotonic_ns()
    if start == 0:
        return now
    return start if now - start < SPIN_NS else -1


__all__ = ["CLOCK_MONOTONIC", "PAUSE_ASM", "cpu_pause", "current_cpu", "set_thread_affinity",
           "atomic_load", "atomic_add", "compare_swap", "futex_wait", "futex_wait_idle", "futex_wake", "sched_yield",
           "monotonic_ns", "thread_cpu_ns", "spin_clock"]
