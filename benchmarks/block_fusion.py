"""Inverted-residual block fusion per block: MobileNetV2-224's blocks alone, fused (``fuse_blocks``, one
``block_fused`` kernel) vs unfused (the pass disabled: expand, depthwise and project kernels), one thread,
interleaved. The cost rule of ``compiler/passes/fuse_blocks.py`` (``MIN_EXPANDED_BYTES``) is read off this.

    python benchmarks/block_fusion.py [--runs 200] [--blocks 0,1,2]
    python benchmarks/block_fusion.py --before block_unstaged_rows [--runs 40] [--blocks 15,16]

Prints per block: the expanded tensor's size, fused and unfused median times, speed-up, and the max
difference between the two. ``--before FORM``: the fused kernel against its earlier form ``FORM``
(``cnnjit.compile(forms=[FORM])``) instead of unfused, timed by thread CPU time (a loaded machine), medians
and minima, written to ``results/block_fusion_<FORM>.{json,md}``; blocks 15-19 are stride-1 blocks on maps of
a multiple of 1024 pixels and beside them (trueocr's orientation net, a MobileNetV2 at 96x160: centerface).
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
    (16, None, 32, 112, 112, 3, 1, False), (32, None, 64, 112, 112, 3, 2, False),
    (24, 48, 24, 192, 192, 3, 1, True), (24, 48, 24, 192, 184, 3, 1, True), (32, 64, 32, 96, 96, 3, 1, True),
    (64, 128, 64, 64, 64, 3, 1, True), (24, 144, 24, 96, 160, 3, 1, True)]
#: the blocks a plain run times (MobileNetV2-224's and the blocks without an expand)
MOBILENET_BLOCKS = 15


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
    ap.add_argument("--blocks", default="", help="comma-separated indices into BLOCKS (default: the first "
                    f"{MOBILENET_BLOCKS}; with --before, the rest)")
    ap.add_argument("--before", default="", help="a kernel form (cnnjit.compile(forms=...)): time the fused block "
                    "against it instead of unfused")
    args = ap.parse_args(argv)
    if args.before:
        return before_after(args)
    chosen = [int(i) for i in args.blocks.split(",") if i.strip()] or list(range(MOBILENET_BLOCKS))
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


def before_after(args: argparse.Namespace) -> int:
    """The fused kernel now against its earlier form ``args.before``, block by block (thread CPU time)."""
    import os
    import time

    from benchmarks.harness import markdown_table, results_path, write_json

    chosen = ([int(i) for i in args.blocks.split(",") if i.strip()]
              or list(range(MOBILENET_BLOCKS, len(BLOCKS))))
    fuse_blocks.MIN_EXPANDED_BYTES = fuse_blocks.MIN_ROW_PIXELS = 0
    fuse_blocks.MAX_WIDENING = float("inf")
    headers = ["block", "shape", "before ms (med / min)", "now ms (med / min)", "speed-up med", "speed-up min",
               "max diff"]
    rows: list[list] = []
    load = [round(v, 2) for v in os.getloadavg()]
    for i in chosen:
        C, E, M, H, W, k, s, res = BLOCKS[i]
        model = block_model(*BLOCKS[i])
        x = np.random.default_rng(1).standard_normal((1, C, H, W)).astype(np.float32)
        now = cnnjit.compile(model, threads=1, entry="numba")
        old = cnnjit.compile(model, threads=1, entry="numba", forms=[args.before])
        for m in (now, old):
            assert [c.variant for c in m._default_spec().program.calls] == ["block_fused"]
        diff = float(np.abs(now(x) - old(x)).max())
        st = measure({"now": lambda: now(x), "before": lambda: old(x)}, runs=args.runs, warmup=5,
                     clock=time.thread_time_ns)
        b, n = st["before"], st["now"]
        rows.append([i, f"{C}->{E or 'dw'}->{M} {H}x{W} k{k} s{s}{' +x' if res else ''}",
                     f"{b['median_ms']:.3f} / {b['min_ms']:.3f}", f"{n['median_ms']:.3f} / {n['min_ms']:.3f}",
                     round(b["median_ms"] / n["median_ms"], 3), round(b["min_ms"] / n["min_ms"], 3), diff])
        print(rows[-1], flush=True)
    load += [round(v, 2) for v in os.getloadavg()]
    command = (f"python benchmarks/block_fusion.py --before {args.before} --runs {args.runs}"
               + (f" --blocks {args.blocks}" if args.blocks else ""))
    name = f"block_fusion_{args.before}"
    write_json(name, {"command": command, "load_before_after": load, "headers": headers, "rows": rows})
    md = [f"# block_fused now vs its earlier form {args.before}, 1 thread", "", f"Command: `{command}`", "",
          f"Thread CPU time, {args.runs} interleaved runs; load average before / after: {load[0]} / {load[3]}.",
          "", markdown_table(headers, rows), ""]
    results_path(name, "md").write_text("\n".join(md))
    print_table(headers, rows, title=f"block_fused vs {args.before}, 1 thread")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
