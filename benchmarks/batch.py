"""Batch throughput and the first-call cost of a new batch size (issue 18), both libraries with defaults.

    python benchmarks/batch.py [--models mobilenet_v2_224,vww_96_float] [--batches 1,8,32] [--runs 15]
    python benchmarks/batch.py --procs-only [--runs 40]   # only the table with each library in its own process
    python benchmarks/batch.py --no-procs                 # only the tables in one process

Per model: ``cnnjit.compile(model)`` (default threads: the usable cores) against onnxruntime's default
session, the batch made symbolic where the model declares a fixed one. Two tables:

* first call of a new batch size: the model has run at batch 1 (its one compile); each new batch size's
  first call against the median of its next calls, and whether it ran as a loop over the batch-1 program
  (``BatchLoop``: no import, passes or kernel compile, whatever the disk cache holds);
* throughput with each library in its own process (``benchmarks/ootb.py``'s served processes, as
  ``vs_onnxruntime.py --ootb-procs``: turns of blocks of calls in random order with a pause between turns,
  and single calls): the fair comparison, as users run them; neither library's threads spin beside the
  other's calls (onnxruntime's default pool spins for tens of ms after a call, on the core cnnjit's split
  batch needs). ``batch_procs.{json,md}``, and the first table of ``batch.md``;
* throughput with both libraries timed interleaved in one process (blocks of calls, each turn once the
  process is idle): ``batch.md``'s second table.

For cnnjit both say how often a batch ran split over the team (``BatchLoop.split``; the rest ran on the
caller alone, as its chooser picked). Results: ``benchmarks/results/batch.json`` and ``batch.md``.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import onnx

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import cnnjit  # noqa: E402
from benchmarks.harness import markdown_table, quiesce, write_json, write_markdown  # noqa: E402
from benchmarks.models import mobilenet_v2  # noqa: E402
from benchmarks.ootb import alternate, ask_stats, served, stop  # noqa: E402
from cnnjit.runtime.model import BatchLoop  # noqa: E402

TINY = Path(__file__).resolve().parents[2] / "shared" / "models" / "mlperf-tiny"
#: the issue's target: batch-8 throughput / onnxruntime's default
TARGET_BATCH8 = 1.2
#: and a new batch size's first call over its steady call
TARGET_FIRST_MS = 50.0


def symbolic_batch(model: onnx.ModelProto) -> onnx.ModelProto:
    """The model with the leading dimension of every input and output made symbolic (``N``)."""
    m = onnx.ModelProto()
    m.CopyFrom(model)
    for v in [*m.graph.input, *m.graph.output]:
        dims = v.type.tensor_type.shape.dim
        if dims:
            dims[0].ClearField("dim_value")
            dims[0].dim_param = "N"
    return m


def models(names: list[str]) -> dict[str, tuple[onnx.ModelProto, tuple[int, ...]]]:
    """name -> (model with a symbolic batch, one sample's shape without the batch)."""
    out = {}
    for n in names:
        if n == "mobilenet_v2_224":
            out[n] = (symbolic_batch(mobilenet_v2(1.0, 224)), (3, 224, 224))
        elif n == "vww_96_float":
            out[n] = (onnx.load(str(TINY / "vww_96_float.tf2onnx.onnx")), (96, 96, 3))
        else:
            raise SystemExit(f"unknown model {n!r}")
    return out


def first_calls(model: cnnjit.CompiledModel, feed: str, sample: tuple[int, ...], batches: list[int]) -> list[dict]:
    """Per new batch size: the first call's ms, the median of 5 later calls, and how it ran."""
    rng = np.random.default_rng(1)
    rows = []
    for b in batches:
        x = rng.standard_normal((b, *sample)).astype(np.float32)
        quiesce()
        c0, t0 = time.process_time(), time.perf_counter()
        model.run(None, {feed: x})
        first, cpu_first = (time.perf_counter() - t0) * 1e3, (time.process_time() - c0) * 1e3
        loop = model._last
        ran = ("loop over batch 1" + (", native job" if loop.native else "")) if isinstance(loop, BatchLoop) \
            else "specialised"
        steady, cpu = [], []
        for _ in range(5):
            c0, t0 = time.process_time(), time.perf_counter()
            model.run(None, {feed: x})
            steady.append((time.perf_counter() - t0) * 1e3)
            cpu.append((time.process_time() - c0) * 1e3)
        med, cpu_med = statistics.median(steady), statistics.median(cpu)
        # CPU ms (every thread of the process): what the first call does more, whatever else runs
        rows.append({"batch": b, "first_ms": first, "steady_ms": med, "extra_ms": first - med, "ran_as": ran,
                     "cpu_first_ms": cpu_first, "cpu_steady_ms": cpu_med, "cpu_extra_ms": cpu_first - cpu_med})
    return rows


def blocks(fns: dict, runs: int, block: int = 3) -> dict[str, tuple[float, float]]:
    """(median, minimum) ms per call: ``runs`` rounds, each running every candidate's block of ``block`` timed
    calls after one untimed call, candidates in turn, each turn once the process is quiet (``harness.quiesce``). Blocks,
    not single interleaved calls, and the wait: onnxruntime's default thread pool keeps spinning for tens of
    ms after a call returns, which took a core from the other library's calls (measured: cnnjit's VWW batch 8
    at 10.9 ms interleaved call by call, 2.8 ms alone; with blocks but no wait, its split ran no faster than
    one thread)."""
    times: dict[str, list[float]] = {k: [] for k in fns}
    for r in range(runs):
        for name in (list(fns) if r % 2 == 0 else list(fns)[::-1]):
            quiesce()
            fns[name]()
            t0 = time.perf_counter()
            for _ in range(block):
                fns[name]()
            times[name].append((time.perf_counter() - t0) * 1e3 / block)
    return {k: (statistics.median(v), min(v)) for k, v in times.items()}


def throughput(model: cnnjit.CompiledModel, sess, feed: str, sample: tuple[int, ...], batches: list[int],
               runs: int) -> list[dict]:
    """images/s of cnnjit and onnxruntime (both defaults), interleaved, per batch size."""
    rng = np.random.default_rng(2)
    rows = []
    for b in batches:
        x = rng.standard_normal((b, *sample)).astype(np.float32)
        np.testing.assert_allclose(model.run(None, {feed: x})[0], sess.run(None, {feed: x})[0], rtol=1e-3,
                                   atol=1e-4)
        seen = [0, 0]  # (batches that ran split over the team, batches)

        def cj() -> None:
            model.run(None, {feed: x})
            seen[0] += bool(getattr(model._last, "split", False))
            seen[1] += 1

        st = blocks({"cnnjit": cj, "onnxruntime": lambda: sess.run(None, {feed: x})}, runs)
        (cj_ms, cj_min), (ox_ms, ox_min) = st["cnnjit"], st["onnxruntime"]
        cj, ox = b / cj_ms * 1e3, b / ox_ms * 1e3
        rows.append({"batch": b, "cnnjit_img_s": cj, "onnxruntime_img_s": ox, "ratio": cj / ox,
                     "cnnjit_ms": cj_ms, "onnxruntime_ms": ox_ms, "cnnjit_min_ms": cj_min,
                     "onnxruntime_min_ms": ox_min, "ratio_best": ox_min / cj_min, "split_share": seen[0] / seen[1]})
    return rows


def serve_engine(engine: str, name: str, batches: list[int], warmup: int) -> int:
    """A served process of ``--procs`` (``benchmarks/ootb.serve``): ``engine`` ("cnnjit" or "onnxruntime",
    its default) on model ``name`` at each batch size; cnnjit's outputs checked against onnxruntime first."""
    from benchmarks.harness import ort_session
    from benchmarks.ootb import serve

    proto, sample = models([name])[name]
    feed = proto.graph.input[0].name
    rng = np.random.default_rng(2)
    xs = {b: rng.standard_normal((b, *sample)).astype(np.float32) for b in batches}
    meta: dict = {"model": name, "engine": engine}
    if engine == "cnnjit":
        model = cnnjit.compile(proto)
        model.run(None, {feed: xs[1] if 1 in xs else xs[batches[0]][:1]})  # its one compile, at batch 1
        ref = ort_session(proto, threads=1)
        for x in xs.values():
            np.testing.assert_allclose(model.run(None, {feed: x})[0], ref.run(None, {feed: x})[0], rtol=1e-3,
                                       atol=1e-4)
        del ref  # (no onnxruntime session left in cnnjit's process while it is timed)
        meta["threads"] = model.options["threads"]
        seen = {f"cnnjit b{b}": [0, 0] for b in xs}  # (batches that ran split over the team, batches)

        def call(label: str, x: np.ndarray) -> None:
            model.run(None, {feed: x})
            seen[label][0] += bool(getattr(model._last, "split", False))
            seen[label][1] += 1

        fns = {label: (lambda label=label, x=x: call(label, x)) for label, x in zip(seen, xs.values())}
        return serve(meta, fns, warmup, lambda: {k: v[0] / max(v[1], 1) for k, v in seen.items()})
    else:
        import onnxruntime as ort

        sess = ort.InferenceSession(proto.SerializeToString(), providers=["CPUExecutionProvider"])
        fns = {f"onnxruntime b{b}": (lambda x=x: sess.run(None, {feed: x})) for b, x in xs.items()}
    return serve(meta, fns, warmup)


def throughput_procs(names: list[str], batches: list[int], args: argparse.Namespace) -> list[dict]:
    """Per model and batch size, images/s with cnnjit and onnxruntime each in its own process
    (``ootb.alternate``: blocks of calls per turn, and single calls interleaved)."""
    import random
    import tempfile

    rows = []
    rng = random.Random(0)
    for name in names:
        with tempfile.TemporaryFile("w+") as errs:
            procs = {}
            try:
                procs = served({eng: [sys.executable, str(Path(__file__).resolve()), "--serve", eng, "--models", name,
                                      "--batches", ",".join(map(str, batches)), "--warmup", str(args.warmup)]
                                for eng in ("cnnjit", "onnxruntime")}, errs)
                res = alternate(procs, args, rng)
                split = ask_stats(procs["cnnjit"])
            except (EOFError, OSError, ValueError) as e:
                errs.seek(0)
                raise SystemExit(f"{name}: {e}: " + " | ".join(errs.read().strip().splitlines()[-3:])) from e
            finally:
                stop(procs)
        for b in batches:
            med = {how: {eng: res[how][f"{eng} b{b}"]["median_ms"] for eng in ("cnnjit", "onnxruntime")}
                   for how in ("timing", "timing_single")}
            best = {eng: res["timing"][f"{eng} b{b}"]["min_ms"] for eng in ("cnnjit", "onnxruntime")}
            rows.append({"model": name, "batch": b, "threads": res["ready"]["cnnjit"]["threads"],
                         "cnnjit_img_s": b / med["timing"]["cnnjit"] * 1e3,
                         "onnxruntime_img_s": b / med["timing"]["onnxruntime"] * 1e3,
                         "ratio": med["timing"]["onnxruntime"] / med["timing"]["cnnjit"],
                         "ratio_best": best["onnxruntime"] / best["cnnjit"],
                         "ratio_single": med["timing_single"]["onnxruntime"] / med["timing_single"]["cnnjit"],
                         "split_share": split.get(f"cnnjit b{b}", 0.0),
                         "timing": {k: v for k, v in res["timing"].items() if k.endswith(f" b{b}")},
                         "timing_single": {k: v for k, v in res["timing_single"].items() if k.endswith(f" b{b}")}})
            r = rows[-1]
            print(f"{name} batch {b} (own processes): cnnjit {r['cnnjit_img_s']:.0f} img/s, onnxruntime "
                  f"{r['onnxruntime_img_s']:.0f} img/s, ratio {r['ratio']:.2f} (best {r['ratio_best']:.2f}, "
                  f"single calls {r['ratio_single']:.2f}; split {r['split_share']:.0%})", flush=True)
    return rows


PROCS_HEADER = ["model", "batch", "cnnjit img/s", "onnxruntime img/s", "ratio", "ratio of minima",
                "ratio, single calls", "cnnjit split"]


def procs_table(rows: list[dict]) -> list[list]:
    """The rows of the per-process table (``PROCS_HEADER``)."""
    return [[r["model"], r["batch"], r["cnnjit_img_s"], r["onnxruntime_img_s"], r["ratio"], r["ratio_best"],
             r["ratio_single"], f"{r['split_share']:.0%}"] for r in rows]


def write_procs(rows: list[dict], args: argparse.Namespace) -> list[str]:
    """``batch_procs.{json,md}``: the table of ``throughput_procs``; returns its notes."""
    write_json("batch_procs", {"runs": args.runs, "block_calls": args.block_calls, "rows": rows}, args.out)
    load = os.getloadavg()
    notes = ["Each library in its own process (`batch.py`'s default; `--procs-only`: this table alone), its "
             f"defaults (cnnjit threads={rows[0]['threads']}). "
             f"Main columns: {args.runs} rounds, each giving every (library, batch size) a turn in random order "
             f"of one untimed call then {args.block_calls} timed calls, {args.settle:g} s between turns, so no "
             "timed call follows the other library's call while its threads still spin; images/s from the "
             "medians, 'best' from the minima. 'single calls': the same processes told in turn to run "
             f"{args.block} rounds of every batch size call by call (a call may follow its own process's "
             "other batch size). ratio = cnnjit / onnxruntime images/s (target at batch 8: "
             f">= {TARGET_BATCH8}). 'cnnjit split': the share of the served process's batches (warm-up "
             "included) that ran split over the team (`BatchLoop.split`), the rest on the caller alone.",
             f"Load average when written: {load[0]:.1f} / {load[1]:.1f} / {load[2]:.1f}.",
             "Command: python benchmarks/batch.py --procs-only " + " ".join(
                 f"--{k.replace('_', '-')} {getattr(args, k)}" for k in ("models", "batches", "runs", "block",
                                                                         "block_calls", "settle"))]
    write_markdown("batch_procs", PROCS_HEADER, procs_table(rows),
                   title="Batch throughput, both defaults, each in its own process", notes=notes, out_dir=args.out)
    return notes


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--models", default="mobilenet_v2_224,vww_96_float")
    ap.add_argument("--batches", default="1,8,32")
    ap.add_argument("--new-batches", default="2,3,4,7,8,32")
    ap.add_argument("--runs", type=int, default=15)
    ap.add_argument("--out", default=None, help="results folder (default benchmarks/results)")
    ap.add_argument("--procs", action="store_true", help=argparse.SUPPRESS)  # (the default now; kept for old commands)
    ap.add_argument("--no-procs", action="store_true",
                    help="skip the throughput table with each library in its own process (batch_procs.*)")
    ap.add_argument("--procs-only", action="store_true", help="only that table")
    ap.add_argument("--block", type=int, default=5, help="--procs: single-call rounds per turn (default 5)")
    ap.add_argument("--block-calls", type=int, default=3,
                    help="--procs: timed calls per turn, after one untimed call (default 3)")
    ap.add_argument("--settle", type=float, default=0.05, help="--procs: seconds between turns")
    ap.add_argument("--warmup", type=int, default=5, help="--procs: warm-up rounds per served process")
    ap.add_argument("--serve", choices=["cnnjit", "onnxruntime"], help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.serve:
        return serve_engine(args.serve, args.models, [int(b) for b in args.batches.split(",")], args.warmup)
    import onnxruntime as ort

    batches = [int(b) for b in args.batches.split(",") if b]  # --batches "": the first-call table only
    procs_rows, procs_notes = [], []
    if not args.no_procs or args.procs_only:
        procs_rows = throughput_procs(args.models.split(","), batches, args)
        procs_notes = write_procs(procs_rows, args)
        if args.procs_only:
            return 0
    new = [int(b) for b in args.new_batches.split(",")]
    load0 = os.getloadavg()
    result: dict = {"models": {}, "threads": None, "load_before": load0}
    first_rows, tp_rows = [], []
    for name, (proto, sample) in models(args.models.split(",")).items():
        feed = proto.graph.input[0].name
        model = cnnjit.compile(proto)
        result["threads"] = model.options["threads"]
        t0 = time.perf_counter()
        model.run(None, {feed: np.zeros((1, *sample), np.float32)})
        compile_s = time.perf_counter() - t0
        # (the session after the first calls: its default pool spins for a while once created, on the core a
        # first call's second thread needs, measured: VWW batch 8's steady call 2.16 ms wall and 4.88 ms of CPU)
        fc = first_calls(model, feed, sample, new)
        sess = ort.InferenceSession(proto.SerializeToString(), providers=["CPUExecutionProvider"])
        tp = throughput(model, sess, feed, sample, batches, args.runs)
        result["models"][name] = {"batch1_compile_s": compile_s, "first_calls": fc, "throughput": tp}
        first_rows += [[name, r["batch"], r["first_ms"], r["steady_ms"], r["extra_ms"], r["cpu_first_ms"],
                        r["cpu_steady_ms"], r["cpu_extra_ms"], r["ran_as"]] for r in fc]
        tp_rows += [[name, r["batch"], r["cnnjit_img_s"], r["onnxruntime_img_s"], r["ratio"], r["ratio_best"],
                     f"{r['split_share']:.0%}"] for r in tp]
        for r in fc:
            print(f"{name} new batch {r['batch']}: first {r['first_ms']:.1f} ms, steady {r['steady_ms']:.1f} ms "
                  f"({r['ran_as']})", flush=True)
        for r in tp:
            print(f"{name} batch {r['batch']}: cnnjit {r['cnnjit_img_s']:.0f} img/s, onnxruntime "
                  f"{r['onnxruntime_img_s']:.0f} img/s, ratio {r['ratio']:.2f} (of minima {r['ratio_best']:.2f})",
                  flush=True)
    result["procs"] = procs_rows
    write_json("batch", result, args.out)
    notes = ["**In one process** (this table): both libraries timed interleaved in the same process. "
             "Each engine in its own process (the fair comparison): the table below.",
             f"cnnjit threads={result['threads']} (default: the usable cores); onnxruntime's default session; "
             f"medians of {args.runs} alternating blocks of 3 calls (after one untimed call each, once the "
             "process's threads are idle: onnxruntime's spin for tens of ms after a call); "
             f"ratio = cnnjit / onnxruntime images/s (target at batch 8: >= {TARGET_BATCH8}); 'of minima': "
             "the same from each library's fastest block (what a busy machine distorts least); 'cnnjit split': "
             "the share of cnnjit's timed batches that ran split over the team (the rest on the caller alone, as "
             "`BatchLoop`'s chooser picked). Load average "
             f"{load0[0]:.1f} before, {os.getloadavg()[0]:.1f} after.",
             "First call: the model ran at batch 1 first (its one compile), and no onnxruntime session exists yet "
             "(its pool spins once created); 'extra' is the first call of the new "
             f"size minus its steady call (target <= {TARGET_FIRST_MS:.0f} ms); the CPU columns are the process's "
             "CPU time (all threads), which a busy machine inflates far less than wall time. A loop over batch 1 "
             "compiles "
             "nothing (tests/test_batch.py asserts it), so a cold disk cache changes nothing.",
             "Command: python benchmarks/batch.py " + " ".join(argv if argv is not None else sys.argv[1:])]
    write_markdown("batch", ["model", "batch", "cnnjit img/s", "onnxruntime img/s", "ratio", "ratio of minima",
                             "cnnjit split"],
                   tp_rows, title="Batch throughput, both defaults: in one process", notes=notes, out_dir=args.out)
    md = Path(args.out or Path(__file__).resolve().parent / "results") / "batch.md"
    text = md.read_text()
    if procs_rows:
        text += ("\n## Each engine in its own process (the fair comparison; also `batch_procs.md`)\n\n"
                 + markdown_table(PROCS_HEADER, procs_table(procs_rows)) + "\n"
                 + "".join(f"\n* {n}" for n in procs_notes) + "\n")
    md.write_text(text + "\n## First call of a new batch size\n\n" + markdown_table(
        ["model", "batch", "first ms", "steady ms", "extra ms", "first CPU ms", "steady CPU ms", "extra CPU ms",
         "ran as"], first_rows) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
