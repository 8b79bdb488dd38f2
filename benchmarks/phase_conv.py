"""Small-kernel convolutions on deeper inputs before and after ``phase_packed`` (``stem_packed``'s phase planes
and packed tile past 4 input channels): GFLOP/s and % of the FMA peak of one Conv (+ its activation, fused)
per layer shape, the default table against the table without ``phase_packed`` (``cblock``, ``simd_conv`` as
before it), interleaved in one process.

    python benchmarks/phase_conv.py --runs 30            # writes results/phase_conv.{json,md}
    python benchmarks/phase_conv.py --layer 48,24,320,320,3,2 --act relu --no-write

The layers: held-out models' (PP-OCRv6 det / rec's HGNetV2 stem, openWakeWord's 1x3 / 3x1 pairs), then more
shapes of the kind (other channel counts, a 5x5, strides, longer rows, deeper inputs) so the rule is not one
model's. Timing as ``stem_conv.py`` (``before_after``: each layer's one Conv call on its own buffers, thread
CPU time, before and after in a fresh random order per round, outputs checked against each other).
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from benchmarks.harness import single_thread  # noqa: E402 - stdlib only

single_thread()

from stem_conv import before_after  # noqa: E402

#: (model, layer ``C,M,H,W,K,stride[,group[,dilation[,pads]]]``, fused activation); a layer padded on its
#: bottom and right only (HGNetV2's 2x2) is given one more input row and column, unpadded: the same output
LAYERS = [
    ("ppocrv6s_det stem 48->24 s2", "48,24,320,320,3,2", "relu"),
    ("ppocrv6s_det stem 2x2 24->12", "24,12,321,321,2,1,1,1,0", "relu"),
    ("ppocrv6s_det stem 2x2 12->24", "12,24,321,321,2,1,1,1,0", "relu"),
    ("ppocrv6s_rec stem 2x2 48->24", "48,24,25,161,2,1,1,1,0", "relu"),
    ("ppocrv6s_rec stem 2x2 24->48", "24,48,25,161,2,1,1,1,0", "relu"),
    ("oww_embedding 24->24 1x3", "24,24,74,32,1x3,1,1,1,0x1", "leakyrelu"),
    ("oww_embedding 24->24 3x1", "24,24,74,32,3x1,1,1,1,0", "leakyrelu"),
    ("oww_embedding 24->48 1x3", "24,48,36,16,1x3,1,1,1,0x1", "leakyrelu"),
    ("oww_embedding 48->48 3x1", "48,48,36,16,3x1,1,1,1,0", "leakyrelu"),
    ("oww_embedding 48->48 1x3", "48,48,34,16,1x3,1,1,1,0x1", "leakyrelu"),
    ("oww_embedding 48->72 1x3", "48,72,32,8,1x3,1,1,1,0x1", "leakyrelu"),
    ("oww_embedding 72->72 3x1", "72,72,32,8,3x1,1,1,1,0", "leakyrelu"),
    ("oww_embedding 72->72 1x3", "72,72,30,8,1x3,1,1,1,0x1", "leakyrelu"),
    ("ppocrv6t_det stem 2x2 16->8", "16,8,321,321,2,1,1,1,0", "relu"),
    ("madmom_notes_cnn 30->30 7x1", "30,30,198,108,7x1,1,1,1,0", "relu"),
    ("swift_f0 12->12 7x3 (its shape)", "12,12,128,62,7x3,1,1,1,3x1", "relu"),
    ("basic_pitch 32->1 7x3 (its shape)", "32,1,172,88,7x3,1,1,1,3x1", "relu"),
    ("16->24 s2", "16,24,112,112,3,2", "relu"),
    ("48->72 s2", "48,72,32,32,3,2", "relu"),
    ("40->40 5x5 s2", "40,40,64,64,5,2", "silu"),
    ("64->64 5x5", "64,64,56,56,5,1", "relu"),
    ("64->128 1x3", "64,128,40,40,1x3,1,1,1,0x1", "relu"),
    ("128->128 3x1", "128,128,28,32,3x1,1,1,1,1x0", "relu"),
    ("256->256 3x1", "256,256,16,16,3x1,1,1,1,1x0", "relu"),
]


def main() -> None:
    before_after(LAYERS, "phase_packed", "phase_conv",
                 "Small kernels on deeper inputs: before and after phase_packed (1 thread)")


if __name__ == "__main__":
    main()
