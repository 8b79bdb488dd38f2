"""Whole models compiled by cnnjit, against independent oracles.

* ``light_*``: the onnx wheel's nine model-zoo models (weights made by ConstantOfShape), fed the input onnx's
  backend runner feeds them, compared with the expected output shipped next to each model, with onnx's own
  per-model tolerances. All but squeezenet and shufflenet are marked ``slow`` (they still run by default;
  deselect them with ``-m "not slow"``).
* ``pytorch_*``: the onnx wheel's pytorch-converted cases for convolutions, batch norm, pooling, dense
  layers and activations (expected outputs from PyTorch). They are opset 6 models; cnnjit supports opset 7+,
  so they are upgraded with ``onnx.version_converter`` first, as cnnjit's own error message advises.
* ``mlperf_*``: the float MLPerf Tiny models on 20 seeded random inputs each, against onnxruntime.

Cases expected to fail for now are listed in ``onnx_node_expectations.MODEL_NOT_YET`` (by test id).
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import onnx
import pytest
from conftest import (
    MLPERF_TINY_DIR,
    ONNX_TEST_DATA_DIR,
    assert_outputs_match,
    graph_input_names,
    load_case,
    load_tensor,
    missing_reason,
    ort_session,
)
from onnx import version_converter
from onnx_node_expectations import MODEL_NOT_YET, OPS_UNDER_TEST

import cnnjit


def _param(value, test_id: str, *marks):
    marks = list(marks)
    if test_id in MODEL_NOT_YET:
        marks.append(pytest.mark.xfail(strict=True, reason=MODEL_NOT_YET[test_id]))
    return pytest.param(value, id=test_id, marks=marks)


def _missing(path: Path, what: str):
    skip = pytest.mark.skip(reason=missing_reason(path, what))
    return [pytest.param(None, id=f"{what}-missing", marks=skip)]


# =========================================================================================================
# onnx model zoo "light" models
# =========================================================================================================
LIGHT_DIR = ONNX_TEST_DATA_DIR / "light"
#: (model name, rtol, atol) exactly as onnx/backend/test/case/model/__init__.py lists them
LIGHT_MODELS = [
    ("bvlc_alexnet", 1e-3, 1e-7),
    ("densenet121", 2e-3, 1e-7),
    ("inception_v1", 1e-3, 1e-7),
    ("inception_v2", 1e-3, 1e-7),
    ("resnet50", 1e-3, 1e-7),
    ("shufflenet", 1e-3, 1e-7),
    ("squeezenet", 1e-3, 1e-7),
    ("vgg19", 1e-3, 1e-7),
    ("zfnet512", 1e-3, 1e-7),
]
LIGHT_FAST = {"squeezenet", "shufflenet"}


def light_dummy_input(vi: onnx.ValueInfoProto) -> np.ndarray:
    """The input onnx's backend runner feeds these models (``Runner.generate_dummy_data``, random=False)."""
    assert vi.type.tensor_type.elem_type == onnx.TensorProto.FLOAT
    shape = tuple(d.dim_value if d.HasField("dim_value") else 1 for d in vi.type.tensor_type.shape.dim)
    n = np.prod(shape)
    return (np.arange(n).reshape(shape) / n).astype(np.float32)


def _light_params():
    if not LIGHT_DIR.is_dir():
        return _missing(LIGHT_DIR, "onnx-light-models")
    out = []
    for name, rtol, atol in LIGHT_MODELS:
        marks = [] if name in LIGHT_FAST else [pytest.mark.slow]
        out.append(_param((name, rtol, atol), f"light_{name}", *marks))
    return out


@pytest.mark.timeout(900)
@pytest.mark.parametrize("spec", _light_params())
def test_light_model(spec) -> None:
    name, rtol, atol = spec
    path = LIGHT_DIR / f"light_{name}.onnx"
    proto = onnx.load(str(path))
    inits = {t.name for t in proto.graph.initializer}
    real_inputs = [vi for vi in proto.graph.input if vi.name not in inits]
    assert len(real_inputs) == 1, f"{name}: expected one graph input, got {[vi.name for vi in real_inputs]}"
    x = light_dummy_input(real_inputs[0])
    n_out = len(proto.graph.output)
    expected = [load_tensor(LIGHT_DIR / f"light_{name}_output_{i}.pb") for i in range(n_out)]
    del proto

    model = cnnjit.compile(path)
    outs = model.run(None, {real_inputs[0].name: x})
    assert_outputs_match(list(outs), expected, rtol, atol, what=f"light_{name}")


# =========================================================================================================
# pytorch-converted cases from the onnx wheel
# =========================================================================================================
PYTORCH_DIR = ONNX_TEST_DATA_DIR / "pytorch-converted"
#: which cases: convolutions, batch norm, pooling, dense layers, activations, softmax, padding, pixel shuffle
PYTORCH_CASES = re.compile(
    r"test_(Conv.*|BatchNorm.*|AvgPool.*|MaxPool.*|ReLU|Linear.*|LeakyReLU.*|Sigmoid|Tanh|Softmax"
    r"|softmax_.*|ConstantPad2d|ReflectionPad2d|ReplicationPad2d|ZeroPad2d|PixelShuffle)"
)
#: onnx's loader: rtol 1e-3, atol 1e-7 unless a case's data.json says otherwise (none of these does)
PYTORCH_RTOL, PYTORCH_ATOL = 1e-3, 1e-7


def _pytorch_params():
    if not PYTORCH_DIR.is_dir():
        return _missing(PYTORCH_DIR, "pytorch-converted-cases")
    out = []
    for d in sorted(PYTORCH_DIR.iterdir()):
        if not (d / "model.onnx").is_file() or not PYTORCH_CASES.fullmatch(d.name):
            continue
        ops = {n.op_type for n in onnx.load(str(d / "model.onnx"), load_external_data=False).graph.node}
        if OPS_UNDER_TEST is not None and not ops <= OPS_UNDER_TEST:
            continue  # e.g. ConvTranspose: not in scope yet (widen OPS_UNDER_TEST to collect it)
        out.append(_param(d, f"pytorch_{d.name}"))
    return out


def _tolerances(case_dir: Path) -> tuple[float, float]:
    rtol, atol = PYTORCH_RTOL, PYTORCH_ATOL
    data_json = case_dir / "data.json"
    if data_json.is_file():
        import json

        data = json.loads(data_json.read_text())
        rtol, atol = data.get("rtol", rtol), data.get("atol", atol)
    return rtol, atol


@pytest.mark.parametrize("case_dir", _pytorch_params())
def test_pytorch_converted(case_dir: Path) -> None:
    model_path, inputs, expected = load_case(case_dir)
    proto = onnx.load(str(model_path))
    opset = next((o.version for o in proto.opset_import if o.domain in ("", "ai.onnx")), 1)
    if opset < 7:
        proto = version_converter.convert_version(proto, 13)
    names = graph_input_names(proto)
    assert len(names) == len(inputs)

    model = cnnjit.compile(proto)
    outs = model.run(None, dict(zip(names, inputs, strict=True)))
    rtol, atol = _tolerances(case_dir)
    assert_outputs_match(list(outs), expected, rtol, atol, what=case_dir.name)


# =========================================================================================================
# MLPerf Tiny float models vs onnxruntime
# =========================================================================================================
MLPERF_FLOAT = re.compile(r".*_fp32.*|.*float.*|pretrainedResnet\..*")
MLPERF_NOT_FLOAT = re.compile(r".*(int8|quant).*")
MLPERF_SEEDS = range(20)


def _mlperf_params():
    if not MLPERF_TINY_DIR.is_dir():
        return _missing(MLPERF_TINY_DIR, "mlperf-tiny-models")
    return [
        _param(p, f"mlperf_{p.name.removesuffix('.onnx')}")
        for p in sorted(MLPERF_TINY_DIR.glob("*.onnx"))
        if MLPERF_FLOAT.fullmatch(p.name) and not MLPERF_NOT_FLOAT.fullmatch(p.name)
    ]


def _static_shape(vi: onnx.ValueInfoProto, symbolic: int = 1) -> tuple[int, ...]:
    """The declared shape with every symbolic dimension (the batch) set to ``symbolic``."""
    return tuple(d.dim_value if d.HasField("dim_value") and d.dim_value > 0 else symbolic
                 for d in vi.type.tensor_type.shape.dim)


@pytest.mark.parametrize("path", _mlperf_params())
def test_mlperf_tiny_float(path: Path) -> None:
    proto = onnx.load(str(path))
    inits = {t.name for t in proto.graph.initializer}
    real_inputs = [vi for vi in proto.graph.input if vi.name not in inits]
    for vi in real_inputs:
        if vi.type.tensor_type.elem_type != onnx.TensorProto.FLOAT:
            pytest.skip(f"{path.name}: input {vi.name!r} is not float32")
    shapes = {vi.name: _static_shape(vi) for vi in real_inputs}
    ref_sess = ort_session(path)
    model = cnnjit.compile(path)

    failures = []
    for seed in MLPERF_SEEDS:
        rng = np.random.default_rng(seed)
        feeds = {n: rng.standard_normal(s, dtype=np.float32) for n, s in shapes.items()}
        refs = ref_sess.run(None, feeds)
        outs = model.run(None, feeds)
        assert len(outs) == len(refs), f"{len(outs)} outputs, onnxruntime gives {len(refs)}"
        for i, (out, ref) in enumerate(zip(outs, refs, strict=True)):
            where = f"seed {seed}, output {i}"
            assert isinstance(out, np.ndarray) and out.shape == ref.shape and out.dtype == ref.dtype, (
                f"{where}: got {type(out).__name__} {getattr(out, 'shape', None)} "
                f"{getattr(out, 'dtype', None)}, onnxruntime {ref.shape} {ref.dtype}")
            tol = 1e-4 * max(1.0, float(np.max(np.abs(ref))))
            diff = float(np.max(np.abs(out.astype(np.float64) - ref)))
            if not diff <= tol:  # also catches NaN
                failures.append(f"{where}: max |diff| {diff:.3g} > {tol:.3g}")
                continue
            # same argmax along the last axis; a different index is accepted only for a near-tie in the
            # reference (the two reference values within tolerance of each other)
            a_idx = np.argmax(out, axis=-1)
            r_idx = np.argmax(ref, axis=-1)
            if not np.array_equal(a_idx, r_idx):
                gap = np.abs(np.take_along_axis(ref, r_idx[..., None], -1)
                             - np.take_along_axis(ref, a_idx[..., None], -1))
                if np.any(gap > tol):
                    failures.append(f"{where}: argmax {a_idx.tolist()} != onnxruntime {r_idx.tolist()}")
    assert not failures, f"{path.name}: {len(failures)} mismatches:\n" + "\n".join(failures[:10])

    # a symbolic batch dimension: one more call with batch 3 (a fresh specialisation)
    symbolic = any(not (d.HasField("dim_value") and d.dim_value > 0)
                   for vi in real_inputs for d in vi.type.tensor_type.shape.dim)
    if symbolic:
        rng = np.random.default_rng(1000)
        feeds = {vi.name: rng.standard_normal(_static_shape(vi, 3), dtype=np.float32) for vi in real_inputs}
        for i, (out, ref) in enumerate(zip(model.run(None, feeds), ref_sess.run(None, feeds), strict=True)):
            assert out.shape == ref.shape, f"batch 3, output {i}: shape {out.shape}, onnxruntime {ref.shape}"
            tol = 1e-4 * max(1.0, float(np.max(np.abs(ref))))
            diff = float(np.max(np.abs(out.astype(np.float64) - ref)))
            assert diff <= tol, f"batch 3, output {i}: max |diff| {diff:.3g} > {tol:.3g}"


def test_model_expectations_name_collected_cases() -> None:
    """Every MODEL_NOT_YET entry names a collected test id (catches typos and stale entries)."""
    ids = {p.id for p in _light_params() + _pytorch_params() + _mlperf_params()}
    stale = sorted(set(MODEL_NOT_YET) - ids)
    assert not stale, f"MODEL_NOT_YET names tests that are not collected: {stale}"
