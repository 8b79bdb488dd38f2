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
#: 0.208 ms. Its cold compile is one kernel specialisation per distinct tuple of sizes (instead of one
#: per kernel source) plus the schedule function: see benchmarks/results/entry_crossover.md
#: (``python benchmarks/compile_time.py --entry-crossover``) for where the extra compile pays off. The
#: upper bound was 80 while kernels compiled with numba's full pipeline; with the short one (pipeline.py)
#: ShuffleNet's 171 calls compile in 10.5 s cold with the numba entry against 6.7 s with the Python one,
#: and run 1.52x faster (3.63 vs 5.52 ms). With ``threads > 1`` the bound stays 80: MobileNetV2's split
#: schedule (more than 80 calls) compiled in 22 s with the numba entry and ran no faster (9-12 ms).
AUTO_NUMBA_CALLS = (4, 200)
AUTO_NUMBA_CALLS_THREADS = 80

#: in a numba entry, a kernel called with up to this many distinct tuples of sizes is compiled once per
#: tuple with the sizes as constants; above, once for all its calls (sizes as int64 values), inlined by
#: LLVM into the entry, which propagates each call's sizes there. Measured (1 thread): specialising per
#: tuple runs the MLPerf Tiny models (at most 4 tuples per kernel) 5-8% faster than inlining every kernel
#: generically (kws 0.072 vs 0.076 ms, ResNet 0.266 vs 0.285 ms); MobileNetV2-224 (up to 7 tuples per
#: kernel) specialised 32 times takes 35 CPU s to compile, with this bound 10 compiles and 13.5 CPU s,
#: and runs as fast (7.6-7.8 ms either way).
SPECIALIZE_MAX = 4


def generate(graph: Graph, entry: str = "python", threads: int = 1) -> Program:
    """Generate and compile-load every kernel of ``graph``; return the runnable ``Program``.

    ``entry="python"`` runs the schedule as a Python function (no compile cost beyond the kernels);
    ``entry="numba"`` compiles the schedule itself with numba, which removes the per-kernel call overhead
    and lets LLVM inline the kernels with their sizes as constants (slower to compile, faster to run).
    ``threads > 1`` splits large layers into ``threads`` independent calls run concurrently by a small
    parallel driver (see ``threads.py``).
    """
    if entry not in ("python", "numba", "auto", "lazy"):
        raise ValueError(f"entry must be 'auto', 'python' or 'numba', got {entry!r}")
    missing = sorted(set(unsupported_nodes(graph)))
    if missing:
        raise CompileError(f"no kernel for op(s) {', '.join(missing)} in this build of cnnjit")
    plan = plan_memory(graph)
    calls: list[KernelCall] = []
    groups: list[tuple[int, int]] = []  # (first call, count) of each layer split over threads
    for node in graph.nodes:
        if get_op(node.op).view or node.meta.get("inplace"):
            continue  # no data moves: the output shares storage (see memory.plan_memory)
        try:
            node_calls = GENERATORS[node.op](node)
            if threads > 1:
                from .threads import split_node

                parts = split_node(node, node_calls, threads, GENERATORS[node.op])
                if parts:
                    groups.append((len(calls), len(parts)))
                    node_calls = parts
            calls.extend(node_calls)
        except CompileError:
            raise
        except Exception as e:  # noqa: BLE001 - a generator bug: name the node
            raise CompileError(f"generating code for {node.describe()} failed: {type(e).__name__}: {e}") from e

    if entry == "auto":
        hi = AUTO_NUMBA_CALLS[1] if threads == 1 else AUTO_NUMBA_CALLS_THREADS
        entry = "numba" if AUTO_NUMBA_CALLS[0] <= len(calls) <= hi else "python"
    # In a numba entry, numba types every constant argument as its value (``Literal[int]``) and compiles the
    # kernel once per distinct tuple of them, with the values as constants: the entry's speed. Sizes should
    # be constants, buffer offsets need not be: written ``O(n)`` (an int64, see build.HEADER), so that one
    # kernel specialisation serves every call of the same sizes, whatever its buffers' offsets. A kernel
    # called with more than SPECIALIZE_MAX distinct sizes gets all its ints as ``O(n)`` instead: one compile
    # for all its calls, which LLVM inlines into the entry (build.mark_inline) and specialises there.
    off = "O({})" if entry == "numba" else "{}"
    generic: set[str] = set()  # source keys of kernels compiled once for all their calls (numba entry)
    if entry == "numba":
        sizes: dict[str, set[tuple]] = {}
        for c in calls:
            sizes.setdefault(source_key(c.source), set()).add(
                tuple(a for a in c.args if not isinstance(a, (Value, At, Param))))
        generic = {k for k, v in sizes.items() if len(v) > SPECIALIZE_MAX}
    lit = True  # the call being written passes its sizes as constants

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
            return [buf_arg(s.kind, s.dtype), off.format(s.offset)]
        if isinstance(a, At):
            s = plan.slot(a.value)
            return [buf_arg(s.kind, s.dtype), off.format(s.offset + a.shift)]
        if isinstance(a, Param):
            s = plan.consts.add(a.array)
            return [buf_arg(s.kind, s.dtype), off.format(s.offset)]
        if isinstance(a, bool):
            return [str(int(a)) if lit else f"O({int(a)})"]
        if isinstance(a, int):
            return [repr(int(a)) if lit else f"O({int(a)})"]
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
        lit = key not in generic
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

    dispatchers = {name: load_kernel(s) for name, s in sources.items()}
    drivers: dict[str, object] = {}  # threads > 1: the parallel drivers the schedule calls (d0, d1...)
    if groups:
        from .threads import load_drivers

        src, drivers = load_drivers(src, groups, entry, dispatchers, sources, params, const_bufs)
    meta: dict = {"entry": entry, "threads": threads, "parallel_layers": len(groups),
                  "generic_kernels": sorted(n for n, s_ in sources.items() if source_key(s_) in generic)}
    namespace: dict[str, object] = {**dispatchers, **drivers}
    exec(compile(src, "<cnnjit schedule>", "exec"), namespace)  # noqa: S102 - our own generated source

    def binding(v: Value, name: str) -> IOBinding:
        s = plan.slot(v)
        return IOBinding(name, v.dtype, v.shape, f"{s.kind}_{s.dtype}", s.offset)

    run = namespace["run"]
    if entry == "python":  # compile now, for the exact argument types (see precompile.py)
        meta["compile_report"] = _precompile(dispatchers, sources, call_args, plan, const_bufs, calls)
    elif entry == "lazy":  # numba-compiled schedule, compiled at its first call (or never: target builds)
        import numba

        run = numba.njit(nogil=True)(run)
    elif entry == "numba":  # one numba function for the whole schedule, cached on disk, compiled now
        import numba

        from .build import load_entry

        run = load_entry(src, {**dispatchers, **drivers}, {n: source_key(s) for n, s in sources.items()})
        # the argument types of every call: read-only constant pools, writable arenas
        sig = tuple(numba.typeof(const_bufs[p[2:]] if p.startswith("c_") else np.zeros(1, DTYPES[p[2:]]))
                    for p in params)
        # The schedule's machine code holds every kernel (linked in, mostly inlined), so when it is already
        # compiled (this process) or in the disk cache, the kernels' own code is not needed: loading each
        # kernel's cache entry as well would double the warm start (see ``precompile.load_entry_only``).
        report = _load_entry_only(run, sig, dispatchers, sources, call_args, plan, const_bufs, calls)
        if report is None:
            # the kernels first, for exactly the argument types the entry passes (literal sizes, int64
            # offsets), and not for the Python ones (which nothing would call): the entry's compile then
            # finds them compiled, and the report can say what each one cost
            report = _precompile(dispatchers, sources, call_args, plan, const_bufs, calls, literal=True)
            from .build import mark_inline

            for name, src_ in sources.items():
                if source_key(src_) in generic:
                    for cres in list(dispatchers[name].overloads.values()):
                        mark_inline(cres)
            from .pipeline import fast_typing

            try:
                with fast_typing():
                    run.compile(sig)
            except Exception as e:  # noqa: BLE001 - a compiler bug: name it
                raise CompileError(f"compiling the schedule failed: {type(e).__name__}: {e}") from e
        meta["compile_report"] = report
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


def _signatures(call_args: dict[str, list[list[str]]], plan: MemoryPlan, const_bufs: dict,
                literal: bool) -> dict[str, list[tuple]]:
    from .precompile import call_signatures

    return call_signatures(call_args, {f"a_{dt}": d for dt, d in _dtypes(plan).items()},
                           {f"c_{dt}": arr for dt, arr in const_bufs.items()}, literal=literal)


def _precompile(dispatchers: dict, sources: dict[str, str], call_args: dict[str, list[list[str]]],
                plan: MemoryPlan, const_bufs: dict, calls: list[KernelCall], literal: bool = False):
    """Compile (or load) every kernel for the argument types of its calls: as Python passes them (int64),
    or as a numba entry does (``literal``: each int constant its own ``Literal[int]``)."""
    from .precompile import precompile

    return precompile(dispatchers, sources, _signatures(call_args, plan, const_bufs, literal),
                      {n: len(a) for n, a in call_args.items()}, _kernel_ops(sources, calls))


def _load_entry_only(run, sig: tuple, dispatchers: dict, sources: dict[str, str],
                     call_args: dict[str, list[list[str]]], plan: MemoryPlan, const_bufs: dict,
                     calls: list[KernelCall]):
    """The compile report when the numba schedule ``run`` is ready for ``sig`` without compiling anything
    (in memory or in the disk cache); None (nothing done) when it must be compiled."""
    from .precompile import load_entry_only

    return load_entry_only(run, sig, dispatchers, sources, _signatures(call_args, plan, const_bufs, True),
                           {n: len(a) for n, a in call_args.items()}, _kernel_ops(sources, calls))


def _kernel_ops(sources: dict[str, str], calls: list[KernelCall]) -> dict[str, str]:
    """Per kernel name, the ops it serves (for the compile report)."""
    names = {source_key(s): n for n, s in sources.items()}
    ops: dict[str, list[str]] = {}
    for c in calls:
        op = c.note.split(" ", 1)[0] if c.note else "?"
        lst = ops.setdefault(names[source_key(c.source)], [])
        if op not in lst:
            lst.append(op)
    return {n: ",".join(v) for n, v in ops.items()}


def _dtypes(plan: MemoryPlan) -> dict:
    from cnnjit.ir.types import DTYPES

    return {dt: DTYPES[dt] for dt in plan.arena_sizes}


__all__ = ["generate", "short_name"]
