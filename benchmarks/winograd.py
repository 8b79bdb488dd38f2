"""Winograd F(4x4, 3x3) against the direct convolution, per layer: effective GFLOP/s (the direct
convolution's FLOPs over the time) of one Conv (+ReLU) kernel call with ``winograd_f4`` forced and with the
variant the table chooses without it, interleaved in one process (best and median of ``--runs``, thread CPU
time, so that other processes on a shared machine count less).

    python benchmarks/winograd.py                            # the default layers (ResNet-8, ddddocr detector)
    python benchmarks/winograd.py --layer 96,96,52,52 --runs 30 --width 16
    python benchmarks/winograd.py --short --runs 15         # the crossover's layers: short, narrow, deep maps
    python benchmarks/winograd.py --channels --runs 40      # winograd_f4_channels' crossover (small maps)

A layer is ``C,M,H,W`` (3x3, stride 1, pads 1). The crossover in ``winograd.winograd_applies`` comes from
this table.

    python benchmarks/winograd.py --models                   # whole models: with / without it, onnxruntime

``--models``: ResNet-8 (generated), MLPerf Tiny's ResNet and the ddddocr detector, one thread, compiled with
the variant table as it is and with ``winograd_f4`` never chosen, against onnxruntime (all graph
optimisations), interleaved (thread CPU time; onnxruntime's one intra-op thread is the caller's).
"""

from __future__ import annotations

import argparse
import os
import random
import statistics
import sys
import time
from pathlib import Path

from harness import ort_session, single_thread, write_json, write_markdown

single_thread()

import numpy as np  # noqa: E402
import onnx  # noqa: E402

REPO_DIR = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_DIR))
from conv_tiles import conv_model  # noqa: E402

from benchmarks.corpus import CORPUS, load  # noqa: E402
from benchmarks.models import resnet8  # noqa: E402
from cnnjit.compiler.codegen.kernel import VARIANTS  # noqa: E402
from cnnjit.compiler.codegen.kernels import winograd  # noqa: E402
from cnnjit.compiler.stages import CompileOptions, specialize  # noqa: E402

#: 3x3 stride-1 layers of ResNet-8 (CIFAR, 32x32) and of the ddddocr detector (416x416): C, M, H, W
LAYERS = [(12, 24, 208, 208), (16, 16, 32, 32), (32, 32, 16, 16), (64, 64, 8, 8), (24, 24, 208, 208),
          (48, 48, 104, 104), (96, 96, 52, 52), (192, 192, 13, 13)]
#: the layers of ``winograd.winograd_applies``'s crossover (``slot_ratio``): maps of 2-4 rows (text recognizers'
#: 3x3s at 2x40 .. 4x40), small squares (7x7 .. 16x16), and larger ones above it
SHORT = [(480, 60, 2, 40), (128, 128, 2, 40), (256, 256, 2, 20), (64, 64, 2, 80), (128, 128, 3, 40),
         (96, 96, 3, 80), (480, 60, 4, 40), (32, 32, 8, 8), (64, 64, 8, 8), (128, 128, 7, 7), (256, 256, 7, 7),
         (512, 512, 7, 7), (96, 96, 14, 14), (128, 128, 14, 14), (192, 192, 13, 13), (64, 64, 16, 16),
         (16, 16, 32, 32), (8, 8, 32, 32), (48, 48, 12, 80), (96, 96, 52, 52), (61, 61, 38, 16), (122, 122, 19, 8),
         (64, 257, 13, 13), (64, 257, 36, 36)]
#: the layers of ``winograd.channels_applies``' crossover: maps of a few tiles (4x4 .. 16x16), 16-128 channels
CHANNELS = [(16, 16, 8, 8), (32, 32, 8, 8), (64, 64, 8, 8), (128, 128, 8, 8), (64, 64, 4, 4), (64, 64, 7, 7),
            (64, 64, 12, 12), (32, 32, 16, 16), (32, 64, 16, 16), (16, 16, 32, 32)]
#: the thresholds of both Winograd variants, off for a forced one (measured below the crossover too)
THRESHOLDS = {"MIN_CHANNELS": 0, "MIN_RATIO": 0.0, "MIN_CHANNEL_INPUTS": 0, "MIN_CHANNEL_RATIO": 0.0,
              "MAX_CHANNEL_TILE_SHARE": {(0, 0): float("inf")},
              "MAX_CHANNEL_WEIGHT_BYTES": float("inf")}


def build(layer: tuple[int, int, int, int], variant: str | None, width: int | None):
    """The layer compiled with ``variant`` forced on its Conv (None: the best other variant)."""
    model, flops = conv_model(*layer, 3, 1)
    opts = CompileOptions(vector_width=width) if width else CompileOptions()
    target = opts.host_target()
    saved = {k: getattr(winograd, k) for k in THRESHOLDS}
    try:
        if variant is None:  # the table's choice where no Winograd variant applies (cblock defers to them)
            winograd.MIN_RATIO = winograd.MIN_CHANNEL_RATIO = float("inf")
            spec = specialize(model, {"x": (1, layer[0], *layer[2:])}, opts, target=target)
            node = next(c.node for c in spec.program.calls if c.op == "Conv")
            variant = next(v.name for v in VARIANTS["Conv"] if v.applies(node, target))
        else:  # forced, below the crossover too (it is measured here)
            for k, v in THRESHOLDS.items():
                setattr(winograd, k, v)
        opts = CompileOptions(vector_width=width, variants={"Conv": variant}) if width else \
            CompileOptions(variants={"Conv": variant})
        spec = specialize(model, {"x": (1, layer[0], *layer[2:])}, opts, target=opts.host_target())
    finally:
        for k, v in saved.items():
            setattr(winograd, k, v)
    return spec, flops, variant


def model_feeds() -> dict[str, tuple[onnx.ModelProto, dict[str, np.ndarray]]]:
    """The whole models of issue 19's targets and a seeded input for each (the ones present)."""
    rng = np.random.default_rng(0)
    out = {"resnet8": (resnet8(), {"input": rng.standard_normal((1, 3, 32, 32)).astype(np.float32)})}
    mlperf = REPO_DIR.parent / "shared" / "models" / "mlperf-tiny" / "pretrainedResnet.tf2onnx.onnx"
    if mlperf.is_file():
        out["mlperf_resnet"] = (onnx.load(str(mlperf)),
                                {"input_1": rng.standard_normal((1, 32, 32, 3)).astype(np.float32)})
    if CORPUS["ddddocr_det"].available():
        out["ddddocr_det"] = load("ddddocr_det")
    return out


def time_models(runs: int) -> None:
    """Whole models with and without ``winograd_f4``, against onnxruntime (see the module docstring)."""
    print("model | onnxruntime ms | cnnjit without winograd ms (ratio) | cnnjit ms (ratio) | best of runs")
    for name, (proto, feeds) in model_feeds().items():
        shapes = {k: v.shape for k, v in feeds.items()}
        opts = CompileOptions(threads=1)
        with_w = specialize(proto, shapes, opts, target=opts.host_target())
        saved = winograd.MIN_RATIO, winograd.MIN_CHANNEL_RATIO
        winograd.MIN_RATIO = winograd.MIN_CHANNEL_RATIO = float("inf")
        without = specialize(proto, shapes, opts, target=opts.host_target())
        winograd.MIN_RATIO, winograd.MIN_CHANNEL_RATIO = saved
        sess = ort_session(proto)
        fns = [lambda: sess.run(None, feeds), lambda: without.run(feeds), lambda: with_w.run(feeds)]
        times: list[list[float]] = [[] for _ in fns]
        for fn in fns:
            fn()
        for _ in range(runs):
            for fn, ts in zip(fns, times):
                t0 = time.thread_time_ns()
                fn()
                ts.append((time.thread_time_ns() - t0) * 1e-6)
        ort_ms, wo_ms, w_ms = (min(ts) for ts in times)
        n = sum(c.variant.startswith("winograd_f4") for c in with_w.program.calls)
        print(f"{name} | {ort_ms:.3f} | {wo_ms:.3f} ({wo_ms / ort_ms:.2f}) | {w_ms:.3f} ({w_ms / ort_ms:.2f}) "
              f"| {n} winograd layers", flush=True)


def time_specs(specs: list, layer: tuple[int, int, int, int], runs: int) -> list[list[float]]:
    """Seconds of thread CPU time per call of each compiled layer on one seeded input, ``runs`` rounds
    interleaved in random order (after one warm-up call each)."""
    feeds = {"x": np.random.default_rng(1).standard_normal((1, layer[0], *layer[2:])).astype(np.float32)}
    times: list[list[float]] = [[] for _ in specs]
    for spec in specs:
        spec.run(feeds)
    for _ in range(runs):
        for i in random.sample(range(len(specs)), len(specs)):
            t0 = time.thread_time_ns()
            specs[i].run(feeds)
            times[i].append((time.thread_time_ns() - t0) * 1e-9)
    return times


def time_channels(args: argparse.Namespace) -> None:
    """``--channels``: per layer, the table's variant without either Winograd kernel, ``winograd_f4`` and
    ``winograd_f4_channels`` forced, interleaved in random order (thread CPU time); whether the table takes
    ``winograd_f4_channels`` (``winograd.channels_applies``)."""
    layers = [tuple(int(v) for v in s.split(",")) for s in args.layer] if args.layer else CHANNELS
    target = (CompileOptions(vector_width=args.width) if args.width else CompileOptions()).host_target()
    names = ["other", "winograd_f4", "winograd_f4_channels"]
    rows = []
    for layer in layers:
        specs = [build(layer, None, args.width), build(layer, "winograd_f4", args.width),
                 build(layer, "winograd_f4_channels", args.width)]
        node = next(c.node for c in specs[2][0].program.calls if c.op == "Conv")
        times = [[t * 1e6 for t in ts] for ts in time_specs([s for s, _, _ in specs], layer, args.runs)]
        meds = [statistics.median(ts) for ts in times]
        rows.append(["x".join(map(str, layer)), specs[0][2],
                     *(f"{m:.1f} ({min(ts):.1f})" for m, ts in zip(meds, times)),
                     f"{meds[0] / meds[2]:.2f}", f"{meds[1] / meds[2]:.2f}", winograd.channels_applies(node, target)])
        print(" | ".join(map(str, rows[-1])), flush=True)
    load = os.getloadavg()[0]
    cols = ["C x M x H x W", "other variant", "other us median (min)", "winograd_f4 us", "winograd_f4_channels us",
            "other / channels", "winograd_f4 / channels", "table takes channels"]
    write_json("winograd_channels", {"runs": args.runs, "load": load, "columns": cols, "rows": rows}, args.out)
    write_markdown("winograd_channels", cols, rows, title="winograd_f4_channels against winograd_f4 and the "
                   "other variants, per layer, 1 thread", notes=[
                       f"`python benchmarks/winograd.py --channels --runs {args.runs}`: one Conv+Relu per call, "
                       f"thread CPU time, interleaved in random order, load average {load:.1f}; "
                       f"{names[0]}: the table's variant with neither Winograd kernel"], out_dir=args.out)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--layer", action="append", help="C,M,H,W (repeatable)")
    ap.add_argument("--runs", type=int, default=20)
    ap.add_argument("--width", type=int, default=None, help="vector width (default: the host's)")
    ap.add_argument("--models", action="store_true", help="time whole models instead of layers")
    ap.add_argument("--short", action="store_true", help="the crossover's layers (SHORT), JSON + md written")
    ap.add_argument("--channels", action="store_true",
                    help="winograd_f4_channels' crossover layers (CHANNELS) against winograd_f4 and the other "
                         "variants, JSON + md written")
    ap.add_argument("--out", default=None, help="results folder for --short (default benchmarks/results)")
    args = ap.parse_args()
    if args.models:
        time_models(args.runs)
        return
    if args.channels:
        time_channels(args)
        return
    layers = [tuple(int(v) for v in s.split(",")) for s in args.layer] if args.layer else \
        SHORT if args.short else LAYERS
    target = (CompileOptions(vector_width=args.width) if args.width else CompileOptions()).host_target()
    print("layer | direct variant: best (median) GFLOP/s | winograd_f4 | speedup (best) | slot ratio")
    rows, payload = [], []
    for layer in layers:
        specs = [build(layer, None, args.width), build(layer, "winograd_f4", args.width)]
        node = next(c.node for c in specs[1][0].program.calls if c.op == "Conv")
        times = time_specs([s for s, _, _ in specs], layer, args.runs)
        cols = [f"{v}: {f / min(ts) / 1e9:5.1f} ({f / statistics.median(ts) / 1e9:5.1f})"
                for (_, f, v), ts in zip(specs, times)]
        ratio = winograd.slot_ratio(node, target)
        print(layer, " | ".join(cols), f"| {min(times[0]) / min(times[1]):.2f}x | {ratio:.2f}", flush=True)
        rows.append(["x".join(map(str, layer)), specs[0][2], min(times[0]) * 1e6, statistics.median(times[0]) * 1e6,
                     min(times[1]) * 1e6, statistics.median(times[1]) * 1e6, min(times[0]) / min(times[1]),
                     statistics.median(times[0]) / statistics.median(times[1]),
                     round(winograd.multiply_ratio(node, target), 3), round(ratio, 3)])
        payload.append(dict(zip(["layer", "direct", "direct_min_us", "direct_med_us", "winograd_min_us",
                                 "winograd_med_us", "speedup_min", "speedup_med", "multiply_ratio", "slot_ratio"],
                                rows[-1])))
    if args.short:
        load = os.getloadavg()[0]
        write_json("winograd_crossover", {"runs": args.runs, "load": load, "rows": payload}, args.out)
        write_markdown("winograd_crossover", ["C x M x H x W", "direct variant", "direct min us", "med us",
                                              "winograd_f4 min us", "med us", "speed-up min", "speed-up med",
                                              "multiply ratio", "slot ratio"], rows,
                       title="Winograd F(4x4, 3x3) against the direct variant, per layer, 1 thread",
                       notes=[f"`python benchmarks/winograd.py --short --runs {args.runs}`: one Conv+Relu per "
                              "call, thread CPU time, interleaved in random order, load average "
                              f"{load:.1f}; winograd_f4 applies where the slot ratio is >= "
                              f"{winograd.MIN_RATIO} (``winograd.slot_ratio``)"], out_dir=args.out)

if __name__ == "__main__":
    main()
