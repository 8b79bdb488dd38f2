"""A strided ConvTranspose whose taps overlap, as a stride-1 Conv of its output phases and a pixel shuffle.

A ConvTranspose of stride ``s`` and kernel ``k`` makes output row ``q * s + r`` (phase ``r``) from the taps
``k = t * s + r`` only: ``y[q * s + r] = sum_t x[q - t] w[t * s + r]``, a stride-1 correlation of the input
with phase ``r``'s taps reversed (``T = ceil(k / s)`` of them, the missing ones zero). All ``s_h * s_w``
phases of every output channel are one Conv with ``M * s_h * s_w`` output channels ``(m, r_h, r_w)``,
whose output a DepthToSpace (CRD: Reshape, Transpose, Reshape) interleaves and a Slice crops to the
ConvTranspose's pads. The Conv runs on the SIMD Conv kernels (Winograd, register tiles) instead of the
generic scatter kernel, which never vectorised (a ViT decoder's 4x4 stride-2 upsamplers: 1 GFLOP/s, 83% of
the model's time); the shuffle reads and writes the output once. The FLOPs are the ConvTranspose's when
``s`` divides ``k`` (the usual 4x4 / 2 and 3x3 / 1), at most ``(T * s / k)^2`` times them otherwise.

The Conv's ``T x T`` taps on a small map (a 2x2 of 384 -> 1024 channels at 17x17) ran at 4 GFLOP/s on
``simd_conv``, the only variant that took it; so an ungrouped phase Conv of at least ``IM2COL_ROWS`` output
channels has its taps folded into the channels instead (the zero-padded input's ``T * T`` shifted windows,
Slices of one Pad, concatenated): a 1x1 Conv on the packed GEMM kernels (3.8x faster there, under load),
for a copy of ``T * T`` times the input (``2 * M * s_h * s_w`` FLOPs per copied element).

Runs after epilogue fusion: the fused steps (bias, BN, activations) are per element or per output channel,
so they move onto the Conv (the bias repeated per phase). Left to the ConvTranspose kernels: kernel ==
stride without pads (``simd_shuffle`` stores the shuffle itself), dilations, residual or PRelu steps (a
tensor in the output's layout), non-float or non-constant weights, and pads that would crop more than a
phase's reach (the Conv's own pads would be negative).
"""

from __future__ import annotations

import numpy as np

from cnnjit.ir import Graph, Node, TensorType, Value

from .manager import Pass, insert_op

#: the upsampler kernel's (``codegen.kernels.simd_convtranspose``) output-column interleaves (1: none; 2: one
#: zip; 4: two zip levels) and its largest row stride (rows only multiply the GEMM rows, but keep the weight
#: matrix small); here so that this pass, which reads them, does not import the kernels (numba)
SW_FAST = (1, 2, 4)
SH_MAX = 4

#: the fewest phase-Conv output channels (``M * s_h * s_w``) whose taps are folded into a 1x1 Conv's channels
IM2COL_ROWS = 32


def _phase_geometry(size: int, out: int, k: int, s: int, pad: int) -> tuple[int, int, int, int, int] | None:
    """For one axis: taps per phase ``T``, the Conv's pads ``(begin, end)``, its output length ``Q`` and the
    crop offset into the shuffled ``Q * s`` rows; None when a Conv pad would be negative."""
    taps = -(-k // s)
    q0 = pad // s
    q = -(-(pad + out) // s) - q0
    begin = taps - 1 - q0
    end = q - size - begin + taps - 1
    if begin < 0 or end < 0:
        return None
    return taps, begin, end, q, pad - q0 * s


def _applies(node: Node) -> bool:
    """A float32 1-D / 2-D ConvTranspose with constant weights (and bias), no dilation, no tensor-valued
    epilogue step, that the upsampler kernel does not take (kernel == stride, no pads, a column stride of
    ``SW_FAST`` and a row stride up to ``SH_MAX``: a kernel == stride of 5 ran on the generic scalar kernel
    at 0.6 GFLOP/s, now its phases' Conv)."""
    if node.op != "ConvTranspose" or len(node.inputs[0].shape) not in (3, 4):
        return False
    x, wt = node.inputs[0], node.inputs[1]
    b = node.inputs[2] if len(node.inputs) > 2 else None
    a = node.attrs
    if x.dtype != np.float32 or wt.dtype != np.float32 or not wt.is_const or (b is not None and not b.is_const):
        return False
    if any(d != 1 for d in a["dilations"]) or any(st.value is not None for st in a.get("post", ())):
        return False
    if (list(a["kernel_shape"]) == list(a["strides"]) and not any(a["pads"]) and not any(a["output_padding"])
            and a["strides"][-1] in SW_FAST and (len(a["strides"]) == 1 or a["strides"][0] <= SH_MAX)):
        return False  # the upsampler kernel's (a column stride it interleaves: eeg spindle's 5 is not)
    return all(g is not None for g in _geometry(node))


def _geometry(node: Node) -> list:
    """``_phase_geometry`` for the (row, column) axes of ``node`` (a 1-D ConvTranspose: one row)."""
    a, x, y = node.attrs, node.inputs[0], node.outputs[0]
    n = len(x.shape) - 2
    k, s, p = list(a["kernel_shape"]), list(a["strides"]), list(a["pads"])
    if n == 1:
        k, s, p = [1] + k, [1] + s, [0] + p[:1]
        sizes, outs = [1, x.shape[2]], [1, y.shape[2]]
    else:
        p = p[:2]
        sizes, outs = list(x.shape[2:]), list(y.shape[2:])
    return [_phase_geometry(sizes[i], outs[i], k[i], s[i], p[i]) for i in range(2)]


def phase_weights(w: np.ndarray, group: int, strides: tuple[int, int], taps: tuple[int, int]) -> np.ndarray:
    """ConvTranspose weights ``(C, M / group, kh, kw)`` as the phase Conv's ``(M * sh * sw, C / group, Th, Tw)``:
    output channel ``(m * sh + rh) * sw + rw`` holds phase ``(rh, rw)``'s taps of channel ``m``, reversed."""
    (sh, sw), (th, tw) = strides, taps
    c, mg, kh, kw = w.shape
    wp = np.zeros((c, mg, th * sh, tw * sw), w.dtype)
    wp[:, :, :kh, :kw] = w
    wp = wp.reshape(group, c // group, mg, th, sh, tw, sw)[:, :, :, ::-1, :, ::-1, :]
    wp = wp.transpose(0, 2, 4, 6, 1, 3, 5)  # (g, m, rh, rw, c, u, v)
    return np.ascontiguousarray(wp.reshape(group * mg * sh * sw, c // group, th, tw))


class ConvTransposePhases(Pass):
    name = "convtranspose_phases"
    fusion = True  # a structural rewrite: ``fuse=False`` keeps the ConvTranspose as imported

    def apply(self, graph: Graph) -> None:
        for node in [n for n in graph.nodes if _applies(n)]:
            self._rewrite(graph, node)

    def _windows(self, graph: Graph, anchor: Node, x: Value, taps: tuple[int, int], pads: tuple[int, ...],
                 out: tuple[int, int]) -> Value:
        """The ``taps`` shifted ``out``-sized windows of ``x`` zero-padded by ``pads``, concatenated along the
        channels (tap ``(u, v)``'s block of channels at ``u * T_w + v``): the 1x1 Conv's input."""
        n, c, h, w = x.shape
        if any(pads):
            x = insert_op(graph, anchor, "Pad", x, (n, c, h + pads[0] + pads[2], w + pads[1] + pads[3]),
                          pads=(0, 0, pads[0], pads[1], 0, 0, pads[2], pads[3]), mode="constant", value=0.0)
        qh, qw = out
        wins = [insert_op(graph, anchor, "Slice", x, (n, c, qh, qw), starts=(0, 0, u, v),
                          ends=(n, c, u + qh, v + qw), steps=(1, 1, 1, 1))
                for u in range(taps[0]) for v in range(taps[1])]
        cat = Value(TensorType(x.dtype, (n, c * len(wins), qh, qw)))
        graph.insert_before(anchor, Node("Concat", wins, [cat], {"axis": 1}))
        return cat

    def _rewrite(self, graph: Graph, node: Node) -> None:
        a, x, y = node.attrs, node.inputs[0], node.outputs[0]
        (th, bh, eh, qh, oh), (tw, bw, ew, qw, ow) = _geometry(node)
        one_d = len(x.shape) == 3
        sh, sw = (1, a["strides"][0]) if one_d else tuple(a["strides"])
        w = node.inputs[1].const
        if one_d:
            w = w.reshape(w.shape[0], w.shape[1], 1, w.shape[2])
            x = insert_op(graph, node, "Reshape", x, (*x.shape[:2], 1, x.shape[2]))
        n, m = y.shape[0], y.shape[1]
        ins = [x, graph.const(phase_weights(w, int(a["group"]), (sh, sw), (th, tw)))]
        if len(node.inputs) > 2 and node.inputs[2] is not None:
            ins.append(graph.const(np.ascontiguousarray(np.repeat(node.inputs[2].const, sh * sw))))
        attrs = {"kernel_shape": (th, tw), "strides": (1, 1), "pads": (bh, bw, eh, ew), "dilations": (1, 1),
                 "group": int(a["group"]), "post": a.get("post", ())}
        if a["group"] == 1 and sh * sw > 1 and th * tw > 1 and m * sh * sw >= IM2COL_ROWS:
            ins[0] = self._windows(graph, node, x, (th, tw), (bh, bw, eh, ew), (qh, qw))
            wc = ins[1].const
            ins[1] = graph.const(np.ascontiguousarray(wc.transpose(0, 2, 3, 1).reshape(wc.shape[0], -1, 1, 1)))
            attrs.update(kernel_shape=(1, 1), pads=(0, 0, 0, 0))
        phases = Value(TensorType(y.dtype, (n, m * sh * sw, qh, qw)))
        conv = graph.insert_before(node, Node("Conv", ins, [phases], attrs, node.name))
        conv.meta.update(node.meta)
        cur = phases
        if sh * sw > 1:  # DepthToSpace, CRD
            cur = insert_op(graph, node, "Reshape", cur, (n, m, sh, sw, qh, qw))
            cur = insert_op(graph, node, "Transpose", cur, (n, m, qh, sh, qw, sw), perm=(0, 1, 4, 2, 5, 3))
            cur = insert_op(graph, node, "Reshape", cur, (n, m, qh * sh, qw * sw))
        rows, cols = (1, y.shape[2]) if one_d else y.shape[2:]
        if (oh, ow, rows, cols) != (0, 0, qh * sh, qw * sw):
            cur = insert_op(graph, node, "Slice", cur, (n, m, rows, cols), starts=(0, 0, oh, ow),
                            ends=(n, m, oh + rows, ow + cols), steps=(1, 1, 1, 1))
        out = Value(y.type, y.name)
        graph.insert_before(node, Node("Reshape", [cur], [out], {"shape": tuple(y.shape)}))
        graph.replace_all_uses(y, out)
        graph.remove_node(node)
        graph.note_fused(conv, "ConvTranspose phases")
