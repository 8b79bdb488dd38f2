"""``cnnjit.compile``: wires the frontend, the passes, code generation and the runtime together."""

from __future__ import annotations

import os
import sys
import threading
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from cnnjit.ir.errors import DEFAULT_MAX_ARENA_BYTES, DEFAULT_MAX_TENSOR_BYTES, InputError, ModelError
from cnnjit.runtime import native
from cnnjit.runtime.cpus import default_threads
from cnnjit.runtime.model import CompiledModel, InputSignature, Specialization

if TYPE_CHECKING:  # bound at run time by _load_compiler(), on the first full compile
    import onnx

    from cnnjit.compiler import control_flow, stages
    from cnnjit.compiler.codegen.kernel import FORMS, VARIANTS
    from cnnjit.compiler.codegen.simd import WIDTHS
    from cnnjit.compiler.frontend.loader import input_specs, load_model
    from cnnjit.compiler.frontend.onnx_import import check_supported, value_inputs
    from cnnjit.compiler.stages import CompileOptions
    from cnnjit.compiler.target import TargetArtifact, compile_for_target

    from .log import loaded_kernels, log_specialization, specializing


#: ``cnnjit.compile``'s precisions -> the kernels' arithmetic (``Target.precision``)
PRECISIONS = {"fp32": "fp32", "bf16": "bf16", "bf16-emulated": "bf16"}


def _load_compiler() -> None:
    """Import the compiler (numba, the frontend, codegen) and bind the names ``compile`` uses into this
    module, once: ``import cnnjit`` and a warm start from the compiled-program cache never pay for them. Not
    the onnx package (about a second of CPU per process): the frontend reads models with its own
    ``frontend/onnx_proto.py``."""
    if "stages" in globals():
        return
    from cnnjit.compiler import control_flow, stages  # noqa: F401
    from cnnjit.compiler.codegen.kernel import FORMS, VARIANTS  # noqa: F401
    from cnnjit.compiler.codegen.simd import WIDTHS  # noqa: F401
    from cnnjit.compiler.frontend.loader import input_specs, load_model  # noqa: F401
    from cnnjit.compiler.frontend.onnx_import import check_supported, value_inputs  # noqa: F401
    from cnnjit.compiler.stages import CompileOptions  # noqa: F401
    from cnnjit.compiler.target import TargetArtifact, compile_for_target  # noqa: F401

    from .log import loaded_kernels, log_specialization, specializing  # noqa: F401

    globals().update(locals())


def _is_pruned(model: Any) -> bool:
    """A ``cnnjit.prune`` result? (Asked without importing ``cnnjit.pruning``, which imports onnx: until it
    is imported there is no ``PrunedModel`` to be one.)"""
    pruning = sys.modules.get(f"{__package__}.pruning")
    return pruning is not None and isinstance(model, pruning.PrunedModel)


def compile(  # noqa: A001 - the public name users expect
    model: str | os.PathLike | bytes | onnx.ModelProto,
    *,
    input_shapes: Mapping[str, Sequence[int]] | None = None,
    fuse: bool = True,
    passes: Sequence[str] | None = None,
    disable: Sequence[str] | None = None,
    verify: bool = True,
    dump_ir_after: Sequence[str] = (),
    max_tensor_bytes: int = DEFAULT_MAX_TENSOR_BYTES,
    entry: str = "auto",
    max_arena_bytes: int = DEFAULT_MAX_ARENA_BYTES,
    target: str | None = None,
    cpu: str | None = None,
    features: str | None = None,
    sparse_threshold: float | None = None,
    threads: int | None = None,
    variants: Mapping[str, str] | None = None,
    vector_width: int | None = None,
    precision: str = "fp32",
    keep_inputs: bool = False,
    forms: Sequence[str] = (),
) -> CompiledModel | TargetArtifact:
    """Compile an ONNX model (path, bytes or ``ModelProto``) into a callable on numpy arrays.

    Models whose inputs have symbolic dimensions are specialised lazily on the shapes they are called
    with (one compilation per distinct shape); ``input_shapes`` specialises up front. ``fuse``,
    ``passes`` and ``disable`` select the IR passes; ``verify`` lints the IR after every pass.
    ``entry="numba"`` compiles the schedule with numba, one function per 200 calls (cached on disk; slower
    cold compile, and LLVM sees every layer's sizes as constants: about 2x faster on MLPerf Tiny models);
    ``"python"`` calls the kernels from a Python schedule; the default ``"auto"`` picks numba for models of
    4 kernel calls or more (see ``codegen.emit.AUTO_NUMBA_CALLS``).
    ``max_tensor_bytes`` / ``max_arena_bytes`` refuse (``ResourceLimitError``) a specialisation with a
    larger tensor / a larger planned scratch arena, before anything is allocated.

    ``target`` (an LLVM triple, e.g. ``"aarch64-linux-gnu"``) compiles ahead of time for another machine
    instead, with optional ``cpu`` (``"cortex-a76"``) and ``features`` (``"+neon,+dotprod"``), and returns
    a ``TargetArtifact`` (object file, C header; ``.save(folder)``), see ``cnnjit.compiler.target``.

    ``sparse_threshold``: the zero fraction of a pointwise Conv's / Gemm's weights from which the sparse
    (CSR) kernel is used (default: the measured crossover, or ``CNNJIT_SPARSE_THRESHOLD``; > 1 disables it).
    A ``cnnjit.prune`` result (``PrunedModel``) is accepted as the model.

    ``threads``: how many threads run an inference. The default (None) is ``CNNJIT_NUM_THREADS`` if set,
    else the CPUs this process may use (``os.sched_getaffinity``), as onnxruntime does. With N > 1, every
    layer estimated above ~25 us splits into up to N independent kernel calls over disjoint output-channel
    ranges (dense, pointwise and depthwise Conv, batch 1; N at most the CPUs this process may use: more parts
    than threads to run them only cost, ``runtime/cpus.split_threads``), and the schedule becomes one parallel region
    run by a process-wide team of N threads started once (``cnnjit.runtime.parallel``): threads claim the
    parts of each step and wait only for the steps a step depends on. A model with no layer that large
    keeps the serial schedule. Results are bit-identical to ``threads=1`` (each part computes whole output
    elements with the layer's own kernel). Calls from several Python threads at once are safe; a call that
    finds the team busy runs on its own thread instead of waiting. ``threads=1`` is the serial schedule.

    ``variants`` forces a kernel variant per op (``{"Conv": "direct"}``; the names are in
    ``cnnjit.compiler.codegen.kernel.VARIANTS`` and in ``cnnjit inspect``'s variant column), for tests and
    experiments: a forced variant that cannot compute a node is a ``CompileError``. ``vector_width`` (4, 8
    or 16 float32 lanes; default the host's widest) generates the SIMD kernels at another width.

    ``precision``: ``"fp32"`` (default), or ``"bf16"``: the 1x1 Convs and the Gemm / MatMul with a constant B
    keep their weights as bf16 (half the bytes), round their inputs to bf16 as they load them and accumulate
    in fp32 with the AVX512_BF16 dot product (``vdpbf16ps``); every other op stays fp32. A host without
    AVX512_BF16 refuses it (``UnsupportedHardwareError`` naming ``avx512_bf16``); ``"bf16-emulated"`` computes
    the same bf16 arithmetic with fp32 FMAs on any host (for accuracy checks: slower than fp32).
    Mixed precision: the layers on pooled features (a Conv on a 1x1 map, a Gemm, a one-row MatMul: classifier
    heads, squeeze-and-excitation FCs) stay fp32 (``compiler/passes/mixed_precision.py``'s rule table;
    ``disable=["mixed_precision"]`` puts them in bf16 too). See ``compiler/codegen/simd_bf16.py``.

    ``keep_inputs``: no value reuses an input's place in the scratch arena, so a caller that holds one arena
    for a run of calls (``Specialization.bind``) copies an input passed again unchanged only once; a model
    with loops compiles its loop bodies' segments so (their loop-invariant inputs cross in once per loop run).
    For the compiler's own use: ``model(x)`` copies every input at every call either way, so there it only
    costs arena memory.

    ``forms``: earlier forms of kernel code by name (``cnnjit.compiler.codegen.kernel.FORMS``, e.g.
    ``["tanh_vtanh"]``), for benchmarks that time a change inside a kernel against its "before".

    Warm start: a model file or bytes that ``cnnjit.cache.warm`` (``cnnjit warm``) compiled with the same
    options (and input shapes) on this machine is loaded from the compiled-program cache as one native
    object, without importing the compiler (see ``cnnjit.runtime.native``); anything else compiles here.
    """
    if precision not in PRECISIONS:
        raise InputError(f"precision must be one of {', '.join(map(repr, PRECISIONS))}, got {precision!r}")
    if target is None and cpu is None and features is None and not dump_ir_after and not _full_only.active \
            and precision == "fp32" and not keep_inputs and not forms:
        warm = native.load(model, {**warm_options(input_shapes, fuse, passes, disable, max_tensor_bytes, entry,
                                                  max_arena_bytes, sparse_threshold, threads, variants,
                                                  vector_width), "verify": verify}, _rebuild, _compile_full)
        if warm is not None:
            return warm
    _load_compiler()
    if _is_pruned(model):
        model = model.model
    if target is not None:
        return compile_for_target(model, target=target, cpu=cpu, features=features, input_shapes=input_shapes,
                                  fuse=fuse, passes=passes, disable=disable, verify=verify,
                                  max_tensor_bytes=max_tensor_bytes, max_arena_bytes=max_arena_bytes,
                                  precision=precision)
    if precision == "bf16":
        from cnnjit.compiler.codegen.simd_bf16 import require_bf16
        require_bf16()
    if cpu is not None or features is not None:
        raise InputError("cpu= and features= apply to a cross-compilation target: pass target= too")
    if entry not in ("auto", "python", "numba", "lazy"):
        raise InputError(f"entry must be 'auto', 'python' or 'numba', got {entry!r}")
    threads_given = threads  # None travels as None: a pickled model uses the cores where it lands
    if threads is None:
        try:
            threads = default_threads()
        except ValueError as e:
            raise InputError(str(e)) from None
    if isinstance(threads, bool) or not isinstance(threads, int) or threads < 1:
        raise InputError(f"threads must be an integer >= 1 or None, got {threads!r}")
    if vector_width is not None and vector_width not in WIDTHS:
        raise InputError(f"vector_width must be one of {WIDTHS}, got {vector_width!r}")
    if isinstance(forms, str) or not all(isinstance(f, str) for f in _iterable(forms)):
        raise InputError(f"forms must be a list of form names, got {forms!r}")
    unknown_forms = sorted(set(forms) - set(FORMS))
    if unknown_forms:
        raise InputError(f"forms: no kernel form named {', '.join(map(repr, unknown_forms))}; the forms are "
                         + ", ".join(sorted(FORMS)))
    for op, name in (variants or {}).items():
        known = [v.name for v in VARIANTS.get(op, [])]
        if name not in known:
            raise InputError(f"variants: {op!r} has no kernel variant {name!r}"
                             + (f"; its variants are {', '.join(known)}" if known else " (no such op)"))
    if hasattr(model, "to_onnx"):  # a cnnjit.quantize() result
        model = model.to_onnx()
    proto = load_model(model)
    loops = control_flow.has_loops(proto.graph)
    check_supported(proto, loops)
    specs = input_specs(proto)
    by_value = set() if loops else value_inputs(proto)  # a model in steps: each segment decides its own
    sigs = [InputSignature(s.name, s.dtype, s.dims, s.dim_names, s.name in by_value) for s in specs]
    options = CompileOptions(fuse=fuse, passes=None if passes is None else tuple(passes),
                             disable=None if disable is None else tuple(disable), verify=verify,
                             dump_ir_after=tuple(dump_ir_after), max_tensor_bytes=max_tensor_bytes,
                             max_arena_bytes=max_arena_bytes, entry=entry, threads=threads,
                             sparse_threshold=sparse_threshold,
                             variants=tuple(sorted((variants or {}).items())), vector_width=vector_width,
                             precision=PRECISIONS[precision], keep_inputs=keep_inputs, forms=tuple(forms))
    pipeline_names = [p.name for p in options.pipeline()]
    batch_symbolic = all(s.dims and s.dims[0] is None and not s.by_value for s in sigs)

    def specialize(shapes: dict[str, tuple[int, ...]], values: dict) -> Specialization:
        before = loaded_kernels()
        with specializing(name, shapes):
            spec = stages.specialize(proto, shapes, options, values)
            if batch_symbolic and all(v[0] == 1 for v in shapes.values()):  # the base of new batch sizes
                spec.batch_separable = stages.separable_batch(proto, shapes, options)
        log_specialization(name, shapes, spec, before, pipeline_names)
        return spec

    if not proto.graph.output:
        raise ModelError("the model declares no graph outputs")
    name = proto.graph.name or "model"
    # how this compile was asked for: pickling re-compiles from the model bytes and these options (kernels
    # from the on-disk cache); a model with loops compiles its segments and bodies with them, per shape
    asked = {"input_shapes": None if input_shapes is None
             else {k: [int(d) for d in v] for k, v in input_shapes.items()},
             "fuse": fuse, "passes": None if passes is None else list(passes),
             "disable": None if disable is None else list(disable), "verify": verify,
             "max_tensor_bytes": max_tensor_bytes, "entry": entry, "max_arena_bytes": max_arena_bytes,
             "sparse_threshold": sparse_threshold, "threads": threads_given,
             "variants": None if variants is None else dict(variants), "vector_width": vector_width,
             "precision": precision}
    if keep_inputs:
        asked["keep_inputs"] = True
    if forms:
        asked["forms"] = list(forms)
    if loops:
        steps = control_flow.plan(proto, lambda m, keep: control_flow.runner(
            compile(m, **{**asked, "input_shapes": None, "keep_inputs": keep})))
        specialize = lambda shapes, values: steps  # noqa: E731 - one plan for every shape: segments specialise
    cm = CompiledModel(sigs, [o.name for o in proto.graph.output], specialize, name,
                       {"fuse": fuse, "passes": passes, "disable": disable, "entry": entry, "threads": threads})
    if input_shapes is not None:
        unknown = set(input_shapes) - {s.name for s in sigs}
        if unknown:
            raise InputError(f"input_shapes names unknown input(s) {sorted(unknown)}; the model's inputs are "
                             + ", ".join(s.describe() for s in sigs))
        shapes = {}
        for s in sigs:
            if s.name in input_shapes:
                shapes[s.name] = tuple(int(d) for d in input_shapes[s.name])
            elif s.static:
                shapes[s.name] = tuple(s.dims)
            else:
                raise InputError(f"input_shapes must give a shape for {s.describe()}")
        if not any(s.by_value for s in sigs):
            cm.specialization(shapes)
    elif all(s.static and not s.by_value for s in sigs):
        cm.specialization({s.name: tuple(s.dims) for s in sigs})  # static shapes: compile now
    cm.set_origin(_rebuild, proto.SerializeToString, asked)
    return cm


def warm_options(input_shapes: Mapping[str, Sequence[int]] | None, fuse: bool, passes: Sequence[str] | None,
                 disable: Sequence[str] | None, max_tensor_bytes: int, entry: str, max_arena_bytes: int,
                 sparse_threshold: float | None, threads: int, variants: Mapping[str, str] | None,
                 vector_width: int | None) -> dict[str, Any]:
    """The options that key a compiled-program cache entry, as ``_rebuild`` takes them (``verify`` and
    ``dump_ir_after`` change no result and are left out)."""
    return {"input_shapes": None if input_shapes is None else {k: [int(d) for d in v] for k, v in input_shapes.items()},
            "fuse": fuse, "passes": None if passes is None else list(passes),
            "disable": None if disable is None else list(disable), "max_tensor_bytes": max_tensor_bytes,
            "entry": entry, "max_arena_bytes": max_arena_bytes, "sparse_threshold": sparse_threshold,
            "threads": _resolved_threads(threads), "variants": None if variants is None else dict(variants),
            "vector_width": vector_width}


def _resolved_threads(threads: int | None) -> int | None:
    """``threads`` with None resolved to this process's default (``CNNJIT_NUM_THREADS`` or the usable CPUs):
    a stored program is keyed by the thread count it was built for (None if the environment's is invalid:
    then nothing matches and the full path reports it)."""
    if threads is not None:
        return threads
    try:
        return default_threads()
    except ValueError:
        return None


class _FullOnly(threading.local):
    active = False


#: set while a warm model compiles its other shapes (or its IR) through the full path
_full_only = _FullOnly()


def _compile_full(model: bytes, options: Mapping) -> CompiledModel:
    """``compile`` through the full path, never the compiled-program cache."""
    _full_only.active = True
    try:
        return compile(model, **options)
    finally:
        _full_only.active = False


def _rebuild(model: bytes, options: Mapping) -> CompiledModel:
    """Unpickling a ``CompiledModel``: compile the model again with the options it was compiled with."""
    return compile(model, **options)


def _iterable(x: object) -> list:
    """``x`` as a list if it is iterable, else a one-element list (so the caller's type test fails it)."""
    try:
        return list(x)  # type: ignore[call-overload]
    except TypeError:
        return [x]
