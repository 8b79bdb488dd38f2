"""``cnnjit info``: what a model is, without compiling it.

Inputs and outputs as declared (symbolic dimensions by name), opsets, producer, op counts, parameters and
every op cnnjit does not support come from the ``ModelProto``; the FLOPs at the given input shapes come from
cnnjit's importer and passes (the IR ``cnnjit inspect`` counts, ``inspect_model.node_flops``), run without
generating code or compiling a kernel. A model cnnjit cannot run is described all the same (exit code 0).
"""

from __future__ import annotations

import argparse
import os
from collections import Counter
from typing import Any

import numpy as np

from cnnjit.compiler.frontend import onnx_proto
from cnnjit.compiler.frontend.loader import InputSpec, input_specs, load_model, resolve_shapes, value_spec
from cnnjit.compiler.frontend.onnx_import import check_supported, import_model, value_inputs
from cnnjit.compiler.passes import PassManager, default_pipeline
from cnnjit.errors import CnnjitError, InputError, ModelError, UnsupportedOpError
from cnnjit.flops import node_flops

from .common import EXIT_OK, check_model_path, parse_shapes
from .flags import model_argument, shape_option
from .output import KEEP, clean, emit_json, note, print_table, shapes_text, si, wrap

HELP = "what a model is, without compiling it: inputs, outputs, opsets, ops, parameters, FLOPs, unsupported ops"
EPILOG = """example:
  cnnjit info model.onnx
  cnnjit info model.onnx --shape x=1,3,48,320 --json

Inputs and outputs as the model declares them (symbolic dimensions by name) and at the given
shapes, opsets, producer, op counts, parameters (elements of initializers and Constant nodes), FLOPs
per run at --shape (symbolic dimensions = 1 otherwise; counted after cnnjit's passes, as 'cnnjit
inspect' does), and every node whose op cnnjit does not support. Nothing is compiled. A model with
unsupported ops is described too (exit code 0)."""


def parents() -> list[argparse.ArgumentParser]:
    return [model_argument(), shape_option()]


def add_arguments(p: argparse.ArgumentParser) -> None:
    """``info`` has only the shared flags (``MODEL``/``--example``, ``--shape``, ``--json``)."""


# =========================================================================================================
# the facts
# =========================================================================================================
def _declared(spec: InputSpec) -> list[int | str | None] | None:
    """Declared dims: an int, the symbol's name, or None for an unnamed symbolic dimension; None: no rank."""
    if spec.dims is None:
        return None
    return [d if d is not None else (spec.dim_names[i] or None) for i, d in enumerate(spec.dims)]


def _value(vi: onnx_proto.ValueInfoProto, what: str) -> dict[str, Any]:
    """A declared graph output; ``shape_at``: its shape at the input shapes, filled in by ``_at_shapes``."""
    try:
        spec = value_spec(vi, what)
    except ModelError:  # an output without a (supported) tensor type: still listed, by name
        return {"name": vi.name, "dtype": None, "shape": None, "shape_at": None}
    return {"name": spec.name, "dtype": str(spec.dtype), "shape": _declared(spec), "shape_at": None}


def _constant_elements(node: onnx_proto.NodeProto) -> int:
    """Elements of the tensor a ``Constant`` node holds (some exporters store every weight this way)."""
    n = 0
    for a in node.attribute:
        if a.HasField("t"):
            n += int(np.prod(a.t.dims, dtype=np.int64))
        elif a.HasField("sparse_tensor"):
            n += int(np.prod(a.sparse_tensor.values.dims, dtype=np.int64))
        else:
            kinds = onnx_proto.AttributeProto
            scalar = a.type in (kinds.FLOAT, kinds.INT, kinds.STRING)
            n += len(a.floats) + len(a.ints) + len(a.strings) + int(scalar)
    return n


def _unsupported(proto: onnx_proto.ModelProto) -> list[dict[str, Any]]:
    """Every node whose op cnnjit cannot import (``check_supported``), as dicts."""
    try:
        check_supported(proto)
    except UnsupportedOpError as e:
        return _entries(e)
    return []


def _entries(e: UnsupportedOpError) -> list[dict[str, Any]]:
    return [{"op": op, "name": name, "opset": opset, "reason": why} for op, name, opset, why in e.unsupported]


def _at_shapes(proto: onnx_proto.ModelProto, given: dict[str, tuple[int, ...]], doc: dict[str, Any]) -> None:
    """Fill ``doc`` with what depends on the input shapes: the shapes used, notes, output shapes and FLOPs
    (after the default passes), or ``flops_unavailable`` saying why they could not be counted."""
    doc.update(shapes=None, notes=[], flops=None, flops_unavailable=None)
    try:
        shapes, notes = resolve_shapes(proto, given)
    except InputError as e:
        if set(given) - {s["name"] for s in doc["inputs"]}:
            raise  # a --shape for an input the model does not have: the user's mistake, not a fact
        doc["flops_unavailable"] = str(e)  # an input without a declared rank and no --shape
        return
    doc.update(shapes=shapes, notes=notes)
    if doc["unsupported"]:
        doc["flops_unavailable"] = "the model has ops cnnjit does not support"
        return
    if doc["value_inputs"]:
        doc["flops_unavailable"] = (f"input(s) {doc['value_inputs']} set shapes or attributes of the model: the "
                                    "FLOPs depend on their values")
        return
    try:
        graph = import_model(proto, shapes)
        for out, v in zip(doc["outputs"], graph.outputs):
            out["shape_at"] = list(v.shape)
        PassManager(default_pipeline()).run(graph)  # the default passes (stages.run_passes, without numba)
    except UnsupportedOpError as e:  # an op variant (attribute, input) the importer refuses
        doc["unsupported"] = _entries(e)
        doc["flops_unavailable"] = "the model has ops cnnjit does not support"
        return
    except CnnjitError as e:
        why = str(e).splitlines()[0]
        if notes:
            why += " (symbolic dimensions were set to 1: give the real input shapes with --shape NAME=DIMS)"
        doc["flops_unavailable"] = why
        return
    doc["flops"] = sum(node_flops(n) for n in graph.nodes)


def model_info(path: str, given: dict[str, tuple[int, ...]]) -> dict[str, Any]:
    """Everything ``cnnjit info`` reports about the model at ``path``, as one JSON-ready dict."""
    proto = load_model(path)
    g = proto.graph
    doc: dict[str, Any] = {
        "model": path, "file_bytes": os.path.getsize(path), "name": g.name,
        "producer": {"name": proto.producer_name, "version": proto.producer_version},
        "ir_version": proto.ir_version,
        "opsets": {imp.domain or "ai.onnx": imp.version for imp in proto.opset_import},
        "inputs": [{"name": s.name, "dtype": str(s.dtype), "shape": _declared(s)} for s in input_specs(proto)],
        "outputs": [_value(vi, "graph output") for vi in g.output],
        "nodes": len(g.node),
        "op_counts": dict(Counter(n.op_type for n in g.node).most_common()),
        "params": 0,
        "initializer_params": sum(int(np.prod(t.dims, dtype=np.int64)) for t in g.initializer),
        "initializers": len(g.initializer),
        "constant_params": sum(_constant_elements(n) for n in g.node if n.op_type == "Constant" and not n.domain),
        "value_inputs": sorted(value_inputs(proto)),
        "unsupported": _unsupported(proto),
    }
    _at_shapes(proto, given, doc)
    doc["params"] = doc["initializer_params"] + doc["constant_params"]
    doc["supported"] = not doc["unsupported"]
    return doc


# =========================================================================================================
# the command
# =========================================================================================================
def _dims_text(dims: list[int | str | None] | None) -> str:
    if dims is None:
        return "[?]"
    return "[" + ", ".join("?" if d is None else clean(d, 24) for d in dims) + "]"


def main(args: argparse.Namespace) -> int:
    check_model_path(args.model)
    doc = model_info(args.model, parse_shapes(args.shape))
    if args.json:
        emit_json(doc)
        return EXIT_OK
    for n in doc["notes"]:
        note(n)
    producer = " ".join(p for p in (doc["producer"]["name"], doc["producer"]["version"]) if p) or "unknown"
    print(wrap(f"{clean(os.path.basename(args.model), 60)}: graph {clean(doc['name'], 40)!r}, producer "
               f"{clean(producer, 40)}, ONNX IR {doc['ir_version']}, opsets "
               + ", ".join(f"{clean(d, 24)}{KEEP}{v}" for d, v in doc["opsets"].items())))
    at = f"at {shapes_text(doc['shapes'])}" if doc["shapes"] else "at the given shapes"
    rows = [["input", s["name"], s["dtype"], _dims_text(s["shape"]),
             "x".join(map(str, doc["shapes"][s["name"]])) if doc["shapes"] else "?"] for s in doc["inputs"]]
    rows += [["output", s["name"], s["dtype"] or "?", _dims_text(s["shape"]),
              "x".join(map(str, s["shape_at"])) if s["shape_at"] is not None else "?"] for s in doc["outputs"]]
    print_table("inputs and outputs", ["", "name", "dtype", "declared shape", at], rows)
    ops = ", ".join(f"{clean(op, 32)}{KEEP}{n}" for op, n in doc["op_counts"].items())  # no break inside
    print(wrap(f"{doc['nodes']} nodes: {ops}"))
    n_const = doc["op_counts"].get("Constant", 0)
    where = f"elements of {doc['initializers']} initializers"
    if n_const:
        where = (f"{doc['initializer_params']:,} in {doc['initializers']} initializers, {doc['constant_params']:,} "
                 f"in {n_const} Constant nodes")
    print(wrap(f"parameters: {doc['params']:,} ({where})"))
    if doc["flops"] is not None:
        print(wrap(f"FLOPs: {si(doc['flops'], 'FLOP')} per run {at} (after cnnjit's passes, as 'cnnjit inspect' "
                   "counts them)"))
    else:
        print(wrap(f"FLOPs: not counted: {clean(doc['flops_unavailable'], 300)}"))
    if doc["value_inputs"]:
        print(wrap("inputs whose values set shapes or attributes: "
                   + ", ".join(clean(v, 40) for v in doc["value_inputs"])))
    if not doc["unsupported"]:
        print("unsupported ops: none")
        return EXIT_OK
    print_table(f"unsupported ops: {len(doc['unsupported'])} node(s) ('cnnjit run' refuses this model)",
                ["op", "node", "opset", "why"],
                [[u["op"], clean(u["name"], 40), str(u["opset"]), u["reason"]] for u in doc["unsupported"]],
                right=("opset",))
    return EXIT_OK
