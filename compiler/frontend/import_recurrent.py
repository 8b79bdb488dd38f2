"""Importers for LSTM, GRU, RNN and onnxruntime's DynamicQuantizeLSTM (com.microsoft).

Each layer becomes its input projection for all timesteps and directions at once, a ``Gemm``
``X [T*B, I] @ W^T + bias`` with the weights of both directions as columns, read by the recurrence as the
time-major ``G [T, B, D*NG*H]`` (``time_major=1``), and the recurrence over its result (``LSTMLoop`` /
``GRULoop`` / ``RNNLoop``, see ``cnnjit.ir.ops.recurrent``). The bias in the projection is ``Wb + Rb``
(GRU: without the ``h`` gate's ``Rb``, which the recurrence adds itself). Optional inputs that are constant
no-ops (zero initial states and peepholes, sequence lengths all ``T``) are dropped. ``layout=1`` (batch first)
becomes Transposes. DynamicQuantizeLSTM is computed as onnxruntime computes it: ``X`` quantized to uint8 over
the whole tensor (``DynamicQuantizeLinear``), an integer projection (``ConvInteger``) rescaled by
``x_scale * W_scale``, and
the ``DQLSTMLoop`` recurrence, which quantizes each batch row's ``h`` at every step. onnxruntime's x86 kernels
without VNNI saturate pairs of u8 x s8 products to int16 (``vpmaddubsw``): the recurrence and the projection
reproduce that on such hosts (``ort_u8s8_saturates``; ``ConvInteger``'s ``saturate``). On real weights and
inputs the projection rarely saturates (the corpus CRNN: 2e-3 of an LSTM output's scale without it, against
9e-2 without the recurrence's saturation), but weights near +-127 against inputs near 255 do: 40% of the
output there (a DynamicQuantizeLSTM with int8 weights in [100, 127], onnxruntime 1.32 on AVX2).
"""

from __future__ import annotations

import platform
from typing import Any

import numpy as np

from cnnjit.ir import Value
from cnnjit.ir.errors import ShapeError
from cnnjit.ir.ops.recurrent import ACTIVATIONS, GATES, NACT, num_directions
from cnnjit.runtime.native import host_machine

from . import onnx_proto as onnx
from .registry import VARIANT_CHECKS, ImportContext, Unsupported, importer

_DEFAULT_ACTS = {"LSTMLoop": ("Sigmoid", "Tanh", "Tanh"), "GRULoop": ("Sigmoid", "Tanh"), "RNNLoop": ("Tanh",)}
_BY_LOWER = {k.lower(): k for k in ACTIVATIONS}


def _arg(ins: list, i: int) -> Value | None:
    return ins[i] if len(ins) > i else None


def _zero_const(v: Value | None) -> bool:
    return v is not None and v.is_const and not np.any(v.const)


def _refusal(a: dict[str, Any]) -> str:
    """Why cnnjit cannot run a recurrent layer with attributes ``a`` ("" if it can): an activation outside
    ``ACTIVATIONS``, or ``activation_alpha`` / ``activation_beta``."""
    bad = [f for f in a.get("activations") or () if str(f).lower() not in _BY_LOWER]
    if bad:
        return f"activation {bad[0]!r} is not supported (supported: {', '.join(ACTIVATIONS)})"
    if a.get("activation_alpha") or a.get("activation_beta"):
        return "activation_alpha / activation_beta are not supported"
    return ""


def _recurrent_check(node: onnx.NodeProto) -> str:
    """``VARIANT_CHECKS`` entry: the refusal of ``_refusal`` from the node's attributes alone, so that
    ``check_supported`` lists such a layer together with every other unsupported node."""
    a: dict[str, Any] = {}
    for at in node.attribute:
        if at.name in ("activations", "activation_alpha", "activation_beta"):
            v = onnx.get_attribute_value(at)
            a[at.name] = [s.decode("utf-8", errors="replace") if isinstance(s, bytes) else s for s in v]
    return _refusal(a)


for _key in ("LSTM", "GRU", "RNN", "com.microsoft:DynamicQuantizeLSTM"):
    VARIANT_CHECKS[_key] = _recurrent_check


def _activations(ctx: ImportContext, op: str, a: dict[str, Any], D: int) -> tuple[str, ...]:
    acts = a.get("activations")
    n = NACT[op]
    if not acts:
        return _DEFAULT_ACTS[op] * D
    if len(acts) == n and D == 2:
        acts = list(acts) * 2
    out = [_BY_LOWER[str(f).lower()] for f in acts]
    if len(out) != n * D:
        raise ShapeError(f"{ctx.where()}: {len(out)} activations given, {n * D} expected")
    return tuple(out)


def lower_recurrent(ctx: ImportContext, op: str, x: Value, W: np.ndarray, R: np.ndarray, B: np.ndarray | None,
                    opt: list[Value | None], a: dict[str, Any], quant: dict | None = None) -> list[Value]:
    """Emit the projection Gemm and the ``op`` recurrence for an ONNX recurrent layer with float weights
    ``W [D, NG*H, I]``, ``R [D, NG*H, H]``, bias ``B [D, 2*NG*H]``; ``opt`` are the optional inputs after
    ``B`` (sequence_lens, initial_h, initial_c, P). Returns the layer's outputs (``Y, Y_h[, Y_c]``).
    ``quant`` (DynamicQuantizeLSTM, see ``_quant_projection``): integer weights with their scales and zero
    points, used as onnxruntime uses them (``W``, ``R`` are then only their shapes)."""
    where = ctx.where()
    ng = GATES[op]
    direction = a.get("direction", "forward") or "forward"
    if direction not in ("forward", "reverse", "bidirectional"):
        raise ShapeError(f"{where}: unknown direction {direction!r}")
    D = num_directions(direction)
    H = int(a.get("hidden_size") or R.shape[-1])
    layout = int(a.get("layout", 0))
    if layout not in (0, 1):
        raise ShapeError(f"{where}: layout {layout} must be 0 or 1")
    if len(x.shape) != 3:
        raise ShapeError(f"{where}: input X of shape {list(x.shape)} must have rank 3")
    if layout:
        x = ctx.emit("Transpose", [x], {"perm": (1, 0, 2)})[0]
        opt = [v if v is None or i not in (1, 2) else ctx.emit("Transpose", [v], {"perm": (1, 0, 2)})[0]
               for i, v in enumerate(opt)]
    T, Bn, I = x.shape
    if W.shape != (D, ng * H, I) or R.shape != (D, ng * H, H):
        raise ShapeError(f"{where}: W {list(W.shape)} / R {list(R.shape)} do not fit {D} direction(s), hidden_size "
                         f"{H} and input size {I}")
    bias = np.zeros((D, 2 * ng * H), np.float64) if B is None else np.asarray(B, np.float64)
    if bias.shape != (D, 2 * ng * H):
        raise ShapeError(f"{where}: bias of shape {list(bias.shape)} must be [{D}, {2 * ng * H}]")
    wb, rb = bias[:, :ng * H], bias[:, ng * H:].copy()
    rbh = None
    if op == "GRULoop":
        rbh = rb[:, 2 * H:].astype(np.float32)
        rb[:, 2 * H:] = 0.0
    if why := _refusal(a):
        raise Unsupported(why)
    attrs: dict[str, Any] = {"hidden_size": H, "direction": direction,
                             "activations": _activations(ctx, op, a, D), "clip": float(a.get("clip", 0.0) or 0.0)}
    if op == "LSTMLoop":
        attrs["input_forget"] = int(a.get("input_forget", 0))
    if op == "GRULoop":
        attrs["linear_before_reset"] = int(a.get("linear_before_reset", 0))

    # the projection for all T*B steps and every direction's gates at once: float, a Gemm X [T*B, I] @ W^T
    # (constant B: packed column panels, W streamed once; measured on the ddddocr CRNN's 32 x 512 -> 4096: the
    # 1x1-conv form read W's rows 2 KB apart, 4 at a time) whose G [T, B, D*NG*H] the recurrence reads as it
    # is (``time_major``: one contiguous load per gate and block, no Transpose); quantized, gate-major
    # G [D*NG*H, T*B] from a 1x1 ConvInteger
    conv = {"kernel_shape": (1,), "strides": (1,), "pads": (0, 0), "dilations": (1,), "group": 1}
    bias_c = (wb + rb).reshape(-1).astype(np.float32)
    if quant is not None:
        gc = _quant_projection(ctx, x, quant, bias_c, conv)
    else:
        w2 = np.asarray(W, np.float32).reshape(D * ng * H, I)
        rows = ctx.emit("Reshape", [x], {"shape": (T * Bn, I)})[0]
        gt = ctx.emit("Gemm", [rows, ctx.const(w2), ctx.const(bias_c)], {"transB": 1})[0]
        attrs["time_major"] = 1
    g = (ctx.emit("Reshape", [gc], {"shape": (D * ng * H, T, Bn)})[0] if quant is not None
         else ctx.emit("Reshape", [gt], {"shape": (T, Bn, D * ng * H)})[0])

    seq, h0, c0, P = (list(opt) + [None] * 4)[:4]
    if seq is not None and seq.is_const:
        lens = np.asarray(seq.const).reshape(-1)
        if lens.shape != (Bn,) or np.any(lens < 0) or np.any(lens > T):
            raise ShapeError(f"{where}: sequence_lens {lens.tolist()} must be {Bn} lengths in [0, {T}]")
        seq = None if np.all(lens == T) else ctx.const(lens.astype(np.int32))
    if seq is not None and seq.dtype != np.int32:
        raise ShapeError(f"{where}: sequence_lens must be int32, got {seq.dtype}")
    h0, c0, P = (None if _zero_const(v) else v for v in (h0, c0, P))
    if op != "LSTMLoop" and (c0 is not None or P is not None):
        raise ShapeError(f"{where}: only LSTM has peepholes")
    fixed = [g, ctx.const(np.asarray(R, np.float32))] + ([ctx.const(rbh)] if rbh is not None else [])
    if quant is not None:
        op, fixed = "DQLSTMLoop", [g, ctx.const(quant["R"]), ctx.const(quant["Rs"])]
        attrs["saturate"] = int(quant["saturate"])
    rest = [seq, h0] + ([c0, P] if op in ("LSTMLoop", "DQLSTMLoop") else [])
    return ctx.emit(op, fixed + rest, attrs)[:3]


def _columns(ctx: ImportContext, x: Value) -> Value:
    """``X [T, B, I]`` as the columns ``[1, I, T*B]`` of a 1x1 Conv."""
    T, Bn, I = x.shape
    xt = ctx.emit("Transpose", [ctx.emit("Reshape", [x], {"shape": (T * Bn, I)})[0]], {"perm": (1, 0)})[0]
    return ctx.emit("Reshape", [xt], {"shape": (1, I, T * Bn)})[0]


def _quant_projection(ctx: ImportContext, x: Value, quant: dict, bias: np.ndarray, conv: dict) -> Value:
    """onnxruntime's input projection of DynamicQuantizeLSTM: ``X`` quantized to uint8 over the whole tensor
    (``DynamicQuantizeLinear``: its ``GetQuantizationParameter`` + ``QuantizeLinear``), an integer GEMM with
    the int8 weights (``ConvInteger``, saturating as onnxruntime's where it does), then
    ``float32(acc) * float32(x_scale * W_scale) + bias``."""
    xq, xs, xz = ctx.emit("DynamicQuantizeLinear", [x], {})
    sat = int(quant["W"].dtype == np.int8 and not np.any(quant["Wz"]) and ort_u8s8_saturates())
    acc = ctx.emit("ConvInteger", [_columns(ctx, xq), ctx.const(quant["W"]), xz, ctx.const(quant["Wz"])],
                   {**conv, "saturate": sat})[0]
    mult = ctx.emit("Mul", [xs, ctx.const(quant["Ws"].reshape(-1, 1))], {})[0]
    g = ctx.emit("Mul", [ctx.emit("Cast", [acc], {"to": "f32"})[0], mult], {})[0]
    return ctx.emit("Add", [g, ctx.const(bias.reshape(-1, 1))], {})[0]


def _back(ctx: ImportContext, outs: list[Value], a: dict[str, Any]) -> list[Value]:
    """The outputs in ONNX ``layout=1`` (batch first) when the node asks for it."""
    if not int(a.get("layout", 0)):
        return outs
    y = ctx.emit("Transpose", [outs[0]], {"perm": (2, 0, 1, 3)})[0]
    return [y] + [ctx.emit("Transpose", [v], {"perm": (1, 0, 2)})[0] for v in outs[1:]]


def _weights(ctx: ImportContext, ins: list) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    W = ctx.const_input(ins[1], "the input weights W")
    R = ctx.const_input(ins[2], "the recurrence weights R")
    B = ctx.const_input(_arg(ins, 3), "the bias B")
    return W, R, B


@importer("LSTM", "GRU", "RNN")
def _recurrent(ctx: ImportContext, ins: list) -> list:
    op = ctx.node.op_type + "Loop"
    a = ctx.attrs()
    W, R, B = _weights(ctx, ins)
    return _back(ctx, lower_recurrent(ctx, op, ins[0], W, R, B, list(ins[4:8]), a), a)


def ort_u8s8_saturates() -> bool:
    """Whether onnxruntime on this host multiplies uint8 by int8 with ``vpmaddubsw`` (x86 without AVX-VNNI
    or AVX512-VNNI: pairs of products saturate to int16), which changes DynamicQuantizeLSTM's results
    noticeably (h near +-1 quantizes near 0 / 255). cnnjit reproduces what onnxruntime does on the host
    it compiles on."""
    if platform.machine().lower() not in ("x86_64", "amd64"):
        return False
    feats = set(host_machine()[2].split(","))  # LLVM's view of the host, as numba's JIT sees it
    return "+avx2" in feats and not feats & {"+avxvnni", "+avx512vnni"}


def _dequant(q: np.ndarray, scale: np.ndarray, zp: np.ndarray, what: str) -> np.ndarray:
    """``(q - zp) * scale`` for ``q [D, K, N]`` with one parameter per direction or per direction and column,
    transposed to ONNX's ``[D, N, K]``."""
    D = q.shape[0]
    shp = (D, 1, 1) if scale.size == D else (D, 1, q.shape[2])
    if scale.size not in (D, D * q.shape[2]) or zp.size != scale.size:
        raise ShapeError(f"DynamicQuantizeLSTM: {what} scale/zero point of {scale.size}/{zp.size} entries do not "
                         f"fit weights {list(q.shape)}")
    w = (q.astype(np.float64) - zp.astype(np.float64).reshape(shp)) * scale.astype(np.float64).reshape(shp)
    return np.ascontiguousarray(w.astype(np.float32).transpose(0, 2, 1))


@importer("com.microsoft:DynamicQuantizeLSTM")
def _dynamic_quantize_lstm(ctx: ImportContext, ins: list) -> list:
    a = ctx.attrs()
    Wq, Rq, B = _weights(ctx, ins)
    qp = [ctx.const_input(_arg(ins, i), "a weight scale / zero point") for i in range(8, 12)]
    if any(p is None for p in qp) or Wq.ndim != 3 or Rq.ndim != 3:
        raise ShapeError(f"{ctx.where()}: needs int8 weights [D, K, 4H] with their scales and zero points")
    W = _dequant(Wq, qp[0], qp[1], "W")
    R = _dequant(Rq, qp[2], qp[3], "R")
    D, H4 = W.shape[:2]
    ws, wz, rs, rz = (np.broadcast_to(np.asarray(p).reshape(D, -1), (D, H4)) for p in qp)
    sat = Rq.dtype == np.int8 and not np.any(rz) and ort_u8s8_saturates()
    quant = {"W": np.ascontiguousarray(Wq.transpose(0, 2, 1).reshape(D * H4, -1, 1)), "Wz": wz.reshape(-1).copy(),
             "Ws": ws.astype(np.float32).reshape(-1).copy(),
             "R": np.ascontiguousarray((Rq.astype(np.int32) - rz.astype(np.int32)[:, None, :]).transpose(0, 2, 1)),
             "Rs": rs.astype(np.float32).copy(), "saturate": sat}
    return _back(ctx, lower_recurrent(ctx, "LSTMLoop", ins[0], W, R, B, list(ins[4:8]), a, quant), a)
