"""Kernels for Pad, Slice, Split, Expand, Tile and Resize: two templates over per-axis tables.

Every one of these ops is separable: output index ``j`` on axis ``d`` reads input positions that depend
on ``j`` and ``d`` only. The compiler computes, per output axis, a table of input *element offsets*
(index x input stride) and passes the tables as one ``Param``:

* ``gather`` (Pad, Slice, Split, Expand, Tile, nearest Resize): one offset per output index;
  ``y[j0, j1, ..] = x[t0[j0] + t1[j1] + ..]``. A negative offset (``SENTINEL``) marks an index outside
  the input (constant padding, tf_crop_and_resize extrapolation) and the output takes the fill value.
  Exact for every dtype (no arithmetic on the data).
* ``interp`` (linear / cubic Resize, with any coordinate mode, antialias, exclude_outside): ``K_d``
  (offset, weight) taps per output index; ``y = sum over tap combinations of the weight product times
  x[offset sum]``, accumulated in float64.

Axes are simplified first (unit axes folded into a neighbour, adjacent contiguous axes merged), so the
common cases (an NCHW pad or crop, a Split on the channel axis) become 1- to 3-deep loops whose inner
loop is a contiguous copy. Rank, "has fill" and "inner axis contiguous" are the only baked choices.
"""

from __future__ import annotations

import numpy as np

from cnnjit.ir import Node, Value
from cnnjit.ir.ops.resample import resize_axis_taps, slice_range

from ..kernel import KernelCall, Param, Target, note, variant
from .simd_convtranspose import interleave
from .template import source

#: table entry for "outside the input": negative enough that a sum over all axes stays negative
SENTINEL = -(1 << 52)


def _strides(shape: tuple[int, ...]) -> list[int]:
    return [int(np.prod(shape[i + 1:], dtype=np.int64)) for i in range(len(shape))]


# =========================================================================================================
# gather
# =========================================================================================================
def gather_source(rank: int, fill: bool, contig: bool) -> str:
    """``y[i0, .., i{r-1}] = x[sum_d t_d[i_d]]`` (or the fill value when that sum is negative)."""
    params = ["xb, xo, yb, yo, tb, to, fb, fo"] + [f"n{d}, t{d}" for d in range(rank)]
    lines = [f"def kernel({', '.join(params)}):", "    y = yo"]
    ind = "    "
    for d in range(rank - 1):
        prev = f"p{d - 1}" if d else "0"
        lines.append(f"{ind}for i{d} in range(n{d}):")
        ind += "    "
        lines.append(f"{ind}p{d} = {prev} + tb[to + t{d} + i{d}]")
    last = rank - 1
    prev = f"p{last - 1}" if last else "0"
    if contig:
        lines.append(f"{ind}q = {prev} + tb[to + t{last}]")
        if fill:
            lines += [f"{ind}if q < 0:",
                      f"{ind}    for k in range(n{last}):",
                      f"{ind}        yb[U(y + k)] = fb[fo]",
                      f"{ind}else:",
                      f"{ind}    q += xo",
                      f"{ind}    for k in range(n{last}):",
                      f"{ind}        yb[U(y + k)] = xb[U(q + k)]"]
        else:
            lines += [f"{ind}q += xo",
                      f"{ind}for k in range(n{last}):",
                      f"{ind}    yb[U(y + k)] = xb[U(q + k)]"]
        lines.append(f"{ind}y += n{last}")
    else:
        lines.append(f"{ind}for k in range(n{last}):")
        ind += "    "
        lines.append(f"{ind}q = {prev} + tb[to + t{last} + k]")
        if fill:
            lines += [f"{ind}if q < 0:",
                      f"{ind}    yb[U(y)] = fb[fo]",
                      f"{ind}else:",
                      f"{ind}    yb[U(y)] = xb[U(xo + q)]"]
        else:
            lines.append(f"{ind}yb[U(y)] = xb[U(xo + q)]")
        lines.append(f"{ind}y += 1")
    return source(lines)


def _is_contig(t: np.ndarray) -> bool:
    return bool(t.size) and t[0] >= 0 and np.array_equal(t, t[0] + np.arange(t.size))


def simplify_tables(tables: list[np.ndarray]) -> list[np.ndarray]:
    """Fold unit axes into a neighbour and merge adjacent axes whose combined table stays contiguous."""
    tabs = [np.asarray(t, np.int64) for t in tables]
    if not tabs:
        return [np.zeros(1, np.int64)]
    # fold axes of length 1 into the next (or previous) axis
    out: list[np.ndarray] = []
    carry = 0
    for t in tabs:
        if t.size == 1:
            carry += int(t[0])
            continue
        out.append(t + carry)
        carry = 0
    if not out:
        return [np.array([carry], np.int64)]
    out[-1] = out[-1] + carry
    out = [np.maximum(t, SENTINEL) for t in out]  # keep sentinels from accumulating
    # merge (outer, inner) when inner is contiguous and outer steps by inner's length
    merged = [out[0]]
    for t in out[1:]:
        o = merged[-1]
        if _is_contig(t) and o.size and np.all(o >= 0) and np.array_equal(o, o[0] + t.size * np.arange(o.size)):
            merged[-1] = (o[:, None] + t[None, :]).reshape(-1)
        else:
            merged.append(t)
    return merged


def gather_call(x: Value, y: Value, tables: list[np.ndarray], fill_value, what: str) -> list[KernelCall]:
    """One gather kernel call: per output axis, the input offsets it reads (``SENTINEL`` = fill)."""
    if int(np.prod(y.shape, dtype=np.int64)) == 0:
        return []
    tabs = simplify_tables(tables)
    fill = any(bool(np.any(t < 0)) for t in tabs)
    contig = _is_contig(tabs[-1])
    flat = np.concatenate(tabs)
    starts = np.cumsum([0] + [t.size for t in tabs])[:-1]
    fv = np.zeros(1, y.dtype) if fill_value is None else np.asarray([fill_value]).astype(y.dtype)
    args = [x, y, Param(flat), Param(fv)]
    for t, s in zip(tabs, starts):
        args += [int(t.size), int(s)]
    return [KernelCall(gather_source(len(tabs), fill, contig), args, what)]


# -- per-op tables ----------------------------------------------------------------------------------------
def _pad_index(n: int, begin: int, end: int, mode: str) -> np.ndarray:
    """Input index (or -1 for the constant) of each output position on one axis; crops first."""
    lo = max(-begin, 0)
    kept = n - lo - max(-end, 0)
    pb = max(begin, 0)
    j = np.arange(max(begin, 0) + kept + max(end, 0)) - pb  # position relative to the kept block
    if mode == "constant":
        idx = np.where((j >= 0) & (j < kept), j, -1)
    elif mode == "edge":
        idx = np.clip(j, 0, kept - 1)
    elif mode == "wrap":
        idx = np.mod(j, kept)
    else:  # reflect: period 2 * (kept - 1), mirrored on the first and last elements
        period = 2 * (kept - 1)
        m = np.mod(j, period) if period else np.zeros_like(j)
        idx = np.where(m < kept, m, period - m)
    return np.where(idx < 0, -1, idx + lo)


def _tables(x: Value, index: list[np.ndarray]) -> list[np.ndarray]:
    strides = _strides(x.shape)
    return [np.where(ix < 0, SENTINEL, ix * s).astype(np.int64) for ix, s in zip(index, strides)]


@variant("Pad")
def gen_pad(node: Node, target: Target) -> list[KernelCall]:
    x, y = node.inputs[0], node.outputs[0]
    r = len(x.shape)
    p = node.attrs["pads"]
    index = [_pad_index(x.shape[d], int(p[d]), int(p[r + d]), node.attrs["mode"]) for d in range(r)]
    return gather_call(x, y, _tables(x, index), node.attrs["value"], note(node))


@variant("Slice")
def gen_slice(node: Node, target: Target) -> list[KernelCall]:
    x, y = node.inputs[0], node.outputs[0]
    a = node.attrs
    index = [np.array(slice_range(x.shape[d], int(a["starts"][d]), int(a["ends"][d]), int(a["steps"][d])),
                      dtype=np.int64) for d in range(len(x.shape))]
    return gather_call(x, y, _tables(x, index), None, note(node))


@variant("Split")
def gen_split(node: Node, target: Target) -> list[KernelCall]:
    x = node.inputs[0]
    ax = node.attrs["axis"]
    calls, start = [], 0
    for y, n in zip(node.outputs, node.attrs["split"]):
        index = [np.arange(d, dtype=np.int64) for d in x.shape]
        index[ax] = np.arange(start, start + int(n), dtype=np.int64)
        calls += gather_call(x, y, _tables(x, index), None, note(node))
        start += int(n)
    return calls


@variant("Expand")
def gen_expand(node: Node, target: Target) -> list[KernelCall]:
    x, y = node.inputs[0], node.outputs[0]
    index = [np.zeros(n, np.int64) if d == 1 else np.arange(n, dtype=np.int64) for d, n in zip(x.shape, y.shape)]
    return gather_call(x, y, _tables(x, index), None, note(node))


@variant("Tile")
def gen_tile(node: Node, target: Target) -> list[KernelCall]:
    x, y = node.inputs[0], node.outputs[0]
    index = [np.arange(n, dtype=np.int64) % max(d, 1) for d, n in zip(x.shape, y.shape)]
    return gather_call(x, y, _tables(x, index), None, note(node))


# =========================================================================================================
# interp
# =========================================================================================================
def interp_source(rank: int, to_int: bool) -> str:
    """Tap-weighted gather: ``y = sum_taps prod_d w_d * x[sum_d o_d]``, or the fill if any offset < 0."""
    params = ["xb, xo, yb, yo, tb, to, wb, wo, fb, fo, lo, hi"] + [f"n{d}, k{d}, t{d}" for d in range(rank)]
    lines = [f"def kernel({', '.join(params)}):", "    y = yo"]
    ind = "    "
    for d in range(rank):
        lines.append(f"{ind}for i{d} in range(n{d}):")
        ind += "    "
    lines += [f"{ind}acc = 0.0", f"{ind}bad = False"]
    for d in range(rank):
        lines.append(f"{ind}for q{d} in range(k{d}):")
        ind += "    "
        e = f"t{d} + i{d} * k{d} + q{d}"
        prev_p = f"p{d - 1} + " if d else ""
        prev_w = f"w{d - 1} * " if d else ""
        lines.append(f"{ind}p{d} = {prev_p}tb[to + {e}]")
        lines.append(f"{ind}w{d} = {prev_w}wb[wo + {e}]")
    last = rank - 1
    lines += [f"{ind}if p{last} < 0:",
              f"{ind}    bad = True",
              f"{ind}else:",
              f"{ind}    acc += w{last} * xb[U(xo + p{last})]"]
    ind = "    " * (rank + 1)
    lines += [f"{ind}if bad:", f"{ind}    yb[U(y)] = fb[fo]", f"{ind}else:"]
    if to_int:
        lines.append(f"{ind}    yb[U(y)] = min(max(np.rint(acc), lo), hi)")
    else:
        lines.append(f"{ind}    yb[U(y)] = acc")
    lines.append(f"{ind}y += 1")
    return source(lines)


def _compress(idx: np.ndarray, w: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Merge taps reading the same input index and drop zero weights: (n_out, K) with K minimal (>= 1)."""
    rows_i, rows_w = [], []
    for ii, ww in zip(idx, w):
        acc: dict[int, float] = {}
        for i, v in zip(ii.tolist(), ww.tolist()):
            acc[i] = acc.get(i, 0.0) + v
        items = [(i, v) for i, v in acc.items() if v != 0.0] or [(int(ii[0]), 0.0)]
        rows_i.append([i for i, _ in items])
        rows_w.append([v for _, v in items])
    k = max(len(r) for r in rows_i)
    oi = np.zeros((len(rows_i), k), np.int64)
    ow = np.zeros((len(rows_i), k), np.float64)
    for j, (ri, rw) in enumerate(zip(rows_i, rows_w)):
        oi[j, :len(ri)] = ri
        ow[j, :len(rw)] = rw
        oi[j, len(ri):] = ri[0]
    return oi, ow


@variant("Resize")
def gen_resize(node: Node, target: Target) -> list[KernelCall]:
    x, y = node.inputs[0], node.outputs[0]
    a = node.attrs
    if int(np.prod(y.shape, dtype=np.int64)) == 0:
        return []
    strides = _strides(x.shape)
    axes: list[tuple[np.ndarray, np.ndarray]] = []  # per axis: offsets (n_out, K), weights (n_out, K)
    for d in range(len(x.shape)):
        idx, w, outside = resize_axis_taps(x.shape[d], y.shape[d], float(a["scales"][d]), a, d)
        if a["mode"] != "nearest":
            idx, w = _compress(idx, w)
        off = idx * strides[d]
        off[outside, :] = SENTINEL
        axes.append((off, w))
    fill = a["extrapolation_value"]
    if a["mode"] == "nearest" or all(o.shape[1] == 1 and np.all(w == 1.0) for o, w in axes):
        return gather_call(x, y, [o[:, 0] for o, _ in axes], fill, note(node))

    # unit-weight single-tap axes next to each other become plain gathers: merge them when contiguous
    merged: list[tuple[np.ndarray, np.ndarray]] = []
    carry = 0  # offset of unit plain axes, folded into the next axis
    for d, (o, w) in enumerate(axes):
        plain = o.shape[1] == 1 and np.all(w == 1.0)
        o = np.maximum(o + carry, SENTINEL)
        carry = 0
        if plain and o.shape[0] == 1 and d + 1 < len(axes):
            carry = int(o[0, 0])
            continue
        if merged and plain:
            po, pw = merged[-1]
            if po.shape[1] == 1 and np.all(pw == 1.0):
                t = simplify_tables([po[:, 0], o[:, 0]])
                if len(t) == 1:
                    merged[-1] = (t[0][:, None], np.ones((t[0].size, 1)))
                    continue
        merged.append((o, w))
    offs = [o for o, _ in merged]
    starts = np.cumsum([0] + [o.size for o in offs])[:-1]
    to_int = np.issubdtype(y.dtype, np.integer)
    lo, hi = (float(np.iinfo(y.dtype).min), float(np.iinfo(y.dtype).max)) if to_int else (0.0, 0.0)
    args = [x, y, Param(np.concatenate([o.reshape(-1) for o in offs])),
            Param(np.concatenate([w.reshape(-1) for _, w in merged])),
            Param(np.asarray([fill]).astype(y.dtype)), lo, hi]
    for o, s in zip(offs, starts):
        args += [int(o.shape[0]), int(o.shape[1]), int(s)]
    return [KernelCall(interp_source(len(offs), bool(to_int)), args, note(node))]


# =========================================================================================================
# nearest upsampling by whole factors (the FPN upsample), vectorised
# =========================================================================================================
def nearest_factors(node: Node) -> tuple[int, int] | None:
    """``(fh, fw)`` when a float32 NCHW Resize copies each input pixel into an ``fh x fw`` block (its
    nearest tables, whatever the attributes, are ``j // f`` on H and W and the identity on N and C), with
    ``fw`` 1, 2 or 4; else None."""
    x, y = node.inputs[0], node.outputs[0]
    a = node.attrs
    if x.dtype != np.float32 or len(x.shape) != 4 or int(np.prod(y.shape, dtype=np.int64)) == 0:
        return None
    if a["mode"] != "nearest":
        return None
    f = []
    for d in range(4):
        n_in, n_out = x.shape[d], y.shape[d]
        if n_out % n_in:
            return None
        idx, w, outside = resize_axis_taps(n_in, n_out, float(a["scales"][d]), a, d)
        k = n_out // n_in
        if idx.shape[1] != 1 or np.any(outside) or not np.array_equal(idx[:, 0], np.arange(n_out) // k):
            return None
        f.append(k)
    return (f[2], f[3]) if f[0] == f[1] == 1 and f[3] in (1, 2, 4) else None


def nearest_source(w: int, fw: int) -> str:
    """``y`` (planes of ``H*fh x W*fw``) from ``x`` (``P`` planes of ``H x W``): each input row's vectors
    interleaved with themselves ``fw`` times (``vziplo``/``vziphi``) and stored into ``fh`` output rows."""
    L = 2 * w
    lines, names = interleave([f"v{L}"] * fw, L, "z")

    def body(masked: bool) -> list[str]:
        ind = " " * 16
        out = [ind + (f"v{L} = vloadn{L}(xb, xr + j, nc)" if masked else f"v{L} = vload{L}(xb, xr + j)")]
        out += [ind + ln for ln in lines]
        out.append(f"{ind}for r in range(fh):")
        for k, name in enumerate(names):
            at = f"yr + r * OW + j * {fw} + {k * L}"
            if masked:
                out += [f"{ind}    cnt = min(max(nc * {fw} - {k * L}, 0), {L})", f"{ind}    if cnt > 0:",
                        f"{ind}        vstoren{L}(yb, {at}, {name}, cnt)"]
            else:
                out.append(f"{ind}    vstore{L}(yb, {at}, {name})")
        return out

    return source([
        "def kernel(xb, xo, yb, yo, P, H, W, fh):",
        f"    OW = W * {fw}",
        "    for p in range(P):",
        "        for i in range(H):",
        "            xr = xo + (p * H + i) * W",
        "            yr = yo + (p * H + i) * fh * OW",
        "            j = 0",
        f"            while j + {L} <= W:",
        *body(False),
        f"                j += {L}",
        "            if j < W:",
        "                nc = W - j",
        *body(True),
    ])


@variant("Resize", name="simd_nearest", priority=20, applies=lambda n, t: nearest_factors(n) is not None)
def gen_simd_nearest(node: Node, target: Target) -> list[KernelCall]:
    """Nearest upsampling by whole factors: vector loads, in-register duplication, contiguous stores."""
    x = node.inputs[0]
    fh, fw = nearest_factors(node)
    N, C, H, W = x.shape
    return [KernelCall(nearest_source(target.vector_width, fw), [x, node.outputs[0], N * C, H, W, fh], note(node))]
