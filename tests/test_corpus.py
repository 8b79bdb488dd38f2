"""The real-model corpus (issue 17, ``benchmarks/corpus.py``): every model compiles and matches onnxruntime.

Real models come from installed wheels (``pip install --no-deps rapidocr-onnxruntime==1.4.4 ddddocr==1.6.1``;
``.ci/run`` installs them) and are skipped, with that command as the reason, when absent. Generated models
(MobileNetV3 with squeeze-excite, a YOLOv8-style head, SVTR blocks, a CRNN with LSTM and GRU, and onnxruntime's
quantize_dynamic / quantize_static outputs) are built with seeded weights on small inputs.

The oracle is onnxruntime with all graph optimisations or with none (QDQ models differ between the two: the
fused integer kernels round differently from the operator definitions); cnnjit must match the nearer one.
Tolerances are relative to the output's scale (max |onnxruntime output|, ``corpus.tolerance``): float models
within 1e-3 of it; the quantized models within 1e-2 of it (their activations are re-quantized after every
layer, so float summation order can flip a rounding by one step, which moves the output by about 1/127 of its
scale); integer outputs within 1 (one LSB).
"""

from __future__ import annotations

import sys

import numpy as np
import onnx
import pytest
from conftest import REPO_DIR, ort_session

import cnnjit
from cnnjit.cli.common import UsageError, check_shapes
from cnnjit.compiler.frontend.loader import input_specs
from cnnjit.errors import InputError
from cnnjit.inspect_model import node_flops

sys.path.insert(0, str(REPO_DIR))
import benchmarks.corpus as corpus  # noqa: E402
from benchmarks.corpus import (  # noqa: E402
    CORPUS,
    GENERATED_CORPUS,
    REAL,
    WHEEL_MODELS,
    load,
    missing_wheel,
    reference_outputs,
    tolerance,
    wheel_path,
)
from benchmarks.models import count_flops  # noqa: E402

#: models whose compile or run takes more than a few seconds warm (the large real ones)
SLOW = {"ppocr_v4_det", "ppocr_v4_rec", "ddddocr_det", "ddddocr_ocr"}


def _params(names: list[str]) -> list:
    return [pytest.param(n, id=n, marks=[pytest.mark.slow] if n in SLOW else []) for n in names]


def _mismatch(name: str, got: list[np.ndarray], ref: list[np.ndarray]) -> str:
    """Why cnnjit's outputs do not match these reference outputs ("" when they do): same count, shapes and
    dtypes; values within the corpus tolerance relative to each output's scale, integers within 1."""
    if len(got) != len(ref):
        return f"{len(got)} outputs, onnxruntime gives {len(ref)}"
    for i, (g, r) in enumerate(zip(got, ref)):
        if g.shape != r.shape or g.dtype != r.dtype:
            return f"output {i}: {g.dtype}{g.shape}, expected {r.dtype}{r.shape}"
        diff = np.abs(g.astype(np.float64) - r.astype(np.float64))
        if not np.issubdtype(r.dtype, np.floating):
            if diff.max(initial=0) > 1:
                return f"output {i}: integer outputs differ by {diff.max()} (> 1 LSB)"
            continue
        scale = max(float(np.max(np.abs(r), initial=0)), 1e-30)
        worst = float(np.max(diff, initial=0)) / scale if np.all(np.isfinite(g)) else float("inf")
        if not worst <= tolerance(name):
            return f"output {i}: max |cnnjit - onnxruntime| is {worst:.2e} of the output scale {scale:.3g} " \
                   f"(tolerance {tolerance(name):g})"
    return ""


@pytest.mark.parametrize("name", _params(list(CORPUS)))
def test_corpus_model_matches_onnxruntime(name: str) -> None:
    """cnnjit against onnxruntime at ORT_ENABLE_ALL or ORT_DISABLE_ALL (``corpus.reference_outputs``): the
    nearer of the two must be within the tolerance."""
    if not CORPUS[name].available():
        pytest.skip(missing_wheel(name))
    model, feeds = load(name)
    refs = reference_outputs(model, feeds)
    got = cnnjit.compile(model).run(None, feeds)
    why = [_mismatch(name, got, ref) for ref in refs]
    assert not all(why), f"{name}: vs ORT_ENABLE_ALL: {why[0]}; vs ORT_DISABLE_ALL: {why[1]}"


@pytest.mark.parametrize("name", GENERATED_CORPUS)
def test_generated_corpus_model_is_valid_and_deterministic(name: str) -> None:
    """Each builder gives the same bytes twice, a model the full onnx checker accepts, with the patterns it
    exists for and outputs of a sane scale on onnxruntime (weights neither vanishing nor exploding)."""
    a, feeds = load(name)
    b, _ = load(name)
    assert a.SerializeToString() == b.SerializeToString()
    onnx.checker.check_model(a, full_check=True)
    ops = {n.op_type for n in a.graph.node}
    want = {"mobilenet_v3_small": {"HardSwish", "HardSigmoid", "GlobalAveragePool", "Mul"},
            "yolov8_head": {"Shape", "Range", "Expand", "Softmax", "Split", "Sigmoid", "Resize"},
            "svtr_block": {"LayerNormalization", "ReduceMean", "Sqrt", "MatMul", "Softmax", "Erf"},
            "crnn_lstm_gru": {"LSTM", "GRU"},
            "audio_pool_gru": {"LeakyRelu", "MaxPool", "GRU"},
            "mobilenet_v3_small_qdynamic": {"DynamicQuantizeLinear", "ConvInteger", "MatMulInteger"},
            "crnn_lstm_gru_qdynamic": {"DynamicQuantizeLinear", "DynamicQuantizeLSTM", "MatMulInteger"},
            "mobilenet_v3_small_qstatic": {"QuantizeLinear", "DequantizeLinear", "Conv"},
            "yolov8_head_qstatic": {"QuantizeLinear", "DequantizeLinear", "Range"}}[name]
    assert want <= ops, f"{name} lacks {sorted(want - ops)}"
    if name == "crnn_lstm_gru":
        (lstm,) = [n for n in a.graph.node if n.op_type == "LSTM"]
        assert onnx.helper.get_node_attr_value(lstm, "direction") == b"bidirectional"
    ref = ort_session(a).run(None, feeds)
    scale = max(float(np.max(np.abs(r))) for r in ref)
    assert np.isfinite(scale) and 1e-2 < scale < 1e4, f"{name}: output scale {scale}"


@pytest.mark.parametrize("name", REAL)
def test_real_models_are_read_from_their_wheel(name: str) -> None:
    """The real models are found in the installed package's folder (not in the repository) and declare the
    input rank the corpus feeds them."""
    package, rel, shape, req = WHEEL_MODELS[name]
    path = wheel_path(package, rel)
    if path is None or not path.is_file():
        assert missing_wheel(name) and f"pip install --no-deps {req}" in missing_wheel(name)
        pytest.skip(missing_wheel(name))
    assert REPO_DIR not in path.resolve().parents
    assert missing_wheel(name) == ""
    model = onnx.load(str(path), load_external_data=False)
    (inp,) = [i for i in model.graph.input if i.name not in {t.name for t in model.graph.initializer}]
    assert len(inp.type.tensor_type.shape.dim) == len(shape)


def test_missing_wheel_says_how_to_install(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(corpus.importlib.util, "find_spec", lambda name: None)
    why = corpus.missing_wheel("ddddocr_det")
    assert "ddddocr is not installed" in why and "pip install --no-deps ddddocr==1.6.1" in why


# ---------------------------------------------------------------------------------------------------------
# anonymous '?' dimensions (PaddlePaddle's exporter: PP-OCR cls declares x as [-1, 3, "?", "?"])
# ---------------------------------------------------------------------------------------------------------
def _two_inputs(params: tuple[str, str]) -> onnx.ModelProto:
    """y = ReduceSum(a) + ReduceSum(b) over all axes, a: [1, p0], b: [1, p1] with dim_params ``params``."""
    h = onnx.helper
    nodes = [h.make_node("ReduceSum", ["a"], ["sa"], keepdims=0), h.make_node("ReduceSum", ["b"], ["sb"], keepdims=0),
             h.make_node("Add", ["sa", "sb"], ["y"])]
    g = h.make_graph(nodes, "two", [h.make_tensor_value_info("a", onnx.TensorProto.FLOAT, [1, params[0]]),
                                    h.make_tensor_value_info("b", onnx.TensorProto.FLOAT, [1, params[1]])],
                     [h.make_tensor_value_info("y", onnx.TensorProto.FLOAT, [])])
    m = h.make_model(g, opset_imports=[h.make_opsetid("", 13)])
    m.ir_version = 8
    return m


@pytest.mark.parametrize("param", ["?", ""])
def test_anonymous_dims_are_not_shared(param: str) -> None:
    model = _two_inputs((param, param))
    specs = input_specs(model)
    assert [s.dim_names for s in specs] == [("", ""), ("", "")]
    check_shapes(specs, {"a": (1, 3), "b": (1, 5)})  # no "must agree" error
    a, b = np.ones((1, 3), np.float32), np.ones((1, 5), np.float32)
    (y,) = cnnjit.compile(model).run(None, {"a": a, "b": b})
    assert float(y) == 8.0


def test_named_dims_are_still_shared() -> None:
    model = _two_inputs(("n", "n"))
    with pytest.raises(UsageError, match="must agree"):
        check_shapes(input_specs(model), {"a": (1, 3), "b": (1, 5)})
    with pytest.raises(InputError, match="must agree"):
        cnnjit.compile(model).run(None, {"a": np.ones((1, 3), np.float32), "b": np.ones((1, 5), np.float32)})


def test_count_flops_counts_recurrent_layers() -> None:
    """The CRNN's 2 x MACs by hand: three convs, the bidirectional LSTM (4 gates x 64 over input 128 + state 64,
    32 steps, 2 directions), the GRU (3 gates x 64 over 128 + 64) and the 64 -> 37 MatMul; the same after
    quantize_dynamic (DynamicQuantizeLSTM stores W transposed)."""
    macs = (32 * 128 * 32 * 9 + 16 * 64 * 64 * 32 * 9 + 32 * 128 * 64 * 8 + 32 * 2 * 4 * 64 * (128 + 64)
            + 32 * 3 * 64 * (128 + 64) + 32 * 64 * 37)
    for name in ("crnn_lstm_gru", "crnn_lstm_gru_qdynamic"):
        model, feeds = load(name)
        assert count_flops(model, {k: v.shape for k, v in feeds.items()}) == 2 * macs, name


def test_quantized_convs_count_their_flops() -> None:
    """``cnnjit profile``/``inspect`` FLOPs of the integer convs (QConvNHWC, NHWC weights; they were 0) of the
    QDQ MobileNetV3, whose every Conv and Gemm runs as one, add up to the ONNX-level count (shape inference)."""
    model, feeds = load("mobilenet_v3_small_qstatic")
    ir = cnnjit.compile(model, entry="lazy").ir  # the IR only: no kernel is built
    assert not [n.op for n in ir.nodes if n.op in ("Conv", "Gemm", "MatMul")]
    qconvs = [n for n in ir.nodes if n.op == "QConvNHWC"]
    assert sum(node_flops(n) for n in qconvs) == count_flops(model, {k: v.shape for k, v in feeds.items()}) > 0
