"""The recurrence of LSTM, GRU and RNN layers (``LSTMLoop``, ``GRULoop``, ``RNNLoop``): one kernel call per
direction, vectorised over hidden units with the gate activations in registers.

The input projection is a separate 1x1 Conv (see ``cnnjit.ir.ops.recurrent``); what is left per step is
``gates = G_t + R @ h_{t-1}`` and the cell (``G`` time-major, as the float projection Gemm writes it: a block's
gates at step ``t`` are one contiguous load each; gate-major, as DynamicQuantizeLSTM's 1x1 ConvInteger writes
it: one strided gather each). Hidden units are taken in blocks of ``BW`` lanes (two machine
vectors, so an LSTM block keeps 4 gates x 2 = 8 FMA chains in flight): for each block, ``R``'s rows for the
block's gates are packed at compile time into one contiguous panel ``[H, gates, BW]``, so the GEMV streams
the panel once per step (per batch entry, while it is in L2) with ``h_{t-1}[k]`` broadcast into the FMAs,
and the cell (sigmoid/tanh, state update) runs on the accumulators before one store. A partial last block
uses masked loads and stores (its packed rows are zero).

State lives in the outputs: ``h_{t-1}`` is ``Y[t-1]`` (or ``h0``), the LSTM cell state ``Y_c`` (updated in
place; each block touches only its own units). A GRU without ``linear_before_reset`` needs ``r * h`` for
all units before the ``h`` gate's GEMV: a first pass stores it in ``Y_h`` and ``z`` in ``Y[t]``, a second
pass computes ``h_t``; ``Y_h`` is written at each sequence's last step, after the step's blocks.

Vector tanh is a [13/6] rational approximation on ``[-7.9053, 7.9053]`` (Eigen's ``ptanh``; max abs error
3.5e-7 over the reals), sigmoid ``0.5 + 0.5 * tanh(x / 2)`` (abs error < 2e-7): only FMAs, one division
and a clamp, so the whole cell stays in registers. ``vact_lines`` is the one place to swap in other vector
forms.
"""

from __future__ import annotations

import numpy as np

from cnnjit.ir import Node
from cnnjit.ir.ops.recurrent import GATES, NACT, num_directions

from ..kernel import At, KernelCall, Param, Scratch, Target, flit, note, variant
from .quant import dynamic_qparams
from .template import source

#: tanh(x) ~= x * P(x^2) / Q(x^2) for |x| <= TANH_CLAMP (Eigen's float tanh coefficients), saturated beyond
TANH_CLAMP = 7.90531110763549805
TANH_P = (-2.76076847742355e-16, 2.00018790482477e-13, -8.60467152213735e-11, 5.12229709037114e-08,
          1.48572235717979e-05, 6.37261928875436e-04, 4.89352455891786e-03)
TANH_Q = (1.19825839466702e-06, 1.18534705686654e-04, 2.26843463243900e-03, 4.89352518554385e-03)


def vact_lines(ind: str, f: str, dst: str, src: str, L: int) -> list[str]:
    """Kernel lines setting the ``L``-lane vector ``dst`` to activation ``f`` (an ``ACTIVATIONS`` name) of
    ``src`` (temporaries ``ua``, ``ux``, ``up``, ``uq``)."""
    def c(v: float) -> str:
        return f"vbcast{L}(np.float32({flit(v)}))"

    if f == "Relu":
        return [f"{ind}{dst} = vmax{L}({src}, vzero{L}())"]
    out = [f"{ind}ua = {src}" if f == "Tanh" else f"{ind}ua = vmul{L}({src}, {c(0.5)})",
           f"{ind}ua = vmin{L}(vmax{L}(ua, {c(-TANH_CLAMP)}), {c(TANH_CLAMP)})",
           f"{ind}ux = vmul{L}(ua, ua)",
           f"{ind}up = vfma{L}(ux, {c(TANH_P[0])}, {c(TANH_P[1])})"]
    out += [f"{ind}up = vfma{L}(up, ux, {c(p)})" for p in TANH_P[2:]]
    out += [f"{ind}uq = vfma{L}(ux, {c(TANH_Q[0])}, {c(TANH_Q[1])})"]
    out += [f"{ind}uq = vfma{L}(uq, ux, {c(q)})" for q in TANH_Q[2:]]
    if f == "Tanh":
        return out + [f"{ind}{dst} = vdiv{L}(vmul{L}(up, ua), uq)"]
    return out + [f"{ind}{dst} = vfma{L}(vdiv{L}(vmul{L}(up, ua), uq), {c(0.5)}, {c(0.5)})"]


def groups(node: Node) -> list[tuple[int, ...]]:
    """The gates whose ``R`` rows one GEMV pass reads, per pass."""
    if node.op == "GRULoop" and not node.attrs["linear_before_reset"]:
        return [(0, 1), (2,)]
    return [tuple(range(GATES[node.op]))]


def block_lanes(node: Node, target: Target) -> int:
    """Hidden units per block: two machine vectors (8 lanes at least, 4 machine vectors for the
    one-gate RNN), so a block's GEMV has enough independent FMA chains."""
    w = target.vector_width
    return w * (8 if node.op == "RNNLoop" else 2)


def pack_recurrence(R: np.ndarray, H: int, BW: int, gates_by_pass: list[tuple[int, ...]],
                    dtype: type = np.float32) -> np.ndarray:
    """One direction's ``R [NG*H, H]`` as the kernel reads it: per pass, per block of ``BW`` units, a panel
    ``[H (k), gates, BW]`` holding ``R[q*H + j, k]`` (zero past unit ``H``); the passes one after another,
    as ``dtype`` (int8 for a quantized ``R`` that fits: ``int8_recurrence``)."""
    nblk = -(-H // BW)
    parts = []
    for gs in gates_by_pass:
        p = np.zeros((nblk, H, len(gs), BW), np.float32)
        for qi, q in enumerate(gs):
            rows = np.zeros((nblk * BW, H), np.float32)
            rows[:H] = R[q * H:(q + 1) * H]
            p[:, :, qi, :] = rows.reshape(nblk, BW, H).transpose(0, 2, 1)
        parts.append(p.reshape(-1))
    return np.concatenate(parts).astype(dtype)


def pack_recurrence_dot(R: np.ndarray, H: int, BW: int, gates: tuple[int, ...]) -> np.ndarray:
    """One direction's integer ``R [NG*H, H]`` (int8 values) for the integer GEMV (``ivdot``): per block of
    ``BW`` units, per group of 4 ``k``, per gate, ``BW`` units' 4 bytes ``R[q*H + j, 4*k4 : 4*k4 + 4]`` (zero
    past unit ``H`` and past ``k = H``), flat int8."""
    nblk, K4 = -(-H // BW), -(-H // 4)
    p = np.zeros((nblk, K4, len(gates), BW, 4), np.int8)
    for qi, q in enumerate(gates):
        rows = np.zeros((nblk * BW, K4 * 4), np.int8)
        rows[:H, :H] = R[q * H:(q + 1) * H]
        p[:, :, qi] = rows.reshape(nblk, BW, K4, 4).transpose(0, 2, 1, 3)
    return p.reshape(-1)


def int8_recurrence(R: np.ndarray) -> bool:
    """Whether a quantized ``R`` (integers: the int8 weights less their zero point) fits int8, so its panels
    are stored as bytes and widened in the GEMV (``vloadi8``): the recurrence streams all of ``R`` at every
    step (the ddddocr CRNN: 4 MB per direction as float32, from L3), a quarter of that as int8."""
    return bool(R.size) and float(R.min()) >= -128 and float(R.max()) <= 127 and bool(np.all(R == np.rint(R)))


_NAMES = ("i", "o", "f", "c")


def _gemv(ind: str, BW: int, gates: tuple[int, ...], roff: str, accs: list[str], hexpr: str,
          load: str = "vload") -> list[str]:
    """A block's GEMV: ``acc_q += R_q[block] @ h`` for the pass's gates, ``h[k]`` being ``hexpr``; ``load``
    reads the panel (``vloadi8``: int8 panels)."""
    n = len(gates)
    lines = [f"{ind}ri = {roff}", f"{ind}for k in range(H):", f"{ind}    hv = vbcast{BW}({hexpr})"]
    lines += [f"{ind}    {acc} = vfma{BW}(hv, {load}{BW}(rb, ri + {i * BW}), {acc})" for i, acc in enumerate(accs)]
    return lines + [f"{ind}    ri += {n * BW}"]


def _gemv_sat(ind: str, BW: int, gates: tuple[int, ...], roff: str, accs: list[str], hexpr: str,
              load: str = "vload") -> list[str]:
    """``_gemv`` as onnxruntime's x86 u8s8 kernels without VNNI compute it (``u8s8_dot``): the products of
    ``k = 2i, 2i + 1`` (exact in float32) summed, clamped to int16, then accumulated."""
    n = len(gates)
    lo, hi = f"vbcast{BW}(np.float32(-32768.0))", f"vbcast{BW}(np.float32(32767.0))"
    h1 = hexpr.replace("+ k)", "+ k + 1)")
    lines = [f"{ind}ri = {roff}", f"{ind}for k in range(0, H - 1, 2):",
             f"{ind}    hv = vbcast{BW}({hexpr})", f"{ind}    hw = vbcast{BW}({h1})"]
    for i, acc in enumerate(accs):
        pr = f"vfma{BW}(hw, {load}{BW}(rb, ri + {(n + i) * BW}), vmul{BW}(hv, {load}{BW}(rb, ri + {i * BW})))"
        lines.append(f"{ind}    {acc} = vadd{BW}({acc}, vmin{BW}(vmax{BW}({pr}, {lo}), {hi}))")
    lines += [f"{ind}    ri += {2 * n * BW}", f"{ind}if H % 2:", f"{ind}    k = H - 1",
              f"{ind}    hv = vbcast{BW}({hexpr})"]  # one product: |q * r| <= 255 * 128 < 2^15
    return lines + [f"{ind}    {acc} = vfma{BW}(hv, {load}{BW}(rb, ri + {i * BW}), {acc})"
                    for i, acc in enumerate(accs)]


def _gemv_dot(ind: str, n: int, gates: tuple[int, ...], roff: str, accs: list[str], sat: bool) -> list[str]:
    """A quantized block's GEMV on integers: the state's bytes (``qhb``, 4 ``k`` per i32) meet the int8
    panels (``pack_recurrence_dot``) in ``ivdot`` (``sat``: ``ivdotsat``, onnxruntime's AVX2 rounding of
    pair sums to int16) over two ``n``-lane accumulators per gate, converted to float at the end: exact
    integer sums, as ``_gemv`` / ``_gemv_sat`` compute them in float32, at 32 multiply-adds per 2-4
    instructions."""
    dot = "ivdotsat" if sat else "ivdot"
    BW = 2 * n
    lines = [f"{ind}ri = {roff}", f"{ind}hq4 = qho + b * HB"]
    lines += [f"{ind}c{i}_{v} = ivzero{n}()" for i in range(len(gates)) for v in (0, 1)]
    lines += [f"{ind}for k4 in range(HB // 4):", f"{ind}    hv = ivbcast4_{n}(qhb, hq4 + 4 * k4)"]
    lines += [f"{ind}    c{i}_{v} = {dot}{n}(c{i}_{v}, hv, ivload{n}(rb, ri + {(i * BW + v * n) * 4}))"
              for i in range(len(gates)) for v in (0, 1)]
    lines.append(f"{ind}    ri += {len(gates) * BW * 4}")
    return lines + [f"{ind}{acc} = ivtof2_{n}(c{i}_0, c{i}_1)" for i, acc in enumerate(accs)]


def gate_load(ind: str, dst: str, q: int, BW: int, tm: bool) -> list[str]:
    """Lines loading gate ``q`` of the block's units at step ``t`` from ``G`` at ``gt``: time-major (``tm``,
    ``G[T, B, D * NG * H]``) one contiguous load; gate-major one gather with stride ``GS = T*B`` (lane by
    lane for a partial last block, which must not read past the tensor)."""
    if tm:
        return [f"{ind}{dst} = vloadn{BW}(gb, gt + {q} * H + j0, cnt)"]
    return [f"{ind}if cnt == {BW}:",
            f"{ind}    {dst} = vgather{BW}(gb, gt + ({q} * H + j0) * GS, GS)",
            f"{ind}else:",
            f"{ind}    {dst} = vzero{BW}()",
            f"{ind}    for ln in range(cnt):",
            f"{ind}        {dst} = vinsert{BW}({dst}, ln, gb[U(gt + ({q} * H + j0 + ln) * GS)])"]


def _clip(ind: str, v: str, BW: int, clip: float) -> list[str]:
    if not clip:
        return []
    return [f"{ind}{v} = vmin{BW}(vmax{BW}({v}, vbcast{BW}(np.float32({flit(-clip)}))), "
            f"vbcast{BW}(np.float32({flit(clip)})))"]


def _cell(node: Node, d: int, BW: int, ind: str, pass_no: int, peep: bool) -> list[str]:
    """The cell for one block of one batch entry after its GEMV (pass ``pass_no``), ending with its stores."""
    a = node.attrs
    nact = NACT[node.op]
    acts = a["activations"][d * nact:(d + 1) * nact]
    clip = float(a["clip"])
    L = BW
    store_y = f"{ind}vstoren{L}(yb, yt + j0, hn, cnt)"
    out: list[str] = []
    if node.op in ("LSTMLoop", "DQLSTMLoop"):
        f, g, h = acts
        out.append(f"{ind}cp = vloadn{L}(cyb, cyo + b * H + j0, cnt)")
        if peep:
            out.append(f"{ind}a_i = vfma{L}(vloadn{L}(pb, po + j0, cnt), cp, a_i)")
            out.append(f"{ind}a_f = vfma{L}(vloadn{L}(pb, po + 2 * H + j0, cnt), cp, a_f)")
        for v in ("a_i", "a_f", "a_c"):
            out += _clip(ind, v, L, clip)
        out += vact_lines(ind, f, "ei", "a_i", L)
        if a["input_forget"]:
            out.append(f"{ind}ef = vfma{L}(ei, vbcast{L}(np.float32(-1.0)), vbcast{L}(np.float32(1.0)))")
        else:
            out += vact_lines(ind, f, "ef", "a_f", L)
        out += vact_lines(ind, g, "ec", "a_c", L)
        out.append(f"{ind}cn = vfma{L}(ef, cp, vmul{L}(ei, ec))")
        if peep:
            out.append(f"{ind}a_o = vfma{L}(vloadn{L}(pb, po + H + j0, cnt), cn, a_o)")
        out += _clip(ind, "a_o", L, clip)
        out += vact_lines(ind, f, "eo", "a_o", L)
        out += vact_lines(ind, h, "hc", "cn", L)
        return out + [f"{ind}hn = vmul{L}(eo, hc)", f"{ind}vstoren{L}(cyb, cyo + b * H + j0, cn, cnt)", store_y]
    if node.op == "RNNLoop":
        out += _clip(ind, "a_0", L, clip)
        return out + vact_lines(ind, acts[0], "hn", "a_0", L) + [store_y]
    f, g = acts
    neg1 = f"vbcast{L}(np.float32(-1.0))"
    if pass_no == 0:  # z and r (and with linear_before_reset, the h gate's R @ h in a_2)
        for v in ("a_0", "a_1"):
            out += _clip(ind, v, L, clip)
        out += vact_lines(ind, f, "ez", "a_0", L) + vact_lines(ind, f, "er", "a_1", L)
        out.append(f"{ind}hp = vloadn{L}(hb, hq + j0, cnt) if live else vzero{L}()")
        if not a["linear_before_reset"]:  # stash z in Y[t], r * h in Y_h until the second pass
            return out + [f"{ind}vstoren{L}(yb, yt + j0, ez, cnt)",
                          f"{ind}vstoren{L}(hyb, hyo + b * H + j0, vmul{L}(er, hp), cnt)"]
        out += gate_load(ind, "gh", 2, L, bool(a["time_major"]))
        out.append(f"{ind}a_2 = vfma{L}(er, vadd{L}(a_2, vloadn{L}(qb, qo + j0, cnt)), gh)")
    else:
        out.append(f"{ind}hp = vloadn{L}(hb, hq + j0, cnt) if live else vzero{L}()")
        out.append(f"{ind}ez = vloadn{L}(yb, yt + j0, cnt)")
        out.append(f"{ind}a_2 = vadd{L}(a_2, vloadn{L}(qb, qo + j0, cnt))")
    out += _clip(ind, "a_2", L, clip)
    out += vact_lines(ind, g, "en", "a_2", L)
    return out + [f"{ind}hn = vfma{L}(ez, vfma{L}(en, {neg1}, hp), en)", store_y]


#: DQLSTMLoop: at each step, every live batch row's ``h_{t-1}`` quantized to uint8 with its own range
#: (onnxruntime's ``GetQuantizationParameter`` + ``QuantizeLinear``, float32, ties to even) into the scratch
#: row ``zb[zo + b * (H + 2)]``: ``H`` values ``q`` (exact small integers in float32), ``zp`` and the scale
QUANT_STEP = f"""        for b in range(B):
            n = min(max(np.int64(sb[so + b]), 0), T)
            if s >= n:
                continue
            t = n - 1 - s if rev else s
            tp = t + 1 if rev else t - 1
            live = s > 0 or has_h0
            hsrc = yb if s > 0 else hb
            hq = yo + tp * YS + b * H if s > 0 else ho + b * H
            zr = zo + b * (H + 2)
            lo = np.float32(0.0)
            hi = np.float32(0.0)
            if live:
                for k in range(H):
                    v = hsrc[U(hq + k)]
                    lo = min(lo, v)
                    hi = max(hi, v)
{dynamic_qparams("hsc", "zp", "            ")}
            for k in range(H):
                v = hsrc[U(hq + k)] if live else np.float32(0.0)
                zb[U(zr + k)] = min(max(np.rint(np.float32(v / hsc)) + zp, np.float32(0.0)), np.float32(255.0))
            zb[U(zr + H)] = zp
            zb[U(zr + H + 1)] = hsc"""


def recurrence_source(node: Node, d: int, BW: int, peep: bool = False, int8: bool = False, dot: int = 0) -> str:
    """The kernel running direction ``d`` of ``node`` (``peep``: an LSTM with peepholes). ``DQLSTMLoop``:
    the GEMV runs over the quantized state (``QUANT_STEP``) and integer-valued ``R`` (``int8``: its panels
    stored as int8; ``dot``: the integer GEMV ``_gemv_dot`` at ``dot`` i32 lanes, ``BW == 2 * dot``, over
    the state's bytes in the scratch ``qhb``); its result is scaled by ``h_scale * R_scale`` (per gate row,
    ``msb``) before the gates are added."""
    op = node.op
    passes = groups(node)
    quant = op == "DQLSTMLoop"
    lstm = op in ("LSTMLoop", "DQLSTMLoop")
    tm = bool(node.attrs["time_major"])
    params = ["gb, go, rb, ro, sb, so, hb, ho"] + (["cb, co, pb, po"] if lstm else []) \
        + (["qb, qo"] if op == "GRULoop" else []) + (["zb, zo, msb, mso, csb, cso"] if quant else []) \
        + (["qhb, qho"] if dot else []) \
        + ["yb, yo, hyb, hyo"] + (["cyb, cyo"] if lstm else []) + ["T, B, H, GS, YS, rev, has_h0, has_c0"]
    lines = [f"def kernel({', '.join(params)}):",
             f"    NB = (H + {BW - 1}) // {BW}",
             "    for b in range(B):",  # the states start at h0 / c0; Y is zero past each sequence's end
             "        n = min(max(np.int64(sb[so + b]), 0), T)",
             "        for j in range(H):",
             "            hyb[U(hyo + b * H + j)] = hb[U(ho + b * H + j)] if has_h0 else np.float32(0.0)"]
    if lstm:
        lines.append("            cyb[U(cyo + b * H + j)] = cb[U(co + b * H + j)] if has_c0 else np.float32(0.0)")
    lines += ["        for t in range(n, T):",
              "            for j in range(H):",
              "                yb[U(yo + t * YS + b * H + j)] = np.float32(0.0)",
              "    for s in range(T):"]
    if dot:  # the state's bytes past H stay 0 (they meet the panels' zero rows)
        lines[-1:-1] = ["    HB = ((H + 3) // 4) * 4", "    for i in range(B * HB):",
                        "        qhb[U(qho + i)] = np.uint8(0)"]
    if quant:
        step = QUANT_STEP.split("\n")
        if dot:
            at = next(i for i, ln in enumerate(step) if ln.strip().startswith("zb[U(zr + k)]"))
            step.insert(at + 1, "                qhb[U(qho + b * HB + k)] = np.uint8(zb[U(zr + k)])")
        lines += step
    roff = "ro"
    for pn, gs in enumerate(passes):
        accs = [f"a_{q}" if not lstm else f"a_{_NAMES[q]}" for q in gs]
        lines += [
            "        for jj in range(NB):",  # zig-zag: a step starts on the panels the last one left in cache
            "            jb = NB - 1 - jj if s % 2 else jj",
            f"            j0 = jb * {BW}",
            f"            cnt = min({BW}, H - j0)",
            "            for b in range(B):",
            "                n = min(max(np.int64(sb[so + b]), 0), T)",
            "                if s >= n:",
            "                    continue",
            "                t = n - 1 - s if rev else s",
            "                tp = t + 1 if rev else t - 1",
            "                gt = go + (t * B + b) * GS" if tm else "                gt = go + t * B + b",
            "                yt = yo + t * YS + b * H",
            "                live = s > 0 or has_h0",  # h_{t-1} is not all zero
            "                hq = yo + tp * YS + b * H if s > 0 else ho + b * H",
        ]
        ind = " " * 16
        for q, acc in zip(gs, accs):
            if op == "GRULoop" and q == 2 and len(gs) > 1:  # R_h @ h apart: r multiplies it
                lines.append(f"{ind}{acc} = vzero{BW}()")
            elif quant:  # the integer GEMV apart: it is scaled before the gates are added
                lines += gate_load(ind, "g" + acc, q, BW, tm) + [f"{ind}{acc} = vzero{BW}()"]
            else:
                lines += gate_load(ind, acc, q, BW, tm)
        lines.append(f"{ind}if live:")
        pan = f"{roff} + jb * {'HB' if dot else 'H'} * {len(gs) * BW}"
        if op == "GRULoop" and pn == 1:  # the h gate's GEMV over r * h, stashed in Y_h by the first pass
            lines += _gemv(ind + "    ", BW, gs, pan, accs, "hyb[U(hyo + b * H + k)]")
        elif quant:
            if dot:
                lines += _gemv_dot(ind + "    ", dot, gs, pan, accs, bool(node.attrs["saturate"]))
            else:
                gemv = _gemv_sat if node.attrs["saturate"] else _gemv
                load = "vloadi8" if int8 else "vload"
                lines += gemv(ind + "    ", BW, gs, pan, accs, "zb[U(zo + b * (H + 2) + k)]", load)
            lines += [f"{ind}hzv = vbcast{BW}(np.float32(-zb[U(zo + b * (H + 2) + H)]))",
                      f"{ind}hsv = vbcast{BW}(zb[U(zo + b * (H + 2) + H + 1)])"]
            for q, acc in zip(gs, accs):  # - zp * sum_k R, then the scales, then the input gates
                lines += [f"{ind}{acc} = vfma{BW}(hzv, vloadn{BW}(csb, cso + {q} * H + j0, cnt), {acc})",
                          f"{ind}{acc} = vfma{BW}({acc}, vmul{BW}(hsv, vloadn{BW}(msb, mso + {q} * H + j0, cnt)), "
                          f"g{acc})"]
        else:
            lines += [f"{ind}    hsrc = yb if s > 0 else hb"]
            lines += _gemv(ind + "    ", BW, gs, pan, accs, "hsrc[U(hq + k)]")
        lines += [f"{ind}hb2 = yb if s > 0 else hb"]
        lines += [ln.replace("(hb, hq", "(hb2, hq") for ln in _cell(node, d, BW, ind, pn, peep)]
        roff = f"{roff} + NB * H * {len(gs) * BW}"
    lines += ["        for b in range(B):",  # Y_h: the state at each sequence's last step
              "            n = min(max(np.int64(sb[so + b]), 0), T)",
              "            if s == n - 1:",
              "                t = 0 if rev else s",
              "                for j in range(H):",
              "                    hyb[U(hyo + b * H + j)] = yb[U(yo + t * YS + b * H + j)]"]
    return source(lines)


@variant("LSTMLoop", "GRULoop", "RNNLoop", "DQLSTMLoop", name="simd_recurrence")
def gen_recurrence(node: Node, target: Target) -> list[KernelCall]:
    """One call per direction: ``R`` packed into block panels, the optional inputs as zeros when absent."""
    op = node.op
    a = node.attrs
    g, R = node.inputs[0], node.inputs[1]
    nfix = 3 if op in ("GRULoop", "DQLSTMLoop") else 2
    lstm = op in ("LSTMLoop", "DQLSTMLoop")
    opt = list(node.inputs[nfix:]) + [None] * 4
    seq, h0, c0, P = opt[:4]
    y, yh = node.outputs[0], node.outputs[1]
    tm = bool(a["time_major"])
    T, B = g.shape[:2] if tm else g.shape[1:]
    H = int(a["hidden_size"])
    D = num_directions(a["direction"])
    ng = GATES[op]
    BW = block_lanes(node, target)
    lens = seq if seq is not None else Param(np.full(B, T, np.int32))
    calls = []
    for d in range(D):
        rev = int(a["direction"] == "reverse" or d == 1)
        state = d * B * H
        rd = np.asarray(R.const[d], np.float32)
        int8 = op == "DQLSTMLoop" and int8_recurrence(rd)
        dot = target.int_width if int8 and BW == 2 * target.int_width and len(groups(node)) == 1 else 0
        if dot:
            r = Param(pack_recurrence_dot(rd.astype(np.int8), H, BW, groups(node)[0]))
        else:
            r = Param(pack_recurrence(rd, H, BW, groups(node), np.int8 if int8 else np.float32))
        h0a = At(h0, state) if h0 is not None else Param(np.zeros(1, np.float32))
        args = [At(g, d * ng * H * (1 if tm else T * B)), r, lens, h0a]
        if lstm:
            args += [At(c0, state) if c0 is not None else Param(np.zeros(1, np.float32)),
                     At(P, d * 3 * H) if P is not None else Param(np.zeros(1, np.float32))]
        if op == "GRULoop":
            args.append(At(node.inputs[2], d * H))
        if op == "DQLSTMLoop":
            rsum = np.asarray(R.const[d], np.float32).sum(1)
            args += [At(node.outputs[3], d * B * (H + 2)), At(node.inputs[2], d * 4 * H), Param(rsum)]
            if dot:  # the quantized state as bytes, 4 k per i32 lane
                args.append(Scratch(B * -(-H // 4) * 4, np.dtype(np.uint8)))
        args += [At(y, state), At(yh, state)]
        if lstm:
            args.append(At(node.outputs[2], state))
        args += [T, B, H, D * ng * H if tm else T * B, D * B * H, rev, int(h0 is not None), int(c0 is not None)]
        src = recurrence_source(node, d, BW, P is not None, int8, dot)
        calls.append(KernelCall(src, args, note(node)))
    return calls

