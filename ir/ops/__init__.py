"""The op registry: each IR op defined once — attribute schema, type inference, numpy reference.

IR ops follow the latest ONNX semantics of the op of the same name, with two canonicalisations done by
the frontend: every operand that must be known at compile time (shapes, axes, pads, clip bounds, ...) is
an attribute, and every attribute is explicit (no ``auto_pad``, no defaults left to guess).

The numpy references are the oracle for passes and kernels (the IR interpreter runs them); they are
written for clarity, independently of the generated kernels.

This module is the registry and the helpers the op families share; it imports no family, so the families
(``elementwise.py``, ``nn.py``, ...) import it without a cycle. ``cnnjit.ir`` imports every family, and
as the parent package it is always imported first, so the registry is complete whenever it is used.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ..errors import ShapeError
from ..types import TensorType

REQUIRED = object()  # marks an attribute without a default


@dataclass
class OpDef:
    """Everything the compiler knows about one op, independent of how it is imported or code-generated."""

    name: str
    reference: Callable[..., Any]
    infer: Callable[[list[TensorType | None], dict[str, Any]], list[TensorType]]
    attrs: dict[str, Any] = field(default_factory=dict)
    inputs: tuple[int, int] = (1, 1)
    outputs: int = 1
    #: the output is the input's buffer reinterpreted (Reshape, Flatten, ...): no data moves
    view: bool = False
    #: elementwise ops that may be fused into a producer's epilogue
    elementwise: bool = False

    def check_attrs(self, attrs: dict[str, Any], where: str = "") -> dict[str, Any]:
        """Return ``attrs`` completed with defaults; raise ``ShapeError`` on unknown or missing ones."""
        unknown = set(attrs) - set(self.attrs)
        if unknown:
            raise ShapeError(f"{where}{self.name}: unknown attribute(s) {sorted(unknown)}")
        out = {}
        for k, default in self.attrs.items():
            if k in attrs:
                out[k] = attrs[k]
            elif default is REQUIRED:
                raise ShapeError(f"{where}{self.name}: attribute {k!r} is required")
            else:
                out[k] = default
        return out

    def infer_types(self, inputs: Sequence[Any], attrs: dict[str, Any]) -> list[TensorType]:
        """Output types for the given input values (or types)."""
        lo, hi = self.inputs
        n = len(inputs)
        if n < lo or n > hi:
            raise ShapeError(f"{self.name} takes {lo}..{hi} inputs, got {n}")
        types = [getattr(v, "type", v) for v in inputs]
        return self.infer(types, attrs)

    def run(self, inputs: Sequence[np.ndarray | None], attrs: dict[str, Any]) -> list[np.ndarray]:
        """Evaluate the numpy reference; always returns a list of arrays."""
        out = self.reference(list(inputs), attrs)
        if isinstance(out, np.ndarray) or np.isscalar(out):
            out = [out]
        return [np.asarray(o) for o in out]


_REGISTRY: dict[str, OpDef] = {}


def defop(
    name: str,
    *,
    infer: Callable[[list[TensorType | None], dict[str, Any]], list[TensorType]] | None = None,
    attrs: dict[str, Any] | None = None,
    inputs: tuple[int, int] = (1, 1),
    outputs: int = 1,
    view: bool = False,
    elementwise: bool = False,
) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Register the decorated numpy reference ``ref(inputs, attrs)`` as op ``name``.

    ``infer`` defaults to "same type as input 0".
    """

    def deco(ref: Callable[..., Any]) -> Callable[..., Any]:
        if name in _REGISTRY:
            raise ValueError(f"op {name!r} is defined twice")
        _REGISTRY[name] = OpDef(
            name=name,
            reference=ref,
            infer=infer or same_as_first,
            attrs=dict(attrs or {}),
            inputs=inputs,
            outputs=outputs,
            view=view,
            elementwise=elementwise,
        )
        return ref

    return deco


def get_op(name: str) -> OpDef | None:
    return _REGISTRY.get(name)


def all_ops() -> dict[str, OpDef]:
    return dict(_REGISTRY)


# -- shared inference helpers ---------------------------------------------------------------------------
def same_as_first(types: list[TensorType | None], attrs: dict[str, Any]) -> list[TensorType]:
    return [TensorType(types[0].dtype, types[0].shape)]


def broadcast_shapes(*shapes: tuple[int, ...]) -> tuple[int, ...]:
    """numpy/ONNX multidirectional broadcasting; ``ShapeError`` if the shapes do not broadcast."""
    try:
        return tuple(int(d) for d in np.broadcast_shapes(*shapes))
    except ValueError as e:
        raise ShapeError(f"shapes {list(shapes)} do not broadcast") from e


def broadcast_infer(types: list[TensorType | None], attrs: dict[str, Any]) -> list[TensorType]:
    present = [t for t in types if t is not None]
    dt = present[0].dtype
    for t in present[1:]:
        if t.dtype != dt:
            raise ShapeError(f"element types differ: {dt} vs {t.dtype}")
    return [TensorType(dt, broadcast_shapes(*(t.shape for t in present)))]


def normalize_axis(axis: int, rank: int, what: str = "axis") -> int:
    if not -rank <= axis < max(rank, 1):
        raise ShapeError(f"{what} {axis} is out of range for rank {rank}")
    return axis % rank if rank else 0


# -- epilogues ---------------------------------------------------------------------------------------------
# Conv, Gemm and MatMul carry an optional ``post`` attribute: steps applied to the result before it is
# stored, put there by the fusion passes. A step is ``(unary_op, ((attr, value), ...))`` for an
# elementwise activation, or ``("Add", k)`` to add input ``k`` (a tensor of the output's shape).
def post_infer(base: Callable, nbase: int) -> Callable:
    def infer(types: list[TensorType | None], attrs: dict[str, Any]) -> list[TensorType]:
        out = base(types[:nbase], attrs)
        for step in attrs.get("post", ()):
            if step[0] == "Add":
                k = step[1]
                t = types[k] if k < len(types) else None
                if t is None or t.shape != out[0].shape or t.dtype != out[0].dtype:
                    raise ShapeError(f"epilogue Add: input {k} ({t}) must have the output's type {out[0]}")
            elif get_op(step[0]) is None or not get_op(step[0]).elementwise:
                raise ShapeError(f"epilogue step {step[0]!r} is not an elementwise op")
        return out

    return infer


def post_ref(base: Callable, nbase: int) -> Callable:
    def ref(ins: list[np.ndarray | None], attrs: dict[str, Any]) -> np.ndarray:
        y = base(ins[:nbase] + [None] * (nbase - len(ins[:nbase])), attrs)
        for step in attrs.get("post", ()):
            if step[0] == "Add":
                y = (y + ins[step[1]]).astype(y.dtype)
            else:
                y = get_op(step[0]).run([y], dict(step[1]))[0]
        return y

    return ref

