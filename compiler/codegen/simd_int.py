"""Explicit-SIMD integer intrinsics for the int8 kernels: ``<n x i32>`` accumulators, byte loads, the
u8 x s8 dot product and the requantising store.

    ivzero16() / ivset16(x)             zero / x in every lane
    ivload16(buf, i)                    the 4n bytes at buf[i] as <n x i32> (int32 buffers: n elements)
    ivbcast4_16(buf, i)                 the 4 bytes at buf[i] (a u8/i8 buffer) as one i32, in every lane
    ivbcast4x16(buf, i)                 the same with every byte's top bit flipped (int8 + 128 as uint8)
    ivload8_16(buf, i, cnt)             buf[i : i + cnt] (u8 zero-, i8 sign-extended) as i32 lanes, others 0
    ivdot16(acc, a, b)                  acc + per lane sum_k u8(a.byte[4l + k]) * s8(b.byte[4l + k])
    ivmaddw16(acc, a, b)                acc + per lane sum_k a.i16[2l + k] * b.i16[2l + k] (k < 2)
    ivloadsx16(buf, i)                  the 2n int8 at buf[i] sign-extended to int16 pairs, as <n x i32>
                                        (an ivmaddw operand kept as bytes in memory: x86 vpmovsxbw)
    ivdotsat16(acc, a, b)               ivdot with each pair of byte products saturated to int16 (AVX2's vpmaddubsw)
    ivtof2_16(lo, hi)                   two <n x i32> as one <2n x float>
    ivadd16 / ivmul16 / ivxor16
    ivrqstore16(yb, i, acc, mb, mi, yz, lo, hi, cnt)
        y = clip(round_half_even(float32(acc) * mb[mi:mi + n]) + yz, lo, hi) stored as bytes to
        yb[i : i + cnt] (masked; yb is u8 or i8)
    ivrq16(acc, mb, mi, yz, lo, hi)     the same requantised value as i32 lanes (no store)
    ivpack4_16(a0, a1, a2, a3)          byte 4l + k = ak[l] & 255 (four channel-interleaved vectors -> bytes)
    ivloadb16(buf, i, cnt)              buf[i : i + cnt] (cnt <= 4n bytes) as <n x i32>, the rest 0 (masked)
    ivstoreb16(buf, i, v, cnt) / ivstore16(buf, i, v)   the first cnt / all 4n bytes of v to buf[i:]
    ivtr{k}_16(x0, x1, x2, x3)          byte transpose: i32 lane (L, j) = bytes xr[16L + 4k + j], r = 0..3
    ivpackq16(r0, r1, r2, r3)           its inverse for results: byte 16L + 4k + j = rk[4L + j]

``ivdot`` is chosen for the machine the kernel is lowered for (the LLVM module's triple and the code
generator's target features, i.e. the ``Target`` of the build): the VNNI ``vpdpbusd`` on x86 with
AVX512-VNNI (``llvm.x86.avx512.vpdpbusd.{256,512}``), two ``vpmaddubsw`` on x86 AVX2 at width 8; on
aarch64 at width 4 ``usdot`` with ``+i8mm`` (u8 x s8 in one instruction) and ``sdot`` with ``+dotprod``
(the u8 operand offset by -128 to s8, ``128 * sum(b)`` added back: ``sdot(acc, a ^ 0x80, b) - sdot(0, -128,
b)``, the second one shared by every dot with the same ``b``); elsewhere the portable widening form
(zext/sext to i32, multiply, add groups of four lanes), which LLVM lowers with the target's widening
multiplies (plain NEON: ``umull``/``smull``). On Cortex-M (ARMv7E-M) each lane is two ``smlad`` of the
bytes widened in pairs (``uxtb16``/``sxtb16``). Widths 4, 8, 16.
"""

from __future__ import annotations

import llvmlite.binding as llvm
from llvmlite import ir
from numba import types
from numba.core import cgutils
from numba.extending import intrinsic, models, register_model

from .simd import Vec, _data

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


def _machine(context, builder) -> tuple[str, frozenset[str]]:
    """(architecture, enabled features) of the machine the current kernel is lowered for: the module's
    triple ("" = the host, as numba's JIT modules leave it) and its code generator's feature string."""
    triple = builder.module.triple or llvm.get_process_triple()
    feats = getattr(context.codegen(), "_tm_features", "") or ""
    on = frozenset(f[1:] for f in feats.split(",") if f.startswith("+"))
    return triple.split("-")[0].lower(), on


def _aarch64_dot(builder, name: str, acc, a, b):
    """``llvm.aarch64.neon.{name}`` (sdot / udot / usdot) on one 128-bit vector: 4 i32 lanes += 4 byte
    products each."""
    b16 = ir.VectorType(_I8, 16)
    fn = cgutils.get_or_insert_function(builder.module, ir.FunctionType(acc.type, [acc.type, b16, b16]),
                                        f"llvm.aarch64.neon.{name}.v4i32.v16i8")
    return builder.call(fn, [acc, builder.bitcast(a, b16), builder.bitcast(b, b16)])


def _smlad_dot(builder, acc, a, b):
    """u8 x s8 dot of 4 lanes with the Cortex-M DSP extension: per i32 lane, bytes 0/2 and 1/3 widened to
    16-bit pairs (``uxtb16`` for the unsigned bytes, ``sxtb16`` for the signed ones) meet in two ``smlad``
    (two 16 x 16 multiply-adds each; u8 * s8 pairs cannot overflow)."""
    fty1 = ir.FunctionType(_I32, [_I32])
    ux = cgutils.get_or_insert_function(builder.module, fty1, "llvm.arm.uxtb16")
    sx = cgutils.get_or_insert_function(builder.module, fty1, "llvm.arm.sxtb16")
    mad = cgutils.get_or_insert_function(builder.module, ir.FunctionType(_I32, [_I32] * 3), "llvm.arm.smlad")
    eight = ir.Constant(_I32, 8)
    out = acc
    for lane in range(acc.type.count):
        k = ir.Constant(_I32, lane)
        x, w, s = builder.extract_element(a, k), builder.extract_element(b, k), builder.extract_element(acc, k)
        for shift in (False, True):  # bytes 0 and 2, then bytes 1 and 3
            xs, ws = (builder.lshr(x, eight), builder.lshr(w, eight)) if shift else (x, w)
            s = builder.call(mad, [builder.call(ux, [xs]), builder.call(sx, [ws]), s])
        out = builder.insert_element(out, s, k)
    return out


def _addr(context, builder, arrty, arr, idx, elty):
    """The address of element ``idx`` of a 1-D array or raw pointer (``types.CPointer``, as in the
    ahead-of-time target builds) argument, as a pointer to ``elty``."""
    return builder.bitcast(builder.gep(_data(context, builder, arrty, arr), [idx]), ir.PointerType(elty))


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


def maddw_ir(builder, acc, a, b, n: int, x86: bool, feats: dict):
    """``acc`` + per i32 lane ``a.i16[2l] * b.i16[2l] + a.i16[2l + 1] * b.i16[2l + 1]`` (exact: two products of
    16-bit values never overflow the i32 pair sum except for -32768 * -32768 twice, which the int16 GEMM
    never forms). x86: ``vpdpwssd`` with AVX512-VNNI (``feats["vnni"]``), else ``vpmaddwd`` + ``vpaddd``
    (AVX2 at width 8, AVX-512BW at 16); elsewhere the widening form (sext, multiply, add even and odd
    lanes), which LLVM lowers to the target's pair multiply-adds. ``feats``: CPU feature flags."""
    lvt = ir.VectorType(_I32, n)
    w16 = ir.VectorType(ir.IntType(16), 2 * n)
    if x86 and feats.get("vnni") and n in (8, 16):
        fn = cgutils.get_or_insert_function(builder.module, ir.FunctionType(lvt, [lvt] * 3),
                                            f"llvm.x86.avx512.vpdpwssd.{32 * n}")
        return builder.call(fn, [acc, a, b])
    ua, ub = builder.bitcast(a, w16), builder.bitcast(b, w16)
    pmadd = {8: "llvm.x86.avx2.pmadd.wd", 16: "llvm.x86.avx512.pmaddw.d.512"}.get(n)
    if x86 and pmadd and feats.get("avx2") and (n == 8 or feats.get("avx512bw")):
        fn = cgutils.get_or_insert_function(builder.module, ir.FunctionType(lvt, [w16, w16]), pmadd)
        return builder.add(acc, builder.call(fn, [ua, ub]))
    wide = ir.VectorType(_I32, 2 * n)
    p = builder.mul(builder.sext(ua, wide), builder.sext(ub, wide))
    even = builder.shuffle_vector(p, p, ir.Constant(lvt, list(range(0, 2 * n, 2))))
    odd = builder.shuffle_vector(p, p, ir.Constant(lvt, list(range(1, 2 * n, 2))))
    return builder.add(acc, builder.add(even, odd))


def dotsat_ir(builder, acc, a, b, n: int, x86: bool, feats: dict):
    """``ivdot`` as x86's ``vpmaddubsw`` + ``vpmaddwd`` without VNNI compute it (onnxruntime's AVX2 u8 x s8
    kernels): per i32 lane, the products of bytes (0, 1) and of (2, 3) summed in pairs, each pair sum
    saturated to int16, then the two added to ``acc``. Native on x86 AVX2 (width 8) and AVX-512BW (16);
    elsewhere the widening form with the clamp."""
    lvt = ir.VectorType(_I32, n)
    b8, w16 = ir.VectorType(_I8, 4 * n), ir.VectorType(ir.IntType(16), 2 * n)
    names = {8: ("llvm.x86.avx2.pmadd.ub.sw", "llvm.x86.avx2.pmadd.wd"),
             16: ("llvm.x86.avx512.pmaddubs.w.512", "llvm.x86.avx512.pmaddw.d.512")}.get(n)
    ua, sb = builder.bitcast(a, b8), builder.bitcast(b, b8)
    if x86 and names and feats.get("avx2") and (n == 8 or feats.get("avx512bw")):
        ubs = cgutils.get_or_insert_function(builder.module, ir.FunctionType(w16, [b8, b8]), names[0])
        wd = cgutils.get_or_insert_function(builder.module, ir.FunctionType(lvt, [w16, w16]), names[1])
        return builder.add(acc, builder.call(wd, [builder.call(ubs, [ua, sb]), ir.Constant(w16, [1] * (2 * n))]))
    wide = ir.VectorType(_I32, 4 * n)
    p = builder.mul(builder.zext(ua, wide), builder.sext(sb, wide))
    half = ir.VectorType(_I32, 2 * n)
    pair = builder.add(builder.shuffle_vector(p, p, ir.Constant(half, list(range(0, 4 * n, 2)))),
                       builder.shuffle_vector(p, p, ir.Constant(half, list(range(1, 4 * n, 2)))))
    lo, hi = ir.Constant(half, [-32768] * (2 * n)), ir.Constant(half, [32767] * (2 * n))
    pair = builder.select(builder.icmp_signed("<", pair, lo), lo, pair)
    pair = builder.select(builder.icmp_signed(">", pair, hi), hi, pair)
    s = builder.add(builder.shuffle_vector(pair, pair, ir.Constant(lvt, list(range(0, 2 * n, 2)))),
                    builder.shuffle_vector(pair, pair, ir.Constant(lvt, list(range(1, 2 * n, 2)))))
    return builder.add(acc, s)


def _make(n: int) -> dict[str, object]:
    vt = IVec(n)
    lvt = ir.VectorType(_I32, n)
    bvt = ir.VectorType(_I8, n)
    vnni = has_vnni(n)  # the x86 forms follow the host (x86 kernels are only lowered for the host)
    madd = n == 8 and not vnni and bool(_features().get("avx2"))  # exact u8 x s8 dot without VNNI

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
    def ivloadsx(typingctx, arr, idx):
        def codegen(context, builder, sig, args):
            b = builder.load(_addr(context, builder, sig.args[0], args[0], args[1], ir.VectorType(_I8, 2 * n)),
                             align=1)
            return builder.bitcast(builder.sext(b, ir.VectorType(ir.IntType(16), 2 * n)), lvt)

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
            arch, feats = _machine(context, builder)
            if arch in ("aarch64", "arm64") and n == 4 and "i8mm" in feats:
                return _aarch64_dot(builder, "usdot", *args)
            if arch in ("aarch64", "arm64") and n == 4 and "dotprod" in feats:
                flip = ir.Constant(lvt, [-0x7F7F7F80] * n)  # 0x80808080: u8 - 128 as s8
                t = _aarch64_dot(builder, "sdot", args[0], builder.xor(args[1], flip), args[2])
                return builder.sub(t, _aarch64_dot(builder, "sdot", ir.Constant(lvt, [0] * n), flip, args[2]))
            if arch.startswith("thumbv7em") and n == 4:  # ARMv7E-M: the DSP extension is part of the ISA
                return _smlad_dot(builder, *args)
            x86 = arch in ("x86_64", "i386", "i686")
            if vnni and x86:
                name = f"llvm.x86.avx512.vpdpbusd.{32 * n}"
                fn = cgutils.get_or_insert_function(builder.module, ir.FunctionType(lvt, [lvt] * 3), name)
                return builder.call(fn, list(args))
            if madd and x86:  # AVX2: vpmaddubsw on the low 7 bits and on the top bit apart (neither pair sum saturates)
                b32, w16 = ir.VectorType(_I8, 32), ir.VectorType(ir.IntType(16), 16)
                ubs = cgutils.get_or_insert_function(builder.module, ir.FunctionType(w16, [b32, b32]),
                                                     "llvm.x86.avx2.pmadd.ub.sw")
                wd = cgutils.get_or_insert_function(builder.module, ir.FunctionType(lvt, [w16, w16]),
                                                    "llvm.x86.avx2.pmadd.wd")
                ua, sb = builder.bitcast(args[1], b32), builder.bitcast(args[2], b32)
                ones = ir.Constant(w16, [1] * 16)
                s = args[0]
                for mask in (0x7F, -0x80):
                    part = builder.call(ubs, [builder.and_(ua, ir.Constant(b32, [mask] * 32)), sb])
                    s = builder.add(s, builder.call(wd, [part, ones]))
                return s
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
    def ivmaddw(typingctx, acc, a, b):
        """``maddw_ir``: ``acc`` + per lane the two 16-bit products of ``a`` and ``b`` summed."""
        def codegen(context, builder, sig, args):
            x86 = _machine(context, builder)[0] in ("x86_64", "i386", "i686")
            return maddw_ir(builder, *args, n, x86, {**_features(), "vnni": vnni})

        return vt(acc, a, b), codegen

    @intrinsic
    def ivdotsat(typingctx, acc, a, b):
        """``dotsat_ir``: ``ivdot`` with each pair of byte products saturated to int16."""
        def codegen(context, builder, sig, args):
            x86 = _machine(context, builder)[0] in ("x86_64", "i386", "i686")
            return dotsat_ir(builder, *args, n, x86, _features())

        return vt(acc, a, b), codegen

    @intrinsic
    def ivtof2(typingctx, lo, hi):
        """Two ``<n x i32>`` as one ``<2n x float>`` (``lo``'s lanes first): an integer GEMV's sums handed to
        float code whose vectors are two machine vectors wide."""
        def codegen(context, builder, sig, args):
            both = builder.shuffle_vector(args[0], args[1], ir.Constant(ir.VectorType(_I32, 2 * n),
                                                                        list(range(2 * n))))
            return builder.sitofp(both, ir.VectorType(ir.FloatType(), 2 * n))

        return Vec(2 * n)(lo, hi), codegen

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

    def _requant(context, builder, sig, args, acc, mi):
        """clip(round_half_even(float32(acc) * m) + yz) as i32 lanes; args[mi:mi + 5] = marr, midx, yz, lo, hi."""
        ft = ir.VectorType(ir.FloatType(), n)
        yzv, lov, hiv = (_i32(context, builder, args[k], sig.args[k]) for k in (mi + 2, mi + 3, mi + 4))
        m = builder.load(_addr(context, builder, sig.args[mi], args[mi], args[mi + 1], ft), align=1)
        f = builder.fmul(builder.sitofp(acc, ft), m)
        flo = _splat(builder, builder.sitofp(builder.sub(lov, yzv), ir.FloatType()), n)
        fhi = _splat(builder, builder.sitofp(builder.sub(hiv, yzv), ir.FloatType()), n)
        f = builder.select(builder.fcmp_ordered(">", f, flo), f, flo)
        f = builder.select(builder.fcmp_ordered("<", f, fhi), f, fhi)
        rint = cgutils.get_or_insert_function(builder.module, ir.FunctionType(ft, [ft]), f"llvm.rint.v{n}f32")
        return builder.add(builder.fptosi(builder.call(rint, [f]), lvt), _splat(builder, yzv, n))

    @intrinsic
    def ivrq(typingctx, acc, marr, midx, yz, lo, hi):
        """The requantised i32 lanes of ``ivrqstore`` (not narrowed, not stored)."""
        def codegen(context, builder, sig, args):
            return _requant(context, builder, sig, args, args[0], 1)

        return vt(acc, marr, midx, yz, lo, hi), codegen

    @intrinsic
    def ivpack4(typingctx, a0, a1, a2, a3):
        """Low bytes of four i32 vectors interleaved: byte ``4l + k`` of the result is ``ak[l] & 255``."""
        def codegen(context, builder, sig, args):
            mask = ir.Constant(lvt, [255] * n)
            r = builder.and_(args[0], mask)
            for k in (1, 2, 3):
                v = args[k] if k == 3 else builder.and_(args[k], mask)
                r = builder.or_(r, builder.shl(v, ir.Constant(lvt, [8 * k] * n)))
            return r

        return vt(a0, a1, a2, a3), codegen

    bytes_t = ir.VectorType(_I8, 4 * n)

    @intrinsic
    def ivloadb(typingctx, arr, idx, count):
        """``buf[i : i + count]`` (count <= 4n bytes) as <n x i32>, bytes past ``count`` 0 (masked load)."""
        def codegen(context, builder, sig, args):
            ptr = _addr(context, builder, sig.args[0], args[0], args[1], bytes_t)
            fty = ir.FunctionType(bytes_t, [ptr.type, _I32, ir.VectorType(ir.IntType(1), 4 * n), bytes_t])
            fn = cgutils.get_or_insert_function(builder.module, fty, f"llvm.masked.load.v{4 * n}i8.p0")
            v = builder.call(fn, [ptr, ir.Constant(_I32, 1), _lane_mask(builder, args[2], 4 * n),
                                  ir.Constant(bytes_t, [0] * (4 * n))])
            return builder.bitcast(v, lvt)

        return vt(arr, idx, count), codegen

    @intrinsic
    def ivstoreb(typingctx, arr, idx, v, count):
        """Store the first ``count`` (<= 4n) bytes of ``v`` to ``buf[i:]`` (masked store)."""
        def codegen(context, builder, sig, args):
            ptr = _addr(context, builder, sig.args[0], args[0], args[1], bytes_t)
            fty = ir.FunctionType(ir.VoidType(), [bytes_t, ptr.type, _I32, ir.VectorType(ir.IntType(1), 4 * n)])
            st = cgutils.get_or_insert_function(builder.module, fty, f"llvm.masked.store.v{4 * n}i8.p0")
            builder.call(st, [builder.bitcast(args[2], bytes_t), ptr, ir.Constant(_I32, 1),
                              _lane_mask(builder, args[3], 4 * n)])
            return context.get_dummy_value()

        return types.void(arr, idx, v, count), codegen

    @intrinsic
    def ivstore(typingctx, arr, idx, v):
        """Store the 4n bytes of ``v`` to ``buf[i:]`` (unmasked)."""
        def codegen(context, builder, sig, args):
            builder.store(args[2], _addr(context, builder, sig.args[0], args[0], args[1], lvt), align=1)
            return context.get_dummy_value()

        return types.void(arr, idx, v), codegen

    def _bshuf(builder, a, b, idx):
        return builder.shuffle_vector(a, b, ir.Constant(ir.VectorType(_I32, len(idx)), idx))

    def _tr(k):
        """Byte transpose of four rows: i32 lane ``(L, j)`` (128-bit lane ``L``, ``j < 4``) of the result is
        ``[x0, x1, x2, x3][16L + 4k + j]`` as 4 bytes (the x86 unpack order: punpck{l,h}bw, punpck{l,h}wd)."""
        half = 0 if k < 2 else 8  # bytes 0..7 or 8..15 of every 128-bit lane
        quad = 0 if k % 2 == 0 else 4  # words 0..3 or 4..7 of the byte-interleaved lane
        w16 = ir.VectorType(ir.IntType(16), 2 * n)

        @intrinsic
        def tr(typingctx, x0, x1, x2, x3):
            def codegen(context, builder, sig, args):
                bs = [builder.bitcast(a, bytes_t) for a in args]
                m = [v for L in range(n // 4) for i in range(8) for v in (16 * L + half + i, 4 * n + 16 * L + half + i)]
                u01 = builder.bitcast(_bshuf(builder, bs[0], bs[1], m), w16)
                u23 = builder.bitcast(_bshuf(builder, bs[2], bs[3], m), w16)
                m2 = [v for L in range(n // 4) for i in range(4) for v in (8 * L + quad + i, 2 * n + 8 * L + quad + i)]
                return builder.bitcast(_bshuf(builder, u01, u23, m2), lvt)

            return vt(x0, x1, x2, x3), codegen

        return tr

    @intrinsic
    def ivpackq(typingctx, r0, r1, r2, r3):
        """Inverse order of ``ivtr``: byte ``16L + 4k + j`` of the result is ``rk[4L + j]`` (low byte)."""
        def codegen(context, builder, sig, args):
            t = [builder.trunc(a, bvt) for a in args]
            c01 = _bshuf(builder, t[0], t[1], list(range(2 * n)))
            c23 = _bshuf(builder, t[2], t[3], list(range(2 * n)))
            m = [k * n + 4 * L + j for L in range(n // 4) for k in range(4) for j in range(4)]
            return builder.bitcast(_bshuf(builder, c01, c23, m), lvt)

        return vt(r0, r1, r2, r3), codegen

    return {
        f"ivtr0_{n}": _tr(0), f"ivtr1_{n}": _tr(1), f"ivtr2_{n}": _tr(2), f"ivtr3_{n}": _tr(3),
        f"ivpackq{n}": ivpackq,
        f"ivrq{n}": ivrq, f"ivpack4_{n}": ivpack4, f"ivloadb{n}": ivloadb, f"ivstoreb{n}": ivstoreb,
        f"ivstore{n}": ivstore,
        f"ivzero{n}": ivzero, f"ivset{n}": ivset, f"ivload{n}": ivload, f"ivbcast4_{n}": ivbcast4,
        f"ivbcast4x{n}": ivbcast4x,
        f"ivload8_{n}": ivload8, f"ivdot{n}": ivdot, f"ivmaddw{n}": ivmaddw, f"ivloadsx{n}": ivloadsx,
        f"ivdotsat{n}": ivdotsat, f"ivtof2_{n}": ivtof2,
        f"ivadd{n}": _binop("add"), f"ivmul{n}": _binop("mul"),
        f"ivxor{n}": _binop("xor"), f"ivrqstore{n}": ivrqstore,
    }


for _n in WIDTHS:
    globals().update(_make(_n))

__all__ = ["IVec", "WIDTHS", "host_int_width", "has_vnni"] + [f"{op}{n}" for n in WIDTHS for op in (
    "ivzero", "ivset", "ivload", "ivbcast4_", "ivbcast4x", "ivload8_", "ivdot", "ivmaddw", "ivloadsx", "ivdotsat",
    "ivtof2_", "ivadd", "ivmul", "ivxor", "ivrqstore",
    "ivrq", "ivpack4_", "ivloadb", "ivstoreb", "ivstore", "ivtr0_", "ivtr1_", "ivtr2_", "ivtr3_", "ivpackq")]
