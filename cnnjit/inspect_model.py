"""Looking inside a compilation: the IR after every pass, fused groups, per-layer tables, FLOPs, DOT pictures.

    from cnnjit.inspect_model import trace, layer_rows, to_dot
    t = trace("model.onnx")                 # runs the same pipeline as cnnjit.compile, keeping snapshots
    rows = layer_rows(t)                     # one dict per IR node: op, shapes, params, FLOPs, kernel, fused
    open("g.dot", "w").write(to_dot(t))      # before / after fusion, fused groups as clusters

Used by ``cnnjit inspect``, ``cnnjit graph`` and ``cnnjit profile``. Names from the model are shown
(escaped) but never used as identifiers.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import onnx

from cnnjit.compiler.frontend.loader import load_model
from cnnjit.compiler.frontend.onnx_import import check_supported, value_inputs
from cnnjit.compiler.passes import Pass
from cnnjit.compiler.stages import CompileOptions, Hooks, resolve_shapes, specialize
from cnnjit.ir import Graph, Node, Value, get_op
from cnnjit.ir.errors import InputError
from cnnjit.runtime.program import Program


@dataclass
class Trace:
    """One compilation, observed: IR text after every pass, the graph before fusion and after all passes."""

    name: str
    shapes: dict[str, tuple[int, ...]]
    notes: list[str]
    pipeline: list[str]
    after: list[tuple[str, str]]  # (pass name, IR text after it), in pipeline order
    imported: str  # IR text as imported, before any pass
    before: Graph  # the graph just before the first fusion pass (or the final graph if none runs)
    graph: Graph  # after every pass
    program: Program
    #: IR node id -> schedule call indices (empty for views and in-place nodes); {} if unknown
    calls: dict[int, list[int]] = field(default_factory=dict)
    #: id of a node of ``graph`` -> the nodes of ``before`` that became it (itself included if it survived)
    groups: dict[int, list[Node]] = field(default_factory=dict)
    #: nodes of ``before`` that no fusion group absorbed and that are gone after the passes
    removed: list[Node] = field(default_factory=list)


def trace(model: str | os.PathLike | bytes | onnx.ModelProto, input_shapes: Mapping[str, Sequence[int]] | None = None,
          *, entry: str = "python", **options: Any) -> Trace:
    """Compile ``model`` through the same pipeline as ``cnnjit.compile`` (``compiler.stages.specialize``, with
    ``options`` as its ``CompileOptions``: fuse, passes, disable, threads, sparse_threshold...), keeping the
    IR after every pass and the graph before fusion."""
    proto = load_model(model)
    check_supported(proto)
    shapes, notes = resolve_shapes(proto, input_shapes)
    by_value = value_inputs(proto)
    if by_value:
        raise InputError(f"input(s) {sorted(by_value)} set shapes or attributes of the model; inspecting it needs "
                         "their values, which the command line cannot guess")
    for k in ("passes", "disable", "dump_ir_after", "variants"):
        if options.get(k) is not None:
            options[k] = tuple(options[k].items()) if isinstance(options[k], Mapping) else tuple(options[k])
    opts = CompileOptions(entry=entry, **options)
    seen: dict[str, Any] = {"imported": "", "before": None}
    after: list[tuple[str, str]] = []

    def before_pass(p: Pass, graph: Graph) -> None:
        if p.fusion and seen["before"] is None:
            seen["before"] = snapshot(graph)

    hooks = Hooks(after_import=lambda g: seen.update(imported=str(g)), before_pass=before_pass,
                  after_pass=lambda p, g: after.append((p.name, str(g))))
    spec = specialize(proto, shapes, opts, target=None, hooks=hooks)
    graph = spec.graph
    t = Trace(proto.graph.name or "model", shapes, notes, [p.name for p in opts.pipeline()], after,
              seen["imported"], seen["before"] if seen["before"] is not None else graph, graph, spec.program)
    t.calls = _call_map(graph, spec.program)
    t.groups, t.removed = _groups(t.before, graph)
    return t


def snapshot(graph: Graph) -> Graph:
    """A structural copy of ``graph`` keeping every node and value id (constant arrays are shared, not copied).

    Passes mutate nodes in place; the copy keeps the graph as it was, and equal ids relate the two.
    """
    vals: dict[int, Value] = {}

    def val(v: Value | None) -> Value | None:
        if v is None:
            return None
        c = vals.get(v.id)
        if c is None:
            c = Value.__new__(Value)
            c.id, c.name, c.type, c.const, c.producer, c.users = v.id, v.name, v.type, v.const, None, []
            vals[v.id] = c
        return c

    g = Graph(graph.name)
    g.inputs = [val(v) for v in graph.inputs]
    for n in graph.nodes:
        c = Node.__new__(Node)
        c.id, c.op, c.name = n.id, n.op, n.name
        c.inputs = [val(v) for v in n.inputs]
        c.outputs = [val(v) for v in n.outputs]
        c.attrs = dict(n.attrs)
        c.meta = {k: list(v) if isinstance(v, list) else v for k, v in n.meta.items()}
        for o in c.outputs:
            o.producer = c
        for v in c.inputs:
            if v is not None:
                v.users.append(c)
        g.nodes.append(c)
    g.outputs = [val(v) for v in graph.outputs]
    return g


def _call_map(graph: Graph, program: Program) -> dict[int, list[int]]:
    """Which schedule calls each node produced (read from the calls: each names its node); views and
    in-place nodes (no data moves) get an empty list."""
    out: dict[int, list[int]] = {n.id: [] for n in graph.nodes}
    for i, c in enumerate(program.calls):
        if c.node is not None and c.node.id in out:
            out[c.node.id].append(i)
    return out


def _groups(before: Graph, after: Graph) -> tuple[dict[int, list[Node]], list[Node]]:
    """Attribute every pre-fusion node to the post-fusion node that computes it.

    Fusion passes keep the surviving node and hand it the fused node's output value, so a gone node belongs
    to the node that now produces its output, or (for a node inside a chain) to the owner of its users.
    """
    survivors = {n.id for n in after.nodes}
    producer = {o.id: n.id for n in after.nodes for o in n.outputs}
    memo: dict[int, int | None] = {}

    def owner(n: Node, depth: int = 0) -> int | None:
        if n.id in survivors:
            return n.id
        if n.id in memo:
            return memo[n.id]
        memo[n.id] = None
        found = next((producer[o.id] for o in n.outputs if o.id in producer), None)
        if found is None and depth < 64:
            for o in n.outputs:
                for u in o.users:
                    found = owner(u, depth + 1)
                    if found is not None:
                        break
                if found is not None:
                    break
        memo[n.id] = found
        return found

    groups: dict[int, list[Node]] = {}
    removed: list[Node] = []
    for n in before.nodes:
        o = owner(n)
        if o is None:
            removed.append(n)
        else:
            groups.setdefault(o, []).append(n)
    return groups, removed


# -------------------------------------------------------------------------------------------------------
# FLOPs
# -------------------------------------------------------------------------------------------------------
_ELEMENTWISE_1 = {"Abs", "Add", "Sub", "Mul", "Div", "Max", "Min", "Neg", "Relu", "LeakyRelu", "PRelu", "Clip",
                  "Sign", "Shrink", "Sqrt", "Pow", "Sum", "Mean", "QuantizeLinear", "DequantizeLinear",
                  "HardSigmoid", "HardSwish", "Elu", "Selu", "Sigmoid", "Tanh", "Exp", "Erf", "Gelu", "SiLU",
                  "Mish", "Softplus", "Cast"}


def _prod(shape: Sequence[int]) -> int:
    return int(np.prod(shape, dtype=np.int64)) if len(shape) else 1


def node_flops(node: Node) -> int:
    """Approximate floating-point (or integer) operations of one IR node, fused epilogue included.

    2 x multiply-accumulates for Conv / ConvTranspose / Gemm / MatMul and their quantized forms; window
    size per output for pooling; one per output element for elementwise ops (and per fused epilogue step);
    a few per element for normalisations and softmax; 0 for data movement.
    """
    op = node.op
    ins = node.inputs
    y = node.outputs[0].shape if node.outputs else ()
    ny = _prod(y)
    flops = 0
    if op in ("Conv", "ConvInteger") and ins[1] is not None:
        flops = 2 * ny * _prod(ins[1].shape[1:])
    elif op == "QLinearConv":
        flops = 2 * ny * _prod(ins[3].shape[1:])
    elif op == "ConvTranspose":
        flops = 2 * _prod(ins[0].shape) * _prod(ins[1].shape[1:])
    elif op == "Gemm":
        a = ins[0].shape
        flops = 2 * ny * (a[0] if node.attrs.get("transA") else a[-1])
    elif op in ("MatMul", "MatMulInteger", "QLinearMatMul"):
        flops = 2 * ny * (ins[0].shape[-1] if ins[0].shape else 1)
    elif op in ("MaxPool", "AveragePool"):
        flops = ny * _prod(node.attrs.get("kernel_shape", ()))
    elif op in ("GlobalAveragePool", "GlobalMaxPool", "ReduceMean"):
        flops = _prod(ins[0].shape)
    elif op in ("BatchNormalization", "InstanceNormalization"):
        flops = 2 * ny
    elif op in ("Softmax", "LogSoftmax"):
        flops = 3 * ny
    elif op == "LRN":
        flops = ny * (int(node.attrs.get("size", 1)) + 3)
    elif op in _ELEMENTWISE_1:
        flops = ny
    flops += ny * len(node.attrs.get("post", ()) or ())
    return int(flops)


def param_count(node: Node) -> int:
    """Elements of the node's constant inputs (weights, biases, quantization parameters)."""
    return sum(v.const.size for v in node.inputs if v is not None and v.is_const)


def _shape(v: Any) -> str:
    return "x".join(map(str, v.shape)) if v.shape else "scalar"


def op_label(node: Node) -> str:
    """The op with its fused steps: ``Conv+BatchNormalization+Relu``."""
    return "+".join([node.op, *node.meta.get("fused", [])])


def layer_rows(t: Trace) -> list[dict[str, Any]]:
    """One row per IR node after the passes (see ``cnnjit inspect``)."""
    calls = t.program.calls
    rows = []
    for i, n in enumerate(t.graph.nodes):
        idx = t.calls.get(n.id)
        if get_op(n.op).view:
            kernel = "(view)"
        elif not idx:
            kernel = "(in place)"
        else:
            kernel = ",".join(dict.fromkeys(calls[j].kernel for j in idx))
        members = t.groups.get(n.id, [])
        fused_from = [m for m in members if m.id != n.id] if any(m.id == n.id for m in members) else members
        rows.append({
            "index": i,
            "op": op_label(n),
            "name": n.name,
            "inputs": [_shape(v) for v in n.inputs if v is not None and not v.is_const],
            "outputs": [_shape(v) for v in n.outputs],
            "params": param_count(n),
            "flops": node_flops(n),
            "kernel": kernel,
            "variant": ",".join(dict.fromkeys(calls[j].variant for j in idx or [])),
            "calls": idx or [],
            "fused_from": [{"op": m.op, "name": m.name} for m in fused_from],
        })
    return rows


def call_flops(t: Trace) -> list[int]:
    """FLOPs of every schedule call: a node's FLOPs split evenly over the calls it makes."""
    return [node_flops(c.node) // len(t.calls[c.node.id]) if c.node is not None else 0 for c in t.program.calls]


def call_nodes(t: Trace) -> list[Node | None]:
    """The IR node of every schedule call."""
    return [c.node for c in t.program.calls]


# -------------------------------------------------------------------------------------------------------
# Graphviz DOT
# -------------------------------------------------------------------------------------------------------
def dot_escape(text: str, limit: int = 48) -> str:
    """``text`` made safe inside a double-quoted DOT string: control characters dropped, backslashes and
    quotes escaped (so a model-given name can never end the string or smuggle in DOT escapes), truncated."""
    s = "".join(ch if ch.isprintable() else "?" for ch in str(text))
    if len(s) > limit:
        s = s[: limit - 1] + "\u2026"
    return s.replace("\\", "\\\\").replace('"', '\\"')


def _label(*lines: str) -> str:
    """A DOT label from already-escaped lines."""
    return '"' + "\\n".join(lines) + '"'


def to_dot(t: Trace) -> str:
    """Graphviz DOT text: the graph before fusion (fused groups as clusters) beside the graph after it."""
    out = ["digraph cnnjit {", '  graph [rankdir=TB, fontname="Helvetica", fontsize=11, compound=true, newrank=true];',
           '  node [shape=box, style="rounded,filled", fillcolor="#f4f4f4", fontname="Helvetica", fontsize=10];',
           '  edge [color="#555555", arrowsize=0.6];']
    calls = [c.kernel for c in t.program.calls]

    def emit_graph(g: Graph, prefix: str, title: str, clusters: dict[int, list[Node]] | None) -> None:
        out.append(f"  subgraph cluster_{prefix} {{")
        out.append(f"    label={_label(dot_escape(title, 200))}; style=dashed; color=\"#999999\";")
        for v in g.inputs:
            out.append(f"    {prefix}_v{v.id} [shape=ellipse, fillcolor=\"#dbeafe\", "
                       f"label={_label('input ' + dot_escape(v.name or v.ref()), dot_escape(str(v.type)))}];")
        for i, v in enumerate(g.outputs):
            out.append(f"    {prefix}_out{i} [shape=ellipse, fillcolor=\"#dcfce7\", "
                       f"label={_label('output ' + dot_escape(v.name or v.ref()), dot_escape(str(v.type)))}];")

        def node_stmt(n: Node, indent: str) -> str:
            lines = [dot_escape(op_label(n) if clusters is None else n.op, 80)]
            if n.name:
                lines.append(dot_escape(n.name))
            lines.append(" -> ".join(
                [",".join(_shape(v) for v in n.inputs if v is not None and not v.is_const) or "()",
                 ",".join(_shape(v) for v in n.outputs)]))
            if clusters is None:
                idx = t.calls.get(n.id)
                if idx:
                    lines.append("kernel " + ",".join(dict.fromkeys(calls[j] for j in idx)))
                elif get_op(n.op).view:
                    lines.append("(view: no kernel)")
            fill = "#fde68a" if clusters is None and n.meta.get("fused") else "#f4f4f4"
            if clusters is not None and any(n is m for m in t.removed):
                return f'{indent}{prefix}_n{n.id} [style="rounded,dashed", label={_label(*lines, "(removed)")}];'
            return f'{indent}{prefix}_n{n.id} [fillcolor="{fill}", label={_label(*lines)}];'

        if clusters is None:
            for n in g.nodes:
                out.append(node_stmt(n, "    "))
        else:
            grouped: set[int] = set()
            for owner_id, members in clusters.items():
                if len(members) < 2:
                    continue
                owner_node = next((n for n in t.graph.nodes if n.id == owner_id), None)
                what = op_label(owner_node) if owner_node is not None else "fused"
                idx = t.calls.get(owner_id)
                if idx:
                    what += " -> kernel " + ",".join(dict.fromkeys(calls[j] for j in idx))
                out.append(f"    subgraph cluster_{prefix}_g{owner_id} {{")
                out.append(f'      label={_label("fused: " + dot_escape(what, 80))}; style="rounded,filled"; '
                           'fillcolor="#fef3c7"; color="#d97706";')
                for m in members:
                    out.append(node_stmt(m, "      "))
                    grouped.add(m.id)
                out.append("    }")
            for n in g.nodes:
                if n.id not in grouped:
                    out.append(node_stmt(n, "    "))
        out.append("  }")
        for n in g.nodes:
            for v in n.inputs:
                if v is None or v.is_const:
                    continue
                src = f"{prefix}_n{v.producer.id}" if v.producer is not None else f"{prefix}_v{v.id}"
                out.append(f"  {src} -> {prefix}_n{n.id};")
        for i, v in enumerate(g.outputs):
            if v.is_const:
                continue
            src = f"{prefix}_n{v.producer.id}" if v.producer is not None else f"{prefix}_v{v.id}"
            out.append(f"  {src} -> {prefix}_out{i};")

    n_before, n_after = len(t.before.nodes), len(t.graph.nodes)
    emit_graph(t.before, "before", f"before fusion: {n_before} nodes", t.groups)
    emit_graph(t.graph, "after", f"after fusion: {n_after} nodes, {len(calls)} kernel calls, "
               f"arena {t.program.arena_bytes} B", None)
    out.append("}")
    return "\n".join(out) + "\n"


__all__ = ["Trace", "trace", "snapshot", "resolve_shapes", "layer_rows", "node_flops", "param_count", "op_label",
           "call_flops", "call_nodes", "to_dot", "dot_escape"]
