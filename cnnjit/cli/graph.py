"""``cnnjit graph``: the graph before fusion (fused groups as clusters) beside the graph after it, as DOT
rendered by Graphviz."""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
from pathlib import Path
from typing import Any

from .common import EXIT_OK, CliError, UsageError, check_model_path, trace_model
from .flags import compile_options, model_argument, output_option
from .output import clean, emit_json, note

HELP = "draw the graph before and after fusion (Graphviz)"
EPILOG = """example:
  cnnjit graph model.onnx -o graph.svg
  cnnjit graph model.onnx -o graph.png

Draws the graph before fusion (fused groups as clusters) beside the graph after it. Renders with
Graphviz's 'dot' (apt-get install graphviz; CNNJIT_DOT overrides its path); without it, writes the .dot
file and says so."""

FORMATS = ("svg", "png", "pdf", "dot")


def parents() -> list[argparse.ArgumentParser]:
    return [model_argument(), compile_options(),
            output_option("FILE", "output picture (.svg, .png, .pdf, .dot)", required=True)]


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--format", choices=FORMATS, help="picture format (default: from the -o extension)")


def main(args: argparse.Namespace) -> int:
    from cnnjit.inspect_model import to_dot

    check_model_path(args.model)
    out = Path(args.output)
    fmt = (args.format or out.suffix.lstrip(".").lower() or "svg")
    if fmt not in FORMATS:
        raise UsageError(f"cannot write {fmt!r} pictures", "use an -o file ending in .svg, .png, .pdf or .dot "
                         "(or --format)")
    if out.parent and not out.parent.is_dir():
        raise UsageError(f"folder {str(out.parent)!r} does not exist", "create it first, or choose another -o path")
    t = trace_model(args)
    dot_text = to_dot(t)
    dot_path = out if fmt == "dot" else out.with_suffix(".dot")
    try:
        dot_path.write_text(dot_text, encoding="utf-8")
    except OSError as e:
        raise CliError(f"cannot write {str(dot_path)!r}: {e.strerror or e}") from None
    doc: dict[str, Any] = {"model": args.model, "dot": str(dot_path), "output": None, "format": fmt,
                           "rendered": False, "nodes_before": len(t.before.nodes), "nodes_after": len(t.graph.nodes),
                           "fused_groups": sum(1 for g in t.groups.values() if len(g) > 1)}
    msg = ""
    if fmt != "dot":
        dot_bin = os.environ.get("CNNJIT_DOT") or shutil.which("dot")
        if not dot_bin or not Path(dot_bin).is_file():
            msg = (f"Graphviz 'dot' not found: wrote {dot_path} only; render it with: dot -T{fmt} {dot_path} -o {out} "
                   "(install: apt-get install graphviz)")
        else:
            r = subprocess.run([dot_bin, f"-T{fmt}", str(dot_path), "-o", str(out)], capture_output=True, text=True,
                               timeout=120)
            if r.returncode != 0:
                first = (r.stderr.strip().splitlines() or ["no message"])[0]
                raise CliError(f"dot failed (exit {r.returncode}): {clean(first, 200)}",
                               f"the DOT text is in {dot_path}")
            doc.update(output=str(out), rendered=True)
    if args.json:
        doc["message"] = msg or None
        emit_json(doc)
    elif msg:
        note(msg)
    else:
        print(f"wrote {out if fmt != 'dot' else dot_path}: {doc['nodes_before']} nodes before fusion, "
              f"{doc['nodes_after']} after, {doc['fused_groups']} fused groups"
              + (f" (DOT source: {dot_path})" if fmt != "dot" else ""))
    return EXIT_OK
