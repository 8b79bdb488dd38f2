"""``cnnjit run``: run a model on inputs from .npy/.npz files or seeded random data; print the outputs."""

from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import Any

import numpy as np

import cnnjit
from cnnjit.runtime.control import ControlRun

from .common import (
    EXIT_OK,
    CliError,
    UsageError,
    blame_defaults,
    check_model_path,
    check_shapes,
    parse_shapes,
    random_inputs,
    use_threads,
)
from .flags import at_least, compile_options, model_argument, output_option, precision_option, runs_option
from .output import KEEP, clean, emit_json, ms, note, to_ms, wrap

HELP = "run a model on inputs from .npy files or random data"
EPILOG = """example:
  cnnjit run model.onnx --random
  cnnjit run model.onnx --fill zeros
  cnnjit run model.onnx --input input_1=x.npy -o y.npy --json
  cnnjit run model.onnx --random --shape input_1=4,3,32,32 --threads 2 --runs 50

Inputs come from .npy files (NAME=FILE.npy, or FILE.npz holding arrays named like the inputs); --random
fills the others with seeded random data of the --shape given, or of the declared shape with symbolic
dimensions set to 1. Prints each output's shape, the top-5 classes of a classifier-shaped output ([C] or
[N, C]) and the time taken. -o writes exactly the file named: the one output as .npy, or every output
(output_0, output_1, ...) into an .npz when the name ends in .npz."""


def parents() -> list[argparse.ArgumentParser]:
    return [model_argument(), compile_options(), precision_option(),
            runs_option(10, "timed runs after the first", minimum=0),
            output_option("OUT.npy|OUT.npz", "save the output (.npy) or all outputs (.npz: output_0, output_1, ...)")]


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--input", action="append", metavar="NAME=FILE.npy", help="an input from a .npy file (repeat)")
    p.add_argument("--random", action="store_true", help="seeded random data for inputs not given (= --fill random)")
    p.add_argument("--fill", choices=["zeros", "ones", "random"],
                   help="data for inputs not given: zeros, ones or seeded random (default random with --random)")
    p.add_argument("--seed", type=at_least(0), default=0, help="random seed (default 0)")
    p.add_argument("--top", type=at_least(0), default=5, metavar="K", help="top-K classes to show (default 5; 0: none)")


def main(args: argparse.Namespace) -> int:
    given: dict[str, Any] = {}
    for item in args.input or []:
        name, sep, fname = item.rpartition("=")
        if not sep:
            fname, name = item, ""
        given.update(_load_input_file(name, fname))
    shapes = parse_shapes(args.shape)
    check_model_path(args.model)
    use_threads(args.threads)
    t0 = time.perf_counter()
    model = cnnjit.compile(args.model, fuse=not args.unfused, threads=args.threads, precision=args.precision)
    if args.output and not args.output.endswith(".npz") and len(model.output_names) > 1:
        raise UsageError(f"the model has {len(model.output_names)} outputs: -o {args.output!r} can hold one",
                         "name an .npz file (-o outputs.npz) to save them all")
    if len(model.inputs) == 1 and list(given) == [""]:
        given = {model.inputs[0].name: given[""]}
    for flag, names in (("--input", given), ("--shape", shapes)):
        unknown = [n for n in names if n not in model.input_names]
        if unknown:
            raise UsageError(f"{flag} names unknown input(s) {unknown}",
                             "the model's inputs are " + ", ".join(s.describe() for s in model.inputs))
    check_shapes(model.inputs, shapes)
    for name, dims in shapes.items():
        if name in given and tuple(given[name].shape) != dims:
            raise UsageError(f"--shape {name}={','.join(map(str, dims))} does not match the shape "
                             f"{tuple(given[name].shape)} of its --input")
    missing = [s for s in model.inputs if s.name not in given]
    fill = args.fill or ("random" if args.random else None)
    if missing and not fill:
        raise UsageError("no data for input(s) " + ", ".join(s.describe() for s in missing),
                         f"pass --input {missing[0].name}=FILE.npy, or --random (--fill zeros|ones) to fill them")
    notes: list[str] = []
    filled = random_inputs(model, {s.name: _random_shape(s, shapes.get(s.name), notes) for s in missing}, args.seed)
    given.update(filled if fill == "random" else {k: np.full_like(v, fill == "ones") for k, v in filled.items()})
    for n in notes:
        note(n)
    feeds = {s.name: given[s.name] for s in model.inputs}
    # the specialisation for these inputs, compiled now if the shapes are symbolic (not at the first call),
    # so that the times below say which stage took them
    arrays = dict(zip(model.input_names, model._validate(feeds)))  # the checks (and conversions) of a call
    with blame_defaults(missing, shapes):
        spec = model.specialization({k: a.shape for k, a in arrays.items()},
                                    {s.name: arrays[s.name] for s in model.inputs if s.by_value})
    t2 = time.perf_counter()
    outs = model.run(None, feeds)
    t3 = time.perf_counter()
    stages = _stage_times(t2 - t0, t3 - t2, spec)
    times = []
    for _ in range(max(args.runs, 0)):
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
        _save_outputs(args.output, outs)
    doc = {"model": args.model,
           "inputs": {k: {"shape": list(v.shape), "dtype": str(v.dtype)} for k, v in feeds.items()},
           "outputs": results, "notes": notes, **to_ms(stages), "run_ms": steady * 1e3 if steady is not None else None,
           "output_file": args.output}
    if args.json:
        emit_json(doc)
        return EXIT_OK
    for r in results:
        line = f"output {clean(r['name'], 60)!r}: {r['dtype']}[{', '.join(map(str, r['shape']))}]"
        if "min" in r:
            line += f"  min {r['min']:.4g}  max {r['max']:.4g}  mean {r['mean']:.4g}"
        print(wrap(line))
        if "top" in r:
            row = " (row 0)" if len(r["shape"]) == 2 and r["shape"][0] > 1 else ""
            print(wrap(f"  top-{len(r['top'])}{row}: " + ", ".join(f"class{KEEP}{i}{KEEP}({v:.4f})"
                                                                for i, v in r["top"]), indent="    "))
    t = (f"time: load{KEEP}{ms(stages['load_s'])}{KEEP}ms, import{KEEP}{ms(stages['import_s'])}{KEEP}ms, "
         f"compile{KEEP}{ms(stages['compile_s'])}{KEEP}ms ({stages['kernels']}), first{KEEP}call"
         f"{KEEP}{ms(stages['first_run_s'])}{KEEP}ms")
    if steady is not None:
        t += f", run{KEEP}{ms(steady)}{KEEP}ms (median of {len(times)})"
    print(wrap(t))
    if args.output:
        names = ("output_0" if len(outs) == 1 else f"output_0..output_{len(outs) - 1}") \
            if args.output.endswith(".npz") else "the output"
        print(wrap(f"wrote{KEEP}{args.output} ({names}: " + ", ".join(repr(clean(n, 40)) for n in model.output_names)
                   + ")"))
    return EXIT_OK


def _stage_times(before_first: float, first: float, spec: Any) -> dict[str, Any]:
    """What the time before the first call went into, from the specialisation's own timings: ``load_s``
    (reading and checking the model file), ``import_s`` (ONNX to IR at these shapes), ``compile_s`` (passes
    and code generation, with the kernels' compile or cache loads: ``kernels`` says which), and
    ``first_run_s``, the first call alone."""
    t = spec.timings
    if isinstance(spec, ControlRun):  # a model with loops: its segments compile at the first call
        return {"load_s": before_first, "import_s": 0.0, "compile_s": 0.0,
                "kernels": "segments and loop bodies compiled in the first call", "first_run_s": first}
    report = spec.program.meta.get("compile_report")
    kernels = f"{len(spec.program.kernel_sources)} kernels"
    if report is not None:
        kernels += ": " + ", ".join(f"{n} {origin}" for origin, n in report.counts().items())
    return {"load_s": max(0.0, before_first - sum(t.values())), "import_s": t.get("import", 0.0),
            "compile_s": t.get("passes", 0.0) + t.get("codegen", 0.0), "kernels": kernels, "first_run_s": first}


def _random_shape(s: Any, given: tuple[int, ...] | None, notes: list[str]) -> tuple[int, ...]:
    """The shape of random data for input ``s``: ``given`` (``--shape``), else the declared shape with
    symbolic dimensions set to 1 (each noted in ``notes``)."""
    if s.by_value:
        raise UsageError(f"input {s.name!r} sets shapes or attributes of the model; --random cannot "
                         "choose it", f"give it with --input {s.name}=FILE.npy")
    if given is not None:
        return given
    if s.dims is None:
        raise UsageError(f"input {s.describe()} has no declared rank: --random cannot choose a shape",
                         f"give it with --input {s.name}=FILE.npy, or its shape with --shape {s.name}=DIMS")
    dims = []
    for i, d in enumerate(s.dims):
        if d is None:
            sym = s.dim_names[i] if i < len(s.dim_names) and s.dim_names[i] else "?"
            notes.append(f"--random: symbolic dimension {sym!r} of input {s.name!r} set to 1")
            dims.append(1)
        else:
            dims.append(d)
    return tuple(dims)


def _save_outputs(name: str, outs: list[Any]) -> None:
    """Write exactly the file ``name``: an .npz of every output (``output_i``) if it ends in .npz, else the
    one output as .npy data (numpy's own savers would append .npy / .npz to other names)."""
    try:
        with open(name, "wb") as f:
            if name.endswith(".npz"):
                np.savez(f, **{f"output_{i}": y for i, y in enumerate(outs)})
            else:
                np.save(f, outs[0])
    except OSError as e:
        raise CliError(f"cannot write {name!r}: {e.strerror or e}") from None


def _load_input_file(name: str, fname: str) -> dict[str, Any]:
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
