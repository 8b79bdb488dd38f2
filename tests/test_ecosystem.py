"""cnnjit in the Python ecosystem: pickling (multiprocessing, process pools), ``model.map``, Dask, logging."""

from __future__ import annotations

import concurrent.futures
import logging
import multiprocessing
import pickle
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

import cnnjit
from cnnjit.runtime import CompiledModel

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"


def small_cnn(classes: int = 5) -> onnx.ModelProto:
    """Conv + Relu + global pool + Flatten + Gemm + Softmax on [N, 3, 8, 8] (batch symbolic)."""
    rng = np.random.default_rng(0)
    inits = [numpy_helper.from_array(rng.standard_normal((4, 3, 3, 3)).astype(np.float32), "w"),
             numpy_helper.from_array(rng.standard_normal(4).astype(np.float32), "b"),
             numpy_helper.from_array(rng.standard_normal((classes, 4)).astype(np.float32), "fc_w"),
             numpy_helper.from_array(rng.standard_normal(classes).astype(np.float32), "fc_b")]
    nodes = [helper.make_node("Conv", ["x", "w", "b"], ["c"], pads=[1, 1, 1, 1]),
             helper.make_node("Relu", ["c"], ["r"]),
             helper.make_node("GlobalAveragePool", ["r"], ["p"]),
             helper.make_node("Flatten", ["p"], ["f"]),
             helper.make_node("Gemm", ["f", "fc_w", "fc_b"], ["g"], transB=1),
             helper.make_node("Softmax", ["g"], ["y"], axis=1)]
    graph = helper.make_graph(nodes, "small_cnn",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 3, 8, 8])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", classes])], inits)
    m = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    m.ir_version = 8
    return m


def two_input_model() -> onnx.ModelProto:
    nodes = [helper.make_node("Add", ["a", "b"], ["s"]), helper.make_node("Relu", ["s"], ["y"])]
    graph = helper.make_graph(nodes, "two_inputs",
                              [helper.make_tensor_value_info("a", TensorProto.FLOAT, ["N", 4]),
                               helper.make_tensor_value_info("b", TensorProto.FLOAT, ["N", 4])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 4])])
    m = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    m.ir_version = 8
    return m


@pytest.fixture(scope="module")
def model() -> CompiledModel:
    return cnnjit.compile(small_cnn())


def batch(n: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal((n, 3, 8, 8)).astype(np.float32)


# ---- pickling --------------------------------------------------------------------------------------------
def test_pickle_round_trip(model: CompiledModel) -> None:
    x = batch(3)
    y = model(x)
    data = pickle.dumps(model)
    m2 = pickle.loads(data)
    assert isinstance(m2, CompiledModel) and m2 is not model
    assert m2.input_names == model.input_names and m2.output_names == model.output_names
    np.testing.assert_array_equal(m2(x), y)
    model_bytes, options = m2.origin
    assert onnx.load_from_string(model_bytes).graph.name == "small_cnn"
    assert options["fuse"] is True and options["entry"] == "auto"


def test_pickle_keeps_compile_options(tmp_path: Path) -> None:
    path = tmp_path / "m.onnx"
    onnx.save(small_cnn(), path)
    m = cnnjit.compile(path, fuse=False, input_shapes={"x": (2, 3, 8, 8)})
    m2 = pickle.loads(pickle.dumps(m))
    assert m2.origin[1]["fuse"] is False and m2.origin[1]["input_shapes"] == {"x": [2, 3, 8, 8]}
    assert "Relu" in {n.op for n in m2.ir.nodes}  # unfused: the Relu is still its own node
    np.testing.assert_array_equal(m2(batch(2)), m(batch(2)))


def test_pickle_without_origin_is_a_clear_error(model: CompiledModel) -> None:
    bare = CompiledModel(model.inputs, model.output_names, lambda shapes, values: None, "bare")
    with pytest.raises(TypeError, match="cannot be pickled"):
        pickle.dumps(bare)


def test_process_pool_executor_spawn(model: CompiledModel) -> None:
    xs = [batch(n, seed=n) for n in (1, 2, 3)]
    ctx = multiprocessing.get_context("spawn")  # a fresh interpreter: nothing inherited, the model re-JITs
    with concurrent.futures.ProcessPoolExecutor(2, mp_context=ctx) as pool:
        results = list(pool.map(model.__call__, xs))
    for x, y in zip(xs, results):
        np.testing.assert_allclose(y, model(x), rtol=1e-6, atol=1e-7)


def test_multiprocessing_pool(model: CompiledModel) -> None:
    xs = [batch(2, seed=s) for s in range(4)]
    with multiprocessing.get_context("fork" if sys.platform == "linux" else "spawn").Pool(2) as pool:
        results = pool.starmap(_apply, [(model, x) for x in xs])
    for x, y in zip(xs, results):
        np.testing.assert_allclose(y, model(x), rtol=1e-6, atol=1e-7)


def _apply(m: CompiledModel, x: np.ndarray) -> np.ndarray:
    return m(x)


# ---- map -------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("threads", [1, 3])
def test_map_keeps_order(model: CompiledModel, threads: int) -> None:
    xs = [batch(1 + i % 3, seed=i) for i in range(10)]  # three batch sizes: three specialisations
    out = model.map(iter(xs), threads=threads)
    assert len(out) == len(xs)
    for x, y in zip(xs, out):
        np.testing.assert_array_equal(y, model(x))


def test_map_dicts_and_tuples() -> None:
    m = cnnjit.compile(two_input_model())
    rng = np.random.default_rng(0)
    pairs = [(rng.standard_normal((2, 4)).astype(np.float32), rng.standard_normal((2, 4)).astype(np.float32))
             for _ in range(5)]
    by_name = m.map([{"a": a, "b": b} for a, b in pairs], threads=2)
    positional = m.map(pairs, threads=2)
    for (a, b), y1, y2 in zip(pairs, by_name, positional):
        np.testing.assert_array_equal(y1, np.maximum(a + b, 0))
        np.testing.assert_array_equal(y2, y1)
    with pytest.raises(ValueError):
        m.map(pairs, threads=0)
    with pytest.raises(cnnjit.InputError):
        m.map([{"a": pairs[0][0]}])


# ---- logging ---------------------------------------------------------------------------------------------
def test_import_alone_silences_the_logger() -> None:
    """``import cnnjit`` (not a later import of the compiler) adds the NullHandler: code that snapshots and restores
    the logger's handlers around a first compile (tests/test_cli.run_cli_here) must not drop it."""
    code = "import logging, cnnjit; print([type(h).__name__ for h in logging.getLogger('cnnjit').handlers])"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True).stdout
    assert out.strip() == "['NullHandler']"


def test_logging_quiet_by_default_and_informative_when_enabled(caplog: pytest.LogCaptureFixture) -> None:
    log = logging.getLogger("cnnjit")
    assert any(isinstance(h, logging.NullHandler) for h in log.handlers)
    with caplog.at_level(logging.DEBUG, logger="cnnjit"):
        m = cnnjit.compile(small_cnn(), input_shapes={"x": (4, 3, 8, 8)})
        m(batch(4))
    text = caplog.text
    assert "compiled 'small_cnn' for x=4x3x8x8" in text
    assert "kernel cache:" in text and "Conv 4x3x8x8" in text


# ---- Dask ------------------------------------------------------------------------------------------------
def test_dask_local_cluster(model: CompiledModel) -> None:
    pytest.importorskip("dask.distributed")
    sys.path.insert(0, str(EXAMPLES))
    try:
        import dask_inference
    finally:
        sys.path.remove(str(EXAMPLES))
    images = batch(96, seed=7)
    t0 = time.perf_counter()
    scores = dask_inference.predict_with_dask(model, images, block=32, workers=2)
    elapsed = time.perf_counter() - t0
    assert scores.shape == (96, 5)
    np.testing.assert_allclose(scores, model(images), rtol=1e-5, atol=1e-6)
    assert elapsed < 120
