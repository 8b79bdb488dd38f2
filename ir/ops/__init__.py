"""The IR ops: the registry (``registry.py``) and the op families, which register their ops when imported.

Importing this package imports every family, so ``get_op`` knows every op.
"""

from . import elementwise, movement, nn, nn_extra, qint, quant, resample  # noqa: F401 - registers the ops
from .registry import (
    REQUIRED,
    OpDef,
    all_ops,
    broadcast_infer,
    broadcast_shapes,
    defop,
    get_op,
    normalize_axis,
    post_infer,
    post_ref,
    same_as_first,
)

__all__ = ["REQUIRED", "OpDef", "all_ops", "broadcast_infer", "broadcast_shapes", "defop", "get_op",
           "normalize_axis", "post_infer", "post_ref", "same_as_first"]
