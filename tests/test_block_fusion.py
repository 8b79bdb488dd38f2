"""Inverted-residual block fusion: the ``fuse_blocks`` pass and the ``block_fused`` kernel.

* property test: random blocks (strides 1/2, kernels 3/5, pads, residual or not, ReLU6/ReLU/HardSwish, odd
  map sizes, channel counts off the register tile, with or without the expand: depthwise -> project)
  compiled at every vector width, against a numpy
  reference written apart from the kernel (``reference_np``), asserting the block ran as ``block_fused``;
* the same blocks split over two threads (parts = groups of output rows) give the one-thread result;
* the pass: before/after agree in the IR interpreter, its conditions (cost rule, other readers of the
  expanded tensor, dilated depthwise) and its switches (``disable=``, ``fuse=False``);
* MobileNetV2-224 as a whole against onnxruntime, with its large blocks fused (slow).
"""

from __future__ import annotations

import sys
from contextlib import contextmanager

import numpy as np
import pytest
import reference_np as ref
from conftest import REPO_DIR, ort_session
from hypothesis import given
from hypothesis import strategies as st
from kernel_cases import property_settings
from onnx import TensorProto, helper, numpy_helper

import cnnjit
from cnnjit.compiler.codegen import threads
from cnnjit.compiler.codegen.kernel import Target
from cnnjit.compiler.codegen.kernels import block_fused
from cnnjit.compiler.frontend.onnx_import import import_model
from cnnjit.compiler.passes import FuseBlocks, PassManager, default_pipeline, fuse_blocks
from cnnjit.ir import interpret
from cnnjit.runtime.program import Program

WIDTHS = [4, 8, 16]
ACTS = ["Relu6", "Relu", "HardSwish"]


@contextmanager
def fusing_all(**thread_limits: float):
    """The cost rule off: every block the pass can fuse is fused (the test blocks are small); with
    ``thread_limits``, those ``threads`` module constants too (small layers split)."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(fuse_blocks, "MIN_EXPANDED_BYTES", 0)
        mp.setattr(fuse_blocks, "MIN_ROW_PIXELS", 0)
        mp.setattr(fuse_blocks, "MAX_WIDENING", float("inf"))
        for name, value in thread_limits.items():
            mp.setattr(threads, name, value)
        yield


@pytest.fixture
def fuse_all():
    with fusing_all():
        yield


def _act(name: str, x: str, y: str) -> list:
    if name == "Relu6":
        return [helper.make_node("Clip", [x, "lo", "hi"], [y])]
    return [helper.make_node(name, [x], [y])]


def _act_ref(name: str, v: np.ndarray) -> np.ndarray:
    return {"Relu6": lambda a: ref.clip(a, 0, 6), "Relu": ref.relu, "HardSwish": ref.hard_swish}[name](v)


@st.composite
def blocks(draw, expand: bool | None = None) -> dict:
    k = draw(st.sampled_from([3, 5]))
    s = draw(st.sampled_from([1, 2]))
    c = draw(st.integers(1, 9))
    residual = s == 1 and draw(st.booleans())  # then "same" pads: the output has the input's shape
    pads = [k // 2] * 4 if residual else [draw(st.integers(0, k // 2)) for _ in range(4)]
    expand = draw(st.booleans()) if expand is None else expand  # without: the depthwise conv reads x
    return dict(c=c, e=draw(st.integers(2, 21)) if expand else c, expand=expand,
                m=c if residual else draw(st.integers(1, 11)), k=k, s=s,
                h=draw(st.integers(k, 19)), w=draw(st.integers(k, 37)), pads=pads, residual=residual,
                act1=draw(st.sampled_from(ACTS)), act2=draw(st.sampled_from(ACTS)), seed=draw(st.integers(0, 2**16)))


def block_case(b: dict):
    """The block as an ONNX model, its input and the numpy reference output (float64)."""
    rng = np.random.default_rng(b["seed"])
    c, e, m, k = b["c"], b["e"], b["m"], b["k"]
    inits = {"w1": rng.standard_normal((e, c, 1, 1)) * 0.5, "b1": rng.standard_normal(e) * 0.5,
             "w2": rng.standard_normal((e, 1, k, k)) * 0.5, "b2": rng.standard_normal(e) * 0.5,
             "w3": rng.standard_normal((m, e, 1, 1)) * 0.5, "b3": rng.standard_normal(m) * 0.5,
             "lo": np.float32(0), "hi": np.float32(6)}
    inits = {n: np.asarray(v, np.float32) for n, v in inits.items()}
    x = rng.standard_normal((1, c, b["h"], b["w"])).astype(np.float32)
    expand = b.get("expand", True)
    if not expand:
        del inits["w1"], inits["b1"]
    head = [helper.make_node("Conv", ["x", "w1", "b1"], ["e"], kernel_shape=[1, 1]), *_act(b["act1"], "e", "ea")]
    nodes = [*(head if expand else []),
             helper.make_node("Conv", ["ea" if expand else "x", "w2", "b2"], ["d"], kernel_shape=[k, k],
                              strides=[b["s"]] * 2, pads=b["pads"], group=e),
             *_act(b["act2"], "d", "da"), helper.make_node("Conv", ["da", "w3", "b3"], ["p"], kernel_shape=[1, 1])]
    if b["residual"]:
        nodes.append(helper.make_node("Add", ["p", "x"], ["y"]))
    graph = helper.make_graph(nodes, "block", [helper.make_tensor_value_info("x", TensorProto.FLOAT, list(x.shape))],
                              [helper.make_tensor_value_info("y" if b["residual"] else "p", TensorProto.FLOAT, None)],
                              [numpy_helper.from_array(v, n) for n, v in inits.items()])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)
    want = _act_ref(b["act1"], ref.conv(x, inits["w1"], inits["b1"])) if expand else x
    want = _act_ref(b["act2"], ref.conv(want, inits["w2"], inits["b2"], strides=[b["s"]] * 2, pads=b["pads"],
                                        group=e))
    want = ref.conv(want, inits["w3"], inits["b3"])
    return model, x, want + x if b["residual"] else want


def _check(got: np.ndarray, want: np.ndarray) -> None:
    assert got.shape == want.shape
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4 * max(1.0, float(np.abs(want).max())))


def _variants(compiled) -> list[str]:
    return [c.variant for c in compiled._default_spec().program.calls]


@pytest.mark.parametrize("width", WIDTHS)
@given(b=blocks())
@property_settings(4)
def test_block_fused_matches_numpy(width: int, b: dict):
    model, x, want = block_case(b)
    with fusing_all():
        compiled = cnnjit.compile(model, vector_width=width)
    assert _variants(compiled) == ["block_fused"]
    assert [n.op for n in compiled.ir.nodes] == ["InvertedResidual"]
    _check(compiled(x), want)


@pytest.mark.parametrize("width", WIDTHS)
@given(b=blocks(expand=False))
@property_settings(4)
def test_block_fused_without_expand_matches_numpy(width: int, b: dict):
    """depthwise -> project (MobileNetV2's first block, MobileNetV3's): one block with no ``w1``, its input
    rows copied into the ring."""
    model, x, want = block_case(b)
    with fusing_all():
        compiled = cnnjit.compile(model, vector_width=width)
    assert _variants(compiled) == ["block_fused"]
    (node,) = compiled.ir.nodes
    assert node.op == "InvertedResidual" and node.inputs[1] is None and node.inputs[2] is None
    _check(compiled(x), want)


@pytest.mark.parametrize(("pair", "chains"), [(True, 1), (True, 2), (False, 1)])
@pytest.mark.parametrize("width", WIDTHS)
@given(b=blocks())
@property_settings(3)
def test_block_fused_depthwise_rows_paired_or_single(width: int, pair: bool, chains: int, b: dict):
    """The depthwise stage's two forms forced (``pair_rows``: two output rows per sweep from a ring of
    ``K + S`` rows, with one or two FMA chains per row, or one row from ``K``), each against the numpy
    reference; the form that ran is asserted from the kernel source."""
    model, x, want = block_case(b)
    with fusing_all(), pytest.MonkeyPatch.context() as mp:
        mp.setattr(block_fused, "pair_rows", lambda k, target: pair)
        mp.setattr(block_fused, "PAIR_CHAINS", chains)
        compiled = cnnjit.compile(model, vector_width=width)
        got = compiled(x)
    assert _variants(compiled) == ["block_fused"]
    (src,) = compiled._default_spec().program.kernel_sources.values()
    assert ("two = oh + 1 < g1" in src) == pair
    _check(got, want)


def _reads_planes(src: str) -> bool:
    """Whether a stride-1 block's expand reads the input planes (the ``block_unstaged_rows`` form)."""
    return "(xb, xr + c * HW + c0" in src


@pytest.mark.parametrize("staged", [True, False])
@pytest.mark.parametrize("width", WIDTHS)
@given(b=blocks(expand=True).filter(lambda b: b["s"] == 1))
@property_settings(3)
def test_block_fused_expand_reads_staged_rows_or_planes(width: int, staged: bool, b: dict):
    """A stride-1 expand reads each input row from a staged copy of its channels' columns (``stage_rows``),
    or in the earlier form ``block_unstaged_rows`` the input planes; both against the numpy reference, the
    form that ran asserted from the kernel source."""
    model, x, want = block_case(b)
    with fusing_all():
        compiled = cnnjit.compile(model, vector_width=width, forms=[] if staged else ["block_unstaged_rows"])
        got = compiled(x)
    assert _variants(compiled) == ["block_fused"]
    (src,) = compiled._default_spec().program.kernel_sources.values()
    assert _reads_planes(src) != staged
    _check(got, want)


@pytest.mark.parametrize("width", WIDTHS)
def test_block_fused_staged_rows_of_aliasing_length_are_padded(width: int):
    """A staged row of 512 columns (2 KiB: every other channel's row in one L1 set) is one vector longer;
    the block still matches the numpy reference with the expand reading the stage."""
    b = dict(c=3, e=5, expand=True, m=3, k=3, s=1, h=4, w=512, pads=[1] * 4, residual=True, act1="HardSwish",
             act2="Relu", seed=7)
    model, x, want = block_case(b)
    assert block_fused.stage_stride(512, width) == 512 + width and block_fused.stage_stride(200, width) == 200
    with fusing_all():
        compiled = cnnjit.compile(model, vector_width=width)
        got = compiled(x)
    assert _variants(compiled) == ["block_fused"]
    (src,) = compiled._default_spec().program.kernel_sources.values()
    assert not _reads_planes(src)
    (node,) = compiled.ir.nodes
    assert block_fused.block_geometry(node, Target(vector_width=width))["SW"] == 512 + width
    _check(got, want)


@pytest.mark.parametrize("width", WIDTHS)
def test_block_fused_wide_tiles_at_16_lanes(width: int):
    """With 32 registers at 16 lanes the expand and the project run 8 x 2 register tiles
    (``block_fused.WIDE_TILES``), other widths and 16-register files ``simd_pointwise``'s 4 x 2; a block whose
    expanded (21) and output (11) channels are off the 8-row tile matches the numpy reference either way."""
    b = dict(c=5, e=21, expand=True, m=11, k=3, s=2, h=13, w=37, pads=[1, 0, 1, 1], residual=False,
             act1="Relu6", act2="HardSwish", seed=11)
    model, x, want = block_case(b)
    with fusing_all():
        compiled = cnnjit.compile(model, vector_width=width)
        got = compiled(x)
    assert _variants(compiled) == ["block_fused"]
    (node,) = compiled.ir.nodes
    g = block_fused.block_geometry(node, Target(vector_width=width))
    tile = (8, 2) if width == 16 else (4, 2)
    assert (g["MR"], g["NR"]) == tile and (g["PMR"], g["PNR"]) == tile
    narrow = block_fused.block_geometry(node, Target(vector_width=width, vector_registers=16))
    assert (narrow["PMR"], narrow["PNR"]) == (4, 2)
    _check(got, want)


@pytest.mark.parametrize("width", WIDTHS)
@given(b=blocks())
@property_settings(3)
def test_block_fused_on_an_arena_of_nans(width: int, b: dict):
    """Every scratch and arena float starts as NaN: the ring's zero columns, the stage's tail past the
    staged columns and the part-filled tiles' lanes past the row (stored whole, ``vkeep``) must not leak
    into the output."""
    model, x, want = block_case(b)
    allocate = Program.allocate

    def poisoned(program: Program) -> dict:
        bufs = allocate(program)
        for name, buf in bufs.items():
            if name not in program.const_buffers and buf.dtype == np.float32:
                buf.fill(np.nan)
        return bufs

    with fusing_all(), pytest.MonkeyPatch.context() as mp:
        mp.setattr(Program, "allocate", poisoned)
        compiled = cnnjit.compile(model, vector_width=width)
        got = compiled(x)
    assert _variants(compiled) == ["block_fused"]
    _check(got, want)


@given(b=blocks())
@property_settings(3)
def test_block_fused_split_over_threads(b: dict):
    """Two threads: the block is split into groups of output rows (each part its own ring), bit-identical."""
    model, x, want = block_case(b)
    with fusing_all(MIN_PARALLEL_TOTAL_US=0.0, MIN_PARALLEL_US=0.0, MIN_PART_US=1e-6):
        one, two = cnnjit.compile(model, threads=1), cnnjit.compile(model, threads=2)
    calls = two._default_spec().program.calls
    assert {c.variant for c in calls} == {"block_fused"}
    if two._default_spec().graph.nodes[0].outputs[0].shape[2] >= 2 * 8:  # rows for two groups at least
        assert len(calls) == 2
    got = two(x)
    np.testing.assert_array_equal(got, one(x))
    _check(got, want)


def _graph(b: dict):
    model, x, want = block_case(b)
    return import_model(model, {"x": x.shape}), x, want


BLOCK = dict(c=4, e=12, m=4, k=3, s=1, h=9, w=10, pads=[1, 1, 1, 1], residual=True, act1="Relu6",
             act2="HardSwish", seed=3)


def test_pass_fuses_and_agrees_with_the_unfused_graph(fuse_all):
    graph, x, want = _graph(BLOCK)
    before = interpret(graph, [x])[0]
    PassManager(default_pipeline()).run(graph)
    assert [n.op for n in graph.nodes] == ["InvertedResidual"]
    node = graph.nodes[0]
    assert [s.op for s in node.attrs["expand_post"]] == ["Clip"]
    assert [s.op for s in node.attrs["dw_post"]] == ["HardSwish"]
    assert [s.op for s in node.attrs["post"]] == ["Add"] and node.inputs[7] is graph.inputs[0]
    after = interpret(graph, [x])[0]
    np.testing.assert_allclose(after, before, rtol=1e-5, atol=1e-5)
    _check(after, want)


def test_pass_result_and_switches(fuse_all):
    graph, _, _ = _graph(BLOCK)
    pm = PassManager(default_pipeline())
    pm.run(graph)
    (rec,) = [r for r in pm.records if r.name == "fuse_blocks"]
    assert (rec.result.added, rec.result.removed) == (1, 3)
    model, x, _ = block_case(BLOCK)
    for compiled in (cnnjit.compile(model, disable=["fuse_blocks"]), cnnjit.compile(model, fuse=False)):
        assert "InvertedResidual" not in {n.op for n in compiled.ir.nodes}
        assert "block_fused" not in _variants(compiled)


def test_cost_rule_leaves_small_blocks_unfused():
    graph, _, _ = _graph(BLOCK)  # 12 x 9 x 10 floats expanded: far below MIN_EXPANDED_BYTES
    PassManager(default_pipeline()).run(graph)
    assert "InvertedResidual" not in {n.op for n in graph.nodes}
    with pytest.MonkeyPatch.context() as mp:  # large enough, but rows of 10 pixels: below MIN_ROW_PIXELS
        mp.setattr(fuse_blocks, "MIN_EXPANDED_BYTES", 0)
        graph, _, _ = _graph(BLOCK)
        PassManager(default_pipeline()).run(graph)
        assert "InvertedResidual" not in {n.op for n in graph.nodes}
    graph, _, _ = _graph(BLOCK)
    PassManager([p if p.name != "fuse_blocks" else FuseBlocks(min_expanded_bytes=4 * 12 * 9 * 10)
                 for p in default_pipeline()]).run(graph)
    assert [n.op for n in graph.nodes] == ["InvertedResidual"]


def test_cost_rule_without_expand_fuses_only_narrowing_projects():
    with pytest.MonkeyPatch.context() as mp:  # sizes off, the widening rule on
        mp.setattr(fuse_blocks, "MIN_EXPANDED_BYTES", 0)
        mp.setattr(fuse_blocks, "MIN_ROW_PIXELS", 0)
        for m, fused in ((4, True), (3, True), (5, False)):
            graph, _, _ = _graph({**BLOCK, "expand": False, "e": 4, "m": m, "residual": False})
            PassManager(default_pipeline()).run(graph)
            assert ("InvertedResidual" in {n.op for n in graph.nodes}) == fused, m


def test_pass_leaves_chains_it_cannot_fuse(fuse_all):
    # the expanded tensor read twice (also a graph output): the expand stays, depthwise -> project is fused
    # without it (reading the expanded tensor from memory)
    graph, x, _ = _graph({**BLOCK, "residual": False})
    before = interpret(graph, [x])
    expand = graph.nodes[0]
    graph.outputs.append(expand.outputs[0])
    PassManager(default_pipeline()).run(graph)
    assert [n.op for n in graph.nodes] == ["Conv", "Clip", "InvertedResidual"]  # the expand's output is read
    block = graph.nodes[2]
    assert block.inputs[0] is graph.nodes[1].outputs[0] and block.inputs[1] is None
    np.testing.assert_allclose(interpret(graph, [x])[0], before[0], rtol=1e-5, atol=1e-5)
    # a dilated depthwise conv (pads 2 keep the shape): not fused
    model, x, _ = block_case(BLOCK)
    dw = next(n for n in model.graph.node if n.op_type == "Conv" and any(a.name == "group" for a in n.attribute))
    for a in dw.attribute:
        if a.name == "pads":
            a.ints[:] = [2, 2, 2, 2]
    dw.attribute.append(helper.make_attribute("dilations", [2, 2]))
    graph = import_model(model, {"x": x.shape})
    PassManager(default_pipeline()).run(graph)
    assert "InvertedResidual" not in {n.op for n in graph.nodes}


@pytest.mark.slow
def test_mobilenet_v2_with_fused_blocks_matches_onnxruntime():
    sys.path.insert(0, str(REPO_DIR))
    from benchmarks.models import load

    model, feeds = load("mobilenet_v2_224")
    compiled = cnnjit.compile(model)
    fused = [c for c in compiled._default_spec().program.calls if c.op == "InvertedResidual"]
    # the 112x112 blocks (the first without an expand) and the 56x56 stride-1 one
    assert len(fused) == 3 and {c.variant for c in fused} == {"block_fused"}
    want = ort_session(model).run(None, feeds)
    got = compiled.run(None, feeds)
    scale = max(float(np.abs(w).max()) for w in want)
    for g, w in zip(got, want):
        np.testing.assert_allclose(g, w, rtol=1e-3, atol=1e-4 * scale)
