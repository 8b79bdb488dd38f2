"""The roofline per memory level: which level a kernel call's data lives in, that level's measured read
bandwidth, and whether the call is bound by it.

A call whose working set (``flops.node_bytes``: every operand read once, every result written once) fits
in a cache is fed from that cache, not from DRAM: a 40 KB squeeze-excite GEMV is served by L2 at several
times the DRAM bandwidth. So each call is judged against the level its bytes fit in (L1, L2, L3 by their
sizes, read from the OS, else DRAM): memory-bound when its arithmetic intensity (FLOP per byte) is below
that level's balance (FMA peak / the level's read bandwidth), and the profile reports the level and the
share of its bandwidth the call reached. Assuming the data is already in the level it fits is the
optimistic side for the kernel (its highest bandwidth), so a slow call is not excused as memory-bound
unless even that level could not feed it faster.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass

import numpy as np

from cnnjit.compiler.codegen.build import load_kernel
from cnnjit.compiler.codegen.simd import host_vector_width

#: bytes the DRAM bandwidth probe streams at least: past the last-level cache of the machines we target (32 MB
#: L3 here); twice the L3 where that is larger
STREAM_BYTES = 64 << 20
#: per-core data cache sizes assumed where the OS does not tell (bytes): L1, L2, L3
DEFAULT_CACHES = (("L1", 32 << 10), ("L2", 512 << 10), ("L3", 32 << 20))
#: vector accumulators of the probe: enough independent adds that L1's two loads per cycle, not the add
#: latency, set its pace
PROBE_CHAINS = 8


def stream_source(width: int, chains: int = PROBE_CHAINS) -> str:
    """A kernel ``kernel(buf, n, reps)`` summing ``buf[:n]`` ``reps`` times with ``chains`` vector
    accumulators (``n`` a multiple of ``chains * width``): one load per vector add, so memory, not
    arithmetic, sets its pace."""
    w, c = int(width), int(chains)
    lines = ["def kernel(buf, n, reps):", *[f"    a{j} = vzero{w}()" for j in range(c)],
             "    for _ in range(reps):", f"        for i in range(0, n, {c * w}):"]
    lines += [f"            a{j} = vadd{w}(a{j}, vload{w}(buf, i + {j * w}))" for j in range(c)]
    lines.append(f"    vstore{w}(buf, 0, {tree_sum([f'a{j}' for j in range(c)], w)})")
    return "\n".join(lines) + "\n"


def tree_sum(names: list[str], width: int) -> str:
    """The expression adding vectors ``names`` pairwise (a tree: the probes' accumulators, summed once)."""
    acc = list(names)
    while len(acc) > 1:
        acc = [f"vadd{width}({acc[i]}, {acc[i + 1]})" if i + 1 < len(acc) else acc[i] for i in range(0, len(acc), 2)]
    return acc[0]


_bw_cache: dict[int, float] = {}


def stream_bandwidth_gbs(nbytes: int = STREAM_BYTES, repeat: int = 5, seconds: float = 0.002) -> float:
    """Read bandwidth of this machine over a buffer of ``nbytes``, measured: GB/s of ``stream_source`` (one
    thread), best of ``repeat`` timings of whole passes repeated to about ``seconds`` (at least one pass), after
    a warm pass. A buffer that fits a cache measures that cache. Cached per process."""
    if nbytes in _bw_cache:
        return _bw_cache[nbytes]
    w = host_vector_width()
    step = PROBE_CHAINS * w
    n = max(step, nbytes // 4 // step * step)
    buf = np.zeros(n, np.float32)
    kern = load_kernel(stream_source(w))
    kern(buf, n, 1)  # compiles or loads the kernel, and warms the buffer
    reps = 1
    while True:  # passes per timing: about ``seconds``
        t0 = time.perf_counter()
        kern(buf, n, reps)
        dt = time.perf_counter() - t0
        if dt > seconds / 4 or reps > 1 << 24:
            reps = max(1, int(reps * seconds / max(dt, 1e-9)))
            break
        reps *= 4
    best = 0.0
    for _ in range(repeat):
        t0 = time.perf_counter()
        kern(buf, n, reps)
        best = max(best, 4 * n * reps / (time.perf_counter() - t0) / 1e9)
    _bw_cache[nbytes] = best
    return best


def cache_sizes() -> list[tuple[str, int]]:
    """(name, bytes) of the data caches one core sees, innermost first: from Linux's
    ``/sys/devices/system/cpu/cpu0/cache`` (data and unified caches by level), else ``DEFAULT_CACHES``."""
    root = "/sys/devices/system/cpu/cpu0/cache"
    found: dict[int, int] = {}
    try:
        for entry in sorted(os.listdir(root)):
            if not entry.startswith("index"):
                continue
            d = os.path.join(root, entry)
            with open(os.path.join(d, "type")) as f:
                kind = f.read().strip()
            if kind not in ("Data", "Unified"):
                continue
            with open(os.path.join(d, "level")) as f:
                level = int(f.read())
            with open(os.path.join(d, "size")) as f:
                text = f.read().strip().upper()
            scale = {"K": 1 << 10, "M": 1 << 20, "G": 1 << 30}.get(text[-1:], 1)
            found[level] = int(text.rstrip("KMG")) * scale
    except (OSError, ValueError):
        found = {}
    if not found:
        return list(DEFAULT_CACHES)
    return [(f"L{k}", v) for k, v in sorted(found.items())]


@dataclass(frozen=True)
class Level:
    """One level of the memory hierarchy: its name, the working sets it holds (bytes; None for DRAM), its
    measured read bandwidth (GB/s) and balance (peak FLOP/s over that bandwidth, FLOP per byte)."""

    name: str
    size: int | None
    gbs: float
    balance: float

    def as_dict(self) -> dict:
        return {"level": self.name, "bytes": self.size, "gbs": self.gbs, "balance": self.balance}


def memory_levels(peak_gflops: float) -> list[Level]:
    """The caches (``cache_sizes``) and DRAM, each with the bandwidth of a stream over half its size (DRAM:
    ``STREAM_BYTES`` or twice the largest cache) and its balance for ``peak_gflops``."""
    caches = cache_sizes()
    sizes: list[tuple[str, int | None]] = [*caches, ("DRAM", None)]
    dram = max(STREAM_BYTES, 2 * max((s for _, s in caches), default=0))
    gbs = [stream_bandwidth_gbs(dram if size is None else size // 2) for _, size in sizes]
    for i in range(len(gbs) - 2, -1, -1):  # an inner level serves at least as fast as the next one out (noise)
        gbs[i] = max(gbs[i], gbs[i + 1])
    return [Level(name, size, g, peak_gflops / g if g else 0.0) for (name, size), g in zip(sizes, gbs)]


def level_of(nbytes: int, levels: list[Level]) -> Level:
    """The innermost level that holds a working set of ``nbytes`` (the last, DRAM, when none does)."""
    return next((lv for lv in levels if lv.size is not None and nbytes <= lv.size), levels[-1])


def memory_bound(flops: int, nbytes: int, balance: float) -> bool:
    """Whether a call of ``flops`` moving at least ``nbytes`` is bound by memory on a machine (level) whose
    balance is ``balance`` FLOP per byte (peak FLOP/s over read bandwidth): its arithmetic intensity is below
    it (the roofline's ridge), so even at full bandwidth it cannot reach the FMA peak."""
    return nbytes > 0 and flops < balance * nbytes


__all__ = ["STREAM_BYTES", "DEFAULT_CACHES", "stream_source", "tree_sum", "stream_bandwidth_gbs", "cache_sizes",
           "Level", "memory_levels", "level_of", "memory_bound"]
