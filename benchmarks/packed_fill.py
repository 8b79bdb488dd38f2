"""``packed_pointwise``'s strip fill and accumulator sets against its earlier forms, per 1x1 layer, in one process:
each layer (a 1x1 Conv with an optional residual Add or Clip) compiled with the current kernels and with the
forms ``packed_block_copy`` (every block's strips copied before its tiles) and ``packed_serial_rows`` (a tile of
few accumulators on one set), the two Conv calls timed inside their compiled schedules
(``cnnjit.profile.profile_schedule``, cycle counter between calls) in rounds of random order.

    python benchmarks/packed_fill.py [--rounds 6] [--runs 20] [--layers 192x32x28:add,24x144x56:clip]

A layer is ``CxMxHW`` (``C`` -> ``M`` channels on an ``HW`` x ``HW`` map) with ``:add`` (a residual Add) or
``:clip`` (ReLU6). The default layers are the 1x1s of MobileNetV2-224 and MobileNetV3 / PP-LCNet (PP-OCR) shapes,
and large maps where the fill does not apply (the rule's other side: the same kernel both ways). Printed and
written (results/packed_fill.{json,md}): per layer whether it fills, best and median us and GFLOP/s of both,
and the speed-up of the best.
"""

from __future__ import annotations

import argparse
import random
import statistics
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.harness import single_thread  # noqa: E402 - stdlib only

single_thread()

import numpy as np  # noqa: E402
from onnx import TensorProto, helper, numpy_helper  # noqa: E402

from benchmarks.harness import write_json, write_markdown  # noqa: E402
from cnnjit.compiler.codegen.kernels.packed_pointwise import BLOCK_COPY, SERIAL_ROWS, fills  # noqa: E402
from cnnjit.compiler.stages import CompileOptions  # noqa: E402
from cnnjit.inspect_model import trace  # noqa: E402
from cnnjit.profile import profile_schedule  # noqa: E402
from cnnjit.runtime.model import Specialization  # noqa: E402

#: MobileNetV2-224's project (+ Add) and expand 1x1s, MobileNetV3 / PP-LCNet shapes (some below MIN_ROW_TILES or
#: MIN_CHANNELS: ``simd_pointwise`` before, ``FILL_*`` now), then maps past the fill
LAYERS = ("144x32x28,192x32x28:add,192x64x14,384x64x14:add,384x96x14,576x96x14:add,24x144x56:clip,"
          "32x192x28:clip,96x576x14:clip,960x160x7:add,72x24x56,120x40x28:add,240x40x28,480x112x14,"
          "200x40x14,40x120x28:clip,48x24x40,96x24x160,24x24x208")
FORMS = (BLOCK_COPY, SERIAL_ROWS)


def layer_model(c: int, m: int, hw: int, tail: str):
    """One 1x1 Conv (``c`` -> ``m``, bias) on a ``hw`` x ``hw`` map, then a residual Add (``tail == "add"``,
    a second input ``r``) or Clip(0, 6) (``"clip"``)."""
    rng = np.random.default_rng(c * 1000 + m)
    inits = [numpy_helper.from_array((rng.standard_normal((m, c, 1, 1)) / np.sqrt(c)).astype(np.float32), "w"),
             numpy_helper.from_array(rng.standard_normal(m).astype(np.float32), "b")]
    ins = [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, c, hw, hw])]
    nodes = [helper.make_node("Conv", ["x", "w", "b"], ["y" if not tail else "c"])]
    if tail == "add":
        ins.append(helper.make_tensor_value_info("r", TensorProto.FLOAT, [1, m, hw, hw]))
        nodes.append(helper.make_node("Add", ["c", "r"], ["y"]))
    elif tail == "clip":
        inits += [numpy_helper.from_array(np.array(0, np.float32), "lo"),
                  numpy_helper.from_array(np.array(6, np.float32), "hi")]
        nodes.append(helper.make_node("Clip", ["c", "lo", "hi"], ["y"]))
    g = helper.make_graph(nodes, "layer", ins, [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)], inits)
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", 13)], ir_version=8)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--layers", default=LAYERS, help="comma-separated CxMxHW[:add|:clip]")
    ap.add_argument("--rounds", type=int, default=6)
    ap.add_argument("--runs", type=int, default=20, help="runs per build per round")
    ap.add_argument("--name", default="packed_fill", help="results file name")
    args = ap.parse_args()
    target = CompileOptions().host_target()
    built = {}
    for spec in args.layers.split(","):
        dims, _, tail = spec.partition(":")
        c, m, hw = (int(v) for v in dims.split("x"))
        model = layer_model(c, m, hw, tail)
        rng = np.random.default_rng(1)
        feeds = {"x": rng.standard_normal((1, c, hw, hw)).astype(np.float32)}
        if tail == "add":
            feeds["r"] = rng.standard_normal((1, m, hw, hw)).astype(np.float32)
        for way, forms in (("now", ()), ("before", FORMS)):
            t = trace(model, {k: v.shape for k, v in feeds.items()}, entry="numba", threads=1, forms=forms)
            variant = t.program.calls[0].variant
            built[(spec, way)] = (Specialization(t.graph, t.program), feeds, variant, 2.0 * c * m * hw * hw,
                                  fills(c, m, hw * hw, target))
    times: dict[tuple[str, str], list[int]] = {k: [] for k in built}
    order = random.Random(0)
    for _ in range(args.rounds):
        keys = list(built)
        order.shuffle(keys)
        for k in keys:
            spec_, feeds, *_ = built[k]
            prof = profile_schedule(spec_, feeds, repeat=args.runs, warmup=2, mode="timed")
            times[k].extend(prof.calls[0].times_ns)
    rows, payload = [], {"rounds": args.rounds, "runs": args.runs, "layers": {}}
    for spec in args.layers.split(","):
        _, _, variant, flops, fill = built[(spec, "now")]
        was = built[(spec, "before")][2]
        variant = variant if was == variant else f"{was} -> {variant}"
        now, before = times[(spec, "now")], times[(spec, "before")]
        r = {"variant": variant, "fills": fill, "now_min_us": min(now) / 1e3,
             "now_median_us": statistics.median(now) / 1e3,
             "before_min_us": min(before) / 1e3, "before_median_us": statistics.median(before) / 1e3,
             "now_gflops": flops / min(now), "before_gflops": flops / min(before), "speedup": min(before) / min(now)}
        payload["layers"][spec] = r
        rows.append([spec, variant, "yes" if fill else "no", r["before_min_us"], r["now_min_us"], r["before_gflops"],
                     r["now_gflops"], r["speedup"], r["before_median_us"], r["now_median_us"]])
        print(f"{spec:18s} {variant:34s} fill {'yes' if fill else 'no ':3s} before {r['before_min_us']:8.1f} us "
              f"({r['before_gflops']:5.1f} GFLOP/s)  now {r['now_min_us']:8.1f} us ({r['now_gflops']:5.1f})  "
              f"speed-up {r['speedup']:.3f}x", flush=True)
    load_avg = Path("/proc/loadavg").read_text().split()[:3] if Path("/proc/loadavg").exists() else []
    payload["loadavg"] = load_avg
    write_json(args.name, payload)
    write_markdown(args.name, ["layer", "variant", "fills", "before us (min)", "now us (min)", "before GFLOP/s",
                               "now GFLOP/s", "speed-up", "before us (median)", "now us (median)"], rows,
                   title="packed_pointwise: strip fill and accumulator sets against the earlier forms, per layer",
                   notes=[f"`python {' '.join(sys.argv)}`: 1 thread, {args.rounds} rounds of {args.runs} runs per "
                          "build in random order, one process; the Conv call timed inside its schedule; "
                          f"before = forms {', '.join(FORMS)}", f"load average at the end {' '.join(load_avg)}"])


if __name__ == "__main__":
    main()
