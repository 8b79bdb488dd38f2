"""The SPP max-pool cascade (``passes/cascade_maxpool.py``): max pools of one input with growing "same"
windows are rewritten to pool the previous pool's output with the difference window; the result matches
onnxruntime exactly (maxima only), on drawn windows, maps and channel counts; pools it must not touch
(stride 2, uneven pads, even windows, an Indices output, windows that do not nest) keep their input."""

from __future__ import annotations

import numpy as np
import onnxruntime as ort
from hypothesis import given, settings
from hypothesis import strategies as st
from onnx import TensorProto, helper

import cnnjit


def _spp(x_shape: tuple[int, ...], pools: list[dict]) -> helper.ModelProto:
    """x -> one MaxPool per entry of ``pools`` (attributes), all reading x, each a graph output."""
    nodes = [helper.make_node("MaxPool", ["x"], [f"p{i}"], **attrs) for i, attrs in enumerate(pools)]
    g = helper.make_graph(nodes, "spp", [helper.make_tensor_value_info("x", TensorProto.FLOAT, list(x_shape))],
                          [helper.make_tensor_value_info(f"p{i}", TensorProto.FLOAT, None) for i in range(len(pools))])
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", 13)], ir_version=8)


def _same(kh: int, kw: int) -> dict:
    return dict(kernel_shape=[kh, kw], strides=[1, 1], pads=[kh // 2, kw // 2, kh // 2, kw // 2])


def _pool_inputs(model) -> list[tuple[tuple[int, ...], str]]:
    """(kernel shape, "x" or the producing pool's kernel shape) of every MaxPool after the passes."""
    compiled = cnnjit.compile(model, entry="lazy")
    out = []
    for n in compiled.ir.nodes:
        if n.op == "MaxPool":
            p = n.inputs[0].producer
            out.append((tuple(n.attrs["kernel_shape"]), "x" if p is None else str(tuple(p.attrs["kernel_shape"]))))
    return out


def _check(model, x: np.ndarray) -> None:
    got = cnnjit.compile(model)(x)
    got = got if isinstance(got, (list, tuple)) else [got]
    want = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, {"x": x})
    assert len(got) == len(want)
    for g, w in zip(got, want):
        np.testing.assert_array_equal(g, w)


def test_yolo_spp_becomes_a_cascade() -> None:
    """5, 9, 13 on one input: 9 and 13 pool the previous pool's output with a 5x5 window."""
    model = _spp((1, 8, 13, 13), [_same(5, 5), _same(9, 9), _same(13, 13)])
    assert _pool_inputs(model) == [((5, 5), "x"), ((5, 5), "(5, 5)"), ((5, 5), "(5, 5)")]
    _check(model, np.random.default_rng(0).standard_normal((1, 8, 13, 13)).astype(np.float32))


@settings(max_examples=12, deadline=None)
@given(ks=st.lists(st.tuples(st.sampled_from([1, 3, 5, 7, 9]), st.sampled_from([1, 3, 5, 9, 13])), min_size=2,
                   max_size=4),
       h=st.integers(1, 12), w=st.integers(1, 17), c=st.integers(1, 3), seed=st.integers(0, 2**16))
def test_cascade_matches_onnxruntime(ks, h, w, c, seed) -> None:
    """Any windows (nesting or not, per axis, in any order, repeated) on maps smaller or larger than them,
    with ties (a few distinct values) so that every max is compared exactly."""
    x = np.random.default_rng(seed).integers(-3, 4, (1, c, h, w)).astype(np.float32)
    model = _spp(x.shape, [_same(kh, kw) for kh, kw in ks])
    _check(model, x)


def test_pools_left_alone() -> None:
    base = _same(5, 5)
    others = [dict(base, strides=[2, 2]), dict(base, pads=[2, 2, 1, 1]), dict(kernel_shape=[4, 4], pads=[1, 1, 2, 2]),
              dict(base, kernel_shape=[9, 9], pads=[4, 4, 4, 4], dilations=[2, 2])]
    for attrs in others:
        model = _spp((1, 2, 11, 11), [base, attrs])
        assert [src for _, src in _pool_inputs(model)] == ["x", "x"], attrs
        _check(model, np.random.default_rng(1).standard_normal((1, 2, 11, 11)).astype(np.float32))
    # windows that do not nest (5x9 then 9x5) stay on x
    model = _spp((1, 2, 11, 11), [_same(5, 9), _same(9, 5)])
    assert [src for _, src in _pool_inputs(model)] == ["x", "x"]
