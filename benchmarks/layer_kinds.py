"""Where a chain CNN's single-thread time goes, per layer kind, cnnjit against onnxruntime: cnnjit's kernel calls
timed inside its compiled schedule (``cnnjit.profile.profile_schedule``, cycle counter between calls), onnxruntime's
nodes by its own profiler (``SessionOptions.enable_profiling``, per-node kernel time), both at 1 thread, the two
interleaved in rounds in one process. The layers are matched in graph order (each Conv of onnxruntime's optimised
graph to cnnjit's call, a fused ``InvertedResidual`` call to its two or three Convs) and grouped by kind: stem,
1x1 expand, depthwise stride 1 / 2, 1x1 project (+ residual), fused block, head (the last 1x1, pooling, Gemm).

    python benchmarks/layer_kinds.py --models mobilenet_v2_224 --rounds 6 --runs 10

Printed and written (results/layer_kinds.{json,md}): per kind the summed minima and medians of both engines and
their ratio, per layer the same. ``--before FORM[,FORM...]`` also times cnnjit compiled with those earlier kernel
forms (``kernel.FORMS``) in the same rounds: per kind its minima, its ratio to onnxruntime and the speed-up.

    python benchmarks/layer_kinds.py --models mobilenet_v2_224 --before packed_block_copy,packed_serial_rows

onnxruntime's profiler adds a little to each node's time; the per-kind ratio is what to read, not the sum against
a real run.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.harness import single_thread  # noqa: E402 - stdlib only

single_thread()

import numpy as np  # noqa: E402

from benchmarks.corpus import load  # noqa: E402
from benchmarks.harness import ort_session_options, write_json, write_markdown  # noqa: E402
from cnnjit.inspect_model import trace  # noqa: E402
from cnnjit.ir.ops.fused import has_expand  # noqa: E402
from cnnjit.profile import profile_schedule  # noqa: E402
from cnnjit.runtime.model import Specialization  # noqa: E402

#: Convs a fused call stands for (the op text of ``cnnjit profile``)
FUSED = {"InvertedResidual+expand+dw+project": 3, "InvertedResidual+dw+project": 2}


def conv_kind(x: list[int], w: list[int], residual: bool, first: bool, last: bool) -> str:
    """The kind of a Conv from its input and weight shapes."""
    m, cg, kh, kw = w
    if first:
        return "stem"
    if cg == 1 and m == x[1] > 1:
        return "depthwise"
    if kh == kw == 1:
        if last:
            return "head 1x1"
        return "1x1 expand" if m > x[1] else ("1x1 project + residual" if residual else "1x1 project")
    return f"{kh}x{kw} conv"


def ort_nodes(model, feeds: dict, runs: int) -> list[dict]:
    """onnxruntime's nodes in execution order: op, input shapes, kernel times (us) over ``runs`` runs."""
    import onnxruntime as ort

    so = ort_session_options(1)
    so.enable_profiling = True
    so.profile_file_prefix = os.path.join(tempfile.gettempdir(), f"layer_kinds_{os.getpid()}")
    sess = ort.InferenceSession(model.SerializeToString(), so, providers=["CPUExecutionProvider"])
    for _ in range(runs):
        sess.run(None, feeds)
    path = sess.end_profiling()
    events = json.loads(Path(path).read_text())
    os.remove(path)
    order: dict[str, dict] = {}
    for e in events:
        if e.get("cat") != "Node" or not e["name"].endswith("_kernel_time"):
            continue
        name = e["name"][: -len("_kernel_time")]
        shapes = [next(iter(v.values())) for v in e["args"].get("input_type_shape", [])]
        rec = order.setdefault(name, {"name": name, "op": e["args"].get("op_name"), "times": [], "inputs": shapes})
        rec["times"].append(e["dur"])
    return list(order.values())


def group(calls: list[dict], nodes: list[dict]) -> list[dict]:
    """cnnjit's calls matched to onnxruntime's nodes in graph order: each row one cnnjit call and the nodes it
    covers (a Conv call one Conv, a fused block its Convs; other calls the next nodes of the same op; nodes
    with no counterpart, onnxruntime's layout reorders and Flatten, go to the row before)."""
    convs = [i for i, n in enumerate(nodes) if n["op"] == "Conv"]
    rows, k = [], 0
    for c in calls:
        want = FUSED.get(c["op"], 1 if c["op"].startswith("Conv") else 0)
        mine: list[int] = []
        if want:
            mine = [i for i in convs if i >= k][:want]
        else:
            op = c["op"].split("+")[0]
            mine = [i for i in range(k, len(nodes)) if nodes[i]["op"] == op][:1]
        if mine:
            k = mine[-1] + 1
        rows.append({"call": c, "nodes": mine})
    # nodes left out (Reorder*, Flatten): added to the row whose last node precedes them
    taken = {i for r in rows for i in r["nodes"]}
    for i in range(len(nodes)):
        if i not in taken:
            prev = [r for r in rows if r["nodes"] and r["nodes"][-1] < i]
            (prev[-1] if prev else rows[0])["nodes"].append(i)
    return rows


def kind_of(row: dict, nodes: list[dict], n_convs: int, conv_index: dict[int, int]) -> str:
    c = row["call"]
    if c["op"] in FUSED:
        return "fused block"
    convs = [i for i in row["nodes"] if nodes[i]["op"] == "Conv"]
    if not convs:
        return "head " + c["op"].split("+")[0]
    n = nodes[convs[0]]
    x, w = n["inputs"][0], n["inputs"][1]
    idx = conv_index[convs[0]]
    kind = conv_kind(x, w, len(n["inputs"]) > 3, idx == 0, idx == n_convs - 1)  # (onnxruntime's Conv + Sum)
    if kind.startswith("depthwise"):
        kind = f"depthwise s{c['stride']}"
    return kind


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", default="mobilenet_v2_224", help="comma-separated corpus model names")
    ap.add_argument("--rounds", type=int, default=6, help="rounds of (cnnjit, onnxruntime) in random order")
    ap.add_argument("--runs", type=int, default=10, help="runs per engine per round")
    ap.add_argument("--name", default="layer_kinds", help="results file name")
    ap.add_argument("--before", default="", help="FORM[,FORM...]: also time cnnjit with these earlier kernel forms")
    args = ap.parse_args()
    payload: dict = {"rounds": args.rounds, "runs": args.runs, "models": {}}
    md_rows = []
    for name in args.models.split(","):
        model, feeds = load(name)
        shapes = {k: v.shape for k, v in feeds.items()}
        t = trace(model, shapes, entry="numba", threads=1)
        specs = {"cnnjit": Specialization(t.graph, t.program)}
        forms = tuple(f for f in args.before.split(",") if f)
        if forms:
            tb = trace(model, shapes, entry="numba", threads=1, forms=forms)
            assert len(tb.program.calls) == len(t.program.calls), "the forms changed the schedule"
            specs["before"] = Specialization(tb.graph, tb.program)
        times: dict[str, list[list[int]]] = {}
        theirs: list[dict] = []
        rng = random.Random(0)
        for _ in range(args.rounds):
            for engine in rng.sample([*specs, "ort"], len(specs) + 1):
                if engine in specs:
                    prof = profile_schedule(specs[engine], feeds, repeat=args.runs, warmup=1, mode="timed")
                    acc_calls = times.setdefault(engine, [[] for _ in prof.calls])
                    for acc, c in zip(acc_calls, prof.calls):
                        acc.extend(c.times_ns)
                else:
                    got = ort_nodes(model, feeds, args.runs + 1)
                    if not theirs:
                        theirs = [dict(n, times=[]) for n in got]
                    for acc, n in zip(theirs, got):
                        acc["times"].extend(n["times"][1:])
        ours = times["cnnjit"]
        old = times.get("before", [[0] for _ in ours])
        calls = []
        for c, ts, bs in zip(t.program.calls, ours, old):
            node = c.node
            op = c.op
            if op == "InvertedResidual":  # (the two or three Convs it stands for)
                op = "InvertedResidual+expand+dw+project" if has_expand(node) else "InvertedResidual+dw+project"
            stride = node.attrs.get("strides", [1])[-1] if node is not None else 1
            calls.append({"op": op, "variant": c.variant, "stride": stride, "min_us": min(ts) / 1e3,
                          "median_us": float(np.median(ts)) / 1e3, "before_min_us": min(bs) / 1e3})
        conv_ids = [i for i, n in enumerate(theirs) if n["op"] == "Conv"]
        conv_index = {i: k for k, i in enumerate(conv_ids)}
        rows = group(calls, theirs)
        kinds: dict[str, dict] = {}
        layers = []
        for r in rows:
            kind = kind_of(r, theirs, len(conv_ids), conv_index)
            o_min = sum(min(theirs[i]["times"]) for i in r["nodes"])
            o_med = sum(float(np.median(theirs[i]["times"])) for i in r["nodes"])
            k = kinds.setdefault(kind, {"calls": 0, "cnnjit_min_us": 0.0, "ort_min_us": 0.0, "cnnjit_median_us": 0.0,
                                        "ort_median_us": 0.0, "before_min_us": 0.0})
            k["calls"] += 1
            k["before_min_us"] += r["call"]["before_min_us"]
            k["cnnjit_min_us"] += r["call"]["min_us"]
            k["cnnjit_median_us"] += r["call"]["median_us"]
            k["ort_min_us"] += o_min
            k["ort_median_us"] += o_med
            layers.append({"kind": kind, "variant": r["call"]["variant"], "op": r["call"]["op"],
                           "ort_nodes": [theirs[i]["name"] for i in r["nodes"]],
                           "ort_inputs": [theirs[i]["inputs"][:2] for i in r["nodes"]],
                           "cnnjit_min_us": r["call"]["min_us"], "ort_min_us": o_min,
                           "cnnjit_median_us": r["call"]["median_us"], "ort_median_us": o_med,
                           "before_min_us": r["call"]["before_min_us"]})
        total = {e: sum(k[f"{e}_min_us"] for k in kinds.values()) for e in ("cnnjit", "ort", "before")}
        print(f"== {name}: sum of minima cnnjit {total['cnnjit'] / 1e3:.3f} ms, onnxruntime "
              f"{total['ort'] / 1e3:.3f} ms" + (f", before {total['before'] / 1e3:.3f} ms" if forms else ""))
        for kind, k in sorted(kinds.items(), key=lambda kv: -kv[1]["cnnjit_min_us"]):
            ratio = k["cnnjit_min_us"] / k["ort_min_us"] if k["ort_min_us"] else float("nan")
            was = k["before_min_us"] / k["ort_min_us"] if k["ort_min_us"] else float("nan")
            print(f"  {kind:26s} {k['calls']:3d} calls  cnnjit {k['cnnjit_min_us']:8.1f} us  onnxruntime "
                  f"{k['ort_min_us']:8.1f} us  ratio {ratio:.3f}"
                  + (f"  before {k['before_min_us']:8.1f} us (ratio {was:.3f}, speed-up "
                     f"{k['before_min_us'] / k['cnnjit_min_us']:.3f}x)" if forms else ""))
            md_rows.append([name, kind, k["calls"], k["cnnjit_min_us"], k["ort_min_us"], ratio,
                            k["cnnjit_median_us"], k["ort_median_us"],
                            *([k["before_min_us"], was] if forms else [])])
        payload["models"][name] = {"kinds": kinds, "layers": layers, "sum_min_us": total}
    load_avg = Path("/proc/loadavg").read_text().split()[:3] if Path("/proc/loadavg").exists() else []
    payload["loadavg"] = load_avg
    write_json(args.name, payload)
    write_markdown(args.name, ["model", "kind", "calls", "cnnjit us (min)", "onnxruntime us (min)", "ratio",
                               "cnnjit us (median)", "onnxruntime us (median)",
                               *(["before us (min)", "before ratio"] if args.before else [])], md_rows,
                   title="Single-thread time per layer kind: cnnjit's calls against onnxruntime's nodes",
                   notes=[f"`python {' '.join(sys.argv)}`: 1 thread each, {args.rounds} interleaved rounds of "
                          f"{args.runs} runs in one process; cnnjit timed inside its schedule, onnxruntime by its "
                          "profiler (per-node kernel time); sums of per-layer minima",
                          f"load average at the end {' '.join(load_avg)}"])


if __name__ == "__main__":
    main()
