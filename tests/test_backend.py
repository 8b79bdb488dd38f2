"""onnx's own backend test runner (``onnx.backend.test``) driving ``cnnjit.backend``.

Cases: every conformance case in ``../shared/onnx-node/`` and the onnx wheel's ``simple``,
``pytorch-converted`` and ``pytorch-operator`` test data. onnx's runner loads, feeds and compares (its
tolerances, its dtype and shape checks); cnnjit only provides ``prepare``/``run``. Cases expected to fail
are listed with their reasons in ``onnx_node_expectations.BACKEND_NOT_YET`` and run as expected failures,
so one that starts passing is reported as an unexpected success (a failure).
"""

from __future__ import annotations

import re
from collections import defaultdict

import onnx.backend.test.runner as runner_mod
import pytest
from conftest import ONNX_NODE_DIR
from onnx.backend.test.loader import load_model_tests
from onnx_node_expectations import BACKEND_NOT_YET, BACKEND_NOT_YET_SHARED

import cnnjit.backend


class _Runner(runner_mod.Runner):
    """onnx's Runner, fed with our case selection instead of the wheel's generated node tests."""

    def _add_test(self, category, test_name, test_func, report_item, devices=("CPU",), **kwargs):
        # CPU only: cnnjit targets CPUs, and onnx's runner would add a skipped CUDA twin of every case
        super()._add_test(category, test_name, test_func, report_item, devices=("CPU",), **kwargs)

    def __init__(self, backend, parent_module: str) -> None:  # noqa: D107
        # the same state onnx's Runner.__init__ sets up (it would also generate every node test of the
        # installed onnx, which is not the selection this project tests against)
        self.backend = backend
        self._parent_module = parent_module
        self._include_patterns: set[re.Pattern[str]] = set()
        self._exclude_patterns: set[re.Pattern[str]] = set()
        self._xfail_patterns: set[re.Pattern[str]] = set()
        self._test_kwargs: dict = {}
        self._test_items = defaultdict(dict)
        if ONNX_NODE_DIR.is_dir():
            for case in load_model_tests(data_dir=str(ONNX_NODE_DIR.parent), kind=ONNX_NODE_DIR.name):
                self._add_model_test(case, "Node")
        for kind, category in (("simple", "Simple"), ("pytorch-converted", "PyTorchConverted"),
                               ("pytorch-operator", "PyTorchOperator")):
            for case in load_model_tests(kind=kind):
                self._add_model_test(case, category)


backend_test = _Runner(cnnjit.backend, __name__)
for pattern in BACKEND_NOT_YET:
    backend_test.xfail(pattern)

globals().update(backend_test.enable_report().test_cases)


def test_backend_expectations_name_real_cases() -> None:
    """Every BACKEND_NOT_YET pattern matches at least one collected case (no stale entries); the patterns of
    shared/onnx-node cases where that folder exists."""
    names = [name for items in backend_test._test_items.values() for name in items]
    assert names, "no backend cases collected"
    expected = [p for p in BACKEND_NOT_YET if ONNX_NODE_DIR.is_dir() or p not in BACKEND_NOT_YET_SHARED]
    assert BACKEND_NOT_YET_SHARED <= set(BACKEND_NOT_YET)
    stale = [p for p in expected if not any(re.search(p, n) for n in names)]
    assert not stale, f"BACKEND_NOT_YET patterns that match no case: {stale}"


@pytest.mark.parametrize("device", ["CPU", "CUDA"])
def test_supports_device(device: str) -> None:
    assert cnnjit.backend.supports_device(device) is (device == "CPU")
