"""IR passes (one per file) and the default pipeline."""

from .batch_gemms import BatchGemms
from .cancel_transposes import CancelTransposes
from .cascade_maxpool import CascadeMaxPool
from .concat_inplace import ConcatInPlace
from .conv_column_phases import ConvColumnPhases
from .conv_columns import ConvColumns
from .conv_dead_taps import ConvDeadTaps
from .conv_unit_depth import ConvUnitDepth
from .convtranspose_phases import ConvTransposePhases
from .dead_code import DeadCode
from .fold_batchnorm import FoldBatchNorm
from .fold_channel_shuffle import FoldChannelShuffle
from .fold_constants import FoldConstants
from .fold_pad import FoldPad
from .fuse_attention import FuseAttention
from .fuse_blocks import FuseBlocks
from .fuse_broadcast_map import FuseBroadcastMap
from .fuse_epilogue import FuseEpilogue
from .fuse_layernorm import FuseLayerNorm
from .integer_to_float import IntegerToFloat
from .manager import (
    Pass,
    PassManager,
    PassRecord,
    PassResult,
    check_pass_names,
    parse_dump_ir,
    pass_names,
    select_passes,
)
from .mixed_precision import MixedPrecision
from .qdq_lut import QDQToLut
from .qdq_to_integer import QDQToInteger
from .remove_identity import RemoveIdentity
from .sink_reshapes import SinkReshapes


def default_pipeline() -> list[Pass]:
    """The standard pass order; later issues add fusion, layout, pruning and quantization passes here."""
    return [RemoveIdentity(), FoldConstants(), DeadCode(), CancelTransposes(), QDQToInteger(), QDQToLut(),
            IntegerToFloat(), DeadCode(), CancelTransposes(), SinkReshapes(), FoldBatchNorm(), BatchGemms(),
            FoldPad(), CascadeMaxPool(), FuseLayerNorm(), FuseAttention(), FuseEpilogue(), FuseBroadcastMap(),
            ConvTransposePhases(),
            ConvUnitDepth(), ConvDeadTaps(), ConvColumnPhases(), ConvColumns(), FuseBlocks(),
            FoldChannelShuffle(), ConcatInPlace(), DeadCode(), MixedPrecision()]


__all__ = ["Pass", "PassManager", "PassRecord", "PassResult", "select_passes", "check_pass_names", "parse_dump_ir",
           "pass_names", "default_pipeline", "DeadCode", "FuseAttention",
           "BatchGemms", "ConvDeadTaps", "FoldBatchNorm", "FoldConstants", "FuseEpilogue", "RemoveIdentity",
           "CancelTransposes",
           "ConcatInPlace", "FoldPad", "FoldChannelShuffle", "QDQToInteger", "QDQToLut", "IntegerToFloat",
           "FuseLayerNorm", "CascadeMaxPool", "FuseBlocks", "ConvColumns", "ConvTransposePhases", "SinkReshapes",
           "ConvColumnPhases", "ConvUnitDepth", "FuseBroadcastMap", "MixedPrecision"]
