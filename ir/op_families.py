"""The op registry with every op family registered: import ``get_op`` / ``all_ops`` from here (or from
``cnnjit.ir``), not from ``ir/ops/__init__.py``, which holds the registry but loads no family itself."""

from .ops import (  # noqa: F401 - importing the op families registers their ops
    OpDef,
    all_ops,
    elementwise,
    fused,
    get_op,
    misc,
    movement,
    nn,
    nn_extra,
    qint,
    quant,
    recurrent,
    resample,
)

__all__ = ["OpDef", "all_ops", "get_op"]
