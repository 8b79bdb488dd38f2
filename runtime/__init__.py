"""The runtime: compiled callables, their memory arenas and per-shape caches. It never imports the frontend."""

from .model import CompiledModel, InputSignature, Specialization
from .program import IOBinding, Program

__all__ = ["CompiledModel", "InputSignature", "Specialization", "IOBinding", "Program"]
