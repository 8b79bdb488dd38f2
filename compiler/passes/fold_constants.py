"""Constant folding: evaluate nodes whose inputs are all constant, with the op's numpy reference."""

from __future__ import annotations

import numpy as np

from cnnjit.ir import Graph, TensorType, Value, get_op

from .manager import Pass


class FoldConstants(Pass):
    name = "fold_constants"

    def run(self, graph: Graph) -> bool:
        changed = False
        for node in list(graph.nodes):
            if not all(v is None or v.is_const for v in node.inputs):
                continue
            outs = get_op(node.op).run([None if v is None else v.const for v in node.inputs], node.attrs)
            for o, arr in zip(node.outputs, outs):
                arr = np.array(np.asarray(arr, o.dtype).reshape(o.shape), order="C")
                graph.replace_all_uses(o, Value(TensorType(arr.dtype, arr.shape), o.name, const=arr))
            graph.remove_node(node)
            changed = True
        return changed
