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
import pytest
from conftest import MLPERF_TINY_DIR, REPO_DIR

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


def test_cli_compile(tmp_path: Path) -> None:
    from cnnjit.cli import main

    model = MODELS["kws"][0]
    if not model.is_file():
        pytest.skip("kws model not found")
    assert main(["compile", str(model), "--target", "aarch64-linux-gnu", "--cpu", "cortex-a53", "-o",
                 str(tmp_path), "--name", "kws", "--no-shared"]) == 0
    assert (tmp_path / "kws.o").is_file() and (tmp_path / "kws.h").is_file()
    assert main(["compile", str(model), "--target", "x86_64-linux-gnu", "-o", str(tmp_path)]) == 2
    assert main(["compile", str(model), "-o", str(tmp_path)]) == 2
    assert main(["compile", str(model), "--target", "aarch64-linux-gnu", "--cpu", "pentium", "-o", str(tmp_path),
                 "--json"]) == 2


def test_cli_compile_json(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    import json

    import onnx

    from cnnjit.cli import main

    path = tmp_path / "mnv2.onnx"
    onnx.save(_mnv2(), str(path))
    assert main(["compile", str(path), "--target", "aarch64-linux-gnu", "-o", str(tmp_path / "b"), "--json",
                 "--no-shared"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["name"] == "mnv2" and doc["checks"]["elf_machine"] == "aarch64"
    assert doc["files"]["object"]["bytes"] > 0
