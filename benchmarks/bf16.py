"""``precision="bf16"``: its accuracy against fp32 on real models, and its time where the host can run it.

    python benchmarks/bf16.py [--models mobilenet_v2_224 ppocr_cls] [--inputs 50] [--runs 50]
    python benchmarks/bf16.py --attribute [--models ...] [--inputs 50]

Accuracy: cnnjit bf16 (``"bf16"`` on a host with AVX512_BF16, else ``"bf16-emulated"``: the same bf16
roundings with the portable dot product, see ``compiler/codegen/simd_bf16.py``) against cnnjit fp32 on
``--inputs`` seeded standard-normal inputs (``default_rng(1000 + i)``): minimum and mean cosine of the
outputs, max abs error (and relative to the fp32 output's max abs), argmax agreement; onnxruntime fp32
against cnnjit fp32 alongside (the fp32 noise floor). Time (one thread, interleaved in one process,
medians and minima): cnnjit bf16 against cnnjit fp32 and onnxruntime fp32 where the host has avx512_bf16;
elsewhere the native row says "not measurable" and the emulated form's time is reported only as what it
is (an accuracy tool, slower than fp32). OpenVINO's bf16 (``INFERENCE_PRECISION_HINT=bf16``) is run beside
them when ``openvino`` imports: its accuracy, its time, and the precision it reports it actually used.
Writes ``results/bf16.json`` and ``results/bf16.md``. Both the mixed-precision policy (the default:
``passes/mixed_precision.py`` keeps the layers on pooled features in fp32) and every bf16-capable layer in
bf16 (``disable=["mixed_precision"]``) are reported, with the expected number of argmax flips: the sum over
inputs of P(|N(0, s)| > fp32's top-2 gap) / 2, ``s`` the RMS change bf16 made to the top-2 margin.

``--attribute``: per-layer error attribution (``results/bf16_attribution.{json,md}``): for each layer that
runs in bf16 without the policy, that layer alone in bf16 (every other layer fp32; the Python schedule): the
RMS output error over the inputs and the change of the fp32 top-2 margin on each input whose argmax flips
with every layer in bf16.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.harness import (  # noqa: E402
    machine_info,
    markdown_table,
    measure,
    ort_session,
    single_thread,
    write_json,
    write_markdown,
)

DEFAULT_MODELS = ("mobilenet_v2_224", "ppocr_cls")


#: a top-1 / top-2 gap of the reference below this is a tie (the output units: probabilities on both models)
TIE_GAP = 0.02


def agreement(ref: np.ndarray, got: np.ndarray) -> dict[str, float]:
    """Per-input cosine (min, mean), max abs error (and over max |ref|), argmax agreement of ``got`` (inputs x
    outputs) against ``ref``, and that agreement over the inputs whose reference top-2 gap is ``TIE_GAP`` or
    more (``decided``: how many)."""
    top2 = np.sort(ref, axis=1)[:, -2:]
    decided = top2[:, 1] - top2[:, 0] >= TIE_GAP
    same = ref.argmax(1) == got.argmax(1)
    cos = (ref * got).sum(1) / np.maximum(np.linalg.norm(ref, axis=1) * np.linalg.norm(got, axis=1), 1e-30)
    err = np.abs(ref - got).max()
    return {"cos_min": float(cos.min()), "cos_mean": float(cos.mean()), "max_abs_err": float(err),
            "expected_flips": expected_flips(ref, got), "flipped": np.nonzero(~same)[0].tolist(),
            "margin_rms": float(np.sqrt(np.mean((margins(ref, got) - margins(ref, ref)) ** 2))),
            "min_gap": float((top2[:, 1] - top2[:, 0]).min()),
            "max_rel_err": float(err / max(np.abs(ref).max(), 1e-30)),
            "argmax_agree": float(np.mean(same)), "decided": int(decided.sum()),
            "argmax_agree_decided": float(np.mean(same[decided])) if decided.any() else float("nan")}


def margins(ref: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Per input, ``y``'s value at the reference's top-1 minus at its top-2 (the reference's top-2 gap when
    ``y`` is the reference)."""
    order = np.argsort(ref, axis=1)
    rows = np.arange(len(ref))
    return y[rows, order[:, -1]] - y[rows, order[:, -2]]


def expected_flips(ref: np.ndarray, got: np.ndarray) -> float:
    """How many argmax flips a zero-mean normal margin error of ``got``'s RMS margin change would cause on
    these inputs' fp32 gaps: the sum of P(N(0, s) < -gap)."""
    from math import erfc, sqrt

    gap = margins(ref, ref)
    s = float(np.sqrt(np.mean((margins(ref, got) - gap) ** 2)))
    return float(sum(0.5 * erfc(g / (s * sqrt(2))) for g in gap)) if s > 0 else 0.0


def openvino_model(model: Any, shape: tuple[int, ...]) -> tuple[Any, str] | None:
    """OpenVINO's CPU plugin compiled with the bf16 inference hint (one thread), and the precision it
    reports; None when openvino does not import."""
    try:
        import openvino as ov
    except ImportError:
        return None
    core = ov.Core()
    m = core.read_model(model.SerializeToString(), b"")
    cm = core.compile_model(m, "CPU", {"INFERENCE_PRECISION_HINT": "bf16", "INFERENCE_NUM_THREADS": 1})
    return cm, str(cm.get_property("INFERENCE_PRECISION_HINT"))


def run_model(name: str, inputs: int, runs: int) -> dict[str, Any]:
    import cnnjit
    from benchmarks.corpus import ALL_MODELS
    from benchmarks.models import load
    from cnnjit.compiler.codegen.kernel import KEEP_FP32
    from cnnjit.compiler.codegen.simd_bf16 import has_bf16

    model, feeds = load(name, models=ALL_MODELS)
    (k, x0), = feeds.items()
    shape = tuple(x0.shape)
    native = has_bf16()
    fp32 = cnnjit.compile(model, input_shapes={k: shape}, threads=1)
    bf16 = cnnjit.compile(model, input_shapes={k: shape}, threads=1, precision="bf16" if native else "bf16-emulated")
    ort = ort_session(model)
    ov = openvino_model(model, shape)
    xs = [np.random.default_rng(1000 + i).standard_normal(shape).astype(np.float32) for i in range(inputs)]

    def outs(fn) -> np.ndarray:
        return np.array([np.asarray(fn(x)).astype(np.float64).ravel() for x in xs])

    ref = outs(lambda x: fp32.run(None, {k: x})[0])
    every = cnnjit.compile(model, input_shapes={k: shape}, threads=1, disable=["mixed_precision"],
                           precision="bf16" if native else "bf16-emulated")
    label = "cnnjit bf16" + ("" if native else " (emulated)")
    rows = {label: outs(lambda x: bf16.run(None, {k: x})[0]),
            label + ", every layer bf16": outs(lambda x: every.run(None, {k: x})[0]),
            "onnxruntime fp32": outs(lambda x: ort.run(None, {k: x})[0])}
    if ov is not None:
        rows[f"openvino bf16 hint (reports {ov[1]})"] = outs(lambda x: ov[0]({0: x})[0])
    prog = bf16._default_spec().program
    dense = [c for c in prog.calls if c.op in ("Conv", "Gemm", "MatMul")]
    res: dict[str, Any] = {"model": name, "shape": shape, "inputs": inputs, "native_bf16": native,
                           "bf16_calls": sum(c.variant.endswith("_bf16") for c in dense),
                           "kept_fp32": [c.node.name for c in dense if KEEP_FP32 in c.node.meta],
                           "dense_calls": len(dense), "accuracy": {r: agreement(ref, v) for r, v in rows.items()}}
    x = {k: xs[0]}
    fns = {"cnnjit fp32": lambda: fp32.run(None, x), "cnnjit bf16": lambda: bf16.run(None, x),
           "onnxruntime fp32": lambda: ort.run(None, x)}
    if ov is not None:
        fns["openvino bf16 hint"] = lambda: ov[0]({0: xs[0]})
    t = measure(fns, runs=runs, warmup=5)
    base = t["cnnjit fp32"]
    res["time"] = {n: {"median_ms": v["median_ms"], "min_ms": v["min_ms"],
                       "median_vs_cnnjit_fp32": v["median_ms"] / base["median_ms"],
                       "median_vs_ort_fp32": v["median_ms"] / t["onnxruntime fp32"]["median_ms"]}
                   for n, v in t.items()}
    return res


def attribute(name: str, inputs: int) -> dict[str, Any]:
    """Each layer that runs in bf16 without the policy, alone in bf16: RMS output error over ``inputs`` seeded
    inputs, and its change of fp32's top-2 margin on the inputs whose argmax every-layer bf16 flips."""
    import cnnjit
    from benchmarks.corpus import ALL_MODELS
    from benchmarks.models import load
    from cnnjit.compiler import stages
    from cnnjit.compiler.codegen.kernel import KEEP_FP32
    from cnnjit.compiler.frontend.loader import load_model

    model, feeds = load(name, models=ALL_MODELS)
    (k, x0), = feeds.items()
    shapes = {k: tuple(x0.shape)}
    proto = load_model(model.SerializeToString())
    xs = [np.random.default_rng(1000 + i).standard_normal(x0.shape).astype(np.float32) for i in range(inputs)]
    opts = stages.CompileOptions(threads=1, entry="python", precision="bf16", disable=("mixed_precision",))

    def outs(only: str | None) -> tuple[np.ndarray, list[str]]:
        def mark(p, graph) -> None:  # after the last pass: every dense layer but ``only`` kept fp32
            if p.name == "dead_code" and only is not None:
                for n in graph.nodes:
                    if n.name != only:
                        n.meta[KEEP_FP32] = "attribution"
        spec = stages.specialize(proto, shapes, opts, hooks=stages.Hooks(after_pass=mark))
        y = np.array([np.asarray(spec.run({k: x})[0], np.float64).ravel() for x in xs])
        return y, [c.node.name for c in spec.program.calls if c.variant.endswith("_bf16")]

    ref = np.array([np.asarray(cnnjit.compile(model, input_shapes=shapes, threads=1).run(None, {k: x})[0],
                               np.float64).ravel() for x in xs])
    every, layers = outs(None)
    flips = np.nonzero(ref.argmax(1) != every.argmax(1))[0]
    gap = margins(ref, ref)

    def row(y: np.ndarray) -> dict[str, Any]:
        return {"rms": float(np.sqrt(np.mean((y - ref) ** 2))),
                "margin_change": (margins(ref, y) - gap)[flips].tolist()}

    layer_rows = {}
    for layer in layers:
        y, ran = outs(layer)
        assert ran == [layer], (layer, ran)  # the one layer really ran in bf16
        layer_rows[layer] = row(y)
    return {"model": name, "inputs": inputs, "flips": flips.tolist(), "fp32_gap": gap[flips].tolist(),
            "every": row(every), "layers": layer_rows}


def write_attribution(res: list[dict[str, Any]], args: argparse.Namespace) -> None:
    """``results/bf16_attribution.{json,md}``: the layers by RMS error, largest first."""
    rows = []
    for r in res:
        rows.append([r["model"], "every layer bf16", f"{r['every']['rms']:.2e}",
                     " ".join(f"{v:+.4f}" for v in r["every"]["margin_change"]) or "-"])
        for layer, a in sorted(r["layers"].items(), key=lambda kv: -kv[1]["rms"]):
            rows.append([r["model"], layer, f"{a['rms']:.2e}",
                         " ".join(f"{v:+.4f}" for v in a["margin_change"]) or "-"])
    info = machine_info()
    write_json("bf16_attribution", {"machine": info, "args": vars(args), "results": res}, args.out_dir)
    notes = [f"{r['model']}: {r['inputs']} inputs; flipped with every layer bf16: inputs {r['flips']} (fp32 top-2 "
             f"gap {', '.join(f'{g:.4g}' for g in r['fp32_gap'])})" for r in res]
    notes.append(f"load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs at the end of the run")
    write_markdown("bf16_attribution", ["model", "layer alone in bf16", "RMS output error",
                                        "top-2 margin change on the flipped inputs"], rows,
                   title="bf16 per-layer error attribution", out_dir=args.out_dir, machine=info, notes=notes)
    for row in rows:
        print(*row, sep="  ")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", nargs="+", default=list(DEFAULT_MODELS))
    ap.add_argument("--inputs", type=int, default=50)
    ap.add_argument("--runs", type=int, default=50)
    ap.add_argument("--out-dir", default=None)
    ap.add_argument("--attribute", action="store_true", help="per-layer error attribution instead")
    args = ap.parse_args(argv)
    single_thread(1)
    if args.attribute:
        write_attribution([attribute(m, args.inputs) for m in args.models], args)
        return 0
    results = [run_model(m, args.inputs, args.runs) for m in args.models]
    acc_rows, time_rows = [], []
    for r in results:
        for engine, a in r["accuracy"].items():
            acc_rows.append([r["model"], engine, f"{a['cos_min']:.6f}", f"{a['cos_mean']:.6f}",
                             f"{a['max_abs_err']:.3g}", f"{a['max_rel_err']:.2e}", f"{a['argmax_agree']:.2f}",
                             f"{a['argmax_agree_decided']:.2f} ({a['decided']})",
                             f"{a['margin_rms']:.2g}", f"{a['expected_flips']:.2f}",
                             " ".join(map(str, a["flipped"])) or "-"])
        for engine, t in r["time"].items():
            native = engine != "cnnjit bf16" or r["native_bf16"]
            time_rows.append([r["model"], engine + ("" if native else " (emulated: not the bf16 speed)"),
                              f"{t['median_ms']:.2f}", f"{t['min_ms']:.2f}", f"{t['median_vs_cnnjit_fp32']:.2f}",
                              f"{t['median_vs_ort_fp32']:.2f}"])
        if not r["native_bf16"]:
            time_rows.append([r["model"], "cnnjit bf16 (native)", "not measurable, no avx512bf16", "", "", ""])
    info = machine_info()
    write_json("bf16", {"machine": info, "args": vars(args), "results": results}, args.out_dir)
    notes = [f"{r['model']}: {r['bf16_calls']} of {r['dense_calls']} Conv / Gemm / MatMul calls in bf16 (1x1 Convs "
             f"and constant-B Gemms; the rest, KxK / depthwise Convs and fused blocks, fp32), {r['inputs']} inputs; "
             f"kept fp32 by the mixed-precision policy: {', '.join(r['kept_fp32']) or 'none'}; smallest fp32 top-2 "
             f"gap {next(iter(r['accuracy'].values()))['min_gap']:.3g}" for r in results]
    notes.append(f"load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs at the end of the run")
    if not any("openvino" in e for r in results for e in r["accuracy"]):
        notes.append("openvino does not import here: no OpenVINO rows (it runs fp32 on a CPU without AVX512_BF16 "
                     "anyway: it accepts the bf16 hint and reports f32)")
    path = write_markdown("bf16", ["model", "engine vs cnnjit fp32", "cosine min", "cosine mean", "max abs err",
                                   "max err / max |y|", "argmax agree",
                                   f"argmax agree, gap >= {TIE_GAP} (inputs)", "top-2 margin change RMS",
                                   "expected flips",
                                   "flipped inputs"], acc_rows,
                          title="bf16 accuracy against cnnjit fp32", out_dir=args.out_dir, machine=info, notes=notes)
    with path.open("a") as f:  # the time table (one thread, interleaved in one process)
        f.write("\n".join(["", "## Time (1 thread, interleaved, batch 1)", "",
                           markdown_table(["model", "engine", "median ms", "min ms", "/ cnnjit fp32",
                                           "/ onnxruntime fp32"], time_rows), ""]))
    for row in acc_rows:
        print(*row, sep="  ")
    for row in time_rows:
        print(*row, sep="  ")
    return 0


if __name__ == "__main__":
    sys.exit(main())
