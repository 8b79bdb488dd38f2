"""``cnnjit bench``: time a model, optionally against onnxruntime, on the same inputs (files or seeded random)."""

from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import Any

from cnnjit.compiler.frontend.loader import load_model
from cnnjit.compiler.stages import input_specs

from .common import EXIT_OK, CliError, UsageError, compile_model, parse_shapes, random_inputs
from .flags import at_least, compile_options, model_argument, output_option, precision_option, runs_option
from .output import (
    KEEP,
    Progress,
    clean,
    emit_json,
    json_text,
    markdown_table,
    ms,
    nbytes,
    print_table,
    shapes_text,
    si,
    to_ms,
)
from .run import _load_input_file

HELP = "time a model (optionally against onnxruntime)"
EPILOG = """example:
  cnnjit bench model.onnx --vs onnxruntime --runs 100 -o bench.png
  cnnjit bench model.onnx --vs onnxruntime -o bench.md     (.png chart, .json results, .md table)
  cnnjit bench model.onnx --seconds 10 --input input_1=x.npy --json

Compiles, warms up, then times interleaved runs of each engine on the same inputs: .npy files given with
--input (NAME=FILE.npy, or FILE.npz holding arrays named like the inputs; their shapes set the compiled
shapes), seeded random data for the others. --seconds S times rounds until S seconds have passed instead
of --runs. Reports p50 (median), p90 and p99 latency, throughput (inferences per second; x batch = samples
per second), the process's peak resident memory and the compiled schedule's arena.
--threads N compiles cnnjit with threads=N, runs numba with N threads and gives onnxruntime N intra-op
threads."""


def parents() -> list[argparse.ArgumentParser]:
    return [model_argument(), compile_options(), precision_option(), runs_option(50, "timed runs per engine"),
            output_option("FILE", "also write the results to FILE, its format from its extension: .png a bar "
                          "chart (needs matplotlib), .json the --json document, .md a Markdown table")]


#: ``-o FILE``'s formats by extension
OUTPUT_FORMATS = (".png", ".json", ".md")


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--vs", action="append", choices=["onnxruntime"], help="also time this engine")
    p.add_argument("--warmup", type=at_least(0), default=5, help="untimed warm-up runs (default 5)")
    p.add_argument("--png", dest="output", metavar="OUT.png", help="the same as -o OUT.png")
    p.add_argument("--seed", type=at_least(0), default=0, help="random input seed (default 0)")
    p.add_argument("--seconds", type=float, metavar="S",
                   help="time-bounded: timed rounds until S seconds have passed (replaces --runs)")
    p.add_argument("--input", action="append", metavar="NAME=FILE.npy",
                   help="an input from a .npy file, as `cnnjit run` takes it (repeat); random data for the others")


def main(args: argparse.Namespace) -> int:
    from cnnjit.bench import bar_chart, cpu_name, measure, ort_session, peak_rss_bytes
    from cnnjit.inspect_model import node_flops

    if args.runs < 1 or args.warmup < 0 or args.threads < 1:
        raise UsageError("--runs and --threads must be >= 1, --warmup >= 0")
    if args.seconds is not None and not args.seconds > 0:
        raise UsageError(f"--seconds must be > 0, got {args.seconds:g}")
    fmt = _output_format(args.output)
    if fmt == ".png":
        _require_matplotlib()
    shapes = parse_shapes(args.shape)
    given = _input_files(args.model, args.input)
    for name, a in given.items():
        if shapes.setdefault(name, tuple(a.shape)) != tuple(a.shape):
            raise UsageError(f"--shape {name}={','.join(map(str, shapes[name]))} does not match the shape "
                             f"{tuple(a.shape)} of its --input")
    engines = list(dict.fromkeys(args.vs or []))
    with Progress(enabled=not args.json) as prog:
        prog.update("compiling", 0, 1)
        model, resolved, notes, compile_s = compile_model(args.model, shapes, fuse=not args.unfused,
                                                          threads=args.threads, quiet=args.json,
                                                          precision=args.precision)
        feeds = {**random_inputs(model, {k: v for k, v in resolved.items() if k not in given}, args.seed), **given}
        feeds = {s.name: feeds[s.name] for s in model.inputs}
        spec = model.specialization(resolved)
        t0 = time.perf_counter()
        ref = model.run(None, feeds)  # the first run: compile_model compiled the kernels for these shapes
        first_s = time.perf_counter() - t0
        prog.update("compiling", 1, 1)
        fns: dict[str, Any] = {"cnnjit": lambda: model.run(None, feeds)}
        diffs: dict[str, float] = {}
        if "onnxruntime" in engines:
            try:
                import onnxruntime  # noqa: F401
            except ImportError:
                raise CliError("--vs onnxruntime needs onnxruntime", "pip install onnxruntime") from None
            prog.update("onnxruntime", 0, 1)
            sess = ort_session(model.origin[0] if model.origin else Path(args.model).read_bytes(), args.threads)
            theirs = sess.run(None, feeds)
            diffs["onnxruntime"] = max((float(abs(a.astype("float64") - b.astype("float64")).max())
                                        for a, b in zip(ref, theirs) if a.size), default=0.0)
            fns["onnxruntime"] = lambda: sess.run(None, feeds)
            prog.update("onnxruntime", 1, 1)
        stats = measure(fns, runs=args.runs, warmup=args.warmup, progress=prog.update, seconds=args.seconds)
    memory = {"peak_rss_bytes": peak_rss_bytes(), "arena_bytes": spec.program.arena_bytes}
    flops = sum(node_flops(n) for n in spec.graph.nodes)
    first = resolved[model.inputs[0].name] if model.inputs else ()
    batch = int(first[0]) if first else 1
    base = stats["cnnjit"]["median_ms"]
    for s in stats.values():
        s["ratio"] = s["median_ms"] / base if base else None
        s["gflops"] = flops / (s["median_ms"] * 1e6) if s["median_ms"] else None
        s["samples_per_s"] = s["throughput_per_s"] * batch if s["throughput_per_s"] else None
    runs = stats["cnnjit"]["runs"]
    threads = f"{args.threads} thread{'s' if args.threads > 1 else ''}"
    png = None
    if fmt == ".png":
        try:
            title = (f"{Path(args.model).name}, input {shapes_text(resolved)}"
                     + (" (unfused)" if args.unfused else "")
                     + f"\n{cpu_name()}, {threads}, {stats['cnnjit']['runs']} runs after {args.warmup} warm-up")
            png = str(bar_chart(stats, args.output, title))
        except OSError as e:
            raise CliError(f"cannot write {args.output!r}: {e.strerror or e}") from None
    doc = {"model": args.model, "shapes": resolved, "batch": batch, "notes": notes, "runs": runs,
           "time_limit_ms": args.seconds * 1e3 if args.seconds else None, "warmup": args.warmup,
           "threads": args.threads, "fused": not args.unfused,
           "inputs": {k: "file" if k in given else "random" for k in feeds}, "flops": flops,
           "compile_ms": compile_s * 1e3, "first_run_ms": first_s * 1e3,
           "results": {k: to_ms(v) for k, v in stats.items()}, "memory": memory,
           "max_abs_diff": diffs, "png": png, "output": args.output}
    vs = len(stats) > 1  # the ratio column only when there is something to compare
    rows = [[name, f"{s['median_ms']:.3f}", f"{s['p90_ms']:.3f}", f"{s['p99_ms']:.3f}", f"{s['min_ms']:.3f}"]
            + ([f"{s['ratio']:.2f}x" if s["ratio"] else "-"] if vs else [])
            + [f"{s['gflops']:.2f}" if s["gflops"] else "-",
               f"{s['throughput_per_s']:.1f}" if s["throughput_per_s"] else "-"]
            for name, s in stats.items()]
    rss = memory["peak_rss_bytes"]
    how = f"in {args.seconds:g} s" if args.seconds else "interleaved"
    footer = [f"{si(flops, 'FLOP')} per run (2 x MACs of Conv/Gemm/MatMul, + elementwise); {runs} runs {how} "
              f"after {args.warmup} warm-up" + ("; ratio = median / cnnjit median" if vs else ""),
              f"batch {batch}: {stats['cnnjit']['samples_per_s']:.1f} samples/s (cnnjit); inf/s = runs per second",
              f"memory: peak RSS {nbytes(rss) if rss is not None else '-'} (whole process), arena "
              f"{nbytes(memory['arena_bytes'])} (the compiled schedule's scratch)",
              f"compile {ms(compile_s)} ms (load, passes, kernels), first run {ms(first_s)} ms"]
    if given:
        footer.append("inputs from files: " + ", ".join(clean(k, 40) for k in given))
    footer += [f"max |cnnjit - {k}| = {v:.3g}" for k, v in diffs.items()]
    if args.output:
        footer.append(f"wrote{KEEP}{args.output}")
    cols = ["engine", "median ms", "p90 ms", "p99 ms", "min ms"] + (["ratio"] if vs else []) + ["GFLOP/s", "inf/s"]
    title = (f"{Path(args.model).name} ({shapes_text(resolved)}), batch {batch}, {threads}"
             + (" unfused" if args.unfused else ""))
    if fmt in (".json", ".md"):
        text = (json_text(doc) if fmt == ".json"
                else markdown_table(title, cols, rows, right=cols[1:], footer=footer[:-1]))  # less "wrote"
        try:
            Path(args.output).write_text(text + "\n", encoding="utf-8")
        except OSError as e:
            raise CliError(f"cannot write {args.output!r}: {e.strerror or e}") from None
    if args.json:
        emit_json(doc)
        return EXIT_OK
    print_table(title, cols, rows, right=cols[1:], footer=footer)
    return EXIT_OK


def _output_format(output: str | None) -> str | None:
    """``-o FILE``'s format (its extension, lowercased), checked before any work; None without ``-o``."""
    if output is None:
        return None
    ext = Path(output).suffix.lower()
    if ext not in OUTPUT_FORMATS:
        raise UsageError(f"-o {output}: cannot tell the format from the extension {ext or '(none)'!r}",
                         "name the file .png (bar chart), .json (results) or .md (Markdown table)")
    return ext


def _input_files(model: str, items: list[str] | None) -> dict[str, Any]:
    """``--input`` items (``NAME=FILE.npy``, ``FILE.npz``, or a bare ``FILE.npy`` for a one-input model) as
    arrays by input name, read as ``cnnjit run`` reads them."""
    given: dict[str, Any] = {}
    for item in items or []:
        name, sep, fname = item.rpartition("=")
        given.update(_load_input_file(name if sep else "", fname if sep else item))
    if "" in given:  # a bare FILE.npy: the model's only input (read the model's inputs to name it)
        specs = input_specs(load_model(model))
        if len(specs) != 1:
            raise UsageError(f"the model has {len(specs)} inputs: name the one a bare .npy file is for",
                             "pass --input NAME=FILE.npy; the model's inputs are "
                             + ", ".join(s.describe() for s in specs))
        given[specs[0].name] = given.pop("")
    return given


def _require_matplotlib() -> None:
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        raise CliError("a .png chart (-o FILE.png, --png) needs matplotlib, which is not installed",
                       "pip install matplotlib  (or: pip install -e \".[bench]\")") from None
