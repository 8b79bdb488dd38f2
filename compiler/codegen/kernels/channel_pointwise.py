"""Pointwise convolution on small maps, blocked over output channels (``channel_pointwise``).

``Y (M x P) = W (M x C) @ X (C x P) + bias`` per image, in plain NCHW, computed as its transpose
``Y^T (P x M) = X^T (P x C) @ W^T (C x M)`` on the packed-panel GEMM micro-kernel (``packed_gemm``): ``W^T`` is
packed at compile time into column panels of ``NC = nr * w`` output channels (``[C][NC]`` each, contiguous),
a register tile is ``mr`` pixels by one panel, and each step over the input channels loads the panel's next
``nr`` vectors and broadcasts ``mr`` input pixels (consecutive floats of one channel plane: one cache line).
The finished tile is stored with strided stores, one output channel plane per lane.

Why: the pixel-vector kernels (``packed_pointwise``, ``simd_pointwise``) tile the pixels in strips of whole
vectors, so a map of ``P`` pixels keeps ``ceil(P / L) * L`` lanes busy: a 2x2 map 4 of 16 (AVX2), a 7x7 map
49 of 64, a 4x4 map 16 of 32 in ``simd_pointwise``'s 2 x 4 tile. Here the pixels are the tile's rows
(``row_tiles``: no idle row) and the output channels its lanes, which idle only past the last whole panel
(``M % NC``). The channel-vector kernel (``cvec_pointwise``) also vectorises over output channels, but with
a conv's generic tap loops and per-row weight re-reads. Pixel tiles run inside each panel, so the panel
(``4 * C * NC`` bytes) stays in L1 while every pixel tile reads it and ``X`` is read once per panel from L2.
"""

from __future__ import annotations

import numpy as np

from cnnjit.ir import Node

from ..kernel import KernelCall, Param, Target, note, variant
from .epilogue import Epilogue, channel_stores
from .packed_gemm import gemm_tile, pack_panels, row_tiles
from .packed_pointwise import few_strips, packed_pointwise_applies
from .simd_pointwise import is_pointwise, pointwise_operands
from .template import source

#: the fewest pixels: with fewer than 4 rows a tile has too few FMA chains (a 1x1 map is ``packed_fc``'s)
MIN_PIXELS = 4
#: up to this many pixels (6x6) it is taken where ``packed_pointwise`` does not apply (too few channels, or
#: fewer pixels than one of its strips), whatever the other variants (AVX2, Conv+HardSwish, in the schedule,
#: best of 3 x 300 runs, GFLOP/s against the default): 2x2 maps 576 -> 96 76 vs 19 (``cvec_pointwise``),
#: 96 -> 576 61 vs 18; 3x3 96 -> 576 67 vs 30; 4x4 40 -> 240 42 vs 13 (``simd_pointwise``), 240 -> 40 57 vs 16,
#: 16 -> 96 18 vs 12 (``cvec``); 6x6 24 -> 72 27 vs 17. Where ``packed_pointwise`` applies it is as fast or
#: faster from 4x4 on (its stores are whole vectors, these strided; its tail pixels also run on channel
#: vectors): 4x4 96 -> 576 91 vs 66, 576 -> 96 89 vs 88; 5x5 64 -> 64 44 vs 45, 160 -> 960 75 vs 75; 6x6
#: 64 -> 64 48 vs 48
SMALL_PIXELS = 36
#: up to this many pixels (10x10) it is taken where ``packed_pointwise`` does not apply and the map does not
#: fill ``simd_pointwise``'s rows of 4 vectors: 7x7 40 -> 40 33 vs 25 (``simd_pointwise``), 16 -> 64 22 vs 19;
#: 10x10 96 -> 24 49 vs 42; beyond, the shallow layers lose (14x14 32 -> 32 39 vs 46, 12x12 16 -> 96 25 vs 39)
MAX_PIXELS = 100


def channel_source(node: Node, w: int, mr: int, nr: int, pixels: int,
                   gather: tuple[str, list[str]] | None = None) -> tuple[str, list]:
    """The kernel for ``node``'s epilogue at vector width ``w`` over maps of ``pixels`` pixels (tiles of
    ``mr`` pixels by ``nr`` vectors of output channels, ``row_tiles``); returns the source and the residual
    arguments. A residual is gathered like the stores (all lanes of a whole panel, the first ``cnt`` of the
    last, partial one). ``gather``: extra parameters (after ``P``) and the lines, inside the loop over images
    ``n``, that build image ``n``'s ``K x P`` matrix and set ``x0`` to it (``im2col_packed.im2col_lines``)."""
    nc = nr * w
    whole = Epilogue(node, nc, False, residual_load=lambda k: f"vgather{nc}(r{k}b, r{k}o + yq, P)")
    part = Epilogue(node, nc, False, residual_load=lambda k: f"vgathern{nc}(r{k}b, r{k}o + yq, P, cnt)")

    def stores(epi: Epilogue, ind: str, rows: int, masked: bool) -> list[str]:
        out = []
        for i in range(rows):
            out.append(f"{ind}yq = y0 + q0 * P + m + {i}")
            out += epi.vector(ind, f"a{nc}_{i}", "", nc, False)
            if masked:
                out.append(f"{ind}vscattern{nc}(yb, yo + yq, P, a{nc}_{i}, cnt)")
        if masked:
            return out
        return out + channel_stores(ind, [f"a{nc}_{i}" for i in range(rows)], "y0 + q0 * P + m", nc)

    def tile(rows: int, ind: str) -> list[str]:
        """``rows`` pixels from pixel ``m`` x the panel of output channels from ``q0``."""
        out = [f"{ind}a{nc}_{i} = vload{nc}(cb, co + q0)" for i in range(rows)]
        out += [f"{ind}xi = x0 + m", f"{ind}bi = pan", f"{ind}for k in range(K):",
                f"{ind}    v{nc} = vload{nc}(bb, bi)"]
        src = "zb" if gather else "xb"
        out += [f"{ind}    a{nc}_{i} = vfma{nc}(vbcast{nc}({src}[U(xi + {i})]), v{nc}, a{nc}_{i})" for i in range(rows)]
        out += [f"{ind}    xi += P", f"{ind}    bi += {nc}", f"{ind}if cnt == {nc}:"]
        out += stores(whole, ind + "    ", rows, False)
        out.append(f"{ind}else:")
        out += stores(part, ind + "    ", rows, True)
        return out + whole.after(ind, [f"for i in range({rows}):", "for j in range(cnt):"],
                                 "y0 + (q0 + j) * P + m + i")

    full, tail = row_tiles(pixels, mr)
    lines = [
        "def kernel(xb, xo, bb, bo, cb, co, yb, yo, N, K, M, P" + (gather[0] if gather else "")
        + whole.signature() + "):",
        "    for n in range(N):",
        *(gather[1] if gather else ["        x0 = xo + n * K * P"]),
        "        y0 = n * M * P",
        f"        for j in range((M + {nc - 1}) // {nc}):",
        f"            q0 = j * {nc}",
        f"            cnt = min({nc}, M - q0)",
        f"            pan = bo + j * K * {nc}",
        "            m = 0",
    ]
    if full:
        lines += [f"            for _ in range({full}):", *tile(mr, " " * 16), f"                m += {mr}"]
    for t in tail:
        lines += tile(t, " " * 12) + [f"            m += {t}"]
    return source(lines), whole.args


def lane_share(n: int, lanes: int) -> float:
    """The share of busy lanes when ``n`` items run in whole vectors of ``lanes`` lanes."""
    return n / (-(-n // lanes) * lanes)


#: the least share of busy lanes in the output-channel panels at a vector width: narrower vectors below it
#: (a squeeze-excite 1x1 of 8 output channels on a 2x2 map runs 4-lane panels of 8 rather than 16-lane
#: vectors of 32 with 24 idle)
PANEL_SHARE = 0.75


def panel_width(M: int, target: Target) -> int:
    """The vector width of the panels for ``M`` output channels: the widest of the target's, 8 and 4 whose
    panels of ``nr`` vectors keep ``PANEL_SHARE`` of their lanes busy (4 if none does)."""
    _, nr = gemm_tile(target)
    host = target.vector_width
    return next((w for w in (host, 8) if w <= host and lane_share(M, nr * w) >= PANEL_SHARE), min(4, host))


def channel_applies(node: Node, target: Target) -> bool:
    """A group-1 1x1, stride-1, unpadded float32 Conv with constant weights (and bias) that
    ``packed_pointwise`` does not take (or whose map is too few of its strips: ``few_strips``), on a map of
    ``MIN_PIXELS`` to ``SMALL_PIXELS`` pixels, or up to ``MAX_PIXELS`` whose pixels do not fill
    ``simd_pointwise``'s rows of ``4 * w`` columns."""
    x, wt = node.inputs[0], node.inputs[1]
    b = node.inputs[2] if len(node.inputs) > 2 else None
    if not (is_pointwise(node) and x.dtype == np.float32 and wt.dtype == np.float32 and wt.is_const
            and (b is None or b.is_const) and len(x.shape) == 4):
        return False
    P = int(np.prod(x.shape[2:], dtype=np.int64))
    return takes_pixels(P, target) and not (packed_pointwise_applies(node, target) and not few_strips(P, target))


def takes_pixels(P: int, target: Target) -> bool:
    """Whether a map of ``P`` pixels is one the output-channel lanes take over pixel vectors: ``MIN_PIXELS`` to
    ``SMALL_PIXELS``, or up to ``MAX_PIXELS`` where they do not fill ``simd_pointwise``'s rows of ``4 * w``."""
    if P < MIN_PIXELS or P > MAX_PIXELS:
        return False
    return P <= SMALL_PIXELS or lane_share(P, 4 * target.vector_width) < 1.0


def channel_call(node: Node, target: Target, gather: tuple[str, list[str]] | None = None,
                 gather_args: tuple = ()) -> list[KernelCall]:
    """One call for the whole batch on the output's ``P`` pixels, ``W^T`` (``M x K``, ``K`` the weights'
    input channels x taps) packed into panels of ``nr * w`` output channels (``w`` from ``panel_width``; zeros
    past ``M``), the bias padded alike; ``gather`` (``channel_source``) with its arguments ``gather_args`` for
    an input that is not ``K x P``."""
    x, wt, bias, y, N, _, M, _ = pointwise_operands(node)
    K = int(np.prod(wt.shape[1:]))
    P = int(np.prod(node.outputs[0].shape[2:], dtype=np.int64))
    mr, nr = gemm_tile(target)
    w = panel_width(M, target)
    nc = nr * w
    panels = pack_panels(np.ascontiguousarray(wt.const.reshape(M, K).T, dtype=np.float32), nc)
    cb = np.zeros(-(-M // nc) * nc, np.float32)
    cb[:M] = bias.array if isinstance(bias, Param) else bias.const.reshape(M)
    src, extra = channel_source(node, w, mr, nr, P, gather)
    return [KernelCall(src, [x, Param(panels), Param(cb), y, N, K, M, P, *gather_args, *extra], note(node))]


@variant("Conv", name="channel_pointwise", priority=17, applies=channel_applies)
def gen_channel_pointwise(node: Node, target: Target) -> list[KernelCall]:
    """``channel_call`` on the input's channel planes."""
    return channel_call(node, target)
