"""Gemm / MatMul with a constant B on column panels packed at compile time (``packed_gemm``).

``Y (M x N) = A (M x K) @ B (K x N) + bias``: B is stored as ``ceil(N / NC)`` panels of ``NC = nr * w``
columns, each panel ``[K][NC]`` contiguous (zero columns past ``N``). A register tile of ``mr`` rows of A by
one panel keeps ``mr * nr`` vector accumulators; each step over ``k`` loads the panel's next ``nr`` vectors
(the next 64 bytes of one sequential stream) and broadcasts ``mr`` entries of A into the FMAs.

Why: the row-major micro-kernel (``simd_pointwise``) reads B's rows as vectors, ``4 * N`` bytes apart. With a
wide B (the CRNN's 1024 x 8210 classifier: rows 32 KB apart) every step of ``k`` touches a new page and a new
set of cache lines, and the 1024-row column block does not fit in L1: 8-14 GFLOP/s. A packed panel is one
contiguous stream that the hardware prefetcher follows, and re-reading it for the next row tile hits L2.

The tile is sized from the register file: ``nr`` vectors per row, ``mr`` rows so that the accumulators, the
``nr`` panel vectors and the broadcast fit (``gemm_tile``). An A of fewer than 4 rows (a batch-1 classifier,
a GEMV) spans several panels per tile instead (``panel_group``), else its few FMA chains would wait on the FMA
latency: 1.3-1.6x faster at 1280x1000 and 4096x4096 (one row). Leftover rows (``M % mr``) run one smaller tile;
the last panel's tail columns are stored with masked stores. Gemm's alpha is folded into the packed B, its
beta * C into the per-column bias; a fused epilogue (activations, a residual of the output's shape) runs on
the accumulators before the store.
"""

from __future__ import annotations

import numpy as np

from cnnjit.ir import Node

from ..kernel import KernelCall, Param, Target, note, runs_bf16, variant
from ..parts import node_part, part_space
from ..simd_bf16 import bf16_pairs
from .epilogue import Epilogue
from .simd_matmul import matmul_bias, matmul_layout, simd_matmul_applies
from .simd_pointwise import gemm_simd_applies, is_pointwise, tile_stores
from .template import source

#: panel vectors per tile row: two machine vectors (the FMA latency x 2 pipes needs >= 8 chains in flight,
#: which the ``mr >= 4`` rows give)
NR = 2
#: at most this many rows per tile (more only saves A's broadcasts, and costs compile time)
MR_MAX = 8
#: independent FMA chains that hide the FMA latency on both pipes (4 cycles x 2 pipes)
CHAINS = 8
#: The next panel is prefetched while this one is computed: a B past the last-level cache streams from DRAM. Each
#: row tile of a panel prefetches its own share of the next one (tile ``i`` of ``n`` the ``i``-th ``1/n``), so
#: DRAM is asked for the panel at the rate the FMAs consume it: a first tile prefetching all of it asked for
#: the whole panel in ``1/n`` of the time, faster than one core's DRAM stream (the CRNN's 33 MB classifier:
#: 6.9 -> 6.2 ms, 78 -> 87 GFLOP/s)
#: below this many multiply-adds the packed panels' setup is not worth a new kernel: the row-major
#: micro-kernel's block of B stays in L1 anyway
MIN_MACS = 32 * 1024


def gemm_tile(target: Target) -> tuple[int, int]:
    """``(mr, nr)``: rows by vectors per register tile: ``mr * nr`` accumulators + ``nr`` panel vectors + one
    broadcast within ``target.vector_registers`` (AVX2's 16: 6 x 2; 32 registers: 8 x 2)."""
    return min(MR_MAX, (target.vector_registers - NR - 1) // NR), NR


def pack_panels(b: np.ndarray, nc: int) -> np.ndarray:
    """``b [K, N]`` as ``ceil(N / nc)`` contiguous panels ``[K, nc]`` (zeros past column ``N``), flat."""
    K, N = b.shape
    npan = -(-N // nc)
    padded = np.zeros((K, npan * nc), np.float32)
    padded[:, :N] = b
    return np.ascontiguousarray(padded.reshape(K, npan, nc).transpose(1, 0, 2)).reshape(-1)


def row_tiles(rows: int, mr: int) -> tuple[int, list[int]]:
    """``(n, tail)``: ``n`` tiles of ``mr`` rows, then the ``tail`` tiles' row counts. A leftover of fewer
    than 4 rows (too few FMA chains to hide the latency) is merged with the last full tile and split in two
    near-equal tiles: 32 rows with ``mr = 6`` run 6, 6, 6, 6, 4, 4 rather than 6 x 5 and 2."""
    n, rem = divmod(rows, mr)
    if rem == 0:
        return n, []
    if rem >= 4 or n == 0:
        return n, [rem]
    return n - 1, [(mr + rem + 1) // 2, (mr + rem) // 2]


def panel_group(rows: int, nr: int, registers: int) -> int:
    """How many panels a tile of ``rows`` (< 4) rows spans: with one row (a GEMV, batch 1) a one-panel tile
    is ``nr`` FMA chains ``K`` steps long, latency-bound at a quarter of the FMA rate; ``g`` panels side by
    side make ``rows * nr * g`` chains, up to ``CHAINS``, within the register file (accumulators, the
    ``nr`` panel vectors and the ``rows`` broadcasts)."""
    want = -(-CHAINS // (rows * nr))
    return max(1, min(want, (registers - nr - rows) // (rows * nr)))


def pack_panels_bf16(b: np.ndarray, nc: int) -> np.ndarray:
    """``pack_panels`` of ``b [K, N]``'s bf16 row pairs (rows ``2k`` and ``2k + 1`` in one 32-bit lane,
    ``bf16_pairs``; a zero row past an odd ``K``): panels ``[ceil(K / 2), nc]``, half the bytes; int32."""
    return pack_panels(bf16_pairs(np.asarray(b, np.float32).T).T.view(np.float32), nc).view(np.int32)


def _steps(rows: int, g: int, nc: int, bf16: bool, ind: str) -> list[str]:
    """The body of one step of the reduction (``k``) of ``rows`` rows x ``g`` panels: fp32, each row's
    ``A[m + r, k]`` broadcast into FMAs; bf16, step ``k`` is the pair ``A[m + r, 2k : 2k + 2]`` rounded into one
    broadcast bf16 pair (``vbf16bcast2``) against the panels' pair rows, and after the loop an odd ``K``'s last
    column pairs with a zero."""
    def body(hi: str | None) -> list[str]:
        if bf16:
            out = [f"{ind}    x{r} = vbf16bcast2_{nc}(ab[U(ai + {r} * K + 2 * k)], "
                   + (f"ab[U(ai + {r} * K + 2 * k + 1)])" if hi is None else f"{hi})") for r in range(rows)]
        else:
            out = [f"{ind}    x{r} = vbcast{nc}(ab[U(ai + {r} * K + k)])" for r in range(rows)]
        for h in range(g):
            out.append(f"{ind}    v{nc} = {'vbf16load' if bf16 else 'vload'}{nc}(bb, bi + {h} * KP * {nc} + k * {nc})")
            for r in range(rows):
                acc = f"a{nc}_{r * g + h}"
                step = f"vdotbf16_{nc}({acc}, v{nc}, x{r})" if bf16 else f"vfma{nc}(x{r}, v{nc}, {acc})"
                out.append(f"{ind}    {acc} = {step}")
        return out

    out = [f"{ind}for k in range({'K // 2' if bf16 else 'K'}):", *body(None)]
    if bf16:
        out += [f"{ind}if K % 2 == 1:", f"{ind}    k = K // 2", *body("0.0")]
    return out


def packed_source(node: Node, w: int, mr: int, nr: int, rows: int, registers: int = 16,
                  bf16: bool = False, panel_range: bool = False) -> tuple[str, list]:
    """The kernel for ``node``'s epilogue over ``rows`` rows of A, tiled by ``row_tiles``; fewer rows than
    a short tile take ``panel_group`` panels at once (``registers``: the target's vector register file).
    ``bf16``: B packed as bf16 row pairs (``pack_panels_bf16``), A's pairs rounded as they are broadcast,
    ``vdotbf16`` into fp32 accumulators (``_steps``). ``panel_range``: the kernel computes panels ``JS``
    to ``JE`` only (two more arguments: a part of the layer split over threads, ``panel_part_space``)."""
    nc = nr * w
    epi = Epilogue(node, nc, False)

    def group(rows: int, g: int, ind: str) -> list[str]:
        """``rows`` rows x ``g`` whole panels: accumulator ``r * g + h`` is row ``r``, panel ``h``. No software
        prefetch: ``g`` sequential streams are what the hardware prefetcher follows (measured: prefetching
        the next group, or 8 or 32 rows ahead, was 3-20% slower at 640x128, 1280x1000 and 4096x4096)."""
        out = [f"{ind}a{nc}_{r * g + h} = vload{nc}(cb, co + p + {h * nc})" for r in range(rows) for h in range(g)]
        out += [f"{ind}ai = ao + m * K", f"{ind}bi = pan", *_steps(rows, g, nc, bf16, ind)]
        out += tile_stores(epi, ind, nc, rows * g, lambda i: f"(m + {i // g}) * N + p + {i % g * nc}", False)
        return out + epi.after(ind, [f"for i in range({rows}):", f"for j in range({g * nc}):"], "(m + i) * N + p + j")

    full, tail = row_tiles(rows, mr)
    ntiles = full + len(tail)
    npf = -(-nc // (16 * ntiles))  # prefetches per step of k

    def tile(rows: int, ind: str) -> list[str]:
        out = [f"{ind}a{nc}_{i} = vload{nc}(cb, co + p)" for i in range(rows)]
        out += [f"{ind}ai = ao + m * K", f"{ind}bi = pan",
                f"{ind}pf = pan + KP * {nc} + tn * ((KP * {nc}) // {ntiles})"]
        steps = _steps(rows, 1, nc, bf16, ind)
        # the next panel's share of this tile, a line (16 floats) at least every 16 floats
        steps[1:1] = [f"{ind}    prefetch(bb, pf + (k * {nc}) // {ntiles} + {16 * i})" for i in range(npf)]
        out += steps
        out.append(f"{ind}if cnt == {nc}:")
        out += tile_stores(epi, ind + "    ", nc, rows, lambda i: f"(m + {i}) * N + p", False)
        out.append(f"{ind}else:")
        out += tile_stores(epi, ind + "    ", nc, rows, lambda i: f"(m + {i}) * N + p", True)
        return out + epi.after(ind, [f"for i in range({rows}):", "for j in range(cnt):"], "(m + i) * N + p + j")

    lines = ["def kernel(ab, ao, bb, bo, cb, co, yb, yo, M, K, N" + (", JS, JE" if panel_range else "")
             + epi.signature() + "):",
             f"    KP = {'(K + 1) // 2' if bf16 else 'K'}"]  # rows of a packed panel
    js, je = ("JS", "JE") if panel_range else ("0", f"(N + {nc - 1}) // {nc}")
    g = panel_group(rows, nr, registers) if rows < 4 else 1
    if g > 1:  # whole groups of whole panels first; the rest (and the tail columns) one panel at a time
        lines += [f"    j = {js}",
                  f"    while j + {g} <= {f'min(JE, N // {nc})' if panel_range else f'N // {nc}'}:",
                  f"        p = j * {nc}",
                  f"        pan = bo + j * KP * {nc}",
                  "        m = 0",
                  *group(rows, g, " " * 8),
                  f"        j += {g}",
                  f"    for j in range(j, {je}):"]
    else:
        lines.append(f"    for j in range({'JS, JE' if panel_range else je}):")
    lines += [f"        p = j * {nc}",
              f"        cnt = min({nc}, N - p)",
              f"        pan = bo + j * KP * {nc}",
              "        m = 0",
              "        tn = 0"]
    if full:
        lines += [f"        for _ in range({full}):", *tile(mr, " " * 12), f"            m += {mr}",
                  "            tn += 1"]
    for t in tail:
        lines += tile(t, " " * 8) + [f"        m += {t}", "        tn += 1"]
    return source(lines), epi.args


def _macs(node: Node) -> int:
    y = node.outputs[0]
    return int(np.prod(y.shape, dtype=np.int64)) * int(node.inputs[0].shape[-1])


def packed_gemm_applies(node: Node, target: Target) -> bool:
    """A Gemm the row-major micro-kernel takes (A not transposed, constant B, vector C) with at least
    ``MIN_MACS`` multiply-adds."""
    return gemm_simd_applies(node, target) and _macs(node) >= MIN_MACS


def packed_matmul_applies(node: Node, target: Target) -> bool:
    """A float32 MatMul with a constant B of one matrix (unit batch axes), A of rank >= 2 whose batch axes
    are the output's (they fold into rows), and at least ``MIN_MACS`` multiply-adds."""
    if not simd_matmul_applies(node, target):
        return False
    A, B = node.inputs[0], node.inputs[1]
    return (B.is_const and int(np.prod(B.shape[:-2], dtype=np.int64)) == 1
            and int(np.prod(A.shape[:-2], dtype=np.int64)) == int(np.prod(node.outputs[0].shape[:-2], dtype=np.int64))
            and _macs(node) >= MIN_MACS)


def _fp32(applies):
    """``applies`` for the fp32 form of a packed variant: not under ``precision="bf16"`` (the ``_bf16`` one)."""
    return lambda node, target: not runs_bf16(node, target) and applies(node, target)


def _bf16(applies):
    """``applies`` for the ``_bf16`` form of a packed variant: only under ``precision="bf16"``."""
    return lambda node, target: runs_bf16(node, target) and applies(node, target)


def _call(node: Node, target: Target, b: np.ndarray, bias: np.ndarray, rows: int) -> list[KernelCall]:
    """One call over ``rows`` rows of A against the packed ``b [K, N]`` and the per-column ``bias`` (a part of
    the layer, ``meta["part"]``: its range of panels, ``panel_part_space``)."""
    K, N = b.shape
    mr, nr = gemm_tile(target)
    nc = nr * target.vector_width
    npan = -(-N // nc)
    cb = np.zeros(npan * nc, np.float32)
    cb[:N] = bias
    bf16 = runs_bf16(node, target)
    part = node_part(node)
    src, extra = packed_source(node, target.vector_width, mr, nr, rows, target.vector_registers, bf16,
                               panel_range=part is not None)
    packed = pack_panels_bf16(b, nc) if bf16 else pack_panels(b, nc)
    return [KernelCall(src, [node.inputs[0], Param(packed), Param(cb), node.outputs[0], rows, K, N,
                             *(part or ()), *extra], note(node))]


def panel_part_space(node: Node, target: Target) -> tuple[int, int] | None:
    """Panels of B's columns (``NR`` vectors each): a part computes its panels' columns of every row of A,
    reading its share of the packed B (a channel split of a Gemm needs a batch-1 output, whose column ranges
    are contiguous; this one takes any number of rows: the ddddocr CRNN's 32 x 1024 @ 1024 x 8210
    classifier, 2.1 ms, and its LSTM's input projection had stayed whole on one thread)."""
    N = node.outputs[0].shape[-1]
    return -(-N // (NR * target.vector_width)), 1


@variant("Gemm", name="packed_gemm", priority=15, applies=_fp32(packed_gemm_applies))
def gen_packed_gemm(node: Node, target: Target) -> list[KernelCall]:
    """``alpha * A @ B + beta * C`` with ``alpha * B`` (transposed first if ``transB``) packed."""
    B = node.inputs[1]
    C = node.inputs[2] if len(node.inputs) > 2 else None
    a = node.attrs
    M = node.inputs[0].shape[0]
    b = B.const.T if a["transB"] else B.const
    b = (b.astype(np.float64) * a["alpha"]).astype(np.float32)
    N = b.shape[1]
    bias = np.zeros(N, np.float32) if C is None else np.broadcast_to(
        C.const.reshape(-1).astype(np.float64) * a["beta"], (N,)).astype(np.float32)
    return _call(node, target, b, bias, M)


@variant("MatMul", name="packed_matmul", priority=15, applies=_fp32(packed_matmul_applies))
def gen_packed_matmul(node: Node, target: Target) -> list[KernelCall]:
    """A's batch axes folded into its rows, against the one packed B; the fused bias per column."""
    batch, _, _, M, K, N = matmul_layout(node)
    rows = int(np.prod(batch, dtype=np.int64)) * M
    b = np.asarray(node.inputs[1].const, np.float32).reshape(K, N)
    return _call(node, target, b, matmul_bias(node), rows)


def fc_conv_applies(node: Node, target: Target) -> bool:
    """A group-1 1x1 float32 Conv with constant weights and bias on a 1x1 map: a squeeze-excite block's
    FCs, a classifier head written as a Conv. Images are A's rows, the output channels B's columns."""
    x, wt, y = node.inputs[0], node.inputs[1], node.outputs[0]
    b = node.inputs[2] if len(node.inputs) > 2 else None
    return (is_pointwise(node) and x.dtype == wt.dtype == np.float32 and wt.is_const and len(x.shape) == 4
            and x.shape[2] * x.shape[3] == 1 and (b is None or b.is_const)
            and y.shape == (x.shape[0], wt.shape[0], 1, 1))


@variant("Conv", name="packed_fc", priority=18, applies=_fp32(fc_conv_applies))
def gen_packed_fc(node: Node, target: Target) -> list[KernelCall]:
    """A 1x1 Conv on a 1x1 map as the GEMV it is: ``y[n] = W x[n] + b`` on packed panels of ``W^T``, where
    the channel-vector kernel (``cvec_pointwise``) spent 11-12 us on MobileNetV3's 576 <-> 144 squeeze-excite
    FCs (AVX2)."""
    wt = node.inputs[1]
    M = wt.shape[0]
    b = np.ascontiguousarray(wt.const.reshape(M, -1).T, dtype=np.float32)
    bias = np.zeros(M, np.float32) if len(node.inputs) < 3 else node.inputs[2].const.reshape(M).astype(np.float32)
    return _call(node, target, b, bias, node.inputs[0].shape[0])


#: the bf16 forms (``precision="bf16"``): the same generators (``_call`` reads the target's precision), named
#: apart so a program says which ran, ahead of every fp32 variant (``packed_fc_bf16`` before the pointwise one)
for _op, _gen, _applies in (("Gemm", gen_packed_gemm, packed_gemm_applies),
                            ("MatMul", gen_packed_matmul, packed_matmul_applies),
                            ("Conv", gen_packed_fc, fc_conv_applies)):
    variant(_op, name=_gen.__name__.removeprefix("gen_") + "_bf16", priority=1, applies=_bf16(_applies))(_gen)
for _op, _name in (("Gemm", "packed_gemm"), ("MatMul", "packed_matmul")):
    for _form in (_name, _name + "_bf16"):
        part_space(_op, _form)(panel_part_space)
