"""Identity removal: ``Identity`` nodes (and what Dropout became) forward their input."""

from __future__ import annotations

from cnnjit.ir import Graph
from cnnjit.ir.errors import IRError

from .manager import Pass


class RemoveIdentity(Pass):
    name = "remove_identity"

    def apply(self, graph: Graph) -> None:
        for node in list(graph.nodes):
            if node.op != "Identity":
                continue
            src, out = node.inputs[0], node.outputs[0]
            graph.replace_all_uses(out, src)
            graph.remove_node(node)

    def ensures(self, graph: Graph) -> None:
        left = next((n for n in graph.nodes if n.op == "Identity"), None)
        if left is not None:
            raise IRError(f"{left.describe()} is still in the graph")
