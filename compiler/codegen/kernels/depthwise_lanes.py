"""Depthwise 2-D convolution on small maps with the channels as the vector lanes (``depthwise_lanes``).

On maps whose rows are narrower than a vector (the 7x7, 4x4 and 2x2 maps of MobileNetV3's last stages, the
stride-2 5x5 layers that make them), vectors over output columns leave lanes idle (a 4-column row on AVX2
fills 4 of 8, a 2-column row 2) and compute every kernel column's taps, those in the padding too (a 5x5
window on a 7x7 map: 29 of 49 taps per row inside). This kernel puts ``w`` consecutive channels in the lanes instead
(depthwise: lane ``k`` only ever meets channel ``k``'s input and weights, so every lane is useful):

* each group of ``w`` channels is transposed into a pixel-major scratch (``vloadtr``: ``w`` pixels of ``w``
  channels per ``w x w`` block, the tails element by element), one vector per input pixel;
* the weights are re-laid at compile time as ``[channel group][tap][lane]`` (zeros past the last channel),
  so a tap's weights are one aligned load;
* the layer's sizes are literals of the kernel text: every output pixel's taps inside the input are listed
  (the taps in the padding are left out, not computed on zeros), in tiles of ``TILE`` output pixels, one
  accumulator each, the tap loop outermost (a tap's weight vector is loaded once per tile and feeds every
  pixel of the tile that uses it: ``1 + 1 / (pixels per tap)`` loads per FMA);
* the epilogue runs on the accumulators (the same steps on every lane: per-channel values are folded into
  the weights and bias before this point), then the results go back through the scratch and a transpose
  into the NCHW rows.

Applies to float32 depthwise Convs (constant weights and bias, channel multiplier 1, any stride, undilated,
at most ``MAX_TAPS`` taps) with rows narrower than a row vector (``row_width``: 8 lanes on AVX-512 too, the
width of this kernel's vectors there), at most ``MAX_PIXELS`` output pixels, at least a vector of channels, an
epilogue without a residual input (its tensor would need the transpose too), where it needs fewer FMAs than
the row kernel by ``lanes_cost`` / ``rows_cost``.
"""

from __future__ import annotations

import numpy as np

from cnnjit.ir import Node

from ..kernel import KernelCall, Param, Scratch, Target, note, variant
from .epilogue import Epilogue, has_residual
from .simd_depthwise import MAX_TAPS
from .simd_pointwise import row_width
from .template import source

#: output pixels of a channel at most (the kernel text lists every pixel's taps)
MAX_PIXELS = 64
#: output pixels per register tile (one accumulator each; with the weight and the input vector 10 of AVX2's 16)
TILE = 8


def _up(v: int, w: int) -> int:
    return -(-v // w) * w


def depthwise_lanes_applies(node: Node, target: Target) -> bool:
    """A float32 depthwise Conv (multiplier 1, constant weights and bias, undilated, at most ``MAX_TAPS``
    taps) whose output rows are narrower than a row vector, with at most ``MAX_PIXELS`` output pixels, at
    least a vector of channels, an epilogue in registers without a residual, and fewer FMAs by the estimate
    (``lanes_cost`` against ``rows_cost``: the taps in the padding and the idle lanes the row kernel computes
    against the transposes)."""
    x, wt, y = node.inputs[0], node.inputs[1], node.outputs[0]
    a = node.attrs
    if not (x.dtype == np.float32 and wt.is_const and len(x.shape) == 4 and a["group"] == x.shape[1] > 1
            and wt.shape[0] == x.shape[1] and wt.shape[1] == 1 and tuple(a["dilations"]) == (1, 1)
            and (len(node.inputs) < 3 or node.inputs[2] is None or node.inputs[2].is_const)):
        return False
    (kh, kw), (OH, OW) = a["kernel_shape"], y.shape[2:]
    w = row_width(target, OW)
    return (OW < w and OH * OW <= MAX_PIXELS and kh * kw <= MAX_TAPS and x.shape[1] >= w
            and lanes_cost(node, w) < rows_cost(node, w)
            and not has_residual(node) and Epilogue(node, w, False).in_registers)


#: the transposes' cost per input and per output pixel of a channel group, in FMAs: 2 fits the A/B against
#: ``simd_depthwise_static`` (5x5 on 7x7 1.13-1.22x faster as predicted, 3x3 on 7x7 a tie, 3x3 on 6x6 0.94x:
#: refused)
TRANSPOSE_FMAS = 2.0
#: an element moved one by one (the pixels past the last whole ``w x w`` block, a last partial channel group),
#: in FMAs (27 channels on a 7x4 map, 3 groups and a tail of 3: 0.94x, refused)
SCALAR_FMAS = 1.0


def _valid(o: int, k: int, s: int, p: int, n: int) -> int:
    """Taps of a ``k`` window at output position ``o`` (stride ``s``, padding ``p``) inside ``n`` inputs."""
    return sum(0 <= o * s - p + i < n for i in range(k))


def rows_cost(node: Node, w: int) -> float:
    """Vector FMAs per channel of the row-vector kernel (``simd_depthwise_static``): every output row's taps
    in the input rows, each kernel column, each row vector (padded columns included)."""
    a = node.attrs
    (_, _, H, _), (OH, OW) = node.inputs[0].shape, node.outputs[0].shape[2:]
    (kh, kw), sh, pt = a["kernel_shape"], a["strides"][0], a["pads"][0]
    return sum(_valid(oh, kh, sh, pt, H) for oh in range(OH)) * kw * -(-OW // w)


def lanes_cost(node: Node, w: int) -> float:
    """Vector FMAs per channel of this kernel: every output pixel's taps inside the input and the transposes
    (``TRANSPOSE_FMAS`` per input and output pixel), over ``w`` channels, and the elements moved one by one
    (``SCALAR_FMAS`` each)."""
    a = node.attrs
    (_, _, H, W), (OH, OW) = node.inputs[0].shape, node.outputs[0].shape[2:]
    (kh, kw), (sh, sw), (pt, pl) = a["kernel_shape"], a["strides"], a["pads"][:2]
    C, P, OP = node.inputs[0].shape[1], H * W, OH * OW
    taps = sum(_valid(oh, kh, sh, pt, H) for oh in range(OH)) * sum(_valid(ow, kw, sw, pl, W) for ow in range(OW))
    scalar = P % w + OP % w + ((P + OP) * w / C if C % w else 0.0)  # elements moved one by one, per channel
    return (taps + TRANSPOSE_FMAS * (P + OP)) / w + SCALAR_FMAS * scalar


def packed_weights(node: Node, w: int) -> tuple[np.ndarray, np.ndarray]:
    """The weights as ``[channel group][tap][lane]`` and the bias as ``[channel]``, zeros past the last
    channel (whole groups of ``w``)."""
    wt = node.inputs[1].const.astype(np.float32)
    C, taps = wt.shape[0], wt.shape[2] * wt.shape[3]
    CP = _up(C, w)
    packed = np.zeros((CP, taps), np.float32)
    packed[:C] = wt.reshape(C, taps)
    bias = np.zeros(CP, np.float32)
    if len(node.inputs) > 2:
        bias[:C] = node.inputs[2].const.astype(np.float32)
    return np.ascontiguousarray(packed.reshape(CP // w, w, taps).transpose(0, 2, 1)).reshape(-1), bias


def _taps(node: Node) -> list[list[tuple[int, int]]]:
    """Per output pixel (row-major), its ``(tap, input pixel)`` pairs inside the input."""
    a = node.attrs
    (_, _, H, W), (OH, OW) = node.inputs[0].shape, node.outputs[0].shape[2:]
    (kh, kw), (sh, sw), (pt, pl) = a["kernel_shape"], a["strides"], a["pads"][:2]
    out = []
    for oh in range(OH):
        for ow in range(OW):
            out.append([(i * kw + j, (oh * sh - pt + i) * W + ow * sw - pl + j) for i in range(kh) for j in range(kw)
                        if 0 <= oh * sh - pt + i < H and 0 <= ow * sw - pl + j < W])
    return out


def _transpose(w: int, C: int, P: int, chan: tuple[str, str], pix: tuple[str, str], to_pixels: bool,
               ind: str) -> list[str]:
    """Channels ``g .. g + w - 1`` between channel-major rows (``chan``: buffer and first element, rows of
    ``P`` pixels) and the pixel-major scratch (``pix``: pixel ``p``'s lane ``k`` at ``p * w + k``), into the
    scratch (``to_pixels``) or out of it: ``w x w`` transposes (``vloadtr``), the pixels past the last whole
    block and a last group's missing channels (zeros in the scratch) element by element."""
    (cb, co), (pb, po) = chan, pix
    full = P // w * w
    ch, px = f"{cb}[{co} + k * {P} + p]", f"{pb}[{po} + p * {w} + k]"
    dst, src = (px, ch) if to_pixels else (ch, px)
    L = [f"{ind}if g + {w} <= {C}:"]
    for p in range(0, full, w):
        if to_pixels:  # rows: channels from pixel p; columns: pixels
            L.append(f"{ind}    t = vloadtr{w}({cb}, {co} + {p}, {P})")
            L += [f"{ind}    vstore{w}({pb}, {po} + {(p + j) * w}, t[{j}])" for j in range(w)]
        else:  # rows: pixels p ..; columns: channels
            L.append(f"{ind}    t = vloadtr{w}({pb}, {po} + {p * w}, {w})")
            L += [f"{ind}    vstore{w}({cb}, {co} + {j * P + p}, t[{j}])" for j in range(w)]
    if full < P:
        L += [f"{ind}    for p in range({full}, {P}):", f"{ind}        for k in range({w}):",
              f"{ind}            {dst} = {src}"]
    lanes = w if to_pixels else f"{C} - g"  # (into the scratch: zeros past the last channel)
    L += [f"{ind}else:", f"{ind}    for p in range({P}):", f"{ind}        for k in range({lanes}):",
          f"{ind}            {dst} = {src}" + (f" if g + k < {C} else 0.0" if to_pixels else "")]
    return L


def lanes_source(node: Node, w: int) -> tuple[str, list]:
    """The kernel for depthwise Conv ``node`` with ``w`` channels per vector (module docstring)."""
    (_, C, H, W), (OH, OW) = node.inputs[0].shape, node.outputs[0].shape[2:]
    kh, kw = node.attrs["kernel_shape"]
    taps, P, OP = kh * kw, H * W, OH * OW
    epi = Epilogue(node, w, False)
    ys = _up(P, w) * w  # the output's scratch after the input's
    L = ["def kernel(xb, xo, wb, wo, bb, bo, yb, yo, sb, so, N" + epi.signature() + "):",
         "    for n in range(N):",
         f"        for g in range(0, {C}, {w}):",
         f"            base = xo + (n * {C} + g) * {P}",
         *_transpose(w, C, P, ("xb", "base"), ("sb", "so"), True, " " * 12),
         f"            wg = wo + g * {taps}",
         f"            bias = vload{w}(bb, bo + g)"]
    pixels = _taps(node)
    for t0 in range(0, OP, TILE):
        tile = range(t0, min(OP, t0 + TILE))
        L += [f"            a{p - t0} = bias" for p in tile]
        for tap in range(taps):
            users = [(p, q) for p in tile for t, q in pixels[p] if t == tap]
            if not users:
                continue
            L.append(f"            wv = vload{w}(wb, wg + {tap * w})")
            L += [f"            a{p - t0} = vfma{w}(wv, vload{w}(sb, so + {q * w}), a{p - t0})" for p, q in users]
        for p in tile:
            L += epi.vector(" " * 12, f"a{p - t0}", "0", w, False)
            L.append(f"            vstore{w}(sb, so + {ys + p * w}, a{p - t0})")
    L += [f"            base = yo + (n * {C} + g) * {OP}",
          *_transpose(w, C, OP, ("yb", "base"), ("sb", f"so + {ys}"), False, " " * 12)]
    return source(L), epi.args


@variant("Conv", name="depthwise_lanes", priority=46, applies=depthwise_lanes_applies)
def gen_depthwise_lanes(node: Node, target: Target) -> list[KernelCall]:
    x, y = node.inputs[0], node.outputs[0]
    w = row_width(target, y.shape[3])  # (8 lanes on AVX-512 too: a 16-lane group would idle lanes of thin layers)
    wts, bias = packed_weights(node, w)
    src, extra = lanes_source(node, w)
    (_, _, H, W), (OH, OW) = x.shape, y.shape[2:]
    scratch = Scratch((_up(H * W, w) + _up(OH * OW, w)) * w)
    return [KernelCall(src, [x, Param(wts), Param(bias), y, scratch, x.shape[0], *extra], note(node))]
