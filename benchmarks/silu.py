"""The vector SiLU (``simd_math.VecMath.silu``) against the form it replaced (``x * sigmoid(x)``: the exact exp,
a select and the divide), in the kernels that fuse it: one Conv+SiLU per layer shape, and the ddddocr detector
with onnxruntime beside it, each compiled with both forms (and the layers with ReLU, the epilogue that costs
nothing) and timed interleaved in one process (thread CPU time, best and median of ``--runs``).

    python benchmarks/silu.py                     # the detector's layers, then the whole detector
    python benchmarks/silu.py --layer 48,48,104,104,1,1 --runs 40 --no-model

A layer is ``C,M,H,W,K,stride`` (pads ``K // 2``). The previous form is registered here only (as
``vsilu_exact``), before the intrinsics are built.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

from harness import ort_session, single_thread

single_thread()

from cnnjit.compiler.codegen import simd_math  # noqa: E402

simd_math.FUNCTIONS["vsilu_exact"] = (lambda m, x: m.mul(x, m.sigmoid(x)), 0)

import numpy as np  # noqa: E402
from conv_tiles import conv_model  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from benchmarks.corpus import CORPUS, load  # noqa: E402
from cnnjit.compiler.codegen import simd  # noqa: E402
from cnnjit.compiler.codegen.kernels import epilogue  # noqa: E402
from cnnjit.compiler.stages import CompileOptions, specialize  # noqa: E402

simd.__all__ += [f"vsilu_exact{n}" for n in simd.LANES]  # the kernel modules import simd's names with *

#: the ddddocr detector's layer shapes with the most SiLU per FLOP (1x1, 48-96 channels) and two 3x3s
LAYERS = [(48, 48, 104, 104, 1, 1), (96, 96, 52, 52, 1, 1), (192, 48, 52, 52, 1, 1), (24, 48, 208, 208, 3, 2),
          (96, 96, 52, 52, 3, 1)]


def build(proto, shapes, exact: bool):
    """``proto`` compiled (one thread) with the SiLU epilogue in its new form or the previous one."""
    opts = CompileOptions(threads=1)
    saved = epilogue._VEC_CALLS["SiLU"]
    epilogue._VEC_CALLS["SiLU"] = "vsilu_exact" if exact else saved
    try:
        return specialize(proto, shapes, opts, target=opts.host_target())
    finally:
        epilogue._VEC_CALLS["SiLU"] = saved


def timed(fns: dict, runs: int) -> dict[str, list[float]]:
    """Thread CPU seconds of each function over ``runs`` interleaved rounds (after one warm-up call each)."""
    times: dict[str, list[float]] = {k: [] for k in fns}
    for fn in fns.values():
        fn()
    for _ in range(runs):
        for k, fn in fns.items():
            t0 = time.thread_time_ns()
            fn()
            times[k].append((time.thread_time_ns() - t0) * 1e-6)
    return times


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--layer", action="append", help="C,M,H,W,K,stride (repeatable)")
    ap.add_argument("--runs", type=int, default=30)
    ap.add_argument("--no-model", action="store_true", help="layers only")
    args = ap.parse_args()
    layers = [tuple(int(v) for v in s.split(",")) for s in args.layer] if args.layer else LAYERS
    print("layer | variant | ReLU ms | SiLU before ms | SiLU now ms | SiLU's cost before -> now (best of runs)")
    for layer in layers:
        shapes = {"x": (1, layer[0], *layer[2:4])}
        silu, relu = conv_model(*layer, silu=True)[0], conv_model(*layer)[0]
        specs = {"relu": build(relu, shapes, False), "exact": build(silu, shapes, True),
                 "now": build(silu, shapes, False)}
        feeds = {"x": np.random.default_rng(1).standard_normal(shapes["x"]).astype(np.float32)}
        t = {k: min(v) for k, v in timed({k: (lambda s=s: s.run(feeds)) for k, s in specs.items()}, args.runs).items()}
        print(f"{layer} | {specs['now'].program.calls[0].variant} | {t['relu']:.3f} | {t['exact']:.3f} | "
              f"{t['now']:.3f} | {t['exact'] - t['relu']:+.3f} -> {t['now'] - t['relu']:+.3f}", flush=True)
    if args.no_model or not CORPUS["ddddocr_det"].available():
        return
    proto, feeds = load("ddddocr_det")
    shapes = {k: v.shape for k, v in feeds.items()}
    exact, now, sess = build(proto, shapes, True), build(proto, shapes, False), ort_session(proto)
    times = timed({"onnxruntime": lambda: sess.run(None, feeds), "exact": lambda: exact.run(feeds),
                   "now": lambda: now.run(feeds)}, max(5, args.runs // 3))
    ort_best, ort_med = min(times["onnxruntime"]), statistics.median(times["onnxruntime"])
    print("\nddddocr detector | best ms (/ onnxruntime) | median ms (/ onnxruntime)")
    for k, ts in times.items():
        print(f"{k} | {min(ts):.2f} ({min(ts) / ort_best:.3f}) | {statistics.median(ts):.2f} "
              f"({statistics.median(ts) / ort_med:.3f})", flush=True)


if __name__ == "__main__":
    main()
