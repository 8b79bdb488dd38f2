"""Elementwise ops: unary activations and math, and n-ary ops with numpy broadcasting."""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from ..errors import ShapeError
from ..types import DTYPES, TensorType
from . import broadcast_infer, broadcast_shapes, defop

_erf = np.frompyfunc(math.erf, 1, 1)


def _unary(name: str, fn, attrs: dict[str, Any] | None = None) -> None:
    defop(name, attrs=attrs, elementwise=True)(lambda ins, a: fn(ins[0], a).astype(ins[0].dtype, copy=False))


def _sigmoid(x: np.ndarray) -> np.ndarray:
    x64 = x.astype(np.float64)
    return 1.0 / (1.0 + np.exp(-x64))


def _clip(x: np.ndarray, a: dict[str, Any]) -> np.ndarray:
    y = x
    if a["min"] is not None:
        y = np.maximum(y, np.asarray(a["min"]).astype(x.dtype))
    if a["max"] is not None:
        y = np.minimum(y, np.asarray(a["max"]).astype(x.dtype))
    return y


_unary("Relu", lambda x, a: np.maximum(x, 0))
_unary("LeakyRelu", lambda x, a: np.where(x >= 0, x, x * np.asarray(a["alpha"], x.dtype)), {"alpha": 0.01})
_unary("Clip", _clip, {"min": None, "max": None})
_unary("Sigmoid", lambda x, a: _sigmoid(x))
_unary("HardSigmoid", lambda x, a: np.clip(a["alpha"] * x.astype(np.float64) + a["beta"], 0, 1),
       {"alpha": 0.2, "beta": 0.5})
_unary("HardSwish", lambda x, a: x * np.clip(x.astype(np.float64) / 6 + 0.5, 0, 1))
_unary("Tanh", lambda x, a: np.tanh(x))
_unary("Identity", lambda x, a: x.copy())
_unary("Exp", lambda x, a: np.exp(x))
_unary("Abs", lambda x, a: np.abs(x))
_unary("Neg", lambda x, a: np.negative(x))
_unary("Sqrt", lambda x, a: np.sqrt(x))
_unary("Erf", lambda x, a: _erf(x.astype(np.float64)).astype(np.float64))
_unary("Elu", lambda x, a: np.where(x >= 0, x, a["alpha"] * np.expm1(x.astype(np.float64))), {"alpha": 1.0})
_unary("Selu", lambda x, a: a["gamma"] * np.where(x > 0, x, a["alpha"] * np.expm1(x.astype(np.float64))),
       {"alpha": 1.67326319217681884765625, "gamma": 1.05070102214813232421875})
_unary("Softplus", lambda x, a: np.logaddexp(0, x.astype(np.float64)))
_unary("SiLU", lambda x, a: x * _sigmoid(x))  # internal: what the fusion passes make of x * Sigmoid(x)
# internal: what the fusion pass makes of Mul / Add / Sub / Div by a one-element constant after a producer
_unary("ScaleShift", lambda x, a: x * np.asarray(a["scale"], x.dtype) + np.asarray(a["shift"], x.dtype),
       {"scale": 1.0, "shift": 0.0})
_unary("Sign", lambda x, a: np.sign(x))
_unary("Shrink", lambda x, a: np.where(x < -a["lambd"], x + a["bias"],
                                       np.where(x > a["lambd"], x - a["bias"], 0)), {"lambd": 0.5, "bias": 0.0})
_unary("Mish", lambda x, a: x * np.tanh(np.logaddexp(0, x.astype(np.float64))))
_unary("Gelu", lambda x, a: (
    0.5 * x * (1 + _erf(x.astype(np.float64) / math.sqrt(2)).astype(np.float64)) if a["approximate"] == "none"
    else 0.5 * x * (1 + np.tanh(math.sqrt(2 / math.pi) * (x + 0.044715 * x.astype(np.float64) ** 3)))),
    {"approximate": "none"})


def _cast_infer(types: list[TensorType | None], a: dict[str, Any]) -> list[TensorType]:
    if a["to"] not in DTYPES:
        raise ShapeError(f"Cast to unknown element type {a['to']!r}")
    return [TensorType(DTYPES[a["to"]], types[0].shape)]


defop("Cast", attrs={"to": "f32"}, infer=_cast_infer, elementwise=True)(
    lambda ins, a: ins[0].astype(DTYPES[a["to"]]))


# -- n-ary with broadcasting ---------------------------------------------------------------------------
def _int_div(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    q = np.trunc(a.astype(np.float64) / b.astype(np.float64))  # ONNX integer Div truncates toward zero
    return q.astype(np.result_type(a, b))


def _div(ins: list[np.ndarray], a: dict[str, Any]) -> np.ndarray:
    x, y = ins
    if np.issubdtype(x.dtype, np.integer):
        return _int_div(x, y)
    return (x / y).astype(x.dtype)


def _binary(name: str, fn) -> None:
    defop(name, inputs=(2, 2), infer=broadcast_infer, elementwise=True)(
        lambda ins, a: np.asarray(fn(ins[0], ins[1])).astype(ins[0].dtype, copy=False))


_binary("Add", np.add)
_binary("Sub", np.subtract)
_binary("Mul", np.multiply)
defop("Div", inputs=(2, 2), infer=broadcast_infer, elementwise=True)(_div)
_binary("PRelu", lambda x, s: np.where(x < 0, x * s, x))


def _pow_infer(types: list[TensorType | None], a: dict[str, Any]) -> list[TensorType]:
    return [TensorType(types[0].dtype, broadcast_shapes(types[0].shape, types[1].shape))]


def _pow(ins: list[np.ndarray], a: dict[str, Any]) -> np.ndarray:
    x, y = ins
    if np.issubdtype(x.dtype, np.integer):
        return np.power(x.astype(np.int64), y.astype(np.int64)).astype(x.dtype)
    return np.power(x.astype(np.float64), y.astype(np.float64)).astype(x.dtype)


defop("Pow", inputs=(2, 2), infer=_pow_infer, elementwise=True)(_pow)


def _variadic(name: str, fn) -> None:
    def ref(ins: list[np.ndarray], a: dict[str, Any]) -> np.ndarray:
        out = ins[0]
        for x in ins[1:]:
            out = fn(out, x)
        return np.asarray(out).astype(ins[0].dtype, copy=False)

    defop(name, inputs=(1, 1 << 16), infer=broadcast_infer, elementwise=True)(ref)


_variadic("Sum", np.add)
_variadic("Max", np.maximum)
_variadic("Min", np.minimum)


def _mean(ins: list[np.ndarray], a: dict[str, Any]) -> np.ndarray:
    acc = ins[0].astype(np.float64)
    for x in ins[1:]:
        acc = acc + x
    return (acc / len(ins)).astype(ins[0].dtype)


defop("Mean", inputs=(1, 1 << 16), infer=broadcast_infer, elementwise=True)(_mean)
