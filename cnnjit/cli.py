"""The ``cnnjit`` command line: run, inspect, draw, benchmark and profile ONNX models; run conformance.

    cnnjit run model.onnx --random
    cnnjit inspect model.onnx [--after fuse_epilogue] [--unfused] [--json]
    cnnjit graph model.onnx -o graph.svg
    cnnjit bench model.onnx --vs onnxruntime [--png bench.png]
    cnnjit profile model.onnx
    cnnjit conformance [--op Conv]
    cnnjit cache info|clear
    cnnjit warm model.onnx
    cnnjit compile model.onnx --target aarch64-linux-gnu --cpu cortex-a53 -o build/
    cnnjit prune model.onnx --sparsity 0.9 --method magnitude -o pruned.onnx

Exit codes: 0 success, 1 a model error (any ``cnnjit.CnnjitError``) or a failed step, 2 a usage error.
Errors are one line plus a hint on stderr; ``--debug`` adds the traceback, ``--verbose`` turns on the
``cnnjit`` logger, ``--json`` prints one JSON document on stdout instead of tables.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

EXIT_OK, EXIT_ERROR, EXIT_USAGE = 0, 1, 2


class UsageError(Exception):
    """Bad command-line input found after parsing (exit code 2)."""

    def __init__(self, message: str, hint: str = ""):
        super().__init__(message)
        self.hint = hint


class CliError(Exception):
    """A step failed for a reason outside the model (missing tool, unwritable file...; exit code 1)."""

    def __init__(self, message: str, hint: str = ""):
        super().__init__(message)
        self.hint = hint


# =========================================================================================================
# output helpers
# =========================================================================================================
def clean(text: Any, limit: int = 0) -> str:
    """Model-given text made safe for a terminal: control characters (escape sequences) replaced by '?'."""
    s = "".join(ch if ch.isprintable() else "?" for ch in str(text))
    if limit and len(s) > limit:
        s = s[: limit - 1] + "\u2026"
    return s


def _rich() -> Any:
    try:
        import rich  # noqa: F401

        return True
    except ImportError:
        return False


def _console(stderr: bool = False) -> Any:
    from rich.console import Console

    c = Console(stderr=stderr, highlight=False, soft_wrap=False)
    if not c.is_terminal:
        c = Console(stderr=stderr, highlight=False, width=max(c.width, 160))
    return c


def print_table(title: str, columns: Sequence[str], rows: Sequence[Sequence[Any]], right: Sequence[str] = (),
                footer: Sequence[str] = ()) -> None:
    """A table on stdout: rich if installed, else aligned plain text. Cells are cleaned and markup-escaped."""
    cells = [[clean(c) for c in r] for r in rows]
    if _rich():
        from rich.markup import escape
        from rich.table import Table

        t = Table()
        for c in columns:
            t.add_column(escape(c), justify="right" if c in right else "left", overflow="fold")
        for r in cells:
            t.add_row(*(escape(c) for c in r))
        con = _console()
        con.print(escape(clean(title)))
        con.print(t)
        for line in footer:
            con.print(escape(clean(line)))
        return
    widths = [max([len(c)] + [len(r[i]) for r in cells]) for i, c in enumerate(columns)]
    print(clean(title))

    def fmt(r: Sequence[str]) -> str:
        return "  ".join(v.rjust(w) if columns[i] in right else v.ljust(w) for i, (v, w) in enumerate(zip(r, widths)))

    print(fmt(list(columns)))
    print("  ".join("-" * w for w in widths))
    for r in cells:
        print(fmt(r))
    for line in footer:
        print(clean(line))


class Progress:
    """A rich progress bar on stderr (silent without rich or when stderr is not a terminal, or with --json)."""

    def __init__(self, enabled: bool = True):
        self._p = None
        self._tasks: dict[str, Any] = {}
        if enabled and _rich():
            from rich.progress import BarColumn, Progress, TaskProgressColumn, TextColumn, TimeElapsedColumn

            con = _console(stderr=True)
            if con.is_terminal:
                self._p = Progress(TextColumn("{task.description:<12}"), BarColumn(), TaskProgressColumn(),
                                   TimeElapsedColumn(), console=con, transient=True)

    def __enter__(self) -> Progress:
        if self._p is not None:
            self._p.__enter__()
        return self

    def __exit__(self, *exc: Any) -> None:
        if self._p is not None:
            self._p.__exit__(*exc)

    def update(self, phase: str, done: int, total: int | None) -> None:
        if self._p is None:
            return
        if phase not in self._tasks:
            self._tasks[phase] = self._p.add_task(phase, total=total)
        self._p.update(self._tasks[phase], completed=done, total=total)


def note(msg: str) -> None:
    """An informational line on stderr (kept off stdout so --json output stays parseable)."""
    print(f"note: {clean(msg)}", file=sys.stderr)


def emit_json(doc: Any) -> None:
    print(json.dumps(doc, indent=1, default=_json_default))


def _json_default(o: Any) -> Any:
    import numpy as np

    if isinstance(o, np.generic):
        return o.item()
    if isinstance(o, np.ndarray):
        return o.tolist()
    if isinstance(o, (Path, np.dtype)):
        return str(o)
    if isinstance(o, tuple):
        return list(o)
    raise TypeError(f"not JSON serializable: {type(o).__name__}")


def _ms(s: float) -> str:
    return f"{s * 1e3:.3f}"


def _si(n: float, unit: str = "") -> str:
    for scale, p in ((1e9, "G"), (1e6, "M"), (1e3, "k")):
        if abs(n) >= scale:
            return f"{n / scale:.2f} {p}{unit}".rstrip()
    return f"{n:g} {unit}".rstrip()


def _bytes(n: int) -> str:
    return f"{n / 1024:.1f} KiB" if n >= 1024 else f"{n} B"


# =========================================================================================================
# shared argument handling
# =========================================================================================================
def parse_assignments(items: Sequence[str] | None, what: str) -> dict[str, str]:
    """``NAME=VALUE`` items into a dict (a usage error names the bad item)."""
    out: dict[str, str] = {}
    for it in items or []:
        name, sep, value = it.rpartition("=")
        if not sep or not name or not value:
            raise UsageError(f"{what} {it!r} is not NAME=VALUE", f"example: {what} input_1=1,3,32,32")
        out[name] = value
    return out


def parse_shapes(items: Sequence[str] | None) -> dict[str, tuple[int, ...]]:
    shapes = {}
    for name, value in parse_assignments(items, "--shape").items():
        try:
            dims = tuple(int(d) for d in value.replace("x", ",").split(",") if d.strip())
        except ValueError:
            raise UsageError(f"--shape {name}={value}: dimensions must be integers",
                             "example: --shape input_1=1,3,32,32") from None
        if any(d < 0 for d in dims):
            raise UsageError(f"--shape {name}={value}: dimensions must be >= 0")
        shapes[name] = dims
    return shapes


def compile_model(path: str, shapes: dict[str, tuple[int, ...]] | None = None, fuse: bool = True,
                  quiet: bool = False) -> tuple[Any, dict[str, tuple[int, ...]], list[str], float]:
    """Compile ``path`` for concrete input shapes (symbolic dims -> 1, noted); returns (model, shapes, notes, s)."""
    import cnnjit
    from cnnjit.compiler.frontend.loader import load_model
    from cnnjit.compiler.frontend.onnx_import import value_inputs
    from cnnjit.inspect_model import resolve_shapes

    _check_model_path(path)
    t0 = time.perf_counter()
    proto = load_model(path)
    by_value = value_inputs(proto)
    if by_value:
        raise UsageError(f"input(s) {sorted(by_value)} set shapes or attributes of the model: the command line "
                         "cannot choose their values", "use the Python API: cnnjit.compile(path)(...)")
    resolved, notes = resolve_shapes(proto, shapes)
    if not quiet:
        for n in notes:
            note(n)
    model = cnnjit.compile(proto, input_shapes=resolved, fuse=fuse)
    return model, resolved, notes, time.perf_counter() - t0


def _check_model_path(path: str) -> None:
    from cnnjit.errors import ModelError

    p = Path(path)
    if not p.exists():
        raise ModelError(f"model file {path!r} does not exist")
    if p.is_dir():
        raise ModelError(f"{path!r} is a folder, not an .onnx model file")


def random_inputs(model: Any, shapes: dict[str, tuple[int, ...]], seed: int = 0) -> dict[str, Any]:
    """Seeded random inputs: standard normal floats, small non-negative integers, random booleans."""
    import numpy as np

    rng = np.random.default_rng(seed)
    feeds = {}
    for s in model.inputs:
        dt = np.dtype(s.dtype)
        shape = shapes[s.name]
        if dt.kind == "f":
            feeds[s.name] = rng.standard_normal(shape).astype(dt)
        elif dt.kind == "b":
            feeds[s.name] = rng.integers(0, 2, shape).astype(dt)
        elif dt.kind in "iu":
            info = np.iinfo(dt)
            feeds[s.name] = rng.integers(max(info.min, -10), min(info.max, 10) + 1, shape).astype(dt)
        else:
            raise UsageError(f"cannot make random data for input {s.name!r} of dtype {dt}",
                             f"give it with --input {s.name}=FILE.npy")
    return feeds


# =========================================================================================================
# cnnjit run
# =========================================================================================================
def cmd_run(args: argparse.Namespace) -> int:
    import numpy as np

    import cnnjit

    files = list(args.input or [])
    given: dict[str, Any] = {}
    for item in files:
        name, sep, fname = item.rpartition("=")
        if not sep:
            fname, name = item, ""
        given.update(_load_input_file(name, fname))
    _check_model_path(args.model)
    t0 = time.perf_counter()
    model = cnnjit.compile(args.model)
    missing = [s for s in model.inputs if s.name not in given]
    unknown = [n for n in given if n not in model.input_names]
    if len(model.inputs) == 1 and list(given) == [""]:
        given = {model.inputs[0].name: given[""]}
        missing, unknown = [], []
    if unknown:
        raise UsageError(f"--input names unknown input(s) {unknown}",
                         "the model's inputs are " + ", ".join(s.describe() for s in model.inputs))
    notes: list[str] = []
    if missing and not args.random:
        raise UsageError("no data for input(s) " + ", ".join(s.describe() for s in missing),
                         f"pass --input {missing[0].name}=FILE.npy, or --random for seeded random data")
    if missing:
        shapes = {}
        for s in missing:
            if s.by_value:
                raise UsageError(f"input {s.name!r} sets shapes or attributes of the model; --random cannot "
                                 "choose it", f"give it with --input {s.name}=FILE.npy")
            if s.dims is None:
                raise UsageError(f"input {s.describe()} has no declared rank: --random cannot choose a shape",
                                 f"give it with --input {s.name}=FILE.npy")
            dims = []
            for i, d in enumerate(s.dims):
                if d is None:
                    sym = s.dim_names[i] if i < len(s.dim_names) and s.dim_names[i] else "?"
                    notes.append(f"--random: symbolic dimension {sym!r} of input {s.name!r} set to 1")
                    dims.append(1)
                else:
                    dims.append(d)
            shapes[s.name] = tuple(dims)
        given.update(random_inputs(model, shapes, args.seed))
    for n in notes:
        note(n)
    feeds = {s.name: given[s.name] for s in model.inputs}
    t1 = time.perf_counter()
    outs = model.run(None, feeds)  # first call: specialise (if needed) and load/compile the kernels
    t2 = time.perf_counter()
    times = []
    for _ in range(max(args.repeat, 0)):
        a = time.perf_counter()
        model.run(None, feeds)
        times.append(time.perf_counter() - a)
    steady = sorted(times)[len(times) // 2] if times else None
    results = []
    for name, y in zip(model.output_names, outs):
        r: dict[str, Any] = {"name": name, "shape": list(y.shape), "dtype": str(y.dtype)}
        top = _topk(y, args.top)
        if top is not None:
            r["top"] = top
        if y.dtype.kind in "fiu" and y.size:
            r["min"], r["max"], r["mean"] = float(y.min()), float(y.max()), float(y.astype(np.float64).mean())
        results.append(r)
    if args.output:
        out = Path(args.output)
        try:
            np.savez(out, **{f"output_{i}": y for i, y in enumerate(outs)})
        except OSError as e:
            raise CliError(f"cannot write {args.output!r}: {e.strerror or e}") from None
    doc = {"model": args.model,
           "inputs": {k: {"shape": list(v.shape), "dtype": str(v.dtype)} for k, v in feeds.items()},
           "outputs": results, "notes": notes, "compile_s": t1 - t0, "first_run_s": t2 - t1,
           "run_s": steady, "output_file": args.output}
    if args.json:
        emit_json(doc)
        return EXIT_OK
    for r in results:
        line = f"output {clean(r['name'], 60)!r}: {r['dtype']}[{', '.join(map(str, r['shape']))}]"
        if "min" in r:
            line += f"  min {r['min']:.4g}  max {r['max']:.4g}  mean {r['mean']:.4g}"
        print(line)
        if "top" in r:
            row = " (row 0)" if len(r["shape"]) == 2 and r["shape"][0] > 1 else ""
            print(f"  top-{len(r['top'])}{row}: " + ", ".join(f"class {i} ({v:.4f})" for i, v in r["top"]))
    t = f"time: compile {_ms(t1 - t0)} ms, first run {_ms(t2 - t1)} ms (loads kernels)"
    if steady is not None:
        t += f", run {_ms(steady)} ms (median of {len(times)})"
    print(t)
    if args.output:
        names = "output_0" if len(outs) == 1 else f"output_0..output_{len(outs) - 1}"
        print(f"wrote {args.output} ({names}: " + ", ".join(repr(clean(n, 40)) for n in model.output_names) + ")")
    return EXIT_OK


def _load_input_file(name: str, fname: str) -> dict[str, Any]:
    import numpy as np

    p = Path(fname)
    if not p.is_file():
        raise UsageError(f"input file {fname!r} does not exist", "write one with numpy.save('x.npy', array)")
    try:
        data = np.load(p, allow_pickle=False)
    except Exception as e:  # noqa: BLE001 - numpy raises several types for bad files
        raise UsageError(f"input file {fname!r} is not a .npy/.npz file numpy can read ({type(e).__name__})",
                         "write one with numpy.save('x.npy', array)") from None
    if isinstance(data, np.ndarray):
        return {name: data}
    with data:
        arrays = {k: data[k] for k in data.files}
    if name:
        if len(arrays) != 1:
            raise UsageError(f"{fname!r} holds {len(arrays)} arrays; NAME=FILE needs a .npy file or a one-array .npz",
                             "pass the .npz alone (--input inputs.npz) to feed inputs by their names in it")
        return {name: next(iter(arrays.values()))}
    return arrays


def _topk(y: Any, k: int) -> list[tuple[int, float]] | None:
    """Top-k (class, value) of a classifier-shaped output ([C] or [N, C], C >= 2; row 0), else None."""
    import numpy as np

    if k <= 0 or y.dtype.kind not in "fiu" or y.size == 0:
        return None
    if y.ndim == 1 and y.shape[0] >= 2:
        row = y
    elif y.ndim == 2 and y.shape[1] >= 2:
        row = y[0]
    else:
        return None
    idx = np.argsort(-row.astype(np.float64), kind="stable")[:k]
    return [(int(i), float(row[i])) for i in idx]


# =========================================================================================================
# cnnjit inspect
# =========================================================================================================
def cmd_inspect(args: argparse.Namespace) -> int:
    from cnnjit.compiler.passes import default_pipeline
    from cnnjit.inspect_model import layer_rows, trace

    _check_model_path(args.model)
    shapes = parse_shapes(args.shape)
    if args.after:
        known = list(dict.fromkeys(p.name for p in default_pipeline()))
        if args.after not in known:
            raise UsageError(f"unknown pass {args.after!r}", "passes, in order: " + ", ".join(known))
    t = trace(args.model, shapes, fuse=not args.unfused)
    if not args.json:
        for n in t.notes:
            note(n)
    if args.after:
        dumps = [ir for name, ir in t.after if name == args.after]
        if not dumps:
            raise UsageError(f"pass {args.after!r} does not run in this pipeline"
                             + (" (--unfused drops the fusion passes)" if args.unfused else ""),
                             "passes that run: " + ", ".join(t.pipeline))
        if args.json:
            emit_json({"model": args.model, "pass": args.after, "shapes": t.shapes, "notes": t.notes, "ir": dumps})
        else:
            for i, ir in enumerate(dumps):
                which = f" (run {i + 1} of {len(dumps)})" if len(dumps) > 1 else ""
                print(f"// ---- IR after pass {args.after}{which} ----")
                print(clean_block(ir))
        return EXIT_OK
    rows = layer_rows(t)
    p = t.program
    n_calls = sum(len(r["calls"]) for r in rows)
    totals = {
        "nodes_before_fusion": len(t.before.nodes), "nodes": len(t.graph.nodes), "kernel_calls": n_calls,
        "distinct_kernels": len(p.kernel_sources), "params": sum(r["params"] for r in rows),
        "flops": sum(r["flops"] for r in rows), "arena_bytes": p.arena_bytes,
        "intermediate_bytes": p.intermediate_bytes,
    }
    if args.json:
        emit_json({"model": args.model, "name": t.name, "shapes": t.shapes, "notes": t.notes,
                   "fused": not args.unfused, "pipeline": t.pipeline, "layers": rows, "totals": totals})
        return EXIT_OK
    table_rows = []
    for r in rows:
        fused = ", ".join(f"{f['op']}" + (f" {clean(f['name'], 24)!r}" if f["name"] else "") for f in r["fused_from"])
        table_rows.append([str(r["index"]), r["op"], clean(r["name"], 28), " ".join(r["inputs"]),
                           " ".join(r["outputs"]), f"{r['params']:,}", _si(r["flops"]), r["kernel"], fused])
    saved = 1 - p.arena_bytes / p.intermediate_bytes if p.intermediate_bytes else 0.0
    shp = ", ".join(f"{clean(k, 40)}={'x'.join(map(str, v))}" for k, v in t.shapes.items())
    footer = [
        f"{totals['nodes_before_fusion']} nodes before fusion -> {totals['nodes']} after; {n_calls} kernel calls "
        f"of {totals['distinct_kernels']} distinct kernels; {totals['params']:,} parameters; "
        f"{_si(totals['flops'], 'FLOP')} per run",
        f"arena {_bytes(p.arena_bytes)} (reused memory, inputs and outputs included) vs "
        f"{_bytes(p.intermediate_bytes)} for every intermediate in its own buffer"
        + (f" ({saved:.0%} saved)" if saved > 0 else ""),
        "passes: " + ", ".join(t.pipeline),
    ]
    print_table(f"{clean(t.name, 40)} ({shp}){' unfused' if args.unfused else ''}",
                ["#", "op", "name", "inputs", "outputs", "params", "FLOPs", "kernel", "fused from"], table_rows,
                right=("#", "params", "FLOPs"), footer=footer)
    return EXIT_OK


def clean_block(text: str) -> str:
    return "\n".join(clean(line) for line in text.splitlines())


# =========================================================================================================
# cnnjit graph
# =========================================================================================================
_FORMATS = ("svg", "png", "pdf", "dot")


def cmd_graph(args: argparse.Namespace) -> int:
    from cnnjit.inspect_model import to_dot, trace

    _check_model_path(args.model)
    out = Path(args.output)
    fmt = (args.format or out.suffix.lstrip(".").lower() or "svg")
    if fmt not in _FORMATS:
        raise UsageError(f"cannot write {fmt!r} pictures", "use an -o file ending in .svg, .png, .pdf or .dot "
                         "(or --format)")
    if out.parent and not out.parent.is_dir():
        raise UsageError(f"folder {str(out.parent)!r} does not exist", "create it first, or choose another -o path")
    t = trace(args.model, parse_shapes(args.shape))
    if not args.json:
        for n in t.notes:
            note(n)
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
    else:
        if msg:
            note(msg)
        else:
            print(f"wrote {out if fmt != 'dot' else dot_path}: {doc['nodes_before']} nodes before fusion, "
                  f"{doc['nodes_after']} after, {doc['fused_groups']} fused groups"
                  + (f" (DOT source: {dot_path})" if fmt != "dot" else ""))
    return EXIT_OK


# =========================================================================================================
# cnnjit bench
# =========================================================================================================
def _set_threads(n: int) -> None:
    try:
        import numba

        numba.set_num_threads(max(1, min(n, numba.config.NUMBA_NUM_THREADS)))
    except Exception:  # noqa: BLE001 - best effort
        pass


def cmd_bench(args: argparse.Namespace) -> int:
    from cnnjit.bench import bar_chart, measure, ort_session
    from cnnjit.inspect_model import node_flops

    if args.runs < 1 or args.warmup < 0 or args.threads < 1:
        raise UsageError("--runs and --threads must be >= 1, --warmup >= 0")
    if args.png:
        _require_matplotlib()
    _set_threads(args.threads)
    shapes = parse_shapes(args.shape)
    engines = list(dict.fromkeys(args.vs or []))
    with Progress(enabled=not args.json) as prog:
        prog.update("compiling", 0, 1)
        model, resolved, notes, compile_s = compile_model(args.model, shapes, quiet=args.json)
        feeds = random_inputs(model, resolved, args.seed)
        spec = model.specialization(resolved)
        t0 = time.perf_counter()
        ref = model.run(None, feeds)  # loads/compiles the kernels
        first_s = time.perf_counter() - t0
        prog.update("compiling", 1, 1)
        fns: dict[str, Any] = {"cnnjit": lambda: model.run(None, feeds)}
        diffs: dict[str, float] = {}
        if "onnxruntime" in engines:
            try:
                import onnxruntime  # noqa: F401
            except ImportError:
                raise CliError("--vs onnxruntime needs onnxruntime", "pip install onnxruntime") from None
            prog.update("onnxruntime", 0, 1)
            sess = ort_session(model.origin[0] if model.origin else Path(args.model).read_bytes(), args.threads)
            theirs = sess.run(None, feeds)
            diffs["onnxruntime"] = max((float(abs(a.astype("float64") - b.astype("float64")).max())
                                        for a, b in zip(ref, theirs) if a.size), default=0.0)
            fns["onnxruntime"] = lambda: sess.run(None, feeds)
            prog.update("onnxruntime", 1, 1)
        stats = measure(fns, runs=args.runs, warmup=args.warmup, progress=prog.update)
    flops = sum(node_flops(n) for n in spec.graph.nodes)
    base = stats["cnnjit"]["median_ms"]
    for s in stats.values():
        s["ratio"] = s["median_ms"] / base if base else None
        s["gflops"] = flops / (s["median_ms"] * 1e6) if s["median_ms"] else None
    png = None
    if args.png:
        try:
            png = str(bar_chart(stats, args.png, f"{Path(args.model).name} ({args.runs} runs, {args.threads} thread"
                                f"{'s' if args.threads > 1 else ''})"))
        except OSError as e:
            raise CliError(f"cannot write {args.png!r}: {e.strerror or e}") from None
    doc = {"model": args.model, "shapes": resolved, "notes": notes, "runs": args.runs, "warmup": args.warmup,
           "threads": args.threads, "flops": flops, "compile_s": compile_s, "first_run_s": first_s,
           "results": stats, "max_abs_diff": diffs, "png": png}
    if args.json:
        emit_json(doc)
        return EXIT_OK
    rows = [[name, f"{s['median_ms']:.3f}", f"{s['min_ms']:.3f}", f"{s['p90_ms']:.3f}",
             f"{s['ratio']:.2f}x" if s["ratio"] else "-", f"{s['gflops']:.2f}" if s["gflops"] else "-"]
            for name, s in stats.items()]
    footer = [f"{_si(flops, 'FLOP')} per run (2 x MACs of Conv/Gemm/MatMul, + elementwise); {args.runs} interleaved "
              f"runs after {args.warmup} warm-up; ratio = median / cnnjit median",
              f"compile {_ms(compile_s)} ms, first run {_ms(first_s)} ms (loads kernels)"]
    footer += [f"max |cnnjit - {k}| = {v:.3g}" for k, v in diffs.items()]
    if png:
        footer.append(f"wrote {png}")
    shp = ", ".join(f"{clean(k, 40)}={'x'.join(map(str, v))}" for k, v in resolved.items())
    print_table(f"{Path(args.model).name} ({shp}), {args.threads} thread{'s' if args.threads > 1 else ''}",
                ["engine", "median ms", "min ms", "p90 ms", "ratio", "GFLOP/s"], rows,
                right=("median ms", "min ms", "p90 ms", "ratio", "GFLOP/s"), footer=footer)
    return EXIT_OK


def _require_matplotlib() -> None:
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        raise CliError("--png needs matplotlib, which is not installed",
                       "pip install matplotlib  (or: pip install -e \".[bench]\")") from None


# =========================================================================================================
# cnnjit profile
# =========================================================================================================
def cmd_profile(args: argparse.Namespace) -> int:
    from cnnjit.profile import profile_model

    if args.runs < 1:
        raise UsageError("--runs must be >= 1")
    _check_model_path(args.model)
    with Progress(enabled=not args.json) as prog:
        prog.update("profiling", 0, 1)
        doc = profile_model(args.model, parse_shapes(args.shape), repeat=args.runs,
                            mode="calls" if args.uninlined else "auto", peak=args.peak, seed=args.seed)
        prog.update("profiling", 1, 1)
    doc["model"] = args.model
    rows = sorted(doc["calls"], key=lambda r: -r["median_ms"])
    doc["calls"] = rows
    doc["total_ms"] = doc["sum_ms"]
    if args.json:
        emit_json(doc)
        return EXIT_OK
    for n in doc["notes"]:
        note(n)
    top = rows[: args.top] if args.top else rows
    table = [[str(r["call"]), r["kernel"], r["op"], clean(r["note"].split(" ", 1)[-1], 48), f"{r['median_ms']:.4f}",
              f"{r['percent']:.1f}", f"{r['gflops']:.2f}" if r["flops"] else "-",
              f"{r['percent_of_peak']:.1f}" if r["flops"] and r["percent_of_peak"] is not None else "-"]
             for r in top]
    total = doc["sum_ms"] / 1e3 or 1e-12
    how = ("timed inside the compiled schedule (numba entry, kernels inlined; cycle counter between calls)"
           if doc["mode"] == "timed" else
           f"each kernel called from Python ({doc['entry']} entry"
           + (", un-inlined: slower than the real numba entry)" if args.uninlined else ")"))
    footer = [f"sum of calls {doc['sum_ms']:.3f} ms (median per call over {args.runs} runs), whole run "
              f"{doc['run_ms']:.3f} ms (real {doc['entry']} entry, median): {100 * doc['discrepancy']:+.1f}% "
              f"(minima: {doc['sum_min_ms']:.3f} vs {doc['run_min_ms']:.3f} ms); "
              f"{_si(doc['flops'], 'FLOP')} -> {doc['flops'] / total / 1e9:.2f} GFLOP/s overall",
              how,
              f"peak {doc['peak_gflops']:.1f} GFLOP/s = {doc['peak_method']}"]
    if len(top) < len(rows):
        footer.insert(0, f"({len(rows) - len(top)} faster calls not shown; --top 0 shows all)")
    print_table(f"{clean(doc['name'], 40)}: time per kernel call, slowest first",
                ["call", "kernel", "op", "shapes", "median ms", "%", "GFLOP/s", "% peak"], table,
                right=("call", "median ms", "%", "GFLOP/s", "% peak"), footer=footer)
    return EXIT_OK


# =========================================================================================================
# cnnjit conformance
# =========================================================================================================
def cmd_conformance(args: argparse.Namespace) -> int:
    from cnnjit.conformance import SUITES, default_shared_dir, print_table, run_conformance, write_results

    suites = args.suite or list(SUITES)
    bad = [s for s in suites if s not in SUITES]
    if bad:
        raise UsageError(f"unknown suite(s) {bad}", "suites: " + ", ".join(SUITES))
    shared = Path(args.shared) if args.shared else default_shared_dir()
    if "onnx-node" in suites and not (shared / "onnx-node").is_dir():
        if not args.json:
            note(f"no onnx-node cases at {shared / 'onnx-node'} (set --shared or CNNJIT_SHARED): suite skipped")
    with Progress(enabled=not args.json) as prog:
        result = run_conformance(shared, suites=suites, ops=args.op,
                                 progress=lambda d, n, _c: prog.update("cases", d, n))
    if not result["per_op"]:
        raise UsageError("no conformance cases match" + (f" --op {' '.join(args.op)}" if args.op else ""),
                         "operators are ONNX op types, e.g. --op Conv --op Relu")
    if args.out:
        try:
            md, js = write_results(result, args.out)
        except OSError as e:
            raise CliError(f"cannot write {args.out!r}: {e.strerror or e}") from None
    if args.json:
        emit_json(result)
    else:
        print_table(result, failures=args.failures)
        passed = sum(t["passed"] for t in result["totals"].values())
        attempted = sum(t["attempted"] for t in result["totals"].values())
        print(f"{passed}/{attempted} cases passed in {result['elapsed_s']:.1f} s"
              + ("" if args.failures or passed == attempted else " (--failures lists the others)"))
        if args.out:
            print(f"wrote {md} and {js}")
    return EXIT_OK if not result["failures"] else EXIT_ERROR


# =========================================================================================================
# cnnjit cache / cnnjit warm
# =========================================================================================================
def cmd_cache(args: argparse.Namespace) -> int:
    from cnnjit import cache

    if args.action == "clear":
        res = cache.clear()
        if args.json:
            emit_json(res)
        else:
            print(f"removed {len(res['removed'])} cache folder(s) under {res['root']}, "
                  f"{_bytes(res['bytes_freed'])} freed")
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
            ("size", _bytes(res["bytes"])),
            ("other versions", f"{len(res['stale_folders'])} folder(s), {_bytes(res['stale_bytes'])}"),
            ("this process", f"{proc['hits']} hits, {proc['misses']} misses")]
    print_table("cnnjit kernel cache", ["", "value"], rows)
    return EXIT_OK


def warm_model(path: str, shapes: dict[str, tuple[int, ...]] | None = None, fuse: bool = True,
               quiet: bool = False) -> tuple[Any, float]:
    """Compile ``path`` so that all its kernels are in the on-disk cache; returns (report, seconds).

    A separate function so that a ``compile`` subcommand can offer the same thing as ``--warm``."""
    model, _shapes, _notes, seconds = compile_model(path, shapes, fuse=fuse, quiet=quiet)
    return model.compile_report(), seconds


def cmd_warm(args: argparse.Namespace) -> int:
    from cnnjit.compiler.codegen.build import cache_dir

    report, seconds = warm_model(args.model, parse_shapes(args.shape), fuse=not args.unfused, quiet=args.json)
    if args.json:
        emit_json({"model": args.model, "cache_dir": str(cache_dir()), "seconds": seconds,
                   "compiled": report.compiled, "cache_hits": report.cache_hits, "kernels": report.to_dicts()})
        return EXIT_OK
    rows = [(r.name, r.ops, r.calls, r.signatures, r.origin, f"{r.seconds:.3f}", f"{r.compile_s:.3f}")
            for r in report.rows]
    print_table(f"kernels of {args.model}", ["kernel", "ops", "calls", "sigs", "origin", "ready s", "compile s"],
                rows, right=["calls", "sigs", "ready s", "compile s"],
                footer=[f"{report.summary()}; cache {cache_dir()}; total {seconds:.2f} s"])
    return EXIT_OK


def cmd_compile(args: argparse.Namespace) -> int:
    """Ahead-of-time compilation for another machine (``cnnjit.compiler.target``)."""
    from cnnjit.compiler.target import TargetError, compile_for_target
    from cnnjit.compiler.target.aarch64 import find_tool

    _check_model_path(args.model)
    t0 = time.perf_counter()
    try:
        if not args.no_shared:
            find_tool("aarch64-linux-gnu-gcc")  # before the compile, not after it
        art = compile_for_target(args.model, target=args.target, cpu=args.cpu, features=args.features,
                                 name=args.name, input_shapes=parse_shapes(args.shape) or None,
                                 fuse=not args.unfused)
        paths = art.save(args.output, shared=not args.no_shared)
    except TargetError as e:
        raise (UsageError if e.kind == "usage" else CliError)(e.message, e.hint) from e
    seconds = time.perf_counter() - t0
    files = {k: {"path": str(v), "bytes": v.stat().st_size} for k, v in paths.items()}
    if args.json:
        emit_json({**art.summary(), "files": files, "seconds": seconds})
        return EXIT_OK
    rows = [(k, v["path"], _bytes(v["bytes"])) for k, v in files.items()]
    c = art.checks
    print_table(f"{args.model} for {art.triple} (cpu {art.cpu}, features {art.features})", ["file", "path", "size"],
                rows, right=["size"], footer=[
                    f"entry {art.name}_run: scratch {art.scratch_bytes} bytes, weights {art.weight_bytes} bytes, "
                    f"{len(art.kernels)} kernels; compiled in {seconds:.1f} s",
                    f"checks: ELF {c['elf_machine']}, no x86 intrinsics, undefined symbols only libc/libm "
                    f"({', '.join(c['undefined']) or 'none'})",
                    f"link: aarch64-linux-gnu-gcc -O2 -static -o {art.name}_main {paths['main']} "
                    f"{paths['object']} -lm"])
    return EXIT_OK


def cmd_prune(args: argparse.Namespace) -> int:
    """Prune a model's Conv/Gemm/MatMul weights (``cnnjit.prune``) and save the pruned ONNX model."""
    from cnnjit.prune import prune

    _check_model_path(args.model)
    method = args.method
    if method not in ("magnitude", "channel") and ":" not in method:
        raise UsageError(f"--method must be magnitude, channel or an N:M pattern like 2:4, got {method!r}")
    if ":" not in method and args.sparsity is None:
        raise UsageError(f"--method {method} needs --sparsity (a fraction in [0, 1])")
    try:
        pruned = prune(args.model, args.sparsity, method, scope=args.scope,
                       keep_first_last=not args.prune_first_last, exclude=args.exclude or ())
    except ValueError as e:
        raise UsageError(str(e)) from e
    try:
        pruned.save(args.output)
    except OSError as e:
        raise CliError(f"cannot write {args.output!r}: {e}") from e
    dev = pruned.deviation(n=args.samples) if args.samples > 0 else None
    if args.json:
        emit_json({"model": args.model, "output": args.output, "method": pruned.method,
                   "summary": pruned.summary(), "layers": pruned.layers(), "deviation": dev})
        return EXIT_OK
    print(pruned.report())
    if dev:
        print(f"deviation vs the original on {dev['samples']} random inputs: max abs diff "
              f"{dev['max_abs_diff']:.4g}, cosine {dev['cosine']:.4f}, argmax agreement {dev['argmax_agreement']:.0%}")
    print(f"wrote {args.output}")
    return EXIT_OK


def _calibration_batches(model: str, source: str, count: int, seed: int) -> list[dict]:
    """``random``: ``count`` seeded standard-normal batches; else a folder of .npy/.npz files."""
    import numpy as np

    from cnnjit.compiler.frontend.loader import input_specs, load_model

    specs = [s for s in input_specs(load_model(model))]
    if source == "random":
        rng = np.random.default_rng(seed)
        return [{s.name: rng.standard_normal(tuple(d if isinstance(d, int) and d > 0 else 1 for d in s.dims))
                 .astype(s.dtype) for s in specs} for _ in range(count)]
    folder = Path(source)
    if not folder.is_dir():
        raise UsageError(f"--calibration must be 'random' or a folder of .npy/.npz files, got {source!r}")
    batches = []
    for f in sorted(folder.iterdir()):
        if f.suffix == ".npy" and len(specs) == 1:
            batches.append({specs[0].name: np.load(f)})
        elif f.suffix == ".npz":
            with np.load(f) as z:
                batches.append({k: z[k] for k in z.files})
    if not batches:
        raise UsageError(f"no calibration batches (.npy for single-input models, .npz otherwise) in {source!r}")
    return batches[:count] if count > 0 else batches


def cmd_quantize(args: argparse.Namespace) -> int:
    """Post-training quantization (``cnnjit.quantize``) of a float model to a QDQ ONNX model."""
    from cnnjit.quantize import quantize

    _check_model_path(args.model)
    batches = _calibration_batches(args.model, args.calibration, args.batches, args.seed)
    try:
        q = quantize(args.model, batches, per_channel=not args.per_tensor, activations=args.activations,
                     method=args.method)
    except ValueError as e:
        raise UsageError(str(e)) from e
    try:
        q.save(args.output)
    except OSError as e:
        raise CliError(f"cannot write {args.output!r}: {e}") from e
    if args.json:
        emit_json({"model": args.model, "output": args.output, "options": q.options,
                   "activations": {k: {"scale": s, "zero_point": z} for k, (s, z) in q.activations.items()},
                   "deviation": q.deviation})
        return EXIT_OK
    print(q.report())
    print(f"wrote {args.output}")
    return EXIT_OK


# =========================================================================================================
# the parser
# =========================================================================================================
class _Parser(argparse.ArgumentParser):
    """argparse with one-line errors plus a hint, exit code 2."""

    def error(self, message: str) -> None:  # type: ignore[override]
        print(f"{self.prog}: error: {message}", file=sys.stderr)
        print(f"hint: {self.prog} --help shows the options and an example", file=sys.stderr)
        raise SystemExit(EXIT_USAGE)


_EPILOGS = {
    "quantize": """example:
  cnnjit quantize resnet8.onnx --calibration random -o resnet8.int8.onnx
  cnnjit quantize kws.onnx --calibration calib/ --activations int8 --method entropy -o kws.int8.onnx --json

Writes a standard QDQ model (onnxruntime runs it too; 'cnnjit run' compiles it to integer kernels) and prints
per-layer scales and the output deviation from the float model on the calibration inputs. --calibration is
'random' (seeded standard-normal inputs) or a folder of .npy (single input) / .npz (by input name) files.""",
    "prune": """example:
  cnnjit prune mobilenet_v2.onnx --sparsity 0.9 --method magnitude -o mobilenet_v2.pruned.onnx
  cnnjit prune mobilenet_v2.onnx --sparsity 0.5 --method channel -o mnv2.ch50.onnx --json
  cnnjit prune mobilenet_v2.onnx --method 2:4 -o mnv2.24.onnx

Prints per layer sparsity, params and FLOPs, and the output deviation from the original on random inputs.
'cnnjit.compile' runs pointwise Conv / Gemm layers whose weights are sparse enough with sparse kernels.""",
    "compile": """example:
  cnnjit compile kws.onnx --target aarch64-linux-gnu --cpu cortex-a53 -o build/
  cnnjit compile kws.onnx --target aarch64-linux-gnu --cpu cortex-a76 --features +dotprod -o build/ --json

Compiles ahead of time for 64-bit ARM Linux: writes NAME.o (code and weights), libNAME.so, NAME.h (the C
entry point NAME_run and its scratch size), NAME_main.c (a test/benchmark program) and README.md (the
link line). Needs gcc-aarch64-linux-gnu (and libc6-dev-arm64-cross) to link the .so (--no-shared skips
it); symbolic input dimensions are set to 1 unless --shape gives them.""",
    "run": """example:
  cnnjit run model.onnx --random
  cnnjit run model.onnx --input input_1=x.npy --output y.npz --json

Inputs come from .npy files (NAME=FILE.npy, or FILE.npz holding arrays named like the inputs); --random
fills the others with seeded random data, setting symbolic dimensions to 1. Prints each output's shape,
the top-5 classes of a classifier-shaped output ([C] or [N, C]) and the time taken.""",
    "inspect": """example:
  cnnjit inspect model.onnx
  cnnjit inspect model.onnx --after fuse_epilogue
  cnnjit inspect model.onnx --unfused --json

One row per IR node after the passes: op (with fused ops), shapes, parameters, FLOPs, the kernel it
runs in, and the model's nodes fused into it; then the arena size against the sum of intermediates.""",
    "graph": """example:
  cnnjit graph model.onnx -o graph.svg
  cnnjit graph model.onnx -o graph.png

Draws the graph before fusion (fused groups as clusters) beside the graph after it. Renders with
Graphviz's 'dot' (apt-get install graphviz; CNNJIT_DOT overrides its path); without it, writes the .dot
file and says so.""",
    "bench": """example:
  cnnjit bench model.onnx --vs onnxruntime --runs 100 --png bench.png

Compiles, warms up, then times interleaved runs of each engine on the same seeded random inputs.
--threads sets onnxruntime's intra-op threads and numba's thread count.""",
    "profile": """example:
  cnnjit profile model.onnx --runs 50 --top 10

Times every kernel call of the compiled schedule as it really runs and lists the calls slowest first,
with their share of the total, GFLOP/s and % of the machine's measured peak (1 thread). With the numba
entry (models of 4-80 calls) the schedule is compiled once more with a cycle-counter read between calls,
so kernels stay inlined as in a normal run; the footer compares the sum of the calls with a whole run.
--uninlined calls each kernel from Python instead (the Python entry). --peak sgemm uses numpy's matmul
as the peak instead of a generated vector FMA loop.""",
    "conformance": """example:
  cnnjit conformance
  cnnjit conformance --op Conv --op Relu --failures

Runs the ONNX conformance cases (shared/onnx-node and the onnx wheel's pytorch-converted and
pytorch-operator suites) through cnnjit.backend; exit code 1 if any case fails.""",
    "cache": """example:
  cnnjit cache info
  cnnjit cache info --json
  cnnjit cache clear

The on-disk kernel cache (CNNJIT_CACHE_DIR, default ~/.cache/cnnjit) is shared by all models and
processes; 'info' shows its folder for this host and versions, kernels, size and older-version folders;
'clear' deletes every cnnjit kernel folder in it (the next compile starts cold).""",
    "warm": """example:
  cnnjit warm model.onnx
  cnnjit warm model.onnx --shape input_1=1,3,96,96 --json

Compiles the model now so that every kernel it needs is in the on-disk cache (e.g. when building a
deployment image): a later process then starts without compiling. Lists each kernel and its origin.""",
}


def build_parser() -> argparse.ArgumentParser:
    from . import __version__

    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--json", action="store_true", default=argparse.SUPPRESS,
                        help="print one JSON document on stdout (for scripts)")
    common.add_argument("-v", "--verbose", action="count", default=argparse.SUPPRESS,
                        help="log compile decisions, cache hits and kernel choices to stderr (-vv: more)")
    common.add_argument("--debug", action="store_true", default=argparse.SUPPRESS,
                        help="show the traceback of an error")

    def versions() -> str:
        import platform

        import numba
        import onnx

        return f"cnnjit {__version__} (numba {numba.__version__}, onnx {onnx.__version__}, " \
               f"Python {platform.python_version()})"

    class _Version(argparse.Action):
        def __init__(self, option_strings: list[str], dest: str, **kw: Any):
            super().__init__(option_strings, dest, nargs=0, help="print the version and exit")

        def __call__(self, parser: argparse.ArgumentParser, ns: argparse.Namespace, values: Any,
                     option_string: str | None = None) -> None:
            print(versions())
            raise SystemExit(EXIT_OK)

    parser = _Parser(prog="cnnjit", parents=[common], formatter_class=argparse.RawDescriptionHelpFormatter,
                     description="cnnjit: a JIT compiler for tiny CNNs (ONNX in, numba kernels out).",
                     epilog="example:\n  cnnjit run model.onnx --random\n\n"
                            "'cnnjit COMMAND --help' describes each command. Exit codes: 0 ok, 1 model error "
                            "(or failed step), 2 usage error.")
    parser.add_argument("--version", action=_Version)
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)

    def add(name: str, help: str) -> argparse.ArgumentParser:
        return sub.add_parser(name, help=help, description=help, parents=[common], epilog=_EPILOGS[name],
                              formatter_class=argparse.RawDescriptionHelpFormatter)

    shape_help = "concrete input shape, e.g. input_1=1,3,32,32 (default: declared dims, symbolic ones = 1)"

    p = add("run", "run a model on inputs from .npy files or random data")
    p.add_argument("model", metavar="MODEL", help="an .onnx file")
    p.add_argument("--input", action="append", metavar="NAME=FILE.npy", help="an input from a .npy file (repeat)")
    p.add_argument("--random", action="store_true", help="seeded random data for inputs not given")
    p.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    p.add_argument("--output", metavar="OUT.npz", help="save the outputs (output_0, output_1, ...)")
    p.add_argument("--repeat", type=int, default=10, help="timed runs after the first (default 10)")
    p.add_argument("--top", type=int, default=5, help="top-k classes to show (default 5; 0: none)")
    p.set_defaults(func=cmd_run)

    p = add("inspect", "per-layer table: ops, shapes, params, FLOPs, fusion, kernels, memory")
    p.add_argument("model", metavar="MODEL", help="an .onnx file")
    p.add_argument("--after", metavar="PASS", help="print the IR after this pass instead")
    p.add_argument("--unfused", action="store_true", help="compile without the fusion passes")
    p.add_argument("--shape", action="append", metavar="NAME=DIMS", help=shape_help)
    p.set_defaults(func=cmd_inspect)

    p = add("graph", "draw the graph before and after fusion (Graphviz)")
    p.add_argument("model", metavar="MODEL", help="an .onnx file")
    p.add_argument("-o", "--output", required=True, metavar="FILE", help="output picture (.svg, .png, .pdf, .dot)")
    p.add_argument("--format", choices=_FORMATS, help="picture format (default: from the -o extension)")
    p.add_argument("--shape", action="append", metavar="NAME=DIMS", help=shape_help)
    p.set_defaults(func=cmd_graph)

    p = add("bench", "time a model (optionally against onnxruntime)")
    p.add_argument("model", metavar="MODEL", help="an .onnx file")
    p.add_argument("--vs", action="append", choices=["onnxruntime"], help="also time this engine")
    p.add_argument("--threads", type=int, default=1, help="threads (default 1)")
    p.add_argument("--runs", type=int, default=50, help="timed runs per engine (default 50)")
    p.add_argument("--warmup", type=int, default=5, help="untimed warm-up runs (default 5)")
    p.add_argument("--png", metavar="OUT.png", help="draw a bar chart (needs matplotlib)")
    p.add_argument("--seed", type=int, default=0, help="random input seed (default 0)")
    p.add_argument("--shape", action="append", metavar="NAME=DIMS", help=shape_help)
    p.set_defaults(func=cmd_bench)

    p = add("profile", "time every kernel call of the compiled schedule, slowest first")
    p.add_argument("model", metavar="MODEL", help="an .onnx file")
    p.add_argument("--runs", type=int, default=20, help="timed runs of the schedule (default 20)")
    p.add_argument("--top", type=int, default=20, help="rows to show (default 20; 0: all)")
    p.add_argument("--uninlined", action="store_true",
                   help="time each kernel called from Python (Python entry) instead of inside the compiled schedule")
    p.add_argument("--peak", choices=["fma", "sgemm"], default="fma",
                   help="the peak for '%% peak': measured vector FMA loop (default) or numpy sgemm")
    p.add_argument("--seed", type=int, default=0, help="random input seed (default 0)")
    p.add_argument("--shape", action="append", metavar="NAME=DIMS", help=shape_help)
    p.set_defaults(func=cmd_profile)

    p = add("conformance", "pass/fail per operator on the ONNX conformance cases")
    p.add_argument("--shared", metavar="DIR", help="the shared data folder (default: CNNJIT_SHARED or ../shared)")
    p.add_argument("--op", action="append", metavar="OP", help="only cases of this operator (repeat)")
    p.add_argument("--suite", action="append", metavar="SUITE",
                   help="only this suite: onnx-node, pytorch-converted, pytorch-operator (repeat)")
    p.add_argument("--failures", action="store_true", help="list every failing case with its reason")
    p.add_argument("--out", metavar="PREFIX", help="also write PREFIX.md and PREFIX.json")
    p.set_defaults(func=cmd_conformance)

    p = add("cache", "show or clear the on-disk kernel cache")
    p.add_argument("action", nargs="?", choices=["info", "clear"], default="info",
                   help="info (default) or clear")
    p.set_defaults(func=cmd_cache)

    p = add("warm", "compile a model into the on-disk kernel cache ahead of time")
    p.add_argument("model", metavar="MODEL", help="an .onnx file")
    p.add_argument("--unfused", action="store_true", help="compile without the fusion passes")
    p.add_argument("--shape", action="append", metavar="NAME=DIMS", help=shape_help)
    p.set_defaults(func=cmd_warm)

    p = add("compile", "compile a model ahead of time for another machine (aarch64 Linux)")
    p.add_argument("model", metavar="MODEL", help="an .onnx file")
    p.add_argument("--target", required=True, metavar="TRIPLE", help="target triple, e.g. aarch64-linux-gnu")
    p.add_argument("--cpu", metavar="CPU", help="target CPU, e.g. cortex-a53, cortex-a76 (default: generic)")
    p.add_argument("--features", metavar="FEATURES", help="LLVM features, e.g. +neon,+dotprod")
    p.add_argument("-o", "--output", required=True, metavar="DIR", help="output folder (created if needed)")
    p.add_argument("--name", help="C name prefix of the entry point and files (default: from the model file)")
    p.add_argument("--no-shared", action="store_true", help="do not link lib<name>.so (no cross gcc needed)")
    p.add_argument("--unfused", action="store_true", help="compile without the fusion passes")
    p.add_argument("--shape", action="append", metavar="NAME=DIMS", help=shape_help)
    p.set_defaults(func=cmd_compile)

    p = add("prune", "prune a model's weights (magnitude, channel or N:M) and save the pruned ONNX model")
    p.add_argument("model", metavar="MODEL", help="an .onnx file")
    p.add_argument("--sparsity", type=float, metavar="FRACTION", help="fraction of weights / channels to remove")
    p.add_argument("--method", default="magnitude", help="magnitude (default), channel, or N:M such as 2:4")
    p.add_argument("-o", "--output", required=True, metavar="OUT.onnx", help="where to write the pruned model")
    p.add_argument("--scope", choices=("layer", "global"), default="layer",
                   help="magnitude threshold per layer (default) or over all layers")
    p.add_argument("--exclude", action="append", metavar="NODE", help="a layer (node name) to keep dense (repeat)")
    p.add_argument("--prune-first-last", action="store_true", help="also prune the first and last layers")
    p.add_argument("--samples", type=int, default=2, help="random inputs for the deviation report (default 2)")
    p.set_defaults(func=cmd_prune)

    p = add("quantize", "post-training int8 quantization: a float model to a QDQ ONNX model")
    p.add_argument("model", metavar="MODEL", help="an .onnx file (float)")
    p.add_argument("--calibration", required=True, metavar="random|DIR",
                   help="'random' or a folder of .npy/.npz calibration inputs")
    p.add_argument("-o", "--output", required=True, metavar="OUT.onnx", help="where to write the QDQ model")
    p.add_argument("--activations", choices=("uint8", "int8"), default="uint8", help="activation type (uint8)")
    p.add_argument("--method", choices=("minmax", "percentile", "entropy"), default="minmax",
                   help="range calibration (default minmax)")
    p.add_argument("--per-tensor", action="store_true", help="one weight scale per tensor (default: per channel)")
    p.add_argument("--batches", type=int, default=16, help="calibration batches to use (default 16; 0: all files)")
    p.add_argument("--seed", type=int, default=0, help="seed of the random calibration inputs (default 0)")
    p.set_defaults(func=cmd_quantize)
    return parser


# =========================================================================================================
# errors and the entry point
# =========================================================================================================
_HINTS = {
    "UnsupportedOpError": "'cnnjit conformance' lists the operators cnnjit supports",
    "InputError": "'cnnjit inspect MODEL' shows the model's inputs and their shapes",
    "ShapeError": "the model's shapes are inconsistent; check it with onnx.checker.check_model(model, full_check=True)",
    "ModelError": "is it an ONNX model? check it with: python -c \"import onnx; onnx.checker.check_model('MODEL')\"",
    "ResourceLimitError": "the model is larger than cnnjit's limits for tiny CNNs",
    "CompileError": "rerun with --debug for the traceback, and report it with the model",
    "IRError": "this is a compiler bug: rerun with --debug for the traceback, and report it with the model",
}


def one_line(message: str) -> tuple[str, str]:
    """A multi-line error message as (one line, extra hint): bullet lines are folded into the first line."""
    lines = [ln.strip() for ln in str(message).splitlines() if ln.strip()]
    if not lines:
        return "", ""
    bullets = [ln[2:] for ln in lines[1:] if ln.startswith("- ")]
    rest = [ln for ln in lines[1:] if not ln.startswith("- ")]
    first = lines[0]
    if bullets:
        first = first.rstrip(":") + ": " + "; ".join(bullets[:3]) + (f"; and {len(bullets) - 3} more"
                                                                      if len(bullets) > 3 else "")
    return clean(first, 400), clean(" ".join(rest), 300)


def _report(cmd: str, kind: str, message: str, hint: str, code: int, as_json: bool) -> int:
    line, extra = one_line(message)
    print(f"{cmd}: error: {line}", file=sys.stderr)
    h = hint or extra
    if h:
        print(f"hint: {clean(h, 300)}", file=sys.stderr)
    if as_json:
        emit_json({"error": line, "type": kind, "hint": h or None, "exit_code": code})
    return code


def _setup_logging(level: int) -> None:
    if level <= 0:
        return
    log = logging.getLogger("cnnjit")
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("cnnjit: %(levelname)s: %(message)s"))
    log.addHandler(handler)
    log.setLevel(logging.INFO if level == 1 else logging.DEBUG)


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``cnnjit`` console script; returns the exit code."""
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as e:  # --help, --version, usage errors
        return int(e.code or 0) if not isinstance(e.code, str) else EXIT_USAGE
    if not getattr(args, "command", None):
        parser.print_help()
        return EXIT_USAGE
    as_json = bool(getattr(args, "json", False))
    debug = bool(getattr(args, "debug", False))
    args.json = as_json
    _setup_logging(int(getattr(args, "verbose", 0) or 0))
    cmd = f"cnnjit {args.command}"
    from .errors import CnnjitError

    try:
        return int(args.func(args))
    except UsageError as e:
        if debug:
            import traceback

            traceback.print_exc()
        return _report(cmd, "UsageError", str(e), e.hint or f"{cmd} --help shows the options and an example",
                       EXIT_USAGE, as_json)
    except CnnjitError as e:
        if debug:
            import traceback

            traceback.print_exc()
        hint = _HINTS.get(type(e).__name__, "")
        if "does not exist" in str(e) or "is a folder" in str(e):
            hint = "check the path (relative paths start from the current folder)"
        return _report(cmd, type(e).__name__, str(e), hint, EXIT_ERROR, as_json)
    except CliError as e:
        if debug:
            import traceback

            traceback.print_exc()
        return _report(cmd, "CliError", str(e), e.hint, EXIT_ERROR, as_json)
    except KeyboardInterrupt:
        print(f"{cmd}: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # stdout closed early (``cnnjit inspect m.onnx | head``): not an error
        try:
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        except OSError:
            pass
        return EXIT_OK
    except Exception as e:  # noqa: BLE001 - the one place that turns a bug into a clear message
        if debug:
            raise
        return _report(cmd, type(e).__name__, f"internal error: {type(e).__name__}: {e}",
                       "rerun with --debug for the traceback, and report it with the model", EXIT_ERROR, as_json)


if __name__ == "__main__":
    sys.exit(main())
