"""Independent branches side by side (issue 18): two layers that neither reads the other's output run at once,
each whole on its own thread, instead of each split over every thread.

A YOLOX head's classification and regression chains (two 3x3 convs each on the same input), a CSP block's two
1x1 convs, the Focus stem's four slice chains: each such layer split in two pays its split (a Winograd
conv's channel parts transform the whole input twice, its bands of tile rows round to whole rows: 7 + 6 of
13, parts timed one by one 1.06-1.25x the layer) and every part reads an input half written by the other
core. Side by side, each layer runs as in the 1-thread schedule on one core, and a chain stays on its core.

``pair_branches`` reorders a schedule's nodes (a topological order still) so that each such pair is
adjacent: the parallel schedule's threads walk the steps in order and claim what is free
(``runtime/parallel.py``), so one thread takes the first of the pair and the other the second, neither
waiting. A pair is two nodes whose estimated times (``threads.estimate_us``, or their bytes for a layer that
is not a conv) are within ``PAIR_BALANCE``, the second ready as soon as the first is (every node it depends on
comes before the first). Paired layers are then not split when the team has two threads
(``threads.split_node``: with more, each takes half of them), and ``memory.plan_memory`` keeps the first's
inputs alive through the second (``beside``), so the second's output never takes their place (a false
dependency that would make it wait for the first).
"""

from __future__ import annotations

from cnnjit.ir import Node

from . import threads
from .threads import PAIRED, _conv_kind, estimate_us

#: two layers pair up when the larger estimate is at most this factor of the smaller (a step lasts as long as
#: its longer half: the same bound as a split's ``threads.MAX_IMBALANCE``)
PAIR_BALANCE = 1.15
#: how many nodes ahead a partner is looked for (compile time stays linear in the node count)
PAIR_WINDOW = 48
#: assumed speed of a data-movement layer (slices, copies, resizes: GB/s of output written, one thread), for
#: the pair's balance only (ddddocr's Focus slices: ~1 MB in 40-75 us)
MOVE_GBS = 15.0
#: the ``Node.meta`` mark set by ``emit.lower``: this node and the next of the order may run at once (and each
#: of them is marked ``threads.PAIRED``)
BESIDE = "beside"


def pair_estimate_us(node: Node) -> float:
    """A node's estimated single-thread time for pairing (microseconds): ``threads.estimate_us`` for a conv or
    Gemm we can split, else its output bytes at ``MOVE_GBS``."""
    if _conv_kind(node) is not None:
        return estimate_us(node)
    return sum(v.type.size * v.dtype.itemsize for v in node.outputs) / (MOVE_GBS * 1e3)


def pair_branches(nodes: list[Node], views: set[int]) -> tuple[list[Node], list[tuple[Node, Node]]]:
    """``nodes`` (a topological order) reordered so that each pair of independent, balanced nodes is adjacent,
    and the pairs ``(first, second)``. ``views``: ids of nodes that make no calls (views, in-place nodes): never
    paired. Greedy in order: each node of at least ``threads.MIN_PART_US`` takes the first later node (within
    ``PAIR_WINDOW``) that is not its descendant, is ready when it is, and balances it (``PAIR_BALANCE``)."""
    index = {n.id: i for i, n in enumerate(nodes)}
    ancestors: list[int] = []  # per node, a bit set of the nodes it depends on (transitively)
    for n in nodes:
        a = 0
        for v in n.inputs:
            p = v.producer if v is not None else None
            if p is not None and p.id in index:
                j = index[p.id]
                a |= ancestors[j] | (1 << j)
        ancestors.append(a)
    est = [pair_estimate_us(n) if n.id not in views else 0.0 for n in nodes]
    order: list[Node] = []
    pairs: list[tuple[Node, Node]] = []
    placed = 0  # bit set of the nodes already in ``order``
    for i, n in enumerate(nodes):
        if placed >> i & 1:
            continue
        order.append(n)
        placed |= 1 << i
        if est[i] < threads.MIN_PART_US:
            continue
        for j in range(i + 1, min(len(nodes), i + 1 + PAIR_WINDOW)):
            if placed >> j & 1 or not threads.MIN_PART_US <= est[j] <= PAIR_BALANCE * est[i] \
                    or est[i] > PAIR_BALANCE * est[j]:
                continue
            if ancestors[j] >> i & 1 or ancestors[j] & ~placed:  # (n's descendant, or waits for a later node)
                continue
            order.append(nodes[j])
            placed |= 1 << j
            pairs.append((n, nodes[j]))
            break
    return order, pairs


__all__ = ["PAIR_BALANCE", "PAIR_WINDOW", "MOVE_GBS", "BESIDE", "PAIRED", "pair_estimate_us", "pair_branches"]
