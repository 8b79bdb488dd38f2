"""Identity removal: ``Identity`` nodes (and what Dropout became) and Casts to the type their input already has
forward their input (a PyTorch export of a converted TF model carries ~300 float -> float Casts, one kernel
call each: 9% of its time)."""

from __future__ import annotations

from cnnjit.ir import Graph, Node
from cnnjit.ir.errors import IRError

from .manager import Pass


def _identity(node: Node) -> bool:
    """An Identity, or a Cast whose output has its input's type."""
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
