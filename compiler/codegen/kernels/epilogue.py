"""The fused epilogue, once: scalar and vector forms of every activation and residual Add a producer
(Conv, Gemm, MatMul) applies to its result before the store (the IR node's ``post`` steps), and the
integer kernels' output stage (int32 store, requantisation).

* ``step_expr`` / ``unary_expr``: the scalar expression (in ``x``) of every elementwise op; the unary
  kernels and the epilogues share it.
* ``scalar_lines``: a node's steps as statements on ``v`` (the scalar kernels' epilogue loop, and the
  SIMD kernels' fallback for activations without a vector form).
* ``vector_expr`` / ``vector_lines``: the vector form of every activation (``simd`` intrinsics, the
  transcendental ones from ``simd_math``) and the steps on a vector accumulator (residual Adds too), or a
  refusal; ``Epilogue`` bundles both forms for one SIMD kernel.
* ``clamp_code``: the steps as the sparse Gemm's run-time clamp (none / Relu / Clip).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

import numpy as np

from cnnjit.ir import Node, Value, get_op
from cnnjit.ir.errors import CompileError
from cnnjit.ir.ops import residual_positions

from ..kernel import flit, form, ilit
from .template import Template


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
    attrs = get_op(node.op).check_attrs(dict(node.attrs))
    return step_expr(_Step(node.op, attrs, node.inputs[0].dtype, node.outputs[0].dtype))


def activation_expr(op: str, attrs: dict, dtype: np.dtype) -> str:
    """The expression (in ``x``) of an epilogue activation step."""
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
    if op == "ScaleShift":
        return f"x * {_f(node, 'scale')} + {_f(node, 'shift')}"
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


# -- the node's steps ------------------------------------------------------------------------------------
def _steps(node: Node) -> list[tuple[str, dict, int | None]]:
    """(op, attrs, residual input index or None) of each ``post`` step, in order."""
    post = node.attrs.get("post", ())
    ks = iter(residual_positions(node.inputs, post))
    out: list[tuple[str, dict, int | None]] = []
    for step in post:
        if step.residual:
            k = next(ks)
            if node.inputs[k] is not step.value:
                raise CompileError(f"{node.describe()}: the epilogue's residual is not its input {k}")
            out.append((step.op, {}, k))
        else:
            out.append((step.op, dict(step.attrs), None))
    return out


def residual_operands(node: Node) -> tuple[list[str], list[Value]]:
    """Kernel parameters (``r<k>b, r<k>o``, ``k`` the input index) and call arguments for the residual
    inputs of ``node``'s fused epilogue."""
    ks = [k for _, _, k in _steps(node) if k is not None]
    return [f"r{k}b, r{k}o" for k in ks], [node.inputs[k] for k in ks]


def residual_args(node: Node) -> dict[str, Value]:
    """The residual inputs by kernel argument name (``r<k>``, see ``template.bind``)."""
    return {f"r{k}": node.inputs[k] for _, _, k in _steps(node) if k is not None}


def has_residual(node: Node) -> bool:
    return any(k is not None for _, _, k in _steps(node))


def scalar_lines(node: Node, index: str, indent: str) -> tuple[list[str], list[str], list]:
    """Source lines applying the node's steps to ``v`` (output element ``index``), with the extra kernel
    parameters and call arguments: a residual input ``k`` is read as ``r<k>b[U(r<k>o + index)]``."""
    lines: list[str] = []
    dt = node.outputs[0].dtype
    for op, attrs, k in _steps(node):
        if k is not None:
            r = f"r{k}b[U(r{k}o + {index})]"
            lines.append(f"{indent}v = v + {r}" if op == "Add" else f"{indent}v = v * {r}" if op == "Mul"
                         else f"{indent}v = v if v >= 0 else v * {r}")
        else:
            lines.append(f"{indent}x = v")
            lines.append(f"{indent}v = {activation_expr(op, attrs, dt)}")
    params, args = residual_operands(node)
    return lines, params, args


#: Tanh's vector form: ``vtanhr``, the rational fit onnxruntime's MLAS, Eigen and cnnjit's recurrent kernels
#: use (3 ulp; AVX2 alone in a loop 0.97 -> 0.39 ns per element against ``vtanh``'s exp form, 2 ulp); the form
#: ``TANH_BEFORE`` calls the earlier ``vtanh`` instead (``benchmarks/small_ops.py``'s "before")
TANH = "vtanhr"
TANH_BEFORE = form("tanh_vtanh", "Tanh's vector form vtanh (the exp form), not the rational vtanhr",
                   swap=(TANH, "vtanh"))
_VEC_CALLS = {"Sigmoid": "vsigmoid", "Tanh": TANH, "SiLU": "vsilu", "Softplus": "vsoftplus", "Mish": "vmish",
              "Exp": "vexp", "Erf": "verf"}


#: epilogue steps whose float attributes a SIMD kernel takes as arguments rather than as literals in its
#: source: PP-LCNetV3's learnable affine blocks put a ScaleShift with other constants around every activation,
#: which made each layer's kernel a source of its own (one cold compile each) where layers of one shape now
#: share one. Their vector form only (``vector_lines``); a scalar fallback keeps the literals.
RUNTIME_ATTRS: dict[str, tuple[str, ...]] = {"ScaleShift": ("scale", "shift")}


class _Param(str):
    """A kernel parameter's name standing for an attribute's value in ``vector_expr``."""


def attr_params(node: Node) -> dict[int, dict[str, str]]:
    """Per step index of ``node``'s epilogue, the parameter name of each of its ``RUNTIME_ATTRS``."""
    return {i: {k: f"e{i}_{k}" for k in RUNTIME_ATTRS[op]} for i, (op, _, res) in enumerate(_steps(node))
            if res is None and op in RUNTIME_ATTRS}


def vector_expr(op: str, a: dict, w: int, x: str) -> str | None:
    """The vector expression of activation ``op`` (attributes ``a``, complete) on the ``w``-lane vector
    ``x`` (a name: it may appear more than once), from the ``simd`` intrinsics; None if it has none."""
    def b(v: float) -> str:
        return f"vbcast{w}({v if isinstance(v, _Param) else flit(v)})"

    if op in _VEC_CALLS:
        return f"{_VEC_CALLS[op]}{w}({x})"
    if op == "Relu":
        return f"vmax{w}({x}, vzero{w}())"
    if op == "Identity":
        return x
    if op == "Neg":
        return f"vsub{w}(vzero{w}(), {x})"
    if op == "Abs":
        return f"vmax{w}({x}, vsub{w}(vzero{w}(), {x}))"
    if op == "Clip":
        e = x
        if a.get("min") is not None:
            e = f"vmax{w}({e}, {b(a['min'])})"
        if a.get("max") is not None:
            e = f"vmin{w}({e}, {b(a['max'])})"
        return e
    if op == "LeakyRelu":
        alpha = a.get("alpha", 0.01)
        if 0.0 <= alpha <= 1.0:  # one max: alpha * x is the smaller side exactly when x < 0
            return f"vmax{w}({x}, vmul{w}({x}, {b(alpha)}))"
        return f"vprelu{w}({x}, {b(alpha)})"
    if op in ("HardSigmoid", "HardSwish"):
        alpha, beta = (a["alpha"], a["beta"]) if op == "HardSigmoid" else (1.0 / 6.0, 0.5)
        e = f"vmin{w}(vmax{w}(vfma{w}({x}, {b(alpha)}, {b(beta)}), vzero{w}()), {b(1.0)})"
        return e if op == "HardSigmoid" else f"vmul{w}({x}, {e})"
    if op == "Gelu":
        return f"{'vgelut' if a.get('approximate') == 'tanh' else 'vgelu'}{w}({x})"
    if op == "ScaleShift":
        return f"vfma{w}({x}, {b(a['scale'])}, {b(a['shift'])})"
    if op == "Elu":
        return f"velu{w}({x}, {flit(a['alpha'])})"
    if op == "Selu":
        return f"vselu{w}({x}, {flit(a['alpha'])}, {flit(a['gamma'])})"
    return None


#: ``scale * HardSwish(x) + shift`` as one step of four operations (``hardswish_scaleshift``); a benchmark's
#: "before" sets it False
FOLD_HARDSWISH_SCALE = True


def hardswish_scaleshift(scale: float | str, shift: float | str, w: int, x: str) -> str:
    """``scale * HardSwish(x) + shift`` (PP-LCNetV3's learnable affine after every HardSwish) in four vector
    operations instead of five: ``fma(x, clamp(fma(x, scale / 6, scale / 2), min(scale, 0), max(scale, 0)),
    shift)``, the scale taken into the clamp (``scale * clamp(u, 0, 1) = clamp(scale * u, ..)`` with the
    bounds swapped for a negative scale). The clamps are compare-selects (one ``maxps`` / ``minps`` each: a
    NaN ``x`` gives a bound there, and NaN from the last FMA, as HardSwish's ``x * ...`` does). ``scale``,
    ``shift``: numbers, or the names of kernel parameters (``RUNTIME_ATTRS``)."""
    def b(e: str) -> str:
        return f"vbcast{w}({e})"

    if isinstance(scale, _Param):
        s6, s2, lo, hi = f"{scale} * {flit(1.0 / 6.0)}", f"{scale} * 0.5", f"min({scale}, 0.0)", f"max({scale}, 0.0)"
    else:
        s6, s2, lo, hi = (flit(v) for v in (scale / 6.0, scale * 0.5, min(scale, 0.0), max(scale, 0.0)))
    t = shift if isinstance(shift, _Param) else flit(shift)
    u = f"vfma{w}({x}, {b(s6)}, {b(s2)})"
    return f"vfma{w}({x}, vminf{w}(vmaxf{w}({u}, {b(lo)}), {b(hi)}), {b(t)})"


_VEC_RESIDUAL = {"Add": "vadd", "Mul": "vmul", "PRelu": "vprelu"}


def vector_lines(node: Node, acc: str, idx: str, w: int, masked: bool, cnt: str = "cnt",
                 residual_load: Callable[[int], str] | None = None,
                 params: Mapping[int, Mapping[str, str]] | None = None) -> tuple[list[str], bool]:
    """Lines applying the steps to vector ``acc`` (element index ``idx``; with ``masked``, only the first
    ``cnt`` lanes are live); False if not all steps fit in registers. ``residual_load(k)`` is the source
    loading residual input ``k`` (default: contiguous lanes at ``idx``); ``params`` (``attr_params``) names
    the kernel parameters that stand for attributes."""
    lines = []
    steps = _steps(node)
    skip = False
    for i, (op, a, k) in enumerate(steps):
        if skip:
            skip = False
            continue
        if (FOLD_HARDSWISH_SCALE and op == "HardSwish" and i + 1 < len(steps) and steps[i + 1][0] == "ScaleShift"
                and steps[i + 1][2] is None):
            nxt = get_op("ScaleShift").check_attrs(dict(steps[i + 1][1]))
            nxt.update({name: _Param(p) for name, p in (params or {}).get(i + 1, {}).items()})
            lines.append(f"{acc} = {hardswish_scaleshift(nxt['scale'], nxt['shift'], w, acc)}")
            skip = True
            continue
        if k is not None:
            if residual_load is not None:
                load = residual_load(k)
            elif masked:
                load = f"vloadn{w}(r{k}b, r{k}o + {idx}, {cnt})"
            else:
                load = f"vload{w}(r{k}b, r{k}o + {idx})"
            lines.append(f"{acc} = {_VEC_RESIDUAL[op]}{w}({acc}, {load})")
            continue
        attrs = get_op(op).check_attrs(dict(a))
        attrs.update({name: _Param(p) for name, p in (params or {}).get(i, {}).items()})
        e = vector_expr(op, attrs, w, acc)
        if e is None:
            return [], False
        lines.append(f"{acc} = {e}")
    return lines, True


def store_loop(ind: str, q: str, lines: list[str]) -> list[str]:
    """``scalar_lines`` (on ``v``) applied to the stored output element ``yb[yo + q]``, ``q`` an index
    expression; ``ind`` indents them."""
    return [f"{ind}q = {q}", f"{ind}v = yb[U(yo + q)]", *[f"{ind}{ln.strip()}" for ln in lines],
            f"{ind}yb[U(yo + q)] = v"]


class Epilogue:
    """A node's steps for one SIMD kernel: in registers before the store when they all have a vector
    form, else over the stored elements (``after``). In registers, the ``RUNTIME_ATTRS`` are kernel
    arguments (``params`` / ``args`` after the residual ones) unless ``attr_args`` is False (a kernel whose
    caller passes no epilogue arguments)."""

    def __init__(self, node: Node, w: int, masked: bool,
                 residual_load: Callable[[int], str] | None = None, attr_args: bool = True):
        self.node, self.residual_load = node, residual_load
        self.params, self.args = residual_operands(node)
        self.attr_params = attr_params(node) if attr_args else {}
        self.in_registers = vector_lines(node, "a", "0", w, masked, residual_load=residual_load,
                                         params=self.attr_params)[1]
        if not self.in_registers:
            self.attr_params = {}
        steps = _steps(node)
        for i, names in self.attr_params.items():
            self.params += names.values()
            self.args += [float(steps[i][1][k]) for k in names]
        self.scalar, _, _ = scalar_lines(node, "q", "")

    def signature(self) -> str:
        """The residual (and attribute) parameters, to append to the kernel's parameter list."""
        return "".join(", " + p for p in self.params)

    def vector(self, ind: str, acc: str, idx: str, w: int, masked: bool) -> list[str]:
        """The in-register lines for accumulator ``acc`` (none when the steps run after the store)."""
        if not self.in_registers:
            return []
        return [ind + ln for ln in vector_lines(self.node, acc, idx, w, masked, residual_load=self.residual_load,
                                                params=self.attr_params)[0]]

    def after(self, ind: str, loops: list[str], q: str) -> list[str]:
        """When the steps do not fit in registers: ``loops`` (header lines, each indented one level more
        than the last, starting at ``ind``) around the scalar steps on ``yb[yo + q]``."""
        if self.in_registers or not self.scalar:
            return []
        out = [ind + "    " * i + ln for i, ln in enumerate(loops)]
        return out + store_loop(ind + "    " * len(loops), q, self.scalar)


def channel_stores(ind: str, accs: list[str], first: str, lanes: int) -> list[str]:
    """Stores of the ``lanes``-channel vectors ``accs`` of consecutive output pixels (pixel ``j`` at element
    ``first + j`` of ``yb[yo:]``, lane ``i`` in channel plane ``i``, ``P`` apart): four pixels at a time as
    4-element rows (``vscatter4t``: in-register transposes and one 16-byte store per channel), the rest one
    strided store each (AVX2 has no scatter: a lane extract and a scalar store per element). Whole vectors
    only. AVX2, interleaved, the tile's share of a layer's time: ResNet-8's 16->32 3x3 stride 2 -14%."""
    quads = len(accs) // 4 * 4
    out = [f"{ind}vscatter4t{lanes}(yb, yo + {first} + {j}, P, {', '.join(accs[j:j + 4])})"
           for j in range(0, quads, 4)]
    return out + [f"{ind}vscatter{lanes}(yb, yo + {first} + {j}, P, {accs[j]})" for j in range(quads, len(accs))]


def with_epilogue(template: Template, node: Node, index: str, indent: str, count: str,
                  at: str, **slots: str) -> tuple[str, dict[str, Value]]:
    """Fill a scalar kernel template's ``PARAMS`` / ``EPILOGUE`` slots from the node's steps: a loop of
    ``count`` elements ``i`` over the stored output ``yb[U(at)]`` (``index``: the element's offset from
    ``yo``), at ``indent``. Returns the source and the residual arguments by name."""
    lines, params, _ = scalar_lines(node, index, indent + "    ")
    if not lines:
        return template.fill(PARAMS="", EPILOGUE="", **slots), {}
    loop = [f"{indent}for i in range({count}):", f"{indent}    v = yb[U({at})]", *lines,
            f"{indent}    yb[U({at})] = v"]
    return template.fill(PARAMS="".join(", " + p for p in params), EPILOGUE="\n".join(loop) + "\n",
                         **slots), residual_args(node)


def after_kernel(src: str, node: Node, count: str) -> str:
    """Kernel source ``src`` (one function writing ``yb[yo:]``) with the node's steps (activations only: no
    residual) applied afterwards to its ``count`` output elements, a second pass over the output: the
    scalar pooling kernels' epilogue."""
    lines, params, _ = scalar_lines(node, "i", " " * 8)
    if params:
        raise CompileError(f"{node.describe()}: a residual epilogue step on a kernel without one")
    if not lines:
        return src
    return src.rstrip("\n") + "\n" + "\n".join([f"    for i in range({count}):", "        v = yb[U(yo + i)]",
                                                 *lines, "        yb[U(yo + i)] = v"]) + "\n"


def clamp_code(node: Node) -> tuple[int, float, float] | None:
    """The steps as a run-time clamp ``(act, lo, hi)``: act 0 none, 1 Relu (``max(s, lo)``), 2 Clip
    (``min(max(s, lo), hi)``); None if the steps are anything else."""
    steps = _steps(node)
    if len(steps) > 1 or any(op not in ("Relu", "Clip") for op, _, _ in steps):
        return None
    if not steps:
        return 0, 0.0, 0.0
    op, c, _ = steps[0]
    if op == "Relu":
        return 1, 0.0, 0.0
    return (2, float(c.get("min") if c.get("min") is not None else -np.inf),
            float(c.get("max") if c.get("max") is not None else np.inf))


def clamp_lines(ind: str, s: str) -> list[str]:
    """Kernel lines applying ``clamp_code``'s run-time ``act, lo, hi`` to ``s``."""
    return [f"{ind}if act == 1:", f"{ind}    {s} = max({s}, lo)", f"{ind}elif act == 2:",
            f"{ind}    {s} = min(max({s}, lo), hi)"]


# -- integer kernels' output stage -----------------------------------------------------------------------
def int32_store(ind: str) -> str:
    """ConvInteger / MatMulInteger: the exact accumulator wrapped to int32."""
    return f"{ind}yb[y] = np.int32(acc)"


def requantize(ind: str, acc32: str) -> str:
    """QLinear*: ``round_half_even(float32(acc32) * mult) + yz`` saturated to ``[lo, hi]``, every float
    step rounded to float32 as the IR reference does (``mult``, ``yz``, ``lo``, ``hi`` in scope)."""
    return "\n".join(ind + ln for ln in [
        f"v = np.float64(np.rint(np.float32(np.float32({acc32}) * mult))) + yz",
        "v = min(max(v, lo), hi)",
        "yb[y] = np.int64(v)"])
