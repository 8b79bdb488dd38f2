"""cnnjit's logger: ``logging.getLogger("cnnjit")``, silent unless the application configures logging.

    import logging
    logging.basicConfig(level=logging.INFO)     # or: logging.getLogger("cnnjit").setLevel(logging.DEBUG)

INFO: a line as each compilation starts and how many kernels it must compile, one line when it is done
(shapes, passes, nodes, kernels, arena, times) and a cache summary; DEBUG: each kernel as it becomes ready
(streamed during a cold compile), the kernel chosen for every call of the schedule and where its machine
code comes from.
The command line turns this on with ``--verbose`` (``-vv`` for DEBUG).
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

from cnnjit.compiler.codegen import build
from cnnjit.compiler.codegen.precompile import KernelEvent, observe_kernels

logger = logging.getLogger("cnnjit")  # its NullHandler is added by ``import cnnjit``


def loaded_kernels() -> set[str]:
    """Keys of the kernels already loaded in this process (call before code generation)."""
    if not logger.isEnabledFor(logging.INFO):
        return set()
    return set(build._loaded)


def _shapes_text(shapes: Mapping[str, Sequence[int]]) -> str:
    return ", ".join(f"{n}={'x'.join(map(str, s))}" for n, s in shapes.items()) or "no inputs"


@contextlib.contextmanager
def specializing(model: str, shapes: Mapping[str, Sequence[int]]) -> Iterator[None]:
    """Around one compilation: log its start, and each kernel as it becomes ready, while it happens (no-op
    unless the ``cnnjit`` logger is enabled for INFO)."""
    if not logger.isEnabledFor(logging.INFO):
        yield
        return
    logger.info("compiling %r for %s", model, _shapes_text(shapes))
    with observe_kernels(log_kernel_event):
        yield


def log_kernel_event(ev: KernelEvent) -> None:
    """A ``KernelEvent`` as a log line: INFO for the kernels to compile, DEBUG for each kernel started/ready."""
    if ev.origin == "begin":
        if ev.misses:
            logger.info("%d kernels: %d to compile, %d cached", ev.total, ev.misses, ev.total - ev.misses)
    elif ev.origin == "schedule":
        logger.info("compiling the numba schedule of %d kernels", ev.total)
    elif ev.origin == "schedule compiled":
        logger.debug("schedule compiled in %.3f s", ev.seconds)
    elif ev.origin == "compiling":
        logger.debug("compiling kernel %s (%s, %s)", ev.name, ev.ops, ev.variant)
    elif ev.origin not in ("loading", "end"):
        logger.debug("kernel %d/%d %s (%s, %s): %s, %.3f s", ev.done, ev.total, ev.name, ev.ops, ev.variant,
                     ev.origin, ev.seconds)


def _origin(key: str, before: set[str]) -> str:
    """Where a kernel's machine code comes from: this process, numba's on-disk cache, or a fresh compile."""
    if key in before:
        return "memory"
    pyc = build.cache_dir() / "__pycache__"
    if pyc.is_dir() and any(pyc.glob(f"k_{key}.kernel-*.nbi")):
        return "disk cache"
    return "compile"


def log_specialization(model: str, shapes: Mapping[str, Sequence[int]], spec: Any, before: set[str],
                       passes: Sequence[str]) -> None:
    """Log what one compilation decided (no-op unless the ``cnnjit`` logger is enabled for INFO)."""
    if not logger.isEnabledFor(logging.INFO):
        return
    p = spec.program
    shp = _shapes_text(shapes)
    t = spec.timings
    logger.info("compiled %r for %s: passes [%s], %d nodes -> %d kernels (%d calls), arena %d B (intermediates "
                "%d B); import %.1f ms, passes %.1f ms, codegen %.1f ms", model, shp, ", ".join(passes),
                len(spec.graph.nodes), len(p.kernel_sources), len(p.calls), p.arena_bytes, p.intermediate_bytes,
                t.get("import", 0) * 1e3, t.get("passes", 0) * 1e3, t.get("codegen", 0) * 1e3)
    report = p.meta.get("compile_report")
    if report is not None:  # compiled eagerly: the report knows where each kernel came from
        origins = {r.name: r.origin for r in report.rows}
        logger.info("kernel cache: %s", report.summary())
        if logger.isEnabledFor(logging.DEBUG):
            for line in report.table().splitlines():
                logger.debug("%s", line)
    else:
        origins = {name: _origin(build.source_key(src), before) for name, src in p.kernel_sources.items()}
        counts = {k: sum(1 for v in origins.values() if v == k) for k in ("memory", "disk cache", "compile")}
        logger.info("kernel cache: %d already loaded, %d from numba's disk cache, %d to compile on first call",
                    counts["memory"], counts["disk cache"], counts["compile"])
    if logger.isEnabledFor(logging.DEBUG):
        for c in p.calls:
            if c.kernel in origins:
                logger.debug("%s (%s, %s): %s", c.kernel, origins[c.kernel], c.variant, c.note or c.statement())
