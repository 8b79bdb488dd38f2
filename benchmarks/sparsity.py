"""Sparsity: latency vs weight sparsity for MobileNetV2-224, pointwise layers and end to end, 1 thread.

    python benchmarks/sparsity.py [--model mobilenet_v2_224] [--runs 30] [--sparsities 0,0.5,0.7,0.8,0.9,0.95]
    python benchmarks/sparsity.py --crossover      # dense vs CSR kernel per pointwise layer: the threshold

Variants: dense (the original model), unstructured magnitude pruning at each sparsity, 2:4, and 50% channel
pruning (``cnnjit.prune``). Pointwise-layer time is the sum over the schedule's 1x1 Conv calls
(``cnnjit.profile.profile_calls``, median per call) with the kernel forced dense (``sparse_threshold=2``),
forced sparse (``0``) and chosen automatically (default threshold); end to end is ``harness.measure``
(interleaved) of the automatic compile against the dense original. Writes
``benchmarks/results/sparsity.{json,md,png}`` (``sparsity_crossover.*`` with ``--crossover``).
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.harness import single_thread  # noqa: E402

single_thread()

import argparse  # noqa: E402
from typing import Any  # noqa: E402

import cnnjit  # noqa: E402
from benchmarks.harness import (  # noqa: E402
    RESULTS_DIR,
    fmt,
    machine_info,
    measure,
    print_table,
    write_json,
    write_markdown,
)
from benchmarks.models import load  # noqa: E402
from cnnjit.profile import profile_calls  # noqa: E402


def _is_pw(note: str) -> bool:
    parts = note.split(" ")
    return parts[0] == "Conv" and len(parts) > 1 and ",".join(parts[1:2]).split(",")[1].endswith("x1x1")


def pointwise_profile(model: Any, feeds: dict, threshold: float | None, repeat: int) -> dict[str, Any]:
    """Per-call medians of the 1x1 Convs of ``model`` compiled with ``sparse_threshold=threshold``."""
    cm = cnnjit.compile(model, sparse_threshold=threshold)
    spec = cm.specialization({k: v.shape for k, v in feeds.items()})
    calls = profile_calls(spec, feeds, repeat=repeat)
    pw = [c for c in calls if _is_pw(c.note)]
    return {"pointwise_ms": sum(c.median_s for c in pw) * 1e3, "total_ms": sum(c.median_s for c in calls) * 1e3,
            "layers": [(c.note, c.median_s * 1e3) for c in pw],
            "sparse_layers": sum("sparse" in c.note for c in pw)}


def crossover(name: str, repeat: int) -> None:
    """Dense vs forced-CSR time of every pointwise layer at increasing sparsity: where sparse starts to win."""
    model, feeds = load(name)
    sps = [0.3, 0.4, 0.5, 0.55, 0.6, 0.65, 0.7, 0.8, 0.9]
    rows, out = [], []
    for s in sps:
        p = cnnjit.prune(model, sparsity=s, method="magnitude", keep_first_last=False)
        d = pointwise_profile(p, feeds, 2.0, repeat)
        sp = pointwise_profile(p, feeds, 0.0, repeat)
        wins = sum(b < a for (_, a), (_, b) in zip(d["layers"], sp["layers"], strict=True))
        rows.append([f"{s:.0%}", fmt(d["pointwise_ms"]), fmt(sp["pointwise_ms"]),
                     fmt(d["pointwise_ms"] / sp["pointwise_ms"]), f"{wins}/{len(d['layers'])}"])
        out.append({"sparsity": s, "dense_ms": d["pointwise_ms"], "sparse_ms": sp["pointwise_ms"],
                    "sparse_wins": wins, "layers": len(d["layers"]),
                    "per_layer": [(n, a, b) for (n, a), (_, b) in zip(d["layers"], sp["layers"], strict=True)]})
    headers = ["sparsity", "dense pw ms", "CSR pw ms", "speed-up", "layers where CSR wins"]
    print_table(headers, rows, f"{name}: dense vs CSR pointwise kernels (1 thread)")
    write_json("sparsity_crossover", {"model": name, "results": out})
    write_markdown("sparsity_crossover", headers, rows, title=f"Sparse kernel crossover, {name}",
                   notes=["pointwise = sum of the 1x1 Conv calls' medians (runtime.profile.profile_calls)",
                          "command: python benchmarks/sparsity.py --crossover"])


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", default="mobilenet_v2_224")
    ap.add_argument("--runs", type=int, default=30)
    ap.add_argument("--sparsities", default="0,0.5,0.7,0.8,0.9,0.95")
    ap.add_argument("--crossover", action="store_true")
    a = ap.parse_args(argv)
    if a.crossover:
        crossover(a.model, a.runs)
        return 0
    model, feeds = load(a.model)
    variants: dict[str, Any] = {"dense": model}
    for s in [float(t) for t in a.sparsities.split(",")]:
        variants[f"unstructured {s:.0%}"] = cnnjit.prune(model, sparsity=s, method="magnitude") if s else model
    variants["2:4"] = cnnjit.prune(model, pattern="2:4")
    variants["channel 50%"] = cnnjit.prune(model, sparsity=0.5, method="channel")
    base = pointwise_profile(model, feeds, 2.0, a.runs)
    results, rows = [], []
    dense_cm = cnnjit.compile(model)
    for label, m in variants.items():
        forced_dense = pointwise_profile(m, feeds, 2.0, a.runs)
        forced_sparse = pointwise_profile(m, feeds, 0.0, a.runs)
        auto = pointwise_profile(m, feeds, None, a.runs)
        cm = cnnjit.compile(m)
        args = list(feeds.values())
        st = measure({"dense": lambda: dense_cm(*args), "pruned": lambda cm=cm: cm(*args)}, runs=a.runs,
                     warmup=5)
        dev = m.deviation(feeds) if hasattr(m, "deviation") else {"max_abs_diff": 0.0, "cosine": 1.0,
                                                                  "argmax_agreement": 1.0}
        r = {"variant": label, "pw_dense_kernel_ms": forced_dense["pointwise_ms"],
             "pw_sparse_kernel_ms": forced_sparse["pointwise_ms"], "pw_auto_ms": auto["pointwise_ms"],
             "pw_speedup_vs_dense_model": base["pointwise_ms"] / auto["pointwise_ms"],
             "sparse_layers": auto["sparse_layers"], "e2e_dense_ms": st["dense"]["median_ms"],
             "e2e_ms": st["pruned"]["median_ms"], "e2e_speedup": st["dense"]["median_ms"] / st["pruned"]["median_ms"],
             "deviation": dev}
        results.append(r)
        rows.append([label, fmt(r["pw_dense_kernel_ms"]), fmt(r["pw_sparse_kernel_ms"]), fmt(r["pw_auto_ms"]),
                     fmt(r["pw_speedup_vs_dense_model"]), r["sparse_layers"], fmt(r["e2e_ms"]),
                     fmt(r["e2e_speedup"]), fmt(dev["cosine"])])
        print(rows[-1], flush=True)
    headers = ["variant", "pw dense-kernel ms", "pw CSR-kernel ms", "pw auto ms", "pw speed-up", "sparse layers",
               "e2e ms", "e2e speed-up", "cosine vs dense"]
    print_table(headers, rows, f"{a.model}: sparsity (1 thread)")
    write_json("sparsity", {"model": a.model, "runs": a.runs, "results": results,
                            "dense_pointwise_ms": base["pointwise_ms"]})
    write_markdown("sparsity", headers, rows, title=f"Pruning and sparse kernels, {a.model}", notes=[
        "pw = the 1x1 Conv calls (profile_calls medians); 'dense-kernel' / 'CSR-kernel' force the kernel "
        "(sparse_threshold=2 / 0), 'auto' uses the measured threshold; speed-ups are vs the dense model",
        "e2e = interleaved harness.measure median of the auto compile vs the dense original",
        "cosine: first output of the pruned vs the dense model (random weights, so accuracy is not meaningful)",
        "command: python benchmarks/sparsity.py"], machine=machine_info())
    _plot(results, a.model)
    return 0


def _plot(results: list[dict], name: str) -> None:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return
    un = [r for r in results if r["variant"].startswith("unstructured")]
    xs = [float(r["variant"].split()[1].rstrip("%")) for r in un]
    fig, ax = plt.subplots(figsize=(7, 4.5))
    ax.plot(xs, [r["pw_dense_kernel_ms"] for r in un], "o-", label="pointwise, dense kernel")
    ax.plot(xs, [r["pw_sparse_kernel_ms"] for r in un], "s-", label="pointwise, CSR kernel")
    ax.plot(xs, [r["pw_auto_ms"] for r in un], "^-", label="pointwise, auto (threshold)")
    ax.plot(xs, [r["e2e_ms"] for r in un], "d-", label="end to end, auto")
    for r, mk in (("2:4", "x"), ("channel 50%", "*")):
        rr = next((q for q in results if q["variant"] == r), None)
        if rr:
            ax.plot([50], [rr["e2e_ms"]], mk, markersize=10, label=f"end to end, {r}")
    ax.set_xlabel("weight sparsity (%)")
    ax.set_ylabel("latency (ms, 1 thread)")
    ax.set_title(f"{name}: latency vs sparsity")
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(RESULTS_DIR / "sparsity.png", dpi=110)
    plt.close(fig)


if __name__ == "__main__":
    sys.exit(main())
