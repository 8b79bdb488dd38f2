"""Identity removal: ``Identity`` nodes (and what Dropout became) forward their input."""

from __future__ import annotations

from cnnjit.ir import Graph

from .manager import Pass


class RemoveIdentity(Pass):
    name = "remove_identity"

    def run(self, graph: Graph) -> bool:
        changed = False
        for node in list(graph.nodes):
            if node.op != "Identity":
                continue
            src, out = node.inputs[0], node.outputs[0]
            graph.replace_all_uses(out, src)
            graph.remove_node(node)
            changed = True
        return changed
