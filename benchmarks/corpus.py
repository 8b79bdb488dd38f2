"""The real-model corpus (issue 17): models shipped inside public wheels, and generated models for the
patterns they do not cover.

Real models are read from the installed wheels, never copied into the repository (install them with
``pip install --no-deps rapidocr-onnxruntime==1.4.4 ddddocr==1.6.1``; ``.ci/run`` does):

* ``ppocr_v4_det``  PP-OCRv4 text detector (DBNet, PP-LCNetV3), x 1x3x640x640           (rapidocr-onnxruntime)
* ``ppocr_v4_rec``  PP-OCRv4 recognizer (PP-LCNetV3 + SVTR, CTC over 6625 classes), x 1x3x48x320
* ``ppocr_cls``     PP-OCR v2.0 text-direction classifier (MobileNetV3-small), x 1x3x48x192
* ``ddddocr_det``   ddddocr's YOLOX-style detector (SiLU), images 1x3x416x416                         (ddddocr)
* ``ddddocr_ocr``   ddddocr's captcha CRNN (conv + LSTM), input1 1x1x64x256

Generated models (``onnx.helper``, opset 17, seeded random weights of realistic scale, built with
``models._Builder``), small inputs so the tests stay fast:

* ``mobilenet_v3_small``  squeeze-excite (GlobalAveragePool -> 1x1 -> Relu -> 1x1 -> HardSigmoid -> Mul), HardSwish
* ``yolov8_head``         C2f (Split/Concat), nearest Resize, SiLU, anchors from the features' Shape via
                          Range/Expand/Concat as Ultralytics exports them, DFL (Softmax + 1x1 Conv), Split, Sigmoid
* ``svtr_block``          two SVTR attention blocks: LayerNormalization (op and decomposed), q/k/v MatMuls with
                          Softmax, GELU written with Erf
* ``crnn_lstm_gru``       conv stack -> bidirectional LSTM -> GRU -> CTC Softmax
* ``audio_pool_gru``      a speech-quality scorer (PLCMOS-style) on a spectrogram: 3x3 conv + LeakyRelu, MaxPool
                          (1, 4) over frequency bins (column stride 4), a bidirectional GRU, a pooled score
* ``*_qdynamic``, ``*_qstatic``  onnxruntime's ``quantize_dynamic`` / ``quantize_static`` output with their
                          default options (static: QDQ, int8, MinMax over a small seeded calibration reader)

``CORPUS`` maps each name to a ``models.ModelEntry``; ``ALL_MODELS`` is ``models.MODEL_SET`` plus the corpus;
``load(name)`` gives ``(model, {input: seeded input})`` for any of them.

    python benchmarks/corpus.py [--models a,b] [--save DIR]    # build, run on onnxruntime and cnnjit, compare
    python benchmarks/corpus.py --layers [--models a,b] [--runs 30] [--list]   # per model: calls below 50% of peak,
                                                  # of them memory-bound (cnnjit profile, 1 thread; results/)
"""

from __future__ import annotations

import importlib.util
import math
import tempfile
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import onnx
from onnx import helper, numpy_helper

from benchmarks.harness import ort_session
from benchmarks.models import MODEL_SET, ModelEntry, _Builder, _make_divisible
from benchmarks.models import load as load_entry
from benchmarks.models import main as models_main

CORPUS_OPSET = 17  # LayerNormalization (17), HardSwish (14); Split/Squeeze/Unsqueeze take their axes as inputs


# =========================================================================================================
# real models from installed wheels
# =========================================================================================================
#: name -> (package, file inside the package folder, input shape, pip requirement)
WHEEL_MODELS: dict[str, tuple[str, str, tuple[int, ...], str]] = {
    "ppocr_v4_det": ("rapidocr_onnxruntime", "models/ch_PP-OCRv4_det_infer.onnx", (1, 3, 640, 640),
                     "rapidocr-onnxruntime==1.4.4"),
    "ppocr_v4_rec": ("rapidocr_onnxruntime", "models/ch_PP-OCRv4_rec_infer.onnx", (1, 3, 48, 320),
                     "rapidocr-onnxruntime==1.4.4"),
    "ppocr_cls": ("rapidocr_onnxruntime", "models/ch_ppocr_mobile_v2.0_cls_infer.onnx", (1, 3, 48, 192),
                  "rapidocr-onnxruntime==1.4.4"),
    "ddddocr_det": ("ddddocr", "common_det.onnx", (1, 3, 416, 416), "ddddocr==1.6.1"),
    "ddddocr_ocr": ("ddddocr", "common.onnx", (1, 1, 64, 256), "ddddocr==1.6.1"),
}


def wheel_path(package: str, rel: str) -> Path | None:
    """The file ``rel`` inside installed ``package``'s folder (found with importlib, without importing the
    package: its own dependencies need not be installed), or None when the package is not installed."""
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(next(iter(spec.submodule_search_locations))) / rel


def missing_wheel(name: str) -> str:
    """Why real model ``name`` is unavailable, with the command that installs it ("" when it is available)."""
    package, rel, _, req = WHEEL_MODELS[name]
    path = wheel_path(package, rel)
    if path is None:
        return f"{name}: {package} is not installed (pip install --no-deps {req})"
    return "" if path.is_file() else f"{name}: {path} not found (pip install --no-deps {req})"


def _wheel_entry(name: str) -> ModelEntry:
    package, rel, shape, req = WHEEL_MODELS[name]
    path = wheel_path(package, rel) or Path(f"<{package} not installed>") / rel

    def build() -> onnx.ModelProto:
        why = missing_wheel(name)
        if why:
            raise FileNotFoundError(why)
        return onnx.load(str(path))

    build.__name__ = name
    return ModelEntry(build, shape, path, req)


# =========================================================================================================
# graph building
# =========================================================================================================
class _Net(_Builder):
    """``models._Builder`` plus the layers of the corpus: HardSwish/SiLU, squeeze-excite, shape subgraphs,
    attention, LayerNormalization, recurrent layers. Shapes passed to ``node`` are tracked for every value,
    integer ones included (``()`` for a scalar)."""

    def typed(self, prefix: str, arr: np.ndarray) -> str:
        """An initializer whose shape is tracked like a node output's (0-d stays 0-d: ``const`` makes 1-d)."""
        name = self.fresh(prefix)
        self.inits.append(numpy_helper.from_array(arr, name))
        self.shapes[name] = arr.shape
        return name

    def f32(self, prefix: str, arr) -> str:
        return self.typed(prefix, np.asarray(arr, np.float32))

    def i64(self, prefix: str, arr) -> str:
        return self.typed(prefix, np.asarray(arr, np.int64))

    def uniform(self, shape: Sequence[int], bound: float) -> np.ndarray:
        return self.rng.uniform(-bound, bound, tuple(shape)).astype(np.float32)

    def act(self, x: str, kind: str) -> str:
        s = self.shapes[x]
        if kind == "hswish":
            return self.node("HardSwish", [x], s)
        if kind == "hsigmoid":  # PyTorch's Hardsigmoid: relu6(x + 3) / 6
            return self.node("HardSigmoid", [x], s, alpha=1.0 / 6.0, beta=0.5)
        if kind == "silu":  # exported as x * Sigmoid(x)
            return self.node("Mul", [x, self.node("Sigmoid", [x], s)], s)
        return super().act(x, kind)

    def cba(self, x: str, cout: int, k: int, stride: int = 1, group: int = 1, act: str | None = "relu") -> str:
        """Conv (PyTorch-style symmetric padding k // 2, no bias) -> BatchNormalization -> activation."""
        p = k // 2
        y = self.bn(self.conv(x, cout, k, stride, group, bias=False, gain=2.0 if act else 1.0, pads=[p] * 4))
        return self.act(y, act) if act else y

    def binary(self, op: str, a: str, b: str, shape: tuple[int, ...] | None = None) -> str:
        return self.node(op, [a, b], shape if shape is not None else self.shapes[a])

    def squeeze_excite(self, x: str, squeeze: int, gate: str = "hsigmoid") -> str:
        """GlobalAveragePool -> 1x1 conv -> Relu -> 1x1 conv -> gate -> channel scale of ``x``."""
        n, c, _, _ = self.shapes[x]
        s = self.node("GlobalAveragePool", [x], (n, c, 1, 1))
        s = self.relu(self.conv(s, squeeze, 1, pads=[0] * 4))
        s = self.act(self.conv(s, c, 1, gain=1.0, pads=[0] * 4), gate)
        return self.binary("Mul", x, s)

    def reshape(self, x: str, shape: Sequence[int], out_shape: tuple[int, ...]) -> str:
        return self.node("Reshape", [x, self.i64("shape", list(shape))], out_shape)

    def transpose(self, x: str, perm: Sequence[int]) -> str:
        return self.node("Transpose", [x], tuple(self.shapes[x][p] for p in perm), perm=list(perm))

    def unsqueeze(self, x: str, axis: int, shape: tuple[int, ...]) -> str:
        return self.node("Unsqueeze", [x, self.i64("axes", [axis])], shape)

    def squeeze(self, x: str, axis: int) -> str:
        s = list(self.shapes[x])
        del s[axis]
        return self.node("Squeeze", [x, self.i64("axes", [axis])], tuple(s))

    def concat(self, xs: Sequence[str], axis: int) -> str:
        shape = list(self.shapes[xs[0]])
        shape[axis] = sum(self.shapes[x][axis] for x in xs)
        return self.node("Concat", list(xs), tuple(shape), axis=axis)

    def split(self, x: str, sizes: Sequence[int], axis: int) -> list[str]:
        outs = [self.fresh("split") for _ in sizes]
        self.nodes.append(helper.make_node("Split", [x, self.i64("split", list(sizes))], outs, name=outs[0],
                                           axis=axis))
        for o, size in zip(outs, sizes):
            shape = list(self.shapes[x])
            shape[axis] = size
            self.shapes[o] = tuple(shape)
        return outs

    def matmul(self, x: str, nout: int, bias: bool = True, gain: float = 1.0) -> str:
        """x @ W (+ b) over the last axis, as PyTorch exports Linear on 3-D input."""
        k = self.shapes[x][-1]
        w = (self.rng.standard_normal((k, nout)) * math.sqrt(gain / k)).astype(np.float32)
        y = self.node("MatMul", [x, self.const("mm_W", w)], self.shapes[x][:-1] + (nout,))
        if bias:
            y = self.binary("Add", y, self.f32("mm_B", self.rng.standard_normal(nout) * 0.05))
        return y

    def layer_norm(self, x: str, decomposed: bool = False, eps: float = 1e-5) -> str:
        """LayerNormalization over the last axis: the op, or the ReduceMean/Sub/Pow/Sqrt/Div chain that
        exporters without the op (opset < 17, PaddlePaddle) write."""
        c = self.shapes[x][-1]
        gamma = self.f32("ln_g", self.rng.uniform(0.5, 1.5, c))
        beta = self.f32("ln_b", self.rng.standard_normal(c) * 0.1)
        if not decomposed:
            return self.node("LayerNormalization", [x, gamma, beta], self.shapes[x], axis=-1, epsilon=eps)
        red = self.shapes[x][:-1] + (1,)
        mean = self.node("ReduceMean", [x], red, axes=[-1], keepdims=1)
        d = self.binary("Sub", x, mean)
        var = self.node("ReduceMean", [self.binary("Pow", d, self.f32("two", 2.0))], red, axes=[-1], keepdims=1)
        std = self.node("Sqrt", [self.binary("Add", var, self.f32("eps", eps))], red)
        y = self.binary("Div", d, std)
        return self.binary("Add", self.binary("Mul", y, gamma), beta)

    def gelu_erf(self, x: str) -> str:
        """x * 0.5 * (1 + erf(x / sqrt(2))), as torch.nn.GELU exports below opset 20."""
        e = self.node("Erf", [self.binary("Div", x, self.f32("sqrt2", math.sqrt(2.0)))], self.shapes[x])
        return self.binary("Mul", self.binary("Mul", x, self.binary("Add", e, self.f32("one", 1.0))),
                           self.f32("half", 0.5))

    def finish(self, inp: str, out: str) -> onnx.ModelProto:
        m = self.model(inp, out)
        m.opset_import[0].version = CORPUS_OPSET
        m.producer_name = "cnnjit-corpus"
        return m


# =========================================================================================================
# the generated models
# =========================================================================================================
def mobilenet_v3_small(size: int = 64, classes: int = 100, seed: int = 11) -> onnx.ModelProto:
    """MobileNetV3-small (torchvision's block table) on 1x3xSxS: HardSwish, squeeze-excite with HardSigmoid."""
    b = _Net(f"mobilenet_v3_small_{size}", seed)
    x = b.input((1, 3, size, size))
    y = b.cba(x, 16, 3, stride=2, act="hswish")
    # kernel, expanded channels, out channels, squeeze-excite, activation, stride
    cfg = [(3, 16, 16, True, "relu", 2), (3, 72, 24, False, "relu", 2), (3, 88, 24, False, "relu", 1),
           (5, 96, 40, True, "hswish", 2), (5, 240, 40, True, "hswish", 1), (5, 240, 40, True, "hswish", 1),
           (5, 120, 48, True, "hswish", 1), (5, 144, 48, True, "hswish", 1), (5, 288, 96, True, "hswish", 2),
           (5, 576, 96, True, "hswish", 1), (5, 576, 96, True, "hswish", 1)]
    for k, exp, cout, se, act, s in cfg:
        cin = b.shapes[y][1]
        z = b.cba(y, exp, 1, act=act) if exp != cin else y
        z = b.cba(z, exp, k, stride=s, group=exp, act=act)
        if se:
            z = b.squeeze_excite(z, _make_divisible(exp // 4, 8))
        z = b.cba(z, cout, 1, act=None)
        y = b.add(z, y) if s == 1 and cin == cout else z
    y = b.cba(y, 576, 1, act="hswish")
    y = b.act(b.gemm(b.gap_flatten(y), 1024, gain=2.0), "hswish")
    y = b.gemm(y, classes)
    return b.finish(x, y)


def _c2f(b: _Net, x: str, cout: int) -> str:
    """Ultralytics C2f: 1x1 conv, Split in halves, a residual bottleneck on the second, Concat, 1x1 conv."""
    y = b.cba(x, cout, 1, act="silu")
    h = cout // 2
    y1, y2 = b.split(y, [h, h], axis=1)
    y3 = b.add(y2, b.cba(b.cba(y2, h, 3, act="silu"), h, 3, act="silu"))
    return b.cba(b.concat([y1, y2, y3], 1), cout, 1, act="silu")


def _grid(b: _Net, feat: str, stride: float) -> tuple[str, str]:
    """Anchor points ((h*w, 2): x + 0.5, y + 0.5) and strides ((h*w, 1)) of one level, built from the
    feature map's Shape as Ultralytics' make_anchors exports: Range, Expand (meshgrid), Concat."""
    _, _, h, w = b.shapes[feat]
    shp = b.node("Shape", [feat], (4,))
    hi = b.node("Gather", [shp, b.i64("idx", 2)], (), axis=0)
    wi = b.node("Gather", [shp, b.i64("idx", 3)], (), axis=0)
    hf = b.node("Cast", [hi], (), to=onnx.TensorProto.FLOAT)
    wf = b.node("Cast", [wi], (), to=onnx.TensorProto.FLOAT)
    zero, one, half = b.f32("zero", 0.0), b.f32("one", 1.0), b.f32("half", 0.5)
    sx = b.binary("Add", b.node("Range", [zero, wf, one], (w,)), half)
    sy = b.binary("Add", b.node("Range", [zero, hf, one], (h,)), half)
    hw = b.concat([b.unsqueeze(hi, 0, (1,)), b.unsqueeze(wi, 0, (1,))], 0)
    gx = b.node("Expand", [b.unsqueeze(sx, 0, (1, w)), hw], (h, w))
    gy = b.node("Expand", [b.unsqueeze(sy, 1, (h, 1)), hw], (h, w))
    xy = b.concat([b.unsqueeze(gx, 2, (h, w, 1)), b.unsqueeze(gy, 2, (h, w, 1))], 2)
    points = b.reshape(xy, [-1, 2], (h * w, 2))
    n = b.unsqueeze(b.binary("Mul", hi, wi), 0, (1,))
    strides = b.node("Expand", [b.f32("stride", [[stride]]), b.concat([n, b.i64("one", [1])], 0)], (h * w, 1))
    return points, strides


def yolov8_head(size: int = 64, classes: int = 8, reg_max: int = 16, seed: int = 12) -> onnx.ModelProto:
    """A YOLOv8n-style detector on 1x3xSxS: SiLU convs, C2f, an upsampling neck, three decoupled head levels
    (strides 8, 16, 32), DFL box decoding and Sigmoid scores; output (1, 4 + classes, anchors)."""
    b = _Net(f"yolov8_head_{size}", seed)
    x = b.input((1, 3, size, size))
    y = b.cba(x, 16, 3, stride=2, act="silu")
    y = _c2f(b, b.cba(y, 32, 3, stride=2, act="silu"), 32)
    p3 = _c2f(b, b.cba(y, 64, 3, stride=2, act="silu"), 64)
    p4 = b.cba(p3, 64, 3, stride=2, act="silu")
    p5 = b.cba(p4, 128, 3, stride=2, act="silu")
    n, c5, h5, w5 = b.shapes[p5]
    up = b.node("Resize", [p5, "", b.f32("scales", [1, 1, 2, 2])], (n, c5, 2 * h5, 2 * w5), mode="nearest")
    p4 = _c2f(b, b.concat([up, p4], 1), 64)
    no = 4 * reg_max + classes
    levels, points, strides = [], [], []
    for feat, stride in ((p3, 8.0), (p4, 16.0), (p5, 32.0)):
        box = b.conv(b.cba(b.cba(feat, 64, 3, act="silu"), 64, 3, act="silu"), 4 * reg_max, 1, gain=1.0,
                     pads=[0] * 4)
        cls = b.conv(b.cba(b.cba(feat, 64, 3, act="silu"), 64, 3, act="silu"), classes, 1, gain=1.0,
                     pads=[0] * 4)
        head = b.concat([box, cls], 1)
        _, _, h, w = b.shapes[head]
        levels.append(b.reshape(head, [1, no, -1], (1, no, h * w)))
        pt, st = _grid(b, head, stride)
        points.append(pt)
        strides.append(st)
    a = sum(b.shapes[v][2] for v in levels)
    box, cls = b.split(b.concat(levels, 2), [4 * reg_max, classes], axis=1)
    # DFL: softmax over the reg_max bins of each side, expectation by a fixed 1x1 conv with weights 0..15
    dist = b.node("Softmax", [b.transpose(b.reshape(box, [1, 4, reg_max, a], (1, 4, reg_max, a)), [0, 2, 1, 3])],
                  (1, reg_max, 4, a), axis=1)
    proj = b.f32("dfl_W", np.arange(reg_max, dtype=np.float32).reshape(1, reg_max, 1, 1))
    dist = b.reshape(b.node("Conv", [dist, proj], (1, 1, 4, a), kernel_shape=[1, 1]), [1, 4, a], (1, 4, a))
    anchors = b.transpose(b.concat(points, 0), [1, 0])  # (2, a)
    stride_t = b.transpose(b.concat(strides, 0), [1, 0])  # (1, a)
    lt, rb = b.split(dist, [2, 2], axis=1)
    x1y1 = b.binary("Sub", anchors, lt, (1, 2, a))
    x2y2 = b.binary("Add", anchors, rb, (1, 2, a))
    cxy = b.binary("Div", b.binary("Add", x1y1, x2y2), b.f32("two", 2.0))
    wh = b.binary("Sub", x2y2, x1y1)
    dbox = b.binary("Mul", b.concat([cxy, wh], 1), stride_t)
    y = b.concat([dbox, b.node("Sigmoid", [cls], b.shapes[cls])], 1)
    return b.finish(x, y)


def _attention(b: _Net, x: str, heads: int) -> str:
    """Multi-head self-attention as PaddleOCR's SVTR exports it: one qkv MatMul, Reshape/Transpose, Gather
    of q, k and v, q @ k^T scaled, Softmax, @ v, back to tokens, projection."""
    n, t, c = b.shapes[x]
    d = c // heads
    qkv = b.transpose(b.reshape(b.matmul(x, 3 * c), [0, -1, 3, heads, d], (n, t, 3, heads, d)), [2, 0, 3, 1, 4])
    q, k, v = (b.node("Gather", [qkv, b.i64("idx", i)], (n, heads, t, d), axis=0) for i in range(3))
    q = b.binary("Mul", q, b.f32("scale", d ** -0.5))
    att = b.node("Softmax", [b.node("MatMul", [q, b.transpose(k, [0, 1, 3, 2])], (n, heads, t, t))],
                 (n, heads, t, t), axis=-1)
    o = b.transpose(b.node("MatMul", [att, v], (n, heads, t, d)), [0, 2, 1, 3])
    return b.matmul(b.reshape(o, [0, -1, c], (n, t, c)), c)


def svtr_block(height: int = 32, width: int = 128, dim: int = 64, heads: int = 4, classes: int = 97,
               seed: int = 13) -> onnx.ModelProto:
    """An SVTR recognizer tail on 1x3xHxW: a HardSwish conv stem, tokens (H/8 x W/8), two pre-norm
    transformer blocks (the first with LayerNormalization, the second with its decomposed form; GELU via
    Erf), a final LayerNormalization and a CTC Softmax over ``classes``."""
    b = _Net(f"svtr_block_{height}x{width}", seed)
    x = b.input((1, 3, height, width))
    y = b.cba(b.cba(x, 32, 3, stride=2, act="hswish"), dim, 3, stride=2, act="hswish")
    n, c, h, w = b.shapes[y]
    y = b.node("AveragePool", [y], (n, c, h // 2, w // 2), kernel_shape=[2, 2], strides=[2, 2])
    t = (h // 2) * (w // 2)
    y = b.transpose(b.reshape(y, [0, c, -1], (n, c, t)), [0, 2, 1])
    for decomposed in (False, True):
        y = b.add(y, _attention(b, b.layer_norm(y, decomposed), heads))
        y = b.add(y, b.matmul(b.gelu_erf(b.matmul(b.layer_norm(y, decomposed), 2 * dim, gain=2.0)), dim))
    y = b.softmax(b.matmul(b.layer_norm(y), classes, gain=4.0))
    return b.finish(x, y)


def _rnn_weights(b: _Net, op: str, dirs: int, gates: int, inp: int, hidden: int) -> list[str]:
    """W, R, B of an ONNX LSTM/GRU, PyTorch's initialisation: uniform(-1/sqrt(hidden), 1/sqrt(hidden))."""
    k = 1.0 / math.sqrt(hidden)
    return [b.const(f"{op}_W", b.uniform((dirs, gates * hidden, inp), k)),
            b.const(f"{op}_R", b.uniform((dirs, gates * hidden, hidden), k)),
            b.const(f"{op}_B", b.uniform((dirs, 2 * gates * hidden), k))]


def crnn_lstm_gru(height: int = 32, width: int = 128, hidden: int = 64, classes: int = 37,
                  seed: int = 14) -> onnx.ModelProto:
    """A captcha CRNN on a 1x1xHxW grey image: conv/pool stack, a (H/4)x1 conv to one row, then time-major
    (T, 1, C) through a bidirectional LSTM and a forward GRU (linear_before_reset, as PyTorch exports), and a
    per-step Softmax over ``classes``; output (T, 1, classes)."""
    b = _Net(f"crnn_lstm_gru_{height}x{width}", seed)
    x = b.input((1, 1, height, width))
    y = b.maxpool(b.cba(x, 32, 3))
    y = b.maxpool(b.cba(y, 64, 3))
    _, _, h, _ = b.shapes[y]
    y = b.relu(b.bn(b.conv(y, 128, (h, 1), bias=False, pads=[0] * 4)))
    y = b.transpose(b.squeeze(y, 2), [2, 0, 1])  # (T, 1, C)
    t, n, c = b.shapes[y]
    lstm = b.node("LSTM", [y, *_rnn_weights(b, "lstm", 2, 4, c, hidden)], (t, 2, n, hidden),
                  hidden_size=hidden, direction="bidirectional")
    y = b.reshape(b.transpose(lstm, [0, 2, 1, 3]), [0, 0, -1], (t, n, 2 * hidden))
    gru = b.node("GRU", [y, *_rnn_weights(b, "gru", 1, 3, 2 * hidden, hidden)], (t, 1, n, hidden),
                 hidden_size=hidden, linear_before_reset=1)
    y = b.softmax(b.matmul(b.squeeze(gru, 1), classes, gain=16.0))  # GRU states are small
    return b.finish(x, y)


def audio_pool_gru(frames: int = 48, bins: int = 65, hidden: int = 32, seed: int = 15) -> onnx.ModelProto:
    """A speech-quality scorer on a 1x1xFRAMESxBINS spectrogram, as speechmos's PLCMOS exports it: two 3x3
    conv + LeakyRelu layers, each followed by a (1, 4) MaxPool over the frequency bins (a column stride of 4;
    ``bins`` not a multiple of it, so each row has columns past the last window), then frames as time steps
    (T, 1, C * bins') through a bidirectional GRU, a per-step linear score, Sigmoid, mean over time."""
    b = _Net(f"audio_pool_gru_{frames}x{bins}", seed)
    x = b.input((1, 1, frames, bins))
    y = x
    for cout in (16, 32):
        y = b.conv(y, cout, 3, pads=[1] * 4)
        y = b.node("LeakyRelu", [y], b.shapes[y], alpha=0.2)
        n, c, h, w = b.shapes[y]
        y = b.node("MaxPool", [y], (n, c, h, (w - 4) // 4 + 1), kernel_shape=[1, 4], strides=[1, 4])
    n, c, h, w = b.shapes[y]
    y = b.reshape(b.transpose(y, [2, 0, 1, 3]), [h, 1, c * w], (h, 1, c * w))  # (T, 1, C * bins')
    gru = b.node("GRU", [y, *_rnn_weights(b, "gru", 2, 3, c * w, hidden)], (h, 2, 1, hidden),
                 hidden_size=hidden, direction="bidirectional", linear_before_reset=1)
    y = b.reshape(b.transpose(gru, [0, 2, 1, 3]), [0, 0, -1], (h, 1, 2 * hidden))
    y = b.node("Sigmoid", [b.matmul(y, 1, gain=16.0)], (h, 1, 1))
    y = b.node("ReduceMean", [y], (1, 1, 1), axes=[0], keepdims=1)
    return b.finish(x, y)


# =========================================================================================================
# onnxruntime's quantization tool, default options
# =========================================================================================================
class _Calibration:
    """onnxruntime ``CalibrationDataReader``: ``count`` seeded standard-normal inputs."""

    def __init__(self, name: str, shape: tuple[int, ...], count: int = 4, seed: int = 100):
        rng = np.random.default_rng(seed)
        self._feeds = iter([{name: rng.standard_normal(shape).astype(np.float32)} for _ in range(count)])

    def get_next(self) -> dict[str, np.ndarray] | None:
        return next(self._feeds, None)


def quantized(base: str, how: str) -> onnx.ModelProto:
    """Corpus model ``base`` written by onnxruntime's ``quantize_dynamic`` or ``quantize_static`` (``how``:
    "dynamic" / "static"), default options; the static one calibrated on 4 seeded inputs."""
    from onnxruntime.quantization import quantize_dynamic, quantize_static  # optional heavy dependency

    entry = CORPUS[base]
    model = entry.build()
    with tempfile.TemporaryDirectory(prefix="cnnjit-corpus-") as tmp:
        src, dst = Path(tmp) / "float.onnx", Path(tmp) / "quant.onnx"
        onnx.save(model, src)
        if how == "dynamic":
            quantize_dynamic(src, dst)
        elif how == "static":
            quantize_static(src, dst, _Calibration(model.graph.input[0].name, entry.input_shape))
        else:
            raise ValueError(f"unknown quantization {how!r}: dynamic or static")
        return onnx.load(str(dst))


def _quantized_entry(base: str, how: str) -> ModelEntry:
    def build() -> onnx.ModelProto:
        return quantized(base, how)

    build.__name__ = f"{base}_q{how}"
    return ModelEntry(build, CORPUS[base].input_shape, source=f"quantize_{how}")


# =========================================================================================================
# the registry
# =========================================================================================================
#: every corpus model: the real ones (from wheels; ``available()`` is False when not installed) and ours
CORPUS: dict[str, ModelEntry] = {name: _wheel_entry(name) for name in WHEEL_MODELS}
CORPUS.update({
    "mobilenet_v3_small": ModelEntry(mobilenet_v3_small, (1, 3, 64, 64), source="corpus"),
    "yolov8_head": ModelEntry(yolov8_head, (1, 3, 64, 64), source="corpus"),
    "svtr_block": ModelEntry(svtr_block, (1, 3, 32, 128), source="corpus"),
    "crnn_lstm_gru": ModelEntry(crnn_lstm_gru, (1, 1, 32, 128), source="corpus"),
    "audio_pool_gru": ModelEntry(audio_pool_gru, (1, 1, 48, 65), source="corpus"),
})
for _base, _how in (("mobilenet_v3_small", "dynamic"), ("crnn_lstm_gru", "dynamic"),
                    ("mobilenet_v3_small", "static"), ("yolov8_head", "static")):
    CORPUS[f"{_base}_q{_how}"] = _quantized_entry(_base, _how)

#: names of the real models and of the generated ones
REAL = list(WHEEL_MODELS)
GENERATED_CORPUS = [n for n in CORPUS if n not in WHEEL_MODELS]
#: the benchmark set and the corpus in one registry (names do not overlap)
ALL_MODELS: dict[str, ModelEntry] = {**MODEL_SET, **CORPUS}


#: max |cnnjit - onnxruntime| / max |onnxruntime output| accepted against the nearer of onnxruntime's two
#: results (``reference_outputs``): float models, and models quantized by onnxruntime's tool (activations are
#: re-quantized after every layer, so a float summation order can flip a rounding by one step, which moves
#: the output by about 1/127 of its scale: 1e-2 allows about one such step, not a systematic difference)
FLOAT_TOL = 1e-3
QUANT_TOL = 1e-2


def tolerance(name: str) -> float:
    """The accepted error of corpus model ``name`` relative to its output's scale."""
    return QUANT_TOL if ALL_MODELS[name].source.startswith("quantize_") else FLOAT_TOL


def reference_outputs(model: onnx.ModelProto, feeds: dict[str, np.ndarray]) -> list[list[np.ndarray]]:
    """onnxruntime's outputs (1 thread) with all graph optimisations, then with none. They differ on QDQ
    models: ORT_ENABLE_ALL fuses QuantizeLinear/DequantizeLinear pairs into integer kernels that round
    differently from the operators' definitions, which ORT_DISABLE_ALL runs; a compiler may follow either."""
    return [ort_session(model, threads=1, optimize=optimize).run(None, feeds) for optimize in (True, False)]


def load(name: str, seed: int = 0) -> tuple[onnx.ModelProto, dict[str, np.ndarray]]:
    """(model, {input name: seeded standard-normal input}) for any name of ``ALL_MODELS``."""
    return load_entry(name, seed, ALL_MODELS)


def layer_counts(doc: dict, key: str = "median_ms") -> dict[str, float]:
    """Of a ``cnnjit.profile.profile_model`` result: calls, the calls below half the FMA peak (data movement,
    no FLOPs, among them), of those the memory-bound ones (``roofline.verdict``), and the time of the rest,
    each call judged on its ``key`` time (``median_ms``, as ``cnnjit profile`` prints, or ``min_ms``: the
    fastest of the runs, on a busy machine the one least interrupted)."""
    from cnnjit.roofline import SLOW_PEAK_SHARE, verdict

    peak = doc["peak_gflops"]
    n = m = 0
    rest_ms = 0.0
    for r in doc["calls"]:
        t = r[key]
        share = r["flops"] / t / 1e6 / peak if t and r["flops"] else 0.0
        if r["flops"] and share >= SLOW_PEAK_SHARE:
            continue
        n += 1
        if verdict(r["memory_bound"], r["memory_ms"] / t if t else 0.0, share if r["flops"] else None) == "memory":
            m += 1
        else:
            rest_ms += t
    return {"calls": len(doc["calls"]), "below_peak": n, "memory_bound": m, "not_memory_ms": rest_ms,
            "sum_ms": sum(r[key] for r in doc["calls"])}


def slow_calls(doc: dict) -> list[str]:
    """Lines of a ``cnnjit.profile.profile_model`` result's calls below half the FMA peak on their fastest run:
    call, variant, shapes, time, % of peak (minimum, median), roofline verdict (on the median, as ``cnnjit
    profile``), the level it is judged against and its FLOP per byte."""
    from cnnjit.roofline import SLOW_PEAK_SHARE

    out = []
    for r in doc["calls"]:
        share = r["flops"] / (r["min_ms"] * 1e6) / doc["peak_gflops"] if r["flops"] and r["min_ms"] else None
        if share is None or share >= SLOW_PEAK_SHARE:
            continue
        out.append(f"  #{r['call']:<4d}{r['variant'] or r['op']:22s} {r['note'][:70]:70s} {1e3 * r['min_ms']:9.1f} us "
                   f"{100 * share:5.1f}% (median {r['percent_of_peak'] or 0:5.1f}%) {r['verdict']:11s} {r['level']:4s} "
                   f"{r['intensity'] or 0:.2f} FLOP/B")
    return out


def layers_main(argv: Sequence[str]) -> int:
    """``--layers``: profile each corpus model (1 thread) and print, per model, "calls below 50% of peak: n, of
    which memory-bound m", judged on the per-call medians and minima; writes ``results/corpus_layers``."""
    import argparse

    from benchmarks.harness import write_json, write_markdown
    from cnnjit.profile import profile_model

    ap = argparse.ArgumentParser(description=layers_main.__doc__.splitlines()[0])
    ap.add_argument("--layers", action="store_true")
    ap.add_argument("--models", default="", help="comma-separated names (default: every available corpus model)")
    ap.add_argument("--runs", type=int, default=30)
    ap.add_argument("--list", action="store_true",
                    help="also print every call below half the peak (on its minimum) with its verdict and FLOP/byte")
    args = ap.parse_args(argv)
    names = [s for s in args.models.split(",") if s] or [n for n in CORPUS if CORPUS[n].available()]
    rows, payload = [], {"runs": args.runs, "models": {}}
    for name in names:
        model, feeds = load(name)
        doc = profile_model(model, {k: v.shape for k, v in feeds.items()}, feeds, repeat=args.runs, threads=1)
        med, mn = layer_counts(doc), layer_counts(doc, "min_ms")
        payload["models"][name] = {"median": med, "min": mn}
        print(f"{name}: calls below 50% of peak: {med['below_peak']}, of which memory-bound {med['memory_bound']} "
              f"(on minima: {mn['below_peak']}, {mn['memory_bound']}) of {med['calls']} calls", flush=True)
        if args.list:
            print("\n".join(slow_calls(doc)), flush=True)
        rows.append([name, med["calls"], med["below_peak"], med["memory_bound"], med["not_memory_ms"], med["sum_ms"],
                     mn["below_peak"], mn["memory_bound"], mn["not_memory_ms"], mn["sum_ms"]])
    write_json("corpus_layers", payload)
    write_markdown("corpus_layers", ["model", "calls", "below 50% of peak", "of which memory-bound",
                                     "ms of the others", "sum ms", "below 50% (min)", "memory-bound (min)",
                                     "ms of the others (min)", "sum ms (min)"], rows,
                   title="Corpus: calls below 50% of the FMA peak, and how many are memory-bound",
                   notes=[f"`python benchmarks/corpus.py --layers --runs {args.runs}`: cnnjit profile, 1 thread; each "
                          "call judged on its median time, then on its fastest run (min)"])
    return 0


if __name__ == "__main__":
    import sys

    if "--layers" in sys.argv[1:]:
        raise SystemExit(layers_main(sys.argv[1:]))
    raise SystemExit(models_main(None, ALL_MODELS, list(CORPUS), reference_outputs, tolerance))
