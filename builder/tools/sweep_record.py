"""What a sweep reads and writes in each variant's run directory: its record (variant.json,
also read by the leaderboard) and how far the run got."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Literal

from builder.lang.files import write_text
from training.runfiles import CHECKPOINT, METRICS, RECORD, WEIGHTS


def run_state(run_dir: Path, epochs: int) -> Literal["done", "resume", "new"]:
    """done: weights and `epochs` rows of metrics; resume: a checkpoint; new: nothing to continue."""

    metrics = run_dir / METRICS
    rows = len(metrics.read_text().splitlines()) - 1 if metrics.is_file() else 0
    if (run_dir / WEIGHTS).is_file() and rows >= epochs:
        return "done"
    return "resume" if (run_dir / CHECKPOINT).is_file() else "new"


def write_record(run_dir: Path, record: dict[str, Any]) -> None:
    """variant.json, atomically (a sweep killed mid-write leaves the old one)."""
    write_text(run_dir / RECORD, json.dumps(record, indent=2) + "\n")


def read_record(run_dir: Path) -> dict[str, Any] | None:
    try:
        data = json.loads((run_dir / RECORD).read_text())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None
