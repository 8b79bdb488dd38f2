"""``conv_unit_depth``: a 3-D Conv on one frame (depth 1, kernel depth 1) becomes a 2-D Conv on Reshape views,
against onnxruntime (padding, strides, dilations, a fused activation and a BatchNormalization, at 4/8/16
lanes), the 2-D kernel asserted; 3-D Convs over several frames are left as they are."""

from __future__ import annotations

import numpy as np
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

import cnnjit


def frame_model(c: int, m: int, h: int, w: int, k: tuple[int, int, int], depth: int = 1, **attrs):
    """Conv3D (+ BatchNormalization + Tanh) on ``1 x c x depth x h x w``."""
    rng = np.random.default_rng(3)
    wt = rng.standard_normal((m, c, *k)).astype(np.float32) * 0.1
    inits = [numpy_helper.from_array(wt, "w"), numpy_helper.from_array(rng.standard_normal(m).astype(np.float32), "b")]
    inits += [numpy_helper.from_array(rng.uniform(0.5, 2, m).astype(np.float32), n) for n in ("s", "bb", "mu", "v")]
    nodes = [helper.make_node("Conv", ["x", "w", "b"], ["c"], kernel_shape=list(k), **attrs),
             helper.make_node("BatchNormalization", ["c", "s", "bb", "mu", "v"], ["n"]),
             helper.make_node("Tanh", ["n"], ["y"])]
    g = helper.make_graph(nodes, "f", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, c, depth, h, w])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)], inits)
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", 13)], ir_version=8)


CASES = [
    dict(c=3, m=8, h=20, w=24, k=(1, 5, 5), pads=[0, 2, 2, 0, 2, 2]),
    dict(c=6, m=32, h=17, w=30, k=(1, 11, 11), pads=[0, 5, 5, 0, 5, 5]),        # RivaGAN's layer, smaller map
    dict(c=4, m=12, h=15, w=19, k=(1, 3, 2), strides=[1, 2, 1], dilations=[1, 1, 2]),
]


@pytest.mark.parametrize("width", [4, 8, 16])
@pytest.mark.parametrize("case", CASES)
def test_frame_conv_matches_onnxruntime(width: int, case: dict) -> None:
    case = dict(case)
    dims = [case.pop(k) for k in ("c", "m", "h", "w", "k")]
    model = frame_model(*dims, **case)
    x = np.random.default_rng(1).standard_normal((1, dims[0], 1, dims[2], dims[3])).astype(np.float32)
    compiled = cnnjit.compile(model, vector_width=width, threads=1)
    convs = [n for n in compiled.ir.nodes if n.op == "Conv"]
    assert len(convs) == 1 and len(convs[0].inputs[0].shape) == 4  # the 2-D Conv runs
    ref = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, {"x": x})[0]
    got = compiled(x)
    assert got.shape == ref.shape
    np.testing.assert_allclose(got, ref, rtol=1e-4, atol=1e-5)


def test_several_frames_stay_3d() -> None:
    """Depth 3: not one frame, the pass leaves it (and the result still matches)."""
    model = frame_model(3, 8, 10, 12, (1, 3, 3), depth=3, pads=[0, 1, 1, 0, 1, 1])
    x = np.random.default_rng(2).standard_normal((1, 3, 3, 10, 12)).astype(np.float32)
    compiled = cnnjit.compile(model, vector_width=8, threads=1)
    assert [len(n.inputs[0].shape) for n in compiled.ir.nodes if n.op == "Conv"] == [5]
    ref = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, {"x": x})[0]
    np.testing.assert_allclose(compiled(x), ref, rtol=1e-4, atol=1e-5)
