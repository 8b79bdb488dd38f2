"""Every SIMD kernel family at every vector width (4 = NEON/SSE, 8 = AVX2, 16 = AVX-512) against the
plain-numpy references in ``reference_np.py``: dense, grouped, depthwise and pointwise convolutions
(strides 1/2, pads, dilations, fused bias + activation + residual), max/avg pooling and Gemm.
The host CPU runs all three widths (``cnnjit.compile(vector_width=)``). Each example runs one of the kernel
variants that apply to its node (drawn by hypothesis, forced with ``variants=``) and asserts that variant ran,
so over the examples every variant of every family runs at every width (``test_variants.py`` pins one case
per variant).
"""

from __future__ import annotations

import numpy as np
import pytest
import reference_np as ref
from hypothesis import assume, given
from hypothesis import strategies as st
from kernel_cases import pool_attrs_and_reference, property_settings
from onnx import TensorProto, helper, numpy_helper

import cnnjit
from cnnjit.compiler.codegen.kernel import VARIANTS
from cnnjit.compiler.stages import CompileOptions

WIDTHS = [4, 8, 16]
#: the Conv variants that apply every fused activation and residual in registers (``epilogue.Epilogue``)
IN_REGISTERS = {"simd_conv", "simd_depthwise", "simd_depthwise_row", "simd_depthwise_static", "simd_pointwise", "cvec",
                "cvec_pointwise",
                "sparse_pointwise", "cblock", "winograd_f4", "winograd_f4_channels", "channel_pointwise",
                "stem_conv", "stem_packed", "phase_packed", "depthwise_lanes", "depthwise_direct", "depthwise_flat",
                "depthwise_direct_s2"}


def applicable_variants(model, op: str, width: int, disable: tuple[str, ...] = ()) -> list[str]:
    """The variants of ``op`` that apply to the (first) ``op`` node of ``model`` at ``width`` (the IR after
    the passes but ``disable``, from a compile that builds no kernel)."""
    ir = cnnjit.compile(model, vector_width=width, entry="lazy", disable=disable).ir
    node = next(n for n in ir.nodes if n.op == op)
    target = CompileOptions(vector_width=width).host_target()
    return [v.name for v in VARIANTS[op] if v.applies(node, target)]


def compile_variant(model, op: str, width: int, data=None, expect: str | None = None, force: str | None = None,
                    disable: tuple[str, ...] = ()):
    """``model`` compiled at ``width`` (without the passes ``disable``) with its ``op`` node on a variant drawn
    from those that apply (the default choice when ``data`` is None; ``force``: that one, which must apply),
    asserting that variant is the one in the schedule."""
    names = applicable_variants(model, op, width, disable)
    assert force is None or force in names, f"{op}: {force} does not apply (applicable: {names})"
    name = force or (data.draw(st.sampled_from(names), label="variant") if data is not None else names[0])
    if expect is not None:
        assert name == expect, f"{op} at width {width} chose {name}, expected {expect} (applicable: {names})"
    compiled = cnnjit.compile(model, vector_width=width, variants={op: name}, disable=disable)
    ran = {c.variant for c in compiled._default_spec().program.calls if c.op == op}
    assert ran == {name}, f"forced {name}, the schedule ran {ran}"
    return compiled


def _model(nodes, x_shape, inits, out="y"):
    g = helper.make_graph(nodes, "m", [helper.make_tensor_value_info("x", TensorProto.FLOAT, x_shape)],
                          [helper.make_tensor_value_info(out, TensorProto.FLOAT, None)],
                          [numpy_helper.from_array(v, k) for k, v in inits.items()])
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", 13)], ir_version=8)


@st.composite
def conv_cases(draw):
    kind = draw(st.sampled_from(["dense", "depthwise", "grouped", "pointwise"]))
    g = 1
    c = draw(st.integers(1, 9))
    m = draw(st.sampled_from([1, 3, 4, 8, 16, 20]))
    if kind == "depthwise":
        c = draw(st.integers(2, 12))
        m, g = c * draw(st.sampled_from([1, 2])), c
    elif kind == "grouped":
        g = draw(st.sampled_from([2, 4]))
        c, m = g * draw(st.integers(1, 3)), g * draw(st.sampled_from([1, 2, 4, 8]))
    k = 1 if kind == "pointwise" else draw(st.sampled_from([1, 3, 5]))
    s = 1 if kind == "pointwise" else draw(st.integers(1, 2))
    d = 1 if kind == "pointwise" else draw(st.integers(1, 2))
    h, w = draw(st.integers(k + (k - 1) * (d - 1), 20)), draw(st.integers(k + (k - 1) * (d - 1), 37))
    pads = [0] * 4 if kind == "pointwise" else [draw(st.integers(0, k // 2 + 1)) for _ in range(4)]
    act = draw(st.sampled_from([None, "Relu", "Clip", "HardSwish", "Sigmoid", "Tanh", "LeakyRelu", "PRelu"]))
    residual = draw(st.sampled_from([False, True, "Mul"]))  # True: a residual Add; "Mul": a residual Mul
    return dict(c=c, m=m, g=g, k=k, s=s, d=d, h=h, w=w, pads=pads, act=act, residual=residual,
                seed=draw(st.integers(0, 2**16)))


def _run_conv(case, width, data=None, expect=None, force=None):
    rng = np.random.default_rng(case["seed"])
    c, m, g, k = case["c"], case["m"], case["g"], case["k"]
    kh, kw = case.get("kshape", (k, k))  # a non-square kernel (kernel rows, columns)
    x = rng.standard_normal((1, c, case["h"], case["w"])).astype(np.float32)
    wt = rng.standard_normal((m, c // g, kh, kw)).astype(np.float32)
    b = rng.standard_normal(m).astype(np.float32)
    conv_attrs = dict(kernel_shape=[kh, kw], strides=[case["s"]] * 2, dilations=[case["d"]] * 2,
                      pads=case["pads"], group=g)
    expected = ref.conv(x, wt, b, strides=[case["s"]] * 2, pads=case["pads"], dilations=[case["d"]] * 2,
                        group=g)
    nodes = [helper.make_node("Conv", ["x", "w", "b"], ["c"], **conv_attrs)]
    cur, inits = "c", {"w": wt, "b": b}
    if case["residual"]:
        r = rng.standard_normal(expected.shape).astype(np.float32)
        inits["r"] = r
        mul = case["residual"] == "Mul"
        nodes.append(helper.make_node("Mul" if mul else "Add", [cur, "r"], ["a"]))
        cur, expected = "a", expected * r if mul else expected + r
    if case["act"] == "Relu":
        nodes.append(helper.make_node("Relu", [cur], ["y"]))
        expected = ref.relu(expected)
    elif case["act"] == "Clip":
        inits.update(lo=np.float32(0), hi=np.float32(6))
        nodes.append(helper.make_node("Clip", [cur, "lo", "hi"], ["y"]))
        expected = ref.clip(expected, 0, 6)
    elif case["act"] == "HardSwish":
        nodes.append(helper.make_node("HardSwish", [cur], ["y"]))
        expected = ref.hard_swish(expected)
    elif case["act"] == "Sigmoid":
        nodes.append(helper.make_node("Sigmoid", [cur], ["y"]))
        expected = ref.sigmoid(expected)
    elif case["act"] == "Tanh":
        nodes.append(helper.make_node("Tanh", [cur], ["y"]))
        expected = ref.tanh(expected)
    elif case["act"] == "LeakyRelu":
        nodes.append(helper.make_node("LeakyRelu", [cur], ["y"], alpha=-0.7))
        expected = ref.leaky_relu(expected, -0.7)
    elif case["act"] == "PRelu":  # per-channel slopes: fused as the expanded slope tensor
        inits["slope"] = rng.uniform(-1, 1, (m, 1, 1)).astype(np.float32)
        nodes.append(helper.make_node("PRelu", [cur, "slope"], ["y"]))
        expected = np.where(expected < 0, expected * inits["slope"], expected)
    else:
        nodes.append(helper.make_node("Identity", [cur], ["y"]))
    model = compile_variant(_model(nodes, list(x.shape), inits), "Conv", width, data, expect, force,
                            disable=("conv_dead_taps",))  # (the kernel as drawn: padding-only taps kept)
    if case["act"] == "PRelu":
        (conv,) = [n for n in model.ir.nodes if n.op == "Conv"]
        assert [s.op for s in conv.attrs["post"]][-1] == "PRelu"
    prog = model._default_spec().program
    for call in prog.calls:
        if call.op == "Conv" and call.variant in IN_REGISTERS:  # every fused step before the store
            assert "v = yb[U(yo + q)]" not in prog.kernel_sources[call.kernel], (call.variant, case["act"])
    got = model(x)
    assert got.shape == expected.shape
    np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-4 * max(1.0, float(np.abs(expected).max())))
    return model


@pytest.mark.parametrize("width", WIDTHS)
@given(case=conv_cases(), data=st.data())
def test_conv_kernels_at_width(width, case, data) -> None:
    _run_conv(case, width, data)


@st.composite
def thin_conv_cases(draw, width: int):
    """1xK and Kx1 stride-1 Convs (K 2-5, dilated or not) on output rows of exactly two ``width``-lane
    vectors, whose output channels fill whole tiles of two vectors, with a reduction depth from 64 (the
    wake-word embedding's 1x3 / 3x1 layers): by default ``phase_packed``'s (its pixel vectors fill the row as
    ``cblock``'s channel tiles fill the channels: 1.10-1.18x over both, ``benchmarks/phase_conv.py``), and
    forced, ``cblock`` (1xK) and ``simd_conv`` (Kx1, whose rows it unrolls; not ``cvec``), the table's choices
    before it, at every width."""
    case = draw(conv_cases())
    k, d = draw(st.integers(2, 5)), draw(st.integers(1, 2))
    row = draw(st.booleans())  # 1xK (along the row) or Kx1
    kshape = (1, k) if row else (k, 1)
    c = draw(st.integers(-(-64 // k), -(-64 // k) + 6))
    pl, pr = (draw(st.integers(0, k // 2)), draw(st.integers(0, k // 2))) if row else (0, 0)
    pt, pb = (0, 0) if row else (draw(st.integers(0, k // 2)), draw(st.integers(0, k // 2)))
    span = d * (k - 1) + 1
    w = 2 * width - pl - pr + (span - 1 if row else 0)
    h = draw(st.integers(span if not row else 1, span + 2 if not row else 3))
    return {**case, "c": c, "m": 2 * width * draw(st.integers(1, 2)), "g": 1, "k": k, "kshape": kshape,
            "s": 1, "d": d, "h": h, "w": w, "pads": [pt, pl, pb, pr], "residual": False}


@pytest.mark.parametrize("width", WIDTHS)
@property_settings(4)
@given(data=st.data())
def test_thin_conv_kernel_at_width(width, data) -> None:
    case = data.draw(thin_conv_cases(width))
    _run_conv(case, width, expect="phase_packed")
    _run_conv(case, width, force="cblock" if case["kshape"][0] == 1 else "simd_conv")


@st.composite
def column_kernel_cases(draw):
    """Dense and grouped Kx1 Convs (K 2-9): ``simd_conv`` unrolls the kernel rows of the output rows whose
    window lies inside the input and loops over the others' (pads above and below)."""
    case = draw(conv_cases())
    assume(case["g"] == 1 or case["c"] != case["g"])  # not depthwise
    k, d = draw(st.integers(2, 9)), draw(st.integers(1, 2))
    span = d * (k - 1) + 1
    pads = [draw(st.integers(0, k // 2 + 1)), draw(st.integers(0, 1)), draw(st.integers(0, k // 2 + 1)),
            draw(st.integers(0, 1))]
    h = draw(st.integers(max(1, span - pads[0] - pads[2]), span + 6))
    return {**case, "k": k, "kshape": (k, 1), "d": d, "h": h, "pads": pads}


@pytest.mark.parametrize("width", WIDTHS)
@property_settings(6)
@given(case=column_kernel_cases())
def test_column_kernel_simd_conv_at_width(width, case) -> None:
    _run_conv(case, width, force="simd_conv")


@st.composite
def depthwise_cases(draw):
    """Depthwise Convs for ``simd_depthwise``'s padded plane: 1..7 taps a side, odd and even output row
    counts (its two-row sweep and the last row alone), rows shorter and longer than a vector (1x1 layers
    are the pointwise kernels')."""
    case = draw(conv_cases())
    c, k, d = draw(st.integers(2, 6)), draw(st.sampled_from([2, 3, 5, 7])), draw(st.integers(1, 2))
    span = k + (k - 1) * (d - 1)
    return {**case, "c": c, "m": c * draw(st.sampled_from([1, 2])), "g": c, "k": k, "d": d,
            "h": draw(st.integers(span, span + 8)), "w": draw(st.integers(span, span + 30)),
            "pads": [draw(st.integers(0, k // 2 + 1)) for _ in range(4)]}


@pytest.mark.parametrize("width", WIDTHS)
@given(case=depthwise_cases())
def test_depthwise_kernel_at_width(width, case) -> None:
    _run_conv(case, width, force="simd_depthwise")  # (short stride-1 rows default to simd_depthwise_row)


@st.composite
def short_row_depthwise_cases(draw):
    """Stride-1 depthwise Convs whose output rows fit in one 4-lane vector and whose window lies mostly in
    the padding (``simd_depthwise_row`` at every width): 1..k//2 input rows padded by k//2 above and below
    (so at most half of each window's rows are inside), 1..4 output columns."""
    case = {**draw(depthwise_cases()), "s": 1, "d": 1}
    k = draw(st.sampled_from([3, 5, 7]))
    pl, pr = draw(st.integers(0, k // 2 + 1)), draw(st.integers(0, k // 2 + 1))
    ow = draw(st.integers(1, 4))
    w = k + ow - 1 - pl - pr
    assume(w >= 1)
    return {**case, "k": k, "h": draw(st.integers(1, k // 2)), "w": w, "pads": [k // 2, pl, k // 2, pr]}


@pytest.mark.parametrize("width", WIDTHS)
@given(case=short_row_depthwise_cases())
def test_short_row_depthwise_kernel_at_width(width, case) -> None:
    _run_conv(case, width, force="simd_depthwise_row")  # (the default is simd_depthwise_static's now)


@st.composite
def pool_cases(draw):
    k = draw(st.integers(1, 4))
    s = draw(st.integers(1, 2))
    pads = [draw(st.integers(0, k - 1)) for _ in range(4)]
    h, w = draw(st.integers(k, 18)), draw(st.integers(k, 40))
    return dict(op=draw(st.sampled_from(["MaxPool", "AveragePool"])), k=k, s=s, pads=pads, h=h, w=w,
                ceil=draw(st.integers(0, 1)), cip=draw(st.integers(0, 1)), c=draw(st.integers(1, 5)),
                seed=draw(st.integers(0, 2**16)))


@pytest.mark.parametrize("width", WIDTHS)
@given(case=pool_cases(), data=st.data())
def test_pool_kernels_at_width(width, case, data) -> None:
    rng = np.random.default_rng(case["seed"])
    x = rng.standard_normal((1, case["c"], case["h"], case["w"])).astype(np.float32)
    k, s = case["k"], case["s"]
    attrs = dict(kernel_shape=[k, k], strides=[s, s], pads=case["pads"], ceil_mode=case["ceil"])
    if case["op"] == "MaxPool":
        expected = ref.max_pool(x, [k, k], strides=[s, s], pads=case["pads"], ceil_mode=case["ceil"])
    else:
        attrs["count_include_pad"] = case["cip"]
        expected = ref.avg_pool(x, [k, k], strides=[s, s], pads=case["pads"], ceil_mode=case["ceil"],
                                count_include_pad=case["cip"])
    assume(np.all(np.isfinite(expected)))  # a window entirely in padding has no defined value (reference_np)
    model = compile_variant(_model([helper.make_node(case["op"], ["x"], ["y"], **attrs)], list(x.shape), {}),
                            case["op"], width, data)
    np.testing.assert_allclose(model(x), expected, rtol=1e-5, atol=1e-5)


@st.composite
def strided_pool_cases(draw):
    """Pools whose column stride is 3-5 (``simd_pool`` gathers): rectangular windows, dilations (MaxPool),
    pads, ceil mode; AveragePool with a divisor that pads do not change."""
    op = draw(st.sampled_from(["MaxPool", "AveragePool"]))
    kh, kw = draw(st.integers(1, 3)), draw(st.integers(1, 6))
    sh, sw = draw(st.integers(1, 3)), draw(st.integers(3, 5))
    dh, dw = (draw(st.integers(1, 2)), draw(st.integers(1, 2))) if op == "MaxPool" else (1, 1)
    pads = [draw(st.integers(0, kh - 1)), draw(st.integers(0, kw - 1)), draw(st.integers(0, kh - 1)),
            draw(st.integers(0, kw - 1))]
    h, w = draw(st.integers(dh * (kh - 1) + 1, 12)), draw(st.integers(dw * (kw - 1) + 1, 90))
    return dict(op=op, k=[kh, kw], s=[sh, sw], d=[dh, dw], pads=pads, h=h, w=w, ceil=draw(st.integers(0, 1)),
                c=draw(st.integers(1, 3)), seed=draw(st.integers(0, 2**16)))


@pytest.mark.parametrize("width", WIDTHS)
@given(case=strided_pool_cases())
def test_strided_pool_kernel_at_width(width, case) -> None:
    """``simd_pool`` at column strides above 2 (a spectrogram's 1x4 stride-4 MaxPool): one gather per tap,
    the border lanes inserted one by one."""
    x = np.random.default_rng(case["seed"]).standard_normal((1, case["c"], case["h"], case["w"])).astype(np.float32)
    attrs, expected = pool_attrs_and_reference(case, x)
    assume(np.all(np.isfinite(expected)))
    model = _model([helper.make_node(case["op"], ["x"], ["y"], **attrs)], list(x.shape), {})
    if case["op"] == "AveragePool":
        assume("simd_pool" in applicable_variants(model, "AveragePool", width))  # a uniform divisor
    model = compile_variant(model, case["op"], width, force="simd_pool")
    np.testing.assert_allclose(model(x), expected, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("width", WIDTHS)
@given(m=st.integers(1, 5), k=st.integers(1, 40), n=st.integers(1, 70), trans_b=st.integers(0, 1),
       bias=st.booleans(), seed=st.integers(0, 2**16), data=st.data())
def test_gemm_kernel_at_width(width, m, k, n, trans_b, bias, seed, data) -> None:
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((m, k)).astype(np.float32)
    b = rng.standard_normal((n, k) if trans_b else (k, n)).astype(np.float32)
    inits = {"b": b}
    ins = ["x", "b"]
    c = None
    if bias:
        c = rng.standard_normal(n).astype(np.float32)
        inits["c"] = c
        ins.append("c")
    expected = ref.gemm(x, b, c, alpha=0.5, beta=2.0, trans_b=trans_b)
    node = helper.make_node("Gemm", ins, ["y"], alpha=0.5, beta=2.0, transB=trans_b)
    model = compile_variant(_model([node], [m, k], inits), "Gemm", width, data)
    np.testing.assert_allclose(model(x), expected, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("width", WIDTHS)
@given(c=st.integers(1, 6), h=st.integers(1, 13), w=st.integers(1, 17), whole_window=st.booleans(),
       seed=st.integers(0, 2**16))
def test_global_average_at_width(width, c, h, w, whole_window, seed) -> None:
    """GlobalAveragePool, and an AveragePool whose window is the whole plane (kws/DS-CNN's last pool),
    through the vector-accumulator kernel."""
    x = np.random.default_rng(seed).standard_normal((1, c, h, w)).astype(np.float32)
    node = (helper.make_node("AveragePool", ["x"], ["y"], kernel_shape=[h, w]) if whole_window
            else helper.make_node("GlobalAveragePool", ["x"], ["y"]))
    op = "AveragePool" if whole_window else "GlobalAveragePool"
    model = compile_variant(_model([node], list(x.shape), {}), op, width, expect="global_pool")
    np.testing.assert_allclose(model(x), ref.global_avg_pool(x), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("width", WIDTHS)
@pytest.mark.parametrize("m, act, residual", [(6, "Relu", True), (16, None, False)])
def test_pointwise_pixel_blocks_at_width(width, m, act, residual) -> None:
    """A 1x1 conv whose input exceeds L2 runs in pixel blocks (tails at block and plane ends, leftover
    output rows when M % 4 != 0) in ``simd_pointwise`` (forced: at 16 lanes ``packed_pointwise`` takes it)."""
    case = dict(c=40, m=m, g=1, k=1, s=1, d=1, h=61, w=59, pads=[0] * 4, act=act, residual=residual, seed=m)
    _run_conv(case, width, force="simd_pointwise")
