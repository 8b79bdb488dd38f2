"""``conv_dead_taps``: kernel taps that read only padding are dropped (a TCN's dilations past its input, an ASPP
branch on a small map).

* a property test over 1-D and 2-D Convs (kernel sizes 1-5 per axis, dilations 1-12, strides 1-3, pads up to
  the kernel's span, maps of 1-12) against a float64 numpy reference; the kept kernel is checked against one
  counted by brute force (every tap against every output position; or whole, where the kept taps would need
  a negative pad), and a kernel that became 1 tap wide on an axis has dilation 1 there;
* madmom's pattern (16 -> 16 kernel 5 on 996 steps at dilation 512 and 1024): kernel 3, then 1x1.
"""

from __future__ import annotations

import numpy as np
import reference_np as ref
from hypothesis import given
from hypothesis import strategies as st
from kernel_cases import property_settings
from onnx import TensorProto, helper, numpy_helper

import cnnjit


def conv_model(x_shape: tuple, wt: np.ndarray, b: np.ndarray, strides: list, pads: list, dilations: list):
    g = helper.make_graph(
        [helper.make_node("Conv", ["x", "w", "b"], ["y"], kernel_shape=list(wt.shape[2:]), strides=strides,
                          pads=pads, dilations=dilations)], "dead_taps",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, list(x_shape))],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
        [numpy_helper.from_array(wt, "w"), numpy_helper.from_array(b, "b")])
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", 13)], ir_version=8)


def kept(size: int, k: int, s: int, d: int, pb: int, pe: int) -> int | None:
    """How many taps of one axis are kept: from the first to the last that reads the input at some output
    position, by brute force (None: no tap does)."""
    out = (size + pb + pe - d * (k - 1) - 1) // s + 1
    live = [t for t in range(k) if any(0 <= o * s + t * d - pb < size for o in range(out))]
    return live[-1] - live[0] + 1 if live else None


@st.composite
def cases(draw):
    k = (draw(st.integers(1, 5)), draw(st.integers(1, 5)))
    d = (draw(st.integers(1, 12)), draw(st.integers(1, 12)))
    s = (draw(st.integers(1, 3)), draw(st.integers(1, 3)))
    span = [dd * (kk - 1) for dd, kk in zip(d, k)]
    pads = [draw(st.integers(0, span[0])), draw(st.integers(0, span[1]))]
    pads += [draw(st.integers(0, span[0])), draw(st.integers(0, span[1]))]
    hw = [max(draw(st.integers(1, 12)), span[a] + 1 - pads[a] - pads[a + 2]) for a in (0, 1)]
    one_d = draw(st.booleans())
    if one_d:  # a Conv1D as tf2onnx writes it: K x 1 on N x C x L x 1
        k, d, s, hw = (k[0], 1), (d[0], 1), (s[0], 1), [hw[0], 1]
        pads[1] = pads[3] = 0
    return dict(k=k, d=d, s=s, pads=pads, hw=hw, c=draw(st.integers(1, 4)), m=draw(st.integers(1, 9)),
                seed=draw(st.integers(0, 2**16)))


@property_settings(max_examples=12)  # each example compiles a kernel
@given(case=cases())
def test_dead_taps_dropped(case: dict) -> None:
    rng = np.random.default_rng(case["seed"])
    c, m, (kh, kw) = case["c"], case["m"], case["k"]
    x = rng.standard_normal((1, c, *case["hw"])).astype(np.float32)
    wt = rng.standard_normal((m, c, kh, kw)).astype(np.float32)
    b = rng.standard_normal(m).astype(np.float32)
    geo = dict(strides=list(case["s"]), pads=case["pads"], dilations=list(case["d"]))
    compiled = cnnjit.compile(conv_model(x.shape, wt, b, **geo), threads=1)
    expected = ref.conv(x, wt, b, **geo)
    scale = ref.conv(np.abs(x), np.abs(wt), np.abs(b), **geo)
    got = compiled(x)
    assert got.shape == expected.shape
    assert np.all(np.abs(got - expected) <= 1e-5 * scale + 1e-6)
    node = next(n for n in compiled.ir.nodes if n.op == "Conv")
    p = case["pads"]
    want = [kept(case["hw"][a], case["k"][a], case["s"][a], case["d"][a], p[a], p[a + 2]) for a in (0, 1)]
    if None in want:  # the output is the bias alone: left as it is
        want = list(case["k"])
    shape, dils = tuple(node.attrs["kernel_shape"]), tuple(node.attrs["dilations"])
    if tuple(node.inputs[0].shape[2:]) != tuple(case["hw"]):  # a column Conv seen as a row by conv_columns
        shape, dils = shape[::-1], dils[::-1]
    # trimmed as counted, or (when the kept taps would need a negative pad: a crop) left whole
    assert shape in (tuple(want), tuple(case["k"])), (shape, want)
    if shape != tuple(case["k"]):
        for size, dil in zip(shape, dils):
            assert size > 1 or dil == 1


def test_tcn_dilations_past_the_input() -> None:
    """16 -> 16 kernel 5 over 996 steps (``K x 1`` on ``1 x 16 x 996 x 1``): at dilation 512 the outer taps
    never meet the input (kernel 3, pads 512), at 1024 only the centre does (a 1x1 without pads)."""
    rng = np.random.default_rng(3)
    x = rng.standard_normal((1, 16, 996, 1)).astype(np.float32)
    for dil, k, pad in ((512, 3, 512), (1024, 1, 0)):
        wt = rng.standard_normal((16, 16, 5, 1)).astype(np.float32)
        b = rng.standard_normal(16).astype(np.float32)
        geo = dict(strides=[1, 1], pads=[2 * dil, 0, 2 * dil, 0], dilations=[dil, 1])
        compiled = cnnjit.compile(conv_model(x.shape, wt, b, **geo), threads=1)
        node = next(n for n in compiled.ir.nodes if n.op == "Conv")
        assert sorted(node.attrs["kernel_shape"]) == [1, k] and max(node.attrs["pads"]) == pad, node.attrs
        expected = ref.conv(x, wt, b, **geo)
        scale = ref.conv(np.abs(x), np.abs(wt), np.abs(b), **geo)
        assert np.all(np.abs(compiled(x) - expected) <= 1e-5 * scale + 1e-6)
