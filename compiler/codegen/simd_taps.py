"""A register tile row's broadcast FMAs as one intrinsic (``kernels/simd_cblock.py``'s unrolled taps).

    vtaps{n}(acc, buf, i, w, offs)   ``acc[k] + buf[i + offs[k]] * w`` for every ``k`` (``acc`` a tuple of
                                     vectors, ``offs`` a tuple of ints as long): the new ``acc``

Why: a channel-blocked kernel unrolls every tap of its tile, one line per pixel and tap
(``a3 = vfma(vbcast(xb[U(xr + 5)]), wv, a3)``): up to ~700 lines, most of numba's typing and lowering work for
the kernel. One call per kernel column does the same, emitting per ``k`` the same scalar load, broadcast and
``llvm.fma`` as those lines, in the same order: the same machine code, bit-identical results.
"""

from __future__ import annotations

from llvmlite import ir
from numba import types
from numba.core import cgutils
from numba.extending import intrinsic

from .simd import LANES, Vec, _data


def _make(n: int) -> dict[str, object]:
    vt = Vec(n)
    lvt = ir.VectorType(ir.FloatType(), n)

    @intrinsic
    def vtaps(typingctx, acc, arr, idx, w, offs):
        if not (isinstance(acc, types.BaseTuple) and isinstance(offs, types.BaseTuple) and len(acc) == len(offs)):
            return None

        def codegen(context, builder, sig, args):
            fma = cgutils.get_or_insert_function(builder.module, ir.FunctionType(lvt, [lvt] * 3), f"llvm.fma.v{n}f32")
            data = _data(context, builder, sig.args[1], args[1])
            i = context.cast(builder, args[2], sig.args[2], types.int64)
            undef = ir.Constant(lvt, ir.Undefined)
            splat = ir.Constant(ir.VectorType(ir.IntType(32), n), [0] * n)
            out = []
            for k in range(len(sig.args[0])):
                off = context.cast(builder, builder.extract_value(args[4], k), sig.args[4][k], types.int64)
                x = builder.load(builder.gep(data, [builder.add(i, off)]))
                x = builder.shuffle_vector(builder.insert_element(undef, x, ir.Constant(ir.IntType(32), 0)), undef,
                                           splat)
                out.append(builder.call(fma, [x, args[3], builder.extract_value(args[0], k)]))
            return context.make_tuple(builder, sig.return_type, out)

        return types.UniTuple(vt, len(acc))(acc, arr, idx, w, offs), codegen

    return {f"vtaps{n}": vtaps}


for _n in LANES:
    globals().update(_make(_n))

__all__ = [f"vtaps{n}" for n in LANES]
