"""``qconv_gemv_i16``: QConvNHWC on int8 weights widened to int16 pairs as they are loaded (``ivloadsx``), the
default for layers of 1-3 output pixels and at least ``GEMV_MIN_MACS`` multiply-adds per pixel on x86 without
VNNI (an MLP's fully connected layers: the MLPerf Tiny anomaly model).

* Forced at every integer vector width (4, 8, 16 lanes), it equals the numpy integer reference of the IR
  (``cnnjit.ir.interpret``, written apart from the kernels) exactly: 1-3 pixels (the tile's rows), any number
  of output channels (tails, padded tiles), C odd (the last pair's zero weight), int8 and uint8 activations,
  a 3x3 window with padding on a small map; extreme bytes (pair sums that would saturate ``vpmaddubsw``).
* It is chosen where it should be (and not for a tiny layer, a 4-pixel plane, another machine), and its
  kernel has ``vpmovsxbw`` and ``vpmaddwd`` on an AVX2 host.
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from kernel_cases import property_settings
from test_int8 import _qconv_case
from test_qint_i16 import WIDTHS, _run, extreme_case

from cnnjit.compiler.codegen.kernel import choose
from cnnjit.compiler.codegen.kernels import qint as K
from cnnjit.compiler.codegen.simd_int import _features, has_vnni, host_int_width
from cnnjit.compiler.stages import CompileOptions
from cnnjit.ir import interpret

GEMV = "qconv_gemv_i16"


@property_settings(max_examples=12)
@given(seed=st.integers(0, 2**31 - 1), width=st.sampled_from(WIDTHS), xs=st.booleans(),
       c=st.integers(1, 41), m=st.integers(1, 70), px=st.integers(1, 3), window=st.booleans())
def test_gemv_i16_exact(seed: int, width: int, xs: bool, c: int, m: int, px: int, window: bool) -> None:
    rng = np.random.default_rng(seed)
    registers = 32 if width == 16 else 16
    # a 1 x px map (1x1: a fully connected layer), or a 3x3 window with padding 1 over a 1 x px map
    k, pad = (3, 1) if window else (1, 0)
    g, xv = _qconv_case(rng, np.int8 if xs else np.uint8, np.int8 if xs else np.uint8, 1, 1, px, c, m, k, 1, pad,
                        1, 1)
    np.testing.assert_array_equal(_run(g, xv, "QConvNHWC", GEMV, width, registers), interpret(g, [xv])[0])


@pytest.mark.parametrize("width", [8, 16])
@pytest.mark.parametrize("xs", [False, True])
def test_gemv_i16_extreme_bytes(width: int, xs: bool) -> None:
    """Activations and weights at the ends of their ranges (|x - x_zp| up to 255 times -128), 2 batch rows."""
    g, xv, ref = extreme_case(np.random.default_rng(11 + xs), xs, 2, 1, 37, 45, 1, 0, 1e-4 if xs else 2e-5)
    np.testing.assert_array_equal(_run(g, xv, "QConvNHWC", GEMV, width), ref)


def test_gemv_i16_is_chosen_for_wide_few_pixel_layers() -> None:
    rng = np.random.default_rng(0)
    host = CompileOptions().host_target()
    x86 = host.isa == "x86_64" and not has_vnni(host.int_width)

    def chosen(px: int, c: int, m: int, **target) -> str:
        g, _ = _qconv_case(rng, np.int8, np.int8, 1, 1, px, c, m, 1, 1, 0, 1, 1)
        return choose(next(n for n in g.nodes if n.op == "QConvNHWC"), replace(host, **target)).name

    assert chosen(1, 640, 128) == (GEMV if x86 else "qconv_dense")  # the anomaly model's first layer
    assert chosen(3, 128, 128) == (GEMV if x86 else "qconv_dense")
    assert chosen(1, 64, 12) == "qconv_dense"  # below GEMV_MIN_MACS
    assert 64 * 12 < K.GEMV_MIN_MACS <= 128 * 128
    assert chosen(4, 128, 128) == ("qconv_dense_i16" if x86 else "qconv_dense")  # a plane: the int16 tiles
    assert chosen(1, 640, 128, triple="aarch64-linux-gnu", isa="aarch64") == "qconv_dense"


def test_gemv_i16_uses_vpmovsxbw_and_vpmaddwd() -> None:
    from cnnjit.compiler.codegen.build import module_text

    if host_int_width() != 8 or not _features().get("avx2"):
        pytest.skip("not an AVX2 host")
    ns: dict = {}
    exec(compile(module_text(K.dense_i16_source(8, 1, 2, byte_weights=True)), "<qint>", "exec"), ns)
    kern = ns["kernel"]
    x = np.zeros(8, np.int8)
    w = np.zeros(2 * 8 * 2 * 4, np.int8)
    b = np.zeros(16, np.int32)
    mlt = np.ones(16, np.float32)
    y = np.zeros(16, np.int8)
    sb = np.zeros(16, np.int16)
    # N H W C OH OW M KH KW sh sw ph pw dh dw Hp Wp CC KWL G2 MBP xz yz lo hi
    kern(x, 0, w, 0, b, 0, mlt, 0, y, 0, 1, 1, 1, 8, 1, 1, 16, 1, 1, 1, 1, 0, 0, 1, 1, 1, 1, 8, 1, 4, 2, 0, 0, -128,
         127, sb, 0, np.zeros(1, np.int64), 0)
    asm = kern.inspect_asm(kern.signatures[0])
    assert "vpmovsxbw" in asm and "vpmaddwd" in asm
