"""ONNX → IR for concrete input shapes.

The importer walks the ONNX nodes in order and asks each op's importer (``onnx_ops.py`` and the
``import_*.py`` families, registered in ``registry.IMPORTERS``) to emit IR nodes.
Emission folds constants eagerly: a node whose inputs are all constant is evaluated with the op's numpy
reference, so shape subgraphs (Shape → Gather → Unsqueeze → Concat → Reshape) and constant weight
arithmetic (DequantizeLinear of int8 initializers) disappear while importing.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

from cnnjit.ir import Graph, TensorType, Value
from cnnjit.ir import errors as limits
from cnnjit.ir.errors import CnnjitError, ModelError, ResourceLimitError, ShapeError, UnsupportedOpError

# the importer families register themselves into IMPORTERS when imported
from . import import_control, import_misc, import_nn_extra, import_quant, import_recurrent, import_resample, onnx_ops  # noqa: F401
from . import onnx_proto as onnx
from .loader import input_specs, opset_version
from .onnx_types import elem_dtype
from .registry import CONST_OPERANDS, IMPORTERS, VARIANT_CHECKS, ImportContext, Unsupported, importer_key

#: refuse any single tensor larger than this many bytes (absurd declared shapes)
DEFAULT_MAX_TENSOR_BYTES = limits.DEFAULT_MAX_TENSOR_BYTES


def value_inputs(model: onnx.ModelProto) -> set[str]:
    """Graph inputs whose *values* decide shapes or attributes (e.g. a Reshape target given as an input).

    Walks back from every operand that must be a compile-time constant to the graph inputs it depends on
    (stopping at ``Shape``, which depends only on its input's shape). The JIT specialises on the values of
    these inputs, as it does on every input's shape.
    """
    operands = [n.input[i] for n in import_control.all_nodes(model.graph)
                for i in CONST_OPERANDS.get(n.op_type, ()) if i < len(n.input)]
    found = import_control.inputs_behind(model, operands)
    flags = {s.name for s in input_specs(model) if s.dims is not None and None not in s.dims
             and s.dtype.kind in "biu" and int(np.prod(s.dims)) <= import_control.MAX_FLAG_ELEMENTS}
    return found | import_control.condition_inputs(model, flags)


#: what to tell a user whose model uses an op that is not a CNN inference op (op type -> advice)
_ADVICE = {
    **dict.fromkeys(("Loop", "Scan"), "loops run through cnnjit.compile only (in compiled steps around them); "
                    "this entry point takes graphs without loops"),
    **dict.fromkeys(("NonMaxSuppression", "RoiAlign", "NonZero"),
                    "detection post-processing is not supported; run it after cnnjit, in numpy"),
    "Attention": "attention blocks are outside the CNN op set",
}


#: the control-flow ops ``cnnjit.compile`` runs as steps of their own (``compiler/control_flow.py``)
CONTROL_KEYS = ("If", "Loop", "Scan")


def _text(s: str | bytes) -> str:
    """A protobuf string field as text (a corrupted field can arrive as undecodable bytes)."""
    return s if isinstance(s, str) else bytes(s).decode("utf-8", errors="replace")


def _advice(node: onnx.NodeProto) -> str:
    domain, op_type = _text(node.domain), _text(node.op_type)
    if domain not in ("", "ai.onnx"):
        extra = (" — an onnxruntime contrib op: export the model with standard ONNX ops (e.g. save it before "
                 "onnxruntime's graph optimisations, or with optimization level 'basic')"
                 if domain == "com.microsoft" else "")
        return f"custom domain {domain!r}: cnnjit does not implement this op of it{extra}"
    if op_type.startswith(("Sequence", "SplitToSequence", "ConcatFromSequence", "String")):
        return "sequence and string ops are not CNN ops"
    return _ADVICE.get(op_type, "not implemented")


def check_supported(model: onnx.ModelProto, loops: bool = False) -> None:
    """Raise one ``UnsupportedOpError`` listing every node whose op cnnjit cannot import.

    ``loops``: the model is compiled in steps around its ``Loop`` / ``Scan`` nodes
    (``compiler/control_flow.py``): their bodies are checked too, and the nodes themselves accepted."""
    opset = opset_version(model)
    bad = []
    nodes = import_control.every_node(model.graph) if loops else import_control.all_nodes(model.graph)
    for n in nodes:
        key = importer_key(_text(n.domain), _text(n.op_type))
        if key not in IMPORTERS and key not in (CONTROL_KEYS if loops else ("If",)):
            bad.append((_text(n.op_type), _text(n.name), opset, _advice(n)))
        elif key in VARIANT_CHECKS and (why := VARIANT_CHECKS[key](n)):
            bad.append((_text(n.op_type), _text(n.name), opset, why))
    if bad:
        raise UnsupportedOpError(bad)


def _import_nodes(ctx: ImportContext, nodes: list, env: dict[str, Value | None]) -> None:
    """Import ``nodes`` in order into ``ctx.graph``, reading their inputs from and adding their outputs to
    ``env`` (ONNX name -> value; an ``If`` imports its branches with this function)."""
    for node in nodes:
        ctx.node = node
        ins = []
        for i, nm in enumerate(node.input):
            if nm not in env:
                raise ModelError(f"{ctx.where()}: input {i} {nm!r} is not produced by any earlier node, "
                                 "initializer or graph input (is the graph out of topological order?)")
            ins.append(env[nm])
        try:
            if importer_key(node.domain, node.op_type) == "If":
                outs = import_control.import_if(ctx, node, ins, env, _import_nodes)
                ctx.node = node
            else:
                outs = IMPORTERS[importer_key(node.domain, node.op_type)](ctx, ins)
        except Unsupported as e:
            raise UnsupportedOpError([(node.op_type, node.name, ctx.opset, str(e))]) from None
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
                raise UnsupportedOpError([(node.op_type, node.name, ctx.opset,
                                           f"output {i} ({nm!r}) is not supported")])
            if nm in env and nm:
                raise ModelError(f"{ctx.where()}: value {nm!r} is produced twice")
            if outs[i].producer is not None and not outs[i].name:
                outs[i].name = nm
            env[nm] = outs[i]


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
    g = model.graph
    opset = opset_version(model)

    check_supported(model)

    graph = Graph(g.name or "model")
    ctx = ImportContext(graph, opset, max_tensor_bytes)
    env: dict[str, Value | None] = {"": None}

    for t in g.initializer:
        try:
            arr = onnx.to_array(t)
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

    _import_nodes(ctx, list(g.node), env)
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
