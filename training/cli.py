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

from builder.lang.errors import BuilderError, Document, SpecError, validate
from builder.lang.loading import apply_override, resolve_document, spec_from_document
from training.errors import ConfigProblems, QuietExit, TrainingFailed, TrainingInterrupted, TrainUsageError
from training.flags import TRAIN_FLAGS, add_run_flags

if TYPE_CHECKING:
    from builder.lang.spec import Spec
    from training.config import TrainingConfig

def add_train_parser(sub: Any, add_spec_args: Callable[..., None]) -> None:
    """Register the `train` subcommand on the builder CLI's subparsers."""
    p = sub.add_parser(
        "train", help="train a spec on real data",
        description="Train a spec with its training: section (see the README), overridden by these flags.",
    )
    # SPEC may be left out with --resume: the run's own resolved spec.yaml is used.
    add_spec_args(p, spec_help="path to a YAML spec (with --resume it may be left out: RUN_DIR/spec.yaml)", nargs="?")
    add_run_flags(p, " (sets training.dataset)")
    p.add_argument("--out", metavar="DIR", help="output directory (default runs/<spec name>-<timestamp>)")
    p.add_argument("--resume", metavar="RUN_DIR", help="continue the run in RUN_DIR from its checkpoint")
    p.add_argument("--quiet", action="store_true", help="no progress bars: one line per epoch, for logs")
    p.set_defaults(func=run_train)


def load_training(args: argparse.Namespace) -> tuple[Document, Spec, TrainingConfig]:
    """The spec and its training config from SPEC, `--set` and the trainer flags (located errors)."""
    from training.config import TrainingConfig  # its models are built here, not at the CLI's start

    doc = resolve_document(spec_path(args))
    if doc.data.get("training") is None:
        doc.data["training"] = {}
    if args.data is not None:  # first, so `--set training.dataset.X=...` applies to the dataset it names
        apply_data_flag(doc, args.data)
    for override in args.overrides:
        apply_override(doc, override)
    given = [(flag, getattr(args, flag.dest)) for flag in TRAIN_FLAGS if getattr(args, flag.dest) is not None]
    for flag, value in given:
        apply_override(doc, f"{flag.field}={value}", source=f"{flag.name} {value}")
    spec = spec_from_document(doc)
    found = [d for flag, value in given if (d := flag.over_limit(value)) is not None]
    try:
        config = validate(TrainingConfig, doc, prefix=("training",))
    except SpecError as exc:  # a flag's own bound says it once: the config's same field is not repeated
        said = {d.path for d in found}
        raise SpecError([*found, *(d for d in exc.diagnostics if d.path not in said)]) from None
    if found:
        raise SpecError(found)
    return doc, spec, config


def spec_path(args: argparse.Namespace) -> str:
    """SPEC, or with --resume alone the run's resolved spec (its recipe as last trained)."""
    if args.spec is not None:
        return str(args.spec)
    if args.resume is None:
        raise TrainUsageError("train needs a SPEC, or --resume RUN_DIR to continue a run")
    from training.runfiles import SPEC_FILE

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
