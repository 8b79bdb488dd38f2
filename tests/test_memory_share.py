"""The memory plan's sharing rules (``memory.share_inputs``, ``KernelCall.inplace``) and its placement.

* ``check_plan`` (written apart from the planner) is the oracle for every plan here: while a node runs, its
  output's storage meets no other value that is still to be read (read by this node or a later one, or a
  graph output), except the input the node's kernel declared it may share, placed at least the declared lag
  after the output's start. It rejects a plan that aliases a live tensor (``test_check_plan_rejects_live_alias``).
* A residual block: the first convolution's input is still live (the residual), so it shares nothing; the Add
  is written over one operand; the next convolution's output trails its dying input by ``row_lag``.
* Hypothesis over the dense int8 convolution's geometry (kernel, stride, padding, dilation, channels, batch)
  at int widths 4, 8 and 16: with the output written over its input at the declared lag the integers equal
  the IR's numpy reference exactly, and the plan did share (asserted, with the variant that ran).
* ``by_size`` (TFLM's largest-first placement) against a brute-force check of its own result; a parallel
  schedule shares nothing (its layers' parts run at once).
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from cnnjit.compiler.codegen.emit import call_inplace, call_scratch, generate, lower
from cnnjit.compiler.codegen.kernel import row_lag
from cnnjit.compiler.codegen.memory import MemoryPlan, by_size, plan_memory
from cnnjit.compiler.stages import CompileOptions
from cnnjit.ir import Graph, Node, TensorType, Value, get_op, interpret
from cnnjit.runtime.model import Specialization

I8 = np.dtype(np.int8)


def _const(a: np.ndarray) -> Value:
    a = np.ascontiguousarray(a)
    return Value(TensorType(a.dtype, a.shape), "", const=a)


def _qadd(g: Graph, a: Value, b: Value, rng: np.random.Generator) -> Value:
    attrs = {"a_zero_point": int(rng.integers(-5, 5)), "b_zero_point": int(rng.integers(-5, 5)),
             "y_zero_point": int(rng.integers(-5, 5)), "ra": float(np.float32(0.3 + rng.random() * 0.5)),
             "rb": float(np.float32(0.3 + rng.random() * 0.5)), "lo": -128, "hi": 127, "dtype": "i8"}
    y = Value(TensorType(I8, a.shape), "")
    g.add_node(Node("QAdd", [a, b], [y], attrs))
    return y


def _qconv(g: Graph, x: Value, m: int, k: int, s: int, pad: int, dil: int, rng: np.random.Generator) -> Value:
    c = x.shape[3]
    attrs = {"strides": [s, s], "pads": [pad] * 4, "dilations": [dil, dil], "group": 1,
             "x_zero_point": int(rng.integers(-10, 10)), "y_zero_point": int(rng.integers(-10, 10)), "lo": -128,
             "hi": 127, "dtype": "i8"}
    ins = [x, _const(rng.integers(-128, 128, size=(m, k, k, c)).astype(np.int8)),
           _const(rng.integers(-20000, 20000, size=m).astype(np.int32)),
           _const((rng.random(m) * 0.01 + 1e-4).astype(np.float32))]
    (t,) = get_op("QConvNHWC").infer_types(ins, attrs)
    y = Value(t, "")
    g.add_node(Node("QConvNHWC", ins, [y], attrs))
    return y


#: the byte kernel whose row lag these tests check (forced: its int16 twin is the default on x86 without VNNI)
DENSE = (("QConvNHWC", "qconv_dense"),)


def _plan(g: Graph, target) -> tuple[MemoryPlan, dict[int, tuple[tuple[int, int], ...]]]:
    lowered, groups = lower(g, target)
    inplace = call_inplace(g, lowered)
    return plan_memory(g, call_scratch(g, lowered), inplace=None if groups else inplace), inplace


def check_plan(g: Graph, plan: MemoryPlan, inplace: dict[int, tuple[tuple[int, int], ...]]) -> None:
    """Assert that no node's output overwrites a value still to be read, except a declared shared input."""
    last: dict[int, int] = {}
    born: dict[int, int] = {v.id: -1 for v in g.inputs}
    for i, n in enumerate(g.nodes):
        for v in n.inputs:
            if v is not None and not v.is_const:
                last[v.id] = i
        for o in n.outputs:
            born[o.id] = i
    for v in g.outputs:
        last[v.id] = len(g.nodes)

    def region(v: Value) -> tuple[str, int, int]:
        s = plan.slot(v)
        return s.dtype, s.offset, s.offset + v.type.size

    for i, n in enumerate(g.nodes):
        lags = {k: lag for k, lag in inplace.get(i, ())}
        for o in n.outputs:
            dt, a, b = region(o)
            for vid, when in born.items():
                v = next(x for x in g.values() if x.id == vid)
                if v is o or when > i or last.get(vid, -2) < i or (when == i and vid != o.id):
                    continue  # defined later, or dead before this node
                vd, va, vb = region(v)
                if vd != dt or vb <= a or b <= va:
                    continue
                shared = [k for k, x in enumerate(n.inputs) if x is v and k in lags]
                assert shared and a + lags[shared[0]] <= va, \
                    f"node {i} ({n.op}) writes [{a}, {b}) over a live value at [{va}, {vb})"


def _residual_graph(rng: np.random.Generator) -> tuple[Graph, dict[str, Value]]:
    """x -> add(x, c) = t; conv(t) = u; add(t, u) = v; conv(v) = w; add(w, c) = y (the output)."""
    g = Graph("res")
    x = g.add_input(TensorType(I8, (1, 6, 5, 8)), "x")
    t = _qadd(g, x, _const(rng.integers(-128, 128, (1, 6, 5, 8)).astype(np.int8)), rng)
    u = _qconv(g, t, 8, 3, 1, 1, 1, rng)
    v = _qadd(g, t, u, rng)
    w = _qconv(g, v, 8, 3, 1, 1, 1, rng)
    y = _qadd(g, w, _const(rng.integers(-128, 128, (1, 6, 5, 8)).astype(np.int8)), rng)
    g.outputs = [y]
    return g, {"x": x, "t": t, "u": u, "v": v, "w": w, "y": y}


def test_residual_block_shares_only_dead_inputs() -> None:
    rng = np.random.default_rng(0)
    g, vals = _residual_graph(rng)
    # qconv_dense's row lag (x86 without VNNI prefers qconv_dense_i16, which reads a widened copy of its input)
    target = replace(CompileOptions().host_target(), variants=DENSE)
    plan, inplace = _plan(g, target)
    check_plan(g, plan, inplace)
    off = {k: plan.slot(v).offset for k, v in vals.items()}
    # t is the residual: read again by the add, so the first convolution's output stays clear of it
    assert off["u"] + vals["u"].type.size <= off["t"] or off["t"] + vals["t"].type.size <= off["u"]
    assert off["v"] in (off["t"], off["u"])  # the add written over one operand
    lag = row_lag(1, 6, 5 * 8, 6, 5 * 8, 1, 1)
    assert 0 < lag < vals["w"].type.size and off["v"] - off["w"] == lag  # w trails v by the lag
    xv = rng.integers(-128, 128, (1, 6, 5, 8)).astype(np.int8)
    prog = generate(g, target)
    assert [c.variant for c in prog.calls if c.op == "QConvNHWC"] == ["qconv_dense"] * 2
    np.testing.assert_array_equal(Specialization(g, prog).run({"x": xv})[0], interpret(g, [xv])[0])


def test_check_plan_rejects_live_alias() -> None:
    """The oracle fails on a plan that writes the first convolution over the residual it must keep."""
    g, vals = _residual_graph(np.random.default_rng(0))
    plan, inplace = _plan(g, CompileOptions().host_target())
    plan.slots[vals["u"].id] = plan.slots[vals["t"].id]
    try:
        check_plan(g, plan, inplace)
    except AssertionError:
        return
    raise AssertionError("check_plan accepted an output placed over a live input")


def test_parallel_schedule_shares_nothing() -> None:
    """With a layer split over threads (a large float Conv beside the int8 chain), no output trails its input."""
    rng = np.random.default_rng(1)
    g = Graph("par")
    x = g.add_input(TensorType(I8, (1, 16, 16, 16)), "x")
    t = _qadd(g, x, _const(rng.integers(-128, 128, (1, 16, 16, 16)).astype(np.int8)), rng)
    u = _qconv(g, t, 16, 3, 1, 1, 1, rng)
    f = g.add_input(TensorType(np.float32, (1, 64, 64, 64)), "f")
    fy = Value(TensorType(np.float32, (1, 64, 64, 64)))
    g.add_node(Node("Conv", [f, g.const(rng.standard_normal((64, 64, 3, 3)).astype(np.float32))], [fy],
                    {"strides": [1, 1], "pads": [1, 1, 1, 1], "dilations": [1, 1], "group": 1, "kernel_shape": [3, 3]}))
    g.outputs = [_qadd(g, u, _const(rng.integers(-128, 128, (1, 16, 16, 16)).astype(np.int8)), rng), fy]
    serial, _ = _plan(g, CompileOptions().host_target())
    assert serial.slot(t).offset > serial.slot(u).offset  # shared serially
    two = CompileOptions(threads=2).host_target()
    assert lower(g, two)[1]  # the float convolution is split over the threads
    par, inplace = _plan(g, two)
    a, b = par.slot(t).offset, par.slot(u).offset
    assert a + t.type.size <= b or b + u.type.size <= a
    check_plan(g, par, {})


@settings(deadline=None, max_examples=25, suppress_health_check=[HealthCheck.too_slow])
@given(seed=st.integers(0, 2**31 - 1), width=st.sampled_from([4, 8, 16]), k=st.sampled_from([1, 3, 5]),
       s=st.sampled_from([1, 2, 3]), dil=st.sampled_from([1, 2]), c=st.integers(1, 12), m=st.integers(1, 24),
       h=st.integers(1, 9), w=st.integers(1, 9), batch=st.integers(1, 2))
def test_dense_conv_over_its_input_exact(seed: int, width: int, k: int, s: int, dil: int, c: int, m: int, h: int,
                                         w: int, batch: int) -> None:
    rng = np.random.default_rng(seed)
    pad = int(rng.integers(0, k))
    h, w = max(h, (k - 1) * dil + 1 - 2 * pad), max(w, (k - 1) * dil + 1 - 2 * pad)
    g = Graph("conv")
    x = g.add_input(TensorType(I8, (batch, h, w, c)), "x")
    t = _qadd(g, x, _const(rng.integers(-128, 128, (batch, h, w, c)).astype(np.int8)), rng)
    u = _qconv(g, t, m, k, s, pad, dil, rng)
    g.outputs = [_qadd(g, u, _const(rng.integers(-128, 128, u.shape).astype(np.int8)), rng)]
    target = replace(CompileOptions().host_target(), int_width=width, variants=DENSE)
    plan, inplace = _plan(g, target)
    check_plan(g, plan, inplace)
    (_, lag), = inplace.get(1, ((0, u.type.size),))
    if lag < u.type.size:  # declared: the plan placed u exactly lag elements before t
        assert plan.slot(t).offset - plan.slot(u).offset == lag
    xv = rng.integers(-128, 128, (batch, h, w, c)).astype(np.int8)
    prog = generate(g, target)
    assert [cl.variant for cl in prog.calls if cl.op == "QConvNHWC"] == ["qconv_dense"]
    np.testing.assert_array_equal(Specialization(g, prog).run({"x": xv})[0], interpret(g, [xv])[0])


@settings(deadline=None, max_examples=50)
@given(items=st.lists(st.tuples(st.integers(1, 8), st.integers(-1, 10), st.integers(0, 6), st.integers(0, 4)),
                      min_size=1, max_size=25))
def test_by_size_places_overlapping_lifetimes_apart(items: list[tuple[int, int, int, int]]) -> None:
    """Items of one or two parts (a shared storage: a second part ``lag`` elements in, living on after the
    first) never meet a part of another item while both live; the arena covers every item."""
    spec = []
    for key, (n, a, d, lag) in enumerate(items):
        parts = [(0, 64 * n, a, a + d)] + ([(64 * lag, 64 * n, a + d, a + d + 2)] if lag else [])
        spec.append((64 * (n + lag), parts, key))
    offsets, size = by_size(spec, 64)
    flat = [(offsets[k] + sh, offsets[k] + sh + ln, a, b, k) for _, parts, k in spec for sh, ln, a, b in parts]
    for i, (s1, e1, a1, b1, k1) in enumerate(flat):
        assert s1 % 64 == 0 and e1 <= size
        for s2, e2, a2, b2, k2 in flat[i + 1:]:
            if k1 != k2 and not (b1 < a2 or b2 < a1):
                assert e1 <= s2 or e2 <= s1
    # at least the largest sum of lengths live at once, at most every item side by side
    def span(parts: list, t: int) -> int:  # the elements an item's parts live at t cover
        return len({e for sh, ln, a, b in parts if a <= t <= b for e in range(sh, sh + ln)})

    peak = max(sum(span(ps, t) for _, ps, _ in spec) for t in range(-1, 20))
    assert peak <= size <= sum(n for n, *_ in spec)


@settings(deadline=None, max_examples=200)
@given(n=st.integers(1, 4), h=st.integers(1, 12), in_row=st.integers(1, 50), oh=st.integers(1, 12),
       out_row=st.integers(1, 50), sh=st.integers(1, 3), ph=st.integers(0, 4))
def test_row_lag_is_the_largest_row_overlap(n: int, h: int, in_row: int, oh: int, out_row: int, sh: int,
                                            ph: int) -> None:
    """``row_lag`` (evaluated at the ends of its linear pieces) equals the maximum over every output row of how
    far its end reaches past the first input row still to be read."""
    want = max([0] + [(b * oh + r + 1) * out_row - (b * h + min(max(r * sh - ph, 0), h)) * in_row
                      for b in range(n) for r in range(oh)])
    assert row_lag(n, h, in_row, oh, out_row, sh, ph) == want
