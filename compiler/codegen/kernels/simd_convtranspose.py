"""ConvTranspose whose kernel equals its stride (the 2x2 stride-2 upsampler of decoders, FPNs and
segmentation heads) as an explicit-SIMD GEMM with the pixel shuffle fused into the store.

With ``kernel == stride`` and no padding the taps never overlap: input pixel ``(i, j)`` alone makes the
``SH x SW`` output block at ``(i * SH, j * SW)``, ``y[m, i*SH + a, j*SW + b] = bias[m] + sum_c
w[c, m, a, b] x[c, i, j]``. That is a pointwise GEMM of ``M*SH*SW`` rows ``(m, a, b)`` over the input
channels, run as the pointwise micro-kernel's register tile (a vector of input columns of one input row,
each weight broadcast into the FMA, the reduction over C innermost). A tile holds all ``SW`` rows ``b`` of
its ``(m, a)`` output rows, so the store interleaves them (``vziplo``/``vziphi``, twice for ``SW == 4``)
into contiguous output vectors: the output is written once, in order, with the fused epilogue (bias,
activations, residual Add) on the interleaved vectors. Every other ConvTranspose runs the generic scatter
kernel (``nn_extra``).
"""

from __future__ import annotations

import numpy as np

from cnnjit.ir import Node

from ...passes.convtranspose_phases import SH_MAX, SW_FAST
from ..kernel import At, KernelCall, Param, Target, note, shifted, variant
from .epilogue import Epilogue
from .simd_pointwise import BLOCK_BYTES, NR
from .template import source

# SW_FAST (the output-column interleaves the store knows) and SH_MAX (the largest row stride) live with the pass
# that reads them without importing the kernels (``compiler.passes.convtranspose_phases``: no numba for it)


def interleave(vs: list[str], L: int, tag: str) -> tuple[list[str], list[str]]:
    """Lines interleaving the ``L``-lane vectors ``vs`` (``len(vs)`` a power of two) lane by lane, and
    the names of the results (``tag`` + a counter) in output order: ``v0[0] v1[0] .. v0[1] v1[1] ..``.
    Even and odd inputs are interleaved first, then zipped (a 4-way interleave is two zip levels)."""
    if len(vs) == 1:
        return [], vs
    le, even = interleave(vs[0::2], L, tag + "e")
    lo, odd = interleave(vs[1::2], L, tag + "o")
    lines, out = le + lo, []
    for k, (e, o) in enumerate(zip(even, odd)):
        lo_name, hi_name = f"{tag}{L}_{2 * k}", f"{tag}{L}_{2 * k + 1}"
        lines += [f"{lo_name} = vziplo{L}({e}, {o})", f"{hi_name} = vziphi{L}({e}, {o})"]
        out += [lo_name, hi_name]
    return lines, out


def convtranspose_source(node: Node, w: int, sh: int, sw: int) -> tuple[str, list]:
    """The kernel source for ``node``'s epilogue at vector width ``w`` and strides ``sh, sw`` (kernel the
    same), and the extra (residual) arguments. ``kernel(x, w, bias, y, N, C, M, H, W, JB)``: ``M`` output
    channels from ``C`` input channels (one group), ``JB`` input columns per block."""
    epi = Epilogue(node, w * NR, True)
    L = NR * w
    gt = max(1, 4 // sw)  # (m, a) output rows per tile: 4 GEMM rows, like the pointwise kernel's MR

    def tile(g: int, masked: bool, ind: str) -> list[str]:
        """``g`` output rows ``(m, a)`` x all ``sw`` columns ``b`` x ``L`` input columns; ``masked``: only
        the first ``nc`` input columns."""
        out = []
        for t in range(g):
            out += [f"{ind}mt = (pq + {t}) // {sh}",
                    f"{ind}ym{t} = y0 + (mt * OH + i * {sh} + (pq + {t}) % {sh}) * OW + j * {sw}"]
            for b in range(sw):
                out.append(f"{ind}a{L}_{t}_{b} = vbcast{L}(bb[bo + mt])")
        out += [f"{ind}xi = sr + j", f"{ind}wi = wo + pq * {sw} * C", f"{ind}for c in range(C):",
                f"{ind}    v{L} = vloadn{L}(sb, xi, nc)" if masked else f"{ind}    v{L} = vload{L}(sb, xi)"]
        for t in range(g):
            for b in range(sw):
                out.append(f"{ind}    a{L}_{t}_{b} = vfma{L}(vbcast{L}(wb[wi + {t * sw + b} * C]), v{L}, "
                           f"a{L}_{t}_{b})")
        out += [f"{ind}    xi += cs", f"{ind}    wi += 1"]
        for t in range(g):
            lines, names = interleave([f"a{L}_{t}_{b}" for b in range(sw)], L, f"z{t}")
            out += [ind + ln for ln in lines]
            for k, name in enumerate(names):
                idx = f"ym{t} + {k * L}"
                if masked:
                    out += [f"{ind}cnt = min(max(nc * {sw} - {k * L}, 0), {L})", f"{ind}if cnt > 0:"]
                    out += ["    " + ln for ln in epi.vector(ind, name, idx, L, True)]
                    out.append(f"{ind}    vstoren{L}(yb, yo + {idx}, {name}, cnt)")
                else:
                    out += epi.vector(ind, name, idx, L, False)
                    out.append(f"{ind}vstore{L}(yb, yo + {idx}, {name})")
        return out

    def row_tiles(g: int) -> list[str]:
        return [
            f"                while pq + {g} <= Q:",
            "                    j = jb",
            f"                    while j + {L} <= je:",
            *tile(g, False, " " * 24),
            f"                        j += {L}",
            "                    while j < je:",
            "                        nc = je - j",
            *tile(g, True, " " * 24),
            f"                        j += {L}",
            f"                    pq += {g}",
        ]

    lines = [
        "def kernel(xb, xo, wb, wo, bb, bo, yb, yo, N, C, M, H, W, JB, JS" + epi.signature() + "):",
        "    HW = H * W",
        f"    OH = H * {sh}",
        f"    OW = W * {sw}",
        f"    Q = M * {sh}",
        "    for n in range(N):",
        "        x0 = xo + n * C * HW",
        "        y0 = n * M * OH * OW",  # output offsets are relative to yo (the epilogue's residual index)
        "        for i in range(H):",
        "            xr = x0 + i * W",
        "            for jb in range(0, W, JB):",  # column blocks: every output row of a block while it is in L1
        "                je = min(W, jb + JB)",
        f"                if JS > 0 and C * JS <= (OH - {sh} * (i + 1)) * OW:",
        "                    pk = yo + y0 + M * OH * OW - C * JS",
        "                    for c in range(C):",
        "                        for e in range(je - jb):",
        "                            yb[U(pk + c * JS + e)] = xb[U(xr + c * HW + jb + e)]",
        "                    sb = yb",
        "                    sr = pk - jb",
        "                    cs = JS",
        "                else:",
        "                    sb = xb",
        "                    sr = xr",
        "                    cs = HW",
        "                pq = 0",
        *row_tiles(gt),
        *(row_tiles(1) if gt > 1 else []),
        # activations without a vector form: over the block's output rows, still in L2, in long runs
        *epi.after(" " * 16, ["for mm in range(M):", f"for a in range({sh}):", f"for e in range((je - jb) * {sw}):"],
                   f"y0 + (mm * OH + i * {sh} + a) * OW + jb * {sw} + e"),
    ]
    return source(lines), epi.args


def strides2d(node: Node) -> tuple[int, int]:
    """A 1-D or 2-D ConvTranspose's (row, column) strides (1-D: one row)."""
    s = node.attrs["strides"]
    return (1, int(s[0])) if len(s) == 1 else (int(s[0]), int(s[1]))


def simd_convtranspose_applies(node: Node, target: Target) -> bool:
    """A float32 1-D / 2-D ConvTranspose with constant weights whose kernel equals its stride (column
    stride 1, 2 or 4; row stride up to 4), no padding, dilation or output padding."""
    x, wt = node.inputs[0], node.inputs[1]
    a = node.attrs
    if x.dtype != np.float32 or wt.dtype != np.float32 or not wt.is_const or len(x.shape) not in (3, 4):
        return False
    if len(node.inputs) > 2 and node.inputs[2] is not None and node.inputs[2].dtype != np.float32:
        return False
    sh, sw = strides2d(node)
    return (list(a["kernel_shape"]) == list(a["strides"]) and sw in SW_FAST and sh <= SH_MAX
            and not any(a["pads"]) and all(d == 1 for d in a["dilations"]) and not any(a["output_padding"]))


def pack_stride(C: int, rows: int, cols: int, w: int, sw: int) -> int:
    """The channel stride of the packed input block (0: no packing) for ``C`` channels, ``rows`` output
    rows ``(m, a)`` and ``cols`` input columns per block.

    An NCHW plane of a power-of-two size puts every channel's row at the same L1 set (4 KiB aliasing):
    the register tiles, which read one vector of each channel, then miss L1 on every load (PP-OCRv4 det's
    24-channel 160x160 upsampler ran at 16 GFLOP/s, 37 with one column more). So each block of input
    columns is first copied, channel after channel at this stride (not a multiple of 1 KiB), into the
    output image's last rows, which no tile has written yet (the kernel checks that they are free and
    reads the input in place when not, near the end of the image). Worth it only when more than one row
    tile reads the block."""
    if rows <= max(1, 4 // sw) or C < 2:
        return 0
    js = -(-cols // w) * w
    return js + w if (4 * js) % 1024 == 0 else js


@variant("ConvTranspose", name="simd_shuffle", priority=20, applies=simd_convtranspose_applies)
def gen_simd_convtranspose(node: Node, target: Target) -> list[KernelCall]:
    """One call per group (all images), or per image and group when grouped; each group's weights as the
    GEMM's ``(m, a, b) x c`` matrix."""
    x, wv, y = node.inputs[0], node.inputs[1], node.outputs[0]
    b = node.inputs[2] if len(node.inputs) > 2 else None
    N, C = x.shape[:2]
    M = y.shape[1]
    G = int(node.attrs["group"])
    H, W = (1, x.shape[2]) if len(x.shape) == 3 else x.shape[2:]
    sh, sw = strides2d(node)
    cg, mg = C // G, M // G
    wt = wv.const.reshape(G, cg, mg, sh, sw)
    w = target.vector_width
    L = NR * w
    jb = max(L, BLOCK_BYTES // (4 * cg) // L * L)
    js = pack_stride(cg, mg * sh, min(jb, W), w, sw)
    src, extra = convtranspose_source(node, w, sh, sw)
    if G == 1:
        gemm = Param(np.ascontiguousarray(wt[0].transpose(1, 2, 3, 0).reshape(-1, cg)))
        bias = b if b is not None else Param(np.zeros(M, np.float32))
        return [KernelCall(src, [x, gemm, bias, y, N, C, M, H, W, jb, js, *extra], note(node))]
    calls = []
    isp, osp = H * W, H * W * sh * sw
    for gi in range(G):
        gemm = Param(np.ascontiguousarray(wt[gi].transpose(1, 2, 3, 0).reshape(-1, cg)))
        bias = At(b, gi * mg) if b is not None else Param(np.zeros(mg, np.float32))
        for n in range(N):
            ys = (n * M + gi * mg) * osp
            args = [At(x, (n * C + gi * cg) * isp), gemm, bias, At(y, ys), 1, cg, mg, H, W, jb, js,
                    *shifted(extra, ys)]
            calls.append(KernelCall(src, args, note(node)))
    return calls
