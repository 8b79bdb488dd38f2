"""numba's on-disk function cache, loading an entry without refreshing numba's target context first.

numba's own ``FunctionCache.load_overload`` refreshes the whole target context before it rebuilds a cached
entry: every registry numba has, and scipy.linalg (0.35-1.4 s measured on the development machines).
Rebuilding already compiled code needs only the runtime's (NRT) symbols it links against; a real compile
still refreshes (numba's compiler does it itself). The kernel cache (``compiler/codegen/build.py``) and the
team's own functions (``runtime/parallel.py``) both load through this class; it lives in the runtime so that
the runtime never imports the compiler.
"""

from __future__ import annotations

from numba.core.caching import FunctionCache

try:
    from numba.core.runtime import rtsys
except ImportError:  # pragma: no cover - another numba layout: numba's own (slower) initialisation
    rtsys = None


class LoadWithoutRefresh(FunctionCache):
    """A numba ``FunctionCache`` whose loads initialise only the runtime, not the whole target context."""

    def load_overload(self, sig, target_context):  # noqa: ANN001, ANN201 - numba's signature
        if rtsys is None:  # pragma: no cover
            target_context.refresh()
        else:
            rtsys.initialize(target_context)
        with self._guard_against_spurious_io_errors():
            return self._load_overload(sig, target_context)


__all__ = ["LoadWithoutRefresh"]
