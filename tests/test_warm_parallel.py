"""A warm start of a parallel schedule (``compiler/target/steps_ir.py``, ``runtime/native.py``): the native
object holds the step protocol, runs on the ``runtime.team`` threads without numba, gives the JIT's results
bit for bit, loops over batch without compiling, and a damaged entry still falls back to the full path.

The model is small (two 32-channel convolutions on 8x8) and the split thresholds of
``compiler/codegen/threads.py`` are lowered while it is warmed, so that ``threads=2`` splits its layers;
the oracles are the JIT (from the ``ModelProto``, which never takes the warm path) at 2 and 1 threads and
onnxruntime.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

import cnnjit
import cnnjit.cache
from cnnjit.compiler.codegen import threads as split
from cnnjit.runtime import team as team_runtime
from cnnjit.runtime.cpus import usable_cpus
from cnnjit.runtime.model import BatchLoop
from cnnjit.runtime.native import NativeSpecialization

SHAPE = (1, 3, 8, 8)


def _model() -> onnx.ModelProto:
    """Conv 3x3 3->32 + Relu, pointwise 32->32 with the first conv's output added, global pooling, Flatten;
    outputs the pooled vector and the pointwise layer's map; batch symbolic."""
    rng = np.random.default_rng(11)

    def const(name: str, shape: tuple[int, ...], scale: float) -> onnx.TensorProto:
        return numpy_helper.from_array((rng.standard_normal(shape) * scale).astype(np.float32), name)

    inits = [const("w0", (32, 3, 3, 3), 0.3), const("b0", (32,), 0.1), const("w1", (32, 32, 1, 1), 0.2),
             const("b1", (32,), 0.1)]
    nodes = [helper.make_node("Conv", ["x", "w0", "b0"], ["c0"], pads=[1] * 4),
             helper.make_node("Relu", ["c0"], ["r0"]),
             helper.make_node("Conv", ["r0", "w1", "b1"], ["c1"]),
             helper.make_node("Add", ["c1", "r0"], ["s"]),
             helper.make_node("GlobalAveragePool", ["s"], ["p"]),
             helper.make_node("Flatten", ["p"], ["y"])]
    g = helper.make_graph(nodes, "warm_parallel",
                          [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 3, 8, 8])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 32]),
                           helper.make_tensor_value_info("s", TensorProto.FLOAT, ["N", 32, 8, 8])], inits)
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", 13)])


def _split_small_layers(mp: pytest.MonkeyPatch) -> None:
    mp.setattr(split, "MIN_PARALLEL_US", 0.0)
    mp.setattr(split, "MIN_PARALLEL_TOTAL_US", 0.0)
    mp.setattr(split, "MIN_PART_US", 1e-6)
    mp.setattr(split, "ADAPTIVE_BELOW_US", 0.0)  # no serial twin (an object would take it): the parallel object


@pytest.fixture(scope="module")
def filled(tmp_path_factory: pytest.TempPathFactory) -> dict:
    """A cache folder with the model warmed at SHAPE for 2 threads, and the JIT of it at 2 threads."""
    root = tmp_path_factory.mktemp("warm-parallel")
    path = root / "model.onnx"
    onnx.save(_model(), path)
    with pytest.MonkeyPatch.context() as mp:
        _split_small_layers(mp)
        mp.setenv("CNNJIT_CACHE_DIR", str(root / "cache"))
        cnnjit.cache.warm(str(path), input_shapes={"x": SHAPE}, threads=2)
        jit = cnnjit.compile(_model(), threads=2)
        jit(_x())  # specialised at batch 1 while the thresholds are low
    assert jit._default_spec().program.meta["parallel_layers"] == 2  # both convolutions split
    return {"root": root, "path": path, "cache": root / "cache", "jit": jit}


@pytest.fixture()
def cache(filled: dict, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> dict:
    """A private copy of the filled cache (tests may damage it), set as CNNJIT_CACHE_DIR."""
    copy = tmp_path / "cache"
    shutil.copytree(filled["cache"], copy, symlinks=True)
    monkeypatch.setenv("CNNJIT_CACHE_DIR", str(copy))
    return {**filled, "cache": copy, "entries": sorted(copy.glob("native-*/*.json"))}


def _x(seed: int = 0, n: int = 1) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal((n, *SHAPE[1:])).astype(np.float32)


def _warm_spec(model: cnnjit.CompiledModel) -> NativeSpecialization | None:
    spec = model._specs.get((SHAPE,))
    return spec if isinstance(spec, NativeSpecialization) else None


def test_parallel_object_is_bit_identical_to_the_jit(cache: dict):
    warm = cnnjit.compile(str(cache["path"]), threads=2)
    spec = _warm_spec(warm)
    assert spec is not None and spec.parallel is not None  # the native program is a parallel region
    # the JIT's steps: the 2 split convolutions (Relu and the residual Add fused) and the pooling
    assert spec.parallel.steps == cache["jit"]._default_spec().program.meta["steps"] == 3
    assert spec.parallel.threads == 2
    one = cnnjit.compile(_model(), threads=1)
    ort = pytest.importorskip("onnxruntime")
    sess = ort.InferenceSession(_model().SerializeToString(), providers=["CPUExecutionProvider"])
    for seed in range(4):
        x = _x(seed)
        got = warm(x)
        for g, j, o, r in zip(got, cache["jit"](x), one(x), sess.run(None, {"x": x})):
            np.testing.assert_array_equal(g, j)
            np.testing.assert_array_equal(g, o)  # a channel split reorders no sums
            np.testing.assert_allclose(g, r, rtol=1e-4, atol=1e-4)
    # several Python threads at once: one gets the team, the others run the object alone
    xs = [_x(s) for s in range(6)]
    for x, g in zip(xs, warm.map(xs, threads=3)):
        np.testing.assert_array_equal(g[1], cache["jit"](x)[1])


def test_new_batch_size_loops_over_the_object(cache: dict):
    warm = cnnjit.compile(str(cache["path"]), threads=2)
    # ready for other batch sizes before the first one: a work set per sample thread, the team's threads up
    n = min(2, usable_cpus())
    assert _warm_spec(warm).batch_separable and len(_warm_spec(warm)._pool) >= n
    if n > 1:
        assert team_runtime.team(1).size >= n
    for n in (3, 1, 4):
        x = _x(20 + n, n)
        got = warm(x)
        if n > 1:
            assert isinstance(warm._last, BatchLoop) and isinstance(warm._last.base, NativeSpecialization)
        for g, j in zip(got, cache["jit"](x)):
            assert g.shape[0] == n
            np.testing.assert_array_equal(g, j)


def test_a_failing_run_raises_and_the_team_stays_usable(cache: dict):
    warm = cnnjit.compile(str(cache["path"]), threads=2)
    spec = _warm_spec(warm)
    assert spec is not None and spec.parallel is not None
    with pytest.raises(cnnjit.InputError, match="status 2"):
        spec.parallel(0)  # a null scratch block: every thread's entry refuses it, the caller raises once
    x = _x(5)
    np.testing.assert_array_equal(warm(x)[0], cache["jit"](x)[0])


def test_damaged_parallel_object_falls_back(cache: dict):
    for entry in cache["entries"]:
        obj = entry.with_suffix(".o")
        data = bytearray(obj.read_bytes())
        data[len(data) // 2] ^= 0x10
        obj.write_bytes(bytes(data))
    with pytest.MonkeyPatch.context() as mp:
        _split_small_layers(mp)
        model = cnnjit.compile(str(cache["path"]), threads=2)
        x = _x(7)
        got = model(x)
    assert _warm_spec(model) is None
    np.testing.assert_array_equal(got[0], cache["jit"](x)[0])


def test_a_warm_process_runs_the_parallel_object_without_numba(cache: dict, tmp_path: Path):
    x1, x3 = _x(8), _x(9, 3)
    np.save(tmp_path / "x1.npy", x1)
    np.save(tmp_path / "x3.npy", x3)
    code = ("import sys, numpy as np, cnnjit\n"
            f"m = cnnjit.compile({str(cache['path'])!r}, threads=2)\n"
            f"a = m(np.load({str(tmp_path / 'x1.npy')!r}))\n"
            "p = m._last.parallel\n"
            f"b = m(np.load({str(tmp_path / 'x3.npy')!r}))\n"
            f"np.savez({str(tmp_path / 'out.npz')!r}, a0=a[0], a1=a[1], b0=b[0], b1=b[1])\n"
            "print(type(m._last).__name__, type(m._last.base).__name__, p.steps, p.threads,"
            " sorted(k for k in ('onnx', 'numba', 'cnnjit.compiler') if k in sys.modules))\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         env={**os.environ, "CNNJIT_CACHE_DIR": str(cache["cache"])}).stdout.strip()
    assert out == "BatchLoop NativeSpecialization 3 2 []", out
    got = np.load(tmp_path / "out.npz")
    for name, x in (("a", x1), ("b", x3)):
        for i, ref in enumerate(cache["jit"](x)):
            np.testing.assert_array_equal(got[f"{name}{i}"], ref)
