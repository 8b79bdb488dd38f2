"""IR passes (one per file) and the default pipeline."""

from .dead_code import DeadCode
from .fold_batchnorm import FoldBatchNorm
from .fold_constants import FoldConstants
from .fuse_epilogue import FuseEpilogue
from .manager import Pass, PassManager, PassRecord, select_passes
from .remove_identity import RemoveIdentity


def default_pipeline() -> list[Pass]:
    """The standard pass order; later issues add fusion, layout, pruning and quantization passes here."""
    return [RemoveIdentity(), FoldConstants(), DeadCode(), FoldBatchNorm(), FuseEpilogue(), DeadCode()]


__all__ = ["Pass", "PassManager", "PassRecord", "select_passes", "default_pipeline", "DeadCode",
           "FoldBatchNorm", "FoldConstants", "FuseEpilogue", "RemoveIdentity"]
