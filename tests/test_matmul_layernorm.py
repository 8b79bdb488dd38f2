"""MatMul of any rank on the GEMM micro-kernel (``simd_matmul``), LayerNormalization (the opset-17 op and
the decomposed pattern ``fuse_layernorm`` recognises) and the numba schedule in compiled segments.

Oracles: numpy (``reference_np``, float64) for MatMul, onnxruntime for LayerNormalization and for the
decomposed pattern; each kernel test runs at every vector width and asserts which variant ran.
"""

from __future__ import annotations

import numpy as np
import pytest
import reference_np as ref
from hypothesis import given
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp
from kernel_cases import Case, make_model, property_settings, run_onnxruntime
from onnx import helper
from test_simd_widths import WIDTHS, compile_variant

import cnnjit
from cnnjit.compiler.codegen import emit

ATOL = 2e-5


def _ran(model, op: str) -> set[str]:
    return {c.variant for c in model._default_spec().program.calls if c.op == op}


# ---------------------------------------------------------------------------------------------------------
# MatMul
# ---------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("width", WIDTHS)
@property_settings(4)
@given(shapes=hnp.mutually_broadcastable_shapes(signature="(m,k),(k,n)->(m,n)", min_dims=0, max_dims=2,
                                                min_side=1, max_side=5),
       mkn=st.tuples(st.integers(1, 9), st.integers(1, 20), st.integers(1, 40)),
       b_const=st.booleans(), act=st.sampled_from([None, "Relu", "Sigmoid"]), residual=st.booleans(),
       seed=st.integers(0, 2**16))
def test_simd_matmul_at_width(width, shapes, mkn, b_const, act, residual, seed) -> None:
    """Batched, broadcast MatMul (constant B or two activations) with a fused activation and residual."""
    m, k, n = mkn
    sa = shapes.input_shapes[0][:-2] + (m, k)
    sb = shapes.input_shapes[1][:-2] + (k, n)
    rng = np.random.default_rng(seed)
    a, b = rng.standard_normal(sa).astype(np.float32), rng.standard_normal(sb).astype(np.float32)
    y = ref.matmul(a, b)
    feeds, inits = {"a": a}, {}
    (inits if b_const else feeds)["b"] = b
    nodes = [helper.make_node("MatMul", ["a", "b"], ["mm"])]
    last = "mm"
    if residual:
        r = rng.standard_normal(y.shape).astype(np.float32)
        feeds["r"] = r
        nodes.append(helper.make_node("Add", [last, "r"], ["res"]))
        last, y = "res", y + r
    if act:
        nodes.append(helper.make_node(act, [last], ["act"]))
        last, y = "act", np.maximum(y, 0) if act == "Relu" else 1 / (1 + np.exp(-y))
    model = make_model(nodes, feeds, {last: y.shape}, inits)
    compiled = compile_variant(model, "MatMul", width, force="simd_matmul")
    got = compiled.run(None, feeds)[0]
    np.testing.assert_allclose(got, y, rtol=1e-4, atol=ATOL * np.sqrt(k), err_msg=f"{sa} @ {sb}")


@pytest.mark.parametrize("width", WIDTHS)
def test_simd_matmul_wide_columns_at_width(width) -> None:
    """A column count large enough for the micro-kernel's column blocks (a vocabulary projection) and a
    row count that is not a multiple of the register tile: one call for the flattened batch."""
    rng = np.random.default_rng(1)
    a = rng.standard_normal((2, 3, 37)).astype(np.float32)
    b = rng.standard_normal((37, 3600)).astype(np.float32)
    model = make_model([helper.make_node("MatMul", ["a", "b"], ["y"])], {"a": a}, {"y": (2, 3, 3600)}, {"b": b})
    compiled = compile_variant(model, "MatMul", width, force="simd_matmul")
    assert len([c for c in compiled._default_spec().program.calls if c.op == "MatMul"]) == 1
    np.testing.assert_allclose(compiled(a), ref.matmul(a, b), rtol=1e-4, atol=ATOL * np.sqrt(37))


def test_matmul_vector_operand_stays_scalar() -> None:
    """A 1-D operand (matrix-vector product) is not the micro-kernel's: the scalar MatMul computes it."""
    rng = np.random.default_rng(2)
    a, b = rng.standard_normal((3, 5)).astype(np.float32), rng.standard_normal(5).astype(np.float32)
    compiled = cnnjit.compile(make_model([helper.make_node("MatMul", ["a", "b"], ["y"])], {"a": a}, {"y": (3,)},
                                         {"b": b}))
    assert _ran(compiled, "MatMul") == {"matmul"}
    np.testing.assert_allclose(compiled(a), ref.matmul(a, b), rtol=1e-4, atol=ATOL)


# ---------------------------------------------------------------------------------------------------------
# LayerNormalization
# ---------------------------------------------------------------------------------------------------------
@st.composite
def layernorm_cases(draw):
    shape = draw(hnp.array_shapes(min_dims=1, max_dims=4, min_side=1, max_side=7))
    if draw(st.booleans()):
        shape = shape[:-1] + (draw(st.integers(1, 70)),)  # rows longer than a vector, with a tail
    r = len(shape)
    axis = draw(st.integers(-r, r - 1))
    norm = shape[axis % r:]
    seed = draw(st.integers(0, 2**16))
    rng = np.random.default_rng(seed)
    x = (rng.standard_normal(shape) * 3 + rng.standard_normal()).astype(np.float32)
    scale_shape = draw(st.sampled_from([norm, norm[-1:], (1,)]))
    scale = rng.standard_normal(scale_shape).astype(np.float32)
    bias = rng.standard_normal(norm).astype(np.float32) if draw(st.booleans()) else None
    runtime_params = draw(st.booleans())
    if runtime_params:
        scale = np.ascontiguousarray(np.broadcast_to(scale, norm))
    eps = draw(st.sampled_from([1e-5, 1e-3, 0.5]))
    feeds = {"x": x}
    params = {"s": scale, **({"b": bias} if bias is not None else {})}
    inits = {} if runtime_params else params
    if runtime_params:
        feeds.update(params)
    node = helper.make_node("LayerNormalization", ["x", "s"] + (["b"] if bias is not None else []), ["y"],
                            axis=axis, epsilon=eps)
    model = make_model([node], feeds, {"y": shape}, inits)
    return Case(f"LayerNorm {shape} axis={axis} scale{scale.shape} bias={bias is not None} eps={eps} "
                f"runtime={runtime_params} seed={seed}", model, feeds, [])


@pytest.mark.parametrize("width", WIDTHS)
@property_settings(8)
@given(case=layernorm_cases())
def test_layernorm_at_width(width, case) -> None:
    """The LayerNormalization kernel against onnxruntime, every vector width."""
    expected = run_onnxruntime(case)[0]
    compiled = compile_variant(case.model, "LayerNormalization", width, expect="layernorm")
    got = compiled.run(None, case.feeds)[0]
    np.testing.assert_allclose(got, expected, rtol=1e-4, atol=2e-5, err_msg=case.desc)


def test_layernorm_statistics_outputs_are_refused() -> None:
    """A model that uses LayerNormalization's Mean output gets a clear cnnjit error naming the output."""
    x = np.ones((2, 4), np.float32)
    node = helper.make_node("LayerNormalization", ["x", "s"], ["y", "mean"], axis=-1)
    model = make_model([node], {"x": x}, {"y": (2, 4), "mean": (2, 1)}, {"s": np.ones(4, np.float32)})
    with pytest.raises(cnnjit.CnnjitError, match="output 1"):
        cnnjit.compile(model)


def test_layernorm_runtime_broadcast_scale_is_refused() -> None:
    """A run-time scale that would need broadcasting gets a clear cnnjit error, not a crash."""
    x, s = np.ones((2, 3, 4), np.float32), np.ones(4, np.float32)
    node = helper.make_node("LayerNormalization", ["x", "s"], ["y"], axis=1)
    with pytest.raises(cnnjit.CnnjitError, match="run-time scale or bias"):
        cnnjit.compile(make_model([node], {"x": x, "s": s}, {"y": (2, 3, 4)}))


def _decomposed(shape: tuple[int, ...], axes: list[int], square: str, affine: bool, extra_user: bool):
    """The exporters' decomposed layer norm over trailing ``axes`` (opset 17: axes as an attribute)."""
    rng = np.random.default_rng(len(shape) + len(axes))
    norm = tuple(shape[a] for a in axes)
    inits = {"eps": np.array(1e-5, np.float32), "two": np.array(2.0, np.float32),
             "g": rng.standard_normal(norm).astype(np.float32), "bt": rng.standard_normal(norm[-1:]).astype(np.float32)}
    nodes = [helper.make_node("ReduceMean", ["x"], ["m"], axes=axes),
             helper.make_node("Sub", ["x", "m"], ["d"]),
             helper.make_node(square, ["d", "two" if square == "Pow" else "d"], ["p"]),
             helper.make_node("ReduceMean", ["p"], ["v"], axes=axes),
             helper.make_node("Add", ["v", "eps"], ["ve"]),
             helper.make_node("Sqrt", ["ve"], ["sd"]),
             helper.make_node("Div", ["d", "sd"], ["n"])]
    out = {"n": shape}
    if affine:
        nodes += [helper.make_node("Mul", ["n", "g"], ["ng"]), helper.make_node("Add", ["ng", "bt"], ["y"])]
        out = {"y": shape}
    if extra_user:  # the centred input is also a graph output: the pattern must not be fused
        out["d"] = shape
    x = (rng.standard_normal(shape) * 2 + 1).astype(np.float32)
    return make_model(nodes, {"x": x}, out, inits), {"x": x}


@pytest.mark.parametrize("shape,axes,square,affine", [((1, 6, 40), [2], "Pow", True), ((3, 4, 5), [1, 2], "Mul", True),
                                                      ((2, 33), [1], "Pow", False)])
def test_fuse_layernorm_pass(shape, axes, square, affine) -> None:
    """The decomposed pattern becomes one LayerNormalization node (nothing of it left) and matches
    onnxruntime running the decomposed graph."""
    model, feeds = _decomposed(shape, axes, square, affine, extra_user=False)
    compiled = cnnjit.compile(model)
    ops = [n.op for n in compiled.ir.nodes]
    assert ops == ["LayerNormalization"], ops
    assert _ran(compiled, "LayerNormalization") == {"layernorm"}
    expected = run_onnxruntime(Case("", model, feeds, []))
    np.testing.assert_allclose(compiled.run(None, feeds)[0], expected[0], rtol=1e-4, atol=2e-5)


def test_fuse_layernorm_leaves_shared_intermediates() -> None:
    """When an intermediate of the pattern is used elsewhere, nothing is fused and the results stay right."""
    model, feeds = _decomposed((2, 3, 8), [2], "Pow", True, extra_user=True)
    compiled = cnnjit.compile(model)
    assert "LayerNormalization" not in [n.op for n in compiled.ir.nodes]
    expected = run_onnxruntime(Case("", model, feeds, []))
    for got, exp in zip(compiled.run(None, feeds), expected, strict=True):
        np.testing.assert_allclose(got, exp, rtol=1e-4, atol=2e-5)


# ---------------------------------------------------------------------------------------------------------
# the numba schedule in segments
# ---------------------------------------------------------------------------------------------------------
def test_segments_cover_the_schedule() -> None:
    for n, size in [(1, 5), (5, 5), (6, 5), (379, 120), (1000, 7)]:
        parts = emit.segments(n, size)
        assert parts[0][0] == 0 and parts[-1][1] == n
        assert all(a < b and b - a <= size for a, b in parts)
        assert all(p[1] == q[0] for p, q in zip(parts, parts[1:]))
        assert len(parts) == -(-n // size)


def test_step_segments_cover_the_parallel_schedule() -> None:
    """A parallel schedule's segments (``threads.step_segments``) are whole steps in order, covering them all,
    as many as the serial schedule of as many calls would have; none ends on more than ``size`` calls past
    where the even split would (a step's parts stay together)."""
    from cnnjit.compiler.codegen.threads import Step, step_segments

    rng = np.random.default_rng(1)
    for n, size in [(1, 5), (5, 5), (7, 5), (407, 200), (300, 7)]:
        first, steps = 0, []
        for _ in range(n):
            parts = int(rng.choice([1, 1, 2, 4]))
            steps.append(Step(first, parts, ()))
            first += parts
        spans = step_segments(steps, size)
        assert spans[0][0] == 0 and spans[-1][1] == n
        assert all(a < b for a, b in spans) and all(p[1] == q[0] for p, q in zip(spans, spans[1:]))
        assert len(spans) == -(-first // size)
        calls = [sum(st.parts for st in steps[a:b]) for a, b in spans]
        assert max(calls) <= -(-first // len(spans)) + 2 * max(st.parts for st in steps)


def test_large_schedules_compile_with_numba() -> None:
    """No Python-schedule fallback above a call count (one thread)."""
    assert emit.choose_entry("auto", 5000, 1) == "numba"
    assert emit.choose_entry("auto", 2, 1) == "python"


def test_segmented_entry_runs_like_one(monkeypatch) -> None:
    """A schedule split into several compiled segments computes what the Python schedule computes."""
    rng = np.random.default_rng(3)
    x = rng.standard_normal((2, 8)).astype(np.float32)
    nodes, inits, last = [], {}, "x"
    for i in range(9):
        inits[f"w{i}"] = (rng.standard_normal((8, 8)) / 3).astype(np.float32)
        nodes += [helper.make_node("MatMul", [last, f"w{i}"], [f"m{i}"]),
                  helper.make_node("Tanh", [f"m{i}"], [f"t{i}"])]
        last = f"t{i}"
    model = make_model(nodes, {"x": x}, {last: (2, 8)}, inits)
    monkeypatch.setattr(emit, "SEGMENT_CALLS", 4)
    seg = cnnjit.compile(model, entry="numba")
    program = seg._default_spec().program
    assert program.meta["segments"] == len(emit.segments(len(program.calls), 4)) > 1
    one = cnnjit.compile(model, entry="python")
    np.testing.assert_allclose(seg(x), one(x), rtol=1e-6, atol=1e-6)
