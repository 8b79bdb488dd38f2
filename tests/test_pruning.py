"""Pruning (``cnnjit.prune``) and the sparse (CSR) pointwise / Gemm kernels."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from onnx import TensorProto, helper, numpy_helper

import cnnjit

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
from benchmarks.models import mobilenet_v2  # noqa: E402


def _ort(model: onnx.ModelProto, feeds: dict) -> np.ndarray:
    so = ort.SessionOptions()
    so.intra_op_num_threads = 1
    return ort.InferenceSession(model.SerializeToString(), so, providers=["CPUExecutionProvider"]).run(None, feeds)[0]


def _run(cm, feeds: dict) -> np.ndarray:
    y = cm(*feeds.values())
    return y[0] if isinstance(y, (list, tuple)) else y


def _notes(cm, feeds: dict) -> list[str]:
    spec = cm.specialization({k: v.shape for k, v in feeds.items()})
    return [c.note for c in spec.program.calls]


def _model(nodes, inits, inp, out_name, out_shape) -> onnx.ModelProto:
    g = helper.make_graph(nodes, "t", [helper.make_tensor_value_info("x", TensorProto.FLOAT, list(inp))],
                          [helper.make_tensor_value_info(out_name, TensorProto.FLOAT, list(out_shape))],
                          initializer=[numpy_helper.from_array(v, k) for k, v in inits.items()])
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 13)])
    m.ir_version = 8
    return m


@pytest.fixture(scope="module")
def small_mnv2() -> tuple[onnx.ModelProto, dict]:
    m = mobilenet_v2(0.35, 64, classes=10)
    return m, {"input": np.random.default_rng(0).standard_normal((1, 3, 64, 64)).astype(np.float32)}


def _feeds(m: onnx.ModelProto) -> dict:
    i = m.graph.input[0]
    shp = [d.dim_value for d in i.type.tensor_type.shape.dim]
    return {i.name: np.random.default_rng(0).standard_normal(shp).astype(np.float32)}


# ---------------------------------------------------------------------------------------------------------
# sparse kernels == dense numpy on the same pruned weights
# ---------------------------------------------------------------------------------------------------------
@settings(max_examples=20, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(c=st.integers(1, 40), m=st.integers(1, 24), hw=st.sampled_from([(1, 1), (3, 5), (7, 7), (8, 16), (13, 11)]),
       density=st.sampled_from([0.0, 0.02, 0.1, 0.3, 0.5, 0.8, 1.0]), zero_rows=st.integers(0, 3),
       act=st.sampled_from([None, "Relu", "Clip"]), residual=st.booleans(), seed=st.integers(0, 2**16))
def test_sparse_pointwise_matches_dense(c, m, hw, density, zero_rows, act, residual, seed):
    rng = np.random.default_rng(seed)
    w = rng.standard_normal((m, c, 1, 1)).astype(np.float32)
    w *= rng.random(w.shape) < density
    w[rng.integers(0, m, zero_rows)] = 0.0  # all-zero output rows
    b = rng.standard_normal(m).astype(np.float32)
    x = rng.standard_normal((1, c, *hw)).astype(np.float32)
    nodes = [helper.make_node("Conv", ["x", "W", "B"], ["y0"], kernel_shape=[1, 1], pads=[0, 0, 0, 0])]
    inits = {"W": w, "B": b}
    ref = np.einsum("mc,chw->mhw", w[:, :, 0, 0].astype(np.float64), x[0].astype(np.float64))[None] + b[:, None, None]
    last = "y0"
    if residual:
        r = rng.standard_normal((1, m, *hw)).astype(np.float32)
        inits["R"] = r
        nodes.append(helper.make_node("Add", [last, "R"], ["y1"]))
        ref, last = ref + r, "y1"
    if act == "Relu":
        nodes.append(helper.make_node("Relu", [last], ["y"]))
        ref = np.maximum(ref, 0)
    elif act == "Clip":
        inits.update(lo=np.array(0, np.float32), hi=np.array(1.5, np.float32))
        nodes.append(helper.make_node("Clip", [last, "lo", "hi"], ["y"]))
        ref = np.clip(ref, 0, 1.5)
    else:
        nodes.append(helper.make_node("Identity", [last], ["y"]))
    model = _model(nodes, inits, x.shape, "y", (1, m, *hw))
    cm = cnnjit.compile(model, sparse_threshold=0.0)  # always the CSR kernel
    feeds = {"x": x}
    assert any("sparse" in n for n in _notes(cm, feeds))
    np.testing.assert_allclose(_run(cm, feeds), ref, rtol=1e-4, atol=1e-4)


@settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(k=st.integers(1, 50), n=st.integers(1, 30), rows=st.integers(1, 3), trans_b=st.booleans(),
       density=st.sampled_from([0.0, 0.1, 0.5, 1.0]), relu=st.booleans(), seed=st.integers(0, 2**16))
def test_sparse_gemm_matches_dense(k, n, rows, trans_b, density, relu, seed):
    rng = np.random.default_rng(seed)
    bmat = rng.standard_normal((k, n)).astype(np.float32) * (rng.random((k, n)) < density)
    c = rng.standard_normal(n).astype(np.float32)
    a = rng.standard_normal((rows, k)).astype(np.float32)
    nodes = [helper.make_node("Gemm", ["x", "B", "C"], ["g"], transB=int(trans_b), alpha=0.5, beta=2.0)]
    nodes.append(helper.make_node("Relu" if relu else "Identity", ["g"], ["y"]))
    model = _model(nodes, {"B": np.ascontiguousarray(bmat.T) if trans_b else bmat, "C": c}, a.shape, "y", (rows, n))
    ref = 0.5 * a.astype(np.float64) @ bmat + 2.0 * c
    ref = np.maximum(ref, 0) if relu else ref
    cm = cnnjit.compile(model, sparse_threshold=0.0)
    assert any("sparse" in s for s in _notes(cm, {"x": a}))
    np.testing.assert_allclose(_run(cm, {"x": a}), ref, rtol=1e-4, atol=1e-4)


def test_dense_weights_keep_dense_kernel(small_mnv2, monkeypatch):
    # the kernel choice only: entry="lazy" lowers and binds the same schedule but compiles no kernel (the
    # sparse kernels' results are checked against numpy above, the dense ones throughout the suite)
    m, feeds = small_mnv2
    assert not any("sparse" in n for n in _notes(cnnjit.compile(m, entry="lazy"), feeds))
    p = cnnjit.prune(m, sparsity=0.95)
    assert any("sparse" in n for n in _notes(cnnjit.compile(p, entry="lazy"), feeds))
    assert not any("sparse" in n for n in _notes(cnnjit.compile(p, sparse_threshold=2.0, entry="lazy"), feeds))
    monkeypatch.setenv("CNNJIT_SPARSE_THRESHOLD", "1.5")
    assert not any("sparse" in n for n in _notes(cnnjit.compile(p, entry="lazy"), feeds))


# ---------------------------------------------------------------------------------------------------------
# the prune API
# ---------------------------------------------------------------------------------------------------------
def _weights(m: onnx.ModelProto) -> dict[str, np.ndarray]:
    inits = {t.name: numpy_helper.to_array(t) for t in m.graph.initializer}
    return {n.name: inits[n.input[1]] for n in m.graph.node if n.op_type in ("Conv", "Gemm")}


def test_magnitude_layer_and_global(small_mnv2):
    m, _ = small_mnv2
    p = cnnjit.prune(m, sparsity=0.8, method="magnitude")
    names = [n.name for n in m.graph.node if n.op_type in ("Conv", "Gemm")]
    w0, w1 = _weights(m), _weights(p.model)
    assert np.array_equal(w0[names[0]], w1[names[0]]) and np.array_equal(w0[names[-1]], w1[names[-1]])
    for name in names[1:-1]:
        if w0[name].shape[1] == 1:  # depthwise: dense by default
            assert np.array_equal(w0[name], w1[name])
        else:
            assert abs((w1[name] == 0).mean() - 0.8) < 0.02
            kept = w1[name] != 0
            assert np.abs(w0[name][kept]).min() >= np.abs(w0[name][~kept]).max()
    g = cnnjit.prune(m, sparsity=0.8, scope="global", exclude=[names[1]], keep_first_last=False)
    wg = _weights(g.model)
    assert np.array_equal(wg[names[1]], w0[names[1]])
    assert (wg[names[0]] == 0).any()
    assert m.SerializeToString() == small_mnv2[0].SerializeToString()  # input untouched


def test_nm_pattern(small_mnv2):
    m, _ = small_mnv2
    p = cnnjit.prune(m, pattern="2:4", keep_first_last=False)
    for w in _weights(p.model).values():
        if w.ndim == 4 and w.shape[1] == 1:
            continue
        wm = np.moveaxis(w, 1, -1)
        c = wm.shape[-1] - wm.shape[-1] % 4
        groups = wm[..., :c].reshape(*wm.shape[:-1], -1, 4)
        assert ((groups != 0).sum(-1) <= 2).all()
    with pytest.raises(ValueError):
        cnnjit.prune(m, pattern="5:4")


@pytest.mark.parametrize("kw", [dict(sparsity=0.9), dict(pattern="2:4"), dict(sparsity=0.5, method="channel")])
def test_saved_model_matches_onnxruntime(small_mnv2, tmp_path, kw):
    m, feeds = small_mnv2
    p = cnnjit.prune(m, **kw)
    path = tmp_path / "p.onnx"
    p.save(path)
    loaded = onnx.load(str(path))
    onnx.checker.check_model(loaded)
    ref = _ort(loaded, feeds)
    np.testing.assert_allclose(_run(cnnjit.compile(str(path)), feeds), ref, rtol=1e-3, atol=1e-4)
    np.testing.assert_allclose(_run(cnnjit.compile(p), feeds), ref, rtol=1e-3, atol=1e-4)
    dev = p.deviation(feeds)
    assert set(dev) >= {"max_abs_diff", "cosine", "argmax_agreement"}
    rep = p.report()
    assert "sparsity" in rep and "FLOPs" in rep


def test_channel_pruning_shrinks_shapes(small_mnv2):
    m, feeds = small_mnv2
    p = cnnjit.prune(m, sparsity=0.5, method="channel")
    s = p.summary()
    assert s["params_after"] < 0.6 * s["params_before"]
    assert _ort(p.model, feeds).shape == _ort(m, feeds).shape


def _zero_channel_model(rng: np.random.Generator) -> onnx.ModelProto:
    """Conv -> Relu -> depthwise -> 1x1 (+ residual 1x1) -> Concat -> 1x1 -> GAP -> Flatten -> Gemm, where
    half of every prunable channel group has all-zero filters and zero bias."""
    def w(*shape):
        return rng.standard_normal(shape).astype(np.float32)

    c1, c2 = 8, 6
    W1, B1 = w(c1, 3, 3, 3), w(c1)
    W1[1::2] = 0
    B1[1::2] = 0
    Wd = w(c1, 1, 3, 3)
    Wa, Wb = w(c2, c1, 1, 1), w(c2, 3, 1, 1)
    Wa[:3] = 0
    Wb[:3] = 0
    Wc, Bc = w(4, c2 + c1, 1, 1), w(4)
    Wc[::2] = 0
    Bc[::2] = 0
    Wg, Bg = w(5, 4), w(5)
    inits = dict(W1=W1, B1=B1, Wd=Wd, Wa=Wa, Wb=Wb, Wc=Wc, Bc=Bc, Wg=Wg, Bg=Bg)
    nodes = [
        helper.make_node("Conv", ["x", "W1", "B1"], ["a"], kernel_shape=[3, 3], pads=[1, 1, 1, 1], name="c1"),
        helper.make_node("Relu", ["a"], ["ar"]),
        helper.make_node("Conv", ["ar", "Wd"], ["d"], kernel_shape=[3, 3], pads=[1, 1, 1, 1], group=c1, name="dw"),
        helper.make_node("Conv", ["d", "Wa"], ["pa"], kernel_shape=[1, 1], name="pa"),
        helper.make_node("Conv", ["x", "Wb"], ["pb"], kernel_shape=[1, 1], name="pb"),
        helper.make_node("Add", ["pa", "pb"], ["s"]),
        helper.make_node("Concat", ["s", "d"], ["cat"], axis=1),
        helper.make_node("Conv", ["cat", "Wc", "Bc"], ["e"], kernel_shape=[1, 1], name="pc"),
        helper.make_node("Relu", ["e"], ["er"]),
        helper.make_node("GlobalAveragePool", ["er"], ["gp"]),
        helper.make_node("Flatten", ["gp"], ["f"], axis=1),
        helper.make_node("Gemm", ["f", "Wg", "Bg"], ["y"], transB=1, name="fc"),
    ]
    return _model(nodes, inits, (1, 3, 10, 10), "y", (1, 5))


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_channel_pruning_zero_channels_is_exact(seed):
    m = _zero_channel_model(np.random.default_rng(seed))
    feeds = _feeds(m)
    p = cnnjit.prune(m, sparsity=0.5, method="channel", keep_first_last=False)
    w = _weights(p.model)
    assert w["c1"].shape[0] == 4 and w["dw"].shape[0] == 4 and w["pa"].shape == (3, 4, 1, 1)
    assert w["pb"].shape[0] == 3 and w["pc"].shape == (2, 7, 1, 1) and w["fc"].shape == (5, 2)
    np.testing.assert_allclose(_ort(p.model, feeds), _ort(m, feeds), rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(_run(cnnjit.compile(p), feeds), _ort(m, feeds), rtol=1e-4, atol=1e-4)
    # channels tied by the residual add are pruned together or not at all: excluding one producer locks both
    q = cnnjit.prune(m, sparsity=0.5, method="channel", keep_first_last=False, exclude=["pb"])
    wq = _weights(q.model)
    assert wq["pa"].shape[0] == 6 and wq["pb"].shape[0] == 6


def test_cli_prune(small_mnv2, tmp_path):
    m, feeds = small_mnv2
    src = tmp_path / "m.onnx"
    onnx.save(m, str(src))
    out = tmp_path / "o.onnx"
    r = subprocess.run([sys.executable, "-m", "cnnjit", "prune", str(src), "--sparsity", "0.8", "--method",
                        "magnitude", "-o", str(out), "--json"], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    info = json.loads(r.stdout)
    assert info["summary"]["sparsity"] > 0.3 and out.is_file()
    r = subprocess.run([sys.executable, "-m", "cnnjit", "prune", str(src), "--method", "bogus", "-o", str(out)],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 2
