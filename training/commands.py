"""`python -m builder evaluate | predict | export`: using a trained run. Torch is imported when
a command runs, never at import (the builder CLI imports this to register the commands)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from builder.lang.errors import BuilderError
from training.flags import DATA, DEVICE, MAX_COUNT, MAX_WORKERS, WEIGHTS, Flag, bounded_int
from training.outputs import add_force_flag, check_output


class UsageError(BuilderError):
    """A bad argument of evaluate, predict or export (one line, exit 2)."""


def add_commands(sub: Any) -> None:
    """Register evaluate, predict and export on the builder CLI's subparsers."""
    p = sub.add_parser("evaluate", help="a run's metrics (top-1/top-5 or mIoU/Dice), per class, confusion matrix, "
                       "worst errors",
                       description="Evaluate a run's weights on its test split (or --data), as the trainer does.")
    p.add_argument("run", metavar="RUN_DIR", help="a directory written by train")
    WEIGHTS.add(p, default="best")
    DATA.add(p, more=" to evaluate on instead of the run's (its test/ split, else val/)")
    p.add_argument("--out", metavar="DIR", help="where the reports go (default RUN_DIR/evaluate-WEIGHTS[-N])")
    DEVICE.add(p, default="cpu", more="; default cpu")
    p.set_defaults(func=cmd_evaluate)

    p = sub.add_parser("predict", help="classify or segment image files or folders with a run's model",
                       description="Classify images, or segment them at their own size (jpg, png, bmp, webp; "
                                   "folders searched recursively).")
    p.add_argument("run", metavar="RUN_DIR", help="a directory written by train")
    p.add_argument("paths", metavar="PATH", nargs="+", help="image files or folders")
    WEIGHTS.add(p, default="best")
    topk = Flag("--topk", "topk", "K", "also list the K most likely classes", check=bounded_int(1, MAX_COUNT))
    topk.add(p, default=1)
    p.add_argument("-o", "--output", metavar="CSV|DIR", help="classification: write the predictions as CSV "
                   "(path,pred,prob,top2,...); segmentation: write NAME_mask.png, NAME_overlay.png and "
                   "fractions.csv into DIR")
    Flag("--workers", "workers", "N", "decoding processes (default: CPUs - 1, at most 8)",
         check=bounded_int(0, MAX_WORKERS)).add(p)
    DEVICE.add(p, default="cpu", more="; default cpu")
    add_force_flag(p)
    p.set_defaults(func=cmd_predict)

    p = sub.add_parser("samples", help="write a few images of a run's dataset as PNG files, to try predict on",
                       description="Write the first --count images of the run's test split (else "
                                   "validation) as DIR/0000.png, ... and DIR/samples.csv (each file's true "
                                   "class).")
    p.add_argument("run", metavar="RUN_DIR", help="a directory written by train")
    p.add_argument("-o", "--output", metavar="DIR", required=True, help="the folder the images go into")
    Flag("--count", "count", "N", "how many images (default 8)", check=bounded_int(1, MAX_COUNT)).add(p, default=8)
    add_force_flag(p)
    p.set_defaults(func=cmd_samples)

    p = sub.add_parser("export", help="write a run's (or a spec's) model as ONNX, TorchScript or pt2",
                       description="Export with a dynamic batch dimension; ONNX is checked with onnxruntime.")
    p.add_argument("source", metavar="RUN_DIR|SPEC", help="a run directory, or a spec (random weights, seed 0)")
    p.add_argument("--format", required=True, help="onnx, torchscript or pt2")
    WEIGHTS.add(p, default="best")
    p.add_argument("-o", "--output", metavar="FILE", help="output file (default: NAME-WEIGHTS.EXT in RUN_DIR, "
                   "or NAME.EXT here for a spec)")
    add_force_flag(p)
    p.set_defaults(func=cmd_export)


def cmd_evaluate(args: argparse.Namespace) -> int:
    from training.evaluate import evaluate_run

    device, run_dir = compute_device(args.device), Path(args.run)
    config = data_config(run_dir, args.data) if args.data else None
    out = Path(args.out) if args.out else None
    if out is not None and out.is_dir() and any(out.iterdir()):  # said before the evaluation, and again on claiming
        raise UsageError(f"--out {out} is not empty; evaluate never overwrites files: choose a new directory")
    done = evaluate_run(run_dir, out, weights=args.weights, config=config, device=device)
    print(f"{run_dir} ({args.weights} weights) {done.line}")
    print(f"wrote {done.out}: {', '.join(done.files)}")
    return 0


def cmd_samples(args: argparse.Namespace) -> int:
    from training.outputs import OutputRefused
    from training.runinfo import load_run
    from training.samples import LISTING, write_samples

    out = Path(args.output)
    if out.exists() and not out.is_dir():
        raise OutputRefused(f"-o {out}: not a directory (samples writes its images into -o DIR)")
    run = load_run(args.run, "best", "cpu")
    names = [out / f"{i:04d}.png" for i in range(args.count)] + [out / LISTING]
    for path in names:
        check_output(path, flag="-o", force=args.force, parents=True)
    out.mkdir(parents=True, exist_ok=True)
    written = write_samples(run, names[:-1])
    print(f"wrote {written} images of {run.info['dataset']} and {LISTING} into {out}")
    return 0


def compute_device(name: str) -> str:
    """The device evaluate and predict compute on, chosen as train chooses it."""
    from builder.model.device import DeviceError, find_device

    try:
        return str(find_device(name, real=True))
    except DeviceError as exc:
        raise UsageError(f"--device {name}: {exc}") from None


def data_config(run_dir: Path, data: str) -> Any:
    """The run's training config with its dataset replaced as `--data KIND[:ROOT]` says."""
    from builder.lang.errors import validate
    from builder.lang.loading import resolve_document
    from training.cli import apply_data_flag
    from training.config import TrainingConfig
    from training.runfiles import SPEC_FILE, read_run_info

    read_run_info(run_dir)
    doc = resolve_document(run_dir / SPEC_FILE)
    apply_data_flag(doc, data)
    return validate(TrainingConfig, doc, prefix=("training",))


def cmd_predict(args: argparse.Namespace) -> int:
    from training.predict import find_images
    from training.runinfo import load_run
    from training.tasks import PredictRequest
    from training.tasks.make import run_task

    if args.output and task_of(Path(args.run)) == "classification":  # segmentation checks each file it writes
        check_output(args.output, flag="-o", force=args.force)
    device = compute_device(args.device)
    run = load_run(args.run, args.weights, device)
    files = find_images(args.paths)
    if not files:
        raise UsageError(f"no images (jpg, png, bmp, webp) in {' '.join(args.paths)}")
    task = run_task(run)
    output = Path(args.output) if args.output else None
    request = PredictRequest(files, output, args.topk, args.workers, device, args.force)
    lines, errors = task.predict(run, request)
    for line in errors:
        print(f"skipped: {line}", file=sys.stderr)
    for line in lines:
        print(line)
    return 1 if errors else 0


def task_of(run_dir: Path) -> str:
    """The task in a run's run.json; classification where it cannot be read (load_run says why)."""
    from training.errors import RunDirError
    from training.runinfo import read_run_info

    try:
        return str(read_run_info(run_dir).get("task", "classification"))
    except RunDirError:
        return "classification"


def cmd_export(args: argparse.Namespace) -> int:
    import torch

    from training.export import FORMATS, ONNX_TOLERANCE, ExportError, check_sizes, export

    if args.format not in FORMATS:
        raise UsageError(f"--format {args.format}: unknown; expected {', '.join(FORMATS)}")
    if args.output:
        check_output(args.output, flag="-o", force=args.force)
    model, spec, default = export_source(Path(args.source), args.weights)
    out = Path(args.output) if args.output else default.with_name(default.name + FORMATS[args.format])
    check_output(out, flag="-o" if args.output else "", force=args.force, chosen=not args.output)
    torch.manual_seed(0)
    difference = export(model, spec, args.format, out, replace=args.force)
    sizes = check_sizes(spec) if args.format == "onnx" else []
    dynamic = "dynamic batch, height and width" if len(sizes) > 1 else "dynamic batch dimension"
    print(f"wrote {out} ({args.format}, {dynamic})")
    if difference is not None:
        at = " and ".join(f"{h}x{w}" for h, w in sizes)
        print(f"onnxruntime vs PyTorch on random input at {at}: max abs difference {difference:.3g}")
        if difference > ONNX_TOLERANCE:
            raise ExportError(f"the ONNX model differs from PyTorch by {difference:.3g} (> {ONNX_TOLERANCE:g})")
    return 0


def export_source(path: Path, weights: str) -> tuple[Any, Any, Path]:
    """(model, spec, output path without extension) of a run directory or of a spec file."""
    if path.is_dir():
        from training.runinfo import load_run

        run = load_run(path, weights)  # type: ignore[arg-type]
        return run.model, run.spec, path / f"{run.spec.name}-{weights}"
    import torch

    from builder.lang.loading import load_spec
    from builder.model.build import build_model

    spec = load_spec(path)
    torch.manual_seed(0)
    return build_model(spec), spec, Path(spec.name)
