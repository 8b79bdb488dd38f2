"""Looking inside a compilation: the IR after every pass, fused groups, per-layer tables, FLOPs, DOT pictures.

    from cnnjit.inspect_model import trace, layer_rows, to_dot
    t = trace("model.onnx")                 # runs the same pipeline as cnnjit.compile, keeping snapshots
    rows = layer_rows(t)                     # one dict per IR node: op, shapes, params, FLOPs, kernel, fused
    open("g.dot", "w").write(to_dot(t))      # after the passes; view="both": before fusion beside it

Used by ``cnnjit inspect``, ``cnnjit graph`` and ``cnnjit profile``. Names from the model are shown
(escaped) but never used as identifiers.
"""

from __future__ import annotations

import math
import os
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from cnnjit.compiler.frontend.loader import load_model
from cnnjit.compiler.frontend.onnx_import import check_supported, value_inputs
from cnnjit.compiler.passes import Pass
from cnnjit.compiler.stages import CompileOptions, Hooks, resolve_shapes, specialize
from cnnjit.ir import Graph, Node, Value, get_op
from cnnjit.ir.errors import InputError
from cnnjit.ir.ops.fused import BLOCK_INPUTS, block_input, has_expand
from cnnjit.runtime.program import Program

from .flops import node_bytes, node_flops

if TYPE_CHECKING:  # a type in signatures only: inspect, graph and profile never import the onnx package
    import onnx


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
# FLOPs (node_flops: cnnjit/flops.py)
# -------------------------------------------------------------------------------------------------------
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


def call_bytes(t: Trace) -> list[int]:
    """Bytes every schedule call must move (``flops.node_bytes``), split like ``call_flops``."""
    return [node_bytes(c.node) // len(t.calls[c.node.id]) if c.node is not None else 0 for c in t.program.calls]


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


#: what ``to_dot`` can draw: the graph after the passes, or before fusion (groups as clusters) beside it
DOT_VIEWS = ("after", "both")
DOT_RANKDIRS = ("TB", "LR")


def name_line(node: Node) -> str:
    """The node's name for a picture, or "" when it only repeats the op (``conv_12`` on a Conv; a trailing
    ``/Conv`` path segment, as exporters write, is dropped and the rest kept)."""
    segs = str(node.name or "").split("/")
    if re.sub(r"[\W_\d]+", "", segs[-1]).lower() == node.op.lower():
        segs = segs[:-1]
    return "/".join(segs).strip("/")


def _is_conv(n: Node, depthwise: bool) -> bool:
    """A 2-D Conv that is 1x1 with one group (``depthwise`` False) or grouped per channel (True)."""
    if n.op != "Conv" or len(n.inputs) < 2 or n.inputs[1] is None or len(n.outputs) != 1:
        return False
    w = n.inputs[1].shape
    group = int(n.attrs.get("group", 1))
    if depthwise:
        return len(w) == 4 and group > 1 and w[0] == group and w[1] == 1
    return len(w) == 4 and group == 1 and tuple(w[2:]) == (1, 1)


def _sole_user(n: Node) -> Node | None:
    users = n.outputs[0].users if len(n.outputs) == 1 else []
    return users[0] if len(users) == 1 else None


def find_blocks(g: Graph) -> list[list[Node]]:
    """Inverted-residual / depthwise-separable blocks of ``g``: [expand 1x1 ->] depthwise -> project 1x1,
    each link the sole use of the previous output (a residual Add fused into the projection, or as the
    projection's sole user, joins the block). Each block is listed in graph order."""
    blocks: list[list[Node]] = []
    taken: set[int] = set()
    for n in g.nodes:
        if n.id in taken:
            continue
        chain = [n]
        if _is_conv(n, depthwise=False):
            dw = _sole_user(n)
            if dw is None or not _is_conv(dw, depthwise=True):
                continue
            chain.append(dw)
        elif not _is_conv(n, depthwise=True):
            continue
        proj = _sole_user(chain[-1])
        if proj is None or not _is_conv(proj, depthwise=False) or proj.inputs[0] is not chain[-1].outputs[0]:
            continue
        chain.append(proj)
        add = _sole_user(proj)
        if add is not None and add.op == "Add" and chain[0].inputs[0] in add.inputs:
            chain.append(add)
        blocks.append(chain)
        taken.update(m.id for m in chain)
    return blocks


def _residual(block: Sequence[Node]) -> bool:
    x = block[0].inputs[0]
    return block[-1].op == "Add" or any(v is x for v in block[-1].inputs[1:])


def _io_name(kind: str, v: Value) -> str:
    """``input x`` for a graph input named x; just the name when it already says it is an input/output."""
    name = v.name or v.ref()
    return dot_escape(name if name.lower().startswith(kind) else f"{kind} {name}")


def _kernels(t: Trace, nodes: Sequence[Node]) -> str:
    names = [t.program.calls[j].kernel for n in nodes for j in t.calls.get(n.id, [])]
    return ",".join(dict.fromkeys(names))


def _after_boxes(t: Trace, prefix: str, collapse: bool) -> tuple[list[str], list[str], dict[int, str]]:
    """The graph after the passes as DOT: (box names in graph order, statements, IR node id -> box name).
    One box per node (a fused group is one node); with ``collapse``, one per block of ``find_blocks``."""
    box: dict[int, str] = {}
    order: list[str] = []
    stmts: list[str] = []
    g = t.graph
    for v in g.inputs:
        name = f"{prefix}_v{v.id}"
        order.append(name)
        stmts.append(f'    {name} [shape=ellipse, fillcolor="#dbeafe", '
                     f"label={_label(_io_name('input', v), dot_escape(str(v.type)))}];")
    block_of = {b[0].id: b for b in find_blocks(g)} if collapse else {}
    inside: set[int] = {m.id for b in block_of.values() for m in b[1:]}
    for n in g.nodes:
        if n.id in inside:
            continue
        name = f"{prefix}_n{n.id}"
        members = block_of.get(n.id, [n])
        for m in members:
            box[m.id] = name
        order.append(name)
        kern = _kernels(t, members)
        if collapse and n.op == "InvertedResidual":  # a block fused into one node (``fuse_blocks``)
            x, w2, w3 = (block_input(n, name) for name in ("x", "w2", "w3"))
            k = "x".join(map(str, n.attrs["kernel_shape"]))
            chans = [x.shape[1], *([w2.shape[0]] if has_expand(n) else []), w3.shape[0]]
            what = "inverted residual" if has_expand(n) else "depthwise separable"  # as the unfused pair's box
            lines = [what + (" +res" if len(n.inputs) > BLOCK_INPUTS else ""),
                     "\u2192".join(map(str, chans)) + f" ch, dw {k}/{max(n.attrs['strides'])}"]
            fill = "#c7d2fe"
        elif len(members) > 1:
            chans = "\u2192".join([str(members[0].inputs[0].shape[1])]
                                  + [str(m.outputs[0].shape[1]) for m in members
                                     if m.op == "Conv" and not _is_conv(m, depthwise=True)])
            dw = next(m for m in members if _is_conv(m, depthwise=True))
            k = "x".join(map(str, dw.attrs.get("kernel_shape", ())))
            stride = max(dw.attrs.get("strides", (1,)) or (1,))
            what = ("inverted residual" if len(members) > 2 and _is_conv(members[0], depthwise=False)
                    else "depthwise separable")
            lines = [what + (" +res" if _residual(members) else ""), f"{chans} ch, dw {k}/{stride}"]
            fill = "#c7d2fe"
        else:
            lines = [dot_escape(op_label(n), 80)]
            if name_line(n):
                lines.append(dot_escape(name_line(n)))
            fill = "#fde68a" if n.meta.get("fused") else "#f4f4f4"
        lines.append(dot_escape(",".join(_shape(v) for v in members[-1].outputs)))
        if kern:
            lines.append(dot_escape("kernel " + kern, 60))
        else:  # no call of its own, as ``layer_rows`` says
            lines.append("(view)" if get_op(n.op).view else "(in place)")
        stmts.append(f'    {name} [fillcolor="{fill}", label={_label(*lines)}];')
    for i, v in enumerate(g.outputs):
        name = f"{prefix}_out{i}"
        order.append(name)
        stmts.append(f'    {name} [shape=ellipse, fillcolor="#dcfce7", '
                     f"label={_label(_io_name('output', v), dot_escape(str(v.type)))}];")
    return order, stmts, box


def _after_edges(t: Trace, prefix: str, box: dict[int, str]) -> list[tuple[str, str]]:
    """Edges between the boxes of ``_after_boxes`` (edges inside a collapsed block dropped, repeats merged)."""
    def src(v: Value) -> str:
        return box[v.producer.id] if v.producer is not None else f"{prefix}_v{v.id}"

    edges = [(src(v), box[n.id]) for n in t.graph.nodes for v in n.inputs if v is not None and not v.is_const]
    edges += [(src(v), f"{prefix}_out{i}") for i, v in enumerate(t.graph.outputs) if not v.is_const]
    return [e for e in dict.fromkeys(edges) if e[0] != e[1]]


def _wrap(order: list[str], edges: list[tuple[str, str]], per: int) -> list[str]:
    """Statements that lay ``order`` out as columns of ``per`` boxes (rows of them under rankdir=LR): row r of
    every column shares a rank, invisible edges keep each column in order and the columns side by side,
    and edges between columns do not constrain the ranks."""
    cols = [order[i:i + per] for i in range(0, len(order), per)]
    col = {name: j for j, c in enumerate(cols) for name in c}
    out = [f"  {a} -> {b}" + (" [constraint=false];" if col[a] != col[b] else ";") for a, b in edges]
    if len(cols) < 2:
        return out
    for c in cols:
        out += [f"  {a} -> {b} [style=invis];" for a, b in zip(c, c[1:])]
    for r in range(per):
        row = [c[r] for c in cols if r < len(c)]
        out.append("  {rank=same; " + "; ".join(row) + ";}")
    out += [f"  {a[0]} -> {b[0]} [style=invis];" for a, b in zip(cols, cols[1:])]
    return out


def auto_wrap(n: int, rankdir: str) -> int:
    """Boxes per column (per row under LR) that give roughly a portrait page (TB) or a landscape screen (LR),
    from typical box sizes: about 2.7 x 0.9 inches per box with spacing under TB, 2.6 x 0.8 under LR."""
    return max(4, math.ceil(math.sqrt((4.2 if rankdir == "TB" else 0.5) * n)))


def to_dot(t: Trace, view: str = "after", rankdir: str = "TB", collapse: bool = False, wrap: int | None = None,
           size: tuple[float, float] | None = None) -> str:
    """Graphviz DOT text of a compilation.

    ``view="after"``: the graph after every pass, one box per fused group; long graphs wrap into columns of
    ``wrap`` boxes (None: ``auto_wrap``; 0: one column) so the picture keeps a page-like shape.
    ``view="both"``: the graph before fusion (fused groups as clusters) beside the graph after it, each
    after-box on the rank of the first node it came from. ``rankdir``: "TB" (top to bottom) or "LR".
    ``collapse``: draw each inverted-residual / depthwise-separable block (``find_blocks``) as one box.
    ``size``: (width, height) in inches the picture is shrunk to fit (Graphviz ``size``).
    """
    if view not in DOT_VIEWS or rankdir not in DOT_RANKDIRS:
        raise ValueError(f"view must be one of {DOT_VIEWS} and rankdir one of {DOT_RANKDIRS}")
    fit = f', size="{size[0]:g},{size[1]:g}"' if size else ""
    out = ["digraph cnnjit {",
           f'  graph [rankdir={rankdir}, fontname="Helvetica", fontsize=11, compound=true, newrank=true, '
           f'nodesep=0.25, ranksep=0.3{fit}];',
           '  node [shape=box, style="rounded,filled", fillcolor="#f4f4f4", fontname="Helvetica", fontsize=10];',
           '  edge [color="#555555", arrowsize=0.6];']
    n_calls = len(t.program.calls)
    title = f"after fusion: {len(t.graph.nodes)} nodes, {n_calls} kernel calls, arena {t.program.arena_bytes} B"
    order, stmts, box = _after_boxes(t, "after", collapse)
    edges = _after_edges(t, "after", box)
    if view == "after":
        out.append(f"  label={_label(dot_escape(title, 200))}; labelloc=t;")
        out += stmts
        per = auto_wrap(len(order), rankdir) if wrap is None else (wrap or len(order))
        out += _wrap(order, edges, max(1, per))
    else:
        _before_dot(t, out)
        out.append("  subgraph cluster_after {")
        out.append(f"    label={_label(dot_escape(title, 200))}; style=dashed; color=\"#999999\";")
        out += stmts
        out.append("  }")
        out += [f"  {a} -> {b};" for a, b in edges]
        position = {n.id: i for i, n in enumerate(t.before.nodes)}
        aligned: set[str] = set()
        for n in t.graph.nodes:
            first = min((m for m in t.groups.get(n.id, []) if m.id in position),
                        key=lambda m: position[m.id], default=None)
            if first is not None and box[n.id] not in aligned:
                aligned.add(box[n.id])
                out.append(f"  {{rank=same; before_n{first.id}; {box[n.id]};}}")
    out.append("}")
    return "\n".join(out) + "\n"


def _before_dot(t: Trace, out: list[str]) -> None:
    """Append the graph before fusion to ``out``: fused groups as clusters (labelled beside their first node,
    away from the edges), nodes by op, with their name only where it says more than the op."""
    g = t.before
    removed = {n.id for n in t.removed}
    out.append("  subgraph cluster_before {")
    out.append(f"    label={_label(dot_escape(f'before fusion: {len(g.nodes)} nodes', 200))}; style=dashed; "
               'color="#999999";')
    for v in g.inputs:
        out.append(f"    before_v{v.id} [shape=ellipse, fillcolor=\"#dbeafe\", "
                   f"label={_label(_io_name('input', v), dot_escape(str(v.type)))}];")
    for i, v in enumerate(g.outputs):
        out.append(f"    before_out{i} [shape=ellipse, fillcolor=\"#dcfce7\", "
                   f"label={_label(_io_name('output', v), dot_escape(str(v.type)))}];")

    def node_stmt(n: Node, indent: str) -> str:
        lines = [dot_escape(n.op, 80)] + ([dot_escape(name_line(n))] if name_line(n) else [])
        lines.append(dot_escape(",".join(_shape(v) for v in n.outputs)))
        if n.id in removed:
            return f'{indent}before_n{n.id} [style="rounded,dashed", label={_label(*lines, "(removed)")}];'
        return f"{indent}before_n{n.id} [label={_label(*lines)}];"

    after_nodes = {n.id: n for n in t.graph.nodes}
    grouped: set[int] = set()
    for owner_id, members in t.groups.items():
        if len(members) < 2:
            continue
        what = op_label(after_nodes[owner_id]) if owner_id in after_nodes else "fused"
        kern = _kernels(t, [after_nodes[owner_id]]) if owner_id in after_nodes else ""
        out.append(f"    subgraph cluster_before_g{owner_id} {{")
        out.append('      label=""; style="rounded,filled"; fillcolor="#fef3c7"; color="#d97706";')
        # the group's label is a node beside its first member, so no edge crosses it
        lbl = [dot_escape("fused: " + what, 80)] + ([dot_escape("-> kernel " + kern, 60)] if kern else [])
        out.append(f'      before_g{owner_id} [shape=plain, style="", fontsize=9, label={_label(*lbl)}];')
        out.append(f"      {{rank=same; before_n{members[0].id}; before_g{owner_id};}}")
        out += [node_stmt(m, "      ") for m in members]
        grouped.update(m.id for m in members)
        out.append("    }")
    out += [node_stmt(n, "    ") for n in g.nodes if n.id not in grouped]
    out.append("  }")
    for n in g.nodes:
        for v in n.inputs:
            if v is not None and not v.is_const:
                src = f"before_n{v.producer.id}" if v.producer is not None else f"before_v{v.id}"
                out.append(f"  {src} -> before_n{n.id};")
    for i, v in enumerate(g.outputs):
        if not v.is_const:
            src = f"before_n{v.producer.id}" if v.producer is not None else f"before_v{v.id}"
            out.append(f"  {src} -> before_out{i};")


__all__ = ["Trace", "trace", "snapshot", "resolve_shapes", "layer_rows", "node_flops", "param_count", "op_label",
           "call_flops", "call_nodes", "to_dot", "dot_escape", "DOT_VIEWS", "DOT_RANKDIRS", "find_blocks",
           "name_line", "auto_wrap"]
