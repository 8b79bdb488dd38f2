"""Loading an ONNX model from a path, bytes or ``ModelProto``, and reading its input signature."""

from __future__ import annotations

import os
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from cnnjit.ir.errors import InputError, ModelError

from . import onnx_proto as onnx
from .onnx_types import PACKED_4BIT, elem_dtype
from .validate import validate_graph


@dataclass(frozen=True)
class InputSpec:
    """A graph input (or output) as declared by the model: name, element type, dims (int, or None if symbolic)."""

    name: str
    dtype: np.dtype
    dims: tuple[int | None, ...] | None  # None: rank unknown
    dim_names: tuple[str, ...] = ()

    def describe(self) -> str:
        if self.dims is None:
            return f"{self.name}: {self.dtype}[?]"
        dims = ", ".join(
            str(d) if d is not None else (self.dim_names[i] or "?") for i, d in enumerate(self.dims)
        )
        return f"{self.name}: {self.dtype}[{dims}]"


def load_model(src: str | os.PathLike | bytes | onnx.ModelProto) -> onnx.ModelProto:
    """Parse ``src`` into a ``ModelProto``; any parse failure becomes a ``ModelError``.

    External-data tensors are read (safely, see ``load_external_data``) from the model file's folder; a
    model given as bytes or a ``ModelProto`` has no folder, so it must carry its tensors inline. The
    graph is checked for structural errors (``validate.validate_graph``); a ``ModelProto`` passed in is
    never modified (a copy is made when external data must be filled in or nodes re-ordered).
    """
    base_dir: Path | None = None
    if isinstance(src, onnx.ModelProto):
        model = src
        where = "the given ModelProto"
    else:
        if isinstance(src, (bytes, bytearray, memoryview)):
            data = bytes(src)
            where = "the given bytes"
        elif isinstance(src, (str, os.PathLike)):
            path = Path(src)
            if not path.is_file():
                raise ModelError(f"model file {str(path)!r} does not exist or is not a file")
            data = path.read_bytes()
            where = f"model file {str(path)!r}"
            base_dir = path.resolve().parent
        else:
            raise ModelError(
                f"cannot load a model from a {type(src).__name__}: pass a path, bytes or an onnx.ModelProto"
            )
        model = onnx.ModelProto()
        try:
            model.ParseFromString(data)
        except Exception as e:  # noqa: BLE001 - protobuf raises DecodeError and others
            raise ModelError(f"{where} is not a valid ONNX protobuf ({type(e).__name__}: {e}); "
                             "is the file truncated or not an .onnx model?") from None
    if not model.HasField("graph") or not model.graph.node and not model.graph.output:
        raise ModelError(f"{where} parsed, but holds no ONNX graph; is it an .onnx model file?")
    if any(_is_external(t) for t in _all_tensors(model.graph)):
        if base_dir is None:
            raise ModelError(
                f"{where} stores tensors as external data, which cnnjit reads only next to a model file: "
                "pass the .onnx path instead (or onnx.load() the model with its external data first)")
        if model is src:
            model = _copy(model)
        load_external_data(model, base_dir)
    return validate_graph(model, copy=model is src)


def _copy(model: onnx.ModelProto) -> onnx.ModelProto:
    out = onnx.ModelProto()
    out.CopyFrom(model)
    return out


# -- external data ----------------------------------------------------------------------------------------
def _is_external(t: onnx.TensorProto) -> bool:
    return t.data_location == onnx.TensorProto.EXTERNAL


def _all_tensors(graph: onnx.GraphProto):
    """Every ``TensorProto`` of ``graph``: initializers, sparse initializers, node attributes, subgraphs."""
    stack = [graph]
    seen = 0
    while stack:
        g = stack.pop()
        seen += 1
        if seen > 10_000:
            raise ModelError("the model nests more than 10000 subgraphs")
        yield from g.initializer
        for st in g.sparse_initializer:
            yield st.values
            yield st.indices
        for n in g.node:
            for a in n.attribute:
                if a.HasField("t"):
                    yield a.t
                yield from a.tensors
                if a.HasField("sparse_tensor"):
                    yield a.sparse_tensor.values
                    yield a.sparse_tensor.indices
                for st in a.sparse_tensors:
                    yield st.values
                    yield st.indices
                if a.HasField("g"):
                    stack.append(a.g)
                stack.extend(a.graphs)


def _expected_nbytes(t: onnx.TensorProto, what: str) -> int:
    n = 1
    for d in t.dims:
        if d < 0:
            raise ModelError(f"{what} has a negative dimension in {list(t.dims)}")
        n *= int(d)
    if t.data_type in PACKED_4BIT:
        return (n + 1) // 2
    if t.data_type == onnx.TensorProto.STRING:
        raise ModelError(f"{what}: string tensors cannot be stored as external data")
    return n * elem_dtype(t.data_type, what).itemsize


def load_external_data(model: onnx.ModelProto, base_dir: str | os.PathLike) -> None:
    """Fill every external-data tensor of ``model`` (in place) from files inside ``base_dir``.

    ``location`` must be a relative path without ``..`` that resolves (symlinks included) inside
    ``base_dir`` to a regular file; ``offset``/``length`` must be non-negative integers within the file; and
    the bytes read must be exactly what the tensor's dims and element type need. Anything else is a
    ``ModelError`` naming the tensor.
    """
    root = Path(os.path.realpath(base_dir))
    sizes: dict[Path, int] = {}
    for t in _all_tensors(model.graph):
        if not _is_external(t):
            continue
        what = f"external-data tensor {t.name!r}"
        info: dict[str, str] = {}
        for kv in t.external_data:
            if kv.key in info:
                raise ModelError(f"{what}: external_data key {kv.key!r} given twice")
            info[kv.key] = kv.value
        loc = info.get("location", "")
        if not loc:
            raise ModelError(f"{what} has no 'location'")
        if "\0" in loc or os.path.isabs(loc) or loc.startswith(("/", "\\")) or re.match(r"^[A-Za-z]:", loc):
            raise ModelError(f"{what}: location {loc!r} must be a path relative to the model's folder")
        parts = re.split(r"[\\/]", loc)
        if any(p == ".." for p in parts):
            raise ModelError(f"{what}: location {loc!r} may not contain '..' (it must stay in the model's folder)")
        path = Path(os.path.realpath(root / loc))
        if path != root and root not in path.parents:
            raise ModelError(f"{what}: location {loc!r} resolves to {str(path)!r}, outside the model's folder "
                             f"{str(root)!r} (symbolic links out of the folder are refused)")
        if not path.is_file():
            raise ModelError(f"{what}: external data file {loc!r} does not exist (or is not a regular file) "
                             f"in {str(root)!r}")

        def _int(key: str, default: int | None) -> int | None:
            if key not in info:
                return default
            try:
                v = int(info[key])
            except ValueError:
                raise ModelError(f"{what}: {key} {info[key]!r} is not an integer") from None
            if v < 0:
                raise ModelError(f"{what}: {key} {v} is negative")
            return v

        offset = _int("offset", 0)
        length = _int("length", None)
        if path not in sizes:
            sizes[path] = path.stat().st_size
        fsize = sizes[path]
        need = _expected_nbytes(t, what)
        if length is None:
            length = need
        if length != need:
            raise ModelError(f"{what}: declared length {length} bytes, but its shape {list(t.dims)} and type "
                             f"need {need} bytes")
        if offset + length > fsize:
            raise ModelError(f"{what}: bytes {offset}..{offset + length} lie beyond the end of {loc!r} "
                             f"({fsize} bytes); is the file truncated?")
        with open(path, "rb") as f:
            f.seek(offset)
            data = f.read(length)
        if len(data) != length:
            raise ModelError(f"{what}: could read only {len(data)} of {length} bytes from {loc!r}")
        t.raw_data = data
        del t.external_data[:]
        t.data_location = onnx.TensorProto.DEFAULT


def opset_version(model: onnx.ModelProto) -> int:
    """The default-domain opset the model imports (ONNX 1 if it declares none)."""
    for imp in model.opset_import:
        if imp.domain in ("", "ai.onnx"):
            return int(imp.version)
    return 1


def input_specs(model: onnx.ModelProto) -> list[InputSpec]:
    """The model's real inputs (graph inputs that are not initializers), as declared."""
    inits = {t.name for t in model.graph.initializer}
    return [value_spec(vi, "graph input") for vi in model.graph.input if vi.name not in inits]


#: dim_param spellings exporters use for "unknown": each such dimension is its own, never shared with another
ANONYMOUS_DIMS = frozenset({"", "?"})


def _symbol(dim_param: str) -> str:
    """A dimension's symbol, or "" for an anonymous one (PaddlePaddle's exporter writes ``"?"`` for every
    unknown dimension; two of them are not the same size, unlike two dimensions named ``"N"``)."""
    return "" if dim_param.strip() in ANONYMOUS_DIMS else dim_param


def value_spec(vi: onnx.ValueInfoProto, what: str) -> InputSpec:
    """A declared graph input or output (``what`` names which, for errors): element type and dims, with the
    names of the symbolic ones; a ``ModelError`` if it is not a tensor of a supported element type."""
    tt = vi.type.tensor_type
    if not vi.type.HasField("tensor_type"):
        raise ModelError(f"{what} {vi.name!r} is not a tensor; cnnjit supports tensors only")
    dtype = elem_dtype(tt.elem_type, f"{what} {vi.name!r}")
    if not tt.HasField("shape"):
        return InputSpec(vi.name, dtype, None)
    dims, names = [], []
    for d in tt.shape.dim:
        if d.HasField("dim_value") and d.dim_value >= 0:
            dims.append(int(d.dim_value))
            names.append("")
        else:
            dims.append(None)
            names.append(_symbol(d.dim_param) if d.HasField("dim_param") else "")
    return InputSpec(vi.name, dtype, tuple(dims), tuple(names))


def resolve_shapes(proto: onnx.ModelProto, input_shapes: Mapping[str, Sequence[int]] | None = None,
                   default_dim: int = 1) -> tuple[dict[str, tuple[int, ...]], list[str]]:
    """Concrete input shapes: ``input_shapes`` where given, declared dims, ``default_dim`` for symbols."""
    given = dict(input_shapes or {})
    specs = input_specs(proto)
    unknown = set(given) - {s.name for s in specs}
    if unknown:
        raise InputError(f"unknown input name(s) {sorted(unknown)}; the model's inputs are "
                         + ", ".join(s.describe() for s in specs))
    shapes: dict[str, tuple[int, ...]] = {}
    notes: list[str] = []
    for s in specs:
        if s.name in given:
            shapes[s.name] = tuple(int(d) for d in given[s.name])
        elif s.dims is None:
            raise InputError(f"input {s.describe()} has no declared rank: give its shape (--shape NAME=1,3,32,32)")
        else:
            dims = []
            for i, d in enumerate(s.dims):
                if d is None:
                    sym = s.dim_names[i] if i < len(s.dim_names) and s.dim_names[i] else "?"
                    notes.append(f"symbolic dimension {sym!r} of input {s.name!r} set to {default_dim}")
                    dims.append(default_dim)
                else:
                    dims.append(int(d))
            shapes[s.name] = tuple(dims)
    return shapes, notes
