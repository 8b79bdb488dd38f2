"""MatMul of any rank on the register-tiled GEMM micro-kernel (``simd_pointwise.pointwise_source``).

The micro-kernel computes ``Y (M x P) = W (M x C) @ X (C x P)`` with W's entries broadcast and X's rows
loaded as vectors, so a MatMul ``A (M x K) @ B (K x N)`` maps onto it with A as W, B as X and N as the
vector (pixel) axis, whatever A and B are (constants or activations: both are row-major in their buffers).

* B 2-D (or with unit batch axes): one call, A's batch axes folded into its rows (``batch * M`` rows of K),
  so a ``1x40x120 @ 120x6625`` is one 40-row GEMM over 6625 columns in L1-sized column blocks.
* Otherwise (attention ``Q @ K^T``, ``softmax @ V``, broadcast batch axes): one call per output matrix,
  each at its operands' offsets (a broadcast batch axis reads the same matrix again).

A fused per-column bias (the MatMul's third input) is the micro-kernel's bias along the columns; a fused
epilogue (activations, a residual of the output's shape) is applied by the micro-kernel itself.
"""

from __future__ import annotations

import numpy as np

from cnnjit.ir import Node

from ..kernel import At, KernelCall, Param, Target, note, shifted, variant
from .simd_pointwise import pixel_block, pointwise_source, row_sections


def matmul_layout(node: Node) -> tuple[tuple[int, ...], np.ndarray, np.ndarray, int, int, int]:
    """``(batch, a_index, b_index, M, K, N)`` of a MatMul whose operands both have rank >= 2: the output's
    batch shape, and for each output matrix (flat, row-major over ``batch``) the index of the A and the B
    matrix it multiplies (numpy broadcasting of the batch axes)."""
    a_shape, b_shape = node.inputs[0].shape, node.inputs[1].shape
    M, K = a_shape[-2:]
    N = b_shape[-1]
    batch = tuple(np.broadcast_shapes(a_shape[:-2], b_shape[:-2]))
    ia = np.arange(int(np.prod(a_shape[:-2], dtype=np.int64))).reshape(a_shape[:-2])
    ib = np.arange(int(np.prod(b_shape[:-2], dtype=np.int64))).reshape(b_shape[:-2])
    return batch, np.broadcast_to(ia, batch).reshape(-1), np.broadcast_to(ib, batch).reshape(-1), M, K, N


def matmul_bias(node: Node) -> np.ndarray:
    """The per-column bias ``[N]`` a MatMul adds before its epilogue (its third input, ``fuse_epilogue``), or
    zeros: the GEMM kernels' bias vector along the columns."""
    b = node.inputs[2] if len(node.inputs) > 2 else None
    N = node.outputs[0].shape[-1]
    return np.zeros(N, np.float32) if b is None else np.asarray(b.const, np.float32).reshape(N)


def simd_matmul_applies(node: Node, target: Target) -> bool:
    """Float32 MatMul with both operands of rank >= 2 and a non-empty output (1-D operands, a matrix-vector
    product, stay with the scalar kernel)."""
    A, B = node.inputs[0], node.inputs[1]
    y = node.outputs[0]
    return (len(A.shape) >= 2 and len(B.shape) >= 2 and A.dtype == np.float32 and B.dtype == np.float32
            and y.dtype == np.float32 and y.type.size > 0 and A.shape[-1] > 0)


@variant("MatMul", name="simd_matmul", priority=20, applies=simd_matmul_applies)
def gen_simd_matmul(node: Node, target: Target) -> list[KernelCall]:
    """One micro-kernel call when B is a single matrix, else one per output matrix (see the module doc)."""
    A, B = node.inputs[0], node.inputs[1]
    y = node.outputs[0]
    batch, ia, ib, M, K, N = matmul_layout(node)
    w = target.vector_width
    bias = Param(matmul_bias(node))
    pb = pixel_block(K, N, w)
    if int(np.prod(B.shape[:-2], dtype=np.int64)) == 1 and (ia == np.arange(len(ia))).all():
        rows = len(ia) * M  # A's matrices are consecutive: one (batch * M) x K matrix
        src, extra = pointwise_source(node, w, bias_along_p=True, rows=row_sections(rows))
        return [KernelCall(src, [B, A, bias, y, 1, K, rows, N, pb, *extra], note(node))]
    src, extra = pointwise_source(node, w, bias_along_p=True, rows=row_sections(M))
    calls = []
    for t in range(len(ia)):
        ys = t * M * N
        calls.append(KernelCall(src, [At(B, int(ib[t]) * K * N), At(A, int(ia[t]) * M * K), bias, At(y, ys), 1, K,
                                      M, N, pb, *shifted(extra, ys)], note(node)))
    return calls
