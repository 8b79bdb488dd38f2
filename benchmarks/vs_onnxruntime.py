"""cnnjit vs onnxruntime (ORT_ENABLE_ALL) on the benchmark model set, batch 1, 1 and 2 threads.

    PYTHONPATH=. python benchmarks/vs_onnxruntime.py [--models lenet5,resnet8] [--runs 50] [--warmup 10]
        [--threads 1,2] [--profile [resnet8,mobilenet_v2_224]] [--peak fma|sgemm]
    PYTHONPATH=. python benchmarks/vs_onnxruntime.py --ootb [MODELS] [--ootb-only]   # out of the box
    PYTHONPATH=. python benchmarks/vs_onnxruntime.py --ootb [MODELS] --ootb-procs     # + one process per engine

Every measurement runs in a child process (this script again, with ``--worker``) whose numba / OpenMP /
onnxruntime thread counts are set before anything is imported:

* 1 thread: one process per model times cnnjit and onnxruntime interleaved (``harness.measure``), so the
  ratio is measured in one run on the same inputs;
* N > 1 threads: one process per model *and engine* (numba's and onnxruntime's thread pools fight when
  both live in one process; onnxruntime's workers spin), run back to back.

Each worker also measures the machine's peak for its thread count (``cnnjit.profile.measured_peak``:
by default a generated vector FMA loop; ``--peak sgemm`` uses numpy's matmul), and the tables use the
highest peak seen at that thread count. Reported: median and min latency of ``--runs`` timed runs after
``--warmup`` warm-up rounds, the ratio cnnjit / onnxruntime (medians), GFLOP/s (2 x MACs of
Conv/Gemm/MatMul, ``models.count_flops``) and % of the peak, the issue's target ratio, and the max
difference to onnxruntime's output. ``--profile`` adds a per-layer profile of the named models (default
ResNet-8 and MobileNetV2-224; 1 thread, the real compiled schedule, ``cnnjit.profile.profile_model``) with
the share of peak reached on the compute-bound conv layers.

``--ootb`` adds the out-of-the-box table: per model one process timing, interleaved, onnxruntime's default
session against ``cnnjit.compile(model)``'s default (every usable core) and cnnjit compiled with 1, 2 and 4
threads (``vs_onnxruntime_ootb.{json,md}``). ``--ootb-procs`` adds the same table with each engine in its
own process (``benchmarks/ootb.py: alternate``): its main columns from turns of one call apart then
``--block-calls`` timed calls of one configuration (so no timed call follows another configuration's call
while its threads still spin), two more from single calls interleaved call by call, and the default ratio
of the call apart (the first after the pause between turns: what a caller sees that runs a model now and
then).

Writes ``benchmarks/results/vs_onnxruntime.{json,md,png}`` (and ``vs_onnxruntime_profile.md``).

Real models (issue 17): ``--corpus`` times the corpus instead (``benchmarks/corpus.py``: the five models of
the rapidocr-onnxruntime and ddddocr wheels and the generated ones; ``--models`` picks some), 1 thread,
interleaved, with the geometric mean of the ratios against the issue's bounds (each <= 0.9, mean <= 0.8);
writes ``vs_onnxruntime_corpus.{json,md}`` (``--profile NAMES`` appends their per-layer profiles):

    PYTHONPATH=. python benchmarks/vs_onnxruntime.py --corpus [--models ppocr_cls,yolov8_head] [--profile ppocr_v4_rec]
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.harness import single_thread  # noqa: E402 - stdlib only
from benchmarks.ootb import (  # noqa: E402 - stdlib only
    default_ootb_models,
    ootb_serve,
    ootb_worker,
    run_ootb,
    run_ootb_procs,
    write_ootb,
)


def _argv_threads(argv: list[str]) -> int:
    """The worker's thread count, read before numpy / numba / onnxruntime are imported."""
    if "--worker" in argv:
        for i, a in enumerate(argv):
            if a == "--worker-threads" and i + 1 < len(argv):
                return int(argv[i + 1])
    return 1


THREADS = _argv_threads(sys.argv)
# NUMBA_NUM_THREADS, OMP_NUM_THREADS...: before the libraries start their pools (an out-of-the-box worker
# leaves cnnjit's own default alone)
single_thread(THREADS, cnnjit_default="--worker-ootb" in sys.argv)

import argparse  # noqa: E402
import json  # noqa: E402
import math  # noqa: E402
import os  # noqa: E402
import subprocess  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from typing import Any  # noqa: E402

NAME = "vs_onnxruntime"
#: the issue's targets for cnnjit / onnxruntime median latency at 1 thread (2 threads: MobileNetV2 only)
TARGETS_1T = {"lenet5": 0.5, "ds_cnn": 0.5, "mobilenet_v1_025_96": 0.5, "resnet8": 0.5, "mlperf_ad01_fp32": 0.5,
              "mlperf_kws_float32": 0.5, "mlperf_vww_96_float": 0.5, "mlperf_resnet": 0.5,
              "mobilenet_v2_224": 0.75, "light_squeezenet": 0.75}
TARGETS_NT = {"mobilenet_v2_224": 0.75}
DEFAULT_PROFILE = ("resnet8", "mobilenet_v2_224")
#: a Conv call is "compute-bound" when each output element takes at least this many multiply-adds
#: (3x3 over >= 8 channels, 1x1 over >= 64 channels; not depthwise, not the first RGB layer)
COMPUTE_BOUND_MACS = 64
#: max |cnnjit - onnxruntime| / max |onnxruntime output| above which a result is flagged
REL_TOL = 1e-3


# =========================================================================================================
# worker: runs in a child process with its thread counts set
# =========================================================================================================
def _compile(model, threads: int):
    import inspect

    import cnnjit

    # always explicit: the default is every usable core, so a "1 thread" row compiled 2-thread schedules
    if "threads" in inspect.signature(cnnjit.compile).parameters:
        return cnnjit.compile(model, threads=threads), True
    return cnnjit.compile(model), False


def worker(name: str, threads: int, engines: list[str], runs: int, warmup: int, peak_kind: str,
           profile: bool) -> dict[str, Any]:
    import numba  # noqa: F401 - first, so NUMBA_NUM_THREADS (set above) is the one it reads

    # fused_vs_unfused pins everything to 1 thread when imported: take its helpers, then re-apply ours
    from benchmarks.fused_vs_unfused import max_rel_err, program_stats

    single_thread(threads)
    from benchmarks.corpus import ALL_MODELS, load, reference_outputs
    from benchmarks.harness import measure, ort_session
    from benchmarks.models import count_flops, output_scale
    from cnnjit.profile import measured_peak, profile_model

    model, feeds = load(name)
    shapes = {k: list(v.shape) for k, v in feeds.items()}
    out: dict[str, Any] = {"model": name, "source": ALL_MODELS[name].source, "threads": threads,
                           "engines": engines, "input_shapes": shapes, "flops": count_flops(model, shapes)}
    # the references: onnxruntime, 1 intra-op thread (no spinning pool left behind in a cnnjit-only worker),
    # all graph optimisations and none (QDQ models round differently in the two: corpus.reference_outputs)
    refs = reference_outputs(model, feeds)
    out["output_scale"] = output_scale(refs[0])
    fns = {}
    if "cnnjit" in engines:
        t0 = time.perf_counter()
        cm, threaded = _compile(model, threads)
        got = cm.run(None, feeds)
        out["cnnjit_compile_s"] = round(time.perf_counter() - t0, 4)
        out["cnnjit_threads_option"] = threaded
        out["rel_err"] = min(max_rel_err(got, ref) for ref in refs)
        stats = program_stats(cm)
        stats["entry"] = cm._default_spec().program.meta.get("entry")
        out["cnnjit_program"] = stats
        fns["cnnjit"] = lambda: cm.run(None, feeds)
    if "onnxruntime" in engines:
        sess = ort_session(model, threads=threads)
        sess.run(None, feeds)
        fns["onnxruntime"] = lambda: sess.run(None, feeds)
    out["peak_gflops"], out["peak_method"] = measured_peak(peak_kind, threads)
    out["timing"] = measure(fns, runs=runs, warmup=warmup)
    if profile and "cnnjit" in engines:
        out["profile"] = profile_model(model, shapes, feeds=feeds, repeat=runs, peak=peak_kind)
    return out


# =========================================================================================================
# driver
# =========================================================================================================
def run_worker(name: str, threads: int, engines: list[str], args: argparse.Namespace, profile: bool,
               ) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="cnnjit-vs-ort-") as tmp:
        out = Path(tmp) / "result.json"
        cmd = [sys.executable, str(Path(__file__).resolve()), "--worker", "--worker-threads", str(threads),
               "--worker-model", name, "--worker-engines", ",".join(engines), "--worker-out", tmp,
               "--runs", str(args.runs), "--warmup", str(args.warmup), "--peak", args.peak]
        if profile:
            cmd.append("--worker-profile")
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join([str(Path(__file__).resolve().parents[1]), env.get("PYTHONPATH", "")])
        r = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=args.timeout)
        if r.returncode != 0 or not out.is_file():
            tail = (r.stderr or r.stdout).strip().splitlines()[-3:]
            return {"model": name, "threads": threads, "engines": engines,
                    "error": f"worker exit {r.returncode}: " + " | ".join(tail)}
        return json.loads(out.read_text())


def merge(name: str, threads: int, parts: list[dict[str, Any]]) -> dict[str, Any]:
    """One row from the worker results of one model at one thread count."""
    row: dict[str, Any] = {"model": name, "threads": threads}
    errors = [p["error"] for p in parts if "error" in p]
    if errors:
        row["error"] = "; ".join(errors)
        return row
    timing: dict[str, Any] = {}
    for p in parts:
        timing.update(p["timing"])
        for k, v in p.items():
            if k not in ("timing", "engines", "peak_gflops", "peak_method"):
                row.setdefault(k, v)
    row["timing"] = timing
    row["peaks_gflops"] = [p["peak_gflops"] for p in parts]
    row["peak_method"] = parts[0]["peak_method"]
    c, o = timing["cnnjit"], timing["onnxruntime"]
    row["ratio"] = c["median_ms"] / o["median_ms"]
    row["ratio_min"] = c["min_ms"] / o["min_ms"]
    for s in timing.values():
        s["gflops"] = row["flops"] / (s["median_ms"] * 1e6) if s["median_ms"] > 0 else None
    targets = TARGETS_1T if threads == 1 else TARGETS_NT
    row["target"] = targets.get(name)
    row["met"] = None if row["target"] is None else bool(row["ratio"] <= row["target"])
    row["ok"] = bool(row.get("rel_err", float("inf")) <= REL_TOL)
    return row


def add_peak(rows: list[dict[str, Any]]) -> float:
    """The best peak seen by any worker at this thread count; sets every row's % of peak against it."""
    peaks = [p for r in rows for p in r.get("peaks_gflops", [])]
    peak = max(peaks) if peaks else 0.0
    for r in rows:
        for s in r.get("timing", {}).values():
            s["percent_of_peak"] = 100 * s["gflops"] / peak if peak and s.get("gflops") else None
    return peak


HEADERS = ["model", "MFLOP", "cnnjit med ms", "cnnjit min ms", "ORT med ms", "ORT min ms", "ratio", "target",
           "cnnjit GFLOP/s", "cnnjit % peak", "ORT GFLOP/s", "ORT % peak", "entry", "rel err"]


def table_row(r: dict[str, Any]) -> list[Any]:
    if "error" in r:
        return [r["model"], None, "ERROR", r["error"][:100]] + [None] * (len(HEADERS) - 4)
    c, o = r["timing"]["cnnjit"], r["timing"]["onnxruntime"]
    target = None if r["target"] is None else f"<= {r['target']:g} " + ("yes" if r["met"] else "NO")
    return [r["model"], r["flops"] / 1e6, c["median_ms"], c["min_ms"], o["median_ms"], o["min_ms"], r["ratio"],
            target, c["gflops"], c["percent_of_peak"], o["gflops"], o["percent_of_peak"],
            r.get("cnnjit_program", {}).get("entry"), r["rel_err"] if r["ok"] else f"{r['rel_err']:.2g} MISMATCH"]


def profile_section(name: str, prof: dict[str, Any], peak: float) -> tuple[list[str], dict[str, Any]]:
    """Markdown lines for one model's per-layer profile, and its compute-bound summary; % of peak against
    ``peak`` (the run's best 1-thread measurement: one worker's own can be low on a busy machine)."""
    from benchmarks.harness import markdown_table

    if peak:
        prof["worker_peak_gflops"] = prof["peak_gflops"]
        prof["peak_gflops"] = peak
        for r in prof["calls"]:
            r["percent_of_peak"] = 100 * r["gflops"] / peak
    rows = prof["calls"]
    cb = [r for r in rows if r["op"].startswith("Conv") and r["macs_per_output"] >= COMPUTE_BOUND_MACS]
    cb_time = sum(r["median_ms"] for r in cb)
    summary = {
        "model": name, "mode": prof["mode"], "entry": prof["entry"], "run_ms": prof["run_ms"],
        "sum_ms": prof["sum_ms"], "discrepancy": prof["discrepancy"], "peak_gflops": prof["peak_gflops"],
        "compute_bound_calls": len(cb), "compute_bound_share": cb_time / prof["sum_ms"] if prof["sum_ms"] else None,
        # FLOP-weighted: total FLOPs of those layers / their total time
        "compute_bound_percent_of_peak": (100 * sum(r["flops"] for r in cb) / (cb_time * 1e6) / prof["peak_gflops"]
                                          if cb_time and prof["peak_gflops"] else None),
        "compute_bound_min_percent": min((r["percent_of_peak"] for r in cb), default=None),
    }
    table = [[r["call"], r["kernel"], r["op"], r["note"].split(" ", 1)[-1], r["median_ms"] * 1e3,
              r["percent"], r["gflops"] if r["flops"] else None,
              r["percent_of_peak"] if r["flops"] else None, "yes" if r in cb else ""] for r in rows]
    lines = [f"## {name}", "",
             f"{prof['mode']} profile of the {prof['entry']} entry: sum of per-call medians {prof['sum_ms']:.3f} ms, "
             f"real whole run {prof['run_ms']:.3f} ms ({100 * prof['discrepancy']:+.1f}%), profiled whole run "
             f"{prof['timed_run_ms']:.3f} ms; minima: sum of per-call {prof['sum_min_ms']:.3f} ms, real run "
             f"{prof['run_min_ms']:.3f} ms, profiled run {prof['timed_run_min_ms']:.3f} ms. Compute-bound conv "
             f"calls (>= {COMPUTE_BOUND_MACS} MACs per output): {len(cb)}, "
             + (f"{100 * summary['compute_bound_share']:.0f}% of the time, "
                f"{summary['compute_bound_percent_of_peak']:.1f}% of peak overall (FLOP-weighted), lowest "
                f"{summary['compute_bound_min_percent']:.1f}%." if cb else "none."), "",
             markdown_table(["call", "kernel", "op", "shapes", "median us", "% time", "GFLOP/s", "% peak",
                             "compute-bound"], table), ""]
    return lines, summary


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", default="", help="comma-separated MODEL_SET names (default: all available)")
    ap.add_argument("--corpus", action="store_true",
                    help="the real-models section instead: the wheels' models + the generated corpus "
                         "(benchmarks/corpus.py), 1 thread, with the geometric mean ratio")
    ap.add_argument("--runs", type=int, default=50, help="timed runs per engine (default 50)")
    ap.add_argument("--warmup", type=int, default=10, help="untimed warm-up rounds (default 10)")
    ap.add_argument("--threads", default="1,2", help="comma-separated thread counts (default 1,2)")
    ap.add_argument("--profile", nargs="?", const=",".join(DEFAULT_PROFILE), default="",
                    help="per-layer profile of these models (default with no value: resnet8,mobilenet_v2_224)")
    ap.add_argument("--peak", choices=["fma", "sgemm"], default="fma", help="the measured peak (default fma)")
    ap.add_argument("--timeout", type=int, default=1800, help="seconds per worker process")
    ap.add_argument("--out", default=None, help="results folder (default benchmarks/results)")
    ap.add_argument("--name", default=NAME, help="results file stem")
    ap.add_argument("--ootb", nargs="?", const="default", default="",
                    help="add the out-of-the-box table (cnnjit default vs onnxruntime default, cnnjit 1/2/4 "
                         "threads, interleaved in one process per model) for these comma-separated models "
                         "(MODEL_SET names or path@input=1x3x416x416; default with no value: mobilenet_v2_224, "
                         "resnet8 and the ddddocr detector if installed)")
    ap.add_argument("--ootb-only", action="store_true", help="only the out-of-the-box table")
    ap.add_argument("--ootb-procs", action="store_true",
                    help="with --ootb: also the out-of-the-box table with each engine in its own process "
                         "(alternating blocks of runs; <name>_ootb_procs.{json,md}), besides the one-process table")
    ap.add_argument("--block", type=int, default=5,
                    help="--ootb-procs: rounds of single calls per process turn (the single-call columns; default 5)")
    ap.add_argument("--block-calls", type=int, default=5,
                    help="--ootb-procs: timed calls per turn, after one call timed apart (default 5)")
    ap.add_argument("--settle", type=float, default=0.05,
                    help="--ootb-procs: seconds between blocks, for the other engine's pool to go idle")
    ap.add_argument("--worker-engine", help=argparse.SUPPRESS)
    ap.add_argument("--worker-ootb", help=argparse.SUPPRESS)
    ap.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--worker-threads", type=int, default=1, help=argparse.SUPPRESS)
    ap.add_argument("--worker-model", help=argparse.SUPPRESS)
    ap.add_argument("--worker-engines", default="cnnjit,onnxruntime", help=argparse.SUPPRESS)
    ap.add_argument("--worker-out", help=argparse.SUPPRESS)
    ap.add_argument("--worker-profile", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.runs < 1 or args.warmup < 0 or args.block < 1 or args.block_calls < 1 or args.settle < 0:
        ap.error("--runs, --block and --block-calls must be >= 1, --warmup and --settle >= 0")

    if args.worker and args.worker_ootb and args.worker_engine:
        return ootb_serve(args.worker_ootb, args.worker_engine, args.warmup)
    if args.worker and args.worker_ootb:
        res = ootb_worker(args.worker_ootb, args.runs, args.warmup)
        from benchmarks.harness import write_json

        write_json("result", res, args.worker_out, with_machine=False)
        return 0
    if args.worker:
        res = worker(args.worker_model, args.worker_threads, args.worker_engines.split(","), args.runs,
                     args.warmup, args.peak, args.worker_profile)
        from benchmarks.harness import write_json

        write_json("result", res, args.worker_out, with_machine=False)
        return 0

    from benchmarks.corpus import ALL_MODELS as MODEL_SET  # the benchmark set and the corpus
    from benchmarks.corpus import CORPUS
    from benchmarks.harness import bar_chart, machine_info, print_table, write_json, write_markdown
    from benchmarks.models import available_models

    if args.ootb or args.ootb_only:
        specs = (default_ootb_models() if args.ootb in ("", "default")
                 else [x.strip() for x in args.ootb.split(",") if x.strip()])
        ootb_rows = run_ootb(specs, args)
        write_ootb(ootb_rows, args, argv)
        if args.ootb_procs:
            procs_rows = run_ootb_procs(specs, args)
            write_ootb(procs_rows, args, argv, procs=True)
            ootb_rows += procs_rows
        if args.ootb_only:
            return 1 if any("error" in r for r in ootb_rows) else 0

    names = [s.strip() for s in args.models.split(",") if s.strip()] or (
        list(CORPUS) if args.corpus else available_models())
    unknown = [n for n in names if n not in MODEL_SET]
    if unknown:
        ap.error(f"unknown model(s) {unknown}; known: {', '.join(MODEL_SET)}")
    for n in [n for n in names if not MODEL_SET[n].available()]:
        print(f"skipping {n}: {MODEL_SET[n].path} not found", file=sys.stderr)
    names = [n for n in names if MODEL_SET[n].available()]
    try:
        thread_counts = sorted({int(t) for t in args.threads.split(",") if t.strip()})
    except ValueError:
        ap.error("--threads takes comma-separated integers, e.g. 1,2")
    if not thread_counts or thread_counts[0] < 1:
        ap.error("--threads must list counts >= 1")
    profiled = [s.strip() for s in args.profile.split(",") if s.strip()]
    bad = [p for p in profiled if p not in MODEL_SET]
    if bad:
        ap.error(f"--profile: unknown model(s) {bad}")
    if args.corpus:
        return corpus_section(args, names, profiled)

    results: dict[str, list[dict[str, Any]]] = {}
    peaks: dict[str, float] = {}
    for t in thread_counts:
        rows = []
        for name in names:
            t0 = time.perf_counter()
            prof = t == 1 and name in profiled
            if t == 1:
                parts = [run_worker(name, 1, ["cnnjit", "onnxruntime"], args, prof)]
            else:  # one process per engine: the two thread pools must not share the cores
                parts = [run_worker(name, t, [eng], args, False) for eng in ("cnnjit", "onnxruntime")]
            row = merge(name, t, parts)
            rows.append(row)
            if "error" in row:
                print(f"{t}T {name:22s} ERROR {row['error'][:200]}", flush=True)
            else:
                c, o = row["timing"]["cnnjit"], row["timing"]["onnxruntime"]
                print(f"{t}T {name:22s} cnnjit {c['median_ms']:8.3f} ms  ORT {o['median_ms']:8.3f} ms  ratio "
                      f"{row['ratio']:5.2f}  rel err {row['rel_err']:.1e}  ({time.perf_counter() - t0:.1f}s)",
                      flush=True)
        peaks[str(t)] = add_peak(rows)
        results[str(t)] = rows
    # profiled models not in the timed set still get their profile
    for name in [p for p in profiled if p not in names and MODEL_SET[p].available()]:
        part = run_worker(name, 1, ["cnnjit", "onnxruntime"], args, True)
        results.setdefault("profile_only", []).append(part)

    info = machine_info()
    peak_method = next((r["peak_method"] for rows in results.values() for r in rows if "peak_method" in r), "")
    profiles = {r["model"]: r["profile"] for rows in results.values() for r in rows if "profile" in r}
    prof_lines, prof_summary = [], []
    for name, prof in profiles.items():
        lines, summary = profile_section(name, prof, peaks.get("1") or 0.0)
        prof_lines += lines
        prof_summary.append(summary)
    payload = {"benchmark": NAME, "runs": args.runs, "warmup": args.warmup, "threads": thread_counts,
               "peak_kind": args.peak, "peak_method": peak_method, "peak_gflops": peaks, "rel_tol": REL_TOL,
               "targets_1_thread": TARGETS_1T, "targets_n_threads": TARGETS_NT,
               "compute_bound_macs": COMPUTE_BOUND_MACS, "profile_summary": prof_summary, "machine": info,
               "results": results, "command": " ".join([Path(sys.argv[0]).name, *(argv or sys.argv[1:])])}
    json_path = write_json(args.name, payload, args.out)

    md_parts: list[str] = []
    notes = [
        f"Batch 1. {args.runs} timed runs after {args.warmup} warm-up rounds; median and min per run "
        "(`model.run(None, feeds)` / `session.run(None, feeds)`, perf_counter_ns). onnxruntime "
        f"{info.get('onnxruntime')} with ORT_ENABLE_ALL, sequential execution, inter-op 1 thread.",
        "1 thread: both engines in one process, interleaved; ratio = cnnjit median / ORT median, "
        "measured in the same run. N threads: numba and ORT (intra-op N) each in their own process.",
        f"GFLOP/s = 2 x MACs of Conv/Gemm/MatMul / median; % peak against {peak_method} "
        "(the best of the workers' measurements at that thread count: "
        + ", ".join(f"{t} thread{'s' if int(t) > 1 else ''}: {p:.1f} GFLOP/s" for t, p in peaks.items()) + ").",
        f"target = the issue's bound on the ratio; rel err = max |cnnjit - ORT| / max |ORT output| against the "
        f"nearer of ORT with all graph optimisations and with none (MISMATCH above {REL_TOL:g}); entry = "
        "cnnjit's schedule (numba: one compiled function, python: a Python loop over kernels).",
        "Command: `PYTHONPATH=. python benchmarks/vs_onnxruntime.py " + " ".join(argv or sys.argv[1:]) + "`.",
    ]
    threaded_opt = any(r.get("cnnjit_threads_option") for t, rows in results.items() if t not in ("1", "profile_only")
                       for r in rows)
    if len(thread_counts) > 1 or thread_counts[0] > 1:
        notes.append("cnnjit at N threads: " + ("compiled with `threads=N`." if threaded_opt else
                                                "this cnnjit has no `threads=` option: its N-thread run is "
                                                "its 1-thread code."))
    tables = []
    for t in thread_counts:
        rows = results[str(t)]
        tables.append((t, [table_row(r) for r in rows]))
    first_t, first_rows = tables[0]
    md_path = write_markdown(args.name, HEADERS, first_rows, out_dir=args.out, machine=info, notes=notes,
                             title=f"cnnjit vs onnxruntime, batch 1, {first_t} thread{'s' if first_t > 1 else ''}")
    from benchmarks.harness import markdown_table

    for t, rows in tables[1:]:
        md_parts += [f"## {t} threads (separate processes per engine)", "", markdown_table(HEADERS, rows), ""]
    if prof_summary:
        md_parts += ["## Per-layer profile, 1 thread", "",
                     "Compute-bound conv layers: " + "; ".join(
                         f"{s['model']} {s['compute_bound_percent_of_peak']:.1f}% of peak (FLOP-weighted over "
                         f"{s['compute_bound_calls']} calls, lowest {s['compute_bound_min_percent']:.1f}%)"
                         for s in prof_summary if s["compute_bound_calls"])
                     + f". Details in {args.name}_profile.md.", ""]
        prof_path = Path(md_path).with_name(f"{args.name}_profile.md")
        prof_path.write_text("\n".join([f"# Per-layer profile (1 thread, peak {peak_method})", ""] + prof_lines))
    if md_parts:
        with open(md_path, "a") as f:
            f.write("\n" + "\n".join(md_parts))

    series, errors, annotate = {}, {}, {}
    good_names = [n for n in names if all("error" not in r for t in thread_counts for r in results[str(t)]
                                          if r["model"] == n)]
    for t in thread_counts:
        by_name = {r["model"]: r for r in results[str(t)]}
        for eng, label in (("cnnjit", "cnnjit"), ("onnxruntime", "ORT")):
            key = f"{label} {t}T"
            series[key] = [by_name[n]["timing"][eng]["median_ms"] for n in good_names]
            errors[key] = [(by_name[n]["timing"][eng]["min_ms"], by_name[n]["timing"][eng]["p90_ms"])
                           for n in good_names]
        annotate[f"cnnjit {t}T"] = [f"{by_name[n]['ratio']:.2f}" for n in good_names]
    png_path = None
    if good_names:
        png_path = bar_chart(args.name, good_names, series, errors=errors, annotate=annotate, log=True,
                             ylabel="latency, ms (median; bars min..p90)", out_dir=args.out,
                             title=f"cnnjit vs onnxruntime, batch 1 (labels: cnnjit/ORT), {info['cpu']}")
    for t, rows in tables:
        print_table(HEADERS, rows, title=f"cnnjit vs onnxruntime, {t} thread{'s' if t > 1 else ''}")
    for s in prof_summary:
        if s["compute_bound_calls"]:
            print(f"profile {s['model']}: compute-bound conv calls {s['compute_bound_calls']}, "
                  f"{s['compute_bound_percent_of_peak']:.1f}% of peak (lowest {s['compute_bound_min_percent']:.1f}%), "
                  f"sum of calls {s['sum_ms']:.3f} ms vs run {s['run_ms']:.3f} ms ({100 * s['discrepancy']:+.1f}%)")
    print(f"wrote {json_path}, {md_path}" + (f", {png_path}" if png_path else ""))
    bad = [f"{r['model']}@{t}T" for t, rows in results.items() if t != "profile_only" for r in rows
           if "error" in r or not r["ok"]]
    if bad:
        print(f"errors or mismatches vs onnxruntime: {', '.join(bad)}", file=sys.stderr)
    return 1 if bad else 0


# =========================================================================================================
# real models (issue 17): the wheels' models and the generated corpus, 1 thread
# =========================================================================================================
#: the issue's bounds on cnnjit / onnxruntime for every corpus model, and on their geometric mean
CORPUS_TARGET = 0.9
CORPUS_GEOMEAN_TARGET = 0.8


def geometric_mean(xs: list[float]) -> float | None:
    return math.exp(sum(math.log(x) for x in xs) / len(xs)) if xs else None


def corpus_section(args: argparse.Namespace, names: list[str], profiled: list[str]) -> int:
    """Time each corpus model at 1 thread (cnnjit and onnxruntime interleaved in one worker process),
    write ``<name>_corpus.{json,md}`` with the ratios, their geometric mean against the issue's bounds and
    the per-layer profiles of ``profiled``; 1 if a model fails or mismatches."""
    from benchmarks.corpus import tolerance
    from benchmarks.harness import machine_info, print_table, write_json, write_markdown

    rows = []
    for name in names:
        row = merge(name, 1, [run_worker(name, 1, ["cnnjit", "onnxruntime"], args, name in profiled)])
        if "error" not in row:
            row.update(target=CORPUS_TARGET, met=bool(row["ratio"] <= CORPUS_TARGET),
                       ok=bool(row["rel_err"] <= tolerance(name)))
        rows.append(row)
        print(f"1T {name:28s} " + (f"ERROR {row['error'][:200]}" if "error" in row else
                                   f"ratio {row['ratio']:5.2f}  rel err {row['rel_err']:.1e}"), flush=True)
    peak = add_peak(rows)
    timed = [r for r in rows if "error" not in r]
    gm = geometric_mean([r["ratio"] for r in timed])
    failed = [r["model"] for r in rows if "error" in r]
    stem = f"{args.name}_corpus"
    info = machine_info()
    summary = ("no model ran" if gm is None else f"geometric mean ratio {gm:.3f} over {len(timed)} models (target "
               f"<= {CORPUS_GEOMEAN_TARGET:g}: {'yes' if gm <= CORPUS_GEOMEAN_TARGET else 'NO'})")
    summary += f"; failed: {', '.join(failed)}" if failed else ""
    prof_lines = []
    for r in timed:
        if "profile" in r:
            prof_lines += profile_section(r["model"], r["profile"], peak)[0]
    payload = {"benchmark": f"{NAME}_corpus", "runs": args.runs, "warmup": args.warmup, "peak_gflops": peak,
               "target": CORPUS_TARGET, "geomean_target": CORPUS_GEOMEAN_TARGET, "geomean_ratio": gm,
               "failed": failed, "machine": info, "results": rows,
               "command": " ".join([Path(sys.argv[0]).name, *(sys.argv[1:])])}
    json_path = write_json(stem, payload, args.out)
    table = [table_row(r) for r in rows]
    notes = [summary + ".",
             "Real models: rapidocr-onnxruntime 1.4.4 (PP-OCRv4 det/rec, PP-OCR cls) and ddddocr 1.6.1 (detector, "
             "captcha CRNN), read from the installed wheels; the rest generated by benchmarks/corpus.py.",
             "1 thread, batch 1, cnnjit and onnxruntime (ORT_ENABLE_ALL) interleaved in one process per model; "
             f"{args.runs} timed runs after {args.warmup} warm-up rounds; ratio = cnnjit median / ORT median.",
             f"% peak against the best measured 1-thread peak ({peak:.1f} GFLOP/s); rel err = max |cnnjit - ORT| / "
             "max |ORT output|, against the nearer of ORT with all graph optimisations and with none (MISMATCH above "
             "the corpus tolerance: 1e-3, 1e-2 for quantized models).",
             "Command: `PYTHONPATH=. python benchmarks/vs_onnxruntime.py " + " ".join(sys.argv[1:]) + "`."]
    md_path = write_markdown(stem, HEADERS, table, out_dir=args.out, machine=info, notes=notes,
                             title="cnnjit vs onnxruntime on real models, batch 1, 1 thread")
    if prof_lines:
        with open(md_path, "a") as f:
            f.write("\n" + "\n".join(["# Per-layer profiles, 1 thread", ""] + prof_lines))
    print_table(HEADERS, table, title="cnnjit vs onnxruntime, real models, 1 thread")
    print(summary)
    print(f"wrote {json_path}, {md_path}")
    return 1 if failed or any(not r["ok"] for r in timed) else 0


if __name__ == "__main__":
    raise SystemExit(main())
