"""The wide 1-D Conv variant (``conv1d_packed``: ``packed_pointwise``'s micro-kernel over shifted windows of a
one-row input, ``taps``).

* every vector width (4, 8, 16) over its parameter space (batch, the three forms a Conv1D takes: ``1 x K`` on
  ``N x C x 1 x L``, tf2onnx's ``K x 1`` on ``N x C x L x 1`` through ``conv_columns`` and a 3-D Conv on
  ``N x C x L``; kernel widths 2-9, dilations, asymmetric pads, rows that end in a part-filled strip, fused
  activation and residual Add, the reduction in one chunk and in several, several pixel blocks and row
  groups) against a float64 numpy reference, with the variant asserted;
* dilations past a strip's ``L = 2 * W`` columns (``tap_stride``: each tap's window stored alone), at every
  width, with pads that put whole vectors and vectors across an edge into the padding;
* split over 2 threads, over output channels and along its part space (output columns): bit-identical to one
  thread;
* the variant table: it takes Conv1D layers (Magika's 256 -> 512 kernel 5 among them) and leaves 2-D maps,
  strided, grouped, shallow, narrow and short ones to the others.
"""

from __future__ import annotations

import numpy as np
import pytest
import reference_np as ref
from conftest import avx2_registers
from hypothesis import given
from hypothesis import strategies as st
from kernel_cases import property_settings
from onnx import TensorProto, helper, numpy_helper
from test_thread_splits import compile_forced

import cnnjit
from cnnjit.compiler.codegen import threads as split
from cnnjit.compiler.codegen.kernel import Target, choose
from cnnjit.compiler.codegen.kernels import conv1d_packed, packed_pointwise

WIDTHS = [4, 8, 16]
FORMS = ["row", "column", "1d"]


def conv1d_model(form: str, n: int, wt: np.ndarray, b: np.ndarray, length: int, pads: tuple[int, int],
                 dilation: int = 1, act: str | None = None, residual: np.ndarray | None = None, group: int = 1):
    """One Conv1D of the ``M x C / group x K`` weights ``wt`` over ``length`` columns in ``form`` (``row``:
    ``1 x K`` on ``N x C x 1 x L``; ``column``: ``K x 1`` on ``N x C x L x 1``; ``1d``: a 3-D Conv), then optionally
    a residual Add of a constant (given as ``N x M x OL``) and an activation; the output reshaped to
    ``N x M x OL``."""
    m, cg, k = wt.shape
    c = cg * group
    ol = length + sum(pads) - dilation * (k - 1)
    shape, kernel, attrs = {
        "row": ((n, c, 1, length), (1, k), dict(pads=[0, pads[0], 0, pads[1]], dilations=[1, dilation])),
        "column": ((n, c, length, 1), (k, 1), dict(pads=[pads[0], 0, pads[1], 0], dilations=[dilation, 1])),
        "1d": ((n, c, length), (k,), dict(pads=list(pads), dilations=[dilation])),
    }[form]
    out = {"row": (n, m, 1, ol), "column": (n, m, ol, 1), "1d": (n, m, ol)}[form]
    inits = {"w": wt.reshape(m, cg, *kernel), "b": b, "s": np.array([n, m, ol], np.int64)}
    nodes = [helper.make_node("Conv", ["x", "w", "b"], ["c"], kernel_shape=list(kernel), group=group, **attrs)]
    cur = "c"
    if residual is not None:
        inits["r"] = residual.reshape(out)
        nodes.append(helper.make_node("Add", [cur, "r"], ["a"]))
        cur = "a"
    nodes += [helper.make_node(act or "Identity", [cur], ["z"]), helper.make_node("Reshape", ["z", "s"], ["y"])]
    g = helper.make_graph(nodes, "conv1d", [helper.make_tensor_value_info("x", TensorProto.FLOAT, list(shape))],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
                          [numpy_helper.from_array(v, k) for k, v in inits.items()])
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", 13)], ir_version=8), shape


def conv_variants(model) -> set[str]:
    return {c.variant for c in model._default_spec().program.calls if c.op == "Conv"}


@st.composite
def cases(draw):
    """Layers the variant takes when forced at every width: at least ``MIN_DEPTH`` taps, 2 register tiles of
    output rows at 16 lanes (16 rows), 33-90 output columns (more than a strip of 2 vectors at 16 lanes)."""
    k = draw(st.integers(2, 9))
    d = draw(st.integers(1, 3))
    span = d * (k - 1)
    pads = (draw(st.integers(0, span)), draw(st.integers(0, span)))
    ol = draw(st.integers(33, 90))
    return dict(form=draw(st.sampled_from(FORMS)), n=draw(st.integers(1, 2)),
                c=draw(st.integers(-(-conv1d_packed.MIN_DEPTH // k), 24)), m=draw(st.integers(16, 30)), k=k,
                dilation=d, pads=pads, length=ol - sum(pads) + span, act=draw(st.sampled_from([None, "Relu"])),
                residual=draw(st.booleans()), small=draw(st.booleans()), seed=draw(st.integers(0, 2**16)))


def layer(case: dict):
    """(model, input, float64 expected output as ``N x M x OL``, its scale ``sum |w| |x| + |b| + |r|``)."""
    rng = np.random.default_rng(case["seed"])
    x = rng.standard_normal((case["n"], case["c"], case["length"])).astype(np.float32)
    wt = rng.standard_normal((case["m"], case["c"], case["k"])).astype(np.float32)
    b = rng.standard_normal(case["m"]).astype(np.float32)
    expected, scale, r = ref.conv_layer(rng, x, wt, b, case["act"], case["residual"], pads=list(case["pads"]),
                                        dilations=[case["dilation"]])
    model, shape = conv1d_model(case["form"], case["n"], wt, b, case["length"], case["pads"], case["dilation"],
                                case["act"], r)
    return model, x.reshape(shape), expected, scale


def small_blocks(mp: pytest.MonkeyPatch) -> None:
    """Chunks of a few channels (the last one short), blocks of one or two strips and row groups of one tile:
    the partial sums through the output, every loop of the blocking taken more than once."""
    mp.setattr(conv1d_packed, "STRIP_PANEL_BYTES", 512)
    mp.setattr(conv1d_packed, "BLOCK_PANEL_BYTES", 1024)
    mp.setattr(conv1d_packed, "GROUP_WEIGHT_BYTES", 1)


@pytest.mark.parametrize("width", WIDTHS)
@property_settings(max_examples=4)  # each example compiles a kernel
@given(case=cases())
def test_conv1d_packed_at_width(width: int, case: dict) -> None:
    """Forced (asserted) and within float32 rounding of the float64 reference; ``small``: several chunks,
    blocks and row groups (``small_blocks``)."""
    check_forced(case, width)


def check_forced(case: dict, width: int, variant: str = "conv1d_packed", build=None, small=None) -> None:
    """``case`` compiled at ``width`` with ``variant`` forced (asserted), in small blocks if ``small`` (the
    blocking patch: ``small_blocks``); within float32 rounding of the float64 reference. ``build``: the
    case's (model, input, expected, scale), ``layer`` by default."""
    model, x, expected, scale = (build or layer)(case)
    with pytest.MonkeyPatch.context() as mp:
        if case["small"]:
            (small or small_blocks)(mp)
        compiled = cnnjit.compile(model, vector_width=width, variants={"Conv": variant})
    assert conv_variants(compiled) == {variant}
    got = compiled(x)
    assert got.shape == expected.shape
    err = np.abs(got.astype(np.float64) - expected)
    assert np.all(err <= 1e-5 * scale + 1e-6), err.max()


@st.composite
def wide_dilations(draw, width: int):
    """Layers whose dilation is near or past the strip of ``2 * width`` columns (a TCN's 16 -> 16 kernel 5 at
    dilations 16-1024), pads under the output length (every tap meets the input: ``conv_dead_taps`` keeps the
    kernel whole)."""
    k = draw(st.integers(2, 5))
    d = draw(st.integers(width, 6 * width))
    ol = draw(st.integers(33, 70))
    pads = (draw(st.integers(0, min(d * (k - 1), ol - 1))), draw(st.integers(0, min(d * (k - 1), ol - 1))))
    return dict(form=draw(st.sampled_from(["row", "column"])), n=1, c=draw(st.integers(-(-16 // k), 20)),
                m=draw(st.integers(16, 24)), k=k, dilation=d, pads=pads, length=ol - sum(pads) + d * (k - 1),
                act=draw(st.sampled_from([None, "Relu"])), residual=False, small=draw(st.booleans()),
                seed=draw(st.integers(0, 2**16)))


@pytest.mark.parametrize("width", WIDTHS)
@property_settings(max_examples=3)  # each example compiles a kernel
@given(data=st.data())
def test_conv1d_packed_wide_dilation(width: int, data) -> None:
    """Dilations from one vector to three strips: forced (asserted), within float32 rounding of the float64
    reference, and the taps' windows stored ``tap_stride`` apart (the panel ``KW * L`` wide past ``L``)."""
    case = data.draw(wide_dilations(width))
    check_forced(case, width)
    L = 2 * width
    assert packed_pointwise.tap_row(L, case["k"], case["dilation"], width) == (
        case["k"] * L if case["dilation"] >= L else -(-(L + (case["k"] - 1) * case["dilation"]) // width) * width)


@pytest.mark.parametrize(("m", "notes"), [(64, "channels"), (12, "part")])
def test_conv1d_packed_parts(monkeypatch: pytest.MonkeyPatch, m: int, notes: str) -> None:
    """Split over 2 threads, in small blocks: over output channels (64 of them), or along the part space (156
    output columns as 80 + 76: whole strips, the last one part-filled) when 12 channels do not split in whole
    vectors; every part runs the variant and the output is bit-identical to one thread and within rounding of
    the reference."""
    case = dict(form="row", n=1, c=20, m=m, k=5, dilation=1, pads=(2, 2), length=156, act="Relu", residual=False,
                seed=5)
    model, x, expected, scale = layer(case)
    small_blocks(monkeypatch)
    # (AVX2's register file: tiles of 6 rows, so 12 channels are its 2 row tiles; 32 registers' 8-row tiles
    # would need 16, which split in whole vectors)
    avx2_registers(monkeypatch)
    for name, least in (("MIN_PARALLEL_TOTAL_US", 0.0), ("MIN_PARALLEL_US", 0.0), ("MIN_PART_US", 1e-6)):
        monkeypatch.setattr(split, name, least)  # (every layer worth splitting)
    one, two, calls, _ = compile_forced(model, 8, 2, "conv1d_packed")  # (asserts the variant of every call)
    assert len(calls) == 2 and all(notes in cl.note for cl in calls), [cl.note for cl in calls]
    got = two(x)
    np.testing.assert_array_equal(got, one(x))
    assert np.all(np.abs(got.astype(np.float64) - expected) <= 1e-5 * scale + 1e-6)


@pytest.mark.parametrize(("form", "c", "m", "length", "k", "group", "chosen"), [
    ("column", 256, 512, 512, 5, 1, True),     # Magika's (tf2onnx Kx1, through conv_columns)
    ("row", 64, 128, 1000, 9, 1, True), ("1d", 512, 512, 200, 3, 1, True), ("row", 8, 64, 1000, 3, 1, True),
    ("row", 64, 12, 100, 3, 1, True),          # 2 row tiles of 6
    ("row", 64, 8, 100, 3, 1, False),          # 1 row tile and 2 rows
    ("row", 4, 64, 1000, 3, 1, False),         # 12 taps: stem_conv
    ("row", 128, 128, 16, 3, 1, False),        # 16 output columns, one strip: cblock's
    ("row", 64, 64, 100, 3, 2, False),         # grouped
    ("2d", 64, 64, 20, 3, 1, False)])          # a 2-D map (1 x 3 on 20 x 20)
def test_conv1d_packed_applicability(form: str, c: int, m: int, length: int, k: int, group: int,
                                     chosen: bool) -> None:
    """The default table (AVX2's tile) takes Conv1D layers from ``MIN_DEPTH`` taps, ``MIN_ROW_TILES`` register
    tiles of output channels and more than one strip of output columns, whichever form the exporter wrote."""
    wt = np.ones((m, c // group, k), np.float32)
    if form == "2d":
        model = helper.make_model(helper.make_graph(
            [helper.make_node("Conv", ["x", "w"], ["y"], kernel_shape=[1, k], pads=[0, 1, 0, 1])], "g",
            [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, c, length, length])],
            [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
            [numpy_helper.from_array(wt.reshape(m, c, 1, k), "w")]),
            opset_imports=[helper.make_opsetid("", 13)], ir_version=8)
    else:
        model, _ = conv1d_model(form, 1, wt, np.zeros(m, np.float32), length, (k // 2, k // 2), group=group)
    node = next(n for n in cnnjit.compile(model, entry="lazy").ir.nodes if n.op == "Conv")
    assert (choose(node, Target(vector_width=8, vector_registers=16)).name == "conv1d_packed") == chosen
