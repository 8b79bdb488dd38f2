"""The compiled-program cache (``runtime/native.py``, ``compiler/target/host.py``): a warm start without the
compiler that gives the JIT's results bit for bit, and refuses any entry it cannot trust.

Every test runs in its own cache folder (``CNNJIT_CACHE_DIR``), filled once per module by
``cnnjit.cache.warm`` on a small model with a symbolic batch dimension; the oracle is the JIT path of the
same model (compiled from its ``ModelProto``, which never takes the warm path) and a numpy reference.
"""

from __future__ import annotations

import hashlib
import json
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
from cnnjit.runtime import native
from cnnjit.runtime.model import BatchLoop
from cnnjit.runtime.native import NativeSpecialization

SHAPE = (1, 2, 6, 6)


def _model(scale: float = 1.0) -> onnx.ModelProto:
    """Conv 3x3 (2 -> 4 channels) + bias, Relu, Flatten, Gemm to 5 outputs, Sigmoid; batch symbolic."""
    rng = np.random.default_rng(7)
    w = (rng.standard_normal((4, 2, 3, 3)) * scale).astype(np.float32)
    b = rng.standard_normal(4).astype(np.float32)
    g = rng.standard_normal((4 * 4 * 4, 5)).astype(np.float32) * 0.2
    nodes = [helper.make_node("Conv", ["x", "w", "b"], ["c"], kernel_shape=[3, 3]),
             helper.make_node("Relu", ["c"], ["r"]),
             helper.make_node("Flatten", ["r"], ["f"], axis=1),
             helper.make_node("Gemm", ["f", "g"], ["z"]),
             helper.make_node("Sigmoid", ["z"], ["y"])]
    graph = helper.make_graph(nodes, "warm_test", [helper.make_tensor_value_info("x", TensorProto.FLOAT,
                                                                                 ["N", 2, 6, 6])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 5])],
                              [numpy_helper.from_array(w, "w"), numpy_helper.from_array(b, "b"),
                               numpy_helper.from_array(g, "g")])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def _reference(proto: onnx.ModelProto, x: np.ndarray) -> np.ndarray:
    """numpy, written apart from the kernels."""
    init = {t.name: numpy_helper.to_array(t) for t in proto.graph.initializer}
    w, b, g = init["w"], init["b"], init["g"]
    n = x.shape[0]
    c = np.zeros((n, 4, 4, 4), np.float64)
    for i in range(3):
        for j in range(3):
            c += np.einsum("nchw,oc->nohw", x[:, :, i:i + 4, j:j + 4].astype(np.float64), w[:, :, i, j])
    c += b[None, :, None, None]
    z = np.maximum(c, 0).reshape(n, -1) @ g
    return 1 / (1 + np.exp(-z))


@pytest.fixture(scope="module")
def filled(tmp_path_factory: pytest.TempPathFactory) -> dict:
    """A cache folder with the model warmed at SHAPE (kernels and compiled program)."""
    root = tmp_path_factory.mktemp("warm-cache")
    path = root / "model.onnx"
    onnx.save(_model(), path)
    old = os.environ.get("CNNJIT_CACHE_DIR")
    os.environ["CNNJIT_CACHE_DIR"] = str(root / "cache")
    try:
        cnnjit.cache.warm(str(path), input_shapes={"x": SHAPE})
    finally:
        if old is None:
            del os.environ["CNNJIT_CACHE_DIR"]
        else:
            os.environ["CNNJIT_CACHE_DIR"] = old
    return {"root": root, "path": path, "cache": root / "cache"}


@pytest.fixture()
def cache(filled: dict, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> dict:
    """A private copy of the filled cache (tests may damage it), set as CNNJIT_CACHE_DIR."""
    copy = tmp_path / "cache"
    shutil.copytree(filled["cache"], copy, symlinks=True)
    monkeypatch.setenv("CNNJIT_CACHE_DIR", str(copy))
    entries = sorted(copy.glob("native-*/*.json"))
    return {**filled, "cache": copy, "entries": entries}


def _x(seed: int = 0, n: int = 1) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal((n, *SHAPE[1:])).astype(np.float32)


def _is_warm(model: cnnjit.CompiledModel) -> bool:
    return isinstance(model._specs.get((SHAPE,)), NativeSpecialization)


def test_warm_start_is_bit_identical_to_the_jit(cache: dict):
    assert len(cache["entries"]) == 2  # keyed with the input shapes given and without them
    jit = cnnjit.compile(onnx.load(cache["path"]))  # a ModelProto never takes the warm path
    for kwargs in ({}, {"input_shapes": {"x": SHAPE}}):
        warm = cnnjit.compile(str(cache["path"]), **kwargs)
        assert _is_warm(warm)
        for seed in range(3):
            x = _x(seed)
            y = warm(x)
            assert y.dtype == np.float32 and y.shape == (1, 5)
            np.testing.assert_array_equal(y, jit(x))
            np.testing.assert_allclose(y, _reference(_model(), x), rtol=1e-4, atol=1e-5)
    # bytes take the same path; another batch size loops over the object (the model keeps samples apart)
    warm = cnnjit.compile(cache["path"].read_bytes())
    assert _is_warm(warm)
    x3 = _x(5, n=3)
    np.testing.assert_array_equal(warm(x3), jit(x3))
    loop = warm._specs[((3, *SHAPE[1:]),)]
    assert isinstance(loop, BatchLoop) and isinstance(loop.base, NativeSpecialization)


def test_warm_model_validates_inputs_and_keeps_the_api(cache: dict):
    warm = cnnjit.compile(str(cache["path"]))
    assert _is_warm(warm)
    with pytest.raises(cnnjit.InputError, match="dtype"):
        warm(_x().astype(np.float64))
    with pytest.raises(cnnjit.InputError, match="unknown input"):
        warm(z=_x())
    with pytest.raises(cnnjit.InputError, match="dimension 1 must be 2"):
        warm(np.zeros((1, 3, 6, 6), np.float32))
    x = np.asfortranarray(_x(3))  # not C-contiguous: copied at the boundary
    np.testing.assert_array_equal(warm(x), warm(np.ascontiguousarray(x)))
    assert warm.run(None, {"x": _x(1)})[0].shape == (1, 5)
    assert "def run" in warm.source()  # the full compiler, on demand
    clone = __import__("pickle").loads(__import__("pickle").dumps(warm))
    np.testing.assert_array_equal(clone(_x(2)), warm(_x(2)))


def _corrupt_object(entry: Path) -> None:
    obj = entry.with_suffix(".o")
    data = bytearray(obj.read_bytes())
    data[len(data) // 2] ^= 0x40
    obj.write_bytes(bytes(data))


def _edit_meta(entry: Path, **changes: object) -> None:
    meta = json.loads(entry.read_text())
    for k, v in changes.items():
        if k in meta["host"]:
            meta["host"][k] = v
        else:
            meta[k] = v
    entry.write_text(json.dumps(meta))


@pytest.mark.parametrize("damage", ["flipped byte", "wrong checksum", "other cpu", "other version",
                                    "other code", "truncated", "garbage metadata"])
def test_damaged_entries_are_refused_and_the_full_path_runs(cache: dict, damage: str):
    for entry in cache["entries"]:
        if damage == "flipped byte":
            _corrupt_object(entry)
        elif damage == "wrong checksum":
            _edit_meta(entry, object_sha256="0" * 64)
        elif damage == "other cpu":
            _edit_meta(entry, cpu="some-other-cpu")
        elif damage == "other version":
            _edit_meta(entry, cnnjit="0.0.0")
        elif damage == "other code":
            _edit_meta(entry, code="0" * 64)
        elif damage == "truncated":
            obj = entry.with_suffix(".o")
            obj.write_bytes(obj.read_bytes()[:1000])
        else:
            entry.write_text("{not json")
    model = cnnjit.compile(str(cache["path"]))
    assert not _is_warm(model)
    np.testing.assert_allclose(model(_x()), _reference(_model(), _x()), rtol=1e-4, atol=1e-5)


def test_changed_model_or_options_miss(cache: dict, tmp_path: Path):
    other = tmp_path / "other.onnx"
    onnx.save(_model(scale=2.0), other)  # same graph, other weights
    changed = cnnjit.compile(str(other))
    assert not _is_warm(changed)
    np.testing.assert_allclose(changed(_x()), _reference(_model(2.0), _x()), rtol=1e-4, atol=1e-5)
    assert not _is_warm(cnnjit.compile(str(cache["path"]), fuse=False))
    assert not _is_warm(cnnjit.compile(str(cache["path"]), input_shapes={"x": (2, 2, 6, 6)}))


def test_an_edited_compiler_misses(cache: dict, monkeypatch: pytest.MonkeyPatch):
    assert _is_warm(cnnjit.compile(str(cache["path"])))
    monkeypatch.setattr(native, "code_digest", lambda: "f" * 64)  # what editing compiler/ at one version does
    model = cnnjit.compile(str(cache["path"]))
    assert not _is_warm(model)
    np.testing.assert_allclose(model(_x()), _reference(_model(), _x()), rtol=1e-4, atol=1e-5)


def _tree(base: Path) -> None:
    for rel, text in (("compiler/a.py", "A = 1\n"), ("compiler/sub/b.py", "B = 2\n"), ("ir/c.py", "C = 3\n"),
                      ("runtime/d.py", "D = 4\n"), ("runtime/notes.txt", "not source\n")):
        (base / rel).parent.mkdir(parents=True, exist_ok=True)
        (base / rel).write_text(text)


def _read_tree_digest(base: Path) -> str:
    """The digest from the files' bytes, written apart from ``native``'s stats and memo."""
    h = hashlib.sha256()
    for package in ("compiler", "ir", "runtime"):
        for path in sorted((base / package).rglob("*.py")):
            h.update(f"{path.relative_to(base)}\0".encode())
            h.update(path.read_bytes())
    return h.hexdigest()


def test_code_digest_is_the_sources_digest():
    base = Path(native.__file__).resolve().parent.parent
    native.code_digest.cache_clear()
    try:
        assert native.code_digest() == _read_tree_digest(base)
    finally:
        native.code_digest.cache_clear()


def test_code_digest_memo_never_outlives_an_edit(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    base, memo = tmp_path / "src", tmp_path / "root" / "code-digest"
    _tree(base)
    # files that changed within RACY_STATS_S: the digest is right and not remembered
    assert native.tree_digest(base, memo) == _read_tree_digest(base)
    assert not memo.exists()
    # later: remembered, and a warm start reads the memo instead of the files
    later = native.time.time() + 2 * native.RACY_STATS_S
    monkeypatch.setattr(native.time, "time", lambda: later)
    first = native.tree_digest(base, memo)
    assert first == _read_tree_digest(base) and len(list(memo.iterdir())) == 1
    with monkeypatch.context() as m:
        m.setattr(native, "_read_digest", lambda *a: pytest.fail("the memo was not used"))
        assert native.tree_digest(base, memo) == first
    # an edit that keeps the size and modification time still changes the change time: read again
    f = base / "ir" / "c.py"
    st = f.stat()
    f.write_text("C = 9\n")
    os.utime(f, ns=(st.st_atime_ns, st.st_mtime_ns))
    edited = native.tree_digest(base, memo)
    assert edited == _read_tree_digest(base) != first
    # a file added or removed, and a memo that is not a digest: read again
    (base / "runtime" / "e.py").write_text("E = 5\n")
    assert native.tree_digest(base, memo) == _read_tree_digest(base) != edited
    (base / "runtime" / "e.py").unlink()
    for p in memo.iterdir():
        p.write_text("0" * 63 + "g")
    assert native.tree_digest(base, memo) == edited


def test_entry_of_another_user_or_a_link_is_refused(cache: dict):
    entry = cache["entries"][0]
    obj = entry.with_suffix(".o")
    target = obj.with_name("elsewhere.o")
    obj.rename(target)
    obj.symlink_to(target)
    with pytest.raises(native.Miss, match="not a regular file"):
        native._read_ours(obj)


def test_a_warm_process_imports_neither_onnx_nor_numba(cache: dict):
    code = ("import sys, numpy as np, cnnjit\n"
            f"m = cnnjit.compile({str(cache['path'])!r})\n"
            f"y = m(np.ones({SHAPE!r}, np.float32))\n"
            "z = m(np.ones((4, 2, 6, 6), np.float32))\n"
            "assert (z == y).all()\n"
            "print(type(m._specs[((1, 2, 6, 6),)]).__name__, type(m._last).__name__, y.shape, z.shape,"
            " sorted(k for k in ('onnx', 'numba', 'rich', 'cnnjit.compiler') if k in sys.modules))\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         env={**os.environ, "CNNJIT_CACHE_DIR": str(cache["cache"])}).stdout.strip()
    assert out == "NativeSpecialization BatchLoop (1, 5) (4, 5) []", out


def test_import_cnnjit_is_light():
    code = ("import sys, cnnjit\n"
            "print(sorted(k for k in ('onnx', 'numba', 'llvmlite.binding', 'rich', 'cnnjit.compiler') "
            "if k in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip()
    assert out == "[]", out
    assert callable(cnnjit.quantize) and cnnjit.PrunedModel.__name__ == "PrunedModel"  # lazy names resolve


def _cli(*args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "cnnjit", *args], capture_output=True, text=True,
                          env={**os.environ, **(env or {})})


def test_cli_warm_reports_the_stored_program(cache: dict):
    env = {"CNNJIT_CACHE_DIR": str(cache["cache"])}
    r = _cli("warm", str(cache["path"]), "--shape", "x=1,2,6,6", "--json", env=env)
    assert r.returncode == 0, r.stderr
    program = Path(json.loads(r.stdout)["program"])
    assert program.is_file() and program.with_suffix(".json") in cache["entries"]
    r = _cli("warm", str(cache["path"]), "--shape", "x=1,2,6,6", "--no-program", "--json", env=env)
    assert r.returncode == 0 and json.loads(r.stdout)["program"] is None, r.stderr


def test_cli_info_imports_no_compiler_backend(cache: dict):
    code = ("import sys\nfrom cnnjit.cli import main\n"
            f"code = main(['info', {str(cache['path'])!r}, '--json'])\n"
            "print(code, sorted(k for k in ('numba', 'rich', 'llvmlite.binding', 'onnx', 'ml_dtypes') "
            "if k in sys.modules))")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert r.stdout.strip().splitlines()[-1] == "0 []", r.stdout + r.stderr
    assert json.loads("\n".join(r.stdout.strip().splitlines()[:-1]))["flops"] > 0
