"""Quantized elementwise chains to byte tables: ``DequantizeLinear -> f -> QuantizeLinear`` becomes ``QLut``.

onnxruntime's static quantizer wraps every float op it cannot run in integers in QDQ: a model keeps
``DQ -> BatchNormalization -> Q``, ``DQ -> HardSwish -> Q``, ``DQ -> Sigmoid -> Q``... between its integer
convolutions. When ``f`` is a chain of elementwise ops whose other operands are constants that vary at most
along the channel axis (1), the whole chain maps each input byte to an output byte, per channel: the pass
evaluates it with the ops' own references (``cnnjit.ir``) on all 256 input bytes, so the table reproduces
the float path exactly, rounding included.

``f`` need not be a chain: any subgraph of such ops that reads one quantized tensor ``x`` (through one or
more DequantizeLinear nodes, along several paths) is a function of ``x``'s byte alone, inner ``Q -> DQ``
pairs included. onnxruntime's QDQ SiLU, ``DQ(x) * DQ(Q(Sigmoid(DQ(x))))``, is one table (a YOLOv8 head has
29: each was DQ, Sigmoid, Q, DQ, Mul, Q and two Transposes, now one ``QLut`` that composes into the one
before it). Q nodes are matched last first, so such a cone is taken whole before its inner Q would be
matched alone; an inner quantized value that is also read outside the cone is not traced through.

Then, so that integer convolutions (channels-last, see ``qdq_to_integer``) meet without layout round trips:

* a ``QLut`` that reads a ``Transpose`` is moved in front of it (a table lookup commutes with any
  permutation; its channel axis follows the permutation), which leaves ``Transpose -> Transpose`` pairs for
  ``cancel_transposes`` to remove;
* ``QLut(QLut(x))`` composes into one table.

Squeeze-excite's gate, ``Q(DQ(x) * DQ(s))`` with ``s`` one number per channel, becomes ``QChannelMulNHWC``
(channels-last, exact: the product and the quantisation are the float path's, see ``cnnjit.ir.ops.qint``).
"""

from __future__ import annotations

import numpy as np

from cnnjit.ir import Graph, Node, TensorType, Value, get_op

from .manager import Pass
from .qdq_to_integer import _only_user, _scalar_qparams

#: elementwise float ops whose other inputs (if any) may be constants; BatchNormalization is per channel
_UNARY = {"Relu", "Clip", "HardSwish", "HardSigmoid", "Sigmoid", "Tanh", "LeakyRelu", "Elu", "Softplus", "Neg",
          "Abs", "Identity"}
_BINARY = {"Add", "Sub", "Mul", "Div"}
_QINT = (np.dtype(np.uint8), np.dtype(np.int8))


def _channel_const(c: Value, shape: tuple[int, ...]) -> bool | None:
    """For a constant operand of an elementwise op on ``shape``: False if it is one number, True if it varies
    along axis 1 only (broadcast to ``shape``), None otherwise."""
    if c.type.size == 1:
        return False
    cs = c.shape
    if len(cs) > len(shape) or len(shape) < 2:
        return None
    full = (1,) * (len(shape) - len(cs)) + tuple(cs)
    if all(d == 1 for i, d in enumerate(full) if i != 1) and full[1] == shape[1]:
        return True
    return None


def _link(node: Node, x: Value) -> bool | None:
    """Whether ``node`` (reading ``x`` as its data input) is per channel (True), per tensor (False), or not
    tabulable (None)."""
    shape = x.shape
    if node.outputs[0].shape != shape or len(node.outputs) != 1 or node.outputs[0].dtype != x.dtype:
        return None
    if node.op in _UNARY:
        return False if node.inputs[0] is x and all(v is None or v.is_const for v in node.inputs[1:]) else None
    if node.op == "BatchNormalization":
        ok = node.inputs[0] is x and len(shape) >= 2 and all(v.is_const for v in node.inputs[1:])
        return True if ok else None
    if node.op in _BINARY and len(node.inputs) == 2:
        other = node.inputs[1] if node.inputs[0] is x else node.inputs[0]
        if other is x or not other.is_const:
            return None
        return _channel_const(other, shape)
    return None


class _Cone:
    """The float subgraph under a QuantizeLinear that depends on one quantized tensor ``x`` alone, elementwise:
    ``nodes`` (elementwise ops, inner ``Q -> DQ`` pairs, the root Q) and the ``leaves`` (DequantizeLinear
    nodes of ``x``). SiLU in QDQ form (``DQ(x)`` read by both ``Sigmoid -> Q -> DQ`` and ``Mul``) is one."""

    def __init__(self, q: Node, stop: frozenset[int] = frozenset()):
        self.stop = stop  # ids of quantized values not to trace through (read from outside the cone)
        self.nodes: dict[int, Node] = {q.id: q}
        self.leaves: dict[int, Node] = {}
        self.x: Value | None = None
        self.per_channel = False

    def visit(self, v: Value) -> bool:
        """Add ``v``'s producer (and what it reads) to the cone; False if it is not tabulable."""
        p = v.producer
        if p is None or p.id in self.nodes or p.id in self.leaves:
            return p is not None
        if p.op == "DequantizeLinear":
            return self._dequantize(p)
        if any(i is not None and not i.is_const and i.shape != v.shape for i in p.inputs):
            return False
        data = [i for i in p.inputs if i is not None and not i.is_const]
        link = _link(p, data[0]) if len(data) == 1 else _pair(p, data)
        if link is None:
            return False
        self.per_channel |= link
        self.nodes[p.id] = p
        return all(self.visit(i) for i in data)

    def _dequantize(self, dq: Node) -> bool:
        u = dq.inputs[0]
        if _scalar_qparams(dq) is None or u.dtype not in _QINT or dq.outputs[0].dtype != np.float32:
            return False
        q = u.producer  # an inner Q -> DQ pair (a quantized activation inside the cone) is traced through
        if (q is not None and q.op == "QuantizeLinear" and id(u) not in self.stop and _scalar_qparams(q) is not None
                and q.inputs[0].dtype == np.float32 and q.id not in self.nodes):
            saved = (dict(self.nodes), dict(self.leaves), self.x, self.per_channel)
            self.nodes.update({dq.id: dq, q.id: q})
            if self.visit(q.inputs[0]):
                return True
            self.nodes, self.leaves, self.x, self.per_channel = saved
        if self.x is not None and u is not self.x:
            return False
        self.x = u
        self.leaves[dq.id] = dq
        return True

    def leaks(self, graph: Graph, root: Node) -> list[Value]:
        """The values the cone's nodes make (but the root's) that are read outside the cone."""
        inside = set(self.nodes) | set(self.leaves)
        return [o for n in self.nodes.values() if n is not root for o in n.outputs
                if o in graph.outputs or any(u.id not in inside for u in o.users)]


def _cone(graph: Graph, q: Node) -> _Cone | None:
    """The largest closed cone under ``q``: an inner quantized value that is also read elsewhere becomes a
    leaf (then the cone must have no other input to be tabulable)."""
    stop: frozenset[int] = frozenset()
    for _ in range(8):
        cone = _Cone(q, stop)
        if not cone.visit(q.inputs[0]) or cone.x is None:
            return None
        leaks = cone.leaks(graph, q)
        if not leaks:
            return cone
        quantized = [v for v in leaks if v.producer is not None and v.producer.op == "QuantizeLinear"]
        if not quantized:
            return None
        stop |= {id(v) for v in quantized}
    return None


def _pair(node: Node, data: list[Value]) -> bool | None:
    """A binary elementwise op of two cone values of one shape: per tensor (False), else None."""
    if node.op in _BINARY and len(node.inputs) == 2 and node.outputs[0].shape == data[0].shape \
            and node.outputs[0].dtype == data[0].dtype:
        return False
    return None


def tabulate(x: Value, nodes: list[Node], per_channel: bool) -> np.ndarray:
    """The ``[rows, 256]`` table of the cone ``nodes`` (in graph order, the root Q last) on ``x``, evaluated
    with the ops' references: the 256 input bytes run along axis 0 (the batch, which every op treats
    independently) and the channels along axis 1."""
    rank = len(x.shape)
    C = x.shape[1] if per_channel else 1
    if rank == 0:
        shape: tuple[int, ...] = (256,)
    else:
        shape = (256, C) + (1,) * (rank - 2) if rank >= 2 else (256,)
    b = np.arange(256, dtype=np.uint8).view(x.dtype)
    env = {id(x): np.ascontiguousarray(np.broadcast_to(b.reshape((256,) + (1,) * (len(shape) - 1)), shape))}
    for n in nodes:
        ins = [None if v is None else env[id(v)] if id(v) in env else v.const for v in n.inputs]
        env[id(n.outputs[0])] = np.asarray(get_op(n.op).run(ins, n.attrs)[0])
    cur = env[id(nodes[-1].outputs[0])].astype(nodes[-1].outputs[0].dtype).reshape(256, -1)
    return np.ascontiguousarray(cur.T)


def _compose(inner: np.ndarray, outer: np.ndarray) -> np.ndarray:
    """The table of ``outer(inner(x))``; one row per channel if either is."""
    rows = max(inner.shape[0], outer.shape[0])
    a = np.broadcast_to(inner, (rows, 256)).view(np.uint8).astype(np.intp)
    o = np.broadcast_to(outer, (rows, 256))
    return np.ascontiguousarray(np.take_along_axis(o, a, axis=1))


class QDQToLut(Pass):
    name = "qdq_lut"
    fusion = True  # a DQ -> elementwise chain -> Q becomes one table lookup

    def apply(self, graph: Graph) -> None:
        for node in reversed(list(graph.nodes)):  # the last Q first: its cone may hold earlier Q -> DQ pairs
            if node.op == "QuantizeLinear" and node in graph.nodes:
                self._match(graph, node) or self._match_channel_mul(graph, node)
        changed = True
        while changed:
            changed = False
            for node in list(graph.nodes):
                if node.op == "QLut" and node in graph.nodes:
                    changed |= self._compose(graph, node) or self._hoist(graph, node)

    def _match(self, graph: Graph, q: Node) -> bool:
        if _scalar_qparams(q) is None or q.outputs[0].dtype not in _QINT or q.inputs[0].dtype != np.float32:
            return False
        cone = _cone(graph, q)
        if cone is None:
            return False
        x = cone.x
        if cone.per_channel and len(x.shape) < 2:
            return False
        order = [n for n in graph.nodes if n.id in cone.nodes or n.id in cone.leaves]
        table = tabulate(x, order, cone.per_channel)
        graph.insert_before(q, Node("QLut", [x, graph.const(table)], [q.outputs[0]],
                                    {"axis": 1 if cone.per_channel else 0}))
        graph.remove_nodes(list(cone.nodes.values()))
        graph.remove_nodes([d for d in cone.leaves.values() if not d.outputs[0].users
                            and d.outputs[0] not in graph.outputs])
        return True

    @staticmethod
    def _match_channel_mul(graph: Graph, q: Node) -> bool:
        """``Q(DQ(x) * DQ(s))`` with ``x`` ``[N, C, H, W]`` and ``s`` ``[N, C, 1, 1]`` (squeeze-excite's gate)
        -> ``QChannelMulNHWC`` between Transposes (which cancel against the integer layers around it)."""
        v = q.inputs[0]
        mul = v.producer
        qp = _scalar_qparams(q)
        if qp is None or mul is None or mul.op != "Mul" or len(mul.inputs) != 2 or not _only_user(graph, v, q) \
                or q.outputs[0].dtype not in _QINT or v.dtype != np.float32:
            return False
        dqs = [i.producer for i in mul.inputs]
        if any(d is None or d.op != "DequantizeLinear" or _scalar_qparams(d) is None or d.inputs[0].dtype not in
               _QINT or d.outputs[0].dtype != np.float32 for d in dqs):
            return False
        if len(v.shape) != 4 or dqs[0].outputs[0].shape != v.shape:
            dqs = dqs[::-1]
        (x, s), N, C = [d.inputs[0] for d in dqs], v.shape[0], v.shape[1]
        if len(v.shape) != 4 or x.shape != v.shape or s.shape != (N, C, 1, 1):
            return False

        def table(dq: Node) -> Value:
            b = np.arange(256, dtype=np.uint8).view(dq.inputs[0].dtype)
            vals = get_op("DequantizeLinear").run([b, *[i.const for i in dq.inputs[1:] if i is not None]], dq.attrs)
            return graph.const(np.asarray(vals[0], np.float32))

        to_nhwc = (0, 2, 3, 1)
        xn, sn, y = (Value(TensorType(t.dtype, (N, t.shape[2], t.shape[3], C))) for t in (x, s, q.outputs[0]))
        lo, hi = (-128, 127) if q.outputs[0].dtype == np.int8 else (0, 255)
        attrs = {"y_scale": qp[0], "y_zero_point": qp[1], "lo": lo, "hi": hi,
                 "dtype": "i8" if q.outputs[0].dtype == np.int8 else "u8"}
        graph.insert_before(q, Node("Transpose", [x], [xn], {"perm": to_nhwc}))
        graph.insert_before(q, Node("Transpose", [s], [sn], {"perm": to_nhwc}))
        graph.insert_before(q, Node("QChannelMulNHWC", [xn, sn, table(dqs[0]), table(dqs[1])], [y], attrs))
        graph.insert_before(q, Node("Transpose", [y], [q.outputs[0]], {"perm": (0, 3, 1, 2)}))
        graph.remove_node(q)
        graph.remove_node(mul)
        for d in dqs:
            if not d.outputs[0].users and d.outputs[0] not in graph.outputs:
                graph.remove_node(d)
        return True

    @staticmethod
    def _compose(graph: Graph, node: Node) -> bool:
        src = node.inputs[0].producer
        if src is None or src.op != "QLut" or not _only_user(graph, node.inputs[0], node):
            return False
        t_in, t_out = src.inputs[1].const, node.inputs[1].const
        axis = src.attrs["axis"] if t_in.shape[0] > 1 else node.attrs["axis"]
        if t_in.shape[0] > 1 and t_out.shape[0] > 1 and src.attrs["axis"] != node.attrs["axis"]:
            return False
        graph.set_input(node, 0, src.inputs[0])
        graph.set_input(node, 1, graph.const(_compose(t_in, t_out)))
        graph.set_attrs(node, axis=axis)
        graph.remove_node(src)
        return True

    @staticmethod
    def _hoist(graph: Graph, node: Node) -> bool:
        """``QLut(Transpose(x))`` -> ``Transpose(QLut(x))`` (the Transpose stays if it has other users)."""
        t = node.inputs[0].producer
        if t is None or t.op != "Transpose":
            return False
        x = t.inputs[0]
        perm = tuple(t.attrs["perm"])
        table = node.inputs[1]
        y = Value(TensorType(table.dtype, x.shape))
        graph.insert_before(node, Node("QLut", [x, table], [y], {"axis": perm[node.attrs["axis"]]}))
        graph.insert_before(node, Node("Transpose", [y], [node.outputs[0]], {"perm": perm}))
        graph.remove_node(node)
        if not t.outputs[0].users and t.outputs[0] not in graph.outputs:
            graph.remove_node(t)
        return True
