"""Pad folded into the following Conv or pooling op: a zero (or -inf) border becomes the op's own pads.

Fires for constant-mode ``Pad`` with non-negative pads on the spatial axes only, whose output feeds only
the consumer:
* ``Conv`` when the pad value is 0;
* ``AveragePool`` when the value is 0 and the pool counts pads (``count_include_pad=1``) or has none of
  its own (it then counts the folded border, as the explicit zeros were counted);
* ``MaxPool`` when the value is -inf (a zero border would change the maximum of negative inputs).
"""

from __future__ import annotations

import math

from cnnjit.ir import Graph

from .manager import Pass


class FoldPad(Pass):
    name = "fold_pad"
    fusion = True

    def apply(self, graph: Graph) -> None:
        for pad in list(graph.nodes):
            if pad.op != "Pad" or pad.attrs["mode"] != "constant" or pad not in graph.nodes:
                continue
            out = pad.outputs[0]
            if len(out.users) != 1 or out in graph.outputs:
                continue
            user = out.users[0]
            if user.op not in ("Conv", "AveragePool", "MaxPool") or user.inputs[0] is not out:
                continue
            r = len(out.shape)
            pads = [int(p) for p in pad.attrs["pads"]]
            if any(p < 0 for p in pads) or pads[0] or pads[1] or pads[r] or pads[r + 1]:
                continue
            value = float(pad.attrs["value"] or 0.0)
            if user.op == "MaxPool":
                if not (math.isinf(value) and value < 0) or user.attrs.get("indices"):
                    continue
            elif value != 0.0:
                continue
            if user.op == "AveragePool" and not user.attrs["count_include_pad"]:
                if any(user.attrs["pads"]):
                    continue
            n = r - 2
            old = list(user.attrs["pads"])
            new = [old[i] + pads[2 + i] for i in range(n)] + [old[n + i] + pads[r + 2 + i] for i in range(n)]
            graph.set_attrs(user, pads=tuple(new))
            if user.op == "AveragePool":
                graph.set_attrs(user, count_include_pad=1)
            graph.set_input(user, 0, pad.inputs[0])
            graph.remove_node(pad)
            graph.note_fused(user, "Pad")
