"""The depthwise kernels' multi-row sweep (``simd_depthwise.choose_sweep``) and whole-vector stores.

* ``choose_sweep`` keeps every sweep inside the register budget it is given, at most the plane's rows.
* Property test: ``simd_depthwise`` against the numpy reference (``reference_np.conv``) with the register
  budget of AVX2 (16), AVX-512 (32) and a small one (8), so both the resident-weight sweep and the
  per-column broadcast sweep run, each with several accumulators per row and a remainder band; the test
  asserts which sweep the node got and which variant ran.
* The whole-vector stores of short row tails never write past the call's output (the kernel called on a
  buffer with a sentinel after it), and a layer split over threads (each part writing its channels while
  the others do) matches the reference.
"""

from __future__ import annotations

import numpy as np
import pytest
import reference_np as ref
from hypothesis import given, settings
from onnx import TensorProto, helper, numpy_helper
from test_simd_widths import _run_conv, depthwise_cases

import cnnjit
from cnnjit.compiler import stages
from cnnjit.compiler.codegen.build import load_kernel
from cnnjit.compiler.codegen.kernel import Target
from cnnjit.compiler.codegen.kernels.simd_depthwise import (
    MAX_ROWS,
    choose_sweep,
    gen_simd_depthwise,
    sweeps,
)


@pytest.mark.parametrize("registers", [8, 16, 32])
def test_sweep_fits_the_registers(registers: int) -> None:
    for kh in (1, 2, 3, 5, 7):
        for sh in (1, 2):
            for oh in range(1, 20):
                s = choose_sweep(oh, kh, kh, sh, 1, registers)
                assert 1 <= s.rows <= min(oh, MAX_ROWS) and 1 <= s.accs <= kh
                need = (kh * kh if s.resident else kh) + s.rows * s.accs + 2
                if kh + 3 <= registers:  # some sweep fits: the chosen one does
                    assert need <= registers, (kh, sh, oh, s)


def test_sweep_uses_the_register_file() -> None:
    """3x3 weights stay in registers on 32 of them; 5x5 and 7x7 ones do not fit 16 beside the rows; more rows
    on more registers."""
    assert choose_sweep(56, 3, 3, 1, 1, 32).resident
    assert not choose_sweep(56, 5, 5, 1, 1, 16).resident
    assert not choose_sweep(7, 7, 7, 1, 1, 16).resident
    assert choose_sweep(56, 3, 3, 1, 1, 16).rows >= 4
    few = choose_sweep(2, 5, 5, 1, 1, 16)  # two rows: more accumulators per row (independent chains)
    assert few.rows == 2 and few.accs > 1


@pytest.mark.parametrize("registers", [8, 32])  # (16: test_simd_widths at width 8)
@settings(max_examples=8, deadline=None)
@given(case=depthwise_cases())
def test_depthwise_sweeps_at_register_budget(registers: int, case) -> None:
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(stages, "host_vector_registers", lambda width=None: registers)
        model = _run_conv(case, 8, force="simd_depthwise")
    (conv,) = [n for n in model.ir.nodes if n.op == "Conv"]
    target = Target(vector_width=8, vector_registers=registers)
    main, last = sweeps(conv, target, 8)
    assert main == choose_sweep(conv.outputs[0].shape[2], case["k"], case["k"], case["s"], case["d"], registers)
    assert (last is None) == (conv.outputs[0].shape[2] % main.rows == 0)


def _depthwise_model(c: int, h: int, w: int, k: int, s: int) -> tuple:
    rng = np.random.default_rng(c + h + w + k)
    wt = rng.standard_normal((c, 1, k, k)).astype(np.float32)
    b = rng.standard_normal(c).astype(np.float32)
    attrs = dict(kernel_shape=[k, k], strides=[s, s], pads=[k // 2] * 4, group=c)
    g = helper.make_graph([helper.make_node("Conv", ["x", "w", "b"], ["y"], **attrs)], "dw",
                          [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, c, h, w])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
                          [numpy_helper.from_array(wt, "w"), numpy_helper.from_array(b, "b")])
    model = helper.make_model(g, opset_imports=[helper.make_opsetid("", 13)], ir_version=8)
    return model, wt, b, attrs


@pytest.mark.parametrize("shape", [(3, 5, 13, 3, 1), (2, 7, 7, 5, 1), (4, 9, 20, 3, 2)])
def test_row_tail_stores_stay_inside_the_output(shape) -> None:
    """Rows of 13, 7 and 10 columns at 8 lanes: every row ends in a short vector stored whole except at the
    call's end; the elements after the output keep their sentinel."""
    c, h, w, k, s = shape
    model, wt, b, attrs = _depthwise_model(c, h, w, k, s)
    (node,) = [n for n in cnnjit.compile(model, vector_width=8, entry="lazy").ir.nodes if n.op == "Conv"]
    (call,) = gen_simd_depthwise(node, Target(vector_width=8, vector_registers=16))
    kernel = load_kernel(call.source)
    x = np.random.default_rng(0).standard_normal((1, c, h, w)).astype(np.float32)
    want = ref.conv(x, wt, b, strides=[s, s], pads=attrs["pads"], dilations=[1, 1], group=c)
    n = want.size
    y = np.full(n + 16, 7.5, np.float32)
    scratch = np.full(call.args[4].elems, np.nan, np.float32)  # the kernel zeroes the plane's borders itself
    sizes = call.args[5:]
    kernel(x.reshape(-1), 0, wt.reshape(-1), 0, b, 0, y, 0, scratch, 0, *sizes)
    np.testing.assert_allclose(y[:n].reshape(want.shape), want, rtol=1e-5, atol=1e-5)
    assert (y[n:] == 7.5).all()


def test_threaded_parts_match_the_reference() -> None:
    """A depthwise layer split over two threads by channel ranges: each part's row tails end at its own
    channels (whole-vector stores would otherwise run into the other part's rows while it writes them)."""
    model, wt, b, attrs = _depthwise_model(64, 124, 125, 3, 1)  # above the threads' minimum total work
    compiled = cnnjit.compile(model, threads=2, vector_width=8, variants={"Conv": "simd_depthwise"})
    calls = [c for c in compiled._default_spec().program.calls if c.op == "Conv"]
    assert len(calls) == 2 and {c.variant for c in calls} == {"simd_depthwise"}
    x = np.random.default_rng(1).standard_normal((1, 64, 124, 125)).astype(np.float32)
    want = ref.conv(x, wt, b, strides=[1, 1], pads=attrs["pads"], dilations=[1, 1], group=64)
    for _ in range(3):
        np.testing.assert_allclose(compiled(x), want, rtol=1e-5, atol=1e-5)
