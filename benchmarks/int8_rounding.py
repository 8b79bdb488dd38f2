"""Rounding: cnnjit vs onnxruntime vs TFLite-style integer arithmetic on the int8 MLPerf Tiny models.

    python benchmarks/int8_rounding.py [--model pretrainedResnet_quant] [--inputs 50]

No TFLite runtime or .tflite file is used: the TFLite column is a numpy emulation of TFLite's reference
int8 kernels (``tensorflow/lite/kernels/internal/reference/integer_ops``) run on cnnjit's integer IR of
the same model — fixed-point requantisation (``QuantizeMultiplier``: a Q31 multiplier and shift;
``MultiplyByQuantizedMultiplier``: saturating rounding doubling high multiply, then a rounding right shift,
both rounding half away from zero), the int8 Add (inputs shifted left by 20, three fixed-point
multipliers), the int8 average pool (integer sum of the raw int8 values, divided rounding half away from
zero) and the int8 Softmax of TFLite's CPU kernel (a float32 lookup table of ``exp``; output
``round(exp / sum / out_scale)`` half away from zero). The multipliers are derived from the float32
multipliers cnnjit keeps (``x_scale * w_scale / y_scale`` rounded to float32), not from the double-precision
products TFLite computes; that can move a few ties. Prints, per input set, the largest difference (LSB) at
the output and how many outputs differ, for every pair of cnnjit / onnxruntime / TFLite-style.
"""

from __future__ import annotations

import argparse
import math
import os
from pathlib import Path

import numpy as np

SHARED = Path(os.environ.get("CNNJIT_SHARED", Path(__file__).resolve().parents[2] / "shared"))


# -- TFLite's fixed-point helpers (tensorflow/lite/kernels/internal/common.h, gemmlowp) ------------------------
def quantize_multiplier(m: float) -> tuple[int, int]:
    """``m == q * 2**(shift - 31)`` with ``q`` a Q31 int32 (TFLite's QuantizeMultiplier)."""
    if m == 0:
        return 0, 0
    frac, shift = math.frexp(m)
    q = int(math.floor(abs(frac) * (1 << 31) + 0.5)) * (1 if frac > 0 else -1)  # std::round
    if q == 1 << 31:
        q //= 2
        shift += 1
    if shift < -31:
        return 0, 0
    return q, shift


def _srdhm(a: np.ndarray, b: int) -> np.ndarray:
    """SaturatingRoundingDoublingHighMul (int32 in, int32 out; exact in int64 / Python ints)."""
    ab = a.astype(np.int64) * np.int64(b)
    nudge = np.where(ab >= 0, np.int64(1 << 30), np.int64(1 - (1 << 30)))
    s = ab + nudge
    q = np.where(s >= 0, s // (1 << 31), -((-s) // (1 << 31)))  # C division truncates toward zero
    q = np.where((a == -(1 << 31)) & (b == -(1 << 31)), (1 << 31) - 1, q)
    return q.astype(np.int64)


def _rdbypot(x: np.ndarray, e: int) -> np.ndarray:
    """RoundingDivideByPOT: x / 2**e rounding half away from zero."""
    if e == 0:
        return x
    mask = (1 << e) - 1
    rem = x & mask
    thr = (mask >> 1) + (x < 0)
    return (x >> e) + (rem > thr)


def mul_by_quantized_multiplier(x: np.ndarray, q: int, shift: int) -> np.ndarray:
    left, right = max(shift, 0), max(-shift, 0)
    return _rdbypot(_srdhm((x.astype(np.int64) << left), q), right)


# -- the integer ops, TFLite-style ---------------------------------------------------------------------------------
def tfl_conv(x: np.ndarray, w: np.ndarray, b: np.ndarray, mult: np.ndarray, a: dict) -> np.ndarray:
    from cnnjit.ir.ops.nn import conv_ref

    X = x.transpose(0, 3, 1, 2).astype(np.float64) - a["x_zero_point"]
    W = w.transpose(0, 3, 1, 2).astype(np.float64)
    ca = {"kernel_shape": list(w.shape[1:3]), "strides": list(a["strides"]), "pads": list(a["pads"]),
          "dilations": list(a["dilations"]), "group": a["group"]}
    acc = np.rint(conv_ref([X, W], ca)).astype(np.int64) + b.astype(np.int64).reshape(1, -1, 1, 1)
    out = np.empty_like(acc)
    for c in range(acc.shape[1]):
        q, s = quantize_multiplier(float(mult[c]))
        out[:, c] = mul_by_quantized_multiplier(acc[:, c], q, s)
    y = np.clip(out + a["y_zero_point"], a["lo"], a["hi"])
    return y.transpose(0, 2, 3, 1)


def tfl_add(x: np.ndarray, y: np.ndarray, a: dict) -> np.ndarray:
    ra, rb = float(a["ra"]), float(a["rb"])  # input scales over the output scale
    left = 20
    twice_max = 2 * max(ra, rb)
    q1, s1 = quantize_multiplier(ra / twice_max)
    q2, s2 = quantize_multiplier(rb / twice_max)
    qo, so = quantize_multiplier(twice_max / (1 << left))
    v1 = mul_by_quantized_multiplier((x.astype(np.int64) - a["a_zero_point"]) << left, q1, s1)
    v2 = mul_by_quantized_multiplier((y.astype(np.int64) - a["b_zero_point"]) << left, q2, s2)
    out = mul_by_quantized_multiplier(v1 + v2, qo, so) + a["y_zero_point"]
    return np.clip(out, a["lo"], a["hi"])


def tfl_avgpool(x: np.ndarray, a: dict) -> np.ndarray:
    if a["x_scale"] != a["y_scale"] or a["x_zero_point"] != a["y_zero_point"]:
        raise ValueError("TFLite's int8 average pool needs equal input and output quantization")
    N, H, W, C = x.shape
    KH, KW = a["kernel_shape"]
    sh, sw = a["strides"]
    OH, OW = (H + a["pads"][0] + a["pads"][2] - KH) // sh + 1, (W + a["pads"][1] + a["pads"][3] - KW) // sw + 1
    y = np.zeros((N, OH, OW, C), np.int64)
    for oh in range(OH):
        for ow in range(OW):
            h0, w0 = oh * sh - a["pads"][0], ow * sw - a["pads"][1]
            hs, ws = slice(max(h0, 0), min(h0 + KH, H)), slice(max(w0, 0), min(w0 + KW, W))
            win = x[:, hs, ws, :].astype(np.int64)
            n = win.shape[1] * win.shape[2]
            acc = win.sum(axis=(1, 2))
            y[:, oh, ow] = np.where(acc > 0, (acc + n // 2) // n, -((-acc + n // 2) // n))
    return np.clip(y, a["lo"], a["hi"])


def tfl_softmax(x: np.ndarray, sx: float, sy: float, zy: int, lo: int, hi: int) -> np.ndarray:
    """TFLite's CPU int8 softmax: float32 exp table indexed by (max - x), one float32 sum per row."""
    f = np.float32
    table = np.exp(-f(sx) * np.arange(256, dtype=f)).astype(f)  # beta = 1
    x = x.astype(np.int64)
    d = x.max(axis=-1, keepdims=True) - x
    e = table[d]
    s = e.sum(axis=-1, keepdims=True, dtype=f)
    inv = (f(1.0) / (s * f(sy))).astype(f)
    p = (e * inv).astype(f)
    r = np.sign(p) * np.floor(np.abs(p) + f(0.5))  # std::round
    return np.clip(r + zy, lo, hi)


def tfl_run(graph, x: np.ndarray) -> np.ndarray:
    """cnnjit's integer IR evaluated with the TFLite-style ops above (other ops: the IR's references)."""
    from cnnjit.ir.ops import get_op

    env: dict[int, np.ndarray] = {graph.inputs[0].id: x}
    origin: dict[int, tuple] = {}  # float value id -> how it was made (to spot DQ -> Softmax -> Q)

    def get(v):
        return None if v is None else (v.const if v.is_const else env[v.id])

    for n in graph.nodes:
        ins = [get(v) for v in n.inputs]
        a = n.attrs
        if n.op == "QConvNHWC":
            out = tfl_conv(ins[0], ins[1], ins[2], ins[3], a)
        elif n.op == "QAdd":
            out = tfl_add(ins[0], ins[1], a)
        elif n.op == "QAvgPoolNHWC":
            out = tfl_avgpool(ins[0], a)
        elif n.op == "QuantizeLinear" and origin.get(n.inputs[0].id, ("",))[0] == "softmax":
            _, xi, sx = origin[n.inputs[0].id]
            zy = int(ins[2].reshape(())) if len(ins) > 2 and ins[2] is not None else 0
            info = np.iinfo(n.outputs[0].dtype)
            out = tfl_softmax(xi, sx, float(ins[1].reshape(())), zy, int(info.min), int(info.max))
        else:
            out = get_op(n.op).run(ins, a)[0]
            if n.op == "DequantizeLinear" and ins[1].size == 1:
                origin[n.outputs[0].id] = ("dq", ins[0], float(ins[1].reshape(())))
            elif n.op == "Softmax" and origin.get(n.inputs[0].id, ("",))[0] == "dq":
                origin[n.outputs[0].id] = ("softmax",) + origin[n.inputs[0].id][1:]
        env[n.outputs[0].id] = np.asarray(out).astype(n.outputs[0].dtype).reshape(n.outputs[0].shape)
    return env[graph.outputs[0].id]


def main(argv: list[str] | None = None) -> int:
    import onnxruntime as ort

    import cnnjit

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="pretrainedResnet_quant")
    ap.add_argument("--inputs", type=int, default=50)
    args = ap.parse_args(argv)
    path = SHARED / "models" / "mlperf-tiny" / f"{args.model}.tf2onnx.onnx"
    so = ort.SessionOptions()
    so.intra_op_num_threads = so.inter_op_num_threads = 1
    sess = ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])
    inp = sess.get_inputs()[0]
    shape = [d if isinstance(d, int) else 1 for d in inp.shape]
    m = cnnjit.compile(str(path), input_shapes={inp.name: shape})
    pairs = {("cnnjit", "onnxruntime"): [], ("cnnjit", "tflite-style"): [], ("onnxruntime", "tflite-style"): []}
    argmax = {k: 0 for k in pairs}
    for seed in range(args.inputs):
        x = np.random.default_rng(seed).integers(-128, 128, size=shape).astype(np.int8)
        outs = {"onnxruntime": sess.run(None, {inp.name: x})[0].astype(np.int64),
                "cnnjit": m.run(None, {inp.name: x})[0].astype(np.int64),
                "tflite-style": tfl_run(m.ir, x).astype(np.int64)}
        for a, b in pairs:
            pairs[(a, b)].append(int(np.abs(outs[a] - outs[b]).max()))
            argmax[(a, b)] += int(outs[a].argmax() == outs[b].argmax())
    print(f"{args.model}: {args.inputs} seeded int8 inputs, output difference in LSB")
    for (a, b), d in pairs.items():
        d = np.array(d)
        print(f"  {a:>11} vs {b:<12}: max {d.max():3d}, median {int(np.median(d)):3d}, identical outputs "
              f"{int((d == 0).sum()):3d}/{len(d)}, argmax agreement {argmax[(a, b)]}/{len(d)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
