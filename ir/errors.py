"""The cnnjit exception hierarchy.

It lives in ``ir`` because ``ir`` imports nothing else of ours; ``cnnjit.errors`` re-exports it.
Every error a user can provoke with a bad model or bad input is one of these, with a message that says
what is wrong and what to do about it.
"""

from __future__ import annotations


class CnnjitError(Exception):
    """Base class of every error cnnjit raises on purpose."""


class ModelError(CnnjitError):
    """The model file is malformed, inconsistent, or asks for something absurd."""


class UnsupportedOpError(ModelError):
    """The model uses operators (or operator variants) cnnjit does not implement.

    ``unsupported`` lists every offending node at once as ``(op_type, node_name, opset, reason)``.
    """

    def __init__(self, unsupported: list[tuple[str, str, int, str]]):
        self.unsupported = list(unsupported)
        lines = [
            f"  - {op} (node {name!r}, opset {opset})" + (f": {why}" if why else "")
            for op, name, opset, why in self.unsupported
        ]
        ops = sorted({u[0] for u in self.unsupported})
        super().__init__(
            f"the model uses {len(self.unsupported)} node(s) with unsupported operators ({', '.join(ops)}):\n"
            + "\n".join(lines)
            + "\nRemove or replace these operators (e.g. with onnxruntime's or onnx-simplifier's graph "
            "transformations), or open an issue asking for them."
        )


class ShapeError(ModelError):
    """Shapes or types in the model are inconsistent, or a node's attributes are invalid."""


class IRError(CnnjitError):
    """The IR is internally inconsistent (a compiler bug or a broken pass); the message names node and value."""


class InputError(CnnjitError, ValueError):
    """A call passed inputs of the wrong name, shape, dtype or count."""


class CompileError(CnnjitError):
    """Code generation or kernel compilation failed (a compiler bug; please report it with the model)."""


class UnsupportedHardwareError(CnnjitError):
    """The CPU lacks an instruction-set feature the requested compilation needs (``precision="bf16"`` without
    avx512_bf16); the message names the feature and the alternative."""


class ResourceLimitError(ModelError):
    """The model would need more memory than the configured limit."""


#: the default limits behind ``ResourceLimitError``: any single tensor, and a specialisation's scratch arena
#: (defined here, with the error, so that ``cnnjit.compile``'s signature needs no compiler import)
DEFAULT_MAX_TENSOR_BYTES = 4 << 30
DEFAULT_MAX_ARENA_BYTES = 4 << 30


__all__ = ["CnnjitError", "ModelError", "UnsupportedOpError", "ShapeError", "IRError", "InputError", "CompileError",
           "ResourceLimitError", "UnsupportedHardwareError"]
