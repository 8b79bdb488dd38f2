"""Loading an ONNX model from a path, bytes or ``ModelProto``, and reading its input signature."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx
from onnx import helper

from cnnjit.ir.errors import ModelError


@dataclass(frozen=True)
class InputSpec:
    """A graph input as declared by the model: name, element type, and dims (int, or None if symbolic)."""

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
    """Parse ``src`` into a ``ModelProto``; any parse failure becomes a ``ModelError``."""
    if isinstance(src, onnx.ModelProto):
        return src
    if isinstance(src, (bytes, bytearray, memoryview)):
        data = bytes(src)
        where = "the given bytes"
    elif isinstance(src, (str, os.PathLike)):
        path = Path(src)
        if not path.is_file():
            raise ModelError(f"model file {str(path)!r} does not exist or is not a file")
        data = path.read_bytes()
        where = f"model file {str(path)!r}"
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
    return model


def opset_version(model: onnx.ModelProto) -> int:
    """The default-domain opset the model imports (ONNX 1 if it declares none)."""
    for imp in model.opset_import:
        if imp.domain in ("", "ai.onnx"):
            return int(imp.version)
    return 1


def elem_dtype(elem_type: int, what: str) -> np.dtype:
    try:
        return np.dtype(helper.tensor_dtype_to_np_dtype(elem_type))
    except Exception:  # noqa: BLE001
        raise ModelError(f"{what}: unsupported element type {elem_type}") from None


def input_specs(model: onnx.ModelProto) -> list[InputSpec]:
    """The model's real inputs (graph inputs that are not initializers), as declared."""
    inits = {t.name for t in model.graph.initializer}
    specs = []
    for vi in model.graph.input:
        if vi.name in inits:
            continue
        tt = vi.type.tensor_type
        if not vi.type.HasField("tensor_type"):
            raise ModelError(f"graph input {vi.name!r} is not a tensor; cnnjit supports tensor inputs only")
        dtype = elem_dtype(tt.elem_type, f"graph input {vi.name!r}")
        if not tt.HasField("shape"):
            specs.append(InputSpec(vi.name, dtype, None))
            continue
        dims, names = [], []
        for d in tt.shape.dim:
            if d.HasField("dim_value") and d.dim_value >= 0:
                dims.append(int(d.dim_value))
                names.append("")
            else:
                dims.append(None)
                names.append(d.dim_param if d.HasField("dim_param") else "")
        specs.append(InputSpec(vi.name, dtype, tuple(dims), tuple(names)))
    return specs
