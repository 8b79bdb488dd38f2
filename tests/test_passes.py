"""Passes: every pass alone and the whole pipeline keep random CNN graphs' outputs, and each fusion
pattern fires where it should and not where it must not.

Oracle: the IR interpreter (numpy references) run on the *unfused* graph (``fuse=False``), compared with
the compiled, fused model's output. A random-graph strategy builds small valid CNNs from convs (plain,
strided, depthwise, grouped, pointwise), BatchNorm, activations (incl. x*sigmoid(x)), residual adds,
bias adds, concats, explicit pads, pools, channel shuffles and transpose pairs.
"""

from __future__ import annotations

import numpy as np
import onnx
import pytest
import reference_np as ref
from conftest import ops_of, ort_session
from hypothesis import given, settings
from hypothesis import strategies as st
from onnx import TensorProto, helper, numpy_helper

import cnnjit
from cnnjit.compiler.codegen.kernels import winograd
from cnnjit.compiler.frontend.onnx_import import import_model
from cnnjit.compiler.passes import PassManager, default_pipeline
from cnnjit.ir import interpret

#: the fusion passes of float graphs (the random graphs below are float; QDQ -> integer fusion has its own
#: tests in test_int8.py, test_ir_ownership.py and test_qdq_layout.py, integer -> float in test_dynamic_quant.py)
FUSION_PASSES = [p.name for p in default_pipeline() if p.fusion and p.name not in ("qdq_to_integer", "qdq_lut",
                                                                                   "integer_to_float")]
# fuse_blocks fuses only blocks whose expanded tensor is large (its cost rule): never on these small random
# graphs; tests/test_block_fusion.py checks it (before/after, property tests against numpy)
FUSION_PASSES.remove("fuse_blocks")
# batch_gemms needs Gemms sharing a B of at least 512 KiB (none here): tests/test_batch_gemms.py checks it
FUSION_PASSES.remove("batch_gemms")
# a horizontally dilated 3x3 passes its Winograd gate only on maps far larger than these graphs' ("dilated"
# layers here stay direct convs): tests/test_conv_column_phases.py checks it against a float64 numpy reference at
# every vector width
FUSION_PASSES.remove("conv_column_phases")
# conv_unit_depth rewrites 3-D Convs on one frame; these graphs are 2-D: tests/test_conv_unit_depth.py checks it
# against onnxruntime at every vector width
FUSION_PASSES.remove("conv_unit_depth")


class Builder:
    """Builds an ONNX graph layer by layer, tracking the NCHW shape of each named tensor."""

    def __init__(self, rng: np.random.Generator, c: int, h: int, w: int):
        self.rng = rng
        self.nodes: list = []
        self.inits: list = []
        self.shapes: dict[str, tuple[int, ...]] = {"x": (1, c, h, w)}
        self.n = 0

    def name(self, prefix: str) -> str:
        self.n += 1
        return f"{prefix}{self.n}"

    def const(self, arr: np.ndarray) -> str:
        nm = self.name("w")
        self.inits.append(numpy_helper.from_array(np.asarray(arr), nm))
        return nm

    def add(self, op: str, ins: list[str], shape: tuple[int, ...], **attrs) -> str:
        out = self.name("t")
        self.nodes.append(helper.make_node(op, ins, [out], name=self.name("n"), **attrs))
        self.shapes[out] = shape
        return out

    def model(self, outs: list[str]) -> onnx.ModelProto:
        g = helper.make_graph(
            self.nodes, "random", [helper.make_tensor_value_info("x", TensorProto.FLOAT, self.shapes["x"])],
            [helper.make_tensor_value_info(o, TensorProto.FLOAT, None) for o in outs], self.inits)
        return helper.make_model(g, opset_imports=[helper.make_opsetid("", 13)], ir_version=8)


def conv(b: Builder, x: str, m: int, k: int, s: int, group: int, pad: bool, bias: bool) -> str:
    _, c, h, w = b.shapes[x]
    pad = pad or h < k or w < k
    p = k // 2 if pad else 0
    oh, ow = (h + 2 * p - k) // s + 1, (w + 2 * p - k) // s + 1
    wt = b.const((b.rng.standard_normal((m, c // group, k, k)) / np.sqrt(c // group * k * k)).astype(np.float32))
    ins = [x, wt] + ([b.const(b.rng.standard_normal(m).astype(np.float32))] if bias else [])
    return b.add("Conv", ins, (1, m, oh, ow), kernel_shape=[k, k], strides=[s, s], pads=[p] * 4, group=group)


LAYERS = ["conv", "dw", "pw", "group", "bn", "act", "silu", "residual", "bias", "scale", "concat", "pad_conv",
          "pool", "shuffle", "transpose_pair", "layernorm", "spp", "attention", "column", "upconv", "dilated"]
ACTS = [("Relu", {}), ("LeakyRelu", {"alpha": 0.1}), ("HardSwish", {}), ("Sigmoid", {}), ("Tanh", {}),
        ("HardSigmoid", {}), ("Clip", "relu6")]


def build(draw_ops: list[tuple[str, int]], seed: int) -> tuple[onnx.ModelProto, np.ndarray]:
    rng = np.random.default_rng(seed)
    b = Builder(rng, 4, 9, 8)
    cur = "x"
    history = ["x"]
    outs = []
    for op, arg in draw_ops:
        _, c, h, w = b.shapes[cur]
        if op == "conv":
            cur = conv(b, cur, [4, 8][arg % 2], 3, 1 + (arg % 3 == 0 and h > 4), 1, True, arg % 2 == 0)
        elif op == "dw":
            cur = conv(b, cur, c, 3, 1 + (arg % 2 and h > 4), c, arg % 3 != 0, True)
        elif op == "pw":
            cur = conv(b, cur, [4, 8, 12][arg % 3], 1, 1, 1, False, arg % 2 == 0)
        elif op == "group" and c % 2 == 0:
            cur = conv(b, cur, c, 3, 1, 2, True, True)
        elif op == "bn":
            ps = [rng.uniform(0.5, 1.5, c), rng.standard_normal(c), rng.standard_normal(c) * 0.1,
                  rng.uniform(0.5, 2.0, c)]
            cur = b.add("BatchNormalization", [cur] + [b.const(p.astype(np.float32)) for p in ps], (1, c, h, w),
                        epsilon=1e-3)
        elif op == "act":
            name, attrs = ACTS[arg % len(ACTS)]
            if attrs == "relu6":
                cur = b.add("Clip", [cur, b.const(np.float32(0)), b.const(np.float32(6))], (1, c, h, w))
            else:
                cur = b.add(name, [cur], (1, c, h, w), **attrs)
        elif op == "silu":
            s = b.add("Sigmoid", [cur], (1, c, h, w))
            cur = b.add("Mul", [cur, s], (1, c, h, w))
        elif op == "residual":
            same = [t for t in history if b.shapes[t] == b.shapes[cur] and t != cur]
            if same:
                other = same[arg % len(same)]
                cur = b.add("Mul" if arg % 4 == 3 else "Add", [other, cur] if arg % 2 else [cur, other],
                            (1, c, h, w))
        elif op == "bias":
            cur = b.add("Add", [cur, b.const(rng.standard_normal((c, 1, 1)).astype(np.float32))], (1, c, h, w))
        elif op == "scale":  # a frozen BN's scale as exporters write it: per channel or one value, Mul or Div
            shape = [(c, 1, 1), (1, c, 1, 1), (), (1, 1, w)][arg % 4]
            k = b.const(rng.uniform(0.5, 2.0, shape).astype(np.float32))
            cur = b.add("Div" if arg % 5 == 4 else "Mul", [cur, k] if arg % 2 or arg % 5 == 4 else [k, cur],
                        (1, c, h, w))
        elif op == "concat":
            same = [t for t in history if b.shapes[t][2:] == (h, w) and t != cur]
            if same:
                other = same[arg % len(same)]
                cur = b.add("Concat", [cur, other], (1, c + b.shapes[other][1], h, w), axis=1)
        elif op == "pad_conv":
            p = b.add("Pad", [cur, b.const(np.array([0, 0, 1, arg % 2, 0, 0, 1, 1], np.int64))],
                      (1, c, h + 2, w + 1 + arg % 2))
            cur = conv(b, p, c, 3, 1, 1, False, True)
        elif op == "pool" and h >= 3 and w >= 3:
            kind = ["MaxPool", "AveragePool"][arg % 2]
            cur = b.add(kind, [cur], (1, c, h - 1, w - 1), kernel_shape=[2, 2], strides=[1, 1])
        elif op == "spp":  # YOLO's spatial pyramid: "same" max pools of growing windows on one input, concatenated
            pools = [b.add("MaxPool", [cur], (1, c, h, w), kernel_shape=[k, k], strides=[1, 1], pads=[k // 2] * 4)
                     for k in (3, 5, 7)[:1 + arg % 3]]
            cur = b.add("Concat", [cur, *pools], (1, c * (1 + len(pools)), h, w), axis=1)
        elif op == "shuffle" and c % 2 == 0:
            r1 = b.add("Reshape", [cur, b.const(np.array([1, 2, c // 2, h, w], np.int64))], (1, 2, c // 2, h, w))
            t = b.add("Transpose", [r1], (1, c // 2, 2, h, w), perm=[0, 2, 1, 3, 4])
            cur = b.add("Reshape", [t, b.const(np.array([1, c, h, w], np.int64))], (1, c, h, w))
        elif op == "transpose_pair":
            t = b.add("Transpose", [cur], (1, h, w, c), perm=[0, 2, 3, 1])
            if arg % 2:  # a PyTorch export of a TF model: bias, a no-op Cast, a scale and Relu in NHWC between
                t = b.add("Add", [t, b.const(rng.standard_normal((1, 1, 1, c)).astype(np.float32))], (1, h, w, c))
                t = b.add("Cast", [t], (1, h, w, c), to=TensorProto.FLOAT)
                t = b.add("Mul", [t, b.const(np.float32(0.5))], (1, h, w, c))
                t = b.add("Relu", [t], (1, h, w, c))
            cur = b.add("Transpose", [t], (1, c, h, w), perm=[0, 3, 1, 2])
        elif op == "layernorm":  # the decomposed layer norm exporters write, over the last axis
            m = b.add("ReduceMean", [cur], (1, c, h, 1), axes=[3])
            d = b.add("Sub", [cur, m], (1, c, h, w))
            sq = b.add("Mul", [d, d], (1, c, h, w)) if arg % 2 else b.add("Pow", [d, b.const(np.float32(2))],
                                                                          (1, c, h, w))
            v = b.add("ReduceMean", [sq], (1, c, h, 1), axes=[3])
            sd = b.add("Sqrt", [b.add("Add", [v, b.const(np.float32(1e-5))], (1, c, h, 1))], (1, c, h, 1))
            cur = b.add("Div", [d, sd], (1, c, h, w))
            if arg % 3:
                g = b.add("Mul", [cur, b.const(rng.uniform(0.5, 1.5, w).astype(np.float32))], (1, c, h, w))
                cur = b.add("Add", [g, b.const(rng.standard_normal(w).astype(np.float32))], (1, c, h, w))
        elif op == "attention":  # self-attention over each channel's rows: softmax(s * x x^T, last axis) @ x
            t = b.add("Transpose", [cur], (1, c, w, h), perm=[0, 1, 3, 2])
            sc = b.add("MatMul", [cur, t], (1, c, h, h))
            if arg % 2:
                sc = b.add("Mul", [sc, b.const(np.float32(0.5))], (1, c, h, h))
            p = b.add("Softmax", [sc], (1, c, h, h), axis=-1 if arg % 3 else 2)  # axis 2: not fused
            cur = b.add("MatMul", [p, cur], (1, c, h, w))
        elif op == "column":  # a Conv1D as tf2onnx writes it: a Kx1 Conv on a one-column plane (conv_columns)
            col = b.add("ReduceMean", [cur], (1, c, h, 1), axes=[3]) if w > 1 else cur
            k, m = 2 + arg % 3, [4, 8][arg % 2]
            top = (k - 1) // 2 if arg % 3 else 0
            wt = b.const((rng.standard_normal((m, c, k, 1)) / np.sqrt(c * k)).astype(np.float32))
            cur = b.add("Conv", [col, wt, b.const(rng.standard_normal(m).astype(np.float32))],
                        (1, m, h - k + 1 + (k - 1 if arg % 3 else 0), 1), kernel_shape=[k, 1],
                        pads=[top, 0, k - 1 - top if arg % 3 else 0, 0]) if h >= k else col
            if arg % 4 == 3 and cur is not col:  # Keras' Conv1D: squeezed, bias and act on N x C x L (sink_reshapes)
                oh = b.shapes[cur][2]
                sq = b.add("Reshape", [cur, b.const(np.array([1, m, oh], np.int64))], (1, m, oh))
                sq = b.add("Add", [sq, b.const(rng.standard_normal((m, 1)).astype(np.float32))], (1, m, oh))
                sq = b.add("Relu", [sq], (1, m, oh))
                cur = b.add("Reshape", [sq, b.const(np.array([1, m, oh, 1], np.int64))], (1, m, oh, 1))
        elif op == "upconv" and h * w <= 160:  # a decoder's strided ConvTranspose, overlapping taps (its phases)
            k, p, m = 3 + arg % 2, arg // 2 % 2, [4, 8][arg % 2]  # 8 outputs x 2x2 phases: the 1x1-folded form
            wt = b.const((rng.standard_normal((c, m, k, k)) / np.sqrt(c * k * k / 4)).astype(np.float32))
            ins = [cur, wt] + ([b.const(rng.standard_normal(m).astype(np.float32))] if arg % 3 else [])
            cur = b.add("ConvTranspose", ins, (1, m, 2 * h - 1 - 2 * p + k - 1, 2 * w - 1 - 2 * p + k - 1),
                        kernel_shape=[k, k], strides=[2, 2], pads=[p] * 4)
        elif op == "dilated" and h >= 5 and w >= 5:  # DeepLab / CRAFT style: a dilated 3x3, "same" pads
            d = (1 + arg % 2, 2)
            wt = b.const((rng.standard_normal((c, c, 3, 3)) / np.sqrt(c * 9)).astype(np.float32))
            cur = b.add("Conv", [cur, wt], (1, c, h, w), kernel_shape=[3, 3], dilations=list(d),
                        pads=[d[0], d[1], d[0], d[1]])
        history.append(cur)
        if arg % 7 == 6 and cur not in outs:  # sometimes an intermediate is also an output (once): fusion must keep it
            outs.append(cur)
    if cur not in outs:
        outs.append(cur)
    x = rng.standard_normal(b.shapes["x"]).astype(np.float32)
    return b.model(outs), x


programs = st.lists(st.tuples(st.sampled_from(LAYERS), st.integers(0, 20)), min_size=1, max_size=8)


def check(model: onnx.ModelProto, x: np.ndarray, **options) -> cnnjit.runtime.CompiledModel:
    # the unfused IR only (entry="lazy" builds no kernel): the interpreter below is the oracle, so compiling
    # the unfused kernels would cost a cold compile per example and check nothing more
    unfused = cnnjit.compile(model, fuse=False, entry="lazy")
    expected = interpret(unfused.ir, [x])
    got = cnnjit.compile(model, **options)
    outs = got.run(None, {"x": x})
    assert len(outs) == len(expected)
    for o, e in zip(outs, expected):
        assert o.shape == e.shape
        np.testing.assert_allclose(o, e, rtol=1e-4, atol=1e-4 * max(1.0, float(np.abs(e).max())))
    return got


@settings(max_examples=60)
@given(programs, st.integers(0, 2**16))
def test_whole_pipeline_matches_unfused_interpreter(ops, seed) -> None:
    model, x = build(ops, seed)
    check(model, x)


@pytest.mark.parametrize("pass_name", FUSION_PASSES)
@settings(max_examples=15)
@given(ops=programs, seed=st.integers(0, 2**16))
def test_each_pass_alone_matches_unfused_interpreter(pass_name, ops, seed) -> None:
    model, x = build(ops, seed)
    basics = [p.name for p in default_pipeline() if not p.fusion]
    # the Python schedule: the pass is what is checked here (kernels take their sizes as arguments, so an
    # example compiles far fewer kernels); the numba schedule of the same graphs is checked by the tests of
    # the whole pipeline and of the numba entry
    check(model, x, passes=basics + [pass_name], entry="python")


def test_column_conv_under_a_later_residual() -> None:
    """A column Conv (``conv_columns``: its output becomes a view) whose output a later Conv both reads and
    adds as its fused residual: the residual step follows the view (a random graph found it failing with
    "the epilogue's residual is not its input 3")."""
    ops = [("shuffle", 1), ("dilated", 11), ("column", 5), ("residual", 18), ("group", 1), ("residual", 14),
           ("pw", 18)]
    got = check(*build(ops, 3), entry="python")
    assert any("column view" in f for f in fused_of(got))


def fired_passes(model: onnx.ModelProto, x: np.ndarray) -> set[str]:
    """The names of the default pipeline's passes that changed the imported graph of ``model``."""
    pm = PassManager(default_pipeline())
    pm.run(import_model(model, {"x": x.shape}))
    return {r.name for r in pm.records if r.changed}


def test_random_graphs_fire_every_fusion_pass() -> None:
    """The random-graph generator the property tests above draw from makes graphs on which every fusion
    pass fires (otherwise "each pass alone keeps the outputs" would check a pass that never ran)."""
    rng = np.random.default_rng(0)
    fired: set[str] = set()
    for seed in range(120):
        ops = [(str(rng.choice(LAYERS)), int(rng.integers(0, 21))) for _ in range(rng.integers(1, 9))]
        fired |= fired_passes(*build(ops, seed))
    assert set(FUSION_PASSES) <= fired, f"never fired: {sorted(set(FUSION_PASSES) - fired)}"


# -- targeted: each pattern fires, and does not fire where it must not ----------------------------------
def fused_of(model: cnnjit.runtime.CompiledModel) -> list[list[str]]:
    return [n.meta.get("fused", []) for n in model.ir.nodes]


def test_conv_bn_relu_becomes_one_kernel() -> None:
    model, x = build([("conv", 1), ("bn", 0), ("act", 0)], 1)
    m = check(model, x)
    assert ops_of(m) == ["Conv"]
    assert fused_of(m)[0] == ["BatchNormalization", "Relu"]
    assert len(m._default_spec().program.source.splitlines()) == 2  # def + one kernel call


def test_residual_add_then_activation_fuse() -> None:
    model, x = build([("conv", 1), ("conv", 1), ("residual", 1), ("act", 0)], 2)
    m = check(model, x)
    assert ops_of(m) == ["Conv", "Conv"]
    assert fused_of(m)[1] == ["Add", "Relu"]


def test_residual_mul_then_activation_fuse() -> None:
    """``other * conv`` (a gate of the output's shape) is the conv's residual Mul step."""
    model, x = build([("conv", 1), ("conv", 1), ("residual", 3), ("act", 0)], 2)
    assert [n.op_type for n in model.graph.node][2] == "Mul"
    m = check(model, x)
    assert ops_of(m) == ["Conv", "Conv"]
    assert fused_of(m)[1] == ["Mul", "Relu"]
    assert [s.op for s in m.ir.nodes[-1].attrs["post"]] == ["Mul", "Relu"]


def test_silu_pattern_fuses() -> None:
    """x * sigmoid(x) after a conv becomes the conv's SiLU epilogue: the Sigmoid and the Mul are gone."""
    model, x = build([("pw", 1), ("silu", 0)], 3)
    m = check(model, x)
    assert ops_of(m) == ["Conv"]
    assert fused_of(m)[0] == ["SiLU"]
    want = ort_session(model).run(None, {"x": x})[0]  # independent oracle besides check()'s interpreter
    np.testing.assert_allclose(m(x), want, rtol=1e-4, atol=1e-5)


def test_bias_add_folds_into_conv_bias() -> None:
    model, x = build([("pw", 1), ("bias", 0)], 4)
    m = check(model, x)
    assert ops_of(m) == ["Conv"] and fused_of(m)[0] == ["Add(bias)"]


@pytest.mark.parametrize(("arg", "fused"), [(0, ["Mul", "Add(bias)"]), (1, ["Mul", "Add(bias)"]),
                                           (2, ["Mul", "Add(bias)"]), (4, ["Div", "Add(bias)"]),
                                           (3, [])])
def test_scale_then_shift_folds_into_conv(arg: int, fused: list[str]) -> None:
    """A frozen BN written as ``Conv -> Mul(scale) -> Add(shift)`` (per channel or one value; ``Div`` by
    one) is one Conv with scaled weights and bias; a scale that varies along the width (``arg`` 3) is
    not folded (it stays a Mul node), and onnxruntime agrees with the folded model."""
    model, x = build([("conv", 1), ("scale", arg), ("bias", 0), ("act", 0)], 7)
    m = check(model, x)
    assert fused_of(m)[0][:2] == fused
    assert (ops_of(m) == ["Conv"]) == (arg != 3) and ("Mul" in ops_of(m)) == (arg == 3)
    np.testing.assert_allclose(m(x), ort_session(model).run(None, {"x": x})[0], rtol=1e-4, atol=1e-5)


def test_no_scale_fold_when_conv_feeds_two_nodes() -> None:
    """A scale whose conv output is also a graph output stays a node (the output must be unscaled)."""
    model, x = build([("conv", 6), ("scale", 0)], 8)
    m = check(model, x)
    assert ops_of(m) == ["Conv", "Mul"]


def test_no_fusion_when_conv_output_has_second_consumer() -> None:
    # conv -> relu, and the conv output is also a graph output: the Relu must stay a separate kernel
    model, x = build([("conv", 6), ("act", 0)], 5)
    m = check(model, x)
    assert ops_of(m) == ["Conv", "Relu"]


def test_no_bn_fold_when_conv_feeds_two_nodes() -> None:
    """A BN whose conv input also feeds the residual Add stays a node of its own (folding it would change
    the value the Add reads); check() shows the result still matches."""
    model, x = build([("conv", 1), ("bn", 0), ("residual", 0)], 6)
    m = check(model, x)
    assert ops_of(m) == ["Conv", "BatchNormalization", "Add"]
    conv_node, bn, add = m.ir.nodes
    assert "BatchNormalization" not in fused_of(m)[0]
    assert bn.inputs[0] is conv_node.outputs[0] and conv_node.outputs[0] in add.inputs


def test_pad_folds_into_conv() -> None:
    model, x = build([("pad_conv", 0)], 7)
    m = check(model, x)
    assert ops_of(m) == ["Conv"] and fused_of(m)[0] == ["Pad"]


def test_transpose_pair_cancels() -> None:
    model, x = build([("conv", 1), ("transpose_pair", 0), ("act", 0)], 8)
    m = check(model, x)
    assert "Transpose" not in ops_of(m)


def test_transpose_pair_cancels_through_an_elementwise_chain() -> None:
    """Conv, then NHWC: bias Add, float -> float Cast, Mul, Relu, then back: the Cast goes, the Transposes
    meet and cancel, and the chain fuses into the Conv."""
    model, x = build([("conv", 1), ("transpose_pair", 1)], 12)
    m = check(model, x)
    assert ops_of(m) == ["Conv"], ops_of(m)


@pytest.mark.parametrize("squeeze", ["Squeeze", "Reshape"])
def test_nhwc_pairs_cancel_through_unit_reshapes(squeeze: str) -> None:
    """Keras-converted layers (madmom): each Conv between Transposes to and from NHWC with the batch axis
    squeezed out between them, the BN as Mul and Add and a Relu on ``H x W x C``, then unsqueezed (or the same
    with Reshapes): the Transposes move below the unit Reshapes, meet their inverses and go; the BN folds
    and the Relu fuses: two Conv kernels and views, matching onnxruntime."""
    rng = np.random.default_rng(21)
    b = Builder(rng, 3, 10, 7)
    cur = "x"
    for m in (6, 5):
        c = conv(b, cur, m, 3, 1, 1, False, True)
        _, _, h, w = b.shapes[c]
        t = b.add("Transpose", [c], (1, h, w, m), perm=[0, 2, 3, 1])
        s = (b.add("Squeeze", [t, b.const(np.array([0], np.int64))], (h, w, m)) if squeeze == "Squeeze"
             else b.add("Reshape", [t, b.const(np.array([h, w, m], np.int64))], (h, w, m)))
        s = b.add("Mul", [s, b.const(rng.uniform(0.5, 1.5, m).astype(np.float32))], (h, w, m))
        s = b.add("Relu", [b.add("Add", [s, b.const(rng.uniform(-1, 1, m).astype(np.float32))], (h, w, m))],
                  (h, w, m))
        u = (b.add("Unsqueeze", [s, b.const(np.array([0], np.int64))], (1, h, w, m)) if squeeze == "Squeeze"
             else b.add("Reshape", [s, b.const(np.array([1, h, w, m], np.int64))], (1, h, w, m)))
        cur = b.add("Transpose", [u], (1, m, h, w), perm=[0, 3, 1, 2])
    model = b.model([cur])
    x = rng.standard_normal((1, 3, 10, 7)).astype(np.float32)
    m = check(model, x)
    assert [op for op in ops_of(m) if op != "Reshape"] == ["Conv", "Conv"], ops_of(m)
    np.testing.assert_allclose(m(x), ort_session(model).run(None, {"x": x})[0], rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("cancels", [True, False])
def test_nhwc_map_read_by_heads_through_unit_reshapes(cancels: bool) -> None:
    """One NHWC map (a Conv's output transposed, batch squeezed) read by two heads, each through an Unsqueeze
    and a Transpose back to NCHW into a Conv (madmom's notes CNN): the Transpose moves below both Reshapes and
    every pair cancels (no Transpose left). When one head's Transpose does not undo it, nothing moves (one
    Transpose per head would copy more)."""
    rng = np.random.default_rng(23)
    b = Builder(rng, 3, 8, 6)
    c = conv(b, "x", 5, 3, 1, 1, True, True)
    t = b.add("Transpose", [c], (1, 8, 6, 5), perm=[0, 2, 3, 1])
    s = b.add("Squeeze", [t, b.const(np.array([0], np.int64))], (8, 6, 5))
    outs = []
    for head in range(2):
        u = b.add("Unsqueeze", [s, b.const(np.array([0], np.int64))], (1, 8, 6, 5))
        back = [0, 3, 1, 2] if cancels or head == 0 else [0, 3, 2, 1]
        shape = (1, 5, 8, 6) if back == [0, 3, 1, 2] else (1, 5, 6, 8)
        outs.append(conv(b, b.add("Transpose", [u], shape, perm=back), 4, 3, 1, 1, True, True))
    model = b.model(outs)
    x = rng.standard_normal((1, 3, 8, 6)).astype(np.float32)
    m = check(model, x)
    assert ops_of(m).count("Transpose") == (0 if cancels else 3), ops_of(m)
    for got, want in zip(m.run(None, {"x": x}), ort_session(model).run(None, {"x": x})):
        np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5)


def test_transpose_moving_unit_axes_is_a_view() -> None:
    """A Transpose that moves only unit axes (``1 x C x H x 1 -> 1 x 1 x C x H``) becomes a Reshape."""
    rng = np.random.default_rng(22)
    b = Builder(rng, 4, 6, 1)
    model = b.model([b.add("Relu", [b.add("Transpose", ["x"], (1, 1, 4, 6), perm=[0, 3, 1, 2])], (1, 1, 4, 6))])
    m = check(model, rng.standard_normal((1, 4, 6, 1)).astype(np.float32))
    assert "Transpose" not in ops_of(m), ops_of(m)


def test_nhwc_branches_and_arithmetic_bn_fold_into_the_convs() -> None:
    """Two Conv branches, each transposed to NHWC with a bias Add and one with a BN written as Sub(mean),
    Mul(scale), Add(beta), joined by a residual Add and a Relu, then transposed back (a PyTorch export of a
    TF ResNet): the Transposes sink and merge into one that cancels its inverse, the arithmetic BN folds into
    its Conv, and the Add and Relu fuse: two Conv kernels."""
    rng = np.random.default_rng(13)
    b = Builder(rng, 4, 9, 8)
    branches = []
    for bn in (True, False):
        t = b.add("Transpose", [conv(b, "x", 8, 3, 1, 1, True, False)], (1, 9, 8, 8), perm=[0, 2, 3, 1])
        for op in ("Add", "Sub", "Mul", "Add")[: 4 if bn else 1]:
            k = rng.uniform(0.5, 1.5, (1, 1, 1, 8)).astype(np.float32)
            t = b.add(op, [t, b.const(k)], (1, 9, 8, 8))
        branches.append(t)
    r = b.add("Relu", [b.add("Add", branches, (1, 9, 8, 8))], (1, 9, 8, 8))
    model = b.model([b.add("Transpose", [r], (1, 8, 9, 8), perm=[0, 3, 1, 2])])
    m = check(model, rng.standard_normal((1, 4, 9, 8)).astype(np.float32))
    assert ops_of(m) == ["Conv", "Conv"], ops_of(m)


def test_concat_is_in_place() -> None:
    model, x = build([("pw", 1), ("pw", 0), ("concat", 1)], 9)
    m = check(model, x)
    spec = m._default_spec()
    assert any(n.meta.get("inplace") for n in spec.graph.nodes)
    assert "Concat" not in spec.program.source  # no copy kernel


def test_fuse_false_keeps_every_op() -> None:
    model, x = build([("conv", 1), ("bn", 0), ("act", 0)], 10)
    m = cnnjit.compile(model, fuse=False, entry="lazy")  # the IR only
    assert ops_of(m) == ["Conv", "BatchNormalization", "Relu"]


def test_disable_and_passes_select_passes() -> None:
    model, x = build([("conv", 1), ("bn", 0), ("act", 0)], 11)
    m = cnnjit.compile(model, disable=["fuse_epilogue"], entry="lazy")  # the IR only
    assert ops_of(m) == ["Conv", "Relu"]
    with pytest.raises(ValueError, match="unknown pass"):
        cnnjit.compile(model, passes=["no_such_pass"])


@settings(max_examples=15)
@given(programs, st.integers(0, 2**16))
def test_numba_entry_matches_unfused_interpreter(ops, seed) -> None:
    """The whole schedule compiled as one numba function computes the same as the IR interpreter."""
    model, x = build(ops, seed)
    m = check(model, x, entry="numba")
    assert m._default_spec().program.meta.get("entry") == "numba"


def test_entry_auto_picks_by_call_count() -> None:
    small, x = build([("conv", 1)], 12)
    assert cnnjit.compile(small)._default_spec().program.meta["entry"] == "python"
    big, x = build([("conv", 1), ("pool", 0), ("conv", 1), ("act", 1), ("pw", 0), ("act", 2)], 13)
    m = check(big, x)
    assert m._default_spec().program.meta["entry"] == "numba"


@pytest.mark.parametrize("width", [4, 8, 16])
@pytest.mark.parametrize("k, group", [(1, 1), (3, 1), (3, 8)])
def test_per_channel_prelu_fuses_into_the_conv(width, k, group, monkeypatch) -> None:
    """Conv -> PRelu with one slope per channel is one kernel call (the slopes expanded to the output's shape
    and read like a residual, in registers), for pointwise, dense and depthwise convs; above the size cap
    the PRelu stays a node of its own. Oracle: onnxruntime."""
    rng = np.random.default_rng(k + group)
    x = rng.standard_normal((1, 8, 7, 9)).astype(np.float32)
    inits = [numpy_helper.from_array(rng.standard_normal((8, 8 // group, k, k)).astype(np.float32), "w"),
             numpy_helper.from_array(rng.uniform(-1, 1, (8, 1, 1)).astype(np.float32), "s")]
    nodes = [helper.make_node("Conv", ["x", "w"], ["c"], pads=[k // 2] * 4, group=group),
             helper.make_node("PRelu", ["c", "s"], ["y"])]
    g = helper.make_graph(nodes, "prelu", [helper.make_tensor_value_info("x", TensorProto.FLOAT, x.shape)],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)], inits)
    model = helper.make_model(g, opset_imports=[helper.make_opsetid("", 13)], ir_version=8)
    want = ort_session(model).run(None, {"x": x})[0]
    m = cnnjit.compile(model, vector_width=width)
    assert ops_of(m) == ["Conv"] and fused_of(m)[0] == ["PRelu"]
    prog = m._default_spec().program
    assert all("vprelu" in prog.kernel_sources[c.kernel] for c in prog.calls)
    # winograd_f4 (chosen for the 3x3 dense conv at widths 4 and 8) is within its stated bound of each
    # output's scale sum |w| |x| (PRelu's slopes are at most 1 in size); the direct kernels within 1e-5
    w = numpy_helper.to_array(inits[0])
    wino = {c.variant for c in prog.calls} == {"winograd_f4"}
    bound = ref.conv(np.abs(x), np.abs(w), pads=[k // 2] * 4, group=group)
    tol = winograd.ERROR_BOUND * bound + 1e-6 if wino else 1e-5 + 1e-5 * np.abs(want)
    assert np.all(np.abs(m(x) - want) <= tol)
    monkeypatch.setattr("cnnjit.compiler.passes.fuse_epilogue.MAX_SLOPE_BYTES", 8 * 7 * 9 * 4 - 4)
    m = cnnjit.compile(model, vector_width=width)
    assert ops_of(m) == ["Conv", "PRelu"]
    assert np.all(np.abs(m(x) - want) <= tol)
