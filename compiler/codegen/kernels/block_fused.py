"""An inverted-residual block (``InvertedResidual``: 1x1 expand -> depthwise kxk -> 1x1 project [+ x]) as one
kernel that sweeps the output rows, so the expanded tensor and the depthwise output never reach memory.

Plain NCHW. Three stages per group of ``RB`` output rows:

* **expand**, one input row at a time, as soon as the depthwise conv needs it: ``E x C`` weights times the
  row's ``C x W`` pixels in register tiles (``pointwise_tile``), activations in registers, stored into a
  *ring* of ``K`` expanded rows (slot ``ih % K``; each slot holds the row of every channel, ``PW`` floats
  each with zero columns either side, so every depthwise tap is one unmasked load; an extra slot of zeros
  stands for the rows above and below the image). Each input row is expanded once (no halo recomputed).
  A block without an expand (``has_expand``) copies the input row into the ring instead (stride 2: its
  even and odd columns), so the depthwise conv reads zero-padded rows the same way;
* **depthwise**, one output row at a time from the ring's ``K`` rows (stride 2: even lanes of a double
  load), ``K`` independent FMA chains, activations, into a scratch of ``RB`` rows per channel; or, where
  the weights stay in registers (``pair_rows``: 3x3 on AVX2), two output rows at a time from a ring of
  ``K + S`` rows, each input vector loaded once for both rows;
* **project**, the group's ``RB x OW`` pixels (contiguous in the scratch and in the output), in register
  tiles, pixel tile outermost so its ``E`` vectors stay in L1 for every output-channel tile; the node's
  epilogue (activations, residual Add) before the store.

Ring and row scratch: ``(R + 1) * E * PW + E * RB * OW`` floats, ``R`` = ``K`` or ``K + S`` ring rows
(MobileNetV2's 96-channel 112x112 block: 380 KB with paired rows, against 4.8 MB expanded). A part of
a block split over threads is a range of output rows (``parts.py``), with its own ring.
"""

from __future__ import annotations

import functools

import numpy as np

from cnnjit.ir import Node, get_op
from cnnjit.ir.ops.fused import BLOCK_INPUTS, has_expand

from ..kernel import KernelCall, Scratch, Target, form, note, variant
from ..parts import node_part, part_space
from .epilogue import Epilogue, vector_expr
from .simd_pointwise import MR, NR, pointwise_tile
from .template import source

#: at most this many bytes of depthwise output rows (E x RB x OW floats, in L2): RB is the row count up to
#: this whose pixels fill the project's register tiles best (the pixel tile's E vectors stay in L1 anyway)
ROWS_BYTES = 128 * 1024
#: at most this many output rows per group
MAX_RB = 8
#: FMA chains per output row in the depthwise stage's paired rows (``pair_rows``); the out-of-order core
#: overlaps consecutive vectors' chains. ``benchmarks/block_fusion.py`` blocks, one thread, AVX2, interleaved
#: (load 8-9): one chain 1.00-1.06x the single rows (medians; minima 0.99-1.09x), two 0.97-1.09x, three
#: 0.95-0.98x (spills)
PAIR_CHAINS = 1
#: vector width -> the expand's and the project's register tile (rows x pixel vectors) on targets of 32 vector
#: registers at that width, instead of ``simd_pointwise``'s 4 x 2: 8 x 2 keeps 16 accumulators in flight (4 x 2's
#: 8 are just the FMA latency times its two pipes, no slack) and loads each pixel vector once for 8 rows. AVX-512
#: (Zen 5), MobileNetV2-224's three fused blocks in the model, one thread, per-call minima of 40-50 interleaved
#: rounds against the default in one process (load 3.5-4): 16 -> 96 -> 24 s2 at 112x112 321-328 -> 301-303 us,
#: 24 -> 144 -> 24 at 56x56 277-279 -> 253-254 us, 32 -> 16 (no expand) at 112x112 138 -> 130-140 us; expand
#: 12 x 2 or 4 x 4, project 12 x 2: no better. Other widths and register files keep 4 x 2
WIDE_TILES: dict[int, tuple[int, int]] = {16: (8, 2)}
#: addresses this many bytes apart share an L1 set (32 KiB, 8 ways: x86 and Arm cores alike)
ALIAS_BYTES = 4096
#: the earlier form: a stride-1 block's expand reads the input planes (``stage_rows``)
UNSTAGED = form("block_unstaged_rows", "block_fused: a stride-1 expand reads the input planes, not a staged row")


def act_lines(steps: tuple, acc: str, lanes: int, ind: str) -> list[str] | None:
    """Lines applying activation ``steps`` to vector ``acc`` in registers, or None if one has no vector
    form."""
    out = []
    for s in steps:
        e = vector_expr(s.op, get_op(s.op).check_attrs(dict(s.attrs)), lanes, acc)
        if e is None:
            return None
        out.append(f"{ind}{acc} = {e}")
    return out


def stage_rows(target: Target) -> bool:
    """Whether a stride-1 block's expand reads each input row from a staged copy of its channels' columns
    (``STAGE_ROWS``), not from the input planes: a tile's ``C`` loads per pixel vector come from ``C`` planes
    ``H * W`` floats apart, which on a map of a multiple of 1024 pixels (64x64, 96x96, 192x192, 48x320) all
    fall in one L1 set (4 KiB apart), so past its 8 ways every channel tile re-reads them from L2; the staged
    rows are ``stage_stride`` apart. The earlier form (``UNSTAGED``) reads the planes."""
    return not target.uses(UNSTAGED)


def stage_stride(n: int, w: int) -> int:
    """A staged row's length for ``n`` columns: ``n``, one vector more when its bytes are a multiple of
    ``ALIAS_BYTES`` / 2 (the rows of every channel, or of every other, would share L1 sets)."""
    return n + w if (4 * n) % (ALIAS_BYTES // 2) == 0 else n


def pair_rows(K: int, target: Target) -> bool:
    """Whether the depthwise stage computes two output rows per sweep of a channel: the ``K + S`` input rows
    they read are loaded once for both (3x3, stride 1: 12 loads for 18 FMAs, not 18), which needs the
    ``K * K`` weights, ``PAIR_CHAINS`` accumulators per row, the bias and a loaded vector in registers."""
    return K * K + 2 * PAIR_CHAINS + 2 <= target.vector_registers


def block_geometry(node: Node, target: Target) -> dict:
    """The sizes the kernel is generated and called with: vector width ``w``, the expand's register tile
    ``MR x NR`` and the project's ``PMR x PNR``, ring row length ``PW`` (``SW``: a staged input row's, stride
    2), rows per group ``RB`` and the row scratch's channel stride ``DP``; ``PAIR``: the depthwise conv
    computes output rows two at a time (``pair_rows``), from a ring of ``R`` rows (``K``, or ``K + S`` for
    the two rows' inputs)."""
    x, y = node.inputs[0], node.outputs[0]
    _, C, H, W = x.shape
    E = node.inputs[3].shape[0]  # the depthwise conv's channels (without an expand, C)
    OH, OW = y.shape[2:]
    K = node.attrs["kernel_shape"][0]
    S = node.attrs["strides"][0]
    pw = node.attrs["pads"][1]
    w = target.vector_width
    wide = WIDE_TILES.get(w) if target.vector_registers >= 32 else None
    mr, nr = wide or pointwise_tile(target, E, w, 0)
    owv = -(-OW // w) * w
    L = nr * w

    def tiles(n: int) -> int:  # the columns ``n`` pixels' expand tiles store: whole tiles (see ``vkeep``)
        return -(-n // L) * L

    if S == 1:
        PW = -(-max(pw + tiles(W), owv + K - 1) // w) * w
        parity: list[tuple[int, int, int]] = []
        # a staged input row (``stage_rows``): each channel's columns, whole tiles
        SW = stage_stride(tiles(W), w) if has_expand(node) and stage_rows(target) else 0
    else:  # each ring row is its even then its odd padded columns (PW // 2 each)
        # per parity: the first plane position holding an input column, how many do, and that column
        parity = []
        for par in (0, 1):
            klo = (pw - par + 1) // 2
            khi = (W - 1 + pw - par) // 2 + 1
            parity.append((klo, max(0, khi - klo), 2 * klo + par - pw))
        half = -(-max(owv + (K - 1) // 2, (pw + W + 1) // 2, *(klo + tiles(c) for klo, c, _ in parity)) // w) * w
        PW = 2 * half
        # a staged row of one parity's input columns, whole tiles (without an expand: copied to the ring)
        SW = stage_stride(tiles(max(c for _, c, _ in parity)), w) if has_expand(node) else 0
    # the project: 4 output channels x 2 vectors (its E-vector pixel tile is in L1 for every channel tile;
    # measured against the expand's 2 x 4 on AVX2: 5-9% faster on MobileNetV2's 96 -> 24, even on the others);
    # 8 x 2 at 16 lanes with 32 registers (``WIDE_TILES``)
    pmr, pnr = wide or (MR, NR)
    L = pnr * w
    pair = pair_rows(K, target)
    # among the row counts that fill the project's tiles best, an even one when rows run in pairs
    RB = min(range(1, max(1, min(MAX_RB, OH, ROWS_BYTES // max(1, 4 * E * OW))) + 1),
             key=lambda r: (-(-r * OW // L) * L / (r * OW), pair and r % 2, r))
    DP = -(-(RB * OW + w) // w) * w
    return {"w": w, "MR": mr, "NR": nr, "PMR": pmr, "PNR": pnr, "PW": PW, "SW": SW, "parity": parity, "RB": RB,
            "DP": DP, "K": K, "S": S, "PAIR": pair, "R": K + S if pair else K, "C": C, "H": H, "W": W,
            "E": E, "OH": OH, "OW": OW}


def _tile(ind: str, mr: int, L: int, masked: str | None, load: str, wexpr: str, bias: str, red: str,
          store: list[str] | None = None) -> list[str]:
    """A register tile: ``mr`` rows (``i``) of ``L`` lanes, ``a{L}_{i} = bias(i) + sum_red w(i) * load``;
    ``load`` and ``wexpr`` are formats with ``{i}`` for the row (the loop variable is ``red``)."""
    out = [f"{ind}a{L}_{i} = vbcast{L}({bias.format(i=i)})" for i in range(mr)]
    out.append(f"{ind}for {red} in range({'C' if red == 'c' else 'E'}):")
    out.append(f"{ind}    v{L} = {load}")
    out += [f"{ind}    a{L}_{i} = vfma{L}(vbcast{L}({wexpr.format(i=i)}), v{L}, a{L}_{i})" for i in range(mr)]
    return out + (store or [])


def block_source(node: Node, g: dict[str, int]) -> tuple[str, list]:
    """The fused block's kernel source for geometry ``g`` (``block_geometry``) and its residual arguments."""
    w, mr, nr, K, S = g["w"], g["MR"], g["NR"], g["K"], g["S"]
    pmr, LP = g["PMR"], g["PNR"] * w
    half = g["PW"] // 2
    L = nr * w
    epi = Epilogue(node, w, True)
    a = node.attrs
    expand = has_expand(node)

    def expand_tile(xload: str, dst: str, staged: bool = False):
        """The expand's tile reading pixel ``c0`` of channel ``c`` at ``xload`` (a format with ``{v}`` for the
        load intrinsic's name and ``{n}`` for its count argument) and storing at ``dst`` + channel row. The
        last, part-filled tile stores whole tiles with its lanes past the row zeroed (the ring rows have
        room: ``block_geometry``); it reads whole tiles too from a ``staged`` row (stride 2: the stage has
        room), only the row's pixels from the input."""
        def tile(ind: str, rows: int, masked: bool) -> list[str]:
            ld = f"vloadn{L}" if masked and not staged else f"vload{L}"
            load = xload.format(v=ld, n=", cnt" if ld.startswith("vloadn") else "")
            out = _tile(ind, rows, L, None, load, "web[U(weo + (e + {i}) * C + c)]", "beb[U(beo + e + {i})]", "c")
            for i in range(rows):
                out += act_lines(a["expand_post"], f"a{L}_{i}", L, ind)
                v = f"vkeep{L}(a{L}_{i}, cnt)" if masked else f"a{L}_{i}"
                out.append(f"{ind}vstore{L}(gb, {dst} + (e + {i}) * PW + c0, {v})")
            return out
        return tile

    def project_tile(ind: str, rows: int, masked: bool) -> list[str]:
        out = _tile(ind, rows, LP, None, f"vload{LP}(sb, so + e * DP + p0)", "wpb[U(wpo + (m + {i}) * E + e)]",
                    "bpb[U(bpo + m + {i})]", "e")
        for i in range(rows):
            idx = f"yg + (m + {i}) * OHW + p0"
            out += epi.vector(ind, f"a{LP}_{i}", idx, LP, masked)
            out.append(f"{ind}vstoren{LP}(yb, yo + {idx}, a{LP}_{i}, cnt)" if masked
                       else f"{ind}vstore{LP}(yb, yo + {idx}, a{LP}_{i})")
        return out

    def copy_columns(ind: str, iw0: int, count: int | str, dst: str, step: int) -> list[str]:
        """Each channel ``c``'s ``count`` input columns ``iw0, iw0 + step, ...`` (step 1 or 2) of row ``xr``
        stored from ``dst`` (an expression of ``c``), in whole vectors whose lanes past the row are zero."""
        if step == 1:
            load, fits = f"vload{w}(xb, src + j0)", f"j0 + {w} <= {count}"
            tail = f"vloadn{w}(xb, src + j0, {count} - j0)"
        else:
            load, fits = f"vload2e{w}(xb, src + 2 * j0)", f"{iw0} + 2 * j0 + {2 * w} <= W"
            tail = f"vload2er{w}(xb, src + 2 * j0, 0, min({2 * w - 1}, W - {iw0} - 2 * j0))"
        return [f"{ind}for c in range(C):", f"{ind}    src = xr + c * HW + {iw0}",
                f"{ind}    dst = {dst}", f"{ind}    for j0 in range(0, {count}, {w}):",
                f"{ind}        if {fits}:", f"{ind}            vstore{w}(gb, dst + j0, {load})",
                f"{ind}        else:", f"{ind}            vstore{w}(gb, dst + j0, {tail})"]

    def expand_row() -> list[str]:
        """Input row ``nxt`` expanded into its ring slot (stride 2: its even and its odd padded columns, each
        expanded from a staged copy of the input row's columns of that parity); without an expand, the row's
        columns copied there."""
        ind = " " * 20
        slot = f"go + (nxt % {g['R']}) * SL"
        if S == 1:
            if not expand:
                return copy_columns(ind, 0, "W", f"{slot} + pw + c * PW", 1)
            if not g["SW"]:  # the expand's tiles read the input planes
                return [f"{ind}gr = {slot} + pw",
                        *pixel_loops(ind, "c0", "W", "e", "E", expand_tile("{v}(xb, xr + c * HW + c0{n})", "gr"))]
            stage = f"go + {g['R'] + 1} * SL"
            return [*copy_columns(ind, 0, "W", f"{stage} + c * SW", 1), f"{ind}gr = {slot} + pw",
                    *pixel_loops(ind, "c0", "W", "e", "E",
                                 expand_tile(f"{{v}}(gb, {stage} + c * SW + c0{{n}})", "gr", True))]
        out = []
        for par, (klo, count, iw0) in enumerate(g["parity"]):
            if not count:
                continue
            if not expand:
                out += copy_columns(ind, iw0, count, f"{slot} + {par * half + klo} + c * PW", 2)
                continue
            stage = f"go + {g['R'] + 1} * SL + {par} * C * SW"
            out += [*copy_columns(ind, iw0, count, f"{stage} + c * SW", 2),
                    f"{ind}gr = {slot} + {par * half + klo}",
                    *pixel_loops(ind, "c0", str(count), "e", "E",
                                 expand_tile(f"{{v}}(gb, {stage} + c * SW + c0{{n}})", "gr", True))]
        return out

    def channel_loops(ind: str, var: str, count: str, tile, masked: bool, mr: int) -> list[str]:
        """Tiles of ``mr`` channels, then single channels for the rest."""
        out = [f"{ind}{var} = 0", f"{ind}while {var} + {mr} <= {count}:", *tile(ind + "    ", mr, masked),
               f"{ind}    {var} += {mr}"]
        return out + [f"{ind}while {var} < {count}:", *tile(ind + "    ", 1, masked), f"{ind}    {var} += 1"]

    def pixel_loops(ind: str, var: str, count: str, var_ch: str, count_ch: str, tile, L: int = L,
                    mr: int = mr) -> list[str]:
        """Pixel tiles of ``L`` lanes (the last one masked), each over every channel tile."""
        return [f"{ind}{var} = 0", f"{ind}while {var} + {L} <= {count}:",
                *channel_loops(ind + "    ", var_ch, count_ch, tile, False, mr), f"{ind}    {var} += {L}",
                f"{ind}if {var} < {count}:", f"{ind}    cnt = {count} - {var}",
                *channel_loops(ind + "    ", var_ch, count_ch, tile, True, mr)]

    R = g["R"]
    ind = " " * 16

    def slots(rows: int) -> list[str]:
        """``o{t}``: the ring slot of input row ``oh * S - ph + t`` for ``t < rows`` (the zero slot outside the
        image)."""
        return [line for t in range(rows) for line in
                (f"{ind}ih = oh * {S} - ph + {t}", f"{ind}o{t} = go + ((ih % {R}) if 0 <= ih < H else {R}) * SL")]

    def tap(t: int, u: int) -> str:
        """The load of tap ``(t, u)``'s input vector from slot ``o{t}`` (stride 2: even or odd columns)."""
        return f"vload{w}(gb, o{t} + col + {u if S == 1 else u % 2 * half + u // 2})"

    # the depthwise weights of channel e in registers, then its output row(s) a vector at a time
    head = [f"{ind}j = (oh - g0) * OW", f"{ind}for e in range(E):", f"{ind}    wk = wdo + e * {K * K}",
            *[f"{ind}    k{t}_{u} = vbcast{w}(wdb[U(wk + {t * K + u})])" for t in range(K) for u in range(K)],
            f"{ind}    bias = vbcast{w}(bdb[U(bdo + e)])", f"{ind}    for ow0 in range(0, OW, {w}):",
            f"{ind}        col = e * PW + ow0"]
    body = ind + "        "

    # one output row: K chains (one per kernel row), the taps unrolled
    dw = slots(K) + head
    for t in range(K):
        for u in range(K):
            dw.append(f"{body}r{t} = vmul{w}(k{t}_{u}, {tap(t, u)})" if u == 0
                      else f"{body}r{t} = vfma{w}(k{t}_{u}, {tap(t, u)}, r{t})")
    total = "bias"
    for t in range(K):
        total = f"vadd{w}({total}, r{t})"
    dw += [f"{body}d = {total}", *act_lines(a["dw_post"], "d", w, body),
           f"{body}vstore{w}(sb, so + e * DP + j + ow0, d)"]

    # two output rows (``pair_rows``): each of their K + S input rows' taps loaded once, into row 0 (input
    # rows 0 .. K-1) and row 1 (S .. K+S-1), PAIR_CHAINS chains each (the bias starts chain 0)
    pair = slots(K + S) + head
    used: set[str] = set()
    for t in range(K + S):
        for u in range(K):
            pair.append(f"{body}v = {tap(t, u)}")
            for row, kt in ((0, t), (1, t - S)):
                if 0 <= kt < K:
                    acc = f"p{row}_{(kt * K + u) % PAIR_CHAINS}"
                    prev = acc if acc in used else "bias" if acc.endswith("_0") else None
                    pair.append(f"{body}{acc} = " + (f"vfma{w}(k{kt}_{u}, v, {prev})" if prev
                                                     else f"vmul{w}(k{kt}_{u}, v)"))
                    used.add(acc)
    for row in (0, 1):
        chains = [c for c in (f"p{row}_{i}" for i in range(PAIR_CHAINS)) if c in used]
        total = functools.reduce(lambda acc, c: f"vadd{w}({acc}, {c})", chains[1:], chains[0])
        pair += [f"{body}d = {total}", *act_lines(a["dw_post"], "d", w, body)]
        at = f"so + e * DP + j + {row} * OW + ow0"
        if row == 0:  # a whole vector past the row would overwrite row 1's first columns, stored already
            pair += [f"{body}if ow0 + {w} <= OW:", f"{body}    vstore{w}(sb, {at}, d)", f"{body}else:",
                     f"{body}    vstoren{w}(sb, {at}, d, OW - ow0)"]
        else:
            pair.append(f"{body}vstore{w}(sb, {at}, d)")

    def rows_loop() -> list[str]:
        """The group's output rows, each (pair) after expanding the input rows it needs that are not yet in the
        ring."""
        def expand_to(last: str) -> list[str]:
            return [f"                need = min(H, {last} * {S} - ph + {K})", "                while nxt < need:",
                    "                    xr = xn + nxt * W", *expand_row(), "                    nxt += 1"]
        if not g["PAIR"]:
            return ["            for oh in range(g0, g1):", *expand_to("oh"), *dw]
        return ["            oh = g0", "            while oh < g1:", "                two = oh + 1 < g1",
                *expand_to("(oh + 1 if two else oh)"), "                if two:", *[" " * 4 + x for x in pair],
                "                    oh += 2", "                    continue", *dw, "                oh += 1"]

    lines = [
        f"def kernel(xb, xo, {'web, weo, beb, beo, ' if expand else ''}wdb, wdo, bdb, bdo, wpb, wpo, bpb, bpo, "
        "yb, yo, gb, go, sb, so, "
        "N, C, H, W, E, M, OH, OW, ph, pw, PW, SW, RB, DP, RS, RE" + epi.signature() + "):",
        "    SL = E * PW",
        "    HW = H * W",
        "    OHW = OH * OW",
        # the ring's columns outside the rows, its zero slot and the row scratch start at zero; the expand
        # writes only inside the rows
        f"    for i in range(0, {R} * SL, PW):",  # the ring rows' columns left and right of the input's
        *[f"        for c in range({lo}, {hi}):\n            gb[go + i + c] = 0.0" for lo, hi in pad_columns(g)],
        f"    for i in range({R} * SL, {R + 1} * SL{f' + {S} * C * SW' if g['SW'] else ''}):",  # and the stage
        "        gb[go + i] = 0.0",
        f"    for i in range(E * DP + {max(L, LP)}):",
        "        sb[so + i] = 0.0",
        "    for n in range(N):",
        "        xn = xo + n * C * HW",
        "        yn = n * M * OHW",
        f"        nxt = max(0, RS * {S} - ph)",
        "        for g0 in range(RS, RE, RB):",
        "            g1 = min(RE, g0 + RB)",
        *rows_loop(),
        "            P = (g1 - g0) * OW",
        "            yg = yn + g0 * OW",
        *pixel_loops(" " * 12, "p0", "P", "m", "M", project_tile, LP, pmr),
    ]
    return source(lines), epi.args


def pad_columns(g: dict) -> list[tuple[str, str]]:
    """The column ranges of a ring row that no input column reaches (kept zero), as kernel expressions."""
    if g["S"] == 1:
        return [("0", "pw"), ("pw + W", "PW")]
    half = g["PW"] // 2
    out = []
    for par, (klo, count, _) in enumerate(g["parity"]):
        out += [(str(par * half), str(par * half + klo)), (str(par * half + klo + count), str((par + 1) * half))]
    return out


def block_fused_applies(node: Node, target: Target) -> bool:
    """A float32 block whose activations all have vector forms (the pass fuses only those)."""
    a = node.attrs
    w = target.vector_width
    return (node.inputs[0].dtype == np.float32 and len(node.inputs[0].shape) == 4
            and act_lines(a["expand_post"], "a", w, "") is not None and act_lines(a["dw_post"], "a", w, "") is not None
            and Epilogue(node, w, True).in_registers)


@variant("InvertedResidual", name="block_fused", priority=10, applies=block_fused_applies)
def gen_block_fused(node: Node, target: Target) -> list[KernelCall]:
    """One call for the block (or for a part's range of output rows: ``meta["part"]``)."""
    g = block_geometry(node, target)
    src, extra = block_source(node, g)
    x, y = node.inputs[0], node.outputs[0]
    rs, re_ = node_part(node) or (0, g["OH"])
    E = g["E"]
    ring = Scratch((g["R"] + 1) * E * g["PW"] + g["S"] * g["C"] * g["SW"])
    rows = Scratch(E * g["DP"] + max(g["NR"], g["PNR"]) * g["w"])
    weights = [v for v in node.inputs[1:BLOCK_INPUTS] if v is not None]  # no w1, b1 without an expand
    args = [x, *weights, y, ring, rows, x.shape[0], g["C"], g["H"], g["W"], E, node.inputs[5].shape[0], g["OH"],
            g["OW"], node.attrs["pads"][0], node.attrs["pads"][1], g["PW"], g["SW"], g["RB"], g["DP"], rs, re_,
            *extra]
    return [KernelCall(src, args, note(node))]


@part_space("InvertedResidual", "block_fused")
def block_part_space(node: Node, target: Target) -> tuple[int, int] | None:
    """Output rows, in whole groups."""
    g = block_geometry(node, target)
    return g["OH"], g["RB"]
