"""cnnjit's IR: typed, static-shape tensors; values, nodes and graphs; the op registry; an interpreter.

This package imports nothing else of cnnjit's, so every other part may depend on it.
"""

from .errors import (
    CnnjitError,
    CompileError,
    InputError,
    IRError,
    ModelError,
    ResourceLimitError,
    ShapeError,
    UnsupportedOpError,
)
from .graph import Dequantized, Edits, Graph, Node, Value, topo_order
from .interp import interpret
from .ops import (  # noqa: F401 - importing the op families registers their ops
    OpDef,
    all_ops,
    elementwise,
    get_op,
    misc,
    movement,
    nn,
    nn_extra,
    qint,
    quant,
    recurrent,
    resample,
)
from .types import DTYPES, TensorType, short_name

__all__ = [
    "CnnjitError", "CompileError", "InputError", "IRError", "ModelError", "ResourceLimitError", "ShapeError",
    "UnsupportedOpError", "Dequantized", "Edits", "Graph", "Node", "Value", "topo_order", "interpret", "OpDef",
    "all_ops", "get_op", "DTYPES", "TensorType", "short_name",
]
