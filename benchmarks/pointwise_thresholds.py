"""``packed_pointwise`` on shallow layers (``SHALLOW_CHANNELS``, ``SHALLOW_ROW_TILES``) against the table
without that rule ("old": ``MIN_CHANNELS`` and ``MIN_ROW_TILES`` only), interleaved in one process: single
1x1 Conv layers timed inside their compiled schedule (``cnnjit.profile.profile_model``, best of
``--rounds`` x ``--runs``), and whole corpus models (the same inputs, each table's compile timed in turn).
``--always`` times the shallow rule on every layer it could take (no map-size condition) as "new".

    PYTHONPATH=. python benchmarks/pointwise_thresholds.py [--always] [--rounds 3] [--runs 50]
        [--layers 16x32x320,32x48x160:silu] [--models ppocr_v4_det,ddddocr_det] [--model-runs 20]

A layer is ``CxMxHW`` (``C`` -> ``M`` channels on an ``HW`` x ``HW`` map) with an optional ``:relu`` or
``:silu`` epilogue (default Relu). Printed per layer: the variant each table picks, its best time and
GFLOP/s; per model: median and min of each table and their ratios (outputs compared).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.harness import single_thread  # noqa: E402 - stdlib only

single_thread()

import numpy as np  # noqa: E402
from onnx import TensorProto, helper, numpy_helper  # noqa: E402

import cnnjit  # noqa: E402
from benchmarks.corpus import load  # noqa: E402
from cnnjit.compiler.codegen.kernels import packed_pointwise  # noqa: E402
from cnnjit.profile import profile_model  # noqa: E402

LAYERS = ("16x32x320,32x48x160,12x96x160,48x12x160,96x18x80,32x16x112,24x24x104:silu,48x24x104:silu,"
          "16x96x112:silu,24x96x56,16x64x10,40x120x28,40x120x4,16x96x4,8x48x4")


def layer_model(c: int, m: int, hw: int, act: str):
    """One 1x1 Conv (``c`` -> ``m``, bias) on a ``hw`` x ``hw`` map, then ``act`` (relu or silu)."""
    rng = np.random.default_rng(c * 1000 + m)
    inits = [numpy_helper.from_array((rng.standard_normal((m, c, 1, 1)) / np.sqrt(c)).astype(np.float32), "w"),
             numpy_helper.from_array(rng.standard_normal(m).astype(np.float32), "b")]
    nodes = [helper.make_node("Conv", ["x", "w", "b"], ["c"])]
    if act == "silu":
        nodes += [helper.make_node("Sigmoid", ["c"], ["g"]), helper.make_node("Mul", ["c", "g"], ["y"])]
    else:
        nodes.append(helper.make_node("Relu", ["c"], ["y"]))
    g = helper.make_graph(nodes, "layer", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, c, hw, hw])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, m, hw, hw])], inits)
    model = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    return model


def set_table(values: dict[str, int]) -> None:
    for name, value in values.items():
        setattr(packed_pointwise, name, value)


def time_layers(specs: list[str], tables: dict[str, dict[str, int]], rounds: int, runs: int) -> None:
    for spec in specs:
        dims, _, act = spec.partition(":")
        c, m, hw = (int(v) for v in dims.split("x"))
        model = layer_model(c, m, hw, act or "relu")
        best: dict[str, tuple[float, str]] = {}
        flops = 0
        for _ in range(rounds):
            for name, values in tables.items():
                set_table(values)
                doc = profile_model(model, repeat=runs, threads=1)
                row = next(r for r in doc["calls"] if r["op"].startswith("Conv"))
                flops = row["flops"]
                if name not in best or row["min_ms"] < best[name][0]:
                    best[name] = (row["min_ms"], row["variant"])
        cells = [f"{n}: {v} {t * 1e3:.2f} us ({flops / t / 1e6:.0f} GFLOP/s)" for n, (t, v) in best.items()]
        print(f"{spec}: " + " | ".join(cells) + f" | old/new {best['old'][0] / best['new'][0]:.2f}x", flush=True)


def time_models(names: list[str], tables: dict[str, dict[str, int]], runs: int) -> None:
    for name in names:
        model, feeds = load(name)
        compiled = {}
        for tname, values in tables.items():
            set_table(values)
            compiled[tname] = cnnjit.compile(model, threads=1, input_shapes={k: v.shape for k, v in feeds.items()})
            compiled[tname].run(None, feeds)
        times: dict[str, list[float]] = {t: [] for t in compiled}
        for _ in range(runs):
            for tname, cm in compiled.items():
                t0 = time.perf_counter()
                cm.run(None, feeds)
                times[tname].append(time.perf_counter() - t0)
        outs = [cm.run(None, feeds) for cm in compiled.values()]
        diff = max(float(np.max(np.abs(a - b)) / (np.max(np.abs(a)) or 1.0)) for a, b in zip(*outs))
        med = {t: float(np.median(v)) * 1e3 for t, v in times.items()}
        low = {t: min(v) * 1e3 for t, v in times.items()}
        print(f"{name}: " + ", ".join(f"{t} median {med[t]:.2f} min {low[t]:.2f} ms" for t in compiled)
              + f" | new/old median {med['new'] / med['old']:.3f}, min {low['new'] / low['old']:.3f}"
              + f" | max rel diff {diff:.1e}", flush=True)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--always", action="store_true", help="new: the shallow rule on every map size")
    ap.add_argument("--layers", default=LAYERS)
    ap.add_argument("--models", default="", help="corpus models (benchmarks/corpus.py names)")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--runs", type=int, default=50)
    ap.add_argument("--model-runs", type=int, default=20)
    args = ap.parse_args()
    keep = {n: getattr(packed_pointwise, n) for n in ("SHALLOW_CHANNELS", "STREAM_BYTES", "SMALL_MAP")}
    new = dict(keep, STREAM_BYTES=0) if args.always else keep
    tables = {"old": dict(keep, SHALLOW_CHANNELS=1 << 30), "new": new}
    if args.layers:
        time_layers(args.layers.split(","), tables, args.rounds, args.runs)
    if args.models:
        time_models(args.models.split(","), tables, args.model_runs)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
