"""onnxruntime's DynamicQuantizeLSTM (int8 weights, the state quantized at every step) per layer: cnnjit's
default against a "before" compile (the table without ``--without`` variants, default
``ConvInteger:channel_u8s8``: the projection of a few steps on pixel tiles; with the earlier kernel forms
``--before``, none by default) and onnxruntime, 1 thread, interleaved in one process.

    python benchmarks/dq_lstm.py [--runs 30] [--warmup 3] [--without OP:VARIANT,...] [--before FORM,...] [--cpu]

Per layer (steps T, batch B, input I, hidden H, direction): a one-node model with seeded int8 weights in
the range real quantize_dynamic models have (|R| <= 127), a seeded float input; cnnjit's outputs checked
against onnxruntime's (``rel err``: largest difference over the largest magnitude; the two agree to
onnxruntime's own rounding flips, see ``benchmarks/heldout.py``), then all three timed
(``harness.measure``: medians and minima; ``--cpu`` thread CPU time on a loaded machine). Results:
``benchmarks/results/dq_lstm.json`` and ``.md``.
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.harness import single_thread  # noqa: E402

single_thread()

import argparse  # noqa: E402
import os  # noqa: E402
import time  # noqa: E402

import numpy as np  # noqa: E402
import onnx  # noqa: E402
from onnx import TensorProto, helper, numpy_helper  # noqa: E402

import cnnjit  # noqa: E402
from benchmarks.harness import measure, ort_session, variants_without, write_json, write_markdown  # noqa: E402

#: (label, T, B, I, H, direction): vfl_embedder's first and later layers (80 steps, 768 units), a CRNN's
#: bidirectional 512-unit layer over 32 columns, a 256-unit speech layer, streaming layers of one step
#: (vfl_filter's 512 units) and of a few
LAYERS = [("vfl_embedder 768x768 T80", 80, 1, 768, 768, "forward"),
          ("vfl_embedder 40x768 T80", 80, 1, 40, 768, "forward"),
          ("CRNN bi 512x256 T32", 32, 1, 512, 256, "bidirectional"),
          ("speech 256x256 T100", 100, 1, 256, 256, "forward"),
          ("stream 512x512 T1", 1, 1, 512, 512, "forward"),
          ("stream bi 512x512 T1", 1, 1, 512, 512, "bidirectional"),
          ("stream 256x256 T4", 4, 1, 256, 256, "forward")]


def dq_lstm(T: int, B: int, I: int, H: int, direction: str, seed: int = 0) -> tuple[onnx.ModelProto, dict]:
    """A one-node DynamicQuantizeLSTM with seeded int8 weights and float input."""
    rng = np.random.default_rng(seed)
    D = 2 if direction == "bidirectional" else 1
    inits = {"W": rng.integers(-127, 128, (D, I, 4 * H)).astype(np.int8),
             "R": rng.integers(-127, 128, (D, H, 4 * H)).astype(np.int8),
             "B": rng.normal(0, 0.5, (D, 8 * H)).astype(np.float32),
             "Ws": np.full(D, 0.3 / np.sqrt(I) / 64, np.float32), "Wz": np.zeros(D, np.int8),
             "Rs": np.full(D, 0.3 / np.sqrt(H) / 64, np.float32), "Rz": np.zeros(D, np.int8)}
    names = ["X", "W", "R", "B", "", "", "", "", "Ws", "Wz", "Rs", "Rz"]
    node = helper.make_node("DynamicQuantizeLSTM", names, ["Y", "Y_h", "Y_c"], domain="com.microsoft",
                            direction=direction, hidden_size=H)
    graph = helper.make_graph([node], "dqlstm", [helper.make_tensor_value_info("X", TensorProto.FLOAT, [T, B, I])],
                              [helper.make_tensor_value_info(o, TensorProto.FLOAT, None) for o in ("Y", "Y_h", "Y_c")],
                              initializer=[numpy_helper.from_array(v, name=k) for k, v in inits.items()])
    opsets = [helper.make_opsetid("", 14), helper.make_opsetid("com.microsoft", 1)]
    model = helper.make_model(graph, opset_imports=opsets, ir_version=8)
    return model, {"X": rng.normal(size=(T, B, I)).astype(np.float32)}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--runs", type=int, default=30)
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--without", default="ConvInteger:channel_u8s8",
                    help="OP:VARIANT[,OP:VARIANT...] left out of the 'before' table")
    ap.add_argument("--before", default="", help="FORM[,FORM...] of the 'before' compile")
    ap.add_argument("--cpu", action="store_true", help="time thread CPU time, not wall time")
    ap.add_argument("--out", default=None, help="results folder (default benchmarks/results)")
    args = ap.parse_args(argv)
    removed = [tuple(s.split(":", 1)) for s in args.without.split(",") if s]
    clock = time.thread_time_ns if args.cpu else time.perf_counter_ns
    rows, result = [], {}
    for label, T, B, I, H, direction in LAYERS:
        model, feeds = dq_lstm(T, B, I, H, direction)
        new = cnnjit.compile(model, threads=1)
        with variants_without(removed):
            old = cnnjit.compile(model, threads=1, forms=[f for f in args.before.split(",") if f])
        sess = ort_session(model)
        want = sess.run(None, feeds)[0]
        got = new.run(None, feeds)[0]
        np.testing.assert_array_equal(old.run(None, feeds)[0], got)
        err = float(np.abs(got - want).max() / max(float(np.abs(want).max()), 1e-30))
        load0 = os.getloadavg()[0]
        st = measure({"cnnjit": lambda: new.run(None, feeds), "before": lambda: old.run(None, feeds),
                      "onnxruntime": lambda: sess.run(None, feeds)}, args.runs, args.warmup, clock=clock)
        med = {k: v["median_ms"] for k, v in st.items()}
        mn = {k: v["min_ms"] for k, v in st.items()}
        result[label] = {"T": T, "B": B, "I": I, "H": H, "direction": direction, "rel_err": err,
                         "median_ms": med, "min_ms": mn, "load": [load0, os.getloadavg()[0]]}
        rows.append([label, f"{err:.1e}", f"{med['cnnjit']:.3g} / {mn['cnnjit']:.3g}",
                     f"{med['before']:.3g} / {mn['before']:.3g}", f"{med['onnxruntime']:.3g} / {mn['onnxruntime']:.3g}",
                     f"{med['before'] / med['cnnjit']:.2f}", f"{med['cnnjit'] / med['onnxruntime']:.3f}",
                     f"{mn['cnnjit'] / mn['onnxruntime']:.3f}", f"{load0:.1f}"])
        print(*rows[-1], flush=True)
    write_json("dq_lstm", {"layers": result, "runs": args.runs, "without": args.without, "before": args.before,
                           "cpu": args.cpu}, args.out)
    write_markdown("dq_lstm", ["layer", "rel err vs ORT", "cnnjit med / min ms", "before med / min ms",
                               "ORT med / min ms", "before / cnnjit (med)", "cnnjit / ORT med", "cnnjit / ORT min",
                               "load"], rows,
                   title="DynamicQuantizeLSTM layers, cnnjit vs the table without a variant and onnxruntime, 1 thread",
                   notes=[f"before = the table without {args.without}, forms {args.before}; {args.runs} interleaved "
                          "rounds after "
                          f"{args.warmup} warm-up, {'thread CPU' if args.cpu else 'wall'} time",
                          f"Command: python benchmarks/dq_lstm.py --runs {args.runs} --without {args.without}"
                          + (f" --before {args.before}" if args.before else "") + (" --cpu" if args.cpu else "")],
                   out_dir=args.out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
