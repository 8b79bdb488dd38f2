"""Ahead-of-time compilation for other machines (LLVM triples): currently 64-bit ARM Linux."""

from .aarch64 import TargetArtifact, TargetError, compile_for_target, parse_target, resolve_features

__all__ = ["TargetArtifact", "TargetError", "compile_for_target", "parse_target", "resolve_features"]
