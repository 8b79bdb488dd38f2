"""The saturating u8 x s8 1x1 ConvInteger (DynamicQuantizeLSTM's input projection, as onnxruntime computes it
on x86 without VNNI) per layer: the default table (``channel_u8s8`` on maps of a few pixels, ``pointwise_u8s8``
on the rest) against ``pointwise_u8s8`` forced (the only variant before ``channel_u8s8``), single-threaded,
interleaved in one process.

    python benchmarks/saturating_pointwise.py [--runs 60] [--block 5]

Per layer (input channels C -> output channels M, output pixels P = steps x batch of the LSTM), each way
generated as a numba schedule (as ``cnnjit.compile`` makes), outputs checked equal bit for bit, then this
thread's CPU time per call (``time.thread_time_ns``, the least mean over ``--runs`` interleaved blocks of
``--block`` calls: a shared machine's time slices left out). Results: ``benchmarks/results/saturating_pointwise
.json`` and ``.md``.
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.harness import single_thread  # noqa: E402

single_thread()  # before numpy / numba start their thread pools

import argparse  # noqa: E402
import os  # noqa: E402
from dataclasses import replace  # noqa: E402

import numpy as np  # noqa: E402

from benchmarks.call_overhead import cpu_times, one_layer_cpu_note  # noqa: E402
from benchmarks.harness import schedule_call, write_json, write_markdown  # noqa: E402
from cnnjit.compiler.stages import CompileOptions  # noqa: E402
from cnnjit.ir import Graph, Node, TensorType, Value  # noqa: E402

#: (label, C, M, pixels): vfl_embedder's three LSTM projections (80 steps), ddddocr's CRNN LSTM and
#: vfl_filter's (one step each), a 4-step and a 12-step projection
LAYERS = [
    ("vfl_embedder 768->3072 x80", 768, 3072, 80), ("vfl_embedder 40->3072 x80", 40, 3072, 80),
    ("ddddocr_common_old 512->4096 x1", 512, 4096, 1), ("vfl_filter 512->2048 x1", 512, 2048, 1),
    ("4 steps 300->256", 300, 256, 4), ("12 steps 256->1024", 256, 1024, 12),
    ("32 steps 512->2048", 512, 2048, 32),
]
#: (column, forced variant or None for the default table)
WAYS = [("default", None), ("pointwise_u8s8", "pointwise_u8s8")]


def layer(C: int, M: int, P: int, seed: int = 0) -> tuple[Graph, np.ndarray]:
    """A saturating 1x1 ConvInteger of ``C`` uint8 channels to ``M`` on ``P`` pixels, seeded."""
    rng = np.random.default_rng(seed)

    def const(a: np.ndarray) -> Value:
        return Value(TensorType(a.dtype, a.shape), "", const=a)

    g = Graph("u8s8")
    x = g.add_input(TensorType(np.dtype(np.uint8), (1, C, P)), "x")
    y = Value(TensorType(np.dtype(np.int32), (1, M, P)), "y")
    w = rng.integers(-128, 128, (M, C, 1)).astype(np.int8)
    g.add_node(Node("ConvInteger", [x, const(w), const(np.array(118, np.uint8)), const(np.array(0, np.int8))], [y],
                    {"kernel_shape": [1], "strides": [1], "pads": [0, 0], "dilations": [1], "group": 1,
                     "saturate": 1}))
    g.outputs = [y]
    return g, rng.integers(0, 256, (1, C, P)).astype(np.uint8)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--runs", type=int, default=60)
    ap.add_argument("--block", type=int, default=5)
    ap.add_argument("--out", default=None, help="results folder (default benchmarks/results)")
    args = ap.parse_args(argv)
    host = CompileOptions().host_target()
    rows, result = [], {}
    for label, C, M, P in LAYERS:
        g, x = layer(C, M, P)
        fns, outs, chosen = {}, {}, ""
        for col, forced in WAYS:
            fns[col], outs[col], ran = schedule_call(
                g, replace(host, variants=(("ConvInteger", forced),) if forced else ()), x)
            (variant,) = ran
            assert forced is None or variant == forced
            chosen = chosen or variant
        np.testing.assert_array_equal(outs["pointwise_u8s8"], outs["default"])
        us = cpu_times(fns, args.runs, args.block)
        gops = {k: 2 * C * M * P / v / 1e3 for k, v in us.items()}
        result[label] = {"C": C, "M": M, "pixels": P, "default": chosen, "cpu_us": us, "gop_s": gops}
        d, t = us["default"], us["pointwise_u8s8"]
        rows.append([label, chosen, f"{d:.1f}", f"{t:.1f}", f"{gops['default']:.0f}",
                     f"{gops['pointwise_u8s8']:.0f}", f"{t / d:.2f}"])
        print(*rows[-1], flush=True)
    load = os.getloadavg()[0]
    write_json("saturating_pointwise", {"layers": result, "runs": args.runs, "block": args.block,
                                        "load": load}, args.out)
    write_markdown("saturating_pointwise",
                   ["layer", "default variant", "default us", "pointwise_u8s8 us", "default GOP/s",
                    "pointwise_u8s8 GOP/s", "speed-up"], rows,
                   title="Saturating u8 x s8 1x1 ConvInteger (DynamicQuantizeLSTM projection), one thread",
                   notes=[one_layer_cpu_note(args.runs, args.block, load),
                          "Command: python benchmarks/saturating_pointwise.py"], out_dir=args.out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
