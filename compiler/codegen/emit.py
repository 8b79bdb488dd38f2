"""Code generation for a whole graph: memory plan, kernel calls, and the schedule source.

The result is a ``runtime.Program``: a straight-line Python function ``run(<buffers>)`` that calls the
compiled kernels in order (readable with ``CompiledModel.source()``), the buffers it needs, and where
every input and output lives.
"""

from __future__ import annotations

import numpy as np

from cnnjit.ir import Graph, Value, get_op
from cnnjit.ir.errors import CompileError
from cnnjit.ir.types import DTYPES, short_name
from cnnjit.runtime.program import IOBinding, Program

from . import kernels  # noqa: F401 - registers the generators
from .build import HEADER, load_kernel, source_key
from .kernel import GENERATORS, At, KernelCall, Param
from .memory import MemoryPlan, plan_memory


def unsupported_nodes(graph: Graph) -> list[str]:
    return [n.op for n in graph.nodes if not get_op(n.op).view and n.op not in GENERATORS]


#: ``entry="auto"`` compiles the schedule with numba for models with this many kernel calls (inclusive):
#: below, the Python schedule's call overhead is small; above, compiling one huge function costs too much.
#: Measured (python -> numba, 1 thread): kws 0.171 -> 0.073 ms, ResNet-8 0.592 -> 0.263 ms, VWW 0.408 ->
#: 0.208 ms, for 0.7-1 s of extra cold compile (cached on disk afterwards).
AUTO_NUMBA_CALLS = (4, 80)


def generate(graph: Graph, entry: str = "python") -> Program:
    """Generate and compile-load every kernel of ``graph``; return the runnable ``Program``.

    ``entry="python"`` runs the schedule as a Python function (no compile cost beyond the kernels);
    ``entry="numba"`` compiles the schedule itself with numba, which removes the per-kernel call overhead
    and lets LLVM inline the kernels with their sizes as constants (slower to compile, faster to run).
    """
    if entry not in ("python", "numba", "auto", "lazy"):
        raise ValueError(f"entry must be 'auto', 'python' or 'numba', got {entry!r}")
    missing = sorted(set(unsupported_nodes(graph)))
    if missing:
        raise CompileError(f"no kernel for op(s) {', '.join(missing)} in this build of cnnjit")
    plan = plan_memory(graph)
    calls: list[KernelCall] = []
    for node in graph.nodes:
        if get_op(node.op).view or node.meta.get("inplace"):
            continue  # no data moves: the output shares storage (see memory.plan_memory)
        try:
            calls.extend(GENERATORS[node.op](node))
        except CompileError:
            raise
        except Exception as e:  # noqa: BLE001 - a generator bug: name the node
            raise CompileError(f"generating code for {node.describe()} failed: {type(e).__name__}: {e}") from e

    # buffers: one arena and one constant pool per dtype, in a fixed order
    kernel_names: dict[str, str] = {}
    sources: dict[str, str] = {}
    lines: list[str] = []
    used: set[str] = set()

    def buf_arg(kind: str, dt: str) -> str:
        name = f"{kind}_{dt}"
        used.add(name)
        return name

    def expand(a) -> list[str]:
        if isinstance(a, Value):
            s = plan.slot(a)
            return [buf_arg(s.kind, s.dtype), str(s.offset)]
        if isinstance(a, At):
            s = plan.slot(a.value)
            return [buf_arg(s.kind, s.dtype), str(s.offset + a.shift)]
        if isinstance(a, Param):
            s = plan.consts.add(a.array)
            return [buf_arg(s.kind, s.dtype), str(s.offset)]
        if isinstance(a, bool):
            return [str(int(a))]
        if isinstance(a, int):
            return [repr(int(a))]
        if isinstance(a, float):
            from .kernel import flit

            return [flit(a)]
        raise CompileError(f"unexpected kernel argument of type {type(a).__name__}")

    call_args: dict[str, list[list[str]]] = {}
    for c in calls:
        key = source_key(c.source)
        if key not in kernel_names:
            kernel_names[key] = f"k{len(kernel_names)}"
            sources[kernel_names[key]] = c.source
        args = [x for a in c.args for x in expand(a)]
        call_args.setdefault(kernel_names[key], []).append(args)
        lines.append(f"    {kernel_names[key]}({', '.join(args)})" + (f"  # {c.note}" if c.note else ""))

    for v in list(graph.inputs) + list(graph.outputs):
        s = plan.slot(v)
        buf_arg(s.kind, s.dtype)
    const_bufs = plan.consts.buffers()
    for dt in plan.arena_sizes:
        used.add(f"a_{dt}")
    params = sorted(used)
    src = "def run(" + ", ".join(params) + "):\n" + ("\n".join(lines) if lines else "    pass") + "\n"

    if entry == "auto":
        entry = "numba" if AUTO_NUMBA_CALLS[0] <= len(calls) <= AUTO_NUMBA_CALLS[1] else "python"
    dispatchers = {name: load_kernel(s) for name, s in sources.items()}
    meta: dict = {"entry": entry}
    if entry in ("python", "numba"):  # compile now, for the exact argument types (see precompile.py)
        meta["compile_report"] = _precompile(dispatchers, sources, call_args, plan, const_bufs, calls)
    namespace: dict[str, object] = dict(dispatchers)
    exec(compile(src, "<cnnjit schedule>", "exec"), namespace)  # noqa: S102 - our own generated source

    def binding(v: Value, name: str) -> IOBinding:
        s = plan.slot(v)
        return IOBinding(name, v.dtype, v.shape, f"{s.kind}_{s.dtype}", s.offset)

    run = namespace["run"]
    if entry == "lazy":  # numba-compiled schedule, compiled at its first call (or never: target builds)
        import numba

        run = numba.njit(nogil=True)(run)
    elif entry == "numba":  # one numba function for the whole schedule, cached on disk, compiled now
        import numba

        from .build import load_entry

        run = load_entry(src, dispatchers, {n: source_key(s) for n, s in sources.items()})
        # the argument types of every call: read-only constant pools, writable arenas
        sig = tuple(numba.typeof(const_bufs[p[2:]] if p.startswith("c_") else np.zeros(1, DTYPES[p[2:]]))
                    for p in params)
        try:
            run.compile(sig)
        except Exception as e:  # noqa: BLE001 - a compiler bug: name it
            raise CompileError(f"compiling the schedule failed: {type(e).__name__}: {e}") from e
    return Program(
        run=run,
        source=src,
        kernel_sources=sources,
        buffer_names=params,
        arena_sizes={f"a_{dt}": n for dt, n in plan.arena_sizes.items()},
        arena_dtypes={f"a_{dt}": v for dt, v in _dtypes(plan).items()},
        const_buffers={f"c_{dt}": arr for dt, arr in const_bufs.items()},
        inputs=[binding(v, v.name) for v in graph.inputs],
        outputs=[binding(v, v.name) for v in graph.outputs],
        kernel_header=HEADER,
        meta=meta,
        intermediate_bytes=sum(
            n * _dtypes(plan)[dt].itemsize for dt, n in plan.total_intermediate_elems.items()),
    )


def _precompile(dispatchers: dict, sources: dict[str, str], call_args: dict[str, list[list[str]]],
                plan: MemoryPlan, const_bufs: dict, calls: list[KernelCall]):
    from .precompile import call_signatures, precompile

    sigs = call_signatures(call_args, {f"a_{dt}": d for dt, d in _dtypes(plan).items()},
                           {f"c_{dt}": arr for dt, arr in const_bufs.items()})
    names = {source_key(s): n for n, s in sources.items()}
    ops: dict[str, list[str]] = {}
    for c in calls:
        op = c.note.split(" ", 1)[0] if c.note else "?"
        lst = ops.setdefault(names[source_key(c.source)], [])
        if op not in lst:
            lst.append(op)
    return precompile(dispatchers, sources, sigs, {n: len(a) for n, a in call_args.items()},
                      {n: ",".join(v) for n, v in ops.items()})


def _dtypes(plan: MemoryPlan) -> dict:
    from cnnjit.ir.types import DTYPES

    return {dt: DTYPES[dt] for dt in plan.arena_sizes}


__all__ = ["generate", "short_name"]
