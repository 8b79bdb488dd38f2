"""The on-disk kernel cache: where it is, what it holds, emptying it, and filling it ahead of time.

    import cnnjit.cache
    cnnjit.cache.info()     # {"dir": ..., "kernels": ..., "bytes": ..., "process": {...}}
    cnnjit.cache.clear()    # removes every cnnjit kernel folder under the cache root
    cnnjit.cache.warm("model.onnx", input_shapes={"x": (1, 3, 96, 96)})   # compile into the cache now

The cache root is ``CNNJIT_CACHE_DIR`` (default ``~/.cache/cnnjit``); each combination of cnnjit, numba,
llvmlite, Python and host CPU gets its own ``kernels-numba<version>-<key>`` folder in it (see
``cnnjit.compiler.codegen.build``). It is shared by every model and process of the user.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numba

from cnnjit.compiler.codegen import build
from cnnjit.compiler.codegen.precompile import STATS

from . import api

_PREFIX = "kernels-"


def cache_root() -> Path:
    """The cache root folder (``CNNJIT_CACHE_DIR`` or ``~/.cache/cnnjit``); it may not exist yet."""
    return Path(os.environ.get("CNNJIT_CACHE_DIR") or os.path.join(os.path.expanduser("~"), ".cache", "cnnjit"))


def _folder_stats(d: Path) -> dict[str, Any]:
    size = files = 0
    for root, _dirs, names in os.walk(d):
        for n in names:
            try:
                size += os.lstat(os.path.join(root, n)).st_size
                files += 1
            except OSError:
                pass
    pyc = d / "__pycache__"
    return {
        "kernels": sum(1 for _ in d.glob("k_*.py")),
        "compiled_kernels": sum(1 for _ in pyc.glob("k_*.nbi")) if pyc.is_dir() else 0,
        "compiled_signatures": sum(1 for _ in pyc.glob("k_*.nbc")) if pyc.is_dir() else 0,
        "bytes": size,
        "files": files,
    }


def info() -> dict[str, Any]:
    """What the cache holds: the folder of this host/version, its kernels and size, stale folders of other
    versions, and this process's kernel counts by origin (memory, disk cache, compiled)."""
    root = cache_root()
    current = root / f"{_PREFIX}numba{numba.__version__}-{build.cache_key()}"
    cur = _folder_stats(current) if current.is_dir() else {"kernels": 0, "compiled_kernels": 0,
                                                            "compiled_signatures": 0, "bytes": 0, "files": 0}
    others = [p for p in sorted(root.glob(_PREFIX + "*")) if p.is_dir() and p != current] if root.is_dir() else []
    other_bytes = sum(_folder_stats(p)["bytes"] for p in others)
    proc = {k: (round(v, 4) if isinstance(v, float) else int(v)) for k, v in STATS.items()}
    proc["hits"] = int(STATS.get("memory", 0) + STATS.get("disk cache", 0))
    proc["misses"] = int(STATS.get("compiled", 0) + STATS.get("compiled by worker", 0))
    return {"root": str(root), "dir": str(current), "exists": current.is_dir(), **cur,
            "stale_folders": [str(p) for p in others], "stale_bytes": other_bytes,
            "total_bytes": cur["bytes"] + other_bytes, "process": proc}


def clear() -> dict[str, Any]:
    """Delete every ``kernels-*`` folder under the cache root (this and other versions); returns what went.

    Only our own folders are touched (the root itself and anything else in it stay). Kernels already
    loaded in this process keep working; the next compile recreates the folder.
    """
    root = cache_root()
    removed: list[str] = []
    freed = 0
    errors: list[str] = []
    if root.is_dir():
        for p in sorted(root.glob(_PREFIX + "*")):
            if p.is_symlink() or not p.is_dir():
                continue
            if hasattr(os, "getuid") and p.lstat().st_uid != os.getuid():
                errors.append(f"{p}: belongs to another user")
                continue
            size = _folder_stats(p)["bytes"]
            try:
                shutil.rmtree(p)
            except OSError as e:
                errors.append(f"{p}: {e.strerror or e}")
                continue
            removed.append(str(p))
            freed += size
    build._dirs.clear()
    return {"root": str(root), "removed": removed, "bytes_freed": freed, "errors": errors}


def warm(model: Any, input_shapes: Mapping[str, Sequence[int]] | None = None, **options: Any) -> Any:
    """Compile ``model`` now so every kernel it needs is in the on-disk cache (e.g. while building a
    deployment image); returns the ``CompileReport``. Symbolic dimensions need ``input_shapes``."""
    cm = api.compile(model, input_shapes=input_shapes, **options)
    return cm.compile_report()
