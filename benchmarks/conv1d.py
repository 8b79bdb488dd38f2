"""Wide 1-D convolutions (Conv1D of audio, text and byte models) on ``conv1d_packed`` against the variant the
table chose before it (the table without ``conv1d_packed``) and onnxruntime (1 thread), per layer shape,
interleaved in one process: GFLOP/s best (median) of ``--runs`` runs of one Conv + ReLU kernel call, thread CPU
time (other processes on a shared machine count less). Writes ``results/conv1d.{json,md}``.

    python benchmarks/conv1d.py                                   # the Conv1D grid (C 64-512, K 3-9, L 100-2000)
    python benchmarks/conv1d.py --relax --crossover --runs 30     # the small layers under the variant's bounds
    python benchmarks/conv1d.py --layer 256,512,512,5,0 --runs 40 # C,M,L,K[,pad]: Magika's 256 -> 512

A layer is ``C,M,L,K[,pad]`` on an ``N x C x 1 x L`` map (``1 x K`` kernel, stride 1, ``pad`` columns each side,
default ``K // 2``: "same"), the form ``conv_columns`` gives tf2onnx's ``Kx1`` Conv1D. ``--relax`` lifts
``conv1d_packed``'s size bounds (``MIN_DEPTH``, ``MIN_ROW_TILES``) so that the layers below them can be timed:
that is how they were measured.
"""

from __future__ import annotations

import argparse
import dataclasses
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from harness import single_thread  # noqa: E402 - stdlib only

single_thread()

import numpy as np  # noqa: E402
from conv_variants import Layer, layer_model  # noqa: E402
from harness import machine_info, ort_session, variants_without, write_json, write_markdown  # noqa: E402

from cnnjit.compiler.codegen.kernels import conv1d_packed  # noqa: E402
from cnnjit.compiler.stages import CompileOptions, specialize  # noqa: E402

#: C, M, L, K: Conv1D layers of the sizes audio, text and byte models use (C 64-512, K 3-9, L 100-2000); the
#: last is Magika's 256 -> 512, kernel 5, unpadded at 512 columns
GRID = [(64, 64, 1000, 3), (64, 128, 1000, 9), (128, 128, 500, 3), (128, 256, 100, 5), (256, 256, 2000, 3),
        (256, 256, 128, 3), (512, 512, 200, 3), (512, 256, 300, 7), (384, 384, 128, 9), (256, 512, 512, 5, 0)]
#: small layers about the variant's bounds (run with ``--relax``): shallow reductions, few output channels,
#: short rows
CROSSOVER = [(4, 64, 1000, 3), (6, 64, 1000, 3), (8, 64, 1000, 3), (16, 64, 1000, 3), (3, 64, 1000, 9),
             (64, 6, 1000, 3), (64, 8, 1000, 3), (64, 12, 1000, 3), (64, 18, 1000, 3), (64, 24, 1000, 3),
             (64, 36, 1000, 3), (128, 128, 16, 3), (128, 128, 24, 3), (128, 128, 40, 3), (32, 32, 200, 5)]


def parse(text: str | tuple[int, ...]) -> Layer:
    """A ``conv_variants.Layer`` (one row, ``1 x K``) from ``C,M,L,K[,pad]``."""
    c, m, length, k, *pad = (int(v) for v in (text.split(",") if isinstance(text, str) else text))
    return Layer(c, m, 1, length, 1, k, ph=0, pw=pad[0] if pad else k // 2)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--layer", action="append", help="C,M,L,K[,pad] (repeatable; default: the grid)")
    ap.add_argument("--crossover", action="store_true", help="the small layers about the variant's bounds")
    ap.add_argument("--relax", action="store_true", help="lift conv1d_packed's size bounds (MIN_DEPTH, MIN_ROW_TILES)")
    ap.add_argument("--runs", type=int, default=20)
    ap.add_argument("--out", default="conv1d", help="results/<OUT>.{json,md}")
    args = ap.parse_args()
    if args.relax:
        conv1d_packed.MIN_DEPTH, conv1d_packed.MIN_ROW_TILES = 1, 1
    layers = [parse(s) for s in args.layer or []] + [parse(t) for t in (CROSSOVER if args.crossover else [])]
    layers = layers or [parse(t) for t in GRID]
    opts = CompileOptions()
    target = opts.host_target()
    rows, records = [], []
    for ly in layers:
        model, flops = layer_model(ly, "relu")
        shape = {"x": (1, ly.c, 1, ly.w)}
        x = np.random.default_rng(1).standard_normal(shape["x"]).astype(np.float32)
        after = specialize(model, shape, opts, target=target)
        with variants_without([("Conv", "conv1d_packed")]):
            before = specialize(model, shape, opts, target=target)
        names = {k: [c.variant for c in s.program.calls if c.op == "Conv"][0] for k, s in
                 (("after", after), ("before", before))}
        sess = ort_session(model, threads=1)
        runs = {"after": lambda: after.run({"x": x}), "before": lambda: before.run({"x": x}),
                "onnxruntime": lambda: sess.run(None, {"x": x})}
        ref = sess.run(None, {"x": x})[0]
        err = max(float(np.max(np.abs(s.run({"x": x})[0] - ref))) for s in (after, before))
        times: dict[str, list[float]] = {k: [] for k in runs}
        for f in runs.values():
            f()
        order = list(runs)
        rng = np.random.default_rng(0)
        for _ in range(args.runs):
            rng.shuffle(order)
            for k in order:
                t0 = time.thread_time_ns()
                runs[k]()
                times[k].append((time.thread_time_ns() - t0) * 1e-9)
        best = {k: flops / min(t) / 1e9 for k, t in times.items()}
        med = {k: flops / statistics.median(t) / 1e9 for k, t in times.items()}
        label = f"{ly.c}->{ly.m} K{ly.kw} L{ly.w} pad {ly.pw}"
        print(f"{label}: after ({names['after']}) {best['after']:.1f} ({med['after']:.1f}) | before "
              f"({names['before']}) {best['before']:.1f} ({med['before']:.1f}) | onnxruntime "
              f"{best['onnxruntime']:.1f} ({med['onnxruntime']:.1f}) GFLOP/s | max |y - ort| {err:.1e}", flush=True)
        rows.append([label, names["after"], f"{best['after']:.1f} ({med['after']:.1f})", names["before"],
                     f"{best['before']:.1f} ({med['before']:.1f})",
                     f"{best['onnxruntime']:.1f} ({med['onnxruntime']:.1f})",
                     round(statistics.median(times["before"]) / statistics.median(times["after"]), 2)])
        records.append({"layer": dataclasses.asdict(ly), "flops": flops, "variants": names, "max_abs_err": err,
                        "gflops_best": best, "gflops_median": med})
    info = machine_info()
    write_json(args.out, {"relaxed": args.relax, "runs": args.runs, "layers": records, "machine": info})
    write_markdown(args.out, ["layer (C->M, kernel, length, pad)", "after", "GFLOP/s best (median)", "before",
                              "GFLOP/s best (median)", "onnxruntime 1 thread", "speed-up (medians)"], rows,
                   title="Conv1D layers: conv1d_packed against the table without it and onnxruntime",
                   notes=[f"python benchmarks/conv1d.py {' '.join(sys.argv[1:])}".rstrip(),
                          "one Conv + ReLU call, thread CPU time, runs interleaved in random order"
                          + (" (conv1d_packed's size bounds lifted: --relax)" if args.relax else "")],
                   machine=info)


if __name__ == "__main__":
    main()
