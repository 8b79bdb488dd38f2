"""Constant folding: evaluate nodes whose inputs are all constant, with the op's numpy reference."""

from __future__ import annotations

import numpy as np

from cnnjit.ir import Graph, Node, get_op
from cnnjit.ir.errors import IRError

from .manager import Pass


def _foldable(node: Node) -> bool:
    return all(v is None or v.is_const for v in node.inputs)


class FoldConstants(Pass):
    name = "fold_constants"

    def apply(self, graph: Graph) -> None:
        for node in list(graph.nodes):
            if not _foldable(node):
                continue
            outs = get_op(node.op).run([None if v is None else v.const for v in node.inputs], node.attrs)
            for o, arr in zip(node.outputs, outs):
                graph.replace_all_uses(o, graph.const(np.array(np.asarray(arr, o.dtype).reshape(o.shape)), o.name))
            graph.remove_node(node)

    def ensures(self, graph: Graph) -> None:
        left = next((n for n in graph.nodes if _foldable(n)), None)
        if left is not None:
            raise IRError(f"{left.describe()} has only constant inputs but was not folded")
