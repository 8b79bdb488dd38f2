"""Inverted-residual block fusion per block: MobileNetV2-224's blocks alone, fused (``fuse_blocks``, one
``block_fused`` kernel) vs unfused (the pass disabled: expand, depthwise and project kernels), one thread,
interleaved. The cost rule of ``compiler/passes/fuse_blocks.py`` (``MIN_EXPANDED_BYTES``) is read off this.

    python benchmarks/block_fusion.py [--runs 200] [--blocks 0,1,2]

Prints per block: the expanded tensor's size, fused and unfused median times, speed-up, and the max
difference between the two.
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.harness import single_thread  # noqa: E402

single_thread()

import argparse  # noqa: E402

import numpy as np  # noqa: E402
import onnx  # noqa: E402
from onnx import TensorProto, helper, numpy_helper  # noqa: E402

import cnnjit  # noqa: E402
from benchmarks.harness import measure, print_table  # noqa: E402
from cnnjit.compiler.passes import fuse_blocks  # noqa: E402

#: MobileNetV2-224's inverted-residual blocks: (C, E, M, H, W, k, stride, residual); E None: no expand
#: (depthwise -> project): MobileNetV2's first block, MobileNetV3-large's first, PP-LCNet's first two
BLOCKS: list[tuple] = [
    (16, 96, 24, 112, 112, 3, 2, False), (24, 144, 24, 56, 56, 3, 1, True), (24, 144, 32, 56, 56, 3, 2, False),
    (32, 192, 32, 28, 28, 3, 1, True), (32, 192, 64, 28, 28, 3, 2, False), (64, 384, 64, 14, 14, 3, 1, True),
    (64, 384, 96, 14, 14, 3, 1, False), (96, 576, 96, 14, 14, 3, 1, True), (96, 576, 160, 14, 14, 3, 2, False),
    (160, 960, 160, 7, 7, 3, 1, True), (160, 960, 320, 7, 7, 3, 1, False),
    (32, None, 16, 112, 112, 3, 1, False), (16, None, 16, 112, 112, 3, 1, True),
    (16, None, 32, 112, 112, 3, 1, False), (32, None, 64, 112, 112, 3, 2, False)]


def block_model(C: int, E: int | None, M: int, H: int, W: int, k: int, s: int, residual: bool,
                seed: int = 0) -> onnx.ModelProto:
    """One block as ONNX: Conv 1x1 -> Clip(0, 6) -> depthwise Conv kxk -> Clip(0, 6) -> Conv 1x1 [-> Add x]
    (``E`` None: no expand, the depthwise conv reads x)."""
    r = np.random.default_rng(seed)
    expand = E is not None
    E = E or C

    def arr(name: str, *shape: int, scale: float = 0.2) -> onnx.TensorProto:
        return numpy_helper.from_array((r.standard_normal(shape) * scale).astype(np.float32), name)

    inits = [arr("w1", E, C, 1, 1), arr("b1", E), arr("w2", E, 1, k, k), arr("b2", E), arr("w3", M, E, 1, 1),
             arr("b3", M), numpy_helper.from_array(np.array(0, np.float32), "lo"),
             numpy_helper.from_array(np.array(6, np.float32), "hi")]
    if not expand:
        inits = inits[2:]
    head = [helper.make_node("Conv", ["x", "w1", "b1"], ["e"], kernel_shape=[1, 1]),
            helper.make_node("Clip", ["e", "lo", "hi"], ["ea"])]
    nodes = [*(head if expand else []),
             helper.make_node("Conv", ["ea" if expand else "x", "w2", "b2"], ["d"], kernel_shape=[k, k], strides=[s, s],
                              pads=[k // 2] * 4, group=E),
             helper.make_node("Clip", ["d", "lo", "hi"], ["da"]),
             helper.make_node("Conv", ["da", "w3", "b3"], ["p"], kernel_shape=[1, 1])]
    if residual:
        nodes.append(helper.make_node("Add", ["p", "x"], ["y"]))
    graph = helper.make_graph(nodes, "block", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, C, H, W])],
                              [helper.make_tensor_value_info("y" if residual else "p", TensorProto.FLOAT, None)],
                              inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=200)
    ap.add_argument("--blocks", default="", help="comma-separated indices into BLOCKS (default: all)")
    args = ap.parse_args(argv)
    chosen = [int(i) for i in args.blocks.split(",") if i.strip()] or list(range(len(BLOCKS)))
    fuse_blocks.MIN_EXPANDED_BYTES = fuse_blocks.MIN_ROW_PIXELS = 0  # fuse every block; unfused: the pass off
    fuse_blocks.MAX_WIDENING = float("inf")
    rows = []
    for i in chosen:
        C, E, M, H, W, k, s, res = BLOCKS[i]
        model = block_model(*BLOCKS[i])
        x = np.random.default_rng(1).standard_normal((1, C, H, W)).astype(np.float32)
        fused = cnnjit.compile(model, threads=1, entry="numba")
        unfused = cnnjit.compile(model, threads=1, entry="numba", disable=["fuse_blocks"])
        assert [c.variant for c in fused._default_spec().program.calls] == ["block_fused"]
        diff = float(np.abs(fused(x) - unfused(x)).max())
        st = measure({"fused": lambda: fused(x), "unfused": lambda: unfused(x)}, runs=args.runs, warmup=10)
        f, u = st["fused"]["median_ms"], st["unfused"]["median_ms"]
        rows.append([i, f"{C}->{E or 'dw'}->{M} {H}x{W} k{k} s{s}{' +x' if res else ''}", 4 * (E or C) * H * W / 1024,
                     f, u, u / f,
                     diff])
        print(rows[-1], flush=True)
    print_table(["block", "shape", "expanded KiB", "fused ms", "unfused ms", "speed-up", "max diff"], rows,
                title="block fusion, 1 thread")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
