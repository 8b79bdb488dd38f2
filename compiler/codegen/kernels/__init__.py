"""Kernel templates, one module per family; importing them registers their generators."""

from . import (  # noqa: F401
    dense,
    elementwise,
    movement,
    nn_extra,  # noqa: F401
    qint,
    quant,
    resample,
    spatial,
)
