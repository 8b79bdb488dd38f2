"""The compiled-program cache: a whole model as one native object, loaded without the compiler.

``cnnjit.cache.warm`` (and ``cnnjit warm``) compile a model's program for this machine into one object
(``compiler/target/host.py``: every kernel, the schedule as a C entry ``cnnjit_model_run(in..., out...,
scratch)``, the weights as constants; it needs only libc and libm) and store it here. A later
``cnnjit.compile`` of the same model file or bytes with the same options finds it (``load``), links it
into the process with llvmlite's MCJIT (no external linker) and calls the entry through ctypes: no onnx,
numba or compiler import, so a new process reaches its first result in a fraction of the full path's time.

An entry is ``<root>/native-<host key>/<entry key>.o`` plus ``<entry key>.json``:

* the host key covers the cnnjit and llvmlite versions, a digest of the compiler's and runtime's own source
  (an edited checkout at the same version never loads an object older code built), the format of this cache
  and the version of the step protocol (a parallel object's entry), the host triple, CPU name and features
  (numba's ``NUMBA_CPU_NAME`` / ``NUMBA_CPU_FEATURES`` overrides included);
* the entry key covers the SHA-256 of the model bytes, the compile options and input shapes as given,
  and the environment that changes code generation (``CNNJIT_SPARSE_THRESHOLD``);
* the metadata records both keys, the model's digest and the object's size and SHA-256; all are checked
  before anything is loaded, the folder and files must be ours (not links), and the object is only ever
  linked, never interpreted: no text from the cache is executed as Python.

``CNNJIT_PROGRAM_CACHE=0`` switches the lookup off. Any mismatch, damage or loading error is a miss (logged
on the ``cnnjit`` logger), and ``cnnjit.compile`` takes the full path. The model returned is a
``CompiledModel`` whose other shapes, IR and source come from the full compiler, imported when first needed.
"""

from __future__ import annotations

import ctypes
import functools
import hashlib
import json
import logging
import os
import stat
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import llvmlite
import numpy as np

from cnnjit import _version
from cnnjit.ir.errors import CnnjitError, InputError

from .batchloop import on_places, ready_for_batches, run_rows
from .cpus import split_threads
from .model import CompiledModel, InputSignature, Specialization
from .team import PROTOCOL_VERSION, ParallelRun

#: bump when the object's calling convention or the metadata change
FORMAT = 2
#: the C entry of every object (``compiler/target/host.py`` writes it)
ENTRY_SYMBOL = "cnnjit_model_run"
#: metadata files larger than this are refused unread
MAX_META_BYTES = 1 << 20
#: environment variables that change the generated code, hence the entry key
KEY_ENVIRONMENT = ("CNNJIT_SPARSE_THRESHOLD",)

log = logging.getLogger("cnnjit")
_lock = threading.Lock()
_llvm_ready = False


class Miss(Exception):
    """Why a cache entry was not used (a message for the log)."""


def cache_root() -> Path:
    """The cache root folder (``CNNJIT_CACHE_DIR`` or ``~/.cache/cnnjit``); it may not exist yet."""
    return Path(os.environ.get("CNNJIT_CACHE_DIR") or os.path.join(os.path.expanduser("~"), ".cache", "cnnjit"))


def _binding() -> Any:
    """``llvmlite.binding``, imported on the first warm start or store (``import cnnjit`` stays without it)."""
    import llvmlite.binding

    return llvmlite.binding


def host_machine() -> tuple[str, str, str]:
    """(triple, CPU name, features) of this process as numba's JIT sees them (its env overrides win)."""
    return _host_machine(os.environ.get("NUMBA_CPU_NAME"), os.environ.get("NUMBA_CPU_FEATURES"))


@functools.lru_cache(maxsize=4)
def _host_machine(name_override: str | None, features_override: str | None) -> tuple[str, str, str]:
    ll = _binding()
    try:
        name = ll.get_host_cpu_name()
        try:
            features = ll.get_host_cpu_features().flatten()
        except Exception:  # noqa: BLE001 - not available on every platform
            features = ""
    except Exception:  # noqa: BLE001
        name, features = "unknown", ""
    return ll.get_process_triple(), name_override or name, features_override or features


#: the packages whose source decides what an object holds and how it is called (``code_digest``)
CODE_PACKAGES = ("compiler", "ir", "runtime")
#: a digest taken less than this long after one of its files last changed is not remembered: a write in
#: the same file-system timestamp tick could leave the file's stats as they were ("racy" stats, as git
#: calls them), so only stats older than this vouch for the content
RACY_STATS_S = 2.0
#: the folder under the cache root that remembers ``code_digest`` by the files' stats
_DIGESTS = "code-digest"
#: remembered digests kept (one per installed or edited source tree sharing the cache root)
MAX_DIGESTS = 32


def _code_stats(base: Path) -> list[tuple[str, os.stat_result]]:
    """(path relative to ``base``, stats) of every ``.py`` file of ``CODE_PACKAGES``, sorted by path."""
    found: list[tuple[str, os.stat_result]] = []
    for package in CODE_PACKAGES:
        todo = [base / package]
        while todo:
            with os.scandir(todo.pop()) as it:
                for e in it:
                    if e.is_dir(follow_symlinks=False):
                        todo.append(Path(e.path))
                    elif e.name.endswith(".py"):
                        found.append((Path(e.path).relative_to(base).as_posix(), e.stat()))
    return sorted(found, key=lambda f: f[0])


def _read_digest(base: Path, files: Sequence[str]) -> str:
    h = hashlib.sha256()
    for rel in files:
        h.update(f"{Path(rel)}\0".encode())
        h.update((base / rel).read_bytes())
    return h.hexdigest()


@functools.lru_cache(maxsize=1)
def code_digest() -> str:
    """SHA-256 of the Python source of the packages that decide what an object holds and how it is called
    (``CODE_PACKAGES``: ``cnnjit.compiler``, ``cnnjit.ir``, ``cnnjit.runtime``, ~1 MB), once per process;
    remembered across processes by ``tree_digest``."""
    # the folder holding compiler/, ir/ and runtime/
    return tree_digest(Path(__file__).resolve().parent.parent, cache_root() / _DIGESTS)


def tree_digest(base: Path, memo_dir: Path) -> str:
    """SHA-256 of the ``.py`` files of ``CODE_PACKAGES`` under ``base`` (each file's relative path and bytes,
    sorted by path), remembered in ``memo_dir`` under a key of every file's path, size, modification and
    change time, inode and device, so that a warm start stats ~110 files instead of reading them.

    Editing, adding, removing or replacing a file changes the key (its change time at least, which no
    process can set back), so the content is read and hashed again; a digest is remembered only when every
    file's stats are older than ``RACY_STATS_S``, in a folder that is ours; a memo file that is not ours or
    not a digest is ignored."""
    found = _code_stats(base)
    key = hashlib.sha256("\n".join(
        f"{rel}\0{st.st_size}\0{st.st_mtime_ns}\0{st.st_ctime_ns}\0{st.st_ino}\0{st.st_dev}"
        for rel, st in found).encode()).hexdigest()[:32]
    try:
        text = _read_ours(memo_dir / key, 64).decode("ascii")
        if len(text) == 64 and all(c in "0123456789abcdef" for c in text):
            return text
    except (Miss, OSError, UnicodeDecodeError):
        pass
    digest = _read_digest(base, [rel for rel, _ in found])
    newest = max((max(st.st_mtime, st.st_ctime) for _, st in found), default=0.0)
    if time.time() - newest > RACY_STATS_S:
        try:
            _private_dir(memo_dir.parent)
            _write_atomic(_private_dir(memo_dir) / key, digest.encode("ascii"))
            _prune(memo_dir, MAX_DIGESTS)
        except OSError as e:  # a read-only cache: the digest is read every time
            log.debug("compiled-program cache: cannot remember the code digest: %s", e)
    return digest


def _prune(folder: Path, keep: int) -> None:
    """Delete all but the ``keep`` newest files of ``folder`` (digests of checkouts edited since)."""
    with os.scandir(folder) as it:
        files = sorted((e.stat(follow_symlinks=False).st_mtime, e.path) for e in it
                       if e.is_file(follow_symlinks=False))
    for _, path in files[:max(0, len(files) - keep)]:
        try:
            os.unlink(path)
        except OSError:
            pass


def host_fields() -> dict[str, Any]:
    """What every entry depends on besides its model and options: versions, the code's digest, format,
    machine."""
    triple, cpu, features = host_machine()
    return {"format": FORMAT, "protocol": PROTOCOL_VERSION, "cnnjit": _version.__version__,
            "code": code_digest(), "llvmlite": llvmlite.__version__,
            "triple": triple, "cpu": cpu, "features": features}


def native_dir() -> Path:
    """This host's and versions' folder of compiled programs (may not exist yet)."""
    digest = hashlib.sha256(json.dumps(host_fields(), sort_keys=True).encode()).hexdigest()[:16]
    return cache_root() / f"native-{digest}"


def entry_key(model_sha256: str, options: Mapping[str, Any]) -> str:
    """The key of a model (by digest) compiled with ``options`` (``api.warm_options``'s dict; ``verify`` is
    left out, it changes no result). A thread count above the CPUs this process may use also keys the count the
    program was split for (``cpus.split_threads``): threads=4 stored by a 2-CPU process is a 2-thread program."""
    opts = {k: v for k, v in options.items() if k != "verify"}
    threads = opts.get("threads")
    if isinstance(threads, int) and split_threads(threads) != threads:
        opts["split_threads"] = split_threads(threads)
    env = {k: os.environ.get(k) for k in KEY_ENVIRONMENT}
    text = json.dumps({"model": model_sha256, "options": opts, "env": env}, sort_keys=True, default=repr)
    return hashlib.sha256(text.encode()).hexdigest()


def entry_path(data: bytes, options: Mapping[str, Any]) -> Path:
    """Where the object of the model ``data`` compiled with ``options`` is (or would be) stored."""
    return native_dir() / f"{entry_key(hashlib.sha256(data).hexdigest(), options)}.o"


def model_bytes(model: Any) -> bytes | None:
    """The bytes of a model given as a path or bytes (None for anything else: a ``ModelProto``...)."""
    if isinstance(model, (bytes, bytearray, memoryview)):
        return bytes(model)
    if isinstance(model, (str, os.PathLike)):
        try:
            with open(model, "rb") as f:
                return f.read()
        except (OSError, ValueError, TypeError):
            return None  # the full path reports it
    return None


# =========================================================================================================
# the store
# =========================================================================================================
def _private_dir(path: Path) -> Path:
    path.mkdir(mode=0o700, parents=True, exist_ok=True)
    st = path.lstat()
    if not stat.S_ISDIR(st.st_mode) or (hasattr(os, "getuid") and st.st_uid != os.getuid()):
        raise OSError(f"{path} is not a folder of ours")
    if st.st_mode & 0o077:
        os.chmod(path, 0o700)
    return path


def _write_atomic(path: Path, data: bytes) -> None:
    tmp = path.with_name(f"{path.name}.{os.getpid()}.{threading.get_ident()}.tmp")
    with open(tmp, "wb") as f:
        f.write(data)
    os.replace(tmp, path)


def store(data: bytes, options: Mapping[str, Any], obj: bytes, meta: Mapping[str, Any]) -> Path:
    """Seal and write an entry for the model ``data`` compiled with ``options``: the object, then its
    metadata (``meta``: name, inputs, outputs, shapes, io, scratch_bytes) with keys and checksums."""
    sha = hashlib.sha256(data).hexdigest()
    key = entry_key(sha, options)
    folder = _private_dir(native_dir())
    record = {**meta, "key": key, "host": host_fields(), "model_sha256": sha,
              "object_bytes": len(obj), "object_sha256": hashlib.sha256(obj).hexdigest()}
    _write_atomic(folder / f"{key}.o", obj)
    _write_atomic(folder / f"{key}.json", json.dumps(record, sort_keys=True).encode())
    return folder / f"{key}.o"


def _any_programs() -> bool:
    """Whether the cache root holds any compiled-program folder (of any host or version)."""
    try:
        with os.scandir(cache_root()) as it:
            return any(e.name.startswith("native-") for e in it)
    except OSError:
        return False


def _read_ours(path: Path, limit: int | None = None) -> bytes:
    try:
        st = path.lstat()
    except OSError:
        raise Miss(f"no entry {path.name}") from None
    if not stat.S_ISREG(st.st_mode):
        raise Miss(f"{path} is not a regular file")
    if hasattr(os, "getuid") and st.st_uid != os.getuid():
        raise Miss(f"{path} belongs to another user")
    if limit is not None and st.st_size > limit:
        raise Miss(f"{path} is too large")
    with open(path, "rb") as f:
        return f.read()


def _read_entry(data: bytes, options: Mapping[str, Any]) -> tuple[dict[str, Any], bytes]:
    """The checked metadata and object of the entry for ``data`` and ``options``, or ``Miss``."""
    sha = hashlib.sha256(data).hexdigest()
    key = entry_key(sha, options)
    folder = native_dir()
    try:
        st = folder.lstat()
    except OSError:
        raise Miss("no compiled programs for this host and version") from None
    if not stat.S_ISDIR(st.st_mode) or (hasattr(os, "getuid") and st.st_uid != os.getuid()):
        raise Miss(f"{folder} is not a folder of ours")
    try:
        meta = json.loads(_read_ours(folder / f"{key}.json", MAX_META_BYTES))
    except ValueError:
        raise Miss("unreadable metadata") from None
    if not isinstance(meta, dict):
        raise Miss("unreadable metadata")
    for field, want in (("key", key), ("host", host_fields()), ("model_sha256", sha)):
        if meta.get(field) != want:
            raise Miss(f"metadata {field} does not match")
    obj = _read_ours(folder / f"{key}.o")
    if len(obj) != meta.get("object_bytes") or hashlib.sha256(obj).hexdigest() != meta.get("object_sha256"):
        raise Miss("the object does not match its recorded checksum")
    return meta, obj


# =========================================================================================================
# loading and calling
# =========================================================================================================
#: libc functions a parallel object's waits call (``compiler/target/host.py``'s ``PROTOCOL_SYMBOLS``)
PROTOCOL_SYMBOLS = ("syscall", "sched_yield")


def _register_protocol_symbols(ll: Any) -> None:
    """Make the libc functions of the step protocol resolvable when MCJIT links an object (as
    ``runtime/parallel.py`` does for numba's code)."""
    libc = ctypes.CDLL(None)
    for name in PROTOCOL_SYMBOLS:
        fn = getattr(libc, name, None)
        if fn is not None:
            ll.add_symbol(name, ctypes.cast(fn, ctypes.c_void_p).value)


def _engine(obj: bytes, triple: str, cpu: str, features: str) -> tuple[Any, int]:
    """Link ``obj`` into this process with MCJIT; (engine, address of the entry)."""
    global _llvm_ready
    ll = _binding()
    with _lock:
        if not _llvm_ready:
            ll.initialize_native_target()
            ll.initialize_native_asmprinter()
            _llvm_ready = True
        tm = ll.Target.from_triple(triple).create_target_machine(cpu=cpu, features=features, reloc="static",
                                                                 codemodel="jitdefault", jit=True)
        _register_protocol_symbols(ll)
        engine = ll.create_mcjit_compiler(ll.parse_assembly(""), tm)
        engine.add_object_file(ll.ObjectFileRef.from_data(obj))
        engine.finalize_object()
        addr = engine.get_function_address(ENTRY_SYMBOL)
    if not addr:
        raise Miss(f"the object has no {ENTRY_SYMBOL}")
    return engine, addr


def _failed(status: int) -> InputError:
    return InputError(f"the compiled model reported an error (status {status}): an input holds an out-of-range "
                      "index?")


class NativeSpecialization:
    """One input shape of a model as a loaded native object. Each call takes a work set from a pool (as
    ``Specialization`` does with its arenas), so threads calling at once share no memory; anything else
    (``graph``, ``program``...) comes from the full compiler's specialisation, made on first use by ``full``.

    A serial object's entry is ``run(in..., out..., scratch)``: a work set is the scratch block plus staging
    buffers for the inputs and outputs, all in one zeroed, 64-byte aligned allocation whose addresses are
    computed once; a call copies the inputs in, calls the entry (ctypes releases the GIL) and copies the
    outputs out. A parallel object's entry is ``run(scratch, state, main, epoch)`` (``host.py``): a work set
    is the scratch block, the inputs and outputs are copied straight in and out of their places in it, and
    the entry runs on the process-wide team of ``runtime.team`` (``ParallelRun``: the JIT's thread team and
    its fallbacks, without numba) as a numba parallel schedule would."""

    def __init__(self, engine: Any, address: int, meta: Mapping[str, Any],
                 full: Callable[[], Specialization]):
        self._engine = engine  # keeps the machine code mapped
        io = meta["io"]
        self.inputs = [(d["name"], np.dtype(d["dtype"]), tuple(d["shape"])) for d in io["inputs"]]
        self.outputs = [(np.dtype(d["dtype"]), tuple(d["shape"])) for d in io["outputs"]]
        self.scratch_bytes = int(meta["scratch_bytes"])
        #: the batch-1 object of a model that keeps samples apart: other batch sizes loop over it (BatchLoop)
        self.batch_separable = bool(meta.get("batch_separable"))
        par = meta.get("parallel")
        self.parallel: ParallelRun | None = None
        if par:
            self._offsets = [int(d["offset"]) for d in [*io["inputs"], *io["outputs"]]]
            if any(o < 0 or o >= self.scratch_bytes for o in self._offsets):
                raise Miss("an input or output outside the scratch block")
            entry = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.c_void_p, ctypes.c_void_p, ctypes.c_int64,
                                     ctypes.c_int64)(address)

            def run(scratch: int, main: bool, ep: int, state: np.ndarray, _engine: Any = engine) -> None:
                # (the engine is a default: a team worker still catching up after the caller has returned
                # holds the machine code it is running, even once this model is dropped)
                status = entry(scratch, state.ctypes.data, int(main), ep)
                if status != 0:
                    raise _failed(status)

            self.parallel = ParallelRun(run, int(par["steps"]), int(par["threads"]))
        else:
            n = len(self.inputs) + len(self.outputs) + 1
            self._fn = ctypes.CFUNCTYPE(ctypes.c_int, *([ctypes.c_void_p] * n))(address)
        self._pool: list[tuple] = []
        self._full = full
        self.timings: dict[str, float] = {}

    @property
    def output_specs(self) -> list[tuple[np.dtype, tuple[int, ...]]]:
        """(dtype, shape) of every output."""
        return list(self.outputs)

    def _work_set(self) -> tuple:
        """(input views, output views, entry arguments, the block): a fresh set, zeroed like the JIT's arenas."""
        tensors = [(dt, shape) for _, dt, shape in self.inputs] + self.outputs
        sizes = [int(np.prod(shape, dtype=np.int64)) * dt.itemsize for dt, shape in tensors]
        if self.parallel is not None:  # the tensors' places in the scratch block
            offsets, total = self._offsets, self.scratch_bytes
            if any(o + size > total for o, size in zip(offsets, sizes)):
                raise InputError("the compiled program's inputs or outputs do not fit its scratch block")
        else:  # staging buffers, then the scratch block
            offsets, total = [], 0
            for size in [*sizes, self.scratch_bytes]:
                offsets.append(total)
                total += -(-max(size, 1) // 64) * 64
        raw = np.zeros(total + 64, np.uint8)
        base = raw.ctypes.data
        start = -base % 64
        views = [raw[start + off:start + off + size].view(dt).reshape(shape)
                 for off, size, (dt, shape) in zip(offsets, sizes, tensors)]
        args = (base + start,) if self.parallel is not None else tuple(base + start + off for off in offsets)
        return views[:len(self.inputs)], views[len(self.inputs):], args, raw

    def prefill(self, n: int) -> None:
        """Keep at least ``n`` idle work sets (at most 8): one per thread of a ``BatchLoop``."""
        while len(self._pool) < min(n, 8):
            self._pool.append(self._work_set())
        for work in self._pool:  # mapped now, not in the first run (see model.Specialization.prefill)
            work[-1].fill(0)

    def run(self, feeds: Mapping[str, np.ndarray]) -> list[np.ndarray]:
        """Run on validated arrays (by input name, right dtype and shape); outputs are fresh arrays."""
        return self.run_into(feeds, None)

    def run_into(self, feeds: Mapping[str, np.ndarray], outs: Sequence[np.ndarray] | None,
                 solo: bool = False) -> list[np.ndarray]:
        """``run``, writing the outputs into ``outs`` when given (one sample's rows of a batch: see
        ``BatchLoop``), else into fresh arrays; ``solo``: a parallel program run by the calling thread alone."""
        with _Borrowed(self) as (ins, outv, args, _):
            if self.parallel is not None and not solo:
                self.parallel.rouse()  # (its sleeping workers wake while the inputs are copied)
            for (name, dtype, shape), view in zip(self.inputs, ins):
                x = feeds[name]
                if x.dtype != dtype or x.shape != shape:
                    raise InputError(f"input {name!r} has {x.dtype}{list(x.shape)}, expected {dtype}{list(shape)}")
                view[...] = x
            if self.parallel is None:
                status = self._fn(*args)
                if status != 0:
                    raise _failed(status)
            elif solo:
                self.parallel.alone()(*args)
            else:
                self.parallel(*args)
            if outs is None:
                return [v.copy() for v in outv]
            for view, o in zip(outv, outs):
                np.copyto(o, view)
            return list(outs)

    def run_samples(self, feeds: Mapping[str, np.ndarray], outs: Sequence[np.ndarray], order: Iterator[int],
                    batch: int, solo: bool) -> int:
        """A ``BatchLoop`` thread's share of a batch on one work set (``Specialization.run_samples``)."""
        with _Borrowed(self) as (ins, outv, args, _):
            xs = []
            for (name, dtype, shape), view in zip(self.inputs, ins):
                x = feeds[name]
                if x.dtype != dtype or x.shape[1:] != shape[1:]:
                    raise InputError(f"input {name!r} has {x.dtype}{list(x.shape)}, expected {dtype}{list(shape)}")
                xs.append((x, view))
            if self.parallel is None:
                fn = self._fn

                def call() -> None:
                    status = fn(*args)
                    if status != 0:
                        raise _failed(status)
            else:
                call = functools.partial(self.parallel.alone() if solo else self.parallel, *args)
            sample = on_places(xs, call, list(zip(outv, outs)))
            return run_rows(sample, order, batch)

    def __getattr__(self, name: str) -> Any:
        if name in ("graph", "program", "pass_report"):
            return getattr(self._full(), name)
        raise AttributeError(name)


class _Borrowed:
    """``with _Borrowed(spec) as work``: a work set of ``NativeSpecialization`` ``spec`` for one call (its
    ``_work_set`` tuple), an idle one from its pool or a fresh one when every set is in use, given back
    afterwards (at most 8 kept idle). A class, not ``contextlib.contextmanager``: on the per-call path its
    enter and exit cost a third of a generator's (interleaved timeit, 15 rounds)."""

    __slots__ = ("pool", "spec", "work")

    def __init__(self, spec: NativeSpecialization) -> None:
        self.spec, self.pool = spec, spec._pool

    def __enter__(self) -> tuple:
        try:
            self.work = self.pool.pop()  # atomic: no lock on the per-call path
        except IndexError:
            self.work = self.spec._work_set()
        return self.work

    def __exit__(self, *exc: object) -> None:
        if len(self.pool) < 8:
            self.pool.append(self.work)


def _signatures(meta: Mapping[str, Any]) -> list[InputSignature]:
    return [InputSignature(s["name"], np.dtype(s["dtype"]), None if s["dims"] is None else tuple(s["dims"]),
                           tuple(s["dim_names"]), bool(s["by_value"])) for s in meta["inputs"]]


def load(model: Any, options: Mapping[str, Any], rebuild: Callable[[bytes, dict], CompiledModel],
         compile_full: Callable[[bytes, dict], CompiledModel]) -> CompiledModel | None:
    """The model from the compiled-program cache, or None (a miss: the caller compiles). ``compile_full(bytes,
    options)`` is the full compiler, for every shape but the cached one and for the IR and source;
    ``rebuild`` is what unpickling the model calls."""
    if os.environ.get("CNNJIT_DUMP_IR") or os.environ.get("CNNJIT_PROGRAM_CACHE", "1") == "0":
        return None  # the full path dumps the IR; or the cache is switched off
    if not isinstance(model, (bytes, bytearray, memoryview, str, os.PathLike)) or not _any_programs():
        return None  # (before reading and hashing the model: most compiles never meet a stored program)
    data = model_bytes(model)
    if data is None:
        return None
    try:
        meta, obj = _read_entry(data, options)
        engine, addr = _engine(obj, meta["host"]["triple"], meta["host"]["cpu"], meta["host"]["features"])
        sigs = _signatures(meta)
        shapes = tuple(tuple(int(d) for d in meta["shapes"][s.name]) for s in sigs)
        full_model: list[CompiledModel] = []

        def full() -> CompiledModel:
            if not full_model:
                full_model.append(compile_full(data, dict(options)))
            return full_model[0]

        def specialize(shp: dict[str, tuple[int, ...]], values: dict[str, np.ndarray]) -> Specialization:
            return full().specialization(shp, values)

        spec = NativeSpecialization(engine, addr, meta,
                                    lambda: full().specialization(dict(zip([s.name for s in sigs], shapes))))
        cm = CompiledModel(sigs, [str(n) for n in meta["outputs"]], specialize, str(meta["name"]),
                           {k: options.get(k) for k in ("fuse", "passes", "disable", "entry", "threads")})
    except Miss as e:
        log.debug("compiled-program cache: miss (%s)", e)
        return None
    except (CnnjitError, KeyError, TypeError, ValueError, RuntimeError, OSError) as e:
        log.warning("compiled-program cache: entry refused (%s: %s); compiling", type(e).__name__, e)
        return None
    ready_for_batches(spec, int(options.get("threads") or 1))
    cm._specs[shapes] = spec
    cm._last = spec
    cm.set_origin(rebuild, data, dict(options))
    log.info("compiled-program cache: loaded %s (%d bytes of machine code and weights)", cm.name, len(obj))
    return cm
