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
from typing import TYPE_CHECKING, Any

import numpy as np

from ..errors import ShapeError
from ..types import TensorType

if TYPE_CHECKING:
    from ..graph import Value

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
# Conv, Gemm and MatMul carry an optional ``post`` attribute, put there by the fusion passes: a tuple of
# ``EpilogueStep``s applied to the result before it is stored.
#: the epilogue steps that combine the result with a tensor of its type (``y + r``, ``y * r``, and ``PRelu``
#: with its slope expanded to the output's shape)
RESIDUAL_OPS = ("Add", "Mul", "PRelu")


@dataclass(frozen=True, eq=False)
class EpilogueStep:
    """One fused epilogue step: an elementwise activation ``op`` with its (complete) attributes, or a
    residual step (``op`` in ``RESIDUAL_OPS``: ``Add`` / ``Mul``) combining the result with ``value``, a
    tensor of the output's type. A residual ``value`` is also one of the node's inputs (memory planning and
    liveness see it there): the node's last inputs, one per residual step in step order
    (``residual_positions``)."""

    op: str
    attrs: tuple[tuple[str, Any], ...] = ()
    value: Value | None = None

    @property
    def residual(self) -> bool:
        return self.op in RESIDUAL_OPS

    def __str__(self) -> str:
        if self.residual:
            return f"{self.op}({self.value.ref() if self.value is not None else '?'})"
        return self.op + ("(" + ",".join(f"{k}={v}" for k, v in self.attrs) + ")" if self.attrs else "")


def residual_positions(inputs: Sequence[Any], post: Sequence[EpilogueStep]) -> list[int]:
    """The input index of each residual step's tensor: the last non-None inputs, in step order."""
    n = sum(1 for s in post if s.residual)
    present = [i for i, v in enumerate(inputs) if v is not None]
    return present[len(present) - n:] if n else []


def bind_residuals(post: Sequence[EpilogueStep], inputs: Sequence[Any]) -> tuple[EpilogueStep, ...]:
    """``post`` with each residual step's value taken from ``inputs`` at its ``residual_positions`` (a copy
    of a node with new inputs, e.g. a part of a layer split over threads)."""
    ks = iter(residual_positions(inputs, post))
    return tuple(EpilogueStep(s.op, s.attrs, inputs[next(ks)]) if s.residual else s for s in post)


def retarget_residuals(node: Any, old: Value, new: Value) -> None:
    """Make the node's epilogue steps that add ``old`` add ``new`` (after a pass rewired the input)."""
    post = node.attrs.get("post", ())
    if any(s.value is old for s in post):
        node.attrs["post"] = tuple(EpilogueStep(s.op, s.attrs, new) if s.value is old else s for s in post)


def post_infer(base: Callable, nbase: int) -> Callable:
    def infer(types: list[TensorType | None], attrs: dict[str, Any]) -> list[TensorType]:
        out = base(types[:nbase], attrs)
        post = attrs.get("post", ())
        ks = iter(residual_positions(types, post))
        for step in post:
            if not isinstance(step, EpilogueStep):
                raise ShapeError(f"epilogue step {step!r} is not an EpilogueStep")
            if step.residual:
                k = next(ks, None)
                t = types[k] if k is not None and k >= nbase else None
                if t is None or t.shape != out[0].shape or t.dtype != out[0].dtype:
                    raise ShapeError(f"epilogue {step.op}: input {k} ({t}) must have the output's type {out[0]}")
                if step.value is not None and step.value.type is not t:
                    raise ShapeError(f"epilogue {step.op}: its residual {step.value.ref()} is not input {k}")
            elif get_op(step.op) is None or not get_op(step.op).elementwise:
                raise ShapeError(f"epilogue step {step.op!r} is not an elementwise op")
        return out

    return infer


def post_ref(base: Callable, nbase: int) -> Callable:
    def ref(ins: list[np.ndarray | None], attrs: dict[str, Any]) -> Any:
        out = base(ins[:nbase] + [None] * (nbase - len(ins[:nbase])), attrs)
        y = out[0] if isinstance(out, list) else out  # an op of several outputs: the steps apply to the first
        post = attrs.get("post", ())
        ks = iter(residual_positions(ins, post))
        for step in post:
            if step.residual:
                r = ins[next(ks)]
                y = get_op(step.op).run([y, r], {})[0].astype(y.dtype)
            else:
                y = get_op(step.op).run([y], dict(step.attrs))[0]
        return [y, *out[1:]] if isinstance(out, list) else y

    return ref


