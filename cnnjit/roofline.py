"""The roofline per memory level: which level a kernel call's data lives in, that level's measured read and
write bandwidths, and whether the call is bound by them.

A call whose working set (``flops.node_bytes``: every operand read once, every result written once) fits
in a cache is fed from that cache, not from DRAM: a 40 KB squeeze-excite GEMV is served by L2 at several
times the DRAM bandwidth. So each call is judged against the level its bytes fit in (L1, L2, L3 by their
sizes, read from the OS, else DRAM).

Reads and writes cost differently: a store to a line not in L1 first reads it (write-allocate), then writes
it back when it is evicted, so a stream of stores moves each byte twice and runs at about half the read
bandwidth or less (measured here: 15-24 against 32 GB/s over 16 MB, 7 against 11 GB/s from DRAM). Each
level therefore has a measured read bandwidth (``stream_source``: one load per vector add) and a measured
write bandwidth (``store_source``: plain vector stores, as the kernels do; no streaming stores), and a call
needs at least ``memory_seconds``: its bytes read at the one plus its bytes written at the other. It is
memory-bound when that is more than its FLOPs take at the FMA peak; equivalently, when its intensity over
``effective_bytes`` (written bytes weighted by read / write bandwidth) is below the level's balance (peak /
read bandwidth). The profile reports the level and the share of that time the call reached. Assuming the
data is already in the level it fits is the optimistic side for the kernel (its highest bandwidths), so a
slow call is not excused as memory-bound unless even that level could not feed it faster.

Each operand is fed from the level its *reuse distance* fits in (the LRU stack distance: the distinct bytes
touched since the operand was last touched, ``reuse_distances``), not all from the level of the call's own
bytes: a weight is last read one whole run ago, so between two reads of it every other byte of the run
passed through the caches, and it comes from the level that holds the run (a 150 KB squeeze-excite weight
of a 60 MB detector comes from L3 or DRAM, not from the L2 the call's 150 KB would fit in); an activation
written by the call just before comes from the level holding the two calls' bytes. And every call waits
at least one load latency of the farthest level it reads from (``chase_source``: a dependent-load chain over
that level): a 2 x 8 GEMV of 100 bytes needs tens of nanoseconds whatever its bandwidth.

Under the ridge is not enough to be called memory-bound either: a call that moves its bytes at a small share
of the level's bandwidth (a scalar quantisation loop at 4% of L2's) is slow, not bound by memory. ``verdict``
names a call ``memory`` only when it reaches ``MEMORY_BOUND_SHARE`` (25%) of its level's bandwidths, ``slow
memory`` when it is under the ridge but below that, ``slow`` over the ridge below ``SLOW_PEAK_SHARE`` (50%) of
the FMA peak, else ``compute``. 25% is the cut because the kernels that stream well (copies, vector
elementwise ops) reach 30-100% of L1/L2 here, and a loop below a quarter has more than 4x to gain by itself.

The probes are timed by the thread's CPU time (``_clock``), not the wall clock: on a shared, loaded machine the
wall clock also counts the time the probe waits for a core, and the levels' bandwidths came out several times
too low (so nearly every call fed from L3 looked memory-bound). The probes stream over buffers filled with data:
a buffer of ``np.zeros`` is mapped lazily to the kernel's one shared zero page, so a read stream over it never
leaves the caches (it measured 69 GB/s for "DRAM", three to six times the real figure).
"""

from __future__ import annotations

import os
import time
from collections.abc import Hashable, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from cnnjit.compiler.codegen.build import load_kernel
from cnnjit.compiler.codegen.simd import host_vector_width

#: bytes the DRAM bandwidth probe streams at least: past the last-level cache of the machines we target (32 MB
#: L3 here); four times the L3 where that is larger (at twice the L3, part of the stream still hits: 23 GB/s
#: over 64 MB against 11 over 256 MB here)
STREAM_BYTES = 128 << 20
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


def store_source(width: int, chains: int = PROBE_CHAINS) -> str:
    """A kernel ``kernel(buf, n, reps)`` storing ``chains`` vectors over ``buf[:n]`` ``reps`` times (``n`` a
    multiple of ``chains * width``): plain vector stores, as the kernels' epilogues do, so each line is read
    (write-allocate) and written back. The vectors come from the buffer and change every pass, so the compiler
    cannot turn the loop into a ``memset`` (which may use streaming stores)."""
    w, c = int(width), int(chains)
    lines = ["def kernel(buf, n, reps):", *[f"    a{j} = vload{w}(buf, {j * w})" for j in range(c)],
             "    for _ in range(reps):", f"        for i in range(0, n, {c * w}):"]
    lines += [f"            vstore{w}(buf, i + {j * w}, a{j})" for j in range(c)]
    lines += [f"        a{j} = vadd{w}(a{j}, a{(j + 1) % c})" for j in range(c)]
    return "\n".join(lines) + "\n"


def tree_sum(names: list[str], width: int) -> str:
    """The expression adding vectors ``names`` pairwise (a tree: the probes' accumulators, summed once)."""
    acc = list(names)
    while len(acc) > 1:
        acc = [f"vadd{width}({acc[i]}, {acc[i + 1]})" if i + 1 < len(acc) else acc[i] for i in range(0, len(acc), 2)]
    return acc[0]


_bw_cache: dict[tuple[int, bool], float] = {}


def _clock() -> float:
    """Seconds of this thread's CPU time: the probes' clock. A wall clock counts the time the thread waits for a
    core: on a machine at load 12 (2 cores) the 16 MB read probe measured 4.0 GB/s by the wall clock (best of
    20) against 18.5 by thread CPU time, which made every call fed from L3 or DRAM look memory-bound (L3's
    balance 22 FLOP per byte instead of ~5)."""
    return time.thread_time()


#: timings per probe (the best is kept): more than one in a few is disturbed on a loaded machine
PROBE_REPEAT = 9


def stream_bandwidth_gbs(nbytes: int = STREAM_BYTES, repeat: int = PROBE_REPEAT, seconds: float = 0.002,
                         write: bool = False) -> float:
    """Read bandwidth of this machine over a buffer of ``nbytes``, measured: GB/s of ``stream_source`` (one
    thread), best of ``repeat`` timings (thread CPU time) of whole passes repeated to about ``seconds`` (at least
    one pass), after a warm pass; ``write``: the write bandwidth, of ``store_source``. A buffer that fits a cache
    measures that cache. The buffer holds data (not ``np.zeros``' lazily mapped zero page, which a read stream finds in
    cache whatever its size). Cached per process."""
    key = (int(nbytes), bool(write))
    if key in _bw_cache:
        return _bw_cache[key]
    w = host_vector_width()
    step = PROBE_CHAINS * w
    n = max(step, nbytes // 4 // step * step)
    buf = np.full(n, 1e-3, np.float32)  # every page written: real memory, not the shared zero page
    kern = load_kernel(store_source(w) if write else stream_source(w))
    kern(buf, n, 1)  # compiles or loads the kernel, and warms the buffer
    reps = 1
    while True:  # passes per timing: about ``seconds``
        t0 = _clock()
        kern(buf, n, reps)
        dt = _clock() - t0
        if dt > seconds / 4 or reps > 1 << 24:
            reps = max(1, int(reps * seconds / max(dt, 1e-9)))
            break
        reps *= 4
    best = 0.0
    for _ in range(repeat):
        t0 = _clock()
        kern(buf, n, reps)
        best = max(best, 4 * n * reps / max(_clock() - t0, 1e-9) / 1e9)
    _bw_cache[key] = best
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


def dram_stream_bytes() -> int:
    """Bytes the DRAM probes stream: ``STREAM_BYTES``, or four times the largest cache where that is more."""
    return max(STREAM_BYTES, 4 * max((s for _, s in cache_sizes()), default=0))


@dataclass(frozen=True)
class Level:
    """One level of the memory hierarchy: its name, the working sets it holds (bytes; None for DRAM), its
    measured read bandwidth (GB/s), balance (peak FLOP/s over that bandwidth, FLOP per byte), measured
    write bandwidth (GB/s; 0: not measured, writes then count at the read bandwidth) and load latency (ns)."""

    name: str
    size: int | None
    gbs: float
    balance: float
    write_gbs: float = 0.0
    #: measured latency of one load served by this level (ns; ``load_latency_ns``); 0: not measured
    latency_ns: float = 0.0

    def as_dict(self) -> dict:
        return {"level": self.name, "bytes": self.size, "gbs": self.gbs, "balance": self.balance,
                "write_gbs": self.write_gbs, "latency_ns": self.latency_ns}


def _monotone(gbs: list[float]) -> list[float]:
    """Bandwidths innermost first, each raised to at least the next one out's (an inner level serves at least
    as fast; a lower figure is noise)."""
    out = list(gbs)
    for i in range(len(out) - 2, -1, -1):
        out[i] = max(out[i], out[i + 1])
    return out


def memory_levels(peak_gflops: float) -> list[Level]:
    """The caches (``cache_sizes``) and DRAM, each with the read and the write bandwidth of a stream over half
    its size (DRAM: ``STREAM_BYTES`` or four times the largest cache), its balance for ``peak_gflops`` and
    its load latency (``load_latency_ns`` over the same bytes; each level at most the next one out's)."""
    sizes: list[tuple[str, int | None]] = [*cache_sizes(), ("DRAM", None)]
    probe = [dram_stream_bytes() if size is None else size // 2 for _, size in sizes]
    gbs = _monotone([stream_bandwidth_gbs(n) for n in probe])
    wgbs = _monotone([stream_bandwidth_gbs(n, write=True) for n in probe])
    lat = [-x for x in _monotone([-load_latency_ns(n) for n in probe])]
    return [Level(name, size, g, peak_gflops / g if g else 0.0, wg, ns)
            for (name, size), g, wg, ns in zip(sizes, gbs, wgbs, lat)]


def level_of(nbytes: int, levels: list[Level]) -> Level:
    """The innermost level that holds a working set of ``nbytes`` (the last, DRAM, when none does)."""
    return next((lv for lv in levels if lv.size is not None and nbytes <= lv.size), levels[-1])


def effective_bytes(read_bytes: int, written_bytes: int, level: Level) -> float:
    """Bytes a call moves counted at ``level``'s read bandwidth: its reads, plus its writes weighted by how much
    slower the level writes than it reads (read / write bandwidth; 1 when the write bandwidth is unknown).
    Over the read bandwidth this is ``memory_seconds``."""
    scale = level.gbs / level.write_gbs if level.write_gbs else 1.0
    return read_bytes + written_bytes * scale


def memory_seconds(read_bytes: int, written_bytes: int, level: Level) -> float:
    """The least time a call reading ``read_bytes`` and writing ``written_bytes`` needs at ``level``'s measured
    bandwidths (reads and writes share the one path to the core, so their times add)."""
    return effective_bytes(read_bytes, written_bytes, level) / (level.gbs * 1e9) if level.gbs else 0.0


def chase_source() -> str:
    """A kernel ``kernel(nxt, start, steps)`` following ``steps`` links of the chain ``i = nxt[i]``
    (``nxt`` int64; ``load_latency_ns`` lays it out): each load's address is the one before's result, so it
    runs at one load latency per step. Returns the last index (so the chain is not optimised away)."""
    return ("def kernel(nxt, start, steps):\n    i = start\n    for _ in range(steps):\n        i = nxt[i]\n"
            "    return i\n")


#: bytes between two links of the latency chain: one cache line each (64 B on every x86 and ARM core we target)
CHASE_STRIDE = 64
#: the chain visits every line of one page of this many bytes before the next page
CHASE_PAGE = 4096
#: links followed per timing of the latency probe
CHASE_STEPS = 1 << 16

_lat_cache: dict[int, float] = {}


def chase_chain(nbytes: int, seed: int = 0) -> tuple[np.ndarray, int]:
    """``(nxt, start)``: the chain ``load_latency_ns`` follows over ``nbytes``: an int64 array whose slot at the
    start of each ``CHASE_STRIDE`` line holds the index of the next line's slot, all lines in one cycle."""
    per, page = CHASE_STRIDE // 8, CHASE_PAGE // CHASE_STRIDE  # int64 slots per line, lines per page
    lines = max(2, int(nbytes) // CHASE_STRIDE)
    rng = np.random.default_rng(seed)
    pages = -(-lines // page)
    # pages in a random order, each page's lines in a random order before the next page: no prefetcher can
    # guess the next line, and one TLB miss is shared by a page's lines (random lines over the whole buffer
    # measure page walks: 430 ns for "L3" in a VM)
    order = np.concatenate([p * page + rng.permutation(min(page, lines - p * page)) for p in rng.permutation(pages)])
    nxt = np.zeros(lines * per, np.int64)  # every page written: real memory
    nxt[order * per] = np.roll(order, -1) * per  # line order[j] links to order[j + 1], a single cycle
    return nxt, int(order[0]) * per


def load_latency_ns(nbytes: int, repeat: int = PROBE_REPEAT, seed: int = 0) -> float:
    """Latency of a load from a buffer of ``nbytes`` (ns), measured: a chain of dependent loads (``chase_source``)
    one cache line apart in a random cyclic order over the whole buffer, page by page (``chase_chain``),
    ``CHASE_STEPS`` links per timing (the chain cycles), best of ``repeat`` after a warm pass over every link.
    A buffer that fits a cache measures that cache. Cached per process."""
    key = int(nbytes)
    if key in _lat_cache:
        return _lat_cache[key]
    nxt, start = chase_chain(nbytes, seed)
    lines = len(nxt) // (CHASE_STRIDE // 8)
    kern = load_kernel(chase_source())
    kern(nxt, start, lines)  # compiles or loads the kernel, and brings the buffer into the level it fits
    steps = CHASE_STEPS
    best = float("inf")
    for _ in range(repeat):
        t0 = _clock()
        start = int(kern(nxt, start, steps))
        best = min(best, (_clock() - t0) / steps * 1e9)
    _lat_cache[key] = best
    return best


def reuse_distances(touches: list[list[tuple[Hashable, int]]], fresh: frozenset | set = frozenset(),
                    cap: int | None = None) -> list[dict[Hashable, int]]:
    """For every call ``i`` and every key it touches (``touches[i]``: (key, bytes) of each value it reads or
    writes), the bytes of the distinct values touched from the last call before ``i`` that touched that key
    through call ``i``, both included (the LRU stack distance, plus the call's own bytes): where a value last
    touched there still is when call ``i`` reads it. The schedule repeats (one run after another), so a key
    no earlier call touched was last touched in the previous run (a weight: the whole run's distinct bytes);
    keys in ``fresh`` (the model's inputs, written just before the run) count as touched just before call 0.
    ``cap``: the bytes a whole run really touches (values sharing memory, as a schedule's arena slots do,
    are the same cache lines): no distance exceeds it."""
    sizes: dict[Hashable, int] = {}
    users: dict[Hashable, int] = {}
    for t in touches:
        sizes.update(t)
        for k in {k for k, _ in t}:
            users[k] = users.get(k, 0) + 1
    n = len(touches)
    keys = [{k for k, _ in t} for t in touches]
    run_bytes = sum(sizes.values()) if cap is None else min(cap, sum(sizes.values()))
    out: list[dict[Hashable, int]] = []
    for i in range(n):
        dist: dict[Hashable, int] = {}
        for k in keys[i]:
            if users[k] == 1 and k not in fresh:  # a weight read by this call alone: a whole run ago
                dist[k] = run_bytes
                continue
            seen, d = set(keys[i]), None
            for j in range(i - 1, i - n, -1):  # back through this run, then the previous one's tail
                if j < 0 and k in fresh:  # the copy-in wrote it just before call 0
                    break
                seen |= keys[j % n]
                if k in keys[j % n]:
                    d = sum(sizes[s] for s in seen)
                    break
            if d is None:
                d = sum(sizes[s] for s in seen | {k}) if k in fresh else run_bytes
            dist[k] = min(d, run_bytes)
        out.append(dist)
    return out


def call_memory_seconds(reads: list[tuple[int, Level]], written_bytes: int, write_level: Level) -> float:
    """The least time a call needs from memory: each read operand's bytes at the read bandwidth of the level it
    comes from (``reads``: (bytes, level) pairs), its writes at ``write_level``'s write bandwidth (its read
    one when unmeasured), and one load latency of the farthest level it reads from (the first loads wait for
    it; the rest stream behind them)."""
    t = sum(b / (lv.gbs * 1e9) for b, lv in reads if lv.gbs)
    wg = write_level.write_gbs or write_level.gbs
    t += written_bytes / (wg * 1e9) if wg else 0.0
    return t + max((lv.latency_ns for b, lv in reads if b), default=0.0) * 1e-9


def memory_bound_seconds(flops: int, memory_s: float, peak_gflops: float) -> bool:
    """Whether a call of ``flops`` whose memory needs at least ``memory_s`` seconds (``call_memory_seconds``) is
    bound by memory: that time exceeds its FLOPs at the peak (the roofline's ridge, per operand level)."""
    return memory_s > 0 and flops < memory_s * peak_gflops * 1e9


#: the share of its level's bandwidths a call under the ridge must reach to count as memory-bound
MEMORY_BOUND_SHARE = 0.25
#: the share of the FMA peak under which a call over the ridge counts as slow (a "sub-50%" call)
SLOW_PEAK_SHARE = 0.5
#: ``verdict``'s answers that count among the slow ("sub-50%") calls
SLOW_VERDICTS = ("slow", "slow memory")


def verdict(under_ridge: bool, memory_share: float, peak_share: float | None) -> str:
    """``memory``: under the ridge (``memory_bound``) and at ``MEMORY_BOUND_SHARE`` or more of its level's
    bandwidths (``memory_share``); ``slow memory``: under the ridge but below that; ``slow``: over the ridge
    at less than ``SLOW_PEAK_SHARE`` of the peak (``peak_share``; None: no FLOPs to judge); else ``compute``."""
    if under_ridge:
        return "memory" if memory_share >= MEMORY_BOUND_SHARE else "slow memory"
    return "slow" if peak_share is not None and peak_share < SLOW_PEAK_SHARE else "compute"


def bound_label(r: Mapping[str, Any]) -> str:
    """The bound column of a profile row: ``memory L2 85%`` for a memory-bound call (near its level's
    bandwidths), ``slow (memory L2 2%)`` for one under the ridge far from them (``roofline.verdict``)."""
    if not r["memory_bound"] or not r["level_gbs"]:
        return ""
    mem = f"memory {r['level']} {100 * r['memory_share']:.0f}%"
    return mem if r["verdict"] == "memory" else f"slow ({mem})"


def below_peak(rows: list[Mapping[str, Any]]) -> tuple[int, int]:
    """``(n, m)``: the calls below ``SLOW_PEAK_SHARE`` of the peak (a call of no FLOPs, data movement, is at
    none of it), and of them the ones the roofline calls memory-bound (``verdict`` ``memory``)."""
    low = [r for r in rows if not r["flops"] or (r["percent_of_peak"] or 0.0) < 100 * SLOW_PEAK_SHARE]
    return len(low), sum(r["verdict"] == "memory" for r in low)


def slow_summary(rows: list[Mapping[str, Any]], sum_ms: float) -> list[str]:
    """The footer lines: the calls below half the peak and how many of them are memory-bound (``below_peak``),
    what "slow (memory ...)" means, and the count of the slow calls (``SLOW_VERDICTS``:
    over the ridge under half the peak, or under it far from the bandwidths)."""
    slow = [r for r in rows if r["verdict"] in SLOW_VERDICTS]
    mem = sum(r["verdict"] == "slow memory" for r in rows)
    ms = sum(r["median_ms"] for r in slow)
    n, m = below_peak(rows)
    return [f"calls below {100 * SLOW_PEAK_SHARE:.0f}% of peak: {n}, of which memory-bound {m}",
            f"'slow (memory L2 4%)': under the ridge but at less than {100 * MEMORY_BOUND_SHARE:.0f}% of the "
            "level's bandwidths, so not memory-bound",
            f"sub-50% calls: {len(slow)} of {len(rows)}, {ms:.3f} ms ({100 * ms / (sum_ms or 1e-12):.0f}% of the "
            f"sum): {len(slow) - mem} under {100 * SLOW_PEAK_SHARE:.0f}% of the peak, {mem} under the ridge at "
            f"less than {100 * MEMORY_BOUND_SHARE:.0f}% of their level's bandwidth"]


def memory_bound(flops: int, nbytes: float, balance: float) -> bool:
    """Whether a call of ``flops`` moving at least ``nbytes`` is bound by memory on a machine (level) whose
    balance is ``balance`` FLOP per byte (peak FLOP/s over read bandwidth): its arithmetic intensity is below
    it (the roofline's ridge), so even at full bandwidth it cannot reach the FMA peak. With writes, ``nbytes``
    is ``effective_bytes`` (writes at the write bandwidth)."""
    return nbytes > 0 and flops < balance * nbytes


__all__ = ["STREAM_BYTES", "DEFAULT_CACHES", "stream_source", "store_source", "tree_sum", "stream_bandwidth_gbs",
           "cache_sizes", "dram_stream_bytes", "Level", "memory_levels", "level_of", "effective_bytes",
           "memory_seconds", "memory_bound", "chase_source", "chase_chain", "load_latency_ns", "reuse_distances",
           "call_memory_seconds", "memory_bound_seconds", "CHASE_STRIDE", "CHASE_PAGE", "CHASE_STEPS",
           "MEMORY_BOUND_SHARE", "SLOW_PEAK_SHARE", "SLOW_VERDICTS", "verdict", "bound_label", "below_peak",
           "slow_summary"]
