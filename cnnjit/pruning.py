"""``cnnjit.prune``: magnitude, N:M and structured (channel) pruning of an ONNX model's weights.

    pruned = cnnjit.prune("mobilenet_v2.onnx", sparsity=0.9, method="magnitude")   # unstructured
    pruned = cnnjit.prune(model, sparsity=0.5, method="channel")                   # fewer filters
    pruned = cnnjit.prune(model, pattern="2:4")                                    # N:M semi-structured
    pruned.save("mobilenet_v2.pruned.onnx"); print(pruned.report())
    m = cnnjit.compile(pruned)        # pointwise Conv / Gemm with sparse enough weights get sparse kernels

Pruning edits the initializers of Conv / Gemm / MatMul in a copy of the ``ModelProto``, so the result is a
plain ONNX model (onnxruntime runs it). Channel pruning removes whole filters: the output channel, the
matching BatchNormalization / per-channel constants, depthwise channels and the next layer's input channels;
channels tied by a residual Add (or Sub/Mul/...) are pruned together, Concat is followed segment by segment,
and anything the pass does not understand keeps its channels.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import onnx
from onnx import numpy_helper

from cnnjit.compiler.frontend.loader import load_model  # the one loader: clear ModelErrors, safe external data

METHODS = ("magnitude", "channel", "nm")
_UNARY = {"Relu", "Clip", "LeakyRelu", "Sigmoid", "HardSigmoid", "HardSwish", "Tanh", "Identity", "Dropout",
          "MaxPool", "AveragePool", "GlobalAveragePool", "GlobalMaxPool", "Elu", "Selu", "Softplus", "Neg",
          "Abs", "Exp", "Sqrt", "Mish", "Gelu", "Cast", "LpPool"}
_BINARY = {"Add", "Sub", "Mul", "Div", "Max", "Min"}


# ----------------------------------------------------------------------------------------------------------
# helpers on the ModelProto
# ----------------------------------------------------------------------------------------------------------
def _load(model: Any) -> onnx.ModelProto:
    if isinstance(model, PrunedModel):
        return model.model
    return load_model(model)


def _attr(node: onnx.NodeProto, name: str, default: Any = None) -> Any:
    for a in node.attribute:
        if a.name == name:
            return onnx.helper.get_attribute_value(a)
    return default


def _set_attr(node: onnx.NodeProto, name: str, value: Any) -> None:
    for i, a in enumerate(node.attribute):
        if a.name == name:
            del node.attribute[i]
            break
    node.attribute.append(onnx.helper.make_attribute(name, value))


class _Inits:
    """The graph's initializers by name, with copy-on-write for tensors shared by several inputs."""

    def __init__(self, graph: onnx.GraphProto):
        self.graph = graph
        self.arrays = {t.name: numpy_helper.to_array(t) for t in graph.initializer}
        self.uses: dict[str, int] = {}
        for n in graph.node:
            for i in n.input:
                self.uses[i] = self.uses.get(i, 0) + 1
        self.changed: dict[str, np.ndarray] = {}
        self._n = 0

    def get(self, name: str) -> np.ndarray | None:
        return self.arrays.get(name)

    def set_input(self, node: onnx.NodeProto, idx: int, arr: np.ndarray) -> None:
        name = node.input[idx]
        if self.uses.get(name, 0) > 1:  # shared: give this input its own copy
            self._n += 1
            new = f"{name}__pruned{self._n}"
            self.uses[name] -= 1
            self.uses[new] = 1
            node.input[idx] = new
            name = new
        self.arrays[name] = arr
        self.changed[name] = arr

    def write_back(self) -> None:
        have = {t.name: i for i, t in enumerate(self.graph.initializer)}
        for name, arr in self.changed.items():
            t = numpy_helper.from_array(np.ascontiguousarray(arr), name)
            if name in have:
                self.graph.initializer[have[name]].CopyFrom(t)
            else:
                self.graph.initializer.append(t)
        self.changed.clear()


@dataclass
class Layer:
    """A prunable layer: a Conv / Gemm / MatMul node with its weight in an initializer."""

    name: str
    op: str
    index: int  # node index in the graph
    weight: str  # initializer name
    reduce_axis: int  # the weight's input-channel (reduction) axis
    depthwise: bool = False


def _layers(graph: onnx.GraphProto, inits: _Inits) -> list[Layer]:
    out = []
    for i, n in enumerate(graph.node):
        if n.op_type not in ("Conv", "Gemm", "MatMul") or len(n.input) < 2 or inits.get(n.input[1]) is None:
            continue
        w = inits.get(n.input[1])
        name = n.name or n.output[0]
        if n.op_type == "Conv":
            g = int(_attr(n, "group", 1))
            out.append(Layer(name, "Conv", i, n.input[1], 1, depthwise=g > 1 and w.shape[1] == 1))
        elif n.op_type == "Gemm":
            out.append(Layer(name, "Gemm", i, n.input[1], 1 if _attr(n, "transB", 0) else 0))
        elif w.ndim == 2:
            out.append(Layer(name, "MatMul", i, n.input[1], 0))
    return out


def _selected(layers: list[Layer], keep_first_last: bool, exclude: Sequence[str], include_depthwise: bool
              ) -> list[Layer]:
    excl = set(exclude)
    sel = []
    for k, lay in enumerate(layers):
        if keep_first_last and k in (0, len(layers) - 1):
            continue
        if lay.name in excl or (lay.depthwise and not include_depthwise):
            continue
        sel.append(lay)
    return sel


# ----------------------------------------------------------------------------------------------------------
# unstructured and N:M
# ----------------------------------------------------------------------------------------------------------
def _magnitude(inits: _Inits, graph: onnx.GraphProto, layers: list[Layer], sparsity: float, scope: str) -> None:
    if scope == "global":
        allw = np.concatenate([np.abs(inits.get(lay.weight)).ravel() for lay in layers]) if layers else None
        if allw is None or allw.size == 0:
            return
        k = int(round(sparsity * allw.size))
        thr = np.partition(allw, k - 1)[k - 1] if k > 0 else -1.0
    for lay in layers:
        w = inits.get(lay.weight)
        a = np.abs(w).ravel()
        if scope == "global":
            keep = a > thr
        else:
            k = int(round(sparsity * a.size))
            keep = np.ones(a.size, bool)
            if k > 0:
                keep[np.argsort(a, kind="stable")[:k]] = False
        inits.set_input(graph.node[lay.index], 1, np.where(keep.reshape(w.shape), w, 0).astype(w.dtype))


def _nm(inits: _Inits, graph: onnx.GraphProto, layers: list[Layer], n_keep: int, m: int) -> None:
    for lay in layers:
        w = inits.get(lay.weight)
        ax = lay.reduce_axis
        wm = np.moveaxis(w, ax, -1)  # groups of m along the reduction axis
        c = wm.shape[-1]
        pad = (-c) % m
        wp = np.concatenate([wm, np.zeros(wm.shape[:-1] + (pad,), w.dtype)], -1) if pad else wm
        g = wp.reshape(wp.shape[:-1] + ((c + pad) // m, m))
        order = np.argsort(-np.abs(g), axis=-1, kind="stable")
        mask = np.zeros(g.shape, bool)
        np.put_along_axis(mask, order[..., :n_keep], True, axis=-1)
        pruned = np.where(mask, g, 0).reshape(wp.shape)[..., :c]
        inits.set_input(graph.node[lay.index], 1, np.ascontiguousarray(np.moveaxis(pruned, -1, ax)).astype(w.dtype))


# ----------------------------------------------------------------------------------------------------------
# structured: channel pruning
# ----------------------------------------------------------------------------------------------------------
@dataclass
class _Space:
    size: int
    locked: bool = False
    producers: list[int] = field(default_factory=list)  # Conv node indices whose filters are these channels


class _Channels:
    """Channel spaces (union-find) and who uses each: the bookkeeping of structured pruning."""

    def __init__(self) -> None:
        self.spaces: list[_Space] = []
        self.parent: list[int] = []
        # (node index, action, input index, layout) to apply once the masks are known
        self.users: list[tuple[int, str, int, list[tuple[int, int]]]] = []

    def new(self, size: int, locked: bool = False) -> int:
        self.spaces.append(_Space(size, locked))
        self.parent.append(len(self.parent))
        return len(self.parent) - 1

    def find(self, s: int) -> int:
        while self.parent[s] != s:
            self.parent[s] = self.parent[self.parent[s]]
            s = self.parent[s]
        return s

    def union(self, a: int, b: int) -> None:
        a, b = self.find(a), self.find(b)
        if a != b:
            sa, sb = self.spaces[a], self.spaces[b]
            sa.locked |= sb.locked
            sa.producers += sb.producers
            self.parent[b] = a

    def lock(self, layout: list[tuple[int, int]] | None) -> None:
        for s, _ in layout or ():
            self.spaces[self.find(s)].locked = True


def _same_layout(ch: _Channels, a: list, b: list) -> bool:
    return len(a) == len(b) and all(la == lb for (_, la), (_, lb) in zip(a, b, strict=True))


def _channel(model: onnx.ModelProto, inits: _Inits, sparsity: float, keep_first_last: bool,
             exclude: Sequence[str]) -> None:
    graph = model.graph
    try:
        inferred = onnx.shape_inference.infer_shapes(model)
        shapes = {v.name: [d.dim_value if d.HasField("dim_value") else -1 for d in v.type.tensor_type.shape.dim]
                  for v in list(inferred.graph.value_info) + list(inferred.graph.input) + list(inferred.graph.output)}
    except Exception:  # noqa: BLE001 - shapes only refine Flatten/Reshape handling
        shapes = {}
    ch = _Channels()
    lay: dict[str, list[tuple[int, int]] | None] = {}  # tensor -> channel segments (space, length)
    layers = _layers(graph, inits)
    protect = {lay_.index for k, lay_ in enumerate(layers) if keep_first_last and k in (0, len(layers) - 1)}
    protect |= {lay_.index for lay_ in layers if lay_.name in set(exclude)}

    def get(name: str) -> list | None:
        return lay.get(name)

    for i, n in enumerate(graph.node):
        op = n.op_type
        ins = [get(x) if x and inits.get(x) is None else None for x in n.input]
        out: list | None = None
        if op == "Conv" and inits.get(n.input[1]) is not None:
            w = inits.get(n.input[1])
            g = int(_attr(n, "group", 1))
            if g == 1:
                if ins[0] is not None:
                    ch.users.append((i, "conv_in", 1, ins[0]))
                s = ch.new(w.shape[0], locked=i in protect)
                ch.spaces[s].producers.append(i)
                ch.users.append((i, "conv_out", 0, [(s, w.shape[0])]))
                out = [(s, w.shape[0])]
            elif ins[0] is not None and w.shape[1] == 1 and w.shape[0] == g == sum(n_ for _, n_ in ins[0]):
                ch.users.append((i, "dw", 0, ins[0]))
                out = ins[0]
            else:
                ch.lock(ins[0])
        elif op == "BatchNormalization" and ins[0] is not None:
            ch.users.append((i, "bn", 0, ins[0]))
            out = ins[0]
        elif op in _UNARY and ins[0] is not None:
            out = ins[0]
        elif op in _BINARY and len(n.input) == 2:
            a, b = ins
            ca, cb = inits.get(n.input[0]), inits.get(n.input[1])
            if a is not None and b is not None:
                if _same_layout(ch, a, b):
                    for (sa, _), (sb, _) in zip(a, b, strict=True):
                        ch.union(sa, sb)
                    out = a
                else:
                    ch.lock(a)
                    ch.lock(b)
            elif (a is None) != (b is None):
                x, c, ci = (a, cb, 1) if a is not None else (b, ca, 0)
                total = sum(n_ for _, n_ in x)
                rank = len(shapes.get(n.input[1 - ci], [])) or 4
                if c is not None and c.size == 1:
                    out = x
                elif c is not None and c.size == total and c.ndim >= rank - 1 and c.shape[c.ndim - rank + 1] == total:
                    ch.users.append((i, "bcast", ci, x))
                    out = x
                else:
                    ch.lock(x)
        elif op == "Concat" and int(_attr(n, "axis", 0)) % max(2, len(shapes.get(n.output[0], [])) or 4) == 1:
            if all(x is not None for x in ins):
                out = [seg for x in ins for seg in x]
            else:
                for x in ins:
                    ch.lock(x)
        elif op in ("Flatten", "Reshape", "Squeeze") and ins[0] is not None:
            shp = shapes.get(n.input[0], [])
            oshp = shapes.get(n.output[0], [])
            target = inits.get(n.input[1]) if op == "Reshape" and len(n.input) > 1 else None
            ok = (op != "Reshape" or (target is not None and target.ndim == 1 and len(target) >= 2 and target[1] == -1))
            ok = ok and (op != "Flatten" or int(_attr(n, "axis", 1)) == 1)
            if ok and len(shp) >= 2 and all(d == 1 for d in shp[2:]) and len(oshp) >= 2 and oshp[1] == shp[1]:
                out = ins[0]
            else:
                ch.lock(ins[0])
        elif op in ("Gemm", "MatMul") and ins[0] is not None and inits.get(n.input[1]) is not None \
                and not (op == "Gemm" and _attr(n, "transA", 0)) and inits.get(n.input[1]).ndim == 2:
            ch.users.append((i, "gemm_in", 1, ins[0]))
        else:
            for x in ins:
                ch.lock(x)
        for o in n.output:
            lay[o] = out
    for o in graph.output:
        ch.lock(lay.get(o.name))

    # choose the channels to keep: mean |w| of the filters (summed over producers tied by residual adds)
    masks: dict[int, np.ndarray] = {}
    for s in {ch.find(k) for k in range(len(ch.spaces))}:
        sp = ch.spaces[s]
        if sp.locked or not sp.producers:
            continue
        score = np.zeros(sp.size)
        for p in sp.producers:
            w = inits.get(graph.node[p].input[1])
            score += np.abs(w.reshape(w.shape[0], -1)).mean(1)
        k = sp.size - max(1, int(round(sp.size * (1.0 - sparsity))))
        keep = np.ones(sp.size, bool)
        if k > 0:
            keep[np.argsort(score, kind="stable")[:k]] = False
        masks[s] = keep

    def mask_of(layout: list[tuple[int, int]]) -> np.ndarray:
        return np.concatenate([masks.get(ch.find(s), np.ones(n_, bool)) for s, n_ in layout])

    for i, action, idx, layout in ch.users:
        node = graph.node[i]
        m = mask_of(layout)
        if m.all():
            continue
        if action == "conv_out":
            inits.set_input(node, 1, inits.get(node.input[1])[m])
            if len(node.input) > 2 and node.input[2]:
                inits.set_input(node, 2, inits.get(node.input[2])[m])
        elif action == "conv_in":
            inits.set_input(node, 1, inits.get(node.input[1])[:, m])
        elif action == "dw":
            inits.set_input(node, 1, inits.get(node.input[1])[m])
            if len(node.input) > 2 and node.input[2]:
                inits.set_input(node, 2, inits.get(node.input[2])[m])
            _set_attr(node, "group", int(m.sum()))
        elif action == "bn":
            for k in range(1, 5):
                inits.set_input(node, k, inits.get(node.input[k])[m])
        elif action == "bcast":
            c = inits.get(node.input[idx])
            ax = c.ndim - 3 if c.ndim >= 3 else 0
            ax = next(a for a in range(c.ndim) if c.shape[a] == m.size) if c.shape[ax] != m.size else ax
            inits.set_input(node, idx, np.compress(m, c, axis=ax))
        elif action == "gemm_in":
            w = inits.get(node.input[1])
            ax = 1 if node.op_type == "Gemm" and _attr(node, "transB", 0) else 0
            inits.set_input(node, 1, np.compress(m, w, axis=ax))
    del graph.value_info[:]  # intermediate shapes changed


# ----------------------------------------------------------------------------------------------------------
# the result
# ----------------------------------------------------------------------------------------------------------
def _layer_stats(model: onnx.ModelProto) -> list[dict[str, Any]]:
    graph = model.graph
    inits = _Inits(graph)
    try:
        inferred = onnx.shape_inference.infer_shapes(model)
        shapes = {v.name: [d.dim_value for d in v.type.tensor_type.shape.dim]
                  for v in list(inferred.graph.value_info) + list(inferred.graph.output)}
    except Exception:  # noqa: BLE001
        shapes = {}
    rows = []
    for lay in _layers(graph, inits):
        n = graph.node[lay.index]
        w = inits.get(lay.weight)
        nnz = int(np.count_nonzero(w))
        oshape = shapes.get(n.output[0], [])
        if lay.op == "Conv":
            uses = int(np.prod(oshape[2:])) * (oshape[0] or 1) if oshape else 1
        else:
            uses = int(np.prod(oshape[:-1])) if oshape else 1
        rows.append({"layer": lay.name, "op": lay.op + ("(dw)" if lay.depthwise else ""),
                     "shape": list(w.shape), "params": int(w.size), "nonzero": nnz,
                     "sparsity": 1.0 - nnz / max(1, w.size), "macs": int(w.size) * uses,
                     "effective_macs": nnz * uses})
    return rows


@dataclass
class PrunedModel:
    """A pruned ONNX model (``.model``) with the original kept for comparison."""

    model: onnx.ModelProto
    original: onnx.ModelProto
    method: str
    options: dict[str, Any] = field(default_factory=dict)

    def save(self, path: str | os.PathLike) -> None:
        """Write the pruned model as an ONNX file."""
        onnx.save(self.model, os.fspath(path))

    def SerializeToString(self) -> bytes:  # noqa: N802 - the ModelProto spelling, so loaders accept it
        return self.model.SerializeToString()

    def layers(self) -> list[dict[str, Any]]:
        """Per prunable layer: op, weight shape, params, nonzeros, sparsity, dense and effective MACs."""
        return _layer_stats(self.model)

    def summary(self) -> dict[str, Any]:
        """Totals before and after pruning (params, nonzeros, MACs) and the overall weight sparsity."""
        before, after = _layer_stats(self.original), self.layers()
        p0, p1 = sum(r["params"] for r in before), sum(r["params"] for r in after)
        nz = sum(r["nonzero"] for r in after)
        return {"method": self.method, "params_before": p0, "params_after": p1, "nonzero_after": nz,
                "sparsity": 1.0 - nz / max(1, p0), "macs_before": sum(r["effective_macs"] for r in before),
                "macs_after": sum(r["effective_macs"] for r in after)}

    def report(self) -> str:
        """A per-layer table: weight shape, sparsity, params and FLOPs (2 x effective MACs)."""
        rows = self.layers()
        lines = [f"pruned ({self.method}): {len(rows)} Conv/Gemm/MatMul layers",
                 f"{'layer':<28} {'op':<9} {'weight':<18} {'sparsity':>8} {'nonzero':>10} {'params':>10} "
                 f"{'MFLOPs':>9}"]
        for r in rows:
            lines.append(f"{r['layer'][:28]:<28} {r['op']:<9} {'x'.join(map(str, r['shape'])):<18} "
                         f"{r['sparsity']:>8.1%} {r['nonzero']:>10} {r['params']:>10} "
                         f"{2 * r['effective_macs'] / 1e6:>9.2f}")
        s = self.summary()
        lines.append(f"total: params {s['params_before']} -> {s['params_after']} ({s['nonzero_after']} nonzero, "
                     f"{s['sparsity']:.1%} sparse); FLOPs {2 * s['macs_before'] / 1e6:.1f}M -> "
                     f"{2 * s['macs_after'] / 1e6:.1f}M")
        return "\n".join(lines)

    def deviation(self, inputs: Mapping[str, np.ndarray] | Sequence[Mapping[str, np.ndarray]] | None = None,
                  n: int = 4, seed: int = 0, threads: int = 1, optimize: bool = True) -> dict[str, float]:
        """Output deviation of the pruned model from the original on sample inputs (onnxruntime).

        ``inputs``: one feed dict or a list of them; default ``n`` seeded standard-normal feeds. ``threads``:
        onnxruntime's intra-op threads; ``optimize=False`` turns its graph optimizations (fusions) off. Returns
        max abs diff, min cosine similarity of the first outputs and the argmax agreement (fraction of rows),
        with the threads and optimization level the sessions ran with.
        """
        import onnxruntime as ort

        opts = ort.SessionOptions()
        opts.intra_op_num_threads = threads
        if not optimize:
            opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
        s0 = ort.InferenceSession(self.original.SerializeToString(), opts, providers=["CPUExecutionProvider"])
        s1 = ort.InferenceSession(self.model.SerializeToString(), opts, providers=["CPUExecutionProvider"])
        if inputs is None:
            rng = np.random.default_rng(seed)
            feeds = []
            for _ in range(n):
                f = {}
                for i in s0.get_inputs():
                    shp = [d if isinstance(d, int) else 1 for d in i.shape]
                    f[i.name] = rng.standard_normal(shp).astype(np.float32)
                feeds.append(f)
        else:
            feeds = [inputs] if isinstance(inputs, Mapping) else list(inputs)
        mx, cos, agree, rows = 0.0, 1.0, 0, 0
        for f in feeds:
            a, b = s0.run(None, dict(f))[0], s1.run(None, dict(f))[0]
            a64, b64 = a.astype(np.float64).reshape(a.shape[0], -1), b.astype(np.float64).reshape(b.shape[0], -1)
            mx = max(mx, float(np.abs(a64 - b64).max()) if a64.size else 0.0)
            for ra, rb in zip(a64, b64, strict=True):
                den = np.linalg.norm(ra) * np.linalg.norm(rb)
                cos = min(cos, float(ra @ rb / den) if den > 0 else float(np.array_equal(ra, rb)))
                agree += int(np.argmax(ra) == np.argmax(rb))
                rows += 1
        used = s1.get_session_options()
        return {"max_abs_diff": mx, "cosine": cos, "argmax_agreement": agree / max(1, rows), "samples": len(feeds),
                "threads": used.intra_op_num_threads,
                "optimized": used.graph_optimization_level != ort.GraphOptimizationLevel.ORT_DISABLE_ALL}


def prune(model: Any, sparsity: float | None = None, method: str = "magnitude", *, pattern: str | None = None,
          scope: str = "layer", keep_first_last: bool = True, exclude: Sequence[str] = (),
          include_depthwise: bool = False) -> PrunedModel:
    """Prune an ONNX model (path, bytes, ``ModelProto`` or ``PrunedModel``); the input is not modified.

    ``method``: ``"magnitude"`` (unstructured: zero the smallest ``sparsity`` fraction of each layer's weights,
    or of all of them with ``scope="global"``), ``"channel"`` (remove the ``sparsity`` fraction of filters
    with the smallest mean |w| per channel group, shrinking shapes), or an N:M pattern such as ``"2:4"``
    (keep the N largest of every M consecutive weights along the input-channel axis; also ``pattern=``).
    ``keep_first_last`` keeps the first and last prunable layers dense; ``exclude`` lists layer (node) names
    to leave alone; depthwise convs are left dense unless ``include_depthwise``.
    """
    proto = _load(model)
    if pattern is not None:
        method = pattern
    nm = None
    if ":" in method:
        try:
            nk, mm = (int(t) for t in method.split(":"))
        except ValueError:
            raise ValueError(f"an N:M pattern looks like '2:4', got {method!r}") from None
        if not 0 <= nk <= mm or mm < 1:
            raise ValueError(f"N:M pattern needs 0 <= N <= M, M >= 1, got {method!r}")
        nm = (nk, mm)
    elif method not in ("magnitude", "channel"):
        raise ValueError(f"method must be 'magnitude', 'channel' or an N:M pattern like '2:4', got {method!r}")
    if nm is None:
        if sparsity is None:
            raise ValueError(f"method={method!r} needs sparsity= (a fraction in [0, 1])")
        sparsity = float(sparsity)
        if not 0.0 <= sparsity <= 1.0:
            raise ValueError(f"sparsity must be in [0, 1], got {sparsity}")
    if scope not in ("layer", "global"):
        raise ValueError(f"scope must be 'layer' or 'global', got {scope!r}")
    out = onnx.ModelProto()
    out.CopyFrom(proto)
    inits = _Inits(out.graph)
    if method == "channel":
        _channel(out, inits, min(sparsity, 1.0), keep_first_last, exclude)
    else:
        sel = _selected(_layers(out.graph, inits), keep_first_last, exclude, include_depthwise)
        if nm is not None:
            _nm(inits, out.graph, sel, *nm)
        else:
            _magnitude(inits, out.graph, sel, sparsity, scope)
    inits.write_back()
    # drop initializers nobody uses any more (the originals of copied shared tensors)
    used = {i for n in out.graph.node for i in n.input} | {o.name for o in out.graph.output}
    keep = [t for t in out.graph.initializer if t.name in used]
    del out.graph.initializer[:]
    out.graph.initializer.extend(keep)
    orig = onnx.ModelProto()
    orig.CopyFrom(proto)
    return PrunedModel(out, orig, method if nm is None else f"{nm[0]}:{nm[1]}",
                       {"sparsity": sparsity, "scope": scope, "keep_first_last": keep_first_last,
                        "exclude": list(exclude), "include_depthwise": include_depthwise})
