"""``cnnjit profile``: time every kernel call of the compiled schedule and list them slowest first."""

from __future__ import annotations

import argparse

from .common import EXIT_OK, CliError, UsageError, check_model_path, model_shapes
from .flags import DeprecatedAlias, at_least, compile_options, model_argument, runs_option
from .output import KEEP, Progress, clean, emit_json, note, print_table, si

HELP = "time every kernel call of the compiled schedule, slowest first"
EPILOG = """example:
  cnnjit profile model.onnx --runs 50 --rows 10
  cnnjit profile model.onnx --trace trace.json     (open it in https://ui.perfetto.dev or chrome://tracing)

Times every kernel call of the compiled schedule as it really runs and lists the calls slowest first,
with their share of the total, GFLOP/s and % of the machine's measured peak (1 thread); "memory L2" in the
bound column marks calls bound by memory: reading each input from the level its reuse distance fits in (L1,
L2, L3, else DRAM; a weight was last read a whole run ago), writing the outputs at the write bandwidth of the
level the call's bytes fit in (a store reads its line first) and one load latency take longer than their
FLOPs at the peak; the level named is the farthest one read, the percentage that least time over the call's
time (100%: at the bandwidths). With the numba
entry (models of 4-80 calls) the schedule is compiled once more with a cycle-counter read between calls,
so kernels stay inlined as in a normal run; the footer compares the sum of the calls with a whole run.
--uninlined calls each kernel from Python instead (the Python entry). --peak sgemm uses numpy's matmul
as the peak instead of a generated vector FMA loop. (--rows was called --top before; that still works.)
A second table sums the calls per op type (a fused group counts as its own type, e.g. Conv+Relu).
--trace writes one profiled run (the one of median total) as a Chrome trace: an event per kernel call."""


def parents() -> list[argparse.ArgumentParser]:
    return [model_argument(), compile_options(), runs_option(20, "timed runs of the schedule")]


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--rows", type=at_least(0), default=20, metavar="N",
                   help="rows to show, slowest first (default 20; 0: all)")
    p.add_argument("--top", type=at_least(0), dest="rows", action=DeprecatedAlias, new="--rows", help=argparse.SUPPRESS)
    p.add_argument("--uninlined", action="store_true",
                   help="time each kernel called from Python (Python entry) instead of inside the compiled schedule")
    p.add_argument("--peak", choices=["fma", "sgemm"], default="fma",
                   help="the peak for '%% peak': measured vector FMA loop (default) or numpy sgemm")
    p.add_argument("--seed", type=at_least(0), default=0, help="random input seed (default 0)")
    p.add_argument("--trace", metavar="OUT.json",
                   help="write one profiled run as a Chrome trace (chrome://tracing, Perfetto): an event per call")


def main(args: argparse.Namespace) -> int:
    from cnnjit.profile import bound_label, flops_note, profile_model, slow_summary, write_chrome_trace

    if args.runs < 1:
        raise UsageError("--runs must be >= 1")
    check_model_path(args.model)
    with Progress(enabled=not args.json) as prog, model_shapes(args) as shapes:
        prog.update("profiling", 0, 1)
        doc = profile_model(args.model, shapes, repeat=args.runs,
                            mode="calls" if args.uninlined else "auto", peak=args.peak, seed=args.seed,
                            fuse=not args.unfused, threads=args.threads)
        prog.update("profiling", 1, 1)
    doc["model"] = args.model
    rows = sorted(doc["calls"], key=lambda r: -r["median_ms"])
    doc["calls"] = rows
    doc["total_ms"] = doc["sum_ms"]
    doc["trace_file"] = args.trace
    if args.trace:
        try:
            write_chrome_trace(doc, args.trace)
        except OSError as e:
            raise CliError(f"cannot write {args.trace!r}: {e.strerror or e}") from None
    if args.json:
        emit_json(doc)
        return EXIT_OK
    for n in doc["notes"]:
        note(n)
    shown = rows[: args.rows] if args.rows else rows
    table = [[str(r["call"]), r["kernel"], r["variant"], r["op"], clean(r["note"].split(" ", 1)[-1], 48),
              f"{r['median_ms']:.4f}",
              f"{r['percent']:.1f}", f"{r['gflops']:.2f}" if r["flops"] else "-",
              f"{r['percent_of_peak']:.1f}" if r["flops"] and r["percent_of_peak"] is not None else "-",
              bound_label(r)]
             for r in shown]
    total = doc["sum_ms"] / 1e3 or 1e-12
    how = ("timed inside the compiled schedule (numba entry, kernels inlined; cycle counter between calls)"
           if doc["mode"] == "timed" else
           f"each kernel called from Python ({doc['entry']} entry"
           + (", un-inlined: slower than the real numba entry)" if args.uninlined else ")"))
    footer = [f"sum of calls {doc['sum_ms']:.3f} ms (median per call over {args.runs} runs), whole run "
              f"{doc['run_ms']:.3f} ms (real {doc['entry']} entry, median): {100 * doc['discrepancy']:+.1f}% "
              f"(minima: {doc['sum_min_ms']:.3f} vs {doc['run_min_ms']:.3f} ms); "
              f"{si(doc['flops'], 'FLOP')} -> {doc['flops'] / total / 1e9:.2f} GFLOP/s overall",
              how,
              f"peak {doc['peak_gflops']:.1f} GFLOP/s = {doc['peak_method']}",
              flops_note(),
              "read/write bandwidth (1 thread, streams over half of each cache; DRAM: "
              f"{doc['bandwidth_method'].split(' of ')[-1].split(',')[0]}) and read balance: "
              + ", ".join(f"{lv['level']}{'' if lv['bytes'] is None else ' ' + _kib(lv['bytes'])} "
                          f"{lv['gbs']:.0f}/{lv.get('write_gbs', 0):.0f} GB/s {lv.get('latency_ns', 0):.0f} ns "
                          f"{lv['balance']:.1f} FLOP/B"
                          for lv in doc["levels"]),
              "'memory L2 85%' marks a call whose reads (each operand at the bandwidth of the level its reuse "
              "distance fits in: a weight, last read a run ago, from the level holding the whole run) and writes "
              "(at the level its bytes fit in), plus one load latency, take longer than its FLOPs at the peak "
              "(memory-bound; L2: the farthest level it reads), and the share of its time they take (100%: at "
              "full bandwidth)", *slow_summary(doc["calls"], doc["sum_ms"])]
    if doc["above_peak"]:
        footer.append(f"above the peak: {sum(doc['above_peak'].values())} calls ("
                      + ", ".join(f"{n} {v}" for v, n in doc["above_peak"].items())
                      + "): effective GFLOP/s = the direct convolution's FLOPs / time (these variants "
                      "compute fewer multiplies)")
    if len(shown) < len(rows):
        footer.insert(0, f"({len(rows) - len(shown)} faster calls not shown; --rows 0 shows all)")
    print_table(f"{clean(doc['name'], 40)}: time per kernel call, slowest first",
                ["call", "kernel", "variant", "op", "shapes", "median ms", "%", "GFLOP/s", "% peak", "bound"], table,
                right=("call", "median ms", "%", "GFLOP/s", "% peak"), footer=footer, free=("op", "shapes"))
    print()
    by_op = [[r["op"], str(r["calls"]), f"{r['total_ms']:.4f}", f"{r['percent']:.1f}",
              f"{r['gflops']:.2f}" if r["flops"] else "-"] for r in doc["by_op"]]
    foot = [f"wrote{KEEP}{args.trace}: run {doc['trace_run'] + 1} of {args.runs} ({doc['trace_run_ms']:.3f} ms, the "
            "median), one event per call"] if args.trace else []
    print_table("time per op type, slowest first", ["op type", "calls", "total ms", "%", "GFLOP/s"], by_op,
                right=("calls", "total ms", "%", "GFLOP/s"), footer=foot)
    return EXIT_OK


def _kib(n: int) -> str:
    """A cache size as people write it: 32 KiB, 512 KiB, 32 MiB."""
    return f"{n >> 20} MiB" if n >= 1 << 20 and not n % (1 << 20) else f"{n >> 10} KiB"
