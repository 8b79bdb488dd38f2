"""Fused integer ops made by the ``qdq_to_integer`` pass: channels-last (NHWC) integer convolution,
quantized elementwise Add and quantized average pooling.

These ops have no ONNX counterpart; they are what ``DequantizeLinear -> Conv/Gemm/MatMul [-> Relu/Clip]
-> QuantizeLinear`` (and ``DequantizeLinear x2 -> Add [-> Relu] -> QuantizeLinear``) become. Every
quantization parameter is folded into constants and attributes at compile time:

* ``QConvNHWC(x, w, bias, mult)``: ``x`` is ``[N, H, W, C]`` uint8/int8 with zero point ``x_zero_point``;
  ``w`` is ``[M, KH, KW, C/group]`` int8 with zero point 0 (the pass subtracts the weights' zero points);
  ``bias`` int32 ``[M]``; ``mult`` float32 ``[M]``, the requantisation multiplier
  ``float32(float32(x_scale * w_scale[m]) / y_scale)`` computed as onnxruntime's QLinearConv does.
  ``acc = bias[m] + sum (x - x_zero_point) * w`` in int32 (padding contributes zero after subtracting the
  zero point, as in QLinearConv), then ``y = clip(round_half_even(float32(acc) * mult[m]) + y_zero_point,
  lo, hi)``: ``[lo, hi]`` is the output type's range narrowed by a fused Relu/Clip (exact: quantization is
  monotonic, so ``Q(clip(v, a, b)) == clip(Q(v), Q(a), Q(b))``).
* ``QAdd(a, b)``: ``y = clip(round_half_even(fixed + float32(a) * ra + float32(b) * rb), lo, hi)`` with
  ``ra = float32(a_scale / y_scale)``, ``rb`` likewise and ``fixed = y_zp - (ra * a_zp + rb * b_zp)``, each
  step rounded to float32 in this order — onnxruntime's (MLAS) QLinearAdd on x86.
* ``QAvgPoolNHWC(x)``: ``DequantizeLinear -> AveragePool / GlobalAveragePool -> QuantizeLinear`` evaluated the
  way onnxruntime's CPU provider evaluates that float path when its optimizer leaves the pattern unfused
  (as in the MLPerf Tiny ResNet-8; fused into QLinearAveragePool it rounds the exact integer mean half to
  even instead, see docs/int8.md): every tap dequantized in
  float32 (``float32(x - x_zero_point) * x_scale``), the taps summed in float32 one after another in
  row-major window order, ``float32(sum / count)``, then ``QuantizeLinear`` (``float32(mean / y_scale)``,
  round half to even, zero point, clip to ``[lo, hi]``). An exact integer mean would differ: with a window of
  ``k`` taps, ``sum % k == k / 2`` is an exact tie (1 in ``k`` outputs), and which way the float path rounds
  it depends on the float32 rounding of the sum, so only this order reproduces onnxruntime bit for bit.
* ``QLut(x, table)``: any per-channel (or per-tensor) map of one integer byte to another, as a table
  ``[rows, 256]`` indexed by ``x``'s byte (``x & 255``) and, with one row per channel, by the index along
  ``axis``: what ``DequantizeLinear -> BatchNormalization / HardSwish / Sigmoid / ... -> QuantizeLinear``
  becomes (the ``qdq_lut`` pass tabulates the float chain on all 256 inputs, so the table is exact).
* ``QChannelMulNHWC(x, s, xt, st)``: squeeze-excite's quantized channel scale, see ``qchannel_mul_ref``.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ..errors import ShapeError
from ..types import DTYPES, TensorType
from . import REQUIRED, defop
from .nn import conv_ref

QINT_DTYPES = ("u8", "i8")


def _qconv_infer(types: list[TensorType | None], a: dict[str, Any]) -> list[TensorType]:
    x, w, b, m = types[:4]
    if x.rank != 4 or w.rank != 4:
        raise ShapeError(f"QConvNHWC: input {x} and weight {w} must be 4-D (NHWC / M,KH,KW,C/g)")
    if x.dtype not in (np.uint8, np.int8) or w.dtype != np.int8:
        raise ShapeError(f"QConvNHWC: input {x} must be u8/i8 and weight {w} i8")
    g = a["group"]
    M = w.shape[0]
    if g < 1 or x.shape[3] % g or M % g or w.shape[3] * g != x.shape[3]:
        raise ShapeError(f"QConvNHWC: group={g} does not fit input {x} and weight {w}")
    if b.shape != (M,) or b.dtype != np.int32 or m.shape != (M,) or m.dtype != np.float32:
        raise ShapeError(f"QConvNHWC: bias {b} must be i32[{M}] and multiplier {m} f32[{M}]")
    if a["dtype"] not in QINT_DTYPES:
        raise ShapeError(f"QConvNHWC: output type {a['dtype']!r} must be one of {QINT_DTYPES}")
    N, H, W, _ = x.shape
    out = []
    for i, size in enumerate((H, W)):
        k, s, d = w.shape[1 + i], a["strides"][i], a["dilations"][i]
        num = size + a["pads"][i] + a["pads"][2 + i] - (d * (k - 1) + 1)
        if num < 0:
            raise ShapeError(f"QConvNHWC: kernel {k} does not fit input {x}")
        out.append(num // s + 1)
    return [TensorType(DTYPES[a["dtype"]], (N, out[0], out[1], M))]


def requant_ref(acc: np.ndarray, mult: np.ndarray, yz: int, lo: int, hi: int, dtype: np.dtype) -> np.ndarray:
    """``clip(round_half_even(float32(int32 acc) * float32 mult) + yz, lo, hi)``."""
    v = np.rint(acc.astype(np.int32).astype(np.float32) * mult.astype(np.float32)).astype(np.float64)
    return np.clip(v + yz, lo, hi).astype(dtype)


@defop("QConvNHWC", inputs=(4, 4), infer=_qconv_infer,
       attrs={"strides": REQUIRED, "pads": REQUIRED, "dilations": REQUIRED, "group": 1,
              "x_zero_point": 0, "y_zero_point": 0, "lo": REQUIRED, "hi": REQUIRED, "dtype": REQUIRED})
def qconv_nhwc_ref(ins: list[np.ndarray | None], a: dict[str, Any]) -> np.ndarray:
    x, w, b, m = ins
    X = x.transpose(0, 3, 1, 2).astype(np.float64) - a["x_zero_point"]
    Wt = w.transpose(0, 3, 1, 2).astype(np.float64)
    ca = {"kernel_shape": list(w.shape[1:3]), "strides": list(a["strides"]), "pads": list(a["pads"]),
          "dilations": list(a["dilations"]), "group": a["group"]}
    acc = np.rint(conv_ref([X, Wt], ca)).astype(np.int64) + b.astype(np.int64).reshape(1, -1, 1, 1)
    acc = acc.astype(np.int32)  # int32 accumulation wraps
    y = requant_ref(acc, m.reshape(1, -1, 1, 1), a["y_zero_point"], a["lo"], a["hi"], DTYPES[a["dtype"]])
    return np.ascontiguousarray(y.transpose(0, 2, 3, 1))


def _qadd_infer(types: list[TensorType | None], a: dict[str, Any]) -> list[TensorType]:
    x, y = types
    if x.shape != y.shape or x.dtype not in (np.uint8, np.int8) or y.dtype not in (np.uint8, np.int8):
        raise ShapeError(f"QAdd: operands {x} and {y} must be u8/i8 of one shape")
    if a["dtype"] not in QINT_DTYPES:
        raise ShapeError(f"QAdd: output type {a['dtype']!r} must be one of {QINT_DTYPES}")
    return [TensorType(DTYPES[a["dtype"]], x.shape)]


def qadd_fixed(a: dict[str, Any]) -> np.float32:
    f = np.float32
    return f(f(a["y_zero_point"]) - f(f(f(a["ra"]) * f(a["a_zero_point"])) + f(f(a["rb"]) * f(a["b_zero_point"]))))


@defop("QAdd", inputs=(2, 2), infer=_qadd_infer,
       attrs={"a_zero_point": REQUIRED, "b_zero_point": REQUIRED, "y_zero_point": REQUIRED, "ra": REQUIRED,
              "rb": REQUIRED, "lo": REQUIRED, "hi": REQUIRED, "dtype": REQUIRED})
def qadd_ref(ins: list[np.ndarray | None], a: dict[str, Any]) -> np.ndarray:
    x, y = ins
    f = np.float32
    v = (qadd_fixed(a) + x.astype(f) * f(a["ra"])).astype(f) + (y.astype(f) * f(a["rb"])).astype(f)
    v = np.rint(v.astype(f)).astype(np.float64)
    return np.clip(v, a["lo"], a["hi"]).astype(DTYPES[a["dtype"]])


def _qavgpool_infer(types: list[TensorType | None], a: dict[str, Any]) -> list[TensorType]:
    x = types[0]
    if x.rank != 4 or x.dtype not in (np.uint8, np.int8):
        raise ShapeError(f"QAvgPoolNHWC: input {x} must be u8/i8 NHWC")
    if a["dtype"] not in QINT_DTYPES:
        raise ShapeError(f"QAvgPoolNHWC: output type {a['dtype']!r} must be one of {QINT_DTYPES}")
    N, H, W, C = x.shape
    out = []
    for i, size in enumerate((H, W)):
        k, s, p0, p1 = a["kernel_shape"][i], a["strides"][i], a["pads"][i], a["pads"][2 + i]
        if k < 1 or s < 1 or p0 >= k or p1 >= k or size + p0 + p1 < k:
            raise ShapeError(f"QAvgPoolNHWC: kernel {a['kernel_shape']} / pads {a['pads']} do not fit input {x}")
        out.append((size + p0 + p1 - k) // s + 1)
    return [TensorType(DTYPES[a["dtype"]], (N, out[0], out[1], C))]


@defop("QAvgPoolNHWC", inputs=(1, 1), infer=_qavgpool_infer,
       attrs={"kernel_shape": REQUIRED, "strides": REQUIRED, "pads": REQUIRED, "count_include_pad": 0,
              "x_scale": REQUIRED, "x_zero_point": REQUIRED, "y_scale": REQUIRED, "y_zero_point": REQUIRED,
              "lo": REQUIRED, "hi": REQUIRED, "dtype": REQUIRED})
def qavgpool_ref(ins: list[np.ndarray | None], a: dict[str, Any]) -> np.ndarray:
    x = ins[0]
    f = np.float32
    d = ((x.astype(f) - f(a["x_zero_point"])) * f(a["x_scale"])).astype(f)
    N, H, W, C = x.shape
    (OH, OW) = _qavgpool_infer([TensorType(x.dtype, x.shape)], a)[0].shape[1:3]
    KH, KW = a["kernel_shape"]
    mean = np.zeros((N, OH, OW, C), f)
    for oh in range(OH):
        for ow in range(OW):
            hs, ws = oh * a["strides"][0] - a["pads"][0], ow * a["strides"][1] - a["pads"][1]
            acc = np.zeros((N, C), f)
            count = 0
            for h in range(max(hs, 0), min(hs + KH, H)):
                for w in range(max(ws, 0), min(ws + KW, W)):
                    acc = (acc + d[:, h, w, :]).astype(f)
                    count += 1
            if a["count_include_pad"]:
                count = KH * KW
            mean[:, oh, ow, :] = (acc / f(count)).astype(f)
    q = np.rint((mean / f(a["y_scale"])).astype(f)).astype(np.float64) + a["y_zero_point"]
    return np.clip(q, a["lo"], a["hi"]).astype(DTYPES[a["dtype"]])


def _qlut_infer(types: list[TensorType | None], a: dict[str, Any]) -> list[TensorType]:
    x, t = types
    ax = a["axis"]
    if x.dtype not in (np.uint8, np.int8) or t.dtype not in (np.uint8, np.int8) or t.rank != 2 or t.shape[1] != 256:
        raise ShapeError(f"QLut: input {x} must be u8/i8 and table {t} u8/i8[rows, 256]")
    if not 0 <= ax < x.rank or t.shape[0] not in (1, x.shape[ax]):
        raise ShapeError(f"QLut: table {t} needs 1 row or one per index of axis {ax} of input {x}")
    return [TensorType(t.dtype, x.shape)]


@defop("QLut", inputs=(2, 2), infer=_qlut_infer, attrs={"axis": REQUIRED})
def qlut_ref(ins: list[np.ndarray | None], a: dict[str, Any]) -> np.ndarray:
    """``y = table[row, x & 255]``, the row being the index along ``axis`` (row 0 for a one-row table)."""
    x, t = ins
    idx = np.ascontiguousarray(x).view(np.uint8).astype(np.intp)
    if t.shape[0] == 1:
        return t[0][idx]
    shape = [1] * x.ndim
    shape[a["axis"]] = -1
    return t[np.arange(t.shape[0]).reshape(shape), idx]


def _qcmul_infer(types: list[TensorType | None], a: dict[str, Any]) -> list[TensorType]:
    x, s, xt, st = types
    if x.rank != 4 or s.rank != 4 or s.shape != (x.shape[0], 1, 1, x.shape[3]):
        raise ShapeError(f"QChannelMulNHWC: scale {s} must be [N, 1, 1, C] for input {x}")
    if x.dtype not in (np.uint8, np.int8) or s.dtype not in (np.uint8, np.int8) or a["dtype"] not in QINT_DTYPES:
        raise ShapeError(f"QChannelMulNHWC: input {x}, scale {s} and output {a['dtype']!r} must be u8/i8")
    if xt.shape != (256,) or st.shape != (256,) or xt.dtype != np.float32 or st.dtype != np.float32:
        raise ShapeError(f"QChannelMulNHWC: dequantisation tables {xt}, {st} must be f32[256]")
    return [TensorType(DTYPES[a["dtype"]], x.shape)]


@defop("QChannelMulNHWC", inputs=(4, 4), infer=_qcmul_infer,
       attrs={"y_scale": REQUIRED, "y_zero_point": REQUIRED, "lo": REQUIRED, "hi": REQUIRED, "dtype": REQUIRED})
def qchannel_mul_ref(ins: list[np.ndarray | None], a: dict[str, Any]) -> np.ndarray:
    """``QuantizeLinear(DequantizeLinear(x) * DequantizeLinear(s))`` with ``s`` one number per image and channel
    (squeeze-excite's gate): ``xt`` / ``st`` hold the dequantised value of every byte (float32, exactly
    DequantizeLinear's), then the float32 product, ``float32(p / y_scale)``, round half to even, zero point,
    clip to ``[lo, hi]``."""
    x, s, xt, st = ins
    f = np.float32
    p = (xt[np.ascontiguousarray(x).view(np.uint8)] * st[np.ascontiguousarray(s).view(np.uint8)]).astype(f)
    q = np.rint((p / f(a["y_scale"])).astype(f)).astype(np.float64) + a["y_zero_point"]
    return np.clip(q, a["lo"], a["hi"]).astype(DTYPES[a["dtype"]])
