"""The channel-blocked direct convolution (``cblock``, ``kernels/simd_cblock.py``): hypothesis cases over its
parameter space (kernel size, stride, dilation, pads, groups, batch, every fused activation with SiLU and a
residual Add) at every vector width against the plain-numpy reference, each asserting that ``cblock`` ran and
applied its epilogue in registers; its register tile within every budget; and where the variant table picks
it (stride 2 and short rows) or leaves a layer to the others, at the AVX2 and AVX-512 budgets."""

from __future__ import annotations

import numpy as np
import pytest
import reference_np as ref
from hypothesis import given, settings
from hypothesis import strategies as st
from onnx import TensorProto, helper, numpy_helper
from test_register_tiles import BUDGETS
from test_register_tiles import _run as run_budget
from test_simd_widths import applicable_variants
from test_vector_epilogue import ACTIVATIONS, _act_node, _ort, assert_in_registers
from test_vector_epilogue import _model as _ve_model

import cnnjit
from cnnjit.compiler.codegen.kernel import Target, choose
from cnnjit.compiler.codegen.kernels import simd_cblock
from cnnjit.compiler.codegen.kernels.simd_cblock import (
    LOOPED_ROW_TILES,
    MAX_RAGGED,
    MAX_UNROLLED_FMAS,
    MAX_WIDE_STRIDE_TAPS,
    MIN_CHANNELS_POINTWISE,
    MIN_DEPTH,
    MIN_DEPTH_POINTWISE,
    MIN_WINOGRAD_RATIO_ONE_CHANNEL,
    cblock_applies,
    cblock_tile,
    spare_registers,
    unroll_rows,
    winograd_takes,
)
from cnnjit.compiler.codegen.kernels.winograd import multiply_ratio
from cnnjit.compiler.codegen.simd import host_vector_registers

WIDTHS = [4, 8, 16]
ACTS = [None, "Relu", "SiLU", "HardSwish", "LeakyRelu", "Tanh"]


def _act(nodes: list, cur: str, act: str | None, expected: np.ndarray) -> np.ndarray:
    """Append ``act`` on ``cur`` (output ``y``) to ``nodes``; the reference applied to ``expected``."""
    if act is None:
        nodes.append(helper.make_node("Identity", [cur], ["y"]))
        return expected
    if act == "SiLU":  # x * sigmoid(x): fused into the Conv as one SiLU step
        nodes += [helper.make_node("Sigmoid", [cur], ["sg"]), helper.make_node("Mul", [cur, "sg"], ["y"])]
        return expected * ref.sigmoid(expected)
    if act == "LeakyRelu":
        nodes.append(helper.make_node("LeakyRelu", [cur], ["y"], alpha=0.1))
        return ref.leaky_relu(expected, 0.1)
    nodes.append(helper.make_node(act, [cur], ["y"]))
    return {"Relu": ref.relu, "HardSwish": ref.hard_swish, "Tanh": ref.tanh}[act](expected)


def conv_model(case: dict) -> tuple:
    """(model, input, float64 reference output) of one Conv (+ residual Add) (+ activation) case."""
    rng = np.random.default_rng(case["seed"])
    c, m, g, k, s, d = case["c"], case["m"], case["g"], case["k"], case["s"], case["d"]
    x = rng.standard_normal((case["n"], c, case["h"], case["w"])).astype(np.float32)
    wt = rng.standard_normal((m, c // g, k, k)).astype(np.float32)
    b = rng.standard_normal(m).astype(np.float32)
    expected = ref.conv(x, wt, b, strides=[s, s], pads=case["pads"], dilations=[d, d], group=g)
    nodes = [helper.make_node("Conv", ["x", "w", "b"], ["c"], kernel_shape=[k, k], strides=[s, s],
                              dilations=[d, d], pads=case["pads"], group=g)]
    cur, inits = "c", {"w": wt, "b": b}
    if case["residual"]:
        r = rng.standard_normal(expected.shape).astype(np.float32)
        inits["r"] = r
        nodes.append(helper.make_node("Add", [cur, "r"], ["a"]))
        cur, expected = "a", expected + r
    expected = _act(nodes, cur, case["act"], expected)
    graph = helper.make_graph(nodes, "m", [helper.make_tensor_value_info("x", TensorProto.FLOAT, list(x.shape))],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
                              [numpy_helper.from_array(v, k) for k, v in inits.items()])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)], ir_version=8), x, expected


@st.composite
def cblock_cases(draw, width: int):
    """Layers ``cblock`` applies to at ``width``: output channels per group a multiple of two vectors, input
    channels per group for the least reduction depth (and a few more), and a stride-2 or -3 layer, a row
    shorter than two vectors, or a 1x1 on a row shorter than four."""
    g = draw(st.sampled_from([1, 1, 2]))
    k = draw(st.sampled_from([1, 3, 5]))
    s = draw(st.sampled_from([1, 2, 3]))
    pointwise = k == 1 and s == 1
    least_m = -(-MIN_CHANNELS_POINTWISE // (2 * width)) if pointwise else 1  # in two-vector tiles
    m = g * 2 * width * draw(st.integers(least_m, least_m + 1))
    least = -(-(MIN_DEPTH_POINTWISE if pointwise else MIN_DEPTH) // (k * k))  # the reduction depth
    c = g * draw(st.integers(least, least + 4))
    d = draw(st.sampled_from([1, 1, 2]))
    span = (k - 1) * d + 1
    pads = [draw(st.integers(0, k // 2 + 1)) for _ in range(4)]
    h = draw(st.integers(max(1, span - pads[0] - pads[2]), 12))
    # stride 1: a row shorter than two vectors (any k), or than four (1x1)
    most = (4 if k == 1 else 2) * width - 1 if s == 1 else 40
    ow_max = min(most, 40)
    lo = max(1, span - pads[1] - pads[3])
    wmax = max(lo, (ow_max - 1) * s + span - pads[1] - pads[3])
    w = draw(st.integers(lo, min(wmax, 41)))
    return dict(n=draw(st.sampled_from([1, 1, 2])), c=c, m=m, g=g, k=k, s=s, d=d, h=h, w=w, pads=pads,
                act=draw(st.sampled_from(ACTS)), residual=not pointwise and draw(st.booleans()),
                seed=draw(st.integers(0, 2**16)))


def _check(case: dict, width: int, variant: str = "cblock"):
    """``case`` through the forced ``variant`` (which must apply) against the reference, asserting it ran
    with its epilogue in registers and no allocation in the kernel."""
    model, x, expected = conv_model(case)
    assert variant in applicable_variants(model, "Conv", width), case
    compiled = cnnjit.compile(model, vector_width=width, variants={"Conv": variant})
    prog = compiled._default_spec().program
    calls = [c for c in prog.calls if c.op == "Conv"]
    assert {c.variant for c in calls} == {variant}
    for c in calls:  # SiLU, HardSwish, ... and the residual before the (strided) store
        assert "v = yb[U(yo + q)]" not in prog.kernel_sources[c.kernel], case["act"]
        # no allocation (np.zeros/np.empty): the ahead-of-time targets compile kernels without numba's runtime
        assert "np." not in prog.kernel_sources[c.kernel]
    got = compiled(x)
    assert got.shape == expected.shape
    np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-4 * max(1.0, float(np.abs(expected).max())))
    return prog


@pytest.mark.parametrize("width", WIDTHS)
@settings(max_examples=6, deadline=None)
@given(data=st.data())
def test_cblock_matches_reference(width: int, data) -> None:
    _check(data.draw(cblock_cases(width), label="case"), width)


@pytest.mark.parametrize("width", WIDTHS)
def test_cblock_ddddocr_shapes(width: int) -> None:
    """The detector's shapes, shrunk: stride 2 with SiLU, a short row (13 columns at 8 lanes; 3 rows, which
    Winograd's tiles mostly pad) with SiLU + residual, a deep 1x1 on a short row."""
    for case in (dict(c=16, m=4 * width, k=3, s=2, h=9, w=26, pads=[1] * 4, act="SiLU", residual=False),
                 dict(c=15, m=2 * width, k=3, s=1, h=3, w=2 * width - 3, pads=[1] * 4, act="SiLU", residual=True),
                 dict(c=160, m=128, k=1, s=1, h=3, w=4 * width - 3, pads=[0] * 4, act="SiLU", residual=False)):
        _check(dict(case, n=1, g=1, d=1, seed=7), width)


@pytest.mark.parametrize(("width", "registers"), [(4, 16), (8, 16), (16, 32), (16, 8), (4, 32), (8, 8)])
def test_tile_fits_the_register_budget(width: int, registers: int) -> None:
    target = Target(vector_width=width, vector_registers=registers)
    for ow in (1, 2, 5, 7, 13, 26, 52, 104):
        mv, np_ = cblock_tile(target, 2 * width, ow)
        assert mv == 2 and 1 <= np_ <= max(1, ow)
        # accumulators, weights, broadcast and the registers left free
        spare = spare_registers(target)
        assert mv * np_ + mv + 1 + spare <= max(registers, 2 * mv + 1 + spare), (ow, mv, np_)
    assert cblock_tile(target, width, 13) is None  # one channel vector: not this kernel's
    assert cblock_tile(Target(vector_width=8, vector_registers=16), 16, 13) == (2, 5)
    assert cblock_tile(Target(vector_width=8, vector_registers=16), 16, 26) == (2, 4)
    assert cblock_tile(Target(vector_width=8, vector_registers=16), 16, 12) == (2, 4)  # not 2 x 6: 15 registers
    # AVX-512: at most 2 x 10 (2 x 13 spilled in the model), 13 columns as 2 x 7
    assert cblock_tile(Target(vector_width=16, vector_registers=32), 32, 13) == (2, 7)
    assert cblock_tile(Target(vector_width=16, vector_registers=32), 32, 52) == (2, 9)


@st.composite
def ragged_cases(draw, width: int):
    """``cblock_cases`` with one group whose output channels leave the last tile of two vectors partial
    (by at most ``MAX_RAGGED`` of the lanes): the zero-padded weights, masked bias, residual and stores."""
    case = draw(cblock_cases(width))
    lanes = 2 * width
    tiles = case["m"] // lanes
    m = tiles * lanes - draw(st.integers(1, max(1, int(MAX_RAGGED * tiles * lanes))))
    # one group (a ragged tile would straddle two); a 1x1 at stride 2 (cblock's pointwise rule wants 128)
    return dict(case, g=1, m=m, s=2 if case["k"] == 1 else case["s"])


@pytest.mark.parametrize("width", WIDTHS)
@settings(max_examples=5, deadline=None)
@given(data=st.data())
def test_cblock_ragged_channels_match_reference(width: int, data) -> None:
    """Output channels that do not fill whole tiles (an FFT's 257 bins): ``cblock`` still runs (it used to
    need two whole vectors per tile) and matches the reference, epilogue and residual included."""
    prog = _check(data.draw(ragged_cases(width), label="case"), width)
    assert all(f"vscattern{2 * width}(" in prog.kernel_sources[c.kernel] for c in prog.calls if c.op == "Conv")


@pytest.mark.parametrize("target", [Target(vector_width=8, vector_registers=16),
                                    Target(vector_width=16, vector_registers=32)], ids=["avx2", "avx512"])
def test_ragged_channels_choice(target: Target) -> None:
    """Ragged channel counts: cblock's when whole tiles waste at most ``MAX_RAGGED`` of their lanes and
    there is one group; on a long stride-1 row too when ``simd_conv``'s tile could hold only a divisor of a
    prime channel count (257: one channel per tile, a load per FMA)."""
    w = target.vector_width
    assert cblock_tile(target, 257, 5) is not None
    assert cblock_tile(target, 257, 5, group=2) is None  # a ragged tile would straddle two groups
    assert cblock_tile(target, 2 * w + 1, 5) is None  # nearly a whole tile of padding
    # short row: Winograd's one-channel GEMM tile saves 2.64x the multiplies at 8 lanes, under
    # MIN_WINOGRAD_RATIO_ONE_CHANNEL
    assert choose(_layer(64, 257, 13, 3, 1), target).name == "cblock"
    assert choose(_layer(64, 257, 40, 3, 2), target).name == "cblock"  # stride 2
    assert choose(_layer(64, 257, 4 * w + 4, 5, 1), target).name == "cblock"  # long row, prime channels
    # ... a 3x3 too, unless Winograd saves MIN_WINOGRAD_RATIO_ONE_CHANNEL of its multiplies (one channel per
    # GEMM tile: 3.4 at 8 lanes, 2.1 at 16)
    n3 = _layer(64, 257, 4 * w + 4, 3, 1)
    assert choose(n3, target).name == ("winograd_f4" if w == 8 else "cblock")
    assert (multiply_ratio(n3, target) >= MIN_WINOGRAD_RATIO_ONE_CHANNEL) == (w == 8)
    assert choose(_layer(64, 4 * w - 8, 4 * w + 4, 3, 1), target).name != "cblock"  # long row, 12 | M


@pytest.mark.parametrize("width", WIDTHS)
def test_dilated_long_rows(width: int) -> None:
    """A horizontally dilated stride-1 layer on a long row that reaches codegen dilated (the
    ``conv_column_phases`` pass off): cblock (it beat simd_conv 1.2-9x on dilated layers); with the pass, these
    become column phases dilated vertically only. A vertically dilated 3x3 (PLCMOS: (2, 1), 64 -> 128 on 96x16)
    is Winograd's, like an undilated one (its row phases, ``winograd.tile_rows``); checked at every width,
    residual and activation."""
    for target in (Target(vector_width=8, vector_registers=16), Target(vector_width=16, vector_registers=32)):
        w = target.vector_width
        for dilations in ((1, 2), (2, 2), (3, 2)):
            node = _layer(32, 2 * w, 4 * w + 4, 3, 1, dilations=dilations, disable=["conv_column_phases"])
            assert choose(node, target).name == "cblock"
            node = _layer(32, 2 * w, 4 * w + 4, 3, 1, dilations=dilations)
            assert tuple(node.attrs["dilations"]) == (dilations[0], 1)
            assert choose(node, target).name == "winograd_f4"
        for dilations in ((1, 1), (2, 1)):
            assert choose(_layer(32, 2 * w, 4 * w + 4, 3, 1, dilations=dilations), target).name == "winograd_f4"
    _check(dict(n=1, c=16, m=2 * width, g=1, k=3, s=1, d=2, h=9, w=4 * width + 5, pads=[2, 1, 2, 1],
                act="LeakyRelu", residual=True, seed=3), width)


@pytest.mark.parametrize("width", WIDTHS)
def test_wide_column_stride(width: int) -> None:
    """Column strides above 2 (basic-pitch's 5x5 and 7x7 of stride (1, 3)) at any reduction depth, one input
    channel included: cblock where the other variants leave them to ``direct``, up to MAX_WIDE_STRIDE_TAPS
    taps; checked against the reference at every width."""
    for target in (Target(vector_width=8, vector_registers=16), Target(vector_width=16, vector_registers=32)):
        w = target.vector_width
        for c, k in ((1, 7), (4, 5), (3, 3)):
            node = _layer(c, 2 * w, 6 * w, k, 1, strides=(1, 3))
            assert c * k * k < MIN_DEPTH and choose(node, target).name == "cblock"
        assert choose(_layer(1, 2 * w, 6 * w, 3, 1, strides=(4, 4)), target).name == "cblock"
        assert 7 * 7 <= MAX_WIDE_STRIDE_TAPS < 8 * 8  # an 8x8 has too many taps
        assert not cblock_applies(_layer(1, 2 * w, 6 * w, 8, 1, strides=(1, 3)), target)
    for c, k, s, act in ((1, 7, 3, "Relu"), (8, 5, 3, "Tanh"), (2, 3, 4, None)):
        _check(dict(n=1, c=c, m=2 * width, g=1, k=k, s=s, d=1, h=k + 4, w=5 * width + 3,
                    pads=[k // 2, k // 2 - 1, k // 2, k // 2], act=act, residual=False, seed=k), width)


def _layer(c: int, m: int, hw: int, k: int, s: int, group: int = 1, dilations: tuple = (1, 1),
           strides: tuple | None = None, **options):
    rng = np.random.default_rng(0)
    nodes = [helper.make_node("Conv", ["x", "w", "b"], ["y"], kernel_shape=[k, k], strides=list(strides or (s, s)),
                              pads=[k // 2] * 4, group=group, dilations=list(dilations))]
    inits = {"w": rng.standard_normal((m, c // group, k, k)).astype(np.float32),
             "b": rng.standard_normal(m).astype(np.float32)}
    graph = helper.make_graph(nodes, "m", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, c, hw, hw])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
                              [numpy_helper.from_array(v, k) for k, v in inits.items()])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)], ir_version=8)
    return next(n for n in cnnjit.compile(model, entry="lazy", **options).ir.nodes if n.op == "Conv")


@pytest.mark.parametrize("target", [Target(vector_width=8, vector_registers=16),
                                    Target(vector_width=16, vector_registers=32)], ids=["avx2", "avx512"])
def test_variant_table_choice(target: Target) -> None:
    """cblock for the detector's stride-2 layers, an 8x8 3x3 and deep 1x1s on short rows; the 52x52 stride-1
    3x3 layer, a short-row 3x3 that Winograd tiles well, 1x1 on long rows, depthwise, too few output or input
    channels go to the other variants."""
    w = target.vector_width
    assert choose(_layer(96, 192, 52, 3, 2), target).name == "cblock"
    assert choose(_layer(48, 96, 104, 3, 2), target).name == "cblock"
    # short rows Winograd tiles well (multiply ratio 2.25 >= MIN_WINOGRAD_RATIO; 13x13 and 14x14 at 2.64 and
    # 3.06 with two copies of the padded input, no dummy tile) go to it; mostly padding (2.0 on 8x8) stays,
    # unless winograd_f4_channels takes it (its GEMMs vectorise channels: 12x12 and 8x8 from 32 input channels
    # in 12 and 4 tiles, test_winograd_channels.py); with 16 input channels 8x8 stays off it
    # (at 16 lanes a 12x12 map's 9 tiles pad to one vector: under winograd_f4's crossover, WIDE_RATIO)
    assert winograd_takes(_layer(64, 64, 12, 3, 1), target) == (w == 8)
    assert choose(_layer(64, 64, 12, 3, 1), target).name == "winograd_f4_channels"
    # 16 lanes: a 13x13 map's 16 tiles are one vector, under winograd_f4's crossover (WIDE_RATIO), and cblock
    # (2 x 7 tiles) runs it at 85-97% of the FMA peak in the model
    assert choose(_layer(192, 192, 13, 3, 1), target).name == ("winograd_f4" if w == 8 else "cblock")
    assert choose(_layer(96, 96, 14, 3, 1), target).name == "winograd_f4"
    assert cblock_applies(_layer(64, 64, 8, 3, 1), target)
    assert choose(_layer(64, 64, 8, 3, 1), target).name == "winograd_f4_channels"
    assert choose(_layer(16, 16, 8, 3, 1), target).name != "winograd_f4_channels"
    assert choose(_layer(64, 64, 104, 1, 1), target).name == "packed_pointwise"  # 1x1 on long rows
    assert not cblock_applies(_layer(64, 64, 104, 1, 1), target)
    assert choose(_layer(96, 96, 4 * w + 4, 3, 1), target).name != "cblock"
    assert choose(_layer(32, 32, 13, 3, 2, group=32), target).name == "simd_depthwise_static"
    assert choose(_layer(16, 2 * w, 26, 3, 2), target).name == "cblock"
    assert choose(_layer(16, w, 26, 3, 2), target).name != "cblock"  # one channel vector
    assert choose(_layer(3, 32, 64, 3, 2), target).name != "cblock"  # a stem: too shallow a reduction
    # a deep 1x1 on short rows: cblock's, but packed_pointwise (ahead in the table) is faster there
    assert cblock_applies(_layer(384, 384, 13, 1, 1), target)
    assert choose(_layer(384, 384, 13, 1, 1), target).name == "packed_pointwise"
    assert choose(_layer(64, 384, 13, 1, 1), target).name != "cblock"  # too shallow
    assert choose(_layer(384, 64, 13, 1, 1), target).name != "cblock"  # too few output channels


@pytest.mark.parametrize(("width", "registers"), BUDGETS)
@settings(max_examples=3, deadline=None)
@given(data=st.data())
def test_cblock_tile_per_budget(width: int, registers: int, data) -> None:
    """At each register budget (AVX-512's 32 registers too, run on the host's), the kernel computes a drawn
    case with the tile ``cblock_tile`` sizes for that budget: ``NP`` pixel accumulators in its source."""
    case = data.draw(cblock_cases(width), label="case")
    case.update(n=1, act=data.draw(st.sampled_from([None, "Relu", "HardSwish"]), label="act"))
    src = run_budget(case, width, registers, "cblock")
    ow = (case["w"] + case["pads"][1] + case["pads"][3] - (case["k"] - 1) * case["d"] - 1) // case["s"] + 1
    _, np_ = cblock_tile(Target(vector_width=width, vector_registers=registers), case["m"] // case["g"], ow)
    assert f"a{np_ - 1} = b" in src and f"a{np_} = b" not in src


def test_every_activation_in_registers(width: int = 16) -> None:
    """Every activation with a vector form (test_vector_epilogue's list) fused into a cblock layer (stride 2,
    one branch each) is applied in registers, and the results match onnxruntime. At one width (20 kernels
    each): the vector math is checked at every width in test_vector_math.py, and test_cblock_matches_reference
    draws activations for this kernel at every width."""
    rng = np.random.default_rng(width)
    c, m = 16, 2 * width
    x = rng.standard_normal((1, c, 9, 13)).astype(np.float32)
    nodes, inits, outs = [], {}, []
    for i, (op, attrs) in enumerate(ACTIVATIONS):
        inits[f"w{i}"] = (rng.standard_normal((m, c, 3, 3)) * 0.2).astype(np.float32)
        inits[f"b{i}"] = rng.standard_normal(m).astype(np.float32)
        nodes.append(helper.make_node("Conv", ["x", f"w{i}", f"b{i}"], [f"p{i}"], kernel_shape=[3, 3],
                                      pads=[1] * 4, strides=[2, 2]))
        nodes.append(_act_node(op, attrs, f"p{i}", f"y{i}", inits))
        outs.append(f"y{i}")
    model = _ve_model(nodes, x.shape, inits, outs)
    compiled = cnnjit.compile(model, vector_width=width)
    assert {c.variant for c in compiled._default_spec().program.calls if c.op == "Conv"} == {"cblock"}
    assert_in_registers(compiled, "Conv", width)
    for got, want in zip(compiled(x), _ort(model, x)):
        np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4 * max(1.0, float(np.abs(want).max())))


@pytest.mark.parametrize("width", WIDTHS)
def test_large_tiles_loop_over_their_kernel_rows(width: int) -> None:
    """A tile of many FMAs on a long row (the Inception stem's 7x7 of stride 2) runs its kernel rows inside
    the input as a loop of constant trip count instead of an unrolled copy (``unroll_rows``); short rows,
    5x5 and 3x3 tiles stay unrolled: checked in the source (as the tile the width's register budget gives
    says) and, with a residual, against the reference at every width, and the looped rows once more at
    every width whatever the tile."""
    assert unroll_rows(3, 3, 8, 20) and unroll_rows(1, 9, 8, 20) and unroll_rows(5, 5, 5, 20)
    assert not unroll_rows(7, 7, 3, LOOPED_ROW_TILES) and unroll_rows(7, 7, 5, LOOPED_ROW_TILES - 1)
    assert 5 * 5 * 5 <= MAX_UNROLLED_FMAS < 7 * 7 * 3
    assert unroll_rows(5, 5, 8, 20) and not unroll_rows(6, 6, 4, 20)  # a 5x5 never loops (AVX-512's 8 pixels)
    target = Target(vector_width=width, vector_registers=host_vector_registers(width))
    for k, s, c, w, act, residual in ((7, 2, 3, 200, "Relu", False), (7, 1, 8, 2 * width - 2, "SiLU", True),
                                      (5, 2, 8, 4 * width + 5, "SiLU", True), (3, 2, 16, 200, None, True)):
        prog = _check(dict(n=1, c=c, m=2 * width, g=1, k=k, s=s, d=1, h=k + 3, w=w, pads=[k // 2] * 4, act=act,
                           residual=residual, seed=k), width)
        ow = prog.calls[0].node.outputs[0].shape[3]
        np_ = cblock_tile(target, 2 * width, ow)[1]
        srcs = [prog.kernel_sources[call.kernel] for call in prog.calls if call.op == "Conv"]
        assert srcs and all("if khlo == 0 and khhi" in src for src in srcs)
        looped = not unroll_rows(k, k, np_, -(-ow // np_))
        assert all((f"for kh in range({k}):" in src) == looped for src in srcs), (k, np_, ow)
    with pytest.MonkeyPatch.context() as mp:  # the looped rows at every width, whatever the tile
        mp.setattr(simd_cblock, "MAX_UNROLLED_FMAS", 0)
        mp.setattr(simd_cblock, "LOOPED_ROW_TILES", 1)
        mp.setattr(simd_cblock, "MIN_LOOPED_TAPS", 0)
        prog = _check(dict(n=2, c=16, m=2 * width, g=1, k=3, s=2, d=1, h=7, w=4 * width + 5, pads=[1, 0, 1, 2],
                           act="HardSwish", residual=True, seed=5), width)
        assert all("for kh in range(3):" in prog.kernel_sources[c.kernel] for c in prog.calls if c.op == "Conv")


@pytest.mark.parametrize("lanes", [4, 8, 16, 32])
def test_vtaps_is_a_row_of_broadcast_fmas(lanes: int) -> None:
    """``vtaps`` (the unrolled taps' one call, ``simd_taps``) at the machine widths and a tile row of two
    AVX-512 vectors: ``acc[k] + x[i + offs[k]] * w`` per accumulator, fused (one rounding: float64 reference
    rounded once), the accumulators it is not given left alone."""
    from numba import njit

    from cnnjit.compiler.codegen import simd, simd_taps
    load, store, taps = getattr(simd, f"vload{lanes}"), getattr(simd, f"vstore{lanes}"), \
        getattr(simd_taps, f"vtaps{lanes}")

    @njit
    def run(x, i, w, acc):
        a0, a1, a2 = load(acc, 0), load(acc, lanes), load(acc, 2 * lanes)
        a0, a2, = taps((a0, a2, ), x, i, load(w, 0), (0, 7, ))
        store(acc, 0, a0)
        store(acc, lanes, a1)
        store(acc, 2 * lanes, a2)

    rng = np.random.default_rng(lanes)
    x, w = rng.standard_normal(20).astype(np.float32), rng.standard_normal(lanes).astype(np.float32)
    acc = rng.standard_normal(3 * lanes).astype(np.float32)
    want = acc.astype(np.float64).reshape(3, lanes)
    want[0] += np.float64(x[5]) * w
    want[2] += np.float64(x[12]) * w
    run(x, 5, w, acc)
    np.testing.assert_array_equal(acc.reshape(3, lanes), want.astype(np.float32))


@pytest.mark.parametrize("lanes", [4, 8, 16, 32])
def test_vscatter4t_stores_four_pixels_as_rows(lanes: int) -> None:
    """``vscatter4t`` (the tile's stores, ``epilogue.channel_stores``): lane ``j`` of the four pixel vectors
    lands at ``buf[i + j * s + 0..3]``, at the machine widths and a tile row of two AVX-512 vectors, nothing
    else written (the gaps between the planes keep their NaNs)."""
    from numba import njit

    from cnnjit.compiler.codegen import simd
    load, scatter4 = getattr(simd, f"vload{lanes}"), getattr(simd, f"vscatter4t{lanes}")

    @njit
    def run(src, out, i, s):
        scatter4(out, i, s, load(src, 0), load(src, lanes), load(src, 2 * lanes), load(src, 3 * lanes))

    src = np.random.default_rng(lanes).standard_normal(4 * lanes).astype(np.float32)
    s, i = 7, 3  # planes 7 apart (not a vector width), from element 3
    out = np.full(i + lanes * s + 4, np.nan, np.float32)
    run(src, out, i, s)
    want = np.full_like(out, np.nan)
    for j in range(lanes):
        want[i + j * s: i + j * s + 4] = src.reshape(4, lanes)[:, j]
    np.testing.assert_array_equal(out, want)


@pytest.mark.parametrize("width", WIDTHS)
def test_whole_tiles_store_quads_of_pixels(width: int) -> None:
    """A row of 8 output pixels in tiles of 4 (ResNet-8's 32 -> 64 stride-2 layer) stores each tile as rows of
    four pixels per channel (``vscatter4t``), and matches the reference; where the register budget allows
    fewer than 4 pixels per tile (16 lanes on a 16-register host), each pixel is one strided store."""
    prog = _check(dict(n=1, c=32, m=4 * width, g=1, k=3, s=2, d=1, h=16, w=16, pads=[1, 1, 1, 1],
                       act="Relu", residual=False, seed=3), width)
    _, pixels = cblock_tile(Target(vector_width=width, vector_registers=host_vector_registers(width)), 4 * width, 8)
    sources = [prog.kernel_sources[c.kernel] for c in prog.calls if c.op == "Conv"]
    assert all((f"vscatter4t{2 * width}(" in src) == (pixels >= 4) for src in sources), pixels
