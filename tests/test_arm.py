"""The aarch64 target: models compiled for ARM, linked with the cross gcc, run under qemu-aarch64 with the
CPU model that matches the compile-time CPU, and compared with the host build.

Needs ``qemu-user``, ``gcc-aarch64-linux-gnu`` and ``libc6-dev-arm64-cross`` (.ci/run installs them);
the tests that run code skip without them. Each model is compiled once per test module (per xdist worker).
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import pytest
from conftest import MLPERF_TINY_DIR, REPO_DIR
from onnx import TensorProto, helper, numpy_helper

import cnnjit
from cnnjit.compiler.target import TargetError, compile_for_target
from cnnjit.compiler.target.aarch64 import LIBC_LIBM, elf_info, find_tool, parse_target, resolve_features

HAVE_TOOLS = all(shutil.which(t) for t in ("qemu-aarch64", "aarch64-linux-gnu-gcc"))
needs_tools = pytest.mark.skipif(not HAVE_TOOLS, reason="qemu-aarch64 / aarch64-linux-gnu-gcc not installed "
                                 "(apt-get install qemu-user gcc-aarch64-linux-gnu libc6-dev-arm64-cross)")


def _mnv2():
    sys.path.insert(0, str(REPO_DIR))
    from benchmarks.models import mobilenet_v2

    return mobilenet_v2(width=0.35, size=32, classes=10)


# name -> (model, compile-time cpu, features, qemu -cpu model)
MODELS = {
    "kws": (MLPERF_TINY_DIR / "kws_ref_model_float32.tf2onnx.onnx", "cortex-a76", "+dotprod", "cortex-a76"),
    "ad01": (MLPERF_TINY_DIR / "ad01_fp32.tf2onnx.onnx", "cortex-a53", None, "cortex-a53"),
    "resnet": (MLPERF_TINY_DIR / "pretrainedResnet.tf2onnx.onnx", "cortex-a72", None, "cortex-a72"),
    "vww": (MLPERF_TINY_DIR / "vww_96_float.tf2onnx.onnx", "neoverse-n1", None, "neoverse-n1"),
    "mnv2": (None, "cortex-a53", None, "cortex-a53"),
}
_cache: dict[str, tuple] = {}


def _model(name: str):
    path = MODELS[name][0]
    if path is None:
        return _mnv2()
    if not path.is_file():
        pytest.skip(f"{path} not found (set CNNJIT_SHARED)")
    return str(path)


def build(name: str, tmp_root: Path):
    """(artifact, folder, static binary or None) for model ``name``, compiled once per module."""
    if name not in _cache:
        _, cpu, feats, _ = MODELS[name]
        art = compile_for_target(_model(name), target="aarch64-linux-gnu", cpu=cpu, features=feats, name=name)
        folder = tmp_root / name
        paths = art.save(folder, shared=HAVE_TOOLS)
        exe = None
        if HAVE_TOOLS:
            exe = folder / f"{name}_main"
            subprocess.run([find_tool("aarch64-linux-gnu-gcc"), "-O2", "-static", "-o", str(exe), str(paths["main"]),
                            str(paths["object"]), "-lm"], check=True, capture_output=True, timeout=120)
        _cache[name] = (art, folder, exe)
    return _cache[name]


@pytest.fixture(scope="module")
def tmp_root(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("arm")


def qemu(exe: Path, cpu: str, *args: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run(["qemu-aarch64", "-cpu", cpu, str(exe), *args], cwd=cwd, capture_output=True, text=True,
                          timeout=300)


@needs_tools
@pytest.mark.parametrize("name", list(MODELS))
def test_model_matches_host(name: str, tmp_root: Path) -> None:
    art, folder, exe = build(name, tmp_root)
    rng = np.random.default_rng(7)
    feeds = [rng.standard_normal(t.shape).astype(t.dtype) for t in art.inputs]
    for i, x in enumerate(feeds):
        x.tofile(folder / f"in{i}.bin")
    outs = [f"out{i}.bin" for i in range(len(art.outputs))]
    r = qemu(exe, MODELS[name][3], *[f"in{i}.bin" for i in range(len(feeds))], "-o", *outs, cwd=folder)
    assert r.returncode == 0, r.stderr
    host = cnnjit.compile(_model(name), input_shapes={s: x.shape for s, x in zip(_input_names(name), feeds)})
    want = host(*feeds)
    want = want if isinstance(want, list) else [want]
    for t, f, w in zip(art.outputs, outs, want):
        got = np.fromfile(folder / f, t.dtype).reshape(t.shape)
        w = np.asarray(w).reshape(t.shape)
        np.testing.assert_allclose(got, w, rtol=1e-5, atol=1e-5 * float(np.abs(w).max() or 1.0))


def _input_names(name: str) -> list[str]:
    import onnx

    m = _model(name)
    proto = onnx.load(m) if isinstance(m, str) else m
    inits = {i.name for i in proto.graph.initializer}
    return [i.name for i in proto.graph.input if i.name not in inits]


# -- int8 -------------------------------------------------------------------------------------------------
def _ort_quantized_mnv2(folder: Path) -> str:
    """The small MobileNetV2 quantized by onnxruntime (``quantize_static``: QDQ, uint8 activations, int8
    weights), so the u8 x s8 products of the aarch64 dot forms are exercised (the MLPerf Tiny models are s8)."""
    quantization = pytest.importorskip("onnxruntime.quantization")
    import onnx

    src, dst = folder / "mnv2_f.onnx", folder / "mnv2_q.onnx"
    if not dst.is_file():
        folder.mkdir(parents=True, exist_ok=True)
        onnx.save(_mnv2(), str(src))
        rng = np.random.default_rng(5)
        feeds = iter([{"input": rng.standard_normal((1, 3, 32, 32)).astype(np.float32)} for _ in range(4)])

        class Reader:
            def get_next(self) -> dict | None:
                return next(feeds, None)

        quantization.quantize_static(str(src), str(dst), Reader())
    return str(dst)


# name -> (model, compile-time cpu, features, qemu -cpu model, the dot instruction its int8 kernels use)
INT8_MODELS = {
    "kws8": (MLPERF_TINY_DIR / "kws_ref_model.tf2onnx.onnx", "cortex-a53", None, "cortex-a53", "smull"),
    "ortq": (None, "cortex-a76", "+dotprod", "cortex-a76", "sdot"),
    "ad01_8": (MLPERF_TINY_DIR / "ad01_int8.tf2onnx.onnx", "neoverse-n1", "+dotprod,+i8mm", "max", "usdot"),
}


@needs_tools
@pytest.mark.parametrize("name", list(INT8_MODELS))
def test_int8_bit_exact_under_qemu(name: str, tmp_root: Path) -> None:
    """int8 models built for aarch64 (plain NEON, ``sdot`` with +dotprod, ``usdot`` with +i8mm) give the host
    build's bytes exactly; inputs go in as .npy and outputs come back as .npy."""
    path, cpu, feats, qcpu, dot = INT8_MODELS[name]
    if path is None:
        model = _ort_quantized_mnv2(tmp_root / "ortq_model")
    elif not path.is_file():
        pytest.skip(f"{path} not found (set CNNJIT_SHARED)")
    else:
        model = str(path)
    art = compile_for_target(model, target="aarch64-linux-gnu", cpu=cpu, features=feats, name=name)
    folder = tmp_root / name
    paths = art.save(folder, shared=False)
    exe = folder / f"{name}_main"
    subprocess.run([find_tool("aarch64-linux-gnu-gcc"), "-O2", "-static", "-o", str(exe), str(paths["main"]),
                    str(paths["object"]), "-lm"], check=True, capture_output=True, timeout=120)
    # the kernels are generated at NEON's width and use the target's dot product form
    asm = art.asm
    assert ("\tusdot\t" in asm) == (dot == "usdot") and ("\tsdot\t" in asm) == (dot == "sdot")
    if dot == "smull":
        assert "smull" in asm or "umull" in asm
    rng = np.random.default_rng(11)
    feeds = []
    for i, t in enumerate(art.inputs):
        if t.dtype.kind == "f":
            x = rng.standard_normal(t.shape).astype(t.dtype)
        else:
            info = np.iinfo(t.dtype)
            x = rng.integers(info.min, info.max + 1, t.shape).astype(t.dtype)
        np.save(folder / f"in{i}.npy", x)
        feeds.append(x)
    outs = [f"out{i}.npy" for i in range(len(art.outputs))]
    r = qemu(exe, qcpu, *[f"in{i}.npy" for i in range(len(feeds))], "-o", *outs, cwd=folder)
    assert r.returncode == 0, r.stderr
    want = cnnjit.compile(model)(*feeds)
    want = want if isinstance(want, (list, tuple)) else [want]
    assert len(want) == len(outs)
    for t, f, w in zip(art.outputs, outs, want):
        got = np.load(folder / f)
        assert got.dtype == t.dtype and got.shape == t.shape
        np.testing.assert_array_equal(got, np.asarray(w).reshape(t.shape))


def extreme_qdq_model():
    """uint8 activations and int8 weights at the ends of their ranges through a dense and a depthwise QDQ
    Conv (two outputs of one input): every byte-pair product and sum at its extreme, as the target's dot
    forms (offset sdot, usdot, smlad pairs) must get exactly right."""
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(17)
    C, M = 16, 24
    inits = {"sx": np.array(1.0, np.float32), "zx": np.array(0, np.uint8), "sw": np.array(1.0, np.float32),
             "zw": np.array(0, np.int8), "sy": np.array(1e4, np.float32),
             "sg": np.array(1.5e3, np.float32), "zy": np.array(0, np.int8),
             "wd": rng.choice(np.array([-128, 127], np.int8), size=(M, C, 3, 3)),
             "wg": rng.choice(np.array([-128, 127], np.int8), size=(C, 1, 3, 3))}
    nodes = [helper.make_node("DequantizeLinear", ["x", "sx", "zx"], ["xf"]),
             helper.make_node("DequantizeLinear", ["wd", "sw", "zw"], ["wdf"]),
             helper.make_node("DequantizeLinear", ["wg", "sw", "zw"], ["wgf"]),
             helper.make_node("Conv", ["xf", "wdf"], ["cd"], pads=[1, 1, 1, 1]),
             helper.make_node("Conv", ["xf", "wgf"], ["cg"], pads=[1, 1, 1, 1], group=C),
             helper.make_node("QuantizeLinear", ["cd", "sy", "zy"], ["yd"]),
             helper.make_node("QuantizeLinear", ["cg", "sg", "zy"], ["yg"])]
    graph = helper.make_graph(nodes, "extreme", [helper.make_tensor_value_info("x", TensorProto.UINT8, [1, C, 6, 6])],
                              [helper.make_tensor_value_info("yd", TensorProto.INT8, [1, M, 6, 6]),
                               helper.make_tensor_value_info("yg", TensorProto.INT8, [1, C, 6, 6])],
                              [numpy_helper.from_array(v, k) for k, v in inits.items()])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)], ir_version=8)
    x = rng.choice(np.array([0, 255], np.uint8), size=(1, C, 6, 6))
    return model, x


@needs_tools
@pytest.mark.parametrize("cpu,features,qcpu,dot", [("cortex-a53", None, "cortex-a53", "smull"),
                                                   ("cortex-a76", "+dotprod", "cortex-a76", "sdot"),
                                                   ("neoverse-n1", "+dotprod,+i8mm", "max", "usdot")])
def test_int8_extreme_bytes_exact(cpu: str, features: str | None, qcpu: str, dot: str, tmp_path: Path) -> None:
    model, x = extreme_qdq_model()
    want = cnnjit.compile(model)(x)
    assert np.abs(want[0].astype(np.int32)).max() > 10 and (np.abs(want[0].astype(np.int32)) < 127).mean() > 0.3
    art = compile_for_target(model, target="aarch64-linux-gnu", cpu=cpu, features=features, name="extreme")
    assert f"\t{dot}\t" in art.asm or (dot == "smull" and "\tsdot\t" not in art.asm and "mull" in art.asm)
    paths = art.save(tmp_path, shared=False)
    exe = tmp_path / "extreme_main"
    subprocess.run([find_tool("aarch64-linux-gnu-gcc"), "-O2", "-static", "-o", str(exe), str(paths["main"]),
                    str(paths["object"]), "-lm"], check=True, capture_output=True, timeout=120)
    np.save(tmp_path / "x.npy", x)
    r = qemu(exe, qcpu, "x.npy", "-o", "yd.npy", "yg.npy", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    np.testing.assert_array_equal(np.load(tmp_path / "yd.npy"), want[0])
    np.testing.assert_array_equal(np.load(tmp_path / "yg.npy"), want[1])


def test_int8_kernels_at_target_width() -> None:
    """The aarch64 program's integer kernels are generated at NEON's 4 int32 lanes, whatever the host's."""
    from cnnjit.compiler.frontend.loader import load_model
    from cnnjit.compiler.stages import CompileOptions, resolve_shapes, specialize

    path = INT8_MODELS["kws8"][0]
    if not path.is_file():
        pytest.skip(f"{path} not found")
    proto = load_model(str(path))
    shapes, _ = resolve_shapes(proto)
    spec = specialize(proto, shapes, CompileOptions(entry="lazy"),
                      target=cnnjit.compiler.codegen.kernel.Target("aarch64", 4, 4, vector_registers=32))
    int_sources = [s for s in spec.program.kernel_sources.values() if "ivdot" in s]
    assert int_sources
    for s in int_sources:
        assert "ivdot4(" in s and "ivdot8(" not in s and "ivdot16(" not in s


@pytest.mark.parametrize("name", ["kws", "mnv2"])
def test_artifact_checks_and_neon_fma(name: str, tmp_root: Path) -> None:
    art, folder, _ = build(name, tmp_root)
    info = elf_info(art.object)
    assert info["machine"] == 183  # EM_AARCH64
    assert art.triple == "aarch64-unknown-linux-gnu"
    assert art.checks["x86_intrinsics"] is False
    assert set(info["undefined"]) <= LIBC_LIBM
    assert info["defined"] == [f"{name}_run"]
    conv = art.conv_kernels()
    assert conv, "no conv kernels found"
    for sym, asm in art.kernel_asm().items():
        if sym in conv:
            assert "fmla\tv" in asm and ".4s" in asm, f"{sym}: no NEON FMA"
    assert f"#define {name.upper()}_SCRATCH_BYTES {art.scratch_bytes}u" in art.header
    assert (folder / f"{name}.h").read_text() == art.header


@needs_tools
def test_shared_library_links(tmp_root: Path) -> None:
    art, folder, _ = build("kws", tmp_root)
    so = folder / "libkws.so"
    assert so.is_file() and so.read_bytes()[:4] == b"\x7fELF"


@needs_tools
def test_sve_binary_needs_matching_qemu_cpu(tmp_root: Path) -> None:
    """A binary built with +sve uses SVE (masked loads): qemu's cortex-a76 model has no SVE and must stop
    it with SIGILL, while '-cpu max' runs it; so the qemu CPU model really checks the target features."""
    art = compile_for_target(_model("kws"), target="aarch64-linux-gnu", cpu="cortex-a76", features="+sve",
                             name="kws_sve")
    folder = tmp_root / "kws_sve"
    paths = art.save(folder, shared=False)
    exe = folder / "kws_sve_main"
    subprocess.run([find_tool("aarch64-linux-gnu-gcc"), "-O2", "-static", "-o", str(exe), str(paths["main"]),
                    str(paths["object"]), "-lm"], check=True, capture_output=True, timeout=120)
    assert qemu(exe, "max", cwd=folder).returncode == 0
    bad = qemu(exe, "cortex-a76", cwd=folder)
    assert bad.returncode in (-4, 132), (bad.returncode, bad.stderr)  # SIGILL


# -- errors -------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("target", ["x86_64-linux-gnu", "aarch64", "aarch64-apple-darwin", "arm-linux-gnueabihf",
                                    "not a triple!", ""])
def test_bad_targets(target: str) -> None:
    with pytest.raises(TargetError) as e:
        parse_target(target)
    assert "aarch64-linux-gnu" in str(e.value)


def test_target_spellings() -> None:
    for t in ("aarch64-linux-gnu", "aarch64-unknown-linux-gnu", "arm64-linux-gnu", "AArch64-Linux-GNU"):
        assert parse_target(t) == "aarch64-unknown-linux-gnu"


def test_features_pinned() -> None:
    cpu, f = resolve_features("neoverse-v1", "+dotprod")
    assert cpu == "neoverse-v1" and "-sve" in f.split(",") and "+neon" in f.split(",") and "+dotprod" in f
    assert "-sve" not in resolve_features(None, "+sve")[1].split(",")
    for bad in ("dotprod", "+neon;rm", "-neon"):
        with pytest.raises(TargetError):
            resolve_features(None, bad)


@pytest.mark.parametrize("cpu,features,word", [("skylake", None, "skylake"), ("cortex-a99", None, "cortex-a99"),
                                                ("cortex-a53", "+nonsense", "+nonsense")])
def test_unknown_cpu_or_feature(cpu: str, features: str | None, word: str) -> None:
    with pytest.raises(TargetError) as e:
        cnnjit.compile(_mnv2(), target="aarch64-linux-gnu", cpu=cpu, features=features)
    assert word in str(e.value) and "not a recognized" in str(e.value)


def test_missing_cross_tools_name_the_package(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PATH", "/nonexistent")
    with pytest.raises(TargetError) as e:
        find_tool("aarch64-linux-gnu-gcc")
    assert "gcc-aarch64-linux-gnu" in str(e.value) and e.value.kind == "tool"
    with pytest.raises(TargetError) as e:
        find_tool("qemu-aarch64")
    assert "qemu-user" in str(e.value)


def test_cli_compile(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    from cnnjit.cli import main

    model = MODELS["kws"][0]
    if not model.is_file():
        pytest.skip("kws model not found")
    assert main(["compile", str(model), "--target", "aarch64-linux-gnu", "--cpu", "cortex-a53", "-o",
                 str(tmp_path), "--name", "kws", "--no-shared"]) == 0
    assert (tmp_path / "kws.o").is_file() and (tmp_path / "kws.h").is_file()
    # the symbolic batch became 1, and compile says so as run and inspect do
    assert "note: symbolic dimension 'unk__122' of input 'input_1' set to 1" in capsys.readouterr().err
    assert main(["compile", str(model), "--target", "x86_64-linux-gnu", "-o", str(tmp_path)]) == 2
    assert main(["compile", str(model), "-o", str(tmp_path)]) == 2
    assert main(["compile", str(model), "--target", "aarch64-linux-gnu", "--cpu", "pentium", "-o", str(tmp_path),
                 "--json"]) == 2


def _conv_pool_model() -> onnx.ModelProto:
    """Conv + Relu + MaxPool (two kernels): a model for command-line checks that need any aarch64 build (a whole
    network's cross compile is checked against the host by ``test_model_matches_host``)."""
    w = np.random.default_rng(0).standard_normal((4, 3, 3, 3)).astype(np.float32)
    nodes = [helper.make_node("Conv", ["x", "w"], ["c"], pads=[1, 1, 1, 1]), helper.make_node("Relu", ["c"], ["r"]),
             helper.make_node("MaxPool", ["r"], ["y"], kernel_shape=[2, 2], strides=[2, 2])]
    graph = helper.make_graph(nodes, "conv_pool", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 8, 8])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4, 4, 4])],
                              [numpy_helper.from_array(w, "w")])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)], ir_version=8)


def test_cli_compile_json(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    import json

    from cnnjit.cli import main

    path = tmp_path / "conv_pool.onnx"
    onnx.save(_conv_pool_model(), str(path))
    assert main(["compile", str(path), "--target", "aarch64-linux-gnu", "-o", str(tmp_path / "b"), "--json",
                 "--no-shared"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["name"] == "conv_pool" and doc["checks"]["elf_machine"] == "aarch64"
    assert doc["files"]["object"]["bytes"] > 0


@needs_tools
def test_main_reads_npy_and_refuses_bad_inputs(tmp_root: Path) -> None:
    """The generated program takes .npy or exact-size raw inputs, refuses other dtypes, Fortran order and
    wrong sizes (exit 2, saying why), writes .npy outputs and prints every output value (up to 64)."""
    art, folder, exe = build("kws", tmp_root)
    t = art.inputs[0]
    x = np.random.default_rng(3).standard_normal(t.shape).astype(np.float32)
    np.save(folder / "x.npy", x)
    x.tofile(folder / "x.bin")
    want = qemu(exe, "cortex-a76", "x.bin", "-o", "y.bin", cwd=folder)
    assert want.returncode == 0, want.stderr
    r = qemu(exe, "cortex-a76", "x.npy", "-o", "y.npy", cwd=folder)
    assert r.returncode == 0, r.stderr
    y = np.load(folder / "y.npy")
    assert y.shape == art.outputs[0].shape and y.dtype == np.float32
    np.testing.assert_array_equal(y.ravel(), np.fromfile(folder / "y.bin", np.float32))
    printed = qemu(exe, "cortex-a76", "x.npy", cwd=folder)
    assert printed.returncode == 0 and "output0: <f4 (1, 12), 12 values" in printed.stdout
    values = [float(v) for v in printed.stdout.splitlines()[1].split()]
    np.testing.assert_allclose(values, y.ravel(), rtol=1e-6)  # all 12, %.7g
    bad = {"x64.npy": x.astype(np.float64), "xF.npy": np.asfortranarray(x.reshape(49, 10)),
           "short.npy": x.ravel()[:-1]}
    for f, arr in bad.items():
        np.save(folder / f, arr)
    np.concatenate([x.ravel(), x.ravel()[:1]]).tofile(folder / "long.bin")
    x.ravel()[:-1].tofile(folder / "short.bin")
    for f in [*bad, "long.bin", "short.bin"]:
        r = qemu(exe, "cortex-a76", f, cwd=folder)
        assert r.returncode == 2 and f in r.stderr and ("'<f4'" in r.stderr or "1960 bytes" in r.stderr), (f, r)


def test_worker_traceback_with_debug(capsys: pytest.CaptureFixture) -> None:
    """A kernel that fails in the aarch64 compile worker: the error carries the worker's traceback, and
    ``cnnjit --debug`` prints it."""
    from cnnjit.cli import _print_worker_traceback
    from cnnjit.compiler.codegen.build import HEADER
    from cnnjit.compiler.target.aarch64 import run_worker
    from cnnjit.ir.errors import CompileError

    job = {"name": "bad", "triple": "aarch64-unknown-linux-gnu", "cpu": "generic", "features": "+neon",
           "contract": True, "header": HEADER, "kernels": {"k0": "def kernel(n):\n    return no_such_name + n\n"},
           "calls": [("k0", [("i", 1)])], "buffers": {}, "inputs": [], "outputs": [], "keep_ir": False}
    with pytest.raises(CompileError) as e:
        run_worker(job)
    assert "kernel k0 failed to compile" in str(e.value)
    assert "Traceback" in e.value.worker_traceback and "no_such_name" in e.value.worker_traceback
    _print_worker_traceback(e.value)
    assert "compile worker's traceback" in capsys.readouterr().err
