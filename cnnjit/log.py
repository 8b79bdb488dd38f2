"""cnnjit's logger: ``logging.getLogger("cnnjit")``, silent unless the application configures logging.

    import logging
    logging.basicConfig(level=logging.INFO)     # or: logging.getLogger("cnnjit").setLevel(logging.DEBUG)

INFO: one line per compilation (shapes, passes, nodes, kernels, arena, times) and a cache summary;
DEBUG: the kernel chosen for every call of the schedule and where its machine code comes from.
The command line turns this on with ``--verbose`` (``-vv`` for DEBUG).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from typing import Any

from cnnjit.compiler.codegen import build

logger = logging.getLogger("cnnjit")
logger.addHandler(logging.NullHandler())


def loaded_kernels() -> set[str]:
    """Keys of the kernels already loaded in this process (call before code generation)."""
    if not logger.isEnabledFor(logging.INFO):
        return set()
    return set(build._loaded)


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
    shp = ", ".join(f"{n}={'x'.join(map(str, s))}" for n, s in shapes.items())
    t = spec.timings
    logger.info("compiled %r for %s: passes [%s], %d nodes -> %d kernels, arena %d B (intermediates %d B); "
                "import %.1f ms, passes %.1f ms, codegen %.1f ms", model, shp or "no inputs", ", ".join(passes),
                len(spec.graph.nodes), len(p.kernel_sources), p.arena_bytes, p.intermediate_bytes,
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
