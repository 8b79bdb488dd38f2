"""``cnnjit cache``: show (``info``) or empty (``clear``) the on-disk kernel cache."""

from __future__ import annotations

import argparse

from cnnjit import cache

from .common import EXIT_ERROR, EXIT_OK
from .output import emit_json, nbytes, note, print_table

HELP = "show or clear the on-disk kernel cache"
EPILOG = """example:
  cnnjit cache info
  cnnjit cache info --json
  cnnjit cache clear

The on-disk kernel cache (CNNJIT_CACHE_DIR, default ~/.cache/cnnjit) is shared by all models and
processes; 'info' shows its folder for this host and versions, kernels, size and older-version folders;
'clear' deletes every cnnjit kernel folder in it (the next compile starts cold)."""


def parents() -> list[argparse.ArgumentParser]:
    return []


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("action", nargs="?", choices=["info", "clear"], default="info", help="info (default) or clear")


def main(args: argparse.Namespace) -> int:
    if args.action == "clear":
        res = cache.clear()
        if args.json:
            emit_json(res)
        else:
            print(f"removed {len(res['removed'])} cache folder(s) under {res['root']}, "
                  f"{nbytes(res['bytes_freed'])} freed")
            for e in res["errors"]:
                note(f"not removed: {e}")
        return EXIT_OK if not res["errors"] else EXIT_ERROR
    res = cache.info()
    if args.json:
        emit_json(res)
        return EXIT_OK
    proc = res["process"]
    rows = [("location", res["dir"] + ("" if res["exists"] else " (not created yet)")),
            ("kernels", str(res["kernels"])),
            ("compiled kernels", f"{res['compiled_kernels']} ({res['compiled_signatures']} signatures)"),
            ("size", nbytes(res["bytes"])),
            ("other versions", f"{len(res['stale_folders'])} folder(s), {nbytes(res['stale_bytes'])}"),
            ("this process", f"{proc['hits']} hits, {proc['misses']} misses")]
    print_table("cnnjit kernel cache", ["", "value"], rows)
    return EXIT_OK
