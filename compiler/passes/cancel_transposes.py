"""Transpose chains collapsed: consecutive Transposes compose into one, and identity permutations vanish.

Models converted from TFLite carry NHWC↔NCHW Transpose pairs around blocks; after this pass a pair that
undoes itself costs nothing.
"""

from __future__ import annotations

from cnnjit.ir import Graph

from .manager import Pass


class CancelTransposes(Pass):
    name = "cancel_transposes"
    fusion = True

    def apply(self, graph: Graph) -> None:
        for node in list(graph.nodes):
            if node.op != "Transpose" or node not in graph.nodes:
                continue
            perm = tuple(node.attrs["perm"])
            src = node.inputs[0].producer
            # Transpose(q) of Transpose(p) with p used only here: one Transpose(p[q[i]])
            if src is not None and src.op == "Transpose" and len(src.outputs[0].users) == 1 \
                    and src.outputs[0] not in graph.outputs:
                p = tuple(src.attrs["perm"])
                perm = tuple(p[i] for i in perm)
                graph.set_input(node, 0, src.inputs[0])
                graph.remove_node(src)
                graph.set_attrs(node, perm=perm)
            if perm == tuple(range(len(perm))):
                out = node.outputs[0]
                if out in graph.outputs and node.inputs[0] in graph.inputs:
                    continue  # keep one copy: an output must not be an input buffer
                graph.replace_all_uses(out, node.inputs[0])
                graph.remove_node(node)
