"""cnnjit: a just-in-time compiler for tiny convolutional networks.

    import cnnjit
    model = cnnjit.compile("model.onnx")
    y = model(x)
"""

from . import errors
from ._version import __version__
from .api import compile
from .errors import *  # noqa: F403 - the exception classes
from .prune import PrunedModel, prune
from .quantize import QuantizedModel, quantize

__all__ = ["__version__", "compile", "quantize", "QuantizedModel", "prune", "PrunedModel", *errors.__all__]
