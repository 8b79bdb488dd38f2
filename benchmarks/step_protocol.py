"""The parallel step protocol (``runtime.parallel``'s ``claim`` / ``wait`` / ``done``) called with literal ints, as
a rendered parallel schedule calls it (``codegen.threads.render_parallel``): compile time and run time with
the protocol's declared signatures ("declared", the current code) against dispatchers free to compile, which
specialise on every literal step index and part count ("literal", the code before: one overload per step and
function).

A synthetic schedule of N steps (each waits for the one before, claims its one part, runs a tiny kernel, counts
it done) is compiled once per form, in this process, with a fresh dispatcher for each (so nothing comes from
numba's cache: each form's cold compile); then both run interleaved (``harness.measure``, one thread: the caller
runs every step) to show the run time is unchanged.

    python benchmarks/step_protocol.py [--steps 20,80] [--runs 2000]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Any

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.harness import single_thread  # noqa: E402

if __name__ == "__main__":
    single_thread()

import numpy as np  # noqa: E402
from numba import njit  # noqa: E402

from benchmarks.harness import measure, print_table, write_json, write_markdown  # noqa: E402
from cnnjit.runtime import parallel  # noqa: E402


@njit(nogil=True)
def _kernel(x: np.ndarray, i: int) -> None:  # pragma: no cover - compiled
    x[i % x.size] += 1.0


def schedule_text(steps: int) -> str:
    """A parallel schedule's text in ``render_parallel``'s form: one part per step, each after the one before."""
    lines = ["def run(x, _main, _ep, _st):"]
    for i in range(steps):
        if i:
            lines += [f"    if not (wait(_st, {i - 1}, _ep, 1)):", "        return"]
        lines += [f"    if claim(_st, {i}, _ep, 1, _main) == 0:", f"        k(x, {i})", f"        done(_st, {i}, _ep)"]
    lines.append(f"    if _main:\n        wait(_st, {steps - 1}, _ep, 1)")
    return "\n".join(lines) + "\n"


def build(steps: int, literal: bool) -> tuple[Any, float, int]:
    """The compiled schedule, its compile seconds, and how many protocol overloads it made."""
    if literal:  # the dispatchers before: no signature, so one overload per literal
        protocol = {n: njit(nogil=True)(getattr(parallel, n).py_func) for n in ("claim", "wait", "done")}
    else:
        protocol = {n: getattr(parallel, n) for n in ("claim", "wait", "done")}
    before = sum(len(f.overloads) for f in protocol.values())
    ns: dict[str, Any] = {**protocol, "k": _kernel}
    exec(compile(schedule_text(steps), "<schedule>", "exec"), ns)  # noqa: S102 - our own text
    fn = njit(nogil=True)(ns["run"])
    x = np.zeros(8)
    t0 = time.perf_counter()
    fn(x, True, 1, parallel.new_state(steps))
    seconds = time.perf_counter() - t0
    return fn, seconds, sum(len(f.overloads) for f in protocol.values()) - before


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", default="20,80", help="comma-separated schedule lengths")
    ap.add_argument("--runs", type=int, default=2000)
    ap.add_argument("--out", default=None, help="results folder (default benchmarks/results)")
    args = ap.parse_args(argv)
    _kernel(np.zeros(8), 0)
    parallel.claim(parallel.new_state(1), 0, 1, 1, True)  # (the declared forms load at import; warm the call)
    rows, payload = [], {"runs": args.runs, "rows": []}
    for n in (int(s) for s in args.steps.split(",")):
        fns, info = {}, {}
        for form in ("literal", "declared"):
            fns[form], secs, overloads = build(n, form == "literal")
            info[form] = (secs, overloads)
        x = np.zeros(8)
        states = {f: parallel.new_state(n) for f in fns}
        ep = {f: 0 for f in fns}

        def runner(f: str):
            def go() -> None:
                ep[f] += 1
                fns[f](x, True, ep[f], states[f])
            return go

        st = measure({f: runner(f) for f in fns}, runs=args.runs, warmup=50)
        for f in fns:
            row = {"steps": n, "form": f, "compile_s": round(info[f][0], 2), "overloads": info[f][1],
                   "run_median_us": round(st[f]["median_ms"] * 1e3, 3), "run_min_us": round(st[f]["min_ms"] * 1e3, 3)}
            payload["rows"].append(row)
            rows.append([n, f, row["compile_s"], row["overloads"], row["run_median_us"], row["run_min_us"]])
    headers = ["steps", "protocol", "compile s", "protocol overloads", "run median us", "run min us"]
    print_table(headers, rows, "step protocol: literal-specialised vs declared signatures")
    write_json("step_protocol", payload, args.out)
    write_markdown("step_protocol", headers, rows, out_dir=args.out,
                   title="Parallel step protocol: literal-specialised vs declared signatures",
                   notes=[f"`python benchmarks/step_protocol.py --steps {args.steps} --runs {args.runs}`; one "
                          "process, compile cold for each form (fresh dispatchers), runs interleaved"])
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
