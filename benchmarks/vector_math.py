"""Vector transcendental epilogues and elementwise kernels vs their scalar forms, single-threaded.

    python benchmarks/vector_math.py [--runs 50] [--cases dw_hardswish,pw_silu,...]

Each case is compiled twice in this process and timed interleaved (``harness.measure``) with onnxruntime:

* ``vector``: the default (activations in registers: ``epilogue.vector_expr``; ``simd_unary``,
  ``simd_softmax``, ``simd_nary``);
* ``scalar``: the fallback these replace: the epilogue without vector forms beyond Relu / Clip (a scalar loop
  over the stored tile), the standalone ops on their scalar variants (``unary``, ``softmax``, ``nary``).

Prints a table (best-of-runs ms; the JSON has the medians too; GFLOP/s of the producer where it has
FLOPs; speed-up) and writes ``benchmarks/results/vector_math.{json,md}``.
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.harness import single_thread  # noqa: E402

single_thread()

import argparse  # noqa: E402
from contextlib import contextmanager  # noqa: E402
from unittest import mock  # noqa: E402

import numpy as np  # noqa: E402
from onnx import TensorProto, helper, numpy_helper  # noqa: E402

import cnnjit  # noqa: E402
from benchmarks.harness import fmt, measure, ort_session, print_table, write_json, write_markdown  # noqa: E402
from cnnjit.compiler.codegen.kernels import epilogue  # noqa: E402

_VECTOR_EXPR = epilogue.vector_expr


@contextmanager
def scalar_epilogue():
    """Compile with the epilogue's vector forms limited to Relu / Clip (the scalar-loop fallback)."""
    def old(op, a, w, x):
        return _VECTOR_EXPR(op, a, w, x) if op in ("Relu", "Clip") else None

    with mock.patch.object(epilogue, "vector_expr", old):
        yield


def _model(nodes, x_shape, inits, opset=20):
    g = helper.make_graph(nodes, "b", [helper.make_tensor_value_info("x", TensorProto.FLOAT, list(x_shape))],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
                          [numpy_helper.from_array(np.asarray(v), k) for k, v in inits.items()])
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", opset)], ir_version=9)


def _conv_act(c, m, hw, k, group, act, rng):
    w = (rng.standard_normal((m, c // group, k, k)) * 0.2).astype(np.float32)
    nodes = [helper.make_node("Conv", ["x", "w", "b"], ["p"], kernel_shape=[k, k], pads=[k // 2] * 4, group=group)]
    if act == "SiLU":  # as exporters write it
        nodes += [helper.make_node("Sigmoid", ["p"], ["s"]), helper.make_node("Mul", ["p", "s"], ["y"])]
    else:
        nodes.append(helper.make_node(act, ["p"], ["y"]))
    flops = 2 * m * hw * hw * (c // group) * k * k
    inits = {"w": w, "b": rng.standard_normal(m).astype(np.float32)}
    return _model(nodes, (1, c, hw, hw), inits), (1, c, hw, hw), flops


def cases(rng) -> dict:
    """name -> (model, input shape, producer FLOPs or 0, scalar-arm variants or None for the epilogue)."""
    out = {
        "dw3x3_hardswish": (*_conv_act(64, 64, 56, 3, 64, "HardSwish", rng), None),
        "pw16to32_silu_112": (*_conv_act(16, 32, 112, 1, 1, "SiLU", rng), None),
        "conv3x3_mish": (*_conv_act(32, 32, 52, 3, 1, "Mish", rng), None),
    }
    w = (rng.standard_normal((256, 256)) * 0.1).astype(np.float32)
    gelu = _model([helper.make_node("Gemm", ["x", "w"], ["p"]), helper.make_node("Gelu", ["p"], ["y"])], (64, 256),
                  {"w": w})
    out["gemm64x256x256_gelu"] = (gelu, (64, 256), 2 * 64 * 256 * 256, None)
    out["softmax_40x6625"] = (_model([helper.make_node("Softmax", ["x"], ["y"], axis=-1)], (1, 40, 6625), {}),
                              (1, 40, 6625), 0, {"Softmax": "softmax"})
    out["sigmoid_64x56x56"] = (_model([helper.make_node("Sigmoid", ["x"], ["y"])], (1, 64, 56, 56), {}),
                               (1, 64, 56, 56), 0, {"Sigmoid": "unary"})
    se = rng.standard_normal((1, 64, 1, 1)).astype(np.float32)
    out["se_scale_mul_64x56x56"] = (_model([helper.make_node("Mul", ["x", "s"], ["y"])], (1, 64, 56, 56), {"s": se}),
                                    (1, 64, 56, 56), 0, {"Mul": "nary"})
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--runs", type=int, default=50)
    ap.add_argument("--cases", default="")
    args = ap.parse_args()
    rng = np.random.default_rng(0)
    table = cases(rng)
    names = [n for n in table if not args.cases or n in args.cases.split(",")]
    rows, payload = [], {}
    for name in names:
        model, shape, flops, scalar_variants = table[name]
        x = rng.standard_normal(shape).astype(np.float32)
        vec = cnnjit.compile(model)
        if scalar_variants is None:
            with scalar_epilogue():
                sca = cnnjit.compile(model)
        else:
            sca = cnnjit.compile(model, variants=scalar_variants)
        sess = ort_session(model)
        want = sess.run(None, {"x": x})[0]
        err = max(float(np.abs(m(x) - want).max()) for m in (vec, sca)) / max(1e-30, float(np.abs(want).max()))
        stats = measure({"vector": lambda: vec(x), "scalar": lambda: sca(x),
                         "onnxruntime": lambda: sess.run(None, {"x": x})}, runs=args.runs, warmup=5)
        # the minimum: on a shared machine a median can hold another process's time slices
        v, s, o = (stats[k]["min_ms"] for k in ("vector", "scalar", "onnxruntime"))
        gf = [flops / ms / 1e6 if flops else None for ms in (s, v)]
        rows.append([name, fmt(s), fmt(v), fmt(o), fmt(s / v, 2), fmt(gf[0]), fmt(gf[1]), f"{err:.1e}"])
        payload[name] = {"stats": stats, "flops": flops, "rel_err": err}
    headers = ["case", "scalar ms", "vector ms", "ORT ms", "speed-up", "scalar GFLOP/s", "vector GFLOP/s", "rel err"]
    print_table(headers, rows, title="vector vs scalar epilogue / elementwise (best of the runs, 1 thread)")
    write_json("vector_math", payload)
    write_markdown("vector_math", headers, rows, title="Vector transcendental epilogues and elementwise kernels")


if __name__ == "__main__":
    main()
