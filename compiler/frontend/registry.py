"""The frontend's leaf: what an op importer sees (``ImportContext``) and the table of importers.

``onnx_ops.py`` and the ``import_*.py`` families register their importers into ``IMPORTERS`` (and the
operands they need as constants into ``CONST_OPERANDS``) when imported; ``onnx_import.py`` imports them all
and walks the model. This module imports none of them, so none of them imports another in a cycle.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np

from cnnjit.ir import Graph, Node, TensorType, Value, get_op
from cnnjit.ir.errors import CnnjitError, ModelError, ResourceLimitError, ShapeError

from . import onnx_proto as onnx


class Unsupported(Exception):
    """Raised by an importer for an op variant cnnjit does not implement (the reason is the message)."""


class ImportContext:
    """What an op importer sees: the node being imported, its opset, and an IR builder."""

    def __init__(self, graph: Graph, opset: int, max_tensor_bytes: int):
        self.graph = graph
        self.opset = opset
        self.max_tensor_bytes = max_tensor_bytes
        self.node: onnx.NodeProto | None = None

    # -- attributes -----------------------------------------------------------------------------------
    def attrs(self) -> dict[str, Any]:
        """The current node's attributes as Python values (tensors as numpy arrays, strings decoded)."""
        out: dict[str, Any] = {}
        for a in self.node.attribute:
            try:
                v = onnx.get_attribute_value(a)
            except Exception as e:  # noqa: BLE001
                raise ModelError(f"{self.where()}: cannot read attribute {a.name!r}: {e}") from None
            if isinstance(v, onnx.TensorProto):
                v = onnx.to_array(v)
            elif isinstance(v, bytes):
                v = v.decode("utf-8", errors="replace")
            elif isinstance(v, list) and v and isinstance(v[0], bytes):
                v = [s.decode("utf-8", errors="replace") for s in v]
            out[a.name] = v
        return out

    def where(self) -> str:
        n = self.node
        return f"node {n.name!r} ({n.op_type}, opset {self.opset})" if n is not None else "graph"

    # -- building -------------------------------------------------------------------------------------
    def const(self, array: np.ndarray, name: str = "") -> Value:
        arr = np.asarray(array, order="C")
        return Value(TensorType(arr.dtype, arr.shape), name, const=arr)

    def emit(self, op: str, inputs: Sequence[Value | None], attrs: Mapping[str, Any] | None = None,
             name: str | None = None) -> list[Value]:
        """Append IR op ``op`` (or fold it to constants when every input is constant)."""
        opdef = get_op(op)
        if opdef is None:  # an importer bug, not a model problem
            raise ShapeError(f"{self.where()}: internal: IR op {op!r} is not registered")
        inputs = list(inputs)
        while inputs and inputs[-1] is None:
            inputs.pop()
        a = opdef.check_attrs(dict(attrs or {}), f"{self.where()}: ")
        try:
            types = opdef.infer_types(inputs, a)
        except ShapeError as e:
            raise ShapeError(f"{self.where()}: {e}") from None
        for t in types:
            if t.nbytes > self.max_tensor_bytes or any(d < 0 for d in t.shape):
                raise ResourceLimitError(
                    f"{self.where()}: an output of shape {list(t.shape)} ({t.nbytes / 2**30:.1f} GiB) exceeds "
                    f"the per-tensor limit of {self.max_tensor_bytes / 2**30:.1f} GiB (max_tensor_bytes=)"
                )
        if all(v is None or v.is_const for v in inputs):
            try:
                arrays = opdef.run([None if v is None else v.const for v in inputs], a)
            except CnnjitError as e:
                raise ShapeError(f"{self.where()}: {e}") from None
            return [self.const(np.asarray(arr, t.dtype).reshape(t.shape)) for arr, t in zip(arrays, types)]
        outs = [Value(t, "") for t in types]
        self.graph.add_node(Node(op, inputs, outs, a, name if name is not None else self.node.name))
        return outs

    def const_input(self, v: Value | None, what: str) -> np.ndarray | None:
        """The constant data behind input ``v``; ``Unsupported`` if it is only known at run time."""
        if v is None:
            return None
        if not v.is_const:
            raise Unsupported(f"{what} must be a compile-time constant (it is computed at run time here)")
        return v.const


Importer = Callable[[ImportContext, list], list]
IMPORTERS: dict[str, Importer] = {}

#: importer key -> a check of the node alone (attributes, input count) that returns why cnnjit cannot import
#: this variant of the op ("" if it can), so ``check_supported`` lists such nodes with the unknown ops
VARIANT_CHECKS: dict[str, Callable[[onnx.NodeProto], str]] = {}

#: operands (by input index) that must be known at compile time: shapes, axes, bounds. A graph input that
#: feeds one of them is specialised on its *value* (see ``onnx_import.value_inputs``).
CONST_OPERANDS: dict[str, frozenset[int]] = {
    "Dropout": frozenset({1, 2}),
    "ConstantOfShape": frozenset({0}),
    "Reshape": frozenset({1}),
    "Squeeze": frozenset({1}),
    "Unsqueeze": frozenset({1}),
}


def importer_key(domain: str, op_type: str) -> str:
    """The ``IMPORTERS`` key of an op: its type in the default domain, ``"domain:op"`` in any other
    (``"com.microsoft:QLinearAdd"``), so an op of another domain never runs the default one's importer."""
    return op_type if domain in ("", "ai.onnx") else f"{domain}:{op_type}"


def importer(*names: str) -> Callable[[Importer], Importer]:
    """Register the decorated function as the importer of the ONNX ops ``names`` (``importer_key`` form)."""

    def deco(fn: Importer) -> Importer:
        for n in names:
            IMPORTERS[n] = fn
        return fn

    return deco
