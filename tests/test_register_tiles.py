"""Register tiles sized from the target's register budget (``Target.vector_registers``).

The dense (``simd_conv``) and pointwise (``simd_pointwise``) kernels pick their tile (channels x column
vectors) from the vector width and the register file: each (width, registers) pair below is a different
tile, so every kernel they generate is checked here against the float64 numpy reference (``reference_np``)
on a target with that budget, on the host (LLVM splits a wider vector into the host's registers). Each
example asserts the variant that ran and the tile its kernel holds. The tile choices themselves are checked
to fit the registers they are sized for.
"""

from __future__ import annotations

import platform
import re

import numpy as np
import pytest
import reference_np as ref
from hypothesis import given
from hypothesis import strategies as st
from kernel_cases import property_settings
from onnx import TensorProto, helper, numpy_helper

from cnnjit.compiler.codegen.kernel import Target
from cnnjit.compiler.codegen.kernels.simd_conv import MAX_ROW_LANES, conv_tile
from cnnjit.compiler.codegen.kernels.simd_pointwise import pixel_block, pointwise_tile
from cnnjit.compiler.codegen.simd import LANES, host_vector_registers, host_vector_width
from cnnjit.compiler.stages import CompileOptions, specialize
from cnnjit.profile import fma_chains

#: (vector width, registers): NEON, AVX2, AVX-512, and a 16-lane vector on AVX2 (two registers each)
BUDGETS = [(4, 32), (8, 16), (16, 32), (16, 8), (8, 32)]


def _target(width: int, registers: int, variant: str) -> Target:
    return Target(vector_width=width, int_width=8, vector_registers=registers, variants=(("Conv", variant),))


def _conv_model(x_shape, wt, b, attrs, act):
    nodes = [helper.make_node("Conv", ["x", "w", "b"], ["c"], **attrs)]
    nodes.append(helper.make_node(act, ["c"], ["y"]) if act else helper.make_node("Identity", ["c"], ["y"]))
    g = helper.make_graph(nodes, "m", [helper.make_tensor_value_info("x", TensorProto.FLOAT, x_shape)],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
                          [numpy_helper.from_array(wt, "w"), numpy_helper.from_array(b, "b")])
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", 13)], ir_version=8)


def _run(case: dict, width: int, registers: int, variant: str) -> str:
    """Compile and run ``case`` for the budget with ``variant`` forced; check against the reference; return
    the Conv kernel's source."""
    rng = np.random.default_rng(case["seed"])
    c, m, g, k, s, d = case["c"], case["m"], case["g"], case["k"], case["s"], case["d"]
    x = rng.standard_normal((1, c, case["h"], case["w"])).astype(np.float32)
    wt = rng.standard_normal((m, c // g, k, k)).astype(np.float32)
    b = rng.standard_normal(m).astype(np.float32)
    attrs = dict(kernel_shape=[k, k], strides=[s, s], dilations=[d, d], pads=case["pads"], group=g)
    expected = ref.conv(x, wt, b, strides=[s, s], pads=case["pads"], dilations=[d, d], group=g)
    if case["act"] == "Relu":
        expected = ref.relu(expected)
    elif case["act"] == "HardSwish":
        expected = ref.hard_swish(expected)
    model = _conv_model(list(x.shape), wt, b, attrs, case["act"])
    spec = specialize(model, {"x": x.shape}, CompileOptions(), target=_target(width, registers, variant))
    calls = [cl for cl in spec.program.calls if cl.op.startswith("Conv")]
    assert {cl.variant for cl in calls} == {variant}, f"forced {variant}, the schedule ran {calls}"
    got = spec.run({"x": x})[0]
    np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-4 * max(1.0, float(np.abs(expected).max())))
    return spec.program.kernel_sources[calls[0].kernel]


def _accumulators(src: str) -> tuple[int, int]:
    """(rows, lanes) of the widest register tile in a kernel source: its accumulators are ``a{lanes}_{row}``."""
    tiles = [(int(r), int(n)) for n, r in re.findall(r"\ba(\d+)_(\d+) = vfma", src)]
    lanes = max(n for _, n in tiles)
    return 1 + max(r for r, n in tiles if n == lanes), lanes


@st.composite
def dense_cases(draw):
    g = draw(st.sampled_from([1, 1, 2]))
    c = g * draw(st.integers(1, 4))
    m = g * draw(st.sampled_from([1, 3, 4, 6, 8, 12, 16, 24]))
    k = draw(st.sampled_from([1, 3, 3, 5]))
    s, d = draw(st.integers(1, 2)), draw(st.sampled_from([1, 1, 2]))
    span = (k - 1) * d + 1
    # rows wide enough for interior tiles of several vectors (up to 64 lanes) and their borders
    h, w = draw(st.integers(span, span + 3)), draw(st.integers(span, 90))
    pads = [draw(st.integers(0, k // 2 + 1)) for _ in range(4)]
    return dict(c=c, m=m, g=g, k=k, s=s, d=d, h=h, w=w, pads=pads, act=draw(st.sampled_from([None, "Relu",
                "HardSwish"])), seed=draw(st.integers(0, 2**16)))


@pytest.mark.parametrize("width, registers", BUDGETS)
@property_settings(max_examples=3)
@given(case=dense_cases())
def test_dense_conv_tiles(width, registers, case) -> None:
    """``simd_conv`` with the tile its budget chooses: interior tiles of ``NR`` vectors, border tiles of one."""
    src = _run(case, width, registers, "simd_conv")
    ow = (case["w"] + case["pads"][1] + case["pads"][3] - (case["k"] - 1) * case["d"] - 1) // case["s"] + 1
    target = _target(width, registers, "simd_conv")
    vec = 8 if ow <= 8 and width > 8 else width  # row_width: narrow planes use 8 lanes
    mr, nr = conv_tile(target, case["m"] // case["g"], ow, vec)
    assert _accumulators(src) == (mr, nr * vec)


@st.composite
def pointwise_cases(draw):
    g = draw(st.sampled_from([1, 1, 2]))
    return dict(c=g * draw(st.integers(1, 9)), m=g * draw(st.integers(1, 11)), g=g, k=1, s=1, d=1,
                h=draw(st.integers(1, 9)), w=draw(st.integers(1, 80)), pads=[0] * 4,
                act=draw(st.sampled_from([None, "Relu", "HardSwish"])), seed=draw(st.integers(0, 2**16)))


@pytest.mark.parametrize("width, registers", BUDGETS)
@property_settings(max_examples=4)
@given(case=pointwise_cases())
def test_pointwise_tiles(width, registers, case) -> None:
    """``simd_pointwise`` with its budget's tile, including leftover rows (M not a multiple of MR) and
    pixel tails."""
    src = _run(case, width, registers, "simd_pointwise")
    cg, hw = case["c"] // case["g"], case["h"] * case["w"]
    mr, nr = pointwise_tile(_target(width, registers, "simd_pointwise"), case["m"] // case["g"], width,
                            4 * cg * min(hw, pixel_block(cg, hw, width)))
    rows = case["m"] // case["g"]
    if rows >= mr:
        assert (f"a{nr * width}_{mr - 1} = vfma" in src) and f"a{nr * width}_{mr} = vfma" not in src


@pytest.mark.parametrize("width, registers", [(w, r) for w in (4, 8, 16) for r in (8, 16, 32)])
@pytest.mark.parametrize("mg", [1, 2, 3, 4, 6, 7, 8, 12, 16, 24, 48, 96, 384])
def test_tiles_fit_their_registers(width, registers, mg) -> None:
    """Accumulators + operand vectors + one broadcast fit the budget; tile rows are vector lengths the
    intrinsics exist for; the dense tile divides the group's channels."""
    target = Target(vector_width=width, vector_registers=registers)
    for ow in (3, 26, 52, 208):
        mr, nr = conv_tile(target, mg, ow, width)
        assert mg % mr == 0 and nr * width in LANES and nr * width <= MAX_ROW_LANES
        assert mr * nr + nr + 1 <= max(registers, 10), (mr, nr)  # AVX-512's kept 8 x 1 tile needs 10
    mr, nr = pointwise_tile(target, mg, width)
    assert nr * width in LANES and mr * nr + nr + 1 <= max(registers, 11)


def test_avx512_tiles_are_kept() -> None:
    """16 lanes x 32 registers keeps the tiles measured on AVX-512: dense 8 channels x 1 vector, pointwise
    4 rows x 2 vectors."""
    t = Target(vector_width=16, vector_registers=32)
    assert conv_tile(t, 96, 52, 16) == (8, 1) and conv_tile(t, 12, 208, 16) == (4, 1)
    assert pointwise_tile(t, 48, 16) == (4, 2)


def test_avx2_tiles_use_the_register_file() -> None:
    """16 registers: a dense 3x3 tile of 12 channels (12 accumulators + input + broadcast = 14 registers),
    and more column vectors only when the channels give fewer than 8 FMA chains."""
    t = Target(vector_width=8, vector_registers=16)
    assert conv_tile(t, 96, 52, 8) == (12, 1)
    assert conv_tile(t, 16, 52, 8) == (8, 1)
    assert conv_tile(t, 4, 52, 8) == (4, 2)
    assert pointwise_tile(t, 48, 8, 48 * 128 * 4) == (2, 4)  # a block that stays in L1
    assert pointwise_tile(t, 48, 8, 384 * 169 * 4) == (4, 2)  # a 13x13 map of 384 channels


def test_host_target_register_budget() -> None:
    """The host target's registers: 16 on x86 without AVX-512, 32 with it (and on aarch64); a vector wider
    than the machine's takes several registers, so fewer of them fit."""
    native = host_vector_width()
    regs = host_vector_registers()
    arm = platform.machine().lower() in ("aarch64", "arm64")
    assert regs == (32 if native == 16 or arm else 16)
    assert CompileOptions().host_target().vector_registers == regs
    if native < 16:
        assert CompileOptions(vector_width=2 * native).host_target().vector_registers == regs // 2
    assert CompileOptions(vector_width=4).host_target().vector_registers == regs


def test_fma_peak_chains_fit_the_registers() -> None:
    """The FMA-peak probe keeps its chains and two operands in registers (16 + 2 spilled on AVX2)."""
    assert fma_chains(16) == 14 and fma_chains(32) == 16 and fma_chains(8) == 6
