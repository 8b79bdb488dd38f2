"""ONNX ``If`` at a static shape: the taken branch inlined, or both branches and a ``Where``.

Exporters write ``If`` for two reasons. Most are shape checks (``Equal(Shape(x)[0], 1)`` → squeeze or not),
whose condition folds to a constant at a concrete shape: the importer then imports the taken branch's nodes
in place and the other branch is never looked at. A condition computed from run-time data (a wake-word
model that runs a verifier network only when its first score passes a threshold) is imported as both
branches and one ``Where`` per output, which is what the ``If`` computes whenever the branches are free of
side effects (ONNX branches are) and give outputs of one shape and type. A branch reads the values of the
scopes around it by name, so each is imported with a copy of the enclosing environment.

A condition that depends on a small integer graph input (silero-vad's sample rate ``sr``) makes that input
a value input (``condition_inputs``): the JIT specialises on its value, so the branch folds away.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

import numpy as np

from cnnjit.ir import Value
from cnnjit.ir.errors import ModelError
from cnnjit.ir.types import short_name

from . import onnx_proto as onnx
from .registry import ImportContext, Unsupported

#: imports a list of ONNX nodes into the context's graph, reading and extending the environment
NodeWalker = Callable[[ImportContext, list, dict], None]

#: a graph input with at most this many elements, of an integer or bool type, that decides an ``If`` is
#: specialised on its value (a mode flag such as a sample rate), never one that carries the data
MAX_FLAG_ELEMENTS = 16


def branches(node: onnx.NodeProto) -> dict[str, onnx.GraphProto]:
    """An ``If`` node's ``then_branch`` / ``else_branch`` subgraphs by attribute name."""
    return {a.name: a.g for a in node.attribute if a.type == onnx.AttributeProto.GRAPH}


def all_nodes(graph: onnx.GraphProto) -> Iterator[onnx.NodeProto]:
    """Every node of ``graph`` and of its ``If`` nodes' branches (recursively), depth first: the nodes
    cnnjit imports (``Loop`` / ``Scan`` bodies are not: a model with loops is cut into compiled steps around
    them, ``compiler/control_flow.py``, whose segments hold no loops)."""
    for n in graph.node:
        yield n
        if n.op_type == "If" and n.domain in ("", "ai.onnx"):
            for g in branches(n).values():
                yield from all_nodes(g)


def subgraphs(node: onnx.NodeProto) -> list[onnx.GraphProto]:
    """The graphs a node holds as attributes (a ``Loop``'s body, an ``If``'s branches)."""
    return [a.g for a in node.attribute if a.type == onnx.AttributeProto.GRAPH]


def every_node(graph: onnx.GraphProto) -> Iterator[onnx.NodeProto]:
    """Every node of ``graph`` and of every subgraph in it (``Loop`` / ``Scan`` bodies too), depth first."""
    for n in graph.node:
        yield n
        for g in subgraphs(n):
            yield from every_node(g)


def _import_branch(ctx: ImportContext, g: onnx.GraphProto, env: dict, walk: NodeWalker) -> list[Value]:
    """Import subgraph ``g`` against a copy of ``env``; its outputs' values."""
    scope = dict(env)
    for t in g.initializer:
        scope[t.name] = ctx.const(onnx.to_array(t), t.name)
    walk(ctx, list(g.node), scope)
    outs = []
    for vi in g.output:
        if scope.get(vi.name) is None:
            raise ModelError(f"{ctx.where()}: branch output {vi.name!r} is not produced by any node of the branch "
                             "or a scope around it")
        outs.append(scope[vi.name])
    return outs


def import_if(ctx: ImportContext, node: onnx.NodeProto, ins: list, env: dict, walk: NodeWalker) -> list[Value]:
    """The values of an ``If`` node's outputs (see the module docstring)."""
    subs = branches(node)
    if set(subs) != {"then_branch", "else_branch"} or len(ins) != 1 or ins[0] is None:
        raise ModelError(f"{ctx.where()}: If needs one condition input and a then_branch and an else_branch")
    cond = ins[0]
    if cond.type.size != 1:
        raise ModelError(f"{ctx.where()}: the condition has {cond.size} elements, If needs one")
    if cond.is_const:
        taken = subs["then_branch"] if bool(np.asarray(cond.const).reshape(-1)[0]) else subs["else_branch"]
        return _import_branch(ctx, taken, env, walk)
    outer = ctx.node
    then = _import_branch(ctx, subs["then_branch"], env, walk)
    other = _import_branch(ctx, subs["else_branch"], env, walk)
    ctx.node = outer
    if len(then) != len(other) or len(then) != len(node.output):
        raise ModelError(f"{ctx.where()}: the branches give {len(then)} and {len(other)} outputs, the node "
                         f"has {len(node.output)}")
    flag = ctx.emit("Reshape", [cond], {"shape": ()})[0]
    if flag.dtype != np.bool_:
        flag = ctx.emit("Cast", [flag], {"to": short_name(np.dtype(np.bool_))})[0]
    outs = []
    for i, (t, e) in enumerate(zip(then, other)):
        if t.shape != e.shape or t.dtype != e.dtype:
            raise Unsupported(f"output {i}: the branches give {t.dtype}{list(t.shape)} and {e.dtype}{list(e.shape)}"
                              " and the condition is only known at run time; cnnjit needs one static shape")
        outs.append(ctx.emit("Where", [flag, t, e])[0])
    return outs


def inputs_behind(model: onnx.ModelProto, names: list[str]) -> set[str]:
    """The graph inputs that the values ``names`` depend on, walking back through the producers (those of
    ``If`` branches too) and stopping at ``Shape`` / ``Size``, which depend only on their input's shape."""
    g = model.graph
    graph_inputs = {vi.name for vi in g.input} - {t.name for t in g.initializer}
    producer = {o: n for n in all_nodes(g) for o in n.output if o}
    found: set[str] = set()
    stack, seen = list(names), set()
    while stack:
        name = stack.pop()
        if not name or name in seen:
            continue
        seen.add(name)
        if name in graph_inputs:
            found.add(name)
        elif name in producer and producer[name].op_type not in ("Shape", "Size"):
            stack.extend(producer[name].input)
    return found


def condition_inputs(model: onnx.ModelProto, flag_inputs: set[str]) -> set[str]:
    """The graph inputs among ``flag_inputs`` (small integer/bool inputs) that an ``If`` condition depends on;
    a condition that also reaches a data input (a float tensor, a large one) is left to ``import_if``'s
    ``Where``."""
    found: set[str] = set()
    for n in all_nodes(model.graph):
        if n.op_type == "If" and n.domain in ("", "ai.onnx") and n.input:
            reached = inputs_behind(model, [n.input[0]])
            if reached and reached <= flag_inputs:
                found |= reached
    return found
