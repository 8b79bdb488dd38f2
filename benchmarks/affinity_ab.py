"""Spatial affinity of the 2-thread schedule (issue 18): 1 thread, 2 threads as built (layers split in bands
of rows or pixels where they balance, ``parts.SPATIAL_PARTS``; the caller claims each split layer's parts
from the front, workers from the back: each thread keeps its band of every layer), the same split with the
old first-come claims (every thread from the front: which thread runs which band changes from layer to layer
and run to run), and the old split (channels first) with first-come claims, timed interleaved in one
process over several windows.

    PYTHONPATH=. python benchmarks/affinity_ab.py [MODELS] [--runs 60] [--windows 5]

The old claims exist only here (the schedule's text loaded with a ``claim`` that ignores the caller flag),
not as a switch of the compiler. Both 2-thread forms run on the team every time (no chooser: the ratio is
the team's). Each window prints medians and minima (ms) and the speed-ups over 1 thread; the last line
pools the windows. Outputs are checked bit-identical across the three forms.

MODELS: as ``benchmarks/thread_split.py`` (default: MobileNetV2-224 and the ddddocr detector when
installed).
"""

from __future__ import annotations

import argparse
import os
import random
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import numpy as np  # noqa: E402
from numba import njit  # noqa: E402

from benchmarks.ootb import _ootb_model, default_ootb_models, ootb_label  # noqa: E402
from cnnjit.runtime.parallel import claim  # noqa: E402


@njit(nogil=True)
def first_come_claim(st: np.ndarray, step: int, ep: int, parts: int, front: bool) -> int:  # pragma: no cover
    """The protocol's claim before spatial affinity: every thread takes the next part from the front."""
    return claim(st, step, ep, parts, True)


def team_run(program, protocol: dict[str, object] | None = None):
    """``program``'s parallel schedule as a ``ParallelRun`` always on the team; ``protocol`` overrides the
    schedule's protocol functions (``threads.PROTOCOL``)."""
    from cnnjit.compiler.codegen.build import load_entry, source_key
    from cnnjit.compiler.codegen.threads import PROTOCOL, render_parallel
    from cnnjit.profile import _namespace
    from cnnjit.runtime.parallel import ParallelRun, split_run_desc

    steps = program.meta["step_plan"]
    ns = _namespace(program)
    kernels = {c.kernel: ns[c.kernel] for c in program.calls}
    fn = load_entry(render_parallel(program.buffer_names, program.calls, steps),
                    {**kernels, **PROTOCOL, **(protocol or {})},
                    {n: source_key(s) for n, s in program.kernel_sources.items()})
    run = ParallelRun(fn, len(steps), program.meta["threads"], split_run_desc)
    run.chooser = None
    return run


def old_split(model, shapes):
    """The 2-thread program as before spatial parts: layers split over output channels first (the target's
    ``spatial_parts`` off)."""
    from dataclasses import replace

    from cnnjit.compiler.stages import CompileOptions, specialize

    options = CompileOptions(threads=2)
    return specialize(model, shapes, options, target=replace(options.host_target(), spatial_parts=False)).program


def runner(program, run: Callable[..., None], feeds) -> tuple[Callable[[], float], Callable[[], list[np.ndarray]]]:
    """(one timed run in ms on fresh inputs, the outputs of the last run) for ``run`` on ``program``'s
    buffers."""
    from cnnjit.profile import _write_inputs

    bufs = program.allocate()
    args = [bufs[n] for n in program.buffer_names]

    def once() -> float:
        _write_inputs(program, bufs, feeds)
        t0 = time.perf_counter()
        run(*args)
        return (time.perf_counter() - t0) * 1e3

    def outputs() -> list[np.ndarray]:
        return [bufs[b.buffer][b.offset:b.offset + b.size].copy() for b in program.outputs]

    return once, outputs


def compare(spec: str, runs: int, windows: int) -> None:
    import cnnjit

    model, feeds = _ootb_model(spec)
    shapes = {k: tuple(v.shape) for k, v in feeds.items()}
    p1 = cnnjit.compile(model, input_shapes=shapes, threads=1)._default_spec().program
    p2 = cnnjit.compile(model, input_shapes=shapes, threads=2)._default_spec().program
    if not p2.meta.get("step_plan"):
        print(f"{ootb_label(spec)}: threads=2 keeps the serial schedule")
        return
    p0 = old_split(model, shapes)
    channel_parts = [sum("[channels" in c.note for c in p.calls) for p in (p0, p2)]
    print(f"{ootb_label(spec)}: channel parts, old split {channel_parts[0]}, spatial {channel_parts[1]}")
    forms = {"1T": runner(p1, p1.run, feeds), "2T affine": runner(p2, team_run(p2), feeds),
             "2T first-come": runner(p2, team_run(p2, {"claim": first_come_claim}), feeds),
             "2T old split": runner(p0, team_run(p0, {"claim": first_come_claim}), feeds)}
    for once, _ in forms.values():
        for _ in range(3):
            once()
    ref = forms["1T"][1]()
    for name, (_, outs) in forms.items():
        assert all(np.array_equal(a, b) for a, b in zip(ref, outs(), strict=True)), f"{name} differs from 1T"
    print(f"\n{ootb_label(spec)}: {runs} runs x {windows} windows, interleaved (ms; speed-up = 1T / 2T)")
    pooled: dict[str, list[float]] = {k: [] for k in forms}
    for w in range(windows):
        times: dict[str, list[float]] = {k: [] for k in forms}
        for _ in range(runs):
            for name in random.sample(list(forms), len(forms)):
                times[name].append(forms[name][0]())
        line(f"window {w} (load {os.getloadavg()[0]:.1f})", times)
        for k, v in times.items():
            pooled[k] += v
    line("all windows", pooled)


def line(label: str, times: dict[str, list[float]]) -> None:
    med = {k: statistics.median(v) for k, v in times.items()}
    best = {k: min(v) for k, v in times.items()}
    print(f"  {label:22s} " + "  ".join(f"{k} {med[k]:.3f} (min {best[k]:.3f})" for k in times)
          + "  | speed-up median/min: " + "  ".join(
              f"{k[3:]} {med['1T'] / med[k]:.2f}/{best['1T'] / best[k]:.2f}" for k in times if k != "1T"))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("models", nargs="?", default="")
    ap.add_argument("--runs", type=int, default=60)
    ap.add_argument("--windows", type=int, default=5)
    args = ap.parse_args(argv)
    specs = [s for s in args.models.split(",") if s] or [s for s in default_ootb_models() if s != "resnet8"]
    for spec in specs:
        compare(spec, args.runs, args.windows)
    return 0


if __name__ == "__main__":
    sys.exit(main())
