"""A Conv variant in model context, its weights cold: a chain of same-shape 3x3 layers (C -> C on an HxW map,
ReLU) whose weights together pass L3, so each layer's weights come from memory as in a real deep model,
compiled with the default variant table and again without the named variants, interleaved in one process.
``benchmarks/conv_variants.py`` times one layer over and over, its weights hot in L3; this is where
``im2col_packed.WEIGHT_BYTES`` (the weights past which it beats ``cblock``'s per-row re-reads) is measured.

    python benchmarks/cold_weights.py                                   # the default chains
    python benchmarks/cold_weights.py --chain 384,7,7,8 --chain 256,4,4,16 --without Conv:im2col_packed
    python benchmarks/cold_weights.py --force im2col_packed       # the variant on every chain: the crossover

A chain is ``C,H,W,L``: ``L`` layers. Printed per chain: median (and best) ms of each table and the
speed-up of the default over the table without (> 1: the default is faster).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.harness import single_thread  # noqa: E402 - stdlib only

single_thread()

import numpy as np  # noqa: E402
from onnx import ModelProto, TensorProto, helper, numpy_helper  # noqa: E402

import cnnjit  # noqa: E402
from benchmarks.harness import measure  # noqa: E402
from benchmarks.variant_ab import compile_without  # noqa: E402

#: (C, H, W, layers): 0.56-9 MiB of weights a layer, about 20-40 MiB a chain
CHAINS = [(128, 7, 7, 40), (256, 7, 7, 16), (320, 7, 7, 12), (384, 7, 7, 8), (384, 4, 4, 8), (512, 7, 7, 4)]


def chain(c: int, h: int, w: int, layers: int) -> ModelProto:
    """``layers`` 3x3 ``c -> c`` Conv + ReLU layers (pads 1) on a ``1 x c x h x w`` input, He-scaled weights."""
    rng = np.random.default_rng(0)
    nodes, inits, cur = [], [], "x"
    for i in range(layers):
        wt = (rng.standard_normal((c, c, 3, 3)) * np.sqrt(2.0 / (9 * c))).astype(np.float32)
        inits += [numpy_helper.from_array(wt, f"w{i}"), numpy_helper.from_array(np.zeros(c, np.float32), f"b{i}")]
        nodes += [helper.make_node("Conv", [cur, f"w{i}", f"b{i}"], [f"c{i}"], kernel_shape=[3, 3], pads=[1] * 4),
                  helper.make_node("Relu", [f"c{i}"], [f"r{i}"])]
        cur = f"r{i}"
    g = helper.make_graph(nodes, "chain", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, c, h, w])],
                          [helper.make_tensor_value_info(cur, TensorProto.FLOAT, None)], inits)
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--chain", action="append", help="C,H,W,LAYERS (repeat; default: CHAINS)")
    ap.add_argument("--without", default="Conv:im2col_packed", help="OP:VARIANT[,...] left out of 'before'")
    ap.add_argument("--force", help="Conv variant forced in 'after' (every layer of a chain is the same shape)")
    ap.add_argument("--runs", type=int, default=15)
    ap.add_argument("--warmup", type=int, default=3)
    args = ap.parse_args()
    removed = [tuple(s.split(":", 1)) for s in args.without.split(",")]
    chains = [tuple(int(v) for v in s.split(",")) for s in args.chain] if args.chain else CHAINS
    for c, h, w, layers in chains:
        model = chain(c, h, w, layers)
        x = np.random.default_rng(1).standard_normal((1, c, h, w)).astype(np.float32)
        after = cnnjit.compile(model, threads=1, variants={"Conv": args.force} if args.force else None)
        before = compile_without(model, {"x": x.shape}, removed)
        t = measure({"after": lambda: after(x), "before": lambda: before(x)}, runs=args.runs, warmup=args.warmup)
        ms = {k: v["median_ms"] for k, v in t.items()}
        best = {k: v["min_ms"] for k, v in t.items()}
        print(f"{c}x{c} 3x3 on {h}x{w} x{layers} ({c * c * 36 / 2**20:.2f} MiB of weights a layer): after "
              f"{ms['after']:.2f} ms, before {ms['before']:.2f} ms | speed-up {ms['before'] / ms['after']:.3f}x "
              f"(best-of: {best['before'] / best['after']:.3f}x)", flush=True)


if __name__ == "__main__":
    main()
