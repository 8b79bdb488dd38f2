"""bf16 intrinsics for the ``precision="bf16"`` kernels: bf16 pairs in ``<n x i32>`` lanes, fp32 accumulators.

    vbf16pair{n}(lo, hi)            two ``<n x float>`` rounded to bf16 (round to nearest even, NaN kept a
                                    quiet NaN), packed per i32 lane: ``lo``'s bf16 in bits 0-15, ``hi``'s in
                                    bits 16-31 (the operand layout of ``vdpbf16ps`` and BFDOT)
    vbf16load{n}(buf, i)            ``n`` 32-bit lanes (bf16 pairs) at element ``i`` of a 4-byte buffer
    vbf16store{n}(buf, i, v)        the ``n`` lanes of ``v`` to element ``i`` of a 4-byte buffer
    vbf16bcast{n}(buf, i)           the 32-bit element ``buf[i]`` (one bf16 pair) in every lane
    vbf16bcast2_{n}(lo, hi)         two float scalars rounded to one bf16 pair (as ``vbf16pair``), in every lane
    vdotbf16_{n}(acc, a, b)         ``acc`` + per fp32 lane ``a.hi * b.hi`` + ``a.lo * b.lo`` (a Vec(n))

``vdotbf16`` is chosen per machine (``FORMS``, the first that applies to the LLVM module's triple and the
code generator's features, as ``simd_int.ivdot`` is): x86 with AVX512_BF16 ``vdpbf16ps``
(``llvm.x86.avx512bf16.dpbf16ps.{128,256,512}``; the 128/256-bit forms also need AVX512VL), aarch64 with
``+bf16`` ``BFDOT`` (``llvm.aarch64.neon.bfdot``, 128-bit vectors), elsewhere the portable form: each bf16
widened to fp32 by a 16-bit shift (exact), then ``fma(a.hi, b.hi, acc)`` and ``fma(a.lo, b.lo, .)``.

Semantics. A product of two bf16 values (8-bit significands) has at most 16 significant bits, so it is exact
in fp32 and each FMA rounds once, like the add of Intel's pseudo-code for VDPBF16PS
(``srcdest.fp32[i] += make_fp32(src1.bf16[2i+1]) * make_fp32(src2.bf16[2i+1])``, then the same for
``2i+0``, "DAZ, FTZ, RNE, SAE" ignoring MXCSR): the portable form computes Intel's pseudo-code result
except that VDPBF16PS treats denormal inputs as zero and flushes denormal results to zero, which the
portable form does not. BFDOT (Armv8.6, without FEAT_EBF16 or with FPCR.EBF = 0) instead sums the two
(exact) products first and rounds that sum and then the accumulation, both with round-to-odd, denormals
flushed: its result may differ from the portable one by a few fp32 roundings per step, at most about
2^-22 of ``|acc| + |a.hi * b.hi| + |a.lo * b.lo|``, far below the bf16 rounding of the inputs (2^-9
relative each), which is what the tests bound.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
from llvmlite import ir
from numba import types
from numba.core import cgutils
from numba.extending import intrinsic

from cnnjit.ir.errors import UnsupportedHardwareError

from .simd import Vec, _data, load_store
from .simd_int import IVec, _features, _machine, _splat

#: vector lengths the bf16 intrinsics exist for (32: a register tile row of two AVX-512 / four AVX2 vectors)
WIDTHS = (4, 8, 16, 32)
_I32 = ir.IntType(32)
_F32 = ir.FloatType()
X86 = ("x86_64", "i386", "i686")
AARCH64 = ("aarch64", "arm64")


class BFloatType(ir.types._BaseFloatType):
    """LLVM's ``bfloat`` (llvmlite has none): the element type of the bf16 intrinsics' operands."""

    null = "0.0"
    intrinsic_name = "bf16"

    def __str__(self) -> str:
        return "bfloat"


BFloatType._create_instance()


def has_bf16() -> bool:
    """Whether this host runs ``vdpbf16ps`` (AVX512_BF16): what ``precision="bf16"`` needs."""
    return bool(_features().get("avx512bf16"))


def require_bf16() -> None:
    """Refuse ``precision="bf16"`` on a host without AVX512_BF16, naming the feature and the way out."""
    if not has_bf16():
        raise UnsupportedHardwareError(
            "precision='bf16' needs the CPU feature avx512_bf16 (the vdpbf16ps instruction), which this host "
            "lacks; precision='bf16-emulated' computes the same bf16 arithmetic with fp32 FMAs (slower than fp32: "
            "for accuracy checks)")


def _chunks(builder, vals: list, width: int, n: int, emit: Callable) -> ir.Value:
    """``emit(*parts)`` on each ``width``-lane slice of the ``n``-lane values ``vals``, the results joined."""
    if width >= n:
        return emit(*vals)
    outs = []
    for s in range(0, n, width):
        idx = ir.Constant(ir.VectorType(_I32, width), list(range(s, s + width)))
        outs.append(emit(*[builder.shuffle_vector(v, v, idx) for v in vals]))
    while len(outs) > 1:
        k = outs[0].type.count
        idx = ir.Constant(ir.VectorType(_I32, 2 * k), list(range(2 * k)))
        outs = [builder.shuffle_vector(outs[i], outs[i + 1], idx) for i in range(0, len(outs), 2)]
    return outs[0]


def _native_dot(name: str, width: int) -> Callable:
    """A dot form of one native instruction on ``width`` fp32 lanes: ``name(acc, <2w x bfloat> a, b)``."""
    def emit(builder, acc, a, b, n: int):
        def one(c, x, y):
            bt = ir.VectorType(BFloatType(), 2 * c.type.count)
            fn = cgutils.get_or_insert_function(builder.module, ir.FunctionType(c.type, [c.type, bt, bt]), name)
            return builder.call(fn, [c, builder.bitcast(x, bt), builder.bitcast(y, bt)])

        return _chunks(builder, [acc, a, b], width, n, one)

    return emit


def _halves(builder, v, n: int) -> tuple[ir.Value, ir.Value]:
    """The low and high bf16 of every lane of ``v`` as exact fp32 values."""
    vt, ft = ir.VectorType(_I32, n), ir.VectorType(_F32, n)
    lo = builder.shl(v, ir.Constant(vt, [16] * n))
    hi = builder.and_(v, ir.Constant(vt, [-0x10000] * n))
    return builder.bitcast(lo, ft), builder.bitcast(hi, ft)


def _portable_dot(builder, acc, a, b, n: int):
    """``fma(a.lo, b.lo, fma(a.hi, b.hi, acc))`` on the widened halves (Intel's order)."""
    (alo, ahi), (blo, bhi) = _halves(builder, a, n), _halves(builder, b, n)
    fn = cgutils.get_or_insert_function(builder.module, ir.FunctionType(acc.type, [acc.type] * 3),
                                        f"llvm.fma.v{n}f32")
    return builder.call(fn, [alo, blo, builder.call(fn, [ahi, bhi, acc])])


@dataclass(frozen=True)
class DotForm:
    """One lowering of ``vdotbf16``: ``applies(arch, features, n)``, ``emit(builder, acc, a, b, n)``."""

    name: str
    applies: Callable[[str, frozenset, int], bool]
    emit: Callable


def _x86_bf16(width: int) -> Callable[[str, frozenset, int], bool]:
    return lambda arch, f, n: arch in X86 and "avx512bf16" in f and n % width == 0 and (width == 16 or "avx512vl" in f)


#: the forms of ``vdotbf16``, first applicable wins (the portable one always applies)
FORMS = (
    DotForm("vdpbf16ps.512", _x86_bf16(16), _native_dot("llvm.x86.avx512bf16.dpbf16ps.512", 16)),
    DotForm("vdpbf16ps.256", _x86_bf16(8), _native_dot("llvm.x86.avx512bf16.dpbf16ps.256", 8)),
    DotForm("vdpbf16ps.128", _x86_bf16(4), _native_dot("llvm.x86.avx512bf16.dpbf16ps.128", 4)),
    DotForm("bfdot", lambda arch, f, n: arch in AARCH64 and "bf16" in f and n % 4 == 0,
            _native_dot("llvm.aarch64.neon.bfdot.v4f32.v8bf16", 4)),
    DotForm("portable", lambda arch, f, n: True, _portable_dot),
)


def dot_form(arch: str, features: frozenset, n: int) -> DotForm:
    """The ``vdotbf16`` lowering for a machine (``arch``, enabled ``features``) at ``n`` lanes."""
    return next(f for f in FORMS if f.applies(arch, features, n))


def round_pair_ir(builder, lo, hi, n: int):
    """``lo`` and ``hi`` rounded to bf16 (nearest even; a NaN becomes the quiet NaN 0x7FC0) and packed:
    ``lo`` in bits 0-15, ``hi`` in bits 16-31 of every i32 lane."""
    vt = ir.VectorType(_I32, n)

    def rne(x):
        bits = builder.bitcast(x, vt)
        odd = builder.and_(builder.lshr(bits, ir.Constant(vt, [16] * n)), ir.Constant(vt, [1] * n))
        r = builder.add(builder.add(bits, ir.Constant(vt, [0x7FFF] * n)), odd)
        r = builder.and_(r, ir.Constant(vt, [-0x10000] * n))
        return builder.select(builder.fcmp_unordered("uno", x, x), ir.Constant(vt, [0x7FC00000] * n), r)

    return builder.or_(builder.lshr(rne(lo), ir.Constant(vt, [16] * n)), rne(hi))


def bf16_pairs(w: np.ndarray) -> np.ndarray:
    """A float matrix (rows x K) as bf16 pairs of consecutive columns (rounded as ``round_pair_ir`` does;
    a zero column past an odd ``K``): uint32, rows x ceil(K / 2), column ``2k`` in the low half."""
    w = np.asarray(w, np.float32)
    if w.shape[1] % 2:
        w = np.concatenate([w, np.zeros((w.shape[0], 1), np.float32)], axis=1)
    bits = w.view(np.uint32).astype(np.uint64)
    r = ((bits + 0x7FFF + ((bits >> 16) & 1)) >> 16) & 0xFFFF
    r = np.where(np.isnan(w), 0x7FC0, r).astype(np.uint32)
    return r[:, 0::2] | (r[:, 1::2] << 16)


def _make(n: int) -> dict[str, object]:
    vt, ft = IVec(n), Vec(n)

    @intrinsic
    def vbf16pair(typingctx, lo, hi):
        def codegen(context, builder, sig, args):
            return round_pair_ir(builder, args[0], args[1], n)

        return vt(lo, hi), codegen

    vbf16load, vbf16store = load_store(vt, ir.VectorType(_I32, n))

    @intrinsic
    def vbf16bcast(typingctx, arr, idx):
        def codegen(context, builder, sig, args):
            p = builder.bitcast(builder.gep(_data(context, builder, sig.args[0], args[0]), [args[1]]),
                                ir.PointerType(_I32))
            return _splat(builder, builder.load(p, align=4), n)

        return vt(arr, idx), codegen

    @intrinsic
    def vbf16bcast2(typingctx, lo, hi):
        def codegen(context, builder, sig, args):
            one = [_splat(builder, context.cast(builder, v, t, types.float32), 1) for v, t in zip(args, sig.args)]
            pair = builder.extract_element(round_pair_ir(builder, *one, 1), ir.Constant(_I32, 0))
            return _splat(builder, pair, n)

        return vt(lo, hi), codegen

    @intrinsic
    def vdotbf16(typingctx, acc, a, b):
        def codegen(context, builder, sig, args):
            arch, feats = _machine(context, builder)
            return dot_form(arch, feats, n).emit(builder, *args, n)

        return ft(acc, a, b), codegen

    return {f"vbf16pair{n}": vbf16pair, f"vbf16load{n}": vbf16load, f"vbf16store{n}": vbf16store,
            f"vbf16bcast{n}": vbf16bcast, f"vbf16bcast2_{n}": vbf16bcast2, f"vdotbf16_{n}": vdotbf16}


for _n in WIDTHS:
    globals().update(_make(_n))

__all__ = ["WIDTHS", "FORMS", "dot_form", "has_bf16", "require_bf16", "bf16_pairs"] + [
    f"{op}{n}" for n in WIDTHS
    for op in ("vbf16pair", "vbf16load", "vbf16store", "vbf16bcast", "vbf16bcast2_", "vdotbf16_")]
