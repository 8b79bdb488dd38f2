"""FLOPs of IR nodes: what ``cnnjit info``, ``inspect``, ``profile`` and ``bench`` count, and the bytes a
node must move (``profile``'s memory-bound flag). IR only: no compiler import, so ``cnnjit info`` stays quick."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from cnnjit.ir import Node

_ELEMENTWISE_1 = {"Abs", "Add", "Sub", "Mul", "Div", "Max", "Min", "Neg", "Relu", "LeakyRelu", "PRelu", "Clip",
                  "Sign", "Shrink", "Sqrt", "Pow", "Sum", "Mean", "QuantizeLinear", "DequantizeLinear",
                  "HardSigmoid", "HardSwish", "Elu", "Selu", "Sigmoid", "Tanh", "Exp", "Erf", "Gelu", "SiLU",
                  "Mish", "Softplus", "Cast", "BroadcastMap"}


def _prod(shape: Sequence[int]) -> int:
    return int(np.prod(shape, dtype=np.int64)) if len(shape) else 1


def node_flops(node: Node) -> int:
    """Approximate floating-point (or integer) operations of one IR node, fused epilogue included.

    2 x multiply-accumulates for Conv / ConvTranspose / Gemm / MatMul and their quantized forms; window
    size per output for pooling; one per output element for elementwise ops (and per fused epilogue step);
    a few per element for normalisations and softmax; 0 for data movement.
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
        flops = 3 * ny
    elif op == "Attention":  # q @ k^T, the scores' softmax, @ v
        scores = _prod(ins[0].shape[:-1]) * ins[1].shape[-2]
        flops = 2 * scores * ins[0].shape[-1] + 3 * scores + 2 * scores * ins[2].shape[-1]
    elif op == "LRN":
        flops = ny * (int(node.attrs.get("size", 1)) + 3)
    elif op in _ELEMENTWISE_1:
        flops = ny
    elif op == "InvertedResidual":  # expand, depthwise and project convs, their activations
        e = _prod(ins[3].shape[:1]) * _prod(ins[0].shape[2:])  # the expanded tensor's elements
        d = _prod(ins[3].shape[:1]) * _prod(y[2:])  # the depthwise output's
        flops = 2 * d * _prod(ins[3].shape[1:]) + 2 * ny * _prod(ins[5].shape[1:])
        flops += 2 * e * _prod(ins[1].shape[1:]) if ins[1] is not None else 0  # no expand: x is depthwise's input
        flops += e * len(node.attrs["expand_post"]) + d * len(node.attrs["dw_post"])
    flops += ny * len(node.attrs.get("post", ()) or ())
    return int(flops)


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
