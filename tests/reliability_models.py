"""Models and checks shared by the reliability and security tests (``test_reliability.py``,
``test_security.py``)."""

from __future__ import annotations

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

RTOL, ATOL = 1e-4, 1e-5


def conv_model(batch: int | str = 2, names: list[str] | None = None, text: str = "") -> onnx.ModelProto:
    """X[batch,3,6,6] -> Conv(4, 3x3, pad 1) -> Relu -> MaxPool 2x2 -> Flatten -> Gemm(5) -> Y.

    ``names`` replaces every graph/node/value/initializer name; ``text`` goes into doc strings and
    metadata."""
    n = names or ["X", "W", "B", "c", "r", "p", "f", "W2", "B2", "Y", "conv", "relu", "pool", "flat", "gemm",
                  "graph"]
    X, W, B, c, r, p, f, W2, B2, Y, nconv, nrelu, npool, nflat, ngemm, gname = n
    rng = np.random.default_rng(11)
    nodes = [
        helper.make_node("Conv", [X, W, B], [c], name=nconv, pads=[1, 1, 1, 1], kernel_shape=[3, 3],
                         doc_string=text),
        helper.make_node("Relu", [c], [r], name=nrelu, doc_string=text),
        helper.make_node("MaxPool", [r], [p], name=npool, kernel_shape=[2, 2], strides=[2, 2]),
        helper.make_node("Flatten", [p], [f], name=nflat, axis=1),
        helper.make_node("Gemm", [f, W2, B2], [Y], name=ngemm, transB=1),
    ]
    graph = helper.make_graph(
        nodes, gname,
        [helper.make_tensor_value_info(X, TensorProto.FLOAT, [batch, 3, 6, 6])],
        [helper.make_tensor_value_info(Y, TensorProto.FLOAT, [batch, 5])],
        initializer=[numpy_helper.from_array(rng.standard_normal((4, 3, 3, 3)).astype(np.float32), W),
                     numpy_helper.from_array(rng.standard_normal(4).astype(np.float32), B),
                     numpy_helper.from_array(rng.standard_normal((5, 36)).astype(np.float32), W2),
                     numpy_helper.from_array(rng.standard_normal(5).astype(np.float32), B2)],
        doc_string=text,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)], ir_version=8,
                              doc_string=text, producer_name=text or "test", domain="", model_version=1)
    if text:
        helper.set_model_props(model, {text: text, "k": text})
    return model


def x_in(batch: int = 2, seed: int = 0) -> np.ndarray:
    """A seeded input for ``conv_model``."""
    return np.random.default_rng(seed).standard_normal((batch, 3, 6, 6)).astype(np.float32)


def relu_model(shape, dtype=TensorProto.FLOAT) -> onnx.ModelProto:
    """X -> Relu -> Y, both of ``shape`` and ``dtype``."""
    g = helper.make_graph([helper.make_node("Relu", ["X"], ["Y"], name="relu")], "g",
                          [helper.make_tensor_value_info("X", dtype, shape)],
                          [helper.make_tensor_value_info("Y", dtype, shape)])
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", 13)], ir_version=8)


def assert_names_node(err: Exception, *names: str) -> None:
    """The error message names one of the nodes ``names``."""
    msg = str(err)
    assert any(n in msg for n in names), f"the error does not name the node ({names}): {msg}"
