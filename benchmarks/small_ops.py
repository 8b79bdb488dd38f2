"""The small non-conv calls of issue 17's "no layer below 50% of peak" (Softmax over short rows, a YOLOv8
DFL Softmax, DynamicQuantizeLinear, small-head attention, an attention Tanh): each shape as a one-node
model, compiled with the default variant table ("after") and without the variants this benchmark is about
("before", ``harness.variants_without``), timed inside the compiled schedule (``profile.profile_schedule``:
the numba entry with a cycle-counter read around the call) in interleaved rounds of random order, one
process, 1 thread. Per shape: median and min us of each, the speed-up, GFLOP/s and % of the FMA peak
after (FLOPs as ``cnnjit.flops`` counts them: an exp or tanh at the arithmetic of its vector-math function)
and the roofline verdict (``roofline.verdict`` on the call's bytes at the level they fit in).

    python benchmarks/small_ops.py [--ops softmax,dql,attention,tanh] [--rounds 15] [--runs 20]
    python benchmarks/small_ops.py --models yolov8_head,svtr_block,ppocr_v4_rec --runs 30   # whole models
    python benchmarks/small_ops.py --models /work/heldout/slanet_table.onnx@x=1x3x488x488 --runs 10
"""

from __future__ import annotations

import argparse
import random
import statistics
import sys
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.harness import single_thread  # noqa: E402 - stdlib only

single_thread()

import numpy as np  # noqa: E402
import onnx  # noqa: E402
from onnx import TensorProto, helper  # noqa: E402

from benchmarks.harness import variants_without, write_json, write_markdown  # noqa: E402
from cnnjit.compiler.stages import CompileOptions, specialize  # noqa: E402
from cnnjit.flops import node_bytes, node_flops  # noqa: E402
from cnnjit.profile import measured_peak, profile_schedule  # noqa: E402
from cnnjit.roofline import level_of, memory_levels, memory_seconds, verdict  # noqa: E402

#: (op, variant) pairs the "before" table leaves out, per benchmark
BEFORE: dict[str, list[tuple[str, str]]] = {
    "softmax": [("Softmax", "softmax_across_rows")],
    "dql": [("DynamicQuantizeLinear", "simd_dynamic_quantize")],
    "attention": [],
    "tanh": [],
}
#: earlier forms of kernel code the "before" compile asks for, per benchmark (``codegen.kernel.FORMS``)
BEFORE_FORMS: dict[str, list[str]] = {
    "softmax": ["softmax_vexpneg"],
    "attention": ["softmax_vexpneg", "attention_scalar_kt", "attention_wide_rows"],
    "tanh": ["tanh_vtanh"],
}


def _model(nodes: list, inputs: dict[str, tuple[int, ...]], outputs: dict[str, tuple[int, int]]) -> onnx.ModelProto:
    g = helper.make_graph(nodes, "small", [helper.make_tensor_value_info(k, TensorProto.FLOAT, list(s))
                                           for k, s in inputs.items()],
                          [helper.make_tensor_value_info(k, t, None) for k, (t, _) in outputs.items()])
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)


def softmax_case(shape: tuple[int, ...], axis: int) -> tuple[onnx.ModelProto, dict[str, tuple[int, ...]]]:
    node = helper.make_node("Softmax", ["x"], ["y"], axis=axis)
    return _model([node], {"x": shape}, {"y": (TensorProto.FLOAT, 0)}), {"x": shape}


def dql_case(shape: tuple[int, ...]) -> tuple[onnx.ModelProto, dict[str, tuple[int, ...]]]:
    node = helper.make_node("DynamicQuantizeLinear", ["x"], ["y", "s", "z"])
    outs = {"y": (TensorProto.UINT8, 0), "s": (TensorProto.FLOAT, 0), "z": (TensorProto.UINT8, 0)}
    return _model([node], {"x": shape}, outs), {"x": shape}


def attention_case(heads: int, seq: int, dim: int) -> tuple[onnx.ModelProto, dict[str, tuple[int, ...]]]:
    """``Softmax(q @ k^T * dim^-0.5) @ v`` as an SVTR block exports it (``fuse_attention`` makes it one node)."""
    s = (1, heads, seq, dim)
    scale = helper.make_tensor("sc", TensorProto.FLOAT, [], [dim ** -0.5])
    nodes = [helper.make_node("Transpose", ["k"], ["kt"], perm=[0, 1, 3, 2]),
             helper.make_node("MatMul", ["q", "kt"], ["qk"]), helper.make_node("Mul", ["qk", "sc"], ["a"]),
             helper.make_node("Softmax", ["a"], ["p"], axis=-1), helper.make_node("MatMul", ["p", "v"], ["y"])]
    m = _model(nodes, {"q": s, "k": s, "v": s}, {"y": (TensorProto.FLOAT, 0)})
    m.graph.initializer.append(scale)
    return m, {"q": s, "k": s, "v": s}


def tanh_case(rows: int, cols: int, dim: int) -> tuple[onnx.ModelProto, dict[str, tuple[int, ...]]]:
    """additive attention's ``Tanh(q + k)``: ``q [rows, 1, dim] + k [1, cols, dim]`` (SLANet's 256-wide)."""
    nodes = [helper.make_node("Add", ["q", "k"], ["s"]), helper.make_node("Tanh", ["s"], ["y"])]
    return (_model(nodes, {"q": (1, rows, 1, dim), "k": (1, 1, cols, dim)}, {"y": (TensorProto.FLOAT, 0)}),
            {"q": (1, rows, 1, dim), "k": (1, 1, cols, dim)})


CASES: dict[str, list[tuple[str, Callable[[], tuple[onnx.ModelProto, dict]]]]] = {
    "softmax": [
        ("DFL 1x16x4x84 axis 1", lambda: softmax_case((1, 16, 4, 84), 1)),
        ("DFL 1x16x4x2100 axis 1", lambda: softmax_case((1, 16, 4, 2100), 1)),
        ("rows 1344x16", lambda: softmax_case((1344, 16), -1)),
        ("heads 8x40x40", lambda: softmax_case((8, 40, 40), -1)),
        ("heads 4x64x64", lambda: softmax_case((4, 64, 64), -1)),
        ("rows 256x80", lambda: softmax_case((256, 80), -1)),
        ("classes 64x97", lambda: softmax_case((64, 97), -1)),
        ("rows 100x8", lambda: softmax_case((100, 8), -1)),
    ],
    "dql": [(f"DQL {'x'.join(map(str, s))}", lambda s=s: dql_case(s)) for s in
            [(1, 3, 64, 64), (1, 72, 16, 16), (1, 288, 4, 4), (1, 576, 2, 2), (1, 32, 16, 64), (32, 1, 64)]],
    "attention": [(f"attention {h}x{n}x{d}", lambda h=h, n=n, d=d: attention_case(h, n, d)) for h, n, d in
                  [(8, 40, 15), (4, 64, 16), (2, 80, 32), (8, 26, 12), (12, 50, 8)]],
    "tanh": [(f"Tanh(q + k) {r}x{c}x{d}", lambda r=r, c=c, d=d: tanh_case(r, c, d)) for r, c, d in
             [(1, 256, 256), (4, 64, 96), (1, 1200, 96)]],
}


def _feeds(shapes: dict[str, tuple[int, ...]], seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {k: (rng.standard_normal(s) * 2).astype(np.float32) for k, s in shapes.items()}


def _compile(model: onnx.ModelProto, shapes: dict, removed: list[tuple[str, str]] | None = None,
             forms: list[str] | None = None):
    opts = CompileOptions(threads=1, entry="numba", forms=tuple(forms or ()))
    with variants_without(removed or []):
        return specialize(model, shapes, opts)


def run_case(model: onnx.ModelProto, shapes: dict, removed: list[tuple[str, str]], forms: list[str], rounds: int,
             runs: int) -> dict:
    """Both compiles timed in ``rounds`` interleaved rounds of ``runs`` schedule runs each (random order per
    round); per variant: every kernel call's times summed per run, median and min over all runs."""
    feeds = _feeds(shapes)
    specs = {"after": _compile(model, shapes), "before": _compile(model, shapes, removed, forms)}
    outs = {k: s.run(feeds) for k, s in specs.items()}
    diff = max(float(np.max(np.abs(a.astype(np.float64) - b.astype(np.float64))))
               for a, b in zip(outs["after"], outs["before"]))
    times: dict[str, list[float]] = {k: [] for k in specs}
    rng = random.Random(0)
    order = list(specs)
    for _ in range(rounds):
        rng.shuffle(order)
        for k in order:
            prof = profile_schedule(specs[k], feeds, repeat=runs, warmup=2, mode="timed")
            per_run = [sum(c.times_ns[r] for c in prof.calls) for r in range(len(prof.calls[0].times_ns))]
            times[k] += per_run
    res = {k: {"median_us": statistics.median(v) / 1e3, "min_us": min(v) / 1e3} for k, v in times.items()}
    prog = specs["after"].program
    nodes = [c.node for c in prog.calls if c.node is not None]
    uniq = list({id(n): n for n in nodes}.values())
    res["variants"] = {k: sorted({c.variant for c in s.program.calls if c.variant}) for k, s in specs.items()}
    res["flops"] = sum(node_flops(n) for n in uniq)
    res["bytes"] = sum(node_bytes(n) for n in uniq)
    res["max_abs_diff"] = diff
    return res


def models_main(names: list[str], runs: int, out: str) -> int:
    """Whole models (``corpus.ALL_MODELS`` names or ONNX files), 1 thread: the default compile (after) against
    one with every "before" of this benchmark at once (the variants left out, the earlier forms) and
    onnxruntime, interleaved (``harness.measure``, thread CPU time: the machine is shared)."""
    import time

    import cnnjit
    from benchmarks.corpus import load
    from benchmarks.harness import measure, ort_session
    from benchmarks.variant_ab import file_model

    removed = [p for v in BEFORE.values() for p in v]
    forms = sorted({f for fs in BEFORE_FORMS.values() for f in fs})
    rows, payload = [], {"runs": runs, "models": {}}
    for name in names:
        path, _, dims = name.partition("@")  # a file's input shape: model.onnx@x=1,3,488,488
        model, feeds = file_model(path) if path.endswith(".onnx") else load(path)
        if dims:
            k, _, d = dims.partition("=")
            feeds[k] = np.random.default_rng(0).standard_normal(tuple(int(v) for v in d.split("x"))).astype(np.float32)
        shapes = {k: v.shape for k, v in feeds.items()}
        after = cnnjit.compile(model, threads=1, input_shapes=shapes)
        with variants_without(removed):
            before = cnnjit.compile(model, threads=1, input_shapes=shapes, forms=forms)
            before(**feeds)  # a Loop model's segments compile at its first call: inside the "before" context
        ort = ort_session(model, threads=1)
        outs = [o if isinstance(o, (list, tuple)) else [o] for o in (after(**feeds), before(**feeds))]
        diff = max(float(np.max(np.abs(np.asarray(a, np.float64) - np.asarray(b, np.float64))))
                   for a, b in zip(*outs))
        t = measure({"after": lambda: after(**feeds), "before": lambda: before(**feeds),
                     "onnxruntime": lambda: ort.run(None, feeds)}, runs=runs, warmup=3, clock=time.thread_time_ns)
        ms = {k: v["median_ms"] for k, v in t.items()}
        mn = {k: v["min_ms"] for k, v in t.items()}
        label = Path(path).stem
        payload["models"][label] = {"median_ms": ms, "min_ms": mn, "max_abs_diff": diff}
        print(f"{label}: before {ms['before']:.3f} ms, after {ms['after']:.3f} ms ({ms['before'] / ms['after']:.3f}x, "
              f"min {mn['before'] / mn['after']:.3f}x), onnxruntime {ms['onnxruntime']:.3f} ms: ratio after "
              f"{ms['after'] / ms['onnxruntime']:.3f}, before {ms['before'] / ms['onnxruntime']:.3f}; "
              f"max |after - before| {diff:.1e}", flush=True)
        rows.append([label, ms["before"], ms["after"], ms["before"] / ms["after"], mn["before"] / mn["after"],
                     ms["onnxruntime"], ms["after"] / ms["onnxruntime"], ms["before"] / ms["onnxruntime"], diff])
    write_json(out, payload)
    write_markdown(out, ["model", "before ms", "after ms", "speed-up", "speed-up (min)", "onnxruntime ms",
                         "after / ort", "before / ort", "max abs diff"], rows,
                   title="Small non-conv calls: whole-model effect (1 thread)",
                   notes=[f"`python benchmarks/small_ops.py --models ... --runs {runs}`: thread CPU time, median of "
                          "interleaved runs in one process; before = every variant and setting of this benchmark's "
                          "'before' at once"])
    return 0


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", default="", help="comma-separated corpus names or .onnx files: whole-model A/B")
    ap.add_argument("--ops", default=",".join(CASES))
    ap.add_argument("--rounds", type=int, default=15)
    ap.add_argument("--runs", type=int, default=20)
    ap.add_argument("--out", default="small_ops")
    args = ap.parse_args()
    if args.models:
        return models_main([m for m in args.models.split(",") if m], args.runs, args.out + "_models")
    peak, _ = measured_peak("fma", threads=1)
    levels = memory_levels(peak)
    rows, payload = [], {"peak_gflops": peak, "rounds": args.rounds, "runs": args.runs, "cases": {}}
    for op in [o for o in args.ops.split(",") if o]:
        for name, build in CASES[op]:
            model, shapes = build()
            r = run_case(model, shapes, BEFORE[op], BEFORE_FORMS.get(op, []), args.rounds, args.runs)
            t = r["after"]["median_us"] * 1e-6
            gflops = r["flops"] / t / 1e9 if t else 0.0
            lv = level_of(r["bytes"], levels)
            mem_s = memory_seconds(r["bytes"], 0, lv)
            under = r["flops"] < mem_s * peak * 1e9
            v = verdict(under, mem_s / t if t else 0.0, gflops / peak if r["flops"] else None)
            payload["cases"][name] = {**r, "op": op, "gflops": gflops, "percent_of_peak": 100 * gflops / peak,
                                      "level": lv.name, "verdict": v}
            sp = r["before"]["median_us"] / r["after"]["median_us"]
            spm = r["before"]["min_us"] / r["after"]["min_us"]
            print(f"{name}: before {r['before']['median_us']:.2f} us ({'/'.join(r['variants']['before'])}), after "
                  f"{r['after']['median_us']:.2f} us ({'/'.join(r['variants']['after'])}): {sp:.2f}x (min {spm:.2f}x); "
                  f"{gflops:.1f} GFLOP/s {100 * gflops / peak:.0f}% of peak, {v} ({lv.name}); "
                  f"max |diff| {r['max_abs_diff']:.1e}", flush=True)
            rows.append([name, "/".join(r["variants"]["before"]), "/".join(r["variants"]["after"]),
                         r["before"]["median_us"], r["after"]["median_us"], sp, r["before"]["min_us"],
                         r["after"]["min_us"], spm, r["flops"], gflops, 100 * gflops / peak, f"{v} ({lv.name})"])
    write_json(args.out, payload)
    write_markdown(args.out, ["shape", "before", "after", "before us", "after us", "speed-up", "before min us",
                              "after min us", "speed-up (min)", "FLOPs", "GFLOP/s after", "% peak after",
                              "verdict after"], rows,
                   title="Small non-conv calls: before / after per shape (1 thread, in-schedule cycle counter)",
                   notes=[f"`python benchmarks/small_ops.py --rounds {args.rounds} --runs {args.runs}`: one-node "
                          "models, the default table (after) and the table without the new variants (before), "
                          "interleaved rounds in random order, one process; before = the variants this "
                          "benchmark adds left out, Softmax's (and Attention's) exp the previous `vexpneg`, "
                          "Attention's k^T copied element by element and its output rows in 2-vector chunks, Tanh's "
                          "vector form `vtanh` (the exp form)",
                          f"peak {peak:.1f} GFLOP/s (float32 FMA); FLOPs as `cnnjit.flops` counts them (an exp "
                          "17-21, a tanh 21: the arithmetic of the vector-math function, FMA = 2; Softmax 21 per "
                          "element; DynamicQuantizeLinear 3)"])
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
