"""``cnnjit graph``: the compiled graph as a picture (DOT rendered by Graphviz): after the passes (default),
or before fusion beside it; top to bottom or left to right; blocks collapsed; wrapped to a page-like shape."""

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

HELP = "draw the compiled graph (Graphviz)"
EPILOG = """example:
  cnnjit graph model.onnx -o graph.svg
  cnnjit graph model.onnx -o graph.png --rankdir LR --collapse
  cnnjit graph model.onnx -o graph.pdf --view both

Draws the graph after the passes, one box per fused group (--view both: the graph before fusion, fused
groups as clusters, beside it). Long graphs wrap into columns (rows with --rankdir LR) so the picture keeps
a page-like shape (--wrap N boxes per column; 0: no wrapping). --collapse draws each inverted-residual or
depthwise-separable block (expand 1x1 -> depthwise -> project 1x1, + residual) as one box. The format is
the -o file's extension (--format may only repeat it, or name it for a file without one). Renders with
Graphviz's 'dot' (apt-get install graphviz; CNNJIT_DOT overrides its path); without it, writes the .dot
file and says so."""

FORMATS = ("svg", "png", "pdf", "dot")


def parents() -> list[argparse.ArgumentParser]:
    return [model_argument(), compile_options(),
            output_option("FILE", "output picture (.svg, .png, .pdf, .dot)", required=True)]


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--format", choices=FORMATS,
                   help="picture format (default: the -o extension; must agree with it)")
    p.add_argument("--view", choices=("after", "both"), default="after",
                   help="after: the graph after the passes (default); both: before fusion beside it")
    p.add_argument("--rankdir", choices=("TB", "LR"), default="TB", type=str.upper,
                   help="TB: top to bottom (default); LR: left to right")
    p.add_argument("--collapse", action="store_true",
                   help="draw inverted-residual / depthwise-separable blocks as one box each")
    p.add_argument("--wrap", type=int, metavar="N",
                   help="boxes per column (per row with --rankdir LR) in the after view (default: chosen for a "
                        "page-like shape; 0: never wrap)")
    p.add_argument("--size", metavar="W,H",
                   help="shrink the picture to fit W x H inches (Graphviz size), e.g. 8.3,11.7 for A4")


def picture_format(out: Path, given: str | None) -> str:
    """The format named by ``out``'s extension; ``given`` (``--format``) must agree with it, or name the
    format of a file without an extension."""
    suffix = out.suffix.lstrip(".").lower()
    if given and suffix and suffix != given:
        raise UsageError(f"--format {given} contradicts the file name {out.name!r}",
                         f"name the file '{out.stem}.{given}', or drop --format")
    fmt = given or suffix or "svg"
    if fmt not in FORMATS:
        raise UsageError(f"cannot write {fmt!r} pictures", "use an -o file ending in .svg, .png, .pdf or .dot")
    return fmt


def _size(text: str | None) -> tuple[float, float] | None:
    if text is None:
        return None
    try:
        w, h = (float(x) for x in text.split(","))
    except ValueError:
        raise UsageError(f"--size {text!r} is not W,H in inches", "e.g. --size 8.3,11.7") from None
    if not (0 < w < 1000 and 0 < h < 1000):
        raise UsageError(f"--size {text!r}: width and height must be between 0 and 1000 inches")
    return w, h


def main(args: argparse.Namespace) -> int:
    from cnnjit.inspect_model import to_dot

    check_model_path(args.model)
    out = Path(args.output)
    fmt = picture_format(out, args.format)
    size = _size(args.size)
    if args.wrap is not None and args.wrap < 0:
        raise UsageError(f"--wrap {args.wrap}: must be >= 0 (0: never wrap)")
    if out.parent and not out.parent.is_dir():
        raise UsageError(f"folder {str(out.parent)!r} does not exist", "create it first, or choose another -o path")
    t = trace_model(args)
    dot_text = to_dot(t, view=args.view, rankdir=args.rankdir, collapse=args.collapse, wrap=args.wrap, size=size)
    dot_path = out if fmt == "dot" else out.with_suffix(".dot")
    try:
        dot_path.write_text(dot_text, encoding="utf-8")
    except OSError as e:
        raise CliError(f"cannot write {str(dot_path)!r}: {e.strerror or e}") from None
    doc: dict[str, Any] = {"model": args.model, "dot": str(dot_path), "output": None, "format": fmt,
                           "view": args.view, "rankdir": args.rankdir, "collapse": args.collapse,
                           "rendered": False, "nodes_before": len(t.before.nodes), "nodes_after": len(t.graph.nodes),
                           "fused_groups": sum(1 for g in t.groups.values() if len(g) > 1), "warnings": []}
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
            # e.g. "Warning: ... too large for cairo-renderer bitmaps. Scaling by 0.5 to fit": never silent
            doc["warnings"] = [clean(ln, 200) for ln in r.stderr.splitlines() if ln.strip()][:5]
            doc.update(output=str(out), rendered=True)
    if args.json:
        doc["message"] = msg or None
        emit_json(doc)
        return EXIT_OK
    for w in doc["warnings"]:
        note(f"Graphviz: {w}" + (" (try --collapse, --rankdir LR or an .svg/.pdf file)" if "Scaling" in w else ""))
    if msg:
        note(msg)
    else:
        print(f"wrote {out if fmt != 'dot' else dot_path}: {doc['nodes_before']} nodes before fusion, "
              f"{doc['nodes_after']} after, {doc['fused_groups']} fused groups"
              + (f" (DOT source: {dot_path})" if fmt != "dot" else ""))
    return EXIT_OK
