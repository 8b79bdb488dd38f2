"""FLOPs of IR nodes: what ``cnnjit info``, ``inspect``, ``profile`` and ``bench`` count, the compiler's
thread split estimates a layer's time from (``threads.estimate_us``), and the bytes a node must move
(``profile``'s memory-bound flag). IR only: no compiler import, so ``cnnjit info`` stays quick. Public as
``cnnjit.flops``."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from .graph import Node

_ELEMENTWISE_1 = {"Abs", "Add", "Sub", "Mul", "Div", "Max", "Min", "Neg", "Relu", "LeakyRelu", "PRelu", "Clip",
                  "Sign", "Shrink", "Sqrt", "Pow", "Sum", "Mean", "QuantizeLinear", "DequantizeLinear",
                  "HardSigmoid", "HardSwish", "Elu", "Selu", "Sigmoid", "Tanh", "Exp", "Erf", "Gelu", "SiLU",
                  "Mish", "Softplus", "Cast", "BroadcastMap"}

#: FLOPs per element of the ops cnnjit computes with a vector-math function (``compiler/codegen/simd_math.py``):
#: that function's float arithmetic counted as the FMA peak counts it (an FMA 2, an add, subtract, multiply or
#: divide 1; range clamps, compares, selects, rounding and integer bit operations 0), so that a Tanh's "% of
#: peak" compares the work its kernel really does with the FMA peak rather than calling it one FLOP.
#: ``tests/test_vector_math.py`` recounts them from the functions' LLVM IR (``simd_math.arithmetic_flops``).
#: ``Gelu`` is the erf form (the tanh form: ``GELU_TANH_FLOPS``).
TRANSCENDENTAL_FLOPS = {"Exp": 21, "Tanh": 21, "Sigmoid": 23, "Erf": 23, "Gelu": 27, "SiLU": 20, "Mish": 26,
                        "Softplus": 55, "Elu": 40, "Selu": 41}
GELU_TANH_FLOPS = 29
#: FLOPs of ``vexpneg`` (Softmax's exp of ``x - max``, never positive) per element
EXP_NEG_FLOPS = 17
#: FLOPs per score of a Softmax / LogSoftmax: the max (1, as pooling counts a max), ``x - max``, the exp
#: (``EXP_NEG_FLOPS``), the sum and the scaling by ``1 / sum`` (LogSoftmax: the subtraction of ``max + log sum``)
SOFTMAX_FLOPS = 4 + EXP_NEG_FLOPS


def _prod(shape: Sequence[int]) -> int:
    return int(np.prod(shape, dtype=np.int64)) if len(shape) else 1


def node_flops(node: Node) -> int:
    """Approximate floating-point (or integer) operations of one IR node, fused epilogue included.

    2 x multiply-accumulates for Conv / ConvTranspose / Gemm / MatMul and their quantized forms; window
    size per output for pooling; one per output element for elementwise ops (and per fused epilogue step),
    except the transcendental ones (``TRANSCENDENTAL_FLOPS``: the arithmetic of their vector-math function,
    e.g. 21 for a Tanh); ``SOFTMAX_FLOPS`` (21) per element of a Softmax and per score of an Attention;
    three per element of a DynamicQuantizeLinear (its min, max and quantisation); a few per element for
    normalisations; 0 for data movement.
    """
    op = node.op
    ins = node.inputs
    y = node.outputs[0].shape if node.outputs else ()
    ny = _prod(y)
    flops = 0
    if op in ("Conv", "ConvInteger", "QConvNHWC") and ins[1] is not None:  # QConvNHWC weights: M, KH, KW, C/g
        flops = 2 * ny * _prod(ins[1].shape[1:])
    elif op == "QLinearConv":
        flops = 2 * ny * _prod(ins[3].shape[1:])
    elif op == "ConvTranspose":
        flops = 2 * _prod(ins[0].shape) * _prod(ins[1].shape[1:])
    elif op == "Gemm":
        a = ins[0].shape
        flops = 2 * ny * (a[0] if node.attrs.get("transA") else a[-1])
    elif op in ("MatMul", "MatMulInteger", "QLinearMatMul"):
        flops = 2 * ny * (ins[0].shape[-1] if ins[0].shape else 1)
    elif op in ("LSTMLoop", "GRULoop", "RNNLoop", "DQLSTMLoop"):  # the recurrent GEMVs: R @ h per step and batch entry
        flops = 2 * _prod(ins[0].shape[:2] if node.attrs.get("time_major") else ins[0].shape[1:]) * _prod(ins[1].shape)
    elif op in ("MaxPool", "AveragePool"):
        flops = ny * _prod(node.attrs.get("kernel_shape", ()))
    elif op in ("GlobalAveragePool", "GlobalMaxPool", "ReduceMean"):
        flops = _prod(ins[0].shape)
    elif op in ("BatchNormalization", "InstanceNormalization"):
        flops = 2 * ny
    elif op in ("Softmax", "LogSoftmax"):
        flops = SOFTMAX_FLOPS * ny
    elif op == "Attention":  # q @ k^T, the scale, the scores' softmax, @ v
        scores = _prod(ins[0].shape[:-1]) * ins[1].shape[-2]
        flops = 2 * scores * ins[0].shape[-1] + (1 + SOFTMAX_FLOPS) * scores + 2 * scores * ins[2].shape[-1]
    elif op == "DynamicQuantizeLinear":
        flops = 3 * _prod(ins[0].shape)
    elif op == "LRN":
        flops = ny * (int(node.attrs.get("size", 1)) + 3)
    elif op in _ELEMENTWISE_1:
        flops = ny * step_flops(op, node.attrs)
    elif op == "InvertedResidual":  # expand, depthwise and project convs, their activations
        e = _prod(ins[3].shape[:1]) * _prod(ins[0].shape[2:])  # the expanded tensor's elements
        d = _prod(ins[3].shape[:1]) * _prod(y[2:])  # the depthwise output's
        flops = 2 * d * _prod(ins[3].shape[1:]) + 2 * ny * _prod(ins[5].shape[1:])
        flops += 2 * e * _prod(ins[1].shape[1:]) if ins[1] is not None else 0  # no expand: x is depthwise's input
        flops += e * _steps_flops(node.attrs["expand_post"]) + d * _steps_flops(node.attrs["dw_post"])
    flops += ny * _steps_flops(node.attrs.get("post", ()) or ())
    return int(flops)


def _steps_flops(steps: Sequence[Any]) -> int:
    """FLOPs per element of a sequence of epilogue steps (``EpilogueStep``s)."""
    return sum(step_flops(st.op, dict(st.attrs)) for st in steps)


def step_flops(op: str, attrs: Mapping[str, Any] | None = None) -> int:
    """FLOPs per element of elementwise ``op`` (alone or as a fused epilogue step): ``TRANSCENDENTAL_FLOPS``
    for those computed with a vector-math function, else 1."""
    if op == "Gelu" and (attrs or {}).get("approximate") == "tanh":
        return GELU_TANH_FLOPS
    return TRANSCENDENTAL_FLOPS.get(op, 1)


_RECURRENT = ("LSTMLoop", "GRULoop", "RNNLoop", "DQLSTMLoop")


def node_bytes(node: Node) -> int:
    """The memory traffic one IR node cannot avoid: every distinct operand (weights included) read once and
    every result written once; a recurrence (``*Loop``) reads its recurrent weights ``R`` (input 1) once per
    step, since each step's ``R @ h_t`` waits for the step before. ``node_flops / node_bytes`` is the node's
    arithmetic intensity, which ``cnnjit profile`` compares with the machine balance."""
    seen: set[int] = set()
    total = 0
    for i, v in enumerate([*node.inputs, *node.outputs]):
        if v is None or id(v) in seen:
            continue
        seen.add(id(v))
        n = _prod(v.shape) * np.dtype(v.dtype).itemsize
        if node.op in _RECURRENT and i == 1:
            g = node.inputs[0].shape  # G [gates, T, B] or time-major [T, B, gates]: T steps
            n *= (g[0] if node.attrs.get("time_major") else g[1]) if len(g) > 1 else 1
        total += n
    return int(total)


__all__ = ["TRANSCENDENTAL_FLOPS", "GELU_TANH_FLOPS", "EXP_NEG_FLOPS", "SOFTMAX_FLOPS", "node_flops", "step_flops",
           "node_bytes"]
