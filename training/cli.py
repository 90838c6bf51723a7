"""`python -m builder train SPEC`: argument parsing and config loading; torch is imported when it runs.

Each trainer flag is an override of the spec's `training:` section, applied like `--set` but
located at the flag, so `--epochs 0` reports `--epochs 0: error: training.epochs: must be > 0`.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from builder.lang.errors import BuilderError, Document, validate
from builder.lang.loading import apply_override, resolve_document, spec_from_document
from training.config import TrainingConfig
from training.errors import ConfigProblems, QuietExit, TrainingFailed, TrainingInterrupted, TrainUsageError
from training.runfiles import SPEC_FILE

if TYPE_CHECKING:
    from builder.lang.spec import Spec

# (argparse dest, flag, field path under the document, metavar, help)
FLAGS = (
    ("epochs", "--epochs", "training.epochs", "N", "number of epochs"),
    ("batch_size", "--batch-size", "training.batch_size", "N", "mini-batch size"),
    ("lr", "--lr", "training.optimizer.lr", "LR", "learning rate, the peak one for one_cycle"),
    ("seed", "--seed", "training.seed", "N", "seed of weights, shuffling, augmentation and dropout"),
    ("device", "--device", "training.device", "DEVICE", "auto (cuda, then mps, then cpu), cpu, cuda, cuda:N, mps"),
    ("threads", "--threads", "training.threads", "N", "CPU threads (default: torch's, one per core)"),
    ("init", "--init", "training.init.weights", "PATH", "start from these .safetensors weights (fine-tuning)"),
)


def add_train_parser(sub: Any, add_spec_args: Callable[[argparse.ArgumentParser], None]) -> None:
    """Register the `train` subcommand on the builder CLI's subparsers."""
    p = sub.add_parser(
        "train", help="train a spec on real data",
        description="Train a spec with its training: section (see the README), overridden by these flags.",
        epilog="examples: python -m builder train arch_specs/alexnet_digits.yaml --epochs 4; "
               "python -m builder train --resume runs/alexnet_digits-20250101-120000",
    )
    add_spec_args(p)
    # SPEC may be left out with --resume: the run's own resolved spec.yaml is used.
    spec_arg = next(a for a in p._actions if a.dest == "spec")
    spec_arg.nargs, spec_arg.help = "?", "path to a YAML spec (with --resume it may be left out: RUN_DIR/spec.yaml)"
    for dest, flag, path, metavar, text in FLAGS:
        p.add_argument(flag, dest=dest, metavar=metavar, help=f"{text} (sets {path})")
    p.add_argument(
        "--data", metavar="KIND[:ROOT]",
        help="dataset: digits, fake, cifar10[:ROOT] or image_folder:ROOT (sets training.dataset)",
    )
    p.add_argument("--out", metavar="DIR", help="output directory (default runs/<spec name>-<timestamp>)")
    p.add_argument("--resume", metavar="RUN_DIR", help="continue the run in RUN_DIR from its checkpoint")
    p.add_argument("--quiet", action="store_true", help="no progress bars: one line per epoch, for logs")
    p.set_defaults(func=run_train)


def load_training(args: argparse.Namespace) -> tuple[Document, Spec, TrainingConfig]:
    """The spec and its training config from SPEC, `--set` and the trainer flags (located errors)."""
    doc = resolve_document(spec_path(args))
    if doc.data.get("training") is None:
        doc.data["training"] = {}
    if args.data is not None:  # first, so `--set training.dataset.X=...` applies to the dataset it names
        apply_data_flag(doc, args.data)
    for override in args.overrides:
        apply_override(doc, override)
    for dest, flag, path, _, _ in FLAGS:
        value = getattr(args, dest)
        if value is not None:
            apply_override(doc, f"{path}={value}", source=f"{flag} {value}")
    spec = spec_from_document(doc)
    return doc, spec, validate(TrainingConfig, doc, prefix=("training",))


def spec_path(args: argparse.Namespace) -> str:
    """SPEC, or with --resume alone the run's resolved spec (its recipe as last trained)."""
    if args.spec is not None:
        return str(args.spec)
    if args.resume is None:
        raise TrainUsageError("train needs a SPEC, or --resume RUN_DIR to continue a run")
    path = os.path.join(args.resume, SPEC_FILE)
    if not os.path.isfile(path):
        raise TrainUsageError(f"--resume {args.resume}: not a run directory (it has no {SPEC_FILE})")
    return path


def apply_data_flag(doc: Document, text: str) -> None:
    """`--data KIND[:ROOT]`: the same kind keeps the spec's dataset options; another replaces them."""
    kind, sep, root = text.partition(":")
    source = f"--data {text}"
    current = doc.data["training"].get("dataset")
    same = isinstance(current, dict) and current.get("kind", "digits") == kind
    target = f"training.dataset.kind={json.dumps(kind)}" if same else f"training.dataset={{kind: {json.dumps(kind)}}}"
    apply_override(doc, target, source=source)
    if sep:
        apply_override(doc, f"training.dataset.root={json.dumps(root)}", source=source)


def run_train(args: argparse.Namespace) -> int:
    """Train; under torchrun, rank 0 alone reports what every rank hits (bad input, divergence...)."""
    try:
        return _run_train(args)
    except BuilderError as exc:
        if os.environ.get("RANK", "0") == "0" or isinstance(exc, TrainingFailed):
            raise
        raise QuietExit(exc.exit_code) from None


def _run_train(args: argparse.Namespace) -> int:
    doc, spec, config = load_training(args)
    from training.trainer import train

    try:
        train(spec, config, out=args.out, resume=args.resume, quiet=args.quiet)
    except ConfigProblems as exc:
        raise doc.diagnose(exc.problems) from None
    except TrainingInterrupted as exc:
        if exc.run_dir is not None:
            exc.resume_command = resume_command(args, str(exc.run_dir))
        raise
    return 0


def resume_command(args: argparse.Namespace, run_dir: str) -> str:
    """The command that continues this run: the run directory holds its spec and recipe."""
    words = ["python", "-m", "builder", "train", "--resume", run_dir]
    return shlex.join([*words, "--quiet"] if args.quiet else words)
