"""Models with ONNX control flow (``Loop``, ``Scan``): the graph cut into compiled segments and loop steps.

A ``Loop`` (an autoregressive decoder, a ``Range`` written by an old exporter) or a ``Scan`` runs its body
a number of times known only at run time, so its body cannot be inlined into one static schedule. The graph
is cut at each such node: every run of ordinary nodes between them becomes a ``runtime.control.Segment``,
an ONNX model of its own compiled by the same ``cnnjit.compile`` (frontend, passes, kernels shared through
the cache) at the shapes its inputs arrive with; each control-flow node becomes a ``LoopStep`` /
``ScanStep`` whose body is cut the same way (nested loops work), and an ``If`` whose branches hold loops an
``IfStep``. Other ``If`` nodes stay inside their segment, where the importer folds a constant condition
away or computes both branches and a ``Where``.

Constants (initializers, ``Constant`` nodes) are copied into every segment that reads them, so weights
stay compile-time constants of the kernels that use them (packed GEMM panels); a loop-carried value that
the body passes through unchanged and that starts as a constant (the decoder weights a PaddlePaddle export
threads through its loop) becomes a constant of the body too.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from typing import Any

import numpy as np

from cnnjit.ir.errors import ModelError, UnsupportedOpError
from cnnjit.runtime.control import Block, ControlRun, IfStep, LoopStep, Runner, ScanStep, Segment, Step
from cnnjit.runtime.model import Specialization

from .frontend import onnx_proto as onnx
from .frontend.import_control import every_node, subgraphs
from .frontend.loader import opset_version
from .frontend.onnx_import import CONST_OPERANDS

#: ops cut out of the graph as steps (``If`` only when a branch holds one of these)
LOOP_OPS = ("Loop", "Scan")


#: compiles one segment's ONNX model into a runner (``cnnjit.compile`` with the outer call's options); the
#: flag: a loop body's segment, compiled with ``keep_inputs`` (its loop-invariant inputs are copied in once per
#: loop run, see ``runtime.control.SegmentSession``)
CompileSub = Callable[[onnx.ModelProto, bool], Runner]


def _standard(node: onnx.NodeProto) -> bool:
    return node.domain in ("", "ai.onnx")


def has_loops(graph: onnx.GraphProto) -> bool:
    """Whether ``graph`` holds a ``Loop`` or ``Scan`` at any depth."""
    return any(n.op_type in LOOP_OPS and _standard(n) for n in every_node(graph))


def free_names(graph: onnx.GraphProto) -> set[str]:
    """The names ``graph``'s nodes read from the scopes around it (its implicit inputs)."""
    defined = {i.name for i in graph.input} | {t.name for t in graph.initializer}
    read: set[str] = set()
    for n in graph.node:
        read |= reads(n) - defined
        defined |= set(n.output)
    return read


def reads(node: onnx.NodeProto) -> set[str]:
    """The names a node reads: its inputs and its subgraphs' implicit inputs."""
    out = {i for i in node.input if i}
    for g in subgraphs(node):
        out |= free_names(g)
    return out


def _constant_node(name: str, tensor: onnx.TensorProto) -> onnx.NodeProto:
    """A ``Constant`` node giving ``tensor`` under ``name``."""
    node = onnx.NodeProto(op_type="Constant", output=[name])
    a = node.attribute.add()
    a.name, a.type = "value", onnx.AttributeProto.TENSOR
    a.t.CopyFrom(tensor)
    a.t.name = name
    return node


def _constant_value(node: onnx.NodeProto) -> np.ndarray | None:
    """A ``Constant`` node's value, or None for the forms a segment should import itself (sparse, strings)."""
    if len(node.attribute) != 1:
        return None
    a = node.attribute[0]
    if a.name == "value":
        arr = onnx.to_array(a.t)
        return arr if arr.dtype.kind in "biuf" else None
    kinds = {"value_float": np.float32, "value_floats": np.float32, "value_int": np.int64, "value_ints": np.int64}
    return np.array(onnx.attribute_value(a), kinds[a.name]) if a.name in kinds else None


class Planner:
    """Cuts a model's graph into a ``Block`` of steps (see the module docstring)."""

    def __init__(self, model: onnx.ModelProto, compile_sub: CompileSub):
        self.model = model
        self.compile_sub = compile_sub
        self.arrays: dict[str, np.ndarray] = {}  # every constant a step may read from its environment
        self.count = 0

    def plan(self) -> ControlRun:
        g = self.model.graph
        consts = {}
        for t in g.initializer:
            consts[t.name] = _constant_node(t.name, t)
            self.arrays[t.name] = onnx.to_array(t)
        block = self.block(g.node, consts, [o.name for o in g.output], "the graph")
        return ControlRun(block, self.arrays, [o.name for o in g.output])

    def block(self, nodes: Iterable[onnx.NodeProto], consts: dict[str, onnx.NodeProto], needed: list[str],
              what: str, body: bool = False) -> Block:
        """The steps computing ``needed`` from ``nodes`` (in order), constants ``consts`` and an environment;
        in a loop ``body``, nodes whose constant operands change every iteration run on their own (see
        ``by_value_runs``)."""
        consts = dict(consts)
        groups: list[list[onnx.NodeProto] | onnx.NodeProto] = []
        for n in nodes:
            value = _constant_value(n) if n.op_type == "Constant" and _standard(n) else None
            if value is not None:
                consts[n.output[0]] = n
                self.arrays[n.output[0]] = value
            elif _standard(n) and (n.op_type in LOOP_OPS or n.op_type == "If" and any(map(has_loops, subgraphs(n)))):
                groups.append(n)
            elif groups and isinstance(groups[-1], list):
                groups[-1].append(n)
            else:
                groups.append([n])
        if body:
            groups = [part for g in groups for part in (by_value_runs(g, consts) if isinstance(g, list) else [g])]
        want = set(needed)
        steps: list[Step] = []
        for group in reversed(groups):
            if isinstance(group, tuple):  # nodes whose constant operands change every iteration
                group, host = list(group), True
            else:
                host = False
            if isinstance(group, list):
                produced = [o for n in group for o in n.output if o]
                read = [r for n in group for r in sorted(reads(n))]
                inside = set(produced)
                outs = [o for o in produced if o in want]
                if outs:
                    ins = list(dict.fromkeys(r for r in read if r not in inside and r not in consts))
                    used = [consts[r] for r in dict.fromkeys(read) if r in consts and r not in inside]
                    steps.append(self.segment(group, ins, outs, used, what, host, body))
                    want = (want - inside) | set(ins)
            else:
                steps.append(self.control(group, consts))
                want = (want - set(group.output)) | reads(group)
        return Block(steps[::-1])

    def segment(self, nodes: list[onnx.NodeProto], ins: list[str], outs: list[str],
                consts: list[onnx.NodeProto], what: str, host: bool = False, body: bool = False) -> Segment:
        """A run of ordinary nodes as a model of its own, compiled per tuple of input signatures; ``host``:
        evaluated by onnx's reference evaluator instead (index arithmetic whose values change every
        iteration: compiling it would specialise it once per iteration); ``body``: in a loop body (compiled
        to keep its inputs in place, see ``CompileSub``)."""
        self.count += 1
        label = f"segment {self.count} of {what} ({len(nodes)} nodes{', evaluated in numpy' if host else ''})"
        compile_sub = self.compile_sub
        base = self.model

        def build(key: tuple[tuple[str, tuple[int, ...]], ...]) -> Runner:
            m = onnx.ModelProto(ir_version=base.ir_version)
            m.opset_import.extend(base.opset_import)
            g = m.graph
            g.name = f"segment{self.count}"
            g.node.extend([*consts, *nodes])
            for name, (dt, shape) in zip(ins, key):
                elem = onnx.elem_type_of(dt)
                if elem is None:
                    raise ModelError(f"{label}: input {name!r} of type {np.dtype(dt)} cannot cross a loop boundary")
                vi = g.input.add()
                vi.name = name
                vi.type.tensor_type.elem_type = elem
                vi.type.tensor_type.shape.SetInParent()
                for d in shape:
                    vi.type.tensor_type.shape.dim.add().dim_value = d
            for name in outs:
                g.output.add().name = name
            return _reference(m) if host else compile_sub(m, body)

        return Segment(ins, outs, build, label)

    def control(self, node: onnx.NodeProto, consts: dict[str, onnx.NodeProto]) -> Step:
        """The step of a ``Loop``, ``Scan`` or ``If`` node; its body planned as a block."""
        ins = list(node.input)
        what = f"{node.op_type} node {node.name!r}"
        graphs = {a.name: a.g for a in node.attribute if a.type == onnx.AttributeProto.GRAPH}
        ints = {a.name: list(a.ints) if a.ints else a.i for a in node.attribute
                if a.type in (onnx.AttributeProto.INT, onnx.AttributeProto.INTS)}
        need = {"If": {"then_branch", "else_branch"}, "Loop": {"body"}, "Scan": {"body"}}[node.op_type]
        if set(graphs) != need:
            raise ModelError(f"{what}: needs the graph attribute(s) {sorted(need)}, has {sorted(graphs)}")
        if node.op_type == "If":
            then, other = graphs["then_branch"], graphs["else_branch"]
            if len(ins) != 1 or not len(then.output) == len(other.output) == len(node.output):
                raise ModelError(f"{what}: needs one condition and branches with one output per output")
            return IfStep(ins[0], self.body(then, consts, [o.name for o in then.output], what),
                          [o.name for o in then.output],
                          self.body(other, consts, [o.name for o in other.output], what),
                          [o.name for o in other.output], list(node.output), what)
        body = graphs["body"]
        b_in, b_out = [i.name for i in body.input], [o.name for o in body.output]
        if node.op_type == "Loop":
            ins += [""] * (2 - len(ins))
            initial = ins[2:]
            n = len(initial)
            if len(b_in) != 2 + n or len(b_out) < 1 + n or len(node.output) != len(b_out) - 1:
                raise ModelError(f"{what}: {n} carried values need a body of {2 + n} inputs and at least "
                                 f"{1 + n} outputs, one more than the node's; it has {len(b_in)}, {len(b_out)} "
                                 f"and {len(node.output)}")
            carried_in, carried_out = b_in[2:2 + n], b_out[1:1 + n]
            fixed = {k for k in range(n) if carried_in[k] == carried_out[k] and initial[k] in self.arrays
                     and initial[k] in consts}
            inner = dict(consts)
            for k in fixed:
                inner[carried_in[k]] = _renamed(consts[initial[k]], carried_in[k])
                self.arrays[carried_in[k]] = self.arrays[initial[k]]
            for t in body.initializer:
                inner[t.name] = _constant_node(t.name, t)
                self.arrays[t.name] = onnx.to_array(t)
            for nd in body.node:  # the body's Constant nodes, for _same_value (block() registers them too)
                if nd.op_type == "Constant" and _standard(nd) and (v := _constant_value(nd)) is not None:
                    self.arrays[nd.output[0]] = v
            producers = {o: nd for nd in body.node for o in nd.output}
            steady = [k for k in range(n) if k not in fixed
                      and _same_value(carried_out[k], carried_in[k], producers, self.arrays)]
            hoisted, rest = _invariant_nodes(body, {carried_in[k] for k in steady} | set(inner), self.arrays)
            label = f"the body of {what}"
            pre = None
            if hoisted:
                later = {r for nd in rest for r in reads(nd)} | set(b_out)
                pre = self.block(hoisted, inner, [o for nd in hoisted for o in nd.output if o in later],
                                 f"the loop-invariant part of {what}", body=True)
            return LoopStep(ins[0], ins[1], initial, b_in[0], b_in[1], carried_in, b_out[0], carried_out,
                            b_out[1 + n:], list(node.output), self.block(rest, inner, b_out, label, body=True),
                            frozenset(fixed), [_empty(vi) for vi in body.output[1 + n:]], what, pre, steady)
        if opset_version(self.model) < 9:
            raise UnsupportedOpError([("Scan", node.name, opset_version(self.model),
                                       "opset 8's Scan (batched, with sequence_lens) is not supported")])
        m = ints.get("num_scan_inputs")
        n = len(ins) - m if isinstance(m, int) else -1
        k = len(b_out) - n
        if not (isinstance(m, int) and 1 <= m <= len(ins) and len(b_in) == len(ins) and k >= 0
                and len(node.output) == len(b_out)):
            raise ModelError(f"{what}: num_scan_inputs {m} of {len(ins)} inputs does not fit a body of "
                             f"{len(b_in)} inputs and {len(b_out)} outputs for {len(node.output)} outputs")

        def per(name: str, count: int) -> list[int]:
            got = ints.get(name)
            return [int(v) for v in got] if isinstance(got, list) else [0] * count

        return ScanStep(ins[:n], ins[n:], b_in[:n], b_in[n:], b_out[:n], b_out[n:],
                        per("scan_input_axes", m), [bool(v) for v in per("scan_input_directions", m)],
                        per("scan_output_axes", k), [bool(v) for v in per("scan_output_directions", k)],
                        list(node.output), self.body(body, consts, b_out, what), what)

    def body(self, graph: onnx.GraphProto, consts: dict[str, onnx.NodeProto], needed: list[str],
             what: str) -> Block:
        inner = dict(consts)
        for t in graph.initializer:
            inner[t.name] = _constant_node(t.name, t)
            self.arrays[t.name] = onnx.to_array(t)
        return self.block(graph.node, inner, needed, f"the body of {what}", body=True)


def by_value_runs(nodes: list[onnx.NodeProto], consts: dict[str, Any]) -> list[list | tuple]:
    """``nodes`` (a run of a loop body) cut so that the nodes with a constant operand (a ``Slice`` start, a
    ``Range`` bound) computed from the iteration's values form runs of their own, as tuples: compiled, such a
    run would be specialised on those values once per iteration (a decoder writing row ``i`` of its output);
    the rest (lists) compile once per shape. Each node goes to the earliest run of its kind after the runs
    of its inputs, so the runs stay in dependency order. A value computed from shapes only (``Shape`` / ``Size``
    and constants: a ``Tile``'s repeats, an ``Expand``'s shape) does not pin its reader: a segment folds it
    at its shapes, which stay put while the values change."""
    varying: set[str] = set()  # values that change between iterations (not through Shape / Size)
    rank: dict[str, int] = {}
    ranked: list[tuple[int, onnx.NodeProto]] = []
    for n in nodes:
        ins = [i for i in n.input if i]
        pinned = any(n.input[k] in varying or n.input[k] not in consts and n.input[k] not in rank
                     for k in CONST_OPERANDS.get(n.op_type, ()) if k < len(n.input) and n.input[k])
        r = max((rank.get(i, 0) for i in ins), default=0)
        r += (r % 2 == 0) if pinned else r % 2  # odd ranks: by-value runs
        for o in n.output:
            rank[o] = r
        if n.op_type not in ("Shape", "Size") and any(i in varying or i not in consts and i not in rank
                                                       for i in reads(n)):
            varying |= set(n.output)
        ranked.append((r, n))
    if not any(r % 2 for r, _ in ranked):
        return [nodes]
    runs: list[list | tuple] = []
    for r in sorted({r for r, _ in ranked}):
        run = [n for q, n in ranked if q == r]
        runs.append(tuple(run) if r % 2 else run)
    return runs


def _ints(a: Any) -> list[int]:
    """An index operand's values as Python ints."""
    return np.asarray(a).reshape(-1).tolist()


def _axes_of(node: onnx.NodeProto) -> Callable[[list], list[int]]:
    """Squeeze / Unsqueeze axes: the second input (opset 13+), else the ``axes`` attribute (read once)."""
    attr = [int(a) for a in next((list(a.ints) for a in node.attribute if a.name == "axes"), [])]
    return lambda args: _ints(args[1]) if len(args) > 1 and args[1] is not None else attr


def _slice(node: onnx.NodeProto) -> Callable[[list], np.ndarray]:
    def run(args: list) -> np.ndarray:
        x, starts, ends = args[0], _ints(args[1]), _ints(args[2])
        axes = _ints(args[3]) if len(args) > 3 and args[3] is not None else range(len(starts))
        steps = _ints(args[4]) if len(args) > 4 and args[4] is not None else [1] * len(starts)
        index = [slice(None)] * x.ndim
        for ax, b, e, st in zip(axes, starts, ends, steps):
            index[ax] = slice(b, e, st)  # Python's clamping is ONNX's
        return x[tuple(index)].copy()
    return run


def _range(node: onnx.NodeProto) -> Callable[[list], np.ndarray]:
    def run(args: list) -> np.ndarray:
        start = np.asarray(args[0])
        if start.dtype.kind in "iu":  # (Python ints: np.arange converts 0-d arrays slowly, ~6 us a call)
            return np.arange(start.item(), np.asarray(args[1]).item(), np.asarray(args[2]).item(), dtype=start.dtype)
        return np.arange(args[0], args[1], args[2], dtype=start.dtype)
    return run


def _squeeze(node: onnx.NodeProto) -> Callable[[list], np.ndarray]:
    axes = _axes_of(node)

    def run(args: list) -> np.ndarray:
        ax = axes(args)
        return (np.squeeze(args[0], tuple(ax)) if ax else np.squeeze(args[0])).copy()
    return run


def _unsqueeze(node: onnx.NodeProto) -> Callable[[list], np.ndarray]:
    axes = _axes_of(node)

    def run(args: list) -> np.ndarray:
        ax = axes(args)
        rank = args[0].ndim + len(ax)
        return np.expand_dims(args[0], tuple(sorted(a % rank for a in ax))).copy()
    return run


def _reshape(node: onnx.NodeProto) -> Callable[[list], np.ndarray]:
    keep_zero = any(a.name == "allowzero" and a.i for a in node.attribute)

    def run(args: list) -> np.ndarray:
        x = args[0]
        return x.reshape([x.shape[k] if d == 0 and not keep_zero else d for k, d in enumerate(_ints(args[1]))]).copy()
    return run


def _constant_of_shape(node: onnx.NodeProto) -> Callable[[list], np.ndarray]:
    value = next((onnx.to_array(a.t) for a in node.attribute if a.name == "value"), np.zeros(1, np.float32))
    return lambda args: np.full(_ints(args[0]), value.reshape(-1)[0], value.dtype)


#: the index and shape ops a by-value run holds, evaluated with numpy (their ONNX semantics; any other op
#: sends the run to onnx's reference evaluator, ~150 us a call): op -> maker(node) -> the node's function of
#: its operands (attributes read once, when the run is built)
NUMPY_OPS: dict[str, Callable[[onnx.NodeProto], Callable[[list], np.ndarray]]] = {
    "Slice": _slice,
    "Range": _range,
    "Squeeze": _squeeze,
    "Unsqueeze": _unsqueeze,
    "Reshape": _reshape,
    "Expand": lambda n: lambda a: np.broadcast_to(a[0], np.broadcast_shapes(a[0].shape, tuple(_ints(a[1])))).copy(),
    "Tile": lambda n: lambda a: np.tile(a[0], _ints(a[1])),
    "ConstantOfShape": _constant_of_shape,
}


def _reference(model: onnx.ModelProto) -> Runner:
    """A runner evaluating ``model`` in numpy: ``NUMPY_OPS`` where they cover its nodes, else onnx's
    reference evaluator."""
    g = model.graph
    consts = {n.output[0]: v for n in g.node if n.op_type == "Constant" and (v := _constant_value(n)) is not None}
    nodes = [n for n in g.node if n.output[0] not in consts]
    outs = [o.name for o in g.output]
    ins = [i.name for i in g.input]
    if all(n.op_type in NUMPY_OPS and _standard(n) and len(n.output) == 1 for n in nodes):
        steps = [(NUMPY_OPS[n.op_type](n), list(n.input), n.output[0]) for n in nodes]

        def run(arrays: Sequence[np.ndarray]) -> list[np.ndarray]:
            env = dict(consts)
            env.update(zip(ins, arrays))
            for fn, names, out in steps:
                env[out] = fn([env[i] if i else None for i in names])
            return [env[o] for o in outs]
        return run
    from onnx.reference import ReferenceEvaluator

    ev = ReferenceEvaluator(model)
    return lambda arrays: ev.run(None, dict(zip(ins, arrays)))


#: ops that give their first input's value back when their other operand is this constant (an exporter's
#: no-op around a loop-carried value: PaddlePaddle's ``Squeeze(Add(Unsqueeze(x), 0))``)
_NEUTRAL = {"Add": 0, "Sub": 0, "Mul": 1, "Div": 1}


def _same_value(out: str, src: str, producers: dict[str, onnx.NodeProto], arrays: dict[str, np.ndarray]) -> bool:
    """Whether body value ``out`` is body input ``src`` through no-ops only (``Identity``, ``+ 0``, ``* 1``,
    a ``Squeeze`` undoing an ``Unsqueeze`` on the same axes): a carried value that never changes."""
    squeezed: list | None = None  # the axes of a Squeeze met on the way back, until its Unsqueeze
    for _ in range(16):
        if out == src:
            return squeezed is None
        node = producers.get(out)
        if node is None or not _standard(node):
            return False
        ins = list(node.input)
        axes = list(arrays[ins[1]].reshape(-1)) if len(ins) == 2 and ins[1] in arrays else None
        if node.op_type == "Identity":
            out = ins[0]
        elif node.op_type in _NEUTRAL and axes is not None and len(axes) == 1 and axes[0] == _NEUTRAL[node.op_type]:
            out = ins[0]
        elif node.op_type == "Squeeze" and squeezed is None and axes is not None:
            squeezed, out = axes, ins[0]
        elif node.op_type == "Unsqueeze" and squeezed is not None and axes == squeezed:
            squeezed, out = None, ins[0]
        else:
            return False
    return False


def _invariant_nodes(body: onnx.GraphProto, known: set[str], arrays: dict[str, np.ndarray]
                     ) -> tuple[list[onnx.NodeProto], list[onnx.NodeProto]]:
    """A loop body's nodes split into those computed from loop-invariant values only (``known``: constants and
    carried values that never change; the outer scope's values), which run once before the first iteration,
    and the rest (``Constant`` nodes go to both)."""
    known = known | free_names(body)
    hoisted, rest = [], []
    for nd in body.node:
        if nd.op_type == "Constant" and _standard(nd) and _constant_value(nd) is not None:
            hoisted.append(nd)
            rest.append(nd)
            known |= set(nd.output)
        elif not subgraphs(nd) and _standard(nd) and (r := reads(nd)) and r <= known:
            hoisted.append(nd)
            known |= set(nd.output)
        else:
            rest.append(nd)
    if all(nd.op_type == "Constant" for nd in hoisted):
        return [], list(body.node)
    return hoisted, rest


def _empty(vi: onnx.ValueInfoProto) -> np.ndarray | None:
    """A loop's scan output after no iterations, from the body's declaration: ``(0, *shape)`` of its type
    where both are declared, else None."""
    tt = vi.type.tensor_type
    dims = [d.dim_value if d.HasField("dim_value") else None for d in tt.shape.dim]
    dtype = onnx.plain_dtype(tt.elem_type) if tt.elem_type else None
    if dtype is None or not tt.HasField("shape") or None in dims:
        return None
    return np.zeros((0, *dims), dtype)


def _renamed(node: onnx.NodeProto, name: str) -> onnx.NodeProto:
    """A copy of a ``Constant`` node giving its value under ``name``."""
    out = onnx.NodeProto()
    out.CopyFrom(node)
    del out.output[:]
    out.output.append(name)
    out.name = ""
    return out


def plan(model: onnx.ModelProto, compile_sub: CompileSub) -> ControlRun:
    """The steps of ``model`` (which holds a ``Loop`` or ``Scan``), segments compiled by ``compile_sub``."""
    return Planner(model, compile_sub).plan()


class ModelRunner:
    """A segment's compiled model as a ``Runner``: where it has one specialisation (static input shapes, none
    read by value) its positional per-call path (``Specialization.caller``: no dict of feeds, no checks the
    segment's signature key already made) and ``bind()`` (``Specialization.bind``); else ``run(None, feeds)``."""

    def __init__(self, model: Any):
        self.model = model
        self.names = list(model.input_names)
        specs = list(getattr(model, "_specs", {}).values())
        one = len(specs) == 1 and isinstance(specs[0], Specialization) and not any(s.by_value for s in model.inputs)
        self.spec = specs[0] if one else None
        self.call = self.spec.caller(self.names) if one else self._generic

    def _generic(self, arrays: Sequence[np.ndarray]) -> list[np.ndarray]:
        return self.model.run(None, dict(zip(self.names, arrays)))

    def __call__(self, arrays: Sequence[np.ndarray]) -> list[np.ndarray]:
        return self.call(arrays)

    def bind(self) -> Callable[[Sequence[np.ndarray]], list[np.ndarray]]:
        """The per-call path on an arena set held until ``close()`` (see ``runtime.model.BoundCaller``)."""
        return self if self.spec is None else self.spec.bind(self.names)

    def close(self) -> None:
        """(Nothing held by the unbound path.)"""


def runner(compiled: Any) -> Runner:
    """A compiled segment model as a ``Runner`` (``ModelRunner``)."""
    return ModelRunner(compiled)


__all__ = ["LOOP_OPS", "ModelRunner", "Planner", "free_names", "has_loops", "plan", "runner"]
