"""``compiler/frontend/onnx_proto.py``: onnx's message classes without ``import onnx``, and its own readers of
tensors, element types and attributes, checked against onnx's helpers (the oracle) on every plain element
type, both storages (raw bytes and the typed field) and every attribute type; in a fresh process, that the
command line's frontend leaves onnx out and that the classes are the ones ``import onnx`` gives."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Callable
from typing import Any

import numpy as np
import onnx
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp
from onnx import AttributeProto, TensorProto, helper, numpy_helper

from cnnjit.compiler.frontend import onnx_proto

PLAIN = [TensorProto.FLOAT, TensorProto.DOUBLE, TensorProto.FLOAT16, TensorProto.INT8, TensorProto.INT16,
         TensorProto.INT32, TensorProto.INT64, TensorProto.UINT8, TensorProto.UINT16, TensorProto.UINT32,
         TensorProto.UINT64, TensorProto.BOOL]


@st.composite
def tensors(draw: st.DrawFn) -> TensorProto:
    """A tensor of a plain element type with any values (NaN and infinities included), stored raw or typed."""
    elem = draw(st.sampled_from(PLAIN))
    dtype = helper.tensor_dtype_to_np_dtype(elem)
    shape = draw(hnp.array_shapes(min_dims=0, max_dims=3, min_side=0, max_side=4))
    arr = draw(hnp.arrays(dtype, shape))
    if draw(st.booleans()):
        return numpy_helper.from_array(arr, "t")  # raw_data
    return helper.make_tensor("t", elem, shape, arr.reshape(-1).tolist(), raw=False)  # the typed field


@settings(max_examples=150, deadline=None)
@given(tensors())
def test_plain_array_is_onnx_to_array(t: TensorProto) -> None:
    want = numpy_helper.to_array(t)
    got = onnx_proto.plain_array(t)
    assert got is not None
    assert got.dtype == want.dtype and got.shape == want.shape
    assert got.tobytes() == want.tobytes()  # bit for bit (NaN payloads and -0.0 included)
    assert onnx_proto.plain_dtype(t.data_type) == helper.tensor_dtype_to_np_dtype(t.data_type)


def _outcome(fn: Callable[[Any], Any], arg: Any) -> tuple[str, Any]:
    """("value", what ``fn(arg)`` returns) or (the exception's type, its message) for KeyError/ValueError."""
    try:
        return "value", fn(arg)
    except (KeyError, ValueError) as e:
        return type(e).__name__, str(e)


@pytest.mark.parametrize("elem", [*TensorProto.DataType.values(), 99, -1])
def test_plain_dtype_is_onnx_dtype_or_left_to_it(elem: int) -> None:
    """Every element type: the same dtype as onnx's, the same KeyError, or None (onnx's helper decides)."""
    want, got = _outcome(helper.tensor_dtype_to_np_dtype, elem), _outcome(onnx_proto.plain_dtype, elem)
    assert got == want or got == ("value", None) and want[0] == "value" and elem not in PLAIN


def test_other_tensors_are_left_to_onnx() -> None:
    """bfloat16, strings, 4-bit, external data and segments: plain_array declines; to_array gives onnx's."""
    bf16 = helper.make_tensor("b", TensorProto.BFLOAT16, [2], [1.5, -2.0])
    strings = helper.make_tensor("s", TensorProto.STRING, [2], [b"a", b"b"])
    int4 = helper.make_tensor("i", TensorProto.INT4, [3], [1, -2, 3])
    external = numpy_helper.from_array(np.ones(3, np.float32), "e")
    external.data_location = TensorProto.EXTERNAL
    segment = numpy_helper.from_array(np.ones(3, np.float32), "g")
    segment.segment.begin = 0
    for t in (bf16, strings, int4, external, segment):
        assert onnx_proto.plain_array(t) is None, t.name
    for t in (bf16, strings, int4):
        assert np.array_equal(onnx_proto.to_array(t), numpy_helper.to_array(t))


def _attributes() -> list[AttributeProto]:
    """One attribute of every type onnx's helper reads, an undefined one, one it refuses, one of a type
    that does not exist."""
    g = helper.make_graph([], "g", [], [])
    tp = helper.make_tensor_type_proto(TensorProto.FLOAT, [1])
    t = numpy_helper.from_array(np.arange(3, dtype=np.float32), "t")
    sparse = helper.make_sparse_tensor(t, numpy_helper.from_array(np.array([0, 2, 4], np.int64), "i"), [5])
    out = [helper.make_attribute(name, value) for name, value in [
        ("f", 0.5), ("i", -3), ("s", "text"), ("t", t), ("sparse", sparse), ("g", g), ("tp", tp),
        ("floats", [1.0, 2.5]), ("ints", [1, -2]), ("strings", ["a", "b"]), ("tensors", [t, t]),
        ("sparses", [sparse]), ("graphs", [g]), ("tps", [tp])]]
    undefined = AttributeProto(name="u")
    reference = AttributeProto(name="r", ref_attr_name="alpha", type=AttributeProto.FLOAT)
    unknown = AttributeProto.FromString(b"\x0a\x01x\xa0\x01\x63")  # type 99: kept as an unknown field
    return [*out, undefined, reference, unknown]


@pytest.mark.parametrize("attr", _attributes(), ids=lambda a: a.name)
def test_attribute_value_is_onnx_get_attribute_value(attr: AttributeProto) -> None:
    want, got = _outcome(helper.get_attribute_value, attr), _outcome(onnx_proto.attribute_value, attr)
    assert got == want and type(got[1]) is type(want[1])


def _fresh(code: str) -> str:
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    return r.stdout.strip()


def test_fresh_process_reads_models_without_onnx_and_shares_its_classes(tmp_path) -> None:
    path = tmp_path / "m.onnx"
    onnx.save(helper.make_model(helper.make_graph(
        [helper.make_node("Relu", ["x"], ["y"])], "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2])])), path)
    out = _fresh(
        "import sys\n"
        "from cnnjit.compiler.frontend import onnx_proto\n"
        "from cnnjit.compiler.frontend.loader import load_model\n"
        f"m = load_model({str(path)!r})\n"
        "print(onnx_proto.BACKEND, 'onnx' in sys.modules, 'ml_dtypes' in sys.modules)\n"
        "import onnx\n"  # afterwards: the same classes, and onnx itself still works
        "print(onnx_proto.ModelProto is onnx.ModelProto, isinstance(m, onnx.ModelProto),"
        f" onnx.load({str(path)!r}) == m)\n")
    assert out.splitlines() == ["protobuf False False", "True True True"]
    # onnx imported first: its own classes and helpers
    assert _fresh("import onnx\nfrom cnnjit.compiler.frontend import onnx_proto\n"
                  "print(onnx_proto.BACKEND, onnx_proto.TensorProto is onnx.TensorProto)") == "onnx True"
    # onnx's generated file cannot be found: fall back to import onnx
    assert _fresh("import importlib.util, sys\nimportlib.util.find_spec = lambda *a, **k: None\n"
                  "from cnnjit.compiler.frontend import onnx_proto\n"
                  "print(onnx_proto.BACKEND, 'onnx' in sys.modules)") == "onnx True"
