"""A cycle-counter read usable inside numba code: ``ticks()`` -> int64, for the timed (profiling) schedule.

On x86-64 it is ``llvm.readcyclecounter`` (``rdtsc``: a constant-rate counter on every CPU of the last
decade, so ticks convert to seconds with one calibrated factor, see ``tick_seconds``). On AArch64 it reads
the virtual counter ``cntvct_el0`` (``llvm.readcyclecounter`` would read PMCCNTR_EL0, which user space
usually may not). Elsewhere ``HAVE_TICKS`` is False and callers fall back to ``time.perf_counter_ns``.

The read has side effects in LLVM's model (it is not ``readnone``), so LLVM does not move loads and
stores across it: a kernel inlined into the schedule stays between the two reads around it.
"""

from __future__ import annotations

import platform
import time

from llvmlite import ir
from numba import njit, types
from numba.extending import intrinsic

_MACHINE = platform.machine().lower()
HAVE_TICKS = _MACHINE in ("x86_64", "amd64", "aarch64", "arm64")


@intrinsic
def ticks(typingctx):
    """The CPU's cycle/time-stamp counter as an int64 (numba intrinsic: call it from jitted code only)."""
    sig = types.int64()

    def codegen(context, builder, signature, args):
        i64 = ir.IntType(64)
        if _MACHINE in ("aarch64", "arm64"):
            asm = ir.InlineAsm(ir.FunctionType(i64, []), "mrs $0, cntvct_el0", "=r", side_effect=True)
            return builder.call(asm, [])
        fn = builder.module.declare_intrinsic("llvm.readcyclecounter", fnty=ir.FunctionType(i64, []))
        return builder.call(fn, [])

    return sig, codegen


@njit(nogil=True)
def read_ticks() -> int:
    """``ticks()`` callable from Python (for calibration)."""
    return ticks()


_tick_s: float | None = None


def tick_seconds(spin_s: float = 0.02, rounds: int = 3) -> float:
    """Seconds per tick, measured against ``time.perf_counter_ns`` over ``rounds`` spins of ``spin_s``
    (the median of the rounds; cached per process)."""
    global _tick_s
    if _tick_s is None:
        read_ticks()  # compile
        ratios = []
        for _ in range(max(rounds, 1)):
            t0, c0 = time.perf_counter_ns(), read_ticks()
            end = t0 + int(spin_s * 1e9)
            while time.perf_counter_ns() < end:
                pass
            t1, c1 = time.perf_counter_ns(), read_ticks()
            if c1 > c0:
                ratios.append((t1 - t0) / 1e9 / (c1 - c0))
        if not ratios:
            raise RuntimeError("the cycle counter does not advance on this machine")
        ratios.sort()
        _tick_s = ratios[len(ratios) // 2]
    return _tick_s


__all__ = ["HAVE_TICKS", "ticks", "read_ticks", "tick_seconds"]
