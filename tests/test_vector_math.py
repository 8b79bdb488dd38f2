"""The vector math intrinsics (``simd_math`` through ``simd``: vexp, vlog, vtanh, vsigmoid, verf and the
activations built on them) at every lane count the kernels use, against float64 numpy/``math`` references
written apart from them, over the whole float32 range: random bit patterns (denormals, huge values, NaN
payloads), +-inf, a dense grid through the saturation and overflow points. Each function must stay within
its stated bound (``ERROR_BOUNDS``), give NaN exactly where the reference does, and overflow to the same
infinity as the reference rounded to float32."""

from __future__ import annotations

import math

import numba
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from cnnjit.compiler.codegen import simd
from cnnjit.compiler.codegen.simd_math import ERROR_BOUNDS

ELU_ALPHA, SELU_ALPHA, SELU_GAMMA = 0.7, 1.6732632, 1.050701

_erf = np.frompyfunc(math.erf, 1, 1)
_erfc = np.frompyfunc(math.erfc, 1, 1)


def _sigmoid(x):
    return 1.0 / (1.0 + np.exp(-x))


def _softplus(x):
    return np.logaddexp(0.0, x)


def _gelu_tanh(x):
    u = math.sqrt(2 / math.pi) * (x + 0.044715 * x ** 3)
    return x * _sigmoid(2 * u)  # 0.5 * (1 + tanh(u)) without its cancellation


#: intrinsic -> float64 reference, and the extra source arguments after the vector
REFERENCES = {
    "vexp": (np.exp, ""),
    "vexpneg": (lambda x: np.exp(np.minimum(x, 0.0)), ""),  # Softmax's exp of x - max (never positive)
    "vexpsm": (lambda x: np.exp(np.clip(x, -87.0, 0.0)), ""),  # the same, clamped at SILU_LOW
    "vexpm1": (np.expm1, ""),
    "vlog": (np.log, ""),
    "vtanh": (np.tanh, ""),
    "vtanhr": (np.tanh, ""),
    "vsigmoid": (_sigmoid, ""),
    "verf": (lambda x: _erf(x).astype(np.float64), ""),
    "vsilu": (lambda x: x * _sigmoid(x), ""),
    "vgelu": (lambda x: np.where(np.isinf(x) & (x < 0), np.nan, 0.5 * x * _erfc(-x / math.sqrt(2)).astype(np.float64)),
              ""),
    "vgelut": (_gelu_tanh, ""),
    "vsoftplus": (_softplus, ""),
    "vmish": (lambda x: x * np.tanh(_softplus(x)), ""),
    "velu": (lambda x: np.where(x >= 0, x, ELU_ALPHA * np.expm1(x)), f", {ELU_ALPHA}"),
    "vselu": (lambda x: SELU_GAMMA * np.where(x > 0, x, SELU_ALPHA * np.expm1(x)), f", {SELU_ALPHA}, {SELU_GAMMA}"),
}
NAMES = list(REFERENCES)
_KERNELS: dict[int, object] = {}


def _kernel(lanes: int):
    """One compiled function per lane count applying every intrinsic: row k of ``out`` is ``NAMES[k]``,
    the last row ``vprelu`` with per-lane slopes."""
    if lanes not in _KERNELS:
        lines = ["def run(x, slope, out):", f"    for i in range(0, x.size, {lanes}):",
                 f"        v = vload{lanes}(x, i)"]
        lines += [f"        vstore{lanes}(out[{k}], i, {name}{lanes}(v{REFERENCES[name][1]}))"
                  for k, name in enumerate(NAMES)]
        lines.append(f"        vstore{lanes}(out[{len(NAMES)}], i, vprelu{lanes}(v, vload{lanes}(slope, i)))")
        ns = {k: getattr(simd, k) for k in simd.__all__}
        exec("\n".join(lines), ns)  # noqa: S102 - test source built from our own names
        _KERNELS[lanes] = numba.njit(ns["run"])
    return _KERNELS[lanes]


SPECIALS = np.array([0.0, -0.0, np.inf, -np.inf, np.nan, 1e-45, -1e-45, 1.1754944e-38, -1.1754944e-38,
                     88.72283, 88.72284, 89.0, -87.33654, -103.97, -104.0, -110.0, 0.625, -0.625, 0.5, -0.5,
                     4.0, -4.0, 9.0, 10.0, -10.0, 20.0, -20.0, 3.4028235e38, -3.4028235e38], np.float32)
GRID = np.concatenate([np.linspace(-130, 130, 5201), np.linspace(-6, 6, 2401)]).astype(np.float32)


def _check(name: str, x: np.ndarray, y: np.ndarray, ref: np.ndarray) -> None:
    ulps, atol, atol_x = ERROR_BOUNDS[name]
    x64, y64 = x.astype(np.float64), y.astype(np.float64)
    nan_ref = np.isnan(ref)
    bad = np.flatnonzero(np.isnan(y64) != nan_ref)
    assert bad.size == 0, f"{name}: NaN mismatch at x={x[bad[:5]]}: got {y[bad[:5]]}, want {ref[bad[:5]]}"
    ref32 = ref.astype(np.float32)
    inf = np.isinf(ref32)
    bad = np.flatnonzero(inf & (y64 != ref32))
    assert bad.size == 0, f"{name}: overflow mismatch at x={x[bad[:5]]}: got {y[bad[:5]]}, want {ref32[bad[:5]]}"
    fin = ~nan_ref & ~inf
    bound = ulps * 2.0 ** -23 * np.abs(ref[fin]) + atol
    if atol_x:
        bound = bound + atol_x * np.maximum(1.0, np.abs(x64[fin]))
    err = np.abs(y64[fin] - ref[fin])
    bad = np.flatnonzero(~(err <= bound))
    assert bad.size == 0, (f"{name}: error above its bound at x={x[fin][bad[:5]]}: got {y[fin][bad[:5]]}, "
                           f"want {ref[fin][bad[:5]]}")


def _run_all(lanes: int, x: np.ndarray, slope: np.ndarray) -> None:
    pad = -x.size % 128
    x = np.concatenate([x, np.zeros(pad, np.float32)])
    slope = np.concatenate([slope, np.ones(pad, np.float32)])
    out = np.empty((len(NAMES) + 1, x.size), np.float32)
    _kernel(lanes)(x, slope, out)
    x64 = x.astype(np.float64)
    with np.errstate(all="ignore"):
        for k, name in enumerate(NAMES):
            _check(name, x, out[k], REFERENCES[name][0](x64))
        prelu = np.where(x64 >= 0, x64, x64 * slope.astype(np.float64))
        np.testing.assert_array_equal(out[-1], prelu.astype(np.float32))


@pytest.mark.parametrize("lanes", simd.LANES)
def test_math_on_grid_and_specials(lanes: int) -> None:
    x = np.concatenate([SPECIALS, GRID])
    _run_all(lanes, x, np.resize(np.float32([0.25, -2.0, 0.0, 3.5]), x.size))


@pytest.mark.parametrize("lanes", simd.LANES)
@settings(max_examples=15, deadline=None)
@given(bits=st.lists(st.integers(0, 2 ** 32 - 1), min_size=1, max_size=300),
       slope=st.floats(-4, 4, width=32))
def test_math_on_random_bit_patterns(lanes: int, bits: list[int], slope: float) -> None:
    x = np.array(bits, np.uint32).view(np.float32)
    _run_all(lanes, x, np.full(x.size, slope, np.float32))


def test_flop_counts_are_the_functions_arithmetic() -> None:
    """``cnnjit.flops`` charges each transcendental op the float arithmetic of the vector-math function that
    computes it (FMA 2, add / sub / mul / div 1), recounted here from the functions' LLVM IR: the profile's
    "% of peak" of a Tanh or a Softmax stays consistent with the code that runs."""
    from cnnjit import flops
    from cnnjit.compiler.codegen.kernels.epilogue import _VEC_CALLS
    from cnnjit.compiler.codegen.simd_math import arithmetic_flops

    calls = {**_VEC_CALLS, "Gelu": "vgelu", "Elu": "velu", "Selu": "vselu"}
    assert set(flops.TRANSCENDENTAL_FLOPS) <= set(calls)
    for op, n in flops.TRANSCENDENTAL_FLOPS.items():
        assert arithmetic_flops(calls[op]) == n, op
    assert arithmetic_flops("vgelut") == flops.GELU_TANH_FLOPS == flops.step_flops("Gelu", {"approximate": "tanh"})
    assert arithmetic_flops("vexpneg") == arithmetic_flops("vexpsm") == flops.EXP_NEG_FLOPS
    assert flops.step_flops("Relu") == 1 and flops.step_flops("Tanh") == 21


@pytest.mark.parametrize("lanes", simd.WIDTHS)
def test_transposed_load_and_store(lanes: int) -> None:
    """``vloadtr`` gives the columns of a ``lanes x lanes`` block of rows ``stride`` apart (numpy's transpose),
    ``vstoretr`` stores such columns back as rows: a block round-trips, and columns stored as rows are the
    transpose."""
    stride = lanes + 3
    ns = {k: getattr(simd, k) for k in simd.__all__}
    cols = ", ".join(f"c{j}" for j in range(lanes))
    src = "\n".join(["def run(x, y, z, i, s):", f"    {cols} = vloadtr{lanes}(x, i, s)",
                     *[f"    vstore{lanes}(y, {j} * {lanes}, c{j})" for j in range(lanes)],
                     f"    vstoretr{lanes}(z, i, s, ({cols},))"])
    exec(src, ns)  # noqa: S102 - test source built from our own names
    run = numba.njit(ns["run"])
    x = np.arange(stride * lanes + 5, dtype=np.float32)
    y = np.zeros(lanes * lanes, np.float32)
    z = np.full_like(x, -1.0)
    run(x, y, z, 2, stride)
    block = np.stack([x[2 + k * stride: 2 + k * stride + lanes] for k in range(lanes)])
    np.testing.assert_array_equal(y.reshape(lanes, lanes), block.T)
    for k in range(lanes):  # the rows written back in place, nothing between them touched
        np.testing.assert_array_equal(z[2 + k * stride: 2 + k * stride + lanes], block[k])
    assert np.count_nonzero(z != -1.0) == lanes * lanes
