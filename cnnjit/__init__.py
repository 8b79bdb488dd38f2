"""cnnjit: a just-in-time compiler for tiny convolutional networks.

    import cnnjit
    model = cnnjit.compile("model.onnx")
    y = model(x)
"""

__version__ = "0.1.0"

from .api import compile  # noqa: E402
from .errors import (  # noqa: E402
    CnnjitError,
    CompileError,
    InputError,
    IRError,
    ModelError,
    ResourceLimitError,
    ShapeError,
    UnsupportedOpError,
)
from .prune import PrunedModel, prune  # noqa: E402
from .quantize import QuantizedModel, quantize  # noqa: E402

__all__ = [
    "__version__", "compile", "quantize", "QuantizedModel", "prune", "PrunedModel",
    "CnnjitError", "CompileError", "InputError", "IRError", "ModelError",
    "ResourceLimitError", "ShapeError", "UnsupportedOpError",
]
