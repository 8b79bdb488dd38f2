"""The on-disk kernel cache: where it is, what it holds, emptying it, and filling it ahead of time.

    import cnnjit.cache
    cnnjit.cache.info()     # {"dir": ..., "kernels": ..., "bytes": ..., "process": {...}}
    cnnjit.cache.clear()    # removes every cnnjit kernel folder under the cache root
    cnnjit.cache.warm("model.onnx", input_shapes={"x": (1, 3, 96, 96)})   # compile into the cache now

``warm`` also stores the model's whole program as one native object in the compiled-program cache
(``cnnjit.runtime.native``: ``native-<key>`` folders beside the kernel folders), from which a later
``cnnjit.compile`` of the same model file or bytes with the same options starts without importing the
compiler. A plain ``cnnjit.compile`` does not store it: building the object lowers every kernel again in a
worker process, which would double a cold compile's CPU time (see the README's warm-start section).

The cache root is ``CNNJIT_CACHE_DIR`` (default ``~/.cache/cnnjit``); each combination of cnnjit, numba,
llvmlite, Python and host CPU gets its own ``kernels-numba<version>-<key>`` folder in it (see
``cnnjit.compiler.codegen.build``). It is shared by every model and process of the user.
"""

from __future__ import annotations

import inspect
import logging
import os
import shutil
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numba
import numpy as np

from cnnjit.compiler.codegen import build
from cnnjit.compiler.codegen.precompile import STATS
from cnnjit.compiler.frontend.loader import load_model
from cnnjit.compiler.stages import CompileOptions
from cnnjit.compiler.target.host import build_host_object
from cnnjit.runtime import native
from cnnjit.runtime.model import CompiledModel
from cnnjit.runtime.native import cache_root

from . import api

_PREFIX = "kernels-"
_NATIVE_PREFIX = "native-"
#: the compiled-program cache's remembered source digests (``native.tree_digest``)
_DIGESTS = "code-digest"
log = logging.getLogger("cnnjit")


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
    """Delete every ``kernels-*`` and ``native-*`` folder and the remembered source digests under the cache
    root (this and other versions); returns what went.

    Only our own folders are touched (the root itself and anything else in it stay). Kernels already
    loaded in this process keep working; the next compile recreates the folder.
    """
    root = cache_root()
    removed: list[str] = []
    freed = 0
    errors: list[str] = []
    if root.is_dir():
        for p in sorted([*root.glob(_PREFIX + "*"), *root.glob(_NATIVE_PREFIX + "*"), *root.glob(_DIGESTS)]):
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


def warm(model: Any, input_shapes: Mapping[str, Sequence[int]] | None = None, native_program: bool = True,
         **options: Any) -> Any:
    """Compile ``model`` now so every kernel it needs is in the on-disk cache (e.g. while building a
    deployment image), and (``native_program``) its whole program into the compiled-program cache (see
    ``store_native``); returns the ``CompileReport``. Symbolic dimensions need ``input_shapes``."""
    cm = api.compile(model, input_shapes=input_shapes, **options)
    report = cm.compile_report()
    if native_program:
        store_native(model, cm, input_shapes, **options)
    return report


def store_native(model: Any, cm: CompiledModel, input_shapes: Mapping[str, Sequence[int]] | None = None,
                 force: bool = False, **options: Any) -> Path | None:
    """Build ``model`` (a path or bytes, compiled as ``cm`` with these options) as one native object and
    store it in the compiled-program cache; returns the object's path, or None when the model cannot be
    one (a ModelProto, symbolic dimensions without ``input_shapes``, inputs that set shapes, external data:
    see ``compiler/target/host.py``). One already there is kept (``force``
    builds it again). Compiler errors propagate."""
    data = native.model_bytes(model)
    if data is None:
        return None
    defaults = {k: p.default for k, p in inspect.signature(api.compile).parameters.items()
                if p.default is not inspect.Parameter.empty}
    args = {**defaults, **options, "input_shapes": input_shapes}
    if args["target"] is not None or args["dump_ir_after"]:
        return None
    # a model compiled with input_shapes is stored for those, and for a compile without them (its first
    # call at these shapes runs from the object; other shapes compile)
    keys = [{**api.warm_options(**{k: args[k] for k in inspect.signature(api.warm_options).parameters}),
             "verify": args["verify"]}]
    if input_shapes is not None:
        keys.append({**keys[0], "input_shapes": None})
    if not force and all(native.load(data, k, api._rebuild, api._compile_full) is not None for k in keys):
        return native.entry_path(data, keys[0])
    shapes = {}
    for s in cm.inputs:
        dims = tuple(input_shapes[s.name]) if input_shapes and s.name in input_shapes else s.dims
        if dims is None or any(d is None for d in dims):
            log.info("compiled-program cache: %s has symbolic dimensions; give input_shapes to store it", cm.name)
            return None
        shapes[s.name] = tuple(int(d) for d in dims)
    opts = CompileOptions(fuse=args["fuse"], passes=None if args["passes"] is None else tuple(args["passes"]),
                          disable=None if args["disable"] is None else tuple(args["disable"]),
                          max_tensor_bytes=args["max_tensor_bytes"], max_arena_bytes=args["max_arena_bytes"],
                          threads=keys[0]["threads"], sparse_threshold=args["sparse_threshold"],
                          variants=tuple(sorted((args["variants"] or {}).items())),
                          vector_width=args["vector_width"])
    obj = build_host_object(load_model(data), shapes, opts)
    if obj is None:
        log.info("compiled-program cache: %s cannot be one native object; its warm start compiles", cm.name)
        return None
    meta = {"name": cm.name, "outputs": list(cm.output_names), "shapes": {k: list(v) for k, v in shapes.items()},
            "inputs": [{"name": s.name, "dtype": np.dtype(s.dtype).str,
                        "dims": None if s.dims is None else list(s.dims), "dim_names": list(s.dim_names),
                        "by_value": s.by_value} for s in cm.inputs],
            "io": {"inputs": obj.inputs, "outputs": obj.outputs}, "scratch_bytes": obj.scratch_bytes,
            "numba": numba.__version__, "parallel": obj.parallel,
            "batch_separable": bool(getattr(cm.specialization(shapes), "batch_separable", False))}
    return [native.store(data, k, obj.object, meta) for k in keys][0]
