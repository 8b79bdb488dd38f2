"""Ahead-of-time compilation for other machines (LLVM triples): 64-bit ARM Linux (``aarch64``) and Cortex-M
microcontrollers (``cortexm``)."""

from typing import Any

from .aarch64 import TargetArtifact, TargetError, parse_target, resolve_features
from .aarch64 import compile_for_target as compile_for_aarch64
from .cortexm import CortexMArtifact, compile_for_cortex_m, is_cortex_m


def compile_for_target(model: Any, *, target: str, **kw: Any) -> TargetArtifact:
    """Compile ``model`` ahead of time for ``target``: a Cortex-M triple (``thumbv7em-none-eabihf``) or
    aarch64 Linux; the keywords are those of ``compile_for_aarch64`` / ``compile_for_cortex_m``."""
    if is_cortex_m(target):
        return compile_for_cortex_m(model, target=target, **kw)
    if kw.get("ram") is not None:
        raise TargetError("ram= (an arena budget) applies to Cortex-M targets", "drop --ram")
    kw.pop("ram", None)
    return compile_for_aarch64(model, target=target, **kw)


__all__ = ["TargetArtifact", "CortexMArtifact", "TargetError", "compile_for_target", "compile_for_aarch64",
           "compile_for_cortex_m", "parse_target", "resolve_features"]
