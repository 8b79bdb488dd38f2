"""cnnjit's IR: typed, static-shape tensors; values, nodes and graphs; the op registry; an interpreter.

This package imports nothing else of cnnjit's, so every other part may depend on it. Only the errors are
loaded with the package; the rest (graphs, the op registry with every op family, the interpreter) on first
use of a name (PEP 562), so that ``import cnnjit`` and a warm start (which need the errors only) stay light.
``op_families`` registers every op family.
"""

from __future__ import annotations

from collections.abc import Callable
from importlib import import_module
from typing import TYPE_CHECKING, Any

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

if TYPE_CHECKING:
    from .graph import Dequantized, Edits, Graph, Node, Value, topo_order
    from .interp import interpret
    from .op_families import OpDef, all_ops, get_op
    from .types import DTYPES, TensorType, short_name

#: names loaded on first use: name -> submodule
_LAZY = {**dict.fromkeys(("Dequantized", "Edits", "Graph", "Node", "Value", "topo_order"), ".graph"),
         "interpret": ".interp", **dict.fromkeys(("OpDef", "all_ops", "get_op"), ".op_families"),
         **dict.fromkeys(("DTYPES", "TensorType", "short_name"), ".types")}


def lazy_names(package: str, table: dict[str, str], namespace: dict[str, Any]) -> Callable[[str], Any]:
    """A module ``__getattr__`` (PEP 562) that imports ``name`` from the submodule ``table[name]`` (relative to
    ``package``) on its first use and binds it in ``namespace`` (the module's globals), so later uses are
    plain lookups. Used here and by ``cnnjit/__init__.py``."""
    def __getattr__(name: str) -> Any:
        if name in table:
            value = getattr(import_module(table[name], package), name)
            namespace[name] = value
            return value
        raise AttributeError(f"module {package!r} has no attribute {name!r}")

    return __getattr__


#: the graph, op registry, interpreter and type names, imported on first use
__getattr__ = lazy_names(__name__, _LAZY, globals())


__all__ = [
    "CnnjitError", "CompileError", "InputError", "IRError", "ModelError", "ResourceLimitError", "ShapeError",
    "UnsupportedOpError", "Dequantized", "Edits", "Graph", "Node", "Value", "topo_order", "interpret", "OpDef",
    "all_ops", "get_op", "DTYPES", "TensorType", "short_name",
]
