"""A wide 1-D convolution (one-row map, ``1 x KW`` kernel, many channels) as ``packed_pointwise``'s GEMM.

A Conv1D of an audio, text or byte model (``conv_columns`` turns tf2onnx's ``Kx1`` on ``N x C x L x 1`` into
``1 x K`` on a one-row view) is a GEMM of the ``M x (C * KW)`` weights and the im2col of the row, whose
row ``(c, t)`` is input row ``c`` shifted by ``t * DW``: no copy is needed for it. ``simd_conv`` reads those
shifted rows straight from the input, in a register tile of ``MR`` output channels (a divisor of them, at most
12) by one vector of columns: one load per ``MR`` broadcasts and FMAs, and the tile's ``MR x C * KW`` weights
(40 KB for Magika's 8 x 256 x 5) re-read from L2 for every vector of columns. Magika's 256 -> 512, kernel 5
(AVX2, alone): 57 GFLOP/s, its 512 channels in tiles of 8 (8 accumulators: just the FMA latency times its two
pipes); 504 channels, tiles of 12: 70; the row length does not matter (500-1040 columns: 57).

Here the output columns run in ``packed_pointwise`` strips of ``L = 2 * W`` (its 6 x 2 register tile at
AVX2): each strip's inputs are copied once into a contiguous panel, every channel's window of ``L + (KW - 1)
* DW`` columns (``tap_strip_copy``: 1.5x the input at ``KW`` 5, against ``KW`` x for an im2col; past a
dilation of ``L``, each tap's ``L`` columns alone, ``packed_pointwise.tap_stride``), and a
channel's step of the micro-kernel is ``KW`` shifted loads of its window, each meeting one tap's ``MR``
broadcast weights (packed at compile time as ``[C][KW][MR]`` per row tile). The reduction runs in chunks of
channels (``tap_blocking``), a block of strips at a time whose chunk panel stays in L2, over row groups whose
chunk weights stay in L2 too; partial sums are kept in the output. AVX2, one Conv + ReLU call, thread time
(``benchmarks/conv1d.py``, load ~7): 84-97 GFLOP/s best over Conv1D layers of 64-512 channels, kernels 3-9 and
100-2000 columns, against 53-60 for ``simd_conv`` and 74-89 for onnxruntime (1 thread); Magika's layer 94.

Split over threads, a layer splits over output channels (each part copies the strips again, a small cost
against its share of the weights), or along its output columns in whole strips when the channels do not
divide (``conv1d_part_space``).
"""

from __future__ import annotations

import numpy as np

from cnnjit.ir import Node

from ..kernel import KernelCall, Param, Scratch, Target, note, variant
from ..parts import node_part, part_space
from .packed_pointwise import pack_weights, packed_pointwise_source, packed_tile, tap_row
from .simd_pointwise import conv_operands

#: bytes of one strip's panel of a reduction chunk, read in order by each of a row group's tiles. Fewer chunks
#: (fewer passes of partial sums through the output) beat a panel that fits L1: AVX2, GFLOP/s best of 20-30
#: (``tap_blocking``'s three sizes in KB): Magika's 256 -> 512 kernel 5 at 512 columns 88.2 (16, 128, 96),
#: 84.2 (8), 92.6-94.5 (24-96); 512 -> 512 kernel 3 at 2000 columns 84.8 (16), 89.6 (24), 93.7 (48); 64 -> 128
#: kernel 9 and 512 -> 256 kernel 7 flat within 2-4% from 24 KB; the block and row group sizes (64-1024 and
#: 48-384 KB) within noise
STRIP_PANEL_BYTES = 48 * 1024
#: bytes of a block's panel of one chunk (all its strips): it stays in L2 while every row group runs over it
BLOCK_PANEL_BYTES = 128 * 1024
#: bytes of a row group's weights of one chunk: they stay in L2 while the block's strips run under them
GROUP_WEIGHT_BYTES = 96 * 1024
#: the fewest taps of the reduction (input channels x kernel width) and of register tiles of output channels
#: (``benchmarks/conv1d.py --relax --crossover``, AVX2, one Conv + ReLU per call at 1000 columns, GFLOP/s against
#: the variant chosen without this one): 8 -> 64 kernel 3 (24 taps) 58.7 against 45.5 (``simd_conv``), 6 -> 64
#: kernel 3 49.7 against 40.0; against ``stem_conv`` 4 -> 64 kernel 3 (12 taps: left to it) 44.3 against 46.1,
#: 3 -> 64 kernel 9 (27 taps) 61.4 against 61.2; 64 -> 12 (2 row tiles of 6) 61.2 against 56.9, 64 -> 8 (1 tile
#: and 2 rows) 42.4 against 46.4, 64 -> 6 41.9 against 51.9
MIN_DEPTH = 16
MIN_ROW_TILES = 2


def _even(total: int, most: int) -> int:
    """The size of ``ceil(total / most)`` near-equal pieces of ``total`` (each at most ``most``, at least 1)."""
    most = max(1, min(total, most))
    return -(-total // -(-total // most))


def tap_blocking(C: int, kw: int, M: int, P: int, L: int, SL: int, unit: int) -> tuple[int, int, int]:
    """(PB, RG, KC): output columns per block (whole strips of ``L``), output rows per row group (a multiple of
    ``unit``) and input channels per reduction chunk; ``SL`` floats per channel of a strip's panel."""
    kc = _even(C, STRIP_PANEL_BYTES // (4 * SL))
    strips = -(-P // L)
    pb = _even(strips, BLOCK_PANEL_BYTES // (4 * SL * kc)) * L
    rg = min(M, max(1, GROUP_WEIGHT_BYTES // (4 * kc * kw * unit)) * unit)
    return pb, rg, kc


def conv1d_packed_applies(node: Node, target: Target) -> bool:
    """A group-1 float32 Conv with constant weights, a ``1 x KW`` kernel (``KW`` > 1) of stride 1 on a one-row
    input, at least ``MIN_DEPTH`` taps, ``MIN_ROW_TILES`` register tiles of output channels and more than one
    strip of output columns (a row of exactly two vectors is ``cblock``'s: 128 -> 128 kernel 3 at 16 columns
    68.1 here against 66.0 there; at 20, 24 and 40 columns 47-68 against 32-46 for ``simd_conv``)."""
    x, wt, y = node.inputs[0], node.inputs[1], node.outputs[0]
    a = node.attrs
    if not (x.dtype == np.float32 and wt.dtype == np.float32 and wt.is_const and len(x.shape) == 4
            and a["group"] == 1 and x.shape[2] == 1 and y.shape[2] == 1):
        return False
    kh, kw = a["kernel_shape"]
    mr, nr = packed_tile(target)
    return (kh == 1 and kw > 1 and tuple(a["strides"]) == (1, 1) and a["pads"][0] == 0 and a["pads"][2] == 0
            and wt.shape[1] * kw >= MIN_DEPTH and wt.shape[0] >= MIN_ROW_TILES * mr
            and y.shape[3] > nr * target.vector_width)


@variant("Conv", name="conv1d_packed", priority=21, applies=conv1d_packed_applies)
def gen_conv1d_packed(node: Node, target: Target) -> list[KernelCall]:
    """One call for the batch (or a part's output columns: ``meta["part"]``); the scratch holds one block's
    strip panels of every channel."""
    x, wt, bias, y = conv_operands(node)
    N, C, _, Win = x.shape
    M, P = wt.shape[0], y.shape[3]
    kw, dw = node.attrs["kernel_shape"][1], node.attrs["dilations"][1]
    mr, nr = packed_tile(target)
    w = target.vector_width
    L = nr * w
    SL = tap_row(L, kw, dw, w)
    pixels = node_part(node)
    src, extra = packed_pointwise_source(node, w, mr, nr, M % mr, registers=target.vector_registers,
                                         pixel_range=pixels is not None, kchunk=True, taps=(kw, dw))
    packed = pack_weights(wt.const.reshape(M, C * kw), mr)
    pb, rg, kc = tap_blocking(C, kw, M, P, L, SL, mr)
    scratch = Scratch(C * (pb // L) * SL)
    return [KernelCall(src, [x, Param(packed), bias, y, scratch, N, C, M, P, pb, rg, kc, *(pixels or ()),
                             Win, node.attrs["pads"][1], *extra], note(node))]


@part_space("Conv", "conv1d_packed")
def conv1d_part_space(node: Node, target: Target) -> tuple[int, int]:
    """Output columns, in whole strips: a part's strips are the whole layer's (the same sums)."""
    return node.outputs[0].shape[3], packed_tile(target)[1] * target.vector_width
