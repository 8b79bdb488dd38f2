"""Sparse pointwise convolution (and Gemm with a sparse constant B): weights as compressed rows (CSR).

``Y[n] (M x P) = W (M x C) @ X[n] (C x P) + bias`` where most of ``W`` is zero: for each output channel
``m`` the list of its nonzero input channels ``c_k`` (stored as element offsets ``c_k * P``) and values
``w_k`` are ``Param`` arrays, and the kernel accumulates ``sum_k w_k * X[c_k, p:p + NR*w]`` into a register
tile of ``NR`` pixel vectors per output row, pixel tile outermost (so the ``C x NR*w`` slice of X stays in
cache while every output row reads it). Pixel tails use masked loads/stores. The fused epilogue (bias,
ReLU/Clip/LeakyReLU, residual Add) is applied in registers, as in the dense micro-kernel.

The code generator picks this kernel when the weights' zero fraction reaches the threshold (see
``sparse_threshold``); otherwise the dense kernels run. A Gemm with a sparse B (``Y = A @ B``, B constant)
runs as the transposed problem ``Y^T = B^T @ A^T`` with a scalar CSR kernel over rows of A.
"""

from __future__ import annotations

import os

import numpy as np

from cnnjit.ir import Node

from ..kernel import KernelCall, Param, Target, note, variant
from .epilogue import Epilogue, clamp_code, clamp_lines
from .simd_pointwise import is_pointwise, pointwise_operands
from .template import Template, source

NR = 4  # pixel vectors per output-row tile
BLOCK_BYTES = 1 << 40  # X slice per pixel block; measured (8K..128K vs none): no blocking is fastest

#: Measured crossover (fraction of zero weights) from which the CSR kernel beats the dense SIMD kernel on
#: MobileNetV2-224's 34 pointwise layers, 1 thread, AVX-512 host (16 lanes), measured with
#:     python benchmarks/sparsity.py --crossover
#: CSR wins on 9/34 layers at 50% zeros, 24/34 at 60%, 29/34 at 65%, 33/34 (one tie) at 70%, 34/34 at 80%;
#: summed over the layers it is 0.95x at 50%, 1.17x at 60%, 1.8x at 70%, 3.6x at 90% (matching the ~2/3
#: zeros other sparse-MobileNet work needs). 0.7 = no layer is slower with the sparse kernel. Override per
#: compile with ``cnnjit.compile(m, sparse_threshold=0.6)`` or the ``CNNJIT_SPARSE_THRESHOLD`` environment
#: variable (a value > 1 disables sparse kernels).
DEFAULT_THRESHOLD = 0.7
#: Gemm (scalar CSR over B's columns): MobileNetV2's 1280x1000 classifier, batch 1, measured dense vs CSR
#: (ms): 50% 0.39/0.82, 80% 0.17/0.29, 90% 0.14/0.15, 95% 0.11/0.08 (script in the benchmark's --crossover
#: notes); CSR only wins from ~93% zeros.
DEFAULT_GEMM_THRESHOLD = 0.95

def sparse_threshold(value: float | None, gemm: bool = False) -> float:
    """The zero fraction above which sparse kernels are used: ``value`` (the target's), else the
    ``CNNJIT_SPARSE_THRESHOLD`` environment variable, else the measured default."""
    v = value
    if v is None:
        env = os.environ.get("CNNJIT_SPARSE_THRESHOLD")
        if env:
            try:
                v = float(env)
            except ValueError:
                v = None
    if v is None:
        return DEFAULT_GEMM_THRESHOLD if gemm else DEFAULT_THRESHOLD
    return float(v)


def csr_rows(w: np.ndarray, stride: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(rowptr[M+1], offsets[nnz] = c * stride, values[nnz])`` of the nonzeros of ``w`` (M x C), row-major."""
    w = np.asarray(w, np.float32).reshape(w.shape[0], -1)
    rows, cols = np.nonzero(w)
    rowptr = np.zeros(w.shape[0] + 1, np.int64)
    np.cumsum(np.bincount(rows, minlength=w.shape[0]), out=rowptr[1:])
    # keep at least one element so the constant pool hands numba a real buffer
    offs = cols.astype(np.int64) * stride if cols.size else np.zeros(1, np.int64)
    vals = w[rows, cols] if cols.size else np.zeros(1, np.float32)
    return rowptr, offs, vals


def sparse_source(node: Node, w: int, nr: int = NR) -> tuple[str, list] | None:
    """The CSR kernel source at vector width ``w`` with the node's epilogue, or None if it does not fit."""
    epi = Epilogue(node, w, False)
    if not epi.in_registers:
        return None

    def tile(n: int, masked: bool, ind: str) -> list[str]:
        out = [f"{ind}bv = vbcast{w}(bb[bo + m])"]
        out += [f"{ind}a{j} = bv" for j in range(n)]
        out.append(f"{ind}for k in range(rb[ro + m], rb[ro + m + 1]):")
        out.append(f"{ind}    wv = vbcast{w}(vb[vo + k])")
        out.append(f"{ind}    xi = xp + ib[io + k]")
        for j in range(n):  # with ``masked`` only the last vector is partial (cnt lanes)
            mk = masked and j == n - 1
            ld = f"vloadn{w}(xb, xi + {j * w}, cnt)" if mk else f"vload{w}(xb, xi + {j * w})"
            out.append(f"{ind}    a{j} = vfma{w}(wv, {ld}, a{j})")
        for j in range(n):
            mk = masked and j == n - 1
            idx = f"m * P + p + {j * w} + y0 - yo"
            out += epi.vector(ind, f"a{j}", idx, w, mk)
            st = (f"vstoren{w}(yb, yo + {idx}, a{j}, cnt)" if mk else f"vstore{w}(yb, yo + {idx}, a{j})")
            out.append(f"{ind}{st}")
        return out

    tail = []  # the last < NR*w pixels in one pass over the weights: nv vectors, the last one masked
    for nv in range(1, nr + 1):
        tail.append(f"            {'if' if nv == 1 else 'elif'} P - p0 <= {nv * w}:")
        tail.append(f"                cnt = P - p0 - {(nv - 1) * w}")
        tail.append("                for m in range(M):")
        tail += tile(nv, True, " " * 20)

    lines = [
        "def kernel(xb, xo, vb, vo, ib, io, rb, ro, bb, bo, yb, yo, N, C, M, P, PB" + epi.signature() + "):",
        "    for n in range(N):",
        "        x0 = xo + n * C * P",
        "        y0 = yo + n * M * P",
        f"        cnt = {w}",
        "        p0 = 0",
        f"        while p0 + {nr * w} <= P:",  # blocks of PB pixels (the C x PB slice of X stays in cache)
        f"            pe = min(P - (P - p0) % {nr * w}, p0 + PB)",
        "            for m in range(M):",
        "                p = p0",
        "                while p < pe:",
        "                    xp = x0 + p",
        *tile(nr, False, " " * 20),
        f"                    p += {nr * w}",
        "            p0 = pe",
        "        if p0 < P:",
        "            p = p0",
        "            xp = x0 + p",
        *tail,
    ]
    return source(lines), epi.args


def zero_fraction(w: np.ndarray) -> float:
    return 1.0 - np.count_nonzero(w) / max(1, w.size)


def sparse_conv_applies(node: Node, target: Target) -> bool:
    """A float32 group-1 pointwise Conv whose constant weights are sparse enough (``target.sparse_threshold``)
    and whose epilogue the CSR kernel can apply."""
    x, wt = node.inputs[0], node.inputs[1]
    if (not is_pointwise(node) or x.dtype != np.float32 or wt.dtype != np.float32 or not wt.is_const):
        return False
    thr = sparse_threshold(target.sparse_threshold)
    if thr > 1.0 or zero_fraction(wt.const) < thr - 5e-3:  # a layer pruned to exactly thr counts
        return False
    return Epilogue(node, target.vector_width, False).in_registers  # what sparse_source needs, without its text


@variant("Conv", name="sparse_pointwise", priority=10, applies=sparse_conv_applies)
def gen_sparse_pointwise(node: Node, target: Target) -> list[KernelCall]:
    """CSR kernel calls for a sparse float32 group-1 pointwise Conv (see ``sparse_conv_applies``)."""
    x, wt, bias, y, N, C, M, P = pointwise_operands(node)
    src, extra = sparse_source(node, target.vector_width, NR)
    rowptr, offs, vals = csr_rows(wt.const.reshape(M, C), P)
    step = NR * target.vector_width
    pb = max(step, (BLOCK_BYTES // (4 * max(1, C))) // step * step)
    return [KernelCall(src, [x, Param(vals), Param(offs), Param(rowptr), bias, y, N, C, M, P, pb, *extra],
                       note(node) + f" sparse {zero_fraction(wt.const):.0%}")]


GEMM_SRC = Template("""
def kernel(ab, ao, vb, vo, ib, io, rb, ro, bb, bo, yb, yo, M, K, N, act, lo, hi):
    for i in range(M):
        a0 = ao + i * K
        y0 = yo + i * N
        for n in range(N):
            s = bb[bo + n]
            for k in range(rb[ro + n], rb[ro + n + 1]):
                s += vb[vo + k] * ab[a0 + ib[io + k]]
{CLAMP}
            yb[y0 + n] = s
""", CLAMP="\n".join(clamp_lines(" " * 12, "s"))).fill()


def sparse_gemm_applies(node: Node, target: Target) -> bool:
    """A float32 Gemm with a constant B sparse enough (``target.sparse_threshold``), a constant vector (or no)
    C and an epilogue the CSR kernel can clamp."""
    A, B = node.inputs[0], node.inputs[1]
    C = node.inputs[2] if len(node.inputs) > 2 else None
    if (A.dtype != np.float32 or B.dtype != np.float32 or not B.is_const or node.attrs["transA"]
            or (C is not None and (not C.is_const or C.type.size not in (1, node.outputs[0].shape[1])))):
        return False
    thr = sparse_threshold(target.sparse_threshold, gemm=True)
    return thr <= 1.0 and zero_fraction(B.const) >= thr and clamp_code(node) is not None


@variant("Gemm", name="sparse_gemm", priority=10, applies=sparse_gemm_applies)
def gen_sparse_gemm(node: Node, target: Target) -> list[KernelCall]:
    """A scalar CSR Gemm over B's columns (see ``sparse_gemm_applies``)."""
    A, B = node.inputs[0], node.inputs[1]
    C = node.inputs[2] if len(node.inputs) > 2 else None
    a = node.attrs
    act, lo, hi = clamp_code(node)
    M, K = A.shape
    bt = (B.const if a["transB"] else B.const.T).astype(np.float64) * a["alpha"]  # N x K
    N = bt.shape[0]
    bias = np.zeros(N, np.float32) if C is None else np.broadcast_to(
        C.const.reshape(-1).astype(np.float64) * a["beta"], (N,)).astype(np.float32)
    rowptr, offs, vals = csr_rows(bt.astype(np.float32), 1)
    return [KernelCall(GEMM_SRC, [A, Param(vals), Param(offs), Param(rowptr), Param(bias), node.outputs[0],
                                  M, K, N, act, lo, hi], note(node) + f" sparse {zero_fraction(B.const):.0%}")]
