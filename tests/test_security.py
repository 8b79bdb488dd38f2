"""Security (issue 10): no code injection from model text, external data confined to the model's folder,
and the kernel cache's integrity (tampered or corrupt files are detected and rebuilt, never run).

Each protection has at least one test here that fails when the protection is removed. Models come from
``reliability_models.py``; onnxruntime is the oracle where values matter.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

import llvmlite
import numba
import numpy as np
import onnx
import pytest
from conftest import ort_session
from onnx import TensorProto, helper
from reliability_models import ATOL, RTOL, assert_names_node, conv_model, x_in

import cnnjit
from cnnjit.compiler.codegen import build

SENTINEL = "/tmp/cnnjit_injection_sentinel"

PAYLOADS = [
    f"__import__('pathlib').Path('{SENTINEL}').touch()",
    f"x'); __import__('pathlib').Path('{SENTINEL}').touch() #",
    f'"""; __import__("pathlib").Path("{SENTINEL}").touch() #',
    "\nimport os; os._exit(41)\n",
    "{__import__('os')._exit(42)}",
    "int main(void) { system(\"rm -rf ~\"); return 0; } /*",
    "\\x00'\"\\\n#",
]
FRAGMENTS = ["__import__", "os._exit", "pathlib", "system(", "int main", SENTINEL]


# == 1. no code injection ======================================================================================
@pytest.mark.parametrize("payload", PAYLOADS)
def test_hostile_names_never_reach_generated_source(payload):
    if os.path.exists(SENTINEL):
        os.unlink(SENTINEL)
    names = [f"{payload}#{i}" for i in range(16)]
    proto = conv_model(names=names, text=payload)
    m = cnnjit.compile(proto)
    want = ort_session(conv_model()).run(None, {"X": x_in()})[0]
    np.testing.assert_allclose(m(x_in()), want, rtol=RTOL, atol=ATOL)
    assert m.input_names == [names[0]] and m.output_names == [names[9]]
    program = m.specialization({names[0]: (2, 3, 6, 6)}).program
    texts = [m.source(), program.source]
    for src in program.kernel_sources.values():
        texts.append(build.module_text(src))
        texts.append((build.cache_dir() / f"k_{build.source_key(src)}.py").read_text())
    assert len(texts) > 4
    for text in texts:
        assert payload not in text
        for frag in FRAGMENTS:
            assert frag not in text, f"{frag!r} reached generated source"
    assert not os.path.exists(SENTINEL), "a payload ran"


def test_hostile_attribute_strings_are_errors_not_code():
    for payload in PAYLOADS:
        proto = conv_model()
        proto.graph.node[0].attribute.append(helper.make_attribute("auto_pad", payload))
        with pytest.raises(cnnjit.CnnjitError) as e:
            cnnjit.compile(proto)
        assert_names_node(e.value, "conv")
    assert not os.path.exists(SENTINEL)


def test_tampered_kernel_module_is_not_executed(tmp_path, monkeypatch):
    """A kernel module file replaced in the cache is detected (content differs) and rewritten; its code
    never runs."""
    monkeypatch.setenv("CNNJIT_CACHE_DIR", str(tmp_path))
    build._dirs.clear()
    src = "def kernel(xb, xo, n):\n    for i in range(n):\n        xb[xo + i] = 7.25 + i\n"
    key = build.source_key(src)
    path = build.cache_dir() / f"k_{key}.py"
    path.write_text(f"__import__('pathlib').Path({str(tmp_path / 'pwned')!r}).touch()\n"
                    "def kernel(xb, xo, n):\n    pass\n")
    build._loaded.pop(key, None)
    k = build.load_kernel(src)
    assert not (tmp_path / "pwned").exists(), "the tampered module ran"
    assert path.read_text() == build.module_text(src), "the tampered module was not rewritten"
    buf = np.zeros(4, np.float32)
    k(buf, 1, 2)
    assert buf.tolist() == [0, 7.25, 8.25, 0]


# == 2. external data ===========================================================================================
def _save_external(tmp_path: Path, location: str = "weights.bin") -> Path:
    d = tmp_path / "model"
    d.mkdir(exist_ok=True)
    path = d / "m.onnx"
    onnx.save_model(conv_model(), str(path), save_as_external_data=True, all_tensors_to_one_file=True,
                    location=location, size_threshold=0)
    return path


def _set_location(path: Path, location: str, **extra: str) -> None:
    m = onnx.load(str(path), load_external_data=False)
    for t in m.graph.initializer:
        for kv in t.external_data:
            if kv.key == "location":
                kv.value = location
            elif kv.key in extra:
                kv.value = extra[kv.key]
    path.write_bytes(m.SerializeToString())


def test_external_data_loads_inside_model_dir(tmp_path):
    path = _save_external(tmp_path)
    raw = onnx.load(str(path), load_external_data=False)
    assert all(t.data_location == TensorProto.EXTERNAL for t in raw.graph.initializer)
    want = ort_session(conv_model()).run(None, {"X": x_in()})[0]
    np.testing.assert_allclose(cnnjit.compile(path)(x_in()), want, rtol=RTOL, atol=ATOL)
    np.testing.assert_allclose(cnnjit.compile(str(path))(x_in()), want, rtol=RTOL, atol=ATOL)
    # a ModelProto that still refers to external data is not modified (and has no folder to read from)
    before = raw.SerializeToString()
    with pytest.raises(cnnjit.ModelError, match="external data"):
        cnnjit.compile(raw)
    assert raw.SerializeToString() == before
    with pytest.raises(cnnjit.ModelError, match="external data"):
        cnnjit.compile(path.read_bytes())


def test_external_data_dotdot_refused(tmp_path):
    path = _save_external(tmp_path)
    # a perfectly good data file one level up: only the path rule stops it from being read
    (tmp_path / "weights.bin").write_bytes((path.parent / "weights.bin").read_bytes())
    _set_location(path, "../weights.bin")
    with pytest.raises(cnnjit.ModelError, match=r"\.\."):
        cnnjit.compile(path)
    _set_location(path, "sub/../../weights.bin")
    with pytest.raises(cnnjit.ModelError, match=r"\.\."):
        cnnjit.compile(path)


def test_external_data_absolute_path_refused(tmp_path):
    path = _save_external(tmp_path)
    _set_location(path, str(path.parent / "weights.bin"))  # absolute, even though it is inside the folder
    with pytest.raises(cnnjit.ModelError, match="relative"):
        cnnjit.compile(path)


def test_external_data_symlink_out_refused(tmp_path):
    path = _save_external(tmp_path)
    outside = tmp_path / "outside.bin"
    outside.write_bytes((path.parent / "weights.bin").read_bytes())
    os.symlink(outside, path.parent / "link.bin")
    _set_location(path, "link.bin")
    with pytest.raises(cnnjit.ModelError, match="outside"):
        cnnjit.compile(path)
    os.symlink(tmp_path, path.parent / "dirlink")
    _set_location(path, "dirlink/outside.bin")
    with pytest.raises(cnnjit.ModelError, match="outside"):
        cnnjit.compile(path)


def test_external_data_sizes_checked(tmp_path):
    path = _save_external(tmp_path)
    data = path.parent / "weights.bin"
    full = data.read_bytes()
    data.write_bytes(full[:-8])  # truncated file
    with pytest.raises(cnnjit.ModelError, match="truncated|beyond the end"):
        cnnjit.compile(path)
    data.write_bytes(full)
    m = onnx.load(str(path), load_external_data=False)
    kv = next(kv for kv in m.graph.initializer[0].external_data if kv.key == "length")
    kv.value = str(int(kv.value) - 4)  # declared length disagrees with the tensor's shape
    path.write_bytes(m.SerializeToString())
    with pytest.raises(cnnjit.ModelError, match="length"):
        cnnjit.compile(path)
    for bad in ("-4", "abc"):
        kv.value = bad
        path.write_bytes(m.SerializeToString())
        with pytest.raises(cnnjit.ModelError):
            cnnjit.compile(path)


def test_external_data_missing_file(tmp_path):
    path = _save_external(tmp_path)
    _set_location(path, "nope.bin")
    with pytest.raises(cnnjit.ModelError, match="does not exist"):
        cnnjit.compile(path)


# == 3. cache integrity ===========================================================================================
def test_cache_key_covers_versions_and_cpu(monkeypatch):
    base = build.cache_key()
    for obj, attr, value in [(numba, "__version__", "0.0.0"), (llvmlite, "__version__", "0.0.0"),
                             (cnnjit._version, "__version__", "999.0")]:
        with monkeypatch.context() as mp:
            mp.setattr(obj, attr, value)
            assert build.cache_key() != base, f"cache key ignores {obj.__name__}.{attr}"
    with monkeypatch.context() as mp:
        mp.setattr(build, "_host_cpu", lambda: ("some-other-cpu", "+avx2"))
        assert build.cache_key() != base
    with monkeypatch.context() as mp:
        name = build._host_cpu()[0]
        mp.setattr(build, "_host_cpu", lambda: (name, "-avx512f"))
        assert build.cache_key() != base
    assert build.cache_key() == base
    assert base in build.cache_dir().name


def test_cache_key_covers_the_intrinsics_code(tmp_path, monkeypatch):
    """A kernel's source names its intrinsics (``vsilu8``...) only: an edit to their code changes the key."""
    base = build.cache_key()
    for name in build.INTRINSIC_MODULES:
        copy = tmp_path / name
        copy.write_bytes(Path(build.__file__).with_name(name).read_bytes())
    edited = tmp_path / "simd_math.py"
    edited.write_bytes(edited.read_bytes() + b"\n# edited\n")
    monkeypatch.setattr(build, "__file__", str(tmp_path / "build.py"))
    assert build.cache_key() != base
    edited.write_bytes(Path(__file__).parents[1].joinpath("compiler", "codegen", "simd_math.py").read_bytes())
    assert build.cache_key() == base  # the same code again: the same key


def test_cache_dir_is_private(tmp_path, monkeypatch):
    fresh = tmp_path / "fresh" / "cache"
    monkeypatch.setenv("CNNJIT_CACHE_DIR", str(fresh))
    build._dirs.clear()
    d = build.cache_dir()
    assert stat.S_IMODE(fresh.stat().st_mode) == 0o700
    assert stat.S_IMODE(d.stat().st_mode) == 0o700
    # an existing, too-open kernel folder is tightened
    os.chmod(d, 0o777)
    build._dirs.clear()
    assert stat.S_IMODE(build.cache_dir().stat().st_mode) == 0o700
    build._dirs.clear()


def test_corrupt_kernel_module_rewritten(tmp_path, monkeypatch):
    monkeypatch.setenv("CNNJIT_CACHE_DIR", str(tmp_path))
    build._dirs.clear()
    src = "def kernel(xb, xo, n):\n    for i in range(n):\n        xb[xo + i] = 3.5\n"
    key = build.source_key(src)
    build._loaded.pop(key, None)
    build.load_kernel(src)
    path = build.cache_dir() / f"k_{key}.py"
    for corrupt in (path.read_bytes()[:40], b"\xff\xfe garbage \x00", b""):
        path.write_bytes(corrupt)
        build._loaded.pop(key, None)
        k = build.load_kernel(src)
        assert path.read_text() == build.module_text(src)
        buf = np.zeros(3, np.float32)
        k(buf, 0, 3)
        assert buf.tolist() == [3.5] * 3
    build._dirs.clear()


def test_corrupt_numba_cache_rebuilt(tmp_path, monkeypatch):
    """Damaged numba cache files (index and data: truncated, one flipped bit, garbage) are detected,
    deleted and rebuilt: the kernel is recompiled (not loaded) and computes the right result, and the
    next load hits the repaired cache."""
    monkeypatch.setenv("CNNJIT_CACHE_DIR", str(tmp_path))
    build._dirs.clear()
    src = "def kernel(xb, xo, n):\n    for i in range(n):\n        xb[xo + i] = xb[xo + i] * 2.0 + 1.0\n"
    key = build.source_key(src)

    def fresh_load():
        build._loaded.pop(key, None)
        k = build.load_kernel(src)
        buf = np.arange(4, dtype=np.float64)
        k(buf, 1, 2)
        assert buf.tolist() == [0, 3, 5, 3]
        return sum(k.stats.cache_hits.values()), sum(k.stats.cache_misses.values())

    assert fresh_load() == (0, 1)
    assert fresh_load() == (1, 0)  # the cache works
    pycache = build.cache_dir() / "__pycache__"
    rng = np.random.default_rng(0)
    for damage in ("flip", "truncate", "garbage", "flip-index"):
        files = sorted(p for p in pycache.glob(f"k_{key}.*") if p.suffix in (".nbi", ".nbc"))
        assert len(files) == 2, files
        for p in files:
            if damage == "flip-index" and p.suffix != ".nbi":
                continue
            data = bytearray(p.read_bytes())
            if damage.startswith("flip"):
                data[int(rng.integers(40, len(data)))] ^= 0x10
            elif damage == "truncate":
                data = data[: len(data) // 2]
            else:
                data = bytearray(rng.integers(0, 256, 64, dtype=np.uint8).tobytes())
            p.write_bytes(bytes(data))
        assert fresh_load() == (0, 1), f"a {damage} cache entry was used"
        assert fresh_load() == (1, 0), f"the cache was not rebuilt after {damage}"
    build._dirs.clear()
