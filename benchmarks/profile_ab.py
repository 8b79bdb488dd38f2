"""Per-call in-model A/B of a kernel variant: each model compiled (1 thread) with the default variant table
and without the named variants, both schedules profiled (``cnnjit.profile.profile_schedule``: cycle-counter
reads between the calls of the real compiled schedule) in rounds of interleaved, randomly ordered runs in one
process, so a loaded machine slows both alike. Printed per model: every call whose variant differs and every
call of either schedule below half the FMA peak (on the minima over all rounds), with its time, % of peak and
roofline verdict (``cnnjit.roofline``, as ``cnnjit profile`` judges it) before and after; results/<name>.md.

    python benchmarks/profile_ab.py --without Conv:depthwise_direct --models ppocr_v4_rec,ppocr_v4_det --rounds 6
"""

from __future__ import annotations

import argparse
import random
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.harness import single_thread  # noqa: E402 - stdlib only

single_thread()

from benchmarks.corpus import load  # noqa: E402
from benchmarks.harness import variants_without, write_json, write_markdown  # noqa: E402
from cnnjit.inspect_model import call_bytes, call_flops, trace  # noqa: E402
from cnnjit.profile import measured_peak, profile_schedule  # noqa: E402
from cnnjit.runtime.model import Specialization  # noqa: E402


def shape_text(node) -> str:
    """``CxHxW -> CxHxW kKxK sS`` of a call's node (shapes only)."""
    if node is None:
        return ""
    x, y = node.inputs[0].shape, node.outputs[0].shape
    a = node.attrs
    k = f" k{'x'.join(map(str, a['kernel_shape']))}" if "kernel_shape" in a else ""
    s = f" s{'x'.join(map(str, a['strides']))}" if "strides" in a and any(v != 1 for v in a["strides"]) else ""
    return f"{'x'.join(map(str, x[1:]))}->{'x'.join(map(str, y[1:]))}{k}{s}"


def build(model, shapes: dict, removed: list[tuple[str, str]], forms: tuple[str, ...] = ()):
    """(trace, specialisation) of ``model`` at 1 thread, with the ``removed`` variants out of the table and the
    earlier kernel ``forms`` (``codegen.kernel.FORMS``) generated."""
    with variants_without(removed):
        t = trace(model, shapes, entry="numba", threads=1, forms=forms)
        return t, Specialization(t.graph, t.program)


def load_any(name: str, heldout: str | None):
    """(model, seeded feeds) of a corpus model, or with ``heldout`` a held-out folder's ``<name>.onnx`` on the
    inputs ``benchmarks/heldout.py`` runs it on."""
    if not heldout:
        return load(name)
    import onnx

    from benchmarks.heldout import INPUTS, declared_inputs, dynamicize, fill

    entry = INPUTS.get(name, {})
    model = onnx.load(str(Path(heldout) / f"{name}.onnx"))
    if entry.get("dynamic"):
        model = dynamicize(model)
    specs = entry.get("inputs") or declared_inputs(model)
    return model, {k: fill(s, seed=i) for i, (k, s) in enumerate(specs.items())}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--without", required=True, help="OP:VARIANT[,OP:VARIANT...] left out of the 'before' table, "
                    "and kernel FORM names generated in it")
    ap.add_argument("--models", default="ppocr_v4_rec", help="comma-separated corpus model names")
    ap.add_argument("--heldout", default=None, help="a held-out folder: --models names its .onnx stems")
    ap.add_argument("--rounds", type=int, default=6, help="rounds of (before, after) in random order")
    ap.add_argument("--runs", type=int, default=5, help="profiled runs per schedule per round")
    ap.add_argument("--name", default="profile_ab", help="results file name")
    args = ap.parse_args()
    removed = [tuple(s.split(":", 1)) for s in args.without.split(",") if ":" in s]
    forms = tuple(s for s in args.without.split(",") if s and ":" not in s)
    peak, peak_how = measured_peak("fma")
    from cnnjit.roofline import SLOW_PEAK_SHARE

    rows, payload = [], {"without": args.without, "rounds": args.rounds, "runs": args.runs, "models": {}}
    for name in args.models.split(","):
        model, feeds = load_any(name, args.heldout)
        shapes = {k: v.shape for k, v in feeds.items()}
        built = {"before": build(model, shapes, removed, forms), "after": build(model, shapes, [])}
        times: dict[str, list[list[int]]] = {k: [] for k in built}
        order, rng = list(built), random.Random(0)
        for _ in range(args.rounds):
            rng.shuffle(order)
            for k in order:
                prof = profile_schedule(built[k][1], feeds, repeat=args.runs, warmup=1, mode="timed")
                if not times[k]:
                    times[k] = [[] for _ in prof.calls]
                for acc, c in zip(times[k], prof.calls):
                    acc.extend(c.times_ns)
        info = {}
        for k, (t, _) in built.items():
            fl, nodes = call_flops(t), [c.node for c in t.program.calls]
            info[k] = [{"variant": c.variant, "op": c.op, "shape": shape_text(n), "flops": f,
                        "min_ms": min(ts) / 1e6, "median_ms": sorted(ts)[len(ts) // 2] / 1e6,
                        "bytes": b}
                       for c, n, f, ts, b in zip(t.program.calls, nodes, fl, times[k], call_bytes(t))]
            for r in info[k]:
                # a call of a few cycles (a view's copy) can time at 0: no rate for it
                r["peak_pct"] = 100 * r["flops"] / (r["min_ms"] * 1e6) / peak if r["flops"] and r["min_ms"] else 0.0
        b, a = info["before"], info["after"]
        sums = {k: sum(r["min_ms"] for r in info[k]) for k in info}
        payload["models"][name] = {"before": b, "after": a, "sum_min_ms": sums}
        if len(b) != len(a):
            print(f"{name}: schedules differ in length ({len(b)} vs {len(a)}), listing the after calls only")
        low = 100 * SLOW_PEAK_SHARE
        print(f"== {name}: sum of call minima before {sums['before']:.3f} ms, after {sums['after']:.3f} ms", flush=True)
        for i, ra in enumerate(a):
            rb = b[i] if len(b) == len(a) else None
            changed = rb is not None and rb["variant"] != ra["variant"]
            slow = ra["flops"] and (ra["peak_pct"] < low or (rb is not None and rb["peak_pct"] < low))
            if not (changed or slow):
                continue
            intensity = ra["flops"] / ra["bytes"] if ra["bytes"] else 0.0
            row = [name, i, ra["op"], ra["shape"], rb["variant"] if rb else "", ra["variant"],
                   rb["min_ms"] * 1e3 if rb else 0.0, ra["min_ms"] * 1e3, rb["peak_pct"] if rb else 0.0,
                   ra["peak_pct"], intensity]
            rows.append(row)
            print(f"  #{i:3d} {ra['shape']:34s} {row[4]:22s} -> {ra['variant']:22s} {row[6]:8.1f} -> {row[7]:8.1f} us "
                  f"{row[8]:5.1f}% -> {row[9]:5.1f}%  {intensity:.2f} FLOP/B", flush=True)
    load_avg = Path("/proc/loadavg").read_text().split()[:3] if Path("/proc/loadavg").exists() else []
    payload.update(peak_gflops=peak, peak=peak_how, loadavg=load_avg)
    write_json(args.name, payload)
    write_markdown(args.name, ["model", "call", "op", "shape", "before variant", "after variant", "before us (min)",
                               "after us (min)", "before % peak", "after % peak", "FLOP/byte"], rows,
                   title=f"Per-call A/B in the model: without {args.without} (before) vs the default table (after)",
                   notes=[f"`python {' '.join(sys.argv)}`: 1 thread, both schedules profiled in {args.rounds} "
                          f"interleaved rounds of {args.runs} runs in one process; minima over all runs; calls "
                          "whose variant changed or below 50% of the peak on either side",
                          f"peak {peak:.1f} GFLOP/s ({peak_how}); load average at the end {' '.join(load_avg)}"])


if __name__ == "__main__":
    main()
