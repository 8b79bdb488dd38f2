"""Reliability and security (issue 10): code injection, external data, resource limits, malformed
models, call-time validation, concurrency, cache integrity and determinism.

Each protection has at least one test here that fails when the protection is removed. Models are built
with ``onnx.helper``; onnxruntime is the oracle where values matter.
"""

from __future__ import annotations

import json
import os
import stat
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

import cnnjit
from cnnjit.compiler.codegen import build

RTOL, ATOL = 1e-4, 1e-5
SENTINEL = "/tmp/cnnjit_injection_sentinel"

PAYLOADS = [
    f"__import__('pathlib').Path('{SENTINEL}').touch()",
    f"x'); __import__('pathlib').Path('{SENTINEL}').touch() #",
    f'"""; __import__("pathlib").Path("{SENTINEL}").touch() #',
    "\nimport os; os._exit(41)\n",
    "{__import__('os')._exit(42)}",
    "int main(void) { system(\"rm -rf ~\"); return 0; } /*",
    "\\x00'\"\\\n#",
]
FRAGMENTS = ["__import__", "os._exit", "pathlib", "system(", "int main", SENTINEL]


# -- models ---------------------------------------------------------------------------------------------------
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
    return np.random.default_rng(seed).standard_normal((batch, 3, 6, 6)).astype(np.float32)


def relu_model(shape, dtype=TensorProto.FLOAT) -> onnx.ModelProto:
    g = helper.make_graph([helper.make_node("Relu", ["X"], ["Y"], name="relu")], "g",
                          [helper.make_tensor_value_info("X", dtype, shape)],
                          [helper.make_tensor_value_info("Y", dtype, shape)])
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", 13)], ir_version=8)


@pytest.fixture(scope="module")
def conv():
    return cnnjit.compile(conv_model())


@pytest.fixture(scope="module")
def conv_sym():
    return cnnjit.compile(conv_model("N"))


def _node_named(err: Exception, *names: str) -> None:
    msg = str(err)
    assert any(n in msg for n in names), f"the error does not name the node ({names}): {msg}"


# == 1. no code injection ======================================================================================
@pytest.mark.parametrize("payload", PAYLOADS)
def test_hostile_names_never_reach_generated_source(payload):
    if os.path.exists(SENTINEL):
        os.unlink(SENTINEL)
    names = [f"{payload}#{i}" for i in range(16)]
    proto = conv_model(names=names, text=payload)
    m = cnnjit.compile(proto)
    want = ort_session(conv_model()).run(None, {"X": x_in()})[0]
    np.testing.assert_allclose(m(x_in()), want, rtol=RTOL, atol=ATOL)
    assert m.input_names == [names[0]] and m.output_names == [names[9]]
    program = m.specialization({names[0]: (2, 3, 6, 6)}).program
    texts = [m.source(), program.source]
    for src in program.kernel_sources.values():
        texts.append(build.module_text(src))
        texts.append((build.cache_dir() / f"k_{build.source_key(src)}.py").read_text())
    assert len(texts) > 4
    for text in texts:
        assert payload not in text
        for frag in FRAGMENTS:
            assert frag not in text, f"{frag!r} reached generated source"
    assert not os.path.exists(SENTINEL), "a payload ran"


def test_hostile_attribute_strings_are_errors_not_code():
    for payload in PAYLOADS:
        proto = conv_model()
        proto.graph.node[0].attribute.append(helper.make_attribute("auto_pad", payload))
        with pytest.raises(cnnjit.CnnjitError) as e:
            cnnjit.compile(proto)
        _node_named(e.value, "conv")
    assert not os.path.exists(SENTINEL)


def test_tampered_kernel_module_is_not_executed(tmp_path, monkeypatch):
    """A kernel module file replaced in the cache is detected (content differs) and rewritten; its code
    never runs."""
    monkeypatch.setenv("CNNJIT_CACHE_DIR", str(tmp_path))
    build._dirs.clear()
    src = "def kernel(xb, xo, n):\n    for i in range(n):\n        xb[xo + i] = 7.25 + i\n"
    key = build.source_key(src)
    path = build.cache_dir() / f"k_{key}.py"
    path.write_text(f"__import__('pathlib').Path({str(tmp_path / 'pwned')!r}).touch()\n"
                    "def kernel(xb, xo, n):\n    pass\n")
    build._loaded.pop(key, None)
    k = build.load_kernel(src)
    assert not (tmp_path / "pwned").exists(), "the tampered module ran"
    assert path.read_text() == build.module_text(src), "the tampered module was not rewritten"
    buf = np.zeros(4, np.float32)
    k(buf, 1, 2)
    assert buf.tolist() == [0, 7.25, 8.25, 0]


# == 2. external data ===========================================================================================
def _save_external(tmp_path: Path, location: str = "weights.bin") -> Path:
    d = tmp_path / "model"
    d.mkdir(exist_ok=True)
    path = d / "m.onnx"
    onnx.save_model(conv_model(), str(path), save_as_external_data=True, all_tensors_to_one_file=True,
                    location=location, size_threshold=0)
    return path


def _set_location(path: Path, location: str, **extra: str) -> None:
    m = onnx.load(str(path), load_external_data=False)
    for t in m.graph.initializer:
        for kv in t.external_data:
            if kv.key == "location":
                kv.value = location
            elif kv.key in extra:
                kv.value = extra[kv.key]
    path.write_bytes(m.SerializeToString())


def test_external_data_loads_inside_model_dir(tmp_path):
    path = _save_external(tmp_path)
    raw = onnx.load(str(path), load_external_data=False)
    assert all(t.data_location == TensorProto.EXTERNAL for t in raw.graph.initializer)
    want = ort_session(conv_model()).run(None, {"X": x_in()})[0]
    np.testing.assert_allclose(cnnjit.compile(path)(x_in()), want, rtol=RTOL, atol=ATOL)
    np.testing.assert_allclose(cnnjit.compile(str(path))(x_in()), want, rtol=RTOL, atol=ATOL)
    # a ModelProto that still refers to external data is not modified (and has no folder to read from)
    before = raw.SerializeToString()
    with pytest.raises(cnnjit.ModelError, match="external data"):
        cnnjit.compile(raw)
    assert raw.SerializeToString() == before
    with pytest.raises(cnnjit.ModelError, match="external data"):
        cnnjit.compile(path.read_bytes())


def test_external_data_dotdot_refused(tmp_path):
    path = _save_external(tmp_path)
    # a perfectly good data file one level up: only the path rule stops it from being read
    (tmp_path / "weights.bin").write_bytes((path.parent / "weights.bin").read_bytes())
    _set_location(path, "../weights.bin")
    with pytest.raises(cnnjit.ModelError, match=r"\.\."):
        cnnjit.compile(path)
    _set_location(path, "sub/../../weights.bin")
    with pytest.raises(cnnjit.ModelError, match=r"\.\."):
        cnnjit.compile(path)


def test_external_data_absolute_path_refused(tmp_path):
    path = _save_external(tmp_path)
    _set_location(path, str(path.parent / "weights.bin"))  # absolute, even though it is inside the folder
    with pytest.raises(cnnjit.ModelError, match="relative"):
        cnnjit.compile(path)


def test_external_data_symlink_out_refused(tmp_path):
    path = _save_external(tmp_path)
    outside = tmp_path / "outside.bin"
    outside.write_bytes((path.parent / "weights.bin").read_bytes())
    os.symlink(outside, path.parent / "link.bin")
    _set_location(path, "link.bin")
    with pytest.raises(cnnjit.ModelError, match="outside"):
        cnnjit.compile(path)
    os.symlink(tmp_path, path.parent / "dirlink")
    _set_location(path, "dirlink/outside.bin")
    with pytest.raises(cnnjit.ModelError, match="outside"):
        cnnjit.compile(path)


def test_external_data_sizes_checked(tmp_path):
    path = _save_external(tmp_path)
    data = path.parent / "weights.bin"
    full = data.read_bytes()
    data.write_bytes(full[:-8])  # truncated file
    with pytest.raises(cnnjit.ModelError, match="truncated|beyond the end"):
        cnnjit.compile(path)
    data.write_bytes(full)
    m = onnx.load(str(path), load_external_data=False)
    kv = next(kv for kv in m.graph.initializer[0].external_data if kv.key == "length")
    kv.value = str(int(kv.value) - 4)  # declared length disagrees with the tensor's shape
    path.write_bytes(m.SerializeToString())
    with pytest.raises(cnnjit.ModelError, match="length"):
        cnnjit.compile(path)
    for bad in ("-4", "abc"):
        kv.value = bad
        path.write_bytes(m.SerializeToString())
        with pytest.raises(cnnjit.ModelError):
            cnnjit.compile(path)


def test_external_data_missing_file(tmp_path):
    path = _save_external(tmp_path)
    _set_location(path, "nope.bin")
    with pytest.raises(cnnjit.ModelError, match="does not exist"):
        cnnjit.compile(path)


# == 3. resource limits ==========================================================================================
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
    _node_named(e.value, "expand_big")


def test_arena_limit(conv):
    assert conv.specialization({"X": (2, 3, 6, 6)}).program.arena_bytes > 0
    with pytest.raises(cnnjit.ResourceLimitError, match="max_arena_bytes"):
        cnnjit.compile(conv_model(), max_arena_bytes=256)
    # a symbolic batch: the limit applies to every specialisation, at call time
    m = cnnjit.compile(conv_model("N"), max_arena_bytes=200_000)
    assert m(x_in(1)).shape == (1, 5)
    with pytest.raises(cnnjit.ResourceLimitError, match="max_arena_bytes"):
        m(x_in(400))
    assert m(x_in(2)).shape == (2, 5)  # still usable


def test_zero_sized_batch(conv_sym):
    y = conv_sym(np.zeros((0, 3, 6, 6), np.float32))
    assert y.shape == (0, 5) and y.dtype == np.float32
    m = cnnjit.compile(relu_model([0, 4]))
    assert m(np.zeros((0, 4), np.float32)).shape == (0, 4)


def test_negative_input_shapes_refused():
    with pytest.raises(cnnjit.CnnjitError, match="negative"):
        cnnjit.compile(conv_model("N"), input_shapes={"X": [-2, 3, 6, 6]})


# == 4. malformed models ===========================================================================================
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
    _node_named(e.value, "relu")


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
    _node_named(e.value, "relu")


def test_duplicate_graph_outputs_and_attributes():
    m = conv_model()
    m.graph.output.append(m.graph.output[0])
    with pytest.raises(cnnjit.ModelError, match="twice"):
        cnnjit.compile(m)
    m = conv_model()
    m.graph.node[0].attribute.append(helper.make_attribute("kernel_shape", [5, 5]))
    with pytest.raises(cnnjit.ModelError, match="twice") as e:
        cnnjit.compile(m)
    _node_named(e.value, "conv")


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
    _node_named(e.value, "conv")


def test_attribute_type_field_mismatch():
    m = conv_model()
    a = next(a for a in m.graph.node[0].attribute if a.name == "pads")
    a.type = onnx.AttributeProto.STRING  # says string, holds ints
    with pytest.raises(cnnjit.CnnjitError) as e:
        cnnjit.compile(m)
    _node_named(e.value, "conv")


def test_rank_mismatch_names_node():
    g = helper.make_graph(
        [helper.make_node("Conv", ["X", "W"], ["Y"], name="conv2d_on_matrix", kernel_shape=[3, 3])],
        "g", [helper.make_tensor_value_info("X", TensorProto.FLOAT, [4, 4])],
        [helper.make_tensor_value_info("Y", TensorProto.FLOAT, None)],
        initializer=[numpy_helper.from_array(np.ones((1, 1, 3, 3), np.float32), "W")])
    with pytest.raises(cnnjit.CnnjitError) as e:
        cnnjit.compile(helper.make_model(g, opset_imports=[helper.make_opsetid("", 13)], ir_version=8))
    _node_named(e.value, "conv2d_on_matrix")


# == 5. call-time validation ===========================================================================================
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


# == 6. concurrency ===========================================================================================
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


# == 7. cache integrity ===========================================================================================
def test_cache_key_covers_versions_and_cpu(monkeypatch):
    base = build.cache_key()
    import llvmlite
    import numba

    for obj, attr, value in [(numba, "__version__", "0.0.0"), (llvmlite, "__version__", "0.0.0"),
                             (cnnjit._version, "__version__", "999.0")]:
        with monkeypatch.context() as mp:
            mp.setattr(obj, attr, value)
            assert build.cache_key() != base, f"cache key ignores {obj.__name__}.{attr}"
    with monkeypatch.context() as mp:
        mp.setattr(build, "_host_cpu", lambda: ("some-other-cpu", "+avx2"))
        assert build.cache_key() != base
    with monkeypatch.context() as mp:
        name = build._host_cpu()[0]
        mp.setattr(build, "_host_cpu", lambda: (name, "-avx512f"))
        assert build.cache_key() != base
    assert build.cache_key() == base
    assert base in build.cache_dir().name


def test_cache_dir_is_private(tmp_path, monkeypatch):
    fresh = tmp_path / "fresh" / "cache"
    monkeypatch.setenv("CNNJIT_CACHE_DIR", str(fresh))
    build._dirs.clear()
    d = build.cache_dir()
    assert stat.S_IMODE(fresh.stat().st_mode) == 0o700
    assert stat.S_IMODE(d.stat().st_mode) == 0o700
    # an existing, too-open kernel folder is tightened
    os.chmod(d, 0o777)
    build._dirs.clear()
    assert stat.S_IMODE(build.cache_dir().stat().st_mode) == 0o700
    build._dirs.clear()


def test_corrupt_kernel_module_rewritten(tmp_path, monkeypatch):
    monkeypatch.setenv("CNNJIT_CACHE_DIR", str(tmp_path))
    build._dirs.clear()
    src = "def kernel(xb, xo, n):\n    for i in range(n):\n        xb[xo + i] = 3.5\n"
    key = build.source_key(src)
    build._loaded.pop(key, None)
    build.load_kernel(src)
    path = build.cache_dir() / f"k_{key}.py"
    for corrupt in (path.read_bytes()[:40], b"\xff\xfe garbage \x00", b""):
        path.write_bytes(corrupt)
        build._loaded.pop(key, None)
        k = build.load_kernel(src)
        assert path.read_text() == build.module_text(src)
        buf = np.zeros(3, np.float32)
        k(buf, 0, 3)
        assert buf.tolist() == [3.5] * 3
    build._dirs.clear()


def test_corrupt_numba_cache_rebuilt(tmp_path, monkeypatch):
    """Damaged numba cache files (index and data: truncated, one flipped bit, garbage) are detected,
    deleted and rebuilt: the kernel is recompiled (not loaded) and computes the right result, and the
    next load hits the repaired cache."""
    monkeypatch.setenv("CNNJIT_CACHE_DIR", str(tmp_path))
    build._dirs.clear()
    src = "def kernel(xb, xo, n):\n    for i in range(n):\n        xb[xo + i] = xb[xo + i] * 2.0 + 1.0\n"
    key = build.source_key(src)

    def fresh_load():
        build._loaded.pop(key, None)
        k = build.load_kernel(src)
        buf = np.arange(4, dtype=np.float64)
        k(buf, 1, 2)
        assert buf.tolist() == [0, 3, 5, 3]
        return sum(k.stats.cache_hits.values()), sum(k.stats.cache_misses.values())

    assert fresh_load() == (0, 1)
    assert fresh_load() == (1, 0)  # the cache works
    pycache = build.cache_dir() / "__pycache__"
    rng = np.random.default_rng(0)
    for damage in ("flip", "truncate", "garbage", "flip-index"):
        files = sorted(p for p in pycache.glob(f"k_{key}.*") if p.suffix in (".nbi", ".nbc"))
        assert len(files) == 2, files
        for p in files:
            if damage == "flip-index" and p.suffix != ".nbi":
                continue
            data = bytearray(p.read_bytes())
            if damage.startswith("flip"):
                data[int(rng.integers(40, len(data)))] ^= 0x10
            elif damage == "truncate":
                data = data[: len(data) // 2]
            else:
                data = bytearray(rng.integers(0, 256, 64, dtype=np.uint8).tobytes())
            p.write_bytes(bytes(data))
        assert fresh_load() == (0, 1), f"a {damage} cache entry was used"
        assert fresh_load() == (1, 0), f"the cache was not rebuilt after {damage}"
    build._dirs.clear()


# == 8. determinism ===========================================================================================
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
