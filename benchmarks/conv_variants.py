"""Conv kernel variants against each other, per layer shape: GFLOP/s of one Conv+SiLU (``--act``)
kernel call for every variant that applies to the layer (each forced with ``variants=``), interleaved in one
process, and which variant the compiler picks by default. This is where the variant table's crossovers are measured.

    python benchmarks/conv_variants.py                            # the default layers (ddddocr detector, ResNet)
    python benchmarks/conv_variants.py --layer 96,192,52,52,3,2 --runs 40 --vector-width 8
    python benchmarks/conv_variants.py --models mobilenet_v2_224,ppocr_cls --slack 1.1   # every Conv of models
    python benchmarks/conv_variants.py --onnx model.onnx --shape x=1,3,224,224            # every Conv of a file
    python benchmarks/conv_variants.py --layer 24,24,74,32,1x3,1,1,1x1,0x1                # 1x3, padded in W

A layer is ``C,M,H,W,K,stride[,group[,dilation[,pads]]]``: ``K``, the stride, the dilation and the (symmetric,
top/left) pads are one number or ``HxW``; the pads default to ``dilation * (K // 2)`` ("same" at stride 1).
Printed per layer: ``variant best (median)``
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
from onnx import TensorProto, helper, numpy_helper  # noqa: E402

from cnnjit.compiler.codegen.kernel import VARIANTS  # noqa: E402
from cnnjit.compiler.stages import CompileOptions, specialize  # noqa: E402

#: C, M, H, W, K, stride: the ddddocr detector's (416x416) dense layers, ResNet-8 / MLPerf ResNet's, then stems
#: (``stem_conv``: ResNet-8, PP-OCRv4 det at half size, ddddocr's recognizer, the PP-OCR classifier)
LAYERS = [(24, 48, 208, 208, 3, 2), (48, 96, 104, 104, 3, 2), (96, 192, 52, 52, 3, 2), (96, 96, 52, 52, 3, 2),
          (192, 384, 26, 26, 3, 2), (192, 192, 26, 26, 3, 2), (192, 192, 13, 13, 3, 1), (96, 96, 13, 13, 3, 1),
          (768, 384, 13, 13, 1, 1), (384, 192, 13, 13, 1, 1), (192, 192, 26, 26, 1, 1),
          (16, 32, 32, 32, 3, 2), (32, 64, 16, 16, 3, 2), (64, 64, 8, 8, 3, 1), (32, 32, 16, 16, 3, 1),
          (3, 16, 32, 32, 3, 1), (3, 16, 320, 320, 3, 2), (1, 24, 64, 256, 3, 2), (3, 8, 48, 192, 3, 2)]


@dataclasses.dataclass(frozen=True)
class Layer:
    """One Conv layer's geometry (batch 1, symmetric pads)."""

    c: int
    m: int
    h: int
    w: int
    kh: int
    kw: int
    sh: int = 1
    sw: int = 1
    g: int = 1
    dh: int = 1
    dw: int = 1
    ph: int = -1  # -1: dh * (kh // 2)
    pw: int = -1

    def __post_init__(self) -> None:
        if self.ph < 0:
            object.__setattr__(self, "ph", self.dh * (self.kh // 2))
        if self.pw < 0:
            object.__setattr__(self, "pw", self.dw * (self.kw // 2))

    def __str__(self) -> str:
        def hw(a: int, b: int) -> str:
            return str(a) if a == b else f"{a}x{b}"
        return (f"{self.c},{self.m},{self.h},{self.w},{hw(self.kh, self.kw)},{hw(self.sh, self.sw)},{self.g},"
                f"{hw(self.dh, self.dw)},{hw(self.ph, self.pw)}")


def parse_layer(text: str | tuple[int, ...]) -> Layer:
    """A ``Layer`` from ``C,M,H,W,K,stride[,group[,dilation[,pads]]]`` (each of the last four ``N`` or
    ``HxW``) or from the tuple ``(C, M, H, W, K, stride[, group])``."""
    fields = [str(v) for v in text] if isinstance(text, tuple) else text.split(",")

    def pair(f: str) -> tuple[int, int]:
        a, _, b = f.partition("x")
        return int(a), int(b or a)

    c, m, h, w = (int(v) for v in fields[:4])
    (kh, kw), (sh, sw) = pair(fields[4]), pair(fields[5])
    g = int(fields[6]) if len(fields) > 6 else 1
    dh, dw = pair(fields[7]) if len(fields) > 7 else (1, 1)
    ph, pw = pair(fields[8]) if len(fields) > 8 else (-1, -1)
    return Layer(c, m, h, w, kh, kw, sh, sw, g, dh, dw, ph, pw)


#: the activations ``--act`` may fuse after the Conv: the nodes between ``t`` (the Conv's output) and ``y``
ACTS = {
    "silu": [("Sigmoid", ["t"], ["sg"], {}), ("Mul", ["t", "sg"], ["y"], {})],
    "relu": [("Relu", ["t"], ["y"], {})],
    "leakyrelu": [("LeakyRelu", ["t"], ["y"], {"alpha": 0.1})],
}


def layer_model(ly: Layer, act: str = "silu") -> tuple[onnx.ModelProto, float]:
    """One Conv + ``act`` (fused into the Conv's epilogue) of the layer's geometry and its FLOP count."""
    rng = np.random.default_rng(0)
    wt = rng.standard_normal((ly.m, ly.c // ly.g, ly.kh, ly.kw)).astype(np.float32) * 0.1
    b = rng.standard_normal(ly.m).astype(np.float32)
    nodes = [helper.make_node("Conv", ["x", "w", "b"], ["t"], kernel_shape=[ly.kh, ly.kw], strides=[ly.sh, ly.sw],
                              dilations=[ly.dh, ly.dw], pads=[ly.ph, ly.pw, ly.ph, ly.pw], group=ly.g),
             *(helper.make_node(op, i, o, **at) for op, i, o, at in ACTS[act])]
    graph = helper.make_graph(nodes, "conv", [helper.make_tensor_value_info("x", TensorProto.FLOAT,
                                                                            [1, ly.c, ly.h, ly.w])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
                              [numpy_helper.from_array(wt, "w"), numpy_helper.from_array(b, "b")])
    oh = (ly.h + 2 * ly.ph - ly.dh * (ly.kh - 1) - 1) // ly.sh + 1
    ow = (ly.w + 2 * ly.pw - ly.dw * (ly.kw - 1) - 1) // ly.sw + 1
    flops = 2.0 * ly.m * (ly.c // ly.g) * ly.kh * ly.kw * oh * ow
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)], ir_version=8), flops


def conv_layers(model: onnx.ModelProto, shapes_in: dict[str, tuple[int, ...]]) -> list[Layer]:
    """The distinct 2-D Conv layers (constant weights, symmetric pads) of ``model`` at the input shapes."""
    for inp in model.graph.input:
        if inp.name in shapes_in:
            dims = inp.type.tensor_type.shape.dim
            for d, n in zip(dims, shapes_in[inp.name]):
                d.ClearField("dim_param")
                d.dim_value = n
    model = onnx.shape_inference.infer_shapes(model)
    shapes = {v.name: [d.dim_value for d in v.type.tensor_type.shape.dim]
              for v in [*model.graph.input, *model.graph.value_info]}
    weights = {t.name: tuple(t.dims) for t in model.graph.initializer}
    found: list[Layer] = []
    for node in model.graph.node:
        if node.op_type != "Conv" or node.input[1] not in weights or len(shapes.get(node.input[0], [])) != 4:
            continue
        a = {x.name: onnx.helper.get_attribute_value(x) for x in node.attribute}
        m, cg, kh, kw = weights[node.input[1]]
        s, d = list(a.get("strides", [1, 1])), list(a.get("dilations", [1, 1]))
        pads = list(a.get("pads", [0] * 4))
        if pads[:2] != pads[2:] or "auto_pad" in a and a["auto_pad"] not in (b"NOTSET", "NOTSET"):
            continue
        _, c, h, w = shapes[node.input[0]]
        if 0 in (c, h, w):
            continue
        layer = Layer(c, m, h, w, kh, kw, s[0], s[1], int(a.get("group", 1)), d[0], d[1], pads[0], pads[1])
        if layer not in found:
            found.append(layer)
    return found


def model_layers(name: str) -> list[Layer]:
    """The distinct Conv layers of a corpus model at its benchmark input shape."""
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    from benchmarks.corpus import load  # the corpus imports onnxruntime: only with --models

    model, feeds = load(name)
    return conv_layers(model, {k: v.shape for k, v in feeds.items()})


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--layer", action="append", help="C,M,H,W,K,stride[,group[,dilation[,pads]]] (repeatable)")
    ap.add_argument("--onnx", action="append", default=[], help="an ONNX file: every distinct Conv layer of it")
    ap.add_argument("--shape", action="append", default=[], help="NAME=d0,d1,... input shape for --onnx")
    ap.add_argument("--models", help="comma-separated corpus names: every distinct Conv layer of theirs")
    ap.add_argument("--slack", type=float, default=1.1, help="flag a default slower than the best by this factor")
    ap.add_argument("--runs", type=int, default=20)
    ap.add_argument("--act", default="silu", choices=sorted(ACTS), help="the activation fused into the Conv")
    ap.add_argument("--vector-width", type=int, default=0, help="compile for this vector width (default: host)")
    args = ap.parse_args()
    layers = [parse_layer(s) for s in args.layer or []]
    for name in (args.models or "").split(","):
        layers += [x for x in model_layers(name) if x not in layers] if name else []
    shapes = {k: tuple(int(v) for v in d.split(",")) for k, _, d in (s.partition("=") for s in args.shape)}
    for path in args.onnx:
        layers += [x for x in conv_layers(onnx.load(path), shapes) if x not in layers]
    layers = layers or [parse_layer(x) for x in LAYERS]
    misses = []
    opts = CompileOptions(vector_width=args.vector_width) if args.vector_width else CompileOptions()
    target = opts.host_target()
    print(f"vector width {target.vector_width}, {target.vector_registers} registers")
    for layer in layers:
        model, flops = layer_model(layer, args.act)
        shape = {"x": (1, layer.c, layer.h, layer.w)}
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
        print(f"({layer})", " | ".join(row), flush=True)
        best = min(times, key=lambda k: min(times[k]))
        if chosen in times and min(times[chosen]) > args.slack * min(times[best]):
            misses.append(f"{layer}: default {chosen} {min(times[chosen]) / min(times[best]):.2f}x the time of {best}")
    if misses:
        print(f"\n{len(misses)} layers where a variant beat the default by more than {args.slack}x:")
        print("\n".join(misses))


if __name__ == "__main__":
    main()
