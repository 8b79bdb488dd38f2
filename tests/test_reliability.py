"""Reliability (issue 10): resource limits, malformed models, call-time validation, concurrency and
determinism. (Code injection, external data and cache integrity: ``test_security.py``.)

Each protection has at least one test here that fails when the protection is removed. Models come from
``reliability_models.py``; onnxruntime is the oracle where values matter.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import numpy as np
import onnx
import pytest
from conftest import ort_session
from onnx import TensorProto, helper, numpy_helper
from reliability_models import ATOL, RTOL, assert_names_node, conv_model, relu_model, x_in

import cnnjit


@pytest.fixture(scope="module")
def conv():
    return cnnjit.compile(conv_model())


@pytest.fixture(scope="module")
def conv_sym():
    return cnnjit.compile(conv_model("N"))


# == 1. resource limits ==========================================================================================
def test_absurd_input_shape_refused_fast():
    t0 = time.perf_counter()
    with pytest.raises(cnnjit.ResourceLimitError):
        cnnjit.compile(relu_model([1000, 1000, 1000, 1000]))  # 1e12 elements
    assert time.perf_counter() - t0 < 5


def test_absurd_intermediate_refused():
    """ConstantOfShape / Expand to 1e12 elements: refused while importing, before any allocation."""
    shape = numpy_helper.from_array(np.array([10**6, 10**6], np.int64), "shape")
    g = helper.make_graph(
        [helper.make_node("Expand", ["X", "shape"], ["E"], name="expand_big"),
         helper.make_node("Relu", ["E"], ["Y"], name="relu")],
        "g", [helper.make_tensor_value_info("X", TensorProto.FLOAT, [1, 1])],
        [helper.make_tensor_value_info("Y", TensorProto.FLOAT, None)], initializer=[shape])
    with pytest.raises(cnnjit.ResourceLimitError) as e:
        cnnjit.compile(helper.make_model(g, opset_imports=[helper.make_opsetid("", 13)], ir_version=8))
    assert_names_node(e.value, "expand_big")


def test_arena_limit(conv):
    assert conv.specialization({"X": (2, 3, 6, 6)}).program.arena_bytes > 0
    with pytest.raises(cnnjit.ResourceLimitError, match="max_arena_bytes"):
        cnnjit.compile(conv_model(), max_arena_bytes=256)
    # a symbolic batch: the limit applies to every specialisation, at call time
    m = cnnjit.compile(conv_model("N"), max_arena_bytes=200_000)
    assert m(x_in(1)).shape == (1, 5)
    with pytest.raises(cnnjit.ResourceLimitError, match="max_arena_bytes"):
        m.specialization({"X": (400, 3, 6, 6)})
    assert m(x_in(2)).shape == (2, 5)  # still usable
    # a call at batch 400 needs no batch-400 arena: it loops over the batch-1 program (tests/test_batch.py)
    assert m(x_in(400)).shape == (400, 5) and type(m._last).__name__ == "BatchLoop"


def test_zero_sized_batch(conv_sym):
    y = conv_sym(np.zeros((0, 3, 6, 6), np.float32))
    assert y.shape == (0, 5) and y.dtype == np.float32
    m = cnnjit.compile(relu_model([0, 4]))
    assert m(np.zeros((0, 4), np.float32)).shape == (0, 4)


def test_negative_input_shapes_refused():
    with pytest.raises(cnnjit.CnnjitError, match="negative"):
        cnnjit.compile(conv_model("N"), input_shapes={"X": [-2, 3, 6, 6]})


# == 2. malformed models ===========================================================================================
def test_truncated_and_random_bytes(tmp_path):
    data = conv_model().SerializeToString()
    rng = np.random.default_rng(5)
    for cut in (1, 7, len(data) // 3, len(data) // 2, len(data) - 3):
        with pytest.raises(cnnjit.ModelError):
            cnnjit.compile(data[:cut])
    for _ in range(20):
        with pytest.raises(cnnjit.ModelError):
            cnnjit.compile(rng.integers(0, 256, 200, dtype=np.uint8).tobytes())


def test_cycle_names_nodes():
    m = conv_model()
    m.graph.node[0].input[0] = "r"  # conv reads relu's output, relu reads conv's
    with pytest.raises(cnnjit.ModelError, match="cycle") as e:
        cnnjit.compile(m)
    assert "conv" in str(e.value) and "relu" in str(e.value)


def test_unsorted_graph_is_reordered_without_touching_the_proto():
    m = conv_model()
    nodes = list(m.graph.node)
    del m.graph.node[:]
    m.graph.node.extend(reversed(nodes))
    before = m.SerializeToString()
    want = ort_session(conv_model()).run(None, {"X": x_in()})[0]
    np.testing.assert_allclose(cnnjit.compile(m)(x_in()), want, rtol=RTOL, atol=ATOL)
    assert m.SerializeToString() == before


def test_dangling_input_names_node():
    m = conv_model()
    m.graph.node[1].input[0] = "nobody_makes_this"
    with pytest.raises(cnnjit.ModelError, match="nobody_makes_this") as e:
        cnnjit.compile(m)
    assert_names_node(e.value, "relu")


def test_duplicate_output_names_nodes():
    m = conv_model()
    m.graph.node[2].output[0] = "r"  # pool writes relu's output name
    with pytest.raises(cnnjit.ModelError, match="produced") as e:
        cnnjit.compile(m)
    assert "relu" in str(e.value) and "pool" in str(e.value)
    m = conv_model()
    m.graph.node[1].output[0] = "W"  # an initializer's name
    with pytest.raises(cnnjit.ModelError) as e:
        cnnjit.compile(m)
    assert_names_node(e.value, "relu")


def test_duplicate_graph_outputs_and_attributes():
    m = conv_model()
    m.graph.output.append(m.graph.output[0])
    with pytest.raises(cnnjit.ModelError, match="twice"):
        cnnjit.compile(m)
    m = conv_model()
    m.graph.node[0].attribute.append(helper.make_attribute("kernel_shape", [5, 5]))
    with pytest.raises(cnnjit.ModelError, match="twice") as e:
        cnnjit.compile(m)
    assert_names_node(e.value, "conv")


@pytest.mark.parametrize("how", ["raw_short", "raw_long", "dims", "float_data"])
def test_wrong_initializer_sizes(how):
    m = conv_model()
    t = m.graph.initializer[0]
    if how == "raw_short":
        t.raw_data = t.raw_data[:-4]
    elif how == "raw_long":
        t.raw_data = t.raw_data + b"\0" * 4
    elif how == "dims":
        t.dims[0] = 5
    else:
        arr = numpy_helper.to_array(t).reshape(-1)
        t.ClearField("raw_data")
        t.float_data.extend(arr[:-1].tolist())
    with pytest.raises(cnnjit.ModelError, match="initializer 'W'"):
        cnnjit.compile(m)


@pytest.mark.parametrize("attr,value", [
    ("kernel_shape", 3.0), ("kernel_shape", "3x3"), ("strides", [0, 0]), ("strides", [-1, -1]),
    ("pads", [-1, -1, -1, -1]), ("pads", [1, 1]), ("dilations", [0, 1]), ("group", 5),
    ("kernel_shape", [3, 3, 3]), ("kernel_shape", [9, 9]),
])
def test_bad_conv_attributes_name_the_node(attr, value):
    m = conv_model()
    node = m.graph.node[0]
    for i, a in enumerate(node.attribute):
        if a.name == attr:
            del node.attribute[i]
            break
    node.attribute.append(helper.make_attribute(attr, value))
    with pytest.raises(cnnjit.CnnjitError) as e:
        cnnjit.compile(m)
    assert_names_node(e.value, "conv")


def test_attribute_type_field_mismatch():
    m = conv_model()
    a = next(a for a in m.graph.node[0].attribute if a.name == "pads")
    a.type = onnx.AttributeProto.STRING  # says string, holds ints
    with pytest.raises(cnnjit.CnnjitError) as e:
        cnnjit.compile(m)
    assert_names_node(e.value, "conv")


def test_rank_mismatch_names_node():
    g = helper.make_graph(
        [helper.make_node("Conv", ["X", "W"], ["Y"], name="conv2d_on_matrix", kernel_shape=[3, 3])],
        "g", [helper.make_tensor_value_info("X", TensorProto.FLOAT, [4, 4])],
        [helper.make_tensor_value_info("Y", TensorProto.FLOAT, None)],
        initializer=[numpy_helper.from_array(np.ones((1, 1, 3, 3), np.float32), "W")])
    with pytest.raises(cnnjit.CnnjitError) as e:
        cnnjit.compile(helper.make_model(g, opset_imports=[helper.make_opsetid("", 13)], ir_version=8))
    assert_names_node(e.value, "conv2d_on_matrix")


# == 3. call-time validation ===========================================================================================
def test_call_errors(conv):
    x = x_in()
    for bad, match in [
        (x[:1], "dimension 0"), (x[None], "rank"), (x.astype(np.float64), "dtype"),
        (x.astype(np.int32), "dtype"), ("hello", "numpy array"), ([[1, 2], [3]], "array"),
    ]:
        with pytest.raises(cnnjit.InputError, match=match):
            conv(bad)
    with pytest.raises(cnnjit.InputError, match="missing"):
        conv()
    with pytest.raises(cnnjit.InputError, match="unknown"):
        conv(X=x, extra=x)
    with pytest.raises(cnnjit.InputError):
        conv(x, x)


def test_non_contiguous_read_only_and_byte_swapped_inputs(conv):
    x = x_in()
    want = conv(x)
    views = {
        "fortran": np.asfortranarray(x),
        "strided": np.repeat(x, 2, axis=3)[..., ::2],
        "negative strides": x[..., ::-1].copy()[..., ::-1],
        "big-endian": x.astype(">f4"),
    }
    ro = x.copy()
    ro.setflags(write=False)
    views["read-only"] = ro
    for what, v in views.items():
        np.testing.assert_array_equal(conv(v), want, err_msg=what)
    np.testing.assert_array_equal(x, x_in())  # inputs untouched


def test_outputs_never_alias_internal_buffers():
    """Outputs are fresh arrays, also when a graph output is a graph input or a constant."""
    g = helper.make_graph(
        [helper.make_node("Relu", ["X"], ["R"], name="relu")], "g",
        [helper.make_tensor_value_info("X", TensorProto.FLOAT, [3])],
        [helper.make_tensor_value_info("R", TensorProto.FLOAT, [3]),
         helper.make_tensor_value_info("X", TensorProto.FLOAT, [3]),
         helper.make_tensor_value_info("K", TensorProto.FLOAT, [3])],
        initializer=[numpy_helper.from_array(np.array([1, 2, 3], np.float32), "K")])
    m = cnnjit.compile(helper.make_model(g, opset_imports=[helper.make_opsetid("", 13)], ir_version=8))
    x = np.array([-1, 0, 2], np.float32)
    outs = m(x)
    spec = m.specialization({"X": (3,)})
    bufs = [b for pool in spec._pool for b in pool.values()]
    for o in outs:
        assert o.flags.writeable and o.flags.owndata
        assert not any(np.shares_memory(o, b) for b in bufs)
        assert not np.shares_memory(o, x)
        o[...] = 99
    again = m(x)
    np.testing.assert_array_equal(again[0], [0, 0, 2])
    np.testing.assert_array_equal(again[1], x)
    np.testing.assert_array_equal(again[2], [1, 2, 3])


# == 4. concurrency ===========================================================================================
def test_threads_bit_exact(conv_sym):
    """8 threads x 200 calls with mixed batch sizes give bit-identical results to serial calls."""
    batches = [1, 2, 3, 5, 8]
    rng = np.random.default_rng(3)
    inputs = [rng.standard_normal((batches[i % len(batches)], 3, 6, 6)).astype(np.float32) for i in range(40)]
    serial = [conv_sym(x) for x in inputs]
    errors: list[str] = []
    barrier = threading.Barrier(8)

    def worker(t: int) -> None:
        barrier.wait()
        for j in range(200):
            i = (t * 7 + j) % len(inputs)
            y = conv_sym(inputs[i])
            if not np.array_equal(y, serial[i]) or y.tobytes() != serial[i].tobytes():
                errors.append(f"thread {t} call {j} input {i}")

    threads = [threading.Thread(target=worker, args=(t,)) for t in range(8)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    assert not errors, f"{len(errors)} mismatches, e.g. {errors[:3]}"


def test_calls_run_in_parallel_on_separate_arenas():
    """Concurrent calls of one specialisation overlap (no lock around a single arena) and never see the
    same scratch buffers."""
    m = cnnjit.compile(conv_model())
    spec = m.specialization({"X": (2, 3, 6, 6)})
    real = spec.program.run
    active, peak, seen = [0], [0], []
    lock = threading.Lock()

    def slow_run(*bufs):
        with lock:
            active[0] += 1
            peak[0] = max(peak[0], active[0])
            seen.append([id(b) for b in bufs if b.flags.writeable])
        time.sleep(0.05)
        real(*bufs)
        with lock:
            active[0] -= 1

    spec.program.run = slow_run
    x = x_in()
    want = ort_session(conv_model()).run(None, {"X": x})[0]
    results = [None] * 4

    def call(i: int) -> None:
        results[i] = m(x)

    threads = [threading.Thread(target=call, args=(i,)) for i in range(4)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    assert peak[0] > 1, "calls were serialised"
    for r in results:
        np.testing.assert_allclose(r, want, rtol=RTOL, atol=ATOL)
    a, b = spec._acquire(), spec._acquire()
    try:
        for name in a:
            if a[name].flags.writeable:
                assert not np.shares_memory(a[name], b[name])
    finally:
        spec._release(a)
        spec._release(b)
    assert len(spec._pool) <= spec.max_pooled


SUBPROCESS = textwrap.dedent("""
    import json, sys
    import numpy as np
    import cnnjit
    from cnnjit.compiler.codegen import build
    model, xin, yout = sys.argv[1:4]
    m = cnnjit.compile(model)
    np.save(yout, m(np.load(xin)))
    hits = sum(sum(d.stats.cache_hits.values()) for d in build._loaded.values())
    misses = sum(sum(d.stats.cache_misses.values()) for d in build._loaded.values())
    print(json.dumps({"hits": hits, "misses": misses, "dir": str(build.cache_dir())}))
""")


def _spawn(cache: Path, model: Path, xin: Path, yout: Path) -> subprocess.Popen:
    env = dict(os.environ, CNNJIT_CACHE_DIR=str(cache))
    return subprocess.Popen([sys.executable, "-c", SUBPROCESS, str(model), str(xin), str(yout)], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _finish(p: subprocess.Popen) -> dict:
    out, err = p.communicate(timeout=300)
    assert p.returncode == 0, f"subprocess failed ({p.returncode}):\n{err[-3000:]}"
    return json.loads(out.strip().splitlines()[-1])


@pytest.fixture
def model_files(tmp_path):
    model = tmp_path / "m.onnx"
    onnx.save(conv_model(), str(model))
    xin = tmp_path / "x.npy"
    np.save(xin, x_in(seed=9))
    return model, xin, cnnjit.compile(model)(x_in(seed=9))


def test_two_processes_compile_into_one_fresh_cache(tmp_path, model_files):
    """Two processes compile the same model into an empty cache at once; both give the (bit-identical)
    in-process result, and a third process then loads every kernel from the cache."""
    model, xin, want = model_files
    cache = tmp_path / "cache"
    procs = [_spawn(cache, model, xin, tmp_path / f"y{i}.npy") for i in range(2)]
    stats = [_finish(p) for p in procs]
    for i in range(2):
        assert np.load(tmp_path / f"y{i}.npy").tobytes() == want.tobytes(), f"process {i} differs"
    third = _finish(_spawn(cache, model, xin, tmp_path / "y2.npy"))
    assert np.load(tmp_path / "y2.npy").tobytes() == want.tobytes()
    assert third["misses"] == 0 and third["hits"] > 0, (stats, third)


# == 5. determinism ===========================================================================================
def test_deterministic_across_calls(conv_sym):
    x = x_in(3, seed=4)
    first = conv_sym(x).tobytes()
    for _ in range(50):
        assert conv_sym(x).tobytes() == first
    # interleaving other shapes does not change it
    conv_sym(x_in(1))
    assert conv_sym(x).tobytes() == first
    # a fresh compile of the same model gives the same bits
    assert cnnjit.compile(conv_model("N"))(x).tobytes() == first
