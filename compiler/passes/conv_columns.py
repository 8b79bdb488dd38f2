"""A Kx1 Conv on a plane one column wide as a 1xK Conv on a plane one row high: the same memory, transposed view.

Exporters write a 1-D convolution over time as a 2-D one on ``N x C x L x 1`` (tf2onnx: Keras' Conv1D). Every
SIMD Conv kernel vectorises along a row; a row of one pixel leaves all lanes but one idle (Magika's 256 -> 512
5x1 at 512x1: 5.4 GFLOP/s in its schedule on ``cblock``, 21 alone; as 1x5 at 1x512 ``simd_conv`` runs 55,
``conv1d_packed``, which takes such Conv1D layers now, 91-94; AVX2). With a width of 1, ``N x C x L x 1`` and
``N x C x 1 x L`` are the same bytes, so the Conv is rewritten on Reshape views (``view`` ops: no data moves) of
its input, residual inputs and output, with its kernel, strides, dilations and pads moved from the height to
the width (the frontend's own 1-D Conv already has height 1). Runs after epilogue fusion: the fused activations
and residuals go along.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from cnnjit.ir import Graph, Node, TensorType, Value

from .manager import Pass


def _column_conv(node: Node) -> bool:
    """A 4-D float Conv with constant weights, a kernel taller than 1 and one column wide, on a one-column
    input without column padding (its output is one column wide too)."""
    if node.op != "Conv" or len(node.inputs[0].shape) != 4 or not node.inputs[1].is_const:
        return False
    kh, kw = node.attrs["kernel_shape"]
    pads = node.attrs["pads"]
    return (node.inputs[0].dtype == np.float32 and node.inputs[0].shape[3] == 1 and kw == 1 and kh > 1
            and pads[1] == 0 and pads[3] == 0 and node.outputs[0].shape[3] == 1)


def _swap(pair: tuple[int, int] | list[int]) -> tuple[int, int]:
    return (int(pair[1]), int(pair[0]))


class ConvColumns(Pass):
    name = "conv_columns"
    fusion = True

    def apply(self, graph: Graph) -> None:
        for node in [n for n in graph.nodes if _column_conv(n)]:
            self._transpose(graph, node)

    @staticmethod
    def _view(graph: Graph, anchor: Node, v: Value) -> Value:
        """``v`` (``N x C x L x 1``) as ``N x C x 1 x L``: a constant reshaped, else a Reshape before ``anchor``."""
        n, c, h, _ = v.shape
        if v.is_const:
            return graph.const(np.ascontiguousarray(v.const.reshape(n, c, 1, h)))
        out = Value(TensorType(v.dtype, (n, c, 1, h)))
        graph.insert_before(anchor, Node("Reshape", [v], [out], {"shape": (n, c, 1, h)}))
        return out

    def _transpose(self, graph: Graph, node: Node) -> None:
        """``node`` as a new Conv on the views, its output reshaped back into a value that replaces ``node``'s."""
        a, wt, y = node.attrs, node.inputs[1], node.outputs[0]
        m, cg, kh, _ = wt.shape
        pads = a["pads"]
        attrs = dict(a, kernel_shape=(1, kh), strides=_swap(a["strides"]), dilations=_swap(a["dilations"]),
                     pads=(0, int(pads[0]), 0, int(pads[2])))
        n, mo, oh, _ = y.shape
        conv_on_views(graph, node, lambda v: self._view(graph, node, v),
                      graph.const(np.ascontiguousarray(wt.const.reshape(m, cg, 1, kh))), attrs, (n, mo, 1, oh),
                      "column view")


def conv_on_views(graph: Graph, node: Node, view, weights: Value, attrs: dict, shape: tuple[int, ...],
                  why: str) -> None:
    """Replace the Conv ``node`` by a Conv of ``attrs`` and ``weights`` on ``view(v)`` of its input and of its
    residual inputs (the values of its output's shape; its fused residual steps follow them), whose output of
    ``shape`` is reshaped back into a value that replaces ``node``'s; noted as fused ``why``."""
    a, y = node.attrs, node.outputs[0]
    inputs = [view(node.inputs[0]), weights]
    views: dict[int, Value] = {}
    for v in node.inputs[2:]:  # the bias, then the residuals (of the output's shape)
        if v is not None and v.shape == y.shape:
            views[v.id] = view(v)
        inputs.append(views.get(v.id, v) if v is not None else v)
    post = tuple(dataclasses.replace(s, value=views[s.value.id]) if s.residual else s for s in a.get("post", ()))
    attrs = {**attrs, **({"post": post} if post else {})}
    flat = Value(TensorType(y.dtype, shape))
    conv = graph.insert_before(node, Node("Conv", inputs, [flat], attrs, node.name))
    conv.meta.update(node.meta)
    out = Value(y.type, y.name)
    graph.insert_before(node, Node("Reshape", [flat], [out], {"shape": tuple(y.shape)}))
    graph.replace_all_uses(y, out)
    graph.remove_node(node)
    graph.note_fused(conv, why)
