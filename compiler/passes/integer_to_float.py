"""Dynamic-quantization chains run in float: ``ConvInteger`` / ``MatMulInteger`` whose int32 result is only
cast to float32 (what onnxruntime's ``quantize_dynamic`` writes: ``DynamicQuantizeLinear -> ConvInteger ->
Cast -> Mul(scale) -> Add(bias)``) become a float ``Conv`` / ``MatMul`` of ``float(x) - float(x_zero_point)``
with the constant weights ``float(w - w_zero_point)`` (a 2-D MatMul as a ``Gemm``), so they run on the SIMD
float kernels.

Every operand is a small integer, so every product is exact in float32; the sums are exact while they stay
below 2**24 and otherwise rounded like the int32 -> float32 cast that followed (a relative difference of a few
float32 ulps, far below the quantization step). Zero padding stays zero after the zero point is subtracted,
as ConvInteger defines it. A fusion pass (``fuse=False`` keeps the exact integer kernels).

Not converted: a 2-D MatMulInteger with constant B and a group-1 1x1 ConvInteger with constant weights of
at least ``MIN_INT16_MACS`` multiply-adds. Their int16 kernels (``kernels/qgemm16.py``) are exact and faster
than the float GEMM (16 multiply-adds per ``vpmaddwd``, 32 per ``vpdpwssd``, against 8 / 16 per FMA), with
the weights in half the bytes.
"""

from __future__ import annotations

import numpy as np

from cnnjit.ir import Graph, Node, TensorType, Value

from .manager import Pass

#: below this many multiply-adds a MatMulInteger runs as a float GEMM (the int16 kernel's widening of A
#: and its packing are not worth it)
MIN_INT16_MACS = 32 * 1024
#: 1x1 ConvIntegers stay integer too (``pointwise_i16``) on maps of at least this many pixels (its tiles are
#: rows of pixel vectors: on smaller maps they idle lanes, where the float kernels put channels in the lanes:
#: MobileNetV3-small's 4x4 .. 16x16 1x1s), with at least this many output channels (X's repack into channel
#: pairs, a scalar pass over the input, is shared by them: the ddddocr CRNN's 512 -> 4096 LSTM projection over
#: 32 steps ran 1.27 ms against 1.56 as a float Conv, its 192 -> 48 1x1s at 16x64 no faster than float) and
#: this many multiply-adds
POINTWISE_MIN_PIXELS = 32
POINTWISE_MIN_CHANNELS = 256
POINTWISE_MIN_MACS = 1 << 20


def _float_weights(node: Node) -> np.ndarray | None:
    """``float32(w - w_zero_point)`` when both are constants (per-tensor, per output channel or column)."""
    w, wz = node.inputs[1], node.inputs[3]
    if not (w.is_const and wz.is_const):
        return None
    z = np.asarray(wz.const, np.float64)
    wv = np.asarray(w.const, np.float64)
    if z.size > 1:
        z = z.reshape((-1,) + (1,) * (wv.ndim - 1)) if node.op == "ConvInteger" else z.reshape(-1)
    return (wv - z).astype(np.float32)


def _cast_before_bias(graph: Graph, add: Node) -> None:
    """``Cast(f32)(ConvInteger + int32 bias)`` (older ``quantize_dynamic`` exports add the bias, quantized
    to int32 with the run-time input scale, before the cast) as ``Cast(f32)(ConvInteger) + float(bias)``,
    the form ``apply`` turns into a float Conv; the same for ``MatMulInteger``. Both sums are of integers
    in float32: exact below 2**24, else rounded like the cast that followed."""
    if add.op != "Add" or len(add.inputs) != 2:
        return
    acc = next((v for v in add.inputs if v.producer is not None
                and v.producer.op in ("ConvInteger", "MatMulInteger")), None)
    bias = next((v for v in add.inputs if v is not acc), None)
    out = add.outputs[0]
    if (acc is None or bias is None or bias.dtype.kind not in "iu" or len(acc.users) != 1
            or out.shape != acc.shape or out in graph.outputs or not out.users
            or any(u.op != "Cast" or u.outputs[0].dtype != np.float32 for u in out.users)):
        return
    f32 = np.dtype(np.float32)
    accf, y = Value(TensorType(f32, acc.shape)), Value(TensorType(f32, out.shape))
    graph.insert_before(add, Node("Cast", [acc], [accf], {"to": "f32"}))
    if bias.is_const:
        biasf = graph.const(np.asarray(bias.const, f32))
    else:  # rounded from the float bias with the run-time input scale: an integer, exact in float32
        biasf = Value(TensorType(f32, bias.shape))
        graph.insert_before(add, Node("Cast", [bias], [biasf], {"to": "f32"}))
    graph.insert_before(add, Node("Add", [accf, biasf], [y], {}, add.name))
    for u in list(out.users):
        graph.replace_all_uses(u.outputs[0], y)
        graph.remove_node(u)
    graph.remove_node(add)


def int16_matmul_fits(node: Node) -> bool:
    """A 2-D MatMulInteger of 8-bit A by a constant 8-bit B with one A zero point and a constant B zero
    point (per tensor or per column): what the int16 kernel (``packed_matmul_i16``) computes. Target-free:
    this pass keeps such nodes integer (from ``MIN_INT16_MACS`` multiply-adds)."""
    if node.op != "MatMulInteger" or len(node.inputs) < 3:
        return False
    A, B, az = node.inputs[:3]
    bz = node.inputs[3] if len(node.inputs) > 3 else None
    if len(A.shape) != 2 or len(B.shape) != 2 or not B.is_const or az.type.size != 1:
        return False
    if A.dtype not in (np.uint8, np.int8) or B.dtype not in (np.uint8, np.int8):
        return False
    return bz is None or (bz.is_const and bz.type.size in (1, B.shape[1]))


def int16_pointwise_fits(node: Node) -> bool:
    """A group-1 1x1 ConvInteger (stride 1, no padding, any number of spatial axes) of 8-bit x with constant
    8-bit weights, one x zero point and a constant weight zero point (per tensor or per output channel),
    exact (not ``saturate``): what ``pointwise_i16`` computes."""
    if node.op != "ConvInteger":
        return False
    x, w, xz, wz = node.inputs
    a = node.attrs
    return (len(x.shape) >= 3 and w.is_const and wz.is_const and xz.type.size == 1 and a["group"] == 1
            and not a.get("saturate")
            and all(k == 1 for k in w.shape[2:]) and all(v == 1 for v in a["strides"])
            and not any(a["pads"]) and x.dtype in (np.uint8, np.int8) and w.dtype in (np.uint8, np.int8)
            and wz.type.size in (1, w.shape[0]))


def _keep_integer(node: Node) -> bool:
    """A MatMulInteger / 1x1 ConvInteger the int16 kernels take, large enough for them to beat the float
    GEMM."""
    if int16_matmul_fits(node):
        A, B = node.inputs[0], node.inputs[1]
        return int(A.shape[0]) * int(A.shape[1]) * int(B.shape[1]) >= MIN_INT16_MACS
    if int16_pointwise_fits(node):
        y = node.outputs[0]
        pixels = int(np.prod(y.shape[2:], dtype=np.int64))
        return (pixels >= POINTWISE_MIN_PIXELS and int(y.shape[1]) >= POINTWISE_MIN_CHANNELS
                and int(np.prod(y.shape, dtype=np.int64)) * int(node.inputs[1].shape[1]) >= POINTWISE_MIN_MACS)
    return False


class IntegerToFloat(Pass):
    name = "integer_to_float"
    fusion = True

    def apply(self, graph: Graph) -> None:
        for node in list(graph.nodes):
            _cast_before_bias(graph, node)
        for node in list(graph.nodes):
            if node.op not in ("ConvInteger", "MatMulInteger"):
                continue
            out = node.outputs[0]
            users = list(out.users)
            if not users or out in graph.outputs or any(
                    u.op != "Cast" or u.outputs[0].dtype != np.float32 for u in users):
                continue
            if _keep_integer(node):  # exact and faster as int16 pairs, weights half the bytes
                continue
            if node.attrs.get("saturate"):  # onnxruntime's int16 saturation, which a float Conv would not do
                continue
            wf = _float_weights(node)
            x, xz = node.inputs[0], node.inputs[2]
            if wf is None or xz.type.size != 1:
                continue
            f32 = np.dtype(np.float32)
            xf = Value(TensorType(f32, x.shape))
            graph.insert_before(node, Node("Cast", [x], [xf], {"to": "f32"}))
            if xz.is_const:
                zf = graph.const(np.asarray(xz.const, np.float32).reshape(()))
            else:
                zf = Value(TensorType(f32, xz.shape))
                graph.insert_before(node, Node("Cast", [xz], [zf], {"to": "f32"}))
            xs = Value(TensorType(f32, x.shape))
            graph.insert_before(node, Node("Sub", [xf, zf], [xs]))
            y = Value(TensorType(f32, out.shape))
            if node.op == "ConvInteger":
                attrs = dict(node.attrs)
                graph.insert_before(node, Node("Conv", [xs, graph.const(wf)], [y], {**attrs, "post": ()}, node.name))
            elif len(x.shape) == 2 and wf.ndim == 2:  # a Gemm runs on the SIMD micro-kernel
                graph.insert_before(node, Node("Gemm", [xs, graph.const(wf)], [y], {
                    "alpha": 1.0, "beta": 1.0, "transA": 0, "transB": 0, "post": ()}, node.name))
            else:
                graph.insert_before(node, Node("MatMul", [xs, graph.const(wf)], [y], {"post": ()}, node.name))
            for u in users:
                graph.replace_all_uses(u.outputs[0], y)
                graph.remove_node(u)
            graph.remove_node(node)
            graph.note_fused(y.producer, node.op)
