"""Running a model with ONNX control flow (``Loop``, ``Scan``, an ``If`` around them): a list of steps.

The compiler (``compiler/control_flow.py``) cuts the graph at its control-flow nodes. Each run of ordinary
nodes between them is a ``Segment``: its own compiled model, specialised on the shapes its inputs arrive with
(a loop body whose values keep their shapes compiles once; a growing one compiles once per shape, up to
``MAX_SHAPES``). A ``LoopStep`` / ``ScanStep`` / ``IfStep`` runs its body's steps (a ``Block``) once per
iteration, or the taken branch's once. Values travel between steps by ONNX name in one environment per
scope (a body reads the values of the scopes around it, its implicit inputs, from a copy of the outer one).
The steps are data built by the compiler; no name from the model becomes code.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np

from cnnjit.ir.errors import InputError, ModelError

#: the most shapes one segment compiles for (a body whose values grow every iteration compiles per shape);
#: past it the model is refused rather than compiling on every iteration
MAX_SHAPES = 64

#: a value environment: ONNX name -> array
Env = dict[str, np.ndarray]

#: a segment as built for one tuple of input signatures: its input arrays (in ``Segment.inputs`` order) ->
#: its outputs. One may also offer ``bind()``: the same callable on resources held for a run of calls until
#: its ``close()`` (``runtime.model.BoundCaller``: a loop's invariant inputs copied in once per loop run)
Runner = Callable[[Sequence[np.ndarray]], list[np.ndarray]]


class Step(Protocol):
    """One step of a block: reads its inputs from ``env`` and writes its outputs into it."""

    def run(self, env: Env) -> None: ...


@dataclass
class Segment:
    """A run of ordinary nodes compiled as one model, per tuple of input (dtype, shape)s.

    ``build(signatures)`` compiles it for those input signatures (the compiler's callback); ``inputs`` are
    the names it reads from the environment, ``outputs`` the names it writes.
    """

    inputs: list[str]
    outputs: list[str]
    build: Callable[[tuple[tuple[str, tuple[int, ...]], ...]], Runner]
    what: str = "segment"
    _compiled: dict[tuple, Runner] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock)
    #: the runners by (dtype object, shape) per input: the per-call lookup, without making dtype text
    _by_dtype: dict[tuple, Runner] = field(default_factory=dict)

    def runner_of(self, key: tuple[tuple[np.dtype, tuple[int, ...]], ...]) -> Runner:
        """The runner for the arrays' (dtype, shape)s ``key``."""
        runner = self._by_dtype.get(key)
        if runner is None:
            runner = self._by_dtype[key] = self.runner(tuple((dt.str, shape) for dt, shape in key))
        return runner

    def runner(self, key: tuple[tuple[str, tuple[int, ...]], ...]) -> Runner:
        """The runner for input signatures ``key`` ((dtype text, shape) per input), built on first use."""
        runner = self._compiled.get(key)
        if runner is None:
            with self._lock:
                runner = self._compiled.get(key)
                if runner is None:
                    if len(self._compiled) >= MAX_SHAPES:
                        raise ModelError(
                            f"{self.what}: its inputs arrived in more than {MAX_SHAPES} different shapes "
                            "(a loop whose values grow every iteration); cnnjit compiles a loop body per "
                            "shape and stops there")
                    runner = self._compiled[key] = self.build(key)
        return runner

    def run(self, env: Env) -> None:
        arrays = [env[n] for n in self.inputs]
        env.update(zip(self.outputs, self.runner_of(tuple([(a.dtype, a.shape) for a in arrays]))(arrays)))

    def session(self) -> SegmentSession:
        """This segment for a run of calls (a loop's iterations), see ``SegmentSession``."""
        return SegmentSession(self)


class SegmentSession:
    """A segment run many times in a row (one run of the loop around it): the runner of the arrays' signature
    is kept between calls (looked up by dtype object and shape, no dtype text), bound (``Runner``'s
    ``bind()``, where it has one) to an arena set held until ``close()``, so the values that stay the same
    array from call to call (the loop's invariant ones) are copied into the segment once per loop run.
    It binds at the second call of one signature (a loop that runs once pays nothing for it); one binding at
    a time: a segment whose shapes change releases the previous one."""

    def __init__(self, segment: Segment):
        self.segment = segment
        self.inputs, self.outputs = segment.inputs, segment.outputs
        self.key: tuple | None = None
        self.call: Callable[[Sequence[np.ndarray]], list[np.ndarray]] | None = None
        self.bound = False

    def run(self, env: Env) -> None:
        arrays = [env[n] for n in self.inputs]
        key = tuple([(a.dtype, a.shape) for a in arrays])
        if key != self.key:
            self.close()
            self.call, self.key = self.segment.runner_of(key), key
        elif not self.bound:
            bind = getattr(self.call, "bind", None)
            self.bound = True
            if bind is not None:
                self.call = bind()
        env.update(zip(self.outputs, self.call(arrays)))

    def close(self) -> None:
        """Release the binding (its arena set goes back to the pool)."""
        close = getattr(self.call, "close", None) if self.bound else None
        self.call = self.key = None
        self.bound = False
        if close is not None:
            close()


@dataclass
class Block:
    """Steps run in order over one environment (a graph, or a control-flow node's body)."""

    steps: list[Step]

    def run(self, env: Env) -> None:
        for s in self.steps:
            s.run(env)

    def session(self) -> BlockSession:
        """These steps for a run of calls (a loop's iterations): segments as ``SegmentSession``s."""
        return BlockSession([s.session() if isinstance(s, Segment) else s for s in self.steps])


@dataclass
class BlockSession:
    """A block's steps over a run of calls (``Block.session``); ``close()`` when the run ends."""

    steps: list[Step | SegmentSession]

    def run(self, env: Env) -> None:
        for s in self.steps:
            s.run(env)

    def close(self) -> None:
        for s in self.steps:
            if isinstance(s, SegmentSession):
                s.close()


def _flag(x: np.ndarray, what: str) -> bool:
    """A condition value as a Python bool (ONNX writes it as a bool tensor of one element)."""
    a = np.asarray(x)
    if a.size != 1:
        raise InputError(f"{what}: a condition of {a.size} elements (one is needed)")
    return bool(a.reshape(-1)[0])


def _stack(parts: list[np.ndarray], axis: int, what: str, empty: np.ndarray | None = None) -> np.ndarray:
    """Per-iteration scan outputs stacked along ``axis`` (the shapes must agree, as onnxruntime requires);
    ``empty`` (or a float32 ``(0,)``) when there were no iterations."""
    if not parts:
        return np.zeros((0,), np.float32) if empty is None else empty.copy()
    if any(p.shape != parts[0].shape for p in parts):
        raise ModelError(f"{what}: a scan output changes shape between iterations "
                         f"({parts[0].shape} and then {next(p.shape for p in parts if p.shape != parts[0].shape)})")
    return np.stack(parts, axis=axis)


@dataclass
class LoopStep:
    """ONNX ``Loop``: ``body`` runs while ``i < trip`` (if given) and the condition holds (if given).

    Body inputs: ``iter_name`` (int64 scalar), ``cond_name`` (bool scalar), ``carried_in``; body outputs:
    ``cond_out``, ``carried_out``, ``scan_out`` (stacked along a new axis 0). ``fixed``: carried values the
    body passes through unchanged and the compiler made constants of the body (not bound per iteration).
    """

    trip: str
    cond: str
    initial: list[str]
    iter_name: str
    cond_name: str
    carried_in: list[str]
    cond_out: str
    carried_out: list[str]
    scan_out: list[str]
    outputs: list[str]
    body: Block
    fixed: frozenset[int] = frozenset()
    #: each scan output after no iterations: ``(0, *declared shape)`` of its declared type, as onnxruntime
    empty: list[np.ndarray | None] = field(default_factory=list)
    what: str = "Loop"
    #: the body's loop-invariant nodes, run once before the first iteration with the ``steady`` carried
    #: values (those the body passes through unchanged) bound to their initial values
    hoisted: Block | None = None
    steady: list[int] = field(default_factory=list)

    def run(self, env: Env) -> None:
        trip = int(np.asarray(env[self.trip]).reshape(-1)[0]) if self.trip else None
        go = _flag(env[self.cond], self.what) if self.cond else True
        live = [k for k in range(len(self.initial)) if k not in self.fixed]  # the carried values bound per iteration
        names_in, names_out = [self.carried_in[k] for k in live], [self.carried_out[k] for k in live]
        carried = [env[self.initial[k]] for k in live]
        scans: list[list[np.ndarray]] = [[] for _ in self.scan_out]
        i = 0
        body = self.body.session()
        try:
            if go and (trip is None or trip > 0):
                base = env
                if self.hoisted is not None:
                    base = dict(env)
                    base.update((self.carried_in[k], env[self.initial[k]]) for k in self.steady)
                    self.hoisted.run(base)
                # one scope for every iteration: each iteration writes every value of the body before reading
                # it (nodes in order), so what an earlier iteration left is never read
                scope = dict(base)
            while go and (trip is None or i < trip):
                scope[self.iter_name] = np.array(i, np.int64)
                scope[self.cond_name] = np.array(go, np.bool_)
                scope.update(zip(names_in, carried))
                body.run(scope)
                go = _flag(scope[self.cond_out], self.what)
                carried = [scope[n] for n in names_out]
                for acc, n in zip(scans, self.scan_out):
                    acc.append(scope[n])
                i += 1
        finally:
            body.close()
        by_index = dict(zip(live, carried))
        results = [by_index[k] if k in by_index else env[self.initial[k]] for k in range(len(self.initial))]
        empty = self.empty or [None] * len(scans)
        results += [_stack(acc, 0, self.what, e) for acc, e in zip(scans, empty)]
        for n, v in zip(self.outputs, results):
            if n:
                env[n] = v


@dataclass
class ScanStep:
    """ONNX ``Scan`` (opset 9+): ``body`` runs once per slice of the scan inputs along their axes.

    Body inputs: ``state_in`` then ``slice_in``; body outputs: ``state_out`` then ``scan_out``; ``in_axes`` /
    ``in_reverse`` per scan input, ``out_axes`` / ``out_reverse`` per scan output.
    """

    initial: list[str]
    scanned: list[str]
    state_in: list[str]
    slice_in: list[str]
    state_out: list[str]
    scan_out: list[str]
    in_axes: list[int]
    in_reverse: list[bool]
    out_axes: list[int]
    out_reverse: list[bool]
    outputs: list[str]
    body: Block
    what: str = "Scan"

    def run(self, env: Env) -> None:
        xs = [env[n] for n in self.scanned]
        axes = [a % max(x.ndim, 1) for a, x in zip(self.in_axes, xs)]
        lengths = {x.shape[a] for x, a in zip(xs, axes)}
        if len(lengths) != 1:
            raise InputError(f"{self.what}: the scan inputs have different lengths {sorted(lengths)}")
        steps = lengths.pop()
        state = [env[n] for n in self.initial]
        scans: list[list[np.ndarray]] = [[] for _ in self.scan_out]
        body = self.body.session()
        scope = dict(env)  # one for every iteration, as LoopStep's
        try:
            for t in range(steps):
                scope.update(zip(self.state_in, state))
                for n, x, a, rev in zip(self.slice_in, xs, axes, self.in_reverse):
                    scope[n] = np.take(x, steps - 1 - t if rev else t, axis=a)  # a contiguous copy (0-d stays 0-d)
                body.run(scope)
                state = [scope[n] for n in self.state_out]
                for acc, n in zip(scans, self.scan_out):
                    acc.append(scope[n])
        finally:
            body.close()
        results = list(state)
        for acc, a, rev in zip(scans, self.out_axes, self.out_reverse):
            parts = acc[::-1] if rev else acc
            ndim = parts[0].ndim + 1 if parts else 1
            results.append(_stack(parts, a % ndim, self.what))
        for n, v in zip(self.outputs, results):
            if n:
                env[n] = v


@dataclass
class IfStep:
    """ONNX ``If`` decided at run time whose branches hold loops (other ``If``s are imported inline)."""

    cond: str
    then: Block
    then_out: list[str]
    other: Block
    other_out: list[str]
    outputs: list[str]
    what: str = "If"

    def run(self, env: Env) -> None:
        taken = _flag(env[self.cond], self.what)
        scope = dict(env)
        (self.then if taken else self.other).run(scope)
        for n, src in zip(self.outputs, self.then_out if taken else self.other_out):
            if n:
                env[n] = scope[src]


class ControlRun:
    """A specialisation of a model with control flow: ``run(feeds)`` like ``Specialization.run``."""

    batch_separable = False

    def __init__(self, block: Block, constants: Mapping[str, np.ndarray], outputs: Sequence[str]):
        self.block = block
        self.constants = dict(constants)
        self.outputs = list(outputs)

    def run(self, feeds: Mapping[str, np.ndarray]) -> list[np.ndarray]:
        env: Env = {**self.constants, **feeds}
        try:
            self.block.run(env)
        except KeyError as e:  # a body reading a name no scope around it gives
            raise ModelError(f"the value {e} is read by a loop body or branch but produced nowhere") from None
        given = {id(a) for a in feeds.values()} | {id(a) for a in self.constants.values()}
        # fresh arrays, as every cnnjit model returns: a value passed through (a graph input, a constant, a
        # loop that ran no iteration) is copied
        return [np.array(env[n], copy=True) if id(env[n]) in given else env[n] for n in self.outputs]

    #: compile stage times: none here, the segments compile on the first call
    timings: dict[str, float] = {}

    @property
    def graph(self) -> Any:
        raise InputError(_SEVERAL)

    @property
    def program(self) -> Any:
        raise InputError(_SEVERAL)


_SEVERAL = ("a model with control flow (Loop/Scan) is several compiled programs, one per segment and loop body "
            "(compiled at the first call): it has no single IR or source to show")


__all__ = ["Block", "BlockSession", "ControlRun", "IfStep", "LoopStep", "MAX_SHAPES", "ScanStep", "Segment",
           "SegmentSession"]
