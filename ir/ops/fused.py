"""Ops that stand for a group of ops computed together by one kernel (made by fusion passes only).

``Attention`` is ``Softmax(scale * q @ k^T) @ v`` over the last axis (``compiler/passes/fuse_attention.py``):
one kernel per row block, so the scores never reach memory; inputs ``q, k, v`` (k not transposed), attribute
``scale``.

``BroadcastMap`` is a binary arithmetic op (``op``: Add, Sub, Mul, Div, Max, Min) of two tensors with numpy
broadcasting, followed by activation steps (``post``, as on a Conv, activations only): additive attention's
``Tanh(q[:, :, None] + k[:, None, :])``, a gate's ``Sigmoid(x + b)`` (``compiler/passes/fuse_broadcast_map.py``
makes it), so that one kernel computes the chain in vectors without the sum reaching memory. The reference is
the binary op's reference, then each step's.

``InvertedResidual`` is MobileNetV2/V3's block: a 1x1 expand Conv and its activations, a depthwise Conv
and its activations, a 1x1 project Conv and its epilogue (activations, a residual Add), as one node, so
that the kernel can compute it in bands of rows without the expanded tensors ever reaching memory
(``compiler/passes/fuse_blocks.py`` makes it). Inputs: ``x, w1, b1, w2, b2, w3, b3`` and the residuals of
``post`` (the project's epilogue, as on a Conv). Attributes: the depthwise conv's ``kernel_shape``,
``strides``, ``pads``, ``dilations``; ``expand_post`` and ``dw_post`` (activation steps only) and ``post``.
A block without an expand (MobileNetV2's first, MobileNetV3 / PP-LCNet's depthwise -> project) has no ``w1``
and ``b1`` (both inputs ``None``, ``expand_post`` empty): the depthwise conv reads ``x`` itself.
The reference is the three Conv references in a row: it shares no code with the kernel.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ..errors import ShapeError
from ..types import TensorType
from . import REQUIRED, broadcast_infer, defop, get_op, post_infer, post_ref

#: the inputs before the residuals, by name: the block's input, then the expand, depthwise and project
#: convs' weights and biases
BLOCK_INPUT_NAMES = ("x", "w1", "b1", "w2", "b2", "w3", "b3")
BLOCK_INPUTS = len(BLOCK_INPUT_NAMES)


def block_input(node: Any, name: str) -> Any:
    """The input ``name`` (one of ``BLOCK_INPUT_NAMES``) of an ``InvertedResidual`` node, so that readers name
    the weights they mean rather than their positions."""
    return node.inputs[BLOCK_INPUT_NAMES.index(name)]


def _dw_attrs(a: dict[str, Any], channels: int) -> dict[str, Any]:
    return {"kernel_shape": a["kernel_shape"], "strides": a["strides"], "pads": a["pads"],
            "dilations": a["dilations"], "group": channels, "post": a["dw_post"]}


def _pw_attrs(post: Any) -> dict[str, Any]:
    return {"kernel_shape": [1, 1], "strides": [1, 1], "pads": [0, 0, 0, 0], "dilations": [1, 1], "group": 1,
            "post": post}


def has_expand(node: Any) -> bool:
    """Whether an ``InvertedResidual`` node has its 1x1 expand (``w1``), or its depthwise conv reads ``x``."""
    return block_input(node, "w1") is not None


def _block_infer(types: list[TensorType | None], a: dict[str, Any]) -> list[TensorType]:
    x, w1, b1, w2, b2, w3, b3 = types[:BLOCK_INPUTS]
    if (any(t is None for t in (x, w2, b2, w3, b3)) or x.rank != 4 or (w1 is None) != (b1 is None)
            or (w1 is None and a["expand_post"])):
        raise ShapeError(f"InvertedResidual needs a 4-D x and every weight and bias (w1 and b1 both or neither, "
                         f"no expand epilogue without them), got {types}")
    conv = get_op("Conv")
    for steps in (a["expand_post"], a["dw_post"]):
        if any(s.residual for s in steps):
            raise ShapeError("InvertedResidual: the expand and depthwise epilogues are activations only")
    e = x if w1 is None else conv.infer_types([x, w1, b1], _pw_attrs(a["expand_post"]))[0]
    if w2.shape[0] != e.shape[1] or w2.shape[1] != 1:
        raise ShapeError(f"InvertedResidual: depthwise weights {w2} do not match {e.shape[1]} channels")
    d = conv.infer_types([e, w2, b2], _dw_attrs(a, e.shape[1]))[0]
    return conv.infer_types([d, w3, b3], _pw_attrs(()))


def _block_base(ins: list[np.ndarray | None], a: dict[str, Any]) -> np.ndarray:
    conv = get_op("Conv")
    x, w1, b1, w2, b2, w3, b3 = ins[:BLOCK_INPUTS]
    e = x if w1 is None else conv.run([x, w1, b1], _pw_attrs(a["expand_post"]))[0]
    d = conv.run([e, w2, b2], _dw_attrs(a, e.shape[1]))[0]
    return conv.run([d, w3, b3], _pw_attrs(()))[0]


defop("InvertedResidual", inputs=(BLOCK_INPUTS, BLOCK_INPUTS + 2),
      attrs={"kernel_shape": REQUIRED, "strides": REQUIRED, "pads": REQUIRED, "dilations": REQUIRED,
             "expand_post": (), "dw_post": (), "post": ()},
      infer=post_infer(_block_infer, BLOCK_INPUTS))(post_ref(_block_base, BLOCK_INPUTS))


# -- BroadcastMap ---------------------------------------------------------------------------------------------
#: the binary ops a ``BroadcastMap`` combines its operands with
BROADCAST_MAP_OPS = ("Add", "Sub", "Mul", "Div", "Max", "Min")


def _map_infer(types: list[TensorType | None], a: dict[str, Any]) -> list[TensorType]:
    if a["op"] not in BROADCAST_MAP_OPS:
        raise ShapeError(f"BroadcastMap: op {a['op']!r} is not one of {BROADCAST_MAP_OPS}")
    if any(s.residual for s in a["post"]):
        raise ShapeError("BroadcastMap: its epilogue is activations only")
    return broadcast_infer(types, a)


def _map_base(ins: list[np.ndarray | None], a: dict[str, Any]) -> np.ndarray:
    return get_op(a["op"]).run(ins[:2], {})[0]


defop("BroadcastMap", inputs=(2, 2), attrs={"op": REQUIRED, "post": ()}, infer=post_infer(_map_infer, 2))(
    post_ref(_map_base, 2))


# -- Attention ------------------------------------------------------------------------------------------------
def _attention_infer(types: list[TensorType | None], a: dict[str, Any]) -> list[TensorType]:
    """``q [..., T, D]``, ``k [..., S, D]``, ``v [..., S, DV]`` with one batch shape: ``[..., T, DV]``."""
    q, k, v = types[:3]
    if (q.rank < 2 or k.rank != q.rank or v.rank != q.rank or q.shape[:-2] != k.shape[:-2]
            or q.shape[:-2] != v.shape[:-2] or q.shape[-1] != k.shape[-1] or k.shape[-2] != v.shape[-2]):
        raise ShapeError(f"Attention: q {q}, k {k}, v {v} are not [..., T, D], [..., S, D], [..., S, DV]")
    return [TensorType(q.dtype, q.shape[:-1] + v.shape[-1:])]


@defop("Attention", inputs=(3, 3), attrs={"scale": REQUIRED}, infer=_attention_infer)
def attention_ref(ins: list[np.ndarray | None], a: dict[str, Any]) -> np.ndarray:
    """``Softmax(scale * q @ k^T, last axis) @ v`` (``fuse_attention``'s group), in float64."""
    q, k, v = (x.astype(np.float64) for x in ins[:3])
    s = np.matmul(q, np.swapaxes(k, -1, -2)) * float(a["scale"])
    with np.errstate(invalid="ignore"):
        e = np.exp(s - s.max(-1, keepdims=True))
        return np.matmul(e / e.sum(-1, keepdims=True), v).astype(ins[0].dtype)
