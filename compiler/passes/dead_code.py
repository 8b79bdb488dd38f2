"""Dead-code removal: drop nodes none of whose outputs reach a graph output."""

from __future__ import annotations

from cnnjit.ir import Graph, Node
from cnnjit.ir.errors import IRError

from .manager import Pass


def _dead(graph: Graph) -> list[Node]:
    """The nodes none of whose outputs reach a graph output."""
    live = {v.id for v in graph.outputs}
    dead = []
    for node in reversed(graph.nodes):
        if any(o.id in live for o in node.outputs):
            live.update(v.id for v in node.inputs if v is not None)
        else:
            dead.append(node)
    return dead


class DeadCode(Pass):
    name = "dead_code"

    def apply(self, graph: Graph) -> None:
        dead = _dead(graph)
        if dead:
            graph.remove_nodes(dead)

    def ensures(self, graph: Graph) -> None:
        dead = _dead(graph)
        if dead:
            raise IRError(f"{dead[0].describe()} reaches no graph output")
