"""Concat without copies: each producer writes straight into its slice of the concatenated buffer.

Marks a ``Concat`` as in place (``node.meta["inplace"]``) when every input is a contiguous block of the
output (all axes before the concat axis have extent 1, e.g. a channel concat at batch 1) and each input is
a fresh intermediate (not a constant or graph input, not shared with another in-place Concat). Memory
planning then places the inputs inside the output and the Concat emits no kernel.
"""

from __future__ import annotations

import numpy as np

from cnnjit.ir import Graph, get_op

from .manager import Pass


class ConcatInPlace(Pass):
    name = "concat_inplace"
    fusion = True

    def apply(self, graph: Graph) -> None:
        placed: set[int] = set()
        for node in graph.nodes:
            if node.op == "Concat" and node.meta.get("inplace"):
                placed.update(v.id for v in node.inputs)
        for node in graph.nodes:
            if node.op != "Concat" or node.meta.get("inplace"):
                continue
            y = node.outputs[0]
            ax = node.attrs["axis"]
            if int(np.prod(y.shape[:ax], dtype=np.int64)) != 1:
                continue
            ids = [v.id for v in node.inputs]
            if len(set(ids)) != len(ids):
                continue
            ok = True
            for v in node.inputs:
                p = v.producer
                if v.is_const or p is None or v.id in placed or get_op(p.op).view or v in graph.inputs:
                    ok = False
                    break
            if not ok:
                continue
            graph.annotate(node, inplace=True)
            placed.update(ids)
