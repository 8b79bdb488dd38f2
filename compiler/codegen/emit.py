"""Code generation for a whole graph, as named steps: ``lower`` (nodes -> kernel calls, split over threads),
``plan_memory``, ``bind`` (calls -> the schedule's typed ``Call`` list), the parallel steps (threads > 1),
``render_schedule`` (the Python text, last), then loading/compiling the kernels and the entry.

The result is a ``runtime.Program``: the calls, the straight-line function ``run(<buffers>)`` rendered from
them (readable with ``CompiledModel.source()``), the buffers it needs, and where every input and output
lives.
"""

from __future__ import annotations

import numba
import numpy as np

from cnnjit.ir import Graph, Node, Value, get_op
from cnnjit.ir.errors import CompileError
from cnnjit.ir.types import DTYPES, short_name
from cnnjit.runtime.program import Arg, Buf, Call, Float, Int, IOBinding, Program, render_schedule

from . import kernels  # noqa: F401 - registers the generators
from .branches import BESIDE, pair_branches
from .build import HEADER, load_entry, load_kernel, mark_inline, source_key
from .kernel import VARIANTS, At, KernelCall, Param, Scratch, Target, lower_node
from .memory import MemoryPlan, plan_memory
from .pipeline import fast_typing
from .precompile import call_signatures, load_entry_only, precompile, schedule_progress
from .simd import host_vector_registers, host_vector_width
from .simd_int import host_int_width
from .threads import (
    PAIRED,
    PARALLEL_PARAMS,
    PARALLEL_SIG,
    PROTOCOL,
    parallel_run,
    plan_steps,
    render_parallel,
    split_stages,
    step_segments,
    worth_splitting,
)


def unsupported_nodes(graph: Graph) -> list[str]:
    """Ops of ``graph`` that move data but have no kernel variant."""
    return [n.op for n in graph.nodes if not get_op(n.op).view and n.op not in VARIANTS]


#: ``entry="auto"`` compiles the schedule with numba for models with at least this many kernel calls (one
#: thread; any count above, in segments of ``SEGMENT_CALLS``): below, the Python schedule's call overhead is
#: small. Measured (python -> numba, 1 thread): kws 0.171 -> 0.073 ms, ResNet-8 0.592 -> 0.263 ms, VWW 0.408
#: -> 0.208 ms. Its cold compile is one kernel specialisation per distinct tuple of sizes (instead of one
#: per kernel source) plus the schedule function: see benchmarks/results/entry_crossover.md
#: (``python benchmarks/compile_time.py --entry-crossover``) for where the extra compile pays off.
#: ShuffleNet's 171 calls compile in 10.5 s cold with the numba entry against 6.7 s with the Python one,
#: and run 1.52x faster (3.63 vs 5.52 ms). The PP-OCRv4 recognizer (367 calls) compiles cold in 27.6 CPU s
#: with the numba entry against 10.5 with the Python one, and runs about 2x faster (its kernels with
#: constant sizes). With ``threads > 1`` there is no upper bound either: a parallel schedule (threads.py)
#: keeps every kernel call inlined with its sizes, and from a Python entry every thread would take the GIL
#: for every call.
AUTO_NUMBA_CALLS = 4

#: a numba entry compiles as one function per this many consecutive calls (``segments``; 200 was the largest
#: schedule compiled as one function before), called in order by a short Python function (a few
#: microseconds). Compile time is about linear in the calls either way (the PP-OCRv4 recognizer's 367-call
#: schedule, kernels cached: 17.7 CPU s as one function, 16.3 as four), but segments bound the size of
#: one numba function (its type inference and LLVM module) for any model size.
SEGMENT_CALLS = 200

#: in a numba entry, a kernel called with up to this many distinct tuples of sizes is compiled once per
#: tuple with the sizes as constants; above, once for all its calls (sizes as int64 values), inlined by
#: LLVM into the entry, which propagates each call's sizes there. Measured (1 thread): specialising per
#: tuple runs the MLPerf Tiny models (at most 4 tuples per kernel) 5-8% faster than inlining every kernel
#: generically (kws 0.072 vs 0.076 ms, ResNet 0.266 vs 0.285 ms); MobileNetV2-224 (up to 7 tuples per
#: kernel) specialised 32 times takes 35 CPU s to compile, with this bound 10 compiles and 13.5 CPU s,
#: and runs as fast (7.6-7.8 ms either way).
SPECIALIZE_MAX = 4


def lower(graph: Graph, target: Target) -> tuple[list[tuple[Node, KernelCall]], list[tuple[int, int]]]:
    """Every node's kernel calls (its chosen variant's), in order, each with the node it computes; and the
    groups ``(first call, count)`` of layers split over ``target.threads`` (consecutive calls, one per part)."""
    missing = sorted(set(unsupported_nodes(graph)))
    if missing:
        raise CompileError(f"no kernel for op(s) {', '.join(missing)} in this build of cnnjit")
    out: list[tuple[Node, KernelCall]] = []
    groups: list[tuple[int, int]] = []
    split = target.threads > 1 and worth_splitting(graph.nodes)
    for node in graph.nodes:
        node.meta.pop(BESIDE, None)
        node.meta.pop(PAIRED, None)
    if split:  # independent layers side by side, each whole on a thread (branches.py): adjacent in the order
        views = {n.id for n in graph.nodes if get_op(n.op).view or n.meta.get("inplace")}
        graph.nodes, pairs = pair_branches(graph.nodes, views)
        for a, b in pairs:
            a.meta[BESIDE] = True
            a.meta[PAIRED] = b.meta[PAIRED] = True
    for node in graph.nodes:
        if get_op(node.op).view or node.meta.get("inplace"):
            continue  # no data moves: the output shares storage (see memory.plan_memory)
        try:
            node_calls = lower_node(node, target)
            if split:
                stages = split_stages(node, node_calls, target, lower_node)
                if stages:  # (one group per step: a staged split's steps follow each other)
                    for k, st in enumerate(stages):
                        groups.append((len(out) + sum(map(len, stages[:k])), len(st)))
                    node_calls = [c for st in stages for c in st]
        except CompileError:
            raise
        except Exception as e:  # noqa: BLE001 - a generator bug: name the node
            raise CompileError(f"generating code for {node.describe()} failed: {type(e).__name__}: {e}") from e
        out.extend((node, kc) for kc in node_calls)
    return out, groups


def call_scratch(graph: Graph, lowered: list[tuple[Node, KernelCall]]) -> list[tuple[int, Scratch]]:
    """Every ``Scratch`` argument of the calls, with the index of its node in ``graph`` (for the memory plan)."""
    index = {id(n): i for i, n in enumerate(graph.nodes)}
    got = {id(a): (index[id(node)], a) for node, kc in lowered for a in kc.args if isinstance(a, Scratch)}
    return list(got.values())  # (a scratch shared by a staged split's calls: once)


def call_inplace(graph: Graph, lowered: list[tuple[Node, KernelCall]]) -> dict[int, tuple[tuple[int, int], ...]]:
    """Node index -> the ``KernelCall.inplace`` candidates of its call, for nodes lowered to one call."""
    index = {id(n): i for i, n in enumerate(graph.nodes)}
    calls: dict[int, list[KernelCall]] = {}
    for node, kc in lowered:
        calls.setdefault(index[id(node)], []).append(kc)
    return {i: cs[0].inplace for i, cs in calls.items() if len(cs) == 1 and cs[0].inplace}


def choose_entry(entry: str, n_calls: int, threads: int) -> str:
    """``entry="auto"`` resolved for a schedule of ``n_calls`` kernel calls (see ``AUTO_NUMBA_CALLS``)."""
    if entry != "auto":
        return entry
    if n_calls < AUTO_NUMBA_CALLS:
        return "python"
    return "numba"


def bind(lowered: list[tuple[Node, KernelCall]], plan: MemoryPlan, entry: str,
         ) -> tuple[list[Call], dict[str, str], set[str]]:
    """The schedule's calls: each kernel named (``k0``, ``k1``... by first use, one per distinct source),
    values placed in their buffers, integers written as the entry wants them; the kernel sources by name,
    and the names of kernels compiled once for all their calls (numba entry, see ``SPECIALIZE_MAX``).

    In a numba entry, numba types every constant argument as its value (``Literal[int]``) and compiles the
    kernel once per distinct tuple of them, with the values as constants: the entry's speed. Sizes should
    be constants, buffer offsets need not be: written ``O(n)`` (an int64, see build.HEADER), so that one
    kernel specialisation serves every call of the same sizes, whatever its buffers' offsets. A kernel
    called with more than SPECIALIZE_MAX distinct sizes gets all its ints as ``O(n)`` instead: one compile
    for all its calls, which LLVM inlines into the entry (build.mark_inline) and specialises there.
    """
    off_form = "O" if entry in ("numba", "native") else "lit"
    generic: set[str] = set()  # source keys of kernels compiled once for all their calls (numba entry)
    if entry in ("numba", "native"):
        sizes: dict[str, set[tuple]] = {}
        for _, c in lowered:
            sizes.setdefault(source_key(c.source), set()).add(
                tuple(a for a in c.args if not isinstance(a, (Value, At, Param, Scratch))))
        generic = {k for k, v in sizes.items() if len(v) > SPECIALIZE_MAX}

    def place(s, shift: int = 0) -> list[Arg]:
        return [Buf(f"{s.kind}_{s.dtype}"), Int(s.offset + shift, off_form)]

    def expand(a: object, int_form: str) -> list[Arg]:
        if isinstance(a, Value):
            return place(plan.slot(a))
        if isinstance(a, At):
            return place(plan.slot(a.value), a.shift)
        if isinstance(a, Param):
            return place(plan.consts.add(a.array))
        if isinstance(a, Scratch):
            return place(plan.scratch[a])
        if isinstance(a, (bool, int, np.integer)):
            return [Int(int(a), int_form)]
        if isinstance(a, (float, np.floating)):
            return [Float(float(a))]
        raise CompileError(f"unexpected kernel argument of type {type(a).__name__}")

    names: dict[str, str] = {}
    sources: dict[str, str] = {}
    calls: list[Call] = []
    for node, c in lowered:
        key = source_key(c.source)
        if key not in names:
            names[key] = f"k{len(names)}"
            sources[names[key]] = c.source
        int_form = "O" if key in generic else "lit"
        args = tuple(x for a in c.args for x in expand(a, int_form))
        calls.append(Call(names[key], args, node.op, c.variant, node, c.note))
    return calls, sources, {n for n, s in sources.items() if source_key(s) in generic}


def buffer_types(params: list[str], const_bufs: dict[str, np.ndarray]) -> dict[str, object]:
    """The numba type of every schedule parameter: read-only constant pools, writable arenas."""
    return {p: numba.typeof(const_bufs[p[2:]] if p.startswith("c_") else np.zeros(1, DTYPES[p[2:]]))
            for p in params}


def generate(graph: Graph, target: Target | None = None, entry: str = "python", keep_inputs: bool = False) -> Program:
    """Generate and compile-load every kernel of ``graph``; return the runnable ``Program``.

    ``entry="python"`` runs the schedule as a Python function (no compile cost beyond the kernels);
    ``entry="numba"`` compiles the schedule itself with numba, which removes the per-kernel call overhead
    and lets LLVM inline the kernels with their sizes as constants (slower to compile, faster to run).
    ``target`` says what to generate for (default: the host, one thread); with ``target.threads > 1``
    large layers split into independent calls and the schedule becomes one parallel region that every
    thread of a team runs (see ``threads.py``). The schedule is data (``Program.calls``); its Python text is
    rendered from that list last. ``keep_inputs``: no value reuses an input's place in the arena
    (``plan_memory``; ``Program.meta["inputs_kept"]``).
    """
    if entry not in ("python", "numba", "auto", "lazy", "native"):
        raise ValueError(f"entry must be 'auto', 'python' or 'numba', got {entry!r}")
    target = target or Target(vector_width=host_vector_width(), int_width=host_int_width(),
                             vector_registers=host_vector_registers())
    lowered, groups = lower(graph, target)
    # paired layers run side by side (branches.py): a parallel schedule even if no layer was split
    beside = [i for i, n in enumerate(graph.nodes) if n.meta.get(BESIDE)]
    paired = sum(1 for n, _ in lowered if n.meta.get(PAIRED))
    parallel = bool(groups) or bool(beside)
    # in a parallel schedule the parts of a layer run at once: no output trails its input there
    plan = plan_memory(graph, call_scratch(graph, lowered), keep_scratch=parallel,
                       inplace=None if parallel else call_inplace(graph, lowered), keep_inputs=keep_inputs,
                       beside=beside)
    # a split layer counts once: its parts are calls of one kernel, and a Python entry would make every
    # thread take the GIL for every call (measured: the ddddocr detector, threads=4 on 2 cores, Python
    # entry 1.5x slower than threads=2 with the numba one)
    entry = choose_entry(entry, len(lowered) - sum(n - 1 for _, n in groups), target.threads)
    calls, sources, generic = bind(lowered, plan, entry)
    kernel_calls = list(calls)  # before parallel groups: every kernel call, for the compile report

    params = sorted({a.name for c in calls for a in c.args if isinstance(a, Buf)}
                    | {f"{plan.slot(v).kind}_{plan.slot(v).dtype}" for v in [*graph.inputs, *graph.outputs]}
                    | {f"a_{dt}" for dt in plan.arena_sizes})
    const_bufs = plan.consts.buffers()
    dispatchers = {name: load_kernel(s) for name, s in sources.items()}
    btypes = buffer_types(params, const_bufs)
    # threads > 1 and a layer was split: one parallel region (threads.py), else the serial schedule
    steps = plan_steps(lowered, groups, plan) if parallel else None
    for first, count in groups:
        for c in calls[first:first + count]:
            c.parts = count  # a part of a layer split in ``count`` calls
    src = render_schedule(params, calls) if steps is None else render_parallel(params, calls, steps)
    meta: dict = {"entry": entry, "threads": target.threads, "parallel_layers": len(groups) + paired,
                  "steps": len(steps) if steps else len(calls), "generic_kernels": sorted(generic),
                  "inputs_kept": keep_inputs}
    if steps:
        meta["step_plan"] = steps  # the parallel steps (threads.Step), for the host object (target/host.py)
    protocol = PROTOCOL if steps else {}  # what a parallel schedule calls besides kernels
    namespace: dict[str, object] = {**dispatchers, **protocol}
    exec(compile(src, "<cnnjit schedule>", "exec"), namespace)  # noqa: S102 - rendered from our own calls

    read = {v.id for n in graph.nodes for v in n.inputs if v is not None} | {v.id for v in graph.outputs}

    def binding(v: Value, name: str) -> IOBinding:
        s = plan.slot(v)
        return IOBinding(name, v.dtype, v.shape, f"{s.kind}_{s.dtype}", s.offset, v.id in read)

    run = namespace["run"]
    sig = tuple(btypes[p] for p in params) + (PARALLEL_SIG if steps else ())
    if entry == "python":  # compile now, for the exact argument types (see precompile.py)
        meta["compile_report"] = _precompile(dispatchers, sources, kernel_calls, plan, const_bufs)
    elif entry in ("lazy", "native"):  # numba schedule compiled at its first call, or never: target builds
        # ("native": bound like a numba entry, for the host object of compiler/target/host.py)
        run = numba.njit(nogil=True)(run)
    elif entry == "numba":  # numba functions, cached on disk, compiled now
        # in segments of about SEGMENT_CALLS calls: a parallel one in whole steps, each segment a function
        # of the same step state (measured, a 407-call ViT at 2 threads cold: the schedule as one function
        # 55.6 CPU s to compile, against 11.2 for its 1-thread schedule in three segments)
        texts = ([render_parallel(params, calls, steps, span=s) for s in step_segments(steps, SEGMENT_CALLS)]
                 if steps else [render_schedule(params, calls[a:b]) for a, b in segments(len(calls), SEGMENT_CALLS)])
        run = _numba_entry(texts, [*params, *PARALLEL_PARAMS] if steps else params, sig, dispatchers, protocol,
                           sources, generic, kernel_calls, plan, const_bufs, meta)
    if steps:
        run = parallel_run(run, steps, target.threads)
    return Program(
        run=run,
        calls=calls,
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


def segments(n_calls: int, size: int) -> list[tuple[int, int]]:
    """``[start, end)`` call ranges splitting a schedule of ``n_calls`` into segments of at most ``size``
    calls, of nearly equal length (one range when it fits)."""
    k = max(1, -(-n_calls // max(size, 1)))
    bounds = [n_calls * i // k for i in range(k + 1)]
    return list(zip(bounds[:-1], bounds[1:]))


def _numba_entry(texts: list[str], params: list[str], sig: tuple, dispatchers: dict, protocol: dict,
                 sources: dict[str, str], generic: set[str], kernel_calls: list[Call], plan: MemoryPlan,
                 const_bufs: dict, meta: dict):
    """The schedule compiled with numba: one function per text in ``texts`` (consecutive segments of the
    schedule, see ``SEGMENT_CALLS``), each cached on disk; with several segments, ``run`` is a Python
    function of ``params`` calling them in order (a parallel schedule's segments: with its step protocol's
    parameters). ``protocol``: what the texts call besides the kernels (``dispatchers``)."""
    keys = {n: source_key(s) for n, s in sources.items()}
    fns = [load_entry(text, {**dispatchers, **protocol}, keys) for text in texts]
    meta["segments"] = len(fns)
    # A segment's machine code holds every kernel it calls (linked in, mostly inlined), so when every
    # segment is already compiled (this process) or in the disk cache, the kernels' own code is not needed:
    # loading each kernel's cache entry as well would double the warm start (``precompile.load_entry_only``).
    report = None
    for fn in fns:
        report = load_entry_only(fn, sig, dispatchers, sources, _signatures(kernel_calls, plan, const_bufs, True),
                                 _call_counts(kernel_calls), _kernel_ops(kernel_calls))
        if report is None:
            break
    if report is None:
        # the kernels first, for exactly the argument types the entry passes (literal sizes, int64
        # offsets), and not for the Python ones (which nothing would call): the segments' compile then
        # finds them compiled, and the report can say what each one cost
        report = _precompile(dispatchers, sources, kernel_calls, plan, const_bufs, literal=True)
        for name in generic:
            for cres in list(dispatchers[name].overloads.values()):
                mark_inline(cres)
        try:
            with fast_typing(), schedule_progress(len(dispatchers)):
                for fn in fns:
                    fn.compile(sig)
        except Exception as e:  # noqa: BLE001 - a compiler bug: name it
            raise CompileError(f"compiling the schedule failed: {type(e).__name__}: {e}") from e
    meta["compile_report"] = report
    if len(fns) == 1:
        return fns[0]
    # a few Python-level calls into compiled segments (microseconds), in a namespace that also holds the
    # kernels (the profiler finds them in ``run.__globals__``)
    names = {f"s{i}": fn for i, fn in enumerate(fns)}
    text = f"def run({', '.join(params)}):\n" + "".join(f"    {n}({', '.join(params)})\n" for n in names)
    outer: dict[str, object] = {**dispatchers, **names}
    exec(compile(text, "<cnnjit segments>", "exec"), outer)  # noqa: S102 - our own names only
    run = outer["run"]
    run.segments = fns  # (what a batch's native sample loop calls in turn: runtime/batchrows.py)
    return run


def _signatures(calls: list[Call], plan: MemoryPlan, const_bufs: dict, literal: bool) -> dict[str, list[tuple]]:
    by_kernel: dict[str, list[tuple]] = {}
    for c in calls:
        by_kernel.setdefault(c.kernel, []).append(c.args)
    return call_signatures(by_kernel, {f"a_{dt}": d for dt, d in _dtypes(plan).items()},
                           {f"c_{dt}": arr for dt, arr in const_bufs.items()}, literal=literal)


def _precompile(dispatchers: dict, sources: dict[str, str], calls: list[Call], plan: MemoryPlan, const_bufs: dict,
                literal: bool = False):
    """Compile (or load) every kernel for the argument types of its calls: as Python passes them (int64),
    or as a numba entry does (``literal``: each int constant its own ``Literal[int]``)."""
    return precompile(dispatchers, sources, _signatures(calls, plan, const_bufs, literal), _call_counts(calls),
                      _kernel_ops(calls), variants={c.kernel: c.variant for c in calls})


def _call_counts(calls: list[Call]) -> dict[str, int]:
    counts: dict[str, int] = {}
    for c in calls:
        counts[c.kernel] = counts.get(c.kernel, 0) + 1
    return counts


def _kernel_ops(calls: list[Call]) -> dict[str, str]:
    """Per kernel name, the ops it serves (for the compile report)."""
    ops: dict[str, list[str]] = {}
    for c in calls:
        lst = ops.setdefault(c.kernel, [])
        if c.op not in lst:
            lst.append(c.op)
    return {n: ",".join(v) for n, v in ops.items()}


def _dtypes(plan: MemoryPlan) -> dict:
    return {dt: DTYPES[dt] for dt in plan.arena_sizes}


__all__ = ["generate", "lower", "bind", "choose_entry", "short_name"]
