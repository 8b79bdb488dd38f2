"""``cnnjit inspect``: one row per IR node after the passes, or the IR after one pass (``--after``)."""

from __future__ import annotations

import argparse
from typing import Any

from .common import EXIT_OK, UsageError, check_model_path, check_pass_name, trace_model
from .flags import compile_options, model_argument
from .output import (
    clean,
    clean_block,
    console_width,
    emit_json,
    nbytes,
    print_table,
    shapes_text,
    short_op,
    si,
    table_width,
)

HELP = "per-layer table: ops, shapes, params, FLOPs, fusion, kernels, memory"
EPILOG = """example:
  cnnjit inspect model.onnx
  cnnjit inspect model.onnx --after fuse_epilogue
  cnnjit inspect model.onnx --unfused --json

One row per IR node after the passes: op (with fused ops), shapes, parameters, FLOPs, the kernel it
runs in, and the model's nodes fused into it; then the arena size against the sum of intermediates.
--after PASS prints the IR after that pass instead (an unknown name lists the passes)."""


def parents() -> list[argparse.ArgumentParser]:
    return [model_argument(), compile_options()]


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--after", metavar="PASS", help="print the IR after this pass instead")


def main(args: argparse.Namespace) -> int:
    from cnnjit.inspect_model import call_flops, layer_rows

    check_model_path(args.model)
    if args.after:
        check_pass_name(args.after, "--after")
    t = trace_model(args)
    if args.after:
        return _print_ir_after(args, t)
    rows = layer_rows(t)
    p = t.program
    n_calls = sum(len(r["calls"]) for r in rows)
    totals = {
        "nodes_before_fusion": len(t.before.nodes), "nodes": len(t.graph.nodes), "kernel_calls": n_calls,
        "distinct_kernels": len(p.kernel_sources), "params": sum(r["params"] for r in rows),
        "flops": sum(r["flops"] for r in rows), "arena_bytes": p.arena_bytes,
        "intermediate_bytes": p.intermediate_bytes,
    }
    if args.json:
        node_index = {n.id: i for i, n in enumerate(t.graph.nodes)}
        schedule = [{"call": i, "kernel": c.kernel, "variant": c.variant, "op": c.op, "parts": c.parts,
                     "layer": node_index.get(c.node.id) if c.node is not None else None, "flops": f, "note": c.note}
                    for i, (c, f) in enumerate(zip(p.calls, call_flops(t)))]
        emit_json({"model": args.model, "name": t.name, "shapes": t.shapes, "notes": t.notes,
                   "fused": not args.unfused, "pipeline": t.pipeline, "layers": rows, "calls": schedule,
                   "totals": totals})
        return EXIT_OK
    columns = ["#", "op", "name", "inputs", "outputs", "params", "FLOPs", "kernel", "variant", "fused from"]
    table_rows = _table_rows(rows, short=False)
    if table_width(columns, table_rows) > console_width():  # narrow terminal: BatchNormalization -> BN...
        table_rows = _table_rows(rows, short=True)
    saved = 1 - p.arena_bytes / p.intermediate_bytes if p.intermediate_bytes else 0.0
    footer = [
        f"{totals['nodes_before_fusion']} nodes before fusion -> {totals['nodes']} after; {n_calls} kernel calls "
        f"of {totals['distinct_kernels']} distinct kernels; {totals['params']:,} parameters; "
        f"{si(totals['flops'], 'FLOP')} per run",
        f"arena {nbytes(p.arena_bytes)} (reused memory, inputs and outputs included) vs "
        f"{nbytes(p.intermediate_bytes)} for every intermediate in its own buffer"
        + (f" ({saved:.0%} saved)" if saved > 0 else ""),
        "passes: " + ", ".join(t.pipeline),
    ]
    print_table(f"{clean(t.name, 40)} ({shapes_text(t.shapes)}){' unfused' if args.unfused else ''}",
                columns, table_rows, right=("#", "params", "FLOPs"), footer=footer, free=("name", "fused from"),
                drop=("fused from", "inputs"))
    return EXIT_OK


def _table_rows(rows: list[dict[str, Any]], short: bool) -> list[list[str]]:
    """The table's cells for ``layer_rows``; ``short``: abbreviated op names (``short_op``), for narrow
    terminals."""
    op = short_op if short else str
    out = []
    for r in rows:
        fused = ", ".join(op(f["op"]) + (f" {clean(f['name'], 24)!r}" if f["name"] else "") for f in r["fused_from"])
        out.append([str(r["index"]), op(r["op"]), clean(r["name"], 28), " ".join(r["inputs"]), " ".join(r["outputs"]),
                    f"{r['params']:,}", si(r["flops"]), r["kernel"], r["variant"], fused])
    return out


def _print_ir_after(args: argparse.Namespace, t: Any) -> int:
    """``--after PASS``: the IR after each run of that pass (the pipeline runs some passes twice)."""
    dumps = [ir for name, ir in t.after if name == args.after]
    if not dumps:
        raise UsageError(f"pass {args.after!r} does not run in this pipeline"
                         + (" (--unfused drops the fusion passes)" if args.unfused else ""),
                         "passes that run: " + ", ".join(t.pipeline))
    if args.json:
        emit_json({"model": args.model, "pass": args.after, "shapes": t.shapes,
                   "notes": t.notes, "ir": dumps})
        return EXIT_OK
    for i, ir in enumerate(dumps):
        which = f" (run {i + 1} of {len(dumps)})" if len(dumps) > 1 else ""
        print(f"// ---- IR after pass {args.after}{which} ----")
        print(clean_block(ir))
    return EXIT_OK
