"""Dilated 3x3 Conv layers (DeepLab's ASPP, CRAFT's refiner, a dilated audio net): the ``conv_column_phases``
pass (column phases on ``winograd_f4``, where its gate takes the layer) against the pass disabled (``cblock``
on the dilated layer) and onnxruntime, Conv+ReLU, one thread, interleaved in one process.

    python benchmarks/dilated_conv.py [--runs 10] [--layer 64,128,160,160,3,1,1,6]

Layers use ``conv_variants``' syntax (``C,M,H,W,K,stride[,group[,dilation[,pads]]]``). Printed and written
(``results/dilated_conv.json`` / ``.md``): per layer, the variants each way, ms and effective GFLOP/s (the
dilated layer's FLOPs) best of ``--runs``, and off / on ratios of the medians and minima.
"""

from __future__ import annotations

import argparse

from harness import single_thread  # run as a script, like conv_variants

single_thread()

import numpy as np  # noqa: E402
from conv_variants import layer_model, parse_layer  # noqa: E402
from harness import measure, ort_session, print_table, write_json, write_markdown  # noqa: E402

import cnnjit  # noqa: E402

#: CRAFT's refiner (64 -> 128 at 160x160, rates 6/12/18/24), DeepLab v3's ASPP at output stride 16 (33x33,
#: rates 6/12/18) and 8 (65x65, rate 12 / 2), a dilated audio layer (1x4 along time)
LAYERS = ["64,128,160,160,3,1,1,6", "64,128,160,160,3,1,1,12", "64,128,160,160,3,1,1,18",
          "64,128,160,160,3,1,1,24", "256,256,33,33,3,1,1,6", "256,256,33,33,3,1,1,12", "256,256,33,33,3,1,1,18",
          "256,256,65,65,3,1,1,6", "256,256,65,65,3,1,1,12", "32,32,64,200,3,1,1,1x4"]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=10)
    ap.add_argument("--layer", action="append", help="C,M,H,W,K,stride[,group[,dilation[,pads]]] (repeatable)")
    args = ap.parse_args()
    rows, results = [], []
    for spec in args.layer or LAYERS:
        layer = parse_layer(spec)
        model, flops = layer_model(layer, "relu")
        x = np.random.default_rng(1).standard_normal((1, layer.c, layer.h, layer.w)).astype(np.float32)
        on = cnnjit.compile(model, threads=1)
        off = cnnjit.compile(model, threads=1, disable=["conv_column_phases"])
        sess = ort_session(model)
        np.testing.assert_allclose(on(x), off(x), rtol=1e-4, atol=1e-3)
        stats = measure({"on": lambda: on(x), "off": lambda: off(x),
                         "onnxruntime": lambda: sess.run(None, {"x": x})}, runs=args.runs, warmup=2)
        conv = {k: next(c.variant for c in m._default_spec().program.calls if c.op == "Conv")
                for k, m in (("on", on), ("off", off))}
        gf = {k: flops / v["min_ms"] / 1e6 for k, v in stats.items()}
        ratio = (stats["off"]["median_ms"] / stats["on"]["median_ms"], stats["off"]["min_ms"] / stats["on"]["min_ms"])
        rows.append([str(layer), conv["on"], conv["off"], *(f"{stats[k]['min_ms']:.2f} / {gf[k]:.1f}"
                                                             for k in ("on", "off", "onnxruntime")),
                     f"{ratio[0]:.2f} / {ratio[1]:.2f}"])
        results.append({"layer": str(layer), "variants": conv, "stats": stats, "gflops_min": gf,
                        "off_over_on": {"median": ratio[0], "min": ratio[1]}})
    headers = ["layer", "on: Conv variant", "off", "on (ms / GFLOP/s)", "off", "onnxruntime",
               "off / on (median / min)"]
    title = "Dilated 3x3 Conv+ReLU, conv_column_phases on / off, one thread, best of --runs (a shared host)"
    print_table(headers, rows, title=title)
    write_json("dilated_conv", {"runs": args.runs, "layers": results})
    write_markdown("dilated_conv", headers, rows, title=title)


if __name__ == "__main__":
    main()
