"""Dead-code removal: drop nodes none of whose outputs reach a graph output."""

from __future__ import annotations

from cnnjit.ir import Graph

from .manager import Pass


class DeadCode(Pass):
    name = "dead_code"

    def run(self, graph: Graph) -> bool:
        live = {v.id for v in graph.outputs}
        keep = []
        for node in reversed(graph.nodes):
            if any(o.id in live for o in node.outputs):
                keep.append(node)
                live.update(v.id for v in node.inputs if v is not None)
        if len(keep) == len(graph.nodes):
            return False
        graph.nodes = keep[::-1]
        graph.rebuild_users()
        return True
