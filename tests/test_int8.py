"""int8: pre-quantized MLPerf Tiny models vs onnxruntime, post-training quantization, integer kernels.

* The int8 MLPerf Tiny QDQ models (tf2onnx) compile to integer kernels (``qdq_to_integer``) and equal
  onnxruntime bit for bit (ad01, kws, vww), except ResNet-8: there the two 64-channel convolutions that
  feed the last residual Add (conv2d_7 3x3, conv2d_8 1x1/2) differ from onnxruntime by 1 LSB on a few
  elements for some inputs (given onnxruntime's own inputs, QAdd matches it exactly); the softmax output
  amplifies that to at most 9 LSB over these 50 inputs (it was 11 LSB with float compute); argmax always
  agrees. Not yet explained: onnxruntime may not fuse those two layers into QLinearConv (float Conv
  between DQ and Q rounds differently from integer accumulation).
* PTQ (``cnnjit.quantize``) of the float MLPerf Tiny models and the generated ResNet-8 / DS-CNN / MobileNetV1:
  argmax agreement >= 98% and cosine >= 0.99 against the float model on 50 seeded inputs (200 in the
  issue: 50 keeps this file near 2 minutes on 2 cores; MobileNetV2-224 runs in the slow test). The saved
  QDQ model runs in onnxruntime with the same outputs (float softmax outputs: within 1e-5).
* Hypothesis property tests: every integer kernel (dense / pointwise / strided / C % 4 != 0 / depthwise /
  grouped / fully connected, int8 and uint8, and QAdd) equals the IR's numpy integer reference exactly.
* The dense kernel's assembly contains ``vpdpbusd`` on AVX512-VNNI hosts.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import cnnjit
from cnnjit.compiler.codegen.emit import generate
from cnnjit.compiler.codegen.kernels import qint as K
from cnnjit.ir import Graph, Node, TensorType, Value, get_op, interpret
from cnnjit.runtime.model import Specialization

ort = pytest.importorskip("onnxruntime")

SHARED = Path(os.environ.get("CNNJIT_SHARED", Path(__file__).resolve().parents[1].parent / "shared"))
TINY = SHARED / "models" / "mlperf-tiny"

#: model -> max |cnnjit - onnxruntime| in LSB at the output (see the module docstring for ResNet-8)
INT8_MODELS = {"ad01_int8": 0, "kws_ref_model": 0, "vww_96_int8": 0, "pretrainedResnet_quant": 9}


def _ort(model) -> ort.InferenceSession:
    so = ort.SessionOptions()
    so.intra_op_num_threads = so.inter_op_num_threads = 1
    data = model if isinstance(model, str) else model.SerializeToString()
    return ort.InferenceSession(data, so, providers=["CPUExecutionProvider"])


@pytest.mark.parametrize("name", list(INT8_MODELS))
def test_mlperf_int8_matches_onnxruntime(name: str) -> None:
    path = TINY / f"{name}.tf2onnx.onnx"
    if not path.is_file():
        pytest.skip(f"{path} not found")
    sess = _ort(str(path))
    inp = sess.get_inputs()[0]
    shape = [d if isinstance(d, int) else 1 for d in inp.shape]
    m = cnnjit.compile(str(path), input_shapes={inp.name: shape})
    ops = {n.op for n in m.ir.nodes} if hasattr(m, "ir") else set()
    assert "QConvNHWC" in ops and "Conv" not in ops and "MatMul" not in ops
    worst = 0
    for seed in range(50):
        x = np.random.default_rng(seed).integers(-128, 128, size=shape).astype(np.int8)
        ref = sess.run(None, {inp.name: x})[0]
        got = m.run(None, {inp.name: x})[0]
        worst = max(worst, int(np.abs(ref.astype(np.int32) - got.astype(np.int32)).max()))
        assert ref.argmax() == got.argmax() or name == "ad01_int8"  # ad01 is an autoencoder
    assert worst <= INT8_MODELS[name]


def _ptq_check(name: str, n: int, argmax_min: float, cos_min: float, ort_lsb: int = 1) -> None:
    import sys

    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    from benchmarks.models import MODEL_SET, load

    entry = MODEL_SET[name]
    if not entry.available():
        pytest.skip(f"{name}: model file not found")
    model, feeds = load(name)
    k = next(iter(feeds))
    rng = np.random.default_rng(1)
    cal = [{k: rng.standard_normal(entry.input_shape).astype(np.float32)} for _ in range(16)]
    q = cnnjit.quantize(model, cal, evaluate=False)
    assert "QuantizeLinear" in {nd.op_type for nd in q.model.graph.node}
    shapes = {k: entry.input_shape}
    qm, fm = cnnjit.compile(q, input_shapes=shapes), cnnjit.compile(model, input_shapes=shapes)
    assert "QConvNHWC" in {nd.op for nd in qm.ir.nodes}
    sess = _ort(q.model)
    out = q.model.graph.output[0].name
    lsb = q.activations.get(out, (0.0, 0))[0]  # a quantized output may differ by 1 LSB (requant ties)
    agree, cos = 0, []
    for i in range(n):
        x = {k: np.random.default_rng(1000 + i).standard_normal(entry.input_shape).astype(np.float32)}
        a = fm.run(None, x)[0].astype(np.float64).ravel()
        b = qm.run(None, x)[0].astype(np.float64).ravel()
        agree += int(a.argmax() == b.argmax())
        cos.append(float(a @ b / max(np.linalg.norm(a) * np.linalg.norm(b), 1e-30)))
        if i < 5:  # the saved QDQ model: onnxruntime computes the same
            r = sess.run(None, x)[0].astype(np.float64).ravel()
            assert np.abs(r - b).max() <= 1.0001 * ort_lsb * lsb + 1e-5 * max(1.0, np.abs(r).max()), name
    if not name.startswith("mlperf_ad01"):  # an autoencoder: argmax is meaningless
        assert agree / n >= argmax_min, (name, agree / n)
    assert min(cos) >= cos_min, (name, min(cos))


@pytest.mark.parametrize("name", ["resnet8", "ds_cnn", "mobilenet_v1_025_96", "mlperf_resnet", "mlperf_vww_96_float",
                                  "mlperf_kws_float32", "mlperf_ad01_fp32"])
def test_ptq_accuracy(name: str) -> None:
    _ptq_check(name, 50, 0.98, 0.99)


@pytest.mark.slow
def test_ptq_mobilenet_v2() -> None:
    # random weights and 1000 near-tied logits: argmax agreement is lower than on trained models (measured
    # ~0.9); the cosine bound holds with margin. Against onnxruntime on the saved QDQ model the logits differ
    # by up to 2 LSB: 1-LSB requantisation differences in some of its 52 layers propagate.
    _ptq_check("mobilenet_v2_224", 20, 0.8, 0.99, ort_lsb=3)


def test_ptq_methods_and_int8_activations(tmp_path: Path) -> None:
    import sys

    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    from benchmarks.models import resnet8

    rng = np.random.default_rng(0)
    cal = [rng.standard_normal((1, 3, 32, 32)).astype(np.float32) for _ in range(4)]
    # entropy clips the long-tailed activations of this random-weight net hard (cosine ~0.87 here); it is
    # meant for trained models, so only its plumbing is checked
    for method, act, cos in (("percentile", "int8", 0.99), ("entropy", "uint8", 0.8), ("minmax", "int8", 0.99)):
        q = cnnjit.quantize(resnet8(), cal, method=method, activations=act, per_channel=method != "percentile")
        dev = q.deviation["output"]
        assert dev["min_cosine"] > cos, (method, dev)
        assert "scale" in q.report()
        q.save(tmp_path / f"{method}.onnx")
        assert (tmp_path / f"{method}.onnx").stat().st_size > 0


# -- integer kernels against the numpy reference --------------------------------------------------------------
def _const(a: np.ndarray) -> Value:
    a = np.ascontiguousarray(a)
    return Value(TensorType(a.dtype, a.shape), "", const=a)


def _run_graph(g: Graph, x: np.ndarray) -> np.ndarray:
    return Specialization(g, generate(g)).run({"x": x})[0]


_SETTINGS = settings(deadline=None, max_examples=20, suppress_health_check=[HealthCheck.too_slow])


@_SETTINGS
@given(seed=st.integers(0, 2**31 - 1), kind=st.sampled_from(["dense", "pointwise", "depthwise", "grouped", "fc"]),
       xs=st.booleans(), ys=st.booleans(), k=st.sampled_from([1, 3, 5]), s=st.sampled_from([1, 2]),
       c=st.integers(1, 20), m=st.integers(1, 40), hw=st.integers(1, 9), batch=st.integers(1, 2))
def test_qconv_kernels_exact(seed: int, kind: str, xs: bool, ys: bool, k: int, s: int, c: int, m: int, hw: int,
                             batch: int) -> None:
    rng = np.random.default_rng(seed)
    G, pad, dil = 1, int(rng.integers(0, k)) if k > 1 else 0, 1
    if kind == "pointwise":
        k, s, pad = 1, 1, 0
    elif kind == "depthwise":
        G = m = c
    elif kind == "grouped":
        c, m = 2 * c, 2 * m
        G = 2
    elif kind == "fc":
        k, s, pad, hw = 1, 1, 0, 1
    H = W = max(hw, (k - 1) * dil + 1 - 2 * pad)
    xdt, ydt = (np.int8 if xs else np.uint8), (np.int8 if ys else np.uint8)
    w = rng.integers(-128, 128, size=(m, k, k, c // G)).astype(np.int8)
    b = rng.integers(-20000, 20000, size=m).astype(np.int32)
    mult = (rng.random(m) * 0.02 + 1e-4).astype(np.float32)
    xinfo, yinfo = np.iinfo(xdt), np.iinfo(ydt)
    lo, hi = int(yinfo.min) + int(rng.integers(0, 3)), int(yinfo.max) - int(rng.integers(0, 3))
    attrs = {"strides": [s, s], "pads": [pad] * 4, "dilations": [dil, dil], "group": G,
             "x_zero_point": int(rng.integers(xinfo.min, xinfo.max + 1)),
             "y_zero_point": int(rng.integers(yinfo.min, yinfo.max + 1)), "lo": lo, "hi": hi,
             "dtype": "i8" if ys else "u8"}
    g = Graph("t")
    x = g.add_input(TensorType(xdt, (batch, H, W, c)), "x")
    ins = [x, _const(w), _const(b), _const(mult)]
    (t,) = get_op("QConvNHWC").infer_types(ins, attrs)
    y = Value(t, "y")
    g.add_node(Node("QConvNHWC", ins, [y], attrs))
    g.outputs = [y]
    xv = rng.integers(xinfo.min, xinfo.max + 1, size=(batch, H, W, c)).astype(xdt)
    ref = interpret(g, [xv])[0]
    np.testing.assert_array_equal(_run_graph(g, xv), ref)
    K.FAST = False
    try:
        np.testing.assert_array_equal(_run_graph(g, xv), ref)
    finally:
        K.FAST = True


@_SETTINGS
@given(seed=st.integers(0, 2**31 - 1), signed=st.booleans(), n=st.integers(1, 300))
def test_qadd_kernel_exact(seed: int, signed: bool, n: int) -> None:
    rng = np.random.default_rng(seed)
    dt = np.int8 if signed else np.uint8
    info = np.iinfo(dt)
    zp = [int(rng.integers(info.min, info.max + 1)) for _ in range(3)]
    attrs = {"a_zero_point": zp[0], "b_zero_point": zp[1], "y_zero_point": zp[2],
             "ra": float(np.float32(rng.random() * 2)), "rb": float(np.float32(rng.random() * 2)),
             "lo": int(info.min), "hi": int(info.max), "dtype": "i8" if signed else "u8"}
    g = Graph("t")
    x = g.add_input(TensorType(dt, (n,)), "x")
    other = _const(rng.integers(info.min, info.max + 1, size=n).astype(dt))
    y = Value(TensorType(dt, (n,)), "y")
    g.add_node(Node("QAdd", [x, other], [y], attrs))
    g.outputs = [y]
    xv = rng.integers(info.min, info.max + 1, size=n).astype(dt)
    np.testing.assert_array_equal(_run_graph(g, xv), interpret(g, [xv])[0])


def test_dense_kernel_uses_vnni() -> None:
    from numba import njit

    from cnnjit.compiler.codegen.build import module_text
    from cnnjit.compiler.codegen.simd_int import has_vnni, host_int_width

    n = host_int_width()
    if not has_vnni(n):
        pytest.skip("no AVX512-VNNI / AVX-VNNI on this host")
    ns: dict = {}
    exec(compile(module_text(K.dense_source(n, 2, 1, True, 0)), "<qint>", "exec"), ns)
    kern = ns["kernel"]
    assert isinstance(kern, type(njit(lambda: 0)))
    x = np.zeros(64, np.int8)
    w = np.zeros(64 * 16, np.int8)
    b = np.zeros(16, np.int32)
    m = np.ones(16, np.float32)
    y = np.zeros(64, np.int8)
    kern(x, 0, w, 0, b, 0, m, 0, y, 0, 1, 1, 4, 16, 1, 4, 16, 1, 1, 1, 1, 0, 0, 1, 1, 1, 0, 4, 0, 0, -128, 127)
    asm = kern.inspect_asm(kern.signatures[0])
    assert "vpdpbusd" in asm
