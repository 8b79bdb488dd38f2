"""cnnjit: a just-in-time compiler for tiny convolutional networks.

    import cnnjit
    model = cnnjit.compile("model.onnx")
    y = model(x)

``import cnnjit`` is light (no onnx, numba or rich): ``cnnjit.compile`` loads the compiler on its first
full compile, and a model found in the compiled-program cache (``cnnjit.cache.warm``) runs without it.
``quantize``, ``prune`` and their result classes are loaded on first access.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import TYPE_CHECKING

from . import errors
from ._version import __version__
from .api import compile
from .errors import *  # noqa: F403 - the exception classes
from .ir import lazy_names

# a library logs through "cnnjit" and stays silent unless the application configures logging (cnnjit/log.py)
logging.getLogger(__name__).addHandler(logging.NullHandler())

if TYPE_CHECKING:
    from .pruning import PrunedModel, prune
    from .quantization import QuantizedModel, quantize

#: public names loaded on first access (they import onnx): name -> module
_LAZY = {"prune": ".pruning", "PrunedModel": ".pruning", "quantize": ".quantization", "QuantizedModel": ".quantization"}


#: the pruning and quantisation entry points, imported on first use (PEP 562)
__getattr__ = lazy_names(__name__, _LAZY, globals())


def example_model() -> str:
    """The path of the example model shipped with cnnjit: the MLPerf Tiny keyword-spotting DS-CNN (float32,
    input ``input_1`` of shape ``[N, 49, 10, 1]``, 12 classes; Apache-2.0, see ``cnnjit/data/README.md``)."""
    return str(Path(__file__).with_name("data") / "kws_ref_model_float32.onnx")


__all__ = ["__version__", "compile", "example_model", "quantize", "QuantizedModel", "prune", "PrunedModel",
           *errors.__all__]
