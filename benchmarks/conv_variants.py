"""Conv kernel variants against each other, per layer shape: GFLOP/s of one Conv+SiLU kernel call for every
variant that applies to the layer (each forced with ``variants=``), interleaved in one process, and which
variant the compiler picks by default. This is where the variant table's crossovers are measured.

    python benchmarks/conv_variants.py                            # the default layers (ddddocr detector, ResNet)
    python benchmarks/conv_variants.py --layer 96,192,52,52,3,2 --runs 40 --vector-width 8

A layer is ``C,M,H,W,K,stride[,group]`` (pads ``K // 2``). Printed per layer: ``variant best (median)``
GFLOP/s over ``--runs`` interleaved runs (thread CPU time, so that other processes on a shared machine count
less), the default choice marked ``*``.
"""

from __future__ import annotations

import argparse
import dataclasses
import statistics
import time

from harness import single_thread

single_thread()

import numpy as np  # noqa: E402
from conv_tiles import conv_model  # noqa: E402

from cnnjit.compiler.codegen.kernel import VARIANTS  # noqa: E402
from cnnjit.compiler.stages import CompileOptions, specialize  # noqa: E402

#: C, M, H, W, K, stride: the ddddocr detector's (416x416) dense layers, then ResNet-8 / MLPerf ResNet's
LAYERS = [(24, 48, 208, 208, 3, 2), (48, 96, 104, 104, 3, 2), (96, 192, 52, 52, 3, 2), (96, 96, 52, 52, 3, 2),
          (192, 384, 26, 26, 3, 2), (192, 192, 26, 26, 3, 2), (192, 192, 13, 13, 3, 1), (96, 96, 13, 13, 3, 1),
          (768, 384, 13, 13, 1, 1), (384, 192, 13, 13, 1, 1), (192, 192, 26, 26, 1, 1),
          (16, 32, 32, 32, 3, 2), (32, 64, 16, 16, 3, 2), (64, 64, 8, 8, 3, 1), (32, 32, 16, 16, 3, 1)]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--layer", action="append", help="C,M,H,W,K,stride[,group] (repeatable)")
    ap.add_argument("--runs", type=int, default=20)
    ap.add_argument("--vector-width", type=int, default=0, help="compile for this vector width (default: host)")
    args = ap.parse_args()
    layers = [tuple(int(v) for v in s.split(",")) for s in args.layer] if args.layer else LAYERS
    opts = CompileOptions(vector_width=args.vector_width) if args.vector_width else CompileOptions()
    target = opts.host_target()
    print(f"vector width {target.vector_width}, {target.vector_registers} registers")
    for layer in layers:
        model, flops = conv_model(*layer, silu=True)
        shape = {"x": (1, layer[0], *layer[2:4])}
        default = specialize(model, shape, opts, target=target)
        chosen = default.program.calls[0].variant
        specs = {}
        for v in VARIANTS["Conv"]:
            forced = dataclasses.replace(target, variants=(("Conv", v.name),))
            try:
                specs[v.name] = specialize(model, shape, opts, target=forced)
            except Exception:  # noqa: BLE001 - the variant does not apply to this layer
                continue
        feeds = {"x": np.random.default_rng(1).standard_normal(shape["x"]).astype(np.float32)}
        times: dict[str, list[float]] = {k: [] for k in specs}
        for spec in specs.values():
            spec.run(feeds)
        for _ in range(args.runs):
            for name, spec in specs.items():
                t0 = time.thread_time_ns()
                spec.run(feeds)
                times[name].append((time.thread_time_ns() - t0) * 1e-9)
        row = [f"{'*' if k == chosen else ''}{k} {flops / min(ts) / 1e9:5.1f} "
               f"({flops / statistics.median(ts) / 1e9:4.1f})" for k, ts in times.items()]
        print(layer, " | ".join(row), flush=True)


if __name__ == "__main__":
    main()
