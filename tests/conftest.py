"""Shared fixtures and helpers for cnnjit's test suite.

Test data that the project did not write lives in the shared folder next to the repository
(``<repo>/../shared``; override with the environment variable ``CNNJIT_SHARED``). Tests that need it skip
with a clear reason when it is absent.

Hypothesis profiles: ``ci`` (default: few, derandomized examples, no deadline) and ``dev`` (many more
examples); pick one with ``HYPOTHESIS_PROFILE=dev``.
"""

from __future__ import annotations

import os
import re
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import onnx
import pytest
from cost_log import pytest_runtest_protocol  # noqa: F401 - CNNJIT_TEST_COST_LOG: per-test CPU and compiles
from hypothesis import HealthCheck, settings
from onnx import numpy_helper
from scheduling import pytest_collection_modifyitems  # noqa: F401 - the test order for xdist (see there)

# -- hypothesis -------------------------------------------------------------------------------------------
settings.register_profile(
    "ci", deadline=None, max_examples=25, derandomize=True, suppress_health_check=[HealthCheck.too_slow]
)
settings.register_profile(
    "dev", deadline=None, max_examples=500, suppress_health_check=[HealthCheck.too_slow]
)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))

# -- threads ---------------------------------------------------------------------------------------------
# cnnjit.compile's default uses every usable core; the suite compiles with one thread unless a test asks
# (tests/test_threads.py covers the default and threads > 1): the same schedules and kernels as before,
# and no team of threads per test process on a machine the test processes already share.
os.environ.setdefault("CNNJIT_NUM_THREADS", "1")

# -- where the data is ------------------------------------------------------------------------------------
REPO_DIR = Path(__file__).resolve().parents[1]
SHARED_DIR = Path(os.environ.get("CNNJIT_SHARED") or REPO_DIR.parent / "shared").resolve()
ONNX_NODE_DIR = SHARED_DIR / "onnx-node"
MLPERF_TINY_DIR = SHARED_DIR / "models" / "mlperf-tiny"
#: the onnx wheel's own backend test data (model zoo "light" models, pytorch-converted cases)
ONNX_TEST_DATA_DIR = Path(onnx.__file__).resolve().parent / "backend" / "test" / "data"


def missing_reason(path: Path, what: str = "shared test data") -> str:
    return (f"{what} not found at {path} (set CNNJIT_SHARED to the shared folder, "
            f"default <repo>/../shared)")


def require_dir(path: Path, what: str = "shared test data") -> Path:
    """Return ``path``, or skip the calling test when it is not a directory."""
    if not path.is_dir():
        pytest.skip(missing_reason(path, what))
    return path


@pytest.fixture(scope="session")
def shared_dir() -> Path:
    return require_dir(SHARED_DIR)


@pytest.fixture(scope="session")
def onnx_node_dir() -> Path:
    return require_dir(ONNX_NODE_DIR, "onnx-node conformance cases")


@pytest.fixture(scope="session")
def mlperf_tiny_dir() -> Path:
    return require_dir(MLPERF_TINY_DIR, "MLPerf Tiny models")


# -- loading test cases -----------------------------------------------------------------------------------
def _index(path: Path) -> int:
    m = re.search(r"_(\d+)\.pb$", path.name)
    if m is None:
        raise ValueError(f"unexpected test data file name {path}")
    return int(m.group(1))


def load_tensor(path: str | os.PathLike) -> np.ndarray:
    return numpy_helper.to_array(onnx.load_tensor(str(path)))


def load_case(
    case_dir: str | os.PathLike, data_set: int = 0
) -> tuple[Path, list[np.ndarray], list[np.ndarray]]:
    """``(model_path, inputs, expected_outputs)`` of an onnx backend-test style case directory.

    Inputs and outputs come from ``test_data_set_<n>/input_*.pb`` / ``output_*.pb``, ordered by their
    numeric index (``input_10`` after ``input_9``).
    """
    case_dir = Path(case_dir)
    if not case_dir.is_dir():
        pytest.skip(missing_reason(case_dir, "test case"))
    model_path = case_dir / "model.onnx"
    data_dir = case_dir / f"test_data_set_{data_set}"
    inputs = [load_tensor(p) for p in sorted(data_dir.glob("input_*.pb"), key=_index)]
    outputs = [load_tensor(p) for p in sorted(data_dir.glob("output_*.pb"), key=_index)]
    return model_path, inputs, outputs


def split_for_cpus(mp: pytest.MonkeyPatch, n: int = 4) -> None:
    """Compiles under ``mp`` split layers for up to ``n`` threads whatever CPUs this machine has (a compile
    splits for at most the usable CPUs, ``cnnjit.runtime.cpus.split_threads``): for a test of how a layer
    splits for 3 or 4 threads. The team still runs the parts on the CPUs there are."""
    from cnnjit.runtime import cpus

    mp.setattr(cpus, "usable_cpus", lambda: n)


def avx2_registers(mp: pytest.MonkeyPatch) -> None:
    """Compiles under ``mp`` see AVX2's register file whatever the host: 16 vector registers of up to 8 lanes,
    a wider vector taking several (``simd.host_vector_registers`` on an AVX2 host). For a test whose case is
    sized for AVX2's register tiles (tile heights, accumulator chains, a variant's least channel count): on an
    AVX-512 host the 32 registers change those choices, and the test would check another case than it says."""
    from cnnjit.compiler import stages

    mp.setattr(stages, "host_vector_registers", lambda width=None: max(1, 16 * 8 // max(width or 8, 8)))


def graph_input_names(model: onnx.ModelProto) -> list[str]:
    """The model's real inputs: graph inputs that are not initializers, in declaration order."""
    inits = {t.name for t in model.graph.initializer}
    return [vi.name for vi in model.graph.input if vi.name not in inits]


# -- running and comparing --------------------------------------------------------------------------------
def ort_session(model: onnx.ModelProto | str | os.PathLike | bytes):
    """A single-threaded onnxruntime CPU session (the independent oracle)."""
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.intra_op_num_threads = 1
    so.inter_op_num_threads = 1
    so.log_severity_level = 3
    if isinstance(model, onnx.ModelProto):
        model = model.SerializeToString()
    elif isinstance(model, os.PathLike):
        model = str(model)
    return ort.InferenceSession(model, so, providers=["CPUExecutionProvider"])


def ops_of(model) -> list[str]:
    """The ops of a compiled model's IR after the passes, in schedule order (``model.ir.nodes``)."""
    return [n.op for n in model.ir.nodes]


def as_output_list(y) -> list[np.ndarray]:
    """A model call's result as a list: one output is an array, several a list/tuple."""
    if isinstance(y, (list, tuple)):
        return list(y)
    return [y]


def assert_outputs_match(
    actual: Sequence[np.ndarray], expected: Sequence[np.ndarray], rtol: float, atol: float, what: str = ""
) -> None:
    """Same count; per output same type, shape and dtype, and values within tolerance (exact for ints)."""
    assert len(actual) == len(expected), f"{what}: {len(actual)} outputs, expected {len(expected)}"
    for i, (a, e) in enumerate(zip(actual, expected, strict=True)):
        where = f"{what} output {i}"
        assert isinstance(a, np.ndarray), f"{where}: got {type(a).__name__}, expected a numpy array"
        assert a.shape == e.shape, f"{where}: shape {a.shape}, expected {e.shape}"
        assert a.dtype == e.dtype, f"{where}: dtype {a.dtype}, expected {e.dtype}"
        if np.issubdtype(e.dtype, np.floating):
            np.testing.assert_allclose(a, e, rtol=rtol, atol=atol, err_msg=where)
        else:
            np.testing.assert_array_equal(a, e, err_msg=where)
