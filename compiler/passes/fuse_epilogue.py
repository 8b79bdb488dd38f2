"""Epilogue fusion: activations, residual adds and bias adds computed in the producing kernel's store.

Conv / ConvTranspose / Gemm / MatMul absorb, while their output has a single consumer:
* a constant per-output-channel ``Add`` into the bias (before any other epilogue step);
* ``MatMul`` (2-D) + a constant bias ``Add`` becomes a ``Gemm`` with ``C``; at any other rank the per-column
  bias becomes the MatMul's own third input (the GEMM kernels' per-column bias vector), so the activation
  after it (a transformer's GELU) fuses too;
* elementwise activations (Relu, Clip/ReLU6, LeakyRelu, HardSwish, HardSigmoid, Sigmoid, Tanh, Elu,
  Selu, Softplus, Gelu, Mish);
* activations exported as several elementwise nodes on the output: ``x * Sigmoid(x)`` (SiLU, either
  order), ``x * HardSigmoid(x)`` (HardSwish), ``x * Tanh(Softplus(x))`` (Mish), the erf and tanh GELUs;
  the group is recognised by evaluating it on sample points against each candidate's reference, so any
  arrangement of the constants (``Div`` by sqrt 2 or ``Mul`` by its inverse, the 0.5 first or last) fuses;
* an ``Add`` or a ``Mul`` of another tensor of the output's shape (a residual, a gate), and whatever
  activation follows it;
* ``PRelu`` with one constant slope (as a LeakyRelu), or constant slopes per channel (any shape that
  broadcasts to the output): a ``PRelu`` step reading the slopes expanded to the output's shape, like a
  residual (outputs up to ``MAX_SLOPE_BYTES``);
* arithmetic with a one-element constant (``* c``, ``+ c``, ``- c``, ``/ c``) as a ``ScaleShift`` step;
* ``Max`` / ``Min`` with a one-element constant (tf2onnx's ``tf.math.maximum(x, c)``) as a ``Clip`` step.

MaxPool (without indices), AveragePool and the global pools absorb the activations above that follow them.
"""

from __future__ import annotations

import numpy as np

from cnnjit.ir import Graph, Node, Value, get_op
from cnnjit.ir.ops import EpilogueStep

from .manager import Pass

ACTIVATIONS = ("Relu", "Clip", "LeakyRelu", "HardSwish", "HardSigmoid", "Sigmoid", "Tanh", "Elu", "Selu",
               "Softplus", "SiLU", "Gelu", "Mish")
PRODUCERS = ("Conv", "ConvTranspose", "Gemm", "MatMul")
#: the largest output whose PRelu slopes (not one number) are expanded to its shape to fuse: the expanded
#: constant is read like a residual (less traffic than a separate PRelu pass, which reads and writes the output)
MAX_SLOPE_BYTES = 4 << 20
#: producers that take activations only (no bias, residual or scale): the float pools
POOLS = ("MaxPool", "AveragePool", "GlobalAveragePool", "GlobalMaxPool")


def _single_user(graph: Graph, v: Value) -> Node | None:
    if len(v.users) != 1 or v in graph.outputs:
        return None
    return v.users[0]


def _expanded(graph: Graph, c: Value, out: Value) -> Value | None:
    """Constant ``c`` broadcast to ``out``'s type, when it broadcasts and the result is at most
    ``MAX_SLOPE_BYTES``: per-channel PRelu slopes become a residual input (one read in the producer's store
    instead of a separate pass reading and writing the output)."""
    if out.type.size * out.dtype.itemsize > MAX_SLOPE_BYTES:
        return None
    try:
        return graph.const(np.ascontiguousarray(np.broadcast_to(c.const.astype(out.dtype), out.shape)))
    except ValueError:
        return None


def channel_vector(node: Node, c: Value) -> np.ndarray | None:
    """The per-output-channel vector of a constant Add operand, if it is one."""
    y = node.outputs[0].shape
    if node.op in ("Conv", "ConvTranspose"):
        want = (y[1],) + (1,) * (len(y) - 2)
        shape = tuple(c.shape)
        if len(shape) <= len(y) and (shape == want[-len(shape):] if shape else True) or shape == (1,) + want:
            return np.broadcast_to(c.const.reshape(-1) if c.const.size == y[1] else c.const.reshape(()), (y[1],))
        return None
    n = y[-1]
    if c.const.size in (1, n) and (len(c.shape) <= 1 or all(d == 1 for d in c.shape[:-1])):
        return np.broadcast_to(c.const.reshape(-1), (n,))
    return None


#: the activations a group of elementwise nodes is compared with, and their attributes
COMPOSITES: tuple[tuple[str, dict], ...] = (
    ("SiLU", {}), ("HardSwish", {}), ("Mish", {}), ("Gelu", {"approximate": "none"}),
    ("Gelu", {"approximate": "tanh"}))
_SAMPLES = np.concatenate([np.linspace(-9.0, 9.0, 181), [-0.05, 0.013, 0.37, 2.9, -3.1]]).astype(np.float32)
_BINARY = ("Add", "Sub", "Mul", "Div", "Pow")
MAX_GROUP = 12


def _region(graph: Graph, out: Value) -> list[Node]:
    """Nodes computing elementwise functions of ``out`` alone, in graph order: unary elementwise ops and
    binary arithmetic whose other operand is a one-element constant or another such value; at most
    ``MAX_GROUP``."""
    inside: dict[int, Value] = {id(out): out}
    nodes: list[Node] = []
    frontier = [out]
    while frontier and len(nodes) < MAX_GROUP:
        v = frontier.pop(0)
        for u in v.users:
            if u in nodes or len(u.outputs) != 1 or u.outputs[0].type != out.type:
                continue
            ins = [i for i in u.inputs if i is not None]
            od = get_op(u.op)
            ok_unary = len(ins) == 1 and od is not None and od.elementwise and u.op != "Cast"
            ok_binary = u.op in _BINARY and len(ins) == 2 and all(
                id(i) in inside or (i.is_const and i.const.size == 1) for i in ins)
            if (ok_unary or ok_binary) and all(id(i) in inside or i.is_const for i in ins):
                nodes.append(u)
                inside[id(u.outputs[0])] = u.outputs[0]
                frontier.append(u.outputs[0])
    pos = {id(n): i for i, n in enumerate(graph.nodes)}
    return sorted(nodes, key=lambda n: pos[id(n)])


def _ancestors(sink: Node, region: list[Node]) -> list[Node]:
    """``sink`` and the region nodes it depends on, in region order."""
    by_out = {id(n.outputs[0]): n for n in region}
    need, stack = {id(sink)}, [sink]
    while stack:
        for i in stack.pop().inputs:
            p = by_out.get(id(i)) if i is not None else None
            if p is not None and id(p) not in need:
                need.add(id(p))
                stack.append(p)
    return [n for n in region if id(n) in need]


def _evaluate(group: list[Node], out: Value, x: np.ndarray) -> np.ndarray | None:
    vals = {id(out): x}
    with np.errstate(all="ignore"):
        for n in group:
            ins = [vals[id(i)] if id(i) in vals else i.const.reshape(()) for i in n.inputs if i is not None]
            try:
                vals[id(n.outputs[0])] = np.asarray(get_op(n.op).run(ins, dict(n.attrs))[0]).reshape(-1)
            except Exception:  # noqa: BLE001 - an op the samples do not suit is no match
                return None
    return vals[id(group[-1].outputs[0])]


def match_composite(graph: Graph, out: Value) -> tuple[list[Node], EpilogueStep] | None:
    """A group of elementwise nodes that reads ``out`` (all its readers) and computes one of the
    ``COMPOSITES`` of it, checked on sample points against the op's reference; (the group in graph order,
    its output's node last; the epilogue step) or None. Nothing but the last node's output may be read
    outside the group."""
    region = _region(graph, out)
    graph_outputs = {id(v) for v in graph.outputs}
    for sink in region:
        group = _ancestors(sink, region)
        ids = {id(n) for n in group}
        if len(group) < 2 or any(id(u) not in ids for u in out.users):
            continue
        inner = [n.outputs[0] for n in group if n is not sink]
        if any(id(v) in graph_outputs or any(id(u) not in ids for u in v.users) for v in inner):
            continue
        got = _evaluate(group, out, _SAMPLES.astype(out.dtype))
        if got is None or got.shape != _SAMPLES.shape:
            continue
        for op, attrs in COMPOSITES:
            full = get_op(op).check_attrs(dict(attrs))
            want = get_op(op).run([_SAMPLES.astype(np.float64)], full)[0]
            if np.allclose(got, want, rtol=2e-4, atol=2e-5):
                return group, EpilogueStep(op, tuple(sorted(full.items())))
    return None


class FuseEpilogue(Pass):
    name = "fuse_epilogue"
    fusion = True

    def apply(self, graph: Graph) -> None:
        for node in list(graph.nodes):
            if node.op in PRODUCERS and node in graph.nodes:
                while self._absorb_one(graph, node):
                    pass
            elif node.op in POOLS and node in graph.nodes and not node.attrs.get("indices"):
                while self._absorb_activation(graph, node):
                    pass

    @staticmethod
    def _absorb_activation(graph: Graph, node: Node) -> bool:
        """A pool's single consumer that is an activation (``ACTIVATIONS``) on its float output: its step."""
        out = node.outputs[0]
        user = _single_user(graph, out)
        if (user is None or user.op not in ACTIVATIONS or len(user.inputs) != 1
                or not np.issubdtype(out.dtype, np.floating) or user.outputs[0].dtype != out.dtype):
            return False
        attrs = get_op(user.op).check_attrs(dict(user.attrs))
        graph.set_attrs(node, post=tuple(node.attrs.get("post", ())) + (EpilogueStep(user.op, tuple(sorted(
            attrs.items()))),))
        graph.remove_node_keep_output(user, node)
        graph.note_fused(node, user.op)
        return True

    def _absorb_composite(self, graph: Graph, node: Node) -> bool:
        """An activation spelled as several elementwise nodes on the producer's output (which they read
        more than once): ``x * Sigmoid(x)`` in either operand order (SiLU), ``x * HardSigmoid(x)`` with
        alpha 1/6 (HardSwish), ``x * Tanh(Softplus(x))`` (Mish), the erf and tanh GELUs in any arrangement
        of their constants, recognised by value (``match_composite``)."""
        out = node.outputs[0]
        if len(out.users) < 2 or out in graph.outputs:
            return False
        found = match_composite(graph, out)
        if found is None:
            return False
        nodes, step = found
        graph.set_attrs(node, post=tuple(node.attrs.get("post", ())) + (step,))
        graph.remove_node_keep_output(nodes[-1], node)
        graph.remove_nodes(nodes[:-1])
        graph.note_fused(node, step.op)
        return True

    def _absorb_one(self, graph: Graph, node: Node) -> bool:
        out = node.outputs[0]
        if np.issubdtype(out.dtype, np.floating) and self._absorb_composite(graph, node):
            return True
        user = _single_user(graph, out)
        if user is None or user.outputs[0].dtype != out.dtype or not np.issubdtype(out.dtype, np.floating):
            return False
        post = tuple(node.attrs.get("post", ()))
        if user.op in ("Add", "Sum") and len(user.inputs) == 2:
            other = user.inputs[1] if user.inputs[0] is out else user.inputs[0]
            if other is out:
                return False
            if other.is_const and not post and user.outputs[0].shape == out.shape:
                if self._fold_bias(graph, node, other):
                    graph.remove_node_keep_output(user, node)
                    graph.note_fused(node, "Add(bias)")
                    return True
            if self._absorb_residual(graph, node, user, other, "Add", post):
                return True
            return self._absorb_scale_shift(graph, node, user, post)
        if self._absorb_scale_shift(graph, node, user, post) or self._absorb_bound(graph, node, user, post):
            return True
        if user.op == "Mul" and len(user.inputs) == 2:
            other = user.inputs[1] if user.inputs[0] is out else user.inputs[0]
            if other is not out and self._absorb_residual(graph, node, user, other, "Mul", post):
                return True
        slope = user.inputs[1] if user.op == "PRelu" and user.inputs[0] is out else None
        if slope is not None and slope.is_const and slope.const.size == 1:  # one slope: a LeakyRelu
            alpha = float(slope.const.reshape(()))
            graph.set_attrs(node, post=post + (EpilogueStep("LeakyRelu", (("alpha", alpha),)),))
            graph.remove_node_keep_output(user, node)
            graph.note_fused(node, "PRelu")
            return True
        if slope is not None and slope.is_const and (full := _expanded(graph, slope, out)) is not None:
            # per-channel (any broadcast) slopes: expanded to the output's shape, read like a residual
            return self._absorb_residual(graph, node, user, full, "PRelu", post)
        if user.op in ACTIVATIONS and len(user.inputs) == 1:
            attrs = get_op(user.op).check_attrs(dict(user.attrs))
            graph.set_attrs(node, post=post + (EpilogueStep(user.op, tuple(sorted(attrs.items()))),))
            graph.remove_node_keep_output(user, node)
            graph.note_fused(node, user.op)
            return True
        return False

    @staticmethod
    def _absorb_residual(graph: Graph, node: Node, user: Node, other: Value, op: str, post: tuple) -> bool:
        """``y + r`` / ``y * r`` with ``r`` a tensor of the output's type: ``r`` becomes a new last input
        (after the optional bias of Conv / Gemm) and the step an ``Add`` / ``Mul`` residual step."""
        out = node.outputs[0]
        if other.shape != out.shape or other.dtype != out.dtype:
            return False
        k = max(len(node.inputs), 3) if node.op in ("Conv", "ConvTranspose", "Gemm", "MatMul") else len(node.inputs)
        graph.set_input(node, k, other)
        graph.set_attrs(node, post=post + (EpilogueStep(op, value=other),))
        graph.remove_node_keep_output(user, node)
        graph.note_fused(node, op)
        return True

    @staticmethod
    def _absorb_scale_shift(graph: Graph, node: Node, user: Node, post: tuple) -> bool:
        """``y * c``, ``y + c``, ``y - c``, ``c - y``, ``y / c`` with a one-element constant ``c`` (e.g.
        PP-LCNetV3's learnable affine blocks around each activation) as a ``ScaleShift`` step, merged into
        a ``ScaleShift`` just before it."""
        if user.op not in ("Mul", "Add", "Sub", "Div") or len(user.inputs) != 2:
            return False
        out = node.outputs[0]
        first = user.inputs[0] is out
        c = user.inputs[1] if first else user.inputs[0]
        if c is out or not c.is_const or c.const.size != 1 or user.outputs[0].shape != out.shape:
            return False
        v = float(c.const.reshape(()))
        if user.op == "Div" and (not first or v == 0.0):
            return False
        scale, shift = {"Mul": (v, 0.0), "Add": (1.0, v), "Sub": (1.0, -v) if first else (-1.0, v),
                        "Div": (1.0 / v if v else 0.0, 0.0)}[user.op]
        if post and post[-1].op == "ScaleShift":
            a = dict(post[-1].attrs)
            scale, shift = scale * a["scale"], scale * a["shift"] + shift
            post = post[:-1]
        step = EpilogueStep("ScaleShift", (("scale", scale), ("shift", shift)))
        graph.set_attrs(node, post=post + (step,))
        graph.remove_node_keep_output(user, node)
        graph.note_fused(node, user.op)
        return True

    @staticmethod
    def _absorb_bound(graph: Graph, node: Node, user: Node, post: tuple) -> bool:
        """``Max(y, c)`` / ``Min(y, c)`` (either operand order) with a one-element constant ``c``: a
        ``Clip`` step bounding below / above (a separate elementwise pass read and wrote the output)."""
        if user.op not in ("Max", "Min") or len(user.inputs) != 2:
            return False
        out = node.outputs[0]
        c = user.inputs[1] if user.inputs[0] is out else user.inputs[0]
        if c is out or not c.is_const or c.const.size != 1 or user.outputs[0].shape != out.shape:
            return False
        v = float(c.const.reshape(()))
        if np.isnan(v):  # Max / Min with NaN is NaN everywhere: not a bound
            return False
        bounds = (("max", None), ("min", v)) if user.op == "Max" else (("max", v), ("min", None))
        graph.set_attrs(node, post=post + (EpilogueStep("Clip", bounds),))
        graph.remove_node_keep_output(user, node)
        graph.note_fused(node, user.op)
        return True

    @staticmethod
    def _fold_bias(graph: Graph, node: Node, c: Value) -> bool:
        vec = channel_vector(node, c)
        if vec is None:
            return False
        if node.op == "MatMul" and len(node.inputs[0].shape) == 2 and len(node.inputs[1].shape) == 2:
            graph.replace_op(node, "Gemm", {"alpha": 1.0, "beta": 1.0, "transA": 0, "transB": 0, "post": ()})
            graph.set_input(node, 2, graph.const(vec.astype(node.outputs[0].dtype)))
            return True
        if node.op == "MatMul" and min(len(node.inputs[0].shape), len(node.inputs[1].shape)) < 2:
            return False  # a vector operand: no matrix of columns
        b = node.inputs[2] if len(node.inputs) > 2 else None
        if b is not None and not b.is_const:
            return False
        if node.op == "Gemm":
            beta = node.attrs["beta"]
            n = node.outputs[0].shape[1]
            if b is not None and b.const.size not in (1, n):
                return False
            base = np.zeros(n) if b is None else np.broadcast_to(b.const.reshape(-1) * beta, (n,))
            graph.set_attrs(node, beta=1.0)
            new = base + vec
        else:
            base = np.zeros(len(vec)) if b is None else b.const.astype(np.float64)
            new = base + vec
        graph.set_input(node, 2, graph.const(np.asarray(new, node.outputs[0].dtype)))
        return True
