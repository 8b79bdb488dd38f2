"""Gemm and MatMul with a constant B on packed column panels (``packed_gemm`` / ``packed_matmul``), and a 1x1
Conv on a 1x1 map as the same GEMV (``packed_fc``).

Oracle: numpy in float64 (``reference_np``). The property tests force the packed variant at every vector
width over rows (whole register tiles and leftovers), columns (whole panels and tails), transB, alpha,
beta, C and a fused activation / residual, and assert the variant ran; the choice tests check that a wide
constant-B product takes the packed variant by default and a small one keeps the row-major micro-kernel.
"""

from __future__ import annotations

import numpy as np
import pytest
import reference_np as ref
from hypothesis import given
from hypothesis import strategies as st
from kernel_cases import make_model, property_settings
from onnx import helper
from test_cblock import ACTS, _layer
from test_cblock import _check as check_variant
from test_simd_widths import WIDTHS

import cnnjit
from cnnjit.compiler.codegen.kernel import Target, choose
from cnnjit.compiler.codegen.kernels.packed_gemm import (
    CHAINS,
    MIN_MACS,
    fc_conv_applies,
    gemm_tile,
    pack_panels,
    panel_group,
    row_tiles,
)
from cnnjit.compiler.codegen.simd import host_vector_registers


def _compile(model, op: str, width: int, variant: str | None):
    compiled = cnnjit.compile(model, vector_width=width, variants={op: variant} if variant else None)
    ran = {c.variant for c in compiled._default_spec().program.calls if c.op == op}
    return compiled, ran


def _cols(m: int, k: int, n: int) -> int:
    """``n`` raised so the product has at least ``MIN_MACS`` multiply-adds (the packed variants' floor)."""
    return max(n, -(-MIN_MACS // (m * k)))


def _act(y: np.ndarray, act: str | None) -> np.ndarray:
    return {None: y, "Relu": np.maximum(y, 0), "Sigmoid": 1 / (1 + np.exp(-y)), "Tanh": np.tanh(y)}[act]


@pytest.mark.parametrize("width", WIDTHS)
@property_settings(5)
@given(m=st.integers(1, 14), k=st.integers(1, 70), n=st.integers(1, 90), trans_b=st.integers(0, 1),
       c_kind=st.sampled_from(["none", "vector", "scalar"]), alpha=st.sampled_from([1.0, 0.5]),
       beta=st.sampled_from([1.0, 2.0]), act=st.sampled_from([None, "Relu", "Sigmoid"]), seed=st.integers(0, 2**16))
def test_packed_gemm_at_width(width, m, k, n, trans_b, c_kind, alpha, beta, act, seed) -> None:
    n = _cols(m, k, n)
    rng = np.random.default_rng(seed)
    a = rng.standard_normal((m, k)).astype(np.float32)
    b = rng.standard_normal((n, k) if trans_b else (k, n)).astype(np.float32)
    inits, ins = {"b": b}, ["a", "b"]
    c = None
    if c_kind != "none":
        c = rng.standard_normal(n if c_kind == "vector" else 1).astype(np.float32)
        inits["c"], ins = c, ins + ["c"]
    y = _act(ref.gemm(a, b, c, alpha=alpha, beta=beta, trans_b=trans_b), act)
    nodes = [helper.make_node("Gemm", ins, ["g"], alpha=alpha, beta=beta, transB=trans_b)]
    if act:
        nodes.append(helper.make_node(act, ["g"], ["y"]))
    model = make_model(nodes, {"a": a}, {"y" if act else "g": y.shape}, inits)
    compiled, ran = _compile(model, "Gemm", width, "packed_gemm")
    assert ran == {"packed_gemm"}
    np.testing.assert_allclose(compiled(a), y, rtol=1e-4, atol=2e-5 * np.sqrt(k))


@pytest.mark.parametrize("width", WIDTHS)
@property_settings(5)
@given(batch=st.sampled_from([(), (1,), (3,), (2, 2)]), m=st.integers(1, 9), k=st.integers(1, 40),
       n=st.integers(1, 70), b_batch=st.booleans(), residual=st.sampled_from([None, "Add", "Mul"]),
       act=st.sampled_from([None, "Relu", "Tanh", "PRelu"]), seed=st.integers(0, 2**16))
def test_packed_matmul_at_width(width, batch, m, k, n, b_batch, residual, act, seed) -> None:
    """A of any rank (its batch axes fold into rows) against one constant B (with unit batch axes or not)."""
    rows = int(np.prod(batch, dtype=np.int64)) * m
    n = _cols(rows, k, n)
    rng = np.random.default_rng(seed)
    a = rng.standard_normal(batch + (m, k)).astype(np.float32)
    b = rng.standard_normal(((1,) if b_batch else ()) + (k, n)).astype(np.float32)
    y = ref.matmul(a, b)
    feeds, last = {"a": a}, "mm"
    nodes = [helper.make_node("MatMul", ["a", "b"], ["mm"])]
    if residual:
        r = rng.standard_normal(y.shape).astype(np.float32)
        feeds["r"] = r
        nodes.append(helper.make_node(residual, ["mm", "r"], ["res"]))
        last, y = "res", y + r if residual == "Add" else y * r
    inits = {"b": b}
    if act == "PRelu":  # one slope per column
        inits["s"] = rng.uniform(-1, 1, n).astype(np.float32)
        nodes.append(helper.make_node("PRelu", [last, "s"], ["act"]))
        last, y = "act", np.where(y < 0, y * inits["s"], y)
    elif act:
        nodes.append(helper.make_node(act, [last], ["act"]))
        last, y = "act", _act(y, act)
    model = make_model(nodes, feeds, {last: y.shape}, inits)
    compiled, ran = _compile(model, "MatMul", width, "packed_matmul")
    assert ran == {"packed_matmul"}
    (mm,) = [n for n in compiled.ir.nodes if n.op == "MatMul"]
    assert [s.op for s in mm.attrs["post"]] == [op for op in (residual, act) if op]  # all fused
    got = compiled.run(None, feeds)[0]
    np.testing.assert_allclose(got, y, rtol=1e-4, atol=2e-5 * np.sqrt(k))


def test_pack_panels_layout() -> None:
    """Panel ``j`` holds columns ``j*nc .. j*nc + nc`` of every row, row after row, zeros past N."""
    b = np.arange(3 * 5, dtype=np.float32).reshape(3, 5)
    p = pack_panels(b, 4).reshape(2, 3, 4)
    np.testing.assert_array_equal(p[0], b[:, :4])
    np.testing.assert_array_equal(p[1, :, 0], b[:, 4])
    assert not p[1, :, 1:].any()


@pytest.mark.parametrize("registers, width, tile", [(16, 8, (6, 2)), (32, 16, (8, 2)), (32, 4, (8, 2))])
def test_tile_fits_register_file(registers, width, tile) -> None:
    mr, nr = gemm_tile(Target(vector_width=width, vector_registers=registers))
    assert (mr, nr) == tile
    assert mr * nr + nr + 1 <= registers


@pytest.mark.parametrize("width", WIDTHS)
@pytest.mark.parametrize("m", [1, 2, 3])
def test_few_rows_span_panel_groups(width: int, m: int) -> None:
    """A product of fewer rows than a short tile (a batch-1 classifier) runs ``panel_group`` panels per tile:
    whole groups, then single panels and the tail columns; checked against numpy in float64."""
    target = Target(vector_width=width, vector_registers=host_vector_registers(width))  # what compile uses
    mr, nr = gemm_tile(target)
    g = panel_group(m, nr, target.vector_registers)
    assert g == 1 or (m * nr * g <= CHAINS + m * nr and m * nr * g + nr + m <= target.vector_registers)
    nc = nr * width
    k = 33
    n = max(-(-MIN_MACS // (m * k)), (2 * g + 1) * nc + 5)  # two groups, a single panel, tail columns
    rng = np.random.default_rng(m * width)
    a = rng.standard_normal((m, k)).astype(np.float32)
    b = rng.standard_normal((k, n)).astype(np.float32)
    c = rng.standard_normal(n).astype(np.float32)
    y = np.maximum(ref.gemm(a, b, c), 0)
    model = make_model([helper.make_node("Gemm", ["a", "b", "c"], ["g"]), helper.make_node("Relu", ["g"], ["y"])],
                       {"a": a}, {"y": y.shape}, {"b": b, "c": c})
    compiled, ran = _compile(model, "Gemm", width, "packed_gemm")
    assert ran == {"packed_gemm"}
    np.testing.assert_allclose(compiled(a), y, rtol=1e-4, atol=2e-5 * np.sqrt(k))
    # 16 registers (AVX2): one row spans 4 panels (8 chains), two rows 2, three rows 1; 32 (AVX-512): 4, 2, 2
    assert [panel_group(r, 2, 16) for r in (1, 2, 3)] == [4, 2, 1]
    assert [panel_group(r, 2, 32) for r in (1, 2, 3)] == [4, 2, 2]


def test_wide_constant_b_takes_packed_panels() -> None:
    """The default choice: a classifier-sized Gemm and a batched MatMul with a constant B go packed; a Gemm
    below ``MIN_MACS`` keeps the row-major micro-kernel."""
    rng = np.random.default_rng(3)
    a = rng.standard_normal((7, 96)).astype(np.float32)
    b = rng.standard_normal((700, 96)).astype(np.float32)
    model = make_model([helper.make_node("Gemm", ["a", "b"], ["y"], transB=1)], {"a": a}, {"y": (7, 700)}, {"b": b})
    compiled, ran = _compile(model, "Gemm", 8, None)
    assert ran == {"packed_gemm"}
    np.testing.assert_allclose(compiled(a), ref.gemm(a, b, trans_b=1), rtol=1e-4, atol=2e-4)
    a3 = rng.standard_normal((2, 5, 96)).astype(np.float32)
    model = make_model([helper.make_node("MatMul", ["a", "b"], ["y"])], {"a": a3}, {"y": (2, 5, 700)},
                       {"b": b.T.copy()})
    compiled, ran = _compile(model, "MatMul", 8, None)
    assert ran == {"packed_matmul"}
    np.testing.assert_allclose(compiled(a3), ref.matmul(a3, b.T), rtol=1e-4, atol=2e-4)
    small = make_model([helper.make_node("Gemm", ["a", "b"], ["y"], transB=1)], {"a": a[:2, :8]}, {"y": (2, 10)},
                       {"b": b[:10, :8]})
    assert _compile(small, "Gemm", 8, None)[1] == {"simd_gemm"}


@pytest.mark.parametrize("rows, mr, tiles", [(32, 6, (4, [4, 4])), (30, 6, (5, [])), (35, 6, (5, [5])),
                                             (2, 6, (0, [2])), (9, 8, (0, [5, 4])), (12, 8, (1, [4]))])
def test_row_tiles_cover_the_rows(rows, mr, tiles) -> None:
    """Every row in exactly one tile; no tile of fewer than 4 rows unless A has fewer rows than a tile."""
    full, tail = row_tiles(rows, mr)
    assert (full, tail) == tiles
    assert full * mr + sum(tail) == rows
    assert all(t >= 4 for t in tail) or rows < mr


@pytest.mark.parametrize("width", WIDTHS)
@property_settings(5)
@given(n=st.sampled_from([1, 1, 2, 5]), c=st.integers(1, 300), m=st.integers(1, 200),
       act=st.sampled_from(ACTS), residual=st.booleans(), seed=st.integers(0, 2**16))
def test_packed_fc_matches_reference(width: int, n: int, c: int, m: int, act, residual: bool, seed: int) -> None:
    """A 1x1 Conv on a 1x1 map (a squeeze-excite FC) through ``packed_fc``, forced at every width: images as
    rows (one, a register tile's leftovers), channels with panel tails, fused activations and a residual in
    registers (``test_cblock``'s check: the reference, the variant that ran, no scalar epilogue)."""
    check_variant(dict(n=n, c=c, m=m, g=1, k=1, s=1, d=1, h=1, w=1, pads=[0] * 4, act=act, residual=residual,
                       seed=seed), width, "packed_fc")


@pytest.mark.parametrize("target", [Target(vector_width=8, vector_registers=16),
                                    Target(vector_width=16, vector_registers=32)], ids=["avx2", "avx512"])
def test_packed_fc_choice(target: Target) -> None:
    """The squeeze-excite FCs and a Conv classifier head take ``packed_fc`` by default; a 1x1 conv on a map of
    more than one pixel, or grouped, does not apply."""
    assert choose(_layer(576, 144, 1, 1, 1), target).name == "packed_fc"
    assert choose(_layer(24, 96, 1, 1, 1), target).name == "packed_fc"
    assert choose(_layer(1280, 1000, 1, 1, 1), target).name == "packed_fc"
    assert not fc_conv_applies(_layer(576, 144, 2, 1, 1), target)
    assert not fc_conv_applies(_layer(576, 144, 1, 1, 1, group=2), target)
