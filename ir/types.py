"""Tensor types of the IR: an element type and a static shape (row-major, in the shape's own axis order)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

#: element types the IR knows, by their short names (used in the printer and in kernel names)
DTYPES: dict[str, np.dtype] = {
    "f32": np.dtype(np.float32),
    "f64": np.dtype(np.float64),
    "f16": np.dtype(np.float16),
    "i8": np.dtype(np.int8),
    "u8": np.dtype(np.uint8),
    "i16": np.dtype(np.int16),
    "u16": np.dtype(np.uint16),
    "i32": np.dtype(np.int32),
    "u32": np.dtype(np.uint32),
    "i64": np.dtype(np.int64),
    "u64": np.dtype(np.uint64),
    "bool": np.dtype(np.bool_),
}
_SHORT = {v: k for k, v in DTYPES.items()}


def short_name(dtype: np.dtype) -> str:
    """The IR's short name of a numpy dtype (``float32`` -> ``f32``)."""
    return _SHORT[np.dtype(dtype)]


@dataclass(frozen=True)
class TensorType:
    """The static type of a value: element dtype and fully known shape.

    Data is always row-major in the shape's own axis order; a pass that wants another layout (channels-last
    integer convolutions, say) says so with explicit ``Transpose`` nodes, so the type carries no layout tag.
    """

    dtype: np.dtype
    shape: tuple[int, ...]

    def __post_init__(self) -> None:
        object.__setattr__(self, "dtype", np.dtype(self.dtype))
        object.__setattr__(self, "shape", tuple(int(d) for d in self.shape))

    @property
    def rank(self) -> int:
        return len(self.shape)

    @property
    def size(self) -> int:
        return int(np.prod(self.shape, dtype=np.int64)) if self.shape else 1

    @property
    def nbytes(self) -> int:
        return self.size * self.dtype.itemsize

    def with_shape(self, shape: tuple[int, ...]) -> TensorType:
        return TensorType(self.dtype, tuple(shape))

    def __str__(self) -> str:
        dims = "x".join(str(d) for d in self.shape)
        return f"{short_name(self.dtype)}[{dims}]"
