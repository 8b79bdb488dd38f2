"""Explicit-SIMD QuantizeLinear / DequantizeLinear of 8-bit tensors: float32 lanes <-> u8/i8 bytes.

    ivq16(yb, i, v, s, zp, lo, hi)          yb[i:i+16] = clip(round_half_even(v / s) + zp, lo, hi) as bytes
    ivqn16(yb, i, v, s, zp, lo, hi, cnt)    the same for the first cnt lanes (masked store; tails)
    ivdq16(xb, i, zp, s)                    float32((xb[i:i+16] - zp) * s) as a float vector (u8 zero-,
                                            i8 sign-extended)
    ivdqn16(xb, i, zp, s, cnt)              the same of the first cnt bytes (masked load; lanes past cnt
                                            hold -zp * s)

Both follow onnxruntime's MLAS kernels bit for bit: QuantizeLinear divides in float32 (``vdivps``, not a
multiply by the reciprocal), clamps to ``[lo - zp, hi - zp]`` in float with compare + select (so NaN goes
to ``lo``, +-inf to ``hi`` / ``lo``), rounds half to even (``llvm.rint``: the default rounding mode) and
adds the zero point as an integer; clamping before rounding equals ONNX's saturation after it because the
bounds are integers. DequantizeLinear is ``float32(int32(x) - zp) * s``, which is the float64 product of the
scalar kernel rounded once (a 9-bit integer times a 24-bit mantissa is exact in float64). Widths 4, 8, 16.
"""

from __future__ import annotations

from llvmlite import ir
from numba import types
from numba.core import cgutils
from numba.extending import intrinsic

from .simd import Vec
from .simd_int import WIDTHS, _addr, _i32, _lane_mask, _splat

_I32 = ir.IntType(32)
_I8 = ir.IntType(8)
_F32 = ir.FloatType()


def _f32(context, builder, val, ty):
    return context.cast(builder, val, ty, types.float32)


def _make(n: int) -> dict[str, object]:
    ivt, fvt, bvt = ir.VectorType(_I32, n), ir.VectorType(_F32, n), ir.VectorType(_I8, n)
    mvt = ir.VectorType(ir.IntType(1), n)

    def quantized(context, builder, sig, args):
        """The bytes of ``args[2] / s`` (``args[3:7]`` = s, zp, lo, hi) rounded, clamped and offset."""
        s = _splat(builder, _f32(context, builder, args[3], sig.args[3]), n)
        zp, lo, hi = (_i32(context, builder, args[k], sig.args[k]) for k in (4, 5, 6))
        f = builder.fdiv(args[2], s)
        flo = _splat(builder, builder.sitofp(builder.sub(lo, zp), _F32), n)
        fhi = _splat(builder, builder.sitofp(builder.sub(hi, zp), _F32), n)
        f = builder.select(builder.fcmp_ordered(">", f, flo), f, flo)  # NaN -> lo - zp, as MLAS's maxps
        f = builder.select(builder.fcmp_ordered("<", f, fhi), f, fhi)
        rint = cgutils.get_or_insert_function(builder.module, ir.FunctionType(fvt, [fvt]), f"llvm.rint.v{n}f32")
        i = builder.add(builder.fptosi(builder.call(rint, [f]), ivt), _splat(builder, zp, n))
        return builder.trunc(i, bvt)

    @intrinsic
    def ivq(typingctx, yarr, yidx, v, s, zp, lo, hi):
        def codegen(context, builder, sig, args):
            ptr = _addr(context, builder, sig.args[0], args[0], args[1], bvt)
            builder.store(quantized(context, builder, sig, args), ptr, align=1)
            return context.get_dummy_value()

        return types.void(yarr, yidx, v, s, zp, lo, hi), codegen

    @intrinsic
    def ivqn(typingctx, yarr, yidx, v, s, zp, lo, hi, count):
        def codegen(context, builder, sig, args):
            ptr = _addr(context, builder, sig.args[0], args[0], args[1], bvt)
            fty = ir.FunctionType(ir.VoidType(), [bvt, ptr.type, _I32, mvt])
            st = cgutils.get_or_insert_function(builder.module, fty, f"llvm.masked.store.v{n}i8.p0")
            builder.call(st, [quantized(context, builder, sig, args), ptr, ir.Constant(_I32, 1),
                              _lane_mask(builder, args[7], n)])
            return context.get_dummy_value()

        return types.void(yarr, yidx, v, s, zp, lo, hi, count), codegen

    def dequantized(context, builder, sig, args, bytes_):
        """``float32(ext(bytes_) - zp) * s`` (``args[2:4]`` = zp, s; ``args[0]``'s dtype picks the extension)."""
        wide = builder.sext(bytes_, ivt) if sig.args[0].dtype == types.int8 else builder.zext(bytes_, ivt)
        zp = _splat(builder, _i32(context, builder, args[2], sig.args[2]), n)
        s = _splat(builder, _f32(context, builder, args[3], sig.args[3]), n)
        return builder.fmul(builder.sitofp(builder.sub(wide, zp), fvt), s)

    @intrinsic
    def ivdq(typingctx, xarr, xidx, zp, s):
        def codegen(context, builder, sig, args):
            bytes_ = builder.load(_addr(context, builder, sig.args[0], args[0], args[1], bvt), align=1)
            return dequantized(context, builder, sig, args, bytes_)

        return Vec(n)(xarr, xidx, zp, s), codegen

    @intrinsic
    def ivdqn(typingctx, xarr, xidx, zp, s, count):
        def codegen(context, builder, sig, args):
            ptr = _addr(context, builder, sig.args[0], args[0], args[1], bvt)
            fty = ir.FunctionType(bvt, [ptr.type, _I32, mvt, bvt])
            fn = cgutils.get_or_insert_function(builder.module, fty, f"llvm.masked.load.v{n}i8.p0")
            bytes_ = builder.call(fn, [ptr, ir.Constant(_I32, 1), _lane_mask(builder, args[4], n),
                                       ir.Constant(bvt, [0] * n)])
            return dequantized(context, builder, sig, args, bytes_)

        return Vec(n)(xarr, xidx, zp, s, count), codegen

    return {f"ivq{n}": ivq, f"ivqn{n}": ivqn, f"ivdq{n}": ivdq, f"ivdqn{n}": ivdqn}


for _n in WIDTHS:
    globals().update(_make(_n))

__all__ = [f"{op}{n}" for n in WIDTHS for op in ("ivq", "ivqn", "ivdq", "ivdqn")]
