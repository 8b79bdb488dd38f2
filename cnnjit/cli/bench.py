"""``cnnjit bench``: time a model, optionally against onnxruntime, on the same seeded random inputs."""

from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import Any

from .common import EXIT_OK, CliError, UsageError, compile_model, parse_shapes, random_inputs
from .flags import at_least, compile_options, model_argument, runs_option
from .output import Progress, emit_json, ms, print_table, shapes_text, si

HELP = "time a model (optionally against onnxruntime)"
EPILOG = """example:
  cnnjit bench model.onnx --vs onnxruntime --runs 100 --png bench.png

Compiles, warms up, then times interleaved runs of each engine on the same seeded random inputs.
--threads N compiles cnnjit with threads=N, runs numba with N threads and gives onnxruntime N intra-op
threads."""


def parents() -> list[argparse.ArgumentParser]:
    return [model_argument(), compile_options(), runs_option(50, "timed runs per engine")]


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--vs", action="append", choices=["onnxruntime"], help="also time this engine")
    p.add_argument("--warmup", type=at_least(0), default=5, help="untimed warm-up runs (default 5)")
    p.add_argument("--png", metavar="OUT.png", help="draw a bar chart (needs matplotlib)")
    p.add_argument("--seed", type=at_least(0), default=0, help="random input seed (default 0)")


def main(args: argparse.Namespace) -> int:
    from cnnjit.bench import bar_chart, measure, ort_session
    from cnnjit.inspect_model import node_flops

    if args.runs < 1 or args.warmup < 0 or args.threads < 1:
        raise UsageError("--runs and --threads must be >= 1, --warmup >= 0")
    if args.png:
        _require_matplotlib()
    shapes = parse_shapes(args.shape)
    engines = list(dict.fromkeys(args.vs or []))
    with Progress(enabled=not args.json) as prog:
        prog.update("compiling", 0, 1)
        model, resolved, notes, compile_s = compile_model(args.model, shapes, fuse=not args.unfused,
                                                          threads=args.threads, quiet=args.json)
        feeds = random_inputs(model, resolved, args.seed)
        spec = model.specialization(resolved)
        t0 = time.perf_counter()
        ref = model.run(None, feeds)  # loads/compiles the kernels
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
        stats = measure(fns, runs=args.runs, warmup=args.warmup, progress=prog.update)
    flops = sum(node_flops(n) for n in spec.graph.nodes)
    base = stats["cnnjit"]["median_ms"]
    for s in stats.values():
        s["ratio"] = s["median_ms"] / base if base else None
        s["gflops"] = flops / (s["median_ms"] * 1e6) if s["median_ms"] else None
    threads = f"{args.threads} thread{'s' if args.threads > 1 else ''}"
    png = None
    if args.png:
        try:
            png = str(bar_chart(stats, args.png, f"{Path(args.model).name} ({args.runs} runs, {threads})"))
        except OSError as e:
            raise CliError(f"cannot write {args.png!r}: {e.strerror or e}") from None
    doc = {"model": args.model, "shapes": resolved, "notes": notes, "runs": args.runs, "warmup": args.warmup,
           "threads": args.threads, "fused": not args.unfused, "flops": flops, "compile_s": compile_s,
           "first_run_s": first_s, "results": stats, "max_abs_diff": diffs, "png": png}
    if args.json:
        emit_json(doc)
        return EXIT_OK
    rows = [[name, f"{s['median_ms']:.3f}", f"{s['min_ms']:.3f}", f"{s['p90_ms']:.3f}",
             f"{s['ratio']:.2f}x" if s["ratio"] else "-", f"{s['gflops']:.2f}" if s["gflops"] else "-"]
            for name, s in stats.items()]
    footer = [f"{si(flops, 'FLOP')} per run (2 x MACs of Conv/Gemm/MatMul, + elementwise); {args.runs} interleaved "
              f"runs after {args.warmup} warm-up; ratio = median / cnnjit median",
              f"compile {ms(compile_s)} ms, first run {ms(first_s)} ms (loads kernels)"]
    footer += [f"max |cnnjit - {k}| = {v:.3g}" for k, v in diffs.items()]
    if png:
        footer.append(f"wrote {png}")
    print_table(f"{Path(args.model).name} ({shapes_text(resolved)}), {threads}"
                + (" unfused" if args.unfused else ""),
                ["engine", "median ms", "min ms", "p90 ms", "ratio", "GFLOP/s"], rows,
                right=("median ms", "min ms", "p90 ms", "ratio", "GFLOP/s"), footer=footer)
    return EXIT_OK


def _require_matplotlib() -> None:
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        raise CliError("--png needs matplotlib, which is not installed",
                       "pip install matplotlib  (or: pip install -e \".[bench]\")") from None
