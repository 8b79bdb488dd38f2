"""The IR interpreter: runs a graph node by node with the ops' numpy references.

It is the oracle that passes and kernels are tested against: same graph, no code generation.
"""

from __future__ import annotations

import numpy as np

from .errors import IRError
from .graph import Graph
from .op_families import get_op


def interpret(graph: Graph, inputs: list[np.ndarray]) -> list[np.ndarray]:
    """Evaluate ``graph`` on ``inputs`` (one array per graph input, in order); returns the outputs."""
    if len(inputs) != len(graph.inputs):
        raise IRError(f"interpret: graph has {len(graph.inputs)} inputs, got {len(inputs)} arrays")
    env: dict[int, np.ndarray] = {}
    for v, x in zip(graph.inputs, inputs):
        env[v.id] = np.asarray(x, dtype=v.dtype).reshape(v.shape)

    def get(v):
        if v is None:
            return None
        if v.is_const:
            return v.const
        return env[v.id]

    for n in graph.nodes:
        opdef = get_op(n.op)
        outs = opdef.run([get(v) for v in n.inputs], n.attrs)
        for o, arr in zip(n.outputs, outs):
            env[o.id] = np.asarray(arr, dtype=o.dtype).reshape(o.shape)
    return [np.array(get(o), copy=True) for o in graph.outputs]
