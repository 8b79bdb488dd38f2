"""Winograd F(4x4, 3x3) against the direct convolution, per layer: effective GFLOP/s (the direct
convolution's FLOPs over the time) of one Conv (+ReLU) kernel call with ``winograd_f4`` forced and with the
variant the table chooses without it, interleaved in one process (best and median of ``--runs``, thread CPU
time, so that other processes on a shared machine count less).

    python benchmarks/winograd.py                            # the default layers (ResNet-8, ddddocr detector)
    python benchmarks/winograd.py --layer 96,96,52,52 --runs 30 --width 16

A layer is ``C,M,H,W`` (3x3, stride 1, pads 1). The crossover in ``winograd.winograd_applies`` comes from
this table.
"""

from __future__ import annotations

import argparse
import statistics
import time

from harness import single_thread

single_thread()

import numpy as np  # noqa: E402
from conv_tiles import conv_model  # noqa: E402

from cnnjit.compiler.codegen.kernel import VARIANTS  # noqa: E402
from cnnjit.compiler.codegen.kernels import winograd  # noqa: E402
from cnnjit.compiler.stages import CompileOptions, specialize  # noqa: E402

#: 3x3 stride-1 layers of ResNet-8 (CIFAR, 32x32) and of the ddddocr detector (416x416): C, M, H, W
LAYERS = [(12, 24, 208, 208), (16, 16, 32, 32), (32, 32, 16, 16), (64, 64, 8, 8), (24, 24, 208, 208),
          (48, 48, 104, 104), (96, 96, 52, 52), (192, 192, 13, 13)]


def build(layer: tuple[int, int, int, int], variant: str | None, width: int | None):
    """The layer compiled with ``variant`` forced on its Conv (None: the best other variant)."""
    model, flops = conv_model(*layer, 3, 1)
    opts = CompileOptions(vector_width=width) if width else CompileOptions()
    target = opts.host_target()
    if variant is None:
        spec = specialize(model, {"x": (1, layer[0], *layer[2:])}, opts, target=target)
        node = next(c.node for c in spec.program.calls if c.op == "Conv")
        variant = next(v.name for v in VARIANTS["Conv"] if v.name != "winograd_f4" and v.applies(node, target))
    opts = CompileOptions(vector_width=width, variants={"Conv": variant}) if width else \
        CompileOptions(variants={"Conv": variant})
    spec = specialize(model, {"x": (1, layer[0], *layer[2:])}, opts, target=opts.host_target())
    return spec, flops, variant


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--layer", action="append", help="C,M,H,W (repeatable)")
    ap.add_argument("--runs", type=int, default=20)
    ap.add_argument("--width", type=int, default=None, help="vector width (default: the host's)")
    args = ap.parse_args()
    # every layer, below the crossover too (it is measured here)
    winograd.MIN_CHANNELS, winograd.MIN_RATIO = 0, 0.0
    layers = [tuple(int(v) for v in s.split(",")) for s in args.layer] if args.layer else LAYERS
    print("layer | direct variant: best (median) GFLOP/s | winograd_f4 | speedup (best)")
    for layer in layers:
        specs = [build(layer, None, args.width), build(layer, "winograd_f4", args.width)]
        feeds = {"x": np.random.default_rng(1).standard_normal((1, layer[0], *layer[2:])).astype(np.float32)}
        times: list[list[float]] = [[] for _ in specs]
        for spec, _, _ in specs:
            spec.run(feeds)
        for _ in range(args.runs):
            for (spec, _, _), ts in zip(specs, times):
                t0 = time.thread_time_ns()
                spec.run(feeds)
                ts.append((time.thread_time_ns() - t0) * 1e-9)
        cols = [f"{v}: {f / min(ts) / 1e9:5.1f} ({f / statistics.median(ts) / 1e9:5.1f})"
                for (_, f, v), ts in zip(specs, times)]
        print(layer, " | ".join(cols), f"| {min(times[0]) / min(times[1]):.2f}x", flush=True)


if __name__ == "__main__":
    main()
