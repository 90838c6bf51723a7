"""What a sweep reads and writes in each variant's run directory: its record (variant.json,
also read by the leaderboard) and how far the run got; the checks are training.runfiles'."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from training.runfiles import read_record, run_status, write_record

__all__ = ["read_record", "run_state", "write_record"]


def run_state(run_dir: Path, epochs: int) -> Literal["done", "resume", "new"]:
    """done: complete for `epochs` epochs; resume: a checkpoint; new: nothing to continue (runfiles.run_status)."""
    status = run_status(run_dir, epochs)
    return "done" if status == "done" else "resume" if status == "interrupted" else "new"
