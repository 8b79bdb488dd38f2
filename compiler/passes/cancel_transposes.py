"""Transpose chains collapsed: consecutive Transposes compose into one, and identity permutations vanish.

Models converted from TFLite carry NHWC↔NCHW Transpose pairs around blocks; after this pass a pair that
undoes itself costs nothing (also when the first Transpose has other users: the second one's users then
read the first one's input).
"""

from __future__ import annotations

from cnnjit.ir import Graph, Node
from cnnjit.ir.errors import IRError

from .manager import Pass


def _dispensable(graph: Graph, node: Node) -> bool:
    """An identity Transpose, unless it is the one copy between a graph input and a graph output (an output
    must not be an input buffer)."""
    perm = tuple(node.attrs["perm"])
    return perm == tuple(range(len(perm))) and not (node.outputs[0] in graph.outputs
                                                    and node.inputs[0] in graph.inputs)


def _inverse(p: tuple[int, ...], q: tuple[int, ...]) -> bool:
    """Transpose(q) undoes Transpose(p)."""
    return tuple(p[i] for i in q) == tuple(range(len(q)))


class CancelTransposes(Pass):
    name = "cancel_transposes"
    fusion = True

    def apply(self, graph: Graph) -> None:
        for node in list(graph.nodes):
            if node.op != "Transpose" or node not in graph.nodes:
                continue
            src = node.inputs[0].producer
            # Transpose(q) of Transpose(p) with p used only here: one Transpose(p[q[i]])
            if src is not None and src.op == "Transpose" and len(src.outputs[0].users) == 1 \
                    and src.outputs[0] not in graph.outputs:
                p = tuple(src.attrs["perm"])
                graph.set_input(node, 0, src.inputs[0])
                graph.remove_node(src)
                graph.set_attrs(node, perm=tuple(p[i] for i in node.attrs["perm"]))
            elif src is not None and src.op == "Transpose" and node.outputs[0] not in graph.outputs \
                    and _inverse(src.attrs["perm"], node.attrs["perm"]):
                # an inverse pair whose first half has other users: the second half reads the source directly
                graph.replace_all_uses(node.outputs[0], src.inputs[0])
                graph.remove_node(node)
                continue
            if _dispensable(graph, node):
                graph.replace_all_uses(node.outputs[0], node.inputs[0])
                graph.remove_node(node)

    def ensures(self, graph: Graph) -> None:
        left = next((n for n in graph.nodes if n.op == "Transpose" and _dispensable(graph, n)), None)
        if left is not None:
            raise IRError(f"{left.describe()} has the identity permutation and was kept")
