"""What code generation hands to the runtime: the schedule as data, its buffers, and I/O locations.

The schedule is a list of ``Call``s (kernel, typed arguments, the IR node it computes, the kernel variant);
its Python text (``def run(<buffers>): k0(...); k1(...)``) is rendered from that list by ``render_schedule``
and never parsed back: threads, profiling, inspection and the targets all read the list.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from functools import cached_property
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from cnnjit.ir import Node

#: start address alignment of every arena and constant pool: the vector kernels' 64-byte loads and stores
#: at 64-byte-aligned element offsets (memory.ALIGN_BYTES) then never straddle two cache lines
BUFFER_ALIGN = 64


def aligned_zeros(n: int, dtype: np.dtype | type, align: int = BUFFER_ALIGN) -> np.ndarray:
    """A zeroed 1-D array of ``n`` elements whose data starts on an ``align``-byte boundary.

    numpy only guarantees 16 bytes; a 64-byte vector at an offset of 16 or 32 bytes splits every access
    over two cache lines, which measured up to 2.7x slower per layer (MobileNetV2's 112x112 1x1 conv).
    """
    dt = np.dtype(dtype)
    raw = np.zeros(n * dt.itemsize + align, np.uint8)
    start = (-raw.ctypes.data) % align
    return raw[start:start + n * dt.itemsize].view(dt)


@dataclass(frozen=True)
class Buf:
    """A schedule parameter passed to a kernel: an arena (``a_f32``) or a constant pool (``c_f32``)."""

    name: str

    def render(self) -> str:
        return self.name


#: how an integer argument is written: ``lit`` a literal (a numba entry types it ``Literal[int]`` and
#: specialises the kernel on it), ``O`` an int64 value ``O(n)`` (one kernel specialisation for every
#: value: buffer offsets, generic kernels), ``i64`` an int64 ``np.int64(n)`` (parallel-driver scalars)
INT_FORMS = ("lit", "O", "i64")


@dataclass(frozen=True)
class Int:
    """An integer kernel argument (a size, a flag or a buffer offset) and how the schedule writes it."""

    value: int
    form: str = "lit"

    def render(self) -> str:
        if self.form == "O":
            return f"O({self.value})"
        if self.form == "i64":
            return f"np.int64({self.value})"
        return repr(self.value)


@dataclass(frozen=True)
class Float:
    """A float kernel argument computed by the compiler (finite, inf or nan)."""

    value: float

    def render(self) -> str:
        v = self.value
        if math.isnan(v):
            return "math.nan"
        if math.isinf(v):
            return "math.inf" if v > 0 else "-math.inf"
        return repr(v)


Arg = Buf | Int | Float


@dataclass
class Call:
    """One kernel call of the schedule.

    ``kernel`` is the callee's schedule name (``k3``), ``args`` its arguments, ``node`` the IR node it
    computes (with ``op`` and ``variant``, the name of the kernel implementation chosen for it), ``note`` a
    comment of op and shapes (our own text); ``parts`` > 1 for one of the calls a layer split over threads
    became (each part is its own call of the layer's kernel, see ``compiler/codegen/threads.py``).
    """

    kernel: str
    args: tuple[Arg, ...]
    op: str
    variant: str
    node: Node | None = None
    note: str = ""
    parts: int = 1

    def statement(self) -> str:
        """The call as a Python statement (no comment)."""
        return f"{self.kernel}({', '.join(a.render() for a in self.args)})"

    def render(self) -> str:
        return "    " + self.statement() + (f"  # {self.note}" if self.note else "")


def render_schedule(params: Sequence[str], calls: Sequence[Call], ticks: bool = False) -> str:
    """The schedule's Python text ``def run(<params>)`` calling ``calls`` in order.

    ``ticks``: the profiling form ``run(<params>, _ts)`` with ``_ts[i] = ticks()`` before call ``i`` and after
    the last, otherwise the same text (so numba compiles it as the real entry).
    """
    head = "def run(" + ", ".join([*params, "_ts"] if ticks else params) + "):"
    lines = [head]
    for i, c in enumerate(calls):
        if ticks:
            lines.append(f"    _ts[{i}] = ticks()")
        lines.append(c.render())
    if ticks:
        lines.append(f"    _ts[{len(calls)}] = ticks()")
    elif not calls:
        lines.append("    pass")
    return "\n".join(lines) + "\n"


@dataclass(frozen=True)
class IOBinding:
    """Where a graph input or output lives: buffer name (``a_f32``, ``c_f32``...) and element offset."""

    name: str
    dtype: np.dtype
    shape: tuple[int, ...]
    buffer: str
    offset: int
    #: an input some kernel reads (False: only its shape mattered, e.g. a ``Shape`` folded at compile time;
    #: a call does not copy it in)
    read: bool = True

    @cached_property
    def size(self) -> int:
        return int(np.prod(self.shape, dtype=np.int64)) if self.shape else 1


@dataclass
class Program:
    """A compiled schedule: ``run(*buffers)`` and the ``calls`` it makes (``source`` is their rendered text)."""

    run: Callable[..., None]
    calls: list[Call]
    source: str
    kernel_sources: dict[str, str]
    buffer_names: list[str]
    arena_sizes: dict[str, int]
    arena_dtypes: dict[str, np.dtype]
    const_buffers: dict[str, np.ndarray]
    inputs: list[IOBinding]
    outputs: list[IOBinding]
    intermediate_bytes: int = 0
    kernel_header: str = ""
    meta: dict = field(default_factory=dict)

    @property
    def arena_bytes(self) -> int:
        return sum(n * self.arena_dtypes[b].itemsize for b, n in self.arena_sizes.items())

    def allocate(self) -> dict[str, np.ndarray]:
        """A fresh set of the schedule's buffers by name: zeroed, aligned arenas and the shared constant pools."""
        return {name: self.const_buffers[name] if name in self.const_buffers
                else aligned_zeros(max(self.arena_sizes.get(name, 0), 1), self.arena_dtypes[name])
                for name in self.buffer_names}

    def full_source(self) -> str:
        """The schedule and every kernel it calls, as one readable Python text."""
        parts = ["# ---- kernel module header ----", self.kernel_header.strip(), "", "# ---- schedule ----",
                 self.source]
        for name, src in self.kernel_sources.items():
            parts.append(f"# ---- {name} ----")
            parts.append(src.replace("def kernel(", f"def {name}(", 1))
        return "\n".join(parts)
