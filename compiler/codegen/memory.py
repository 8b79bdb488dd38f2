"""Memory planning: every non-constant value gets an element offset in one arena per element type.

View ops (Reshape) share their input's storage, and so does an output its kernel may write over an input that
dies at its node (``KernelCall.inplace``, ``share_inputs``: a residual Add in place, a convolution's output
trailing its input rows). Slots are reused once a value is dead (liveness by node index): first fit over a
free list in definition order, or, where it packs tighter, ``by_size`` (TFLM's largest-first greedy over the
lifetimes, which sees each value of a shared storage with its own lifetime); offsets are aligned to 64 bytes
for the vector kernels.
A kernel call's ``Scratch`` is placed like a value defined and last used by its node: apart from that node's
inputs and outputs (and from every other scratch of the node: the parts of a split layer run at once),
reused by later nodes (in a parallel schedule, only by nodes that depend on its node: see ``plan_memory``).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np

from cnnjit.ir import Graph, Value, get_op
from cnnjit.ir.types import DTYPES, short_name
from cnnjit.runtime.program import aligned_zeros

from .kernel import Scratch

ALIGN_BYTES = 64
#: ``by_size`` is quadratic in the tensors of an arena (1000: 0.3 s): above this many, first fit alone
BY_SIZE_MAX = 1000
#: up to this many tensors, ``by_size`` also tries a few shuffled orders
BY_SIZE_SHUFFLE = 300


@dataclass
class Slot:
    kind: str  # "a" (arena) or "c" (constant)
    dtype: str  # short dtype name
    offset: int


@dataclass
class ConstPool:
    """Constant storage: one flat array per dtype, built up as constants and params are added."""

    chunks: dict[str, list[np.ndarray]] = field(default_factory=dict)
    sizes: dict[str, int] = field(default_factory=dict)
    _by_id: dict[int, Slot] = field(default_factory=dict)

    def add(self, arr: np.ndarray, key: int | None = None) -> Slot:
        if key is not None and key in self._by_id:
            return self._by_id[key]
        dt = short_name(arr.dtype)
        align = max(1, ALIGN_BYTES // arr.dtype.itemsize)
        off = self.sizes.get(dt, 0)
        pad = (-off) % align
        flat = np.ascontiguousarray(arr).reshape(-1)
        lst = self.chunks.setdefault(dt, [])
        if pad:
            lst.append(np.zeros(pad, arr.dtype))
        lst.append(flat)
        slot = Slot("c", dt, off + pad)
        self.sizes[dt] = off + pad + flat.size
        if key is not None:
            self._by_id[key] = slot
        return slot

    def buffers(self) -> dict[str, np.ndarray]:
        out = {}
        for dt, parts in self.chunks.items():
            n = sum(a.size for a in parts)
            # 64-byte aligned; at least one element so that numba sees a real buffer even when all is empty
            arr = aligned_zeros(max(n, 1), DTYPES[dt])
            if n:
                np.concatenate(parts, out=arr)
            out[dt] = arr
            out[dt].setflags(write=False)
        return out


@dataclass
class MemoryPlan:
    slots: dict[int, Slot]
    arena_sizes: dict[str, int]
    consts: ConstPool
    total_intermediate_elems: dict[str, int]
    #: where each kernel call's scratch lives (by identity)
    scratch: dict[Scratch, Slot] = field(default_factory=dict)

    def slot(self, v: Value) -> Slot:
        """Where ``v`` lives; a constant is added to its pool the first time a call (or an output) asks
        for it, so a weight that every kernel reads through a repacked ``Param`` (1x1 Conv and Gemm
        weights, transposed) is not stored a second time in its original layout."""
        if v.id not in self.slots and v.is_const:
            self.slots[v.id] = self.consts.add(v.const, key=v.id)
        return self.slots[v.id]


def storage_extents(graph: Graph, find: Callable[[Value], tuple[Value, int]]) -> dict[int, int]:
    """Each storage root's extent in elements: its own and those of every value placed at a shift inside (or
    past) it (``find``: a value's root and element shift)."""
    extent: dict[int, int] = {}
    for v in graph.values():
        if not v.is_const:
            r, s = find(v)
            extent[r.id] = max(extent.get(r.id, 0), s + v.type.size)
    return extent


def storage_last_uses(graph: Graph, find: Callable[[Value], tuple[Value, int]]) -> dict[int, int]:
    """The index of the last node that reads or writes each storage root; a graph output's root lives to
    the end (``len(graph.nodes)``)."""
    last: dict[int, int] = {}
    for i, n in enumerate(graph.nodes):
        for v in (*n.inputs, *n.outputs):
            if v is not None and not v.is_const:
                last[find(v)[0].id] = i
    for o in graph.outputs:
        if not o.is_const:
            last[find(o)[0].id] = len(graph.nodes)
    return last


def plan_memory(graph: Graph, scratch: list[tuple[int, Scratch]] = (), keep_scratch: bool = False,
                inplace: dict[int, tuple[tuple[int, int], ...]] | None = None, keep_inputs: bool = False,
                beside: Sequence[int] = ()) -> MemoryPlan:
    """Arena offsets for every non-constant value of ``graph`` and every ``Scratch`` in ``scratch`` (each
    with the index of the node whose call uses it).

    ``keep_scratch`` (a parallel schedule): a scratch region lives until every later node depends on its node
    through the graph's data (``scratch_reach``), so the nodes that reuse it would wait for its node anyway and
    two layers that may run side by side (independent branches) never share one; serially it is free after
    its node. (It lived to the end before: MobileNetV2's 2-thread arena 2.4 -> 6.3 MiB, the ddddocr
    detector's 6.5 -> 22.9, every split layer's scratch cold in cache.)
    ``inplace``: node index -> its kernel's ``KernelCall.inplace`` candidates (see ``share_inputs``).
    ``keep_inputs``: the graph inputs' storage lives to the end, as the outputs' does (no later value reuses
    it), so an input left in place holds the same value at the next call (a loop body's segment: its
    loop-invariant inputs are copied in once per loop run, ``runtime.model.BoundCaller``). ``beside``: indices
    ``i`` of nodes that run at once with node ``i + 1`` (``branches.py``): storage either of them uses last
    lives through node ``i + 3``: neither the other one's output nor the next pair's (which may start while
    this pair's longer half still runs) takes its place, which would make them wait (a false dependency)."""
    consts = ConstPool()
    slots: dict[int, Slot] = {}
    # storage aliases: a view's output lives in its input's storage; an in-place Concat's inputs live in
    # the Concat's output at their element shift
    parent: dict[int, tuple[Value, int]] = {}

    def find(v: Value) -> tuple[Value, int]:
        shift = 0
        while v.id in parent:
            v, s = parent[v.id]
            shift += s
        return v, shift

    for n in graph.nodes:
        if get_op(n.op).view and not n.inputs[0].is_const:
            parent[n.outputs[0].id] = (n.inputs[0], 0)
        elif n.op == "Concat" and n.meta.get("inplace"):
            y = n.outputs[0]
            ax = n.attrs["axis"]
            inner = int(np.prod(y.shape[ax + 1:], dtype=np.int64))
            start = 0
            for v in n.inputs:
                parent[v.id] = (y, start)
                start += v.shape[ax] * inner

    share_inputs(graph, parent, find, inplace or {})
    # liveness of each storage root: [first def, last use]; inputs are written before the run starts (-1)
    end = len(graph.nodes)
    last = {v.id: -1 for v in graph.inputs}
    last.update(storage_last_uses(graph, find))
    kept = list(graph.inputs) if keep_inputs else []
    last.update((find(v)[0].id, end) for v in kept)
    pair_end = {j: i + 3 for i in beside for j in (i, i + 1)}
    last.update((r, max(i, pair_end[i])) for r, i in list(last.items()) if i in pair_end)
    first: dict[int, int] = {}
    vals: dict[int, Value] = {v.id: v for v in graph.inputs}
    for i, n in enumerate(graph.nodes):
        for o in n.outputs:
            r = find(o)[0]
            first.setdefault(r.id, i)
            vals[r.id] = r
    first.update((v.id, -1) for v in graph.inputs)
    # scratch: pseudo roots with negative keys, live during their node only
    extra: dict[int, tuple[Scratch, int]] = {}
    reach = scratch_reach(graph) if keep_scratch and scratch else None
    for j, (i, sc) in enumerate(scratch):
        extra[-1 - j] = (sc, i)
        first[-1 - j] = i
        last[-1 - j] = reach[i] if reach is not None else i

    extent = storage_extents(graph, find)

    def kind(rid: int) -> tuple[np.dtype, int]:
        if rid in extra:
            sc = extra[rid][0]
            return np.dtype(sc.dtype), int(sc.elems)
        return vals[rid].dtype, extent.get(rid, vals[rid].type.size)

    sizes: dict[str, int] = {}
    totals: dict[str, int] = {}
    free: dict[str, list[tuple[int, int]]] = {}  # dtype -> [(offset, length)] sorted
    live: list[tuple[int, int, str, int, int]] = []  # (last, id, dtype, offset, length)
    every: list[tuple[int, int, int, int, str]] = []  # (length, first, last, id, dtype) of every root
    order = sorted(first, key=lambda k: (first[k], k))
    for rid in order:
        dtype, elems = kind(rid)
        dt = short_name(dtype)
        align = max(1, ALIGN_BYTES // dtype.itemsize)
        need = -(-max(elems, 1) // align) * align
        t = first[rid]
        # release everything that died strictly before this definition
        for item in [x for x in live if x[0] < t]:
            live.remove(item)
            free.setdefault(item[2], []).append((item[3], item[4]))
        fl = sorted(free.get(dt, []))
        merged: list[tuple[int, int]] = []
        for off, ln in fl:
            if merged and merged[-1][0] + merged[-1][1] == off:
                merged[-1] = (merged[-1][0], merged[-1][1] + ln)
            else:
                merged.append((off, ln))
        free[dt] = merged
        offset = None
        for j, (off, ln) in enumerate(merged):
            if ln >= need:
                offset = off
                merged[j] = (off + need, ln - need)
                if merged[j][1] == 0:
                    merged.pop(j)
                break
        if offset is None and merged and merged[-1][0] + merged[-1][1] == sizes.get(dt, 0):
            offset = merged.pop()[0]  # a free block at the arena's end: grow the arena only by the shortfall
            sizes[dt] = offset + need
        elif offset is None:
            offset = sizes.get(dt, 0)
            sizes[dt] = offset + need
        slots[rid] = Slot("a", dt, offset)
        live.append((last.get(rid, t), rid, dt, offset, need))
        every.append((need, t, last.get(rid, t), rid, dt))
    # TFLM's greedy placement (largest first, lowest free offset over the lifetimes it overlaps) where it
    # packs an arena tighter than first fit in definition order (a small early tensor, the input, can leave
    # a hole no later tensor fits). It sees each value of a shared storage with its own lifetime (the part
    # of a convolution's output region that its input does not use is free while only the input lives)
    rects: dict[int, list[tuple[int, int, int, int]]] = {}
    vfirst = {v.id: -1 for v in graph.inputs}
    vlast: dict[int, int] = {}
    for i, n in enumerate(graph.nodes):
        vlast.update((v.id, i) for v in n.inputs if v is not None and not v.is_const)
        vfirst.update((o.id, i) for o in n.outputs)
    vlast.update((o.id, end) for o in (*graph.outputs, *kept))
    vlast.update((k, max(i, pair_end[i])) for k, i in list(vlast.items()) if i in pair_end)
    for v in graph.values():
        r, sh = find(v)
        if not v.is_const and v.id in vfirst:
            a = vfirst[v.id]
            rects.setdefault(r.id, []).append((sh, v.type.size, a, max(vlast.get(v.id, a), a)))
    for dt in sizes:
        items = [(need, rects.get(rid) or [(0, need, a, b)], rid) for need, a, b, rid, d in every if d == dt]
        if len(items) <= BY_SIZE_MAX:
            offsets, size = by_size(items, max(1, ALIGN_BYTES // DTYPES[dt].itemsize))
            if size < sizes[dt]:
                sizes[dt] = size
                for rid, off in offsets.items():
                    slots[rid] = Slot("a", dt, off)

    placed = {sc: slots.pop(rid) for rid, (sc, _) in extra.items()}
    for v in graph.values():
        if v.is_const:
            continue  # pooled on first use (MemoryPlan.slot)
        if v.id not in slots:
            root, shift = find(v)
            slots[v.id] = Slot("a", slots[root.id].dtype, slots[root.id].offset + shift)
    # what a plan without reuse or aliasing would take: every node output its own buffer
    for n in graph.nodes:
        for o in n.outputs:
            dt = short_name(o.dtype)
            align = max(1, ALIGN_BYTES // o.dtype.itemsize)
            totals[dt] = totals.get(dt, 0) + -(-max(o.type.size, 1) // align) * align
    for sc, slot in placed.items():
        align = max(1, ALIGN_BYTES // np.dtype(sc.dtype).itemsize)
        totals[slot.dtype] = totals.get(slot.dtype, 0) + -(-max(sc.elems, 1) // align) * align
    return MemoryPlan(slots, sizes, consts, totals, placed)


def scratch_reach(graph: Graph) -> list[int]:
    """Per node ``i`` of ``graph``, the last index of a node that does not depend on node ``i`` through the
    graph's data (directly or not), or ``i`` when every later node does. A parallel schedule may run node
    ``i`` at once with any such node (the step protocol waits only for the storage a step touches), so node
    ``i``'s kernel scratch stays apart from theirs; after it, a node reusing the scratch would wait for node
    ``i`` anyway (a chain: every node's scratch is free after it, as in a serial schedule)."""
    producer: dict[int, int] = {}
    anc: list[int] = []  # per node, a bit set of the nodes it depends on (itself included)
    for j, n in enumerate(graph.nodes):
        bits = 1 << j
        for v in n.inputs:
            if v is not None and v.id in producer:
                bits |= anc[producer[v.id]]
        anc.append(bits)
        producer.update((o.id, j) for o in n.outputs)
    out = list(range(len(graph.nodes)))
    unseen = (1 << len(graph.nodes)) - 1  # nodes whose last independent node is not found yet
    for j in range(len(graph.nodes) - 1, 0, -1):
        newly = unseen & ~anc[j] & ((1 << j) - 1)  # earlier nodes that node j does not depend on
        unseen &= ~newly
        while newly:
            low = newly & -newly
            out[low.bit_length() - 1] = j
            newly ^= low
    return out


def share_inputs(graph: Graph, parent: dict[int, tuple[Value, int]], find: Callable[[Value], tuple[Value, int]],
                 inplace: dict[int, tuple[tuple[int, int], ...]]) -> None:
    """Let a node's output share the storage of an input that dies there (``parent``: x lives ``lag``
    elements into y's storage), as its kernel allows (``KernelCall.inplace``): a residual add written over
    its operand, a convolution whose output rows trail the input rows it has finished reading. This is
    what keeps a ResNet block's three activations from being live at once (TFLM and onnxruntime alias the
    add the same way).

    Only storage roots share (not a view or an in-place Concat part, not a graph input or output), of one
    dtype, and only when nothing reads the input's storage (its views and parts included) after this node;
    of several such inputs, the one whose storage (with what already lives inside it) is smallest."""
    if not inplace:
        return
    last = storage_last_uses(graph, find)
    extent = storage_extents(graph, find)
    keep = {v.id for v in (*graph.inputs, *graph.outputs)}
    for i, cands in sorted(inplace.items()):
        n = graph.nodes[i]
        y = n.outputs[0]
        if y.id in parent or y.id in keep:
            continue
        ok = [(lag + extent[x.id], x.id, x, lag) for k, lag in cands for x in [n.inputs[k]]
              if x is not None and not x.is_const and x.id not in parent and x.id not in keep and lag >= 0
              and x.dtype == y.dtype and last.get(x.id) == i]
        if ok:
            ext, _, x, lag = min(ok, key=lambda t: t[:2])
            parent[x.id] = (y, lag)
            extent[y.id] = max(extent[y.id], ext)


def by_size(items: list[tuple[int, list[tuple[int, int, int, int]], int]],
            align: int = 1) -> tuple[dict[int, int], int]:
    """Offsets (multiples of ``align``) for ``(length, parts, key)`` items: each placed in turn at the lowest
    offset where none of its ``parts`` (``(shift, length, first, last)``: elements ``shift..shift+length``
    of the item, live over nodes ``first..last``) meets a part of a placed item whose lifetime meets its
    own; and the arena length they need. The order: largest first (TFLM's), then a few others (by
    definition, by end of life, and seeded shuffles for small graphs), keeping the tightest packing."""
    orders = [sorted(items, key=lambda t: (-t[0], min(p[2] for p in t[1]), t[2])),
              sorted(items, key=lambda t: (min(p[2] for p in t[1]), -t[0], t[2])),
              sorted(items, key=lambda t: (-max(p[3] for p in t[1]), -t[0], t[2]))]
    if len(items) <= BY_SIZE_SHUFFLE:
        rng = np.random.default_rng(0)
        orders += [[items[j] for j in rng.permutation(len(items))] for _ in range(8)]
    return min((pack(order, align) for order in orders), key=lambda r: r[1])


def pack(items: list[tuple[int, list[tuple[int, int, int, int]], int]], align: int) -> tuple[dict[int, int], int]:
    """``by_size``'s placement of ``items`` in the order given."""
    placed: list[tuple[int, int, int, int]] = []  # (start, end, first, last) of every placed part
    out: dict[int, int] = {}
    size = 0
    for need, parts, key in items:
        off = 0
        while True:
            hit = [e - sh for sh, ln, a, b in parts for s0, e, c, d in placed
                   if not (d < a or b < c) and s0 < off + sh + ln and off + sh < e]
            if not hit:
                break
            off = -(-max(hit) // align) * align
        placed.extend((off + sh, off + sh + ln, a, b) for sh, ln, a, b in parts)
        out[key] = off
        size = max(size, off + need)
    return out, size
