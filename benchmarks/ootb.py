"""The out-of-the-box table of ``benchmarks/vs_onnxruntime.py --ootb`` (issue 18): per model one child
process (this machine's default thread counts) timing, interleaved, onnxruntime's default session against
``cnnjit.compile(model)``'s default (every usable core) and cnnjit compiled with 1, 2 and 4 threads.
The child is ``vs_onnxruntime.py --worker --worker-ootb SPEC``, which calls ``ootb_worker``."""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

#: the script whose ``--worker`` mode runs ``ootb_worker``
SCRIPT = Path(__file__).resolve().with_name("vs_onnxruntime.py")

#: the "out of the box" models: MODEL_SET names, or ``path@input=1x3x416x416`` (the ddddocr detector)
DDDDOCR_DET = "ddddocr/common_det.onnx"
#: the issue's targets: cnnjit default / ORT default
TARGETS_OOTB = {"mobilenet_v2_224": 0.75}
TARGET_OOTB_OTHER = 1.0
OOTB_THREADS = (1, 2, 4)


def default_ootb_models() -> list[str]:
    import importlib.util

    out = ["mobilenet_v2_224", "resnet8"]
    spec = importlib.util.find_spec("ddddocr")
    if spec is not None and spec.origin:
        det = Path(spec.origin).parent / Path(DDDDOCR_DET).name
        if det.is_file():
            out.append(f"{det}@images=1x3x416x416")
    return out


def ootb_label(spec: str) -> str:
    return Path(spec.split("@")[0]).name if "@" in spec else spec


def _ootb_model(spec: str):
    """(model, feeds) for a MODEL_SET or corpus name (``benchmarks/corpus.py``) or
    ``path@name=d0xd1x...[;name2=...]`` (seeded normal inputs)."""
    import numpy as np
    import onnx

    from benchmarks.corpus import load  # the benchmark set and the real-model corpus

    if "@" not in spec:
        return load(spec)
    path, shapes = spec.split("@", 1)
    rng = np.random.default_rng(0)
    feeds = {}
    for item in shapes.split(";"):
        name, dims = item.split("=")
        feeds[name] = rng.standard_normal([int(d) for d in dims.split("x")]).astype(np.float32)
    return onnx.load(path), feeds


def _engines(spec: str, which: str) -> tuple[dict[str, Any], dict[str, Any]]:
    """(metadata, {label: zero-argument call}) for ``spec``: onnxruntime's default session (``which`` "ort"
    or "all") and cnnjit's default and 1, 2, 4 threads ("cnnjit" or "all"), each run once; the cnnjit
    metadata holds their outputs' error against onnxruntime at 1 thread and whether they agree bit for bit."""
    import numpy as np
    import onnxruntime as ort

    import cnnjit
    from benchmarks.harness import ort_session
    from benchmarks.models import output_scale
    from cnnjit.runtime.cpus import default_threads

    def max_rel_err(got: list, ref: list) -> float:  # (benchmarks.fused_vs_unfused pins 1 thread on import)
        return max(float(np.max(np.abs(g.astype(np.float64) - r))) for g, r in zip(got, ref)) / output_scale(ref)

    model, feeds = _ootb_model(spec)
    shapes = {k: tuple(v.shape) for k, v in feeds.items()}
    out: dict[str, Any] = {"model": ootb_label(spec), "spec": spec, "default_threads": default_threads(),
                           "ort_version": ort.__version__, "compile_s": {}, "parallel_layers": {}}
    fns: dict[str, Any] = {}
    if which in ("ort", "all"):
        sess = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])  # its defaults
        fns["ORT default"] = lambda: sess.run(None, feeds)
    if which in ("cnnjit", "all"):
        ref = ort_session(model, threads=1).run(None, feeds)
        models: dict[str, Any] = {}
        for t in (None, *OOTB_THREADS):
            key = "default" if t is None else f"{t}T"
            t0 = time.perf_counter()
            models[key] = cnnjit.compile(model, input_shapes=shapes, threads=t)
            models[key].run(None, feeds)
            out["compile_s"][key] = round(time.perf_counter() - t0, 2)
            meta = models[key]._default_spec().program.meta
            out["parallel_layers"][key] = meta.get("parallel_layers", 0)
            out.setdefault("entry", {})[key] = meta.get("entry")
        got = {k: m.run(None, feeds) for k, m in models.items()}
        out["rel_err"] = max(max_rel_err(g, ref) for g in got.values())
        out["bit_identical_across_threads"] = all(
            all(np.array_equal(a, b) for a, b in zip(g, got["1T"])) for g in got.values())
        for k, m in models.items():
            fns[f"cnnjit {k}"] = (lambda m=m: m.run(None, feeds))
    return out, fns


def ootb_worker(spec: str, runs: int, warmup: int) -> dict[str, Any]:
    """cnnjit's default (``threads=None``) against onnxruntime's default session, and cnnjit compiled with
    1, 2 and 4 threads, all timed interleaved in this one process."""
    from benchmarks.harness import measure

    out, fns = _engines(spec, "all")
    out["timing"] = measure(fns, runs=runs, warmup=warmup)
    return out


#: a served engine's lines on stdout start with this (libraries may print there too)
MARK = "@@ootb "
#: a block's first call (after the pause between turns) is reported under its label with this suffix
FIRST = " @first"
#: what a served engine process (``serve``) is running now: "warmup", "first" (a turn's call apart), "block" (a
#: turn's timed calls) or "single" (rounds of single calls); read by a served process's calls that log
#: themselves (``batch.py --trace-calls``)
PHASE = {"kind": "warmup"}


def ootb_serve(spec: str, engine: str, warmup: int) -> int:
    """A child of ``run_ootb_procs``: one engine's calls (``engine`` "ort" or "cnnjit", see ``_engines``)
    served to ``alternate``."""
    meta, fns = _engines(spec, engine)
    return serve(meta, fns, warmup)


def serve(meta: dict[str, Any], fns: dict[str, Any], warmup: int, stats: Any = None) -> int:
    """A served engine process: ``fns`` (label -> zero-argument call) warmed up, ``{"ready": meta, "names":
    labels}`` written, then per JSON line read from stdin one request, its times (ns) written back as one
    JSON line: ``{"rounds": N}`` runs N rounds of single calls (each call once per round, in a seeded random
    order); ``{"block": NAME, "calls": K}`` one call of NAME, then K timed calls of it (a turn; the first
    call's time is reported apart, as ``NAME + FIRST``: what a caller that runs the model now and then sees);
    ``{"stats": 1}`` writes ``stats()`` (a JSON-able dict, ``{}`` without it; see ``ask_stats``); ``{}`` ends."""
    import gc
    import random

    PHASE["kind"] = "warmup"
    for _ in range(warmup):
        for f in fns.values():
            f()
    print(MARK + json.dumps({"ready": meta, "names": list(fns)}), flush=True)
    rng = random.Random(0)
    names = list(fns)
    for line in sys.stdin:
        req = json.loads(line)
        if not req:
            break
        if "stats" in req:
            print(MARK + json.dumps(stats() if stats is not None else {}), flush=True)
            continue
        gc.disable()
        if "block" in req:
            f = fns[req["block"]]
            PHASE["kind"] = "first"
            t0 = time.perf_counter_ns()
            f()  # apart: the previous turn's spinning threads (another process's, or this team) settle
            times: dict[str, list[int]] = {req["block"] + FIRST: [time.perf_counter_ns() - t0], req["block"]: []}
            PHASE["kind"] = "block"
            for _ in range(int(req["calls"])):
                t0 = time.perf_counter_ns()
                f()
                times[req["block"]].append(time.perf_counter_ns() - t0)
        else:
            times = {k: [] for k in names}
            PHASE["kind"] = "single"
            for _ in range(int(req["rounds"])):
                rng.shuffle(names)
                for k in names:
                    t0 = time.perf_counter_ns()
                    fns[k]()
                    times[k].append(time.perf_counter_ns() - t0)
        gc.enable()
        print(MARK + json.dumps(times), flush=True)
    return 0


def _reply(proc: subprocess.Popen) -> dict[str, Any]:
    """The next line of ours a served engine writes (``MARK``); EOFError when it exits first."""
    for line in proc.stdout:
        if line.startswith(MARK):
            return json.loads(line[len(MARK):])
    raise EOFError(f"engine process exited with {proc.wait()}")


def _ask(proc: subprocess.Popen, req: dict[str, Any], into: dict[str, list[int]]) -> None:
    """Send one request to a served engine and add the times it replies to ``into``."""
    proc.stdin.write(json.dumps(req) + "\n")
    proc.stdin.flush()
    for k, v in _reply(proc).items():
        into.setdefault(k, []).extend(v)


def ask_stats(proc: subprocess.Popen) -> dict[str, Any]:
    """A served engine's ``stats()`` (``serve``): what it counted about its own calls."""
    proc.stdin.write(json.dumps({"stats": 1}) + "\n")
    proc.stdin.flush()
    return _reply(proc)


def served(cmds: dict[str, list[str]], errs: Any) -> dict[str, subprocess.Popen]:
    """Start one served engine process (``serve``) per command, with this checkout on PYTHONPATH and no
    ``CNNJIT_NUM_THREADS`` (the default means the default); their stderr to ``errs``."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(Path(__file__).resolve().parents[1]), env.get("PYTHONPATH", "")])
    env.pop("CNNJIT_NUM_THREADS", None)
    return {eng: subprocess.Popen(cmd, env=env, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=errs,
                                  text=True) for eng, cmd in cmds.items()}


def stop(procs: dict[str, subprocess.Popen]) -> None:
    """End served engine processes (``{}`` on stdin; killed after 60 s)."""
    for p in procs.values():
        try:
            p.stdin.write("{}\n")
            p.stdin.close()
        except OSError:
            pass
        try:
            p.wait(timeout=60)
        except subprocess.TimeoutExpired:
            p.kill()


def alternate(procs: dict[str, subprocess.Popen], args: argparse.Namespace, rng: Any) -> dict[str, Any]:
    """Time served engine processes against each other; returns their ready metadata (``ready``: engine ->
    meta) and three timings (``timing``, ``timing_first``, ``timing_single``: label -> ``summarize``):

    * blocks (``timing``): each round, every label of every process gets a turn in a random order, one
      call apart then ``args.block_calls`` timed calls, ``args.settle`` seconds between turns and then
      until both processes are idle (``harness.quiesce``); so a call
      never follows the other process's call (whose thread pool spins after it returns) nor another
      label's team, except for the call apart;
    * first calls (``timing_first``): that call apart, the first after the pause (caches, predictors and
      sleeping threads cold: what a caller sees that runs the model now and then);
    * single calls (``timing_single``: ``args.block`` rounds per process turn, the labels of a process
      interleaved call by call): what alternating calls cost, the other label's spinning threads included.

    Until each has ``args.runs`` rounds. Only the process that runs is busy (the idle one waits on stdin)."""
    from benchmarks.harness import quiesce, summarize

    def settle() -> None:  # (onnxruntime's pool spins for tens of ms after a call: longer than a fixed settle)
        time.sleep(args.settle)
        quiesce([p.pid for p in procs.values()])

    ready = {eng: _reply(p) for eng, p in procs.items()}
    turns = [(eng, name) for eng in procs for name in ready[eng]["names"]]
    single: dict[str, list[int]] = {}
    block: dict[str, list[int]] = {}
    done = 0
    while done < args.runs:
        n = min(args.block, args.runs - done)
        for eng in rng.sample(list(procs), len(procs)):
            _ask(procs[eng], {"rounds": n}, single)
            settle()
        for _ in range(n):
            for eng, name in rng.sample(turns, len(turns)):
                _ask(procs[eng], {"block": name, "calls": args.block_calls}, block)
                settle()
        done += n
    return {"ready": {eng: r["ready"] for eng, r in ready.items()},
            "timing": {k: summarize(v) for k, v in block.items() if not k.endswith(FIRST)},
            "timing_first": {k[:-len(FIRST)]: summarize(v) for k, v in block.items() if k.endswith(FIRST)},
            "timing_single": {k: summarize(v) for k, v in single.items()}}


def run_ootb_procs(specs: list[str], args: argparse.Namespace) -> list[dict[str, Any]]:
    """The out-of-the-box table with each engine in its own process (``ootb_serve``): per model an
    onnxruntime process and a cnnjit process, started together and timed by ``alternate`` (blocks of calls
    per turn, and single calls)."""
    import random

    rows = []
    rng = random.Random(0)
    for spec in specs:
        t0 = time.perf_counter()
        with tempfile.TemporaryFile("w+") as errs:
            procs: dict[str, subprocess.Popen] = {}
            try:
                procs = served({eng: [sys.executable, str(SCRIPT), "--worker", "--worker-ootb", spec,
                                      "--worker-engine", eng, "--worker-threads", str(len(os.sched_getaffinity(0))),
                                      "--warmup", str(args.warmup)] for eng in ("ort", "cnnjit")}, errs)
                res = alternate(procs, args, rng)
                row = {**res["ready"]["cnnjit"], "mode": "process per engine", "timing": res["timing"],
                       "timing_first": res["timing_first"], "timing_single": res["timing_single"],
                       "block_calls": args.block_calls}
            except (EOFError, OSError, ValueError) as e:
                errs.seek(0)
                tail = errs.read().strip().splitlines()[-3:]
                rows.append({"model": ootb_label(spec), "error": f"{e}: " + " | ".join(tail)})
                continue
            finally:
                stop(procs)
        rows.append(row)
        _progress("OOTB/procs", row, t0)
    return rows


def _progress(tag: str, row: dict[str, Any], t0: float) -> None:
    t = {k: v["median_ms"] for k, v in row["timing"].items()}
    print(f"{tag} {row['model']:22s} ORT default {t['ORT default']:8.3f} ms  cnnjit default "
          f"{t['cnnjit default']:8.3f} ms  1T {t['cnnjit 1T']:8.3f}  2T {t['cnnjit 2T']:8.3f}  "
          f"4T {t['cnnjit 4T']:8.3f}  ({time.perf_counter() - t0:.1f}s)", flush=True)


def ootb_table(rows: list[dict[str, Any]], procs: bool = False) -> tuple[list[str], list[list[Any]]]:
    """The out-of-the-box table: default/default ratio against its target, and the thread scaling
    (``procs``: from blocks of calls, with the single-call ratios as two more columns)."""
    headers = ["model", "threads", "ORT default ms", "cnnjit default ms", "default ratio", "target",
               "1T ms", "2T ms", "2T/1T", "speed-up 1T/2T", "4T/2T", "bit-identical", "rel err"]
    if procs:
        headers += ["default ratio, single calls", "speed-up 1T/2T, single calls", "default ratio, first call"]
    table = []
    for r in rows:
        if "error" in r:
            table.append([r["model"], "ERROR", r["error"][:100]] + [None] * (len(headers) - 3))
            continue
        t = {k: v["median_ms"] for k, v in r["timing"].items()}
        ratio = t["cnnjit default"] / t["ORT default"]
        target = TARGETS_OOTB.get(r["model"], TARGET_OOTB_OTHER)
        r["ratio_default"], r["target_default"] = ratio, target
        table.append([r["model"], r["default_threads"], t["ORT default"], t["cnnjit default"], ratio,
                      f"<= {target:g} " + ("yes" if ratio <= target else "NO"), t["cnnjit 1T"], t["cnnjit 2T"],
                      t["cnnjit 2T"] / t["cnnjit 1T"], t["cnnjit 1T"] / t["cnnjit 2T"],
                      t["cnnjit 4T"] / t["cnnjit 2T"], "yes" if r["bit_identical_across_threads"] else "NO",
                      r["rel_err"]])
        if procs:
            s = {k: v["median_ms"] for k, v in r["timing_single"].items()}
            f = {k: v["median_ms"] for k, v in r.get("timing_first", {}).items()}
            table[-1] += [s["cnnjit default"] / s["ORT default"], s["cnnjit 1T"] / s["cnnjit 2T"],
                          f["cnnjit default"] / f["ORT default"] if f else None]
    return headers, table


def write_ootb(rows: list[dict[str, Any]], args: argparse.Namespace, argv: list[str] | None,
               procs: bool = False) -> None:
    """``<name>_ootb.{json,md}`` (``procs``: ``<name>_ootb_procs``, the table of ``run_ootb_procs``) and the
    table on stdout."""
    from benchmarks.harness import machine_info, print_table, write_json, write_markdown

    headers, table = ootb_table(rows, procs)
    info = machine_info()
    name = f"{args.name}_ootb" + ("_procs" if procs else "")
    command = "PYTHONPATH=. python benchmarks/vs_onnxruntime.py " + " ".join(argv or sys.argv[1:])
    write_json(name, {"benchmark": name, "runs": args.runs, "warmup": args.warmup, "machine": info,
                      "results": rows, "command": command}, args.out)
    load = os.getloadavg()
    how = (f"Each engine in its own process (`--ootb-procs`): per model an onnxruntime process and a cnnjit process. "
           f"Main columns: blocks; each round every configuration of either process has a turn, in random order, "
           f"of one call apart then {getattr(args, 'block_calls', 0)} timed calls, "
           f"{getattr(args, 'settle', 0):g} s between turns, so no timed call follows another configuration's "
           "call while its threads (onnxruntime's pool, or cnnjit's team) still spin; 'first call': that call "
           "apart, the first after the pause (what a caller sees that runs the model now and then). The two "
           "'single calls' "
           f"columns: the processes told in turn to run {getattr(args, 'block', 0)} rounds, a process's "
           "configurations interleaved call by call, so a cnnjit call can follow another configuration's "
           "spinning team; both from the same run, medians over every timed call. " if procs else "")
    notes = [
        how + f"Batch 1. Each model in its own process: onnxruntime {rows[0].get('ort_version', '') if rows else ''} "
        "with its defaults (`InferenceSession(model)`: every core, ORT_ENABLE_ALL), cnnjit with its default "
        "(`cnnjit.compile(model)`: threads = the CPUs this process may use) and compiled with 1, 2 and 4 "
        f"threads; all five timed interleaved in one run ({args.runs} runs after {args.warmup} warm-up "
        "rounds, random order per round), medians.",
        "default ratio = cnnjit default / ORT default; 2T/1T > 1 means 2 threads are slower; 4T/2T: 4 threads "
        "on a machine with fewer cores (oversubscribed); bit-identical: every thread count gives the 1-thread "
        "output bit for bit; rel err = max |cnnjit - ORT 1 thread| / max |ORT output| over all of them.",
        f"Load average when written: {load[0]:.1f} / {load[1]:.1f} / {load[2]:.1f} on "
        f"{len(os.sched_getaffinity(0))} usable CPUs: other processes on the machine take cores from the "
        "2-thread runs (and from ORT's pool) first, so multi-thread timings on a shared machine are pessimistic.",
        f"Command: `{command}`.",
    ]
    title = "Out of the box: cnnjit default vs onnxruntime default, batch 1" + (
        " (each engine in its own process)" if procs else "")
    write_markdown(name, headers, table, out_dir=args.out, machine=info, notes=notes, title=title)
    print_table(headers, table, title=title)


def run_ootb(specs: list[str], args: argparse.Namespace) -> list[dict[str, Any]]:
    """One child process per model (its thread counts left at the machine's defaults)."""
    rows = []
    for spec in specs:
        t0 = time.perf_counter()
        with tempfile.TemporaryDirectory(prefix="cnnjit-ootb-") as tmp:
            cmd = [sys.executable, str(SCRIPT), "--worker", "--worker-ootb", spec,
                   "--worker-threads", str(len(os.sched_getaffinity(0))), "--worker-out", tmp,
                   "--runs", str(args.runs), "--warmup", str(args.warmup)]
            env = dict(os.environ)
            env["PYTHONPATH"] = os.pathsep.join([str(Path(__file__).resolve().parents[1]), env.get("PYTHONPATH", "")])
            env.pop("CNNJIT_NUM_THREADS", None)  # the default means the default
            r = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=args.timeout)
            res = Path(tmp) / "result.json"
            if r.returncode != 0 or not res.is_file():
                tail = (r.stderr or r.stdout).strip().splitlines()[-3:]
                rows.append({"model": ootb_label(spec), "error": f"worker exit {r.returncode}: " + " | ".join(tail)})
                continue
            row = json.loads(res.read_text())
        rows.append(row)
        _progress("OOTB", row, t0)
    return rows
