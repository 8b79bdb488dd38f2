"""``cnnjit.backend``: the ``onnx.backend.base.Backend`` interface, so onnx's own test runner drives cnnjit.

    import onnx.backend.test
    import cnnjit.backend
    backend_test = onnx.backend.test.BackendTest(cnnjit.backend, __name__)

``prepare(model)`` compiles; ``rep.run(inputs)`` takes a list (graph-input order) or a dict and returns the
outputs as a named tuple, as every onnx backend does.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import onnx
from onnx.backend.base import Backend, BackendRep, Device, DeviceType, namedtupledict

from .api import compile as _compile
from .errors import InputError
from .runtime import CompiledModel

#: keyword arguments of ``prepare`` that belong to the test runner, not to the compiler
_RUNNER_KWARGS = {"rtol", "atol"}


class CnnjitRep(BackendRep):
    """A prepared (compiled) model."""

    def __init__(self, model: CompiledModel):
        self.model = model

    def run(self, inputs: Any, **kwargs: Any) -> tuple[np.ndarray, ...]:
        """Run on a list of arrays (graph-input order), a dict by name, or a single array."""
        names = self.model.input_names
        if isinstance(inputs, Mapping):
            feeds = dict(inputs)
        else:
            if isinstance(inputs, np.ndarray) or not isinstance(inputs, Sequence):
                inputs = [inputs]
            if len(inputs) != len(names):
                raise InputError(f"the model takes {len(names)} input(s) {names}, got {len(inputs)}")
            feeds = dict(zip(names, inputs))
        outs = self.model.run(None, feeds)
        return namedtupledict("Outputs", _identifiers(self.model.output_names))(*outs)


def _identifiers(names: Sequence[str]) -> list[str]:
    """Output names usable as namedtuple fields (onnx's backends do the same)."""
    out = []
    for i, n in enumerate(names):
        ident = "".join(c if c.isalnum() or c == "_" else "_" for c in n) or f"output_{i}"
        if ident[0].isdigit() or ident in out or ident.startswith("_"):
            ident = f"output_{i}"
        out.append(ident)
    return out


class CnnjitBackend(Backend):
    """onnx backend over ``cnnjit.compile`` (CPU only)."""

    @classmethod
    def prepare(cls, model: onnx.ModelProto, device: str = "CPU", **kwargs: Any) -> CnnjitRep:
        if not cls.supports_device(device):
            raise ValueError(f"cnnjit runs on the CPU only, not on {device!r}")
        options = {k: v for k, v in kwargs.items() if k not in _RUNNER_KWARGS}
        return CnnjitRep(_compile(model, **options))

    @classmethod
    def run_model(cls, model: onnx.ModelProto, inputs: Any, device: str = "CPU", **kwargs: Any):
        return cls.prepare(model, device, **kwargs).run(inputs)

    @classmethod
    def supports_device(cls, device: str) -> bool:
        return Device(device).type == DeviceType.CPU


prepare = CnnjitBackend.prepare
run_model = CnnjitBackend.run_model
supports_device = CnnjitBackend.supports_device
