"""Independent layers side by side (``compiler/codegen/branches.py``, issue 18): two balanced layers neither of
which reads the other's output are adjacent in a parallel schedule and each runs whole on one thread (with
two threads; with four, each in two parts), with no dependency between them, not even through reused
storage (``memory.plan_memory``'s ``beside``); the results stay bit-identical to one thread and equal to the
numpy reference."""

from __future__ import annotations

import numpy as np
import pytest
import reference_np as ref
from conftest import split_for_cpus
from onnx import TensorProto, helper, numpy_helper

import cnnjit
from cnnjit.compiler.codegen import threads as split
from cnnjit.compiler.codegen.branches import PAIR_BALANCE, pair_branches


@pytest.fixture
def split_small_layers(monkeypatch: pytest.MonkeyPatch) -> None:
    """Small test layers count as worth splitting (the thresholds are for real models' sizes)."""
    monkeypatch.setattr(split, "MIN_PARALLEL_US", 0.0)
    monkeypatch.setattr(split, "MIN_PARALLEL_TOTAL_US", 0.0)
    monkeypatch.setattr(split, "MIN_PART_US", 1e-6)


def two_chains(c: int, hw: int, depth: int, cb: int | None = None, seed: int = 0):
    """``x -> depth 3x3 convs (c -> c, ReLU) -> a`` and ``x -> depth 3x3 convs (c -> cb) -> b``, then
    ``Concat(a, b)``: (model, weights per chain as [(w, b), ...])."""
    rng = np.random.default_rng(seed)
    cb = c if cb is None else cb
    nodes, inits, chains = [], [], {}
    for name, m in (("a", c), ("b", cb)):
        last, cin, ws = "x", c, []
        for k in range(depth):
            w = (rng.standard_normal((m, cin, 3, 3)) * 0.2).astype(np.float32)
            b = rng.standard_normal(m).astype(np.float32)
            inits += [numpy_helper.from_array(w, f"w{name}{k}"), numpy_helper.from_array(b, f"b{name}{k}")]
            nodes += [helper.make_node("Conv", [last, f"w{name}{k}", f"b{name}{k}"], [f"c{name}{k}"], pads=[1] * 4),
                      helper.make_node("Relu", [f"c{name}{k}"], [f"r{name}{k}"])]
            last, cin = f"r{name}{k}", m
            ws.append((w, b))
        chains[name] = (last, ws)
    nodes.append(helper.make_node("Concat", [chains["a"][0], chains["b"][0]], ["y"], axis=1))
    g = helper.make_graph(nodes, "chains", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, c, hw, hw])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, c + cb, hw, hw])], inits)
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", 13)], ir_version=8), \
        [chains["a"][1], chains["b"][1]]


def reference(x: np.ndarray, chains) -> np.ndarray:
    outs = []
    for ws in chains:
        h = x
        for w, b in ws:
            h = np.maximum(ref.conv(h, w, b, pads=[1] * 4), 0)
        outs.append(h)
    return np.concatenate(outs, axis=1)


def conv_steps(cm: cnnjit.CompiledModel):
    """(calls, steps) of ``cm``'s parallel schedule, the steps as ``(first call, parts, deps)``."""
    p = cm._default_spec().program
    return p.calls, [(st.first, st.parts, st.deps) for st in p.meta["step_plan"]]


@pytest.mark.parametrize("depth", [1, 2])
def test_independent_chains_run_side_by_side(split_small_layers, depth: int) -> None:
    """Two chains of ``depth`` equal convs from one input, 2 threads: every conv whole (one call), the
    chains' convs interleaved (a1, b1, a2, b2), each waiting only for its own chain's previous conv, and the
    result bit-identical to one thread and equal to the numpy reference."""
    model, chains = two_chains(16, 12, depth)
    one = cnnjit.compile(model, threads=1, vector_width=8)
    two = cnnjit.compile(model, threads=2, vector_width=8)
    calls, steps = conv_steps(two)
    convs = [i for i, (first, _, _) in enumerate(steps) if calls[first].op == "Conv"]
    assert len(convs) == 2 * depth and all(steps[i][1] == 1 for i in convs)  # whole, one call each
    assert convs == list(range(convs[0], convs[0] + 2 * depth))  # adjacent: a1, b1, a2, b2
    for k in range(2, 2 * depth):  # each after its own chain's previous conv only
        assert steps[convs[k]][2] == (convs[k - 2],), steps
    assert not steps[convs[1]][2] or convs[0] not in steps[convs[1]][2]  # b1 does not wait for a1
    assert two._default_spec().program.meta["parallel_layers"] == 2 * depth
    x = np.random.default_rng(1).standard_normal((1, 16, 12, 12)).astype(np.float32)
    got = two.run(None, {"x": x})[0]
    np.testing.assert_array_equal(got, one.run(None, {"x": x})[0])
    np.testing.assert_allclose(got, reference(x, chains), rtol=1e-4, atol=1e-4)


def test_paired_layers_take_half_the_threads(split_small_layers, monkeypatch: pytest.MonkeyPatch) -> None:
    """With 4 threads, each of two side-by-side convs splits in 2 parts (half the team each); bit-identical.
    (A process with 4 usable CPUs: with fewer, threads=4 compiles the schedule of that many, ``cpus.split_threads``.)"""
    split_for_cpus(monkeypatch)
    model, _ = two_chains(32, 12, 1)
    four = cnnjit.compile(model, threads=4, vector_width=8)
    calls, steps = conv_steps(four)
    convs = [s for s in steps if calls[s[0]].op == "Conv"]
    assert [s[1] for s in convs] == [2, 2] and not convs[1][2]
    x = np.random.default_rng(2).standard_normal((1, 32, 12, 12)).astype(np.float32)
    one = cnnjit.compile(model, threads=1, vector_width=8)
    np.testing.assert_array_equal(four.run(None, {"x": x})[0], one.run(None, {"x": x})[0])


def test_unbalanced_branches_are_split_instead(split_small_layers) -> None:
    """A branch of 4x the other's work is not paired with it (``PAIR_BALANCE``): the larger conv splits over
    both threads as before."""
    model, chains = two_chains(16, 12, 1, cb=64)
    two = cnnjit.compile(model, threads=2, vector_width=8)
    calls, steps = conv_steps(two)
    assert max(s[1] for s in steps if calls[s[0]].op == "Conv") == 2
    assert not any(c.node.meta.get(split.PAIRED) for c in calls if c.node is not None)
    x = np.random.default_rng(3).standard_normal((1, 16, 12, 12)).astype(np.float32)
    np.testing.assert_allclose(two.run(None, {"x": x})[0], reference(x, chains), rtol=1e-4, atol=1e-4)


def test_pair_branches_order(split_small_layers) -> None:
    """``pair_branches`` on a graph: a chain's later node never pairs with its ancestor, a node pairs with
    the first balanced node that is ready with it, and the order stays topological."""
    model, _ = two_chains(16, 12, 2)
    graph = cnnjit.compile(model, threads=1, vector_width=8).ir
    convs = [n for n in graph.nodes if n.op == "Conv"]
    a1, a2, b1, b2 = convs  # (the import's order: chain a, then chain b)
    order, pairs = pair_branches(graph.nodes, set())
    assert pairs == [(a1, b1), (a2, b2)]
    pos = {n.id: i for i, n in enumerate(order)}
    assert pos[b1.id] == pos[a1.id] + 1 and pos[b2.id] == pos[a2.id] + 1
    for n in order:  # topological: every producer first
        assert all(v.producer is None or pos[v.producer.id] < pos[n.id] for v in n.inputs if v is not None)
    assert PAIR_BALANCE >= 1.0


def test_simulated_protocol() -> None:
    """``benchmarks/thread_split.simulate``, the step protocol on given part times: two side-by-side whole
    steps take the longer one's time, a split step its longer part, a dependent step waits."""
    from benchmarks.thread_split import simulate
    from cnnjit.compiler.codegen.threads import Step

    side = [Step(0, 1, ()), Step(1, 1, ()), Step(2, 1, (0,)), Step(3, 1, (1,))]  # a1, b1, a2, b2
    total, busy = simulate(side, [10.0, 12.0, 10.0, 12.0])
    assert total == 24.0 and sorted(busy) == [20.0, 24.0]
    split_steps = [Step(0, 2, ()), Step(2, 2, (0,))]
    total, busy = simulate(split_steps, [5.0, 7.0, 6.0, 6.0])
    assert total == 13.0 and busy == [11.0, 13.0]
    assert simulate(side, [10.0, 12.0, 10.0, 12.0], threads=1)[0] == 44.0


def test_concurrent_spans_counts_only_parts_run_beside_the_other_thread() -> None:
    """``benchmarks/thread_split.concurrent_spans`` on made-up traces (``[start, end, caller?]`` per call, then
    the run's row): a step counts when each of its parts ran while the other thread was in that step for
    ``OVERLAP`` of it, with its longest part's minimum over such runs; a step whose parts ran one after the
    other, or on one thread, does not count."""
    from benchmarks.thread_split import OVERLAP, concurrent_spans
    from cnnjit.compiler.codegen.cycles import tick_seconds
    from cnnjit.compiler.codegen.threads import Step

    steps = [Step(0, 2, ()), Step(2, 1, (0,)), Step(3, 2, (1,)), Step(5, 2, (2,))]
    runs = [
        # step 0 side by side (100 and 90 ticks); step 2 one part after the other; step 3 both on the caller
        [[0, 100, 1], [5, 95, 0], [100, 150, 1], [150, 250, 1], [250, 350, 0], [350, 400, 1], [400, 450, 1]],
        # step 0 again side by side, shorter (80); step 2 overlapping for less than OVERLAP of a part
        [[0, 80, 1], [0, 80, 0], [80, 120, 1], [120, 220, 1], [200, 300, 0], [300, 350, 1], [350, 400, 1]],
    ]
    it = iter(np.array([*r, [0, r[-1][1], 1]], np.int64) for r in [runs[0], *runs])  # (the first: a warm-up)
    got = concurrent_spans({"p": (lambda: next(it), steps)}, runs=2)["p"]
    assert OVERLAP > 0.2 and set(got) == {0}
    assert got[0] == pytest.approx(80 * tick_seconds() * 1e6)
