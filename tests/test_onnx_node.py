"""ONNX operator conformance: the onnx project's node test cases (shared/onnx-node), compiled by cnnjit.

Which ops are collected and which cases are expected to fail is decided in ``onnx_node_expectations.py``.
The oracle is each case's own expected output (``output_*.pb``), compared as onnx's backend runner does:
same shape and dtype, ``assert_allclose(rtol=1e-3, atol=1e-7)``. Each case's model.onnx is compiled
unmodified and run on all its inputs, including those that only decide shapes or attributes (a Reshape
target, Squeeze axes given as graph inputs): cnnjit specialises on their values (Clip bounds given as inputs
run as Max / Min).
"""

from __future__ import annotations

import onnx
import pytest
from conftest import (
    ONNX_NODE_DIR,
    assert_outputs_match,
    graph_input_names,
    load_case,
    missing_reason,
)
from onnx_node_expectations import (
    NOT_YET,
    NodeCase,
    cases_under_test,
    read_cases,
)

import cnnjit

RTOL, ATOL = 1e-3, 1e-7
#: per-case tolerance overrides (approximate ops), case -> (rtol, atol)
TOLERANCE: dict[str, tuple[float, float]] = {}

CSV_PATH = ONNX_NODE_DIR / "CASES-BY-OP.csv"
CASES: list[NodeCase] = cases_under_test(CSV_PATH) if CSV_PATH.is_file() else []


def _params():
    if not CASES:
        return [pytest.param(None, id="onnx-node-missing",
                             marks=pytest.mark.skip(reason=missing_reason(CSV_PATH, "onnx-node cases")))]
    params = []
    for c in CASES:
        marks = []
        if c.case in NOT_YET:
            marks.append(pytest.mark.xfail(strict=True, reason=NOT_YET[c.case]))
        params.append(pytest.param(c, id=c.case, marks=marks))
    return params


@pytest.mark.parametrize("case", _params())
def test_onnx_node(case: NodeCase) -> None:
    model_path, inputs, expected = load_case(ONNX_NODE_DIR / case.case)
    proto = onnx.load(str(model_path))
    names = graph_input_names(proto)
    assert len(names) == len(inputs), f"{case.case}: {len(inputs)} input files for inputs {names}"
    feeds = dict(zip(names, inputs, strict=True))

    compiled = cnnjit.compile(model_path)
    outs = compiled.run(None, feeds)
    rtol, atol = TOLERANCE.get(case.case, (RTOL, ATOL))
    assert_outputs_match(list(outs), expected, rtol, atol, what=case.case)


def test_expectations_name_real_cases() -> None:
    """Every NOT_YET entry names a case that exists (catches typos and stale entries)."""
    if not CSV_PATH.is_file():
        pytest.skip(missing_reason(CSV_PATH, "onnx-node cases"))
    known = {c.case for c in read_cases(CSV_PATH)}
    unknown = sorted(set(NOT_YET) - known)
    assert not unknown, f"NOT_YET lists cases that do not exist in {CSV_PATH}: {unknown}"
    for name in NOT_YET:
        assert (ONNX_NODE_DIR / name / "model.onnx").is_file(), f"{name}: model.onnx missing"
