"""Identity removal: ``Identity`` nodes (and what Dropout became), Casts to the type their input already has and
Slices that keep every element in order forward their input (a PyTorch export of a converted TF model carries
~300 float -> float Casts, one kernel call each: 9% of its time; tf2onnx writes whole-tensor strided slices
around a Conv, magika's between the Conv and its bias and GELU: a copy, and the epilogue left unfused)."""

from __future__ import annotations

from cnnjit.ir import Graph, Node
from cnnjit.ir.errors import IRError

from .manager import Pass


def _identity(node: Node) -> bool:
    """An Identity, a Cast whose output has its input's type, or a Slice of unit steps whose output has its
    input's type (with unit steps an output as long as the input on an axis starts at 0 and ends at its end)."""
    if node.op == "Slice":
        return all(s == 1 for s in node.attrs["steps"]) and node.outputs[0].type == node.inputs[0].type
    return node.op == "Identity" or node.op == "Cast" and node.outputs[0].type == node.inputs[0].type


class RemoveIdentity(Pass):
    name = "remove_identity"

    def apply(self, graph: Graph) -> None:
        for node in list(graph.nodes):
            if not _identity(node):
                continue
            src, out = node.inputs[0], node.outputs[0]
            graph.replace_all_uses(out, src)
            graph.remove_node(node)

    def ensures(self, graph: Graph) -> None:
        left = next((n for n in graph.nodes if _identity(n)), None)
        if left is not None:
            raise IRError(f"{left.describe()} is still in the graph")
