"""ReduceMax / ReduceMin over trailing axes before and after ``reduce_planes_max``, one op per model, interleaved
in one process (thread CPU time, ``harness.measure``): the table without it (the generic scalar kernel) against
the default.

    python benchmarks/reduce_max.py --runs 200
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from benchmarks.harness import single_thread  # noqa: E402 - stdlib only

single_thread()

import numpy as np  # noqa: E402

import cnnjit  # noqa: E402
from benchmarks.harness import measure, variants_without  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from test_reduce_rows import reduce_model  # noqa: E402

#: (where, op, shape, axes): real models' ReduceMax / ReduceMin shapes
CASES = [
    ("text recognizer: max over 6625 classes x 40 steps", "ReduceMax", (1, 40, 6625), [2]),
    ("trueocr_rec-like: max over 97 classes x 200 steps", "ReduceMax", (1, 200, 97), [2]),
    ("basic-pitch: min over 172 x 264", "ReduceMin", (1, 172, 264), [1, 2]),
    ("effword: max over 2048", "ReduceMax", (1, 2048), [1]),
]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=200)
    args = ap.parse_args()
    for where, op, shape, axes in CASES:
        model = reduce_model(op, shape, axes, 0)
        x = np.random.default_rng(0).standard_normal(shape).astype(np.float32)
        after = cnnjit.compile(model, threads=1)
        with variants_without([(op, "reduce_planes_max")]):
            before = cnnjit.compile(model, threads=1)
        assert np.array_equal(after(x), before(x))
        t = measure({"before": lambda: before(x), "after": lambda: after(x)}, runs=args.runs, warmup=10,
                    clock=time.thread_time_ns)
        print(f"{where}: before {t['before']['median_ms'] * 1e3:.1f} us, after {t['after']['median_ms'] * 1e3:.1f}"
              f" us (medians; minima {t['before']['min_ms'] * 1e3:.1f} / {t['after']['min_ms'] * 1e3:.1f}), speed-up "
              f"{t['before']['median_ms'] / t['after']['median_ms']:.2f}x", flush=True)


if __name__ == "__main__":
    main()
