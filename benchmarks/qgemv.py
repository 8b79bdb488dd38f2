"""int8 layers of one to three output pixels (fully connected layers, classifiers, squeeze-excite 1x1s) on x86
without VNNI: ``qconv_gemv_i16`` (int8 weights widened to int16 pairs as they are loaded, one ``vpmaddwd`` per
16 exact multiply-adds) against ``qconv_dense`` (the byte form: two ``vpmaddubsw`` and two ``vpmaddwd`` per 32)
and ``qconv_dense_i16`` (int16 weights in memory), single-threaded, interleaved in one process.

    python benchmarks/qgemv.py [--runs 100] [--block 50]

Per layer (input channels C -> output channels M, output pixels P), each variant forced (a numba schedule, as
``cnnjit.compile`` makes), outputs checked
equal bit for bit, then this thread's CPU time per call of the compiled schedule (``time.thread_time_ns``,
the least mean over ``--runs`` interleaved blocks of ``--block`` calls: a shared machine's time slices
left out). Results: ``benchmarks/results/qgemv.json`` and ``.md``.
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
from cnnjit.compiler.codegen.kernel import choose  # noqa: E402
from cnnjit.compiler.stages import CompileOptions  # noqa: E402
from cnnjit.ir import Graph, Node, TensorType, Value, get_op  # noqa: E402

#: (label, C, M, output pixels): the MLPerf Tiny anomaly model's layers, a keyword spotter's and ResNet's
#: classifiers, MobileNetV3's squeeze-excite 1x1s and head, an ImageNet classifier, 2-3 pixel layers
LAYERS = [
    ("anomaly 640->128", 640, 128, 1), ("anomaly 128->128", 128, 128, 1), ("anomaly 128->8", 128, 8, 1),
    ("anomaly 8->128", 8, 128, 1), ("anomaly 128->640", 128, 640, 1), ("kws fc 64->12", 64, 12, 1),
    ("se 96->24", 96, 24, 1), ("se 24->96", 24, 96, 1), ("se 576->144", 576, 144, 1),
    ("head 576->1024", 576, 1024, 1), ("classifier 1024->1000", 1024, 1000, 1), ("odd 100->37", 100, 37, 1),
    ("2 px 256->256", 256, 256, 2), ("3 px 256->256", 256, 256, 3),
]
VARIANTS = ["qconv_gemv_i16", "qconv_dense", "qconv_dense_i16"]


def layer(C: int, M: int, P: int, seed: int = 0) -> tuple[Graph, np.ndarray]:
    """A QConvNHWC 1x1 of ``C`` int8 channels to ``M`` on a 1 x ``P`` map, seeded weights and input."""
    rng = np.random.default_rng(seed)

    def const(a: np.ndarray) -> Value:
        return Value(TensorType(a.dtype, a.shape), "", const=a)

    attrs = {"strides": [1, 1], "pads": [0] * 4, "dilations": [1, 1], "group": 1, "x_zero_point": -3,
             "y_zero_point": 5, "lo": -128, "hi": 127, "dtype": "i8"}
    g = Graph("gemv")
    x = g.add_input(TensorType(np.int8, (1, 1, P, C)), "x")
    ins = [x, const(rng.integers(-128, 128, (M, 1, 1, C)).astype(np.int8)),
           const(rng.integers(-20000, 20000, M).astype(np.int32)),
           const((rng.random(M) * 0.002 + 1e-4).astype(np.float32))]
    (t,) = get_op("QConvNHWC").infer_types(ins, attrs)
    y = Value(t, "y")
    g.add_node(Node("QConvNHWC", ins, [y], attrs))
    g.outputs = [y]
    return g, rng.integers(-128, 128, (1, 1, P, C)).astype(np.int8)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--runs", type=int, default=100)
    ap.add_argument("--block", type=int, default=50)
    ap.add_argument("--out", default=None, help="results folder (default benchmarks/results)")
    args = ap.parse_args(argv)
    host = CompileOptions().host_target()
    rows, result = [], {}
    for label, C, M, P in LAYERS:
        g, x = layer(C, M, P)
        fns, outs = {}, {}
        for name in VARIANTS:
            fns[name], outs[name], ran = schedule_call(g, replace(host, variants=(("QConvNHWC", name),)), x)
            assert ran == {name}
        for name in VARIANTS[1:]:
            np.testing.assert_array_equal(outs[name], outs[VARIANTS[0]])
        us = cpu_times(fns, args.runs, args.block)
        default = choose(g.nodes[0], host).name
        result[label] = {"C": C, "M": M, "pixels": P, "default": default, **us}
        gemv, dense, i16 = (us[n] for n in VARIANTS)
        rows.append([label, default, gemv, dense, i16, dense / gemv, i16 / gemv])
        print(label, {k: round(v, 3) for k, v in us.items()}, f"dense/gemv {dense / gemv:.2f}", flush=True)
    write_json("qgemv", {"cpu_us": result, "runs": args.runs, "block": args.block}, args.out)
    write_markdown("qgemv", ["layer", "default", "qconv_gemv_i16 us", "qconv_dense us", "qconv_dense_i16 us",
                             "dense / gemv", "dense_i16 / gemv"], rows,
                   title="int8 layers of 1-3 output pixels, one thread",
                   notes=[one_layer_cpu_note(args.runs, args.block, os.getloadavg()[0]),
                          "Command: python benchmarks/qgemv.py"], out_dir=args.out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
