"""``cnnjit info`` reads models without the onnx package (``compiler/frontend/onnx_proto.py``): the same output,
byte for byte, as with onnx's own classes and helpers (onnx imported first), on small models that exercise
every storage the reader handles itself, on the shipped real models, and on malformed files (the same clear
error). The onnx-free run also shows that onnx was never imported."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import onnx
import pytest
from onnx import TensorProto, helper
from test_cli_info import symbolic_model, unsupported_model

import cnnjit
from cnnjit.cli import main as cli_main
from cnnjit.compiler.frontend import onnx_proto

#: ``cnnjit`` on each command line of a JSON list in one process, without onnx unless a model needs it: the
#: exit code, stdout, stderr, and whether onnx had been imported by then, per command line
_BATCH = """import contextlib, io, json, sys
from cnnjit.cli import main
out = []
for argv in json.loads(sys.argv[1]):
    o, e = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(o), contextlib.redirect_stderr(e):
        code = main(argv)
    out.append([code, o.getvalue(), e.getvalue(), 'onnx' in sys.modules])
print(json.dumps(out))"""


@dataclass
class Run:
    code: int
    stdout: str
    stderr: str
    onnx_imported: bool


def _both(cases: list[list[str | Path]], capsys: pytest.CaptureFixture, monkeypatch: pytest.MonkeyPatch
          ) -> list[Run]:
    """Run each ``cnnjit ARGS`` without onnx (a fresh process: the frontend's own reader) and with it (in this
    process, where onnx is imported: its classes and helpers); assert the same exit code, stdout and stderr."""
    monkeypatch.setenv("COLUMNS", "160")
    argvs = [[str(a) for a in c] for c in cases]
    r = subprocess.run([sys.executable, "-c", _BATCH, json.dumps(argvs)], capture_output=True, text=True,
                       timeout=600, env=dict(os.environ, COLUMNS="160"))
    assert r.returncode == 0, r.stderr
    ours = [Run(*row) for row in json.loads(r.stdout)]
    assert onnx_proto.BACKEND == "onnx"  # the test process imported onnx before cnnjit's frontend
    for argv, run in zip(argvs, ours):
        capsys.readouterr()
        code = cli_main(argv)
        out, err = capsys.readouterr()
        assert "Traceback" not in run.stderr and "internal error" not in run.stderr, (argv, run.stderr)
        assert (run.code, run.stdout, run.stderr) == (code, out, err), argv
    return ours


def _save(model: onnx.ModelProto, path: Path) -> Path:
    onnx.save(model, path)
    return path


def storage_model() -> onnx.ModelProto:
    """Weights in the typed fields instead of raw bytes (float_data, int32_data for float16 and bool,
    int64_data), a Constant node with a list attribute, a float attribute: what the reader decodes itself."""
    w = helper.make_tensor("w", TensorProto.FLOAT, [1, 3], [0.5, -1.0, 2.0], raw=False)
    h = helper.make_tensor("h", TensorProto.FLOAT16, [1, 3], [1.5, 0.25, -3.0], raw=False)
    m = helper.make_tensor("m", TensorProto.BOOL, [1, 3], [True, False, True], raw=False)
    s = helper.make_tensor("s", TensorProto.INT64, [2], [3, 2], raw=False)
    nodes = [helper.make_node("Constant", [], ["k"], value_floats=[0.1, 0.2, 0.3]),
             helper.make_node("Cast", ["h"], ["h32"], to=TensorProto.FLOAT),
             helper.make_node("Mul", ["x", "w"], ["a"]), helper.make_node("Add", ["a", "h32"], ["b"]),
             helper.make_node("Add", ["b", "k"], ["c"]), helper.make_node("Where", ["m", "c", "x"], ["d"]),
             helper.make_node("LeakyRelu", ["d"], ["e"], alpha=0.25), helper.make_node("Reshape", ["e"], ["y"])]
    nodes[-1].input.append("s")
    g = helper.make_graph(nodes, "storage", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 3])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, [3, 2])], [w, h, m, s])
    model = helper.make_model(g, opset_imports=[helper.make_opsetid("", 14)])
    model.ir_version = 8
    return model


def test_info_same_output_with_and_without_onnx(tmp_path: Path, capsys: pytest.CaptureFixture,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    storage = _save(storage_model(), tmp_path / "storage.onnx")
    symbolic = _save(symbolic_model(), tmp_path / "symbolic.onnx")
    # a bfloat16 input: a type the reader leaves to onnx (imported then, so it runs last), with the same result
    bf16 = storage_model()
    bf16.graph.input[0].type.tensor_type.elem_type = TensorProto.BFLOAT16
    runs = _both([["info", "--example"], ["info", "--example", "--json", "--shape", "input_1=2,49,10,1"],
                  ["info", storage, "--shape", "x=2,3"], ["info", symbolic],
                  ["info", symbolic, "--shape", "x=2,3,8,8", "--json"],
                  ["info", _save(unsupported_model(), tmp_path / "unsupported.onnx"), "--json"],
                  ["info", _save(bf16, tmp_path / "bf16.onnx")]], capsys, monkeypatch)
    assert [r.code for r in runs] == [0] * 7 and [r.onnx_imported for r in runs] == [False] * 6 + [True]
    assert "unsupported ops: none" in runs[0].stdout
    assert "FLOPs: 24 FLOP per run at x=2x3" in runs[2].stdout  # 2x3 Mul, Add, Add, LeakyRelu (Where: none)
    assert "parameters: 14 (11 in 4 initializers, 3 in 1 Constant nodes)" in runs[2].stdout
    assert "bfloat16" in runs[-1].stdout


def _malformed(tmp_path: Path) -> dict[str, Path]:
    """Broken files, each one a different check of the loader, the validator or the importer."""
    good = Path(cnnjit.example_model()).read_bytes()
    files = {"not_protobuf": b"\xff\xfe this is not an onnx model", "empty": b"", "truncated": good[: len(good) // 2]}
    no_graph = onnx.ModelProto(ir_version=8)
    no_graph.opset_import.add(version=13)
    files["no_graph"] = no_graph.SerializeToString()
    dangling = storage_model()
    dangling.graph.node[2].input[1] = "nowhere"
    short = storage_model()
    short.graph.initializer[0].float_data.pop()
    untyped = storage_model()
    untyped.graph.input[0].type.tensor_type.elem_type = TensorProto.UNDEFINED
    reference = storage_model()  # an attribute that refers to a function's attribute, outside a function
    reference.graph.node[6].attribute[0].ref_attr_name = "alpha"
    external = storage_model()
    t = external.graph.initializer[0]
    t.data_location = TensorProto.EXTERNAL
    t.external_data.add(key="location", value="missing.bin")
    del t.float_data[:]
    for name, m in [("dangling", dangling), ("short", short), ("untyped", untyped), ("reference", reference),
                    ("external", external)]:
        files[name] = m.SerializeToString()
    paths = {}
    for name, data in files.items():
        paths[name] = tmp_path / f"{name}.onnx"
        paths[name].write_bytes(data)
    return paths


#: what each broken file's one-line error (or, for the reference attribute, the FLOPs line) says
MALFORMED = {"not_protobuf": "is not a valid ONNX protobuf (DecodeError", "empty": "holds no ONNX graph",
             "truncated": "is not a valid ONNX protobuf", "no_graph": "holds no ONNX graph",
             "dangling": "input 1 'nowhere' is not produced by any node",
             "short": "needs 3 elements, the model stores 2",
             "untyped": "graph input 'x': unsupported element type 0",
             "reference": "cannot read attribute 'alpha': Cannot get value of reference attribute",
             "external": "external data file 'missing.bin' does not exist"}


def test_info_malformed_files_same_errors_with_and_without_onnx(tmp_path: Path, capsys: pytest.CaptureFixture,
                                                               monkeypatch: pytest.MonkeyPatch) -> None:
    paths = _malformed(tmp_path)
    cases = [["info", path, *(("--shape", "x=2,3") if name == "reference" else ()), *json_flag]
             for json_flag in ((), ("--json",)) for name, path in paths.items()]
    runs = _both(cases, capsys, monkeypatch)
    assert not any(r.onnx_imported for r in runs)
    for name, r, rj in zip(paths, runs, runs[len(paths):]):
        if name == "reference":  # described all the same; the FLOPs say why they could not be counted
            assert r.code == 0 and f"FLOPs: not counted: node '' (LeakyRelu, opset 14): {MALFORMED[name]}" \
                in " ".join(r.stdout.split()), r.stdout  # the line wrapped at 80 columns, joined
            assert rj.code == 0 and MALFORMED[name] in json.loads(rj.stdout)["flops_unavailable"]
            continue
        assert r.code == 1 and r.stdout == "", (name, r.stdout)
        assert r.stderr.startswith("cnnjit info: error: ") and MALFORMED[name] in r.stderr, (name, r.stderr)
        doc = json.loads(rj.stdout)
        assert doc["exit_code"] == 1 and doc["type"] == "ModelError" and MALFORMED[name] in doc["error"], doc


REAL = [("rapidocr_onnxruntime", "models/ch_ppocr_mobile_v2.0_cls_infer.onnx", ("--shape", "x=1,3,48,192")),
        ("rapidocr_onnxruntime", "models/ch_PP-OCRv4_rec_infer.onnx", ()),
        ("ddddocr", "common.onnx", ()), ("ddddocr", "common_det.onnx", ())]


def test_info_real_models_same_with_and_without_onnx(capsys: pytest.CaptureFixture,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    cases = []
    for package, rel, shape in REAL:
        spec = importlib.util.find_spec(package)
        path = Path(next(iter(spec.submodule_search_locations))) / rel if spec and spec.submodule_search_locations \
            else None
        if path is not None and path.is_file():
            cases += [["info", path, *shape]] + ([] if cases else [["info", path, *shape, "--json"]])
    if not cases:
        pytest.skip("neither rapidocr_onnxruntime nor ddddocr is installed")
    for r in _both(cases, capsys, monkeypatch):
        assert r.code == 0 and not r.onnx_imported, r.stderr
        assert "unsupported" in r.stdout and "flops" in r.stdout.lower()
