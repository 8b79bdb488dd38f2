"""Ahead-of-time compilation for 64-bit ARM (aarch64 Linux): an object file, a C header and a shared library.

    art = cnnjit.compile("kws.onnx", target="aarch64-linux-gnu", cpu="cortex-a76")
    art.save("build/")   # kws.o, libkws.so, kws.h, kws_main.c, README.md

The model is imported, optimised and scheduled on the host exactly like a host build, with the SIMD
kernels generated for 128-bit NEON vectors (width 4). The kernels are then lowered for the target by
numba in a worker process (``aarch64_worker.py``; all numba internals live there) and joined with a C
entry point ``int <name>_run(const float *in0, ..., float *out0, ..., void *scratch)`` that uses only the
caller's scratch buffer (its size is in the header), allocates nothing and needs only libc and libm.
Weights are LLVM global constants inside the object.

Every artifact is checked before it is handed out: ELF machine and triple, no x86 intrinsics in the IR,
no undefined symbols beyond libc/libm. Linking the shared library, and the tests that run the code under
``qemu-aarch64``, need the Debian packages ``gcc-aarch64-linux-gnu``, ``libc6-dev-arm64-cross`` and
``qemu-user``.
"""

from __future__ import annotations

import json
import os
import pickle
import re
import shutil
import struct
import subprocess
import sys
import tempfile
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from cnnjit.compiler.codegen.build import HEADER
from cnnjit.compiler.codegen.kernel import Target
from cnnjit.compiler.codegen.precompile import KernelEvent, kernels_finished, notify
from cnnjit.compiler.frontend.loader import load_model
from cnnjit.compiler.frontend.onnx_import import check_supported, value_inputs
from cnnjit.compiler.stages import CompileOptions, resolve_shapes, specialize
from cnnjit.ir.errors import CompileError, InputError
from cnnjit.runtime.program import Buf, Call, Int, Program

from .aarch64_worker import PROGRESS, SUPPORTED_NUMBA, TargetSpecError, make_target_machine, numba_supported
from .harness import harness_source

#: the only OS/ABI verified (linked with the GNU cross toolchain, run under qemu-user)
CANONICAL_TRIPLE = "aarch64-unknown-linux-gnu"
#: features always set (NEON: the kernels' 4-lane vectors) and always cleared unless asked for: with SVE
#: LLVM would turn masked loads and loops into SVE code (e.g. ``cpu="neoverse-v1"``) that NEON-only boards
#: and ``qemu -cpu`` models without SVE cannot run
BASE_FEATURES = ("+neon", "+fp-armv8")
PINNED_OFF = ("-sve", "-sve2")
#: CPUs checked under qemu (their ``qemu-aarch64 -cpu`` model); others LLVM knows are accepted too
QEMU_CPU = {"generic": "cortex-a53", "cortex-a53": "cortex-a53", "cortex-a35": "cortex-a35",
            "cortex-a57": "cortex-a57", "cortex-a72": "cortex-a72", "cortex-a76": "cortex-a76",
            "neoverse-n1": "neoverse-n1"}
NEON_WIDTH = 4
NEON_REGISTERS = 32  # v0-v31, 128 bits each

#: symbols the object may leave undefined (C library and math library)
LIBC_LIBM = frozenset({
    "memcpy", "memmove", "memset", "abort",
    *(f + s for f in ("exp", "exp2", "expm1", "log", "log2", "log10", "log1p", "pow", "sqrt", "sin", "cos",
                      "tan", "asin", "acos", "atan", "atan2", "sinh", "cosh", "tanh", "asinh", "acosh",
                      "atanh", "erf", "erfc", "floor", "ceil", "round", "rint", "nearbyint", "trunc", "fmod",
                      "fabs", "fmin", "fmax", "hypot", "lgamma", "tgamma", "copysign", "cbrt", "ldexp",
                      "frexp", "modf", "remainder")
      for s in ("", "f"))})

_PACKAGES = {"aarch64-linux-gnu-gcc": "gcc-aarch64-linux-gnu libc6-dev-arm64-cross",
             "qemu-aarch64": "qemu-user", "llvm-mca": "llvm"}


class TargetError(CompileError):
    """A target, CPU or feature string cnnjit cannot compile for, or a missing cross tool."""

    def __init__(self, message: str, hint: str = "", kind: str = "usage"):
        super().__init__(message + (f" ({hint})" if hint else ""))
        self.message, self.hint = message, hint
        #: "usage" (a bad target/CPU/feature string), "tool" (a missing or failing cross tool), "bug"
        self.kind = kind


# =========================================================================================================
# target strings, tools
# =========================================================================================================
def parse_target(target: str) -> str:
    """The LLVM triple for a user's target string (``aarch64-linux-gnu``, ``arm64-unknown-linux-gnu``...)."""
    if not isinstance(target, str) or not re.fullmatch(r"[A-Za-z0-9_.]+(-[A-Za-z0-9_.]+){1,3}", target.strip()):
        raise TargetError(f"malformed target {target!r}: expected an LLVM triple like 'aarch64-linux-gnu'",
                          "supported: aarch64-linux-gnu")
    parts = target.strip().lower().split("-")
    arch = parts[0]
    if arch not in ("aarch64", "arm64"):
        raise TargetError(f"unsupported target architecture {arch!r} in {target!r}",
                          "supported: aarch64-linux-gnu (64-bit ARM Linux)")
    rest = parts[1:]
    if rest and rest[0] in ("unknown", "pc", "none"):
        rest = rest[1:]
    if rest != ["linux", "gnu"]:
        raise TargetError(f"unsupported target {target!r}: only Linux with the GNU C library is supported",
                          "use aarch64-linux-gnu")
    return CANONICAL_TRIPLE


def resolve_features(cpu: str | None, features: str | None) -> tuple[str, str]:
    """(cpu, LLVM feature string): NEON on, SVE off unless the user turns it on; syntax checked here,
    names checked by LLVM itself in the worker."""
    cpu = (cpu or "generic").strip()
    if not re.fullmatch(r"[a-z0-9][a-z0-9.\-]*", cpu):
        raise TargetError(f"malformed CPU name {cpu!r}", "e.g. cortex-a53, cortex-a76, neoverse-n1")
    user: list[str] = []
    for item in (features or "").split(","):
        item = item.strip()
        if not item:
            continue
        if not re.fullmatch(r"[+-][a-z0-9][a-z0-9.\-]*", item):
            raise TargetError(f"malformed feature {item!r} in {features!r}",
                              "features look like +neon,+dotprod (a + or - then the LLVM feature name)")
        user.append(item)
    if "-neon" in user:
        raise TargetError("features turn NEON off, but cnnjit's aarch64 kernels are NEON code",
                          "remove -neon")
    named = {f[1:] for f in user}
    out = list(BASE_FEATURES) + [f for f in PINNED_OFF if f[1:] not in named] + user
    return cpu, ",".join(dict.fromkeys(out))


def find_tool(name: str) -> str:
    """The path of a cross tool, or a ``TargetError`` naming the Debian package that provides it."""
    path = shutil.which(name)
    if path is None:
        pkg = _PACKAGES.get(name, name)
        raise TargetError(f"{name} not found on PATH (Debian package {pkg.split(' ')[0]})",
                          f"install it: apt-get install {pkg}", kind="tool")
    return path


def c_identifier(text: str, default: str = "model") -> str:
    s = re.sub(r"[^A-Za-z0-9_]", "_", text or "")[:40].strip("_") or default
    return ("m_" + s) if s[0].isdigit() else s


# =========================================================================================================
# the artifact
# =========================================================================================================
@dataclass(frozen=True)
class TensorInfo:
    name: str  # sanitised model name (comments only)
    dtype: np.dtype
    shape: tuple[int, ...]

    @property
    def nbytes(self) -> int:
        return int(np.prod(self.shape, dtype=np.int64)) * self.dtype.itemsize if self.shape else self.dtype.itemsize

    @property
    def ctype(self) -> str:
        return {"float32": "float", "float64": "double", "int64": "int64_t", "int32": "int32_t",
                "int16": "int16_t", "int8": "int8_t", "uint8": "uint8_t", "bool": "uint8_t",
                "uint16": "uint16_t", "float16": "uint16_t"}.get(self.dtype.name, "uint8_t")


@dataclass
class TargetArtifact:
    """A model compiled for aarch64: the object (weights inside), its header, assembly and checks."""

    name: str
    triple: str
    cpu: str
    features: str
    object: bytes
    asm: str
    scratch_bytes: int
    inputs: list[TensorInfo]
    outputs: list[TensorInfo]
    weight_bytes: int
    kernels: dict[str, str]  # symbol -> kernel name (k0...)
    kernel_notes: dict[str, list[str]] = field(default_factory=dict)  # kernel name -> schedule notes
    llvm_ir: str = ""
    checks: dict[str, Any] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)  # what the compile decided for the user (a batch of 1)

    # -- texts ---------------------------------------------------------------------------------------
    @property
    def header(self) -> str:
        up = self.name.upper()
        ins = [f"const {t.ctype} *in{i}" for i, t in enumerate(self.inputs)]
        outs = [f"{t.ctype} *out{i}" for i, t in enumerate(self.outputs)]
        lines = [
            f"/* {self.name}.h - generated by cnnjit for {self.triple} (cpu {self.cpu}, features {self.features}).",
            " * The entry point allocates nothing and needs only libc and libm; weights are inside the object.",
            f" * Link: aarch64-linux-gnu-gcc main.c {self.name}.o -lm   (or -L. -l{self.name})  */",
            f"#ifndef {up}_H", f"#define {up}_H", "", "#include <stddef.h>", "#include <stdint.h>", "",
            "#ifdef __cplusplus", 'extern "C" {', "#endif", "",
            f"/* bytes of scratch memory {self.name}_run needs (caller-provided, reusable across calls, "
            "not shared between concurrent calls) */",
            f"#define {up}_SCRATCH_BYTES {self.scratch_bytes}u",
            f"#define {up}_SCRATCH_ALIGN 64",
            f"#define {up}_NUM_INPUTS {len(self.inputs)}",
            f"#define {up}_NUM_OUTPUTS {len(self.outputs)}",
        ]
        for kind, ts in (("INPUT", self.inputs), ("OUTPUT", self.outputs)):
            for i, t in enumerate(ts):
                dims = "x".join(map(str, t.shape)) or "scalar"
                lines.append(f"#define {up}_{kind}{i}_BYTES {t.nbytes}u  /* {t.dtype.name}[{dims}] {t.name} */")
        lines += [
            "", "/* status codes */", f"#define {up}_OK 0", f"#define {up}_ERR_KERNEL 1",
            f"#define {up}_ERR_ARGUMENT 2  /* a NULL pointer */", "",
            "/* Run the model: inputs and outputs are dense row-major arrays; scratch holds at least",
            f"   {up}_SCRATCH_BYTES bytes. Returns {up}_OK (0) on success. */",
            f"int {self.name}_run({', '.join(ins + outs + ['void *scratch'])});", "",
            "#ifdef __cplusplus", "}", "#endif", f"#endif /* {up}_H */", ""]
        return "\n".join(lines)

    def main_c(self) -> str:
        """A self-contained test and benchmark program for this model (see benchmarks/arm/)."""
        return harness_source(self)

    def readme(self) -> str:
        n, qcpu = self.name, QEMU_CPU.get(self.cpu, "max")
        return "\n".join([
            f"# {n} for {self.triple}", "",
            f"Compiled by cnnjit for `{self.triple}`, cpu `{self.cpu}`, features `{self.features}`.", "",
            f"- `{n}.o`: the model (code and {self.weight_bytes} bytes of weights), position independent",
            f"- `lib{n}.so`: the same as a shared library", f"- `{n}.h`: the C entry point `{n}_run`",
            f"- `{n}_main.c`: a test/benchmark program", "",
            f"Scratch memory: {self.scratch_bytes} bytes (`{n.upper()}_SCRATCH_BYTES`), caller-provided.", "",
            "Link statically into a program:", "", "```",
            f"aarch64-linux-gnu-gcc -O2 -static -o {n}_main {n}_main.c {n}.o -lm", "```", "",
            "or against the shared library (found at run time through `LD_LIBRARY_PATH`, or link with "
            "`-Wl,-rpath,'$ORIGIN'`):", "", "```",
            f"aarch64-linux-gnu-gcc -O2 -o {n}_dyn {n}_main.c -L. -l{n} -lm",
            f"LD_LIBRARY_PATH=. ./{n}_dyn        # under qemu: qemu-aarch64 -L /usr/aarch64-linux-gnu "
            f"-E LD_LIBRARY_PATH=. ./{n}_dyn", "```", "",
            "Run (on the board, or under qemu with the matching CPU model):", "", "```",
            f"qemu-aarch64 -cpu {qcpu} ./{n}_main --bench 100"
            + "        # random inputs, prints the time per inference",
            f"qemu-aarch64 -cpu {qcpu} ./{n}_main        # seeded inputs (floats random, integers 0), prints "
            "every output (up to 64 values)",
            f"qemu-aarch64 -cpu {qcpu} ./{n}_main " + " ".join(f"in{i}.npy" for i in range(len(self.inputs)))
            + " -o " + " ".join(f"out{i}.npy" for i in range(len(self.outputs))), "```", "",
            "Inputs, in order: " + "; ".join(f"in{i}: {t.dtype.name} {list(t.shape)}" for i, t in
                                             enumerate(self.inputs)) + ".",
            "Each is a `.npy` file (`numpy.save`; its dtype, C order and element count must match) or a raw file of "
            "exactly the input's bytes (little-endian, row-major); anything else is refused (exit code 2). "
            "Outputs named `*.npy` are written as `.npy`, others as raw bytes.", ""])

    # -- inspection ----------------------------------------------------------------------------------
    def kernel_asm(self, symbol: str | None = None) -> dict[str, str]:
        """The assembly of each kernel function (symbol -> text), or of one."""
        out: dict[str, str] = {}
        for sym in self.kernels:
            m = re.search(rf"^{re.escape(sym)}:\n(.*?)^\.Lfunc_end", self.asm, re.S | re.M)
            if m:
                out[sym] = m.group(1)
        return {symbol: out[symbol]} if symbol else out

    def conv_kernels(self) -> list[str]:
        """Symbols of the kernels that compute convolutions (by their schedule notes)."""
        return [s for s, k in self.kernels.items() if any(n.startswith("Conv") for n in self.kernel_notes.get(k, []))]

    def save(self, folder: str | os.PathLike, shared: bool = True) -> dict[str, Path]:
        """Write ``<name>.o``, ``<name>.h``, ``<name>_main.c``, ``README.md`` and (``shared``) ``lib<name>.so``
        (linked with aarch64-linux-gnu-gcc). Returns the paths by kind."""
        d = Path(folder)
        d.mkdir(parents=True, exist_ok=True)
        paths = {"object": d / f"{self.name}.o", "header": d / f"{self.name}.h",
                 "main": d / f"{self.name}_main.c", "readme": d / "README.md"}
        paths["object"].write_bytes(self.object)
        paths["header"].write_text(self.header)
        paths["main"].write_text(self.main_c())
        paths["readme"].write_text(self.readme())
        if shared:
            so = d / f"lib{self.name}.so"
            run_tool([find_tool("aarch64-linux-gnu-gcc"), "-shared", "-o", str(so), str(paths["object"]), "-lm"],
                     "linking the shared library")
            paths["shared"] = so
        return paths

    def summary(self) -> dict[str, Any]:
        return {"name": self.name, "triple": self.triple, "cpu": self.cpu, "features": self.features,
                "object_bytes": len(self.object), "weight_bytes": self.weight_bytes,
                "scratch_bytes": self.scratch_bytes, "kernels": len(self.kernels), "checks": self.checks,
                "notes": self.notes}

    def __repr__(self) -> str:
        return (f"<TargetArtifact {self.name} {self.triple} cpu={self.cpu} object={len(self.object)} B "
                f"scratch={self.scratch_bytes} B>")


def run_tool(cmd: list[str], what: str, timeout: float = 300, **kw: Any) -> subprocess.CompletedProcess:
    try:
        r = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, **kw)
    except subprocess.TimeoutExpired:
        raise TargetError(f"{what}: {Path(cmd[0]).name} timed out after {timeout:.0f} s", kind="tool") from None
    if r.returncode != 0:
        msg = (r.stderr or r.stdout).strip().splitlines()
        raise TargetError(f"{what} failed ({Path(cmd[0]).name} exit {r.returncode}): {msg[-1] if msg else ''}",
                          kind="tool")
    return r


# =========================================================================================================
# ELF checks (no binutils needed)
# =========================================================================================================
EM_AARCH64 = 183


def elf_info(obj: bytes) -> dict[str, Any]:
    """Machine, and defined / undefined global symbols of a little-endian relocatable ELF object (64-bit, or
    32-bit as for Cortex-M)."""
    if obj[:4] != b"\x7fELF" or obj[4] not in (1, 2) or obj[5] != 1:
        raise TargetError("the emitted object is not a little-endian ELF file")
    wide = obj[4] == 2
    machine = struct.unpack_from("<H", obj, 18)[0]
    shoff = struct.unpack_from("<Q" if wide else "<I", obj, 40 if wide else 32)[0]
    shentsize, shnum = struct.unpack_from("<HH", obj, 58 if wide else 46)
    sections = [struct.unpack_from("<IIQQQQIIQQ" if wide else "<IIIIIIIIII", obj, shoff + i * shentsize)
                for i in range(shnum)]
    undefined, defined = set(), set()
    for sh in sections:
        if sh[1] != 2:  # SHT_SYMTAB
            continue
        strtab = sections[sh[6]]
        for off in range(sh[4], sh[4] + sh[5], sh[9]):
            if wide:
                st_name, st_info, _, st_shndx = struct.unpack_from("<IBBH", obj, off)
            else:  # Elf32_Sym: name, value, size, info, other, shndx
                st_name, _, _, st_info, _, st_shndx = struct.unpack_from("<IIIBBH", obj, off)
            if st_name == 0 or (st_info >> 4) == 0:  # unnamed or local
                continue
            end = obj.index(b"\0", strtab[4] + st_name)
            nm = obj[strtab[4] + st_name:end].decode()
            (undefined if st_shndx == 0 else defined).add(nm)
    return {"machine": machine, "undefined": sorted(undefined), "defined": sorted(defined)}


def check_artifact(art: TargetArtifact, x86_intrinsics: bool, *, machine: int = EM_AARCH64, arch: str = "aarch64",
                   triple: str | None = CANONICAL_TRIPLE, allowed: Callable[[str], bool] = LIBC_LIBM.__contains__,
                   allowed_text: str = "libc/libm") -> dict[str, Any]:
    """The object's ELF machine, triple (``None``: any), undefined symbols (``allowed``) and entry, checked;
    a ``TargetError`` (kind "bug") listing every problem, else the checks as a dict."""
    info = elf_info(art.object)
    bad_undef = [s for s in info["undefined"] if not allowed(s)]
    checks = {"elf_machine": arch if info["machine"] == machine else str(info["machine"]),
              "triple": art.triple, "x86_intrinsics": x86_intrinsics, "undefined": info["undefined"],
              "exported": info["defined"]}
    problems = []
    if info["machine"] != machine:
        problems.append(f"ELF machine {info['machine']} is not {arch} ({machine})")
    if triple is not None and art.triple != triple:
        problems.append(f"module triple {art.triple!r}")
    if x86_intrinsics:
        problems.append("the IR calls llvm.x86.* intrinsics")
    if bad_undef:
        problems.append(f"undefined symbols beyond {allowed_text}: {', '.join(bad_undef[:8])}")
    if f"{art.name}_run" not in info["defined"]:
        problems.append(f"{art.name}_run is not exported")
    if problems:
        raise TargetError(f"the {arch} object failed its checks: " + "; ".join(problems),
                          "a cnnjit bug; please report it with the model", kind="bug")
    return checks


# =========================================================================================================
# compile
# =========================================================================================================
def _schedule_calls(calls: list[Call], literal: bool = False) -> list[tuple[str, list[tuple[str, Any]]]]:
    """The schedule's calls as (kernel name, [(kind, value)]) with kind buf / i / f, for the worker; with
    ``literal``, the integers written as literals are kind L (the kernel is specialised on them)."""
    def arg(a: Any) -> tuple[str, Any]:
        if isinstance(a, Buf):
            return ("buf", a.name)
        if isinstance(a, Int):
            return ("L" if literal and a.form == "lit" else "i", int(a.value))
        return ("f", float(a.value))

    return [(c.kernel, [arg(a) for a in c.args]) for c in calls]


def schedule_job(prog: Program, literal: bool = False) -> dict[str, Any]:
    """The worker's view of a program: kernel sources, calls, buffer layout (every arena in one scratch
    block, 64-byte aligned, one after the other; constants as data), inputs and outputs as (buffer, element
    offset, bytes, item size); plus ``scratch_bytes`` and ``weight_bytes``."""
    buffers: dict[str, dict[str, Any]] = {}
    off = 0
    for b in sorted(prog.arena_sizes):
        dt = np.dtype(prog.arena_dtypes[b])
        buffers[b] = {"kind": "a", "dtype": dt.str, "scratch_offset": off}
        off += -(-max(prog.arena_sizes[b], 1) * dt.itemsize // 64) * 64
    weights = 0
    for b, arr in prog.const_buffers.items():
        buffers[b] = {"kind": "c", "dtype": arr.dtype.str, "data": np.ascontiguousarray(arr).tobytes()}
        weights += arr.nbytes
    io = [[(x.buffer, x.offset, x.size * np.dtype(x.dtype).itemsize, np.dtype(x.dtype).itemsize) for x in bs]
          for bs in (prog.inputs, prog.outputs)]
    return {"kernels": dict(prog.kernel_sources), "calls": _schedule_calls(prog.calls, literal),
            "buffers": buffers, "inputs": io[0], "outputs": io[1], "scratch_bytes": max(off, 64),
            "weight_bytes": weights}


def _check_numba() -> None:
    ok, version = numba_supported()
    if not ok:
        raise TargetError(f"the aarch64 target supports numba {', '.join(SUPPORTED_NUMBA)}.x only, found {version}",
                          f"pip install 'numba=={SUPPORTED_NUMBA[-1]}.*'")


def _default_name(model: Any) -> str:
    if isinstance(model, (str, os.PathLike)):
        return c_identifier(Path(model).name.split(".")[0])
    graph = getattr(getattr(model, "graph", None), "name", "")
    return c_identifier(graph or "model")


def compile_for_target(model: Any, *, target: str, cpu: str | None = None, features: str | None = None,
                       name: str | None = None, fp_contract: bool = True, keep_ir: bool = False,
                       **options: Any) -> TargetArtifact:
    """Compile ``model`` for ``target`` (an aarch64 Linux triple); ``options`` are ``cnnjit.compile``'s."""
    triple = parse_target(target)
    cpu, feats = resolve_features(cpu, features)
    _check_numba()
    check_target_machine(triple, cpu, feats)  # fail fast, before the model is compiled
    precision = options.pop("precision", "fp32")
    if precision == "bf16" and "+bf16" not in feats.split(","):
        raise TargetError(f"precision='bf16' needs the aarch64 feature bf16 (BFDOT), not in {feats!r}",
                          "add features='+bf16' (a CPU with FEAT_BF16), or precision='bf16-emulated'")
    gen = Target("aarch64", NEON_WIDTH, NEON_WIDTH, triple=triple, cpu=cpu, features=feats,
                 vector_registers=NEON_REGISTERS, precision="fp32" if precision == "fp32" else "bf16")
    art, res = lower_for_target(model, TargetArtifact, gen, name, fp_contract=fp_contract, keep_ir=keep_ir,
                                options=options)
    art.checks = check_artifact(art, res["x86_intrinsics"])
    return art


def lower_for_target(model: Any, cls: type, gen: Target, name: str | None, *, fp_contract: bool, keep_ir: bool,
                     options: dict[str, Any], machine: dict[str, str] | None = None,
                     check_scratch: Callable[[int], None] | None = None) -> tuple[Any, dict]:
    """The model imported, optimised and scheduled for ``gen`` (the kernel generators' ``Target``), its
    kernels lowered by the worker for ``gen``'s triple/CPU/features (``machine``: target machine options such
    as ``reloc``): an artifact of class ``cls`` (unchecked) and the worker's result. ``check_scratch`` sees
    the scratch size before the (slow) lowering and may refuse it."""
    name = c_identifier(name) if name else _default_name(model)
    proto = load_model(model)
    check_supported(proto)
    by_value = value_inputs(proto)
    if by_value:
        raise InputError(f"input(s) {sorted(by_value)} set shapes or attributes of the model: an object file "
                         "cannot take them at run time")
    # an object file has static shapes: symbolic dims (a batch size, usually) become 1
    shapes, shape_notes = resolve_shapes(proto, options.pop("input_shapes", None))
    # entry="lazy": the schedule is never run here, and its numba form compiles lazily, so no kernel is
    # compiled for the host on the way
    opts = CompileOptions(**{**options, "entry": "lazy"})
    prog = specialize(proto, shapes, opts, target=gen).program

    lay = schedule_job(prog)
    notes: dict[str, list[str]] = {}
    for c in prog.calls:
        if c.note and c.kernel in prog.kernel_sources:
            notes.setdefault(c.kernel, []).append(c.note)
    scratch, weights = lay.pop("scratch_bytes"), lay.pop("weight_bytes")
    if check_scratch is not None:
        check_scratch(scratch)
    job = {"name": name, "triple": gen.triple, "cpu": gen.cpu, "features": gen.features, "contract": fp_contract,
           "header": HEADER, **lay, "keep_ir": keep_ir, **({"machine": machine} if machine else {})}
    res = run_worker(job, {c.kernel: (c.op, c.variant) for c in prog.calls})
    art = cls(
        name=name, triple=res["triple"], cpu=gen.cpu, features=gen.features, object=res["object"], asm=res["asm"],
        scratch_bytes=scratch,
        inputs=[TensorInfo(c_identifier(x.name, "input"), np.dtype(x.dtype), tuple(x.shape)) for x in prog.inputs],
        outputs=[TensorInfo(c_identifier(x.name, "output"), np.dtype(x.dtype), tuple(x.shape)) for x in prog.outputs],
        weight_bytes=weights, kernels=res["kernel_symbols"], kernel_notes=notes, llvm_ir=res["ir"],
        notes=list(shape_notes))
    return art, res


def check_target_machine(triple: str, cpu: str, features: str) -> None:
    """LLVM accepts the CPU and every feature (it would otherwise ignore them with a warning)."""
    try:
        make_target_machine(triple, cpu, features)
    except TargetSpecError as e:
        raise TargetError(f"cannot compile for {triple} (cpu {cpu!r}, features {features!r}): {e}",
                          "check the CPU and feature names, e.g. cpu='cortex-a76', features='+dotprod'") from None


def run_worker(job: dict, labels: dict[str, tuple[str, str]] | None = None, timeout: float = 1800) -> dict:
    """Run the numba lowering in a fresh Python process (numba's codegen state is per process); its
    per-kernel progress lines go to this process's ``KernelEvent`` observers as they come, with the
    (op, variant) of each kernel from ``labels``."""
    with tempfile.TemporaryDirectory(prefix="cnnjit-aarch64-") as tmp:
        jp, op = os.path.join(tmp, "job.pkl"), os.path.join(tmp, "out.pkl")
        with open(jp, "wb") as f:
            pickle.dump(job, f, protocol=pickle.HIGHEST_PROTOCOL)
        proc = subprocess.Popen([sys.executable, "-m", "cnnjit.compiler.target.aarch64_worker", jp, op],
                                stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        timed_out = threading.Event()
        watchdog = threading.Timer(timeout, lambda: (timed_out.set(), proc.kill()))
        watchdog.start()
        err: list[str] = []
        try:
            assert proc.stderr is not None
            for line in proc.stderr:
                if line.startswith(PROGRESS):
                    ev = json.loads(line[len(PROGRESS):])
                    ops, variant = (labels or {}).get(ev["name"], ("", ""))
                    notify(KernelEvent(**ev, ops=ops, variant=variant))
                else:
                    err.append(line)
            proc.wait()
        finally:
            watchdog.cancel()
            if proc.poll() is None:  # an exception here (Ctrl-C): the worker ends too
                proc.kill()
                proc.wait()
            kernels_finished()
        if timed_out.is_set():
            raise TargetError(f"compiling for {job['triple']} timed out after {timeout:.0f} s")
        if proc.returncode != 0 or not os.path.exists(op):
            tail = "".join(err).strip().splitlines()
            e = CompileError(f"the aarch64 compiler worker failed (exit {proc.returncode}): "
                             f"{tail[-1] if tail else 'no output'}")
            e.worker_traceback = "".join(err)  # what it printed (``cnnjit --debug`` shows it)
            raise e
        with open(op, "rb") as f:
            res = pickle.load(f)  # noqa: S301 - written by our own worker
    if "error" in res:
        if res["kind"] == "target":
            raise TargetError(f"cannot compile for {job['triple']} (cpu {job['cpu']!r}, features "
                              f"{job['features']!r}): {res['error']}",
                              "check the CPU and feature names, e.g. cpu='cortex-a76', features='+dotprod'")
        e = CompileError(f"compiling for {job['triple']} failed: {res['error']}")
        e.worker_traceback = res.get("traceback", "")  # the worker's own (``cnnjit --debug`` shows it)
        raise e
    return res
