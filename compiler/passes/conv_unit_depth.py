"""A 3-D Conv on one frame (input and output depth 1, kernel depth 1) as a 2-D Conv on the same memory.

Video and frame models (RivaGAN's watermark encoder / decoder in invisible-watermark) run ``N x C x 1 x H x W``
through 3-D Convs of kernel ``1 x KH x KW``: only the generic kernel takes a 5-D Conv (RivaGAN: 3-4x
onnxruntime's time). With a depth of 1, ``N x C x 1 x H x W`` and ``N x C x H x W`` are the same bytes, so the
Conv is rewritten on Reshape views (``view`` ops: no data moves) of its input, residual inputs and output,
its depth axis dropped from the kernel, strides, dilations and pads; every 2-D variant then applies. Runs with
``conv_columns``, after epilogue fusion: the fused activations and residuals go along.
"""

from __future__ import annotations

import numpy as np

from cnnjit.ir import Graph, Node, TensorType, Value

from .conv_columns import conv_on_views
from .manager import Pass


def _frame_conv(node: Node) -> bool:
    """A 5-D float Conv with constant weights, kernel depth 1 and no depth padding on a depth-1 input."""
    if node.op != "Conv" or len(node.inputs[0].shape) != 5 or not node.inputs[1].is_const:
        return False
    a = node.attrs
    return (node.inputs[0].dtype == np.float32 and node.inputs[0].shape[2] == 1 and a["kernel_shape"][0] == 1
            and a["pads"][0] == 0 and a["pads"][3] == 0 and node.outputs[0].shape[2] == 1)


def _frame(v: Value) -> tuple[int, ...]:
    """``v``'s shape without its depth axis (``N x C x 1 x H x W`` -> ``N x C x H x W``)."""
    n, c, _, h, w = v.shape
    return (n, c, h, w)


class ConvUnitDepth(Pass):
    name = "conv_unit_depth"
    fusion = True

    def apply(self, graph: Graph) -> None:
        for node in [n for n in graph.nodes if _frame_conv(n)]:
            a = node.attrs
            p = a["pads"]
            attrs = dict(a, kernel_shape=tuple(a["kernel_shape"][1:]), strides=tuple(a["strides"][1:]),
                         dilations=tuple(a["dilations"][1:]), pads=(p[1], p[2], p[4], p[5]))
            conv_on_views(graph, node, lambda v, node=node: _view(graph, node, v),
                          graph.const(np.ascontiguousarray(node.inputs[1].const[:, :, 0])), attrs,
                          _frame(node.outputs[0]), "frame view")


def _view(graph: Graph, anchor: Node, v: Value) -> Value:
    """``v`` without its depth axis: a constant reshaped, else a Reshape before ``anchor``."""
    shape = _frame(v)
    if v.is_const:
        return graph.const(np.ascontiguousarray(v.const.reshape(shape)))
    out = Value(TensorType(v.dtype, shape))
    graph.insert_before(anchor, Node("Reshape", [v], [out], {"shape": shape}))
    return out
