"""2-D max and average pooling with explicit SIMD over output columns (plain NCHW).

Each (image, channel) plane is processed row by row in vectors of ``W`` output columns. Stride 1 loads
contiguously, stride 2 keeps the even lanes of a double load, stride 4 one lane in four of a de-interleaving
load (the 1x4 stride-4 pools of a spectrogram's frequency axis), other strides gather; lanes outside the
input are masked (never read) and hold -inf for max pooling or 0 for averaging. Average pooling divides by a
constant when every window holds kh*kw counted cells; with pads not counted (``count_include_pad=0``) it
counts each window's cells inside the input by running the same masked loads over a row of ones. Fused
activations (the ``post`` steps ``fuse_epilogue`` gives a pool) run on each output vector before its store.

``separable_pool`` (column stride 1): a window's max (or sum) is the max over its rows of each row's max over
its columns, so each plane is copied once into a padded scratch plane (pads filled with -inf, or 0 for an
average whose divisor counts them), every padded row reduced over ``KW`` columns into a second scratch, and
each output vector reduced over ``KH`` of those: ``KH + KW`` vector operations per output vector instead of
``KH * KW``, and no masked loads at the borders (which are most of the taps on a small map: YOLOX's SPP
cascade, 5x5 stride-1 MaxPools with 2 pads on 13x13, ran at 5 GFLOP/s in ``simd_pool``).

``flat_pool`` (stride 1 along both axes) reduces the rows into a scratch plane of ``OW``-wide rows (no
per-row vector padding), so the column step is one run of contiguous vectors over the whole plane
(``OH * OW`` outputs, a masked store only for the plane's last vector), and only the input's rows are copied
and reduced (the pad rows stay filled): the 13-column rows of the SPP cascade cost ``separable_pool`` a
masked store and 5 scalar copies each.
"""

from __future__ import annotations

import numpy as np

from cnnjit.ir import Node

from ..kernel import KernelCall, Param, Scratch, Target, note, variant
from .epilogue import Epilogue
from .simd_pointwise import row_load, row_taps, row_width
from .template import source


def pool_source(w: int, sw: int, is_max: bool, counted: bool = False, node: Node | None = None) -> str:
    """``counted``: average pooling whose divisor is the number of window cells inside the input (pads not
    counted): the same masked loads run over a row of ones (``ob``) to count them per lane. ``node``: its
    fused activations (``post``) run on the vector before the store (or over the stored row, for one
    without a vector form)."""
    fill = "-math.inf" if is_max else "0.0"
    comb = f"vmax{w}" if is_max else f"vadd{w}"
    if sw <= 2:
        fast, fast_ok, edge = row_load(w, sw, fill=fill)
        edge_lines = [f"v = {edge}"]
    else:  # a lane per window ``sw`` columns apart (stride 4: one de-interleaving load, else a gather), the
        # border lanes inserted one by one
        fast, fast_ok = f"vgather{w}(xb, xrow + iw0, {sw})", f"iw0 >= 0 and iw0 + {(w - 1) * sw} < Win"
        if sw == 4:
            fast, fast_ok = f"vload4t{w}(xb, xrow + iw0)[0]", f"iw0 >= 0 and iw0 + {4 * w} <= Win"
        edge_lines = [f"v = vbcast{w}({fill})",
                      f"for i in range(max(0, ({sw - 1} - iw0) // {sw}), min(cnt, (Win - iw0 + {sw - 1}) // {sw})):",
                      f"    v = vinsert{w}(v, i, xb[U(xrow + iw0 + i * {sw})])"]
    init = f"vbcast{w}(-math.inf)" if is_max else f"vzero{w}()"
    lines = [
        "def kernel(xb, xo, yb, yo, NC, H, Win, OH, OW, KH, KW, sh, ph, pw, dh, dw, scale"
        + (", ob, oo):" if counted else "):"),
        "    for nc in range(NC):",
        "        xc = xo + nc * H * Win",
        "        yc = yo + nc * OH * OW",
        "        for oh in range(OH):",
        f"            for ow0 in range(0, OW, {w}):",
        f"                cnt = min({w}, OW - ow0)",
        f"                acc = {init}",
        *([f"                num = vzero{w}()"] if counted else []),
        *row_taps(" " * 16, "xc", w, sw, fast_ok),
        f"                            v = {fast}",
        *([f"                            num = vadd{w}(num, {fast.replace('xb, xrow', 'ob, oo')})"] if counted else []),
        "                        else:",
        *(" " * 28 + ln for ln in edge_lines),
        *([f"                            num = vadd{w}(num, {edge.replace('xb, xrow', 'ob, oo')})"] if counted else []),
        f"                        acc = {comb}(acc, v)",
    ]
    if counted:  # lanes past cnt count 0 cells: divide by max(num, 1) (they are never stored)
        lines.append(f"                acc = vdiv{w}(acc, vmax{w}(num, vbcast{w}(1.0)))")
    elif not is_max:
        lines.append(f"                acc = vmul{w}(acc, vbcast{w}(scale))")
    epi = Epilogue(node, w, True, attr_args=False) if node is not None else None  # no epilogue arguments
    if epi is not None:
        lines += epi.vector(" " * 16, "acc", "yc - yo + oh * OW + ow0", w, True)
    lines.append(f"                vstoren{w}(yb, yc + oh * OW + ow0, acc, cnt)")
    if epi is not None:
        lines += epi.after(" " * 16, ["for j in range(cnt):"], "yc - yo + oh * OW + ow0 + j")
    return source(lines)


def _uniform_divisor(node: Node) -> bool:
    """Every average window holds exactly kh*kw counted cells (pads counted, or no pads and no overhang)."""
    x, y = node.inputs[0], node.outputs[0]
    a = node.attrs
    H, W = x.shape[2:]
    OH, OW = y.shape[2:]
    kh, kw = a["kernel_shape"]
    sh, sw = a["strides"]
    dh, dw = a["dilations"]
    p = a["pads"]
    inside = ((OH - 1) * sh + (kh - 1) * dh < H + p[0] + p[2]) and ((OW - 1) * sw + (kw - 1) * dw < W + p[1] + p[3])
    return inside and bool(a["count_include_pad"] or not any(p))


def simd_pool_applies(node: Node, target: Target) -> bool:
    x = node.inputs[0]
    a = node.attrs
    if x.dtype != np.float32 or len(x.shape) != 4 or a.get("indices"):
        return False
    # average pooling: a uniform divisor, or pads not counted (the divisor is counted per window; by masked
    # loads, at column strides 1 and 2 only)
    return (node.op != "AveragePool" or _uniform_divisor(node)
            or (not a["count_include_pad"] and a["strides"][1] in (1, 2)))


def pool_width(target: Target, columns: int) -> int:
    """Lanes per output vector of a pooled row of ``columns``: no wider than the row's power-of-two cover (at
    least 4 lanes): a 4-column row in 8 lanes ran every vector as a masked tail (wake-word embedding's 2x2
    pools on 8- and 4-column maps: 35 and 19 us against 18 and 13 in 4 lanes)."""
    return min(row_width(target, columns), max(4, 1 << (columns - 1).bit_length()))


@variant("MaxPool", "AveragePool", name="simd_pool", priority=20, applies=simd_pool_applies)
def gen_simd_pool(node: Node, target: Target) -> list[KernelCall]:
    x, y = node.inputs[0], node.outputs[0]
    a = node.attrs
    N, C, H, Win = x.shape
    OH, OW = y.shape[2:]
    w = pool_width(target, OW)
    is_max = node.op == "MaxPool"
    kh, kw = a["kernel_shape"]
    counted = not is_max and not _uniform_divisor(node)
    src = pool_source(w, a["strides"][1], is_max, counted, node)
    args = [x, y, N * C, H, Win, OH, OW, kh, kw, a["strides"][0], a["pads"][0], a["pads"][1],
            *a["dilations"], 1.0 / (kh * kw)]
    if counted:
        args.append(Param(np.ones(Win, np.float32)))
    return [KernelCall(src, args, note(node))]


def separable_source(w: int, is_max: bool, window: tuple[int, int, int, int], node: Node | None = None) -> str:
    """``separable_pool``'s kernel: per plane, copy into the padded plane ``zb[zo:]`` (``HP`` rows of ``PW``;
    its borders filled once per call), reduce each padded row over ``KW`` columns (dilation ``dw``) into
    ``zb[hz:]`` (``HP`` rows of ``OWV``, whole vectors), then each output vector over ``KH`` rows (stride
    ``sh``, dilation ``dh``). ``window`` = (KH, KW, dh, dw) are constants of the source, so both reductions
    unroll (rows of a few vectors spent most of their time in the loops over taps: 13x13 maps, 5x5 windows)."""
    KH, KW, dh, dw = window
    fill = "-math.inf" if is_max else "0.0"
    comb = f"vmax{w}" if is_max else f"vadd{w}"
    lines = [
        "def kernel(xb, xo, yb, yo, zb, zo, NC, H, Win, OH, OW, sh, ph, pw, scale, HP, PW, OWV):",
        "    hz = zo + HP * PW",
        "    for i in range(HP * PW):",
        f"        zb[U(zo + i)] = {fill}",
        "    rows = max(0, min(H, HP - ph))",
        "    cols = max(0, min(Win, PW - pw))",
        "    for nc in range(NC):",
        "        xc = xo + nc * H * Win",
        "        yc = yo + nc * OH * OW",
        "        for ih in range(rows):",
        "            src = xc + ih * Win",
        "            dst = zo + (ih + ph) * PW + pw",
        f"            for j in range(0, cols - {w - 1}, {w}):",
        f"                vstore{w}(zb, dst + j, vload{w}(xb, src + j))",
        f"            for j in range(cols - cols % {w}, cols):",  # element by element: masked moves are slow on AMD
        "                zb[U(dst + j)] = xb[U(src + j)]",
        "        for r in range(HP):",
        "            src = zo + r * PW",
        f"            for ow0 in range(0, OWV, {w}):",
        f"                acc = vload{w}(zb, src + ow0)",
        *[f"                acc = {comb}(acc, vload{w}(zb, src + ow0 + {k * dw}))" for k in range(1, KW)],
        f"                vstore{w}(zb, hz + r * OWV + ow0, acc)",
        "        for oh in range(OH):",
        "            src = hz + oh * sh * OWV",
        f"            for ow0 in range(0, OW, {w}):",
        f"                cnt = min({w}, OW - ow0)",
        f"                acc = vload{w}(zb, src + ow0)",
        *[f"                acc = {comb}(acc, vload{w}(zb, src + {k * dh} * OWV + ow0))" for k in range(1, KH)],
        *output_store(" " * 16, w, is_max, node, "oh * OW + ow0"),
    ]
    return source(lines)


def output_store(ind: str, w: int, is_max: bool, node: Node | None, at: str) -> list[str]:
    """Lines finishing the output vector ``acc`` (``cnt`` live lanes) at element ``yc + at``: an average's
    divisor, the fused steps, the store. A masked store is microcoded on AMD (about 10x a plain one): only for
    a partial vector."""
    lines = [] if is_max else [f"{ind}acc = vmul{w}(acc, vbcast{w}(scale))"]
    epi = Epilogue(node, w, True, attr_args=False) if node is not None else None
    if epi is not None:
        lines += epi.vector(ind, "acc", f"yc - yo + {at}", w, True)
    lines += [f"{ind}if cnt == {w}:", f"{ind}    vstore{w}(yb, yc + {at}, acc)",
              f"{ind}else:", f"{ind}    vstoren{w}(yb, yc + {at}, acc, cnt)"]
    if epi is not None:
        lines += epi.after(ind, ["for j in range(cnt):"], f"yc - yo + {at} + j")
    return lines


def separable_pool_applies(node: Node, target: Target) -> bool:
    """Column stride 1, a MaxPool or an AveragePool whose divisor is the window's size, and a window whose
    ``KH * KW`` taps cost more than its ``KH + KW`` row and column steps plus the plane's copy and the
    store (3x3 and larger; not 2x2 or 1xK)."""
    if not simd_pool_applies(node, target) or node.attrs["strides"][1] != 1:
        return False
    kh, kw = node.attrs["kernel_shape"]
    return (node.op == "MaxPool" or _uniform_divisor(node)) and kh * kw > kh + kw + 2


@variant("MaxPool", "AveragePool", name="separable_pool", priority=15, applies=separable_pool_applies)
def gen_separable_pool(node: Node, target: Target) -> list[KernelCall]:
    x, y, a = node.inputs[0], node.outputs[0], node.attrs
    (N, C, H, Win), (OH, OW) = x.shape, y.shape[2:]
    w = pool_width(target, OW)
    kh, kw = a["kernel_shape"]
    (sh, _), (dh, dw) = a["strides"], a["dilations"]
    owv = -(-OW // w) * w
    hp, pw_ = (OH - 1) * sh + (kh - 1) * dh + 1, owv + (kw - 1) * dw
    src = separable_source(w, node.op == "MaxPool", (kh, kw, dh, dw), node)
    args = [x, y, Scratch(hp * pw_ + hp * owv), N * C, H, Win, OH, OW, sh, a["pads"][0], a["pads"][1],
            1.0 / (kh * kw), hp, pw_, owv]
    return [KernelCall(src, args, note(node))]


def flat_source(w: int, wr: int, is_max: bool, window: tuple[int, int, int, int], node: Node | None = None) -> str:
    """``flat_pool``'s kernel: per plane, copy the input's ``rows`` rows into ``zb[zo:]`` (``rows`` rows of
    ``PW``, the column pads filled once per call), reduce each over ``KW`` columns in ``wr``-lane vectors into
    row ``ph + r`` of ``zb[hz:]`` (``HP`` rows of ``OW``: a vector past a row's end spills into the next row,
    which is written after it; the spill of the last row into the pad rows is refilled), then every output
    vector of the plane over ``KH`` rows ``dh * OW`` elements apart (``w`` lanes, contiguous: stride 1).
    Each scratch part has ``w`` elements of slack for the spills."""
    KH, KW, dh, dw = window
    fill = "-math.inf" if is_max else "0.0"
    comb = f"vmax{w}" if is_max else f"vadd{w}"
    rcomb = f"vmax{wr}" if is_max else f"vadd{wr}"
    lines = [
        "def kernel(xb, xo, yb, yo, zb, zo, NC, H, Win, OH, OW, ph, pw, scale, HP, PW, rows, cols):",
        f"    hz = zo + rows * PW + {w}",
        f"    for i in range(rows * PW + {w} + HP * OW + {w}):",
        f"        zb[U(zo + i)] = {fill}",
        f"    spill = (-OW) % {wr}",
        "    L = OH * OW",
        "    for nc in range(NC):",
        "        xc = xo + nc * H * Win",
        "        yc = yo + nc * L",
        "        for ih in range(rows):",
        "            src = xc + ih * Win",
        "            dst = zo + ih * PW + pw",
        f"            for j in range(0, cols - {wr - 1}, {wr}):",
        f"                vstore{wr}(zb, dst + j, vload{wr}(xb, src + j))",
        f"            if cols % {wr} != 0:",
        f"                if cols >= {wr}:",  # the last vector overlaps the one before it: no masked move
        f"                    vstore{wr}(zb, dst + cols - {wr}, vload{wr}(xb, src + cols - {wr}))",
        "                else:",
        "                    for j in range(cols):",
        "                        zb[U(dst + j)] = xb[U(src + j)]",
        "        for r in range(rows):",
        "            src = zo + r * PW",
        "            dst = hz + (r + ph) * OW",
        f"            for ow0 in range(0, OW, {wr}):",
        f"                acc = vload{wr}(zb, src + ow0)",
        *[f"                acc = {rcomb}(acc, vload{wr}(zb, src + ow0 + {k * dw}))" for k in range(1, KW)],
        f"                vstore{wr}(zb, dst + ow0, acc)",
        "        for i in range(spill):",
        f"            zb[U(hz + (rows + ph) * OW + i)] = {fill}",
        f"        for i0 in range(0, L, {w}):",
        f"            cnt = min({w}, L - i0)",
        f"            acc = vload{w}(zb, hz + i0)",
        *[f"            acc = {comb}(acc, vload{w}(zb, hz + i0 + {k * dh} * OW))" for k in range(1, KH)],
        *output_store(" " * 12, w, is_max, node, "i0"),
    ]
    return source(lines)


def flat_pool_applies(node: Node, target: Target) -> bool:
    """``separable_pool``'s windows at stride 1 along both axes (the output's rows are then the row
    reductions' rows: one contiguous column step over the plane)."""
    return separable_pool_applies(node, target) and node.attrs["strides"][0] == 1


@variant("MaxPool", "AveragePool", name="flat_pool", priority=14, applies=flat_pool_applies)
def gen_flat_pool(node: Node, target: Target) -> list[KernelCall]:
    x, y, a = node.inputs[0], node.outputs[0], node.attrs
    (N, C, H, Win), (OH, OW) = x.shape, y.shape[2:]
    w, wr = target.vector_width, pool_width(target, OW)
    kh, kw = a["kernel_shape"]
    dh, dw = a["dilations"]
    ph, pw = a["pads"][0], a["pads"][1]
    hp, pw_ = OH + (kh - 1) * dh, OW + (kw - 1) * dw
    rows, cols = max(0, min(H, hp - ph)), max(0, min(Win, pw_ - pw))
    src = flat_source(w, wr, node.op == "MaxPool", (kh, kw, dh, dw), node)
    args = [x, y, Scratch(rows * pw_ + w + hp * OW + w), N * C, H, Win, OH, OW, ph, pw, 1.0 / (kh * kw), hp, pw_,
            rows, cols]
    return [KernelCall(src, args, note(node))]
