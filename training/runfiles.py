"""The names of the files in a run directory, in one place and torch-free: the trainer writes
them, the tools read them, and the output rule (training.outputs) never lets a command replace
one of them."""

from __future__ import annotations

from pathlib import Path

SPEC_FILE = "spec.yaml"  # the resolved spec with its full training section, as last trained
RUN_INFO = "run.json"  # classes, input shape, eval-time preprocessing (training.runinfo)
SUMMARY_FILE = "summary.txt"
METRICS = "metrics.csv"
CURVES = "curves.png"
CHECKPOINT = "checkpoint.pt"
WEIGHTS = "model.safetensors"  # the final epoch's weights
BEST = "best.safetensors"  # the best validation epoch's weights
RESULTS = "results.json"
BOARD_DIR = "tensorboard"
LOCK = ".lock"  # held (flock) by the run writing into the directory, for its whole life
RECORD = "variant.json"  # what a sweep knows about its variant's run directory
LOG = "train.log"  # a sweep variant's child output

RUN_FILES = frozenset({SPEC_FILE, RUN_INFO, SUMMARY_FILE, METRICS, CURVES, CHECKPOINT, WEIGHTS, BEST, RESULTS,
                       BOARD_DIR, LOCK, RECORD, LOG})
MARKERS = ((RUN_INFO,), (CHECKPOINT,), (RECORD,), (LOCK, SPEC_FILE))  # any one set makes a directory a run's


def is_run_dir(path: Path) -> bool:
    """Whether `path` holds a run (finished, running, or a sweep's variant that has not started)."""
    return any(all((path / name).exists() for name in names) for names in MARKERS)


def enclosing_run(path: Path) -> Path | None:
    """The run directory that the directory `path` is, or lies directly in (RUN/tensorboard,
    RUN/evaluate-best...), or None."""
    return next((d for d in (path, path.parent) if is_run_dir(d)), None)
