"""Property tests of the windowed kernels against the numpy references in ``reference_np.py``: convolution
and pooling (1-3 spatial dims, groups, pads, strides, dilations, auto_pad, ceil_mode) and conv blocks with
fused epilogues (bias, BN-like, residual, activations, swish, a pool after). Machinery: ``kernel_cases.py``.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import reference_np as ref
from hypothesis import assume
from hypothesis import strategies as st
from kernel_cases import (
    ATOL,
    Case,
    check_cnnjit,
    draw_rng,
    kernel_test,
    make_model,
    normal,
    one_node_case,
    reference_test,
)
from onnx import helper

# ---------------------------------------------------------------------------------------------
# Conv
# ---------------------------------------------------------------------------------------------

@st.composite
def conv_cases(draw, ndims=(1, 1, 2, 2, 2, 3)):
    seed, rng = draw_rng(draw)
    nd = draw(st.sampled_from(ndims))
    gmode = draw(st.sampled_from(["one", "one", "depthwise", "depthwise_x2", "divisor"]))
    if gmode == "one":
        group, c_in, m_out = 1, draw(st.integers(1, 4)), draw(st.integers(1, 4))
    elif gmode == "depthwise":
        c_in = draw(st.integers(1, 4))
        group, m_out = c_in, c_in
    elif gmode == "depthwise_x2":
        c_in = draw(st.integers(1, 3))
        group, m_out = c_in, 2 * c_in
    else:
        group = draw(st.integers(2, 3))
        c_in = group * draw(st.integers(1, 2))
        m_out = group * draw(st.integers(1, 2))
    kmax = 5 if nd < 3 else 3
    # "pointwise": 1x1, stride 1, no padding (a separate GEMM-like code path when group == 1)
    pointwise = draw(st.integers(0, 4)) == 0
    kernel = [1 if pointwise else draw(st.integers(1, kmax)) for _ in range(nd)]
    strides = [1 if pointwise else draw(st.integers(1, 3)) for _ in range(nd)]
    dilations = [draw(st.integers(1, 2)) for _ in range(nd)]
    auto_pad = draw(st.sampled_from(["NOTSET", "NOTSET", "NOTSET", "SAME_UPPER", "SAME_LOWER", "VALID"]))
    pads = [0 if pointwise else draw(st.integers(0, 3)) for _ in range(2 * nd)] if auto_pad == "NOTSET" else None
    eff = [(k - 1) * d + 1 for k, d in zip(kernel, dilations, strict=True)]
    if auto_pad == "NOTSET":
        lo = [max(1, eff[i] - pads[i] - pads[i + nd]) for i in range(nd)]
    elif auto_pad == "VALID":
        lo = eff
    else:
        lo = [1] * nd
    extra = 6 if nd < 3 else 3
    spatial = [lo[i] + draw(st.integers(0, extra)) for i in range(nd)]
    batch = draw(st.integers(1, 2))
    bias = draw(st.booleans())
    # which optional attributes are spelled out (defaults must be honoured)
    spell_strides = draw(st.booleans()) or any(s != 1 for s in strides)
    spell_dil = draw(st.booleans()) or any(d != 1 for d in dilations)
    spell_kernel = draw(st.booleans())

    x = normal(rng, (batch, c_in, *spatial))
    w = normal(rng, (m_out, c_in // group, *kernel), scale=1.0 / math.sqrt(max(1, c_in // group)))
    b = normal(rng, (m_out,)) if bias else None
    expected = ref.conv(x, w, b, strides=strides, pads=pads, dilations=dilations, group=group,
                        auto_pad=auto_pad)
    assert min(expected.shape[2:]) >= 1

    attrs = {"group": group}
    if spell_kernel:
        attrs["kernel_shape"] = kernel
    if spell_strides:
        attrs["strides"] = strides
    if spell_dil:
        attrs["dilations"] = dilations
    if auto_pad == "NOTSET":
        if any(pads) or draw(st.booleans()):
            attrs["pads"] = pads
    else:
        attrs["auto_pad"] = auto_pad
    # weights are normally initializers; sometimes they are graph inputs (known only at run time)
    runtime_w = draw(st.integers(0, 5)) == 0
    inputs, inits = {"x": x}, {}
    (inputs if runtime_w else inits)["w"] = w
    names = ["x", "w"]
    if bias:
        (inputs if runtime_w else inits)["b"] = b
        names.append("b")
    red = (c_in // group) * int(np.prod(kernel))
    desc = (f"Conv{nd}d group={group}({gmode}) C_in={c_in} M={m_out} kernel={kernel} strides={strides} "
            f"dilations={dilations} auto_pad={auto_pad} pads={pads} bias={bias} attrs={sorted(attrs)}"
            f"{' W/B as graph inputs' if runtime_w else ''}")
    # onnxruntime refuses SAME_* auto_pad with dilation > 1 (the spec does not)
    ort_ok = auto_pad not in ("SAME_UPPER", "SAME_LOWER") or all(d == 1 for d in dilations)
    return one_node_case(desc, "Conv", inputs, inits, names, expected, attrs=attrs,
                         atol=ATOL * max(1.0, math.sqrt(red)), ort_ok=ort_ok, seed=seed)


test_conv_1d_2d = kernel_test(conv_cases(ndims=(1, 2)), 60)


test_conv_3d = kernel_test(conv_cases(ndims=(3,)), 20)


# ---------------------------------------------------------------------------------------------
# Pooling
# ---------------------------------------------------------------------------------------------

@st.composite
def pool_cases(draw, op=None, ndims=(1, 2, 2, 3)):
    seed, rng = draw_rng(draw)
    op = op or draw(st.sampled_from(["MaxPool", "AveragePool"]))
    nd = draw(st.sampled_from(ndims))
    kmax = 4 if nd < 3 else 3
    kernel = [draw(st.integers(1, kmax)) for _ in range(nd)]
    strides = [draw(st.integers(1, 3)) for _ in range(nd)]
    dilations = [draw(st.integers(1, 2)) for _ in range(nd)] if op == "MaxPool" else [1] * nd
    pads = [draw(st.integers(0, kernel[i % nd] - 1)) for i in range(2 * nd)]  # ONNX: pad < kernel
    ceil_mode = draw(st.integers(0, 1))
    count_include_pad = draw(st.integers(0, 1))
    eff = [(k - 1) * d + 1 for k, d in zip(kernel, dilations, strict=True)]
    extra = 5 if nd < 3 else 3
    spatial = [max(1, eff[i] - pads[i] - pads[i + nd]) + draw(st.integers(0, extra)) for i in range(nd)]
    batch = draw(st.integers(1, 2))
    channels = draw(st.integers(1, 3))
    x = normal(rng, (batch, channels, *spatial))
    if op == "MaxPool":
        expected = ref.max_pool(x, kernel, strides=strides, pads=pads, dilations=dilations,
                                ceil_mode=ceil_mode)
    else:
        expected = ref.avg_pool(x, kernel, strides=strides, pads=pads, ceil_mode=ceil_mode,
                                count_include_pad=count_include_pad)
    # a window made only of padding (possible with dilation / ceil_mode) has no well-defined value
    assume(np.isfinite(expected).all())

    attrs = {"kernel_shape": kernel}
    if any(s != 1 for s in strides) or draw(st.booleans()):
        attrs["strides"] = strides
    if any(pads) or draw(st.booleans()):
        attrs["pads"] = pads
    if ceil_mode or draw(st.booleans()):
        attrs["ceil_mode"] = ceil_mode
    if op == "MaxPool":
        if any(d != 1 for d in dilations) or draw(st.booleans()):
            attrs["dilations"] = dilations
    elif count_include_pad or draw(st.booleans()):
        attrs["count_include_pad"] = count_include_pad
    desc = (f"{op}{nd}d kernel={kernel} strides={strides} pads={pads} ceil_mode={ceil_mode} "
            + (f"dilations={dilations}" if op == "MaxPool" else f"count_include_pad={count_include_pad}")
            + f" attrs={sorted(attrs)}")
    return one_node_case(desc, op, {"x": x}, {}, ["x"], expected, attrs=attrs, seed=seed)


test_maxpool = kernel_test(pool_cases(op="MaxPool"), 40)


test_averagepool = kernel_test(pool_cases(op="AveragePool"), 40)


@st.composite
def global_pool_cases(draw):
    seed, rng = draw_rng(draw)
    op = draw(st.sampled_from(["GlobalAveragePool", "GlobalMaxPool"]))
    nd = draw(st.integers(1, 3))
    shape = (draw(st.integers(1, 2)), draw(st.integers(1, 4)), *[draw(st.integers(1, 7)) for _ in range(nd)])
    x = normal(rng, shape)
    expected = ref.global_avg_pool(x) if op == "GlobalAveragePool" else ref.global_max_pool(x)
    return one_node_case(f"{op} shape={shape}", op, {"x": x}, {}, ["x"], expected, seed=seed)


test_global_pool = kernel_test(global_pool_cases(), 15)


# ---------------------------------------------------------------------------------------------
# conv blocks (exercise fusion: epilogues, residuals, a pool after, the conv result also an output)


# ---------------------------------------------------------------------------------------------

@st.composite
def conv_block_cases(draw):
    """Conv -> epilogue (bias-like / BN-like / residual adds, activations, swish) -> optional pool."""
    seed, rng = draw_rng(draw)
    n, c, m = draw(st.integers(1, 2)), draw(st.integers(1, 4)), draw(st.integers(1, 4))
    depthwise = draw(st.booleans())
    if depthwise:
        m, group = c, c
    else:
        group = 1
    k = draw(st.sampled_from([1, 3]))
    h, w_ = draw(st.integers(2, 7)), draw(st.integers(2, 7))
    stride = draw(st.integers(1, 2))
    pad = k // 2
    x = normal(rng, (n, c, h, w_))
    wt = normal(rng, (m, c // group, k, k), scale=0.5)
    bias = normal(rng, (m,)) if draw(st.booleans()) else None
    inputs, inits = {"x": x}, {"w": wt}
    conv_in = ["x", "w"]
    if bias is not None:
        inits["b"] = bias
        conv_in.append("b")
    nodes = [helper.make_node("Conv", conv_in, ["conv"], kernel_shape=[k, k], strides=[stride, stride],
                              pads=[pad] * 4, group=group)]
    cur = ref.conv(x, wt, bias, strides=[stride] * 2, pads=[pad] * 4, group=group)
    conv_out = cur
    cur_name, steps = "conv", []
    for i in range(draw(st.integers(1, 3))):
        kind = draw(st.sampled_from(["Relu", "Clip06", "HardSwish", "swish", "chan_add", "chan_mul",
                                     "residual"]))
        out = f"e{i}"
        if kind == "Relu":
            nodes.append(helper.make_node("Relu", [cur_name], [out]))
            cur = ref.relu(cur)
        elif kind == "Clip06":
            inits.setdefault("zero", np.array(0.0, np.float32))
            inits.setdefault("six", np.array(6.0, np.float32))
            nodes.append(helper.make_node("Clip", [cur_name, "zero", "six"], [out]))
            cur = ref.clip(cur, 0.0, 6.0)
        elif kind == "HardSwish":
            nodes.append(helper.make_node("HardSwish", [cur_name], [out]))
            cur = ref.hard_swish(cur)
        elif kind == "swish":  # x * sigmoid(x): the running value has two consumers
            nodes.append(helper.make_node("Sigmoid", [cur_name], [f"sig{i}"]))
            nodes.append(helper.make_node("Mul", [cur_name, f"sig{i}"], [out]))
            cur = cur * ref.sigmoid(cur)
        elif kind in ("chan_add", "chan_mul"):
            v = normal(rng, (m, 1, 1))
            inits[f"p{i}"] = v
            op = "Add" if kind == "chan_add" else "Mul"
            nodes.append(helper.make_node(op, [cur_name, f"p{i}"], [out]))
            cur = ref.binary(op, cur, v)
        else:
            r = normal(rng, cur.shape)
            inputs[f"r{i}"] = r
            nodes.append(helper.make_node("Add", [f"r{i}", cur_name], [out]))
            cur = cur + ref._f64(r)
        steps.append(kind)
        cur_name = out
    pool = draw(st.sampled_from(["none", "MaxPool", "AveragePool", "GlobalAveragePool"]))
    if pool in ("MaxPool", "AveragePool") and min(cur.shape[2:]) >= 2:
        nodes.append(helper.make_node(pool, [cur_name], ["pooled"], kernel_shape=[2, 2], strides=[2, 2]))
        cur = (ref.max_pool if pool == "MaxPool" else ref.avg_pool)(cur, [2, 2], strides=[2, 2])
        cur_name = "pooled"
    elif pool == "GlobalAveragePool":
        nodes.append(helper.make_node(pool, [cur_name], ["pooled"]))
        cur = ref.global_avg_pool(cur)
        cur_name = "pooled"
    else:
        pool = "none"
    outputs, expected = {cur_name: cur.shape}, [cur]
    if draw(st.booleans()):  # the conv result is also a graph output
        outputs["conv"] = conv_out.shape
        expected.append(conv_out)
    model = make_model(nodes, inputs, outputs, inits)
    desc = (f"Conv{k}x{k}/s{stride} {'depthwise' if depthwise else 'dense'} C={c} M={m} "
            f"bias={bias is not None} -> {' -> '.join(steps)} -> pool={pool} outputs={list(outputs)} "
            f"seed={seed}")
    return Case(desc, model, inputs, expected, atol=1e-4)


test_conv_block = kernel_test(conv_block_cases(), 30)


# ---------------------------------------------------------------------------------------------
# the oracle itself must agree with onnxruntime
# ---------------------------------------------------------------------------------------------

test_reference_matches_onnxruntime = reference_test({
    "conv": conv_cases(),
    "maxpool": pool_cases(op="MaxPool"),
    "averagepool": pool_cases(op="AveragePool"),
    "global_pool": global_pool_cases(),
    "conv_block": conv_block_cases(),
})


def _residual_cases() -> list[Case]:
    """Fused residual Adds whose inputs sit at unusual places: the conv's own input as its residual, one
    tensor added twice, and a MatMul (two base inputs, no bias slot)."""
    rng = np.random.default_rng(16)
    x, r = normal(rng, (1, 8, 5, 5)), normal(rng, (1, 8, 5, 5))
    w, a = normal(rng, (8, 8, 1, 1)), normal(rng, (24, 16))
    c = ref.conv(x, w)
    mx, mr = normal(rng, (3, 24)), normal(rng, (3, 16))
    mm = ref._f64(mx) @ ref._f64(a) + ref._f64(mr)
    return [
        Case("Relu(Conv(x) + x)", make_model(
            [helper.make_node("Conv", ["x", "w"], ["c"]), helper.make_node("Add", ["c", "x"], ["s"]),
             helper.make_node("Relu", ["s"], ["y"])], {"x": x}, {"y": c.shape}, {"w": w}),
            {"x": x}, [np.maximum(c + ref._f64(x), 0)]),
        Case("r + (Conv(x) + r)", make_model(
            [helper.make_node("Conv", ["x", "w"], ["c"]), helper.make_node("Add", ["c", "r"], ["s"]),
             helper.make_node("Add", ["r", "s"], ["y"])], {"x": x, "r": r}, {"y": c.shape}, {"w": w}),
            {"x": x, "r": r}, [c + 2 * ref._f64(r)]),
        Case("Sigmoid(MatMul(x, A) + r)", make_model(
            [helper.make_node("MatMul", ["x", "a"], ["c"]), helper.make_node("Add", ["c", "r"], ["s"]),
             helper.make_node("Sigmoid", ["s"], ["y"])], {"x": mx, "r": mr}, {"y": mm.shape}, {"a": a}),
            {"x": mx, "r": mr}, [1 / (1 + np.exp(-mm))]),
    ]


@pytest.mark.parametrize("case", _residual_cases(), ids=repr)
def test_fused_residual_inputs(case):
    check_cnnjit(case)
