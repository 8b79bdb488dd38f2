"""The benchmark model set (``benchmarks/models.py``) and harness (``benchmarks/harness.py``).

Every generated model builds, passes ``onnx.checker`` (full check, with shape inference) and compiles with
cnnjit, fused and unfused, to outputs matching onnxruntime within rtol 1e-3 / atol 1e-4 x output scale.
"""

from __future__ import annotations

import json
import sys

import numpy as np
import onnx
import pytest
from conftest import REPO_DIR, assert_outputs_match, graph_input_names, missing_reason, ort_session

import cnnjit

sys.path.insert(0, str(REPO_DIR))
from benchmarks import harness  # noqa: E402
from benchmarks.models import GENERATED, MODEL_SET, count_flops, load  # noqa: E402

SLOW = {"mobilenet_v2_224"}


def _params(names):
    return [pytest.param(n, id=n, marks=[pytest.mark.slow] if n in SLOW else []) for n in names]


@pytest.mark.parametrize("fuse", [True, False], ids=["fused", "unfused"])
@pytest.mark.parametrize("name", _params(GENERATED))
def test_generated_model_matches_onnxruntime(name: str, fuse: bool):
    model, feeds = load(name)
    onnx.checker.check_model(model, full_check=True)
    assert model.ir_version == 8
    assert [o.version for o in model.opset_import if o.domain in ("", "ai.onnx")] == [13]
    assert graph_input_names(model) == list(feeds)
    assert next(iter(feeds.values())).shape == MODEL_SET[name].input_shape
    ref = ort_session(model).run(None, feeds)
    scale = max(float(np.max(np.abs(r))) for r in ref)
    assert np.isfinite(scale) and 1e-3 < scale < 1e3, f"{name}: output scale {scale} (weights badly scaled?)"
    got = cnnjit.compile(model, fuse=fuse).run(None, feeds)
    assert_outputs_match(got, ref, rtol=1e-3, atol=1e-4 * scale, what=name)


@pytest.mark.parametrize("name", _params(GENERATED))
def test_generated_model_is_deterministic(name: str):
    a, fa = load(name)
    b, fb = load(name)
    assert a.SerializeToString() == b.SerializeToString()
    for k in fa:
        np.testing.assert_array_equal(fa[k], fb[k])


def test_generated_models_have_batchnorm_with_positive_var():
    for name in ("ds_cnn", "mobilenet_v1_025_96", "resnet8"):
        model, _ = load(name)
        inits = {i.name: onnx.numpy_helper.to_array(i) for i in model.graph.initializer}
        bns = [n for n in model.graph.node if n.op_type == "BatchNormalization"]
        assert bns, name
        for n in bns:
            assert np.all(inits[n.input[4]] > 0) and np.all(inits[n.input[1]] > 0)


@pytest.mark.parametrize("name", [n for n in MODEL_SET if n not in GENERATED])
def test_file_entries_declare_their_input_shape(name: str):
    entry = MODEL_SET[name]
    if not entry.available():
        pytest.skip(missing_reason(entry.path, "benchmark model file"))
    model, feeds = load(name)
    (inp,) = [i for i in model.graph.input if i.name in feeds]
    dims = [d.dim_value if d.HasField("dim_value") else None for d in inp.type.tensor_type.shape.dim]
    shape = feeds[inp.name].shape
    assert len(dims) == len(shape)
    assert all(d is None or d == s for d, s in zip(dims, shape)), (dims, shape)
    assert count_flops(model, {inp.name: shape}) > 0


def test_count_flops_lenet5():
    model, feeds = load("lenet5")
    macs = 6 * 28 * 28 * 25 + 16 * 10 * 10 * 6 * 25 + 400 * 120 + 120 * 84 + 84 * 10
    assert count_flops(model, {k: v.shape for k, v in feeds.items()}) == 2 * macs


def test_count_flops_depthwise_and_batch():
    model, feeds = load("ds_cnn")
    (name,) = feeds
    one = count_flops(model, {name: (1, 1, 49, 10)})
    # first conv 25x5 outputs x 64 x 40 taps; 4 x (depthwise 64 x 9 + pointwise 64 x 64) on 25x5; fc 64x12
    macs = 25 * 5 * 64 * 40 + 4 * 25 * 5 * (64 * 9 + 64 * 64) + 64 * 12
    assert one == 2 * macs


def test_measure_interleaves_and_summarizes():
    order = []
    stats = harness.measure({"a": lambda: order.append("a"), "b": lambda: order.append("b")}, runs=6, warmup=2)
    assert order[:4] == ["a", "b", "a", "b"]  # warm-up rounds
    timed = order[4:]
    assert all(sorted(timed[i:i + 2]) == ["a", "b"] for i in range(0, 12, 2))  # each round calls each once
    for s in stats.values():
        assert s["runs"] == 6 and len(s["times_ns"]) == 6
        assert s["min_ms"] <= s["median_ms"] <= s["p90_ms"] <= s["max_ms"]
        assert s["min_ms"] <= s["mean_ms"] <= s["max_ms"]


def test_measure_balances_predecessors():
    """No candidate systematically runs right after another (the one that pollutes the caches): over many
    rounds of three, each candidate follows each of the other two about equally often."""
    order = []
    harness.measure({k: (lambda k=k: order.append(k)) for k in "abc"}, runs=300, warmup=0)
    for x in "abc":
        prev = [order[i - 1] for i in range(1, len(order)) if order[i] == x]
        others = [y for y in "abc" if y != x]
        share = prev.count(others[0]) / len(prev)
        assert 0.35 <= share <= 0.65, (x, share)


def test_summarize_percentiles():
    s = harness.summarize([i * 1_000_000 for i in range(1, 11)])
    assert (s["min_ms"], s["median_ms"], s["p90_ms"], s["mean_ms"]) == (1.0, 5.5, 9.0, 5.5)


def test_writers(tmp_path):
    rows = [["lenet5", 0.25, 3], ["resnet8", 4.5, 10]]
    md = harness.write_markdown("t", ["model", "ms", "kernels"], rows, title="T", notes=["n"], out_dir=tmp_path,
                                machine={"cpu": "x"})
    text = md.read_text()
    assert "| model | ms | kernels |" in text and "| lenet5 | 0.25 | 3 |" in text
    js = harness.write_json("t", {"rows": rows, "a": np.float32(1.5)}, out_dir=tmp_path)
    data = json.loads(js.read_text())
    assert data["a"] == 1.5 and "cpu" in data["machine"] and "numba" in data["machine"]
    pytest.importorskip("matplotlib")
    png = harness.bar_chart("t", ["lenet5", "resnet8"], {"f": [0.25, 4.5], "u": [0.3, 5.0]},
                            errors={"f": [(0.2, 0.3), (4, 5)]}, annotate={"f": ["1.2x", "1.1x"]}, log=True,
                            out_dir=tmp_path)
    assert png is not None and png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_kernel_calls_counts_schedule_calls():
    model, feeds = load("lenet5")
    cm = cnnjit.compile(model, fuse=False)
    cm.run(None, feeds)
    p = cm._default_spec().program
    # the rendered schedule has one line per call after the ``def`` line
    assert harness.kernel_calls(p) == len(p.source.splitlines()) - 1 == len(p.calls)
    assert 1 <= len(p.kernel_sources) <= harness.kernel_calls(p)


def test_bursty_load_starts_its_processes_in_their_own_sessions_and_ends_them():
    """``benchmarks/bursty_load.BurstyLoad``: the load processes run (each its own session: another autogroup, as
    another user's programs) while the context is open, and are gone after it."""
    import os

    from benchmarks.bursty_load import BurstyLoad

    with BurstyLoad(2, burst_ms=(1.0, 2.0), duty=(0.5, 0.5)) as load:
        procs = list(load._ps)
        assert len(procs) == 2 and all(p.poll() is None for p in procs)
        assert all(os.getsid(p.pid) == p.pid != os.getsid(0) for p in procs)
    assert all(p.poll() is not None for p in procs) and not load._ps
