"""ONNX element types as numpy dtypes: the one conversion the loader, the checks and the importers share."""

from __future__ import annotations

import numpy as np

from cnnjit.ir.errors import ModelError

from . import onnx_proto as onnx

#: element types stored two to a byte
PACKED_4BIT = {getattr(onnx.TensorProto, n) for n in ("INT4", "UINT4", "FLOAT4E2M1") if hasattr(onnx.TensorProto, n)}


def elem_dtype(elem_type: int, what: str) -> np.dtype:
    """The numpy dtype of ONNX element type ``elem_type``; ``ModelError`` (naming ``what``) if there is none."""
    try:
        return np.dtype(onnx.tensor_dtype_to_np_dtype(elem_type))
    except Exception:  # noqa: BLE001
        raise ModelError(f"{what}: unsupported element type {elem_type}") from None
