"""``cnnjit.compile(threads=N)``: large layers split over output channels and run concurrently.

The split must not change a single bit: each part runs the layer's own kernel on its channels.
"""

from __future__ import annotations

import numpy as np
import pytest
from onnx import TensorProto, helper, numpy_helper

import cnnjit
from cnnjit.compiler.codegen.threads import channel_ranges
from cnnjit.runtime.program import Buf, Call, Float, Int, render_schedule


def block_model(size: int = 32, seed: int = 0):
    """conv 3->32 (small, stays whole), depthwise 3x3 on 32 channels, pointwise 32->64, conv 3x3 64->64
    with a fused residual add and ReLU, then global pooling; batch 1."""
    rng = np.random.default_rng(seed)
    inits = []

    def const(name, shape, scale=1.0):
        a = (rng.standard_normal(shape) * scale).astype(np.float32)
        inits.append(numpy_helper.from_array(a, name))
        return name

    nodes = [
        helper.make_node("Conv", ["x", const("w0", (32, 3, 3, 3), 0.3), const("b0", (32,))], ["c0"], pads=[1] * 4),
        helper.make_node("Relu", ["c0"], ["r0"]),
        helper.make_node("Conv", ["r0", const("w1", (32, 1, 3, 3), 0.3), const("b1", (32,))], ["c1"], pads=[1] * 4,
                         group=32),
        helper.make_node("Clip", ["c1", const("lo", ()), const("hi", ())], ["r1"]),
        helper.make_node("Conv", ["r1", const("w2", (64, 32, 1, 1), 0.2), const("b2", (64,))], ["c2"]),
        helper.make_node("Conv", ["c2", const("w3", (64, 64, 3, 3), 0.05), const("b3", (64,))], ["c3"],
                         pads=[1] * 4),
        helper.make_node("Add", ["c3", "c2"], ["s3"]),
        helper.make_node("Relu", ["s3"], ["r3"]),
        helper.make_node("GlobalAveragePool", ["r3"], ["p"]),
        helper.make_node("Flatten", ["p"], ["y"]),
    ]
    inits[[i.name for i in inits].index("lo")] = numpy_helper.from_array(np.array(0.0, np.float32), "lo")
    inits[[i.name for i in inits].index("hi")] = numpy_helper.from_array(np.array(6.0, np.float32), "hi")
    g = helper.make_graph(nodes, "block",
                          [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, size, size])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 64]),
                           helper.make_tensor_value_info("c3", TensorProto.FLOAT, [1, 64, size, size])], inits)
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 13)])
    m.ir_version = 8
    return m


@pytest.fixture(scope="module")
def models():
    m = block_model()
    return m, cnnjit.compile(m), cnnjit.compile(m, threads=2)


def test_large_layers_are_split(models) -> None:
    _, one, two = models
    p1, p2 = one._default_spec().program, two._default_spec().program
    assert p1.meta.get("parallel_layers", 0) == 0
    # depthwise (32 ch), pointwise 32->64 and the 3x3 64->64 conv are split; the 3->32 first conv is small
    assert p2.meta["parallel_layers"] == 3 and p2.meta["entry"] == p1.meta["entry"]
    assert p2.source.count("[parallel: 2 parts]") == 3
    # one driver per kernel: the depthwise, the pointwise and the 3x3 conv kernels differ
    assert {ln.strip().split("(")[0] for ln in p2.source.splitlines() if "[parallel" in ln} == {"d0", "d1", "d2"}


def test_bit_identical_to_one_thread(models) -> None:
    _, one, two = models
    rng = np.random.default_rng(1)
    for _ in range(3):
        x = rng.standard_normal((1, 3, 32, 32)).astype(np.float32)
        a, b = one(x), two(x)
        for u, v in zip(a, b):
            assert np.array_equal(u, v)


def test_matches_onnxruntime(models) -> None:
    ort = pytest.importorskip("onnxruntime")
    m, _, two = models
    sess = ort.InferenceSession(m.SerializeToString(), providers=["CPUExecutionProvider"])
    x = np.random.default_rng(2).standard_normal((1, 3, 32, 32)).astype(np.float32)
    for got, ref in zip(two(x), sess.run(None, {"x": x})):
        np.testing.assert_allclose(got, ref, rtol=1e-4, atol=1e-4 * float(np.abs(ref).max()))


def test_concurrent_callers(models) -> None:
    """Several Python threads calling a threaded model (each with its own arenas) get the right answers."""
    _, one, two = models
    xs = [np.random.default_rng(s).standard_normal((1, 3, 32, 32)).astype(np.float32) for s in range(6)]
    got = two.map(xs, threads=3)
    for x, g in zip(xs, got):
        for u, v in zip(one(x), g):
            assert np.array_equal(u, v)


def test_three_threads_and_small_models_stay_whole() -> None:
    m = block_model(size=4)  # every layer below the threshold: nothing split, the usual entry
    cm = cnnjit.compile(m, threads=3)
    assert cm._default_spec().program.meta["parallel_layers"] == 0
    x = np.random.default_rng(3).standard_normal((1, 3, 4, 4)).astype(np.float32)
    for u, v in zip(cm(x), cnnjit.compile(m)(x)):
        assert np.array_equal(u, v)


@pytest.mark.parametrize("bad", [0, -1, 1.5, True, "2"])
def test_threads_must_be_a_positive_int(bad) -> None:
    with pytest.raises(ValueError, match="threads"):
        cnnjit.compile(block_model(size=8), threads=bad)


def test_channel_ranges() -> None:
    assert channel_ranges(64, 2) == [(0, 32), (32, 64)]
    assert channel_ranges(96, 2) == [(0, 48), (48, 96)]
    assert channel_ranges(40, 2) == [(0, 32), (32, 40)]  # aligned to 16: the last part takes the rest
    assert channel_ranges(24, 2) == [(0, 12), (12, 24)]
    assert channel_ranges(3, 4) == [(0, 1), (1, 2), (2, 3)]
    for m in range(1, 200):
        for parts in (1, 2, 3, 4):
            r = channel_ranges(m, parts)
            assert r[0][0] == 0 and r[-1][1] == m and all(a < b for a, b in r)
            assert all(r[i][1] == r[i + 1][0] for i in range(len(r) - 1)) and len(r) <= parts


def test_parallel_calls_make_one_driver_call_per_group() -> None:
    def call(k: str, *args, note: str = "") -> Call:
        return Call(k, tuple(args), "Conv", "direct", None, note)

    part = [call("k1", Buf("a_f32"), Int(1 + i), Buf("c_f32"), Int(5 + i), Float(2.5),
                 note=f"B [channels {16 * i}:{16 * i + 16} of 48]") for i in range(3)]
    calls = [call("k0", Buf("a_f32"), Int(0), note="A"), *part, call("k2", Buf("a_f32"), Int(4), note="C")]
    out, drivers = parallel_calls(calls, [(1, 3)])
    assert render_schedule(["a_f32", "c_f32"], out).splitlines() == [
        "def run(a_f32, c_f32):", "    k0(a_f32, 0)  # A",
        "    d0(a_f32, c_f32, 1, 5, 2.5, 2, 6, 2.5, 3, 7, 2.5)  # B [parallel: 3 parts]", "    k2(a_f32, 4)  # C"]
    assert out[1].parts == 3 and out[1].kernel == "d0" and [c.kernel for c in out] == ["k0", "d0", "k2"]
    d = drivers["d0"]
    assert d.kernel == "k1" and d.parts == 3 and d.buffers == ("a_f32", "", "c_f32", "", "")
    assert d.source().splitlines() == [
        "def kernel(a_f32, c_f32, s0_0, s0_1, s0_2, s1_0, s1_1, s1_2, s2_0, s2_1, s2_2):",
        "    for _p in prange(3):",
        "        if _p == 0:", "            k(a_f32, s0_0, c_f32, s0_1, s0_2)",
        "        elif _p == 1:", "            k(a_f32, s1_0, c_f32, s1_1, s1_2)",
        "        elif _p == 2:", "            k(a_f32, s2_0, c_f32, s2_1, s2_2)"]
    out, _ = parallel_calls(calls, [(1, 3)], numba_entry=True)
    assert out[1].statement().startswith("d0(a_f32, c_f32, np.int64(1), np.int64(5), 2.5, np.int64(2), np.int64(6),")
    # parts over different buffers stay serial calls
    mixed = [*calls[:2], call("k1", Buf("b_f32"), Int(2)), *calls[3:]]
    out, drivers = parallel_calls(mixed, [(1, 3)])
    assert [c.kernel for c in out] == ["k0", "k1", "k1", "k1", "k2"] and not drivers


def test_profile_of_a_threaded_model(models) -> None:
    from cnnjit.profile import profile_schedule

    _, _, two = models
    prof = profile_schedule(two._default_spec(), repeat=3, warmup=1)
    assert len(prof.calls) == 7 and sum(1 for c in prof.calls if c.kernel.startswith("d")) == 3
