"""Inverted-residual block fusion: MobileNetV2/V3's ``1x1 expand -> depthwise kxk -> 1x1 project [+ x]``
as one ``InvertedResidual`` node (``ir/ops/fused.py``), computed by one kernel in bands of output rows
(``compiler/codegen/kernels/block_fused.py``): the expanded tensor and the depthwise output never go to
memory, only a few rows of each live in a scratch that stays in cache.

Runs after ``fuse_epilogue`` (each Conv carries its activations, the project its residual Add). A
``depthwise -> project`` pair without an expand (MobileNetV2's first block, the blocks that begin MobileNetV3
and PP-LCNet) is fused the same way, as a block whose depthwise conv reads the block's input (no ``w1``);
its depthwise output then never reaches memory. The chain is fused when:

* the expand is a 1x1, stride-1, unpadded, ungrouped float32 Conv with constant weights and bias, whose
  epilogue is activations only and whose output is read by the depthwise conv alone;
* the depthwise conv (``group`` = channels, one weight per channel per tap, constant) has a square
  ``k x k`` kernel, k odd up to ``MAX_K``, equal strides 1 or 2, no dilation, pads of at most ``k // 2``,
  activations only, and its output is read by the project alone;
* the project is a 1x1 ungrouped conv like the expand, its epilogue anything a Conv may carry;
* every activation is one of ``ACTIVATIONS`` (each has a vector form: the fused kernel applies them in
  registers);
* the cost rule: the expanded tensor (without an expand: the depthwise conv's input) is at least
  ``MIN_EXPANDED_BYTES`` (below, it stays in cache between the three kernels anyway, and the three tuned
  kernels run faster than the fused one's per-row loops), and the kernel's runs of pixels per expanded row
  (the row, or each parity of it with stride 2) are at least ``MIN_ROW_PIXELS`` long (shorter runs leave its
  register tiles part empty); without an expand, the project does not widen (the fused kernel's project tiles
  are slower than the tuned 1x1 kernels, so a widening project costs what the depthwise output's trip to
  memory saved).
"""

from __future__ import annotations

import numpy as np

from cnnjit.ir import Graph, Node, Value
from cnnjit.ir.errors import IRError

from .manager import Pass

#: activations the fused kernel computes in registers
ACTIVATIONS = ("Relu", "Clip", "HardSwish", "LeakyRelu", "HardSigmoid", "Sigmoid", "SiLU", "Tanh")
#: the largest depthwise kernel side fused
MAX_K = 7
#: the cost rule: blocks whose expanded tensor (float32) has fewer bytes run unfused (measured:
#: ``benchmarks/block_fusion.py``)
MIN_EXPANDED_BYTES = 1 << 20
#: the cost rule: the shortest run of pixels per expanded row fused. ``benchmarks/block_fusion.py``, one
#: thread, AVX2, interleaved medians on a loaded machine: the 56-pixel runs of MobileNetV2's 16->96 (stride
#: 2, 112x112) and 24->144->24 (56x56) blocks 0.89-1.35x and 1.09-1.13x, the 28-pixel runs of 24->144->32
#: (stride 2, 56x56) 0.92-0.97x; every block under 1 MiB expanded (28x28 and below) 0.2-1.04x. Re-measured
#: after the kernel's unchecked weight indexes and whole-tile expand stores (load 7-10): blocks 0/1 1.27x /
#: 1.04x, 24->144->32 1.03x alone but the whole model 0.95-0.97x with it fused (48 kept), 28x28 0.98x / 0.54x.
#: Session 19, with the unfused stride-2 depthwise on ``depthwise_direct_s2`` (load ~11, 300 runs): 16->96->24
#: s2 fused 1.35x (kept), 24->144->32 s2 1.01x (a tie: left unfused), 32->192->64 s2 0.53x
MIN_ROW_PIXELS = 48
#: without an expand (depthwise -> project), ``benchmarks/block_fusion.py`` blocks 11-14, one thread, AVX2,
#: interleaved medians of 600 runs at load ~5: 32 -> dw -> 16 and 16 -> dw -> 16 (+x) at 112x112 1.05x and
#: 1.09x; the widening 16 -> dw -> 32 (s1) and 32 -> dw -> 64 (s2) 0.99x and 0.975x: fused when the project
#: has at most ``MAX_WIDENING`` times as many output channels as the depthwise conv
MAX_WIDENING = 1.0


def _acts_only(post: tuple) -> bool:
    return all(not s.residual and s.op in ACTIVATIONS for s in post)


def _const_f32(v: Value | None) -> bool:
    return v is not None and v.is_const and v.dtype == np.float32


def _pointwise(node: Node) -> bool:
    """A 1x1, stride-1, unpadded, ungrouped float32 Conv with constant weights (and bias, if any)."""
    a = node.attrs
    b = node.inputs[2] if len(node.inputs) > 2 else None
    return (node.op == "Conv" and len(node.outputs[0].shape) == 4 and a["group"] == 1
            and all(k == 1 for k in a["kernel_shape"]) and all(s == 1 for s in a["strides"])
            and not any(a["pads"]) and node.inputs[0].dtype == np.float32 and _const_f32(node.inputs[1])
            and (b is None or _const_f32(b)))


def _depthwise(node: Node) -> bool:
    """A square depthwise float32 Conv the fused kernel computes (see the module docstring)."""
    if node.op != "Conv" or len(node.outputs[0].shape) != 4:
        return False
    a = node.attrs
    x, w = node.inputs[0], node.inputs[1]
    b = node.inputs[2] if len(node.inputs) > 2 else None
    kh, kw = a["kernel_shape"]
    sh, sw = a["strides"]
    return (a["group"] == x.shape[1] == w.shape[0] and w.shape[1] == 1 and _const_f32(w)
            and (b is None or _const_f32(b)) and len(node.inputs) <= 3
            and kh == kw and kh % 2 == 1 and kh <= MAX_K and sh == sw and sh in (1, 2)
            and all(d == 1 for d in a["dilations"]) and all(0 <= p <= kh // 2 for p in a["pads"])
            and _acts_only(node.attrs.get("post", ())))


def _single_user(graph: Graph, v: Value) -> Node | None:
    if len(v.users) != 1 or v in graph.outputs:
        return None
    return v.users[0]


def _bias(graph: Graph, node: Node) -> Value:
    """The conv's bias, or a constant of zeros when it has none."""
    b = node.inputs[2] if len(node.inputs) > 2 else None
    return b if b is not None else graph.const(np.zeros(node.inputs[1].shape[0], np.float32))


class FuseBlocks(Pass):
    """Replace each fusable expand -> depthwise -> project chain by one ``InvertedResidual`` node."""

    name = "fuse_blocks"
    fusion = True

    def __init__(self, min_expanded_bytes: int | None = None):
        #: the cost rule's size threshold (None: the module's rule, ``MIN_EXPANDED_BYTES`` and ``MIN_ROW_PIXELS``,
        #: when the pass runs; a number: that size alone)
        self.min_expanded_bytes = min_expanded_bytes

    def apply(self, graph: Graph) -> None:
        for node in list(graph.nodes):
            if node in graph.nodes:
                self._fuse(graph, node)

    def _fuse(self, graph: Graph, first: Node) -> bool:
        """Fuse the block that ``first`` begins: an expand (then its depthwise conv and project), or a depthwise
        conv whose input no fusable expand makes (then its project: a block without an expand)."""
        if _depthwise(first):
            expand, dw = None, first
        elif _pointwise(first) and len(first.inputs) <= 3 and _acts_only(first.attrs.get("post", ())):
            expand, dw = first, _single_user(graph, first.outputs[0])
            if dw is None or dw.inputs[0] is not first.outputs[0] or not _depthwise(dw):
                return False
        else:
            return False
        e = dw.inputs[0]  # the depthwise conv's input: the expanded tensor, or the block's input
        least = MIN_EXPANDED_BYTES if self.min_expanded_bytes is None else self.min_expanded_bytes
        if 4 * int(np.prod(e.shape[1:])) < least:
            return False
        if self.min_expanded_bytes is None and e.shape[3] // dw.attrs["strides"][1] < MIN_ROW_PIXELS:
            return False
        project = _single_user(graph, dw.outputs[0])
        if project is None or project.inputs[0] is not dw.outputs[0] or not _pointwise(project):
            return False
        widening = project.inputs[1].shape[0] / e.shape[1]
        if expand is None and self.min_expanded_bytes is None and widening > MAX_WIDENING:
            return False
        post = tuple(project.attrs.get("post", ()))
        if any(not s.residual and s.op not in ACTIVATIONS for s in post):
            return False
        residuals = [v for v in project.inputs[3:] if v is not None]
        a = dw.attrs
        head = [e, None, None] if expand is None else [expand.inputs[0], expand.inputs[1], _bias(graph, expand)]
        ins = [*head, dw.inputs[1], _bias(graph, dw), project.inputs[1], _bias(graph, project), *residuals]
        attrs = {"kernel_shape": list(a["kernel_shape"]), "strides": list(a["strides"]), "pads": list(a["pads"]),
                 "dilations": list(a["dilations"]),
                 "expand_post": () if expand is None else tuple(expand.attrs.get("post", ())),
                 "dw_post": tuple(a.get("post", ())), "post": post}
        block = Node("InvertedResidual", ins, [project.outputs[0]], attrs)
        graph.insert_before(project, block)
        graph.remove_nodes([n for n in (expand, dw, project) if n is not None])
        graph.note_fused(block, "dw+project" if expand is None else "expand+dw+project")
        return True

    def ensures(self, graph: Graph) -> None:
        """Every block's epilogues are what the fused kernel computes."""
        for n in graph.nodes:
            if n.op == "InvertedResidual" and not (_acts_only(n.attrs["expand_post"])
                                                   and _acts_only(n.attrs["dw_post"])):
                raise IRError(f"{n.describe()}: a block epilogue that is not an activation")

