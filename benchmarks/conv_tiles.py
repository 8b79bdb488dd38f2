"""Register tiles of the SIMD convolution kernels, timed per layer: GFLOP/s of one Conv (+ReLU) kernel call for
each tile (forced) and for the tile the target's register budget chooses, interleaved in one process.

    python benchmarks/conv_tiles.py                       # the default layers (ddddocr / PP-OCRv4 detectors)
    python benchmarks/conv_tiles.py --layer 96,96,52,52,3,1 --tiles 6x2,4x2,12x1 --runs 30

A layer is ``C,M,H,W,K,stride[,group]``; ``--tiles MRxNR,...`` forces the dense kernel's tiles (``simd_conv``,
``cvec`` on narrow rows: vectors x pixels, or ``simd_pointwise`` for 1x1 layers), ``--registers R,...``
compiles for other register budgets. Printed:
GFLOP/s of the best (and the median) of ``--runs`` interleaved runs (thread CPU time, so that other
processes on a shared machine count less; the run includes copying the input in and the output out).
"""

from __future__ import annotations

import argparse
import dataclasses
import statistics
import time

from harness import single_thread

single_thread()

import numpy as np  # noqa: E402
from onnx import TensorProto, helper, numpy_helper  # noqa: E402

from cnnjit.compiler.codegen.kernels import simd_conv, simd_cvec, simd_pointwise  # noqa: E402
from cnnjit.compiler.stages import CompileOptions, specialize  # noqa: E402

#: dense layers of the ddddocr detector (416x416) and PP-OCRv4 det (640x640): C, M, H, W, K, stride
LAYERS = [(96, 96, 52, 52, 3, 1), (24, 48, 208, 208, 3, 2), (12, 24, 208, 208, 3, 1), (48, 96, 104, 104, 3, 2),
          (96, 96, 26, 26, 3, 1), (48, 48, 104, 104, 1, 1), (96, 48, 52, 52, 1, 1), (24, 24, 104, 104, 1, 1),
          (192, 96, 26, 26, 1, 1)]


def conv_model(c: int, m: int, h: int, w: int, k: int, s: int, g: int = 1, silu: bool = False):
    """One Conv + ReLU (``silu``: + Sigmoid, Mul, fused into the Conv as SiLU) and its FLOP count."""
    rng = np.random.default_rng(0)
    wt = rng.standard_normal((m, c // g, k, k)).astype(np.float32) * 0.1
    b = rng.standard_normal(m).astype(np.float32)
    nodes = [helper.make_node("Conv", ["x", "w", "b"], ["t"], kernel_shape=[k, k], strides=[s, s],
                              pads=[k // 2] * 4, group=g),
             helper.make_node("Relu", ["t"], ["y"])]
    if silu:
        nodes[1:] = [helper.make_node("Sigmoid", ["t"], ["sg"]), helper.make_node("Mul", ["t", "sg"], ["y"])]
    graph = helper.make_graph(nodes, "conv", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, c, h, w])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
                              [numpy_helper.from_array(wt, "w"), numpy_helper.from_array(b, "b")])
    flops = 2.0 * m * (c // g) * k * k * (-(-h // s)) * (-(-w // s))
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)], ir_version=8), flops


def build(layer: tuple[int, ...], tile: tuple[int, int] | None, registers: int | None = None):
    """The layer compiled for the host, with ``tile`` forced on its dense kernel (None: the chosen one), for a
    register file of ``registers`` vectors (None: the host's)."""
    model, flops = conv_model(*layer)
    saved = simd_conv.conv_tile, simd_pointwise.pointwise_tile, simd_cvec.cvec_tile
    if tile is not None:
        simd_conv.conv_tile = simd_pointwise.pointwise_tile = simd_cvec.cvec_tile = lambda *a: tile
    try:
        target = CompileOptions().host_target()
        if registers:
            target = dataclasses.replace(target, vector_registers=registers)
        spec = specialize(model, {"x": (1, *layer[:1], *layer[2:4])}, CompileOptions(), target=target)
    finally:
        simd_conv.conv_tile, simd_pointwise.pointwise_tile, simd_cvec.cvec_tile = saved
    return spec, flops


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--layer", action="append", help="C,M,H,W,K,stride[,group] (repeatable)")
    ap.add_argument("--tiles", default="", help="forced tiles MRxNR,... besides the chosen one")
    ap.add_argument("--registers", default="", help="register budgets R,... to compare (chosen tiles)")
    ap.add_argument("--runs", type=int, default=20)
    args = ap.parse_args()
    layers = [tuple(int(v) for v in s.split(",")) for s in args.layer] if args.layer else LAYERS
    tiles = [None] + [tuple(int(v) for v in t.split("x")) for t in args.tiles.split(",") if t]
    tiles += [f"r{r}" for r in args.registers.split(",") if r]
    target = CompileOptions().host_target()
    print(f"vector width {target.vector_width}, {target.vector_registers} registers")
    for layer in layers:
        specs = [build(layer, None, int(t[1:])) if isinstance(t, str) else build(layer, t) for t in tiles]
        feeds = {"x": np.random.default_rng(1).standard_normal((1, layer[0], *layer[2:4])).astype(np.float32)}
        times: list[list[float]] = [[] for _ in specs]
        for spec, _ in specs:
            spec.run(feeds)
        for _ in range(args.runs):
            for (spec, _), ts in zip(specs, times):
                t0 = time.thread_time_ns()  # CPU time: on a shared machine, not the time others run
                spec.run(feeds)
                ts.append((time.thread_time_ns() - t0) * 1e-9)
        row = []
        for t, (spec, flops), ts in zip(tiles, specs, times):
            name = "chosen" if t is None else t if isinstance(t, str) else "{}x{}".format(*t)
            variant = spec.program.calls[0].variant
            row.append(f"{name} [{variant}] {flops / min(ts) / 1e9:5.1f} ({flops / statistics.median(ts) / 1e9:4.1f})")
        print(layer, " | ".join(row), flush=True)


if __name__ == "__main__":
    main()
