"""Dense kernels: Gemm and (batched, broadcasting) MatMul through one strided kernel; Softmax."""

from __future__ import annotations

import numpy as np

from cnnjit.ir import Node

from ..kernel import KernelCall, Param, Target, note, variant
from .elementwise import broadcast_strides
from .epilogue import with_epilogue
from .simd_matmul import matmul_bias
from .template import Template, bind

MATMUL_SRC = Template('''
def kernel(ab, ao, bb, bo, cb, co, yb, yo, ofs, ofo, nbatch, M, N, K, sam, sak, sbk, sbn, scm, scn,
           alpha, beta, has_c{PARAMS}):
    for t in range(nbatch):
        a0 = ao + ofs[ofo + 2 * t]
        b0 = bo + ofs[ofo + 2 * t + 1]
        y0 = yo + t * M * N
        for m in range(M):
            yr = y0 + m * N
            for n in range(N):
                yb[U(yr + n)] = 0.0
            for k in range(K):
                av = ab[a0 + m * sam + k * sak]
                br = b0 + k * sbk
                for n in range(N):
                    yb[U(yr + n)] += av * bb[U(br + n * sbn)]
            if alpha != 1.0 or has_c:
                for n in range(N):
                    v = alpha * yb[yr + n]
                    if has_c:
                        v += beta * cb[co + m * scm + n * scn]
                    yb[yr + n] = v
{EPILOGUE}''')


# Gemm's variants: sparse_gemm (10, CSR B), simd_gemm (20, the pointwise micro-kernel), gemm (1000: any Gemm)
@variant("Gemm", name="gemm", priority=1000)
def gen_gemm(node: Node, target: Target) -> list[KernelCall]:
    """Any Gemm (transposes, broadcast C): the scalar matrix product."""
    A, B = node.inputs[0], node.inputs[1]
    C = node.inputs[2] if len(node.inputs) > 2 else None
    y = node.outputs[0]
    a = node.attrs
    M, N = y.shape
    K = A.shape[0] if a["transA"] else A.shape[1]
    sam, sak = (1, M) if a["transA"] else (K, 1)
    sbk, sbn = (1, K) if a["transB"] else (N, 1)
    if C is not None and float(a["beta"]) != 0.0:
        scm, scn = broadcast_strides(C.shape, (M, N))
        cval, has_c = C, 1
    else:
        scm = scn = 0
        cval, has_c = Param(np.zeros(1, y.dtype)), 0
    ofs = Param(np.zeros(2, np.int64))
    src, res = with_epilogue(MATMUL_SRC, node, "yr - yo + i", " " * 12, "N", "yr + i")
    args = bind(src, a=A, b=B, c=cval, y=y, of=ofs, nbatch=1, M=M, N=N, K=K, sam=sam, sak=sak, sbk=sbk, sbn=sbn,
                scm=scm, scn=scn, alpha=float(a["alpha"]), beta=float(a["beta"]), has_c=has_c, **res)
    return [KernelCall(src, args, note(node))]


@variant("MatMul")
def gen_matmul(node: Node, target: Target) -> list[KernelCall]:
    A, B = node.inputs[:2]  # more inputs: the fused bias (or None), fused residuals
    bias = node.inputs[2] if len(node.inputs) > 2 else None
    y = node.outputs[0]
    a_shape = (1,) + A.shape if len(A.shape) == 1 else A.shape
    b_shape = B.shape + (1,) if len(B.shape) == 1 else B.shape
    M, K = a_shape[-2:]
    N = b_shape[-1]
    batch = tuple(np.broadcast_shapes(a_shape[:-2], b_shape[:-2]))
    nb = int(np.prod(batch, dtype=np.int64)) if batch else 1
    # per-batch element offsets of A and B (broadcast batch axes repeat the same matrix)
    ia = np.arange(int(np.prod(a_shape[:-2], dtype=np.int64)) or 1).reshape(a_shape[:-2] or ())
    ib = np.arange(int(np.prod(b_shape[:-2], dtype=np.int64)) or 1).reshape(b_shape[:-2] or ())
    offs = np.zeros((nb, 2), np.int64)
    offs[:, 0] = np.broadcast_to(ia, batch).reshape(-1) * (M * K)
    offs[:, 1] = np.broadcast_to(ib, batch).reshape(-1) * (K * N)
    src, res = with_epilogue(MATMUL_SRC, node, "yr - yo + i", " " * 12, "N", "yr + i")
    c = Param(np.zeros(1, y.dtype)) if bias is None else Param(matmul_bias(node))
    args = bind(src, a=A, b=B, c=c, y=y, of=Param(offs.reshape(-1)), nbatch=nb, M=M, N=N, K=K, sam=K, sak=1,
                sbk=N, sbn=1, scm=0, scn=int(bias is not None), alpha=1.0, beta=1.0, has_c=int(bias is not None),
                **res)
    return [KernelCall(src, args, note(node))]


SOFTMAX_SRC = '''
def kernel(xb, xo, yb, yo, outer, L, inner, log):
    for o in range(outer):
        for i in range(inner):
            base = o * L * inner + i
            mx = -math.inf
            for j in range(L):
                v = xb[xo + base + j * inner]
                if v > mx:
                    mx = v
            s = 0.0
            for j in range(L):
                s += math.exp(xb[xo + base + j * inner] - mx)
            if log:
                ls = math.log(s)
                for j in range(L):
                    yb[yo + base + j * inner] = xb[xo + base + j * inner] - mx - ls
            else:
                for j in range(L):
                    yb[yo + base + j * inner] = math.exp(xb[xo + base + j * inner] - mx) / s
'''


@variant("Softmax", "LogSoftmax")
def gen_softmax(node: Node, target: Target) -> list[KernelCall]:
    x = node.inputs[0]
    ax = node.attrs["axis"] % max(len(x.shape), 1)
    outer = int(np.prod(x.shape[:ax], dtype=np.int64))
    inner = int(np.prod(x.shape[ax + 1:], dtype=np.int64))
    L = x.shape[ax] if x.shape else 1
    return [KernelCall(SOFTMAX_SRC, [x, node.outputs[0], outer, L, inner, int(node.op == "LogSoftmax")],
                       note(node))]
