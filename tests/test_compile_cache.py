"""Compile time and the kernel cache: eager compile, the compile report, a second process loading every
kernel from the on-disk cache, parallel compile workers, and ``cnnjit cache info|clear`` / ``cnnjit warm``."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

import cnnjit
from cnnjit.compiler.codegen import build, precompile


def small_cnn(seed: int = 0, width: int = 8) -> onnx.ModelProto:
    """Conv-Relu-Conv(stride 2)-GlobalAveragePool-Gemm: a few distinct kernels."""
    rng = np.random.default_rng(seed)
    inits = [
        numpy_helper.from_array(rng.standard_normal((width, 3, 3, 3)).astype(np.float32) * 0.3, "w1"),
        numpy_helper.from_array(rng.standard_normal(width).astype(np.float32), "b1"),
        numpy_helper.from_array(rng.standard_normal((width, width, 3, 3)).astype(np.float32) * 0.2, "w2"),
        numpy_helper.from_array(rng.standard_normal((5, width)).astype(np.float32), "wg"),
        numpy_helper.from_array(rng.standard_normal(5).astype(np.float32), "bg"),
    ]
    nodes = [
        helper.make_node("Conv", ["x", "w1", "b1"], ["c1"], pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["c1"], ["r1"]),
        helper.make_node("Conv", ["r1", "w2"], ["c2"], pads=[1, 1, 1, 1], strides=[2, 2]),
        helper.make_node("GlobalAveragePool", ["c2"], ["g"]),
        helper.make_node("Flatten", ["g"], ["f"]),
        helper.make_node("Gemm", ["f", "wg", "bg"], ["y"], transB=1),
    ]
    g = helper.make_graph(nodes, "small_cnn", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 12, 12])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 5])], inits)
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", 13)], ir_version=8)


def tiny(seed: int = 0) -> onnx.ModelProto:
    """Conv 1x1 + Relu + GlobalAveragePool: two kernels, quick to compile (for the command-line test)."""
    w = np.random.default_rng(seed).standard_normal((4, 3, 1, 1)).astype(np.float32)
    nodes = [helper.make_node("Conv", ["x", "w"], ["c"]), helper.make_node("Relu", ["c"], ["r"]),
             helper.make_node("GlobalAveragePool", ["r"], ["y"])]
    g = helper.make_graph(nodes, "tiny", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 12, 12])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4, 1, 1])],
                          [numpy_helper.from_array(w, "w")])
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", 13)], ir_version=8)


def x_in(seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal((1, 3, 12, 12)).astype(np.float32)


@pytest.fixture
def fresh_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("CNNJIT_CACHE_DIR", str(tmp_path / "cache"))
    build._dirs.clear()
    yield tmp_path / "cache"
    build._dirs.clear()


def _misses(dispatchers) -> int:
    return sum(sum(d.stats.cache_misses.values()) for d in dispatchers)


# == eager compile ==========================================================================================
def test_eager_compile_first_call_compiles_nothing(fresh_cache):
    m = cnnjit.compile(small_cnn(seed=1))
    rep = m.compile_report()
    assert rep is not None and len(rep) == len(m._last.program.kernel_sources) >= 3
    # every kernel got exactly the signatures the schedule passes, before any call
    disps = [build._loaded[r.key] for r in rep.rows]
    overloads = [len(d.overloads) for d in disps]
    misses = _misses(disps)
    assert all(n >= 1 for n in overloads)
    y = m(x_in())
    assert [len(d.overloads) for d in disps] == overloads, "the first call compiled a new signature"
    assert _misses(disps) == misses
    from cnnjit.ir import interpret

    np.testing.assert_allclose(y, interpret(m.ir, [x_in()])[0], rtol=1e-4, atol=1e-4)
    # the report prints as a table, and knows what it compiled
    text = str(rep)
    assert "kernel" in text and "origin" in text and rep.summary() in text
    assert rep.compiled + rep.cache_hits == len(rep)


def test_symbolic_model_compiles_eagerly_on_first_shape(fresh_cache):
    model = small_cnn(seed=2)
    model.graph.input[0].type.tensor_type.shape.dim[0].dim_param = "N"
    m = cnnjit.compile(model, input_shapes={"x": (2, 3, 12, 12)})
    rep = m.compile_report()
    disps = [build._loaded[r.key] for r in rep.rows]
    before = [len(d.overloads) for d in disps]
    m(np.concatenate([x_in(), x_in(1)]))
    assert [len(d.overloads) for d in disps] == before


def test_compile_report_logged(fresh_cache, caplog):
    import logging

    with caplog.at_level(logging.DEBUG, logger="cnnjit"):
        cnnjit.compile(small_cnn(seed=3))
    text = caplog.text
    assert "kernel cache:" in text and "kernels (" in text and "origin" in text


# == the numba entry: one kernel compile per distinct sizes, not per call ===================================
def conv_chain(n: int = 4, seed: int = 0) -> onnx.ModelProto:
    """``n`` identical Conv 3x3 (6 -> 6 channels, pad 1) + Relu layers on 1x6x10x10, then GlobalAveragePool."""
    rng = np.random.default_rng(seed)
    inits, nodes, cur = [], [], "x"
    for i in range(n):
        inits.append(numpy_helper.from_array(rng.standard_normal((6, 6, 3, 3)).astype(np.float32) * 0.3, f"w{i}"))
        nodes += [helper.make_node("Conv", [cur, f"w{i}"], [f"c{i}"], pads=[1, 1, 1, 1]),
                  helper.make_node("Relu", [f"c{i}"], [f"r{i}"])]
        cur = f"r{i}"
    nodes.append(helper.make_node("GlobalAveragePool", [cur], ["y"]))
    g = helper.make_graph(nodes, "conv_chain", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 6, 10, 10])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 6, 1, 1])], inits)
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", 13)], ir_version=8)


@pytest.mark.parametrize("specialize_max", [4, 0])
def test_numba_entry_compiles_each_kernel_once_per_sizes(fresh_cache, monkeypatch, specialize_max):
    """Calls of one kernel with the same sizes (other buffer offsets) share one compiled specialisation; with
    ``SPECIALIZE_MAX = 0`` every kernel is compiled once for all its calls and inlined into the entry."""
    from cnnjit.compiler.codegen import emit
    from cnnjit.ir import interpret

    monkeypatch.setattr(emit, "SPECIALIZE_MAX", specialize_max)
    for k in list(build._loaded):
        build._loaded.pop(k)
    m = cnnjit.compile(conv_chain(seed=specialize_max), entry="numba")
    p = m._last.program
    conv = [n for n, s in p.kernel_sources.items() if p.source.count(f"    {n}(") == 4]
    assert len(conv) == 1, p.source
    disp = build._loaded[build.source_key(p.kernel_sources[conv[0]])]
    assert len(disp.overloads) == 1, list(disp.overloads)  # not one per call, no unused Python signature
    assert (p.meta["generic_kernels"] != []) == (specialize_max == 0)
    x = np.random.default_rng(1).standard_normal((1, 6, 10, 10)).astype(np.float32)
    np.testing.assert_allclose(m(x), interpret(m.ir, [x])[0], rtol=1e-5, atol=1e-5)
    assert len(disp.overloads) == 1  # the entry compiled no further specialisation


# == a second process loads every kernel from the cache =====================================================
CHILD = textwrap.dedent("""
    import json, sys
    import numpy as np
    import cnnjit
    model, xin, yout = sys.argv[1:4]
    m = cnnjit.compile(model)
    np.save(yout, m(np.load(xin)))
    rep = m.compile_report()
    from cnnjit.cache import info
    print(json.dumps({"compiled": rep.compiled, "hits": rep.cache_hits, "kernels": len(rep),
                      "counts": rep.counts(), "process": info()["process"]}))
""")


def _run_child(cache: Path, *args: str, jobs: int = 1) -> dict:
    env = dict(os.environ, CNNJIT_CACHE_DIR=str(cache), CNNJIT_COMPILE_JOBS=str(jobs))
    p = subprocess.run([sys.executable, "-c", CHILD, *args], env=env, capture_output=True, text=True, timeout=300)
    assert p.returncode == 0, p.stderr[-3000:]
    return json.loads(p.stdout.strip().splitlines()[-1])


def _cold_child(tmp_path: Path, seed: int):
    """``small_cnn(seed)`` compiled and run in a child process on an empty cache (output ``y0.npy``); returns
    a runner for further children on that cache (``run(k)`` writes ``y<k>.npy``) and the cache folder."""
    model, xin = tmp_path / "m.onnx", tmp_path / "x.npy"
    onnx.save(small_cnn(seed=seed), str(model))
    np.save(xin, x_in(seed))
    cache = tmp_path / "cache"

    def run(k: int) -> dict:
        return _run_child(cache, str(model), str(xin), str(tmp_path / f"y{k}.npy"))

    first = run(0)
    assert first["compiled"] == first["kernels"] > 0, first
    return run, cache


def test_second_process_loads_every_kernel_from_cache(tmp_path):
    run, _ = _cold_child(tmp_path, seed=4)
    second = run(1)
    assert second["compiled"] == 0 and second["hits"] == second["kernels"], second
    assert second["counts"] == {"disk cache": second["kernels"]}
    assert second["process"]["misses"] == 0
    assert np.load(tmp_path / "y0.npy").tobytes() == np.load(tmp_path / "y1.npy").tobytes()


# == parallel compile =======================================================================================
def test_parallel_compile_identical_outputs(fresh_cache, monkeypatch):
    monkeypatch.setattr(precompile, "MIN_PARALLEL_MISSES", 2)
    monkeypatch.setenv("CNNJIT_COMPILE_JOBS", "2")
    model = small_cnn(seed=5, width=12)  # kernel sources not compiled by the other tests of this process
    for k in list(build._loaded):
        build._loaded.pop(k)
    par = cnnjit.compile(model)
    rep = par.compile_report()
    assert rep.jobs == 2, rep
    assert rep.counts().get("compiled by worker", 0) >= 1, rep
    assert rep.compiled == len(rep)
    y_par = par(x_in(5))
    # the same model compiled serially into another empty cache
    monkeypatch.setenv("CNNJIT_CACHE_DIR", str(fresh_cache.parent / "serial"))
    monkeypatch.setenv("CNNJIT_COMPILE_JOBS", "1")
    build._dirs.clear()
    for k in list(build._loaded):
        build._loaded.pop(k)
    ser = cnnjit.compile(model)
    assert ser.compile_report().counts() == {"compiled": len(rep)}
    assert y_par.tobytes() == ser(x_in(5)).tobytes()


def test_parallel_not_used_below_threshold(fresh_cache, monkeypatch):
    monkeypatch.setenv("CNNJIT_COMPILE_JOBS", "2")
    monkeypatch.setattr(precompile, "MIN_PARALLEL_MISSES", 1000)
    rep = cnnjit.compile(small_cnn(seed=6, width=10)).compile_report()
    assert rep.jobs == 1 and "compiled by worker" not in rep.counts()


# == the command line =======================================================================================
def _cli(cache: Path, *args: str) -> subprocess.CompletedProcess:
    env = dict(os.environ, CNNJIT_CACHE_DIR=str(cache))
    return subprocess.run([sys.executable, "-m", "cnnjit", *args], env=env, capture_output=True, text=True,
                          timeout=300)


def _cli_here(cache: Path, *args: str) -> subprocess.CompletedProcess:
    """``_cli`` in this process (``test_cli.run_cli_here``): for the commands whose output does not depend on
    the process (``cache info``'s table counts this process's hits and ``warm`` its compiles: those start one)."""
    from test_cli import run_cli_here

    return run_cli_here(*args, env={"CNNJIT_CACHE_DIR": str(cache)})


def test_cli_cache_info_warm_clear(tmp_path):
    cache = tmp_path / "cache"
    model = tmp_path / "m.onnx"
    onnx.save(tiny(seed=7), str(model))
    p = _cli_here(cache, "cache", "info", "--json")
    assert p.returncode == 0, p.stderr
    empty = json.loads(p.stdout)
    assert empty["kernels"] == 0 and empty["root"] == str(cache)
    p = _cli(cache, "warm", str(model), "--json")
    assert p.returncode == 0, p.stderr
    warm = json.loads(p.stdout)
    assert warm["compiled"] == len(warm["kernels"]) > 0
    assert Path(warm["program"]).is_file() and Path(warm["program"]).parent.name.startswith("native-")
    p = _cli_here(cache, "cache", "info", "--json")
    full = json.loads(p.stdout)
    assert full["kernels"] == len(warm["kernels"]) and full["bytes"] > 0
    assert full["compiled_kernels"] == full["kernels"] and full["dir"].startswith(str(cache))
    p = _cli(cache, "warm", str(model), "--json")  # everything from the cache now
    again = json.loads(p.stdout)
    assert again["compiled"] == 0 and again["cache_hits"] == len(again["kernels"])
    (cache / "keep.txt").write_text("not ours")
    digests = (cache / "code-digest").is_dir()  # remembered unless a source file changed in the last seconds
    p = _cli_here(cache, "cache", "clear")
    assert p.returncode == 0, p.stderr
    assert f"removed {2 + digests} cache folder" in p.stdout  # the kernels', the compiled programs', digests
    assert not list(cache.glob("kernels-*")) and not list(cache.glob("native-*")) and (cache / "keep.txt").exists()
    assert not (cache / "code-digest").exists()
    p = _cli(cache, "cache", "info")  # the table
    assert p.returncode == 0 and "kernels" in p.stdout and "0 hits" in p.stdout
    # usage errors and help
    assert _cli_here(cache, "cache", "bogus").returncode == 2
    h = _cli_here(cache, "cache", "--help")
    assert h.returncode == 0 and "example" in h.stdout
    assert _cli_here(cache, "warm", str(tmp_path / "missing.onnx")).returncode == 1


def test_schedule_recompiles_over_cached_wrapperless_kernels(tmp_path):
    """Kernel specialisations with constant sizes are compiled without numba's Python wrapper (only the
    numba schedule calls them). A new process whose schedule is not cached (another model with the same
    layers, or a deleted entry) loads those kernels from the disk cache, compiles the schedule over them and
    computes the same result."""
    run, cache = _cold_child(tmp_path, seed=7)
    entries = list(cache.glob("kernels-*/__pycache__/e_*")) + list(cache.glob("kernels-*/e_*"))
    assert entries
    for f in entries:
        f.unlink()
    second = run(1)
    assert second["compiled"] == 0 and second["hits"] == second["kernels"], second
    assert np.load(tmp_path / "y0.npy").tobytes() == np.load(tmp_path / "y1.npy").tobytes()
    ref = cnnjit.compile(small_cnn(seed=7), entry="python")(x_in(7))  # the Python schedule: wrapped kernels
    np.testing.assert_allclose(np.load(tmp_path / "y1.npy"), ref, rtol=1e-5, atol=1e-6)


def test_literal_size_specialisations_have_no_python_wrapper(fresh_cache):
    import warnings

    from numba.core import types

    for k in list(build._loaded):  # compile afresh (a kernel loaded from a disk cache has no IR to read)
        build._loaded.pop(k)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # (numba warns, and returns no IR, for code loaded from its cache)
        m = cnnjit.compile(small_cnn(seed=8), entry="numba")
        cnnjit.compile(small_cnn(seed=8), entry="python")  # the same kernels, called from Python: wrapped
        p = m._last.program
        checked = {True: 0, False: 0}
        for src in p.kernel_sources.values():
            disp = build._loaded[build.source_key(src)]
            for sig, cres in disp.overloads.items():
                literal = any(isinstance(a, types.Literal) for a in sig)
                wrapped = cres.fndesc.llvm_cpython_wrapper_name in cres.library.get_llvm_str()
                assert wrapped != literal, sig
                checked[literal] += 1
    assert checked[True] >= len(p.kernel_sources) - 1  # (a kernel without size arguments has no literal)
    assert checked[False] == len(p.kernel_sources)


@pytest.mark.parametrize(("value", "load", "expected"), [
    (None, 0.3, 2), ("", 0.3, 2), ("auto", 0.3, 2), ("auto", 2.6, 1), (None, 1.9, 1), ("3", 5.0, 3), ("1", 0.0, 1),
    ("-4", 0.0, 1)])
def test_compile_jobs_default_is_idle_cpus(monkeypatch, value, load, expected):
    """Unset means ``auto``: as many compile streams as CPUs other processes leave idle (2 CPUs here)."""
    if value is None:
        monkeypatch.delenv("CNNJIT_COMPILE_JOBS", raising=False)
    else:
        monkeypatch.setenv("CNNJIT_COMPILE_JOBS", value)
    monkeypatch.setattr(os, "cpu_count", lambda: 2)
    monkeypatch.setattr(os, "getloadavg", lambda: (load, load, load))
    assert precompile.compile_jobs() == expected


def test_compile_jobs_garbage_warns(monkeypatch):
    monkeypatch.setenv("CNNJIT_COMPILE_JOBS", "zero")
    with pytest.warns(RuntimeWarning, match="CNNJIT_COMPILE_JOBS='zero'"):
        assert precompile.compile_jobs() == 1
