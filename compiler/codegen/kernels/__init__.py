"""Kernel templates, one module per family; importing them registers their variants (``kernel.VARIANTS``)."""

from . import (  # noqa: F401
    dense,
    elementwise,
    misc,
    movement,
    nn_extra,
    norm,
    qint,
    quant,
    recurrent,
    resample,
    simd_conv,
    simd_convtranspose,
    simd_cvec,
    simd_depthwise,
    simd_matmul,
    simd_pointwise,
    simd_pool,
    simd_softmax,
    sparse_pointwise,
    spatial,
)
