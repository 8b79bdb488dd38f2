"""cnnjit: a just-in-time compiler for tiny convolutional networks.

    import cnnjit
    model = cnnjit.compile("model.onnx")
    y = model(x)
"""

from pathlib import Path

from . import errors
from ._version import __version__
from .api import compile
from .errors import *  # noqa: F403 - the exception classes
from .prune import PrunedModel, prune
from .quantize import QuantizedModel, quantize


def example_model() -> str:
    """The path of the example model shipped with cnnjit: the MLPerf Tiny keyword-spotting DS-CNN (float32,
    input ``input_1`` of shape ``[N, 49, 10, 1]``, 12 classes; Apache-2.0, see ``cnnjit/data/README.md``)."""
    return str(Path(__file__).with_name("data") / "kws_ref_model_float32.onnx")


__all__ = ["__version__", "compile", "example_model", "quantize", "QuantizedModel", "prune", "PrunedModel",
           *errors.__all__]
