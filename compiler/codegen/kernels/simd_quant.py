"""Vector QuantizeLinear / DequantizeLinear of float32 <-> 8-bit tensors (``simd_quant`` intrinsics).

The scalar kernels (``quant.py``, ``movement.py``) convert about one element per nanosecond; a quantized
model's float islands (a detection head's Sigmoid / Mul / Concat / Softmax between integer convolutions) run
one DequantizeLinear and one QuantizeLinear per tensor, which made them a third of such a model's time.
These variants take a machine vector per step, with the scale and zero point of a run of ``inner``
contiguous elements in registers: per tensor (one run), or per axis when each channel's run is at least a
vector long. Blocked quantisation, wider integers and other float types stay on the scalar kernels. The
results are the scalar kernels' bit for bit (and onnxruntime's: see ``simd_quant.py``).
"""

from __future__ import annotations

import numpy as np

from cnnjit.ir import Node
from cnnjit.ir.ops.quant import QUANT_RANGES

from ..kernel import KernelCall, Param, Target, note, variant
from .quant import dynamic_qparams, qparam_layout
from .template import source

_BYTES = (np.dtype(np.uint8), np.dtype(np.int8))


def _runs(node: Node, target: Target) -> list[int] | None:
    """``outer, C, inner, s_o, s_c`` of the node's contiguous runs sharing one scale, or None when the
    vector kernel does not apply (blocked, or per-axis runs shorter than a vector)."""
    x, scale = node.inputs[0], node.inputs[1]
    if int(node.attrs.get("block_size", 0)):
        return None
    outer, C, inner, _, s_o, s_c, _ = qparam_layout(x, scale, node.attrs["axis"], 0)
    if scale.type.size > 1 and inner < target.vector_width:
        return None
    return [outer, C, inner, s_o, s_c]


def _quantize_applies(node: Node, target: Target) -> bool:
    x, scale, y = node.inputs[0], node.inputs[1], node.outputs[0]
    return (x.dtype == np.float32 and scale.dtype == np.float32 and y.dtype in _BYTES
            and node.attrs.get("precision") in (None, "", "f32") and _runs(node, target) is not None)


def _dequantize_applies(node: Node, target: Target) -> bool:
    x, scale, y = node.inputs[0], node.inputs[1], node.outputs[0]
    return (x.dtype in _BYTES and scale.dtype == np.float32 and y.dtype == np.float32
            and _runs(node, target) is not None)


def _loop(width: int, full: str, tail: str) -> str:
    """The runs loop: ``full`` / ``tail`` convert elements ``j`` (of ``xb`` at ``xo + j``, ``yb`` at ``yo +
    j``) with ``s`` and ``z`` loaded, a whole vector / the last ``r`` of a run."""
    return source([
        "def kernel(xb, xo, sb, so, zb, zo, yb, yo, outer, C, inner, s_o, s_c, lo, hi):",
        "    i = 0",
        f"    nv = inner - inner % {width}",
        "    for o in range(outer):",
        "        for c in range(C):",
        "            k = o * s_o + c * s_c",
        "            s = np.float32(sb[so + k])",
        "            z = np.int32(zb[zo + k])",
        f"            for j in range(i, i + nv, {width}):",
        f"                {full}",
        "            r = inner - nv",
        "            if r > 0:",
        "                j = i + nv",
        f"                {tail}",
        "            i += inner",
    ])


#: per op: the loop's whole-vector and tail statements at width ``{w}`` (the intrinsics of ``simd_quant``), and
#: whether the absent zero point takes the output's type (QuantizeLinear) or the input's
_FORMS = {
    "QuantizeLinear": ("ivq{w}(yb, yo + j, vload{w}(xb, xo + j), s, z, lo, hi)",
                       "ivqn{w}(yb, yo + j, vloadn{w}(xb, xo + j, r), s, z, lo, hi, r)", True),
    "DequantizeLinear": ("vstore{w}(yb, yo + j, ivdq{w}(xb, xo + j, z, s))",
                         "vstoren{w}(yb, yo + j, ivdqn{w}(xb, xo + j, z, s, r), r)", False),
}


def gen_simd_quant(node: Node, target: Target) -> list[KernelCall]:
    """A vector at a time: QuantizeLinear loads floats and ``ivq`` divides, clamps, rounds, narrows and stores
    bytes; DequantizeLinear's ``ivdq`` loads bytes, widens, subtracts the zero point and scales."""
    w = target.vector_width
    full, tail, zp_is_output = _FORMS[node.op]
    src = _loop(w, full.format(w=w), tail.format(w=w))
    x, scale = node.inputs[0], node.inputs[1]
    zp = node.inputs[2] if len(node.inputs) > 2 and node.inputs[2] is not None else None
    if zp is None:
        zp = Param(np.zeros(scale.type.size, node.outputs[0].dtype if zp_is_output else x.dtype))
    lo, hi = QUANT_RANGES[node.attrs["dtype"]] if node.op == "QuantizeLinear" else (0, 0)
    return [KernelCall(src, [x, scale, zp, node.outputs[0], *_runs(node, target), lo, hi], note(node))]


variant("QuantizeLinear", name="simd_quantize", priority=10, applies=_quantize_applies)(gen_simd_quant)
variant("DequantizeLinear", name="simd_dequantize", priority=10, applies=_dequantize_applies)(gen_simd_quant)


# -- DynamicQuantizeLinear -----------------------------------------------------------------------------------
#: vectors per step of the range pass: independent min and max chains (``vminf`` / ``vmaxf``: one ``minps`` /
#: ``maxps`` each, where ``minnum`` / ``maxnum`` are three on x86)
DQL_CHAINS = 4


def dynamic_quant_source(w: int) -> str:
    """``kernel(xb, xo, yb, yo, sb, so, zb, zo, n)`` at ``w`` lanes: the range ``[min(x, 0), max(x, 0)]`` in
    ``DQL_CHAINS * w``-lane vectors (zero-filled tail lanes cannot move a range that holds 0), onnxruntime's
    parameters from it in float32 (``quant.dynamic_qparams``, as the scalar kernel), then ``ivq`` a vector at a
    time (divide, clamp, round half to even, add the zero point: the scalar kernel's bytes)."""
    L = DQL_CHAINS * w
    return source([
        "def kernel(xb, xo, yb, yo, sb, so, zb, zo, n):",
        f"    lov = vzero{L}()",
        f"    hiv = vzero{L}()",
        f"    nl = n - n % {L}",
        f"    for i in range(0, nl, {L}):",
        f"        v = vload{L}(xb, xo + i)",
        f"        lov = vminf{L}(lov, v)",
        f"        hiv = vmaxf{L}(hiv, v)",
        "    if nl < n:",
        f"        v = vloadn{L}(xb, xo + nl, n - nl)",
        f"        lov = vminf{L}(lov, v)",
        f"        hiv = vmaxf{L}(hiv, v)",
        f"    lo = np.float32(0.0) - vhmaxt{L}(vsub{L}(vzero{L}(), lov))",
        f"    hi = vhmaxt{L}(hiv)",
        dynamic_qparams("scale", "zp", "    "),
        "    sb[so] = scale",
        "    zb[zo] = np.uint8(zp)",
        "    z = np.int32(zp)",
        f"    nv = n - n % {w}",
        f"    for j in range(0, nv, {w}):",
        f"        ivq{w}(yb, yo + j, vload{w}(xb, xo + j), scale, z, 0, 255)",
        "    if nv < n:",
        f"        ivqn{w}(yb, yo + nv, vloadn{w}(xb, xo + nv, n - nv), scale, z, 0, 255, n - nv)",
    ])


def _dynamic_quant_applies(node: Node, target: Target) -> bool:
    return node.inputs[0].dtype == np.float32 and node.inputs[0].type.size > 0


@variant("DynamicQuantizeLinear", name="simd_dynamic_quantize", priority=10, applies=_dynamic_quant_applies)
def gen_simd_dynamic_quantize(node: Node, target: Target) -> list[KernelCall]:
    """The range and the quantisation in vectors (``dynamic_quant_source``); finite inputs give the scalar
    ``dynamic_quantize`` kernel's (and onnxruntime's) bytes, scale and zero point exactly."""
    x = node.inputs[0]
    y, s, z = node.outputs
    return [KernelCall(dynamic_quant_source(target.vector_width), [x, y, s, z, x.type.size], note(node))]
