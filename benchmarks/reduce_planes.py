"""``reduce_planes`` against the kernel the table chose before it (``reduce_mean``, one scalar accumulator), per
shape: ReduceMean / ReduceSum over trailing axes (squeeze-excite means over H, W of NCHW; a mean over the last
axis), both compiled in one process and timed interleaved in random order (thread CPU time, 1 thread),
medians and minima; JSON + md in ``benchmarks/results/reduce_planes.*``.

    python benchmarks/reduce_planes.py --runs 200
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
from benchmarks.harness import measure, variants_without, write_json, write_markdown  # noqa: E402

#: (op, shape, axes): PP-OCRv6's squeeze-excite means (48x12x80, 96x6x80, 160x3x80, 384x3x80), a ResNet head's
#: 512x7x7, a mean over a 256-wide last axis, a sum over 8x8 planes
SHAPES = [("ReduceMean", (1, 48, 12, 80), [2, 3]), ("ReduceMean", (1, 96, 6, 80), [2, 3]),
          ("ReduceMean", (1, 160, 3, 80), [2, 3]), ("ReduceMean", (1, 384, 3, 80), [2, 3]),
          ("ReduceMean", (1, 512, 7, 7), [2, 3]), ("ReduceMean", (1, 40, 256), [2]),
          ("ReduceSum", (1, 64, 8, 8), [2, 3])]


def reduce_model(op: str, shape: tuple[int, ...], axes: list[int], keepdims: int):
    """One opset-18 Reduce node (axes as an input)."""
    node = helper.make_node(op, ["x", "axes"], ["y"], keepdims=keepdims)
    g = helper.make_graph([node], "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, list(shape))],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
                          [numpy_helper.from_array(np.array(axes, np.int64), "axes")])
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", 18)], ir_version=8)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=200)
    ap.add_argument("--out", default=None, help="results folder (default benchmarks/results)")
    args = ap.parse_args()
    rows, payload = [], []
    for op, shape, axes in SHAPES:
        model = reduce_model(op, shape, axes, 1)
        x = np.random.default_rng(0).standard_normal(shape).astype(np.float32)
        new = cnnjit.compile(model, threads=1)
        with variants_without([(op, "reduce_planes")]):
            old = cnnjit.compile(model, threads=1)
            old(x)
        assert {c.variant for c in new._default_spec().program.calls} == {"reduce_planes"}
        np.testing.assert_allclose(new(x), old(x), rtol=1e-4, atol=1e-5)
        res = measure({"reduce_mean": lambda: old(x), "reduce_planes": lambda: new(x)}, runs=args.runs,
                      clock=time.thread_time_ns)
        o, n = res["reduce_mean"], res["reduce_planes"]
        label = f"{op} {'x'.join(map(str, shape))} axes {axes}"
        rows.append([label, o["median_ms"] * 1e3, o["min_ms"] * 1e3, n["median_ms"] * 1e3, n["min_ms"] * 1e3,
                     o["median_ms"] / n["median_ms"], o["min_ms"] / n["min_ms"]])
        payload.append({"case": label, "reduce_mean": o, "reduce_planes": n})
        print(*rows[-1], flush=True)
    load = os.getloadavg()[0]
    write_json("reduce_planes", {"runs": args.runs, "load": load, "rows": payload}, args.out)
    write_markdown("reduce_planes", ["case", "reduce_mean med us", "min us", "reduce_planes med us", "min us",
                                     "speed-up med", "speed-up min"], rows,
                   title="ReduceMean / ReduceSum over trailing axes: reduce_planes vs reduce_mean, 1 thread",
                   notes=[f"`python benchmarks/reduce_planes.py --runs {args.runs}`, whole compiled call "
                          f"(thread CPU time, interleaved random order), load average {load:.1f}"], out_dir=args.out)


if __name__ == "__main__":
    main()
