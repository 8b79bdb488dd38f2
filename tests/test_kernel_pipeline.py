"""The short numba pipeline for generated kernels and the memoised typing around our compiles
(``compiler/codegen/pipeline.py``), and the wide (32/64/128-lane) vector values register tiles are
written with. Oracles: numpy on the same inputs, and numba's own default pipeline.
"""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from numba import njit
from numba.core import codegen as numba_codegen
from numba.core import errors as numba_errors
from numba.core.types import functions as numba_functions

from cnnjit.compiler.codegen import pipeline
from cnnjit.compiler.codegen.simd import LANES
from cnnjit.compiler.codegen.simd import __dict__ as simd_ns


def _kernel(src: str):
    """Compile ``src`` (a function ``f``) with the kernel pipeline, intrinsics in scope."""
    ns = dict(simd_ns, np=np, U=np.uint64)
    exec(src, ns)  # noqa: S102 - test source
    return njit(pipeline_class=pipeline.KernelPipeline)(ns["f"])


def test_kernel_pipeline_compiles_loops_and_intrinsics() -> None:
    f = _kernel(
        "def f(x, y, n, a):\n"
        "    for i in range(0, n, 16):\n"
        "        vstoren16(y, i, vfma16(vbcast16(a), vloadn16(x, i, n - i), vzero16()), n - i)\n")
    x = np.arange(37, dtype=np.float32)
    y = np.zeros(37, np.float32)
    with pipeline.fast_typing():
        f(x, y, 37, 2.5)
    np.testing.assert_array_equal(y, x * np.float32(2.5))
    assert "cnnjit_kernel" in next(iter(f.overloads.values())).metadata["pipeline_times"]


def test_kernel_pipeline_falls_back_to_numba_full_pipeline() -> None:
    # 'v' is a vector and then a scalar in a loop: only SSA reconstruction (not in the short pipeline)
    # separates them; the fallback compiles it as plain @njit would
    f = _kernel(
        "def f(a, n):\n"
        "    for i in range(n):\n"
        "        v = vload4(a, 0)\n"
        "        vstore4(a, 4, v)\n"
        "        for j in range(2):\n"
        "            v = a[j + 1]\n"
        "            a[j] = v\n"
        "    return a[0]\n")
    before = pipeline.fallbacks
    a = np.arange(8, dtype=np.float32)
    expected = a.copy()
    for _ in range(2):
        expected[4:8] = expected[0:4]
        for j in range(2):
            expected[j] = expected[j + 1]
    assert f(a, 2) == expected[0]
    np.testing.assert_array_equal(a, expected)
    assert pipeline.fallbacks == before + 1
    assert "nopython" in next(iter(f.overloads.values())).metadata["pipeline_times"]


def test_fast_typing_restores_numba_even_after_an_error() -> None:
    original = numba_functions.BaseFunction.get_call_type
    colors = numba_errors._termcolor_inst
    module_colors = [m._termcolor for m in pipeline._COLOR_MODULES]
    assert numba_functions in pipeline._COLOR_MODULES  # where failed templates' messages are built
    with pytest.raises(RuntimeError):
        with pipeline.fast_typing():
            with pipeline.fast_typing():  # re-entrant: the inner exit keeps the outer's patch
                pass
            assert numba_functions.BaseFunction.get_call_type is not original
            assert numba_codegen.CPUCodeLibrary._optimize_functions is pipeline._lean_optimize_functions
            assert all(isinstance(m._termcolor, pipeline._PlainColors) for m in pipeline._COLOR_MODULES)
            raise RuntimeError("boom")
    assert numba_functions.BaseFunction.get_call_type is original
    assert numba_codegen.CPUCodeLibrary._optimize_functions is pipeline._ORIGINAL_OPTIMIZE_FUNCTIONS
    assert numba_errors._termcolor_inst is colors
    assert [m._termcolor for m in pipeline._COLOR_MODULES] == module_colors


def test_memoised_typing_gives_numbas_types() -> None:
    """The same mixed-type arithmetic compiled with and without the memo: same result types and values."""
    src = ("def f(a, i, u, s):\n"
           "    x = a[U(i)] * s + i // 3 - u\n"
           "    y = max(i, u) + min(s, 2.0)\n"
           "    return x, y, i % 5, -i, abs(i - 9)\n")
    args = (np.arange(10, dtype=np.float32), 7, np.uint64(4), np.float32(1.5))
    plain = _kernel(src)
    memo = _kernel(src)
    want = plain(*args)
    with pipeline.fast_typing():
        with pipeline.fast_typing():
            memo(*args)  # the first compile fills the memo, the second kernel reads it
        got = _kernel(src)(*args)
    assert [type(v) for v in got] == [type(v) for v in want]
    assert got == want
    plain_sig = next(iter(plain.overloads.values())).signature
    assert next(iter(memo.overloads.values())).signature == plain_sig


@settings(max_examples=20, deadline=None)
@given(lanes=st.sampled_from([n for n in LANES if n > 16]), n=st.integers(0, 140), a=st.floats(-4, 4),
       seed=st.integers(0, 2**16))
def test_wide_lane_intrinsics_match_numpy(lanes: int, n: int, a: float, seed: int) -> None:
    """A 32/64/128-lane value: masked load, broadcast FMA, max, masked store of the first ``n`` lanes."""
    f = _WIDE[lanes]
    rng = np.random.default_rng(seed)
    x = rng.standard_normal(lanes + 3).astype(np.float32)
    y = rng.standard_normal(lanes + 3).astype(np.float32)
    acc = rng.standard_normal(lanes + 3).astype(np.float32)
    want = y.copy()
    k = min(n, lanes)
    fma = np.float32(a) * x[1:1 + k].astype(np.float64) + acc[2:2 + k]
    want[1:1 + k] = np.maximum(fma.astype(np.float32), 0)
    f(x, acc, y, n, np.float32(a))
    np.testing.assert_allclose(y, want, rtol=1e-6, atol=1e-6)


def _wide(lanes: int):
    return _kernel(
        "def f(x, acc, y, n, a):\n"
        f"    v = vfma{lanes}(vbcast{lanes}(a), vloadn{lanes}(x, 1, n), vload{lanes}(acc, 2))\n"
        f"    vstoren{lanes}(y, 1, vmax{lanes}(v, vzero{lanes}()), n)\n")


_WIDE = {n: _wide(n) for n in LANES if n > 16}


def _quads(lanes: int):
    return _kernel(
        "def f(x, y, i):\n"
        f"    o = vtrq{lanes}(" + ", ".join(f"vload{lanes}(x, i + {j * lanes})" for j in range(4)) + ")\n"
        + "".join(f"    vstore{lanes}(y, {k * lanes}, o[{k}])\n" for k in range(4)))


_QUADS = {n: _quads(n) for n in LANES}


@settings(max_examples=10, deadline=None)
@given(lanes=st.sampled_from(LANES), shift=st.integers(0, 5), seed=st.integers(0, 2**16))
def test_quad_transpose_matches_numpy(lanes: int, shift: int, seed: int) -> None:
    """``vtrq``: output ``k`` lane ``4 q + j`` is input ``j`` lane ``4 q + k`` at every width (4x4 blocks
    within each 128-bit group, as the Winograd kernel's tiles use it), and applied twice it is the identity."""
    rng = np.random.default_rng(seed)
    x = rng.standard_normal(4 * lanes + shift).astype(np.float32)
    y = np.zeros(4 * lanes, np.float32)
    _QUADS[lanes](x, y, shift)
    blocks = x[shift:].reshape(4, lanes // 4, 4)  # [input j, group q, lane k in the group]
    np.testing.assert_array_equal(y, blocks.transpose(2, 1, 0).reshape(-1))
    back = np.zeros_like(y)
    _QUADS[lanes](y, back, 0)
    np.testing.assert_array_equal(back, x[shift:])


def _keep(lanes: int):
    return _kernel(
        "def f(x, y, n):\n"
        f"    vstore{lanes}(y, 0, vkeep{lanes}(vload{lanes}(x, 0), n))\n")


_KEEP = {n: _keep(n) for n in LANES}


@settings(max_examples=15, deadline=None)
@given(lanes=st.sampled_from(LANES), n=st.integers(-2, 130), nans=st.booleans(), seed=st.integers(0, 2**16))
def test_vkeep_zeroes_the_lanes_past_count(lanes: int, n: int, nans: bool, seed: int) -> None:
    """``vkeep``: lanes below ``n`` as loaded, the rest exactly 0.0 even where they held NaN or inf (a
    select, not a multiply), at every width; the whole vector is stored over what ``y`` held."""
    rng = np.random.default_rng(seed)
    x = rng.standard_normal(lanes).astype(np.float32)
    if nans:
        x[::3] = np.nan
        x[1::3] = np.inf
    y = np.full(lanes, 7.0, np.float32)
    _KEEP[lanes](x, y, n)
    want = np.where(np.arange(lanes) < n, x, np.float32(0.0))
    np.testing.assert_array_equal(y, want)
    assert not np.signbit(y[np.arange(lanes) >= n]).any()


_AXPY = ("def f(x, y, n, a):\n"
         "    for i in range(0, n, 8):\n"
         "        m = min(8, n - i)\n"
         "        vstoren8(y, i, vfma8(vbcast8(a), vloadn8(x, i, m), vloadn8(y, i, m)), m)\n")


@pytest.mark.parametrize("prepass", [False, True])
def test_function_prepass_on_or_off_computes_numpys_result(monkeypatch, prepass) -> None:
    """A kernel compiled under ``fast_typing`` with numba's per-function pre-pass off (the default) or on
    (one pass manager, definitions only) computes numpy's result; on, the passes ran on the kernel's
    definitions and on none of its declarations."""
    monkeypatch.setattr(pipeline, "FUNCTION_PREPASS", prepass)
    ran: list[tuple[str, bool]] = []
    real = numba_codegen.JITCPUCodegen._function_pass_manager

    def counting(self, **kwargs):
        fpm, pb = real(self, **kwargs)

        class Spy:
            def run(self, func, pb_):
                ran.append((func.name, func.is_declaration))
                return fpm.run(func, pb_)

        return Spy(), pb

    monkeypatch.setattr(numba_codegen.JITCPUCodegen, "_function_pass_manager", counting)
    f = _kernel(_AXPY)
    x = np.linspace(-3, 3, 29, dtype=np.float32)
    y = np.arange(29, dtype=np.float32)
    expected = np.float32(1.75) * x + y
    with pipeline.fast_typing():
        f(x, y, 29, 1.75)
    np.testing.assert_allclose(y, expected, rtol=1e-6)
    if prepass:
        assert ran and not any(decl for _, decl in ran)
        assert any("f" in name for name, _ in ran)
    else:
        assert ran == []
