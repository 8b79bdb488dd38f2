"""Cross-thread hand-over cost of a buffer (issue 18): is the 2-thread schedule's "slow episode" the host
placing the two vCPUs far apart?

Two threads ping-pong: in each round one thread writes a buffer of ``--kb`` KB, re-reads it itself (the
*same-thread* read: its own cache), then hands it over (an atomic counter) and the other thread reads it
(the *cross-thread* read: the lines come from the writer's cache). Roles alternate every round. Both reads
are the same summing loop over the same bytes, timed with the TSC. Printed per time window (``--window``
seconds): median cross / same read time, the ratio, and the hand-over latency (writer's signal to the
reader seeing it). If the cross/same ratio swings from window to window while the same-thread time stays put,
the cost of moving data between the two cores changes over time (placement); if it is flat, slow episodes of
the schedule have another cause.

    PYTHONPATH=. python benchmarks/handover_probe.py [--kb 64,256,1024] [--seconds 20] [--window 1]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import numpy as np  # noqa: E402
from numba import njit  # noqa: E402

from cnnjit.compiler.codegen.cycles import read_ticks, tick_seconds, ticks  # noqa: E402
from cnnjit.runtime.parallel import atomic_add, atomic_load  # noqa: E402


@njit(nogil=True, cache=True, fastmath=True)
def _read(buf: np.ndarray) -> float:  # pragma: no cover - compiled
    """The sum of ``buf`` (vectorised: the time is the memory's, not an add chain's)."""
    s = np.float32(0.0)
    for i in range(buf.size):
        s += buf[i]
    return s


@njit(nogil=True, cache=True)
def _pingpong(buf: np.ndarray, flag: np.ndarray, out: np.ndarray, me: int, rounds: int) -> float:  # pragma: no cover
    """Thread ``me`` (0 or 1) of the probe: round ``r``'s writer is ``r % 2``. ``out[r]`` gets the round's
    ``[start tick, same-thread read ticks, cross-thread read ticks, hand-over ticks]``. ``flag[0]`` counts
    half-rounds: ``2r + 1`` once round r's buffer is written, ``2r + 2`` once it is read."""
    acc = 0.0
    for r in range(rounds):
        if r % 2 == me:
            while atomic_load(flag, 0) < 2 * r:
                pass
            t0 = ticks()
            v = np.float32(r % 7)
            for i in range(buf.size):
                buf[i] = v
            t1 = ticks()
            acc += _read(buf)
            t2 = ticks()
            out[r, 0] = t0
            out[r, 1] = t2 - t1
            flag[1] = ticks()
            atomic_add(flag, 0, 1)
        else:
            while atomic_load(flag, 0) < 2 * r + 1:
                pass
            t0 = ticks()
            out[r, 3] = t0 - flag[1]
            acc += _read(buf)
            out[r, 2] = ticks() - t0
            atomic_add(flag, 0, 1)
    return acc


def probe(kb: int, seconds: float) -> np.ndarray:
    """Ping-pong rounds over about ``seconds`` on a ``kb`` KB buffer: rows ``[start, same, cross, hand-over]``
    in ticks (see ``_pingpong``)."""
    buf = np.zeros(kb * 256, np.float32)
    rounds = 2000
    flag = np.zeros(16, np.int64)
    out = np.zeros((rounds, 4), np.int64)
    _pingpong(buf, flag, out, 0, 0)  # compile
    rows = []
    end = time.perf_counter() + seconds
    while time.perf_counter() < end:
        flag[:] = 0
        out[:] = 0
        th = threading.Thread(target=_pingpong, args=(buf, flag, out, 1, rounds))
        th.start()
        _pingpong(buf, flag, out, 0, rounds)
        th.join()
        rows.append(out[2:].copy())  # (the first rounds: cold buffer)
    return np.vstack(rows)


def report(kb: int, rows: np.ndarray, window_s: float) -> dict[str, float]:
    us = tick_seconds() * 1e6
    t = (rows[:, 0] - rows[0, 0]) * us / 1e6
    print(f"\n{kb} KB buffer: {len(rows)} rounds, load {os.getloadavg()[0]:.1f}")
    print("  window   same us   cross us   cross/same   hand-over us")
    ratios = []
    for w0 in np.arange(0.0, t.max(), window_s):
        sel = rows[(t >= w0) & (t < w0 + window_s)]
        if len(sel) < 10:
            continue
        same, cross = np.median(sel[:, 1]) * us, np.median(sel[:, 2]) * us
        ho = np.median(sel[:, 3]) * us
        ratios.append(cross / same)
        print(f"  {w0:6.1f}s {same:9.2f} {cross:10.2f} {cross / same:12.2f} {ho:13.2f}")
    lo, hi = min(ratios), max(ratios)
    print(f"  cross/same over windows: min {lo:.2f}, median {statistics.median(ratios):.2f}, max {hi:.2f}")
    return {"min": lo, "median": statistics.median(ratios), "max": hi}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--kb", default="64,256,1024")
    ap.add_argument("--seconds", type=float, default=20.0)
    ap.add_argument("--window", type=float, default=1.0)
    args = ap.parse_args(argv)
    read_ticks()
    for kb in map(int, args.kb.split(",")):
        report(kb, probe(kb, args.seconds), args.window)
    return 0


if __name__ == "__main__":
    sys.exit(main())
