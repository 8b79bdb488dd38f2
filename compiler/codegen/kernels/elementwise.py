"""Elementwise kernels: unary maps over a flat range, and n-ary ops with broadcasting.

Broadcasting is lowered at generation time: adjacent axes that every operand walks the same way are merged,
then the kernel loops over the (small) remaining rank with per-operand strides (0 on broadcast axes).
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from cnnjit.ir import Node, Value, get_op
from cnnjit.ir.errors import CompileError

from ..kernel import KernelCall, Target, note, variant
from .epilogue import scalar_lines, unary_expr, vector_expr, vector_lines
from .template import source

UNARY_OPS = ("Relu", "LeakyRelu", "Sigmoid", "HardSigmoid", "HardSwish", "Tanh", "Identity", "Exp", "Abs",
             "Neg", "Sqrt", "Erf", "Softplus", "Mish", "Sign", "Shrink", "SiLU", "Clip", "Elu", "Selu", "Gelu", "Cast",
             "ScaleShift")


def _unary_vector(node: Node, lanes: int) -> str | None:
    """The vector expression of a float32 unary node on ``x`` (``lanes`` wide), or None."""
    if node.inputs[0].dtype != np.float32 or node.outputs[0].dtype != np.float32:
        return None
    return vector_expr(node.op, get_op(node.op).check_attrs(dict(node.attrs)), lanes, "x")


def unary_lanes(target: Target) -> int:
    """Lanes per step of the vector unary kernel: two machine vectors (two independent chains through the
    polynomials of exp / tanh / erf)."""
    return 2 * target.vector_width


@variant(*UNARY_OPS, name="simd_unary", priority=10,
         applies=lambda node, target: _unary_vector(node, unary_lanes(target)) is not None)
def gen_simd_unary(node: Node, target: Target) -> list[KernelCall]:
    """A float32 activation in vectors (the ``simd`` intrinsics of ``vector_expr``), a masked tail."""
    n = unary_lanes(target)
    e = _unary_vector(node, n)
    src = source([
        "def kernel(xb, xo, yb, yo, n):",
        f"    for i in range(0, n - {n - 1}, {n}):",
        f"        x = vload{n}(xb, xo + i)",
        f"        vstore{n}(yb, yo + i, {e})",
        f"    i = n - n % {n}",
        "    if i < n:",
        f"        x = vloadn{n}(xb, xo + i, n - i)",
        f"        vstoren{n}(yb, yo + i, {e}, n - i)",
    ])
    return [KernelCall(src, [node.inputs[0], node.outputs[0], node.outputs[0].type.size], note(node))]


@variant(*UNARY_OPS)
def gen_unary(node: Node, target: Target) -> list[KernelCall]:
    src = (
        "def kernel(xb, xo, yb, yo, n):\n"
        "    for i in range(n):\n"
        "        x = xb[U(xo + i)]\n"
        f"        yb[U(yo + i)] = {unary_expr(node)}\n"
    )
    return [KernelCall(src, [node.inputs[0], node.outputs[0], node.outputs[0].type.size], note(node))]


# -- n-ary with broadcasting ---------------------------------------------------------------------------
def broadcast_strides(shape: tuple[int, ...], out: tuple[int, ...]) -> list[int]:
    """Element strides of a contiguous ``shape`` walked over ``out`` (0 on broadcast axes)."""
    shape = (1,) * (len(out) - len(shape)) + tuple(shape)
    strides, acc = [0] * len(out), 1
    for i in range(len(out) - 1, -1, -1):
        strides[i] = 0 if shape[i] == 1 else acc
        acc *= shape[i]
    return strides


def collapse(out: tuple[int, ...], strides: list[list[int]]) -> tuple[list[int], list[list[int]]]:
    """Merge adjacent axes that every operand walks contiguously; drop size-1 axes."""
    dims: list[int] = []
    st: list[list[int]] = [[] for _ in strides]
    for ax, d in enumerate(out):
        if d == 1:
            continue
        if dims and all(s[-1] == s_ax * d for s, s_ax in zip(st, (x[ax] for x in strides))):
            dims[-1] *= d
            for s, x in zip(st, strides):
                s[-1] = x[ax]
            continue
        dims.append(d)
        for s, x in zip(st, strides):
            s.append(x[ax])
    if not dims:
        dims = [1]
        st = [[0] for _ in strides]
    return dims, st


def combine_expr(node: Node, names: list[str], op: str | None = None) -> str:
    """The scalar expression combining the loaded operands ``names`` for n-ary ``op`` (default: the node's)."""
    op = op or node.op
    isint = np.issubdtype(node.outputs[0].dtype, np.integer)
    a, b = (names + [None])[:2]
    if op == "Add":
        return f"{a} + {b}"
    if op == "Sub":
        return f"{a} - {b}"
    if op == "Mul":
        return f"{a} * {b}"
    if op == "Div":
        if isint:  # ONNX integer division truncates toward zero
            return f"({a} // {b}) if ({a} % {b} == 0 or ({a} >= 0) == ({b} >= 0)) else ({a} // {b} + 1)"
        return f"{a} / {b}"
    if op == "Pow":
        e = node.inputs[1]
        if e.is_const and not isint and e.const.size and np.all(e.const == 2):  # a squared norm: no pow() call
            return f"{a} * {a}"
        return f"{a} ** {b}"
    if op == "PRelu":
        return f"{a} if {a} >= 0 else {a} * {b}"
    if op in ("Sum", "Mean"):
        e = " + ".join(names)
        return e if op == "Sum" else f"({e}) / {float(len(names))!r}"
    if op in ("Max", "Min"):
        e = names[0]
        for n in names[1:]:
            e = f"{op.lower()}({e}, {n})"
        return e
    raise CompileError(f"no combine expression for {op}")


def _nary_head(node: Node) -> tuple[list[Value], list[int], list[list[int]], list[str], list[str], str]:
    """The n-ary kernel's shared part: operands, collapsed dims and strides, the signature line, and the
    loops over every axis but the last (``p<j>_<r-1>``: operand j's offset at the start of the last axis),
    with the indent inside them."""
    out = node.outputs[0].shape
    ins = [v for v in node.inputs if v is not None]
    k = len(ins)
    dims, strides = collapse(out, [broadcast_strides(v.shape, out) for v in ins])
    r = len(dims)
    # signature: k input (buf, off) pairs, output pair, dims, then per-input strides
    params = [f"b{j}, o{j}" for j in range(k)] + ["yb, yo"] + [f"n{d}" for d in range(r)]
    params += [f"s{j}_{d}" for j in range(k) for d in range(r)]
    lines = [f"def kernel({', '.join(params)}):", "    y = yo"]
    for j in range(k):
        lines.append(f"    p{j}_0 = o{j}")
    indent = "    "
    for d in range(r - 1):
        lines.append(f"{indent}for i{d} in range(n{d}):")
        indent += "    "
        for j in range(k):
            lines.append(f"{indent}p{j}_{d + 1} = p{j}_{d} + i{d} * s{j}_{d}")
    return ins, dims, strides, params, lines, indent


def _nary_call(node: Node, src: str, ins: list[Value], dims: list[int], strides: list[list[int]]) -> KernelCall:
    args: list = [*ins, node.outputs[0], *dims]
    for s in strides:
        args.extend(s)
    return KernelCall(src, args, note(node))


@variant("Add", "Sub", "Mul", "Div", "Pow", "PRelu", "Sum", "Mean", "Max", "Min")
def gen_nary(node: Node, target: Target) -> list[KernelCall]:
    return broadcast_calls(node, lambda names: combine_expr(node, names))


def broadcast_calls(node: Node, expr: Callable[[list[str]], str], post: bool = False) -> list[KernelCall]:
    """One kernel applying ``expr(names)`` (a scalar expression in the names of the loaded inputs) over the
    node's broadcast output; with ``post``, then the node's epilogue steps (``scalar_lines``)."""
    ins, dims, strides, _, lines, indent = _nary_head(node)
    k, r = len(ins), len(dims)
    lines.append(f"{indent}for i{r - 1} in range(n{r - 1}):")
    indent += "    "
    loads = [f"b{j}[U(p{j}_{r - 1} + i{r - 1} * s{j}_{r - 1})]" for j in range(k)]
    names = [f"v{j}" for j in range(k)]
    for j in range(k):
        lines.append(f"{indent}v{j} = {loads[j]}")
    if post:
        lines.append(f"{indent}v = {expr(names)}")
        lines += scalar_lines(node, "y", indent)[0]
        lines.append(f"{indent}yb[U(y)] = v")
    else:
        lines.append(f"{indent}yb[U(y)] = {expr(names)}")
    lines.append(f"{indent}y += 1")
    return [_nary_call(node, source(lines), ins, dims, strides)]


# -- n-ary in vectors ------------------------------------------------------------------------------------
_VEC_BINARY = {"Add": "vadd", "Sub": "vsub", "Mul": "vmul", "Div": "vdiv", "Max": "vmax", "Min": "vmin",
               "PRelu": "vprelu"}


def vector_combine(op: str, names: list[str], w: int) -> str | None:
    """The vector expression combining ``w``-lane operands ``names`` for n-ary ``op``, or None."""
    if op in ("Sum", "Mean") or (op in ("Max", "Min") and len(names) > 2):
        fn = {"Sum": "vadd", "Mean": "vadd", "Max": "vmax", "Min": "vmin"}[op]
        e = names[0]
        for n in names[1:]:
            e = f"{fn}{w}({e}, {n})"
        return e if op != "Mean" else f"vdiv{w}({e}, vbcast{w}({float(len(names))!r}))"
    if op in _VEC_BINARY and len(names) == 2:
        return f"{_VEC_BINARY[op]}{w}({names[0]}, {names[1]})"
    return None


def simd_nary_applies(node: Node, target: Target, op: str | None = None) -> bool:
    """float32 operands whose last collapsed axis (of at least 4 elements) each walks contiguously or
    broadcasts, and an op (default: the node's) with a vector form."""
    ins = [v for v in node.inputs if v is not None]
    if any(v.dtype != np.float32 for v in ins) or node.outputs[0].dtype != np.float32:
        return False
    if vector_combine(op or node.op, [f"v{j}" for j in range(len(ins))], 8) is None:
        return False
    out = node.outputs[0].shape
    dims, strides = collapse(out, [broadcast_strides(v.shape, out) for v in ins])
    return dims[-1] >= 4 and all(s[-1] in (0, 1) for s in strides)


@variant("Add", "Sub", "Mul", "Div", "PRelu", "Sum", "Mean", "Max", "Min", name="simd_nary", priority=10,
         applies=simd_nary_applies)
def gen_simd_nary(node: Node, target: Target) -> list[KernelCall]:
    """The last collapsed axis in vectors of two machine vectors: contiguous operands loaded, broadcast
    ones (stride 0 there, e.g. a per-channel scale) splat once per row; a masked tail."""
    return _simd_broadcast(node, target, node.op, [])


def _simd_broadcast(node: Node, target: Target, op: str, steps: list[str]) -> list[KernelCall]:
    """``gen_simd_nary``'s kernel combining with ``op``, then ``steps`` (lines on the vector ``x``) before
    the store."""
    ins, dims, strides, _, lines, ind = _nary_head(node)
    k, r, v = len(ins), len(dims), unary_lanes(target)
    last = f"n{r - 1}"
    names = [f"v{j}" for j in range(k)]
    for j in range(k):
        if strides[j][-1] == 0:
            lines.append(f"{ind}v{j} = vbcast{v}(b{j}[U(p{j}_{r - 1})])")
    e = vector_combine(op, names, v)
    if steps:
        e, steps = "x", [f"x = {e}", *steps]
    body = [(f"vload{v}(b{j}, p{j}_{r - 1} + i)", f"vloadn{v}(b{j}, p{j}_{r - 1} + i, {last} - i)")
            for j in range(k)]
    lines.append(f"{ind}for i in range(0, {last} - {v - 1}, {v}):")
    lines += [f"{ind}    v{j} = {body[j][0]}" for j in range(k) if strides[j][-1] == 1]
    lines += [f"{ind}    {t}" for t in steps]
    lines.append(f"{ind}    vstore{v}(yb, y + i, {e})")
    lines += [f"{ind}i = {last} - {last} % {v}", f"{ind}if i < {last}:"]
    lines += [f"{ind}    v{j} = {body[j][1]}" for j in range(k) if strides[j][-1] == 1]
    lines += [f"{ind}    {t}" for t in steps]
    lines += [f"{ind}    vstoren{v}(yb, y + i, {e}, {last} - i)", f"{ind}y += {last}"]
    return [_nary_call(node, source(lines), ins, dims, strides)]


# -- a binary op and its activations (``BroadcastMap``, ``fuse_broadcast_map``) --------------------------
def _map_steps(node: Node, w: int) -> list[str] | None:
    """The node's activation steps as lines on the ``w``-lane vector ``x``, or None if one has no vector form."""
    lines, ok = vector_lines(node, "x", "i", w, False)
    return lines if ok else None


def simd_broadcast_map_applies(node: Node, target: Target) -> bool:
    """``simd_nary``'s layouts (the contiguous output axis in vectors, each operand loaded or splat there)
    and every activation step with a vector form."""
    return simd_nary_applies(node, target, node.attrs["op"]) and _map_steps(node, unary_lanes(target)) is not None


@variant("BroadcastMap", name="simd_broadcast_map", priority=10, applies=simd_broadcast_map_applies)
def gen_simd_broadcast_map(node: Node, target: Target) -> list[KernelCall]:
    """The binary op and its activations in one pass over the output, in vectors of two machine vectors
    along its contiguous axis (``simd_nary``'s loads and splats), the activations in registers."""
    return _simd_broadcast(node, target, node.attrs["op"], _map_steps(node, unary_lanes(target)))


@variant("BroadcastMap")
def gen_broadcast_map(node: Node, target: Target) -> list[KernelCall]:
    """Scalar: any layout and dtype (``broadcast_calls`` with the activations after the op)."""
    return broadcast_calls(node, lambda names: combine_expr(node, names, node.attrs["op"]), post=True)
