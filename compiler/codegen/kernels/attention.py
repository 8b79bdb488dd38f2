"""``Attention`` (``fuse_attention``): ``Softmax(scale * q @ k^T) @ v`` one row of scores at a time.

Per matrix (batch entry): ``k [S, D]`` is transposed once into scratch as ``k^T [D, SP]`` (``SP``: ``S``
rounded up to a step of ``VECTORS * W`` lanes, the pad zero; ``W x W`` blocks transposed in registers where
``D >= W``), then ``ROWS`` query rows at a time:

1. the scores ``q[m] @ k^T`` in steps of ``VECTORS * W`` lanes, each load of ``k^T`` feeding every row's
   FMA, times ``scale``, into a row of scratch per query row (``SP`` floats each, in L1);
2. each row's max (kept as its scores are made; lanes past ``S`` read back as -inf), then ``exp(s - max)``
   with ``simd_softmax.EXP`` (``vexpsm``, 2 ulp) stored back and summed, the rows interleaved as
   ``simd_softmax`` does short rows;
3. ``y[m] = (sum_n e[n] * v[n]) / sum`` in chunks of ``VECTORS * W`` lanes of ``DV`` (a masked last chunk;
   one vector when ``DV <= W``),
   each load of ``v`` feeding every row's FMA, normalised once at the end.

So there is no transpose call, no scores tensor and no softmax pass: the scores are written and read in
L1 only. A row of NaN scores gives NaN outputs, a row of -inf NaN (as the op's reference).
"""

from __future__ import annotations

import numpy as np

from cnnjit.ir import Node

from ..kernel import KernelCall, Scratch, Target, form, note, variant
from . import simd_softmax as softmax
from .template import source

#: query rows computed together: they share each load of ``k^T`` and ``v`` (a quarter of the loads per FMA),
#: and their softmax reductions (dependent chains and horizontal reductions) hide each other's latency, as
#: ``simd_softmax`` does with short rows; the rows left over run one at a time
ROWS = 4
#: vectors per step of the scores and per chunk of an output row: ``ROWS`` x this many accumulators (8 of
#: AVX2's 16 registers), the loaded vector and the broadcast
VECTORS = 2


def _rows(w: int, rows: int, ind: str, lv: int) -> list[str]:
    """Query rows ``m .. m + rows - 1`` of matrix ``t``: scores, softmax, ``@ v`` (see the module doc)."""
    L = VECTORS * w
    R = range(rows)
    out = [f"qi{r} = q0 + (m + {r}) * D" for r in R] + [f"sr{r} = so + {r} * SP" for r in R]
    out += [f"mx{r} = vbcast{L}(-math.inf)" for r in R] + [f"for p in range(0, SP, {L}):"]
    out += [f"    a{r} = vzero{L}()" for r in R]
    out += ["    for d in range(D):", f"        kv = vload{L}(zb, zo + d * SP + p)"]
    out += [f"        a{r} = vfma{L}(vbcast{L}(qb[U(qi{r} + d)]), kv, a{r})" for r in R]
    out += [f"    a{r} = vmul{L}(a{r}, vbcast{L}(scale))" for r in R]
    out += [f"    vstore{L}(zb, sr{r} + p, a{r})" for r in R]
    # each row's max as its scores are made (the last step's lanes past S read back with -inf), then
    # exp(s - max) stored and summed
    out += [f"    if p + {L} <= S:"] + [f"        mx{r} = vmaxf{L}(mx{r}, a{r})" for r in R] + ["    else:"]
    out += [f"        mx{r} = vmaxf{L}(mx{r}, vloadrf{L}(zb, sr{r} + p, 0, S - p, -math.inf))" for r in R]
    out += [f"mb{r} = vbcast{w}(vhmaxt{L}(mx{r}))" for r in R] + [f"s{r} = vzero{w}()" for r in R]
    out += [f"for j in range(0, tail, {w}):"]
    for r in R:
        out += [f"    e{r} = {softmax.EXP}{w}(vsub{w}(vload{w}(zb, sr{r} + j), mb{r}))",
                f"    s{r} = vadd{w}(s{r}, e{r})",
                f"    vstore{w}(zb, sr{r} + j, e{r})"]
    out += ["if tail < S:"]
    for r in R:
        out += [f"    e{r} = {softmax.EXP}{w}(vsub{w}(vloadrf{w}(zb, sr{r} + tail, 0, S - tail, -math.inf), mb{r}))",
                f"    s{r} = vadd{w}(s{r}, e{r})", f"    vstoren{w}(zb, sr{r} + tail, e{r}, S - tail)"]
    out += [f"inv{r} = vbcast{lv}(1.0 / vhsumt{w}(s{r}))" for r in R]
    L = lv  # the chunk of an output row: ``pv_lanes``

    def pv(masked: bool) -> list[str]:
        """``y[m + r, c0 : c0 + L] = (sum_n e_r[n] * v[n, c0 : ...]) * inv_r``; ``masked``: ``cnt`` lanes."""
        ld = f"vloadn{L}(vb, v0 + n * DV + c0, cnt)" if masked else f"vload{L}(vb, v0 + n * DV + c0)"
        body = [f"o{r} = vzero{L}()" for r in R] + ["for n in range(S):", f"    vv = {ld}"]
        body += [f"    o{r} = vfma{L}(vbcast{L}(zb[U(sr{r} + n)]), vv, o{r})" for r in R]
        for r in R:
            at, val = f"y0 + (m + {r}) * DV + c0", f"vmul{L}(o{r}, inv{r})"
            body.append(f"vstoren{L}(yb, {at}, {val}, cnt)" if masked else f"vstore{L}(yb, {at}, {val})")
        return body

    out += [f"for c0 in range(0, dvf, {L}):", *["    " + x for x in pv(False)]]
    out += ["if dvf < DV:", "    c0 = dvf", "    cnt = DV - dvf", *["    " + x for x in pv(True)]]
    return [ind + x for x in out]


#: ``k^T`` is made with ``W x W`` transposes in registers (``vloadtr``) where ``D >= W``: a 40 x 15 head's copy
#: was 600 scalar loads and stores, as many instructions as its ``q @ k^T``; the form ``SCALAR_KT`` copies it
#: element by element, as before (``benchmarks/small_ops.py``'s "before")
SCALAR_KT = form("attention_scalar_kt", "Attention's k^T copied element by element, not in W x W register blocks")


def _transpose_k(w: int, blocks: bool = True) -> list[str]:
    """Kernel lines writing ``k^T [D, SP]`` of matrix ``t`` into scratch (the pad columns ``S..SP`` zero): blocks
    of ``w`` keys by ``w`` dimensions transposed in registers, the last ``w`` dimensions overlapping the block
    before when ``w`` does not divide ``D``; keys past the last whole block, and every key when ``D < w``
    (or not ``blocks``: ``SCALAR_KT``), one element at a time."""
    scalar = ["for d in range(D):", "    for n in range(n0, S):",
              "        zb[U(zo + d * SP + n)] = kb[U(k0 + n * D + d)]", "    for n in range(S, SP):",
              "        zb[U(zo + d * SP + n)] = 0.0"]
    if not blocks:
        return ["        n0 = 0", *["        " + ln for ln in scalar]]
    cols = ", ".join(f"c{j}" for j in range(w))
    block = [f"{cols} = vloadtr{w}(kb, k0 + n * D + d, D)",
             *[f"vstore{w}(zb, zo + (d + {j}) * SP + n, c{j})" for j in range(w)]]
    lines = ["n0 = 0", f"if D >= {w}:", f"    n0 = S - S % {w}", f"    for n in range(0, n0, {w}):",
             f"        for d in range(0, D - D % {w}, {w}):", *["            " + ln for ln in block],
             f"        if D % {w}:", f"            d = D - {w}", *["            " + ln for ln in block], *scalar]
    return ["        " + ln for ln in lines]


#: output rows of at most one vector go in one-vector chunks (``pv_lanes``); the form ``WIDE_ROWS`` keeps
#: ``VECTORS`` vectors, as before (``benchmarks/small_ops.py``'s "before")
WIDE_ROWS = form("attention_wide_rows", "Attention's output rows in chunks of 2 vectors even where a row fits in one")


def pv_lanes(w: int, dv: int, narrow: bool = True) -> int:
    """Lanes of a chunk of an output row: ``VECTORS * w``, or one vector when ``v``'s rows fit in one (a
    small head's 8: no masked chunk twice as wide as the row) and ``narrow``."""
    return w if dv <= w and narrow else VECTORS * w


def attention_source(w: int, lv: int | None = None, kt_blocks: bool = True) -> str:
    """The kernel at vector width ``w`` (see the module doc), output rows in chunks of ``lv`` lanes (default
    ``VECTORS * w``), ``k^T`` in register blocks where it can (``kt_blocks``); sizes are arguments."""
    lv = lv or VECTORS * w
    lines = [
        "def kernel(qb, qo, kb, ko, vb, vo, yb, yo, zb, zo, NB, T, S, D, DV, SP, scale):",
        "    so = zo + D * SP",
        f"    tail = S - S % {w}",
        f"    dvf = DV - DV % {lv}",
        "    for t in range(NB):",
        "        q0 = qo + t * T * D",
        "        k0 = ko + t * S * D",
        "        v0 = vo + t * S * DV",
        "        y0 = yo + t * T * DV",
        *_transpose_k(w, kt_blocks),
        "        m = 0",
        f"        while m + {ROWS} <= T:",
        *_rows(w, ROWS, " " * 12, lv),
        f"            m += {ROWS}",
        "        while m < T:",
        *_rows(w, 1, " " * 12, lv),
        "            m += 1",
    ]
    return source(lines)


def attention_applies(node: Node, target: Target) -> bool:
    return all(v.dtype == np.float32 for v in node.inputs) and node.outputs[0].type.size > 0


@variant("Attention", name="simd_attention", priority=10, applies=attention_applies)
def gen_simd_attention(node: Node, target: Target) -> list[KernelCall]:
    """One call over every matrix of the batch (see the module doc)."""
    q, k, v = node.inputs
    T, D = q.shape[-2:]
    S, DV = v.shape[-2:]
    nb = int(np.prod(q.shape[:-2], dtype=np.int64))
    w = target.vector_width
    SP = -(-S // (VECTORS * w)) * VECTORS * w
    src = attention_source(w, pv_lanes(w, DV, not target.uses(WIDE_ROWS)), not target.uses(SCALAR_KT))
    return [KernelCall(src,
                       [q, k, v, node.outputs[0], Scratch((D + ROWS) * SP), nb, T, S, D, DV, SP,
                        float(node.attrs["scale"])], note(node))]
