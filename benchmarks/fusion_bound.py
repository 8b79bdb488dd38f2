"""The ceiling of fused / unfused on one model, from today's per-layer-class speeds (issue 19's block fusion).

    python benchmarks/fusion_bound.py [--model mobilenet_v2_224] [--runs 40]

Compiles the model with ``fuse=True`` and ``fuse=False`` (one thread), then times every kernel call of both
schedules as they really run (``cnnjit.profile``'s timed numba entry: the schedule with a cycle-counter read
between calls), the two schedules alternating in random order for ``--runs`` runs; each call's minimum is
its time. Calls are grouped in classes (``CLASSES``: the stem / dense KxK conv, 1x1 conv, depthwise conv,
fused ``InvertedResidual`` block, Gemm, everything else). For the compute classes the best rate measured on
any call of that class in either schedule (GFLOP/s = the call's FLOPs over its minimum) is the class's
ceiling; a fused block is split into its expand and project (1x1 rate) and depthwise (depthwise rate) FLOPs.
The fused schedule at best takes, per call, the larger of its FLOPs at its class ceiling and its unavoidable
memory traffic (``flops.node_bytes``: every operand read once, every result written once) at the measured
bandwidth of the memory level that holds it (``roofline.memory_levels``); Gemm and the other calls keep
their measured minima. The bound on fused / unfused is the unfused schedule's measured sum over that. Also
reported: the whole real runs' minimum thread CPU time (time other processes take from the core does not
count), and the share of the FMA peak (``fma_peak_cpu``) the fused schedule's FLOPs would need on average
for 1.5x. Writes ``results/fusion_bound.{json,md}``.
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.harness import single_thread  # noqa: E402

single_thread()

import argparse  # noqa: E402
import os  # noqa: E402
import random  # noqa: E402
import time  # noqa: E402
from typing import Any  # noqa: E402

import numpy as np  # noqa: E402

import cnnjit  # noqa: E402
from benchmarks.harness import machine_info, markdown_table, write_json, write_markdown  # noqa: E402
from benchmarks.models import MODEL_SET, load  # noqa: E402
from cnnjit.compiler.codegen.build import load_kernel  # noqa: E402
from cnnjit.compiler.codegen.cycles import tick_seconds  # noqa: E402
from cnnjit.compiler.codegen.simd import host_vector_registers, host_vector_width  # noqa: E402
from cnnjit.flops import node_bytes, node_flops  # noqa: E402
from cnnjit.ir.ops.fused import block_input  # noqa: E402
from cnnjit.profile import _write_inputs, fma_chains, fma_source, timed_entry  # noqa: E402
from cnnjit.roofline import level_of, memory_levels  # noqa: E402

NAME = "fusion_bound"


def call_class(node: Any) -> str:
    """The layer class of a call's node (``CLASSES``)."""
    if node is None:
        return "other"
    if node.op == "InvertedResidual":
        return "block"
    if node.op == "Gemm":
        return "gemm"
    if node.op != "Conv":
        return "other"
    if node.attrs["group"] > 1 and node.attrs["group"] == node.inputs[0].shape[1]:
        return "depthwise"
    return "pointwise" if all(k == 1 for k in node.attrs["kernel_shape"]) else "conv"


#: the classes, and which of them have a compute ceiling (their best measured rate)
CLASSES = {"conv": True, "pointwise": True, "depthwise": True, "block": False, "gemm": False, "other": False}


def block_parts(node: Any) -> dict[str, int]:
    """An ``InvertedResidual``'s FLOPs by part: the 1x1 convs' (expand + project) and the depthwise conv's
    (activations counted with the conv they follow, as ``flops.node_flops`` does)."""
    x, w1, w2, w3 = (block_input(node, n) for n in ("x", "w1", "w2", "w3"))
    y = node.outputs[0].shape
    hidden = w2.shape[0]
    out_px = int(np.prod(y[2:]))
    in_px = int(np.prod(x.shape[2:]))
    pw = 2 * out_px * y[1] * w3.shape[1] + (2 * in_px * hidden * w1.shape[1] if w1 is not None else 0)
    total = node_flops(node)
    return {"pointwise": pw, "depthwise": total - pw}


def time_calls(models: dict[str, Any], feeds: dict[str, np.ndarray], runs: int, warmup: int = 3
               ) -> tuple[dict[str, list[int]], dict[str, int]]:
    """Per schedule, each call's minimum time (ns) over ``runs`` runs of the timed numba entry (the real
    schedule with a cycle-counter read between calls: kernels inlined, sizes constant, as a real run), and
    the real entry's minimum whole-run thread CPU time (ns); the schedules in random order each round."""
    prepared = {}
    for k, m in models.items():
        p = m._default_spec().program
        bufs, bufs_t = p.allocate(), p.allocate()
        ts = np.zeros(len(p.calls) + 1, np.int64)
        prepared[k] = (p, timed_entry(p), [bufs[n] for n in p.buffer_names], bufs,
                       [bufs_t[n] for n in p.buffer_names] + [ts], bufs_t, ts)
    tick_ns = tick_seconds() * 1e9
    best = {k: [1 << 62] * len(v[0].calls) for k, v in prepared.items()}
    whole = {k: 1 << 62 for k in prepared}
    for r in range(warmup + runs):
        order = list(prepared)
        random.shuffle(order)
        for k in order:
            p, timed, args, bufs, args_t, bufs_t, ts = prepared[k]
            _write_inputs(p, bufs_t, feeds)
            timed(*args_t)
            _write_inputs(p, bufs, feeds)
            t0 = time.thread_time_ns()
            p.run(*args)
            t = time.thread_time_ns() - t0
            if r >= warmup:
                whole[k] = min(whole[k], t)
                best[k] = [min(b, int(d * tick_ns)) for b, d in zip(best[k], np.diff(ts))]
    return best, whole


def call_rows(model: Any, mins: list[int]) -> list[dict[str, Any]]:
    """Per call: class, FLOPs (a node's split evenly over its calls), unavoidable bytes, minimum seconds."""
    p = model._default_spec().program
    per_node: dict[int, int] = {}
    for c in p.calls:
        if c.node is not None:
            per_node[c.node.id] = per_node.get(c.node.id, 0) + 1
    rows = []
    for c, t in zip(p.calls, mins):
        n = c.node
        share = per_node.get(n.id, 1) if n is not None else 1
        rows.append({"class": call_class(n), "node": n, "flops": node_flops(n) // share if n is not None else 0,
                     "bytes": node_bytes(n) // share if n is not None else 0, "s": t * 1e-9,
                     "variant": c.variant})
    return rows


def ceilings(rows: list[dict[str, Any]]) -> dict[str, float]:
    """Best measured GFLOP/s per compute class (over every call of both schedules)."""
    best: dict[str, float] = {}
    for r in rows:
        if CLASSES[r["class"]] and r["s"] > 0 and r["flops"]:
            best[r["class"]] = max(best.get(r["class"], 0.0), r["flops"] / r["s"] * 1e-9)
    return best


def ideal_seconds(r: dict[str, Any], best: dict[str, float], levels: list[Any]) -> tuple[float, float]:
    """(compute at the class ceilings, memory at its level's bandwidth) of one fused-schedule call; calls
    without a ceiling: their measured minimum as compute."""
    if r["class"] == "block":
        compute = sum(f / (best[k] * 1e9) for k, f in block_parts(r["node"]).items())
    elif CLASSES[r["class"]]:
        compute = r["flops"] / (best[r["class"]] * 1e9)
    else:
        return r["s"], 0.0
    lv = level_of(r["bytes"], levels)
    return compute, r["bytes"] / (lv.gbs * 1e9) if lv.gbs else 0.0


def fma_peak_cpu(repeat: int = 50) -> float:
    """The float32 FMA peak in GFLOP/s (``cnnjit.profile``'s register-only FMA loop), timed with the thread's
    CPU clock, best of ``repeat`` runs of ~2 ms: under load a wall-clock probe reads low."""
    w = host_vector_width()
    chains = fma_chains(host_vector_registers(w))
    kern = load_kernel(fma_source(w, chains))
    buf = np.full(2 * w + chains, 1e-3, np.float32)
    n = 1 << 16
    kern(buf, n)
    best = 0.0
    for _ in range(repeat):
        t0 = time.thread_time_ns()
        kern(buf, n)
        best = max(best, 2.0 * w * chains * n / max(time.thread_time_ns() - t0, 1))
    return best


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="mobilenet_v2_224", choices=sorted(MODEL_SET))
    ap.add_argument("--runs", type=int, default=40)
    ap.add_argument("--out-dir", default=None)
    args = ap.parse_args(argv)
    model, feeds = load(args.model)
    shapes = {k: v.shape for k, v in feeds.items()}
    models = {"fused": cnnjit.compile(model, input_shapes=shapes, threads=1),
              "unfused": cnnjit.compile(model, input_shapes=shapes, threads=1, fuse=False)}
    mins, whole = time_calls(models, feeds, args.runs)
    rows = {k: call_rows(m, mins[k]) for k, m in models.items()}
    best = ceilings(rows["fused"] + rows["unfused"])
    peak = fma_peak_cpu()
    levels = memory_levels(peak)
    parts = [ideal_seconds(r, best, levels) for r in rows["fused"]]
    ideal = sum(max(c, m) for c, m in parts)
    measured = {k: sum(r["s"] for r in v) for k, v in rows.items()}
    by_class: dict[str, dict[str, float]] = {}
    for r, (c, m) in zip(rows["fused"], parts):
        d = by_class.setdefault(r["class"], {"calls": 0, "flops": 0, "measured_s": 0.0, "ideal_s": 0.0})
        d["calls"] += 1
        d["flops"] += r["flops"]
        d["measured_s"] += r["s"]
        d["ideal_s"] += max(c, m)
    for r in rows["unfused"]:
        d = by_class.setdefault(r["class"], {"calls": 0, "flops": 0, "measured_s": 0.0, "ideal_s": 0.0})
        d["unfused_s"] = d.get("unfused_s", 0.0) + r["s"]
    flops = sum(r["flops"] for r in rows["fused"])
    target = measured["unfused"] / 1.5
    res = {"model": args.model, "fused_flops": flops, "time_for_1_5x_s": target,
           "peak_share_for_1_5x": flops / (peak * 1e9) / target, "runs": args.runs, "ceilings_gflops": best,
           "fma_peak_gflops": peak,
           "measured_s": measured, "fused_ideal_s": ideal, "measured_ratio": measured["unfused"] / measured["fused"],
           "bound_ratio": measured["unfused"] / ideal, "by_class": by_class,
           "load": os.getloadavg(), "whole_run_cpu_min_s": {k: v * 1e-9 for k, v in whole.items()},
           "blocks": [{"node": r["node"].name or r["node"].describe(), "measured_s": r["s"], "ideal_compute_s": c,
                       "memory_s": m, "flops": r["flops"]}
                      for r, (c, m) in zip(rows["fused"], parts) if r["class"] == "block"]}
    info = machine_info()
    write_json(NAME, {"machine": info, "args": vars(args), "result": res}, args.out_dir)
    table = [[k, d["calls"], f"{d['flops'] / 1e6:.1f}", f"{d['measured_s'] * 1e3:.3f}",
              f"{d['ideal_s'] * 1e3:.3f}", f"{d.get('unfused_s', 0.0) * 1e3:.3f}",
              f"{best[k]:.1f}" if k in best else "-"] for k, d in by_class.items()]
    blocks = [[b["node"], f"{b['flops'] / 1e6:.1f}", f"{b['measured_s'] * 1e3:.3f}",
               f"{b['ideal_compute_s'] * 1e3:.3f}", f"{b['memory_s'] * 1e3:.3f}",
               f"{b['flops'] / b['measured_s'] * 1e-9:.1f}"] for b in res["blocks"]]
    notes = [f"sum of per-call minima ({args.runs} runs of the timed numba entry, cycle counter between calls, "
             f"schedules interleaved in random order): "
             f"fused {measured['fused'] * 1e3:.3f} ms, unfused {measured['unfused'] * 1e3:.3f} ms: "
             f"**measured {res['measured_ratio']:.3f}x**; whole real runs, minimum thread CPU time: fused "
             f"{whole['fused'] * 1e-6:.3f} ms, unfused {whole['unfused'] * 1e-6:.3f} ms: "
             f"{whole['unfused'] / whole['fused']:.3f}x",
             f"fused at best (every call at its class ceiling or its memory time, whichever is larger): "
             f"{ideal * 1e3:.3f} ms: **bound {res['bound_ratio']:.3f}x**; measured / bound = "
             f"{res['measured_ratio'] / res['bound_ratio']:.3f}",
             f"1.5x needs the fused schedule in {target * 1e3:.3f} ms: its {flops / 1e6:.0f} MFLOP at "
             f"{res['peak_share_for_1_5x']:.1%} of the FMA peak ({peak:.1f} GFLOP/s, thread CPU time) on average, "
             f"memory-bound Gemm included; the best single layer of a class reaches "
             f"{max(best.values()) / peak:.1%}",
             f"load average {res['load'][0]:.1f} on {os.cpu_count()} CPUs (the memory levels' bandwidths are "
             f"best-of-5 stream probes; wall-clock, so under load they err low: the memory times high)"]
    path = write_markdown(NAME, ["class (fused schedule)", "calls", "MFLOP", "measured ms", "at best ms",
                                 "unfused ms", "ceiling GFLOP/s"], table,
                          title=f"Block fusion bound: {args.model}", out_dir=args.out_dir, machine=info, notes=notes)
    with path.open("a") as f:
        f.write("\n".join(["", "## Fused blocks", "", markdown_table(
            ["block", "MFLOP", "measured ms", "compute at ceilings ms", "memory ms", "GFLOP/s"], blocks), ""]))
    print(path.read_text())
    return 0


if __name__ == "__main__":
    sys.exit(main())
