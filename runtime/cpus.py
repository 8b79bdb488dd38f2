"""How many threads an inference uses by default: light (stdlib only), so ``import cnnjit`` and a warm start
from the compiled-program cache can ask without loading numba."""

from __future__ import annotations

import os


def usable_cpus() -> int:
    """The CPUs this process may run on (its affinity mask where the OS has one, else the CPU count)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not Linux
        return max(1, os.cpu_count() or 1)


def default_threads() -> int:
    """``cnnjit.compile(threads=None)``: ``CNNJIT_NUM_THREADS`` if set, else the CPUs this process may use."""
    env = os.environ.get("CNNJIT_NUM_THREADS", "").strip()
    if env:
        try:
            n = int(env)
        except ValueError:
            n = 0
        if n < 1:
            raise ValueError(f"CNNJIT_NUM_THREADS must be an integer >= 1, got {env!r}")
        return n
    return usable_cpus()


__all__ = ["usable_cpus", "default_threads"]
