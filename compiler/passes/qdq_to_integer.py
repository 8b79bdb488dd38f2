"""QDQ patterns to integer kernels: ``DequantizeLinear -> op -> QuantizeLinear`` becomes one integer op.

Recognised (after import, where DequantizeLinear of initializers is already folded; the frontend records
the integers behind each folded constant in ``Graph.dequantized``, see ``cnnjit.ir.Dequantized``):

* ``DQ(x) -> Conv(W, B) [-> Relu | Clip] -> Q``  (2-D convolutions, any group) -> ``QConvNHWC``
* ``DQ(x) -> Gemm(W, C) | MatMul(W) [-> Add(bias)] [-> Relu | Clip] -> Q``  (x 2-D) -> ``QConvNHWC`` 1x1
* ``DQ(a), DQ(b) -> Add [-> Relu] -> Q``  -> ``QAdd``
* ``DQ(x) -> AveragePool | GlobalAveragePool [-> Relu | Clip] -> Q``  (2-D, no dilation, floor mode)
  -> ``QAvgPoolNHWC`` (which evaluates onnxruntime's float path exactly, see ``cnnjit.ir.ops.qint``); also
  with a ``Reshape`` (Flatten) between the pool and Q (classifier heads), reshaping the integer result

Requirements: activation scales and zero points are per-tensor constants, weights are per-channel (or
per-tensor) int8/uint8 constants whose ``w - w_zero_point`` fits int8, the bias (if any) is a constant (its
int32 integers are used when it came from a DequantizeLinear, as onnxruntime does; a float bias is
quantized with scale ``x_scale * w_scale``). Anything else keeps the float path (DQ -> float op -> Q).

Convolutions run channels-last: the pass inserts ``Transpose`` to NHWC in front and back to NCHW behind,
and reuses the NHWC tensor of a producer that is itself integer, so between integer layers data stays
integer and channels-last; transposes remain only where the graph changes domain.
"""

from __future__ import annotations

import numpy as np

from cnnjit.ir import Graph, Node, TensorType, Value
from cnnjit.ir.ops.quant import QUANT_RANGES
from cnnjit.ir.types import short_name

from .manager import Pass

TO_NHWC = (0, 2, 3, 1)
TO_NCHW = (0, 3, 1, 2)


def _scalar_qparams(dq: Node | None) -> tuple[float, int] | None:
    """(scale, zero point) of a per-tensor DequantizeLinear/QuantizeLinear with constant parameters."""
    if dq is None or len(dq.inputs) < 2 or not dq.inputs[1].is_const or dq.inputs[1].type.size != 1:
        return None
    zp = dq.inputs[2] if len(dq.inputs) > 2 else None
    if zp is not None and (not zp.is_const or zp.type.size != 1):
        return None
    if dq.op == "QuantizeLinear" and (dq.attrs.get("block_size") or dq.attrs.get("precision")):
        return None
    return float(dq.inputs[1].const.reshape(())), 0 if zp is None else int(zp.const.reshape(()))


def _only_user(graph: Graph, v: Value, user: Node) -> bool:
    return v.users == [user] and v not in graph.outputs


def _weight_ints(graph: Graph, w: Value, axis: int, M: int) -> tuple[np.ndarray, np.ndarray] | None:
    """(w - w_zero_point as int8, per-output-channel scale f32[M]) for a constant folded from a DQ."""
    org = graph.dequantized_origin(w)
    if org is None:
        return None
    q, scale, zp, qaxis = org.q, org.scale, org.zero_point, org.axis
    if q.dtype not in (np.int8, np.uint8) or q.shape != w.shape:
        return None
    if scale.size not in (1, M) or (scale.size > 1 and qaxis != axis):
        return None
    shape = [1] * q.ndim
    shape[axis] = -1
    z = np.zeros(1, np.int32) if zp is None else zp.astype(np.int32).reshape(-1)
    if z.size not in (1, M):
        return None
    qi = q.astype(np.int32) - (z.reshape(shape) if z.size > 1 else z.reshape(()))
    if qi.min(initial=0) < -128 or qi.max(initial=0) > 127:
        return None
    s = np.broadcast_to(scale.astype(np.float32).reshape(-1), (M,)).copy()
    return qi.astype(np.int8), s


def _bias_ints(graph: Graph, b: Value | None, M: int, sxw: np.ndarray) -> np.ndarray | None:
    """The int32 bias (zeros if absent); None if it is not a usable constant."""
    if b is None:
        return np.zeros(M, np.int32)
    if not b.is_const or b.type.size not in (1, M):
        return None
    org = graph.dequantized_origin(b)
    if org is not None and org.q.dtype == np.int32 and org.q.size == b.type.size:
        q = org.q.astype(np.int64).reshape(-1)
        if org.zero_point is not None:
            q = q - org.zero_point.astype(np.int64).reshape(-1)
        return np.broadcast_to(q, (M,)).astype(np.int32)
    bf = np.broadcast_to(b.const.astype(np.float64).reshape(-1), (M,))
    v = np.rint(bf / sxw.astype(np.float64))
    if np.abs(v).max(initial=0) >= 2**31 - 1:
        return None
    return v.astype(np.int32)


def _clamp_of(node: Node, sy: float, zy: int, lo: int, hi: int) -> tuple[int, int] | None:
    """The integer range of Q(act(v)) for a Relu/Clip ``node`` (exact, as quantization is monotonic)."""
    def q(v: float) -> int:
        return int(np.clip(np.rint(np.float32(v) / np.float32(sy)) + zy, lo, hi))

    if node.op == "Relu":
        return max(lo, q(0.0)), hi
    if node.op == "Clip":
        a, b = node.attrs.get("min"), node.attrs.get("max")
        return (lo if a is None else max(lo, q(a))), (hi if b is None else min(hi, q(b)))
    return None


class QDQToInteger(Pass):
    name = "qdq_to_integer"
    fusion = True  # a DQ -> op -> Q chain becomes one integer node

    def apply(self, graph: Graph) -> None:
        self.nhwc: dict[int, Value] = {}
        for node in list(graph.nodes):
            if node.op == "QuantizeLinear" and node in graph.nodes:
                self._match(graph, node)

    # -- layout helpers -------------------------------------------------------------------------------
    def _to_nhwc(self, graph: Graph, v: Value, anchor: Node) -> Value:
        p = v.producer
        if p is not None and p.op == "Transpose" and tuple(p.attrs["perm"]) == TO_NCHW:
            return p.inputs[0]
        if v.id in self.nhwc:
            return self.nhwc[v.id]
        s = v.shape
        out = Value(TensorType(v.dtype, (s[0], s[2], s[3], s[1])))
        graph.insert_before(anchor, Node("Transpose", [v], [out], {"perm": TO_NHWC}))
        self.nhwc[v.id] = out
        return out

    @staticmethod
    def _emit(graph: Graph, anchor: Node, op: str, inputs: list, attrs: dict, out_type: TensorType) -> Value:
        out = Value(out_type)
        graph.insert_before(anchor, Node(op, inputs, [out], attrs))
        return out

    # -- matching -------------------------------------------------------------------------------------
    def _match(self, graph: Graph, q: Node) -> bool:
        qp = _scalar_qparams(q)
        if qp is None or q.attrs["dtype"] not in ("u8", "i8"):
            return False
        sy, zy = qp
        lo, hi = QUANT_RANGES[q.attrs["dtype"]]
        chain = [q]
        v = q.inputs[0]
        p = v.producer
        if p is None or not _only_user(graph, v, q):
            return False
        if p.op in ("Relu", "Clip"):
            r = _clamp_of(p, sy, zy, lo, hi)
            if r is None or p.inputs[0].producer is None or not _only_user(graph, p.inputs[0], p):
                return False
            lo, hi = r
            chain.append(p)
            p = p.inputs[0].producer
        bias_add = None
        if p.op == "Add" and len(p.inputs) == 2 and any(i.is_const for i in p.inputs):
            other = p.inputs[0] if p.inputs[1].is_const else p.inputs[1]
            mm = other.producer
            if mm is None or mm.op != "MatMul" or not _only_user(graph, other, p):
                return False
            bias_add = p.inputs[1] if p.inputs[1].is_const else p.inputs[0]
            chain.append(p)
            p = mm
        if p.op == "Add" and bias_add is None:
            return self._match_add(graph, q, chain, p, sy, zy, lo, hi)
        if p.op == "Reshape" and bias_add is None and len(chain) == 1:  # pool -> Flatten -> Q (classifier heads)
            src = p.inputs[0].producer
            if src is not None and src.op in ("AveragePool", "GlobalAveragePool") \
                    and _only_user(graph, p.inputs[0], p):
                chain.append(p)
                return self._match_pool(graph, q, chain, src, sy, zy, lo, hi, reshape=True)
        if p.op in ("AveragePool", "GlobalAveragePool") and bias_add is None:
            return self._match_pool(graph, q, chain, p, sy, zy, lo, hi)
        if p.op not in ("Conv", "Gemm", "MatMul") or p.attrs.get("post"):
            return False
        chain.append(p)
        return self._match_linear(graph, q, chain, p, bias_add, sy, zy, lo, hi)

    def _match_add(self, graph: Graph, q: Node, chain: list, add: Node, sy: float, zy: int, lo: int,
                   hi: int) -> bool:
        if len(add.inputs) != 2 or not _only_user(graph, add.outputs[0], chain[-1]):
            return False
        dqs = [i.producer for i in add.inputs]
        params = [_scalar_qparams(d) if d is not None and d.op == "DequantizeLinear" else None for d in dqs]
        if any(p is None for p in params) or add.inputs[0].shape != add.inputs[1].shape \
                or add.outputs[0].shape != add.inputs[0].shape:
            return False
        a, b = dqs[0].inputs[0], dqs[1].inputs[0]
        if a.dtype not in (np.uint8, np.int8) or b.dtype not in (np.uint8, np.int8) or a.dtype != b.dtype:
            return False
        f = np.float32
        attrs = {"a_zero_point": params[0][1], "b_zero_point": params[1][1], "y_zero_point": zy,
                 "ra": float(f(f(params[0][0]) / f(sy))), "rb": float(f(f(params[1][0]) / f(sy))),
                 "lo": lo, "hi": hi, "dtype": q.attrs["dtype"]}
        out = q.outputs[0]
        if len(a.shape) == 4:
            an, bn = self._to_nhwc(graph, a, q), self._to_nhwc(graph, b, q)
            y = self._emit(graph, q, "QAdd", [an, bn], attrs, TensorType(out.dtype, an.shape))
            node = Node("Transpose", [y], [out], {"perm": TO_NCHW})
            self.nhwc[out.id] = y
        else:
            node = Node("QAdd", [a, b], [out], attrs)
        graph.insert_before(q, node)
        for n in chain + [add]:
            graph.remove_node(n)
        return True

    def _match_pool(self, graph: Graph, q: Node, chain: list, pool: Node, sy: float, zy: int, lo: int,
                    hi: int, reshape: bool = False) -> bool:
        """``reshape``: a Reshape (Flatten) sits between the pool and Q; it commutes with the per-tensor Q and
        is applied to the integer result (straight from NHWC when the pool output is 1x1)."""
        if not _only_user(graph, pool.outputs[0], chain[-1]):
            return False
        dq = pool.inputs[0].producer
        xp = _scalar_qparams(dq) if dq is not None and dq.op == "DequantizeLinear" else None
        if xp is None:
            return False
        xq = dq.inputs[0]
        if xq.dtype not in (np.uint8, np.int8) or len(xq.shape) != 4:
            return False
        if pool.op == "GlobalAveragePool":
            k, s, pads, incl = list(xq.shape[2:]), [1, 1], [0, 0, 0, 0], 0
        else:
            a = pool.attrs
            if len(a["kernel_shape"]) != 2 or a["ceil_mode"] or any(d != 1 for d in a["dilations"]):
                return False
            k, s, pads, incl = list(a["kernel_shape"]), list(a["strides"]), list(a["pads"]), a["count_include_pad"]
        if any(pd >= kk for pd, kk in zip(pads, k + k)):
            return False
        out = q.outputs[0]
        ps = pool.outputs[0].shape  # NCHW
        attrs = {"kernel_shape": k, "strides": s, "pads": pads, "count_include_pad": int(bool(incl)),
                 "x_scale": xp[0], "x_zero_point": xp[1], "y_scale": sy, "y_zero_point": zy, "lo": lo, "hi": hi,
                 "dtype": q.attrs["dtype"]}
        xn = self._to_nhwc(graph, xq, q)
        y = self._emit(graph, q, "QAvgPoolNHWC", [xn], attrs, TensorType(out.dtype, (ps[0], ps[2], ps[3], ps[1])))
        if not reshape:
            graph.insert_before(q, Node("Transpose", [y], [out], {"perm": TO_NCHW}))
            self.nhwc[out.id] = y
        else:
            if ps[2] * ps[3] != 1:  # NHWC and NCHW orders differ: back to NCHW before the reshape
                y = self._emit(graph, q, "Transpose", [y], {"perm": TO_NCHW}, TensorType(out.dtype, tuple(ps)))
            graph.insert_before(q, Node("Reshape", [y], [out], {"shape": tuple(out.shape)}))
        for n in chain + [pool]:
            graph.remove_node(n)
        return True

    def _match_linear(self, graph: Graph, q: Node, chain: list, p: Node, bias_add: Value | None, sy: float,
                      zy: int, lo: int, hi: int) -> bool:
        for a, b in zip(chain[1:], chain[:-1]):  # every intermediate value has exactly one user
            if not _only_user(graph, a.outputs[0], b):
                return False
        x = p.inputs[0]
        dq = x.producer
        if dq is None or dq.op != "DequantizeLinear":
            return False
        xp = _scalar_qparams(dq)
        xq = dq.inputs[0]
        if xp is None or xq.dtype not in (np.uint8, np.int8):
            return False
        sx, zx = xp
        w = p.inputs[1]
        if w is None or not w.is_const:
            return False
        if p.op == "Conv":
            if len(x.shape) != 4:
                return False
            M = w.shape[0]
            wi = _weight_ints(graph, w, 0, M)
            if wi is None:
                return False
            wq = wi[0].transpose(0, 2, 3, 1)  # M, KH, KW, C/g
            b = p.inputs[2] if len(p.inputs) > 2 else None
        else:
            if len(x.shape) != 2 or len(w.shape) != 2:
                return False
            if p.op == "Gemm":
                a = p.attrs
                if a["transA"] or a["alpha"] != 1.0 or (len(p.inputs) > 2 and p.inputs[2] is not None
                                                        and a["beta"] != 1.0):
                    return False
                trans = bool(a["transB"])
                b = p.inputs[2] if len(p.inputs) > 2 else None
            else:
                trans = False
                b = bias_add
            M = w.shape[0] if trans else w.shape[1]
            wi = _weight_ints(graph, w, 0 if trans else 1, M)
            if wi is None:
                return False
            wm = wi[0] if trans else wi[0].T
            wq = np.ascontiguousarray(wm).reshape(M, 1, 1, -1)
            if b is not None and b.type.size not in (1, M):
                return False
        sw = wi[1]
        f = np.float32
        sxw = (f(sx) * sw.astype(f)).astype(f)
        mult = (sxw / f(sy)).astype(f)
        bias = _bias_ints(graph, b, M, sxw)
        if bias is None:
            return False
        out = q.outputs[0]
        if p.op == "Conv":
            a = p.attrs
            if len(a["strides"]) != 2:
                return False
            xn = self._to_nhwc(graph, xq, q)
            group = a["group"]
            pads = list(a["pads"])
            strides, dil = list(a["strides"]), list(a["dilations"])
            y_shape = (out.shape[0], out.shape[2], out.shape[3], out.shape[1])
        else:
            N, K = x.shape
            xn = self._emit(graph, q, "Reshape", [xq], {"shape": (N, 1, 1, K)}, TensorType(xq.dtype, (N, 1, 1, K)))
            group, pads, strides, dil = 1, [0, 0, 0, 0], [1, 1], [1, 1]
            y_shape = (N, 1, 1, M)
        attrs = {"strides": strides, "pads": pads, "dilations": dil, "group": group, "x_zero_point": zx,
                 "y_zero_point": zy, "lo": lo, "hi": hi, "dtype": short_name(out.dtype)}
        y = self._emit(graph, q, "QConvNHWC", [xn, graph.const(wq), graph.const(bias), graph.const(mult)], attrs,
                       TensorType(out.dtype, y_shape))
        if p.op == "Conv":
            node = Node("Transpose", [y], [out], {"perm": TO_NCHW})
            self.nhwc[out.id] = y
        else:
            node = Node("Reshape", [y], [out], {"shape": tuple(out.shape)})
        graph.insert_before(q, node)
        for n in chain:
            graph.remove_node(n)
        return True
