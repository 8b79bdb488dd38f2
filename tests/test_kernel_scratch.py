"""Kernel scratch from the memory plan (``Scratch`` in ``compiler/codegen/kernel.py``, placed by
``memory.plan_memory``): ``winograd_f4`` allocates nothing, so a model whose convolutions pick it warm-starts
from a native object (loaded without numba) with the JIT's results bit for bit; a layer split over two
threads gives every part its own scratch (bit-identical with one thread); the arena holds the scratch.

The model is tiny (two 32-channel 3x3 convolutions on 16x16, above the measured crossover at every vector
width, NEON included); the oracles are the JIT (from the ``ModelProto``, which never takes the warm path),
onnxruntime, the memory plan's intervals and, for the aarch64 build, the host JIT.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import pytest
from conftest import ort_session
from onnx import TensorProto, helper, numpy_helper

import cnnjit
import cnnjit.cache
from cnnjit.compiler.codegen import threads as split
from cnnjit.compiler.codegen.emit import call_scratch, lower
from cnnjit.compiler.codegen.kernel import Scratch, Target, choose
from cnnjit.compiler.codegen.kernels import winograd
from cnnjit.compiler.codegen.memory import plan_memory
from cnnjit.compiler.codegen.simd import host_vector_registers, host_vector_width
from cnnjit.compiler.target.aarch64 import compile_for_target, find_tool
from cnnjit.runtime.native import NativeSpecialization

SHAPE = (1, 32, 16, 16)


def _model() -> onnx.ModelProto:
    """Conv 3x3 32->32 + Relu, Conv 3x3 32->32 + the input added; batch symbolic."""
    rng = np.random.default_rng(3)
    inits = [numpy_helper.from_array((rng.standard_normal((32, 32, 3, 3)) * 0.2).astype(np.float32), "w0"),
             numpy_helper.from_array(rng.standard_normal(32).astype(np.float32), "b0"),
             numpy_helper.from_array((rng.standard_normal((32, 32, 3, 3)) * 0.2).astype(np.float32), "w1"),
             numpy_helper.from_array(rng.standard_normal(32).astype(np.float32), "b1")]
    nodes = [helper.make_node("Conv", ["x", "w0", "b0"], ["c0"], kernel_shape=[3, 3], pads=[1] * 4),
             helper.make_node("Relu", ["c0"], ["r0"]),
             helper.make_node("Conv", ["r0", "w1", "b1"], ["c1"], kernel_shape=[3, 3], pads=[1] * 4),
             helper.make_node("Add", ["c1", "x"], ["y"])]
    g = helper.make_graph(nodes, "scratch", [helper.make_tensor_value_info("x", TensorProto.FLOAT,
                                                                           ["N", *SHAPE[1:]])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", *SHAPE[1:]])], inits)
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", 13)], ir_version=8)


def _x(seed: int) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal(SHAPE).astype(np.float32)


def _conv_variants(cm: cnnjit.CompiledModel) -> list[str]:
    return [c.variant for c in cm._default_spec().program.calls if c.op == "Conv"]


def _split_small_layers(mp: pytest.MonkeyPatch) -> None:
    mp.setattr(split, "MIN_PARALLEL_US", 0.0)
    mp.setattr(split, "MIN_PARALLEL_TOTAL_US", 0.0)
    mp.setattr(split, "MIN_PART_US", 1e-6)


def test_winograd_model_warm_starts_without_numba(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "model.onnx"
    onnx.save(_model(), path)
    monkeypatch.setenv("CNNJIT_CACHE_DIR", str(tmp_path / "cache"))
    cnnjit.cache.warm(str(path), input_shapes={"x": SHAPE})
    jit = cnnjit.compile(_model(), input_shapes={"x": SHAPE})
    x = _x(0)
    want = jit(x)
    assert _conv_variants(jit) == ["winograd_f4", "winograd_f4"]
    sess = ort_session(_model())
    np.testing.assert_allclose(want, sess.run(None, {"x": x})[0], rtol=1e-4, atol=1e-4)
    warm = cnnjit.compile(str(path), input_shapes={"x": SHAPE})
    assert isinstance(warm._specs.get((SHAPE,)), NativeSpecialization)  # the object was built and loaded
    for seed in range(3):
        np.testing.assert_array_equal(warm(_x(seed)), jit(_x(seed)))
    # a new process: the object runs without numba (or the compiler) imported
    np.save(tmp_path / "x.npy", x)
    code = ("import sys, numpy as np, cnnjit\n"
            f"m = cnnjit.compile({str(path)!r}, input_shapes={{'x': {SHAPE!r}}})\n"
            f"np.save({str(tmp_path / 'y.npy')!r}, m(np.load({str(tmp_path / 'x.npy')!r})))\n"
            "print(type(m._last).__name__,"
            " sorted(k for k in ('numba', 'onnx', 'cnnjit.compiler') if k in sys.modules))\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         env={**os.environ, "CNNJIT_CACHE_DIR": str(tmp_path / "cache")}).stdout.strip()
    assert out == "NativeSpecialization []", out
    np.testing.assert_array_equal(np.load(tmp_path / "y.npy"), want)


def test_split_winograd_layer_parts_own_their_scratch(monkeypatch: pytest.MonkeyPatch) -> None:
    """Winograd layers split over output channels in one step (each part transforms the input into its own scratch;
    the two-step split, whose GEMM parts share the transform's scratch by design, is
    ``test_thread_splits.test_winograd_staged_split``'s)."""
    _split_small_layers(monkeypatch)
    monkeypatch.setattr(winograd, "STAGED_MAX_BYTES", 0)
    two = cnnjit.compile(_model(), input_shapes={"x": SHAPE}, threads=2)
    one = cnnjit.compile(_model(), input_shapes={"x": SHAPE}, threads=1)
    for seed in range(3):
        np.testing.assert_array_equal(two(_x(seed)), one(_x(seed)))  # a channel split reorders no sums
    prog = two._default_spec().program
    assert prog.meta["parallel_layers"] == 2
    assert {c.variant for c in prog.calls if c.op == "Conv" and c.parts > 1} == {"winograd_f4"}
    # the memory plan: each part's scratch apart from every other part's and from the layer's values
    graph = two._default_spec().graph
    lowered, groups = lower(graph, Target(threads=2, vector_width=host_vector_width(),
                                          vector_registers=host_vector_registers()))
    scratch = call_scratch(graph, lowered)
    plan = plan_memory(graph, scratch, keep_scratch=True)
    assert groups and all(isinstance(a, Scratch) for _, a in scratch)
    for first, n in groups:
        node = lowered[first][0]
        spans = [(plan.scratch[a].offset, plan.scratch[a].offset + a.elems) for _, kc in lowered[first:first + n]
                 for a in kc.args if isinstance(a, Scratch)]
        assert len(spans) == n
        spans += [(plan.slot(v).offset, plan.slot(v).offset + v.type.size) for v in [*node.inputs, *node.outputs]
                  if v is not None and not v.is_const]
        for i, (lo, hi) in enumerate(spans):
            for lo2, hi2 in spans[i + 1:]:
                assert hi <= lo2 or hi2 <= lo, spans
        assert max(hi for _, hi in spans) <= plan.arena_sizes["f32"]


def test_arena_reported_includes_the_scratch(tmp_path: Path) -> None:
    path = tmp_path / "model.onnx"
    onnx.save(_model(), path)
    out = subprocess.run([sys.executable, "-m", "cnnjit", "inspect", str(path), "--shape", "x=1,32,16,16",
                          "--json"], capture_output=True, text=True, check=True).stdout
    report = json.loads(out)
    arena = report["totals"]["arena_bytes"]
    cm = cnnjit.compile(_model(), input_shapes={"x": SHAPE}, entry="lazy")  # the plan only: no kernel built
    graph = cm._default_spec().graph
    lowered, _ = lower(graph, Target(vector_width=host_vector_width(), vector_registers=host_vector_registers()))
    biggest = max(a.elems for _, kc in lowered for a in kc.args if isinstance(a, Scratch))
    # during the second conv, the model input (the residual), its input and output and its scratch are live
    assert arena == cm._default_spec().program.arena_bytes
    assert arena >= 4 * (biggest + 3 * int(np.prod(SHAPE)))


@pytest.mark.skipif(not all(shutil.which(t) for t in ("qemu-aarch64", "aarch64-linux-gnu-gcc")),
                    reason="qemu-aarch64 / aarch64-linux-gnu-gcc not installed")
def test_aarch64_build_runs_winograd_under_qemu(tmp_path: Path) -> None:
    """The kernel needs no runtime, so the aarch64 target takes it too: built, linked and run under qemu, it
    matches the host's JIT (a different ISA: within float rounding, not bit for bit)."""
    neon = Target("aarch64", 4, 4, vector_registers=32)
    graph = cnnjit.compile(_model(), input_shapes={"x": SHAPE}, entry="lazy").ir
    assert [choose(n, neon).name for n in graph.nodes if n.op == "Conv"] == ["winograd_f4", "winograd_f4"]
    art = compile_for_target(_model(), target="aarch64-linux-gnu", cpu="cortex-a72", name="wino",
                             input_shapes={"x": SHAPE})
    paths = art.save(tmp_path, shared=False)
    exe = tmp_path / "wino_main"
    subprocess.run([find_tool("aarch64-linux-gnu-gcc"), "-O2", "-static", "-o", str(exe), str(paths["main"]),
                    str(paths["object"]), "-lm"], check=True, capture_output=True, timeout=120)
    x = _x(4)
    x.tofile(tmp_path / "in0.bin")
    r = subprocess.run(["qemu-aarch64", "-cpu", "cortex-a72", str(exe), "in0.bin", "-o", "out0.bin"], cwd=tmp_path,
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    got = np.fromfile(tmp_path / "out0.bin", np.float32).reshape(SHAPE)
    want = cnnjit.compile(_model(), input_shapes={"x": SHAPE})(x)
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5 * float(np.abs(want).max()))
