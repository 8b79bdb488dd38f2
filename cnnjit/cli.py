"""The ``cnnjit`` command line (a stub for now: the CLI has its own issue)."""

from __future__ import annotations

import argparse
import sys


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``cnnjit`` console script."""
    from . import __version__

    parser = argparse.ArgumentParser(prog="cnnjit", description="cnnjit: a JIT compiler for tiny CNNs.")
    parser.add_argument("--version", action="store_true", help="print the version and exit")
    parser.parse_args(argv)
    print(f"cnnjit {__version__}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
