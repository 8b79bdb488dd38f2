"""Public re-export of cnnjit's exception classes (defined in ``cnnjit.ir.errors``)."""

from cnnjit.ir.errors import (  # noqa: F401
    CnnjitError,
    CompileError,
    InputError,
    IRError,
    ModelError,
    ResourceLimitError,
    ShapeError,
    UnsupportedOpError,
)
