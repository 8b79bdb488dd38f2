"""Elementwise kernels: unary maps over a flat range, and n-ary ops with broadcasting.

Broadcasting is lowered at generation time: adjacent axes that every operand walks the same way are merged,
then the kernel loops over the (small) remaining rank with per-operand strides (0 on broadcast axes).
"""

from __future__ import annotations

import numpy as np

from cnnjit.ir import Node
from cnnjit.ir.errors import CompileError

from ..kernel import KernelCall, flit, generator, ilit, note


class _Step:
    """The parts of a node a unary expression needs (an IR node, or an epilogue step)."""

    def __init__(self, op: str, attrs: dict, in_dtype: np.dtype, out_dtype: np.dtype):
        self.op, self.attrs, self.in_dtype, self.out_dtype = op, attrs, np.dtype(in_dtype), np.dtype(out_dtype)


def _f(node: _Step, key: str) -> str:
    return flit(node.attrs[key])


def _clip_bound(node: _Step, key: str) -> str | None:
    v = node.attrs[key]
    if v is None:
        return None
    if np.issubdtype(node.in_dtype, np.integer):
        return ilit(int(v))
    return flit(v)


def unary_expr(node: Node) -> str:
    """The scalar expression (in ``x``) of a unary IR node."""
    from cnnjit.ir import get_op

    attrs = get_op(node.op).check_attrs(dict(node.attrs))
    return step_expr(_Step(node.op, attrs, node.inputs[0].dtype, node.outputs[0].dtype))


def epilogue_expr(op: str, attrs: dict, dtype: np.dtype) -> str:
    """The expression (in ``x``) of an epilogue activation step."""
    from cnnjit.ir import get_op

    return step_expr(_Step(op, get_op(op).check_attrs(dict(attrs)), dtype, dtype))


def step_expr(node: _Step) -> str:
    """The scalar expression (in ``x``) of a unary op; numbers only, from our own table."""
    op = node.op
    isint = np.issubdtype(node.in_dtype, np.integer)
    zero = "0" if isint else "0.0"
    table = {
        "Relu": f"x if x > {zero} else {zero}",
        "LeakyRelu": f"x if x >= 0 else {_f(node, 'alpha') if 'alpha' in node.attrs else '0.01'} * x",
        "Sigmoid": "1.0 / (1.0 + math.exp(-x))",
        "SiLU": "x / (1.0 + math.exp(-x))",
        "HardSwish": "x * min(max(x / 6.0 + 0.5, 0.0), 1.0)",
        "Tanh": "math.tanh(x)",
        "Identity": "x",
        "Exp": "math.exp(x)",
        "Abs": "abs(x)",
        "Neg": "-x",
        "Sqrt": "math.sqrt(x)",
        "Erf": "math.erf(x)",
        "Sign": f"(1 if x > 0 else (-1 if x < 0 else 0)) * {'1' if isint else '1.0'}",
        "Softplus": "math.log1p(math.exp(-abs(x))) + max(x, 0.0)",
        "Mish": "x * math.tanh(math.log1p(math.exp(-abs(x))) + max(x, 0.0))",
    }
    if op in table:
        return table[op]
    if op == "Shrink":
        lam, bias = _f(node, "lambd"), _f(node, "bias")
        return f"x + {bias} if x < -{lam} else (x - {bias} if x > {lam} else 0)"
    if op == "HardSigmoid":
        return f"min(max({_f(node, 'alpha')} * x + {_f(node, 'beta')}, 0.0), 1.0)"
    if op == "Clip":
        e = "x"
        lo, hi = _clip_bound(node, "min"), _clip_bound(node, "max")
        if lo is not None:
            e = f"max({e}, {lo})"
        if hi is not None:
            e = f"min({e}, {hi})"
        return e
    if op == "Elu":
        return f"x if x >= 0 else {_f(node, 'alpha')} * (math.exp(x) - 1.0)"
    if op == "Selu":
        return f"{_f(node, 'gamma')} * (x if x > 0 else {_f(node, 'alpha')} * (math.exp(x) - 1.0))"
    if op == "Gelu":
        if node.attrs["approximate"] == "tanh":
            return "0.5 * x * (1.0 + math.tanh(0.7978845608028654 * (x + 0.044715 * x * x * x)))"
        return "0.5 * x * (1.0 + math.erf(x * 0.7071067811865476))"
    if op == "Cast":
        out = node.out_dtype
        if out == np.bool_:
            return "x != 0"
        if np.issubdtype(out, np.integer) and not isint:
            return "int(x)" if out.itemsize < 8 or out.kind == "i" else "x"
        return "x"
    raise CompileError(f"no unary expression for {op}")


UNARY_OPS = ("Relu", "LeakyRelu", "Sigmoid", "HardSigmoid", "HardSwish", "Tanh", "Identity", "Exp", "Abs",
             "Neg", "Sqrt", "Erf", "Softplus", "Mish", "Sign", "Shrink", "SiLU", "Clip", "Elu", "Selu", "Gelu", "Cast")


@generator(*UNARY_OPS)
def gen_unary(node: Node) -> list[KernelCall]:
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


@generator("Add", "Sub", "Mul", "Div", "Pow", "PRelu", "Sum", "Mean", "Max", "Min")
def gen_nary(node: Node) -> list[KernelCall]:
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
    lines.append(f"{indent}yb[U(y)] = {combine_expr(node, names)}")
    lines.append(f"{indent}y += 1")
    src = "\n".join(lines) + "\n"
    args: list = [*ins, node.outputs[0], *dims]
    for s in strides:
        args.extend(s)
    return [KernelCall(src, args, note(node))]


def epilogue(node: Node, nbase: int, index: str, indent: str) -> tuple[list[str], list[str], list]:
    """Source lines applying ``node.attrs["post"]`` to ``v`` (output element ``index``).

    Returns (lines, extra kernel parameters, extra call arguments) — residual inputs become parameters
    ``r<k>b, r<k>o`` read at the same element index as the output.
    """
    lines: list[str] = []
    params: list[str] = []
    args: list = []
    dt = node.outputs[0].dtype
    for step in node.attrs.get("post", ()):
        if step[0] == "Add":
            k = step[1]
            params.append(f"r{k}b, r{k}o")
            args.append(node.inputs[k])
            lines.append(f"{indent}v = v + r{k}b[U(r{k}o + {index})]")
        else:
            lines.append(f"{indent}x = v")
            lines.append(f"{indent}v = {epilogue_expr(step[0], dict(step[1]), dt)}")
    return lines, params, args
