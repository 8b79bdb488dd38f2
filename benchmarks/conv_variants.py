"""Conv kernel variants against each other, per layer shape: GFLOP/s of one Conv+SiLU kernel call for every
variant that applies to the layer (each forced with ``variants=``), interleaved in one process, and which
variant the compiler picks by default. This is where the variant table's crossovers are measured.

    python benchmarks/conv_variants.py                            # the default layers (ddddocr detector, ResNet)
    python benchmarks/conv_variants.py --layer 96,192,52,52,3,2 --runs 40 --vector-width 8
    python benchmarks/conv_variants.py --models mobilenet_v2_224,ppocr_cls --slack 1.1   # every Conv of models

A layer is ``C,M,H,W,K,stride[,group]`` (pads ``K // 2``). Printed per layer: ``variant best (median)``
GFLOP/s over ``--runs`` interleaved runs (thread CPU time, so that other processes on a shared machine count
less), the default choice marked ``*``; with ``--models``, the distinct Conv shapes of those models (any
``corpus.ALL_MODELS`` name) and a closing list of the layers where a variant beat the default by more than
``--slack`` (a variant table to fix).
"""

from __future__ import annotations

import argparse
import dataclasses
import statistics
import sys
import time
from pathlib import Path

from harness import single_thread

single_thread()

import numpy as np  # noqa: E402
import onnx  # noqa: E402
from conv_tiles import conv_model  # noqa: E402

from cnnjit.compiler.codegen.kernel import VARIANTS  # noqa: E402
from cnnjit.compiler.stages import CompileOptions, specialize  # noqa: E402

#: C, M, H, W, K, stride: the ddddocr detector's (416x416) dense layers, ResNet-8 / MLPerf ResNet's, then stems
#: (``stem_conv``: ResNet-8, PP-OCRv4 det at half size, ddddocr's recognizer, the PP-OCR classifier)
LAYERS = [(24, 48, 208, 208, 3, 2), (48, 96, 104, 104, 3, 2), (96, 192, 52, 52, 3, 2), (96, 96, 52, 52, 3, 2),
          (192, 384, 26, 26, 3, 2), (192, 192, 26, 26, 3, 2), (192, 192, 13, 13, 3, 1), (96, 96, 13, 13, 3, 1),
          (768, 384, 13, 13, 1, 1), (384, 192, 13, 13, 1, 1), (192, 192, 26, 26, 1, 1),
          (16, 32, 32, 32, 3, 2), (32, 64, 16, 16, 3, 2), (64, 64, 8, 8, 3, 1), (32, 32, 16, 16, 3, 1),
          (3, 16, 32, 32, 3, 1), (3, 16, 320, 320, 3, 2), (1, 24, 64, 256, 3, 2), (3, 8, 48, 192, 3, 2)]


def model_layers(name: str) -> list[tuple[int, ...]]:
    """The distinct Conv layers ``C,M,H,W,K,stride,group`` of a corpus model at its benchmark input shape:
    square kernels padded ``K // 2`` (as ``conv_model`` builds them); other Convs are left out."""
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    from benchmarks.corpus import load  # the corpus imports onnxruntime: only with --models

    model, feeds = load(name)
    for inp in model.graph.input:
        if inp.name in feeds:
            dims = inp.type.tensor_type.shape.dim
            for d, n in zip(dims, feeds[inp.name].shape):
                d.ClearField("dim_param")
                d.dim_value = n
    model = onnx.shape_inference.infer_shapes(model)
    shapes = {v.name: [d.dim_value for d in v.type.tensor_type.shape.dim]
              for v in [*model.graph.input, *model.graph.value_info]}
    weights = {t.name: tuple(t.dims) for t in model.graph.initializer}
    found: list[tuple[int, ...]] = []
    for node in model.graph.node:
        if node.op_type != "Conv" or node.input[1] not in weights or len(shapes.get(node.input[0], [])) != 4:
            continue
        a = {x.name: onnx.helper.get_attribute_value(x) for x in node.attribute}
        m, cg, kh, kw = weights[node.input[1]]
        k, s = kh, list(a.get("strides", [1, 1]))
        pads = list(a.get("pads", [0] * 4))
        if kh != kw or s[0] != s[1] or any(p != k // 2 for p in pads) or any(d != 1 for d in a.get("dilations", [1])):
            continue
        _, c, h, w = shapes[node.input[0]]
        layer = (c, m, h, w, k, s[0], int(a.get("group", 1)))
        if layer not in found:
            found.append(layer)
    return found


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--layer", action="append", help="C,M,H,W,K,stride[,group] (repeatable)")
    ap.add_argument("--models", help="comma-separated corpus names: every distinct Conv layer of theirs")
    ap.add_argument("--slack", type=float, default=1.1, help="flag a default slower than the best by this factor")
    ap.add_argument("--runs", type=int, default=20)
    ap.add_argument("--vector-width", type=int, default=0, help="compile for this vector width (default: host)")
    args = ap.parse_args()
    layers = [tuple(int(v) for v in s.split(",")) for s in args.layer or []]
    for name in (args.models or "").split(","):
        layers += [x for x in model_layers(name) if x not in layers] if name else []
    layers = layers or LAYERS
    misses = []
    opts = CompileOptions(vector_width=args.vector_width) if args.vector_width else CompileOptions()
    target = opts.host_target()
    print(f"vector width {target.vector_width}, {target.vector_registers} registers")
    for layer in layers:
        model, flops = conv_model(*layer, silu=True)
        shape = {"x": (1, layer[0], *layer[2:4])}
        default = specialize(model, shape, opts, target=target)
        chosen = default.program.calls[0].variant
        specs = {}
        for v in VARIANTS["Conv"]:
            forced = dataclasses.replace(target, variants=(("Conv", v.name),))
            try:
                specs[v.name] = specialize(model, shape, opts, target=forced)
            except Exception:  # noqa: BLE001 - the variant does not apply to this layer
                continue
        feeds = {"x": np.random.default_rng(1).standard_normal(shape["x"]).astype(np.float32)}
        times: dict[str, list[float]] = {k: [] for k in specs}
        for spec in specs.values():
            spec.run(feeds)
        for _ in range(args.runs):
            for name, spec in specs.items():
                t0 = time.thread_time_ns()
                spec.run(feeds)
                times[name].append((time.thread_time_ns() - t0) * 1e-9)
        row = [f"{'*' if k == chosen else ''}{k} {flops / min(ts) / 1e9:5.1f} "
               f"({flops / statistics.median(ts) / 1e9:4.1f})" for k, ts in times.items()]
        print(layer, " | ".join(row), flush=True)
        best = min(times, key=lambda k: min(times[k]))
        if chosen in times and min(times[chosen]) > args.slack * min(times[best]):
            misses.append(f"{layer}: default {chosen} {min(times[chosen]) / min(times[best]):.2f}x the time of {best}")
    if misses:
        print(f"\n{len(misses)} layers where a variant beat the default by more than {args.slack}x:")
        print("\n".join(misses))


if __name__ == "__main__":
    main()
