"""Kernel variants whose generator can compute one part of a layer: the split as a generator parameter.

A layer split over threads (``threads.split_node``) by output channels needs nothing from its generator (each
part is the layer on a slice of the weights). A layer with too few channels for a balanced channel split can
still be split by its variant's own generator along another axis (pixels of a pointwise conv, bands of tile
rows of a Winograd conv): the variant registers its *part space* here, ``space(node, target) -> (units,
align)``: the node's work is ``units`` independent slices, and the generator, given a node whose
``meta["part"]`` is ``(lo, hi)`` (multiples of ``align`` but the last), emits one call computing exactly those
slices (the range is a kernel argument), with the same arithmetic per output element as the whole layer.
"""

from __future__ import annotations

from collections.abc import Callable

from cnnjit.ir import Node

from .kernel import Target

#: (op, variant name) -> the variant's part space (see the module docstring)
PART_SPACES: dict[tuple[str, str], Callable[[Node, Target], tuple[int, int] | None]] = {}


def part_space(op: str, name: str) -> Callable[[Callable], Callable]:
    """Register ``space(node, target) -> (units, align) | None`` (None: this node cannot be split) as the
    part space of variant ``name`` of ``op``."""

    def register(fn: Callable[[Node, Target], tuple[int, int] | None]) -> Callable:
        PART_SPACES[(op, name)] = fn
        return fn

    return register


def node_part(node: Node) -> tuple[int, int] | None:
    """The slice range ``(lo, hi)`` a part's generator computes, or None for the whole layer."""
    return node.meta.get("part")


__all__ = ["PART_SPACES", "part_space", "node_part"]
