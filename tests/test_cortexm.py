"""The Cortex-M target: int8 MLPerf Tiny models compiled for a Cortex-M4 (keyword spotting), a Cortex-M7
(ResNet-8) and a Cortex-M55 with MVE (anomaly detection), linked with the generated bare-metal harness and run
in ``qemu-system-arm -M mps2-an386`` / ``mps2-an500`` / ``mps3-an547``, bit-exact with the host build, within
the RAM and flash budgets of issue 21 (RAM: arena + measured stack <= 0.8x TensorFlow Lite Micro's arena; flash
<= 1.2x the weights + 32 KiB).

Needs ``gcc-arm-none-eabi`` and ``qemu-system-arm`` (.ci/run installs them); the run skips without them.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
from conftest import MLPERF_TINY_DIR

import cnnjit
from cnnjit.compiler.target import TargetError, compile_for_target
from cnnjit.compiler.target.aarch64 import elf_info
from cnnjit.compiler.target.cortexm import ALLOWED, parse_m_target

HAVE_TOOLS = all(shutil.which(t) for t in ("qemu-system-arm", "arm-none-eabi-gcc"))
KWS8 = MLPERF_TINY_DIR / "kws_ref_model.tf2onnx.onnx"
TFLM_ARENA_KWS = 24272  # TensorFlow Lite Micro's arena for the keyword model (issue 21)
RESNET8 = MLPERF_TINY_DIR / "pretrainedResnet_quant.tf2onnx.onnx"
TFLM_ARENA_RESNET = 55984  # and for ResNet-8
AD8 = MLPERF_TINY_DIR / "ad01_int8.tf2onnx.onnx"


needs_tools = pytest.mark.skipif(not HAVE_TOOLS, reason="qemu-system-arm / arm-none-eabi-gcc not installed "
                                 "(apt-get install qemu-system-arm gcc-arm-none-eabi)")


@needs_tools
def test_kws_int8_on_cortex_m4(tmp_path: Path) -> None:
    if not KWS8.is_file():
        pytest.skip(f"{KWS8} not found (set CNNJIT_SHARED)")
    art = cnnjit.compile(str(KWS8), target="thumbv7em-none-eabihf", cpu="cortex-m4")
    info = elf_info(art.object)
    assert info["machine"] == 40 and info["defined"] == ["kws_ref_model_run"]
    assert all(ALLOWED.fullmatch(s) for s in info["undefined"]), info["undefined"]
    assert f"#define KWS_REF_MODEL_ARENA_BYTES {art.scratch_bytes}u" in art.header
    assert "\tsmlad\t" in art.asm  # the byte dot products on the DSP extension
    art.save(tmp_path)
    elf = art.link(tmp_path)
    x = np.random.default_rng(2).integers(-128, 128, art.inputs[0].shape).astype(np.int8)
    x.tofile(tmp_path / "in0.bin")
    r = subprocess.run(art.qemu_command(str(tmp_path)), cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, (r.stdout, r.stderr)
    m = re.search(r"arena (\d+) stack (\d+) status 0", r.stdout)
    assert m, r.stdout
    got = np.fromfile(tmp_path / "out0.bin", np.int8)
    np.testing.assert_array_equal(got, cnnjit.compile(str(KWS8))(x).ravel())
    arena, stack = int(m.group(1)), int(m.group(2))
    assert arena == art.scratch_bytes and 0 < stack < 16384
    assert arena + stack <= 0.8 * TFLM_ARENA_KWS, (arena, stack)
    size = subprocess.run(["arm-none-eabi-size", "-A", str(elf)], capture_output=True, text=True).stdout
    flash = sum(int(v) for k, v in re.findall(r"^(\.text|\.ARM\.exidx|\.data)\s+(\d+)", size, re.M))
    assert flash <= 1.2 * art.weight_bytes + 32 * 1024, (flash, art.weight_bytes)
    # a wrong-size input file is refused by the harness
    x[:, :10].tofile(tmp_path / "in0.bin")
    r = subprocess.run(art.qemu_command(str(tmp_path)), cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert r.returncode == 2 and "in0.bin: needs exactly this many bytes: 490" in r.stdout


@needs_tools
def test_extreme_bytes_exact_on_cortex_m4(tmp_path: Path) -> None:
    """uint8 x int8 products at the ends of their ranges (dense and depthwise) through the smlad byte pairs."""
    from test_arm import extreme_qdq_model

    model, x = extreme_qdq_model()
    want = cnnjit.compile(model)(x)
    art = compile_for_target(model, target="thumbv7em-none-eabihf", cpu="cortex-m4", name="extreme")
    assert "\tsmlad\t" in art.asm
    art.save(tmp_path)
    art.link(tmp_path)
    x.tofile(tmp_path / "in0.bin")
    r = subprocess.run(art.qemu_command(str(tmp_path)), cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0 and "status 0" in r.stdout, (r.stdout, r.stderr)
    for i, w in enumerate(want):
        np.testing.assert_array_equal(np.fromfile(tmp_path / f"out{i}.bin", np.int8).reshape(w.shape), w)


def _run_in_qemu(art, folder: Path, x: np.ndarray) -> tuple[np.ndarray, int, int, int]:
    """Save, link and run ``art`` on ``x`` in its qemu board: (output bytes, arena, stack, flash bytes)."""
    art.save(folder)
    elf = art.link(folder)
    x.tofile(folder / "in0.bin")
    r = subprocess.run(art.qemu_command(str(folder)), cwd=folder, capture_output=True, text=True, timeout=300)
    m = re.search(r"arena (\d+) stack (\d+) status 0", r.stdout)
    assert r.returncode == 0 and m, (r.stdout, r.stderr)
    size = subprocess.run(["arm-none-eabi-size", "-A", str(elf)], capture_output=True, text=True).stdout
    flash = sum(int(v) for k, v in re.findall(r"^(\.text|\.ARM\.exidx|\.data)\s+(\d+)", size, re.M))
    return np.fromfile(folder / "out0.bin", art.outputs[0].dtype), int(m.group(1)), int(m.group(2)), flash


@needs_tools
def test_resnet_int8_on_cortex_m7(tmp_path: Path) -> None:
    """ResNet-8 on a Cortex-M7 (FPv5, qemu mps2-an500): bit-exact, and within issue 21's RAM budget thanks to the
    memory plan's sharing (the residual Add in place, each convolution's output trailing its dying input)."""
    if not RESNET8.is_file():
        pytest.skip(f"{RESNET8} not found (set CNNJIT_SHARED)")
    art = cnnjit.compile(str(RESNET8), target="thumbv7em-none-eabihf", cpu="cortex-m7")
    assert "-mfpu=fpv5-d16" in art.gcc_flags and "mps2-an500" in art.qemu_command()
    x = np.random.default_rng(3).integers(-128, 128, art.inputs[0].shape).astype(np.int8)
    got, arena, stack, flash = _run_in_qemu(art, tmp_path, x)
    np.testing.assert_array_equal(got, cnnjit.compile(str(RESNET8))(x).ravel())
    assert arena == art.scratch_bytes and 0 < stack < 16384
    assert arena + stack <= 0.8 * TFLM_ARENA_RESNET, (arena, stack)
    assert flash <= 1.2 * art.weight_bytes + 32 * 1024, (flash, art.weight_bytes)


@needs_tools
def test_anomaly_int8_on_cortex_m55_mve(tmp_path: Path) -> None:
    """The anomaly-detection autoencoder on a Cortex-M55 (ARMv8.1-M, qemu mps3-an547): its kernels use MVE's
    128-bit vectors (q registers), and the output equals the host build's."""
    if not AD8.is_file():
        pytest.skip(f"{AD8} not found (set CNNJIT_SHARED)")
    art = cnnjit.compile(str(AD8), target="thumbv8.1m.main-none-eabihf", cpu="cortex-m55")
    assert "mps3-an547" in art.qemu_command()
    assert re.search(r"\tvadd\.i32\tq\d", art.asm) and re.search(r"\tvmul\.f32\tq\d", art.asm)
    x = np.random.default_rng(4).integers(-128, 128, art.inputs[0].shape).astype(np.int8)
    got, arena, stack, flash = _run_in_qemu(art, tmp_path, x)
    np.testing.assert_array_equal(got, cnnjit.compile(str(AD8))(x).ravel())
    assert arena == art.scratch_bytes and 0 < stack < 16384


@pytest.mark.parametrize("target,cpu,word", [("thumbv6m-none-eabi", "cortex-m0", "thumbv7em-none-eabihf"),
                                             ("thumbv7em-none-eabihf", "cortex-m99", "cortex-m4"),
                                             ("thumbv7em-none-eabihf", "cortex-m55", "thumbv8.1m.main")])
def test_bad_cortex_m_targets(target: str, cpu: str, word: str) -> None:
    with pytest.raises(TargetError) as e:
        parse_m_target(target, cpu)
    assert word in str(e.value)


def test_ram_budget_refused_before_lowering() -> None:
    if not KWS8.is_file():
        pytest.skip(f"{KWS8} not found")
    with pytest.raises(TargetError) as e:
        compile_for_target(str(KWS8), target="thumbv7em-none-eabihf", cpu="cortex-m4", ram=1000)
    assert "over the RAM budget of 1000 bytes" in str(e.value) and e.value.kind == "usage"


def test_cli_ram_budget(capsys: pytest.CaptureFixture, tmp_path: Path) -> None:
    from cnnjit.cli import main

    if not KWS8.is_file():
        pytest.skip(f"{KWS8} not found")
    assert main(["compile", str(KWS8), "--target", "thumbv7em-none-eabihf", "--cpu", "cortex-m4", "-o",
                 str(tmp_path), "--ram", "1000"]) == 2
    assert "RAM budget" in capsys.readouterr().err
