"""``cnnjit quantize``: post-training int8 quantization (``cnnjit.quantize``) of a float model to QDQ ONNX."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

import numpy as np

from cnnjit.compiler.frontend.loader import input_specs, load_model
from cnnjit.compiler.stages import resolve_shapes
from cnnjit.quantization import quantize

from .common import EXIT_OK, UsageError, check_model_path, did_you_mean, model_shapes, save_model
from .flags import at_least, compile_options, model_argument, output_option
from .output import emit_json, print_table

HELP = "post-training int8 quantization: a float model to a QDQ ONNX model"
EPILOG = """example:
  cnnjit quantize resnet8.onnx --calibration random -o resnet8.int8.onnx
  cnnjit quantize kws.onnx --calibration calib/ --activations int8 --method entropy -o kws.int8.onnx --json
  cnnjit quantize rec.onnx --calibration random --shape x=1,3,48,320 -o rec.int8.onnx

Writes a standard QDQ model (onnxruntime runs it too; 'cnnjit run' compiles it to integer kernels) and prints
per-layer scales and the output deviation from the float model on the calibration inputs. --calibration is
'random' (seeded standard-normal inputs of the --shape given; symbolic dimensions of the others: 1) or a
folder of .npy (single input) / .npz (by input name) files (each checked against --shape when given).
--threads and --unfused: how cnnjit compiles the float model (calibration) and the QDQ model (evaluation)."""


def parents() -> list[argparse.ArgumentParser]:
    return [model_argument("an .onnx file (float)"), compile_options(),
            output_option("OUT.onnx", "where to write the QDQ model", required=True)]


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--calibration", required=True, metavar="random|DIR",
                   help="'random' or a folder of .npy/.npz calibration inputs")
    p.add_argument("--activations", choices=("uint8", "int8"), default="uint8", help="activation type (uint8)")
    p.add_argument("--method", choices=("minmax", "percentile", "entropy"), default="minmax",
                   help="range calibration (default minmax)")
    p.add_argument("--per-tensor", action="store_true", help="one weight scale per tensor (default: per channel)")
    p.add_argument("--batches", type=at_least(0), default=16,
                   help="calibration batches to use (default 16; 0: all files)")
    p.add_argument("--seed", type=at_least(0), default=0, help="seed of the random calibration inputs (default 0)")


def main(args: argparse.Namespace) -> int:
    check_model_path(args.model)
    with model_shapes(args) as shapes:  # --shape checked before any work; shape errors at defaulted dims blamed
        batches = _calibration_batches(args.model, args.calibration, args.batches, args.seed, shapes)
        try:
            q = quantize(args.model, batches, per_channel=not args.per_tensor, activations=args.activations,
                         method=args.method, compile_options={"threads": args.threads, "fuse": not args.unfused})
        except ValueError as e:
            raise UsageError(str(e)) from e
    save_model(q, args.output)
    if args.json:
        emit_json({"model": args.model, "output": args.output, "options": q.options,
                   "activations": {k: {"scale": s, "zero_point": z} for k, (s, z) in q.activations.items()},
                   "deviation": q.deviation})
        return EXIT_OK
    o = q.options
    print_table(f"int8 PTQ: activations {o.get('activations')}, per channel {o.get('per_channel')}, method "
                f"{o.get('method')}, {o.get('batches')} calibration batches",
                ["activation tensor", "scale", "zero point"],
                [[k, f"{s:.6g}", str(z)] for k, (s, z) in q.activations.items()],
                right=("scale", "zero point"), free=("activation tensor",))
    print_table("weight scales per layer", ["weights of", "min scale", "max scale"],
                [[k, f"{a:.4g}", f"{b:.4g}"] for k, (a, b) in q.weights.items()],
                right=("min scale", "max scale"), free=("weights of",),
                footer=["output deviation vs the float model (cnnjit int8 on the calibration inputs):",
                        *(f"  {k}: " + ", ".join(f"{a}={b:.4g}" for a, b in d.items())
                          for k, d in q.deviation.items())])
    print(f"wrote {args.output}")
    return EXIT_OK


def _calibration_batches(model: str, source: str, count: int, seed: int, shapes: dict[str, tuple[int, ...]]
                         ) -> list[dict]:
    """``random``: ``count`` seeded standard-normal batches of ``shapes`` (the ``--shape`` given, symbolic dims
    of the other inputs = 1); else a folder of .npy/.npz files (their arrays checked against ``shapes``)."""
    proto = load_model(model)
    specs = list(input_specs(proto))
    if source == "random":
        resolved, _notes = resolve_shapes(proto, shapes)
        rng = np.random.default_rng(seed)
        return [{s.name: rng.standard_normal(resolved[s.name]).astype(s.dtype) for s in specs} for _ in range(count)]
    folder = Path(source)
    if not folder.is_dir():
        raise UsageError(f"--calibration must be 'random' or a folder of .npy/.npz files, got {source!r}")
    batches = []
    for f in sorted(folder.iterdir()):
        if f.suffix == ".npy" and len(specs) == 1 or f.suffix == ".npz":
            batches.append(_load_batch(f, specs))
            for name, dims in shapes.items():
                if tuple(batches[-1][name].shape) != dims:
                    raise UsageError(f"calibration file {str(f)!r}: input {name!r} has shape "
                                     f"{tuple(batches[-1][name].shape)}, --shape says {dims}", _CAL_HINT)
    if not batches:
        raise UsageError(f"no calibration batches (.npy for single-input models, .npz otherwise) in {source!r}")
    return batches[:count] if count > 0 else batches


_CAL_HINT = "each file holds one batch of the model's inputs: .npy for a single-input model, else .npz by input name"


def _load_batch(f: Path, specs: list[Any]) -> dict[str, np.ndarray]:
    """One calibration batch from ``f`` (.npy: the single input; .npz: by input name), checked against the
    model's inputs ``specs`` so that a wrong file is reported by its name, not as a bad input deep inside."""
    try:
        data = np.load(f, allow_pickle=False)
        if isinstance(data, np.ndarray):
            batch = {specs[0].name: data}
        else:
            with data:
                batch = {k: data[k] for k in data.files}
    except Exception as e:  # noqa: BLE001 - numpy raises several types for bad files
        raise UsageError(f"calibration file {str(f)!r} is not a file numpy can read ({type(e).__name__})",
                         _CAL_HINT) from None
    names = [s.name for s in specs]
    missing, unknown = [n for n in names if n not in batch], [k for k in batch if k not in names]
    if missing or unknown:
        raise UsageError(f"calibration file {str(f)!r} holds arrays {sorted(batch)}, the model's inputs are {names}"
                         + did_you_mean(unknown, names, quote=True), _CAL_HINT)
    for s in specs:
        x = batch[s.name]
        if s.dims is not None and (x.ndim != len(s.dims)
                                   or any(w is not None and g != w for g, w in zip(x.shape, s.dims))):
            raise UsageError(f"calibration file {str(f)!r}: input {s.name!r} has shape {x.shape}, the model "
                             f"expects {s.describe()}", _CAL_HINT)
    return batch
