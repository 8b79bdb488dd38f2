"""PTQ accuracy: ``cnnjit.quantize`` int8 against the float model (the protocol of tests/test_int8.py).

    python benchmarks/int8_accuracy.py mobilenet_v2_224 [--inputs 200] [--calibration 16]
        [--options '{"method": "percentile"}'] [--layers]

Calibrates on ``--calibration`` seeded standard-normal inputs (``default_rng(1)``), evaluates cnnjit int8
(the u8s8 QDQ model, integer kernels) against cnnjit fp32 on ``--inputs`` other seeded inputs
(``default_rng(1000 + i)``): argmax agreement, minimum / mean cosine, output SQNR, and the agreement the
same inputs would reach with the int8 error scaled down (``float + k * (int8 - float)``), which shows how
much less noise a target needs. ``--layers`` adds the SQNR of every quantized activation tensor
(onnxruntime on the QDQ model with those tensors exposed).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def main(argv: list[str] | None = None) -> int:
    import cnnjit
    from benchmarks.models import MODEL_SET, load

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("model")
    ap.add_argument("--inputs", type=int, default=200)
    ap.add_argument("--calibration", type=int, default=16)
    ap.add_argument("--options", default="{}", help="keyword arguments of cnnjit.quantize, as JSON")
    ap.add_argument("--layers", action="store_true")
    args = ap.parse_args(argv)
    entry = MODEL_SET[args.model]
    model, feeds = load(args.model)
    k = next(iter(feeds))
    rng = np.random.default_rng(1)
    cal = [{k: rng.standard_normal(entry.input_shape).astype(np.float32)} for _ in range(args.calibration)]
    q = cnnjit.quantize(model, cal, evaluate=False, **json.loads(args.options))
    shapes = {k: entry.input_shape}
    qm, fm = cnnjit.compile(q, input_shapes=shapes), cnnjit.compile(model, input_shapes=shapes)
    xs = [{k: np.random.default_rng(1000 + i).standard_normal(entry.input_shape).astype(np.float32)}
          for i in range(args.inputs)]
    A = np.array([fm.run(None, x)[0].astype(np.float64).ravel() for x in xs])
    B = np.array([qm.run(None, x)[0].astype(np.float64).ravel() for x in xs])
    cos = (A * B).sum(1) / np.maximum(np.linalg.norm(A, axis=1) * np.linalg.norm(B, axis=1), 1e-30)
    sq = 10 * np.log10((A ** 2).sum() / max(((A - B) ** 2).sum(), 1e-300))
    top2 = np.sort(A, axis=1)[:, -2:]
    print(f"{args.model} options={args.options} calibration={args.calibration} inputs={args.inputs}")
    print(f"  argmax agreement {np.mean(A.argmax(1) == B.argmax(1)):.3f}  cosine min {cos.min():.5f} "
          f"mean {cos.mean():.5f}  output SQNR {sq:.2f} dB")
    print(f"  median top1-top2 gap {np.median(top2[:, 1] - top2[:, 0]):.4g}  output std {A.std():.4g}  "
          f"int8 error std {(A - B).std():.4g}")
    for s in (0.5, 0.3, 0.2, 0.1):
        C = A + s * (B - A)
        print(f"  error x{s}: SQNR {sq - 20 * np.log10(s):.1f} dB, argmax agreement "
              f"{np.mean(C.argmax(1) == A.argmax(1)):.3f}")
    if args.layers:
        _layers(q, k, xs[:40])
    return 0


def _layers(q, k: str, xs: list[dict]) -> None:
    import onnx
    import onnxruntime as ort
    from onnx import TensorProto, helper

    ts = [t for t in q.activations if t != k]

    def session(m: onnx.ModelProto) -> ort.InferenceSession:
        m = onnx.ModelProto.FromString(m.SerializeToString())
        have = {o.name for o in m.graph.output}
        m.graph.output.extend(helper.make_tensor_value_info(t, TensorProto.FLOAT, None) for t in ts if t not in have)
        so = ort.SessionOptions()
        so.intra_op_num_threads = 1
        so.log_severity_level = 3
        return ort.InferenceSession(m.SerializeToString(), so, providers=["CPUExecutionProvider"])

    fs, qs = session(q.float_model), session(q.model)
    names = [o.name for o in fs.get_outputs()]
    num = dict.fromkeys(names, 0.0)
    den = dict.fromkeys(names, 0.0)
    for x in xs:
        a, b = fs.run(None, x), qs.run(None, x)
        for t, u, v in zip(names, a, b):
            num[t] += float(((u.astype(np.float64) - v) ** 2).sum())
            den[t] += float((u.astype(np.float64) ** 2).sum())
    print("  per-tensor SQNR (onnxruntime, QDQ model vs float model):")
    for t in names:
        s, z = q.activations.get(t, (0.0, 0))
        print(f"    {10 * np.log10(den[t] / max(num[t], 1e-300)):7.2f} dB  scale {s:.4g} zp {z:4d}  {t}")


if __name__ == "__main__":
    raise SystemExit(main())
