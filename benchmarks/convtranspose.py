"""ConvTranspose layers of real decoders: the ``simd_shuffle`` variant against the generic scatter kernel and
onnxruntime, interleaved in one process (per-layer GFLOP/s, best of ``--runs``: the host is shared).

    python -m benchmarks.convtranspose [--runs 20]

The default layers are PP-OCRv4 det's two 2x2 stride-2 upsamplers (24 -> 24 channels at 160x160, 24 -> 1 at
320x320) and a typical FPN / U-Net decoder step (64 -> 32 at 80x80). A second table times layers whose taps
overlap (a ViT segmentation decoder's 4x4 stride-2 pads-1 upsamplers, a 3x3 stride-2 one with output_padding)
as the ``convtranspose_phases`` pass compiles them (a Conv of the output phases and a pixel shuffle) against
the scatter kernel (the pass disabled) and onnxruntime.
"""

from __future__ import annotations

import argparse

from benchmarks.harness import single_thread

single_thread()

import numpy as np  # noqa: E402
from onnx import TensorProto, helper, numpy_helper  # noqa: E402

import cnnjit  # noqa: E402
from benchmarks.harness import measure, ort_session, print_table  # noqa: E402

#: (C, M, H, W, kernel == stride)
LAYERS = [(24, 24, 160, 160, 2), (24, 1, 320, 320, 2), (64, 32, 80, 80, 2)]
#: (C, M, H, W, kernel, stride, pads, output_padding): overlapping taps (vit_s_focus's decoder, a U-Net step)
OVERLAPPING = [(384, 256, 16, 16, 4, 2, 1, 0), (128, 64, 64, 64, 4, 2, 1, 0), (64, 32, 40, 40, 3, 2, 1, 1)]


def layer_model(C: int, M: int, H: int, W: int, k: int, s: int | None = None, p: int = 0, op: int = 0):
    """One ConvTranspose with bias: kernel ``k``, stride ``s`` (default ``k``), pads ``p``, output_padding ``op``."""
    s = k if s is None else s
    rng = np.random.default_rng(0)
    inits = [numpy_helper.from_array(rng.standard_normal((C, M, k, k)).astype(np.float32), "w"),
             numpy_helper.from_array(rng.standard_normal(M).astype(np.float32), "b")]
    node = helper.make_node("ConvTranspose", ["x", "w", "b"], ["y"], kernel_shape=[k, k], strides=[s, s],
                            pads=[p] * 4, output_padding=[op] * 2)
    g = helper.make_graph([node], "ct", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, C, H, W])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)], inits)
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", 13)], ir_version=8)


def schedule_only(model):
    """The compiled schedule on its arena, without the input copy-in and the fresh output copy-out of a
    model call (a 320x320x24 output is 9.8 MB: its copy costs as much as the kernel)."""
    spec = model._default_spec()
    bufs = spec._acquire()
    args = [bufs[n] for n in spec.program.buffer_names]
    return lambda: spec.program.run(*args)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=20)
    args = ap.parse_args()
    rows = []
    for C, M, H, W, k in LAYERS:
        model = layer_model(C, M, H, W, k)
        x = np.random.default_rng(1).standard_normal((1, C, H, W)).astype(np.float32)
        fast = cnnjit.compile(model, variants={"ConvTranspose": "simd_shuffle"})
        generic = cnnjit.compile(model, variants={"ConvTranspose": "conv_transpose"})
        sess = ort_session(model)
        np.testing.assert_allclose(fast(x), generic(x), rtol=1e-4, atol=1e-4)
        stats = measure({"simd_shuffle": lambda: fast(x), "kernel": schedule_only(fast),
                         "generic": lambda: generic(x), "onnxruntime": lambda: sess.run(None, {"x": x})},
                        runs=args.runs, warmup=3)
        flops = 2.0 * C * M * k * k * H * W
        rows.append([f"{C}->{M} {H}x{W} k{k}s{k}",
                     *(f"{stats[n]['min_ms']:.3f} ms / {flops / stats[n]['min_ms'] / 1e6:.1f}"
                       for n in ("simd_shuffle", "kernel", "generic", "onnxruntime"))])
    print_table(["layer", "simd_shuffle (ms / GFLOP/s)", "its kernel alone", "generic", "onnxruntime"], rows,
                title="ConvTranspose layers, one thread, best of --runs (a shared host)")
    rows = []
    for C, M, H, W, k, s, p, op in OVERLAPPING:
        model = layer_model(C, M, H, W, k, s, p, op)
        x = np.random.default_rng(1).standard_normal((1, C, H, W)).astype(np.float32)
        phases = cnnjit.compile(model)
        scatter = cnnjit.compile(model, disable=["convtranspose_phases"])
        assert "ConvTranspose" not in {n.op for n in phases.ir.nodes}
        sess = ort_session(model)
        np.testing.assert_allclose(phases(x), scatter(x), rtol=1e-4, atol=1e-3)
        stats = measure({"phases": lambda: phases(x), "scatter": lambda: scatter(x),
                         "onnxruntime": lambda: sess.run(None, {"x": x})}, runs=args.runs, warmup=3)
        flops = 2.0 * C * M * k * k * H * W
        rows.append([f"{C}->{M} {H}x{W} k{k}s{s}p{p}" + (f"op{op}" if op else ""),
                     *(f"{stats[n]['min_ms']:.3f} ms / {flops / stats[n]['min_ms'] / 1e6:.1f}"
                       for n in ("phases", "scatter", "onnxruntime")),
                     f"{stats['phases']['median_ms'] / stats['onnxruntime']['median_ms']:.2f}"])
    print_table(["layer", "phases (ms / GFLOP/s)", "scatter kernel", "onnxruntime", "phases / ORT (median)"], rows,
                title="Overlapping-tap ConvTranspose layers, one thread, best of --runs (a shared host)")


if __name__ == "__main__":
    main()
