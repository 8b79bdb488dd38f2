"""Which onnx-node conformance cases the suite runs, and which of those are not expected to pass yet.

THE one place to edit when an op or case starts (or stops) being supported:

* ``OPS_UNDER_TEST`` — the ops whose cases ``test_onnx_node.py`` collects. Cases of other ops are not
  collected at all (they belong to a later issue). To widen the suite, change that one line, e.g.
  ``OPS_UNDER_TEST = FOUNDATION_OPS | {"Pad", "Resize"}`` or ``OPS_UNDER_TEST = ALL_OPS``.
* ``NOT_YET`` — collected cases expected to fail for now, with the reason. They run as
  ``xfail(strict=True)``: a case that starts passing fails the suite until it is removed from here.
* ``MODEL_NOT_YET`` — the same for the model suites in ``test_models.py`` (keyed by test id).
"""

from __future__ import annotations

import csv
from pathlib import Path
from typing import NamedTuple

#: ops of the foundation issue
FOUNDATION_OPS: frozenset[str] = frozenset({
    "Conv", "BatchNormalization", "Relu", "LeakyRelu", "Clip", "Sigmoid", "HardSigmoid", "HardSwish",
    "Tanh", "Add", "Sub", "Mul", "Div", "Sum", "Concat", "MaxPool", "AveragePool", "GlobalAveragePool",
    "GlobalMaxPool", "Gemm", "MatMul", "Flatten", "Reshape", "Transpose", "Squeeze", "Unsqueeze",
    "Softmax", "Identity", "Dropout", "Constant", "ConstantOfShape", "Shape", "Gather", "LRN",
    "DequantizeLinear",
})

#: ops of the resampling / region family (Pad, Slice, Split, DepthToSpace, SpaceToDepth, Resize, ...)
CONFORMANCE_RESAMPLE: frozenset[str] = frozenset({
    "Pad", "Slice", "Split", "DepthToSpace", "SpaceToDepth", "Resize", "Upsample", "Expand", "Tile",
})

#: ops of the quantisation / extra-NN family
CONFORMANCE_QUANT_NN: frozenset[str] = frozenset({
    "ConvTranspose", "InstanceNormalization", "ReduceMean", "QuantizeLinear", "QLinearConv", "QLinearMatMul",
    "ConvInteger", "MatMulInteger",
})

#: sentinel meaning "every op listed in CASES-BY-OP.csv"
ALL_OPS = None

#: the ops whose cases are collected — widen here (one line)
OPS_UNDER_TEST: frozenset[str] | None = ALL_OPS

#: collected onnx-node cases not expected to pass yet: case name -> reason
NOT_YET: dict[str, str] = {
    # "test_example_case": "why it cannot pass yet",
    "test_resize_downsample_scales_linear_align_corners": (
        "expected data uses the fractional output_width (scale * length_original = 2.4) in align_corners; "
        "the spec's formula divides by (length_resized - 1) with length_resized the resized tensor's "
        "length (2): x_original = 1 * 3 / 1 = 3 gives 4.0 (as onnxruntime), not 3.142857"),
    "test_resize_downsample_scales_cubic_align_corners": (
        "expected data uses the fractional output_width (scale * length_original = 3.2) in align_corners; "
        "the spec's x_original = x_resized * (length_original - 1) / (length_resized - 1) with "
        "length_resized = 3 gives [1, 2.5, 4, ...] (as onnxruntime), not [1, 2.395, 3.790, ...]"),
}

#: model-suite cases not expected to pass yet, by test id of test_models.py ("light_vgg19",
#: "pytorch_test_Conv2d", "mlperf_vww_96_float.tf2onnx", ...): id -> reason
MODEL_NOT_YET: dict[str, str] = {}


class NodeCase(NamedTuple):
    op: str
    case: str
    opset: int
    expanded: bool
    types: tuple[str, ...]


def read_cases(csv_path: str | Path) -> list[NodeCase]:
    """Every case listed in ``CASES-BY-OP.csv`` (columns op, case, opset, expanded, types)."""
    with open(csv_path, newline="") as f:
        return [
            NodeCase(r["op"], r["case"], int(r["opset"]), r["expanded"].strip() == "1",
                     tuple(r["types"].split()))
            for r in csv.DictReader(f)
        ]


def cases_under_test(csv_path: str | Path, ops: frozenset[str] | None = OPS_UNDER_TEST) -> list[NodeCase]:
    """The cases whose op is in ``ops`` (all cases if ``ops`` is ``ALL_OPS``), sorted by case name."""
    cases = read_cases(csv_path)
    if ops is not None:
        cases = [c for c in cases if c.op in ops]
    return sorted(cases, key=lambda c: c.case)


#: onnx backend runner (test_backend.py) cases not expected to pass yet: regex on the test name -> reason.
#: The runner covers every op in shared/onnx-node and the wheel's simple / pytorch-* data, not only the
#: ops collected by test_onnx_node.py.
BACKEND_NOT_YET: dict[str, str] = {
    r"^test_(sequence_model\d|strnorm_model_\w+)_cpu$": "sequence and string ops are not CNN ops",
    r"^test_gradient_of_add(_and_mul)?_cpu$": "Gradient is a training op; cnnjit compiles inference graphs",
    r"^test_resize_downsample_scales_(linear|cubic)_align_corners_cpu$": (
        "expected data uses the fractional output_width in align_corners; cnnjit follows the spec's "
        "(length_resized - 1) with the integer resized length, as onnxruntime (see NOT_YET)"),
}
#: the BACKEND_NOT_YET patterns of shared/onnx-node cases, which the runner collects only where that folder
#: exists (a bare clone runs the wheel's data alone)
BACKEND_NOT_YET_SHARED = {r"^test_resize_downsample_scales_(linear|cubic)_align_corners_cpu$"}
