"""The ONNX protobuf classes and the three onnx helpers the frontend uses, without importing the onnx package.

``import onnx`` costs about a second of CPU (most of it ``ml_dtypes``' extension, which ``onnx.helper``
loads), more than ``cnnjit info`` may take in all. The frontend needs little of it: the generated message
classes (``ModelProto``, ``TensorProto``, ...), an element type's numpy dtype, a ``TensorProto``'s array and
an attribute's value. This module loads onnx's generated ``onnx_ml_pb2`` from the installed package's file
with protobuf alone (``onnx/__init__.py`` is not run; the classes are the very ones ``import onnx`` gives,
since protobuf builds one class per descriptor of its default pool), and implements the three helpers for
the plain numpy element types; anything else (bfloat16, float8, 4-bit, strings, big-endian hosts) is handed
to onnx's own helpers, importing onnx then.

If onnx is already imported when this module is (by the caller, ``cnnjit.quantize`` or ``cnnjit.prune``),
or onnx's file cannot be loaded, the classes and helpers are onnx's own: ``BACKEND`` says which. The
frontend imports this module as ``onnx`` (``from . import onnx_proto as onnx``), so its code reads as
before; so do ``stages``, ``batching`` and ``target/host``, which need only the message classes.
"""

from __future__ import annotations

import importlib.util
import os
import sys
from types import ModuleType
from typing import Any

import numpy as np

_PB2 = "onnx_ml_pb2"  # what onnx/onnx_pb.py re-exports: the generated module of onnx-ml.proto


def _onnx() -> ModuleType:
    """The onnx package, imported on first use (about a second: only for what this module leaves to it)."""
    import onnx
    import onnx.numpy_helper  # noqa: F401  (binds onnx.numpy_helper)

    return onnx


def _load_pb2() -> tuple[ModuleType, str]:
    """onnx's generated protobuf module and the backend name: loaded from its file without running
    ``onnx/__init__.py`` unless onnx is already imported; onnx itself if the file cannot be loaded."""
    if "onnx" in sys.modules:
        return _onnx(), "onnx"
    try:
        spec = importlib.util.find_spec("onnx")  # finds the package without importing it
        folder = (spec.submodule_search_locations or [None])[0] if spec else None
        path = os.path.join(folder, f"{_PB2}.py") if folder else ""
        pb2_spec = importlib.util.spec_from_file_location(f"cnnjit._onnx_{_PB2}", path) if path else None
        if pb2_spec is None or pb2_spec.loader is None or not os.path.isfile(path):
            raise ImportError(f"no {_PB2}.py in the onnx package")
        module = importlib.util.module_from_spec(pb2_spec)
        pb2_spec.loader.exec_module(module)
        return module, "protobuf"
    except Exception:  # noqa: BLE001 - any failure (layout, protobuf version): onnx's own import decides
        return _onnx(), "onnx"


_pb2, BACKEND = _load_pb2()

AttributeProto = _pb2.AttributeProto
GraphProto = _pb2.GraphProto
ModelProto = _pb2.ModelProto
NodeProto = _pb2.NodeProto
TensorProto = _pb2.TensorProto
ValueInfoProto = _pb2.ValueInfoProto

#: element type -> (numpy dtype, the TensorProto field that stores it when there is no raw_data, that
#: field's numpy dtype), for the types whose dtype numpy has itself (onnx/_mapping.py's TENSOR_TYPE_MAP)
_PLAIN: dict[int, tuple[np.dtype, str, np.dtype]] = {
    int(TensorProto.FLOAT): (np.dtype("float32"), "float_data", np.dtype("float32")),
    int(TensorProto.DOUBLE): (np.dtype("float64"), "double_data", np.dtype("float64")),
    int(TensorProto.FLOAT16): (np.dtype("float16"), "int32_data", np.dtype("int32")),
    int(TensorProto.INT8): (np.dtype("int8"), "int32_data", np.dtype("int32")),
    int(TensorProto.INT16): (np.dtype("int16"), "int32_data", np.dtype("int32")),
    int(TensorProto.INT32): (np.dtype("int32"), "int32_data", np.dtype("int32")),
    int(TensorProto.INT64): (np.dtype("int64"), "int64_data", np.dtype("int64")),
    int(TensorProto.UINT8): (np.dtype("uint8"), "int32_data", np.dtype("int32")),
    int(TensorProto.UINT16): (np.dtype("uint16"), "int32_data", np.dtype("int32")),
    int(TensorProto.UINT32): (np.dtype("uint32"), "uint64_data", np.dtype("uint64")),
    int(TensorProto.UINT64): (np.dtype("uint64"), "uint64_data", np.dtype("uint64")),
    int(TensorProto.BOOL): (np.dtype("bool"), "int32_data", np.dtype("int32")),
}
#: types stored as 16-bit or 8-bit patterns in int32_data (reinterpreted, not converted, as onnx does)
_BITS16 = {int(TensorProto.FLOAT16), int(TensorProto.INT16), int(TensorProto.UINT16)}
_LITTLE = sys.byteorder == "little"
_DATA_TYPES = frozenset(TensorProto.DataType.values())
_ELEM_TYPES = {dt: elem for elem, (dt, _, _) in _PLAIN.items()}


def tensor_dtype_to_np_dtype(elem_type: int) -> np.dtype:
    """The numpy dtype of ONNX element type ``elem_type``, as ``onnx.helper.tensor_dtype_to_np_dtype``."""
    dtype = plain_dtype(elem_type) if BACKEND == "protobuf" else None
    return dtype if dtype is not None else _onnx().helper.tensor_dtype_to_np_dtype(elem_type)


def elem_type_of(dtype: np.dtype) -> int | None:
    """The ONNX element type of numpy ``dtype`` (the inverse of ``plain_dtype``), or None for one it lacks."""
    return _ELEM_TYPES.get(np.dtype(dtype))


def plain_dtype(elem_type: int) -> np.dtype | None:
    """``tensor_dtype_to_np_dtype`` without onnx for a plain numpy element type; ``KeyError`` (as onnx raises)
    for a type that has no dtype (UNDEFINED, or no type at all); None for the others (left to onnx)."""
    if elem_type in _PLAIN:
        return _PLAIN[elem_type][0]
    if elem_type == TensorProto.UNDEFINED or elem_type not in _DATA_TYPES:
        raise KeyError(elem_type)
    return None


def to_array(t: Any) -> np.ndarray:
    """The array a ``TensorProto`` holds, as ``onnx.numpy_helper.to_array`` returns it."""
    arr = plain_array(t) if BACKEND == "protobuf" else None
    return arr if arr is not None else _onnx().numpy_helper.to_array(t)


def plain_array(t: Any) -> np.ndarray | None:
    """``to_array`` without onnx for a tensor of a plain numpy element type stored in the message (raw data or
    its typed field, on a little-endian host); None for any other tensor (onnx's helper reads those)."""
    plain = _PLAIN.get(t.data_type) if _LITTLE else None
    if plain is None or t.HasField("segment") or t.data_location == TensorProto.EXTERNAL:
        return None
    dtype, field, storage = plain
    if t.HasField("raw_data"):
        return np.frombuffer(t.raw_data, dtype=dtype).reshape(t.dims)
    data = getattr(t, field)
    if t.data_type in _BITS16:
        return np.array(data, dtype=np.int32).view(np.uint32).astype(np.uint16).reshape(t.dims).view(dtype)
    if t.data_type == TensorProto.BOOL:
        return np.array(data, dtype=np.int32).view(np.uint32).astype(np.uint8).view(dtype).reshape(t.dims)
    return np.asarray(data, dtype=storage).astype(dtype).reshape(t.dims)


#: attribute type -> the AttributeProto field holding its value; repeated fields come back as lists
_ATTRIBUTE_FIELDS = {
    AttributeProto.FLOAT: "f", AttributeProto.INT: "i", AttributeProto.STRING: "s", AttributeProto.TENSOR: "t",
    AttributeProto.SPARSE_TENSOR: "sparse_tensor", AttributeProto.GRAPH: "g", AttributeProto.TYPE_PROTO: "tp",
    AttributeProto.FLOATS: "floats", AttributeProto.INTS: "ints", AttributeProto.STRINGS: "strings",
    AttributeProto.TENSORS: "tensors", AttributeProto.SPARSE_TENSORS: "sparse_tensors",
    AttributeProto.GRAPHS: "graphs", AttributeProto.TYPE_PROTOS: "type_protos",
}
_REPEATED = {AttributeProto.FLOATS, AttributeProto.INTS, AttributeProto.STRINGS, AttributeProto.TENSORS,
             AttributeProto.SPARSE_TENSORS, AttributeProto.GRAPHS, AttributeProto.TYPE_PROTOS}


def get_attribute_value(a: Any) -> Any:
    """An ``AttributeProto``'s value, as ``onnx.helper.get_attribute_value`` gives it."""
    return attribute_value(a) if BACKEND == "protobuf" else _onnx().helper.get_attribute_value(a)


def attribute_value(a: Any) -> Any:
    """``get_attribute_value`` without onnx: the same values, the same errors (ValueError, same text)."""
    if a.ref_attr_name:
        raise ValueError(f"Cannot get value of reference attribute: {a}")
    if a.type == AttributeProto.UNDEFINED:
        return None
    field = _ATTRIBUTE_FIELDS.get(a.type)
    if field is None:
        raise ValueError(f"Unsupported ONNX attribute: {a}")
    value = getattr(a, field)
    return list(value) if a.type in _REPEATED else value
