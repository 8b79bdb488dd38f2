"""cnnjit's version, in a module of its own that imports nothing: the kernel cache key reads it without
importing the ``cnnjit`` package (which imports the whole compiler)."""

__version__ = "0.1.0"
