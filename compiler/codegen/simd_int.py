"""Explicit-SIMD integer intrinsics for the int8 kernels: ``<n x i32>`` accumulators, byte loads, the
u8 x s8 dot product and the requantising store.

    ivzero16() / ivset16(x)             zero / x in every lane
    ivload16(buf, i)                    the 4n bytes at buf[i] as <n x i32> (int32 buffers: n elements)
    ivbcast4_16(buf, i)                 the 4 bytes at buf[i] (a u8/i8 buffer) as one i32, in every lane
    ivbcast4x16(buf, i)                 the same with every byte's top bit flipped (int8 + 128 as uint8)
    ivload8_16(buf, i, cnt)             buf[i : i + cnt] (u8 zero-, i8 sign-extended) as i32 lanes, others 0
    ivdot16(acc, a, b)                  acc + per lane sum_k u8(a.byte[4l + k]) * s8(b.byte[4l + k])
    ivadd16 / ivmul16 / ivxor16
    ivrqstore16(yb, i, acc, mb, mi, yz, lo, hi, cnt)
        y = clip(round_half_even(float32(acc) * mb[mi:mi + n]) + yz, lo, hi) stored as bytes to
        yb[i : i + cnt] (masked; yb is u8 or i8)

``ivdot`` is the VNNI ``vpdpbusd`` on x86 hosts with AVX512-VNNI (``llvm.x86.avx512.vpdpbusd.{256,512}``,
the only x86-specific piece); elsewhere it is the portable widening form (zext/sext to i32, multiply,
add groups of four lanes), which LLVM lowers with the target's widening multiplies. Widths 4, 8, 16.
"""

from __future__ import annotations

import llvmlite.binding as llvm
from llvmlite import ir
from numba import types
from numba.core import cgutils
from numba.extending import intrinsic, models, register_model

WIDTHS = (4, 8, 16)
_I32 = ir.IntType(32)
_I8 = ir.IntType(8)


class IVec(types.Type):
    """The numba type of an ``<n x i32>`` SIMD value."""

    def __init__(self, n: int):
        self.n = n
        super().__init__(name=f"i32x{n}")


@register_model(IVec)
class _IVecModel(models.PrimitiveModel):
    def __init__(self, dmm, fe_type):
        super().__init__(dmm, fe_type, ir.VectorType(_I32, fe_type.n))


def _features() -> dict:
    try:
        return dict(llvm.get_host_cpu_features())
    except Exception:  # noqa: BLE001 - some platforms cannot report features
        return {}


def host_int_width() -> int:
    """i32 lanes of the integer kernels: 16 with AVX-512 (F+BW), 8 with AVX2, else 4."""
    f = _features()
    if f.get("avx512f") and f.get("avx512bw"):
        return 16
    if f.get("avx2"):
        return 8
    return 4


def has_vnni(n: int) -> bool:
    """Whether ``ivdot`` of width ``n`` is one VNNI instruction on this host."""
    f = _features()
    if n == 16:
        return bool(f.get("avx512vnni"))
    if n == 8:
        return bool(f.get("avx512vnni") and f.get("avx512vl")) or bool(f.get("avxvnni"))
    return False


def _addr(context, builder, arrty, arr, idx, elty):
    ary = context.make_array(arrty)(context, builder, arr)
    return builder.bitcast(builder.gep(ary.data, [idx]), ir.PointerType(elty))


def _splat(builder, x, n):
    vt = ir.VectorType(x.type, n)
    v = builder.insert_element(ir.Constant(vt, ir.Undefined), x, ir.Constant(_I32, 0))
    return builder.shuffle_vector(v, v, ir.Constant(ir.VectorType(_I32, n), [0] * n))


def _lane_mask(builder, count, n):
    cnt = builder.trunc(count, _I32) if count.type.width > 32 else count
    lanes = ir.Constant(ir.VectorType(_I32, n), list(range(n)))
    return builder.icmp_signed("<", lanes, _splat(builder, cnt, n))


def _i32(context, builder, val, ty):
    return context.cast(builder, val, ty, types.int32)


def _make(n: int) -> dict[str, object]:
    vt = IVec(n)
    lvt = ir.VectorType(_I32, n)
    bvt = ir.VectorType(_I8, n)
    vnni = has_vnni(n)

    @intrinsic
    def ivzero(typingctx):
        def codegen(context, builder, sig, args):
            return ir.Constant(lvt, [0] * n)

        return vt(), codegen

    @intrinsic
    def ivset(typingctx, x):
        def codegen(context, builder, sig, args):
            return _splat(builder, _i32(context, builder, args[0], sig.args[0]), n)

        return vt(x), codegen

    @intrinsic
    def ivload(typingctx, arr, idx):
        def codegen(context, builder, sig, args):
            return builder.load(_addr(context, builder, sig.args[0], args[0], args[1], lvt), align=1)

        return vt(arr, idx), codegen

    @intrinsic
    def ivbcast4(typingctx, arr, idx):
        def codegen(context, builder, sig, args):
            x = builder.load(_addr(context, builder, sig.args[0], args[0], args[1], _I32), align=1)
            return _splat(builder, x, n)

        return vt(arr, idx), codegen

    @intrinsic
    def ivbcast4x(typingctx, arr, idx):
        """``ivbcast4`` with 128 added to every byte (int8 -> biased uint8), as a scalar xor before the
        broadcast (a vector xor of the broadcast sends LLVM 22's x86 DAG combiner into a loop)."""
        def codegen(context, builder, sig, args):
            x = builder.load(_addr(context, builder, sig.args[0], args[0], args[1], _I32), align=1)
            return _splat(builder, builder.xor(x, ir.Constant(_I32, 0x80808080)), n)

        return vt(arr, idx), codegen

    @intrinsic
    def ivload8(typingctx, arr, idx, count):
        signed = arr.dtype == types.int8

        def codegen(context, builder, sig, args):
            ptr = _addr(context, builder, sig.args[0], args[0], args[1], bvt)
            fty = ir.FunctionType(bvt, [ptr.type, _I32, ir.VectorType(ir.IntType(1), n), bvt])
            fn = cgutils.get_or_insert_function(builder.module, fty, f"llvm.masked.load.v{n}i8.p0")
            v = builder.call(fn, [ptr, ir.Constant(_I32, 1), _lane_mask(builder, args[2], n),
                                  ir.Constant(bvt, [0] * n)])
            return builder.sext(v, lvt) if signed else builder.zext(v, lvt)

        return vt(arr, idx, count), codegen

    def _binop(fn_name):
        @intrinsic
        def op(typingctx, a, b):
            def codegen(context, builder, sig, args):
                return getattr(builder, fn_name)(args[0], args[1])

            return vt(a, b), codegen

        return op

    @intrinsic
    def ivdot(typingctx, acc, a, b):
        def codegen(context, builder, sig, args):
            if vnni:
                name = f"llvm.x86.avx512.vpdpbusd.{32 * n}"
                fn = cgutils.get_or_insert_function(builder.module, ir.FunctionType(lvt, [lvt] * 3), name)
                return builder.call(fn, list(args))
            wide = ir.VectorType(_I32, 4 * n)
            bytes_t = ir.VectorType(_I8, 4 * n)
            ua = builder.zext(builder.bitcast(args[1], bytes_t), wide)
            sb = builder.sext(builder.bitcast(args[2], bytes_t), wide)
            p = builder.mul(ua, sb)
            s = args[0]
            for k in range(4):
                part = builder.shuffle_vector(p, p, ir.Constant(ir.VectorType(_I32, n), list(range(k, 4 * n, 4))))
                s = builder.add(s, part)
            return s

        return vt(acc, a, b), codegen

    @intrinsic
    def ivrqstore(typingctx, yarr, yidx, acc, marr, midx, yz, lo, hi, count):
        def codegen(context, builder, sig, args):
            ft = ir.VectorType(ir.FloatType(), n)
            yzv, lov, hiv = (_i32(context, builder, args[k], sig.args[k]) for k in (5, 6, 7))
            m = builder.load(_addr(context, builder, sig.args[3], args[3], args[4], ft), align=1)
            f = builder.fmul(builder.sitofp(args[2], ft), m)
            # clamp in float to [lo - yz, hi - yz] first (as MLAS does), then round half to even
            flo = _splat(builder, builder.sitofp(builder.sub(lov, yzv), ir.FloatType()), n)
            fhi = _splat(builder, builder.sitofp(builder.sub(hiv, yzv), ir.FloatType()), n)
            # compare + select (plain vmaxps/vminps; llvm.maxnum's NaN rules would cost extra blends)
            f = builder.select(builder.fcmp_ordered(">", f, flo), f, flo)
            f = builder.select(builder.fcmp_ordered("<", f, fhi), f, fhi)
            rint = cgutils.get_or_insert_function(builder.module, ir.FunctionType(ft, [ft]), f"llvm.rint.v{n}f32")
            i = builder.add(builder.fptosi(builder.call(rint, [f]), lvt), _splat(builder, yzv, n))
            b = builder.trunc(i, bvt)
            ptr = _addr(context, builder, sig.args[0], args[0], args[1], bvt)
            fty = ir.FunctionType(ir.VoidType(), [bvt, ptr.type, _I32, ir.VectorType(ir.IntType(1), n)])
            st = cgutils.get_or_insert_function(builder.module, fty, f"llvm.masked.store.v{n}i8.p0")
            builder.call(st, [b, ptr, ir.Constant(_I32, 1), _lane_mask(builder, args[8], n)])
            return context.get_dummy_value()

        return types.void(yarr, yidx, acc, marr, midx, yz, lo, hi, count), codegen

    return {
        f"ivzero{n}": ivzero, f"ivset{n}": ivset, f"ivload{n}": ivload, f"ivbcast4_{n}": ivbcast4,
        f"ivbcast4x{n}": ivbcast4x,
        f"ivload8_{n}": ivload8, f"ivdot{n}": ivdot, f"ivadd{n}": _binop("add"), f"ivmul{n}": _binop("mul"),
        f"ivxor{n}": _binop("xor"), f"ivrqstore{n}": ivrqstore,
    }


for _n in WIDTHS:
    globals().update(_make(_n))

__all__ = ["IVec", "WIDTHS", "host_int_width", "has_vnni"] + [f"{op}{n}" for n in WIDTHS for op in (
    "ivzero", "ivset", "ivload", "ivbcast4_", "ivbcast4x", "ivload8_", "ivdot", "ivadd", "ivmul", "ivxor", "ivrqstore")]
