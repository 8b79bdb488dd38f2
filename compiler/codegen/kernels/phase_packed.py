"""``stem_packed``'s kernel on deeper inputs: a small-kernel convolution whose output channels do not fill
``cblock``'s channel tiles, or whose rows ``simd_conv`` and ``cblock`` run below the packed GEMM tile.

``stem_packed`` (1-4 input channels) copies a band of input rows once into zero-padded, phase-split planes
and runs a register tile of ``MR`` output channels by ``NR`` pixel vectors over them, every tap one
unaligned load at a constant offset, the channels past the last whole tile one narrower tile, plain vector
stores. Nothing in it depends on the input being thin: its reduction loops over the input channels with
the taps unrolled. On deeper inputs the copy is one load and store per input float against ``M x taps``
FMAs on it, and the tile keeps its advantages over the other variants of such layers:

* ``cblock`` puts output channels on its lanes, two vectors per tile (16 at AVX2): 24 channels fill
  three quarters of its two 16-lane tiles (the last one masked and scattered), 40 five sixths, 72 nine
  tenths, and it stores each pixel's channels with strided stores;
* ``simd_conv`` (pixels on lanes, like this tile) tests each tap at a row's border tiles and loads two
  vectors per tap at stride 2.

Measured (``benchmarks/phase_conv.py``, AVX2, GFLOP/s of one Conv + ReLU, the table's choice without it ->
with it, load 2-3): PP-OCRv6 det's 48 -> 24 3x3 stride 2 at 320x320 42 (cblock) -> 51, 16 -> 24 stride 2
at 112x112 48 -> 59, openWakeWord's 24 -> 24 1x3 / 3x1 on 74x32 56 / 66 (simd_conv) -> 71 / 65, 48 -> 48
3x1 75 -> 83, 64 -> 64 5x5 at 56x56 67 -> 89, 64 -> 128 1x3 at 40x40 59 -> 85. Where ``cblock``'s tiles are
whole and the stride is 2 it loses (64 -> 64 at 56x56 80 against 67, 96 -> 48 at 24x160 82 against 72):
the rule below (``MIN_LANE_GAIN``) compares the lanes each fills.
"""

from __future__ import annotations

from cnnjit.ir import Node

from ..kernel import KernelCall, Target, variant
from ..parts import part_space
from .simd_cblock import cblock_tile
from .stem_conv import stem_layer
from .stem_packed import MAX_CHANNELS, geometry, phase_call, stem_packed_part_space, stem_packed_tile
from .winograd import winograd_applies

#: the most kernel taps (the tile's code unrolls them once per input channel loop): a 7x7 kernel, as
#: ``stem_packed``'s ResNet-50 stem
MAX_TAPS = 49
#: the least ratio of the lanes this tile fills (a row's pixels over its whole pixel vectors) to the lanes
#: ``cblock``'s channel tile fills (the output channels over its whole two-vector tiles; 0 where it has no
#: tile), by the larger stride of the layer: at stride 1 equal fill is enough (whole tiles on both sides:
#: 48 -> 48 1x3 at 34x16 81 against 74 GFLOP/s for ``cblock``, 72 -> 72 3x1 at 32x8 71 against 65), at
#: stride 2 the phase copy of 1.5 input rows per output row costs more: 48 -> 72 at 32x32 (1 against 0.9,
#: 1.11) 76 against 70, 40 -> 40 at 28x28 (0.875 against 0.83, 1.05) 53 against 58, 24 -> 40 at 56x56 (1.05)
#: 57 against 58, 32 -> 48 at 64x64 (1.0) 72 against 73 (AVX2, load 2-3, ``benchmarks/conv_variants.py``)
MIN_LANE_GAIN = {1: 1.0, 2: 1.1}
#: the largest one-row band of phase planes (``C x SH x SW`` planes of ``1 + EXH`` rows): it is re-read from
#: L2 by every channel tile of a row (PP-OCRv6 det's 48 -> 24 stride 2 at 320x320: 258 KiB, 1.21x; larger
#: bands were not measured)
MAX_BAND_BYTES = 288 * 1024
#: the least share of the most accumulators a tile in the register budget holds that the tile must hold:
#: ``stem_packed``'s cost model counts a tile at exactly one FMA latency per tap as fast as a larger one,
#: and on a deep reduction its loads per FMA show (128 -> 128 3x1 at 28x32: a 2 x 4 tile (8 accumulators)
#: 57 GFLOP/s, 6 x 2 (12) 86, AVX2)
MIN_ACCUMULATOR_SHARE = 0.75


def lane_gain(node: Node, target: Target) -> float:
    """The lanes this tile fills over the lanes ``cblock``'s channel tile fills (``inf`` without one)."""
    w = target.vector_width
    ow, m = node.outputs[0].shape[3], node.inputs[1].shape[0]
    mine = ow / (-(-ow // w) * w)
    tile = cblock_tile(target, m, ow)
    if tile is None:
        return float("inf")
    lanes = tile[0] * w
    return mine / (m / (-(-m // lanes) * lanes))


def phase_tile(target: Target, m: int, ow: int) -> tuple[int, int]:
    """(MR, NR) for ``m`` output channels on rows of ``ow`` pixels: ``stem_packed``'s row cost model over
    the tiles holding at least ``MIN_ACCUMULATOR_SHARE`` of the most accumulators that fit."""
    return stem_packed_tile(target, m, ow, MIN_ACCUMULATOR_SHARE)


def band_bytes(node: Node, target: Target) -> int:
    """Bytes of a one-output-row band of the layer's phase planes."""
    g = geometry(node, target.vector_width)
    return g["C"] * g["SH"] * g["SW"] * (1 + g["EXH"]) * g["WH"] * 4


def phase_packed_applies(node: Node, target: Target) -> bool:
    """A dense (group 1) 2-D float32 Conv with constant weights and more than ``stem_packed``'s
    ``MAX_CHANNELS`` input channels, a kernel of 2 to ``MAX_TAPS`` taps, strides of 1 or 2 and output rows of
    at least a vector, that Winograd does not take (its 3x3 stride-1 layers: 2-3x fewer multiplies), whose
    one-row band fits ``MAX_BAND_BYTES`` and whose pixel vectors fill ``MIN_LANE_GAIN`` times the lanes of
    ``cblock``'s channel tiles. In the table after ``im2col_bands`` (kernels of 26+ taps on 5+ register
    tiles of output channels), before ``cblock`` and ``simd_conv``."""
    a = node.attrs
    if not (stem_layer(node, target, 1 << 30, 1 << 30) and node.inputs[0].shape[1] > MAX_CHANNELS
            and all(s in (1, 2) for s in a["strides"]) and a["kernel_shape"][0] * a["kernel_shape"][1] <= MAX_TAPS):
        return False
    if winograd_applies(node, target) or band_bytes(node, target) > MAX_BAND_BYTES:
        return False
    return lane_gain(node, target) >= MIN_LANE_GAIN[max(a["strides"])]


@variant("Conv", name="phase_packed", priority=24, applies=phase_packed_applies)
def gen_phase_packed(node: Node, target: Target) -> list[KernelCall]:
    """``stem_packed``'s kernel (one call for the batch, each band's phase planes in scratch) with
    ``phase_tile``'s register tile."""
    return phase_call(node, target, *phase_tile(target, node.inputs[1].shape[0], node.outputs[0].shape[3]))


part_space("Conv", "phase_packed")(stem_packed_part_space)
