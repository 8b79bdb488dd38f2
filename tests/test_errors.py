"""Errors a user can provoke (bad model files, unsupported ops, bad call-time inputs), symbolic batch
dimensions and ``input_shapes=``. Small models are built with ``onnx.helper``; onnxruntime is the oracle."""

from __future__ import annotations

import re

import numpy as np
import onnx
import pytest
from conftest import ort_session
from onnx import TensorProto, helper, numpy_helper

import cnnjit

RTOL, ATOL = 1e-4, 1e-5


def conv_relu_model(batch: int | str = 1, opset: int = 13) -> onnx.ModelProto:
    """X[batch,3,8,8] -> Conv(4 filters, 3x3, pad 1) -> Relu -> Y[batch,4,8,8]."""
    rng = np.random.default_rng(1234)
    w = rng.standard_normal((4, 3, 3, 3), dtype=np.float32)
    b = rng.standard_normal(4, dtype=np.float32)
    nodes = [
        helper.make_node("Conv", ["X", "W", "B"], ["C"], name="conv0", pads=[1, 1, 1, 1],
                         kernel_shape=[3, 3]),
        helper.make_node("Relu", ["C"], ["Y"], name="relu0"),
    ]
    graph = helper.make_graph(
        nodes, "conv_relu",
        [helper.make_tensor_value_info("X", TensorProto.FLOAT, [batch, 3, 8, 8])],
        [helper.make_tensor_value_info("Y", TensorProto.FLOAT, [batch, 4, 8, 8])],
        initializer=[numpy_helper.from_array(w, "W"), numpy_helper.from_array(b, "B")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)], ir_version=8)
    onnx.checker.check_model(model)
    return model


def add_relu_model() -> onnx.ModelProto:
    """Two inputs: A[2,3] + Bin[2,3] -> Relu -> Y."""
    graph = helper.make_graph(
        [helper.make_node("Add", ["A", "Bin"], ["S"], name="add0"),
         helper.make_node("Relu", ["S"], ["Y"], name="relu0")],
        "add_relu",
        [helper.make_tensor_value_info("A", TensorProto.FLOAT, [2, 3]),
         helper.make_tensor_value_info("Bin", TensorProto.FLOAT, [2, 3])],
        [helper.make_tensor_value_info("Y", TensorProto.FLOAT, [2, 3])],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)], ir_version=8)
    onnx.checker.check_model(model)
    return model


@pytest.fixture(scope="module")
def conv_relu():
    return cnnjit.compile(conv_relu_model())


@pytest.fixture(scope="module")
def add_relu():
    return cnnjit.compile(add_relu_model())


def x_input(batch: int = 1, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal((batch, 3, 8, 8), dtype=np.float32)


def mentions_shape(msg: str, shape: tuple[int, ...]) -> bool:
    """Whether ``msg`` spells out ``shape`` (as (1, 3, 8, 8), [1, 3, 8, 8], 1x3x8x8, ...)."""
    return re.search(r"\D+".join(str(d) for d in shape), msg) is not None


# -- malformed model files --------------------------------------------------------------------------------
def test_error_hierarchy():
    assert issubclass(cnnjit.ModelError, cnnjit.CnnjitError)
    assert issubclass(cnnjit.UnsupportedOpError, cnnjit.ModelError)
    assert issubclass(cnnjit.InputError, cnnjit.CnnjitError)


@pytest.mark.parametrize("cut", [0.5, 0.9], ids=["half", "most"])
def test_truncated_model_file(tmp_path, cut):
    data = conv_relu_model().SerializeToString()
    truncated = data[: int(len(data) * cut)]
    path = tmp_path / "truncated.onnx"
    path.write_bytes(truncated)
    with pytest.raises(cnnjit.ModelError):
        cnnjit.compile(path)
    with pytest.raises(cnnjit.ModelError):
        cnnjit.compile(truncated)


def test_random_bytes(tmp_path):
    data = np.random.default_rng(7).integers(0, 256, 4096, dtype=np.uint8).tobytes()
    path = tmp_path / "random.onnx"
    path.write_bytes(data)
    with pytest.raises(cnnjit.ModelError):
        cnnjit.compile(str(path))
    with pytest.raises(cnnjit.ModelError):
        cnnjit.compile(data)


def test_missing_file(tmp_path):
    with pytest.raises(cnnjit.ModelError):
        cnnjit.compile(tmp_path / "does-not-exist.onnx")


def test_unsupported_ops_all_listed():
    graph = helper.make_graph(
        [
            helper.make_node("Relu", ["X"], ["R"], name="relu_ok"),
            helper.make_node("FooBar", ["R"], ["F"], name="my_foobar_node"),
            helper.make_node("NonMaxSuppression", ["boxes", "scores"], ["sel"], name="my_nms_node"),
        ],
        "two_unsupported",
        [helper.make_tensor_value_info("X", TensorProto.FLOAT, [1, 4]),
         helper.make_tensor_value_info("boxes", TensorProto.FLOAT, [1, 6, 4]),
         helper.make_tensor_value_info("scores", TensorProto.FLOAT, [1, 1, 6])],
        [helper.make_tensor_value_info("F", TensorProto.FLOAT, [1, 4]),
         helper.make_tensor_value_info("sel", TensorProto.INT64, [None, 3])],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)], ir_version=8)
    with pytest.raises(cnnjit.UnsupportedOpError) as info:
        cnnjit.compile(model)
    err = info.value
    assert isinstance(err, cnnjit.ModelError)
    msg = str(err)
    for word in ("FooBar", "NonMaxSuppression", "my_foobar_node", "my_nms_node"):
        assert word in msg, f"{word!r} not in the error message:\n{msg}"
    listed = {(u[0], u[1]) for u in err.unsupported}
    assert {("FooBar", "my_foobar_node"), ("NonMaxSuppression", "my_nms_node")} <= listed
    assert all(len(u) == 4 for u in err.unsupported)
    assert "Relu" not in {u[0] for u in err.unsupported}


# -- bad inputs at call time ------------------------------------------------------------------------------
def test_wrong_input_shape(conv_relu):
    x = np.zeros((1, 3, 9, 8), np.float32)
    for call in (lambda: conv_relu(x), lambda: conv_relu.run(None, {"X": x})):
        with pytest.raises(cnnjit.InputError) as info:
            call()
        msg = str(info.value)
        assert "X" in msg and mentions_shape(msg, (1, 3, 8, 8)), msg


def test_wrong_input_rank(conv_relu):
    with pytest.raises(cnnjit.InputError) as info:
        conv_relu(np.zeros((3, 8, 8), np.float32))
    assert "X" in str(info.value)


@pytest.mark.parametrize("dtype", [np.float64, np.int32, np.float16])
def test_wrong_input_dtype(conv_relu, dtype):
    x = x_input().astype(dtype)
    with pytest.raises(cnnjit.InputError) as info:
        conv_relu.run(None, {"X": x})
    msg = str(info.value)
    assert "X" in msg and re.search(r"float32|f32", msg), msg


def test_missing_input(add_relu, conv_relu):
    a = np.ones((2, 3), np.float32)
    with pytest.raises(cnnjit.InputError) as info:
        add_relu.run(None, {"A": a})
    assert "Bin" in str(info.value)
    with pytest.raises(cnnjit.InputError) as info:
        add_relu(a)
    assert "Bin" in str(info.value)
    with pytest.raises(cnnjit.InputError) as info:
        conv_relu.run(None, {})
    assert "X" in str(info.value)
    with pytest.raises(cnnjit.InputError):
        conv_relu()


def test_unknown_input_name(add_relu, conv_relu):
    a = np.ones((2, 3), np.float32)
    with pytest.raises(cnnjit.InputError) as info:
        add_relu.run(None, {"A": a, "Bin": a, "bogus_name": a})
    msg = str(info.value)
    assert "bogus_name" in msg, msg
    with pytest.raises(cnnjit.InputError) as info:
        conv_relu(bogus_name=x_input())
    msg = str(info.value)
    assert "bogus_name" in msg and "X" in msg, msg


def test_too_many_inputs(conv_relu):
    with pytest.raises(cnnjit.InputError):
        conv_relu(x_input(), x_input())


def test_input_errors_are_value_errors(conv_relu):
    # InputError is a ValueError, so generic callers can catch it as such
    with pytest.raises(ValueError):
        conv_relu(np.zeros((1, 3, 9, 8), np.float32))


def test_errors_leave_model_usable(conv_relu):
    with pytest.raises(cnnjit.InputError):
        conv_relu(np.zeros((1, 3, 9, 8), np.float32))
    x = x_input(seed=3)
    ref = ort_session(conv_relu_model()).run(None, {"X": x})[0]
    np.testing.assert_allclose(conv_relu(x), ref, rtol=RTOL, atol=ATOL)


# -- symbolic batch and input_shapes ----------------------------------------------------------------------
def test_symbolic_batch(tmp_path):
    proto = conv_relu_model(batch="N")
    path = tmp_path / "sym.onnx"
    onnx.save(proto, str(path))
    ref = ort_session(proto)
    model = cnnjit.compile(path)
    for batch in (1, 3, 1):
        x = x_input(batch, seed=batch)
        want = ref.run(None, {"X": x})[0]
        got = model(x)
        assert got.shape == want.shape and got.dtype == want.dtype
        np.testing.assert_allclose(got, want, rtol=RTOL, atol=ATOL, err_msg=f"batch {batch}")
        got = model.run(None, {"X": x})[0]
        np.testing.assert_allclose(got, want, rtol=RTOL, atol=ATOL, err_msg=f"batch {batch} (run)")


def test_input_shapes_argument(tmp_path):
    proto = conv_relu_model(batch="N")
    path = tmp_path / "sym.onnx"
    onnx.save(proto, str(path))
    ref = ort_session(proto)
    model = cnnjit.compile(str(path), input_shapes={"X": (2, 3, 8, 8)})
    x = x_input(2, seed=11)
    want = ref.run(None, {"X": x})[0]
    got = model(x)
    assert got.shape == (2, 4, 8, 8)
    np.testing.assert_allclose(got, want, rtol=RTOL, atol=ATOL)


def test_input_shapes_unknown_name(tmp_path):
    with pytest.raises(cnnjit.CnnjitError) as info:
        cnnjit.compile(conv_relu_model(batch="N"), input_shapes={"nope": (1, 3, 8, 8)})
    assert "nope" in str(info.value)


def test_unsupported_ops_get_advice() -> None:
    """Non-CNN ops are named with what to do instead; custom domains are called out."""
    import onnx
    from onnx import TensorProto, helper

    nodes = [
        helper.make_node("NonMaxSuppression", ["x", "w"], ["y"], name="nms"),
        helper.make_node("FusedConv", ["y"], ["z"], name="contrib", domain="com.microsoft"),
    ]
    g = helper.make_graph(nodes, "g", [helper.make_tensor_value_info(n, TensorProto.FLOAT, [1, 2, 2])
                                       for n in ("x", "w", "r")],
                          [helper.make_tensor_value_info("z", TensorProto.FLOAT, None)])
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 13), helper.make_opsetid("com.microsoft", 1)],
                          ir_version=8)
    with pytest.raises(cnnjit.UnsupportedOpError) as ei:
        cnnjit.compile(m)
    msg = str(ei.value)
    assert "NonMaxSuppression" in msg and "'nms'" in msg and "post-processing" in msg
    assert "FusedConv" in msg and "'contrib'" in msg and "com.microsoft" in msg
    assert onnx  # the import is used for the helper module
