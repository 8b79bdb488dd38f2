"""ConvTranspose with kernel == stride at a column stride the upsampler kernel cannot interleave (3, 5: an EEG
U-Net's 1-D stride-5 upsamplers), before (the generic kernel: ``convtranspose_phases`` disabled, as it left
these layers) and after (the pass's phase Conv), interleaved in one process (thread CPU time).

    python benchmarks/convtranspose_odd_strides.py --runs 40
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

from benchmarks.harness import single_thread  # noqa: E402 - stdlib only

single_thread()

import numpy as np  # noqa: E402
from test_convtranspose import _model  # noqa: E402

import cnnjit  # noqa: E402
from benchmarks.harness import measure  # noqa: E402

#: (C, M, L, k): 1-D layers; the first two are brainmaze's spindle detector's
LAYERS = [(51, 64, 1500, 5), (64, 64, 300, 5), (32, 16, 2400, 3)]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=40)
    args = ap.parse_args()
    for C, M, L, k in LAYERS:
        rng = np.random.default_rng(0)
        x = rng.standard_normal((1, C, L)).astype(np.float32)
        w = rng.standard_normal((C, M, k)).astype(np.float32)
        proto = _model(x.shape, w, rng.standard_normal(M).astype(np.float32),
                       dict(kernel_shape=[k], strides=[k], pads=[0, 0]))
        after = cnnjit.compile(proto, threads=1)
        before = cnnjit.compile(proto, threads=1, disable=["convtranspose_phases"])
        assert np.allclose(after(x), before(x), atol=1e-4)
        t = measure({"before": lambda: before(x), "after": lambda: after(x)}, runs=args.runs, warmup=3,
                    clock=time.thread_time_ns)
        b, a = t["before"], t["after"]
        print(f"ConvTranspose 1-D {C}->{M} k=s={k} on {L}: before {b['median_ms']:.3f} ms, after "
              f"{a['median_ms']:.3f} ms (minima {b['min_ms']:.3f} / {a['min_ms']:.3f}): "
              f"{b['median_ms'] / a['median_ms']:.1f}x", flush=True)


if __name__ == "__main__":
    main()
