"""Per-test cost log for ranking the suite by CPU time and kernel compiles (off unless asked for).

Set ``CNNJIT_TEST_COST_LOG=<prefix>`` and each test process (each xdist worker) appends one JSON line per test
to ``<prefix>.<worker>.jsonl``: the node id, wall seconds, the CPU seconds of the test process and of the
child processes it waited for (CLI tests, compile workers), and the kernels it compiled or loaded
(``cnnjit.compiler.codegen.precompile.STATS`` deltas: ``compiled``, ``compiled by worker``, ``disk cache``,
``memory``) with the kernel and signature keys it compiled (``compiled_keys``, from the library's
``precompile.ON_COMPILED`` hook, set only while the log is on: the ranking counts the compiles two workers both
did). On a machine shared with other work, wall time says little; CPU time and compile counts
compare runs. ``python tests/cost_log.py <prefix>`` prints the ranking and the totals.

Why CPU time: the suite is nearly all numba compiling, and a compile's CPU time barely depends on the load,
while its wall time grows with every other process on the machine.
"""

from __future__ import annotations

import json
import os
import resource
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

ENV = "CNNJIT_TEST_COST_LOG"


def _cpu() -> tuple[float, float]:
    """(this process, its waited-for children): user + system CPU seconds."""
    s, c = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return s.ru_utime + s.ru_stime, c.ru_utime + c.ru_stime


#: what this process compiled, in order (``precompile.ON_COMPILED`` appends to it while the log is on)
_COMPILED: list[str] = []


def _kernel_stats() -> tuple[dict[str, float], int]:
    """This process's kernel counters and how many compiles ``_COMPILED`` lists so far; the first call
    installs the library's compile hook."""
    from cnnjit.compiler.codegen import precompile

    precompile.ON_COMPILED = _COMPILED.append
    return dict(precompile.STATS), len(_COMPILED)


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_protocol(item: pytest.Item, nextitem: pytest.Item | None) -> Iterator[None]:
    """Around set-up, call and tear-down of ``item``: append its costs to the log when ``ENV`` is set."""
    prefix = os.environ.get(ENV)
    if not prefix:
        yield
        return
    (s0, c0), (k0, n0), t0 = _cpu(), _kernel_stats(), time.time()
    yield
    (s1, c1), (k1, _), t1 = _cpu(), _kernel_stats(), time.time()
    row = {"id": item.nodeid, "worker": os.environ.get("PYTEST_XDIST_WORKER", "main"), "start": round(t0, 3),
           "wall": round(t1 - t0, 3), "cpu": round(s1 - s0, 3), "child_cpu": round(c1 - c0, 3),
           "kernels": {k: round(v - k0.get(k, 0), 3) for k, v in k1.items() if v != k0.get(k, 0)},
           "load": round(os.getloadavg()[0], 2), "compiled_keys": _COMPILED[n0:]}
    with open(f"{prefix}.{row['worker']}.jsonl", "a", encoding="utf-8") as f:
        f.write(json.dumps(row) + "\n")


def read(prefix: str) -> list[dict]:
    """Every row the workers of one run wrote under ``prefix``."""
    p = Path(prefix)
    return [json.loads(line) for f in sorted(p.parent.glob(p.name + ".*.jsonl")) for line in f.open()]


def main(argv: list[str]) -> int:
    """Print the ``top`` (default 30) tests by CPU seconds and the run's totals."""
    rows = read(argv[0])
    top = int(argv[1]) if len(argv) > 1 else 30
    for r in rows:
        r["total"] = r["cpu"] + r["child_cpu"]
    rows.sort(key=lambda r: -r["total"])
    compiled = sum(r["kernels"].get("compiled", 0) + r["kernels"].get("compiled by worker", 0) for r in rows)
    print(f"{len(rows)} tests, CPU {sum(r['total'] for r in rows):.0f} s, {compiled:.0f} kernels compiled")
    if any("compiled_keys" in r for r in rows):  # (not in older logs)
        by_worker: dict[str, set[str]] = {}
        for r in rows:
            by_worker.setdefault(r["worker"], set()).update(r.get("compiled_keys", ()))
        seen = [k for keys in by_worker.values() for k in keys]
        print(f"compiled by more than one worker (same kernel and signatures): {len(seen) - len(set(seen))}")
    print(f"{'cpu s':>8} {'child s':>8} {'wall s':>8} {'compiled':>8}  test")
    for r in rows[:top]:
        k = r["kernels"]
        print(f"{r['cpu']:8.1f} {r['child_cpu']:8.1f} {r['wall']:8.1f} "
              f"{k.get('compiled', 0) + k.get('compiled by worker', 0):8.0f}  {r['id']}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
