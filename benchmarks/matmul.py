"""MatMul on the GEMM micro-kernel, and the PP-OCRv4 recognizer end to end, 1 thread, interleaved.

    python benchmarks/matmul.py [--runs 30] [--no-model]

1. The recognizer's MatMul shapes (the 120x6625 vocabulary projection, the 120x360 / 120x240 / 240x120
   linears, the attention ``Q @ K^T`` and ``softmax @ V`` of two activations): the ``simd_matmul`` variant
   against the scalar ``matmul`` and numpy's ``matmul`` (OpenBLAS), each a one-node model with the numba
   entry, timed as whole calls (input copy in, output copy out).
2. The recognizer (``rapidocr_onnxruntime``'s ``ch_PP-OCRv4_rec_infer.onnx``, x 1x3x48x320, skipped when
   the wheel is absent) as it compiled before this work (the Python schedule, scalar MatMul, no
   LayerNormalization fusion) and now (``entry="auto"``: segmented numba schedule), against onnxruntime.

Writes ``benchmarks/results/matmul.{json,md}`` and ``matmul_rec.md``.
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.harness import single_thread  # noqa: E402

single_thread()

import argparse  # noqa: E402
import importlib.util  # noqa: E402
import os  # noqa: E402

import numpy as np  # noqa: E402
from onnx import TensorProto, helper, numpy_helper  # noqa: E402

import cnnjit  # noqa: E402
from benchmarks.harness import measure, ort_session, print_table, write_json, write_markdown  # noqa: E402

#: (A shape, B shape, B constant): the PP-OCRv4 recognizer's MatMuls
SHAPES = [((1, 40, 120), (120, 6625), True), ((1, 40, 120), (120, 360), True), ((1, 40, 240), (240, 120), True),
          ((1, 8, 40, 15), (1, 8, 15, 40), False), ((1, 8, 40, 40), (1, 8, 40, 15), False)]


def matmul_model(sa: tuple, sb: tuple, b: np.ndarray | None):
    """``y = a @ b``; ``b`` an initializer when given, else a second input."""
    ins = [helper.make_tensor_value_info("a", TensorProto.FLOAT, sa)]
    if b is None:
        ins.append(helper.make_tensor_value_info("b", TensorProto.FLOAT, sb))
    g = helper.make_graph([helper.make_node("MatMul", ["a", "b"], ["y"])], "mm", ins,
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
                          [] if b is None else [numpy_helper.from_array(b, "b")])
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", 13)], ir_version=8)


def bench_shapes(runs: int) -> list[list]:
    rows = []
    rng = np.random.default_rng(0)
    for sa, sb, const in SHAPES:
        a, b = rng.standard_normal(sa).astype(np.float32), rng.standard_normal(sb).astype(np.float32)
        model = matmul_model(sa, sb, b if const else None)
        feeds = {"a": a} if const else {"a": a, "b": b}
        fns = {}
        for v in ("simd_matmul", "matmul"):
            m = cnnjit.compile(model, variants={"MatMul": v}, entry="numba")
            np.testing.assert_allclose(m.run(None, feeds)[0], a @ b, rtol=1e-3, atol=1e-3)
            fns[v] = (lambda m=m: m.run(None, feeds))
        fns["numpy"] = lambda: np.matmul(a, b)
        stats = measure(fns, runs=runs)
        flop = 2 * int(np.prod(np.broadcast_shapes(sa[:-2], sb[:-2]))) * sa[-2] * sa[-1] * sb[-1]
        rows.append([f"{'x'.join(map(str, sa))} @ {'x'.join(map(str, sb))}{'' if const else ' (two inputs)'}"]
                    + [f"{stats[k]['median_ms']:.3f} ms ({flop / stats[k]['min_ms'] / 1e6:.1f} GFLOP/s)"
                       for k in ("simd_matmul", "matmul", "numpy")])
    return rows


def bench_model(runs: int) -> list[list] | None:
    spec = importlib.util.find_spec("rapidocr_onnxruntime")
    if spec is None or spec.origin is None:
        print("rapidocr_onnxruntime is not installed: the recognizer is skipped")
        return None
    path = str(Path(spec.origin).parent / "models" / "ch_PP-OCRv4_rec_infer.onnx")
    shapes = {"x": (1, 3, 48, 320)}
    x = np.random.default_rng(0).random((1, 3, 48, 320), dtype=np.float32)
    before = cnnjit.compile(path, input_shapes=shapes, entry="python", variants={"MatMul": "matmul"},
                            disable=["fuse_layernorm"])
    now = cnnjit.compile(path, input_shapes=shapes)
    sess = ort_session(path)
    fns = {"cnnjit before": lambda: before(x), "cnnjit now": lambda: now(x),
           "onnxruntime": lambda: sess.run(None, {"x": x})}
    stats = measure(fns, runs=runs)
    ort_ms = stats["onnxruntime"]["median_ms"]
    calls = {"cnnjit before": len(before._default_spec().program.calls),
             "cnnjit now": len(now._default_spec().program.calls), "onnxruntime": "-"}
    return [[k, f"{s['median_ms']:.2f}", f"{s['min_ms']:.2f}", f"{s['median_ms'] / ort_ms:.2f}x", calls[k]]
            for k, s in stats.items()]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--runs", type=int, default=30)
    ap.add_argument("--no-model", action="store_true", help="only the MatMul shapes")
    args = ap.parse_args()
    shape_rows = bench_shapes(args.runs)
    headers = ["MatMul", "simd_matmul", "matmul (scalar)", "numpy"]
    print_table(headers, shape_rows, "MatMul, median per call (GFLOP/s from the fastest call)")
    model_rows = None if args.no_model else bench_model(args.runs)
    mheaders = ["engine", "median ms", "min ms", "vs onnxruntime", "kernel calls"]
    if model_rows:
        print_table(mheaders, model_rows, "PP-OCRv4 recognizer 1x3x48x320")
    write_json("matmul", {"shapes": [dict(zip(headers, r)) for r in shape_rows],
                          "model": [dict(zip(mheaders, r)) for r in model_rows or []]})
    notes = [f"1-minute load average at the end: {os.getloadavg()[0]:.1f} ({os.cpu_count()} CPUs): on a loaded "
             "machine the times stretch, the interleaved ratios much less."] if hasattr(os, "getloadavg") else []
    write_markdown("matmul", headers, shape_rows, title="MatMul on the GEMM micro-kernel, 1 thread", notes=notes)
    if model_rows:
        write_markdown("matmul_rec", mheaders, model_rows, title="PP-OCRv4 recognizer 1x3x48x320, 1 thread",
                       notes=notes)


if __name__ == "__main__":
    main()
