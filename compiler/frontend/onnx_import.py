"""ONNX → IR for concrete input shapes.

The importer walks the ONNX nodes in order and asks each op's importer (``onnx_ops.py``) to emit IR nodes.
Emission folds constants eagerly: a node whose inputs are all constant is evaluated with the op's numpy
reference, so shape subgraphs (Shape → Gather → Unsqueeze → Concat → Reshape) and constant weight
arithmetic (DequantizeLinear of int8 initializers) disappear while importing.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import onnx
from onnx import helper, numpy_helper

from cnnjit.ir import Graph, Node, TensorType, Value, get_op
from cnnjit.ir.errors import CnnjitError, ModelError, ResourceLimitError, ShapeError, UnsupportedOpError

from .loader import elem_dtype, input_specs, opset_version

#: refuse any single tensor larger than this many bytes (absurd declared shapes)
DEFAULT_MAX_TENSOR_BYTES = 4 << 30


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
                v = helper.get_attribute_value(a)
            except Exception as e:  # noqa: BLE001
                raise ModelError(f"{self.where()}: cannot read attribute {a.name!r}: {e}") from None
            if isinstance(v, onnx.TensorProto):
                v = numpy_helper.to_array(v)
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


def value_inputs(model: onnx.ModelProto) -> set[str]:
    """Graph inputs whose *values* decide shapes or attributes (e.g. a Reshape target given as an input).

    Walks back from every operand that must be a compile-time constant to the graph inputs it depends on
    (stopping at ``Shape``, which depends only on its input's shape). The JIT specialises on the values of
    these inputs, as it does on every input's shape.
    """
    from .onnx_ops import CONST_OPERANDS

    g = model.graph
    inits = {t.name for t in g.initializer}
    graph_inputs = {vi.name for vi in g.input} - inits
    producer = {o: n for n in g.node for o in n.output if o}
    found: set[str] = set()
    seen: set[str] = set()
    stack = [n.input[i] for n in g.node for i in CONST_OPERANDS.get(n.op_type, ()) if i < len(n.input)]
    while stack:
        name = stack.pop()
        if not name or name in seen:
            continue
        seen.add(name)
        if name in graph_inputs:
            found.add(name)
        elif name in producer and producer[name].op_type not in ("Shape", "Size"):
            stack.extend(producer[name].input)
    return found


#: what to tell a user whose model uses an op that is not a CNN inference op (op type -> advice)
_ADVICE = {
    **dict.fromkeys(("LSTM", "GRU", "RNN"), "not a CNN op; cnnjit does not support recurrent layers"),
    **dict.fromkeys(("Loop", "If", "Scan"), "control flow is not supported; export a graph without "
                    "data-dependent control flow (e.g. unroll loops, trace one branch)"),
    **dict.fromkeys(("NonMaxSuppression", "TopK", "RoiAlign", "NonZero"),
                    "detection post-processing is not supported; run it after cnnjit, in numpy"),
    "Einsum": "rewrite the Einsum as MatMul / Transpose / Reshape",
    "LayerNormalization": "not supported yet; transformer-style normalisation is outside the CNN op set",
    "Attention": "attention blocks are outside the CNN op set",
}


def _text(s: str | bytes) -> str:
    """A protobuf string field as text (a corrupted field can arrive as undecodable bytes)."""
    return s if isinstance(s, str) else bytes(s).decode("utf-8", errors="replace")


def _advice(node: onnx.NodeProto) -> str:
    domain, op_type = _text(node.domain), _text(node.op_type)
    if domain not in ("", "ai.onnx"):
        extra = (" — an onnxruntime contrib op: export the model with standard ONNX ops (e.g. save it before "
                 "onnxruntime's graph optimisations, or with optimization level 'basic')"
                 if domain == "com.microsoft" else "")
        return f"custom domain {domain!r}; cnnjit implements the standard ONNX domain only{extra}"
    if op_type.startswith(("Sequence", "SplitToSequence", "ConcatFromSequence", "String")):
        return "sequence and string ops are not CNN ops"
    return _ADVICE.get(op_type, "not implemented")


def check_supported(model: onnx.ModelProto) -> None:
    """Raise one ``UnsupportedOpError`` listing every node whose op cnnjit cannot import."""
    from .onnx_ops import IMPORTERS

    opset = opset_version(model)
    bad = []
    for n in model.graph.node:
        if n.domain not in ("", "ai.onnx") or n.op_type not in IMPORTERS:
            bad.append((_text(n.op_type), _text(n.name), opset, _advice(n)))
    if bad:
        raise UnsupportedOpError(bad)


def import_model(
    model: onnx.ModelProto,
    input_shapes: Mapping[str, Sequence[int]],
    max_tensor_bytes: int = DEFAULT_MAX_TENSOR_BYTES,
    input_values: Mapping[str, np.ndarray] | None = None,
) -> Graph:
    """Build the IR graph of ``model`` specialised to ``input_shapes`` (one concrete shape per input).

    Inputs named in ``input_values`` become constants with those values (see ``value_inputs``).
    """
    input_values = dict(input_values or {})
    from .onnx_ops import IMPORTERS  # the op table registers itself on import

    g = model.graph
    opset = opset_version(model)

    check_supported(model)

    graph = Graph(g.name or "model")
    ctx = ImportContext(graph, opset, max_tensor_bytes)
    env: dict[str, Value | None] = {"": None}

    for t in g.initializer:
        try:
            arr = numpy_helper.to_array(t)
        except Exception as e:  # noqa: BLE001
            raise ModelError(f"initializer {t.name!r} cannot be read: {e}") from None
        env[t.name] = ctx.const(arr, t.name)

    specs = {s.name: s for s in input_specs(model)}
    for name, spec in specs.items():
        if name not in input_shapes and name not in input_values:
            raise ShapeError(f"no concrete shape given for graph input {name!r}")
        if name in input_values:
            env[name] = ctx.const(np.asarray(input_values[name], spec.dtype), name)
            continue
        shape = tuple(int(d) for d in input_shapes[name])
        if any(d < 0 for d in shape):
            raise ShapeError(f"input {name!r}: shape {list(shape)} has a negative dimension")
        if spec.dims is not None and len(spec.dims) != len(shape):
            raise ShapeError(f"input {name!r}: shape {list(shape)} has rank {len(shape)}, the model declares "
                             f"rank {len(spec.dims)}")
        t = TensorType(spec.dtype, shape)
        if t.nbytes > max_tensor_bytes:
            raise ResourceLimitError(f"input {name!r} of shape {list(shape)} exceeds the per-tensor limit")
        env[name] = graph.add_input(t, name)

    for node in g.node:
        ctx.node = node
        ins = []
        for i, nm in enumerate(node.input):
            if nm not in env:
                raise ModelError(f"{ctx.where()}: input {i} {nm!r} is not produced by any earlier node, "
                                 "initializer or graph input (is the graph out of topological order?)")
            ins.append(env[nm])
        try:
            outs = IMPORTERS[node.op_type](ctx, ins)
        except Unsupported as e:
            raise UnsupportedOpError([(node.op_type, node.name, opset, str(e))]) from None
        except CnnjitError:
            raise
        except MemoryError:
            raise ResourceLimitError(f"{ctx.where()}: out of memory while importing the node") from None
        except (ValueError, TypeError, IndexError, KeyError, ArithmeticError, AttributeError, AssertionError,
                RecursionError) as e:
            raise ModelError(f"{ctx.where()}: invalid node ({type(e).__name__}: {e})") from None
        for i, nm in enumerate(node.output):
            if not nm:
                continue
            if i >= len(outs) or outs[i] is None:
                raise UnsupportedOpError([(node.op_type, node.name, opset, f"output {i} ({nm!r}) is not supported")])
            if nm in env and nm:
                raise ModelError(f"{ctx.where()}: value {nm!r} is produced twice")
            if outs[i].producer is not None and not outs[i].name:
                outs[i].name = nm
            env[nm] = outs[i]
    ctx.node = None

    for vi in g.output:
        if vi.name not in env or env[vi.name] is None:
            raise ModelError(f"graph output {vi.name!r} is not produced by any node")
        v = env[vi.name]
        if vi.type.HasField("tensor_type") and vi.type.tensor_type.elem_type:
            want = elem_dtype(vi.type.tensor_type.elem_type, f"graph output {vi.name!r}")
            if want != v.dtype:
                raise ShapeError(f"graph output {vi.name!r} is declared {want} but computes {v.dtype}")
        graph.outputs.append(v)
    return graph
