"""The compiled callable: input validation at the boundary, per-shape specialisations, fresh outputs.

A ``CompiledModel`` knows the model's declared inputs and a ``specialize`` callback (provided by the
compiler) that builds a ``Specialization`` for concrete input shapes. Shapes seen once are cached. A model
whose inputs all have a symbolic leading (batch) dimension and whose ops keep samples apart
(``Specialization.batch_separable``) runs a new batch size as a ``BatchLoop`` over its batch-1
specialisation, without compiling; any other new shape is specialised (compiled) once.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from cnnjit.ir.errors import CnnjitError, CompileError, InputError

from .adaptive import Chooser
from .batchloop import BatchLoop, on_places, ready_for_batches, run_rows
from .program import Program
from .team import IDLE_HOLD_MAX_NS

if TYPE_CHECKING:
    from cnnjit.ir import Graph


@dataclass(frozen=True)
class InputSignature:
    """A declared model input: dims are ints, or None where symbolic (``dim_names`` give the symbols)."""

    name: str
    dtype: np.dtype
    dims: tuple[int | None, ...] | None
    dim_names: tuple[str, ...] = ()
    #: the model uses this input's value as a shape or attribute: specialise on the value too
    by_value: bool = False

    def describe(self) -> str:
        if self.dims is None:
            return f"{self.name!r}: {self.dtype}[any shape]"
        ds = [str(d) if d is not None else (self.dim_names[i] if i < len(self.dim_names) and self.dim_names[i]
                                               else "?") for i, d in enumerate(self.dims)]
        return f"{self.name!r}: {self.dtype}[{', '.join(ds)}]"

    @property
    def static(self) -> bool:
        return self.dims is not None and all(d is not None for d in self.dims)


class Arena(dict):
    """One set of a program's buffers by name (``Program.allocate``), with what a call needs precomputed:
    the schedule's arguments in order and the views of the inputs' and outputs' places in the buffers
    (shaped like the tensors), so a call copies straight in and out with no slicing or reshaping."""

    def __init__(self, program: Program):
        super().__init__(program.allocate())
        self.args = tuple(self[n] for n in program.buffer_names)
        self.ins = [(b.name, self[b.buffer][b.offset:b.offset + b.size].reshape(b.shape))
                    for b in program.inputs if b.size and b.read]
        self.outs = [self[b.buffer][b.offset:b.offset + b.size].reshape(b.shape) for b in program.outputs]
        #: the place of a one-input program's input, of a one-output program's output (``_calls``)
        self.in1 = self.ins[0][1] if len(self.ins) == 1 else None
        self.out1 = self.outs[0] if len(self.outs) == 1 else None


class Specialization:
    """One shape-specialised compilation: the IR after passes, the program, and a pool of arenas.

    Each call takes an arena set (scratch buffers) from the pool, or allocates one when all are in use, so
    calls from several threads run in parallel (the kernels release the GIL) without sharing scratch
    memory; at most ``max_pooled`` idle arena sets are kept.
    """

    def __init__(self, graph: Graph, program: Program, timings: dict[str, float] | None = None,
                 pass_report: str = "", max_pooled: int | None = None):
        self.graph = graph
        self.program = program
        self.timings = dict(timings or {})
        self.pass_report = pass_report
        self.max_pooled = max_pooled if max_pooled is not None else max(2, min(8, os.cpu_count() or 2))
        self._pool: list[Arena] = [Arena(program)]
        #: every op keeps samples apart along axis 0 (``compiler.batching``): other batch sizes may loop
        self.batch_separable = False
        #: the serial schedule of a small parallel one (``runtime/adaptive.py``), and which of them runs
        self.twin: Specialization | None = None
        self.chooser: Chooser | None = None
        #: ``BoundCaller``'s per-names set-up (entry point, its ``rouse``, input positions), made once
        self._bindings: dict[tuple[str, ...], tuple] = {}
        #: how a batch of this specialisation runs as a native job (``_batch_desc``): None until looked up,
        #: False where it cannot (samples run from Python)
        self._desc: Any = None

    def with_twin(self, twin: Specialization) -> Specialization:
        """This parallel specialisation running, call by call, whichever of itself and ``twin`` (its serial
        schedule, bit-identical results) has been faster lately (``runtime/adaptive.py``); a run by one thread
        only (``solo``) takes ``twin``."""
        self.twin, self.chooser = twin, Chooser(margin=-TWIN_MARGIN, paired=True)  # (two programs: see TWIN_MARGIN)
        if getattr(self.program.run, "chooser", None) is not None:
            self.program.run.chooser = None  # (a ParallelRun: this is its one choice, team or serial twin)
        return self

    def _acquire(self) -> Arena:
        try:
            return self._pool.pop()  # list.pop / append are atomic: no lock on the per-call path
        except IndexError:
            return Arena(self.program)

    def _release(self, bufs: Arena) -> None:
        if len(self._pool) < self.max_pooled:  # a race may keep one extra set: harmless
            self._pool.append(bufs)

    def prefill(self, n: int) -> None:
        """Keep at least ``n`` idle arena sets (at most ``max_pooled``): one per thread of a ``BatchLoop``,
        written once now (a fresh zeroed block is mapped on first write: MobileNetV2's 8.6 MB arena cost a
        first run ~15 ms of page faults per thread)."""
        while len(self._pool) < min(n, self.max_pooled):
            self._pool.append(Arena(self.program))
        for bufs in self._pool:  # (called before the specialisation is shared: every set is idle)
            for name in self.program.arena_sizes:
                bufs[name].fill(0)
        if self.twin is not None:  # (what a BatchLoop's samples run)
            self.twin.prefill(n)
        elif self._batch_desc(True) is not None:
            from .parallel import prepare_batches  # (numba: loaded already by a numba schedule)

            prepare_batches()  # (compiled or loaded now, not in the first batch)

    def run(self, feeds: Mapping[str, np.ndarray]) -> list[np.ndarray]:
        """Run on validated arrays (by input name, right dtype and shape); outputs are fresh arrays."""
        return self.run_into(feeds, None)

    @property
    def output_specs(self) -> list[tuple[np.dtype, tuple[int, ...]]]:
        """(dtype, shape) of every output."""
        return [(b.dtype, b.shape) for b in self.program.outputs]

    def run_into(self, feeds: Mapping[str, np.ndarray], outs: Sequence[np.ndarray] | None,
                 solo: bool = False) -> list[np.ndarray]:
        """``run``, writing the outputs into ``outs`` (arrays of the outputs' shapes, e.g. one sample's rows
        of a batch) when given, else into fresh arrays; returns the output arrays. ``solo``: a parallel
        schedule run by the calling thread only (``alone``)."""
        if self.twin is not None:
            if solo:
                return self.twin.run_into(feeds, outs)
            which = self.chooser.pick()
            if which:
                before_serial(self.chooser, self.program.run)
            t0 = time.perf_counter()
            got = self.twin.run_into(feeds, outs) if which else self._run_into(feeds, outs, False)
            self.chooser.record(which, time.perf_counter() - t0)
            return got
        return self._run_into(feeds, outs, solo)

    def _run_into(self, feeds: Mapping[str, np.ndarray], outs: Sequence[np.ndarray] | None,
                  solo: bool) -> list[np.ndarray]:
        run = alone(self.program.run) if solo else self.program.run
        if not solo and hasattr(run, "rouse"):
            run.rouse()  # (a ParallelRun: its sleeping workers wake while the inputs are copied)
        bufs = self._acquire()
        try:
            for name, view in bufs.ins:
                view[...] = feeds[name]  # (validated dtype and shape; 0.4 us quicker than np.copyto)
            try:
                run(*bufs.args)
            except Exception as e:  # noqa: BLE001 - named below
                raise _run_error(e)  # noqa: B904 - the cause is set there
            if outs is None:
                return [view.copy() for view in bufs.outs]
            for view, o in zip(bufs.outs, outs):
                np.copyto(o, view)
            return list(outs)
        finally:
            self._release(bufs)

    def run_samples(self, feeds: Mapping[str, np.ndarray], outs: Sequence[np.ndarray], order: Iterator[int],
                    batch: int, solo: bool) -> int:
        """Samples ``next(order)``, ... of the batched ``feeds`` (while below ``batch``) into their rows of
        ``outs``, one after another on one arena set; returns how many ran (a ``BatchLoop`` thread's share).

        One arena set, its schedule's entry and the inputs' places resolved once per thread per batch, not
        per sample: what remains per sample is the copy in, the call and the copy out (VWW: ~18 us of
        Python per 0.21 ms sample through ``run_into``, held under the GIL the other sample thread needs)."""
        if self.twin is not None:  # (a small parallel schedule: its serial twin runs a thread's samples)
            if solo:
                return self.twin.run_samples(feeds, outs, order, batch, solo)
            return run_rows(lambda i: self.run_into({k: x[i:i + 1] for k, x in feeds.items()},
                                                    [o[i:i + 1] for o in outs]), order, batch)
        entry = entry_point(alone(self.program.run) if solo else self.program.run)
        bufs = self._acquire()
        try:
            args = bufs.args

            def call() -> None:
                try:
                    entry(*args)
                except Exception as e:  # noqa: BLE001 - named below
                    raise _run_error(e)  # noqa: B904 - the cause is set there

            sample = on_places([(feeds[name], view) for name, view in bufs.ins], call, list(zip(bufs.outs, outs)))
            return run_rows(sample, order, batch)
        finally:
            self._release(bufs)

    def batch_native(self, feeds: Mapping[str, np.ndarray], outs: Sequence[np.ndarray], team: Any, solo: bool,
                     threads: int = 1) -> int | None:
        """A ``BatchLoop``'s batch of the C-contiguous ``feeds`` into ``outs`` as one native job
        (``runtime/batchrows.py``): on ``threads`` threads of ``team`` (a ``Team`` whose busy lock the caller
        holds), or on the calling thread alone (``team`` None); ``solo``: a parallel schedule runs alone on
        each thread (else only a serial schedule can). How many samples the calling thread ran; None if this
        batch cannot run so (nothing ran): the caller runs it from Python. A sample's error is raised once
        every thread has stopped."""
        if self.twin is not None:  # (a small parallel schedule: its serial twin runs a thread's samples)
            return self.twin.batch_native(feeds, outs, team, True, threads) if solo else None
        desc = self._batch_desc(solo)
        if desc is None:
            return None
        Desc, batch_rows, stopped_at, run_batch = _native_batches()

        if team is None and not solo and not batch_rows.overloads:
            return None  # (a threads=1 model: not prepared with it, ready_for_batches; a cold compile takes seconds)

        threads = threads if team is not None else 1
        if team is not None:
            d, ep = team.desc, team.desc_epoch + 1
        else:
            d, ep = np.zeros(desc.words(1), np.int64), 1
        batch = len(outs[0]) if outs else len(next(iter(feeds.values())))
        if desc.words(threads) > len(d) or batch >= desc.max_batch:
            return None
        arenas = [self._acquire() for _ in range(threads)]
        solo_states = getattr(self.program.run, "_solo", None) if desc.stn else None
        states: list = [None] * threads
        epbase = 0
        if solo_states is not None:  # (a ParallelRun run alone: a step state of each thread's own)
            for t in range(threads):
                try:
                    st, e = solo_states.pop()
                except IndexError:
                    st, e = np.zeros_like(self.program.run.state), 0
                states[t], epbase = st, max(epbase, e)
        try:
            blocks = []
            for a in arenas:
                if getattr(a, "block", None) is None:
                    a.block = Desc.thread_block(a.args, [v for _, v in a.ins], a.outs)
                blocks.append(a.block)
            desc.fill(d, ep, batch, [feeds[name] for name, _ in arenas[0].ins], outs, blocks, states, epbase)
            if team is not None:
                team.desc_epoch = ep
                n = run_batch(team.words, d, team.native_job())
            else:
                n = batch_rows(d, 0, True)
            failed = stopped_at(d)
        finally:
            for a in arenas:
                self._release(a)
            if solo_states is not None:
                solo_states.extend((st, epbase + batch) for st in states)
        if failed is not None:  # run it again from Python: the error its kernel raised
            self.run_into({name: feeds[name][failed:failed + 1] for name, _ in arenas[0].ins},
                          [o[failed:failed + 1] for o in outs], solo=True)
            raise CompileError(f"sample {failed} of a batch failed in its native job but not when run alone (a "
                               "compiler bug; please report it with the model)")
        return n

    def _batch_desc(self, solo: bool) -> Any:
        """The ``batchrows.Desc`` of this specialisation's batches as native jobs: a numba schedule (its
        native functions on at most ``MAX_BUFFERS`` buffers) run by each thread alone (a serial one, or a
        parallel one ``solo``); None otherwise."""
        run = self.program.run
        parallel = getattr(run, "alone", None) is not None  # (a ParallelRun)
        if parallel and not solo:
            return None  # (each sample on the whole team: from Python)
        if self._desc is None:
            from .batchrows import MAX_BUFFERS, Desc, native_functions  # (numba: loaded already)

            fns = native_functions(run.fn if parallel else run)
            ok = fns and len(self.program.buffer_names) <= MAX_BUFFERS
            nin = sum(1 for b in self.program.inputs if b.size and b.read)  # (the inputs of Arena.ins)
            self._desc = Desc(fns, len(self.program.buffer_names), nin, len(self.program.outputs),
                              len(run.state) if parallel else 0) if ok else False
        return self._desc or None

    def caller(self, names: Sequence[str], hold: bool = False, single: bool = False
               ) -> Callable[[Sequence[np.ndarray]], Any]:
        """``run`` as a function of validated arrays in the order of ``names`` (the model's inputs): the
        per-call fast path of ``CompiledModel`` (``_calls``), returning the list of outputs, or with ``single``
        (not with ``hold``) what ``model(...)`` returns (a one-output model's array). ``hold``: on one arena
        set held until the callable's ``close()``, for a run of calls (``BoundCaller``: a loop's iterations).
        A small parallel schedule calls itself or its serial twin, as its chooser picks (``Chosen``)."""
        def on(spec: Specialization) -> Callable[[Sequence[np.ndarray]], Any]:
            return BoundCaller(spec, names) if hold else _calls(spec, names, single=single)

        if self.twin is not None:
            return Chosen(on(self), on(self.twin), self.chooser, self.program.run)
        return on(self)

    def bind(self, names: Sequence[str]) -> BoundCaller | Chosen:
        """``caller(names)`` on arena sets held until its ``close()`` (a loop body's segment over one run of
        the loop)."""
        return self.caller(names, hold=True)

    def _binding(self, names: Sequence[str]) -> tuple:
        """What a call by ``names`` needs, found once per specialisation (numba's entry point lookup hashes
        types, ~10 us): the entry point, its ``rouse`` (a ParallelRun: see ``_run_into``), each arena input's
        position in ``names`` (the order of ``Arena.ins``), and whether the program keeps its inputs' places."""
        names = tuple(names)
        setup = self._bindings.get(names)
        if setup is None:
            index = {n: i for i, n in enumerate(names)}
            entry = entry_point(self.program.run)
            setup = self._bindings[names] = (entry, getattr(entry, "rouse", None),
                                             tuple(index[b.name] for b in self.program.inputs if b.size and b.read),
                                             bool(self.program.meta.get("inputs_kept")))
        return setup


def _calls(spec: Specialization, names: Sequence[str], held: Arena | None = None,
           last: list[np.ndarray | None] | None = None, single: bool = False) -> Callable[[Sequence[np.ndarray]], Any]:
    """``spec``'s schedule as a function of validated arrays (in the order of ``names``): the one per-call path
    of ``CompiledModel`` (``_fast``, ``model(x)``) and of a loop body's segments (``BoundCaller``).

    A call takes an arena set from the pool (or uses ``held``), copies the inputs into their places (any
    strides), runs the compiled entry point directly (numba's dispatcher resolves the argument types on every
    call: ~0.5-1 us of the MLPerf Tiny anomaly model's ~9 us; the arena's buffers never change type), returns
    fresh copies of the outputs and gives the set back. ``last`` (a held set of a program that keeps its
    inputs' places) is what each input's place holds: an input passed as that very array is not copied again.
    ``single``: return what ``model(...)`` returns, the array of a one-output program (else the list).

    One program input at position 0 and, with ``single``, one output: the copies go straight to and from the
    arena's ``in1`` / ``out1``: the loop and the list comprehension cost ~0.6 us more per call (timed alone on
    this Zen 3 under load; the anomaly int8 model's call is ~8 us), the flags that choose ~60 ns. A closure
    over locals: the per-call path of the smallest models (``benchmarks/call_overhead.py``)."""
    entry, rouse, pos, _ = spec._binding(names)
    pool, program, max_pooled = spec._pool, spec.program, spec.max_pooled
    one_in = pos == (0,) and last is None  # (Arena.in1)
    one_out = single and len(program.outputs) == 1  # (Arena.out1)

    def call(arrays: Sequence[np.ndarray]) -> Any:
        bufs = held
        if bufs is None:
            try:
                bufs = pool.pop()  # (list.pop / append are atomic: no lock; see Specialization._acquire)
            except IndexError:
                bufs = Arena(program)
        if rouse is not None:
            rouse()  # (a ParallelRun: its sleeping workers wake while the inputs are copied)
        try:
            if one_in:
                bufs.in1[...] = arrays[0]
            elif last is None:
                for (_, view), i in zip(bufs.ins, pos):
                    view[...] = arrays[i]
            else:
                for j, ((_, view), i) in enumerate(zip(bufs.ins, pos)):
                    a = arrays[i]
                    if last[j] is not a:
                        view[...] = last[j] = a
            entry(*bufs.args)
            if one_out:
                return bufs.out1.copy()
            return [view.copy() for view in bufs.outs]
        except Exception as e:  # noqa: BLE001 - named below
            raise _run_error(e)  # noqa: B904 - the cause is set there
        finally:
            if held is None and len(pool) < max_pooled:
                pool.append(bufs)

    return call


class BoundCaller:
    """``Specialization.caller`` on one arena set held until ``close()`` (a loop body's segment over one run
    of the loop). Where the program keeps its inputs' places for the whole call (``Program.meta
    ["inputs_kept"]``: compiled with ``keep_inputs``), an input passed as the very array it was at the previous
    call is not copied in again: its place still holds it (a loop's invariant values, e.g. an encoder's
    features, then cross into the body once per loop run, not once per iteration). Arrays handed to it must
    not be written in place between calls (a loop's values never are)."""

    def __init__(self, spec: Specialization, names: Sequence[str]):
        self.spec, self.bufs = spec, spec._acquire()
        kept = spec._binding(names)[3]
        self.call: Callable[[Sequence[np.ndarray]], list[np.ndarray]] | None = _calls(
            spec, names, self.bufs, [None] * len(self.bufs.ins) if kept else None)

    def __call__(self, arrays: Sequence[np.ndarray]) -> list[np.ndarray]:
        return self.call(arrays)

    def close(self) -> None:
        """Give the arena set back to the specialisation's pool (the caller is spent)."""
        if self.call is not None:
            self.call = None
            self.spec._release(self.bufs)


#: a small model's split schedule is the usual choice over its serial twin only while its median time is at
#: least this share below the twin's (``Chooser``'s margin, negative: favouring the serial one). Switching
#: between the two programs costs the first calls after it (caches: ResNet-8's serial twin 0.295, 0.257,
#: 0.248, 0.243 ms after 20 team calls, steady ~0.22), so a try measures the way not in use slower than it
#: runs: in windows where the team gained ~5% or nothing (the host's vCPUs far apart), the chooser kept it at
#: 1.05-1.08x the 1-thread time (real-time priority, load 10); where it gains it gains 20-30%
TWIN_MARGIN = 0.1
#: before the serial call that precedes a try of the team, its idle workers are held spinning this many times
#: the serial way's median time (``before_serial``)
HOLD_SERIAL_CALLS = 2


def before_serial(chooser: Chooser, run: Any) -> None:
    """Before a small model's serial call (``chooser`` picked its serial twin; ``run``: the parallel schedule's
    ``ParallelRun``): send the team's idle workers to sleep (``rest``: no spinning beside the serial run), unless
    the next call tries the team: then wake them and keep them spinning through this call
    (``ParallelRun.rouse``, ``HOLD_SERIAL_CALLS``). A try that found its worker asleep began a futex wake-up
    late (on this VM the other vCPU halts: ~15-40 us quiet, ~0.1-0.3 ms at load, of a ~0.17 ms 2-thread
    ResNet-8 run; measured at real-time priority, load 5: the tries ran at 0.30 ms median against 0.23 ms for
    the team called back to back), so the chooser measured the team slower than it runs."""
    if chooser.upcoming() != 0:
        run.rest()
        return
    serial = chooser.median(1) or 0.0
    run.rouse(int(HOLD_SERIAL_CALLS * serial * 1e9) or IDLE_HOLD_MAX_NS)


class Chosen:
    """Two callers (``_calls`` or ``BoundCaller``) of one small parallel schedule and its serial twin, called
    as the chooser picks (``Specialization.caller`` with a twin; ``run``: the parallel schedule's
    ``ParallelRun``, see ``before_serial``)."""

    def __init__(self, team: Callable, serial: Callable, chooser: Chooser, run: Any):
        self.both, self.chooser, self.run = (team, serial), chooser, run

    def __call__(self, arrays: Sequence[np.ndarray]) -> list[np.ndarray]:
        which = self.chooser.pick()
        if which:
            before_serial(self.chooser, self.run)
        t0 = time.perf_counter()
        got = self.both[which](arrays)
        self.chooser.record(which, time.perf_counter() - t0)
        return got

    def close(self) -> None:
        for b in self.both:
            b.close()


_batches: list[tuple] = []  # (the native batch loop's functions, imported once: numba)


def _native_batches() -> tuple:
    """``(batchrows.Desc, batchrows.batch_rows, batchrows.stopped_at, parallel.run_batch)``, imported at first
    use (they load numba; ~5 us per call as import statements)."""
    if not _batches:
        from .batchrows import Desc, batch_rows, stopped_at
        from .parallel import run_batch

        _batches.append((Desc, batch_rows, stopped_at, run_batch))
    return _batches[0]


def _run_error(e: Exception) -> Exception:
    """What a compiled schedule's exception ``e`` is raised as: an out-of-range index (kernels that index with
    run-time data, Gather) is the input's fault, our own errors stay, anything else (numba failing to compile
    a kernel lazily) is a compiler bug."""
    if isinstance(e, CnnjitError):
        return e
    if isinstance(e, IndexError):
        err: Exception = InputError(f"an input holds an out-of-range index: {e}")
    else:
        err = CompileError(f"running the compiled model failed: {type(e).__name__}: {e} (a compiler bug; please "
                           "report it with the model)")
        err.__cause__ = e
    err.__suppress_context__ = True  # (``raise err from e``, or ``from None`` for the index)
    return err


def entry_point(run: Callable[..., None]) -> Callable[..., None]:
    """``run``, or where it is a numba schedule compiled for its one signature, that compiled entry point:
    called without the dispatcher, which resolves the argument types on every call (~0.5-1 us of the MLPerf
    Tiny anomaly model's ~9 us; a schedule's arena buffers never change type)."""
    overloads = getattr(run, "overloads", None)
    if overloads is not None and len(overloads) == 1:
        return next(iter(overloads.values())).entry_point
    return run


def alone(run: Callable[..., None]) -> Callable[..., None]:
    """The schedule callable run by the calling thread only: a parallel schedule (``ParallelRun``) on a step
    state of its own instead of the team (so several threads can each run a sample), a serial one as it is."""
    solo = getattr(run, "alone", None)  # a ParallelRun (runtime/parallel.py, which loads numba) has one
    return run if solo is None else solo()


class CompiledModel:
    """A compiled ONNX model: call it on numpy arrays.

    ``model(x)``, ``model(x1, x2)``, ``model(input_1=x)`` return one array for a single-output model and a
    list otherwise; ``model.run(None, {"input_1": x})`` returns a list, like onnxruntime.
    """

    def __init__(self, inputs: Sequence[InputSignature], output_names: Sequence[str],
                 specialize: Callable[[dict[str, tuple[int, ...]], dict[str, np.ndarray]], Specialization],
                 name: str = "model",
                 options: Mapping[str, Any] | None = None):
        self.inputs = list(inputs)
        self.output_names = list(output_names)
        self.name = name
        self.options = dict(options or {})
        self._specialize = specialize
        self._specs: dict[tuple, Specialization | BatchLoop] = {}
        self._last: Specialization | None = None
        self._lock = threading.Lock()
        self._names = tuple(s.name for s in self.inputs)  # for the per-call fast path
        self._dtypes = tuple(np.dtype(s.dtype) for s in self.inputs)
        self._callers: dict[tuple, tuple[Any, Callable[[Sequence[np.ndarray]], list[np.ndarray]]]] = {}
        #: a one-input model's ``model(x)`` by ``x.shape``: (specialisation, (x,) -> what the call returns)
        self._ones: dict[tuple[int, ...], tuple[Specialization, Callable[[Sequence[np.ndarray]], Any]]] = {}

    @property
    def input_names(self) -> list[str]:
        return [s.name for s in self.inputs]

    # -- specialisation -------------------------------------------------------------------------------
    def specialization(self, shapes: Mapping[str, Sequence[int]],
                       values: Mapping[str, np.ndarray] | None = None) -> Specialization:
        """The compiled form for these input shapes (compiled now if not seen before).

        ``values`` gives the arrays of the inputs marked ``by_value``; they are part of the cache key.
        """
        values = dict(values or {})
        missing = [s.name for s in self.inputs if s.by_value and s.name not in values]
        if missing:
            raise InputError(f"input(s) {missing} set shapes or attributes of the model: their values are "
                             "needed to specialise it; call the model instead of asking for its IR first")
        shape_key = tuple(tuple(int(d) for d in shapes[s.name]) for s in self.inputs)
        key = shape_key + tuple((n, values[n].dtype.str, values[n].tobytes()) for n in sorted(values))
        spec = self._specs.get(key)
        if spec is None:
            with self._lock:
                spec = self._specs.get(key)
                if spec is None:
                    spec = self._specialize({s.name: k for s, k in zip(self.inputs, shape_key)},
                                            {n: np.array(v, copy=True) for n, v in values.items()})
                    ready_for_batches(spec, int(self.options.get("threads") or 1))
                    self._specs[key] = spec
        self._last = spec
        return spec

    def _batch_loop(self, shapes: Mapping[str, Sequence[int]]) -> BatchLoop | None:
        """For a new leading (batch) size of a model whose every input has a symbolic leading dimension:
        a loop over the batch-1 specialisation (compiled now if needed) when that one is batch-separable;
        None otherwise (the caller specialises on the shape)."""
        key = tuple(tuple(int(d) for d in shapes[s.name]) for s in self.inputs)
        if key in self._specs or not all(s.dims and s.dims[0] is None and not s.by_value for s in self.inputs):
            return None
        batch = key[0][0]
        if batch <= 1 or any(k[0] != batch for k in key):
            return None
        base = self.specialization({s.name: (1, *k[1:]) for s, k in zip(self.inputs, key)})
        if not getattr(base, "batch_separable", False):
            return None
        with self._lock:
            loop = self._specs.setdefault(key, BatchLoop(base, batch, int(self.options.get("threads") or 1)))
        self._last = loop
        return loop

    def _default_spec(self) -> Specialization:
        if self._last is not None:
            return self._last
        if all(s.static and not s.by_value for s in self.inputs):
            return self.specialization({s.name: s.dims for s in self.inputs})
        raise InputError(
            "this model has symbolic input dimensions ("
            + "; ".join(s.describe() for s in self.inputs if not s.static)
            + "); call it once, or compile with input_shapes={...}, before asking for its IR or source"
        )

    @property
    def ir(self) -> Graph:
        """The IR after the passes (of the most recently used specialisation)."""
        return self._default_spec().graph

    def source(self) -> str:
        """The generated schedule and kernel source (of the most recently used specialisation)."""
        return self._default_spec().program.full_source()

    def compile_report(self) -> Any:
        """Per kernel of the most recently used specialisation: calls, signatures, where its machine code
        came from (memory, disk cache, compiled, compiled by worker) and the seconds it took; ``print()`` it
        for a table, ``.rows`` / ``.to_dicts()`` for data. None with ``entry="numba"`` (compiled lazily)."""
        return self._default_spec().program.meta.get("compile_report")

    # -- calling --------------------------------------------------------------------------------------
    def _validate(self, feeds: Mapping[str, Any]) -> list[np.ndarray]:
        names = self.input_names
        unknown = [k for k in feeds if k not in names]
        missing = [n for n in names if n not in feeds]
        if unknown or missing:
            parts = []
            if unknown:
                parts.append(f"unknown input name(s) {unknown}")
            if missing:
                parts.append(f"missing input(s) {missing}")
            raise InputError("; ".join(parts) + ". The model's inputs are: "
                             + ", ".join(s.describe() for s in self.inputs))
        arrays = []
        symbols: dict[str, int] = {}
        for s in self.inputs:
            x = feeds[s.name]
            if not isinstance(x, np.ndarray):
                if isinstance(x, (list, tuple, int, float, np.generic)):
                    try:
                        x = np.asarray(x)
                    except (ValueError, TypeError, OverflowError) as e:
                        raise InputError(f"input {s.name!r} cannot be made into an array: {e}") from None
                else:
                    raise InputError(f"input {s.name!r} must be a numpy array, got {type(x).__name__}")
                if x.dtype != s.dtype and x.dtype.kind == np.dtype(s.dtype).kind:
                    x = x.astype(s.dtype)
            if x.dtype != s.dtype and x.dtype.newbyteorder("=") == np.dtype(s.dtype).newbyteorder("="):
                x = x.astype(s.dtype)  # same type in the other byte order
            if x.dtype != s.dtype:
                raise InputError(f"input {s.name!r} has dtype {x.dtype}, the model expects {s.dtype} "
                                 f"({s.describe()}); convert it with x.astype(np.{np.dtype(s.dtype).name})")
            if s.dims is not None:
                if x.ndim != len(s.dims):
                    raise InputError(f"input {s.name!r} has shape {x.shape} (rank {x.ndim}); the model expects "
                                     f"rank {len(s.dims)}: {s.describe()}")
                for i, (got, want) in enumerate(zip(x.shape, s.dims)):
                    if want is not None and got != want:
                        raise InputError(f"input {s.name!r} has shape {x.shape}; dimension {i} must be {want}: "
                                         f"{s.describe()}")
                    sym = s.dim_names[i] if i < len(s.dim_names) else ""
                    if want is None and sym:
                        if symbols.setdefault(sym, got) != got:
                            raise InputError(f"dimension {sym!r} is {symbols[sym]} in one input and {got} in "
                                             f"{s.name!r}; inputs sharing a symbolic dimension must agree")
            if x.size * x.itemsize > self.options.get("max_input_bytes", 4 << 30):
                raise InputError(f"input {s.name!r} of shape {x.shape} is larger than the input size limit")
            arrays.append(x)
        return arrays

    def run(self, output_names: Sequence[str] | None, feeds: Mapping[str, Any]) -> list[np.ndarray]:
        """onnxruntime-style call: outputs (all if ``output_names`` is None) as a list of fresh arrays."""
        if type(feeds) is not dict and not isinstance(feeds, Mapping):
            raise InputError("feeds must be a dict mapping input names to arrays")
        if output_names is None and len(feeds) == len(self.inputs):
            try:
                outs = self._fast([feeds[n] for n in self._names])
            except KeyError:
                outs = None
            if outs is not None:
                return outs
        arrays = self._validate(feeds)
        shapes = {s.name: a.shape for s, a in zip(self.inputs, arrays)}
        spec = self._batch_loop(shapes) or self.specialization(
            shapes, {s.name: a for s, a in zip(self.inputs, arrays) if s.by_value})
        outs = spec.run({s.name: a for s, a in zip(self.inputs, arrays)})
        if output_names is None:
            return outs
        result = []
        for n in output_names:
            if n not in self.output_names:
                raise InputError(f"unknown output name {n!r}; the model's outputs are {self.output_names}")
            result.append(outs[self.output_names.index(n)])
        return result

    def _fast(self, arrays: Sequence[Any]) -> list[np.ndarray] | None:
        """The per-call fast path: arrays (in input order) of exactly the declared dtypes, in shapes already
        validated and compiled, run on their specialisation (``Specialization.caller``); None for anything
        else (the full checks)."""
        if len(arrays) == 1:  # (the common case without the loop: ~0.4 us of a ~10 us call)
            a = arrays[0]
            if type(a) is not np.ndarray or (a.dtype is not self._dtypes[0] and a.dtype != self._dtypes[0]):
                return None
            key: tuple = (a.shape,)
        else:
            for a, dt in zip(arrays, self._dtypes):
                if type(a) is not np.ndarray or (a.dtype is not dt and a.dtype != dt):
                    return None
            key = tuple([a.shape for a in arrays])
        got = self._callers.get(key)
        if got is None:
            spec = self._specs.get(key)
            if spec is None:
                return None
            names = self._names
            if isinstance(spec, Specialization):
                got = self._callers[key] = (spec, spec.caller(names))
                if len(names) == 1:  # (``__call__``: a one-input model's calls skip this method)
                    self._ones[key[0]] = (spec, spec.caller(names, single=True))
            else:  # (a BatchLoop)
                got = self._callers[key] = (spec, lambda xs, spec=spec: spec.run(dict(zip(names, xs))))
        self._last = got[0]
        return got[1](arrays)

    def __call__(self, *args: Any, **kwargs: Any) -> np.ndarray | list[np.ndarray]:
        if len(args) == 1 and not kwargs and self._ones:  # a one-input model on a compiled shape (``_fast``)
            a = args[0]
            if type(a) is np.ndarray and a.dtype is self._dtypes[0]:
                got = self._ones.get(a.shape)
                if got is not None:
                    self._last = got[0]
                    return got[1](args)
        if not kwargs and len(args) == len(self._names):
            outs = self._fast(args)
            if outs is not None:
                return outs[0] if len(outs) == 1 else outs
        if len(args) > len(self.inputs):
            raise InputError(f"the model takes {len(self.inputs)} input(s) ({', '.join(self.input_names)}), "
                             f"got {len(args)} positional arrays")
        feeds = dict(zip(self.input_names, args))
        for k, v in kwargs.items():
            if k in feeds:
                raise InputError(f"input {k!r} given both by position and by name")
            feeds[k] = v
        outs = self.run(None, feeds)
        return outs[0] if len(outs) == 1 else outs

    def __repr__(self) -> str:
        ins = ", ".join(s.describe() for s in self.inputs)
        return f"<cnnjit.CompiledModel {self.name!r} ({ins}) -> {self.output_names}>"

    # -- batched inference ----------------------------------------------------------------------------
    def map(self, batches: Iterable[Any], threads: int | None = None) -> list[Any]:
        """Run the model on every item of ``batches`` on a pool of ``threads`` threads; results in order.

        An item is an array (one input), a tuple of arrays (positional inputs) or a dict by input name;
        each result is what calling the model on that item returns. ``threads`` defaults to the CPU count
        (at most 8); ``threads=1`` runs in the calling thread.
        """
        def one(item: Any) -> Any:
            if isinstance(item, Mapping):
                outs = self.run(None, item)
                return outs[0] if len(outs) == 1 else outs
            return self(*item) if isinstance(item, tuple) else self(item)

        n = min(os.cpu_count() or 1, 8) if threads is None else int(threads)
        if n < 1:
            raise ValueError(f"threads must be >= 1, got {threads}")
        if n == 1:
            return [one(b) for b in batches]
        with ThreadPoolExecutor(n, thread_name_prefix="cnnjit-map") as pool:
            return list(pool.map(one, batches))

    # -- pickling: the model travels as ONNX bytes + compile options and is compiled again on arrival ---------
    def set_origin(self, rebuild: Callable[[bytes, dict], CompiledModel], model: bytes | Callable[[], bytes],
                   options: Mapping[str, Any]) -> None:
        """Record how to rebuild this model elsewhere: ``rebuild(model_bytes, options)`` (set by the compiler)."""
        self._origin = (rebuild, model, dict(options))

    @property
    def origin(self) -> tuple[bytes, dict] | None:
        """(serialized ONNX model, compile options) this model was compiled from, or None if unknown."""
        o = getattr(self, "_origin", None)
        if o is None:
            return None
        rebuild, model, options = o
        if callable(model):
            model = model()
            self._origin = (rebuild, model, options)
        return model, dict(options)

    def __reduce__(self) -> tuple[Any, tuple]:
        o = self.origin
        if o is None:
            raise TypeError("this CompiledModel cannot be pickled: it was not made by cnnjit.compile")
        return self._origin[0], o

