"""int8: pre-quantized MLPerf Tiny models vs onnxruntime, post-training quantization, integer kernels.

* The int8 MLPerf Tiny QDQ models (tf2onnx) compile to integer kernels (``qdq_to_integer``) and equal
  onnxruntime bit for bit (ad01, kws, vww) on 50 seeded inputs. ResNet-8: 48 of 50 outputs are bit-exact,
  the others differ by 1 LSB. Reason (docs/int8.md): onnxruntime fuses only 3 of its 9 convolutions into
  QLinearConv and runs the other 6 as float Conv between DequantizeLinear and QuantizeLinear; the float32 sum
  rounds a value next to a .5 boundary the other way than the exact int32 accumulation on ~1 element in
  300k (measured per layer from onnxruntime's own inputs: every other layer — the fused convolutions, the
  Adds, the average pool, the dense layer and the softmax — is bit-exact), and such a flip propagates.
  The average pool follows onnxruntime's float path exactly (``QAvgPoolNHWC``): the integer mean's exact
  ties round whichever way float32 summation in window order takes them; cnnjit's float pool kernel (another
  order) rounded 14 of 3200 differently, which cost up to 9 LSB at the softmax output.
* PTQ (``cnnjit.quantize``) of the float MLPerf Tiny models and the generated ResNet-8 / DS-CNN / MobileNetV1:
  argmax agreement >= 98% and cosine >= 0.99 against the float model on 50 seeded inputs (200 in the
  issue, measured in docs/int8.md with benchmarks/int8_accuracy.py: all 1.000; 50 keeps this file short;
  MobileNetV2-224 runs in the slow test and stays below the argmax target, see there). The saved
  QDQ model runs in onnxruntime with the same outputs (float softmax outputs: within 1e-5).
* Hypothesis property tests: every integer kernel (dense / pointwise / strided / C % 4 != 0 / depthwise /
  grouped / fully connected, int8 and uint8, and QAdd) equals the IR's numpy integer reference exactly.
* The dense kernel's assembly contains ``vpdpbusd`` on AVX512-VNNI hosts.
"""

from __future__ import annotations

import os
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import cnnjit
from cnnjit.compiler.codegen.emit import generate
from cnnjit.compiler.codegen.kernel import VARIANTS
from cnnjit.compiler.codegen.kernels import qint as K
from cnnjit.compiler.codegen.simd_int import has_vnni, host_int_width
from cnnjit.compiler.stages import CompileOptions
from cnnjit.ir import Graph, Node, TensorType, Value, get_op, interpret
from cnnjit.runtime.model import Specialization

ort = pytest.importorskip("onnxruntime")

SHARED = Path(os.environ.get("CNNJIT_SHARED", Path(__file__).resolve().parents[1].parent / "shared"))
TINY = SHARED / "models" / "mlperf-tiny"

#: model -> max |cnnjit - onnxruntime| in LSB at the output (see the module docstring for ResNet-8)
INT8_MODELS = {"ad01_int8": 0, "kws_ref_model": 0, "vww_96_int8": 0, "pretrainedResnet_quant": 1}


#: onnxruntime's u8 x s8 integer kernels are exact with VNNI (``vpdpbusd``); without it (an AVX2-only host) they
#: add pairs of byte products in saturating int16 (``vpmaddubsw``), so its results for QDQ / QLinear models
#: differ from exact integer arithmetic (seen: 0.6% of a softmax output, onnxruntime 1.32 on an AVX2 EPYC). On
#: such hosts the oracle for the integer kernels is the numpy reference of the integer IR
#: (``cnnjit.ir.interpret``, written apart from the kernels); the float model stays the accuracy oracle.
ORT_EXACT_INT8 = has_vnni(host_int_width())


def _int8_reference(sess: ort.InferenceSession, compiled: cnnjit.runtime.CompiledModel, feeds: dict) -> np.ndarray:
    """The exact result of a quantized model: onnxruntime's where it is exact (``ORT_EXACT_INT8``), else the
    numpy reference of the integer IR that ``compiled`` runs."""
    if ORT_EXACT_INT8:
        return sess.run(None, feeds)[0]
    return np.asarray(interpret(compiled.ir, [feeds[n] for n in compiled.input_names])[0])


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
    worst, exact = 0, 0
    for seed in range(50):
        x = np.random.default_rng(seed).integers(-128, 128, size=shape).astype(np.int8)
        ref = _int8_reference(sess, m, {inp.name: x})
        got = m.run(None, {inp.name: x})[0]
        d = int(np.abs(ref.astype(np.int32) - got.astype(np.int32)).max())
        worst, exact = max(worst, d), exact + (d == 0)
        assert ref.argmax() == got.argmax() or name == "ad01_int8"  # ad01 is an autoencoder
    assert worst <= INT8_MODELS[name]
    assert exact >= 45, exact  # a 1-LSB difference stays the exception


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
            r = _int8_reference(sess, qm, x).astype(np.float64).ravel()
            assert np.abs(r - b).max() <= 1.0001 * ort_lsb * lsb + 1e-5 * max(1.0, np.abs(r).max()), name
    if not name.startswith("mlperf_ad01"):  # an autoencoder: argmax is meaningless
        assert agree / n >= argmax_min, (name, agree / n)
    assert min(cos) >= cos_min, (name, min(cos))


@pytest.mark.parametrize("name", ["resnet8", "ds_cnn", "mobilenet_v1_025_96", "mlperf_resnet", "mlperf_vww_96_float",
                                  "mlperf_kws_float32", "mlperf_ad01_fp32"])
def test_ptq_accuracy(name: str) -> None:
    _ptq_check(name, 50, 0.98, 0.99)


def test_ptq_bias_correction_and_entropy_on_few_values() -> None:
    import sys

    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    from benchmarks.models import resnet8

    rng = np.random.default_rng(0)
    cal = [rng.standard_normal((1, 3, 32, 32)).astype(np.float32) for _ in range(4)]
    err = {bc: 1 - cnnjit.quantize(resnet8(), cal, bias_correction=bc).deviation["output"]["mean_cosine"]
           for bc in (True, False)}
    assert err[True] < err[False], err  # folding (W_q - W) @ E[x] into the bias removes a mean shift
    # a ReLU's zeros must not pull the entropy threshold down (they used to: ~2 sigma for a ReLU'd Gaussian)
    from cnnjit.quantization import _entropy_threshold

    a = np.minimum(np.maximum(np.random.default_rng(0).standard_normal(200_000), 0), 6)
    assert _entropy_threshold(a, 2048) > 0.8 * a.max()
    assert _entropy_threshold(a[:100], 2048) == a[:100].max()  # too few values for a histogram: no clipping


@pytest.mark.slow
def test_ptq_mobilenet_v2() -> None:
    # random weights and 1000 near-tied logits (median top-2 gap 0.10, logit std 1.1): on 200 inputs argmax
    # agreement is 0.945 (target 0.98 needs ~42-44 dB output SQNR, int8 gives ~30 dB; docs/int8.md); the
    # cosine bound holds with margin. Against onnxruntime on the saved QDQ model the logits differ by up to
    # 2 LSB: 1-LSB requantisation differences in some of its 52 layers propagate.
    _ptq_check("mobilenet_v2_224", 20, 0.8, 0.99, ort_lsb=3)


def test_ptq_methods_and_int8_activations(tmp_path: Path) -> None:
    import sys

    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    from benchmarks.models import resnet8

    rng = np.random.default_rng(0)
    cal = [rng.standard_normal((1, 3, 32, 32)).astype(np.float32) for _ in range(4)]
    for method, act in (("percentile", "int8"), ("entropy", "uint8"), ("minmax", "int8")):
        q = cnnjit.quantize(resnet8(), cal, method=method, activations=act, per_channel=method != "percentile")
        dev = q.deviation["output"]
        assert dev["min_cosine"] > 0.999 and dev["argmax_agree"] == 1.0, (method, dev)
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
    g, xv = _qconv_case(rng, xdt, ydt, batch, H, W, c, m, k, s, pad, dil, G)
    ref = interpret(g, [xv])[0]
    np.testing.assert_array_equal(_run_graph(g, xv), ref)
    # every QConvNHWC variant that applies (the vector kernels and the plain loop) gives the same integers
    node = next(n for n in g.nodes if n.op == "QConvNHWC")
    host = CompileOptions().host_target()
    names = [v.name for v in VARIANTS["QConvNHWC"] if v.applies(node, host)]
    assert "qconv_generic" in names and (kind == "grouped" or len(names) >= 2)
    for name in names:
        target = replace(host, variants=(("QConvNHWC", name),))
        prog = generate(g, target)
        assert {c.variant for c in prog.calls if c.op == "QConvNHWC"} == {name}
        np.testing.assert_array_equal(Specialization(g, prog).run({"x": xv})[0], ref, err_msg=name)


def _qconv_case(rng: np.random.Generator, xdt, ydt, batch: int, H: int, W: int, c: int, m: int, k: int, s: int,
                pad: int, dil: int, G: int) -> tuple[Graph, np.ndarray]:
    w = rng.integers(-128, 128, size=(m, k, k, c // G)).astype(np.int8)
    b = rng.integers(-20000, 20000, size=m).astype(np.int32)
    mult = (rng.random(m) * 0.02 + 1e-4).astype(np.float32)
    xinfo, yinfo = np.iinfo(xdt), np.iinfo(ydt)
    lo, hi = int(yinfo.min) + int(rng.integers(0, 3)), int(yinfo.max) - int(rng.integers(0, 3))
    attrs = {"strides": [s, s], "pads": [pad] * 4, "dilations": [dil, dil], "group": G,
             "x_zero_point": int(rng.integers(xinfo.min, xinfo.max + 1)),
             "y_zero_point": int(rng.integers(yinfo.min, yinfo.max + 1)), "lo": lo, "hi": hi,
             "dtype": "i8" if ydt == np.int8 else "u8"}
    g = Graph("t")
    x = g.add_input(TensorType(xdt, (batch, H, W, c)), "x")
    ins = [x, _const(w), _const(b), _const(mult)]
    (t,) = get_op("QConvNHWC").infer_types(ins, attrs)
    y = Value(t, "y")
    g.add_node(Node("QConvNHWC", ins, [y], attrs))
    g.outputs = [y]
    return g, rng.integers(xinfo.min, xinfo.max + 1, size=(batch, H, W, c)).astype(xdt)


@_SETTINGS
@given(seed=st.integers(0, 2**31 - 1), xs=st.booleans(), ys=st.booleans(), k=st.sampled_from([1, 3, 5]),
       s=st.sampled_from([1, 2]), dil=st.sampled_from([1, 2]), c=st.sampled_from([16, 32, 48, 64, 80, 128, 144]),
       hw=st.integers(1, 12), batch=st.integers(1, 2))
def test_qdepthwise_wide_exact(seed: int, xs: bool, ys: bool, k: int, s: int, dil: int, c: int, hw: int,
                               batch: int) -> None:
    """Depthwise with whole 64-channel blocks (the unmasked path) and interior pixels (unchecked taps)."""
    rng = np.random.default_rng(seed)
    pad = int(rng.integers(0, k)) if k > 1 else 0
    H = W = max(hw, (k - 1) * dil + 1 - 2 * pad)
    g, xv = _qconv_case(rng, np.int8 if xs else np.uint8, np.int8 if ys else np.uint8, batch, H, W, c, c, k, s,
                        pad, dil, c)
    np.testing.assert_array_equal(_run_graph(g, xv), interpret(g, [xv])[0])


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


@_SETTINGS
@given(seed=st.integers(0, 2**31 - 1), signed=st.booleans(), k=st.integers(1, 4), s=st.integers(1, 3),
       hw=st.integers(1, 9), c=st.integers(1, 20), incl=st.booleans(), glob=st.booleans())
def test_qavgpool_kernel_exact(seed: int, signed: bool, k: int, s: int, hw: int, c: int, incl: bool,
                               glob: bool) -> None:
    rng = np.random.default_rng(seed)
    dt = np.int8 if signed else np.uint8
    info = np.iinfo(dt)
    H, W = max(hw, k), max(hw + int(rng.integers(0, 3)), k)
    if glob:
        k2, s2, pads = [H, W], [1, 1], [0, 0, 0, 0]
    else:
        k2, s2, pads = [k, k], [s, s], [int(rng.integers(0, k)) for _ in range(4)]
    f = np.float32
    attrs = {"kernel_shape": k2, "strides": s2, "pads": pads, "count_include_pad": int(incl),
             "x_scale": float(f(rng.random() * 0.1 + 1e-3)), "x_zero_point": int(rng.integers(info.min, info.max + 1)),
             "y_scale": float(f(rng.random() * 0.1 + 1e-3)), "y_zero_point": int(rng.integers(info.min, info.max + 1)),
             "lo": int(info.min) + int(rng.integers(0, 3)), "hi": int(info.max), "dtype": "i8" if signed else "u8"}
    g = Graph("t")
    x = g.add_input(TensorType(dt, (1, H, W, c)), "x")
    (t,) = get_op("QAvgPoolNHWC").infer_types([x], attrs)
    y = Value(t, "y")
    g.add_node(Node("QAvgPoolNHWC", [x], [y], attrs))
    g.outputs = [y]
    xv = rng.integers(info.min, info.max + 1, size=(1, H, W, c)).astype(dt)
    np.testing.assert_array_equal(_run_graph(g, xv), interpret(g, [xv])[0])


def test_qavgpool_follows_onnxruntime_float_path() -> None:
    """DQ -> AveragePool -> Q as the float path computes it (onnxruntime without graph fusion; in ResNet-8 its
    optimizer leaves this pattern unfused): the integer mean's exact ties round one way or the other depending
    on float32 rounding, and QAvgPoolNHWC reproduces that exactly. (Fused into QLinearAveragePool, as
    onnxruntime does for this standalone graph, it rounds the exact integer mean half to even instead.)"""
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(3)
    zp = numpy_helper.from_array(np.array(-128, np.int8), "zp")
    sc = numpy_helper.from_array(np.array(0.12706915, np.float32), "s")
    nodes = [helper.make_node("DequantizeLinear", ["x", "s", "zp"], ["d"]),
             helper.make_node("AveragePool", ["d"], ["p"], kernel_shape=[8, 8], strides=[8, 8]),
             helper.make_node("QuantizeLinear", ["p", "s", "zp"], ["y"])]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.INT8, [1, 64, 8, 8])],
                              [helper.make_tensor_value_info("y", TensorProto.INT8, [1, 64, 1, 1])], [zp, sc])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)], ir_version=8)
    m = cnnjit.compile(model)
    assert "QAvgPoolNHWC" in {nd.op for nd in m.ir.nodes}
    so = ort.SessionOptions()
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    sess = ort.InferenceSession(model.SerializeToString(), so, providers=["CPUExecutionProvider"])
    ties = 0
    for _ in range(20):
        x = rng.integers(-128, 128, size=(1, 64, 8, 8)).astype(np.int8)
        ties += int((((x.astype(np.int64) + 128).sum(axis=(2, 3)) % 64) == 32).sum())
        np.testing.assert_array_equal(m(x), sess.run(None, {"x": x})[0])
    assert ties > 0  # the inputs do contain exact ties of the integer mean


@pytest.mark.parametrize("k,s,pads,incl,glob,signed", [(3, 2, [1, 0, 1, 1], 1, False, True),
                                                       (5, 1, [2, 2, 2, 2], 0, False, False),
                                                       (7, 1, [0, 0, 0, 0], 0, True, True)])
def test_qavgpool_matches_onnxruntime_float_path(k: int, s: int, pads: list, incl: int, glob: bool,
                                                 signed: bool) -> None:
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(k)
    dt, tp = (np.int8, TensorProto.INT8) if signed else (np.uint8, TensorProto.UINT8)
    info = np.iinfo(dt)
    inits = [numpy_helper.from_array(np.array(int(rng.integers(info.min, info.max)), dt), n) for n in ("zx", "zy")]
    inits += [numpy_helper.from_array(np.array(v, np.float32), n) for n, v in (("sx", 0.0371), ("sy", 0.0213))]
    pool = helper.make_node("GlobalAveragePool", ["d"], ["p"]) if glob else helper.make_node(
        "AveragePool", ["d"], ["p"], kernel_shape=[k, k], strides=[s, s], pads=pads, count_include_pad=incl)
    nodes = [helper.make_node("DequantizeLinear", ["x", "sx", "zx"], ["d"]), pool,
             helper.make_node("QuantizeLinear", ["p", "sy", "zy"], ["y"])]
    H = 7 if glob else 9
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", tp, [1, 24, H, H])],
                              [helper.make_tensor_value_info("y", tp, None)], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)], ir_version=8)
    so = ort.SessionOptions()
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    sess = ort.InferenceSession(model.SerializeToString(), so, providers=["CPUExecutionProvider"])
    m = cnnjit.compile(model)
    assert "QAvgPoolNHWC" in {nd.op for nd in m.ir.nodes}
    for _ in range(10):
        x = rng.integers(info.min, info.max + 1, size=(1, 24, H, H)).astype(dt)
        np.testing.assert_array_equal(m(x), sess.run(None, {"x": x})[0])


def test_dense_kernel_uses_vnni() -> None:
    from numba import njit

    from cnnjit.compiler.codegen.build import module_text

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


def test_depthwise_kernel_uses_vnni() -> None:
    """The depthwise kernel's transposed columns meet the weights in ``vpdpbusd`` (3 taps per byte group)."""
    from cnnjit.compiler.codegen.build import module_text

    n = host_int_width()
    if not has_vnni(n):
        pytest.skip("no AVX512-VNNI / AVX-VNNI on this host")
    ns: dict = {}
    exec(compile(module_text(K.depthwise_col_source(n, 3, 3, 1, False)), "<qint>", "exec"), ns)
    kern = ns["kernel"]
    C = 4 * n
    x = np.zeros(9 * C, np.uint8)
    w = np.zeros(3 * 4 * C, np.int8)
    b = np.zeros(C, np.int32)
    m = np.ones(C, np.float32)
    y = np.zeros(9 * C, np.uint8)
    kern(x, 0, w, 0, b, 0, m, 0, y, 0, 1, 3, 3, C, 3, 3, 1, 1, 1, 1, 0, 0, 0, 255)
    asm = kern.inspect_asm(kern.signatures[0])
    assert "vpdpbusd" in asm


@pytest.mark.parametrize("glob", [True, False])
def test_qavgpool_flatten_head(glob: bool) -> None:
    """DQ -> (Global)AveragePool -> Flatten -> Q (a classifier head) becomes QAvgPoolNHWC + Reshape (with a
    Transpose back to NCHW when the pooled map is not 1x1). Against onnxruntime's float path: exact for the
    global pool; the 2x2 pool's 4-tap means hit float32 ties that onnxruntime's NCHW kernel rounds by its own
    summation order, so there it is within 1 LSB and never further from onnxruntime than cnnjit's float path."""
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(5)
    inits = [numpy_helper.from_array(np.array(3, np.uint8), "zp"),
             numpy_helper.from_array(np.array(0.0371, np.float32), "sx"),
             numpy_helper.from_array(np.array(0.0213, np.float32), "sy")]
    pool = (helper.make_node("GlobalAveragePool", ["d"], ["p"]) if glob else
            helper.make_node("AveragePool", ["d"], ["p"], kernel_shape=[2, 2], strides=[2, 2]))
    nodes = [helper.make_node("DequantizeLinear", ["x", "sx", "zp"], ["d"]), pool,
             helper.make_node("Flatten", ["p"], ["f"], axis=1),
             helper.make_node("QuantizeLinear", ["f", "sy", "zp"], ["y"])]
    out = 24 if glob else 24 * 4
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.UINT8, [1, 24, 4, 4])],
                              [helper.make_tensor_value_info("y", TensorProto.UINT8, [1, out])], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)], ir_version=8)
    m = cnnjit.compile(model)
    ops = {nd.op for nd in m.ir.nodes}
    assert "QAvgPoolNHWC" in ops and "GlobalAveragePool" not in ops and "AveragePool" not in ops
    mf = cnnjit.compile(model, disable=["qdq_to_integer"])
    so = ort.SessionOptions()
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    sess = ort.InferenceSession(model.SerializeToString(), so, providers=["CPUExecutionProvider"])
    diff = diff_float = 0
    for _ in range(50):
        x = rng.integers(0, 256, size=(1, 24, 4, 4)).astype(np.uint8)
        r = sess.run(None, {"x": x})[0].astype(np.int32)
        y = m(x).astype(np.int32)
        assert np.abs(y - r).max() <= (0 if glob else 1)
        diff += int((y != r).sum())
        diff_float += int((mf(x).astype(np.int32) != r).sum())
    assert diff <= diff_float


@pytest.mark.parametrize("xs", [False, True])
@pytest.mark.parametrize("kind", ["dense", "depthwise"])
def test_qconv_extreme_bytes_exact(xs: bool, kind: str) -> None:
    """Activations and weights at the ends of their ranges: byte-pair sums that saturate int16 (255 * -128 * 2)
    must not (``ivdot`` without VNNI splits the activation's top bit off before ``vpmaddubsw``)."""
    rng = np.random.default_rng(11 + xs)
    xdt = np.int8 if xs else np.uint8
    c, m, G = (16, 24, 1) if kind == "dense" else (40, 40, 40)
    g, _ = _qconv_case(rng, xdt, np.int8, 1, 6, 6, c, m, 3, 1, 1, 1, G)
    node = next(n for n in g.nodes if n.op == "QConvNHWC")
    info = np.iinfo(xdt)
    w = rng.choice(np.array([-128, 127], np.int8), size=node.inputs[1].shape)
    node.inputs[1] = _const(w.astype(np.int8))
    node.inputs[2] = _const(np.zeros(m, np.int32))
    node.inputs[3] = _const(np.full(m, 1e-4, np.float32))
    node.attrs.update(x_zero_point=int(info.min) if not xs else 0, y_zero_point=0, lo=-128, hi=127)
    xv = rng.choice(np.array([info.min, info.max], xdt), size=(1, 6, 6, c))
    ref = interpret(g, [xv])[0]
    inside = np.abs(ref.astype(np.int32)) < 127
    assert inside.mean() > 0.5 and np.abs(ref[inside].astype(np.int32)).max() > 10  # not all clipped, not all 0
    np.testing.assert_array_equal(_run_graph(g, xv), ref)
