"""Mixed precision under ``precision="bf16"``: the dense layers a rule of ``KEEP_FP32`` names stay in fp32.

The pass only annotates: each Conv / Gemm / MatMul that a rule picks gets ``node.meta["keep_fp32"]`` (the
rule's name), and the bf16 kernel variants (``codegen.kernel.runs_bf16``) stand aside for it, so it runs its
fp32 kernel. Under ``precision="fp32"`` the mark changes nothing. ``disable=["mixed_precision"]`` (or a
``passes=`` list without it) puts every bf16-capable layer in bf16.

The rules are data: ``KEEP_FP32``, each a name, a predicate on the node and the reason, measured in
``benchmarks/bf16.py`` (per-layer attribution: ``--attribute``). The one rule today is the usual mixed
precision policy's "keep the classifier head (and the other layers on pooled features) in fp32": a layer
whose output is one vector per sample (a Conv on a 1x1 map: the squeeze-and-excitation FCs and 1x1-conv heads;
a Gemm; a MatMul with one row per sample) sees its bf16 rounding error whole, since no later spatial
reduction averages it, and a squeeze-and-excitation gate scales a whole channel with it. These layers are a
negligible share of a CNN's FLOPs (0.42% of MobileNetV2-224, 0.34% of the PP-OCR classifier), so fp32 costs
next to nothing there.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from cnnjit.ir import Graph, Node
from cnnjit.ir.errors import IRError

from ..codegen.kernel import KEEP_FP32 as MARK
from .manager import Pass

#: the ops a bf16 variant exists for (``precision="bf16"``)
DENSE_OPS = ("Conv", "Gemm", "MatMul")


@dataclass(frozen=True)
class KeepRule:
    """One mixed-precision rule: layers for which ``keeps(node)`` is true stay fp32, for the reason ``why``."""

    name: str
    keeps: Callable[[Node], bool]
    why: str


def one_vector_per_sample(node: Node) -> bool:
    """A layer whose output is a single vector per sample: a Conv on a 1x1 output map, a Gemm (rows are
    samples), a MatMul whose output has no rows besides the batch (2-D, or 1 row per leading index)."""
    shape = node.outputs[0].shape
    if node.op == "Conv":
        return int(np.prod(shape[2:], dtype=np.int64)) == 1
    if node.op == "Gemm":
        return True
    return node.op == "MatMul" and (len(shape) <= 2 or int(np.prod(shape[1:-1], dtype=np.int64)) == 1)


#: the mixed-precision policy, in order (a layer takes the first rule that picks it)
KEEP_FP32: tuple[KeepRule, ...] = (
    KeepRule("pooled_features", one_vector_per_sample,
             "classifier heads and squeeze-and-excitation FCs: their rounding error is not averaged by any "
             "later spatial reduction (per-layer attribution in benchmarks/bf16.py); < 1% of a CNN's FLOPs"),
)


def kept_rule(node: Node) -> str | None:
    """The name of the first ``KEEP_FP32`` rule that keeps ``node`` in fp32, or None."""
    if node.op not in DENSE_OPS:
        return None
    return next((r.name for r in KEEP_FP32 if r.keeps(node)), None)


class MixedPrecision(Pass):
    name = "mixed_precision"

    def apply(self, graph: Graph) -> None:
        for node in graph.nodes:
            rule = kept_rule(node)
            if rule is not None:
                node.meta[MARK] = rule

    def ensures(self, graph: Graph) -> None:
        for node in graph.nodes:
            rule = kept_rule(node)
            if rule is not None and node.meta.get(MARK) != rule:
                raise IRError(f"{node.describe()} is not marked fp32 (rule {rule!r})")
