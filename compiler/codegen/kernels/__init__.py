"""Kernel templates, one module per family; importing them registers their generators."""

from . import dense, elementwise, movement, quant, resample, spatial  # noqa: F401
from . import nn_extra  # noqa: F401
