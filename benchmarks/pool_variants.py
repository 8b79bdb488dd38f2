"""Stride-1 pooling layers on ``flat_pool`` (rows reduced into an unpadded plane, one contiguous column step),
``separable_pool`` (padded scratch plane, rows then columns, per output row) and ``simd_pool`` (every tap,
masked loads at the borders) against onnxruntime, one layer per model, interleaved in one process
(``harness.measure``: random order every round, 1 thread), outputs checked against onnxruntime; the speed-up
columns are the second variant's time over the first's.

    python benchmarks/pool_variants.py [--runs 200] [--layers OP,C,H,W,K,PAD[;...]] [--variants A,B[,...]]

Default layers: YOLOX/ddddocr's SPP cascade (5x5, 2 pads, 192x13x13), YOLOv5's SPPF (5x5 on 256x20x20), an SPP
without the cascade (13x13, 6 pads), Inception-style 3x3 stride-1 MaxPool and AveragePool (pads counted).
Writes ``results/pool_variants.{json,md}``.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.harness import single_thread  # noqa: E402

single_thread()

import numpy as np  # noqa: E402
from onnx import TensorProto, helper  # noqa: E402

import cnnjit  # noqa: E402
from benchmarks.harness import fmt, measure, ort_session, print_table, write_json, write_markdown  # noqa: E402

LAYERS = ["MaxPool,192,13,13,5,2", "MaxPool,256,20,20,5,2", "MaxPool,192,13,13,13,6", "MaxPool,256,28,28,3,1",
          "AveragePool,192,35,35,3,1", "MaxPool,64,56,56,3,1"]
VARIANTS = ("flat_pool", "separable_pool", "simd_pool")


def pool_model(op: str, c: int, h: int, w: int, k: int, pad: int):
    attrs = dict(kernel_shape=[k, k], pads=[pad] * 4)
    if op == "AveragePool":
        attrs["count_include_pad"] = 1
    g = helper.make_graph([helper.make_node(op, ["x"], ["y"], **attrs)], "pool",
                          [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, c, h, w])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)])
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", 13)], ir_version=8)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=200)
    ap.add_argument("--layers", default=";".join(LAYERS))
    ap.add_argument("--variants", default=",".join(VARIANTS), help="two or more; the first is the new one")
    args = ap.parse_args()
    names = args.variants.split(",")
    rows, payload = [], {"runs": args.runs, "variants": names, "layers": []}
    for spec in args.layers.split(";"):
        op, *dims = spec.split(",")
        c, h, w, k, pad = map(int, dims)
        model = pool_model(op, c, h, w, k, pad)
        x = np.random.default_rng(0).standard_normal((1, c, h, w)).astype(np.float32)
        sess = ort_session(model, threads=1)
        want = sess.run(None, {"x": x})[0]
        fns = {"onnxruntime": lambda s=sess: s.run(None, {"x": x})}
        for v in names:
            m = cnnjit.compile(model, threads=1, variants={op: v})
            assert {cl.variant for cl in m._default_spec().program.calls if cl.op == op} == {v}
            np.testing.assert_allclose(m(x), want, rtol=1e-5, atol=1e-5)
            fns[v] = lambda m=m: m(x)
        res = measure(fns, runs=args.runs, warmup=10)
        cols = [*names, "onnxruntime"]
        new, old = res[names[0]], res[names[1]]
        rows.append([spec, *[res[n]["median_ms"] for n in cols], *[res[n]["min_ms"] for n in cols],
                     old["median_ms"] / new["median_ms"], old["min_ms"] / new["min_ms"]])
        payload["layers"].append({"layer": spec, **{n: {k2: v2 for k2, v2 in r.items() if k2 != "times_ns"}
                                                     for n, r in res.items()}})
        print_table(["layer", *[f"{n} med" for n in cols], *[f"{n} min" for n in cols], "speed-up med",
                     "speed-up min"], [[fmt(v) for v in rows[-1]]])
    headers = ["layer (op,C,H,W,K,pad)", *[f"{n} median ms" for n in cols], *[f"{n} min ms" for n in cols],
               f"{names[1]} / {names[0]} (median)", f"{names[1]} / {names[0]} (min)"]
    write_json("pool_variants", payload)
    write_markdown("pool_variants", headers, rows, title=f"Stride-1 pools: {' vs '.join(names)}",
                   notes=[f"{args.runs} interleaved runs per candidate in one process, 1 thread, batch 1; "
                          "a model of one pool layer (its call overhead included)",
                          "load average at the end: " + " ".join(f"{v:.1f}" for v in os.getloadavg())])


if __name__ == "__main__":
    main()
