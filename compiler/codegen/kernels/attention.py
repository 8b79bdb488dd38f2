"""``Attention`` (``fuse_attention``): ``Softmax(scale * q @ k^T) @ v`` one row of scores at a time.

Per matrix (batch entry): ``k [S, D]`` is transposed once into scratch as ``k^T [D, SP]`` (``SP``: ``S``
rounded up to a step of ``4 * W`` lanes, the pad zero), then for each query row ``m``:

1. the scores ``q[m] @ k^T`` in steps of ``4 * W`` lanes (four FMA chains), times ``scale``, into a row
   of scratch (``SP`` floats, in L1);
2. the row's max (a masked tail filled with -inf), ``exp(s - max)`` with ``vexpneg`` (2 ulp) stored back
   and summed, as ``simd_softmax`` does a short row;
3. ``y[m] = (sum_n e[n] * v[n]) / sum`` in chunks of ``2 * W`` lanes of ``DV`` (a masked last chunk),
   four accumulators over ``n`` (independent FMA chains), normalised once at the end.

So there is no transpose call, no scores tensor and no softmax pass: the scores are written and read in
L1 only. A row of NaN scores gives NaN outputs, a row of -inf NaN (as the op's reference).
"""

from __future__ import annotations

import numpy as np

from cnnjit.ir import Node

from ..kernel import KernelCall, Scratch, Target, note, variant
from .template import source

#: vectors per step of the scores (independent FMA chains over ``D``)
SCORE_VECTORS = 4
#: vectors per chunk of an output row (``DV`` lanes): four accumulators of this many lanes each over ``n``
OUT_VECTORS = 2
#: accumulators over the keys in the ``@ v`` step
PV_CHAINS = 4


def _pv(vl: int, masked: bool, ind: str) -> list[str]:
    """``y[m, c0 : c0 + vl] = (sum_n e[n] * v[n, c0 : ...]) * inv``: ``PV_CHAINS`` accumulators over the
    keys; ``masked``: only the first ``cnt`` lanes (the row's last chunk)."""
    def ld(at: str) -> str:
        return f"vloadn{vl}(vb, {at}, cnt)" if masked else f"vload{vl}(vb, {at})"

    R = range(PV_CHAINS)
    out = [f"acc{r} = vzero{vl}()" for r in R]
    out += ["n = 0", f"while n + {PV_CHAINS} <= S:"]
    out += [f"    acc{r} = vfma{vl}(vbcast{vl}(zb[so + n + {r}]), {ld(f'v0 + (n + {r}) * DV + c0')}, acc{r})"
            for r in R]
    out += [f"    n += {PV_CHAINS}", "while n < S:",
            f"    acc0 = vfma{vl}(vbcast{vl}(zb[so + n]), {ld('v0 + n * DV + c0')}, acc0)", "    n += 1"]
    tot = f"vadd{vl}(vadd{vl}(acc0, acc1), vadd{vl}(acc2, acc3))"
    val = f"vmul{vl}({tot}, vbcast{vl}(inv))"
    at = "y0 + m * DV + c0"
    out.append(f"vstoren{vl}(yb, {at}, {val}, cnt)" if masked else f"vstore{vl}(yb, {at}, {val})")
    return [ind + s for s in out]


def attention_source(w: int) -> str:
    """The kernel at vector width ``w`` (see the module doc); sizes are arguments."""
    L, vl = SCORE_VECTORS * w, OUT_VECTORS * w
    lines = [
        "def kernel(qb, qo, kb, ko, vb, vo, yb, yo, zb, zo, NB, T, S, D, DV, SP, scale):",
        "    so = zo + D * SP",
        f"    tail = S - S % {w}",
        f"    dvf = DV - DV % {vl}",
        "    for t in range(NB):",
        "        q0 = qo + t * T * D",
        "        k0 = ko + t * S * D",
        "        v0 = vo + t * S * DV",
        "        y0 = yo + t * T * DV",
        "        for d in range(D):",
        "            for n in range(S):",
        "                zb[zo + d * SP + n] = kb[k0 + n * D + d]",
        "            for n in range(S, SP):",
        "                zb[zo + d * SP + n] = 0.0",
        "        for m in range(T):",
        "            qi = q0 + m * D",
        f"            for p in range(0, SP, {L}):",
        f"                a = vzero{L}()",
        "                for d in range(D):",
        f"                    a = vfma{L}(vbcast{L}(qb[qi + d]), vload{L}(zb, zo + d * SP + p), a)",
        f"                vstore{L}(zb, so + p, vmul{L}(a, vbcast{L}(scale)))",
        f"            mx = vbcast{w}(-math.inf)",
        f"            for j in range(0, tail, {w}):",
        f"                mx = vmaxf{w}(mx, vload{w}(zb, so + j))",
        "            if tail < S:",
        f"                mx = vmaxf{w}(mx, vloadrf{w}(zb, so + tail, 0, S - tail, -math.inf))",
        f"            mb = vbcast{w}(vhmaxt{w}(mx))",
        f"            s = vzero{w}()",
        f"            for j in range(0, tail, {w}):",
        f"                e = vexpneg{w}(vsub{w}(vload{w}(zb, so + j), mb))",
        f"                s = vadd{w}(s, e)",
        f"                vstore{w}(zb, so + j, e)",
        "            if tail < S:",
        f"                e = vexpneg{w}(vsub{w}(vloadrf{w}(zb, so + tail, 0, S - tail, -math.inf), mb))",
        f"                s = vadd{w}(s, e)",
        f"                vstoren{w}(zb, so + tail, e, S - tail)",
        f"            inv = 1.0 / vhsumt{w}(s)",
        f"            for c0 in range(0, dvf, {vl}):",
        *_pv(vl, False, " " * 16),
        "            if dvf < DV:",
        "                c0 = dvf",
        "                cnt = DV - dvf",
        *_pv(vl, True, " " * 16),
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
    L = SCORE_VECTORS * target.vector_width
    SP = -(-S // L) * L
    return [KernelCall(attention_source(target.vector_width),
                       [q, k, v, node.outputs[0], Scratch(D * SP + SP), nb, T, S, D, DV, SP,
                        float(node.attrs["scale"])], note(node))]
