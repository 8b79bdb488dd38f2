"""Broadcast binary op + activation chains (``BroadcastMap``) and the vector tanh, single-threaded.

    python benchmarks/broadcast_map.py [--runs 50] [--cases attn_256x256_tanh,...]

Two parts, each timed interleaved in this process (``harness.measure``: warm-up, random order):

* ``tanh``: the ``vtanh`` intrinsic alone over 64K float32 (16 and 8 lanes): ``before``, its former form
  (``exp`` with clamps, ``rint`` and a two-factor ``2^k``; kept below for this A/B) against ``after``
  (``VecMath.tanh``: ``exp(-2|x|)`` from the exponent-field exp);
* the model cases (additive attention's ``Tanh(q[:, :, None] + k[:, None, :])`` at several sizes, a GRU-style
  gate ``Sigmoid(x + b)``, a per-channel SE-style ``HardSwish(x * s)``, a ``Relu(x - m)`` over a row): ``fused``
  (the default pipeline: one ``simd_broadcast_map`` call) against ``unfused`` (``fuse_broadcast_map``
  disabled: ``simd_nary`` then ``simd_unary``, the sum through memory) and onnxruntime.

Prints tables (best of the runs; the JSON has the medians too) and writes
``benchmarks/results/broadcast_map.{json,md}``.
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

from benchmarks.harness import single_thread  # noqa: E402

single_thread()

import argparse  # noqa: E402

import numba  # noqa: E402
import numpy as np  # noqa: E402
from llvmlite import ir  # noqa: E402
from numba.core import cgutils, types  # noqa: E402
from numba.extending import intrinsic  # noqa: E402
from test_broadcast_map import chain_model  # noqa: E402

import cnnjit  # noqa: E402
from benchmarks.harness import fmt, measure, ort_session, print_table, write_json, write_markdown  # noqa: E402
from cnnjit.compiler.codegen.simd_math import TANH_POLY, VecMath  # noqa: E402


def tanh_before(m: VecMath, x: ir.Value) -> ir.Value:
    """``VecMath.tanh`` as it was before the exponent-field exp: ``1 - 2 / (exp(2|x|) + 1)`` above 0.625."""
    a = m.call("fabs", x)
    z = m.mul(x, x)
    small = m.fma(m.mul(m.poly(z, TANH_POLY), z), x, x)
    e = m.exp(m.add(a, a))
    big = m.sub(m.c(1.0), m.div(m.c(2.0), m.add(e, m.c(1.0))))
    return m.sel(m.lt(a, m.c(0.625)), small, m.call("copysign", big, x))


def _tanh_kernels(lanes: int):
    """(before, after): ``out[i] = tanh(x[i])`` over ``x.size`` (a multiple of ``lanes``)."""
    vt = types.Array(types.float32, 1, "C")

    def make(fn):
        @intrinsic
        def apply(typingctx, x, out):
            def codegen(context, builder, sig, args):
                xs, ys = (context.make_array(t)(context, builder, v) for t, v in zip(sig.args, args))
                vty = ir.VectorType(ir.FloatType(), lanes)
                steps = builder.udiv(xs.nitems, ir.Constant(xs.nitems.type, lanes))
                with cgutils.for_range(builder, steps) as loop:
                    off = builder.mul(loop.index, ir.Constant(loop.index.type, lanes))
                    src = builder.bitcast(builder.gep(xs.data, [off]), vty.as_pointer())
                    dst = builder.bitcast(builder.gep(ys.data, [off]), vty.as_pointer())
                    builder.store(fn(VecMath(builder, lanes), builder.load(src, align=4)), dst, align=4)
                return context.get_dummy_value()

            return types.void(x, out), codegen

        @numba.njit
        def run(x, out):
            apply(x, out)

        run.compile((vt, vt))
        return run

    return make(tanh_before), make(VecMath.tanh)


def tanh_ab(runs: int) -> tuple[list, dict]:
    rng = np.random.default_rng(0)
    x = (rng.standard_normal(1 << 16) * 2).astype(np.float32)
    ref = np.tanh(x.astype(np.float64))
    rows, payload = [], {}
    for lanes in (16, 8):
        before, after = _tanh_kernels(lanes)
        ya, yb = np.empty_like(x), np.empty_like(x)
        before(x, yb)
        after(x, ya)
        errs = [float(np.max(np.abs(y - ref) / np.maximum(np.abs(ref) * 2.0 ** -23, 2.0 ** -149))) for y in (yb, ya)]
        st = measure({"before": lambda: before(x, yb), "after": lambda: after(x, ya)}, runs=runs, warmup=5)
        b, a = st["before"]["min_ms"], st["after"]["min_ms"]
        rows.append([f"vtanh{lanes} x 65536", fmt(b), fmt(a), fmt(b / a, 2),
                     fmt(b * 1e6 / x.size, 2), fmt(a * 1e6 / x.size, 2), f"{errs[0]:.2f} / {errs[1]:.2f}"])
        payload[f"vtanh{lanes}"] = {"stats": st, "max_err_2^-23_rel": errs}
    return rows, payload


def _model(act: str, a_shape: tuple, b_shape: tuple, op: str = "Add", b_const: np.ndarray | None = None):
    return chain_model(op, (act,), a_shape, b_shape, b_const)


def cases(rng) -> dict:
    """name -> (model, feeds)."""
    def f(*shape):
        return rng.standard_normal(shape).astype(np.float32)

    out = {}
    for t, d in ((256, 256), (64, 96), (40, 512)):  # additive attention: T queries x S keys, or rows x hidden
        out[f"attn_{t}x{d}_tanh"] = (_model("Tanh", (1, t, d), (1, 1, d)), {"a": f(1, t, d), "b": f(1, 1, d)})
    out["attn_outer_64x64x32_tanh"] = (_model("Tanh", (1, 64, 1, 32), (1, 1, 64, 32)),
                                       {"a": f(1, 64, 1, 32), "b": f(1, 1, 64, 32)})
    out["gate_1x768_sigmoid"] = (_model("Sigmoid", (1, 768), (768,), b_const=f(768)), {"a": f(1, 768)})
    out["se_64x56x56_hardswish"] = (_model("HardSwish", (1, 64, 56, 56), (1, 64, 1, 1), op="Mul",
                                           b_const=f(1, 64, 1, 1)), {"a": f(1, 64, 56, 56)})
    out["row_32x3136_relu"] = (_model("Relu", (32, 3136), (32, 1), op="Sub"), {"a": f(32, 3136), "b": f(32, 1)})
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--cases", default="", help="comma-separated case names (default: all)")
    ap.add_argument("--runs", type=int, default=50, help="timed runs per arm")
    args = ap.parse_args()
    trows, payload = tanh_ab(args.runs)
    theaders = ["kernel", "before ms", "after ms", "speed-up", "before ns/elem", "after ns/elem",
                "max err before / after (2^-23 |ref|)"]
    print_table(theaders, trows, title="vtanh alone: before vs after (best of the runs, 1 thread)")
    rng = np.random.default_rng(0)
    table = cases(rng)
    rows = []
    for name in (n for n in table if not args.cases or n in args.cases.split(",")):
        model, feeds = table[name]
        fused = cnnjit.compile(model, threads=1)
        unfused = cnnjit.compile(model, threads=1, disable=["fuse_broadcast_map"])
        calls = [c.variant for c in fused._default_spec().program.calls]
        sess = ort_session(model)
        want = sess.run(None, feeds)[0]
        err = max(float(np.abs(m.run(None, feeds)[0] - want).max()) for m in (fused, unfused))
        st = measure({"fused": lambda: fused.run(None, feeds), "unfused": lambda: unfused.run(None, feeds),
                      "onnxruntime": lambda: sess.run(None, feeds)}, runs=args.runs, warmup=5)
        fu, un, o = (st[k]["min_ms"] for k in ("fused", "unfused", "onnxruntime"))
        fm, um = st["fused"]["median_ms"], st["unfused"]["median_ms"]
        rows.append([name, "+".join(calls), fmt(un), fmt(fu), fmt(o), fmt(un / fu, 2), fmt(fu / o, 2),
                     fmt(um / fm, 2), f"{err:.1e}"])
        payload[name] = {"stats": st, "variants": calls, "max_abs_err": err}
    headers = ["case", "fused variant", "unfused ms", "fused ms", "ORT ms", "speed-up", "fused/ORT",
               "speed-up (medians)", "max abs err"]
    print_table(headers, rows, title="BroadcastMap: fused vs unfused vs onnxruntime (best of the runs, 1 thread)")
    write_json("broadcast_map", payload)
    write_markdown("broadcast_map", headers, rows, title="Broadcast binary op + activation chains (BroadcastMap)")
    write_markdown("broadcast_map_tanh", theaders, trows, title="vtanh before / after")


if __name__ == "__main__":
    main()
