"""Kernel templates, one module per family; importing them registers their variants (``kernel.VARIANTS``)."""

from . import (  # noqa: F401
    dense,
    elementwise,
    movement,
    nn_extra,
    qint,
    qlut,
    quant,
    resample,
    simd_conv,
    simd_cvec,
    simd_depthwise,
    simd_pointwise,
    simd_pool,
    sparse_pointwise,
    spatial,
)
