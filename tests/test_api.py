"""The public API: ``cnnjit.compile`` sources, call styles, fresh outputs, ``model.ir`` / ``model.source()``.

The model is Conv -> Relu -> GlobalAveragePool -> Flatten -> Gemm -> Softmax with seeded random weights;
onnxruntime is the oracle. Node names are hostile strings that must never reach the generated source.
"""

from __future__ import annotations

import pathlib

import numpy as np
import onnx
import pytest
from conftest import as_output_list, ort_session
from onnx import TensorProto, helper, numpy_helper

import cnnjit

RTOL, ATOL = 1e-4, 1e-6

EVIL_NAMES = [
    "evil'); import os; os.system('x')#",
    'evil2"""; raise SystemExit("boom") #',
    "evil3\nimport sys; sys.exit(3)\n",
    "evil4 {__import__('os')}",
    "evil5 \\' \\\" ''' end",
    "evil6); del globals()[0] #",
]


def small_cnn(batch: int = 2, opset: int = 13) -> onnx.ModelProto:
    rng = np.random.default_rng(2024)
    w1 = rng.standard_normal((8, 3, 3, 3), dtype=np.float32) * 0.5
    b1 = rng.standard_normal(8, dtype=np.float32) * 0.1
    w2 = rng.standard_normal((10, 8), dtype=np.float32)
    b2 = rng.standard_normal(10, dtype=np.float32) * 0.1
    nodes = [
        helper.make_node("Conv", ["X", "W1", "B1"], ["c"], name=EVIL_NAMES[0], kernel_shape=[3, 3],
                         pads=[1, 1, 1, 1], strides=[1, 1]),
        helper.make_node("Relu", ["c"], ["r"], name=EVIL_NAMES[1]),
        helper.make_node("GlobalAveragePool", ["r"], ["g"], name=EVIL_NAMES[2]),
        helper.make_node("Flatten", ["g"], ["f"], name=EVIL_NAMES[3], axis=1),
        helper.make_node("Gemm", ["f", "W2", "B2"], ["z"], name=EVIL_NAMES[4], transB=1),
        helper.make_node("Softmax", ["z"], ["Y"], name=EVIL_NAMES[5], axis=-1),
    ]
    graph = helper.make_graph(
        nodes, "small_cnn",
        [helper.make_tensor_value_info("X", TensorProto.FLOAT, [batch, 3, 12, 12])],
        [helper.make_tensor_value_info("Y", TensorProto.FLOAT, [batch, 10])],
        initializer=[numpy_helper.from_array(a, n)
                     for a, n in ((w1, "W1"), (b1, "B1"), (w2, "W2"), (b2, "B2"))],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)], ir_version=8)
    onnx.checker.check_model(model)
    return model


def two_output_model() -> onnx.ModelProto:
    """X -> Relu -> R (output 0) ; R -> Sigmoid -> S ; X + S -> T (output 1)"""
    graph = helper.make_graph(
        [helper.make_node("Relu", ["X"], ["R"], name="relu"),
         helper.make_node("Sigmoid", ["R"], ["S"], name="sig"),
         helper.make_node("Add", ["X", "S"], ["T"], name="add")],
        "two_outputs",
        [helper.make_tensor_value_info("X", TensorProto.FLOAT, [2, 5])],
        [helper.make_tensor_value_info("T", TensorProto.FLOAT, [2, 5]),
         helper.make_tensor_value_info("R", TensorProto.FLOAT, [2, 5])],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)], ir_version=8)
    onnx.checker.check_model(model)
    return model


@pytest.fixture(scope="module")
def proto() -> onnx.ModelProto:
    return small_cnn()


@pytest.fixture(scope="module")
def model_path(proto, tmp_path_factory) -> pathlib.Path:
    path = tmp_path_factory.mktemp("api") / "small_cnn.onnx"
    onnx.save(proto, str(path))
    return path


@pytest.fixture(scope="module")
def ref(proto):
    return ort_session(proto)


@pytest.fixture(scope="module")
def model(model_path):
    return cnnjit.compile(model_path)


def inputs(seed: int) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal((2, 3, 12, 12), dtype=np.float32)


def expect(ref, x: np.ndarray) -> np.ndarray:
    return ref.run(None, {"X": x})[0]


def check(got, want, what: str = "") -> None:
    assert isinstance(got, np.ndarray), f"{what}: got {type(got).__name__}"
    assert got.shape == want.shape, f"{what}: shape {got.shape} != {want.shape}"
    assert got.dtype == want.dtype, f"{what}: dtype {got.dtype} != {want.dtype}"
    np.testing.assert_allclose(got, want, rtol=RTOL, atol=ATOL, err_msg=what)


# -- compile sources --------------------------------------------------------------------------------------
@pytest.mark.parametrize("kind", ["str", "pathlib", "bytes", "proto"])
def test_compile_sources(kind, proto, model_path, ref):
    src = {
        "str": str(model_path),
        "pathlib": model_path,
        "bytes": model_path.read_bytes(),
        "proto": proto,
    }[kind]
    m = cnnjit.compile(src)
    x = inputs(1)
    check(m(x), expect(ref, x), kind)


def test_compile_does_not_modify_proto(proto):
    before = proto.SerializeToString()
    cnnjit.compile(proto)
    assert proto.SerializeToString() == before


def test_names(model):
    assert list(model.input_names) == ["X"]
    assert list(model.output_names) == ["Y"]


# -- call styles ------------------------------------------------------------------------------------------
def test_call_styles_agree(model, ref):
    for seed in range(3):
        x = inputs(seed)
        want = expect(ref, x)
        y_pos = model(x)
        y_kw = model(X=x)
        outs = model.run(None, {"X": x})
        assert isinstance(outs, list) and len(outs) == 1
        check(y_pos, want, "model(x)")
        check(y_kw, want, "model(X=x)")
        check(outs[0], want, "model.run")


def test_run_with_output_names(model, ref):
    x = inputs(4)
    outs = model.run(["Y"], {"X": x})
    assert len(outs) == 1
    check(outs[0], expect(ref, x), "run(['Y'])")


def test_non_contiguous_inputs(model, ref):
    x = inputs(5)
    want = expect(ref, x)
    check(model(np.asfortranarray(x)), want, "fortran-ordered input")
    big = np.zeros((2, 3, 24, 12), np.float32)
    big[:, :, ::2, :] = x
    check(model(big[:, :, ::2, :]), want, "strided view input")


def test_input_not_modified(model):
    x = inputs(6)
    keep = x.copy()
    model(x)
    model.run(None, {"X": x})
    np.testing.assert_array_equal(x, keep)


def test_multiple_outputs_in_graph_order():
    proto = two_output_model()
    ref = ort_session(proto)
    m = cnnjit.compile(proto)
    assert list(m.output_names) == ["T", "R"]
    x = np.random.default_rng(9).standard_normal((2, 5), dtype=np.float32)
    want = ref.run(None, {"X": x})
    y = m(x)
    assert isinstance(y, (list, tuple)) and len(y) == 2
    outs = m.run(None, {"X": x})
    assert isinstance(outs, list) and len(outs) == 2
    for i in range(2):
        check(as_output_list(y)[i], want[i], f"call output {i}")
        check(outs[i], want[i], f"run output {i}")
    assert not np.shares_memory(outs[0], outs[1])


# -- fresh outputs ----------------------------------------------------------------------------------------
def test_outputs_are_fresh(model, ref):
    x = inputs(7)
    want = expect(ref, x)
    y1 = model(x)
    check(y1, want, "first call")
    y1[...] = 123.0
    y2 = model(x)
    check(y2, want, "after mutating the first result")
    assert not np.shares_memory(y1, y2)
    y3 = model(inputs(8))
    check(y2, want, "earlier result after another call")
    assert not np.shares_memory(y2, y3)
    r1 = model.run(None, {"X": x})[0]
    r1 += 1.0
    r2 = model.run(None, {"X": x})[0]
    check(r2, want, "run after mutating a run() result")
    assert not np.shares_memory(r1, r2)


def test_results_writeable(model):
    y = model(inputs(10))
    assert y.flags.writeable


# -- introspection ----------------------------------------------------------------------------------------
def test_ir_and_source(model, capsys):
    print(model.ir)
    printed = capsys.readouterr().out
    assert printed.strip(), "print(model.ir) printed nothing"
    src = model.source()
    assert isinstance(src, str) and src.strip(), "model.source() is empty"


def test_source_has_no_node_names(model):
    """The hostile node names reach the compiler (the compiled IR keeps them) but not the generated source."""
    src = model.source()
    assert {n.name for n in model.ir.nodes} & set(EVIL_NAMES), "no node name reached the IR: nothing was tested"
    assert "evil" not in src, "(part of) a node name appears in the generated source"
    for name in EVIL_NAMES:
        assert name not in src, f"node name {name!r} leaked into the generated source"
    # the payloads must not appear in any form (escaped, partially quoted) either
    for payload in ("os.system", "SystemExit", "sys.exit", "__import__", "del globals"):
        assert payload not in src, f"{payload!r} appears in the generated source"
