"""A bursty load generator (issue 18: threads=2 must not be slower than threads=1 on a busy machine).

    PYTHONPATH=. python benchmarks/bursty_load.py [--procs 3] [--burst-ms 5,50] [--duty 0.3,0.7]
                                                  [--seconds 60] [--same-session] [--seed 0]

Starts ``--procs`` processes that each alternate a busy burst (a spinning loop, length drawn uniformly from
``--burst-ms`` lo,hi) with a sleep that gives the process a duty cycle drawn uniformly from ``--duty`` lo,hi per
burst: what other programs on a shared machine look like to a parallel run (they run and sleep in bursts of
milliseconds to tens of milliseconds), unlike steady busy loops, which the scheduler shares out evenly. Each
process starts its own session (``os.setsid``: its own autogroup, as another user's or a helper's shell's
programs; ``--same-session`` keeps them in the caller's, where the scheduler shares one group's CPU among
them and the measured program). ``BurstyLoad`` is the same as a context manager for other benchmarks.
"""

from __future__ import annotations

import argparse
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path
from types import TracebackType


def burst_loop(burst_ms: tuple[float, float], duty: tuple[float, float], seconds: float, seed: int) -> None:
    """One load process's loop: a busy burst of ``burst_ms`` (uniform lo..hi, ms), then a sleep that makes the
    burst ``duty`` (uniform lo..hi) of the burst + sleep period; for ``seconds`` (<= 0: until killed)."""
    rng = random.Random(seed)
    end = time.monotonic() + seconds if seconds > 0 else float("inf")
    while time.monotonic() < end:
        burst = rng.uniform(*burst_ms) * 1e-3
        d = rng.uniform(*duty)
        stop = time.perf_counter() + burst
        x = 0
        while time.perf_counter() < stop:
            x += 1
        time.sleep(burst * (1.0 - d) / d)


class BurstyLoad:
    """``procs`` bursty load processes (``burst_loop``) while the context is open: ``with BurstyLoad(3):``.
    ``procs`` 0 starts none. Each in its own session unless ``same_session``."""

    def __init__(self, procs: int, burst_ms: tuple[float, float] = (5.0, 50.0),
                 duty: tuple[float, float] = (0.3, 0.7), seed: int = 0, same_session: bool = False):
        self.procs, self.burst_ms, self.duty, self.seed = procs, burst_ms, duty, seed
        self.same_session = same_session
        self._ps: list[subprocess.Popen] = []

    def start(self) -> None:
        """Start the load processes (each runs until ``stop``)."""
        for k in range(self.procs):
            cmd = [sys.executable, str(Path(__file__).resolve()), "--child", "--seconds", "0",
                   "--burst-ms", f"{self.burst_ms[0]},{self.burst_ms[1]}", "--duty", f"{self.duty[0]},{self.duty[1]}",
                   "--seed", str(self.seed + k)]
            self._ps.append(subprocess.Popen(cmd, start_new_session=not self.same_session))

    def stop(self) -> None:
        """End the load processes this object started."""
        for p in self._ps:
            p.send_signal(signal.SIGTERM)
        for p in self._ps:
            try:
                p.wait(timeout=5)
            except subprocess.TimeoutExpired:
                p.kill()
        self._ps = []

    def __enter__(self) -> BurstyLoad:
        self.start()
        return self

    def __exit__(self, et: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None) -> None:
        self.stop()


def _pair(s: str) -> tuple[float, float]:
    lo, _, hi = s.partition(",")
    return float(lo), float(hi or lo)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--procs", type=int, default=3)
    ap.add_argument("--burst-ms", type=_pair, default=(5.0, 50.0), help="lo,hi of a burst's length (ms)")
    ap.add_argument("--duty", type=_pair, default=(0.3, 0.7), help="lo,hi of a burst's share of its period")
    ap.add_argument("--seconds", type=float, default=60.0, help="how long (<= 0: until interrupted)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--same-session", action="store_true", help="keep the load in this session's autogroup")
    ap.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.child:
        signal.signal(signal.SIGTERM, lambda *_: os._exit(0))
        burst_loop(args.burst_ms, args.duty, args.seconds, args.seed)
        return 0
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))  # (ended by a signal: its load processes end too)
    with BurstyLoad(args.procs, args.burst_ms, args.duty, args.seed, args.same_session):
        try:
            time.sleep(args.seconds if args.seconds > 0 else 1e9)
        except KeyboardInterrupt:
            pass
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
