"""Depthwise 2-D convolution on small maps as one flat run of pixels per channel (``depthwise_flat``).

On a map whose rows are narrower than a vector (the MLPerf keyword model's 25x5, MobileNet's 7x7), the row
kernels put each output row in a vector of its own (``row_width``: 8 lanes for rows up to 8 columns, so a
5-column row fills 5 of 8) and sweep every kernel column of every row. A stride-1 layer that keeps the row
width (``OW == W``: "same" padding along the columns) has one constant input shift per tap over the whole
flattened plane: output pixel ``p`` reads input pixel ``p + (i * dh - pt) * W + (j * dw - pl)``. So this
kernel runs over the plane's ``OH * OW`` pixels as ``ceil(OH * OW / w)`` full vectors (25x5 at 16 lanes:
8 vectors, 98% of the lanes used, against 25 row vectors of 8 lanes at 62%):

* one output channel at a time (on planes of fewer than ``CHAINS`` vectors, several side by side: the FMAs
  into one accumulator wait on each other), its ``KH * KW`` weights broadcast one tap at a time, the
  plane's vectors in register tiles of up to ``registers - 4`` accumulators (the bias first, the taps added
  in order);
* each tap's load is masked with a compile-time lane pattern (``vloadm``): the lanes whose input pixel lies
  in the padding (a row above or below the map, a column past either edge: every ``W``-th lane) read zero
  and are never accessed; a tap no lane of a vector needs is left out, and a full pattern is a plain load;
* no plane copy, no transposes (``depthwise_lanes`` transposes the channels into the lanes and back): the
  input is read where it is and the output written in place, the last partial vector by a masked store.

Applies to float32 depthwise Convs (any channel multiplier) of stride 1, ``OW == W``, at most ``MAX_TAPS``
taps, output rows narrower than a vector and of at most ``MAX_COLUMNS`` columns, at most ``MAX_PAIRS``
(vector, tap) loads of a channel (the kernel text lists them), where its FMA estimate (``flat_cost``) is
below ``ROWS_RATIO`` of the row kernel's (``rows_cost``), and not where ``depthwise_lanes`` applies (maps of
at most 64 pixels where the transposes pay: at 16 lanes this kernel beat it on some, 7x7 5x5 1.24x and 4x4
3x3 1.2x, and lost on others, 4x4 5x5 1.26x slower, its one vector's 25 loads all straddling cache lines,
single calls timed from Python; no rule between the two is measured in the model yet).
"""

from __future__ import annotations

import numpy as np

from cnnjit.ir import Node

from ..kernel import KernelCall, Target, note, variant
from .depthwise_lanes import depthwise_lanes_applies, rows_cost
from .epilogue import Epilogue
from .simd_depthwise import MAX_TAPS
from .simd_pointwise import conv_operands, conv_sizes, row_width
from .template import source

#: the most (vector, tap) pairs of one channel the kernel text lists (its length and compile time)
MAX_PAIRS = 512
#: the share of the row kernel's FMA estimate (``rows_cost``) below which this one is chosen (in the model,
#: minima of profiled runs at 16 lanes: the keyword model's 25x5 3x3 at 0.33 of the estimate 1.5x faster,
#: MobileNet's 6x6 at 0.50 1.1x; 8x8 at 0.55 1.06x and 7x7 at 0.54 a tie (MobileNetV2 3% faster, ShuffleNet
#: 2-9% slower), left to the row kernel; so are 2x2 at 0.75, 2x faster, and the keyword model at 8 lanes,
#: 0.64, 1.03x the whole model: a rule for those is not measured yet)
ROWS_RATIO = 0.52
#: the widest rows taken: on rows of 9-15 columns the row kernel's 16-lane vectors run near their best in the
#: model (AVX-512, 14x14 3x3 layers of MobileNetV2 and ShuffleNet 1.55-1.65x faster than this kernel, 12x12
#: 1.2x, though its estimate is the lower: the static kernel's aligned plane copy against loads that straddle
#: cache lines), where rows of at most 8 columns leave its 8-lane row vectors at half the machine's width
MAX_COLUMNS = 8
#: independent accumulators that keep the FMA pipes busy (two pipes, four cycles of latency)
CHAINS = 8
#: registers kept beside the accumulators: the broadcast weight, a loaded input vector and slack
SPARE_REGISTERS = 4


def _geometry(node: Node) -> tuple[int, int, int, int, int, int, int, int, int, int]:
    """(H, W, OH, OW, KH, KW, top pad, left pad, row dilation, column dilation) of ``node``."""
    a = node.attrs
    (_, _, H, W), (OH, OW) = node.inputs[0].shape, node.outputs[0].shape[2:]
    (kh, kw), (pt, pl), (dh, dw) = a["kernel_shape"], a["pads"][:2], a["dilations"]
    return H, W, OH, OW, kh, kw, pt, pl, dh, dw


def tap_masks(node: Node, w: int) -> list[list[int]]:
    """Per output vector ``v`` (lanes ``v * w ..``) and tap ``t`` (row-major), the lane pattern of the output
    pixels whose tap-``t`` input pixel lies inside the map (bit ``l`` for lane ``l``; 0: none)."""
    H, W, OH, OW, kh, kw, pt, pl, dh, dw = _geometry(node)
    OP = OH * OW
    out = []
    for v in range(-(-OP // w)):
        row = []
        for i in range(kh):
            for j in range(kw):
                bits = 0
                for lane in range(w):
                    p = v * w + lane
                    oh, ow = divmod(p, OW)
                    if p < OP and 0 <= oh + i * dh - pt < H and 0 <= ow + j * dw - pl < W:
                        bits |= 1 << lane
                row.append(bits)
        out.append(row)
    return out


def flat_cost(node: Node, w: int) -> int:
    """Vector FMAs per output channel of this kernel: the (vector, tap) pairs some lane needs."""
    return sum(bits != 0 for row in tap_masks(node, w) for bits in row)


def depthwise_flat_applies(node: Node, target: Target) -> bool:
    """A float32 depthwise Conv (any channel multiplier) of stride 1 whose output rows are as wide as its
    input rows, narrower than a vector and at most ``MAX_COLUMNS`` columns, at most ``MAX_TAPS`` taps and
    ``MAX_PAIRS`` (vector, tap) pairs, fewer FMAs than ``ROWS_RATIO`` of the row kernel's, where
    ``depthwise_lanes`` does not apply."""
    x, wt = node.inputs[0], node.inputs[1]
    a = node.attrs
    if not (x.dtype == np.float32 and wt.dtype == np.float32 and len(x.shape) == 4
            and a["group"] == x.shape[1] > 1 and wt.shape[1] == 1 and wt.shape[0] % x.shape[1] == 0
            and tuple(a["strides"]) == (1, 1)):
        return False
    H, W, OH, OW, kh, kw, *_ = _geometry(node)
    w = target.vector_width
    if not (OW == W and OW < w and OW <= MAX_COLUMNS and kh * kw <= MAX_TAPS
            and -(-OH * OW // w) * kh * kw <= MAX_PAIRS):
        return False
    return flat_cost(node, w) < ROWS_RATIO * rows_cost(node, row_width(target, OW)) and not depthwise_lanes_applies(
        node, target)


def _channels_body(node: Node, w: int, tile: range, group: int, ind: str, epi: Epilogue) -> list[str]:
    """Lines computing the vectors ``tile`` of ``group`` consecutive output channels from ``m0``: the taps
    in order, each tap's weight broadcast per channel and met by every vector some lane of which needs it
    (``group * len(tile)`` independent accumulators), then the epilogue and the stores."""
    H, W, OH, OW, kh, kw, pt, pl, dh, dw = _geometry(node)
    C, M = node.inputs[0].shape[1], node.outputs[0].shape[1]
    taps, P, OP = kh * kw, H * W, OH * OW
    masks = tap_masks(node, w)
    full = (1 << w) - 1
    L = []
    for g in range(group):
        L += [f"{ind}xc{g} = xo + (n * {C} + (m0 + {g}) // {M // C}) * {P}",
              f"{ind}yc{g} = (n * {M} + m0 + {g}) * {OP}",
              f"{ind}wc{g} = wo + (m0 + {g}) * {taps}",
              f"{ind}bias = vbcast{w}(bb[bo + m0 + {g}])",
              *[f"{ind}a{g}_{v} = bias" for v in tile]]
    for t in range(taps):
        users = [v for v in tile if masks[v][t]]
        if not users:
            continue
        shift = (t // kw * dh - pt) * W + t % kw * dw - pl
        for g in range(group):
            L.append(f"{ind}wv = vbcast{w}(wb[U(wc{g} + {t})])")
            for v in users:
                at = f"xc{g} + {v * w + shift}"
                load = f"vload{w}(xb, {at})" if masks[v][t] == full else f"vloadm{w}(xb, {at}, {masks[v][t]})"
                L.append(f"{ind}a{g}_{v} = vfma{w}(wv, {load}, a{g}_{v})")
    for g in range(group):
        for v in tile:
            acc, at, last = f"a{g}_{v}", f"yc{g} + {v * w}", (v + 1) * w > OP
            if last:
                L.append(f"{ind}cnt = {OP - v * w}")
            L += epi.vector(ind, acc, at, w, last)
            L.append(f"{ind}vstoren{w}(yb, yo + {at}, {acc}, cnt)" if last else f"{ind}vstore{w}(yb, yo + {at}, {acc})")
        L += epi.after(ind, [f"for q0 in range({OP}):"], f"yc{g} + q0")
    return L


def flat_shape(node: Node, w: int, registers: int) -> tuple[int, int]:
    """(vectors per register tile, output channels computed together): tiles of even size of at most
    ``registers - SPARE_REGISTERS`` accumulators; on planes of fewer than ``CHAINS`` vectors, as many
    channels side by side as give ``CHAINS`` independent accumulators (a tap's FMAs into one accumulator
    wait on each other: a 4x4 map at 16 lanes, one vector, 25 taps of a 5x5 window, ran 1.4x slower than
    ``depthwise_lanes`` one channel at a time, 1.26x with 8 channels side by side)."""
    V = -(-node.outputs[0].shape[2] * node.outputs[0].shape[3] // w)
    most = max(1, registers - SPARE_REGISTERS)
    size = -(-V // -(-V // most))
    return size, max(1, min(most // size, -(-CHAINS // size), node.outputs[0].shape[1]))


def flat_source(node: Node, w: int, registers: int) -> tuple[str, list]:
    """The kernel for depthwise Conv ``node`` at ``w`` lanes with ``registers`` vector registers (module
    docstring); the layer's sizes are literals of the text."""
    M, OP = node.outputs[0].shape[1], node.outputs[0].shape[2] * node.outputs[0].shape[3]
    V = -(-OP // w)
    size, group = flat_shape(node, w, registers)
    epi = Epilogue(node, w, True)
    L = ["def kernel(xb, xo, wb, wo, bb, bo, yb, yo, N" + epi.signature() + "):",
         "    for n in range(N):",
         f"        for m0 in range(0, {M // group * group}, {group}):"]
    for v0 in range(0, V, size):
        L += _channels_body(node, w, range(v0, min(V, v0 + size)), group, " " * 12, epi)
    if M % group:
        L.append(f"        m0 = {M // group * group}")
        for v0 in range(0, V, size):
            L += _channels_body(node, w, range(v0, min(V, v0 + size)), M % group, " " * 8, epi)
    return source(L), epi.args


@variant("Conv", name="depthwise_flat", priority=45, applies=depthwise_flat_applies)
def gen_depthwise_flat(node: Node, target: Target) -> list[KernelCall]:
    x, wt, bias, y = conv_operands(node)
    N = conv_sizes(node).N
    src, extra = flat_source(node, target.vector_width, target.vector_registers)
    return [KernelCall(src, [x, wt, bias, y, N, *extra], note(node))]
