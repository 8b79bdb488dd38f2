"""The host as an ahead-of-time target: a whole program in one object for ``runtime/native.py`` to load.

    obj = build_host_object(proto, {"x": (1, 3, 48, 320)}, CompileOptions())

The same lowering as the aarch64 target (``aarch64_worker.py``: numba lowers every kernel in a worker
process, an LLVM C entry ``<name>_run(in..., out..., scratch)`` calls them, weights are LLVM constants),
for the host triple, CPU and features, with numba's JIT settings (static relocations, the JIT code model,
no FP contraction), so the machine code is what the JIT makes. The schedule is bound as a numba entry
binds it (``entry="native"``: sizes as constants, each kernel specialised on them, or inlined where it has
too many distinct sizes), so the object runs at the numba entry's speed whatever entry the JIT picked.

The object needs only libc and libm (checked: its undefined symbols); a model whose inputs set shapes, or
one with external data is not built (``None``), and its warm start stays on the full path.

A program with layers split over threads (a parallel region) gets the parallel entry instead
(``steps_ir.py``): ``<name>_run(scratch, state, main, epoch)``, the schedule's steps with the step protocol
in LLVM IR, which every thread of a ``runtime.team`` team calls (its waits also need ``syscall`` for the
futex, or ``sched_yield``); the caller copies the inputs and outputs in and out of the scratch block at the
offsets recorded in ``HostObject.inputs`` / ``outputs`` (``offset``, bytes).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from cnnjit.compiler.codegen.build import HEADER
from cnnjit.compiler.codegen.threads import terminal_steps
from cnnjit.compiler.frontend import onnx_proto as onnx  # the message classes, without the onnx package
from cnnjit.compiler.frontend.onnx_import import value_inputs
from cnnjit.compiler.stages import CompileOptions, specialize
from cnnjit.runtime.native import host_machine
from cnnjit.runtime.team import SYS_FUTEX

from .aarch64 import LIBC_LIBM, elf_info, run_worker, schedule_job

#: the name of the C entry in every host object (``<ENTRY>_run``); never a name from the model
ENTRY = "cnnjit_model"
#: what a parallel entry may leave undefined besides the C and math libraries (its waits)
PROTOCOL_SYMBOLS = frozenset({"syscall", "sched_yield"})
#: ELF machine numbers of the hosts the loader knows (x86-64, aarch64)
ELF_MACHINES = {62: "x86_64", 183: "aarch64"}


@dataclass
class HostObject:
    """A program compiled for this machine: the ELF object and what the loader needs to call it."""

    object: bytes
    triple: str
    cpu: str
    features: str
    scratch_bytes: int
    inputs: list[dict[str, Any]]  # name (the model's, for validation only), dtype, shape
    outputs: list[dict[str, Any]]
    undefined: list[str]
    #: a parallel entry: {"steps": number of steps, "threads": the count its layers were split for}; else None
    parallel: dict[str, int] | None = None


def _external_data(proto: onnx.ModelProto) -> bool:
    return any(t.data_location == onnx.TensorProto.EXTERNAL for t in proto.graph.initializer)


def build_host_object(proto: onnx.ModelProto, shapes: dict[str, tuple[int, ...]], options: CompileOptions,
                      ) -> HostObject | None:
    """Compile ``proto`` at ``shapes`` into one host object, or None when the program cannot be one (see the
    module docstring). Errors of the worker propagate (``CompileError``)."""
    if value_inputs(proto) or _external_data(proto):
        return None
    triple, cpu, features = host_machine()
    opts = CompileOptions(**{**options.__dict__, "entry": "native", "dump_ir_after": ()})
    spec = specialize(proto, shapes, opts)
    # a small parallel schedule's serial twin (runtime/adaptive.py: an object has no run-by-run choice)
    prog = (spec.twin or spec).program
    lay = schedule_job(prog, literal=True)
    scratch = lay.pop("scratch_bytes")
    lay.pop("weight_bytes")
    steps = prog.meta.get("step_plan") if prog.meta.get("parallel_layers") else None
    parallel = None
    allowed = LIBC_LIBM
    if steps:
        if any(lay["buffers"][b]["kind"] != "a" for b, *_ in [*lay["inputs"], *lay["outputs"]]):
            return None  # an output that is a constant: the caller could not read it from the scratch block
        lay["steps"] = [(s.first, s.parts, list(s.deps)) for s in steps]
        lay["terminal"] = terminal_steps(steps)
        lay["sys_futex"] = SYS_FUTEX
        parallel = {"steps": len(steps), "threads": int(prog.meta["threads"])}
        allowed = LIBC_LIBM | PROTOCOL_SYMBOLS
    job = {"name": ENTRY, "triple": triple, "cpu": cpu, "features": features, "contract": False,
           "header": HEADER, **lay, "keep_ir": False, "asm": False, "inline_calls": True, "kernel_pipeline": True,
           "inline": sorted(prog.meta.get("generic_kernels", ())),
           "machine": {"reloc": "static", "codemodel": "jitdefault"}}
    res = run_worker(job, {c.kernel: (c.op, c.variant) for c in prog.calls})
    info = elf_info(res["object"])
    if info["machine"] not in ELF_MACHINES or f"{ENTRY}_run" not in info["defined"] or res["x86_intrinsics"] and \
            not triple.startswith("x86_64"):
        return None
    if any(s not in allowed for s in info["undefined"]):
        return None
    places = {(b, off): lay["buffers"][b].get("scratch_offset", 0) + off * size for b, off, _, size in
              [*lay["inputs"], *lay["outputs"]]}

    def tensors(bs: list) -> list[dict[str, Any]]:
        return [{"name": b.name, "dtype": np.dtype(b.dtype).str, "shape": [int(d) for d in b.shape],
                 "offset": int(places.get((b.buffer, b.offset), -1))} for b in bs]

    return HostObject(res["object"], triple, cpu, features, scratch, tensors(prog.inputs), tensors(prog.outputs),
                      info["undefined"], parallel)
