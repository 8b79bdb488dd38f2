"""``quantize_dynamic``'s MatMulInteger head: the int16 kernel (``packed_matmul_i16``) against the float GEMM
``integer_to_float`` made of it before, and onnxruntime, single-threaded, interleaved.

    python benchmarks/qdynamic_matmul.py [--sizes 32x1024x8210,1x1024x1000] [--runs 50] [--warmup 5]

The chain is ``DynamicQuantizeLinear -> MatMulInteger (uint8 weights, zero point 130) -> Cast -> Mul(scale)
-> Add(bias)`` on an ``M x K`` input and a ``K x N`` weight (32 x 1024 x 8210: the ddddocr CRNN's classifier).
The float GEMM is the same compile with the pass's threshold (``MIN_INT16_MACS``) out of reach.
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.harness import single_thread  # noqa: E402

if __name__ == "__main__":  # (tests import ``head_model`` without touching their thread settings)
    single_thread()  # before numpy / numba / onnxruntime start their thread pools

import argparse  # noqa: E402

import numpy as np  # noqa: E402
from onnx import TensorProto, helper, numpy_helper  # noqa: E402

import cnnjit  # noqa: E402
import cnnjit.compiler.passes.integer_to_float as i2f  # noqa: E402
from benchmarks.harness import measure, ort_session, print_table  # noqa: E402


def head_model(M: int, K: int, N: int, wdt: type = np.uint8) -> tuple:
    """The quantized head (``wdt`` weights over their whole range, zero point a little above the middle) and a
    seeded input."""
    rng = np.random.default_rng(0)
    info = np.iinfo(wdt)
    w = rng.integers(info.min, info.max + 1, (K, N)).astype(wdt)
    nodes = [helper.make_node("DynamicQuantizeLinear", ["x"], ["q", "s", "z"]),
             helper.make_node("MatMulInteger", ["q", "w", "z", "wz"], ["acc"]),
             helper.make_node("Cast", ["acc"], ["accf"], to=TensorProto.FLOAT),
             helper.make_node("Mul", ["s", "ws"], ["sc"]),
             helper.make_node("Mul", ["accf", "sc"], ["y0"]),
             helper.make_node("Add", ["y0", "b"], ["y"])]
    inits = [numpy_helper.from_array(w, "w"), numpy_helper.from_array(np.array(info.max // 2 + 3, wdt), "wz"),
             numpy_helper.from_array(np.array(0.01, np.float32), "ws"),
             numpy_helper.from_array(rng.standard_normal(N).astype(np.float32), "b")]
    g = helper.make_graph(nodes, "head", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [M, K])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)], inits)
    model = helper.make_model(g, opset_imports=[helper.make_opsetid("", 13)], ir_version=8)
    return model, rng.standard_normal((M, K)).astype(np.float32)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", default="32x1024x8210,32x512x512,1x1024x1000", help="MxKxN, comma-separated")
    ap.add_argument("--runs", type=int, default=50)
    ap.add_argument("--warmup", type=int, default=5)
    args = ap.parse_args(argv)
    rows = []
    for size in args.sizes.split(","):
        M, K, N = (int(v) for v in size.split("x"))
        model, x = head_model(M, K, N)
        feeds = {"x": x}
        sess = ort_session(model, threads=1)
        int16 = cnnjit.compile(model, threads=1)
        threshold = i2f.MIN_INT16_MACS
        i2f.MIN_INT16_MACS = M * K * N + 1
        try:
            flt = cnnjit.compile(model, threads=1)
        finally:
            i2f.MIN_INT16_MACS = threshold
        want = sess.run(None, feeds)[0]
        for c in (int16, flt):
            np.testing.assert_allclose(c.run(None, feeds)[0], want, rtol=1e-5, atol=1e-5 * np.abs(want).max())
        t = measure({"int16": lambda: int16.run(None, feeds), "float": lambda: flt.run(None, feeds),
                     "ort": lambda: sess.run(None, feeds)}, runs=args.runs, warmup=args.warmup)
        med = {k: v["median_ms"] for k, v in t.items()}
        rows.append([size, med["int16"], med["float"], med["ort"], med["int16"] / med["ort"],
                     med["float"] / med["ort"]])
    print_table(["M x K x N", "int16 ms", "float ms", "onnxruntime ms", "int16 / ort", "float / ort"], rows,
                title="quantize_dynamic MatMulInteger head, 1 thread (medians)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
