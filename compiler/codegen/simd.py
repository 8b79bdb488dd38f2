"""A small explicit-SIMD layer for generated numba kernels: LLVM ``<W x float>`` values.

LLVM's auto-vectoriser does not reach the machine's FMA peak on convolution loops by itself; register
tiles of explicit vectors do. These intrinsics give kernel templates a vector value type and the handful
of operations a convolution needs, for widths 4 (NEON, SSE), 8 (AVX2) and 16 (AVX-512), and for 32, 64
and 128 lanes (register tile rows; LLVM splits them into machine vectors):

    vload16(buf, i)        buf[i:i+16] as a vector (unaligned)
    vloadi816(buf, i)      int8 buf[i:i+16] as float32 lanes (small-integer weights, a quarter of the bytes)
    vstore16(buf, i, v)    write it back
    vbcast16(x)            x in every lane
    vfma16(a, b, c)        a * b + c, fused
    vadd16 / vmax16 / vmin16, vzero16()
    vmaxf16(a, b)          a > b ? a : b (one maxps; vmax16 is maxnum, three on x86); vminf16: a < b ? a : b
    vmaxnan16(a, b)        the larger, NaN where either is NaN (``llvm.maximum``)
    vhsum16(v) / vhmax16(v)    lane sum in lane order / lane max; vhsumt16 / vhmaxt16: as trees (rows' sums)
    vloadn16(buf, i, n) / vstoren16(buf, i, v, n)    the first n lanes only (tails), others zero / untouched
    vscatter16(buf, i, s, v) / vgather16(buf, i, s)  lane j at buf[i + j * s]; vscattern16 / vgathern16: first n lanes
    vscatter4t16(buf, i, s, a, b, c, d)   lane j of a, b, c, d at buf[i + j * s + 0..3] (a 16 x 4 tile as rows)
    vexp16 / vlog16 / vtanh16 / vsigmoid16 / verf16 / vsilu16 / vgelu16 ...   float32 math with a stated
                           max error (``simd_math``: the functions and their error table)
    vziplo16(a, b) / vziphi16(a, b)    the low / high halves of a and b interleaved (a0 b0 a1 b1 ...)
    prefetch(buf, i)       a hint: the cache line of buf[i] into L2
    vload4t16(buf, i)      buf[i:i+64] de-interleaved: 4 vectors, vector k = elements k, k+4, ...
    vtrq16(a, b, c, d)     4x4 transposes within each 128-bit group of lanes (4 vectors in, 4 out)
    vloadtr8(buf, i, s)    the 8x8 block of rows buf[i + k * s : + 8] transposed: a tuple of 8 column vectors
    vstoretr8(buf, i, s, t)  the tuple of 8 column vectors t transposed and stored as rows at buf[i + k * s]
                           (vloadtr / vstoretr at the machine widths 4, 8, 16 only)

``buf`` is a 1-D C-contiguous float32 array; indices are element offsets. The kernels compile for the
host with numba and, because the operations are plain LLVM IR (``llvm.fma``, vector load/store,
``llvm.masked.*``), for other targets through the same source.
"""

from __future__ import annotations

import llvmlite.binding as llvm
from llvmlite import ir
from numba import types
from numba.core import cgutils
from numba.extending import intrinsic, models, register_model

from .simd_math import FUNCTIONS, VecMath

WIDTHS = (4, 8, 16)
#: vector lengths the intrinsics exist for: the machine widths, and multiples LLVM splits into 2-8 machine
#: vectors (one ``vfma64`` value is a register tile row of 4 AVX-512 vectors: a kernel's source, and numba's
#: compile time, stay the size of one vector while the machine code is the unrolled tile)
LANES = WIDTHS + (32, 64, 128)


class Vec(types.Type):
    """The numba type of a ``<n x float>`` SIMD value."""

    def __init__(self, n: int):
        self.n = n
        super().__init__(name=f"f32x{n}")


@register_model(Vec)
class _VecModel(models.PrimitiveModel):
    def __init__(self, dmm, fe_type):
        super().__init__(dmm, fe_type, ir.VectorType(ir.FloatType(), fe_type.n))


def host_vector_width() -> int:
    """16 with AVX-512F, 8 with AVX2/FMA, else 4: the host's float32 lanes (code generation reads the width
    from its ``Target``)."""
    try:
        feats = llvm.get_host_cpu_features()
    except Exception:  # noqa: BLE001 - some platforms cannot report features
        return 4
    if feats.get("avx512f"):
        return 16
    if feats.get("avx2") and feats.get("fma"):
        return 8
    return 4


def host_vector_registers(width: int | None = None) -> int:
    """How many ``width``-lane float32 values (default: the host's machine width) the host's vector register
    file holds: 32 registers with AVX-512 or on aarch64, else 16, fewer when ``width`` is wider than the
    machine's vectors (LLVM splits each value into several registers)."""
    native = host_vector_width()
    try:
        regs = 32 if native == 16 or llvm.get_process_triple().startswith(("aarch64", "arm64")) else 16
    except Exception:  # noqa: BLE001 - some platforms cannot report a triple
        regs = 16
    return max(1, regs * native // max(width or native, native))


def _data(context, builder, arrty, arr):
    """The element pointer of a 1-D array argument; a raw pointer argument (``types.CPointer``, as in
    ahead-of-time target builds, see ``cnnjit.compiler.target``) is the pointer itself."""
    if isinstance(arrty, types.CPointer):
        return arr
    return context.make_array(arrty)(context, builder, arr).data


def _vptr(context, builder, arrty, arr, idx, lvt):
    """The address of element ``idx`` of a 1-D array (or raw pointer) argument as a pointer to ``lvt``."""
    return builder.bitcast(builder.gep(_data(context, builder, arrty, arr), [idx]), ir.PointerType(lvt))


def _ptr(context, builder, arrty, arr, idx, n):
    return _vptr(context, builder, arrty, arr, idx, ir.VectorType(ir.FloatType(), n))


def transpose_vectors(builder: ir.IRBuilder, vecs: list) -> list:
    """The ``n x n`` block of ``n`` vectors of ``n`` lanes transposed (``n`` a power of two): ``log2 n`` stages
    of ``n`` two-input shuffles, each swapping the off-diagonal ``b x b`` blocks of every ``2b x 2b`` block
    (AVX2 at 8: ``vperm2f128``, ``shufps`` / ``unpck``, 24 shuffles for 64 elements)."""
    n = len(vecs)
    b = n // 2
    while b >= 1:
        out = list(vecs)
        for i in range(n):
            if i & b:
                continue
            lo = [lane if not lane & b else n + lane - b for lane in range(n)]
            hi = [lane + b if not lane & b else n + lane for lane in range(n)]
            for k, mask in ((i, lo), (i + b, hi)):
                out[k] = builder.shuffle_vector(vecs[i], vecs[i + b],
                                                ir.Constant(ir.VectorType(ir.IntType(32), n), mask))
        vecs = out
        b //= 2
    return vecs


def _row_index(context, builder, sig, args, k: int):
    """Element offset ``idx + k * stride`` of row ``k`` (``args[1]``, ``args[2]``), as an intp."""
    idx = context.cast(builder, args[1], sig.args[1], types.intp)
    stride = context.cast(builder, args[2], sig.args[2], types.intp)
    return builder.add(idx, builder.mul(stride, ir.Constant(stride.type, k)))


def transposed_load_store(vt: types.Type, lvt: ir.VectorType, n: int) -> tuple:
    """``vloadtr(buf, i, s)`` / ``vstoretr(buf, i, s, t)``: the ``n x n`` block of rows ``buf[i + k * s : +
    n]`` as a tuple of its ``n`` columns (each a vector: lane ``k`` from row ``k``), and back (``simd_softmax``
    across rows: one row per lane, no horizontal reductions)."""
    tup = types.UniTuple(vt, n)

    @intrinsic
    def vloadtr(typingctx, arr, idx, stride):
        def codegen(context, builder, sig, args):
            rows = [builder.load(_vptr(context, builder, sig.args[0], args[0],
                                       _row_index(context, builder, sig, args, k), lvt), align=4) for k in range(n)]
            return context.make_tuple(builder, tup, transpose_vectors(builder, rows))

        return tup(arr, idx, stride), codegen

    @intrinsic
    def vstoretr(typingctx, arr, idx, stride, t):
        def codegen(context, builder, sig, args):
            cols = [builder.extract_value(args[3], k) for k in range(n)]
            for k, row in enumerate(transpose_vectors(builder, cols)):
                builder.store(row, _vptr(context, builder, sig.args[0], args[0],
                                         _row_index(context, builder, sig, args, k), lvt), align=4)
            return context.get_dummy_value()

        return types.void(arr, idx, stride, t), codegen

    return vloadtr, vstoretr


def load_store(vt: types.Type, lvt: ir.VectorType) -> tuple:
    """``load(buf, i)`` / ``store(buf, i, v)`` intrinsics of the numba vector type ``vt`` (LLVM ``lvt``) at
    element ``i`` of a buffer of 4-byte elements (4-byte aligned): ``vload`` / ``vstore`` and the bf16
    pair forms (``simd_bf16``)."""
    @intrinsic
    def load(typingctx, arr, idx):
        def codegen(context, builder, sig, args):
            return builder.load(_vptr(context, builder, sig.args[0], args[0], args[1], lvt), align=4)

        return vt(arr, idx), codegen

    @intrinsic
    def store(typingctx, arr, idx, v):
        def codegen(context, builder, sig, args):
            builder.store(args[2], _vptr(context, builder, sig.args[0], args[0], args[1], lvt), align=4)
            return context.get_dummy_value()

        return types.void(arr, idx, v), codegen

    return load, store


def _make(n: int) -> dict[str, object]:
    vt = Vec(n)
    lvt = ir.VectorType(ir.FloatType(), n)
    vload, vstore = load_store(vt, lvt)

    def _mask(builder, count):
        lanes = ir.Constant(ir.VectorType(ir.IntType(64), n), list(range(n)))
        cnt = builder.insert_element(ir.Constant(ir.VectorType(ir.IntType(64), n), ir.Undefined),
                                     builder.sext(count, ir.IntType(64)) if count.type.width < 64 else count,
                                     ir.Constant(ir.IntType(32), 0))
        cnt = builder.shuffle_vector(cnt, cnt, ir.Constant(ir.VectorType(ir.IntType(32), n), [0] * n))
        return builder.icmp_signed("<", lanes, cnt)

    @intrinsic
    def vloadn(typingctx, arr, idx, count):
        def codegen(context, builder, sig, args):
            ptr = _ptr(context, builder, sig.args[0], args[0], args[1], n)
            fty = ir.FunctionType(lvt, [ptr.type, ir.IntType(32), ir.VectorType(ir.IntType(1), n), lvt])
            fn = cgutils.get_or_insert_function(builder.module, fty, f"llvm.masked.load.v{n}f32.p0")
            zero = ir.Constant(lvt, [0.0] * n)
            return builder.call(fn, [ptr, ir.Constant(ir.IntType(32), 4), _mask(builder, args[2]), zero])

        return vt(arr, idx, count), codegen

    @intrinsic
    def vstoren(typingctx, arr, idx, v, count):
        def codegen(context, builder, sig, args):
            ptr = _ptr(context, builder, sig.args[0], args[0], args[1], n)
            fty = ir.FunctionType(ir.VoidType(), [lvt, ptr.type, ir.IntType(32), ir.VectorType(ir.IntType(1), n)])
            fn = cgutils.get_or_insert_function(builder.module, fty, f"llvm.masked.store.v{n}f32.p0")
            builder.call(fn, [args[2], ptr, ir.Constant(ir.IntType(32), 4), _mask(builder, args[3])])
            return context.get_dummy_value()

        return types.void(arr, idx, v, count), codegen

    @intrinsic
    def vloadi8(typingctx, arr, idx):
        """``arr[idx:idx + n]`` of an int8 array as float32 lanes (sign-extended and converted: x86
        ``vpmovsxbd`` + ``vcvtdq2ps``): a quarter of the float stream's bytes for weights that are small
        integers (a quantized recurrence's ``R``)."""
        def codegen(context, builder, sig, args):
            ptr = builder.gep(_data(context, builder, sig.args[0], args[0]), [args[1]])
            bv = builder.load(builder.bitcast(ptr, ir.PointerType(ir.VectorType(ir.IntType(8), n))), align=1)
            return builder.sitofp(bv, lvt)

        return vt(arr, idx), codegen

    @intrinsic
    def vkeep(typingctx, v, count):
        """``v`` with lanes ``count`` and beyond set to 0.0 (a select, so whatever they held, NaN included, is
        gone): a part-filled tile stored whole over columns that must stay zero, where ``vstoren``'s masked
        store (``vmaskmovps``) would cost several times a plain one (AMD)."""
        def codegen(context, builder, sig, args):
            return builder.select(_mask(builder, args[1]), args[0], ir.Constant(lvt, [0.0] * n))

        return vt(v, count), codegen

    @intrinsic
    def vbcast(typingctx, x):
        def codegen(context, builder, sig, args):
            v = context.cast(builder, args[0], sig.args[0], types.float32)
            undef = ir.Constant(lvt, ir.Undefined)
            ins = builder.insert_element(undef, v, ir.Constant(ir.IntType(32), 0))
            return builder.shuffle_vector(ins, undef, ir.Constant(ir.VectorType(ir.IntType(32), n), [0] * n))

        return vt(x), codegen

    @intrinsic
    def vzero(typingctx):
        def codegen(context, builder, sig, args):
            return ir.Constant(lvt, [0.0] * n)

        return vt(), codegen

    def _with_arity(codegen, nargs: int):
        """A vector-valued intrinsic of ``nargs`` (1 to 3) operands generated by ``codegen``."""
        if nargs == 1:
            @intrinsic
            def op1(typingctx, a):
                return vt(a), codegen

            return op1
        if nargs == 2:
            @intrinsic
            def op2(typingctx, a, b):
                return vt(a, b), codegen

            return op2

        @intrinsic
        def op3(typingctx, a, b, c):
            return vt(a, b, c), codegen

        return op3

    def _llvm_call(name: str, nargs: int):
        def codegen(context, builder, sig, cargs):
            fn = cgutils.get_or_insert_function(builder.module, ir.FunctionType(lvt, [lvt] * nargs),
                                                f"llvm.{name}.v{n}f32")
            return builder.call(fn, list(cargs))

        return _with_arity(codegen, nargs)

    def _range_mask(builder, lo, hi, lanes):
        i64 = ir.IntType(64)
        idx = ir.Constant(ir.VectorType(i64, lanes), list(range(lanes)))

        def splat(x):
            x = builder.sext(x, i64) if x.type.width < 64 else x
            v = builder.insert_element(ir.Constant(ir.VectorType(i64, lanes), ir.Undefined), x,
                                       ir.Constant(ir.IntType(32), 0))
            return builder.shuffle_vector(v, v, ir.Constant(ir.VectorType(ir.IntType(32), lanes), [0] * lanes))

        return builder.and_(builder.icmp_signed(">=", idx, splat(lo)), builder.icmp_signed("<", idx, splat(hi)))

    def _masked_load(builder, ptr, mask, lanes, fill=None):
        vty = ir.VectorType(ir.FloatType(), lanes)
        fty = ir.FunctionType(vty, [ptr.type, ir.IntType(32), ir.VectorType(ir.IntType(1), lanes), vty])
        fn = cgutils.get_or_insert_function(builder.module, fty, f"llvm.masked.load.v{lanes}f32.p0")
        if fill is None:
            passthru = ir.Constant(vty, [0.0] * lanes)
        else:
            v = builder.insert_element(ir.Constant(vty, ir.Undefined), fill, ir.Constant(ir.IntType(32), 0))
            passthru = builder.shuffle_vector(v, v, ir.Constant(ir.VectorType(ir.IntType(32), lanes), [0] * lanes))
        return builder.call(fn, [ptr, ir.Constant(ir.IntType(32), 4), mask, passthru])

    @intrinsic
    def vloadrf(typingctx, arr, idx, lo, hi, fill):
        """Like ``vloadr`` but lanes outside ``[lo, hi)`` hold ``fill`` (e.g. -inf for max pooling)."""
        def codegen(context, builder, sig, args):
            ptr = _ptr(context, builder, sig.args[0], args[0], args[1], n)
            f = context.cast(builder, args[4], sig.args[4], types.float32)
            return _masked_load(builder, ptr, _range_mask(builder, args[2], args[3], n), n, f)

        return vt(arr, idx, lo, hi, fill), codegen

    @intrinsic
    def vload2erf(typingctx, arr, idx, lo, hi, fill):
        """Like ``vload2er`` but lanes outside the range hold ``fill``."""
        def codegen(context, builder, sig, args):
            wide = _ptr(context, builder, sig.args[0], args[0], args[1], 2 * n)
            f = context.cast(builder, args[4], sig.args[4], types.float32)
            v = _masked_load(builder, wide, _range_mask(builder, args[2], args[3], 2 * n), 2 * n, f)
            return builder.shuffle_vector(v, v, ir.Constant(ir.VectorType(ir.IntType(32), n),
                                                            list(range(0, 2 * n, 2))))

        return vt(arr, idx, lo, hi, fill), codegen

    @intrinsic
    def vloadr(typingctx, arr, idx, lo, hi):
        """``buf[i + j]`` for lanes ``lo <= j < hi``, zero elsewhere; masked-off lanes are never read."""
        def codegen(context, builder, sig, args):
            ptr = _ptr(context, builder, sig.args[0], args[0], args[1], n)
            return _masked_load(builder, ptr, _range_mask(builder, args[2], args[3], n), n)

        return vt(arr, idx, lo, hi), codegen

    def _bits_mask(builder, bits):
        """The lane mask of an integer: lane ``j`` set where bit ``1 << j`` is."""
        if bits.type.width != n:
            bits = builder.trunc(bits, ir.IntType(n)) if bits.type.width > n else builder.zext(bits, ir.IntType(n))
        return builder.bitcast(bits, ir.VectorType(ir.IntType(1), n))

    @intrinsic
    def vloadm(typingctx, arr, idx, bits):
        """``buf[i + j]`` for the lanes ``j`` whose bit ``1 << j`` is set in the integer ``bits``, zero
        elsewhere; masked-off lanes are never read. A literal ``bits`` is a constant mask (AVX-512: one
        zero-masking load; all bits set: a plain load), for lane patterns no ``[lo, hi)`` range makes."""
        def codegen(context, builder, sig, args):
            ptr = _ptr(context, builder, sig.args[0], args[0], args[1], n)
            return _masked_load(builder, ptr, _bits_mask(builder, args[2]), n)

        return vt(arr, idx, bits), codegen

    @intrinsic
    def vload2er(typingctx, arr, idx, lo, hi):
        """Even elements of ``buf[i:i + 2n]`` whose element position e has ``lo <= e < hi``; others zero."""
        def codegen(context, builder, sig, args):
            wide = _ptr(context, builder, sig.args[0], args[0], args[1], 2 * n)
            v = _masked_load(builder, wide, _range_mask(builder, args[2], args[3], 2 * n), 2 * n)
            return builder.shuffle_vector(v, v, ir.Constant(ir.VectorType(ir.IntType(32), n),
                                                            list(range(0, 2 * n, 2))))

        return vt(arr, idx, lo, hi), codegen

    @intrinsic
    def vload2e(typingctx, arr, idx):
        """Every other element of ``buf[i:i + 2n]`` (a stride-2 load as two loads and one shuffle)."""
        def codegen(context, builder, sig, args):
            p0 = _ptr(context, builder, sig.args[0], args[0], args[1], n)
            data = _data(context, builder, sig.args[0], args[0])
            p1 = builder.bitcast(builder.gep(data, [builder.add(args[1], ir.Constant(args[1].type, n))]),
                                 p0.type)
            lo = builder.load(p0, align=4)
            hi = builder.load(p1, align=4)
            return builder.shuffle_vector(lo, hi, ir.Constant(ir.VectorType(ir.IntType(32), n),
                                                              list(range(0, 2 * n, 2))))

        return vt(arr, idx), codegen

    # stride-2 column pairs in each 128-bit lane's order (``vload2p``): lane 4k + e of the evens holds element
    # 4k + 2e of the first vector (e < 2) or 4k + 2(e - 2) of the second, one in-lane shuffle (``shufps``)
    # instead of an in-lane and a cross-lane one; ``vunpair`` restores the column order once per output vector
    pair_e = [(4 * (i // 4) + 2 * (i % 2)) + (n if i % 4 >= 2 else 0) for i in range(n)]
    pair_inv = [4 * ((c % (n // 2)) // 2) + c % 2 + (2 if c >= n // 2 else 0) for c in range(n)]

    def _pairs(context, builder, sig, lo, hi):
        """``(evens, odds)`` of the ``2n`` elements in ``lo`` and ``hi``, each in ``vload2p``'s lane order."""
        vecs = [builder.shuffle_vector(lo, hi, ir.Constant(ir.VectorType(ir.IntType(32), n), [m + p for m in pair_e]))
                for p in (0, 1)]
        return context.make_tuple(builder, sig.return_type, vecs)

    @intrinsic
    def vload2p(typingctx, arr, idx):
        """``buf[i:i + 2n]`` as ``(evens, odds)`` with one in-lane shuffle each: the columns of an output
        vector of a stride-2 row in a lane order of their own (``vunpair`` puts a result back in order)."""
        def codegen(context, builder, sig, args):
            p0 = _ptr(context, builder, sig.args[0], args[0], args[1], n)
            data = _data(context, builder, sig.args[0], args[0])
            p1 = builder.bitcast(builder.gep(data, [builder.add(args[1], ir.Constant(args[1].type, n))]),
                                 p0.type)
            return _pairs(context, builder, sig, builder.load(p0, align=4), builder.load(p1, align=4))

        return types.UniTuple(vt, 2)(arr, idx), codegen

    @intrinsic
    def vload2pr(typingctx, arr, idx, lo, hi):
        """``vload2p`` of the elements at positions ``lo <= e < hi`` of ``buf[i:i + 2n]``, zeros elsewhere
        (masked-off elements are never read)."""
        def codegen(context, builder, sig, args):
            wide = _ptr(context, builder, sig.args[0], args[0], args[1], 2 * n)
            v = _masked_load(builder, wide, _range_mask(builder, args[2], args[3], 2 * n), 2 * n)
            halves = [builder.shuffle_vector(v, v, ir.Constant(ir.VectorType(ir.IntType(32), n),
                                                               list(range(h * n, h * n + n)))) for h in (0, 1)]
            return _pairs(context, builder, sig, *halves)

        return types.UniTuple(vt, 2)(arr, idx, lo, hi), codegen

    @intrinsic
    def vunpair(typingctx, v):
        """A vector in ``vload2p``'s lane order put back in column order (``vpermpd`` on AVX2)."""
        def codegen(context, builder, sig, args):
            return builder.shuffle_vector(args[0], args[0], ir.Constant(ir.VectorType(ir.IntType(32), n), pair_inv))

        return vt(v), codegen

    @intrinsic
    def vload4t(typingctx, arr, idx):
        """``buf[i:i + 4n]`` de-interleaved into 4 vectors: vector k holds elements k, k + 4, ... (the
        columns 0-3 of n Winograd tiles side by side; one load, the shuffles shared)."""
        def codegen(context, builder, sig, args):
            v = builder.load(_ptr(context, builder, sig.args[0], args[0], args[1], 4 * n), align=4)
            parts = [builder.shuffle_vector(v, v, ir.Constant(ir.VectorType(ir.IntType(32), n),
                                                              list(range(k, 4 * n, 4)))) for k in range(4)]
            return context.make_tuple(builder, sig.return_type, parts)

        return types.UniTuple(vt, 4)(arr, idx), codegen

    @intrinsic
    def vtrq(typingctx, a, b, c, d):
        """``(a, b, c, d)`` transposed as 4x4 blocks within each 128-bit group of lanes: out ``k`` lane
        ``4 q + j`` = input ``j`` lane ``4 q + k``. Four vectors of ``n / 4`` Winograd tiles of 4 columns in a
        row become the tiles' columns (tile ``(n / 4) j + q`` in lane ``4 q + j``), and back: it is its own
        inverse. Eight in-group unpacks (x86 ``unpck{l,h}ps``/``unpck{l,h}pd``, NEON ``zip``), where a
        stride-4 de-interleave (``vload4t``) crosses the groups (AVX2: ``vpermps`` and blends)."""
        def codegen(context, builder, sig, args):
            return context.make_tuple(builder, sig.return_type, _trq(builder, args))

        return types.UniTuple(vt, 4)(a, b, c, d), codegen

    def _trq(builder, vecs) -> list:
        """``vtrq``'s shuffles: four vectors' 4x4 blocks of each 128-bit group transposed."""
        def shuf(x, y, pick):
            return builder.shuffle_vector(x, y, ir.Constant(ir.VectorType(ir.IntType(32), n),
                                                            [i for q in range(0, n, 4) for i in pick(q)]))

        a_, b_, c_, d_ = vecs
        lo0 = shuf(a_, b_, lambda q: (q, n + q, q + 1, n + q + 1))  # a0 b0 a1 b1
        hi0 = shuf(a_, b_, lambda q: (q + 2, n + q + 2, q + 3, n + q + 3))  # a2 b2 a3 b3
        lo1 = shuf(c_, d_, lambda q: (q, n + q, q + 1, n + q + 1))  # c0 d0 c1 d1
        hi1 = shuf(c_, d_, lambda q: (q + 2, n + q + 2, q + 3, n + q + 3))  # c2 d2 c3 d3
        return [shuf(x, y, lambda q: (q + h, q + h + 1, n + q + h, n + q + h + 1))
                for x, y in ((lo0, lo1), (hi0, hi1)) for h in (0, 2)]

    @intrinsic
    def vscatter4t(typingctx, arr, idx, stride, a, b, c, d):
        """Lane ``j`` of ``a, b, c, d`` (four consecutive pixels of ``n`` channels) at ``buf[i + j * stride
        + 0..3]``: the register tile's ``n x 4`` block stored as 4-element rows of ``n`` channel planes.
        ``vtrq``'s in-group transposes, then one 128-bit store per lane (``vscatter``: one store and one lane
        extract per element, AVX2 having no scatter)."""
        def codegen(context, builder, sig, args):
            quad = ir.VectorType(ir.FloatType(), 4)
            for k, part in enumerate(_trq(builder, args[3:])):
                for q in range(0, n, 4):  # lanes 4q..4q+3 of part k: channel q + k's four pixels
                    row = builder.shuffle_vector(part, part, ir.Constant(ir.VectorType(ir.IntType(32), 4),
                                                                         list(range(q, q + 4))))
                    builder.store(row, _vptr(context, builder, sig.args[0], args[0],
                                             _row_index(context, builder, sig, args, q + k), quad), align=4)
            return context.get_dummy_value()

        return types.void(arr, idx, stride, a, b, c, d), codegen

    @intrinsic
    def vinsert(typingctx, v, lane, x):
        """``v`` with lane ``lane`` set to ``x``."""
        def codegen(context, builder, sig, args):
            val = context.cast(builder, args[2], sig.args[2], types.float32)
            return builder.insert_element(args[0], val, builder.trunc(args[1], ir.IntType(32))
                                          if args[1].type.width > 32 else args[1])

        return vt(v, lane, x), codegen

    def _lane_ptrs(context, builder, arrty, arr, idx, stride):
        data = _data(context, builder, arrty, arr)
        i64 = ir.IntType(64)
        base = builder.sext(idx, i64) if idx.type.width < 64 else idx
        st = builder.sext(stride, i64) if stride.type.width < 64 else stride
        lanes = ir.Constant(ir.VectorType(i64, n), list(range(n)))
        sv = builder.insert_element(ir.Constant(ir.VectorType(i64, n), ir.Undefined), st,
                                    ir.Constant(ir.IntType(32), 0))
        sv = builder.shuffle_vector(sv, sv, ir.Constant(ir.VectorType(ir.IntType(32), n), [0] * n))
        bv = builder.insert_element(ir.Constant(ir.VectorType(i64, n), ir.Undefined), base,
                                    ir.Constant(ir.IntType(32), 0))
        bv = builder.shuffle_vector(bv, bv, ir.Constant(ir.VectorType(ir.IntType(32), n), [0] * n))
        offs = builder.add(bv, builder.mul(lanes, sv))
        # llvmlite's gep takes no vector index: form the lane addresses as integers
        four = ir.Constant(ir.VectorType(i64, n), [4] * n)
        base_addr = builder.ptrtoint(data, i64)
        av = builder.insert_element(ir.Constant(ir.VectorType(i64, n), ir.Undefined), base_addr,
                                    ir.Constant(ir.IntType(32), 0))
        av = builder.shuffle_vector(av, av, ir.Constant(ir.VectorType(ir.IntType(32), n), [0] * n))
        addrs = builder.add(av, builder.mul(offs, four))
        return builder.inttoptr(addrs, ir.VectorType(ir.PointerType(ir.FloatType()), n))

    @intrinsic
    def vscatter(typingctx, arr, idx, stride, v):
        """Store lane j of ``v`` at ``buf[i + j * stride]`` (a column of a row-major block)."""
        def codegen(context, builder, sig, args):
            ptrs = _lane_ptrs(context, builder, sig.args[0], args[0], args[1], args[2])
            mask = ir.Constant(ir.VectorType(ir.IntType(1), n), [1] * n)
            fty = ir.FunctionType(ir.VoidType(), [lvt, ptrs.type, ir.IntType(32), mask.type])
            fn = cgutils.get_or_insert_function(builder.module, fty, f"llvm.masked.scatter.v{n}f32.v{n}p0")
            builder.call(fn, [args[3], ptrs, ir.Constant(ir.IntType(32), 4), mask])
            return context.get_dummy_value()

        return types.void(arr, idx, stride, v), codegen

    @intrinsic
    def vgather(typingctx, arr, idx, stride):
        """Lane j is ``buf[i + j * stride]``."""
        def codegen(context, builder, sig, args):
            ptrs = _lane_ptrs(context, builder, sig.args[0], args[0], args[1], args[2])
            mask = ir.Constant(ir.VectorType(ir.IntType(1), n), [1] * n)
            fty = ir.FunctionType(lvt, [ptrs.type, ir.IntType(32), mask.type, lvt])
            fn = cgutils.get_or_insert_function(builder.module, fty, f"llvm.masked.gather.v{n}f32.v{n}p0")
            return builder.call(fn, [ptrs, ir.Constant(ir.IntType(32), 4), mask, ir.Constant(lvt, ir.Undefined)])

        return vt(arr, idx, stride), codegen

    @intrinsic
    def vscattern(typingctx, arr, idx, stride, v, count):
        """``vscatter`` of the first ``count`` lanes only (a tile's last, partial channel vector)."""
        def codegen(context, builder, sig, args):
            ptrs = _lane_ptrs(context, builder, sig.args[0], args[0], args[1], args[2])
            mask = _mask(builder, args[4])
            fty = ir.FunctionType(ir.VoidType(), [lvt, ptrs.type, ir.IntType(32), mask.type])
            fn = cgutils.get_or_insert_function(builder.module, fty, f"llvm.masked.scatter.v{n}f32.v{n}p0")
            builder.call(fn, [args[3], ptrs, ir.Constant(ir.IntType(32), 4), mask])
            return context.get_dummy_value()

        return types.void(arr, idx, stride, v, count), codegen

    @intrinsic
    def vgathern(typingctx, arr, idx, stride, count):
        """``vgather`` of the first ``count`` lanes (the others zero, their addresses never read)."""
        def codegen(context, builder, sig, args):
            ptrs = _lane_ptrs(context, builder, sig.args[0], args[0], args[1], args[2])
            mask = _mask(builder, args[3])
            fty = ir.FunctionType(lvt, [ptrs.type, ir.IntType(32), mask.type, lvt])
            fn = cgutils.get_or_insert_function(builder.module, fty, f"llvm.masked.gather.v{n}f32.v{n}p0")
            return builder.call(fn, [ptrs, ir.Constant(ir.IntType(32), 4), mask, ir.Constant(lvt, [0.0] * n)])

        return vt(arr, idx, stride, count), codegen

    @intrinsic
    def vziplo(typingctx, a, b):
        """The low halves of ``a`` and ``b`` interleaved: ``a0 b0 a1 b1 ...`` (a stride-2 output row)."""
        def codegen(context, builder, sig, args):
            return builder.shuffle_vector(args[0], args[1], ir.Constant(
                ir.VectorType(ir.IntType(32), n), [i // 2 + (i % 2) * n for i in range(n)]))

        return vt(a, b), codegen

    @intrinsic
    def vziphi(typingctx, a, b):
        """The high halves of ``a`` and ``b`` interleaved (``vziplo``'s second half)."""
        def codegen(context, builder, sig, args):
            return builder.shuffle_vector(args[0], args[1], ir.Constant(
                ir.VectorType(ir.IntType(32), n), [n // 2 + i // 2 + (i % 2) * n for i in range(n)]))

        return vt(a, b), codegen

    def _arith(method: str):
        """A lane-wise binary instruction (``builder.fadd``, ``fmul``, ``fdiv``)."""
        def codegen(context, builder, sig, args):
            return getattr(builder, method)(args[0], args[1])

        @intrinsic
        def op2(typingctx, a, b):
            return vt(a, b), codegen

        return op2

    @intrinsic
    def vhsum(typingctx, a):
        """The sum of the lanes (in lane order), as a float32 scalar."""
        def codegen(context, builder, sig, args):
            fty = ir.FunctionType(ir.FloatType(), [ir.FloatType(), lvt])
            fn = cgutils.get_or_insert_function(builder.module, fty, f"llvm.vector.reduce.fadd.v{n}f32")
            return builder.call(fn, [ir.Constant(ir.FloatType(), 0.0), args[0]])

        return types.float32(a), codegen

    @intrinsic
    def vhmax(typingctx, a):
        """The largest lane, as a float32 scalar."""
        def codegen(context, builder, sig, args):
            fty = ir.FunctionType(ir.FloatType(), [lvt])
            fn = cgutils.get_or_insert_function(builder.module, fty, f"llvm.vector.reduce.fmax.v{n}f32")
            return builder.call(fn, [args[0]])

        return types.float32(a), codegen

    def _reduce(name: str, flags: tuple[str, ...], doc: str):
        """A lane reduction as a tree (``flags``: reassociation / no NaN allowed), not ``vhsum``'s lane-order
        chain of dependent adds: a short row's sum or max in ~3 steps instead of ``n``."""
        def codegen(context, builder, sig, args):
            f32 = ir.FloatType()
            start = [ir.Constant(f32, 0.0)] if name == "fadd" else []
            fty = ir.FunctionType(f32, [f32] * len(start) + [lvt])
            fn = cgutils.get_or_insert_function(builder.module, fty, f"llvm.vector.reduce.{name}.v{n}f32")
            return builder.call(fn, [*start, args[0]], fastmath=flags)

        @intrinsic
        def red(typingctx, a):
            return types.float32(a), codegen

        red.__doc__ = doc
        return red

    def _maxf_codegen(context, builder, sig, args):
        """``a > b ? a : b`` lane-wise: one ``maxps`` on x86 (``vmax`` is ``maxnum``: three); a NaN ``b``
        is taken, a NaN ``a`` is not."""
        a, b = args
        return builder.select(builder.fcmp_ordered(">", a, b), a, b)

    def _minf_codegen(context, builder, sig, args):
        """``a < b ? a : b`` lane-wise: one ``minps`` on x86 (``vmin`` is ``minnum``: three)."""
        a, b = args
        return builder.select(builder.fcmp_ordered("<", a, b), a, b)

    def _math(fn, nparams: int):
        """A ``simd_math`` function as an intrinsic: the vector, then ``nparams`` float scalars."""
        def codegen(context, builder, sig, args):
            extra = [context.cast(builder, a, t, types.float32) for a, t in zip(args[1:], sig.args[1:])]
            return fn(VecMath(builder, n), args[0], *extra)

        return _with_arity(codegen, nparams + 1)

    @intrinsic
    def vprelu(typingctx, x, slope):
        """``x`` where ``x >= 0``, else ``x * slope`` lane by lane (LeakyRelu, PRelu)."""
        def codegen(context, builder, sig, args):
            return VecMath(builder, n).prelu(args[0], args[1])

        return vt(x, slope), codegen

    math_ops = {f"{name}{n}": _math(fn, k) for name, (fn, k) in FUNCTIONS.items()}
    tr = transposed_load_store(vt, lvt, n) if n in WIDTHS else None
    return {
        **math_ops, f"vprelu{n}": vprelu, f"vhmax{n}": vhmax, f"vsub{n}": _arith("fsub"),
        f"vhsum{n}": vhsum, f"vhsumt{n}": _reduce("fadd", ("reassoc",), "The sum of the lanes, as a tree."),
        f"vhmaxt{n}": _reduce("fmax", ("nnan",), "The largest lane (NaN lanes: any result), as a tree."),
        f"vmaxf{n}": _with_arity(_maxf_codegen, 2), f"vminf{n}": _with_arity(_minf_codegen, 2),
        f"vload{n}": vload, f"vstore{n}": vstore, f"vloadn{n}": vloadn, f"vstoren{n}": vstoren,
        f"vkeep{n}": vkeep,
        f"vbcast{n}": vbcast, f"vzero{n}": vzero, f"vfma{n}": _llvm_call("fma", 3),
        f"vmax{n}": _llvm_call("maxnum", 2), f"vmin{n}": _llvm_call("minnum", 2),
        f"vmaxnan{n}": _llvm_call("maximum", 2),
        f"vadd{n}": _arith("fadd"), f"vmul{n}": _arith("fmul"), f"vdiv{n}": _arith("fdiv"),
        f"vload2e{n}": vload2e, f"vload2p{n}": vload2p, f"vload2pr{n}": vload2pr, f"vunpair{n}": vunpair,
        f"vload4t{n}": vload4t, f"vtrq{n}": vtrq, f"vinsert{n}": vinsert,
        f"vloadr{n}": vloadr, f"vload2er{n}": vload2er, f"vloadrf{n}": vloadrf, f"vload2erf{n}": vload2erf,
        f"vloadm{n}": vloadm,
        f"vscatter{n}": vscatter, f"vscatter4t{n}": vscatter4t, f"vgather{n}": vgather,
        f"vscattern{n}": vscattern, f"vgathern{n}": vgathern, f"vziplo{n}": vziplo, f"vziphi{n}": vziphi,
        f"vloadi8{n}": vloadi8,
        **({f"vloadtr{n}": tr[0], f"vstoretr{n}": tr[1]} if tr else {}),
    }


for _n in LANES:
    globals().update(_make(_n))


@intrinsic
def prefetch(typingctx, arr, idx):
    """A hint to fetch the cache line holding ``arr[idx]`` into L2 (``llvm.prefetch``, read, locality 2:
    x86 ``prefetcht1``); never faults, even past the end of ``arr``. For streams the hardware prefetcher
    does not start early enough (a packed GEMM's next panel, read from DRAM)."""
    def codegen(context, builder, sig, args):
        ptr = builder.gep(_data(context, builder, sig.args[0], args[0]), [args[1]])
        i32 = ir.IntType(32)
        fty = ir.FunctionType(ir.VoidType(), [ptr.type, i32, i32, i32])
        fn = cgutils.get_or_insert_function(builder.module, fty, "llvm.prefetch.p0")
        builder.call(fn, [ptr, ir.Constant(i32, 0), ir.Constant(i32, 2), ir.Constant(i32, 1)])
        return context.get_dummy_value()

    return types.void(arr, idx), codegen


__all__ = ["Vec", "WIDTHS", "LANES", "host_vector_width", "prefetch"] + [f"{op}{n}" for n in LANES for op in (
    "vload", "vstore", "vloadn", "vstoren", "vkeep", "vbcast", "vzero", "vfma", "vmax", "vmin", "vadd", "vmul",
    "vload2e", "vload2p", "vload2pr", "vunpair",
    "vload4t", "vtrq", "vinsert", "vloadr", "vloadm", "vload2er", "vloadrf", "vload2erf", "vscatter", "vgather",
    "vscatter4t", "vscattern", "vgathern", "vhsum", "vdiv",
    "vhmax", "vhsumt", "vhmaxt", "vmaxf", "vminf", "vmaxnan", "vsub", "vprelu", "vziplo", "vziphi", "vloadi8",
    *FUNCTIONS)] + [
    f"{op}{n}" for n in WIDTHS for op in ("vloadtr", "vstoretr")]
