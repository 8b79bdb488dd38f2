"""Recurrent layers (ONNX LSTM, GRU, RNN) as the recurrence over precomputed input gates.

The frontend splits an ONNX recurrent layer in two: the input projection of every timestep and direction
at once, ``W @ X^T + biases`` (float: a Gemm whose output is the time-major ``G[T, B, D * NG * H]``,
``time_major=1``; DynamicQuantizeLSTM: a 1x1 ConvInteger, gate-major ``G[D * NG * H, T, B]``), which holds
each direction's ``NG`` gates in ONNX order (LSTM ``i, o, f, c``; GRU ``z, r, h``; RNN one), and one of the
ops here, which
runs the recurrence ``gates_t = G_t + R @ h_{t-1}`` and the cell for each direction:

* ``LSTMLoop(G, R, seq_lens?, h0?, c0?, P?)``: ``i = f(gi + Pi * c), f_ = f(gf + Pf * c)`` (``f_ = 1 - i``
  with ``input_forget``), ``g = g(gc)``, ``c' = f_ * c + i * g``, ``o = f(go + Po * c')``, ``h' = o * h(c')``.
* ``GRULoop(G, R, Rbh, seq_lens?, h0?)``: ``z = f(gz), r = f(gr)``; ``linear_before_reset``: ``n = g(gh +
  r * (Rh @ h + Rbh))``, else ``n = g(gh + Rh @ (r * h) + Rbh)`` (``Rbh`` ``[D, H]``: the recurrence bias
  of the ``h`` gate, which is not in ``G``); ``h' = (1 - z) * n + z * h``.
* ``RNNLoop(G, R, seq_lens?, h0?)``: ``h' = f(G_t + R @ h)``.

``R`` is ``[D, NG * H, H]`` as in ONNX; ``seq_lens`` int32 ``[B]`` (entries clamped to ``[0, T]``); ``h0``,
``c0`` ``[D, B, H]``; ``P`` ``[D, 3 * H]`` (``i, o, f``). An absent optional input is zero (``seq_lens``: all
``T``). ``clip`` (0: none) clamps every gate's pre-activation to ``[-clip, clip]``. ``activations`` are op
names from ``ACTIVATIONS`` (LSTM ``f, g, h``; GRU ``f, g``; RNN ``f``), per direction. The outputs are ONNX's
``Y[T, D, B, H]`` (zero past a sequence's length), ``Y_h[D, B, H]`` (and LSTM's ``Y_c``): the state at each
sequence's last step. Direction ``reverse`` walks each sequence from its last valid step down.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ..errors import ShapeError
from ..types import TensorType
from . import REQUIRED, defop

#: activations the recurrent ops take (by ONNX name) and their numpy forms
ACTIVATIONS = {
    "Sigmoid": lambda x: 1.0 / (1.0 + np.exp(-x)),
    "Tanh": np.tanh,
    "Relu": lambda x: np.maximum(x, 0.0),
}
#: gates per hidden unit, per op
GATES = {"LSTMLoop": 4, "GRULoop": 3, "RNNLoop": 1, "DQLSTMLoop": 4}
#: activations per direction, per op
NACT = {"LSTMLoop": 3, "GRULoop": 2, "RNNLoop": 1, "DQLSTMLoop": 3}
DIRECTIONS = ("forward", "reverse", "bidirectional")


def num_directions(direction: str) -> int:
    return 2 if direction == "bidirectional" else 1


def _infer(op: str, n_fixed: int):
    ng = GATES[op]

    def infer(types: list[TensorType | None], a: dict[str, Any]) -> list[TensorType]:
        g, r = types[0], types[1]
        H = int(a["hidden_size"])
        if a["direction"] not in DIRECTIONS:
            raise ShapeError(f"{op}: unknown direction {a['direction']!r}")
        D = num_directions(a["direction"])
        tm = int(a["time_major"])
        if H < 1 or g.rank != 3 or g.shape[2 if tm else 0] != D * ng * H:
            want = f"[T, B, {D * ng * H}]" if tm else f"[{D * ng * H}, T, B]"
            raise ShapeError(f"{op}: gates {g} must be {want} for hidden_size {H}")
        if r.shape != (D, ng * H, H) or r.dtype != g.dtype or g.dtype != np.float32:
            raise ShapeError(f"{op}: recurrence weights {r} must be float32 [{D}, {ng * H}, {H}]")
        acts = a["activations"]
        if len(acts) != NACT[op] * D or any(f not in ACTIVATIONS for f in acts):
            raise ShapeError(f"{op}: activations {list(acts)} must be {NACT[op] * D} of {sorted(ACTIVATIONS)}")
        if float(a["clip"]) < 0:
            raise ShapeError(f"{op}: clip {a['clip']} must be >= 0")
        T, B = g.shape[:2] if tm else g.shape[1:]
        want = [None] * n_fixed + [(B,), (D, B, H), (D, B, H), (D, 3 * H)]
        for i in range(n_fixed, len(types)):
            t = types[i]
            if t is None:
                continue
            if i >= len(want) or t.shape != want[i]:
                raise ShapeError(f"{op}: input {i} {t} must have shape {list(want[min(i, len(want) - 1)])}")
            if t.dtype != (np.int32 if i == n_fixed else np.float32):
                raise ShapeError(f"{op}: input {i} {t} has the wrong element type")
        state = TensorType(g.dtype, (D, B, H))
        return [TensorType(g.dtype, (T, D, B, H)), state] + ([state] if op == "LSTMLoop" else [])

    return infer


def _steps(L: int, reverse: bool) -> range:
    return range(L - 1, -1, -1) if reverse else range(L)


def _run(op: str, ins: list[np.ndarray | None], a: dict[str, Any], cell) -> list[np.ndarray]:
    """The recurrence shared by the three ops: ``cell(d, acts, gates, h, c) -> (h', c')`` per step."""
    ng = GATES[op]
    nfix = 3 if op == "GRULoop" else 2
    g = np.asarray(ins[0], np.float64)
    g = g if a["time_major"] else g.transpose(1, 2, 0)  # [T, B, D * NG * H]
    T, B = g.shape[:2]
    H = int(a["hidden_size"])
    D = num_directions(a["direction"])
    opt = list(ins[nfix:]) + [None] * 4
    lens = np.full(B, T) if opt[0] is None else np.clip(np.asarray(opt[0], np.int64), 0, T)
    h0 = np.zeros((D, B, H)) if opt[1] is None else np.asarray(opt[1], np.float64)
    c0 = np.zeros((D, B, H)) if opt[2] is None else np.asarray(opt[2], np.float64)
    y = np.zeros((T, D, B, H))
    yh, yc = h0.copy(), c0.copy()
    nact = NACT[op]
    for d in range(D):
        reverse = a["direction"] == "reverse" or d == 1
        acts = [ACTIVATIONS[f] for f in a["activations"][d * nact:(d + 1) * nact]]
        for b in range(B):
            h, c = h0[d, b], c0[d, b]
            for t in _steps(int(lens[b]), reverse):
                gates = g[t, b, d * ng * H:(d + 1) * ng * H].reshape(ng, H)
                h, c = cell(d, acts, gates, h, c)
                y[t, d, b] = h
            yh[d, b], yc[d, b] = h, c
    f32 = [o.astype(np.float32) for o in (y, yh, yc)]
    return f32 if op == "LSTMLoop" else f32[:2]


def _clip(x: np.ndarray, a: dict[str, Any]) -> np.ndarray:
    c = float(a["clip"])
    return np.clip(x, -c, c) if c > 0 else x


_COMMON = {"hidden_size": REQUIRED, "direction": "forward", "activations": REQUIRED, "clip": 0.0, "time_major": 0}


@defop("LSTMLoop", inputs=(2, 6), outputs=3, infer=_infer("LSTMLoop", 2),
       attrs={**_COMMON, "input_forget": 0})
def lstm_loop_ref(ins: list[np.ndarray | None], a: dict[str, Any]) -> list[np.ndarray]:
    R = np.asarray(ins[1], np.float64)
    P = ins[5] if len(ins) > 5 and ins[5] is not None else None
    return _run("LSTMLoop", ins, a, _lstm_cell(a, P, lambda d, h: R[d] @ h))


def _lstm_cell(a: dict[str, Any], P: np.ndarray | None, rh):
    """The LSTM cell for ``_run``, ``rh(d, h)`` giving direction ``d``'s ``R @ h``."""
    H = int(a["hidden_size"])

    def cell(d, acts, gates, h, c):
        f, g, hf = acts
        pre = gates + np.asarray(rh(d, h), np.float64).reshape(4, H)
        p = np.zeros((3, H)) if P is None else np.asarray(P[d], np.float64).reshape(3, H)
        i = f(_clip(pre[0] + p[0] * c, a))
        fg = 1.0 - i if a["input_forget"] else f(_clip(pre[2] + p[2] * c, a))
        c2 = fg * c + i * g(_clip(pre[3], a))
        o = f(_clip(pre[1] + p[1] * c2, a))
        return o * hf(c2), c2

    return cell


def _gru_infer(types: list[TensorType | None], a: dict[str, Any]) -> list[TensorType]:
    D = num_directions(a["direction"])
    if types[2] is None or types[2].shape != (D, int(a["hidden_size"])):
        raise ShapeError(f"GRULoop: recurrence bias {types[2]} must be [{D}, {a['hidden_size']}]")
    return _infer("GRULoop", 3)(types, a)


@defop("GRULoop", inputs=(3, 5), outputs=2, infer=_gru_infer,
       attrs={**_COMMON, "linear_before_reset": 0})
def gru_loop_ref(ins: list[np.ndarray | None], a: dict[str, Any]) -> list[np.ndarray]:
    R = np.asarray(ins[1], np.float64)
    rbh = np.asarray(ins[2], np.float64)
    H = int(a["hidden_size"])

    def cell(d, acts, gates, h, c):
        f, g = acts
        Rd = R[d].reshape(3, H, H)
        z = f(_clip(gates[0] + Rd[0] @ h, a))
        r = f(_clip(gates[1] + Rd[1] @ h, a))
        if a["linear_before_reset"]:
            n = g(_clip(gates[2] + r * (Rd[2] @ h + rbh[d]), a))
        else:
            n = g(_clip(gates[2] + Rd[2] @ (r * h) + rbh[d], a))
        return (1.0 - z) * n + z * h, c

    return _run("GRULoop", ins, a, cell)


@defop("RNNLoop", inputs=(2, 4), outputs=2, infer=_infer("RNNLoop", 2), attrs=dict(_COMMON))
def rnn_loop_ref(ins: list[np.ndarray | None], a: dict[str, Any]) -> list[np.ndarray]:
    R = np.asarray(ins[1], np.float64)

    def cell(d, acts, gates, h, c):
        return acts[0](_clip(gates[0] + R[d] @ h, a)), c

    return _run("RNNLoop", ins, a, cell)


# -- onnxruntime's DynamicQuantizeLSTM recurrence ----------------------------------------------------------
def quantize_row(h: np.ndarray) -> tuple[np.ndarray, int, np.float32]:
    """``h`` quantized as onnxruntime's ``GetQuantizationParameter`` + ``QuantizeLinear`` do (uint8, range
    widened to 0, float32 scale, zero point and values rounded half to even): ``(q, zp, scale)``."""
    h = np.asarray(h, np.float32)
    lo, hi = min(np.float32(h.min(initial=0.0)), np.float32(0.0)), max(np.float32(h.max(initial=0.0)), np.float32(0.0))
    scale = np.float32(1.0) if hi == lo else np.float32(np.float32(hi - lo) / np.float32(255.0))
    zp = np.rint(np.clip(np.float32(0.0) - np.float32(lo / scale), 0.0, 255.0))
    q = np.clip(np.rint((h / scale).astype(np.float32)) + zp, 0.0, 255.0)
    return q.astype(np.int64), int(zp), scale


def u8s8_dot(q: np.ndarray, zp: int, R: np.ndarray, saturate: bool) -> np.ndarray:
    """``R @ (q - zp)`` for uint8 ``q`` and integer ``R [N, K]``; ``saturate``: as onnxruntime's x86 kernels
    without VNNI compute it (``vpmaddubsw``: the products of ``k = 2i, 2i + 1`` summed and saturated to int16
    before the int32 accumulation; the zero point's term ``zp * sum_k R`` apart and exact)."""
    R = np.asarray(R, np.int64)
    if not saturate:
        return R @ (q - zp)
    p = R * q
    if p.shape[1] % 2:
        p = np.concatenate([p, np.zeros((p.shape[0], 1), np.int64)], 1)
    return np.clip(p[:, 0::2] + p[:, 1::2], -32768, 32767).sum(1) - zp * R.sum(1)


def _dq_infer(types: list[TensorType | None], a: dict[str, Any]) -> list[TensorType]:
    g, rq, rs = types[0], types[1], types[2]
    H = int(a["hidden_size"])
    D = num_directions(a["direction"]) if a["direction"] in DIRECTIONS else 0
    if rq is None or rq.dtype != np.int32 or rs is None or rs.dtype != np.float32 or rs.shape != (D, 4 * H):
        raise ShapeError(f"DQLSTMLoop: recurrence weights {rq} must be int32 and scales {rs} float32 "
                         f"[{D}, {4 * H}]")
    outs = _infer("LSTMLoop", 2)([g, TensorType(np.float32, rq.shape)] + list(types[3:]), a)
    B = g.shape[1 if a["time_major"] else 2]
    return outs + [TensorType(np.float32, (D, B, H + 2))]


@defop("DQLSTMLoop", inputs=(3, 7), outputs=4, infer=_dq_infer,
       attrs={**_COMMON, "input_forget": 0, "saturate": 0})
def dq_lstm_loop_ref(ins: list[np.ndarray | None], a: dict[str, Any]) -> list[np.ndarray]:
    """``LSTMLoop`` with ``R @ h`` computed as onnxruntime's DynamicQuantizeLSTM does: ``R`` (input 1) holds
    the integer weights minus their zero points (int32 ``[D, 4H, H]``) and ``Rs`` (input 2) their float32
    scales per gate row ``[D, 4H]``; at every step ``h_{t-1}`` of each batch row is quantized to uint8 with
    its own dynamic range (``quantize_row``; onnxruntime quantizes the rows its thread computes together,
    one per thread when it has as many threads as rows), multiplied in integers (``u8s8_dot``, int16
    saturation with ``saturate``) and scaled by ``float32(h_scale * Rs)``. Output 3 ``[D, B, H + 2]`` is
    the kernel's scratch (a quantized state, its zero point and scale)."""
    Rq = np.asarray(ins[1], np.int64)
    Rs = np.asarray(ins[2], np.float32)
    P = ins[6] if len(ins) > 6 and ins[6] is not None else None
    H = int(a["hidden_size"])

    def rh(d: int, h: np.ndarray) -> np.ndarray:
        q, zp, scale = quantize_row(h)
        return u8s8_dot(q, zp, Rq[d], bool(a["saturate"])).astype(np.float32) * (np.float32(scale) * Rs[d])

    y, yh, yc = _run("LSTMLoop", [ins[0], None] + list(ins[3:]), a, _lstm_cell(a, P, rh))
    D, B = yh.shape[:2]
    return [y, yh, yc, np.zeros((D, B, H + 2), np.float32)]
