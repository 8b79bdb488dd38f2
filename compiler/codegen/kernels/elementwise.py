"""Elementwise kernels: unary maps over a flat range, and n-ary ops with broadcasting.

Broadcasting is lowered at generation time: adjacent axes that every operand walks the same way are merged,
then the kernel loops over the (small) remaining rank with per-operand strides (0 on broadcast axes).
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from cnnjit.ir import Node
from cnnjit.ir.errors import CompileError

from ..kernel import KernelCall, Target, note, variant
from .epilogue import unary_expr
from .template import source

UNARY_OPS = ("Relu", "LeakyRelu", "Sigmoid", "HardSigmoid", "HardSwish", "Tanh", "Identity", "Exp", "Abs",
             "Neg", "Sqrt", "Erf", "Softplus", "Mish", "Sign", "Shrink", "SiLU", "Clip", "Elu", "Selu", "Gelu", "Cast")


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


def combine_expr(node: Node, names: list[str]) -> str:
    op = node.op
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


@variant("Add", "Sub", "Mul", "Div", "Pow", "PRelu", "Sum", "Mean", "Max", "Min")
def gen_nary(node: Node, target: Target) -> list[KernelCall]:
    return broadcast_calls(node, lambda names: combine_expr(node, names))


def broadcast_calls(node: Node, expr: Callable[[list[str]], str]) -> list[KernelCall]:
    """One kernel applying ``expr(names)`` (a scalar expression in the names of the loaded inputs) over the
    node's broadcast output."""
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
    for d in range(r):
        lines.append(f"{indent}for i{d} in range(n{d}):")
        indent += "    "
        if d + 1 < r:
            for j in range(k):
                lines.append(f"{indent}p{j}_{d + 1} = p{j}_{d} + i{d} * s{j}_{d}")
    loads = [f"b{j}[U(p{j}_{r - 1} + i{r - 1} * s{j}_{r - 1})]" for j in range(k)]
    names = [f"v{j}" for j in range(k)]
    for j in range(k):
        lines.append(f"{indent}v{j} = {loads[j]}")
    lines.append(f"{indent}yb[U(y)] = {expr(names)}")
    lines.append(f"{indent}y += 1")
    src = source(lines)
    args: list = [*ins, node.outputs[0], *dims]
    for s in strides:
        args.extend(s)
    return [KernelCall(src, args, note(node))]

