"""The Winograd F(4x4, 3x3) Conv variant (``winograd_f4``, issue 19).

* every vector width (4, 8, 16) over its parameter space (channels, map sizes that leave partial tiles and
  bands, asymmetric pads, fused activations and residual Add) against a float64 numpy reference, within
  ``winograd.ERROR_BOUND`` of each output's scale ``sum |w| |x| + |b|`` (the transforms' constants amplify
  float32 rounding: the bound is relative to that scale, not to the output, which can cancel to ~0);
* the same bound on realistic (He-normal) weights at 16-128 channels;
* the variant table: chosen above the measured crossover, not below it, forced variant asserted to run;
* whole models (ResNet-8 generated and MLPerf Tiny's trained one, the ddddocr detector) against onnxruntime
  within the tolerances the model and corpus tests use, with ``winograd_f4`` asserted to run.
"""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Iterator

import numpy as np
import onnx
import pytest
import reference_np as ref
from conftest import REPO_DIR, ort_session
from hypothesis import given
from hypothesis import strategies as st
from kernel_cases import property_settings
from onnx import TensorProto, helper, numpy_helper

import cnnjit
from cnnjit.compiler.codegen.kernel import Target
from cnnjit.compiler.codegen.kernels import simd_cblock, winograd
from cnnjit.compiler.codegen.simd import host_vector_registers

sys.path.insert(0, str(REPO_DIR))
import benchmarks.corpus as corpus  # noqa: E402
from benchmarks.models import resnet8  # noqa: E402

WIDTHS = [4, 8, 16]
MLPERF_RESNET = REPO_DIR.parent / "shared" / "models" / "mlperf-tiny" / "pretrainedResnet.tf2onnx.onnx"
#: activations and their float64 references: each 1.5-Lipschitz at most, so an input error e moves the
#: output by at most 1.5 e
ACTS = {None: lambda v: v, "Relu": ref.relu, "Sigmoid": ref.sigmoid, "Tanh": ref.tanh,
        "HardSwish": ref.hard_swish}


def conv_model(x_shape, wt, b, pads, act=None, residual=None, **attrs):
    """One Conv (the weights' kernel size; ``attrs``: other Conv attributes, default stride 1), then optionally
    a residual Add of a constant and an activation."""
    nodes = [helper.make_node("Conv", ["x", "w", "b"], ["c"], kernel_shape=list(wt.shape[2:]), pads=list(pads),
                              **attrs)]
    inits = {"w": wt, "b": b}
    cur = "c"
    if residual is not None:
        inits["r"] = residual
        nodes.append(helper.make_node("Add", [cur, "r"], ["a"]))
        cur = "a"
    nodes.append(helper.make_node(act or "Identity", [cur], ["y"]))
    g = helper.make_graph(nodes, "m", [helper.make_tensor_value_info("x", TensorProto.FLOAT, list(x_shape))],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
                          [numpy_helper.from_array(v, k) for k, v in inits.items()])
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", 13)], ir_version=8)


def conv_variants(model) -> set[str]:
    return {c.variant for c in model._default_spec().program.calls if c.op == "Conv"}


def check_conv(c, m, h, w, pads, act, residual, seed, width, scale=1.0, dilations=(1, 1), variant="winograd_f4",
               **options):
    """``variant`` (``winograd_f4``) forced at ``width`` against the float64 reference, within the stated
    bound; ``options``: more ``cnnjit.compile`` options."""
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((1, c, h, w)).astype(np.float32)
    wt = (rng.standard_normal((m, c, 3, 3)) * scale).astype(np.float32)
    b = rng.standard_normal(m).astype(np.float32)
    conv = ref.conv(x, wt, b, pads=pads, dilations=dilations)
    bound = ref.conv(np.abs(x), np.abs(wt), np.abs(b), pads=pads, dilations=dilations)  # sum |w| |x| + |b|
    r = rng.standard_normal(conv.shape).astype(np.float32) if residual else None
    expected = ACTS[act](conv + (r if residual else 0.0))
    options = {"disable": ("conv_dead_taps",), **options}  # (the 3x3 as drawn, its padding-only taps kept)
    model = cnnjit.compile(conv_model(x.shape, wt, b, pads, act, r, dilations=list(dilations)),
                           vector_width=width, variants={"Conv": variant}, **options)
    assert conv_variants(model) == {variant}
    got = model(x)
    assert got.shape == expected.shape
    err = np.abs(got.astype(np.float64) - expected)
    # 1.5: the activations' Lipschitz bound; 1e-6 absolute: the vector activations' own error
    limit = 1.5 * winograd.ERROR_BOUND * bound + 1e-6
    assert np.all(err <= limit), f"max error {err.max():.3g}, {(err / limit).max():.2f} of the bound"
    return float((err / np.maximum(bound, 1e-30)).max())


@st.composite
def wino_cases(draw):
    pads = [draw(st.integers(0, 2)) for _ in range(4)]
    h = draw(st.integers(max(1, 3 - pads[0] - pads[2]), 21))
    w = draw(st.integers(max(1, 3 - pads[1] - pads[3]), 37))
    return dict(c=draw(st.integers(1, 20)), m=draw(st.sampled_from([1, 3, 4, 7, 12, 16, 24])), h=h, w=w,
                pads=pads, act=draw(st.sampled_from(list(ACTS))), residual=draw(st.booleans()),
                seed=draw(st.integers(0, 2**16)))


@contextlib.contextmanager
def any_size() -> Iterator[None]:
    """The kernel on every size it computes: the crossover thresholds off (the 16-lane weight rule too)."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(winograd, "MIN_CHANNELS", 0)
        mp.setattr(winograd, "MIN_RATIO", 0.0)
        mp.setattr(winograd, "WIDE_STREAM_BYTES", {})
        yield


@contextlib.contextmanager
def forced_copies(copies: int) -> Iterator[None]:
    """``plan`` made to choose ``copies`` of the padded input (1: a dummy tile per row; 2: a copy from column
    4), and asserted to have generated that layout for every kernel."""
    made = []
    source = winograd.winograd_source

    def recorded(*args, **kw):
        made.append(kw["copies"])
        return source(*args, **kw)

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(winograd, "COPY_SAVING", 1.0 if copies == 1 else -np.inf)
        mp.setattr(winograd, "winograd_source", recorded)
        yield
    assert made and set(made) == {copies}


@pytest.mark.parametrize("copies", [1, 2])
@pytest.mark.parametrize("width", WIDTHS)
@property_settings(max_examples=4)
@given(case=wino_cases())
def test_winograd_at_width(width, copies, case) -> None:
    with any_size(), forced_copies(copies):
        check_conv(**case, width=width)


@pytest.mark.parametrize("copies", [1, 2])
@pytest.mark.parametrize("width", WIDTHS)
@property_settings(max_examples=3)
@given(case=wino_cases(), limits=st.sampled_from([(1, 1), (1, 24 * 1024), (8 * 1024, 64 * 1024)]))
def test_winograd_bands_at_width(width, copies, case, limits) -> None:
    """Small band limits: several bands, a partial last one, bands grown past ``BAND_BYTES`` by ``plan``."""
    with any_size(), forced_copies(copies), pytest.MonkeyPatch.context() as mp:
        mp.setattr(winograd, "BAND_BYTES", limits[0])
        mp.setattr(winograd, "BAND_MAX_BYTES", limits[1])
        check_conv(**case, width=width)


@st.composite
def dilated_cases(draw):
    """``wino_cases`` with dilations 1-3 in each axis, the map at least the dilated kernel's extent."""
    case = draw(wino_cases())
    dh, dw = draw(st.integers(1, 3)), draw(st.integers(1, 3))
    p = case["pads"]
    case["h"] = max(case["h"], 2 * dh + 1 - p[0] - p[2])
    case["w"] = max(case["w"], 2 * dw + 1 - p[1] - p[3])
    return case | {"dilations": (dh, dw)}


@pytest.mark.parametrize("copies", [1, 2])
@pytest.mark.parametrize("width", WIDTHS)
@property_settings(max_examples=4)
@given(case=dilated_cases(), limits=st.sampled_from([(1, 1), (8 * 1024, 64 * 1024), (256 * 1024, 1024 * 1024)]))
def test_dilated_at_width(width, copies, case, limits) -> None:
    """Dilations 1-3 in each axis: a vertical one on ``winograd_f4`` (its row phases, in bands that mix
    them), a horizontal one on ``cblock`` (which plans its rows per dilation; the ``conv_column_phases`` pass,
    which would make it undilated, off); variant asserted."""
    if case["dilations"][1] > 1:  # cblock tiles two channel vectors: output channels to match
        with pytest.MonkeyPatch.context() as mp:
            mp.setattr(simd_cblock, "MIN_DEPTH", 0)
            check_conv(**case | {"m": 2 * width * (1 + case["m"] % 2)}, width=width, variant="cblock",
                       disable=["conv_column_phases"])
        return
    with any_size(), forced_copies(copies), pytest.MonkeyPatch.context() as mp:
        mp.setattr(winograd, "BAND_BYTES", limits[0])
        mp.setattr(winograd, "BAND_MAX_BYTES", limits[1])
        check_conv(**case, width=width)


def test_vertical_dilation_takes_winograd() -> None:
    """PLCMOS's 3x3 dilated (2, 1) layers (32->64 at 198x64, 64->128 at 196x16) run on ``winograd_f4`` by
    default; a horizontal dilation does too, as undilated column phases (``conv_column_phases``: 1.3x
    ``cblock``'s speed on the (1, 2) one, AVX2)."""
    for (c, m, h, w), dil in [((32, 64, 198, 64), (2, 1)), ((64, 128, 196, 16), (2, 1)),
                              ((64, 128, 196, 16), (1, 2))]:
        node = _default_variant(c, m, (h, w), dilations=list(dil))[1]
        assert tuple(node.attrs["dilations"]) == (dil[0], 1)
        assert winograd.winograd_applies(node, Target(vector_width=8, vector_registers=16)), dil
        oh, d = node.outputs[0].shape[2], dil[0]
        typ = (oh + d - 1) // d  # the longest phase's rows...
        typ = (typ + 3) // 4  # ... in tiles of 4
        assert winograd.tile_rows(node) == (typ, d * typ)


@pytest.mark.parametrize(("width", "registers"), [(4, 16), (8, 16), (16, 32), (16, 8)])
def test_gemm_tiles_within_the_budget_and_cap(width: int, registers: int) -> None:
    """The GEMM tiles' channels divide the layer's, stay within ``MAX_TILE_CHANNELS`` with 16 registers (12
    ran 1.2-1.6x slower than 8 on AVX2), and the accumulators, the tile vectors and a broadcast weight fit the
    register file."""
    target = Target(vector_width=width, vector_registers=registers)
    most = winograd.MAX_TILE_CHANNELS_WIDE if registers >= 32 else winograd.MAX_TILE_CHANNELS
    for m in (1, 7, 12, 16, 24, 48, 96, 192):
        tiles = winograd.gemm_tiles(target, m)
        assert tiles
        for mr, nr in tiles:
            assert m % mr == 0 and 1 <= mr <= most and 1 <= nr <= winograd.MAX_TILE_VECTORS
            assert mr * nr + nr + 1 <= registers
    assert (4, 3) in winograd.gemm_tiles(Target(vector_width=8, vector_registers=16), 16)
    assert (6, 2) in winograd.gemm_tiles(Target(vector_width=8, vector_registers=16), 24)
    assert (4, 4) not in winograd.gemm_tiles(Target(vector_width=8, vector_registers=16), 16)  # 21 registers
    assert (12, 2) in winograd.gemm_tiles(Target(vector_width=16, vector_registers=32), 96)


@pytest.mark.parametrize(("layer", "tile", "copies"), [
    ((16, 16, 32), (4, 3), 1), ((32, 32, 16), (4, 2), 2), ((64, 64, 8), (8, 1), 1), ((96, 96, 52), (6, 2), 1),
    ((24, 24, 104), (6, 2), 1), ((64, 64, 20), (4, 2), 1), ((192, 192, 13), (6, 2), 2), ((96, 96, 14), (6, 2), 2)])
def test_plan_tile_by_issue_cost(layer: tuple[int, int, int], tile: tuple[int, int], copies: int) -> None:
    """AVX2's measured choices (``issue_cost``): ResNet-8's 16-channel 32x32 on 4 channels x 3 vectors
    (12 accumulators, 7 loads per 12 FMAs), a 2x2-tile map on one vector, the detector's 14 tiles a row on 2
    vectors (3 would pad them to 24), YOLOv8n's 64-channel 20x20 on 4 channels x 2 vectors rather than 2 x 4;
    two copies of the padded input (no dummy tile) where that saves ``COPY_SAVING`` of the cost: 16 tiles
    instead of 20 padded to 24 on 16x16, 13x13 and 14x14 maps, not 64 instead of 72 on 32x32."""
    c, m, hw = layer
    node = _default_variant(c, m, hw)[1]
    t = Target(vector_width=8, vector_registers=16)
    assert winograd.plan(node, t)[:2] == tile and winograd.plan(node, t)[5] == copies
    cost = winograd.issue_cost
    assert cost(4, 3) <= cost(6, 2) < cost(4, 2) < cost(8, 1) < cost(4, 1) and cost(4, 2) < cost(2, 4)


@pytest.mark.parametrize("width", WIDTHS)
@property_settings(max_examples=4)
@given(case=wino_cases(), pick=st.integers(0, 10**6))
def test_every_gemm_tile_at_width(width, case, pick) -> None:
    """Each register tile ``gemm_tiles`` offers at the width's register budget (3 and 4 vectors of tiles
    included), forced as the only one, against the float64 reference; the tile that ran is in the kernel."""
    target = Target(vector_width=width, vector_registers=host_vector_registers(width))
    tiles = winograd.gemm_tiles(target, case["m"])
    mr, nr = tiles[pick % len(tiles)]
    made = []
    source = winograd.winograd_source

    def recorded(node, w, *tile, **kw):
        made.append((w, *tile, source(node, w, *tile, **kw)[0]))
        return source(node, w, *tile, **kw)

    with any_size(), pytest.MonkeyPatch.context() as mp:
        mp.setattr(winograd, "gemm_tiles", lambda t, m: [(mr, nr)])
        mp.setattr(winograd, "winograd_source", recorded)
        check_conv(**case, width=width)
    assert [m[:3] for m in made] == [(width, mr, nr)]
    src = made[0][3]
    assert f"a{mr - 1}_{nr - 1} = vfma{width}(" in src and f"a{mr}_0 " not in src and f"a0_{nr} " not in src


def test_plan_grows_a_band_that_pads_fewer_tiles(monkeypatch) -> None:
    """The CRNN's 32->64 at 16x64 (16 tiles a row): a band of one row computes 24 or 32 tile slots a row;
    ``plan`` grows the band (fewer tiles, within ``BAND_SLACK`` of the fewest), and keeps 96->96 at 52x52's
    plan, whose larger bands pad as much."""
    rng = np.random.default_rng(0)

    def node(c: int, m: int, h: int, w: int):
        model = conv_model((1, c, h, w), rng.standard_normal((m, c, 3, 3)).astype(np.float32),
                           np.zeros(m, np.float32), [1, 1, 1, 1], "Relu")
        return next(n for n in cnnjit.compile(model, entry="lazy").ir.nodes if n.op == "Conv")

    crnn, big = node(32, 64, 16, 64), node(96, 96, 52, 52)
    monkeypatch.setattr(winograd, "COPY_SAVING", 1.0)  # one copy: a band of one row computes the dummy tiles
    for width, registers in ((8, 16), (16, 32)):
        t = Target(vector_width=width, vector_registers=registers)
        grown = winograd.plan(crnn, t)
        with monkeypatch.context() as mp:
            mp.setattr(winograd, "BAND_MAX_BYTES", winograd.BAND_BYTES)
            one_row, before_big = winograd.plan(crnn, t), winograd.plan(big, t)
        assert one_row[2] == 1 and grown[2] > 1 and grown[4] * 1.2 <= one_row[4], (grown, one_row)
        with monkeypatch.context() as mp:  # on the same register tile, 96->96's band does not grow
            mp.setattr(winograd, "gemm_tiles", lambda target, m: [before_big[:2]])
            assert winograd.plan(big, t) == before_big


@pytest.mark.parametrize("c,m,hw", [(16, 16, 32), (64, 32, 20), (128, 128, 12)])
def test_error_bound_on_realistic_weights(c, m, hw) -> None:
    """He-normal weights (std sqrt(2 / fan_in)), standard-normal inputs: the error relative to the output
    scale stays within the stated bound (without the activation's slack; measured 1.2-2.0e-6)."""
    with any_size():
        worst = check_conv(c, m, hw, hw, [1, 1, 1, 1], "Relu", False, c, 8, scale=np.sqrt(2 / (9 * c)))
    assert worst < winograd.ERROR_BOUND


def test_transforms_are_f43() -> None:
    """A^T [(G g) * (B^T d)] is the 1-D correlation of a 6-sample d with a 3-tap g (float64)."""
    rng = np.random.default_rng(0)
    for _ in range(5):
        d, g = rng.standard_normal(6), rng.standard_normal(3)
        direct = np.array([d[i:i + 3] @ g for i in range(4)])
        np.testing.assert_allclose(winograd.AT @ ((winograd.G @ g) * (winograd.BT @ d)), direct, atol=1e-12)


@pytest.mark.parametrize("width", WIDTHS)
def test_transform_intrinsics_match_the_matrices(width: int) -> None:
    """``vwbts`` is ``B^T d B`` and ``vwatl`` is ``A^T m A`` (``winograd.BT``, ``AT``, float64) lane by lane, with
    the planes at the stride given, within float32 rounding of the transforms' constants."""
    from numba import njit

    from cnnjit.compiler.codegen import simd, simd_winograd
    load, bts, atl = getattr(simd, f"vload{width}"), getattr(simd_winograd, f"vwbts{width}"), \
        getattr(simd_winograd, f"vwatl{width}")
    store = getattr(simd, f"vstore{width}")

    @njit
    def run(d, v, o, s):
        bts(v, 3, s, (load(d, 0 * width), load(d, 1 * width), load(d, 2 * width), load(d, 3 * width),
                      load(d, 4 * width), load(d, 5 * width), load(d, 6 * width), load(d, 7 * width),
                      load(d, 8 * width), load(d, 9 * width), load(d, 10 * width), load(d, 11 * width),
                      load(d, 12 * width), load(d, 13 * width), load(d, 14 * width), load(d, 15 * width),
                      load(d, 16 * width), load(d, 17 * width), load(d, 18 * width), load(d, 19 * width),
                      load(d, 20 * width), load(d, 21 * width), load(d, 22 * width), load(d, 23 * width),
                      load(d, 24 * width), load(d, 25 * width), load(d, 26 * width), load(d, 27 * width),
                      load(d, 28 * width), load(d, 29 * width), load(d, 30 * width), load(d, 31 * width),
                      load(d, 32 * width), load(d, 33 * width), load(d, 34 * width), load(d, 35 * width)))
        out = atl(v, 3, s)
        for k in range(16):
            store(o, k * width, out[k])

    rng = np.random.default_rng(width)
    d = rng.standard_normal((36, width)).astype(np.float32)
    s = width + 5  # a plane stride that is not the vector width
    v, o = np.full(3 + 36 * s, np.nan, np.float32), np.zeros(16 * width, np.float32)
    run(d.reshape(-1), v, o, s)
    planes = v[3:].reshape(36, s)[:, :width].reshape(6, 6, width)

    def two_d(mat: np.ndarray, x: np.ndarray) -> np.ndarray:
        return np.einsum("ki,ijn,lj->kln", mat, x, mat)

    # float32 rounding of a few operations, relative to each output's scale |L| |x| |L|^T
    d64 = d.astype(np.float64).reshape(6, 6, width)
    err = np.abs(planes - two_d(winograd.BT, d64))
    assert np.all(err <= 1e-6 * two_d(np.abs(winograd.BT), np.abs(d64))), err.max()
    m64 = planes.astype(np.float64)
    err = np.abs(o.reshape(4, 4, width) - two_d(winograd.AT, m64))
    assert np.all(err <= 1e-6 * two_d(np.abs(winograd.AT), np.abs(m64))), err.max()


def _default_variant(c, m, hw, width=8, registers=16, **attrs):
    """(winograd applies, the Conv node) for a 3x3 ``c -> m`` layer on an ``hw`` (or ``(h, w)``) map."""
    rng = np.random.default_rng(0)
    h, w = hw if isinstance(hw, tuple) else (hw, hw)
    model = conv_model((1, c, h, w), rng.standard_normal((m, c, 3, 3)).astype(np.float32),
                       np.zeros(m, np.float32), [1, 1, 1, 1], "Relu", **attrs)
    ir = cnnjit.compile(model, vector_width=width, entry="lazy").ir
    node = next(n for n in ir.nodes if n.op == "Conv")
    return winograd.winograd_applies(node, Target(vector_width=width, vector_registers=registers)), node


@pytest.mark.parametrize("c,m,hw,chosen", [(96, 96, 52, True), (48, 48, 104, True), (16, 16, 32, True),
                                           (192, 192, 13, True), (96, 96, 14, True), (96, 96, (3, 80), True),
                                           (480, 60, (4, 40), True), (8, 8, 32, True),
                                           (4, 16, 32, False), (64, 64, 8, False), (32, 32, 8, False),
                                           (480, 60, (2, 40), False), (128, 128, (2, 40), False),
                                           (256, 256, (2, 20), False), (128, 128, 7, False),
                                           (32, 32, 4, False), (96, 96, 5, False)])
def test_crossover(c, m, hw, chosen) -> None:
    """Above the measured crossover (``benchmarks/winograd.py --short``) the table picks winograd_f4; below it
    (few channels; few tiles, as on maps of 2 rows or 7x7 and 8x8 squares, where the GEMM's narrow register
    tile issues a weight broadcast and a tile load per 8-16 FMAs) not."""
    applies, node = _default_variant(c, m, hw)
    assert applies == chosen, (c, m, hw, winograd.slot_ratio(node, Target(vector_width=8, vector_registers=16)))


@pytest.mark.parametrize("c,m,hw,chosen", [(192, 192, 13, False), (96, 96, 13, False), (64, 256, 13, False),
                                           (48, 192, 13, False), (96, 96, 26, True), (32, 32, 16, True),
                                           (64, 256, (8, 32), True), (96, 96, 52, True)])
def test_crossover_16_lanes(c, m, hw, chosen) -> None:
    """At 16 lanes the crossover is ``WIDE_RATIO`` times AVX2's: a 13x13 map's 16 tiles are one vector and its
    slot ratio (1.17-1.22) is under it (``cvec`` is faster there), 26x26, 16x16 and 8x32 maps stay above;
    the same 13x13 layers at 8 lanes are above AVX2's (``test_crossover``)."""
    applies, node = _default_variant(c, m, hw, width=16, registers=32)
    ratio = winograd.slot_ratio(node, Target(vector_width=16, vector_registers=32))
    assert applies == chosen, (c, m, hw, ratio)
    assert (ratio >= winograd.MIN_RATIO * winograd.WIDE_RATIO[(16, 32)]) == chosen
    if hw == 13:  # (8 lanes, and AVX2's register file at width 16: the crossover of 8 lanes)
        assert _default_variant(c, m, hw)[0]
        assert _default_variant(c, m, hw, width=16, registers=16)[0]


@pytest.mark.parametrize("c,m,hw,streamed,chosen", [
    (128, 128, 14, True, False), (256, 256, 14, True, False), (128, 256, 15, True, False),
    (64, 256, (8, 32), True, True), (128, 128, 16, True, True), (512, 512, 15, False, True),
    (64, 64, 15, False, True), (128, 128, 28, False, True), (128, 128, 20, False, True)])
def test_streamed_weights_16_lanes(c, m, hw, streamed, chosen) -> None:
    """At 16 lanes and 32 registers a layer whose tiles are one vector (13x13 .. 16x16, 8x32) with 2-16 MiB of
    transformed weights needs ``STREAM_RATIO`` (``WIDE_STREAM_BYTES``): 128 and 256 channels at 14x14 and 15x15
    are left to the direct kernels, 16x16 and 8x32 keep Winograd; 64 channels (0.6 MB, within L2), 512 (37.7 MB)
    and maps of more than one vector of tiles are not in the rule. 8 lanes and an AVX2 register file at width 16
    keep the slot-ratio rule alone, and so does the earlier form ``winograd_streamed``."""
    applies, node = _default_variant(c, m, hw, width=16, registers=32)
    t = Target(vector_width=16, vector_registers=32)
    assert applies == chosen, (c, m, hw, winograd.plan(node, t))
    assert winograd.streams_weights(node, t) == streamed
    assert (winograd.slot_ratio(node, t) >= winograd.STREAM_RATIO) == chosen or not streamed
    for other in (Target(vector_width=16, vector_registers=16), Target(vector_width=8, vector_registers=16),
                  Target(vector_width=16, vector_registers=32, forms=(winograd.STREAMED,))):
        assert not winograd.streams_weights(node, other)
    if not chosen:  # above the slot-ratio crossover: refused by this rule only
        assert winograd.slot_ratio(node, t) >= winograd.MIN_RATIO * winograd.WIDE_RATIO[(16, 32)]


@pytest.mark.parametrize("width", WIDTHS)
@property_settings(max_examples=3)
@given(case=wino_cases())
def test_planes_first_layout_at_width(width, case) -> None:
    """The earlier weight layout (form ``winograd_planes_first``: 36 streams, plane by plane) and the current
    one (the GEMMs' order, one stream) both match the reference, and each kernel reads its own layout."""
    for forms, read in (((), "uw = uo + (m * 36 + xi * "), ((winograd.PLANES_FIRST,), "uw = uo + (xi * M + m) * C")):
        made = []
        source = winograd.winograd_source

        def recorded(*a, **k):
            out = source(*a, **k)
            made.append(out[0])
            return out

        with any_size(), pytest.MonkeyPatch.context() as mp:
            mp.setattr(winograd, "winograd_source", recorded)
            check_conv(**case, width=width, forms=forms)
        assert made and all(read in src for src in made), forms


def test_slot_ratio_counts_the_register_tile() -> None:
    """``slot_ratio`` is the multiply ratio over the plan's register tile's issue cost: 480->60 at 2x40 saves
    1.25x the multiplies but its 16 tiles (half of each 4-row tile padding) run on a 6x2 tile (22 slots per
    12 FMAs), under the crossover; at 4x40 the same tiles save twice as much, above it."""
    t = Target(vector_width=8, vector_registers=16)
    for h, ratio, chosen in ((2, 1.25, False), (4, 2.5, True)):
        applies, node = _default_variant(480, 60, (h, 40))
        p = winograd.plan(node, t)
        assert winograd.multiply_ratio(node, t) == pytest.approx(ratio)
        assert winograd.slot_ratio(node, t) == pytest.approx(ratio / winograd.issue_cost(p.mr, p.nr))
        assert applies == chosen


def test_not_for_other_convs() -> None:
    """Stride 2, 5x5, horizontally dilated and grouped convs never take it (even with the thresholds off; the
    ``conv_column_phases`` pass, which turns a horizontal dilation into undilated column phases, off)."""
    rng = np.random.default_rng(0)
    for attrs, wshape in [(dict(kernel_shape=[3, 3], strides=[2, 2]), (32, 32, 3, 3)),
                          (dict(kernel_shape=[5, 5]), (32, 32, 5, 5)),
                          (dict(kernel_shape=[3, 3], dilations=[2, 2]), (32, 32, 3, 3)),
                          (dict(kernel_shape=[3, 3], dilations=[1, 2]), (32, 32, 3, 3)),
                          (dict(kernel_shape=[3, 3], group=2), (32, 16, 3, 3))]:
        nodes = [helper.make_node("Conv", ["x", "w"], ["y"], pads=[1, 1, 1, 1], **attrs)]
        g = helper.make_graph(nodes, "m", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 32, 24, 24])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
                              [numpy_helper.from_array(rng.standard_normal(wshape).astype(np.float32), "w")])
        ir = cnnjit.compile(helper.make_model(g, opset_imports=[helper.make_opsetid("", 13)], ir_version=8),
                            entry="lazy", disable=["conv_column_phases"]).ir
        node = next(n for n in ir.nodes if n.op == "Conv")
        assert not winograd.winograd_ok(node), attrs


def _model_variants(model) -> list[str]:
    return [c.variant for c in model._default_spec().program.calls if c.op == "Conv"]


def test_resnet8_matches_onnxruntime() -> None:
    """The generated ResNet-8 (its 3x3 layers above the crossover) against onnxruntime, within the model
    tests' tolerance (1e-4 of the output scale)."""
    proto = resnet8()
    model = cnnjit.compile(proto)
    assert "winograd_f4" in _model_variants(model)
    assert "winograd_f4_channels" in _model_variants(model)  # its 64->64 at 8x8
    sess = ort_session(proto)
    for seed in range(3):
        x = np.random.default_rng(seed).standard_normal((1, 3, 32, 32)).astype(np.float32)
        want = sess.run(None, {sess.get_inputs()[0].name: x})[0]
        got = model(x)
        assert np.abs(got - want).max() <= 1e-4 * max(1.0, float(np.abs(want).max()))


@pytest.mark.skipif(not MLPERF_RESNET.is_file(), reason="no MLPerf Tiny models in shared/")
def test_mlperf_resnet_matches_onnxruntime() -> None:
    """MLPerf Tiny's trained ResNet-8 against onnxruntime within the MLPerf model test's tolerance."""
    proto = onnx.load(str(MLPERF_RESNET))
    sess = ort_session(MLPERF_RESNET)
    name = sess.get_inputs()[0].name
    model = cnnjit.compile(proto, input_shapes={name: (1, 32, 32, 3)})
    assert "winograd_f4" in _model_variants(model)
    assert "winograd_f4_channels" in _model_variants(model)  # its 64->64 at 8x8
    for seed in range(5):
        x = np.random.default_rng(seed).standard_normal((1, 32, 32, 3)).astype(np.float32)
        want = sess.run(None, {name: x})[0]
        got = model.run(None, {name: x})[0]
        assert np.abs(got - want).max() <= 1e-4 * max(1.0, float(np.abs(want).max()))


@pytest.mark.slow
def test_ddddocr_detector_matches_onnxruntime() -> None:
    """The ddddocr detector (its 48- and 96-channel layers on Winograd) within the corpus tolerance."""
    if not corpus.CORPUS["ddddocr_det"].available():
        pytest.skip(corpus.missing_wheel("ddddocr_det"))
    proto, feeds = corpus.load("ddddocr_det")
    model = cnnjit.compile(proto)
    assert _model_variants(model).count("winograd_f4") >= 10
    got = model.run(None, feeds)
    want = corpus.reference_outputs(proto, feeds)[0]
    for g, r in zip(got, want):
        scale = max(float(np.abs(r).max()), 1e-30)
        assert float(np.abs(g.astype(np.float64) - r).max()) / scale <= corpus.tolerance("ddddocr_det")
