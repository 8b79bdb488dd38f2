"""Post-training quantization: a float ONNX model plus calibration data -> a standard QDQ ONNX model.

    q = cnnjit.quantize("resnet8.onnx", calibration=batches, per_channel=True, activations="uint8",
                        method="minmax")          # or "percentile", "entropy"
    q.save("resnet8.int8.onnx")                   # onnxruntime runs it too
    m = cnnjit.compile(q)                         # integer kernels (the qdq_to_integer pass)
    print(q.report())

What is quantized: the activation input and output of every Conv / Gemm / MatMul with constant weights
(the output after a directly following Relu / Clip, and after MatMul's bias Add), and both inputs and the
output of every Add of two run-time tensors. Weights are int8, symmetric (zero point 0, range
[-127, 127]), per output channel with ``per_channel`` else per tensor; biases int32 with scale
``x_scale * w_scale``; activations ``uint8`` or ``int8``, asymmetric, from the calibrated range (always
including 0). BatchNormalization after a Conv is folded into it first. Other ops (pooling, softmax,
reshapes...) keep running in float between DequantizeLinear and QuantizeLinear.

Range calibration (``method``): ``minmax`` (observed extremes), ``percentile`` (the ``percentile``-th
percentile of |x| on each side, default 99.99), ``entropy`` (the clipping threshold minimising the KL
divergence between the 2048-bin histogram of the non-zero |x| and its quantized version, as TensorRT does;
tensors with fewer than 2048 non-zero calibration values keep their extremes).

Bias correction (``bias_correction``, default on): rounding the weights shifts each output channel's mean
by ``(W_q - W) @ E[x]``; with ``E[x]`` per input channel measured on the calibration data, that shift is
subtracted from the bias (a bias is added where the layer has none). ``weight_clip="mse"`` picks each
channel's weight clipping threshold by least squared rounding error instead of its max.
Accuracy measurements and their limits: docs/int8.md.
"""

from __future__ import annotations

import copy
import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from cnnjit.compiler.frontend.loader import load_model

from . import api

METHODS = ("minmax", "percentile", "entropy")
_QTYPES = {"uint8": (np.uint8, TensorProto.UINT8, 0, 255), "int8": (np.int8, TensorProto.INT8, -128, 127)}
_LINEAR = ("Conv", "Gemm", "MatMul")


# -- graph helpers --------------------------------------------------------------------------------------------
def _consumers(g: onnx.GraphProto) -> dict[str, list[onnx.NodeProto]]:
    out: dict[str, list[onnx.NodeProto]] = {}
    for n in g.node:
        for i in n.input:
            if i:
                out.setdefault(i, []).append(n)
    return out


def _attr(n: onnx.NodeProto, name: str, default: Any) -> Any:
    for a in n.attribute:
        if a.name == name:
            return helper.get_attribute_value(a)
    return default


def _fold_batchnorm(model: onnx.ModelProto) -> None:
    """Fold ``Conv -> BatchNormalization`` (constant parameters, Conv output used only by the BN)."""
    g = model.graph
    inits = {i.name: i for i in g.initializer}
    cons = _consumers(g)
    outs = {o.name for o in g.output}
    remove = []
    for bn in list(g.node):
        if bn.op_type != "BatchNormalization" or not all(i in inits for i in bn.input[1:5]):
            continue
        conv = next((n for n in g.node if bn.input[0] in n.output), None)
        if conv is None or conv.op_type != "Conv" or conv.input[1] not in inits or len(cons[bn.input[0]]) != 1 \
                or bn.input[0] in outs or (len(conv.input) > 2 and conv.input[2] and conv.input[2] not in inits):
            continue
        scale, beta, mean, var = (numpy_helper.to_array(inits[i]).astype(np.float64) for i in bn.input[1:5])
        s = scale / np.sqrt(var + _attr(bn, "epsilon", 1e-5))
        w = numpy_helper.to_array(inits[conv.input[1]]).astype(np.float64)
        b = numpy_helper.to_array(inits[conv.input[2]]).astype(np.float64) if len(conv.input) > 2 and conv.input[2] \
            else np.zeros(w.shape[0])
        w = w * s.reshape((-1,) + (1,) * (w.ndim - 1))
        b = (b - mean) * s + beta
        wn, bname = conv.input[1] + "_bnfold", conv.output[0] + "_bnfold_bias"
        g.initializer.append(numpy_helper.from_array(w.astype(np.float32), wn))
        g.initializer.append(numpy_helper.from_array(b.astype(np.float32), bname))
        conv.input[1] = wn
        if len(conv.input) > 2:
            conv.input[2] = bname
        else:
            conv.input.append(bname)
        conv.output[0] = bn.output[0]
        remove.append(bn)
    for n in remove:
        g.node.remove(n)


def _const_clip(n: onnx.NodeProto, inits: Mapping[str, Any]) -> bool:
    return n.op_type == "Relu" or (n.op_type == "Clip" and all(not i or i in inits for i in n.input[1:]))


def _plan(model: onnx.ModelProto) -> tuple[list[str], list[onnx.NodeProto]]:
    """(activation tensors to quantize, in first-seen order; linear nodes whose weights get quantized)."""
    g = model.graph
    inits = {i.name for i in g.initializer}
    cons = _consumers(g)
    outs = {o.name for o in g.output}
    tensors: list[str] = []
    linear: list[onnx.NodeProto] = []

    def add(t: str) -> None:
        if t and t not in inits and t not in tensors:
            tensors.append(t)

    def after_act(t: str) -> str:
        users = cons.get(t, [])
        if len(users) == 1 and t not in outs and _const_clip(users[0], inits):
            return users[0].output[0]
        return t

    for n in g.node:
        if n.op_type in _LINEAR and len(n.input) > 1 and n.input[1] in inits and n.input[0] not in inits:
            if n.op_type == "Gemm" and (_attr(n, "transA", 0) or _attr(n, "alpha", 1.0) != 1.0):
                continue
            linear.append(n)
            add(n.input[0])
            y = n.output[0]
            users = cons.get(y, [])
            if n.op_type == "MatMul" and len(users) == 1 and users[0].op_type == "Add" and y not in outs \
                    and any(i in inits for i in users[0].input):
                y = users[0].output[0]
            add(after_act(y))
        elif n.op_type == "Add" and len(n.input) == 2 and not any(i in inits for i in n.input):
            add(n.input[0])
            add(n.input[1])
            add(after_act(n.output[0]))
    return tensors, linear


# -- calibration ----------------------------------------------------------------------------------------------
def _feeds(batch: Any, names: list[str]) -> dict[str, np.ndarray]:
    if isinstance(batch, Mapping):
        return {k: np.asarray(v) for k, v in batch.items()}
    if isinstance(batch, (list, tuple)):
        return {k: np.asarray(v) for k, v in zip(names, batch)}
    return {names[0]: np.asarray(batch)}


class _Observer:
    """Collects what each method needs: extremes, a value sample, and |x| histograms."""

    def __init__(self, method: str, bins: int = 2048, sample: int = 200_000):
        self.method, self.bins, self.sample = method, bins, sample
        self.lo, self.hi = np.inf, -np.inf
        self.values: list[np.ndarray] = []
        self.chan_sum: np.ndarray | None = None  # per-channel sums (axis 1, or the last axis of a 2-D tensor)
        self.chan_n = 0

    def add(self, x: np.ndarray, rng: np.random.Generator) -> None:
        x = np.asarray(x, np.float32)
        if not x.size:
            return
        if x.ndim >= 2:
            xc = x.astype(np.float64)
            ax = x.ndim - 1 if x.ndim == 2 else 1
            sums = xc.sum(axis=tuple(i for i in range(x.ndim) if i != ax))
            if self.chan_sum is None or self.chan_sum.shape != sums.shape:
                self.chan_sum, self.chan_n = np.zeros_like(sums), 0
            self.chan_sum += sums
            self.chan_n += x.size // x.shape[ax]
        x = x.reshape(-1)
        self.lo, self.hi = min(self.lo, float(x.min())), max(self.hi, float(x.max()))
        if self.method != "minmax":
            self.values.append(x if x.size <= self.sample else rng.choice(x, self.sample, replace=False))

    def channel_mean(self) -> np.ndarray | None:
        return None if self.chan_sum is None or not self.chan_n else self.chan_sum / self.chan_n

    def range(self, percentile: float) -> tuple[float, float]:
        lo, hi = self.lo, self.hi
        if not np.isfinite(lo):
            return 0.0, 0.0
        if self.method == "percentile":
            v = np.concatenate(self.values)
            lo = min(lo, 0.0) if lo >= 0 else float(np.percentile(v, 100.0 - percentile))
            hi = float(np.percentile(v, percentile)) if hi > 0 else hi
        elif self.method == "entropy":
            t = _entropy_threshold(np.abs(np.concatenate(self.values)), self.bins)
            lo, hi = max(lo, -t), min(hi, t)
        return lo, hi


def _entropy_threshold(a: np.ndarray, bins: int, levels: int = 128) -> float:
    """The |x| threshold minimising KL(P || Q) between the clipped histogram and its ``levels``-level copy."""
    a = a[a > 0]  # exact zeros (a ReLU's spike) are exactly representable: they must not steer the threshold
    top = float(a.max()) if a.size else 0.0
    if top <= 0 or a.size < 16 * levels:  # too few values (e.g. 10 logits x 4 batches) for a histogram
        return top
    hist, edges = np.histogram(a, bins=bins, range=(0.0, top))
    hist = hist.astype(np.float64)
    best, best_t = np.inf, top
    for i in range(levels, bins + 1, max(1, (bins - levels) // 128)):
        p = hist[:i].copy()
        p[-1] += hist[i:].sum()
        nz = p > 0
        # merge into ``levels`` bins, then expand back over the non-empty source bins
        chunks = np.array_split(np.arange(i), levels)
        q = np.zeros(i)
        for c in chunks:
            m = nz[c]
            if m.any():
                q[c[m]] = hist[:i][c].sum() / m.sum()
        ps, qs = p[nz] / p.sum(), q[nz] / max(q.sum(), 1e-30)
        qs = np.maximum(qs, 1e-12)
        kl = float(np.sum(ps * np.log(ps / qs)))
        if kl < best:
            best, best_t = kl, float(edges[i])
    return best_t


def _qparams(lo: float, hi: float, qmin: int, qmax: int) -> tuple[np.float32, int]:
    lo, hi = min(lo, 0.0), max(hi, 0.0)
    scale = np.float32((hi - lo) / (qmax - qmin)) if hi > lo else np.float32(1.0)
    if scale == 0:
        scale = np.float32(1.0)
    zp = int(np.clip(np.rint(qmin - lo / float(scale)), qmin, qmax))
    return scale, zp


def _weight_scales(w: np.ndarray, axis: int, per_channel: bool, clip: str) -> np.ndarray:
    """Symmetric int8 scales (``[-127, 127]``) per ``axis`` slice (or one for the tensor, broadcast).

    ``clip="max"`` maps the largest |w| to 127; ``"mse"`` picks, per channel, the clipping threshold in
    ``[0.5, 1] * max|w|`` that minimises the squared quantization error of the weights.
    """
    wm = np.moveaxis(w, axis, 0).reshape(w.shape[axis], -1).astype(np.float64)
    if not per_channel:
        wm = wm.reshape(1, -1)
    amax = np.abs(wm).max(axis=1)
    best = np.where(amax > 0, amax / 127.0, 1.0)
    if clip == "mse":
        err = np.full(amax.shape, np.inf)
        for a in np.linspace(0.5, 1.0, 26):
            sc = np.where(amax > 0, a * amax / 127.0, 1.0)
            e = ((np.clip(np.rint(wm / sc[:, None]), -127, 127) * sc[:, None] - wm) ** 2).sum(axis=1)
            better = e < err
            err, best = np.where(better, e, err), np.where(better, sc, best)
    elif clip != "max":
        raise ValueError(f"weight_clip must be 'max' or 'mse', got {clip!r}")
    best = best.astype(np.float32)
    return best if per_channel else np.full(w.shape[axis], best[0], np.float32)


def _output_shift(n: onnx.NodeProto, dw: np.ndarray, mean: np.ndarray) -> np.ndarray | None:
    """``E[(W_q - W) x]`` per output channel for an input with per-channel mean ``mean`` (bias correction)."""
    if n.op_type == "Conv":
        M, cg = dw.shape[0], dw.shape[1]
        if mean.size % cg:
            return None
        group = mean.size // cg
        per = dw.reshape(M, cg, -1).sum(axis=2)  # (ignores the zero padding at the borders)
        mg = M // group
        m_in = mean.reshape(group, cg)[np.arange(M) // mg]
        return (per * m_in).sum(axis=1)
    if n.op_type == "Gemm" and _attr(n, "transB", 0):
        return dw @ mean if dw.shape[1] == mean.size else None
    return mean @ dw if dw.shape[0] == mean.size else None


# -- the result ------------------------------------------------------------------------------------------------
@dataclass
class QuantizedModel:
    """A QDQ ONNX model made by ``quantize``, with its calibration results."""

    model: onnx.ModelProto
    float_model: onnx.ModelProto
    activations: dict[str, tuple[float, int]] = field(default_factory=dict)  # tensor -> (scale, zero point)
    weights: dict[str, tuple[float, float]] = field(default_factory=dict)  # node -> (min, max) weight scale
    deviation: dict[str, dict[str, float]] = field(default_factory=dict)  # output -> stats vs the float model
    options: dict[str, Any] = field(default_factory=dict)

    def to_onnx(self) -> onnx.ModelProto:
        return self.model

    def save(self, path: str | os.PathLike) -> None:
        onnx.save(self.model, os.fspath(path))

    def report(self) -> str:
        """Per-layer scales and the output deviation against the float model (on the calibration data)."""
        o = self.options
        lines = [f"cnnjit PTQ: activations={o.get('activations')} per_channel={o.get('per_channel')} "
                 f"method={o.get('method')} calibration batches={o.get('batches')}", "",
                 f"{'activation tensor':<48}{'scale':>12}{'zero pt':>9}"]
        lines += [f"{k[-48:]:<48}{s:>12.6g}{z:>9d}" for k, (s, z) in self.activations.items()]
        lines += ["", f"{'weights of':<48}{'min scale':>12}{'max scale':>12}"]
        lines += [f"{k[-48:]:<48}{a:>12.4g}{b:>12.4g}" for k, (a, b) in self.weights.items()]
        lines += ["", "output deviation vs the float model (cnnjit int8 on the calibration inputs):"]
        for k, d in self.deviation.items():
            lines.append(f"  {k}: " + ", ".join(f"{a}={b:.4g}" for a, b in d.items()))
        return "\n".join(lines)


def quantize(model: str | os.PathLike | bytes | onnx.ModelProto, calibration: Iterable[Any], *,
             per_channel: bool = True, activations: str = "uint8", method: str = "minmax",
             percentile: float = 99.99, bias_correction: bool = True, weight_clip: str = "max",
             evaluate: bool = True, compile_options: Mapping[str, Any] | None = None) -> QuantizedModel:
    """Post-training static quantization of a float ONNX model to a QDQ model (see the module docstring).

    ``calibration`` is an iterable of input dicts (name -> array), of tuples/lists in input order, or of
    bare arrays (single-input models). ``evaluate`` compiles the result and measures its deviation from
    the float model on the calibration inputs (shown by ``report()``). ``bias_correction`` folds the mean
    output shift that weight rounding causes (``(W_q - W) @ E[x]``, ``E[x]`` per input channel from the
    calibration data) into each layer's bias; ``weight_clip`` is ``"mse"`` (per-channel clipping threshold
    minimising the weights' squared rounding error) or ``"max"``. ``compile_options`` (such as ``threads``,
    ``fuse``) go to each ``cnnjit.compile`` that runs the calibration and the evaluation.
    """
    if activations not in _QTYPES:
        raise ValueError(f"activations must be 'uint8' or 'int8', got {activations!r}")
    if method not in METHODS:
        raise ValueError(f"method must be one of {METHODS}, got {method!r}")
    if weight_clip not in ("max", "mse"):  # checked before calibration runs, not after
        raise ValueError(f"weight_clip must be 'max' or 'mse', got {weight_clip!r}")
    fm = copy.deepcopy(load_model(model))
    _fold_batchnorm(fm)
    g = fm.graph
    inits = {i.name for i in g.initializer}
    in_names = [i.name for i in g.input if i.name not in inits]
    tensors, linear = _plan(fm)

    # calibrate: the float model with every tensor to quantize as an extra output
    probe = copy.deepcopy(fm)
    have = {o.name for o in probe.graph.output}
    for t in tensors:
        if t not in have:
            probe.graph.output.append(helper.make_tensor_value_info(t, TensorProto.FLOAT, None))
    batches = [_feeds(b, in_names) for b in calibration]
    if not batches:
        raise ValueError("calibration gave no batches")
    runner = api.compile(probe, **(compile_options or {}))
    names = [o.name for o in probe.graph.output]
    obs = {t: _Observer(method) for t in tensors}
    rng = np.random.default_rng(0)
    float_outs = []
    for feeds in batches:
        res = dict(zip(names, runner.run(None, feeds)))
        float_outs.append([res[o.name] for o in g.output])
        for t in tensors:
            obs[t].add(res[t], rng)

    qdt, qelem, qmin, qmax = _QTYPES[activations]
    qm = copy.deepcopy(fm)
    qg = qm.graph
    new_nodes: list[onnx.NodeProto] = []
    params: dict[str, tuple[np.float32, int]] = {}
    for t in tensors:
        params[t] = _qparams(*obs[t].range(percentile), qmin, qmax)
    for t, (s, z) in params.items():
        qg.initializer.append(numpy_helper.from_array(np.array(s, np.float32), t + "_scale"))
        qg.initializer.append(numpy_helper.from_array(np.array(z, qdt), t + "_zero_point"))

    # weights and biases
    wscales: dict[str, tuple[float, float]] = {}
    init_map = {i.name: i for i in qg.initializer}
    qnodes = {id(n): n for n in linear}
    for n in qg.node:
        src = next((ln for ln in linear if list(ln.input) == list(n.input) and list(ln.output) == list(n.output)), None)
        if src is None or id(src) not in qnodes:
            continue
        w = numpy_helper.to_array(init_map[n.input[1]]).astype(np.float32)
        if n.op_type == "Conv" or (n.op_type == "Gemm" and _attr(n, "transB", 0)):
            axis = 0
        else:
            axis = 1
        sw = _weight_scales(w, axis, per_channel, weight_clip)
        shape = [1] * w.ndim
        shape[axis] = -1
        wq = np.clip(np.rint(w / sw.reshape(shape)), -127, 127).astype(np.int8)
        mean = obs[n.input[0]].channel_mean() if bias_correction and n.input[0] in obs else None
        shift = None if mean is None else _output_shift(n, wq.astype(np.float64) * sw.reshape(shape) - w, mean)
        base = n.output[0]
        qg.initializer.append(numpy_helper.from_array(wq, base + "_wq"))
        qg.initializer.append(numpy_helper.from_array(sw if per_channel else sw[:1].reshape(()), base + "_wscale"))
        qg.initializer.append(numpy_helper.from_array(np.zeros(sw.shape if per_channel else (), np.int8),
                                                      base + "_wzp"))
        dq_attrs = {"axis": axis} if per_channel else {}
        new_nodes.append(helper.make_node("DequantizeLinear", [base + "_wq", base + "_wscale", base + "_wzp"],
                                          [base + "_wdq"], **dq_attrs))
        n.input[1] = base + "_wdq"
        wscales[n.name or base] = (float(sw.min()), float(sw.max()))
        sx = params[n.input[0]][0]
        has_bias = n.op_type in ("Conv", "Gemm") and len(n.input) > 2 and n.input[2] in init_map
        if shift is not None and n.op_type in ("Conv", "Gemm") and (len(n.input) < 3 or not n.input[2]):
            zeros = np.zeros(shift.size, np.float32)  # a bias to carry the correction
            qg.initializer.append(numpy_helper.from_array(zeros, base + "_bzero"))
            init_map[base + "_bzero"] = qg.initializer[-1]
            del n.input[2:]
            n.input.append(base + "_bzero")
            has_bias = True
        if shift is not None and n.op_type == "MatMul":  # the bias is the constant of a following Add
            add = next((a for a in qg.node if a.op_type == "Add" and n.output[0] in a.input), None)
            k = next((i for i, name in enumerate(add.input) if name in init_map), None) if add is not None else None
            if k is not None:
                b = numpy_helper.to_array(init_map[add.input[k]]).astype(np.float64)
                if b.shape in ((shift.size,), (1, shift.size)):
                    qg.initializer.append(numpy_helper.from_array((b - shift.reshape(b.shape)).astype(np.float32),
                                                                  base + "_bcorr"))
                    init_map[base + "_bcorr"] = qg.initializer[-1]
                    add.input[k] = base + "_bcorr"
        if has_bias and (n.op_type == "Conv" or _attr(n, "beta", 1.0) == 1.0):
            b = numpy_helper.to_array(init_map[n.input[2]]).astype(np.float64).reshape(-1)
            if shift is not None and b.size in (1, shift.size):
                b = np.broadcast_to(b, shift.shape) - shift
            sb = (np.float32(sx) * sw).astype(np.float32)
            if b.size in (1, sb.size):
                b = np.broadcast_to(b, sb.shape)
                bq = np.clip(np.rint(b / sb.astype(np.float64)), -2**31 + 1, 2**31 - 1).astype(np.int32)
                qg.initializer.append(numpy_helper.from_array(bq, base + "_bq"))
                qg.initializer.append(numpy_helper.from_array(sb, base + "_bscale"))
                qg.initializer.append(numpy_helper.from_array(np.zeros(sb.shape, np.int32), base + "_bzp"))
                new_nodes.append(helper.make_node("DequantizeLinear", [base + "_bq", base + "_bscale", base + "_bzp"],
                                                  [base + "_bdq"], axis=0))
                n.input[2] = base + "_bdq"

    # activations: t's producer writes t_preq; Q/DQ rebuild t for every consumer (and graph output)
    graph_inputs = set(in_names)
    for t in tensors:
        if t in graph_inputs:
            q_in, dq_out = t, t + "_dq"
            for n in qg.node:
                for i, name in enumerate(n.input):
                    if name == t:
                        n.input[i] = dq_out
        else:
            producer = next(n for n in qg.node if t in n.output)
            q_in, dq_out = t + "_preq", t
            producer.output[list(producer.output).index(t)] = q_in
        new_nodes.append(helper.make_node("QuantizeLinear", [q_in, t + "_scale", t + "_zero_point"], [t + "_q"]))
        new_nodes.append(helper.make_node("DequantizeLinear", [t + "_q", t + "_scale", t + "_zero_point"], [dq_out]))
    nodes = list(qg.node) + new_nodes
    del qg.node[:]
    qg.node.extend(_toposort(nodes, {i.name for i in qg.input} | {i.name for i in qg.initializer}))
    del qg.value_info[:]
    used = {i for n in qg.node for i in n.input}
    keep = [i for i in qg.initializer if i.name in used]
    del qg.initializer[:]
    qg.initializer.extend(keep)
    for op in qm.opset_import:
        if op.domain in ("", "ai.onnx") and op.version < 13:
            op.version = 13
    onnx.checker.check_model(qm)

    result = QuantizedModel(qm, fm, {k: (float(s), int(z)) for k, (s, z) in params.items()}, wscales,
                            options={"activations": activations, "per_channel": per_channel, "method": method,
                                     "batches": len(batches)})
    if evaluate:
        result.deviation = _deviation(api.compile(qm, **(compile_options or {})), batches, float_outs,
                                      [o.name for o in g.output])
    return result


def _toposort(nodes: list[onnx.NodeProto], available: set[str]) -> list[onnx.NodeProto]:
    have = set(available) | {""}
    pending = list(nodes)
    out: list[onnx.NodeProto] = []
    while pending:
        rest = []
        for n in pending:
            if all(i in have for i in n.input):
                out.append(n)
                have.update(n.output)
            else:
                rest.append(n)
        if len(rest) == len(pending):
            raise ValueError("quantize: the graph has a cycle or an undefined input")
        pending = rest
    return out


def _deviation(m: Any, batches: list[dict], float_outs: list[list[np.ndarray]], names: list[str]) -> dict:
    stats: dict[str, dict[str, float]] = {}
    got = [m.run(None, f) for f in batches]
    for k, name in enumerate(names):
        ref = np.stack([np.asarray(f[k], np.float64).reshape(-1) for f in float_outs])
        q = np.stack([np.asarray(r[k], np.float64).reshape(-1) for r in got])
        cos = np.sum(ref * q, 1) / np.maximum(np.linalg.norm(ref, axis=1) * np.linalg.norm(q, axis=1), 1e-30)
        stats[name] = {"max_abs": float(np.abs(ref - q).max()), "mean_cosine": float(cos.mean()),
                       "min_cosine": float(cos.min()),
                       "argmax_agree": float(np.mean(ref.argmax(1) == q.argmax(1)))}
    return stats
