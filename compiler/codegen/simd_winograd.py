"""Winograd F(4x4, 3x3) transform intrinsics (``kernels/winograd.py``): one call per 2-D transform.

    vwbts{n}(buf, i, s, d)   ``v = B^T d B`` of the 6x6 vectors ``d`` (a 36-tuple, row-major), stored as
                             ``vstore{n}(buf, i + (6 k + l) s, v[k][l])``
    vwatl{n}(buf, i, s)      ``A^T m A`` of the 6x6 vectors ``m[k][l] = vload{n}(buf, i + (6 k + l) s)``:
                             a 16-tuple, row-major

Why intrinsics: written out as ``vfma``/``vadd`` lines, the two transforms were ~25% of all generated
kernel source and most of a Winograd kernel's numba compile (typing and lowering ~200 calls, each a
nested expression). Here each is one call whose LLVM IR is the same instructions in the same order as
those lines (columns first, then rows; ``_bt``/``_at`` below are the lines' 1-D programs), so the machine
code and the results are unchanged, bit for bit.
"""

from __future__ import annotations

from llvmlite import ir
from numba import types
from numba.core import cgutils
from numba.extending import intrinsic

from .simd import WIDTHS, Vec, _ptr

#: outputs per tile side, patch side
TM, TP = 4, 6


class _Ops:
    """Lane-wise float ops of ``<n x float>`` at a builder: ``fma(a, b, c) = a * b + c`` (``llvm.fma``)."""

    def __init__(self, builder: ir.IRBuilder, n: int):
        self.b, self.lvt = builder, ir.VectorType(ir.FloatType(), n)
        self._fma = cgutils.get_or_insert_function(builder.module, ir.FunctionType(self.lvt, [self.lvt] * 3),
                                                   f"llvm.fma.v{n}f32")

    def k(self, v: float) -> ir.Constant:
        return ir.Constant(self.lvt, [v] * self.lvt.count)

    def fma(self, a, b, c):
        return self.b.call(self._fma, [a, b, c])

    def add(self, a, b):
        return self.b.fadd(a, b)

    def sub(self, a, b):
        return self.b.fsub(a, b)


def _bt(o: _Ops, d: list) -> list:
    """``B^T d`` for 6 vectors, 14 operations (the rows' shared sums; ``BT``'s rows 1-4 pair up)."""
    t0 = o.fma(o.k(4.0), d[0], o.fma(o.k(-5.0), d[2], d[4]))
    t5 = o.fma(o.k(4.0), d[1], o.fma(o.k(-5.0), d[3], d[5]))
    t1 = o.fma(o.k(-4.0), o.add(d[1], d[2]), o.add(d[3], d[4]))
    t2 = o.fma(o.k(4.0), o.sub(d[1], d[2]), o.sub(d[4], d[3]))
    sf, sg = o.sub(d[4], d[2]), o.sub(d[3], d[1])
    return [t0, t1, t2, o.fma(o.k(2.0), sg, sf), o.fma(o.k(-2.0), sg, sf), t5]


def _at(o: _Ops, q: list) -> list:
    """``A^T q`` for 6 vectors into 4, 11 operations."""
    sa, sb, sc, sd = o.add(q[1], q[2]), o.add(q[3], q[4]), o.sub(q[1], q[2]), o.sub(q[3], q[4])
    return [o.add(o.add(q[0], sa), sb), o.fma(o.k(2.0), sd, sc), o.fma(o.k(4.0), sb, sa),
            o.add(o.fma(o.k(8.0), sd, sc), q[5])]


def transform(o: _Ops, one_d, m: list) -> list:
    """``L m L^T`` of the 6x6 values ``m`` (row-major) with ``one_d`` the 1-D ``L``: along the columns first,
    then along the rows; row-major out."""
    cols = [one_d(o, [m[i * TP + j] for i in range(TP)]) for j in range(TP)]  # cols[j][k] = (L m)[k][j]
    return [x for k in range(len(cols[0])) for x in one_d(o, [cols[j][k] for j in range(TP)])]


def _make(n: int) -> dict[str, object]:
    vt = Vec(n)

    def _at_elem(context, builder, arrty, arr, i, s, e):
        """A ``<n x float>`` pointer to element ``i + e s`` of ``arr``."""
        idx = builder.add(i, builder.mul(s, ir.Constant(s.type, e)))
        return _ptr(context, builder, arrty, arr, idx, n)

    @intrinsic
    def vwbts(typingctx, arr, idx, stride, d):
        def codegen(context, builder, sig, args):
            i = context.cast(builder, args[1], sig.args[1], types.int64)
            s = context.cast(builder, args[2], sig.args[2], types.int64)
            d_ = [builder.extract_value(args[3], k) for k in range(TP * TP)]
            for e, x in enumerate(transform(_Ops(builder, n), _bt, d_)):
                builder.store(x, _at_elem(context, builder, sig.args[0], args[0], i, s, e), align=4)
            return context.get_dummy_value()

        return types.void(arr, idx, stride, types.UniTuple(vt, TP * TP)), codegen

    @intrinsic
    def vwatl(typingctx, arr, idx, stride):
        def codegen(context, builder, sig, args):
            i = context.cast(builder, args[1], sig.args[1], types.int64)
            s = context.cast(builder, args[2], sig.args[2], types.int64)
            q = [builder.load(_at_elem(context, builder, sig.args[0], args[0], i, s, e), align=4)
                 for e in range(TP * TP)]
            out = transform(_Ops(builder, n), _at, q)
            return context.make_tuple(builder, sig.return_type, out)

        return types.UniTuple(vt, TM * TM)(arr, idx, stride), codegen

    return {f"vwbts{n}": vwbts, f"vwatl{n}": vwatl}


for _n in WIDTHS:
    globals().update(_make(_n))

__all__ = [f"{op}{n}" for n in WIDTHS for op in ("vwbts", "vwatl")]
