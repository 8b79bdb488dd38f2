"""The ``batch_gemms`` pass: Gemms sharing a large constant B over independent A rows become one Gemm.

Oracle: onnxruntime on the same ONNX graph (an RNN unrolled the way a traced PyTorch ``RNNCell`` loop
exports it: per step ``Gather(x, t) @ W_ih^T + b_ih`` and ``h @ W_hh^T + b_hh``, then Tanh), and the IR after
the passes: the input projections are one Gemm, the recurrent ones (each step's A is the last step's
output) stay per step, and a B under ``MIN_B_BYTES`` is left alone.
"""

from __future__ import annotations

import numpy as np
import pytest
from conftest import ort_session
from onnx import TensorProto, helper, numpy_helper

import cnnjit
from cnnjit.compiler.passes import batch_gemms


def unrolled_rnn(steps: int, k: int, n: int, seed: int = 0):
    """``steps`` RNN steps over ``x [steps, 1, k]`` with hidden size ``n``; output the last hidden state and
    the first step's input projection (a batched Gemm's member output that is also a graph output)."""
    rng = np.random.default_rng(seed)
    inits = {"wih": (rng.standard_normal((n, k)) / np.sqrt(k)).astype(np.float32),
             "whh": (rng.standard_normal((n, n)) / np.sqrt(n)).astype(np.float32),
             "bih": rng.standard_normal(n).astype(np.float32), "bhh": rng.standard_normal(n).astype(np.float32),
             "h0": np.zeros((1, n), np.float32)}
    nodes, h = [], "h0"
    for t in range(steps):
        inits[f"t{t}"] = np.array(t, np.int64)
        nodes += [helper.make_node("Gather", ["x", f"t{t}"], [f"x{t}"], axis=0),
                  helper.make_node("Gemm", [f"x{t}", "wih", "bih"], [f"p{t}"], transB=1),
                  helper.make_node("Gemm", [h, "whh", "bhh"], [f"r{t}"], transB=1),
                  helper.make_node("Add", [f"p{t}", f"r{t}"], [f"s{t}"]),
                  helper.make_node("Tanh", [f"s{t}"], [f"h{t + 1}"])]
        h = f"h{t + 1}"
    g = helper.make_graph(nodes, "rnn", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [steps, 1, k])],
                          [helper.make_tensor_value_info(h, TensorProto.FLOAT, None),
                           helper.make_tensor_value_info("p0", TensorProto.FLOAT, None)],
                          [numpy_helper.from_array(v, nm) for nm, v in inits.items()])
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", 13)], ir_version=8)


@pytest.mark.parametrize(("steps", "k", "n"), [(6, 512, 256), (3, 1024, 130)])
def test_input_projections_batch(steps: int, k: int, n: int) -> None:
    model = unrolled_rnn(steps, k, n)
    x = np.random.default_rng(1).standard_normal((steps, 1, k)).astype(np.float32)
    m = cnnjit.compile(model)
    gemms = [nd for nd in m.ir.nodes if nd.op == "Gemm"]
    batched = [nd for nd in gemms if f"{steps} Gemms" in nd.meta.get("fused", [])]
    assert len(batched) == 1 and batched[0].inputs[0].shape == (steps, k)
    assert len(gemms) == steps  # the recurrent Gemms stay one per step (the first, on h0 = 0, folds away)
    want = ort_session(model).run(None, {"x": x})
    for got, ref in zip(m.run(None, {"x": x}), want, strict=True):
        np.testing.assert_allclose(got, ref, rtol=1e-4, atol=1e-5)


def test_small_b_is_left_alone(monkeypatch) -> None:
    model = unrolled_rnn(4, 512, 256)
    monkeypatch.setattr(batch_gemms, "MIN_B_BYTES", 512 * 256 * 4 + 1)
    m = cnnjit.compile(model, entry="lazy")
    assert sum(nd.op == "Gemm" for nd in m.ir.nodes) == 7  # 4 + 3 (the first recurrent one folds)


def test_topological_keeps_a_valid_order() -> None:
    """The reorder keeps every node after the producers of its inputs and leaves an ordered list alone."""
    m = cnnjit.compile(unrolled_rnn(5, 512, 256), entry="lazy")
    seen: set[int] = set()
    for nd in m.ir.nodes:
        assert all(v.producer is None or v.producer.id in seen for v in nd.inputs if v is not None)
        seen.add(nd.id)
    assert batch_gemms.topological(list(m.ir.nodes)) == list(m.ir.nodes)
