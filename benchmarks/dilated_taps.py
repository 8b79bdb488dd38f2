"""Dilated convolutions and Keras' NHWC layer pairs, before and after session 17's changes, interleaved in one
process with onnxruntime (1 thread, thread CPU time, ``harness.measure``):

* ``taps``: a strip's panel of a ``conv1d_packed`` layer with each tap's window stored alone past a dilation of
  ``L`` (``packed_pointwise.tap_stride``; before: the whole span ``L + (KW - 1) * DW`` copied), and the
  ``conv_dead_taps`` pass (taps that read only padding dropped; before: disabled);
* ``nhwc``: ``cancel_transposes`` moving a Transpose below a Reshape of unit dims (before: stopped there, so
  madmom's Transpose -> Squeeze -> BN -> Relu -> Unsqueeze -> Transpose stayed two copies per layer);
* ``models``: held-out ONNX files (``--onnx PATH@NAME=d0,d1,...``: not in the repo), both changes at once.

    python benchmarks/dilated_taps.py --runs 20                       # the layer grid
    python benchmarks/dilated_taps.py --onnx /work/heldout/madmom_beats_tcn.onnx@input=1000,81

Layers: ``C,M,L,K,D`` (a ``K x 1`` Conv1D at dilation ``D``, "same" pads, on ``1 x C x L x 1``, as tf2onnx
writes it), ``C,M,H,W,K,D`` (a 2-D ``K x K`` at dilation ``D``) or ``nhwc:C,M,H,W`` (two 3x3 layers in Keras'
NHWC pairs). Writes ``results/dilated_taps.{json,md}``: per case the median and minimum ms of each engine and
the before / after ratios.
"""

from __future__ import annotations

import argparse
import contextlib
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from harness import single_thread  # noqa: E402 - stdlib only

single_thread()

import time  # noqa: E402

import numpy as np  # noqa: E402
import onnx  # noqa: E402
from harness import measure, ort_session, print_table, write_json, write_markdown  # noqa: E402
from onnx import TensorProto, helper, numpy_helper  # noqa: E402

import cnnjit  # noqa: E402
from cnnjit.compiler.codegen.kernels import packed_pointwise  # noqa: E402
from cnnjit.compiler.passes import cancel_transposes  # noqa: E402

#: a TCN's 16 -> 16 kernel 5 over 996 steps (madmom's beat tracker) at its larger dilations, wider Conv1D
#: layers at dilations past a strip, and ASPP-style 3x3 branches on maps smaller than their rate
LAYERS = ["16,16,996,5,32", "16,16,996,5,128", "16,16,996,5,256", "16,16,996,5,512", "16,16,996,5,1024",
          "64,64,1000,3,64", "64,64,1000,3,600", "128,128,500,3,128", "256,256,33,33,3,24", "256,256,33,33,3,36",
          "nhwc:32,32,100,100", "nhwc:64,64,60,40"]


def _model(nodes: list, x_shape: tuple, inits: dict) -> onnx.ModelProto:
    g = helper.make_graph(nodes, "case", [helper.make_tensor_value_info("x", TensorProto.FLOAT, list(x_shape))],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
                          [numpy_helper.from_array(v, k) for k, v in inits.items()])
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", 13)], ir_version=8)


def conv_case(spec: str, rng: np.random.Generator) -> tuple[onnx.ModelProto, np.ndarray]:
    """A dilated Conv + ReLU (``C,M,L,K,D`` as ``K x 1`` on ``1 x C x L x 1``, or ``C,M,H,W,K,D``)."""
    v = [int(t) for t in spec.split(",")]
    if len(v) == 5:
        c, m, length, k, d = v
        shape, kernel, pads, dil = (1, c, length, 1), (k, 1), [d * (k // 2), 0] * 2, [d, 1]
    else:
        c, m, h, w, k, d = v
        shape, kernel, pads, dil = (1, c, h, w), (k, k), [d * (k // 2)] * 4, [d, d]
    wt = (rng.standard_normal((m, c, *kernel)) / np.sqrt(c * k)).astype(np.float32)
    nodes = [helper.make_node("Conv", ["x", "w", "b"], ["c"], kernel_shape=list(kernel), pads=pads, dilations=dil),
             helper.make_node("Relu", ["c"], ["y"])]
    return (_model(nodes, shape, {"w": wt, "b": rng.standard_normal(m).astype(np.float32)}),
            rng.standard_normal(shape).astype(np.float32))


def nhwc_case(spec: str, rng: np.random.Generator) -> tuple[onnx.ModelProto, np.ndarray]:
    """Two 3x3 layers as a Keras model converted to ONNX writes them: Transpose to NCHW, Conv, Transpose to
    NHWC, Squeeze of the batch axis, BN as Mul and Add, Relu, Unsqueeze."""
    c, m, h, w = (int(t) for t in spec.split(",")[:4])
    nodes, inits, cur = [], {"ax": np.array([0], np.int64)}, "x"
    for i, (ci, co) in enumerate(((c, m), (m, m))):
        inits.update({f"w{i}": (rng.standard_normal((co, ci, 3, 3)) / np.sqrt(9 * ci)).astype(np.float32),
                      f"s{i}": rng.uniform(0.5, 1.5, co).astype(np.float32),
                      f"o{i}": rng.uniform(-1, 1, co).astype(np.float32)})
        nodes += [helper.make_node("Transpose", [cur], [f"t{i}"], perm=[0, 3, 1, 2]),
                  helper.make_node("Conv", [f"t{i}", f"w{i}"], [f"c{i}"], kernel_shape=[3, 3], pads=[1] * 4),
                  helper.make_node("Transpose", [f"c{i}"], [f"n{i}"], perm=[0, 2, 3, 1]),
                  helper.make_node("Squeeze", [f"n{i}", "ax"], [f"q{i}"]),
                  helper.make_node("Mul", [f"q{i}", f"s{i}"], [f"m{i}"]),
                  helper.make_node("Add", [f"m{i}", f"o{i}"], [f"a{i}"]),
                  helper.make_node("Relu", [f"a{i}"], [f"r{i}"]),
                  helper.make_node("Unsqueeze", [f"r{i}", "ax"], [cur := ("y" if i else f"u{i}")])]
    return _model(nodes, (1, h, w, c), inits), rng.standard_normal((1, h, w, c)).astype(np.float32)


@contextlib.contextmanager
def before():
    """The compiler as it was: taps at ``DW`` apart in the panel, no Transpose below a unit Reshape, no Transpose
    of unit axes as a view (``conv_dead_taps`` is disabled by the caller)."""
    saved = (packed_pointwise.tap_stride, cancel_transposes._unit_reshape, cancel_transposes._order_kept)
    packed_pointwise.tap_stride = lambda L, dw: dw
    cancel_transposes._unit_reshape = lambda node: False
    cancel_transposes._order_kept = lambda node: False
    try:
        yield
    finally:
        packed_pointwise.tap_stride, cancel_transposes._unit_reshape, cancel_transposes._order_kept = saved


def compare(name: str, model: onnx.ModelProto, feeds: dict, shapes: dict | None, runs: int) -> dict:
    """Before, after and onnxruntime on ``feeds``: outputs checked, then timed interleaved."""
    after = cnnjit.compile(model, input_shapes=shapes, threads=1)
    with before():
        old = cnnjit.compile(model, input_shapes=shapes, threads=1, disable=["conv_dead_taps"])
    sess = ort_session(model)
    ref = sess.run(None, feeds)

    def err(outs: list) -> float:
        return max(float(np.abs(g - w).max() / (np.abs(w).max() + 1e-30)) for g, w in zip(outs, ref))

    spread = err(ort_session(model, optimize=False).run(None, feeds))  # onnxruntime against itself
    for m in (after, old):
        e = err(m.run(None, feeds))
        assert e < max(1e-3, 2 * spread), f"{name}: error {e:.2e} against onnxruntime (its own spread {spread:.1e})"
    res = measure({"before": lambda: old.run(None, feeds), "after": lambda: after.run(None, feeds),
                   "onnxruntime": lambda: sess.run(None, feeds)}, runs=runs, warmup=3, clock=time.thread_time_ns)
    ms = {k: (v["median_ms"], v["min_ms"]) for k, v in res.items()}
    return {"case": name, **{f"{k} ms": f"{a:.3f} / {b:.3f}" for k, (a, b) in ms.items()},
            "before/after": round(ms["before"][0] / ms["after"][0], 3),
            "before/after min": round(ms["before"][1] / ms["after"][1], 3),
            "after/ort": round(ms["after"][0] / ms["onnxruntime"][0], 3), "raw": ms}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--layer", action="append", help="C,M,L,K,D | C,M,H,W,K,D | nhwc:C,M,H,W (default: the grid)")
    ap.add_argument("--onnx", action="append", default=[],
                    help="PATH@NAME=d0,d1,...[@NAME=...]: an ONNX file and its input shapes (repeatable)")
    ap.add_argument("--runs", type=int, default=20)
    ap.add_argument("--out", default="dilated_taps", help="results/<OUT>.{json,md}")
    args = ap.parse_args()
    rng = np.random.default_rng(0)
    rows = []
    for spec in args.layer or ([] if args.onnx else LAYERS):
        model, x = nhwc_case(spec[5:], rng) if spec.startswith("nhwc:") else conv_case(spec, rng)
        rows.append(compare(spec, model, {"x": x}, None, args.runs))
        print(rows[-1]["case"], rows[-1]["before/after"], flush=True)
    for arg in args.onnx:
        path, *specs = arg.split("@")
        shapes = {k: tuple(int(d) for d in v.split(",")) for k, v in (t.split("=") for t in specs)}
        model = onnx.load(path)
        feeds = {i.name: rng.uniform(0, 2, shapes[i.name]).astype(np.float32) for i in model.graph.input
                 if i.name in shapes}
        rows.append(compare(Path(path).stem, model, feeds, shapes, args.runs))
        print(rows[-1]["case"], rows[-1]["before/after"], flush=True)
    headers = ["case", "before ms", "after ms", "onnxruntime ms", "before/after", "before/after min", "after/ort"]
    table = [[r[h] for h in headers] for r in rows]
    print_table(headers, table, "before / after (median / min ms, thread CPU time, 1 thread)")
    with open("/proc/loadavg") as f:
        load = f.read().split()[0]
    write_json(args.out, {"rows": rows, "runs": args.runs, "load": load})
    write_markdown(args.out, headers, table, title="Dilated taps and NHWC pairs: before / after",
                   notes=[f"`python benchmarks/dilated_taps.py {' '.join(sys.argv[1:])}`, load {load}, "
                          f"{args.runs} interleaved runs, median / min of thread CPU time"])


if __name__ == "__main__":
    main()
