"""Fuzzing the whole pipeline (load -> import -> passes -> codegen -> call) with hostile models.

Three generators, all driven by hypothesis (derandomized, so CI runs are reproducible):

* byte mutations of real models (bit flips, truncation, overwrites, insertions, deletions);
* field edits of parsed models (attributes of the wrong type or value, renamed/duplicated/dangling
  values, cycles, re-ordered or deleted nodes, broken initializers, absurd shapes, hostile strings);
* structurally weird but valid graphs (outputs that are inputs or constants, one value as two outputs,
  unused inputs, zero-sized dimensions, unsorted nodes, long chains, diamonds), checked against
  onnxruntime.

Every example must end in a result that matches onnxruntime (or, where onnxruntime refuses the model, the
onnx reference implementation; or that neither runs), or in a ``cnnjit.ModelError`` / ``cnnjit.InputError``;
any other exception (``CompileError`` and ``IRError`` included: they mean a compiler bug) or a disagreement
with an oracle fails. Each test also needs a minimum of oracle-checked examples. The outcome counts per
category are printed (see them with ``pytest -rP``) and written to ``<pytest basetemp>/fuzz-summary-<test>.json``.
"""

from __future__ import annotations

import collections
import json
import os
from pathlib import Path

import numpy as np
import onnx
import pytest
from conftest import MLPERF_TINY_DIR, ort_session
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from onnx import TensorProto, helper, numpy_helper
from onnx.reference import ReferenceEvaluator

import cnnjit

#: keep every example small: tensors and arenas beyond these are refused (as ResourceLimitError)
LIMITS = {"max_tensor_bytes": 16 << 20, "max_arena_bytes": 64 << 20}
MAX_INPUT_ELEMS = 1 << 20
#: what a bad model or input may raise (CompileError and IRError are compiler bugs, so they fail the test)
MODEL_ERRORS = (cnnjit.ModelError, cnnjit.InputError)
FUZZ = settings(max_examples=600, deadline=None, derandomize=True, database=None,
                suppress_health_check=list(HealthCheck))

HOSTILE = [
    "__import__('os').system('touch /tmp/cnnjit_pwned')",
    "x'); import os; os._exit(3) #",
    '"""; raise SystemExit(7) #',
    "\nimport sys; sys.exit(9)\n",
    "{__import__('sys').exit(5)}",
    "int main(){system(\"rm -rf /\");}",
    "\x00\x01\xff",
]


# -- seed models ------------------------------------------------------------------------------------------
def conv_model(batch: int | str = 1) -> onnx.ModelProto:
    rng = np.random.default_rng(7)
    w = rng.standard_normal((4, 3, 3, 3)).astype(np.float32)
    b = rng.standard_normal(4).astype(np.float32)
    w2 = rng.standard_normal((4 * 2 * 2, 5)).astype(np.float32)
    nodes = [
        helper.make_node("Conv", ["X", "W", "B"], ["c"], name="conv", pads=[1, 1, 1, 1], kernel_shape=[3, 3],
                         strides=[1, 1]),
        helper.make_node("Relu", ["c"], ["r"], name="relu"),
        helper.make_node("MaxPool", ["r"], ["p"], name="pool", kernel_shape=[2, 2], strides=[2, 2]),
        helper.make_node("Flatten", ["p"], ["f"], name="flat", axis=1),
        helper.make_node("MatMul", ["f", "W2"], ["m"], name="mm"),
        helper.make_node("Sigmoid", ["m"], ["Y"], name="sig"),
    ]
    graph = helper.make_graph(
        nodes, "conv_model",
        [helper.make_tensor_value_info("X", TensorProto.FLOAT, [batch, 3, 4, 4])],
        [helper.make_tensor_value_info("Y", TensorProto.FLOAT, [batch, 5])],
        initializer=[numpy_helper.from_array(w, "W"), numpy_helper.from_array(b, "B"),
                     numpy_helper.from_array(w2, "W2")],
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)], ir_version=8)


def elementwise_model() -> onnx.ModelProto:
    nodes = [
        helper.make_node("Add", ["A", "Bc"], ["s"], name="add"),
        helper.make_node("Mul", ["s", "A"], ["m"], name="mul"),
        helper.make_node("Reshape", ["m", "shape"], ["r"], name="reshape"),
        helper.make_node("Transpose", ["r"], ["t"], name="tr", perm=[1, 0]),
        helper.make_node("Softmax", ["t"], ["Y"], name="sm", axis=-1),
        helper.make_node("Concat", ["s", "A"], ["Z"], name="cat", axis=0),
    ]
    graph = helper.make_graph(
        nodes, "ew",
        [helper.make_tensor_value_info("A", TensorProto.FLOAT, [2, 6])],
        [helper.make_tensor_value_info("Y", TensorProto.FLOAT, [4, 3]),
         helper.make_tensor_value_info("Z", TensorProto.FLOAT, [4, 6])],
        initializer=[numpy_helper.from_array(np.linspace(-1, 1, 6, dtype=np.float32), "Bc"),
                     numpy_helper.from_array(np.array([3, 4], np.int64), "shape")],
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)], ir_version=8)


def _seeds() -> dict[str, bytes]:
    seeds = {"conv": conv_model().SerializeToString(), "conv_sym": conv_model("N").SerializeToString(),
             "ew": elementwise_model().SerializeToString()}
    kws = MLPERF_TINY_DIR / "kws_ref_model_float32.tf2onnx.onnx"
    if kws.is_file():
        seeds["kws"] = kws.read_bytes()
    return seeds


SEEDS = _seeds()
SEED_NAMES = sorted(SEEDS)


# -- running one example ----------------------------------------------------------------------------------
def _input_for(sig, rng: np.random.Generator) -> np.ndarray | None:
    if sig.dims is None:
        return None
    shape = tuple(1 if d is None else int(d) for d in sig.dims)
    if max(shape, default=0) > MAX_INPUT_ELEMS or int(np.prod(shape, dtype=np.float64)) > MAX_INPUT_ELEMS:
        return None  # (one huge dimension beside a zero one: numpy refuses to make even the empty array)
    dt = np.dtype(sig.dtype)
    if dt.kind == "f":
        return rng.standard_normal(shape).astype(dt)
    if dt.kind in "iu":
        return rng.integers(0, 3, size=shape).astype(dt)
    if dt.kind == "b":
        return rng.integers(0, 2, size=shape).astype(bool)
    return None


def _oracle_outputs(data: bytes, feeds: dict[str, np.ndarray]) -> tuple[str, list[np.ndarray]] | None:
    """(oracle, outputs) from onnxruntime, or from the onnx reference implementation when onnxruntime
    refuses the model (it is stricter, e.g. about duplicate node names); None when neither runs it."""
    try:
        return "onnxruntime", ort_session(data).run(None, feeds)
    except Exception:  # noqa: BLE001 - onnxruntime rejects the model or the call
        pass
    try:
        return "the onnx reference", list(ReferenceEvaluator(onnx.load_from_string(data)).run(None, feeds))
    except Exception:  # noqa: BLE001 - the reference rejects it too: no oracle
        return None


def _agree(got: list[np.ndarray], want: list[np.ndarray]) -> bool:
    if len(got) != len(want):
        return False
    for g, w in zip(got, want):
        w = np.asarray(w)
        if g.shape != w.shape or g.dtype != w.dtype:
            return False
        if g.dtype.kind == "f":
            if not np.all(np.isfinite(w)) or (w.size and np.abs(w).max() > 1e30):
                continue  # overflowed or NaN weights: summation order decides; shape/dtype only
            if not np.allclose(g, w, rtol=1e-3, atol=1e-4 * max(1.0, float(np.abs(w).max(initial=0))),
                               equal_nan=True):
                return False
        elif not np.array_equal(g, w):
            return False
    return True


def run_example(data: bytes | onnx.ModelProto, counts: collections.Counter, verify: bool = True) -> str:
    """Compile and run one model; return its outcome category (and count it).

    The outcome is a result that matches an oracle (or one no oracle runs), or a ``MODEL_ERRORS`` error.
    Anything else fails the example: another exception (``CompileError`` and ``IRError`` mean a compiler
    bug), or a result that differs from onnxruntime's or the onnx reference's.
    """
    if isinstance(data, onnx.ModelProto):
        data = data.SerializeToString()
    outcome = _run(data, verify)
    counts[outcome] += 1
    return outcome


def _run(data: bytes, verify: bool) -> str:
    try:
        m = cnnjit.compile(data, **LIMITS)
    except MODEL_ERRORS as e:
        return f"compile: {type(e).__name__}"
    rng = np.random.default_rng(0)
    feeds = {}
    for s in m.inputs:
        x = _input_for(s, rng)
        if x is None:
            return "compiled, not run (input unknown or large)"
        feeds[s.name] = x
    try:
        outs = m.run(None, feeds)
    except MODEL_ERRORS as e:
        return f"call: {type(e).__name__}"
    for o in outs:
        assert isinstance(o, np.ndarray)
    if not verify:
        return "ran"
    oracle = _oracle_outputs(data, feeds)
    if oracle is None:
        return "ran (no oracle runs it: unverified)"
    name, want = oracle
    assert _agree(outs, want), f"cnnjit and {name} disagree on a model both run"
    return f"ran, matches {name}"


def verified(counts: collections.Counter) -> int:
    """How many examples ran and matched an oracle."""
    return sum(n for k, n in counts.items() if k.startswith("ran, matches"))


@pytest.fixture(scope="module")
def summary(tmp_path_factory):
    """Outcome counts per fuzzer; printed and written as JSON when the module's tests are done."""
    counts: dict[str, collections.Counter] = collections.defaultdict(collections.Counter)
    yield counts
    base = tmp_path_factory.getbasetemp()
    for test, c in counts.items():
        _report(c, test)
        (Path(base) / f"fuzz-summary-{test}.json").write_text(json.dumps(dict(c), indent=1))


def _report(counts: collections.Counter, name: str) -> None:
    print(f"fuzz {name}: {sum(counts.values())} examples")
    for k, n in counts.most_common():
        print(f"  {n:6d}  {k}")


def fuzz(summary: dict[str, collections.Counter], name: str, models: st.SearchStrategy, examples: int,
         allowed: tuple[str, ...] = ()) -> collections.Counter:
    """Run ``examples`` models drawn from ``models`` through ``run_example`` and print the outcome counts
    (kept in ``summary[name]``); with ``allowed``, every outcome must start with one of those prefixes."""
    counts = summary[name]

    @settings(FUZZ, max_examples=examples)
    @given(data=models)
    def one(data: bytes | onnx.ModelProto) -> None:
        outcome = run_example(data, counts)
        assert not allowed or outcome.startswith(allowed), outcome

    one()
    _report(counts, name)
    return counts


# -- 1. byte mutations --------------------------------------------------------------------------------------
@st.composite
def byte_mutation(draw) -> bytes:
    data = bytearray(SEEDS[draw(st.sampled_from(SEED_NAMES))])
    for _ in range(draw(st.integers(1, 3))):
        kind = draw(st.sampled_from(["flip", "flip", "truncate", "overwrite", "insert", "delete", "head"]))
        n = len(data)
        if n == 0:
            break
        pos = draw(st.integers(0, n - 1))
        if kind == "flip":
            for _ in range(draw(st.integers(1, 8))):
                p = draw(st.integers(0, n - 1))
                data[p] ^= 1 << draw(st.integers(0, 7))
        elif kind == "truncate":
            del data[pos:]
        elif kind == "overwrite":
            chunk = draw(st.binary(min_size=1, max_size=16))
            data[pos:pos + len(chunk)] = chunk
        elif kind == "insert":
            data[pos:pos] = draw(st.binary(min_size=1, max_size=16))
        elif kind == "delete":
            del data[pos:pos + draw(st.integers(1, 16))]
        else:  # mutate the first bytes (the protobuf framing)
            p = draw(st.integers(0, min(n, 64) - 1))
            data[p] = draw(st.integers(0, 255))
    return bytes(data)


def test_fuzz_model_bytes(summary):
    counts = fuzz(summary, "bytes", byte_mutation(), 600)
    assert sum(counts.values()) >= 500 and verified(counts) >= 20


# -- 2. field edits -------------------------------------------------------------------------------------------
OPS = ["Relu", "Conv", "Add", "MatMul", "Gemm", "Reshape", "Softmax", "MaxPool", "AveragePool", "Concat",
       "Transpose", "Flatten", "Sigmoid", "Gather", "Slice", "Pad", "Identity", "BatchNormalization",
       "GlobalAveragePool", "Squeeze", "Unsqueeze", "Mul", "Clip", "Split", "NoSuchOp", "Loop"]
INTS = st.one_of(st.integers(-3, 5), st.sampled_from([0, -1, 2**31 - 1, -(2**63), 2**63 - 1, 10**6]))


def _names(g: onnx.GraphProto) -> list[str]:
    out = [vi.name for vi in g.input] + [t.name for t in g.initializer]
    out += [o for n in g.node for o in n.output]
    return out or ["X"]


def _edit(draw, m: onnx.ModelProto) -> None:
    g = m.graph
    kind = draw(st.sampled_from([
        "attr_int", "attr_ints", "attr_type", "attr_drop", "attr_add", "attr_string", "op_type",
        "input_rename", "input_dangling", "output_dup", "swap", "reverse", "cycle", "delete_node",
        "dup_node", "init_dims", "init_truncate", "init_drop", "init_dtype", "in_dims", "in_dtype",
        "in_rank", "out_rename", "out_dup", "out_extra", "opset", "names_hostile", "external",
        "node_inputs_extra", "node_outputs_extra", "empty_graph_io",
    ]))
    nodes = g.node
    node = nodes[draw(st.integers(0, len(nodes) - 1))] if len(nodes) else None
    if kind.startswith("attr") and node is not None:
        if kind == "attr_int" or kind == "attr_ints":
            ints = [a for a in node.attribute if a.type in (onnx.AttributeProto.INT, onnx.AttributeProto.INTS)]
            if ints:
                a = ints[draw(st.integers(0, len(ints) - 1))]
                if a.type == onnx.AttributeProto.INT:
                    a.i = draw(INTS)
                else:
                    del a.ints[:]
                    a.ints.extend(draw(st.lists(INTS, max_size=6)))
        elif kind == "attr_type" and node.attribute:
            a = node.attribute[draw(st.integers(0, len(node.attribute) - 1))]
            a.type = draw(st.sampled_from([1, 2, 3, 4, 5, 6, 7, 8, 0, 11, 13, 14]))
        elif kind == "attr_drop" and node.attribute:
            del node.attribute[draw(st.integers(0, len(node.attribute) - 1))]
        elif kind == "attr_add":
            name = draw(st.sampled_from(["axis", "pads", "strides", "kernel_shape", "perm", "group", "alpha",
                                         "dilations", "auto_pad", "mode", "weird"]))
            node.attribute.append(draw(st.sampled_from([
                helper.make_attribute(name, draw(INTS)), helper.make_attribute(name, [draw(INTS)] * 3),
                helper.make_attribute(name, 1.5), helper.make_attribute(name, "SAME_UPPER"),
                helper.make_attribute(name, draw(st.sampled_from(HOSTILE)))])))
        elif kind == "attr_string":
            node.attribute.append(helper.make_attribute("auto_pad", draw(st.sampled_from(HOSTILE + ["VALID"]))))
    elif kind == "op_type" and node is not None:
        node.op_type = draw(st.sampled_from(OPS))
    elif kind == "input_rename" and node is not None and node.input:
        node.input[draw(st.integers(0, len(node.input) - 1))] = draw(st.sampled_from(_names(g) + [""]))
    elif kind == "input_dangling" and node is not None and node.input:
        node.input[draw(st.integers(0, len(node.input) - 1))] = draw(st.sampled_from(HOSTILE + ["nowhere"]))
    elif kind == "output_dup" and node is not None and node.output:
        node.output[0] = draw(st.sampled_from(_names(g)))
    elif kind in ("swap", "reverse") and len(nodes) > 1:
        lst = [onnx.NodeProto() for _ in nodes]
        for c, n in zip(lst, nodes):
            c.CopyFrom(n)
        if kind == "reverse":
            lst.reverse()
        else:
            i, j = draw(st.integers(0, len(lst) - 1)), draw(st.integers(0, len(lst) - 1))
            lst[i], lst[j] = lst[j], lst[i]
        del g.node[:]
        g.node.extend(lst)
    elif kind == "cycle" and len(nodes) > 1:
        i = draw(st.integers(0, len(nodes) - 2))
        j = draw(st.integers(i + 1, len(nodes) - 1))
        if nodes[i].input and nodes[j].output:
            nodes[i].input[0] = nodes[j].output[0]
    elif kind == "delete_node" and len(nodes):
        del g.node[draw(st.integers(0, len(nodes) - 1))]
    elif kind == "dup_node" and node is not None:
        g.node.append(node)
    elif kind.startswith("init") and len(g.initializer):
        t = g.initializer[draw(st.integers(0, len(g.initializer) - 1))]
        if kind == "init_dims":
            del t.dims[:]
            t.dims.extend(draw(st.lists(st.integers(-2, 70), max_size=4)))
        elif kind == "init_truncate":
            if t.raw_data:
                t.raw_data = t.raw_data[:draw(st.integers(0, max(0, len(t.raw_data) - 1)))]
            else:
                del t.float_data[len(t.float_data) // 2:]
        elif kind == "init_drop":
            del g.initializer[list(g.initializer).index(t)]
        else:
            t.data_type = draw(st.sampled_from([0, 1, 2, 3, 6, 7, 8, 9, 10, 11, 16, 99]))
    elif kind.startswith("in_") and len(g.input):
        vi = g.input[draw(st.integers(0, len(g.input) - 1))]
        tt = vi.type.tensor_type
        if kind == "in_dims":
            for d in tt.shape.dim:
                choice = draw(st.sampled_from(["keep", "zero", "neg", "huge", "sym", "big"]))
                if choice == "zero":
                    d.dim_value = 0
                elif choice == "neg":
                    d.dim_value = -3
                elif choice == "huge":
                    d.dim_value = 10**12
                elif choice == "big":
                    d.dim_value = 4096
                elif choice == "sym":
                    d.dim_param = draw(st.sampled_from(HOSTILE + ["N"]))
        elif kind == "in_dtype":
            tt.elem_type = draw(st.sampled_from([0, 2, 3, 6, 7, 9, 10, 11, 8, 99]))
        else:
            if draw(st.booleans()):
                tt.shape.dim.add().dim_value = 1
            elif len(tt.shape.dim):
                del tt.shape.dim[-1]
    elif kind.startswith("out_") and len(g.output):
        vi = g.output[draw(st.integers(0, len(g.output) - 1))]
        if kind == "out_rename":
            vi.name = draw(st.sampled_from(_names(g) + HOSTILE))
        elif kind == "out_dup":
            g.output.append(vi)
        else:
            g.output.append(helper.make_tensor_value_info(draw(st.sampled_from(_names(g))),
                                                          draw(st.sampled_from([1, 7, 0])), None))
    elif kind == "opset":
        del m.opset_import[:]
        m.opset_import.append(helper.make_opsetid("", draw(st.sampled_from([1, 5, 6, 7, 9, 11, 13, 18, 21, 99]))))
    elif kind == "names_hostile":
        h = draw(st.sampled_from(HOSTILE))
        g.name = h
        m.doc_string = h
        m.producer_name = h
        helper.set_model_props(m, {h: h})
        for n in g.node:
            n.name = h
            n.doc_string = h
    elif kind == "external" and len(g.initializer):
        t = g.initializer[draw(st.integers(0, len(g.initializer) - 1))]
        t.ClearField("raw_data")
        t.data_location = TensorProto.EXTERNAL
        loc = draw(st.sampled_from(["../../etc/passwd", "/etc/passwd", "w.bin", ""]))
        t.external_data.add(key="location", value=loc)
    elif kind == "node_inputs_extra" and node is not None:
        node.input.extend(draw(st.lists(st.sampled_from(_names(g) + [""]), min_size=1, max_size=4)))
    elif kind == "node_outputs_extra" and node is not None:
        node.output.extend(draw(st.lists(st.sampled_from(["extra1", "extra2", ""]), min_size=1, max_size=3)))
    elif kind == "empty_graph_io":
        if draw(st.booleans()):
            del g.output[:]
        else:
            del g.input[:]


@st.composite
def field_edit(draw) -> bytes:
    m = onnx.ModelProto()
    m.ParseFromString(SEEDS[draw(st.sampled_from(SEED_NAMES))])
    for _ in range(draw(st.integers(1, 3))):
        _edit(draw, m)
    return m.SerializeToString()


def test_fuzz_model_fields(summary):
    counts = fuzz(summary, "fields", field_edit(), 600)
    assert sum(counts.values()) >= 500 and verified(counts) >= 40


# -- 3. structurally weird but valid graphs -----------------------------------------------------------------
UNARY = ["Relu", "Sigmoid", "Abs", "Neg", "Identity", "Tanh", "Exp"]
BINARY = ["Add", "Mul", "Sub", "Max", "Min"]


@st.composite
def weird_graph(draw) -> onnx.ModelProto:
    rank = draw(st.integers(1, 4))
    shape = draw(st.lists(st.integers(0, 3), min_size=rank, max_size=rank))
    if draw(st.booleans()):
        shape = [max(1, d) for d in shape]
    n_in = draw(st.integers(1, 3))
    ins = [f"in{i}" for i in range(n_in)]
    values = list(ins)
    inits = []
    if draw(st.booleans()):
        c = np.random.default_rng(draw(st.integers(0, 99))).standard_normal(shape).astype(np.float32)
        inits.append(numpy_helper.from_array(c, "const0"))
        values.append("const0")
    nodes = []
    for i in range(draw(st.integers(0, 30))):
        out = f"v{i}"
        if draw(st.booleans()):
            op = draw(st.sampled_from(UNARY))
            nodes.append(helper.make_node(op, [draw(st.sampled_from(values))], [out], name=f"n{i}"))
        else:
            op = draw(st.sampled_from(BINARY))
            nodes.append(helper.make_node(op, [draw(st.sampled_from(values)), draw(st.sampled_from(values))],
                                          [out], name=f"n{i}"))
        values.append(out)
    if draw(st.booleans()) and shape and all(d > 0 for d in shape):
        # a shape-changing tail: Reshape to flat and Concat with itself
        flat = int(np.prod(shape))
        inits.append(numpy_helper.from_array(np.array([1, flat], np.int64), "flat_shape"))
        nodes.append(helper.make_node("Reshape", [values[-1], "flat_shape"], ["flat"], name="reshape"))
        nodes.append(helper.make_node("Concat", ["flat", "flat"], ["cat"], name="concat", axis=1))
        outputs = ["cat"]
    else:
        outputs = draw(st.lists(st.sampled_from(values), min_size=1, max_size=3))
    outputs = list(dict.fromkeys(outputs))  # ONNX: each graph output name once
    if draw(st.booleans()):
        nodes.reverse()  # unsorted (still acyclic): cnnjit re-orders it
    value_info = {n: helper.make_tensor_value_info(n, TensorProto.FLOAT, None) for n in outputs}
    graph = helper.make_graph(
        nodes, "weird",
        [helper.make_tensor_value_info(n, TensorProto.FLOAT, shape) for n in ins],
        [value_info[n] for n in outputs], initializer=inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)], ir_version=8)


def test_fuzz_weird_valid_graphs(summary):
    counts = fuzz(summary, "weird", weird_graph(), 400, allowed=("ran, matches", "compile: Unsupported"))
    assert verified(counts) >= 300


def test_fuzz_mixed_edits_and_bitflips(summary):
    """Field edits followed by bit flips. With the others: 600 + 600 + 400 + 500 = 2,100 examples."""
    counts = fuzz(summary, "mixed", mixed(), 500)
    assert sum(counts.values()) >= 500 and verified(counts) >= 10


@st.composite
def mixed(draw) -> bytes:
    """A field edit followed by a byte mutation of the result."""
    data = bytearray(draw(field_edit()))
    if data:
        for _ in range(draw(st.integers(1, 4))):
            p = draw(st.integers(0, len(data) - 1))
            data[p] ^= 1 << draw(st.integers(0, 7))
    return bytes(data)


def test_no_hostile_side_effects():
    """None of the hostile strings the fuzzers used ran (they would have created this file or exited)."""
    assert not os.path.exists("/tmp/cnnjit_pwned")
