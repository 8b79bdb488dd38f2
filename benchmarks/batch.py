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


#: ``--before``: a third served process, cnnjit with the batch path as it was before session 20 (``old_batch_path``)
BEFORE = "cnnjit-before"


def old_batch_path() -> None:
    """Switch this process's ``BatchLoop`` to its path before session 20: whole batches on the caller alone as
    the chooser's tries (no estimate of them from split batches), and no hold of the idle workers between
    batches called back to back (``batchloop.ESTIMATE_ALONE``, ``batchloop.BATCH_HOLD_NS``). Not switched: a
    loop's first batch is not timed by its chooser, and the caller's three clock reads per batch."""
    from cnnjit.runtime import batchloop

    batchloop.ESTIMATE_ALONE, batchloop.BATCH_HOLD_NS = False, 0


def serve_engine(engine: str, name: str, batches: list[int], warmup: int, trace_to: str = "") -> int:
    """A served process of ``--procs`` (``benchmarks/ootb.serve``): ``engine`` ("cnnjit" or "onnxruntime",
    its default) on model ``name`` at each batch size; cnnjit's outputs checked against onnxruntime first.
    ``trace_to``: cnnjit's calls log themselves there (``traced_calls``)."""
    from benchmarks.harness import ort_session
    from benchmarks.ootb import serve

    proto, sample = models([name])[name]
    feed = proto.graph.input[0].name
    rng = np.random.default_rng(2)
    xs = {b: rng.standard_normal((b, *sample)).astype(np.float32) for b in batches}
    meta: dict = {"model": name, "engine": engine}
    if engine.startswith("cnnjit"):
        if engine == BEFORE:
            old_batch_path()
        model = cnnjit.compile(proto)
        model.run(None, {feed: xs[1] if 1 in xs else xs[batches[0]][:1]})  # its one compile, at batch 1
        ref = ort_session(proto, threads=1)
        for x in xs.values():
            np.testing.assert_allclose(model.run(None, {feed: x})[0], ref.run(None, {feed: x})[0], rtol=1e-3,
                                       atol=1e-4)
        del ref  # (no onnxruntime session left in cnnjit's process while it is timed)
        meta["threads"] = model.options["threads"]
        seen = {f"{engine} b{b}": [0, 0] for b in xs}  # (batches that ran split over the team, batches)

        def call(label: str, x: np.ndarray) -> None:
            model.run(None, {feed: x})
            seen[label][0] += bool(getattr(model._last, "split", False))
            seen[label][1] += 1

        fns = {label: (lambda label=label, x=x: call(label, x)) for label, x in zip(seen, xs.values())}
        if trace_to:
            fns = traced_calls(model, fns, trace_to)
        return serve(meta, fns, warmup, lambda: {k: v[0] / max(v[1], 1) for k, v in seen.items()})
    else:
        import onnxruntime as ort

        sess = ort.InferenceSession(proto.SerializeToString(), providers=["CPUExecutionProvider"])
        fns = {f"onnxruntime b{b}": (lambda x=x: sess.run(None, {feed: x})) for b, x in xs.items()}
    return serve(meta, fns, warmup)


def traced_calls(model: cnnjit.CompiledModel, fns: dict, path: str) -> dict:
    """``fns`` (label -> call of ``model``) made to log every call, written to ``path`` (JSON) as the served
    process exits: its phase (``ootb.PHASE``: warm-up, a turn's first or timed call, single calls), the time
    since the previous call ended, whether the team's idle worker slept as it began, its wall time, whether
    it ran split and each thread's sample count; for a split native batch its trace (``batchrows.start_trace``:
    per thread when it began, ran out of samples and stopped waiting, per sample its thread, CPU, begin and
    end; microseconds from the call's start). For ``--trace-calls``: where a timed batch's time goes."""
    import atexit
    import json

    from benchmarks.ootb import PHASE
    from cnnjit.runtime.batchrows import read_trace, start_trace
    from cnnjit.runtime.team import IDLE_SLEEPERS, team

    t = team(max(1, int(model.options.get("threads") or 1)))
    start_trace(t.desc)
    log: list[dict] = []
    last = [time.monotonic_ns()]

    def us(v: int, n0: int) -> float | None:
        return (int(v) - n0) / 1e3 if v else None

    def wrap(label: str, f):
        def call() -> None:
            asleep = int(t.words[IDLE_SLEEPERS])
            n0 = time.monotonic_ns()
            f()
            n1 = time.monotonic_ns()
            loop = model._last  # (the trace is read as the process ends: little Python between the calls)
            raw = read_trace(t.desc, loop.threads, loop.batch, cpus=True) if isinstance(loop, BatchLoop) \
                and loop.split and loop.native else None
            ch = getattr(loop, "chooser", None)
            log.append((label, PHASE["kind"], n0 - last[0], asleep, n0, n1, loop, bool(getattr(loop, "split", 0)),
                        list(getattr(loop, "ran", ())), raw,
                        None if ch is None else (ch.median(0), ch.median(1), getattr(loop, "_estimate", None))))
            last[0] = time.monotonic_ns()

        return call

    def record(label, phase, gap, asleep, n0, n1, loop, split, ran, raw, chosen) -> dict:
        rec = {"label": label, "phase": phase, "gap_us": gap / 1e3, "asleep": asleep, "wall_us": (n1 - n0) / 1e3}
        if isinstance(loop, BatchLoop):  # (and the chooser's medians after the call, the estimate's delta; s)
            rec.update(split=split, ran=ran, chooser=chosen)
            if raw is not None:
                threads, samples = raw
                rec["threads"] = [[us(a, n0), us(b, n0), us(c, n0), int(cpu) / 1e3] for a, b, c, cpu in threads]
                rec["samples"] = [[int(tid), int(cpu_id), us(b, n0), us(e, n0), int(c) / 1e3]
                                  for tid, b, e, c, cpu_id in samples]
        return rec

    def dump() -> None:
        Path(path).write_text(json.dumps([record(*r) for r in log]))

    atexit.register(dump)
    return {label: wrap(label, f) for label, f in fns.items()}


def trace_summary(path: str) -> list[str]:
    """Lines summarising ``traced_calls``' log: per label of a batch and phase, how many calls, the share split,
    the median wall time split and alone, and for split calls the medians of where the time went: Python
    before the caller's first sample, the worker's start after the caller's, each thread's first sample and
    the others, the end gap (the first thread out of samples waiting for the other's last), the caller's
    wait and the Python after it."""
    import json

    log = json.loads(Path(path).read_text())
    out = []

    def med(v: list) -> str:
        v = [x for x in v if x is not None]
        return f"{statistics.median(v):7.1f}" if v else "      -"

    def sub(a: float | None, b: float | None) -> float | None:  # (a worker's row may be written after the call)
        return None if a is None or b is None else a - b

    for label in sorted({r["label"] for r in log if "split" in r}):
        for phase in ("warmup", "single", "first", "block"):
            rs = [r for r in log if r["label"] == label and r["phase"] == phase]
            if not rs:
                continue
            sp = [r for r in rs if r["split"]]
            al = [r for r in rs if not r["split"]]
            tr = [r for r in sp if "threads" in r]
            first = {0: [], 1: []}
            rest = {0: [], 1: []}
            for r in tr:
                for tid in (0, 1):
                    mine = sorted((s for s in r["samples"] if s[0] == tid and s[2] is not None), key=lambda s: s[2])
                    if mine:
                        first[tid].append(mine[0][3] - mine[0][2])
                        rest[tid] += [s[3] - s[2] for s in mine[1:]]
            both = [r for r in tr if len(r["threads"]) > 1 and r["threads"][1][0] is not None]
            out.append(
                f"{label:10s} {phase:6s} calls {len(rs):3d} split {len(sp) / len(rs):4.0%} asleep "
                f"{sum(r['asleep'] > 0 for r in rs) / len(rs):4.0%} | wall split {med([r['wall_us'] for r in sp])} "
                f"alone {med([r['wall_us'] for r in al])} | before {med([r['threads'][0][0] for r in tr])} "
                f"worker late {med([sub(r['threads'][1][0], r['threads'][0][0]) for r in both])} (absent "
                f"{len(tr) - len(both)}) worker share {med([r['ran'][1] for r in sp])} | 1st sample caller "
                f"{med(first[0])} worker {med(first[1])} others {med(rest[0] + rest[1])} | end gap "
                f"{med([abs(sub(r['threads'][1][1], r['threads'][0][1]) or 0) for r in both])} caller waits "
                f"{med([sub(r['threads'][0][2], r['threads'][0][1]) for r in tr])} after "
                f"{med([sub(r['wall_us'], r['threads'][0][2]) for r in tr])}")
    return out


def throughput_procs(names: list[str], batches: list[int], args: argparse.Namespace) -> list[dict]:
    """Per model and batch size, images/s with cnnjit and onnxruntime each in its own process
    (``ootb.alternate``: blocks of calls per turn, and single calls interleaved)."""
    import random
    import tempfile

    rows = []
    rng = random.Random(0)
    engines = ("cnnjit", "onnxruntime", *([BEFORE] if args.before else []))
    for name in names:
        with tempfile.TemporaryFile("w+") as errs:
            procs = {}
            try:
                procs = served({eng: [sys.executable, str(Path(__file__).resolve()), "--serve", eng, "--models", name,
                                      "--batches", ",".join(map(str, batches)), "--warmup", str(args.warmup),
                                      *(["--trace-calls", f"{args.trace_calls}.{name}.{eng}"]
                                        if args.trace_calls and eng != "onnxruntime" else [])]
                                for eng in engines}, errs)
                res = alternate(procs, args, rng)
                split = ask_stats(procs["cnnjit"])
                if args.before:
                    split.update(ask_stats(procs[BEFORE]))
            except (EOFError, OSError, ValueError) as e:
                errs.seek(0)
                raise SystemExit(f"{name}: {e}: " + " | ".join(errs.read().strip().splitlines()[-3:])) from e
            finally:
                stop(procs)
        for eng in engines[::2] if args.trace_calls else ():
            print("\n".join([f"{name}, {eng}: per-call trace ({args.trace_calls}.{name}.{eng}; us, medians)",
                              *trace_summary(f"{args.trace_calls}.{name}.{eng}")]), flush=True)
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
            if args.before:
                old = res["timing"][f"{BEFORE} b{b}"]
                r.update(before_img_s=b / old["median_ms"] * 1e3, before_ratio=med["timing"]["onnxruntime"]
                         / old["median_ms"], before_ratio_best=best["onnxruntime"] / old["min_ms"],
                         before_split_share=split.get(f"{BEFORE} b{b}", 0.0))
            print(f"{name} batch {b} (own processes): cnnjit {r['cnnjit_img_s']:.0f} img/s, onnxruntime "
                  f"{r['onnxruntime_img_s']:.0f} img/s, ratio {r['ratio']:.2f} (best {r['ratio_best']:.2f}, "
                  f"single calls {r['ratio_single']:.2f}; split {r['split_share']:.0%})"
                  + (f"; before: {r['before_img_s']:.0f} img/s, ratio {r['before_ratio']:.2f} (best "
                     f"{r['before_ratio_best']:.2f}; split {r['before_split_share']:.0%})" if args.before else ""),
                  flush=True)
    return rows


PROCS_HEADER = ["model", "batch", "cnnjit img/s", "onnxruntime img/s", "ratio", "ratio of minima",
                "ratio, single calls", "cnnjit split"]


#: and with ``--before``
BEFORE_HEADER = ["before: cnnjit img/s", "before: ratio", "before: ratio of minima", "before: split"]


def procs_table(rows: list[dict]) -> list[list]:
    """The rows of the per-process table (``PROCS_HEADER``, then ``BEFORE_HEADER``'s with ``--before``)."""
    return [[r["model"], r["batch"], r["cnnjit_img_s"], r["onnxruntime_img_s"], r["ratio"], r["ratio_best"],
             r["ratio_single"], f"{r['split_share']:.0%}",
             *([r["before_img_s"], r["before_ratio"], r["before_ratio_best"], f"{r['before_split_share']:.0%}"]
               if "before_img_s" in r else [])] for r in rows]


def autogroup() -> str:
    """This process's scheduler autogroup and its nice (Linux, ``/proc/self/autogroup``; the served processes
    share it): "nice -20" when run in a session of its own at that priority (as root: ``setsid sh -c 'echo -20 >
    /proc/self/autogroup; exec python benchmarks/batch.py ...'``), a quiet machine's timings on a busy one."""
    try:
        return Path("/proc/self/autogroup").read_text().strip()
    except OSError:
        return "unknown"


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
             f"Load average when written: {load[0]:.1f} / {load[1]:.1f} / {load[2]:.1f}; this process's scheduler "
             f"autogroup: {autogroup()}" + (" (its processes had the CPUs nearly to themselves: a quiet machine's "
                                            "timings on a busy one)." if "nice -20" in autogroup() else "."),
             "Command: python benchmarks/batch.py --procs-only " + " ".join(
                 f"--{k.replace('_', '-')} {getattr(args, k)}" for k in ("models", "batches", "runs", "block",
                                                                         "block_calls", "settle"))
             + (" --before" if args.before else "") + (" --trace-calls PATH" if args.trace_calls else "")]
    if args.before:
        notes.insert(1, "'before:' columns: a third served process, cnnjit with the batch path before session 20 "
                     "(`--before`: `batch.old_batch_path`), timed in the same rounds; its ratio is to the same "
                     "onnxruntime times.")
    write_markdown("batch_procs", PROCS_HEADER + (BEFORE_HEADER if args.before else []), procs_table(rows),
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
    ap.add_argument("--before", action="store_true",
                    help="--procs: also time cnnjit with the batch path before session 20 (old_batch_path) in a "
                         "third process, in the same rounds")
    ap.add_argument("--serve", choices=["cnnjit", "onnxruntime", BEFORE], help=argparse.SUPPRESS)
    ap.add_argument("--trace-calls", default="", metavar="PATH",
                    help="--procs: cnnjit's served processes log every call to PATH.MODEL.ENGINE (traced_calls) and a "
                         "summary of where its batches' time went is printed")
    args = ap.parse_args(argv)
    if args.serve:
        return serve_engine(args.serve, args.models, [int(b) for b in args.batches.split(",")], args.warmup,
                            args.trace_calls)
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
                 + markdown_table(PROCS_HEADER + (BEFORE_HEADER if args.before else []), procs_table(procs_rows))
                 + "\n"
                 + "".join(f"\n* {n}" for n in procs_notes) + "\n")
    md.write_text(text + "\n## First call of a new batch size\n\n" + markdown_table(
        ["model", "batch", "first ms", "steady ms", "extra ms", "first CPU ms", "steady CPU ms", "extra CPU ms",
         "ran as"], first_rows) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
