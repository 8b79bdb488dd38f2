"""LSTM, GRU and RNN (and onnxruntime's DynamicQuantizeLSTM) against onnxruntime and ``onnx.reference``.

Hypothesis draws the layer (LSTM, GRU with and without ``linear_before_reset``, RNN), the direction, the
sizes, optional initial states and run-time sequence lengths, and the vector width; each case compiles a one-
node model and checks that the SIMD recurrence kernel ran. Attributes onnxruntime does not cover
(``layout=1``) are checked against ``onnx.reference``; clip, ``input_forget``, peepholes and other activations
(which ``onnx.reference`` ignores) against onnxruntime. The vector tanh/sigmoid of the kernel are checked over
a dense grid against numpy (their stated bound). DynamicQuantizeLSTM (run-time uint8 quantization of X and
h, integer GEMMs) is checked against onnxruntime and, for both integer products, a numpy oracle. The
ddddocr CRNN captcha recognizer (a bidirectional LSTM of 512 units) and its ``quantize_dynamic`` version
are compared with onnxruntime when ``ddddocr`` is installed.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numba
import numpy as np
import onnx
import pytest
from hypothesis import given
from hypothesis import strategies as st
from kernel_cases import property_settings
from onnx import TensorProto, helper, numpy_helper
from onnx.reference import ReferenceEvaluator

import cnnjit
from cnnjit.compiler.codegen import simd
from cnnjit.compiler.codegen.simd_int import host_int_width
from cnnjit.ir.errors import UnsupportedOpError
from cnnjit.ir.ops.recurrent import gru_loop_ref

ort = pytest.importorskip("onnxruntime")

GATES = {"LSTM": 4, "GRU": 3, "RNN": 1}


def recurrent_model(op: str, T: int, B: int, I: int, H: int, direction: str, *, h0: bool = False,
                    c0: bool = False, seq: bool = False, peep: bool = False, seed: int = 0, layout: int = 0,
                    opset: int = 14, **attrs) -> tuple[onnx.ModelProto, dict[str, np.ndarray]]:
    """A one-node ``op`` model with constant weights; X (and the optional states, lengths) are inputs."""
    rng = np.random.default_rng(seed)
    D = 2 if direction == "bidirectional" else 1
    ng = GATES[op]
    inits = {"W": rng.normal(0, 0.5, (D, ng * H, I)), "R": rng.normal(0, 0.5, (D, ng * H, H)),
             "B": rng.normal(0, 0.5, (D, 2 * ng * H))}
    xs = (B, T, I) if layout else (T, B, I)
    sshape = (B, D, H) if layout else (D, B, H)
    feeds = {"X": rng.normal(size=xs).astype(np.float32)}
    if seq:
        feeds["seq"] = rng.integers(1, T + 1, B).astype(np.int32)
    if h0:
        feeds["h0"] = rng.normal(size=sshape).astype(np.float32)
    if c0:
        feeds["c0"] = rng.normal(size=sshape).astype(np.float32)
    names = ["X", "W", "R", "B", "seq" if seq else "", "h0" if h0 else ""]
    outs = ["Y", "Y_h"]
    if op == "LSTM":
        names.append("c0" if c0 else "")
        if peep:
            inits["P"] = rng.normal(0, 0.5, (D, 3 * H))
            names.append("P")
        outs.append("Y_c")
    if layout:
        attrs["layout"] = 1
    node = helper.make_node(op, names, outs, direction=direction, hidden_size=H, **attrs)
    graph = helper.make_graph(
        [node], "recurrent",
        [helper.make_tensor_value_info(k, TensorProto.INT32 if k == "seq" else TensorProto.FLOAT, list(v.shape))
         for k, v in feeds.items()],
        [helper.make_tensor_value_info(o, TensorProto.FLOAT, None) for o in outs],
        initializer=[numpy_helper.from_array(v.astype(np.float32), name=k) for k, v in inits.items()])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)], ir_version=8), feeds


def run_ort(model: onnx.ModelProto, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
    so = ort.SessionOptions()
    so.intra_op_num_threads = 1
    return ort.InferenceSession(model.SerializeToString(), so, providers=["CPUExecutionProvider"]).run(None, feeds)


def run_cnnjit(model: onnx.ModelProto, feeds: dict[str, np.ndarray], width: int = 16) -> list[np.ndarray]:
    compiled = cnnjit.compile(model, vector_width=width)
    loops = {c.variant for c in compiled._default_spec().program.calls if c.op.endswith("Loop")}
    assert loops == {"simd_recurrence"}, loops
    return compiled.run(None, feeds)


def assert_close(got: list[np.ndarray], want: list[np.ndarray], tol: float = 2e-6) -> None:
    assert len(got) == len(want)
    for g, w in zip(got, want):
        assert g.shape == w.shape
        np.testing.assert_allclose(g, w, rtol=0, atol=tol * max(1.0, float(np.abs(w).max())))


@st.composite
def layers(draw) -> dict:
    op = draw(st.sampled_from(["LSTM", "GRU", "GRU", "RNN"]))
    case = dict(op=op, T=draw(st.integers(1, 5)), B=draw(st.integers(1, 3)), I=draw(st.integers(1, 4)),
                H=draw(st.integers(1, 20)), direction=draw(st.sampled_from(["forward", "reverse", "bidirectional"])),
                h0=draw(st.booleans()), seq=draw(st.booleans()), seed=draw(st.integers(0, 2**16)))
    if op == "LSTM":
        case["c0"] = draw(st.booleans())
    if op == "GRU":
        case["linear_before_reset"] = draw(st.sampled_from([0, 1]))
    return case


@property_settings(12)
@given(case=layers(), width=st.sampled_from([4, 8, 16]))
def test_recurrent_layers_match_onnxruntime(case: dict, width: int) -> None:
    model, feeds = recurrent_model(**case)
    assert_close(run_cnnjit(model, feeds, width), run_ort(model, feeds))


#: attribute cases and their oracle: ``onnx.reference`` ignores clip, input_forget and activations (it always
#: runs the defaults), onnxruntime refuses layout=1
ATTRIBUTE_CASES = [
    ("ort", dict(op="LSTM", peep=True, clip=0.6, direction="bidirectional", h0=True, c0=True)),
    ("ort", dict(op="LSTM", peep=True, input_forget=1, direction="forward", seq=True)),
    ("ort", dict(op="LSTM", activations=["Relu", "Sigmoid", "Tanh"], direction="reverse")),
    ("ort", dict(op="GRU", activations=["Tanh", "Relu", "Sigmoid", "Tanh"], direction="bidirectional", clip=1.5)),
    ("ort", dict(op="RNN", activations=["Sigmoid", "Relu"], direction="bidirectional", h0=True)),
    ("ref", dict(op="LSTM", layout=1, direction="bidirectional", h0=True, c0=True, peep=True)),
    ("ref", dict(op="GRU", layout=1, direction="reverse", h0=True, linear_before_reset=1)),
    ("ref", dict(op="RNN", layout=1, direction="forward", h0=True)),
]


@pytest.mark.parametrize("k", range(len(ATTRIBUTE_CASES)))
def test_attributes_match_an_oracle(k: int) -> None:
    """Each case at one vector width, alternating 8 and 16 (the property test above draws widths)."""
    oracle, extra = ATTRIBUTE_CASES[k]
    width = 8 if k % 2 else 16
    model, feeds = recurrent_model(T=4, B=2, I=3, H=7, seed=3, **extra)
    want = run_ort(model, feeds) if oracle == "ort" else ReferenceEvaluator(model).run(None, feeds)
    assert_close(run_cnnjit(model, feeds, width), want)


def test_zero_initial_states_and_full_lengths_fold_away() -> None:
    model, feeds = recurrent_model("LSTM", 3, 2, 2, 5, "forward")
    zeros = [numpy_helper.from_array(np.zeros((1, 2, 5), np.float32), n) for n in ("h0", "c0")]
    lens = numpy_helper.from_array(np.full(2, 3, np.int32), "seq")
    model.graph.initializer.extend(zeros + [lens])
    model.graph.node[0].input[4:7] = ["seq", "h0", "c0"]
    compiled = cnnjit.compile(model)
    (loop,) = [n for n in compiled.ir.nodes if n.op == "LSTMLoop"]
    assert len(loop.inputs) == 2  # gates and R only
    assert_close(compiled.run(None, feeds), run_ort(model, feeds))


def test_float_projection_feeds_the_recurrence_time_major() -> None:
    """The float projection's Gemm output ``[T*B, D*NG*H]`` is the recurrence's ``G`` as it is (``time_major``,
    no Transpose left), and the op's reference gives the same result for both layouts of ``G``."""
    model, feeds = recurrent_model("GRU", 4, 2, 3, 5, "bidirectional", h0=True, linear_before_reset=1)
    compiled = cnnjit.compile(model)
    (loop,) = [n for n in compiled.ir.nodes if n.op == "GRULoop"]
    assert loop.attrs["time_major"] == 1 and loop.inputs[0].shape == (4, 2, 2 * 3 * 5)
    assert not [n for n in compiled.ir.nodes if n.op == "Transpose"]
    assert_close(compiled.run(None, feeds), run_ort(model, feeds))
    rng = np.random.default_rng(1)
    g = rng.normal(size=(4, 2, 30)).astype(np.float32)
    rest = [rng.normal(size=(2, 15, 5)).astype(np.float32), rng.normal(size=(2, 5)).astype(np.float32)]
    attrs = {"hidden_size": 5, "direction": "bidirectional", "activations": ("Sigmoid", "Tanh") * 2, "clip": 0.0,
             "linear_before_reset": 1}
    tm = gru_loop_ref([g, *rest], {**attrs, "time_major": 1})
    gm = gru_loop_ref([np.ascontiguousarray(g.transpose(2, 0, 1)), *rest], {**attrs, "time_major": 0})
    for a, b in zip(tm, gm):
        np.testing.assert_array_equal(a, b)


def test_unsupported_activation_is_refused_clearly() -> None:
    model, _ = recurrent_model("RNN", 2, 1, 2, 3, "forward", activations=["HardSigmoid"])
    with pytest.raises(UnsupportedOpError, match="activation 'HardSigmoid' is not supported"):
        cnnjit.compile(model)


@pytest.mark.parametrize("op, attrs, why", [
    ("LSTM", {"activations": ["Sigmoid", "Elu", "Tanh"]}, "activation 'Elu' is not supported"),
    ("GRU", {"activations": ["Sigmoid", "Tanh"], "activation_alpha": [0.5]}, "activation_alpha"),
    ("RNN", {"activations": ["ThresholdedRelu"]}, "activation 'ThresholdedRelu' is not supported")])
def test_recurrent_refusals_listed_with_other_unsupported_ops(op: str, attrs: dict, why: str) -> None:
    """A layer cnnjit cannot run is named in the one error that lists every unsupported node, together
    with an op it does not know at all (``check_supported`` reads VARIANT_CHECKS before importing)."""
    model, _ = recurrent_model(op, 2, 1, 2, 3, "forward", **attrs)
    model.graph.node[0].name = "rec"
    model.graph.node.append(helper.make_node("NonZero", ["X"], ["nz"], name="nz_node"))
    model.graph.output.append(helper.make_tensor_value_info("nz", onnx.TensorProto.INT64, None))
    with pytest.raises(UnsupportedOpError) as ei:
        cnnjit.compile(model)
    msg = str(ei.value)
    assert op in msg and "'rec'" in msg and why in msg
    assert "NonZero" in msg and "'nz_node'" in msg


@pytest.mark.parametrize("act,fn,bound", [("Tanh", np.tanh, 4e-7), ("Sigmoid", lambda x: 1 / (1 + np.exp(-x)), 2e-7)])
def test_vector_activations_within_their_bound(act: str, fn, bound: float) -> None:
    """An RNN with W = 1, R = 0, B = 0 applies the kernel's vector activation to X itself."""
    n = 4096
    x = np.concatenate([np.linspace(-20, 20, n - 6), [0.0, -1e-30, 1e-7, -50.0, 50.0, 7.9]]).astype(np.float32)
    graph = helper.make_graph(
        [helper.make_node("RNN", ["X", "W", "R"], ["Y"], hidden_size=1, activations=[act])], "act",
        [helper.make_tensor_value_info("X", TensorProto.FLOAT, [n, 1, 1])],
        [helper.make_tensor_value_info("Y", TensorProto.FLOAT, None)],
        initializer=[numpy_helper.from_array(np.ones((1, 1, 1), np.float32), "W"),
                     numpy_helper.from_array(np.zeros((1, 1, 1), np.float32), "R")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 14)], ir_version=8)
    for width in (8, 16):
        y = run_cnnjit(model, {"X": x.reshape(n, 1, 1)}, width)[0].reshape(-1)
        assert np.abs(y.astype(np.float64) - fn(x.astype(np.float64))).max() <= bound


# -- DynamicQuantizeLSTM -----------------------------------------------------------------------------------
def _quantized(model: onnx.ModelProto, tmp_path: Path) -> onnx.ModelProto:
    from onnxruntime.quantization import quantize_dynamic

    src, dst = tmp_path / "f.onnx", tmp_path / "q.onnx"
    onnx.save(model, src)
    quantize_dynamic(str(src), str(dst))
    return onnx.load(dst)


def dq_lstm_model(T: int, B: int, I: int, H: int, direction: str, *, h0: bool = False, c0: bool = False,
                  seq: bool = False, seed: int = 0, rz: int = 0) -> tuple[onnx.ModelProto, dict[str, np.ndarray]]:
    """A one-node DynamicQuantizeLSTM with random int8 weights: ``R`` over the full range (so onnxruntime's
    non-VNNI int16 saturation happens), ``|W| <= 63`` (no saturation in the input GEMM: exact products).
    With ``seq``, one sequence has the full length (onnxruntime quantizes ``X`` over the first ``max(seq)``
    steps, cnnjit over all of ``X``)."""
    rng = np.random.default_rng(seed)
    D = 2 if direction == "bidirectional" else 1
    inits = {"W": rng.integers(-63, 64, (D, I, 4 * H)).astype(np.int8),
             "R": rng.integers(-127, 128, (D, H, 4 * H)).astype(np.int8),
             "B": rng.normal(0, 0.5, (D, 8 * H)).astype(np.float32),
             "Ws": rng.uniform(0.005, 0.02, D).astype(np.float32), "Wz": np.zeros(D, np.int8),
             "Rs": rng.uniform(0.01, 0.04, D).astype(np.float32), "Rz": np.full(D, rz, np.int8)}
    feeds = {"X": rng.normal(size=(T, B, I)).astype(np.float32)}
    if seq:
        feeds["seq"] = rng.integers(1, T + 1, B).astype(np.int32)
        feeds["seq"][0] = T
    for k, on in (("h0", h0), ("c0", c0)):
        if on:
            feeds[k] = rng.normal(size=(D, B, H)).astype(np.float32)
    names = ["X", "W", "R", "B"] + [k if k in feeds else "" for k in ("seq", "h0", "c0")] + ["", "Ws", "Wz", "Rs",
                                                                                         "Rz"]
    node = helper.make_node("DynamicQuantizeLSTM", names, ["Y", "Y_h", "Y_c"], domain="com.microsoft",
                            direction=direction, hidden_size=H)
    graph = helper.make_graph(
        [node], "dqlstm",
        [helper.make_tensor_value_info(k, TensorProto.INT32 if k == "seq" else TensorProto.FLOAT, list(v.shape))
         for k, v in feeds.items()],
        [helper.make_tensor_value_info(o, TensorProto.FLOAT, None) for o in ("Y", "Y_h", "Y_c")],
        initializer=[numpy_helper.from_array(v, name=k) for k, v in inits.items()])
    opsets = [helper.make_opsetid("", 14), helper.make_opsetid("com.microsoft", 1)]
    return helper.make_model(graph, opset_imports=opsets, ir_version=8), feeds


def run_dq_cnnjit(model: onnx.ModelProto, feeds: dict[str, np.ndarray], width: int) -> list[np.ndarray]:
    """cnnjit with the check that the quantized recurrence (not the float LSTM) ran."""
    compiled = cnnjit.compile(model, vector_width=width)
    calls = compiled._default_spec().program.calls
    assert {(c.op, c.variant) for c in calls if c.op.endswith("Loop")} == {("DQLSTMLoop", "simd_recurrence")}
    return compiled.run(None, feeds)


@st.composite
def dq_layers(draw) -> dict:
    return dict(T=draw(st.integers(1, 5)), B=draw(st.integers(1, 2)), I=draw(st.integers(1, 6)),
                H=draw(st.integers(1, 20)), direction=draw(st.sampled_from(["forward", "reverse", "bidirectional"])),
                h0=draw(st.booleans()), c0=draw(st.booleans()), seq=draw(st.booleans()),
                seed=draw(st.integers(0, 2**16)))


@property_settings(8)
@given(case=dq_layers(), width=st.sampled_from([4, 8, 16]))
def test_dynamic_quantize_lstm_matches_onnxruntime(case: dict, width: int) -> None:
    """onnxruntime quantizes X (whole tensor) and each batch row's h at every step (the rows its thread
    computes: one per thread here) to uint8, multiplies in integers and rescales; cnnjit does the same, so
    the two agree to float rounding (measured < 1e-6), not to the ~1e-2 of the float LSTM of the
    dequantized weights."""
    model, feeds = dq_lstm_model(**case)
    so = ort.SessionOptions()
    so.intra_op_num_threads = case["B"]
    want = ort.InferenceSession(model.SerializeToString(), so, providers=["CPUExecutionProvider"]).run(None, feeds)
    assert_close(run_dq_cnnjit(model, feeds, width), want, tol=1e-5)


def _pairs_clamped(q: np.ndarray, zp: int, R: np.ndarray) -> np.ndarray:
    """``(q - zp) @ R`` for uint8 ``q [K]`` as onnxruntime's x86 kernels without VNNI: raw products of
    ``k = 2i, 2i+1`` summed and clamped to int16, the zero point's term apart."""
    p = q[:, None] * R
    p = np.concatenate([p, np.zeros((len(p) % 2, R.shape[1]), np.int64)])
    return np.clip(p[0::2] + p[1::2], -32768, 32767).sum(0) - zp * R.sum(0)


def _dq_oracle(model: onnx.ModelProto, feeds: dict[str, np.ndarray], saturate: bool,
               project_saturate: bool = False) -> list[np.ndarray]:
    """A plain numpy DynamicQuantizeLSTM (forward, batch 1, no initial states) after onnxruntime's
    algorithm: uint8 quantization of X and of h per step, integer GEMMs (``saturate``: products of
    ``k = 2i, 2i+1`` of the recurrent GEMM summed and clamped to int16; ``project_saturate``: the same for
    the input projection), float32 rescaling."""
    w = {t.name: numpy_helper.to_array(t) for t in model.graph.initializer}

    def quant(v: np.ndarray) -> tuple[np.ndarray, int, np.float32]:
        lo, hi = np.float32(min(v.min(), 0)), np.float32(max(v.max(), 0))
        s = np.float32(1.0) if lo == hi else np.float32((hi - lo) / np.float32(255))
        zp = int(np.round(np.clip(-lo / s, 0, 255)))
        return np.clip(np.round(v / s) + zp, 0, 255).astype(np.int64), zp, s

    x = feeds["X"][:, 0]
    H = w["R"].shape[1]
    qx, zx, sx = quant(x)
    W0 = w["W"][0].astype(np.int64)
    g = (np.stack([_pairs_clamped(r, zx, W0) for r in qx]) if project_saturate
         else (qx - zx) @ W0).astype(np.float32) * (sx * w["Ws"][0])
    bias = w["B"][0, :4 * H] + w["B"][0, 4 * H:]
    R = w["R"][0].astype(np.int64) - int(w["Rz"][0])
    h, c = np.zeros(H, np.float32), np.zeros(H, np.float32)
    ys = []
    for t in range(len(x)):
        qh, zh, sh = quant(h)
        if saturate:
            acc = _pairs_clamped(qh, zh, R)
        else:
            acc = (qh - zh) @ R
        pre = (g[t] + acc.astype(np.float32) * (sh * w["Rs"][0]) + bias).astype(np.float64).reshape(4, H)
        i, o, f = (1 / (1 + np.exp(-pre[k])) for k in range(3))
        c = (f * c + i * np.tanh(pre[3])).astype(np.float32)
        h = (o * np.tanh(c)).astype(np.float32)
        ys.append(h)
    y = np.stack(ys).reshape(len(x), 1, 1, H)
    return [y, h.reshape(1, 1, H), c.reshape(1, 1, H)]


@pytest.mark.parametrize("saturate", [False, True])
@pytest.mark.parametrize("width", [4, 8, 16])
def test_dynamic_quantize_lstm_both_u8s8_products(saturate: bool, width: int, monkeypatch) -> None:
    """Both integer products of the recurrence (exact, as with VNNI, and int16-saturated, as onnxruntime's
    x86 kernels without VNNI) whatever this host does, against a numpy oracle; the two differ here."""
    import cnnjit.compiler.frontend.import_recurrent as imp

    monkeypatch.setattr(imp, "ort_u8s8_saturates", lambda: saturate)
    model, feeds = dq_lstm_model(6, 1, 5, 19, "forward", seed=11)
    want = _dq_oracle(model, feeds, saturate)
    assert_close(run_dq_cnnjit(model, feeds, width), want, tol=1e-5)
    other = _dq_oracle(model, feeds, not saturate)
    assert np.abs(other[0] - want[0]).max() > 1e-3  # the case does saturate


# -- the ddddocr CRNN --------------------------------------------------------------------------------------
def _ddddocr_model() -> Path:
    spec = importlib.util.find_spec("ddddocr")
    if spec is None or not spec.submodule_search_locations:
        pytest.skip("ddddocr is not installed (pip install --no-deps ddddocr==1.6.1)")
    path = Path(next(iter(spec.submodule_search_locations))) / "common.onnx"
    if not path.is_file():
        pytest.skip(f"{path} not found")
    return path


def _decode(logits: np.ndarray) -> list[int]:
    """CTC greedy decoding: the argmax per step, repeats merged, blanks (class 0) dropped."""
    best = logits.reshape(logits.shape[0], -1).argmax(-1)
    return [int(c) for i, c in enumerate(best) if c != 0 and (i == 0 or c != best[i - 1])]


def _captcha(seed: int) -> np.ndarray:
    """A captcha-like input: dark strokes on a light, noisy background."""
    rng = np.random.default_rng(seed)
    img = 0.85 + 0.1 * rng.random((64, 256))
    for _ in range(6):
        r, c = rng.integers(8, 56), rng.integers(10, 246)
        img[max(r - 12, 0):r + 12, max(c - 3, 0):c + 3] = 0.1 * rng.random()
    return img.astype(np.float32).reshape(1, 1, 64, 256)


@pytest.mark.slow
@pytest.mark.parametrize("quantized,tol", [(False, 1e-5), (True, 0.015)])
def test_ddddocr_crnn_matches_onnxruntime(quantized: bool, tol: float, tmp_path: Path) -> None:
    """Float: max |error| <= 1e-5 of the logits' scale (measured 1e-6). quantize_dynamic: <= 1.5% (measured
    0.25% / 0.46% on AVX2: cnnjit quantizes X and h like onnxruntime, but computes the input GEMM exactly where
    onnxruntime's non-VNNI kernels saturate pairs of products to int16)."""
    model = onnx.load(_ddddocr_model())
    if quantized:
        model = _quantized(model, tmp_path)
    compiled = cnnjit.compile(model, input_shapes={"input1": (1, 1, 64, 256)})
    op = "DQLSTMLoop" if quantized else "LSTMLoop"
    assert {c.variant for c in compiled._default_spec().program.calls if c.op == op} == {"simd_recurrence"}
    for seed in range(2):
        x = _captcha(seed)
        (want,) = run_ort(model, {"input1": x})
        (got,) = compiled.run(None, {"input1": x})
        assert np.abs(got - want).max() <= tol * np.abs(want).max()
        assert _decode(got) == _decode(want)


@pytest.mark.parametrize("rz,int8", [(0, True), (3, False)])
@pytest.mark.parametrize("width", [4, 8, 16])
def test_dynamic_quantize_lstm_int8_panels(rz: int, int8: bool, width: int, monkeypatch) -> None:
    """``R`` less its zero point within int8 (zero point 0): the recurrence's panels are stored as bytes and
    widened in the GEMV (``vloadi8``), or, where a block is two integer vectors (the host's width), meet the
    state's bytes in the integer GEMV (``ivdot``); a zero point of 3 takes ``R - 3`` below -128, so they stay
    float32. Both against the numpy oracle (exact integer products)."""
    import cnnjit.compiler.frontend.import_recurrent as imp

    monkeypatch.setattr(imp, "ort_u8s8_saturates", lambda: False)
    model, feeds = dq_lstm_model(4, 1, 5, 11, "forward", seed=7, rz=rz)
    compiled = cnnjit.compile(model, vector_width=width)
    dot = int8 and width == host_int_width()
    assert ("ivdot" in compiled.source()) == dot
    assert ("vloadi8" in compiled.source()) == (int8 and not dot)
    assert_close(compiled.run(None, feeds), _dq_oracle(model, feeds, False), tol=1e-5)


@property_settings(10)
@given(data=st.data(), n=st.sampled_from([4, 8, 16, 32]))
def test_vloadi8_widens_int8_lanes(data, n: int) -> None:
    """``vloadi8{n}(buf, i)``: the int8 bytes ``buf[i:i + n]`` as float32 lanes, exactly, at any offset."""
    load, store = getattr(simd, f"vloadi8{n}"), getattr(simd, f"vstore{n}")

    @numba.njit
    def widen(b, i, out):
        store(out, 0, load(b, i))

    size = data.draw(st.integers(n, 3 * n))
    buf = np.array(data.draw(st.lists(st.integers(-128, 127), min_size=size, max_size=size)), np.int8)
    i = data.draw(st.integers(0, size - n))
    out = np.full(n, np.nan, np.float32)
    widen(buf, i, out)
    assert np.array_equal(out, buf[i:i + n].astype(np.float32))


@property_settings(8)
@given(op=st.sampled_from(["LSTM", "GRU", "RNN", "DQLSTM"]), T=st.integers(1, 5), B=st.integers(1, 2),
       H=st.integers(1, 20), width=st.sampled_from([4, 8, 16]), seed=st.integers(0, 2**16))
def test_bidirectional_directions_are_the_parts_of_one_step(op: str, T: int, B: int, H: int, width: int,
                                                            seed: int) -> None:
    """On a team, a bidirectional layer's two directions (``simd_recurrence``: one call each,
    ``parts.INDEPENDENT_CALLS``) are the two parts of one step, bit-identical to one thread and matching
    onnxruntime. (Every layer counts as worth splitting here: the thresholds are for real models' sizes.)"""
    from cnnjit.compiler.codegen import threads as split

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(split, "MIN_PARALLEL_US", 0.0)
        mp.setattr(split, "MIN_PARALLEL_TOTAL_US", 0.0)
        mp.setattr(split, "MIN_PART_US", 1e-6)
        if op == "DQLSTM":
            model, feeds = dq_lstm_model(T, B, 3, H, "bidirectional", seed=seed)
        else:
            model, feeds = recurrent_model(op, T, B, 3, H, "bidirectional", seed=seed)
        one = cnnjit.compile(model, vector_width=width, threads=1)
        two = cnnjit.compile(model, vector_width=width, threads=2)
    p = two._default_spec().program
    loops = [(st_.parts, [p.calls[st_.first + i].note.rsplit("[", 1)[1] for i in range(st_.parts)])
             for st_ in p.meta["step_plan"] if p.calls[st_.first].op.endswith("Loop")]
    assert loops == [(2, ["call 1 of 2]", "call 2 of 2]"])], loops
    assert {c.variant for c in p.calls if c.op.endswith("Loop")} == {"simd_recurrence"}
    got = two.run(None, feeds)
    for g, w in zip(got, one.run(None, feeds)):
        np.testing.assert_array_equal(g, w)
    so = ort.SessionOptions()
    so.intra_op_num_threads = B  # (DynamicQuantizeLSTM: one batch row per thread, as cnnjit quantizes h)
    want = ort.InferenceSession(model.SerializeToString(), so, providers=["CPUExecutionProvider"]).run(None, feeds)
    assert_close(got, want, tol=1e-5 if op == "DQLSTM" else 2e-6)
