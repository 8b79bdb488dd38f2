"""Large-kernel convolutions before and after ``im2col_bands``: GFLOP/s and % of the FMA peak of one Conv (+ ReLU,
fused) per layer shape, the table without ``im2col_bands`` (``cblock``, ``simd_conv``... as before it) against
``im2col_bands`` (forced, so shapes the default table leaves to others are measured too), interleaved in one
process.

    python benchmarks/large_kernel.py --runs 30            # writes results/large_kernel.{json,md}
    python benchmarks/large_kernel.py --layer 64,128,288,22,9x12,1,1,1,0 --no-write

Each layer is compiled both ways (1 thread) and its schedule (the one Conv call: ``Program.run`` on its own
buffers) timed ``--runs`` times in a fresh random order per round (``harness.measure``, thread CPU time);
printed and written: median and best GFLOP/s of each, % of the FMA peak, the variant each ran, whether the
default table now takes ``im2col_bands``, and the speed-up of the medians and of the minima. Outputs are
checked against each other.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from benchmarks.harness import single_thread  # noqa: E402 - stdlib only

single_thread()

import numpy as np  # noqa: E402
from conv_variants import layer_model, parse_layer  # noqa: E402
from stem_conv import program_call  # noqa: E402

import cnnjit  # noqa: E402
from benchmarks.harness import measure, variants_without, write_json, write_markdown  # noqa: E402

#: (where, layer ``C,M,H,W,KHxKW,stride,group,dilation,pads``): large kernels of real models, and a few more
#: shapes of the kind (wider rows, more channels, a stride, padding) so the rule is not one model's
LAYERS = [
    ("madmom_chords_cnn", "64,128,288,22,9x12,1,1,1,0"),
    ("madmom_notes_cnn (30 ch)", "30,30,198,142,1x35,1,1,1,0"),
    ("notes-like, 64 ch", "64,64,100,142,1x35,1,1,1,0"),
    ("chords-like, wide rows", "64,128,64,96,9x12,1,1,1,0"),
    ("7x7 64 -> 64, 56x56", "64,64,56,56,7,1"),
    ("7x7 32 -> 96, 28x28", "32,96,28,28,7,1"),
    ("7x3 48 -> 48, 128x62 (swift-like)", "48,48,128,62,7x3,1"),
    ("3x39 16 -> 64, 172x264 (basic-pitch-like)", "16,64,172,264,3x39,1"),
    ("9x9 stride 2 32 -> 64, 96x96", "32,64,96,96,9,2"),
    ("5x5 64 -> 64, 40x40 (below MIN_TAPS)", "64,64,40,40,5,1"),
]

#: the command line
OPTIONS = {"--layer": {"action": "append", "help": "C,M,H,W,KHxKW,stride[,...] (repeatable; default: LAYERS)"},
           "--runs": {"type": int, "default": 30}, "--warmup": {"type": int, "default": 3},
           "--no-write": {"action": "store_true", "help": "print only"}}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    for flag, options in OPTIONS.items():
        ap.add_argument(flag, **options)
    args = ap.parse_args()
    from cnnjit.compiler.codegen.kernel import Target, choose
    from cnnjit.profile import measured_peak

    layers = [("(given)", s) for s in args.layer] if args.layer else LAYERS
    peak, how = measured_peak("fma")
    rows, doc = [], []
    for where, spec in layers:
        ly = parse_layer(spec)
        model, flops = layer_model(ly, "relu")
        shape = {"x": (1, ly.c, ly.h, ly.w)}
        x = np.random.default_rng(1).standard_normal(shape["x"]).astype(np.float32)
        after = cnnjit.compile(model, threads=1, input_shapes=shape, variants={"Conv": "im2col_bands"})
        node = next(n for n in after.ir.nodes if n.op == "Conv")
        default = choose(node, Target(vector_width=8, vector_registers=16)).name == "im2col_bands"
        with variants_without([("Conv", "im2col_bands")]):
            before = cnnjit.compile(model, threads=1, input_shapes=shape)
        run_a, var_a = program_call(after, x)
        run_b, var_b = program_call(before, x)
        ya, yb = run_a(), run_b()
        diff = float(np.max(np.abs(ya - yb)) / max(1e-30, float(np.max(np.abs(yb)))))
        t = measure({"before": run_b, "after": run_a}, runs=args.runs, warmup=args.warmup,
                    clock=time.thread_time_ns)
        g = {k: {"median": flops / (v["median_ms"] * 1e6), "best": flops / (v["min_ms"] * 1e6)} for k, v in t.items()}
        row = [where, str(ly), "/".join(var_b), round(g["before"]["median"], 1),
               round(100 * g["before"]["median"] / peak), "/".join(var_a), round(g["after"]["median"], 1),
               round(100 * g["after"]["median"] / peak), round(g["after"]["best"], 1),
               "yes" if default else "no", round(t["before"]["median_ms"] / t["after"]["median_ms"], 2),
               round(t["before"]["min_ms"] / t["after"]["min_ms"], 2)]
        rows.append(row)
        doc.append({"where": where, "layer": str(ly), "mflop": flops / 1e6, "before_variant": var_b,
                    "after_variant": var_a, "default_takes_it": default, "times": t, "gflops": g,
                    "max_rel_diff": diff})
        print(" | ".join(str(c) for c in row), f"| rel diff {diff:.1e}", flush=True)
    headers = ["layer", "C,M,H,W,K,s,g,d,p", "before", "GFLOP/s", "% peak", "after", "GFLOP/s", "% peak",
               "best GFLOP/s", "default table", "speed-up (median)", "speed-up (best)"]
    if args.no_write:
        return
    import os

    load = os.getloadavg()
    write_json("large_kernel", {"runs": args.runs, "peak_gflops": peak, "peak_method": how, "loadavg": load,
                                "layers": doc})
    write_markdown("large_kernel", headers, rows, title="Large-kernel convolutions: before and after im2col_bands "
                   "(1 thread)",
                   notes=[f"`python benchmarks/large_kernel.py --runs {args.runs}`: one Conv + ReLU per row, its "
                          "schedule timed alone (thread CPU time), before (the table without `im2col_bands`) and "
                          "after (`im2col_bands` forced) interleaved in random order; GFLOP/s of the medians "
                          f"unless 'best'; 'default table': whether `im2col_bands` is chosen unforced; FMA peak "
                          f"{peak:.1f} GFLOP/s ({how}); load average {load[0]:.1f} / {load[1]:.1f} / "
                          f"{load[2]:.1f} (2 logical CPUs shared)"])


if __name__ == "__main__":
    main()
