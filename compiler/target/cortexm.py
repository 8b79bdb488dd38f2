"""Ahead-of-time compilation for Cortex-M microcontrollers (bare metal, hard-float EABI).

    art = cnnjit.compile("kws_int8.onnx", target="thumbv7em-none-eabihf", cpu="cortex-m4")
    art.save("build/")   # kws.o, kws.h, kws_main.c, startup.c, link.ld, README.md

The same pipeline as the aarch64 target (``aarch64.lower_for_target``: import, passes and schedule on the
host, kernels lowered by numba in the worker for the target triple and CPU): one relocatable object with the
weights in read-only data (flash) and a C entry ``int <name>_run(in0, ..., out0, ..., void *arena)`` that
uses only the caller's arena (its size is ``<NAME>_ARENA_BYTES`` in the header: RAM), allocates nothing and
keeps no state between calls (reentrant, one arena per concurrent call). Its undefined symbols are the ARM
EABI run-time helpers (``__aeabi_*``: 64-bit integer and double arithmetic), ``memcpy``/``memset`` and
``rintf``/``fminf``/``fmaxf`` (newlib's libm; the requantisation's round-half-to-even).

Verified in ``qemu-system-arm -M mps2-an386`` (Cortex-M4), ``-M mps2-an500`` (Cortex-M7, FPv5; the same
memory map) and ``-M mps3-an547`` (Cortex-M55: ARMv8.1-M with MVE, whose 128-bit integer and float vectors
the kernels' 4-lane values use; code and weights in its 512 KiB ITCM, RAM in its DTCM): ``<name>_main.c`` +
``startup.c`` + ``link.ld`` are a bare-metal program (vector table, reset handler, semihosting file I/O) that reads
``in<i>.bin``, runs the model once, writes ``out<i>.bin`` and prints the arena size and the stack high-water
mark (the stack is painted before the call). Needs the Debian packages ``gcc-arm-none-eabi`` (link) and
``qemu-system-arm``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cnnjit.compiler.codegen.kernel import Target

from .aarch64 import (
    TargetArtifact,
    TargetError,
    _check_numba,
    check_artifact,
    check_target_machine,
    find_tool,
    lower_for_target,
    run_tool,
)
from .harness_m import link_script, main_source, startup_source

#: user triple spellings -> LLVM triple (its environment ``eabihf``: floats in VFP registers)
TRIPLES = {"thumbv7em-none-eabihf": "thumbv7em-none-unknown-eabihf",
           "thumbv8.1m.main-none-eabihf": "thumbv8.1m.main-none-unknown-eabihf"}
#: cpu -> (triple, gcc -mfpu, qemu machine)
CPUS = {"cortex-m4": ("thumbv7em-none-eabihf", "fpv4-sp-d16", "mps2-an386"),
        "cortex-m7": ("thumbv7em-none-eabihf", "fpv5-d16", "mps2-an500"),
        "cortex-m55": ("thumbv8.1m.main-none-eabihf", "auto", "mps3-an547")}
#: qemu machine -> (flash at 0x0, RAM at 0x20000000) for the test program's link.ld
BOARD_MEMORY = {"mps2-an386": ("4M", "4M"), "mps2-an500": ("4M", "4M"), "mps3-an547": ("512K", "512K")}
EM_ARM = 40
#: what the object may leave undefined: EABI helpers, memory functions and the float functions of libm
ALLOWED = re.compile(r"__aeabi_\w+|memcpy|memmove|memset|rintf|fminf|fmaxf|expf|logf|tanhf|sqrtf|floorf|ceilf")
#: vector registers for the kernels' register tiles: s0-s31 hold 8 4-lane float values (no SIMD unit on
#: ARMv7E-M: LLVM splits every 4-lane value into scalars)
M_REGISTERS = 8
_PACKAGES = {"arm-none-eabi-gcc": "gcc-arm-none-eabi", "qemu-system-arm": "qemu-system-arm"}


def is_cortex_m(target: str) -> bool:
    """Whether ``target`` names a Cortex-M triple (``thumbv7em-...``, ``thumbv8.1m.main-...``)."""
    return isinstance(target, str) and target.strip().lower().startswith(("thumbv", "armv7em", "armv8.1m"))


def parse_m_target(target: str, cpu: str | None) -> tuple[str, str]:
    """(LLVM triple, cpu) for a Cortex-M target string and CPU, or a ``TargetError`` naming what is supported."""
    t = target.strip().lower()
    if t not in TRIPLES:
        raise TargetError(f"unsupported Cortex-M target {target!r}", "supported: " + ", ".join(TRIPLES))
    cpu = (cpu or "").strip().lower()
    if not cpu:
        cpu = next(c for c, v in CPUS.items() if v[0] == t)
    if cpu not in CPUS:
        raise TargetError(f"unknown Cortex-M CPU {cpu!r} for {target!r}", "supported: " + ", ".join(CPUS))
    if CPUS[cpu][0] != t:
        raise TargetError(f"{cpu} is not a {t} CPU", f"use --target {CPUS[cpu][0]}")
    return TRIPLES[t], cpu


@dataclass(repr=False)
class CortexMArtifact(TargetArtifact):
    """A model compiled for a Cortex-M: the object (weights in flash), its header and a bare-metal harness."""

    @property
    def header(self) -> str:
        up = self.name.upper()
        text = super().header.replace("needs only libc and libm", "needs only the EABI helpers, memcpy/memset "
                                      "and rintf/fminf/fmaxf")
        text = text.replace(f"#define {up}_SCRATCH_BYTES",
                            f"/* the arena: RAM the caller provides (static, or on its stack) */\n"
                            f"#define {up}_ARENA_BYTES {self.scratch_bytes}u\n#define {up}_SCRATCH_BYTES")
        text = re.sub(r" \* Link: .*\*/", f" * Link: arm-none-eabi-gcc {' '.join(self.gcc_flags)} main.c {self.name}.o "
                      "-lm  */", text)
        return text.replace("void *scratch);", "void *arena);")

    @property
    def gcc_flags(self) -> list[str]:
        return [f"-mcpu={self.cpu}", "-mthumb", "-mfloat-abi=hard", f"-mfpu={CPUS[self.cpu][1]}"]

    def main_c(self) -> str:
        return main_source(self)

    def link_command(self, folder: str = ".") -> list[str]:
        """The arm-none-eabi-gcc line that links the bare-metal test program ``<name>.elf``."""
        d, n = Path(folder), self.name
        return ["arm-none-eabi-gcc", *self.gcc_flags, "-O2", "-ffreestanding", "-nostartfiles", "--specs=nano.specs",
                "-T", str(d / "link.ld"), "-Wl,--gc-sections", "-o", str(d / f"{n}.elf"), str(d / "startup.c"),
                str(d / f"{n}_main.c"), str(d / f"{n}.o"), "-lm", "-lc", "-lgcc"]

    def qemu_command(self, folder: str = ".") -> list[str]:
        machine = CPUS[self.cpu][2]
        # semihosting output on a stdio chardev: with -nographic it is lost when stdin is not a terminal
        return ["qemu-system-arm", "-M", machine, "-display", "none", "-chardev", "stdio,id=sh0",
                "-semihosting-config", "enable=on,target=native,chardev=sh0",
                "-kernel", str(Path(folder) / f"{self.name}.elf")]

    def readme(self) -> str:
        n = self.name
        return "\n".join([
            f"# {n} for {self.triple} ({self.cpu})", "",
            f"- `{n}.o`: the model: code and {self.weight_bytes} bytes of weights (read-only data: flash)",
            f"- `{n}.h`: the C entry `{n}_run` and `{n.upper()}_ARENA_BYTES` ({self.scratch_bytes}: RAM)",
            f"- `{n}_main.c`, `startup.c`, `link.ld`: a bare-metal test program for qemu's {CPUS[self.cpu][2]}", "",
            "```", " ".join(self.link_command()),
            "cp x.bin in0.bin   # each input's raw little-endian bytes, row-major",
            " ".join(self.qemu_command()) + "   # writes out0.bin ..., prints arena and stack bytes", "```", ""])

    def save(self, folder: Any, shared: bool = False) -> dict[str, Path]:
        """Write the object, header, harness (``<name>_main.c``, ``startup.c``, ``link.ld``) and README."""
        d = Path(folder)
        d.mkdir(parents=True, exist_ok=True)
        paths = {"object": d / f"{self.name}.o", "header": d / f"{self.name}.h", "main": d / f"{self.name}_main.c",
                 "startup": d / "startup.c", "link": d / "link.ld", "readme": d / "README.md"}
        paths["object"].write_bytes(self.object)
        paths["header"].write_text(self.header)
        paths["main"].write_text(self.main_c())
        paths["startup"].write_text(startup_source())
        flash, ram = BOARD_MEMORY[CPUS[self.cpu][2]]
        paths["link"].write_text(link_script(flash=flash, ram=ram))
        paths["readme"].write_text(self.readme())
        return paths

    def link(self, folder: Any) -> Path:
        """Link the bare-metal program ``<name>.elf`` in ``folder`` (after ``save``)."""
        cmd = self.link_command(str(folder))
        cmd[0] = find_m_tool("arm-none-eabi-gcc")
        run_tool(cmd, "linking the Cortex-M test program")
        return Path(folder) / f"{self.name}.elf"


def find_m_tool(name: str) -> str:
    try:
        return find_tool(name)
    except TargetError:
        pkg = _PACKAGES.get(name, name)
        raise TargetError(f"{name} not found on PATH (Debian package {pkg})", f"apt-get install {pkg}",
                          kind="tool") from None


def compile_for_cortex_m(model: Any, *, target: str, cpu: str | None = None, features: str | None = None,
                         name: str | None = None, fp_contract: bool = True, keep_ir: bool = False,
                         ram: int | None = None, **options: Any) -> CortexMArtifact:
    """Compile ``model`` for a Cortex-M (``target`` a thumb triple, ``cpu`` e.g. ``cortex-m4``); ``ram``: an
    arena budget in bytes (a ``TargetError`` when the arena is larger). ``options`` are ``cnnjit.compile``'s."""
    triple, cpu = parse_m_target(target, cpu)
    feats = ",".join(f.strip() for f in (features or "").split(",") if f.strip())
    if feats and not re.fullmatch(r"([+-][a-z0-9][a-z0-9.\-]*,?)+", feats):
        raise TargetError(f"malformed features {features!r}", "features look like +dsp (a + or - then the name)")
    _check_numba()
    check_target_machine(triple, cpu, feats)
    if options.pop("precision", "fp32") != "fp32":
        raise TargetError("Cortex-M targets compute in fp32 only (precision='fp32')", "drop precision=")
    if int(options.get("threads") or 1) != 1:
        raise TargetError("a Cortex-M build is single-threaded", "drop threads=")
    gen = Target("arm", 4, 4, triple=triple, cpu=cpu, features=feats, vector_registers=M_REGISTERS)

    def budget(arena: int) -> None:
        if ram is not None and arena > ram:
            raise TargetError(f"the arena needs {arena} bytes, over the RAM budget of {ram} bytes",
                              "raise --ram, or use a smaller model", kind="usage")

    art, res = lower_for_target(model, CortexMArtifact, gen, name, fp_contract=fp_contract, keep_ir=keep_ir,
                                options=options, machine={"reloc": "static"}, check_scratch=budget)
    art.checks = check_artifact(art, res["x86_intrinsics"], machine=EM_ARM, arch="arm", triple=None,
                                allowed=ALLOWED.fullmatch, allowed_text="the EABI helpers and libm")
    return art
