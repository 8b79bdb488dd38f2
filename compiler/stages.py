"""One compilation pipeline: import -> passes -> codegen -> a runnable ``Specialization``.

``cnnjit.compile``, ``cnnjit inspect``/``profile`` (``cnnjit.inspect_model.trace``) and the ahead-of-time
targets all specialise a loaded model through ``specialize``, with the same ``CompileOptions``; what they
want to see on the way (IR snapshots after passes) they get through ``Hooks``.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace

import numpy as np

from cnnjit.ir import Graph
from cnnjit.ir import errors as limits
from cnnjit.ir.errors import CnnjitError, ResourceLimitError
from cnnjit.runtime.cpus import split_threads
from cnnjit.runtime.model import Specialization

from .batching import batch_separable
from .codegen.emit import generate
from .codegen.kernel import Target
from .codegen.precompile import KernelObserver, kernels_finished, observe_kernels
from .codegen.simd import host_vector_registers, host_vector_width
from .codegen.simd_int import host_int_width
from .codegen.threads import adaptive
from .frontend import onnx_proto as onnx  # the ModelProto class, without the onnx package
from .frontend.loader import input_specs, resolve_shapes  # noqa: F401 - re-exported
from .frontend.onnx_import import DEFAULT_MAX_TENSOR_BYTES, import_model
from .passes import Pass, PassManager, default_pipeline, select_passes

#: refuse a specialisation whose scratch arena (all intermediate tensors, after memory planning) is larger
DEFAULT_MAX_ARENA_BYTES = limits.DEFAULT_MAX_ARENA_BYTES


@dataclass(frozen=True)
class CompileOptions:
    """The choices ``cnnjit.compile`` exposes that shape a specialisation (see its docstring)."""

    fuse: bool = True
    passes: tuple[str, ...] | None = None
    disable: tuple[str, ...] | None = None
    verify: bool = True
    dump_ir_after: tuple[str, ...] = ()
    max_tensor_bytes: int = DEFAULT_MAX_TENSOR_BYTES
    max_arena_bytes: int = DEFAULT_MAX_ARENA_BYTES
    entry: str = "auto"
    threads: int = 1
    sparse_threshold: float | None = None
    variants: tuple[tuple[str, str], ...] = ()
    vector_width: int | None = None
    #: the kernels' arithmetic: "fp32", or "bf16" (1x1 Convs, constant-B Gemm / MatMul on bf16 pairs but those
    #: the ``mixed_precision`` pass keeps fp32: see ``cnnjit.compile``)
    precision: str = "fp32"
    #: no value reuses an input's place in the arena (``codegen.memory.plan_memory``): a loop body's segments
    keep_inputs: bool = False
    #: earlier forms of kernel code by name (``codegen.kernel.FORMS``: a benchmark's "before")
    forms: tuple[str, ...] = ()

    def pipeline(self) -> list[Pass]:
        """The passes these options select, in pipeline order (unknown names raise)."""
        return select_passes(default_pipeline(), self.passes, self.disable, self.fuse)

    def host_target(self) -> Target:
        """The host machine as a code-generation target, with these options' threads (at most the CPUs this
        process may use: ``runtime/cpus.split_threads``) and thresholds."""
        width = self.vector_width or host_vector_width()
        return Target(vector_width=width, int_width=host_int_width(), threads=split_threads(self.threads),
                      sparse_threshold=self.sparse_threshold, variants=self.variants,
                      vector_registers=host_vector_registers(width), precision=self.precision,
                      forms=self.forms)


@dataclass
class Hooks:
    """Observers of a compilation: ``after_import(graph)``, then ``before_pass(pass, graph)`` /
    ``after_pass(pass, graph)`` around every pass (e.g. IR snapshots for ``cnnjit inspect``), then
    ``on_kernel(event)`` as each kernel starts compiling and becomes ready (``codegen.precompile.KernelEvent``:
    done / total, name, ops, origin; e.g. a progress bar)."""

    after_import: Callable[[Graph], None] | None = None
    before_pass: Callable[[Pass, Graph], None] | None = None
    after_pass: Callable[[Pass, Graph], None] | None = None
    on_kernel: KernelObserver | None = None


def run_passes(graph: Graph, options: CompileOptions, hooks: Hooks | None = None) -> PassManager:
    """Run the selected passes over ``graph`` in place (linted after each when ``verify``); the manager
    holds the report."""
    pm = PassManager(options.pipeline(), verify=options.verify, dump_after=set(options.dump_ir_after))
    if hooks is not None:
        pm.before_each, pm.after_each = hooks.before_pass, hooks.after_pass
    pm.run(graph)
    return pm


def specialize(proto: onnx.ModelProto, shapes: Mapping[str, Sequence[int]], options: CompileOptions,
               values: Mapping[str, np.ndarray] | None = None, target: Target | None = None,
               hooks: Hooks | None = None) -> Specialization:
    """Compile ``proto`` for concrete input ``shapes`` (and the ``values`` of by-value inputs): import,
    passes, code generation for ``target`` (default: the host), the arena limit check."""
    shapes = {k: tuple(int(d) for d in v) for k, v in shapes.items()}
    t0 = time.perf_counter()
    graph = import_model(proto, shapes, max_tensor_bytes=options.max_tensor_bytes, input_values=dict(values or {}))
    t1 = time.perf_counter()
    if hooks is not None and hooks.after_import is not None:
        hooks.after_import(graph)
    pm = run_passes(graph, options, hooks)
    t2 = time.perf_counter()
    target = target or options.host_target()
    serial = None
    with observe_kernels(hooks.on_kernel if hooks is not None else None):
        try:
            program = generate(graph, target, entry=options.entry, keep_inputs=options.keep_inputs)
            if program.meta.get("parallel_layers") and adaptive(graph.nodes):  # (runtime/adaptive.py)
                serial = generate(graph, replace(target, threads=1), entry=options.entry,
                                  keep_inputs=options.keep_inputs)
        finally:
            kernels_finished()
    t3 = time.perf_counter()
    if program.arena_bytes > options.max_arena_bytes:
        raise ResourceLimitError(
            f"the model needs a scratch arena of {program.arena_bytes} bytes ({program.arena_bytes / 2**20:.1f} "
            f"MiB) for input shapes { {k: list(v) for k, v in shapes.items()} }, over the limit of "
            f"{options.max_arena_bytes} bytes (max_arena_bytes=)")
    spec = Specialization(graph, program, {"import": t1 - t0, "passes": t2 - t1, "codegen": t3 - t2}, pm.report())
    return spec if serial is None else spec.with_twin(Specialization(graph, serial))


#: the leading size the batch-separability check imports the model at: not 1, where a Reshape, Flatten or
#: Unsqueeze that moves the batch cannot be told from one that keeps it
PROBE_BATCH = 3


def separable_batch(proto: onnx.ModelProto, shapes: Mapping[str, Sequence[int]], options: CompileOptions) -> bool:
    """Whether ``proto`` keeps samples apart along axis 0 (``compiler.batching``), judged on its IR imported
    with these input ``shapes``' leading size set to ``PROBE_BATCH`` (import only: a few ms); a model that
    does not import at that size is not separable."""
    probe = {k: (PROBE_BATCH, *tuple(v)[1:]) for k, v in shapes.items()}
    try:
        graph = import_model(proto, probe, max_tensor_bytes=options.max_tensor_bytes)
    except CnnjitError:
        return False
    return batch_separable(graph, proto)
