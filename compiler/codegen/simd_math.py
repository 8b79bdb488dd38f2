"""Vectorised float32 math for the SIMD intrinsics (``simd.py``): exp, log, tanh, sigmoid, erf and the
activations built on them, as LLVM IR on ``<n x float>`` values for any lane count.

Each function takes an ``llvmlite`` builder and vector operand(s) and returns the result vector; it is
plain IR (``llvm.fma``, ``llvm.rint``, integer bit operations, ``select``), so it vectorises at every width
and on every target. The methods are the classic ones (Cephes-style range reduction and minimax
polynomials), evaluated in float32 with FMA.

Stated accuracy against float64 numpy (``ERROR_BOUNDS``, checked by ``tests/test_vector_math.py`` at every
lane count over the whole float range, +-inf and NaN included): ``|y - ref| <= ulps * 2^-23 * |ref| + atol
+ atol_x * max(1, |x|)``, ``atol`` 2^-126 throughout (results in the denormal range may flush); NaN in
gives NaN out, and a number comes out wherever the float64 reference is a number (+-inf where it
overflows float32). exp/log/sigmoid are within 1.5 ulp, tanh 1.75 (its exponent-field exp), erf 3 ulp,
SiLU 2.6 ulp (its cheaper exp; -0 below -87, 2^-119 absolute); the GELUs' left tails are only within
2^-22 * |x| absolute: for erf's, ``1 + erf(x / sqrt 2)`` cancels (x < -3), like every float32 evaluation
of that formula; for tanh's, the float32 rounding of ``u = c (x + 0.044715 x^3)`` is amplified by ``exp(2u)``.
"""

from __future__ import annotations

import math
from collections.abc import Callable

from llvmlite import ir

F32 = ir.FloatType()
I32 = ir.IntType(32)

LOG2E = 1.44269504088896341
LN2_HI, LN2_LO = 0.693359375, -2.12194440e-4
EXP_POLY = (1.9875691500e-4, 1.3981999507e-3, 8.3334519073e-3, 4.1665795894e-2, 1.6666665459e-1,
            5.0000001201e-1)
LOG_POLY = (7.0376836292e-2, -1.1514610310e-1, 1.1676998740e-1, -1.2420140846e-1, 1.4249322787e-1,
            -1.6668057665e-1, 2.0000714765e-1, -2.4999993993e-1, 3.3333331174e-1)
TANH_POLY = (-5.70498872745e-3, 2.06390887954e-2, -5.37397155531e-2, 1.33314422036e-1, -3.33332819422e-1)
# tanh(x) = x * P(x^2) / Q(x^2) on [-TANH_RANGE, TANH_RANGE] (the rational fit of Eigen's ``ptanh_float`` and
# onnxruntime's MLAS tanh, clamped where Eigen clamps it: MLAS's 9 leaves it 2.7 ulp off near 8.5; tanh is 1 in
# float32 to within an ulp beyond)
TANH_P = (-2.76076847742355e-16, 2.00018790482477e-13, -8.60467152213735e-11, 5.12229709037114e-08,
          1.48572235717979e-05, 6.37261928875436e-04, 4.89352455891786e-03)
TANH_Q = (1.19825839466702e-06, 1.18534705686654e-04, 2.26843463243900e-03, 4.89352518554385e-03)
TANH_RANGE = 7.90531110763549805
# erf(x) = x * P(x^2) / Q(x^2) on [-4, 4] (a minimax rational fit; erf is +-1 in float32 beyond 4)
ERF_P = (-2.72614225801306e-10, 2.77068142495902e-08, -2.10102402082508e-06, -5.69250639462346e-05,
         -7.34990630326855e-04, -2.95459980854025e-03, -1.60960333262415e-02)
ERF_Q = (-1.45660718464996e-05, -2.13374055278905e-04, -1.68282697438203e-03, -7.37332916720468e-03,
         -1.42647390514189e-02)
#: 1.5 * 2^23: adding it rounds a float of magnitude below 2^22 to an integer kept in the low mantissa bits
EXP_SHIFTER = 12582912.0
#: e^r on [-ln2 / 2, ln2 / 2], the degree-5 polynomial closest in relative error (7.5e-8), highest first
EXP5 = (8.297631820599824e-3, 4.1915353735823696e-2, 1.666757485979532e-1, 4.999889510971185e-1,
        9.999996920211572e-1, 1.0000000716285584)
#: SiLU's lowest input with an exponential (``-87`` > log of the smallest normal float32): below it, -0
SILU_LOW = -87.0


class VecMath:
    """IR helpers on ``<n x float>`` values of one builder."""

    def __init__(self, builder: ir.IRBuilder, n: int):
        self.b, self.n = builder, n
        self.vt = ir.VectorType(F32, n)
        self.it = ir.VectorType(I32, n)

    # -- constants and instructions --------------------------------------------------------------------
    def c(self, v: float) -> ir.Constant:
        return ir.Constant(self.vt, [float(v)] * self.n)

    def ic(self, v: int) -> ir.Constant:
        return ir.Constant(self.it, [int(v)] * self.n)

    def splat(self, x: ir.Value) -> ir.Value:
        """A float32 scalar in every lane."""
        undef = ir.Constant(self.vt, ir.Undefined)
        v = self.b.insert_element(undef, x, ir.Constant(I32, 0))
        return self.b.shuffle_vector(v, undef, ir.Constant(ir.VectorType(I32, self.n), [0] * self.n))

    def call(self, name: str, *args: ir.Value) -> ir.Value:
        fty = ir.FunctionType(self.vt, [self.vt] * len(args))
        mod = self.b.module
        fname = f"llvm.{name}.v{self.n}f32"
        fn = mod.globals.get(fname) or ir.Function(mod, fty, fname)
        return self.b.call(fn, list(args))

    def fma(self, a: ir.Value, b: ir.Value, c: ir.Value) -> ir.Value:
        return self.call("fma", a, b, c)

    def mul(self, a, b):
        return self.b.fmul(a, b)

    def add(self, a, b):
        return self.b.fadd(a, b)

    def sub(self, a, b):
        return self.b.fsub(a, b)

    def div(self, a, b):
        return self.b.fdiv(a, b)

    def lt(self, a, b):
        return self.b.fcmp_ordered("<", a, b)

    def eq(self, a, b):
        return self.b.fcmp_ordered("==", a, b)

    def isnan(self, a):
        return self.b.fcmp_unordered("uno", a, a)

    def sel(self, cond, a, b):
        return self.b.select(cond, a, b)

    def clamp(self, x, lo: float, hi: float):
        """``x`` limited to ``[lo, hi]`` (NaN becomes a bound: callers restore it)."""
        return self.call("minnum", self.call("maxnum", x, self.c(lo)), self.c(hi))

    def poly(self, x, coeffs: tuple[float, ...]):
        """Horner: ``coeffs[0] * x^(k-1) + ... + coeffs[-1]``."""
        p = self.c(coeffs[0])
        for a in coeffs[1:]:
            p = self.fma(p, x, self.c(a))
        return p

    def pow2i(self, k):
        """``2.0 ** k`` for an int32 vector ``k`` in [-126, 127]."""
        return self.b.bitcast(self.b.shl(self.b.add(k, self.ic(127)), self.ic(23)), self.vt)

    # -- functions ---------------------------------------------------------------------------------------
    def exp(self, x0):
        x = self.clamp(x0, -110.0, 89.0)
        k = self.call("rint", self.mul(x, self.c(LOG2E)))
        r = self.fma(k, self.c(-LN2_HI), x)
        r = self.fma(k, self.c(-LN2_LO), r)
        p = self.poly(r, EXP_POLY)
        p = self.add(self.fma(p, self.mul(r, r), r), self.c(1.0))
        # 2^k as two factors, so that k from -159 to 128 neither wraps the exponent field nor loses the
        # gradual underflow: the multiplies overflow to inf and underflow to denormals / 0 like exp does
        ki = self.b.fptosi(k, self.it)
        k1 = self.b.ashr(ki, self.ic(1))
        y = self.mul(self.mul(p, self.pow2i(k1)), self.pow2i(self.b.sub(ki, k1)))
        return self.sel(self.isnan(x0), x0, y)

    def _exp_low(self, t, ok):
        """``e^t`` for ``t`` in ``[SILU_LOW, 0]`` (SiLU's and Softmax's exp): ``2^k`` added into the exponent
        field of ``e^r`` (``EXP5``), ``k`` from the shifter's mantissa bits (above ``SILU_LOW`` it never leaves
        the normal range); 0 where ``ok`` is false."""
        b = self.b
        f = self.fma(t, self.c(LOG2E), self.c(EXP_SHIFTER))  # 1.5 * 2^23 + k, k = rint(t log2 e)
        k = self.sub(f, self.c(EXP_SHIFTER))
        r = self.fma(k, self.c(-LN2_LO), self.fma(k, self.c(-LN2_HI), t))
        scale = b.shl(b.bitcast(f, self.it), self.ic(23))  # k << 23: the shifter's own bits shift out
        e = b.add(b.bitcast(self.poly(r, EXP5), self.it), scale)
        return b.bitcast(b.and_(e, b.sext(ok, self.it)), self.vt)

    def exp_neg(self, x):
        """``exp(min(x, 0))``, for arguments that are never positive (Softmax's ``x - max``): the SiLU exp
        (``EXP5``, ``2^k`` added into the exponent field) with compare-selects in place of ``maxnum`` /
        ``minnum`` (three instructions each on x86), 0 at or below ``SILU_LOW``, NaN kept. 19 instructions
        against ``exp``'s 30; within 2 ulp, 2^-125 absolute below ``SILU_LOW``."""
        b = self.b
        t = self.sel(self.lt(x, self.c(0.0)), x, self.c(0.0))  # NaN and +inf become 0 (NaN restored below)
        ok = b.fcmp_ordered(">", t, self.c(SILU_LOW))
        return self.sel(self.isnan(x), x, self._exp_low(self.sel(ok, t, self.c(SILU_LOW)), ok))

    def exp_softmax(self, t):
        """``exp(t)`` for Softmax's ``t = x - max`` (never positive, or NaN): ``t`` clamped to
        ``[SILU_LOW, 0]`` with one ``maxps`` and one ``minps`` (``-inf`` becomes ``SILU_LOW``), the SiLU exp
        (``EXP5``, ``2^k`` added into the exponent field) with no range mask, NaN restored by one select.
        16 instructions against ``exp_neg``'s 22 (its two compare-selects and the mask); within 2 ulp of
        ``exp(clip(t, SILU_LOW, 0))``: below ``SILU_LOW`` it gives ``exp(SILU_LOW)`` (< 2^-125) where the exact
        value is smaller still."""
        b = self.b
        c = b.select(b.fcmp_ordered(">", self.c(SILU_LOW), t), self.c(SILU_LOW), t)  # NaN kept, -inf -> LOW
        c = b.select(b.fcmp_ordered("<", c, self.c(0.0)), c, self.c(0.0))  # NaN -> 0 (restored below)
        f = self.fma(c, self.c(LOG2E), self.c(EXP_SHIFTER))
        k = self.sub(f, self.c(EXP_SHIFTER))
        r = self.fma(k, self.c(-LN2_LO), self.fma(k, self.c(-LN2_HI), c))
        e = b.add(b.bitcast(self.poly(r, EXP5), self.it), b.shl(b.bitcast(f, self.it), self.ic(23)))
        return self.sel(self.isnan(t), t, b.bitcast(e, self.vt))

    def expm1(self, x):
        """``exp(x) - 1`` without the cancellation near 0 (a Taylor polynomial for |x| < 0.5)."""
        inv = [1.0 / math.factorial(i) for i in range(9, 0, -1)]  # 1/9! ... 1/1!
        small = self.mul(self.poly(x, tuple(inv)), x)
        big = self.sub(self.exp(x), self.c(1.0))
        return self.sel(self.lt(self.call("fabs", x), self.c(0.5)), small, big)

    def log(self, x0):
        b = self.b
        tiny = self.lt(x0, self.c(2.0 ** -126))
        x = self.sel(tiny, self.mul(x0, self.c(2.0 ** 23)), x0)
        bits = b.bitcast(x, self.it)
        e = b.sub(b.lshr(bits, self.ic(23)), self.sel(tiny, self.ic(127 + 23), self.ic(127)))
        m = b.bitcast(b.or_(b.and_(bits, self.ic(0x007FFFFF)), self.ic(0x3F800000)), self.vt)
        big = self.b.fcmp_ordered(">", m, self.c(math.sqrt(2.0)))
        m = self.sel(big, self.mul(m, self.c(0.5)), m)
        e = b.add(e, b.zext(big, self.it))
        f = self.sub(m, self.c(1.0))
        ef = b.sitofp(e, self.vt)
        z = self.mul(f, f)
        y = self.mul(self.mul(f, z), self.poly(f, LOG_POLY))
        y = self.fma(ef, self.c(LN2_LO), y)
        y = self.fma(z, self.c(-0.5), y)
        r = self.fma(ef, self.c(LN2_HI), self.add(f, y))
        r = self.sel(self.eq(x0, self.c(math.inf)), self.c(math.inf), r)
        r = self.sel(self.eq(x0, self.c(0.0)), self.c(-math.inf), r)
        bad = b.or_(self.lt(x0, self.c(0.0)), self.isnan(x0))
        return self.sel(bad, self.c(math.nan), r)

    def log1p(self, u):
        """``log(1 + u)`` for ``u >= 0``, exact near 0: ``log(w) * u / (w - 1)`` with ``w = 1 + u``."""
        w = self.add(u, self.c(1.0))
        wm1 = self.sub(w, self.c(1.0))
        r = self.div(self.mul(self.log(w), u), wm1)
        return self.sel(self.eq(wm1, self.c(0.0)), u, self.sel(self.eq(u, self.c(math.inf)), u, r))

    def tanh(self, x):
        """``x (1 + z P(z))``, ``z = x^2``, below 0.625 in magnitude (Cephes); above, ``(1 - e) / (1 + e)``
        with ``e = exp(-2|x|)`` from the exponent-field exp (``_exp_low``, as SiLU's: ``e`` is at most 0.29
        there, so neither side cancels, and 0 below ``SILU_LOW``, where tanh is 1 in float32), the sign put
        back. 25 operations and the divide against 45 with ``exp`` (its clamps, ``rint`` and two-factor
        ``2^k``): 0.77 against 1.0 ns per element alone at 8 lanes (``benchmarks/broadcast_map.py``); 1.74 ulp
        measured (1.11 before), within the stated 2. NaN kept."""
        b = self.b
        a = self.call("fabs", x)
        z = self.mul(x, x)
        small = self.fma(self.mul(self.poly(z, TANH_POLY), z), x, x)
        t = b.fneg(self.add(a, a))
        ok = b.fcmp_ordered(">", t, self.c(SILU_LOW))  # false for NaN (restored below)
        e = self._exp_low(self.sel(ok, t, self.c(SILU_LOW)), ok)
        big = self.div(self.sub(self.c(1.0), e), self.add(self.c(1.0), e))
        y = self.sel(self.lt(a, self.c(0.625)), small, self.call("copysign", big, x))
        return self.sel(self.isnan(x), x, y)

    def tanh_rational(self, x):
        """``x P(x^2) / Q(x^2)`` on ``x`` clamped to ``[-TANH_RANGE, TANH_RANGE]`` (``TANH_P`` / ``TANH_Q``: the
        rational fit onnxruntime's MLAS and Eigen use), NaN kept: 9 FMAs, 2 multiplies, the divide, a clamp
        and a select, no exp and no branch to blend, where ``tanh`` computes both its polynomial and its exp
        side. Within 3 ulp (2.18 measured; vtanh: 1.68)."""
        b = self.b
        c = b.select(b.fcmp_ordered(">", x, self.c(-TANH_RANGE)), x, self.c(-TANH_RANGE))  # NaN -> bound
        c = b.select(b.fcmp_ordered("<", c, self.c(TANH_RANGE)), c, self.c(TANH_RANGE))
        z = self.mul(c, c)
        y = self.div(self.mul(c, self.poly(z, TANH_P)), self.poly(z, TANH_Q))
        return self.sel(self.isnan(x), x, y)

    def sigmoid(self, x):
        """``1 / (1 + exp(-x))`` as ``e / (1 + e)`` with ``e = exp(x)`` for negative x: exp never
        overflows, and the left tail keeps its relative accuracy down to the denormals."""
        e = self.exp(self.b.fneg(self.call("fabs", x)))
        num = self.sel(self.b.fcmp_ordered("<", x, self.c(0.0)), e, self.c(1.0))
        return self.div(num, self.add(self.c(1.0), e))

    def silu(self, x):
        """``x * sigmoid(x)`` as ``x * select(x < 0, e, 1) / (1 + e)``, ``e = exp(-|x|)`` from an exp cheaper
        than ``exp`` (SiLU is the detectors' epilogue on every conv): ``-|x|`` needs one clamp, and above
        ``SILU_LOW`` ``2^k`` never leaves the normal range, so it is added into the exponent field of ``e^r``
        (a degree-5 polynomial, ``EXP5``) with ``k`` taken from the shifter's mantissa bits; below
        ``SILU_LOW`` (where ``|x e^x| < 2^-119``) the result is -0. 20 operations and the divide against 35
        (AVX2, alone in a loop: 0.58 against 0.75 ns per element; fused, ``benchmarks/silu.py``: SiLU's cost
        on a 48->48 1x1 conv at 104x104 0.60 -> 0.42 ms, 192->48 at 52x52 0.21 -> 0.14 ms); within 3 ulp
        (2.6 measured)."""
        b = self.b
        t = b.bitcast(b.or_(b.bitcast(x, self.it), self.ic(-0x80000000)), self.vt)  # -|x|
        ok = b.fcmp_ordered(">", t, self.c(SILU_LOW))  # false for NaN too: e = 0, and x * 1 / 1 is NaN
        e = self._exp_low(self.call("maxnum", t, self.c(SILU_LOW)), ok)
        num = self.sel(b.fcmp_ordered("<", x, self.c(0.0)), e, self.c(1.0))
        return self.div(self.mul(x, num), self.add(e, self.c(1.0)))

    def erf(self, x0):
        x = self.clamp(x0, -4.0, 4.0)
        z = self.mul(x, x)
        p = self.mul(x, self.poly(z, ERF_P))
        y = self.div(p, self.poly(z, ERF_Q))
        y = self.clamp(y, -1.0, 1.0)
        return self.sel(self.isnan(x0), x0, y)

    def gelu(self, x):
        """``0.5 * x * (1 + erf(x / sqrt(2)))``."""
        e = self.erf(self.mul(x, self.c(1.0 / math.sqrt(2.0))))
        return self.mul(self.mul(x, self.c(0.5)), self.add(e, self.c(1.0)))

    def gelu_tanh(self, x):
        """``0.5 * x * (1 + tanh(u))`` as ``x * sigmoid(2u)`` (no cancellation in the left tail)."""
        u = self.mul(self.fma(self.mul(self.c(0.044715), x), self.mul(x, x), x),
                     self.c(2.0 * math.sqrt(2.0 / math.pi)))
        return self.mul(x, self.sigmoid(u))

    def softplus(self, x):
        """``max(x, 0) + log1p(exp(-|x|))``."""
        return self.add(self.call("maxnum", x, self.c(0.0)), self.log1p(self.exp(self.b.fneg(self.call("fabs", x)))))

    def mish(self, x):
        """``x * tanh(softplus(x))`` as ``x * n(n + 2) / (n(n + 2) + 2)``, ``n = exp(x)``; ``x`` itself
        from 10 on (the tanh is 1 in float32 there, and n^2 would overflow)."""
        n = self.exp(x)
        t = self.mul(n, self.add(n, self.c(2.0)))
        y = self.div(self.mul(x, t), self.add(t, self.c(2.0)))
        return self.sel(self.b.fcmp_ordered(">=", x, self.c(10.0)), x, y)

    def elu(self, x, alpha):
        neg = self.mul(self.splat(alpha), self.expm1(self.call("minnum", x, self.c(0.0))))
        return self.sel(self.b.fcmp_unordered(">=", x, self.c(0.0)), x, neg)

    def selu(self, x, alpha, gamma):
        neg = self.mul(self.splat(alpha), self.expm1(self.call("minnum", x, self.c(0.0))))
        return self.mul(self.splat(gamma), self.sel(self.b.fcmp_unordered(">", x, self.c(0.0)), x, neg))

    def prelu(self, x, slope):
        """``x`` where ``x >= 0``, else ``x * slope`` (a vector: per lane)."""
        return self.sel(self.b.fcmp_unordered(">=", x, self.c(0.0)), x, self.mul(x, slope))


TINY = 2.0 ** -126
#: intrinsic name -> (ulps, atol, atol_x): the stated error bound (module docstring)
ERROR_BOUNDS: dict[str, tuple[float, float, float]] = {
    "vexp": (2, TINY, 0), "vexpneg": (2, 2.0 ** -125, 0), "vexpsm": (2, TINY, 0), "vexpm1": (2, TINY, 0),
    "vlog": (2, TINY, 0), "vtanh": (2, TINY, 0), "vtanhr": (3, TINY, 0),
    "vsigmoid": (2, TINY, 0), "verf": (4, TINY, 0), "vsilu": (3, 2.0 ** -119, 0), "vgelu": (4, TINY, 2.0 ** -22),
    "vgelut": (4, TINY, 2.0 ** -22), "vsoftplus": (3, TINY, 0), "vmish": (4, TINY, 0), "velu": (3, TINY, 0),
    "vselu": (3, TINY, 0),
}

#: intrinsic name -> (VecMath method, number of float32 scalar parameters after the vector); ``vprelu``
#: takes a second vector and is made apart
FUNCTIONS: dict[str, tuple[Callable, int]] = {
    "vexp": (VecMath.exp, 0), "vexpneg": (VecMath.exp_neg, 0), "vexpsm": (VecMath.exp_softmax, 0),
    "vexpm1": (VecMath.expm1, 0), "vlog": (VecMath.log, 0), "vtanh": (VecMath.tanh, 0),
    "vtanhr": (VecMath.tanh_rational, 0), "vsigmoid": (VecMath.sigmoid, 0), "verf": (VecMath.erf, 0),
    "vsilu": (VecMath.silu, 0), "vgelu": (VecMath.gelu, 0), "vgelut": (VecMath.gelu_tanh, 0),
    "vsoftplus": (VecMath.softplus, 0), "vmish": (VecMath.mish, 0), "velu": (VecMath.elu, 1),
    "vselu": (VecMath.selu, 2),
}


#: the float arithmetic ``arithmetic_flops`` counts, and what each instruction counts for (the FMA peak's count)
_FLOP_WEIGHTS = {"fadd": 1, "fsub": 1, "fmul": 1, "fdiv": 1, "fma": 2}


def arithmetic_flops(name: str) -> int:
    """FLOPs per element of vector-math function ``name`` (a key of ``FUNCTIONS``), counted on its LLVM IR
    as the FMA peak counts them: an FMA 2, an add, subtract, multiply or divide 1; clamps (``minnum`` /
    ``maxnum``), compares, selects, rounding and integer bit operations 0. What ``cnnjit.flops`` charges an
    element of the ops computed with it (``TRANSCENDENTAL_FLOPS``)."""
    fn, nparams = FUNCTIONS[name]
    module = ir.Module()
    vt = ir.VectorType(F32, 8)
    func = ir.Function(module, ir.FunctionType(vt, [vt] + [F32] * nparams), "f")
    block = func.append_basic_block()
    builder = ir.IRBuilder(block)
    builder.ret(fn(VecMath(builder, 8), *func.args))
    total = 0
    for ins in block.instructions:
        op = ins.callee.name.split(".")[1] if ins.opname == "call" else ins.opname
        total += _FLOP_WEIGHTS.get(op, 0)
    return total
