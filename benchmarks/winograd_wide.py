"""Winograd's crossover on small maps, per call in a model: for each channel count one model whose branches are
square maps (one input per size, ``--depth`` 3x3 C->C Conv+ReLU layers each), compiled (1 thread) twice: with
``winograd_f4`` on every Conv (its thresholds off) and with the table's choice where Winograd F(4x4) is never
chosen (``MIN_RATIO`` infinite; ``winograd_f4_channels`` keeps its own rule). Both schedules are profiled
(``cnnjit.profile.profile_schedule``, cycle-counter reads between the calls of the compiled schedule) in
interleaved rounds of random order in one process. Printed per layer: the minimum us of each side, their ratio,
``winograd.slot_ratio`` and the tile-lane fill of ``winograd.plan`` (the crossover's inputs).
Single-layer timings called from Python mislead at 16 lanes (av22): hence the model. This model's weights stay in
L3 between runs where a real model's are read cold (``winograd.WIDE_STREAM_BYTES``): for those, use
``profile_ab.py --heldout DIR --without winograd_streamed``.

    PYTHONPATH=. python benchmarks/winograd_wide.py --channels 64,128,256 --sizes 7,10,13,14,15,16,20,28 --rounds 6
"""

from __future__ import annotations

import argparse
import random
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from benchmarks.harness import single_thread  # noqa: E402 - stdlib only

single_thread()

import numpy as np  # noqa: E402
from onnx import TensorProto, helper, numpy_helper  # noqa: E402

from benchmarks.harness import write_json, write_markdown  # noqa: E402
from cnnjit.compiler.codegen.kernels import winograd  # noqa: E402
from cnnjit.compiler.stages import CompileOptions, specialize  # noqa: E402
from cnnjit.profile import profile_schedule  # noqa: E402

#: the thresholds off for the forced side (as benchmarks/winograd.py), the 16-lane rules included
FORCED = {"MIN_CHANNELS": 0, "MIN_RATIO": 0.0, "WIDE_RATIO": {}, "WIDE_STREAM_BYTES": {}}


def branches_model(c: int, sizes: list[int], depth: int):
    """One model of ``len(sizes)`` independent branches: input ``x{h}`` (1, c, h, h), ``depth`` 3x3 Conv+ReLU."""
    rng = np.random.default_rng(c)
    nodes, inits, ins, outs = [], [], [], []
    for h in sizes:
        prev = f"x{h}"
        ins.append(helper.make_tensor_value_info(prev, TensorProto.FLOAT, [1, c, h, h]))
        for d in range(depth):
            w = (rng.standard_normal((c, c, 3, 3)) * (2.0 / (9 * c)) ** 0.5).astype(np.float32)
            b = (rng.standard_normal(c) * 0.1).astype(np.float32)
            inits += [numpy_helper.from_array(w, f"w{h}_{d}"), numpy_helper.from_array(b, f"b{h}_{d}")]
            nodes += [helper.make_node("Conv", [prev, f"w{h}_{d}", f"b{h}_{d}"], [f"t{h}_{d}"], kernel_shape=[3, 3],
                                       pads=[1, 1, 1, 1]),
                      helper.make_node("Relu", [f"t{h}_{d}"], [f"r{h}_{d}"])]
            prev = f"r{h}_{d}"
        outs.append(helper.make_tensor_value_info(prev, TensorProto.FLOAT, None))
    graph = helper.make_graph(nodes, "branches", ins, outs, inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)], ir_version=8)


def compile_side(model, shapes: dict, forced: bool, width: int | None):
    """The model at 1 thread: ``winograd_f4`` forced on every Conv, or never chosen."""
    consts = FORCED if forced else {"MIN_RATIO": float("inf")}
    saved = {k: getattr(winograd, k) for k in consts}
    kw = {"variants": {"Conv": "winograd_f4"}} if forced else {}
    opts = CompileOptions(threads=1, vector_width=width, **kw) if width else CompileOptions(threads=1, **kw)
    try:
        for k, v in consts.items():
            setattr(winograd, k, v)
        return specialize(model, shapes, opts, target=opts.host_target())
    finally:
        for k, v in saved.items():
            setattr(winograd, k, v)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--channels", default="64,128,256")
    ap.add_argument("--sizes", default="7,10,12,13,14,15,16,20,24,28,32")
    ap.add_argument("--depth", type=int, default=2)
    ap.add_argument("--rounds", type=int, default=6)
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--width", type=int, default=None, help="vector width (default: the host's)")
    ap.add_argument("--name", default="winograd_wide")
    args = ap.parse_args()
    sizes = [int(s) for s in args.sizes.split(",")]
    rows, payload = [], {"args": vars(args), "layers": []}
    for c in (int(s) for s in args.channels.split(",")):
        model = branches_model(c, sizes, args.depth)
        shapes = {f"x{h}": (1, c, h, h) for h in sizes}
        rng = np.random.default_rng(0)
        feeds = {k: rng.standard_normal(s).astype(np.float32) for k, s in shapes.items()}
        specs = {"winograd": compile_side(model, shapes, True, args.width),
                 "other": compile_side(model, shapes, False, args.width)}
        times: dict[str, list[list[int]]] = {k: [] for k in specs}
        order, r = list(specs), random.Random(0)
        for _ in range(args.rounds):
            r.shuffle(order)
            for k in order:
                prof = profile_schedule(specs[k], feeds, repeat=args.runs, warmup=1, mode="timed")
                if not times[k]:
                    times[k] = [[] for _ in prof.calls]
                for acc, call in zip(times[k], prof.calls):
                    acc.extend(call.times_ns)
        tgt = CompileOptions(vector_width=args.width).host_target() if args.width else CompileOptions().host_target()
        calls = {k: [(i, cl) for i, cl in enumerate(s.program.calls) if cl.op == "Conv"] for k, s in specs.items()}
        for (iw, cw), (io, co) in zip(calls["winograd"], calls["other"]):
            h, p = cw.node.outputs[0].shape[2], winograd.plan(cw.node, tgt)
            slot = winograd.slot_ratio(cw.node, tgt)
            tw, to = min(times["winograd"][iw]) / 1e3, min(times["other"][io]) / 1e3
            row = [c, h, co.variant, round(to, 1), round(tw, 1), round(to / tw, 3), round(slot, 3), f"{p.mr}x{p.nr}",
                   p.tiles]
            rows.append(row)
            payload["layers"].append(dict(zip(["C", "H", "other", "other_us", "winograd_us", "speedup", "slot_ratio",
                                               "tile", "tiles"], row)))
            print(f"C={c:4d} {h:3d}x{h:<3d} {co.variant:22s} {to:9.1f} us  winograd_f4 {tw:9.1f} us  "
                  f"x{to / tw:5.2f}  slot {slot:5.2f}  tile {p.mr}x{p.nr} tiles {p.tiles}", flush=True)
    load_avg = Path("/proc/loadavg").read_text().split()[:3]
    payload["loadavg"] = load_avg
    write_json(args.name, payload)
    write_markdown(args.name, ["C=M", "H=W", "other variant", "other us", "winograd_f4 us", "speed-up",
                               "slot ratio", "tile", "tiles"], rows,
                   title="winograd_f4 against the table's other choice, per call in a model (1 thread)",
                   notes=[f"`python {' '.join(sys.argv)}`; minima over {args.rounds} interleaved rounds x {args.runs} "
                          f"runs; load average at the end {' '.join(load_avg)}"])


if __name__ == "__main__":
    main()
