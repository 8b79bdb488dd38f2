"""MobileNetV2 (float, 224x224, width 1.0) built for aarch64: the object size with every weight stored once,
and with the old memory plan that also pooled each graph constant a kernel reads only through a repacked copy
(1x1 Conv and Gemm weights, transposed), reproduced by pooling every constant after planning.

    python benchmarks/arm/object_size.py      # -> benchmarks/results/arm_object_size.md
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
from benchmarks.harness import write_markdown  # noqa: E402
from benchmarks.models import mobilenet_v2  # noqa: E402
from cnnjit.compiler.codegen import emit  # noqa: E402
from cnnjit.compiler.target import compile_for_target  # noqa: E402


def build(eager: bool) -> tuple[int, int]:
    orig = emit.plan_memory

    def every_constant(graph, *args, **kwargs):  # the plan before: all graph constants in the pool, read or not
        plan = orig(graph, *args, **kwargs)
        for v in graph.values():
            if v.is_const:
                plan.slot(v)
        return plan

    emit.plan_memory = every_constant if eager else orig
    try:
        art = compile_for_target(mobilenet_v2(), target="aarch64-linux-gnu", cpu="cortex-a53", name="mnv2")
    finally:
        emit.plan_memory = orig
    return len(art.object), art.weight_bytes


def main() -> None:
    rows = []
    for label, eager in (("before (every constant pooled)", True), ("after (weights stored once)", False)):
        obj, weights = build(eager)
        rows.append((label, obj, weights))
        print(rows[-1], flush=True)
    write_markdown("arm_object_size", ["build", "object bytes", "constant bytes"], rows,
                   title="MobileNetV2-1.0-224 float for aarch64 (cortex-a53): object size",
                   notes=["command: python benchmarks/arm/object_size.py"])


if __name__ == "__main__":
    main()
