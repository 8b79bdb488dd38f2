"""Is a model batch-separable: does every op treat axis 0 (the batch) of its inputs independently?

When it is, a new batch size runs as a loop over samples through the batch-1 program already compiled
(``runtime.model.BatchLoop``), with no import, passes or numba compile. The decision is made once, on the IR
as imported (before the passes) at a leading size ``b`` other than 1 (``stages.separable_batch``: at 1 a
Reshape that moves the batch cannot be told from one that keeps it), conservatively: a value is *batched*
when it depends on a graph input; every node with a batched input must be in the table below and keep
axis 0 as its batch axis, and every graph output must be batched. Anything unknown says no, and the caller
falls back to one specialisation per shape. The ONNX graph is checked too for what the IR no longer shows:
a ``Reshape`` to a literal leading size (``[1, 256]`` instead of ``[-1, 256]``) is not batch-polymorphic.
"""

from __future__ import annotations

from collections.abc import Callable

from cnnjit.ir import Graph, Node
from cnnjit.ir.ops import get_op

from .frontend import onnx_proto as onnx  # the message classes and to_array, without the onnx package

#: ops that compute each sample from that sample only, given their first input batched and every other
#: input either a parameter (weights, scales) or batched with the output's shape (a fused residual)
_PER_SAMPLE = frozenset({
    "Conv", "ConvTranspose", "ConvInteger", "QLinearConv", "QConvNHWC", "MaxPool", "AveragePool",
    "GlobalAveragePool", "GlobalMaxPool", "QAvgPoolNHWC", "LRN", "InstanceNormalization", "BatchNormalization",
    "Resize", "GridSample", "DepthToSpace", "SpaceToDepth", "QAdd",
})


def _axis(node: Node, rank: int, default: int = 0) -> int:
    a = int(node.attrs.get("axis", default))
    return a + rank if a < 0 else a


def _gemm(node: Node, batched: list[bool]) -> bool:
    # rows of A are samples; B (weights) and C (bias) must not be batched
    return batched[0] and not any(batched[1:]) and not node.attrs.get("transA", 0)


def _matmul(node: Node, batched: list[bool]) -> bool:
    a, b = node.inputs[0], node.inputs[1]
    if batched[1]:  # B's leading axis is a contraction axis at rank 2; at rank >= 3 both stack samples
        return batched[0] and len(a.shape) >= 3 and len(a.shape) == len(b.shape)
    return batched[0] and not any(batched[2:]) and len(a.shape) >= len(b.shape)


def _not_axis0(node: Node, batched: list[bool]) -> bool:
    return _axis(node, len(node.inputs[0].shape), -1) != 0


def _reshape(node: Node, batched: list[bool]) -> bool:
    return node.inputs[0].shape[:1] == node.outputs[0].shape[:1]


def _transpose(node: Node, batched: list[bool]) -> bool:
    return tuple(node.attrs["perm"])[:1] == (0,)


def _concat(node: Node, batched: list[bool]) -> bool:
    return all(batched) and _axis(node, len(node.outputs[0].shape)) != 0


def _pad(node: Node, batched: list[bool]) -> bool:
    pads, rank = tuple(node.attrs["pads"]), len(node.inputs[0].shape)
    return batched[0] and not any(batched[1:]) and pads[0] == 0 and pads[rank] == 0


def _slice(node: Node, batched: list[bool]) -> bool:
    steps = tuple(node.attrs["steps"])
    return not steps or steps[0] == 1


def _split(node: Node, batched: list[bool]) -> bool:
    return _axis(node, len(node.inputs[0].shape)) != 0


def _reduce(node: Node, batched: list[bool]) -> bool:
    rank = len(node.inputs[0].shape)
    axes = node.attrs["axes"]
    return axes is not None and len(axes) > 0 and all((int(a) + rank) % rank != 0 for a in axes)


def _gather(node: Node, batched: list[bool]) -> bool:
    if batched[0]:  # gathering along a per-sample axis with fixed indices
        return not batched[1] and _axis(node, len(node.inputs[0].shape)) != 0
    return _axis(node, len(node.inputs[0].shape)) == 0  # an embedding table indexed by batched indices


def _quant(node: Node, batched: list[bool]) -> bool:
    scale = node.inputs[1]
    per_axis = scale is not None and len(scale.shape) > 0 and scale.shape[0] > 1
    return batched[0] and not any(batched[1:]) and not (per_axis and _axis(node, len(node.inputs[0].shape), 1) == 0)


def _layernorm(node: Node, batched: list[bool]) -> bool:
    return batched[0] and not any(batched[1:]) and _axis(node, len(node.inputs[0].shape), -1) != 0


_RULES: dict[str, Callable[[Node, list[bool]], bool]] = {
    "Gemm": _gemm, "MatMul": _matmul, "MatMulInteger": _matmul, "QLinearMatMul": lambda n, b: (
        b[0] and not any(b[1:])),
    "Softmax": _not_axis0, "LogSoftmax": _not_axis0, "TopK": _not_axis0,
    "Attention": lambda n, b: all(b[:3]),  # q, k, v share their batch axes: sample i attends within sample i
    "Reshape": _reshape, "Transpose": _transpose, "Concat": _concat, "Pad": _pad, "Slice": _slice,
    "Split": _split, "ReduceMean": _reduce, "Gather": _gather,
    "QuantizeLinear": _quant, "DequantizeLinear": _quant, "LayerNormalization": _layernorm,
}


def _node_ok(node: Node, batched: list[bool], batch: int) -> bool:
    """Whether ``node`` (some input batched) computes output sample i from input sample i only."""
    if any(len(o.shape) == 0 or o.shape[0] != batch for o in node.outputs):
        return False
    for v, b in zip(node.inputs, batched):
        if b and v.shape[0] != batch:
            return False
    out_rank = len(node.outputs[0].shape)
    opdef = get_op(node.op)
    if opdef is not None and opdef.elementwise or node.op in ("Where", "Mod", "PRelu", "BroadcastMap"):
        # broadcasting: batched inputs have the output's rank; parameters broadcast from size 1 on axis 0
        return all((len(v.shape) == out_rank) if b else (len(v.shape) < out_rank or v.shape[0] == 1)
                   for v, b in zip(node.inputs, batched) if v is not None)
    if node.op in _PER_SAMPLE:
        out_shapes = {o.shape for o in node.outputs}
        return batched[0] and all(v.shape in out_shapes for v, b in zip(node.inputs[1:], batched[1:])
                                  if b and v is not None)
    rule = _RULES.get(node.op)
    return rule is not None and rule(node, batched)


def batch_separable(graph: Graph, proto: onnx.ModelProto | None = None) -> bool:
    """True when every graph input and output has leading size ``b`` (the same for all) and every op keeps
    samples apart along axis 0, so running the model on each sample separately gives the batched result."""
    if not graph.inputs or not graph.outputs or any(len(v.shape) == 0 for v in graph.inputs):
        return False
    batch = graph.inputs[0].shape[0]
    if any(v.shape[0] != batch for v in graph.inputs):
        return False
    if proto is not None and _literal_reshape(proto):
        return False
    batched = {v.id for v in graph.inputs}
    for node in graph.nodes:
        flags = [v is not None and v.id in batched for v in node.inputs]
        if not any(flags):
            continue
        if not _node_ok(node, flags, batch):
            return False
        batched.update(o.id for o in node.outputs)
    return all(v.id in batched for v in graph.outputs)


def _literal_reshape(proto: onnx.ModelProto) -> bool:
    """Whether some ``Reshape`` of the ONNX graph has a constant target shape with a literal leading size."""
    consts = {i.name: i for i in proto.graph.initializer}
    for n in proto.graph.node:
        if n.op_type == "Constant" and n.attribute and n.attribute[0].name == "value":
            consts[n.output[0]] = n.attribute[0].t
    for n in proto.graph.node:
        if n.op_type == "Reshape" and len(n.input) > 1 and n.input[1] in consts:
            shape = onnx.to_array(consts[n.input[1]]).reshape(-1)
            if shape.size and int(shape[0]) > 0:
                return True
    return False
