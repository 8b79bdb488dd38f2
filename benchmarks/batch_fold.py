"""Would folding a batch into the pixel dimension pay for late, weight-heavy layers (issue 18)?

    python benchmarks/batch_fold.py [--batch 8] [--rounds 40] [--flush-mb 4] [--layers ...]

A batch runs as a loop over the batch-1 program, so every layer reads its weights once per sample. For a late
MobileNet layer (a 1x1 Conv on a 7x7 or 14x14 map with 320-1280 channels, the classifier) the weights are
100 KB - 5 MB per sample; run with the batch folded into the pixels (one GEMM over ``batch`` samples' pixels)
they are read once per batch. This times, per layer, one sample at batch 1 against ``batch`` samples folded
(a 1x1 Conv on a ``batch``-times taller map, or a Gemm of ``batch`` rows: the same GEMM, the same kernel
table), both compiled by cnnjit with 1 thread and timed interleaved in one process by thread CPU time
(``harness.measure``), with ``--flush-mb`` of memory written between calls (the rest of the model's traffic,
which in a real run evicts a layer's weights from L2 before the next sample reaches it). Printed per layer: its
weight bytes, the variant each shape runs, us per sample both ways (median and minimum) and their ratio; the
sum over the layers is what a batch-major section of the schedule could save per sample at most (the gather
into and scatter out of the folded layout not counted).
Results: ``benchmarks/results/batch_fold.{json,md}``.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.harness import single_thread  # noqa: E402 - stdlib only

single_thread()

import numpy as np  # noqa: E402
from onnx import TensorProto, helper, numpy_helper  # noqa: E402

import cnnjit  # noqa: E402
from benchmarks.harness import measure, write_json, write_markdown  # noqa: E402

#: name: (input channels, output channels, map side; 0: a Gemm on one row per sample)
LAYERS = {
    "mnv2 14x14 64->384": (64, 384, 14), "mnv2 14x14 384->96": (384, 96, 14),
    "mnv2 14x14 96->576": (96, 576, 14), "mnv2 14x14 576->96": (576, 96, 14),
    "mnv2 7x7 576->160": (576, 160, 7), "mnv2 7x7 160->960": (160, 960, 7),
    "mnv2 7x7 960->160": (960, 160, 7), "mnv2 7x7 960->320": (960, 320, 7),
    "mnv2 7x7 320->1280": (320, 1280, 7), "mnv2 fc 1280->1000": (1280, 1000, 0),
    "vww 6x6 128->128": (128, 128, 6), "vww 3x3 128->256": (128, 256, 3),
    "vww 3x3 256->256": (256, 256, 3),
}


def layer(c: int, m: int, hw: int, batch: int):
    """A 1x1 Conv ``c`` -> ``m`` (bias, Relu) on ``batch`` samples' ``hw`` x ``hw`` maps folded into one
    ``batch * hw`` x ``hw`` map, or (``hw`` 0) a Gemm of ``batch`` rows: the model and its input shape."""
    rng = np.random.default_rng(c * 1000 + m)
    if hw:
        w = (rng.standard_normal((m, c, 1, 1)) / np.sqrt(c)).astype(np.float32)
        nodes = [helper.make_node("Conv", ["x", "w", "b"], ["c"]), helper.make_node("Relu", ["c"], ["y"])]
        xs, ys = [1, c, batch * hw, hw], [1, m, batch * hw, hw]
    else:
        w = (rng.standard_normal((c, m)) / np.sqrt(c)).astype(np.float32)
        nodes = [helper.make_node("Gemm", ["x", "w", "b"], ["y"])]
        xs, ys = [batch, c], [batch, m]
    inits = [numpy_helper.from_array(w, "w"), numpy_helper.from_array(rng.standard_normal(m).astype(np.float32), "b")]
    g = helper.make_graph(nodes, "layer", [helper.make_tensor_value_info("x", TensorProto.FLOAT, xs)],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, ys)], inits)
    model = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    return model, tuple(xs)


def tiny():
    """A Relu on 8 floats: what a call costs besides its kernels."""
    g = helper.make_graph([helper.make_node("Relu", ["x"], ["y"])], "call",
                          [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 8])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 8])])
    model = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    return model


def variant(model: cnnjit.CompiledModel) -> str:
    """The variants of the compiled model's kernel calls."""
    return ",".join(getattr(c, "variant", None) or getattr(c, "kernel", "?") for c in model._last.program.calls)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--rounds", type=int, default=40)
    ap.add_argument("--flush-mb", type=float, default=4.0, help="MB written between calls (0: none)")
    ap.add_argument("--layers", default=",".join(LAYERS), help="names of LAYERS, comma-separated")
    ap.add_argument("--out", default=None)
    args = ap.parse_args(argv)
    rng = np.random.default_rng(0)
    junk = np.zeros(max(1, int(args.flush_mb * 2**20) // 4), np.float32)
    rows, out = [], []
    empty = cnnjit.compile(tiny(), threads=1)  # (a call's own cost, taken off every timing below)
    x0 = np.ones((1, 8), np.float32)
    for name in args.layers.split(","):
        c, m, hw = LAYERS[name]
        runs = {}
        for tag, b in (("b1", 1), ("folded", args.batch)):
            proto, shape = layer(c, m, hw, b)
            model = cnnjit.compile(proto, threads=1)
            x = rng.standard_normal(shape).astype(np.float32)
            model(x)
            runs[tag] = (model, x, b)
        ref = runs["folded"][0](runs["folded"][1])
        one = runs["b1"][0]
        per = hw * hw if hw else 1  # (rows of one sample in the folded output)
        xf = runs["folded"][1]
        got = one(xf[:, :, :hw, :] if hw else xf[:1])  # (the first sample through the batch-1 program)
        want = ref[:, :, :hw, :] if hw else ref[:1]
        np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4)

        def call(tag: str):
            model, x, _ = runs[tag]

            def f() -> None:
                if args.flush_mb:
                    junk[::16] += 1.0  # (a write to every cache line)
                t0 = time.thread_time_ns()
                model(x)
                f.ns.append(time.thread_time_ns() - t0)
            f.ns = []
            return f

        runs["call"] = (empty, x0, 1)
        fns = {tag: call(tag) for tag in runs}
        measure(fns, runs=args.rounds, warmup=3)
        base = (float(np.median(fns.pop("call").ns)),)
        st = {tag: ((float(np.median(f.ns)) - base[0]) / 1e3 / runs[tag][2],
                    (min(f.ns) - base[0]) / 1e3 / runs[tag][2]) for tag, f in fns.items()}
        wbytes = 4 * c * m
        r = {"layer": name, "weights_kb": wbytes / 1024, "pixels": per,
             "variant_b1": variant(runs["b1"][0]), "variant_folded": variant(runs["folded"][0]),
             "b1_us": st["b1"][0], "folded_us": st["folded"][0], "b1_min_us": st["b1"][1],
             "folded_min_us": st["folded"][1], "ratio": st["b1"][0] / st["folded"][0],
             "ratio_min": st["b1"][1] / st["folded"][1]}
        out.append(r)
        rows.append([name, r["weights_kb"], r["variant_b1"], r["variant_folded"], r["b1_us"], r["folded_us"],
                     r["ratio"], r["b1_min_us"], r["folded_min_us"], r["ratio_min"]])
        print(f"{name}: {r['weights_kb']:.0f} KB weights; per sample b1 {r['b1_us']:.1f} us (min "
              f"{r['b1_min_us']:.1f}) vs folded x{args.batch} {r['folded_us']:.1f} us (min {r['folded_min_us']:.1f}):"
              f" {r['ratio']:.2f}x ({r['variant_b1']} / {r['variant_folded']})", flush=True)
    for prefix in ("mnv2", "vww"):
        sel = [r for r in out if r["layer"].startswith(prefix)]
        if sel:
            b1, fo = sum(r["b1_us"] for r in sel), sum(r["folded_us"] for r in sel)
            print(f"{prefix}: these layers {b1:.0f} us per sample at batch 1, {fo:.0f} folded: {b1 - fo:.0f} us "
                  "per sample at most to save", flush=True)
    load = os.getloadavg()
    write_json("batch_fold", {"batch": args.batch, "rounds": args.rounds, "flush_mb": args.flush_mb, "rows": out,
                              "load": load}, args.out)
    header = ["layer", "weights KB", "variant b1", "variant folded", "b1 us/sample", f"folded x{args.batch} us/sample",
              "ratio", "b1 min", "folded min", "ratio of minima"]
    write_markdown("batch_fold", header,
                   rows, title="A late layer per sample: batch 1 against the batch folded into its pixels",
                   notes=[f"1 thread, thread CPU time, {args.rounds} interleaved rounds, {args.flush_mb:g} MB written "
                          f"between calls; load average {load[0]:.1f} / {load[1]:.1f}.",
                          "Command: python benchmarks/batch_fold.py " + " ".join(
                              argv if argv is not None else sys.argv[1:])], out_dir=args.out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
