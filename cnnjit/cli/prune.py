"""``cnnjit prune``: prune a model's Conv/Gemm/MatMul weights (``cnnjit.prune``) and save the pruned model."""

from __future__ import annotations

import argparse
from typing import Any

import numpy as np

from cnnjit.compiler.frontend.loader import input_specs, load_model
from cnnjit.compiler.stages import resolve_shapes
from cnnjit.pruning import PrunedModel, prune

from .common import EXIT_OK, UsageError, check_model_path, did_you_mean, model_shapes, save_model
from .flags import at_least, compile_options, model_argument, output_option
from .output import KEEP, emit_json, print_table, si, warn, wrap

HELP = "prune a model's weights (magnitude, channel or N:M) and save the pruned ONNX model"
EPILOG = """example:
  cnnjit prune mobilenet_v2.onnx --sparsity 0.9 --method magnitude -o mobilenet_v2.pruned.onnx
  cnnjit prune mobilenet_v2.onnx --sparsity 0.5 --method channel -o mnv2.ch50.onnx --json
  cnnjit prune mobilenet_v2.onnx --method 2:4 -o mnv2.24.onnx
  cnnjit prune rec.onnx --sparsity 0.5 --shape x=1,3,48,320 --seed 1 -o rec.pruned.onnx

Prints per layer sparsity, params and FLOPs, and the output deviation from the original on seeded random
inputs (onnxruntime) of the --shape given (symbolic dimensions of inputs without one: 1), with a warning when
the top class changes on most of them. The report runs on onnxruntime (cnnjit does not compile here):
--threads N gives it N intra-op threads (as 'cnnjit bench' does) and --unfused turns its graph
optimizations (fusions) off.
'cnnjit.compile' runs pointwise Conv / Gemm layers whose weights are sparse enough with sparse kernels."""


#: below this argmax agreement with the original, ``prune`` warns that the pruned model classifies differently
AGREEMENT_WARNING = 0.5


def parents() -> list[argparse.ArgumentParser]:
    return [model_argument(), compile_options(),
            output_option("OUT.onnx", "where to write the pruned model", required=True)]


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--sparsity", type=float, metavar="FRACTION", help="fraction of weights / channels to remove")
    p.add_argument("--method", default="magnitude", help="magnitude (default), channel, or N:M such as 2:4")
    p.add_argument("--scope", choices=("layer", "global"), default="layer",
                   help="magnitude threshold per layer (default) or over all layers")
    p.add_argument("--exclude", action="append", metavar="NODE", help="a layer (node name) to keep dense (repeat)")
    p.add_argument("--prune-first-last", action="store_true", help="also prune the first and last layers")
    p.add_argument("--samples", type=at_least(0), default=2, help="random inputs for the deviation report (default 2)")
    p.add_argument("--seed", type=int, default=0, help="seed of the deviation report's random inputs (default 0)")


def main(args: argparse.Namespace) -> int:
    check_model_path(args.model)
    method = args.method
    if method not in ("magnitude", "channel") and ":" not in method:
        raise UsageError(f"--method must be magnitude, channel or an N:M pattern like 2:4, got {method!r}")
    if ":" not in method and args.sparsity is None:
        raise UsageError(f"--method {method} needs --sparsity (a fraction in [0, 1])")
    proto = load_model(args.model)
    _check_exclude(proto, args.exclude or [])
    with model_shapes(args, foreign="onnxruntime") as shapes:  # --shape checked before any work
        try:
            pruned = prune(proto, args.sparsity, method, scope=args.scope,
                           keep_first_last=not args.prune_first_last, exclude=args.exclude or ())
        except ValueError as e:
            raise UsageError(str(e)) from e
        save_model(pruned, args.output)
        dev = (_deviation(proto, pruned, shapes, args.samples, args.seed, args.threads, not args.unfused)
               if args.samples > 0 else None)
    if args.json:
        emit_json({"model": args.model, "output": args.output, "method": pruned.method,
                   "summary": pruned.summary(), "layers": pruned.layers(), "deviation": dev})
    else:
        _print_report(pruned)
        if dev:
            print(wrap(f"deviation vs the original on {dev['samples']} random inputs: max{KEEP}abs{KEEP}diff{KEEP}"
                       f"{dev['max_abs_diff']:.4g}, cosine{KEEP}{dev['cosine']:.4f}, argmax{KEEP}agreement{KEEP}"
                       f"{dev['argmax_agreement']:.0%}"))
        print(f"wrote {args.output}")
    if dev and dev["argmax_agreement"] < AGREEMENT_WARNING:
        warn(f"the pruned model's top class differs from the original's on {1 - dev['argmax_agreement']:.0%} of "
             "the random inputs: prune less (a lower --sparsity), or check it on real data")
    return EXIT_OK


def _check_exclude(proto: Any, exclude: list[str]) -> None:
    """A usage error naming the ``--exclude`` names that are no node of the model, with close matches among
    its node names (``prune`` would silently keep nothing dense)."""
    names = [n.name for n in proto.graph.node if n.name]
    unknown = [x for x in dict.fromkeys(exclude) if x not in set(names)]
    if unknown:
        layers = [n.name for n in proto.graph.node if n.name and n.op_type in ("Conv", "Gemm", "MatMul")]
        raise UsageError(f"--exclude names no node of the model: {', '.join(map(repr, unknown))}"
                         + did_you_mean(unknown, names, quote=True),
                         f"its Conv/Gemm/MatMul nodes ({len(layers)}): " + ", ".join(layers)
                         if layers else "the model has no Conv/Gemm/MatMul node to prune")


def _deviation(proto: Any, pruned: PrunedModel, given: dict[str, tuple[int, ...]], samples: int, seed: int,
               threads: int, fuse: bool) -> dict[str, Any]:
    """``pruned.deviation`` on ``samples`` seeded standard-normal inputs of the shapes ``given`` (symbolic
    dimensions of the other inputs: 1), onnxruntime with ``threads`` intra-op threads and its fusions on
    (``fuse``) or off."""
    import onnxruntime as ort  # optional heavy dependency: only for the deviation report

    ort.set_default_logger_severity(4)  # its errors become our one-line error, not a red log line
    shapes, _notes = resolve_shapes(proto, given)
    rng = np.random.default_rng(seed)
    feeds = [{s.name: rng.standard_normal(shapes[s.name]).astype(s.dtype) for s in input_specs(proto)}
             for _ in range(samples)]
    return pruned.deviation(feeds, threads=threads, optimize=fuse)


def _print_report(pruned: PrunedModel) -> None:
    """Per layer: op, weight shape, sparsity, nonzeros, params and FLOPs (2 x effective MACs), then totals."""
    layers, s = pruned.layers(), pruned.summary()
    rows = [[r["layer"], r["op"], "x".join(map(str, r["shape"])), f"{r['sparsity']:.1%}", f"{r['nonzero']:,}",
             f"{r['params']:,}", si(2 * r["effective_macs"])] for r in layers]
    print_table(f"pruned ({pruned.method}): {len(layers)} Conv/Gemm/MatMul layers",
                ["layer", "op", "weight", "sparsity", "nonzero", "params", "FLOPs"], rows,
                right=("sparsity", "nonzero", "params", "FLOPs"), free=("layer",),
                footer=[f"params {s['params_before']:,} -> {s['params_after']:,} ({s['nonzero_after']:,} nonzero, "
                        f"{s['sparsity']:.1%} sparse); FLOPs {si(2 * s['macs_before'], 'FLOP')} -> "
                        f"{si(2 * s['macs_after'], 'FLOP')}"])
