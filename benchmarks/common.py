"""Shared helpers of the benchmark scripts: interleaved repeats, medians, JSON rows.

Every comparison runs its contenders round-robin (repeat 1 of each, then repeat 2, ...) in one
process, so a noisy neighbour slows all of them alike, and reports medians and their ratio.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
SPECS = ROOT / "arch_specs"


@dataclass
class Row:
    """One line of BENCHMARKS.md: what was measured, the figure, the goal, and how to reproduce it."""

    name: str
    figure: str
    goal: str
    met: bool | None
    command: str
    details: str = ""


def interleaved(contenders: dict[str, Callable[[], float]], repeats: int) -> dict[str, list[float]]:
    """Call each contender once per round, `repeats` rounds; the values each returned. The order
    reverses every other round (A B, B A, ...): a contender that always ran first would always pay
    for starting after the other (the allocator's and the caches' state: built efficientnet_b0
    measured 0.94x torchvision's first in every round, 0.99x in alternation)."""
    results: dict[str, list[float]] = {name: [] for name in contenders}
    names = list(contenders)
    for round_ in range(repeats):
        for name in names if round_ % 2 == 0 else names[::-1]:
            results[name].append(contenders[name]())
    return results


def median(values: Sequence[float]) -> float:
    return statistics.median(values)


def spread(values: Sequence[float], fmt: str = "{:.1f}") -> str:
    return f"median {fmt.format(median(values))} (min {fmt.format(min(values))}, max {fmt.format(max(values))})"


def timed_run(cmd: list[str], env: dict[str, str] | None = None) -> float:
    """Wall seconds of one subprocess run (it must succeed)."""
    start = time.perf_counter()
    subprocess.run(cmd, check=True, capture_output=True, cwd=ROOT, env=env)
    return time.perf_counter() - start


def machine() -> str:
    import os

    return f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}"


def parser(description: str) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=description)
    p.add_argument("--json", type=Path, help="also write the result rows to this JSON file")
    p.add_argument("--repeats", type=int, default=5, help="interleaved repeats (default 5)")
    return p


def emit(rows: list[Row], json_path: Path | None) -> None:
    """Print the rows and optionally write them as JSON for run_all.py."""
    for row in rows:
        status = {True: "met", False: "NOT met", None: "-"}[row.met]
        print(f"{row.name}: {row.figure}  [goal {row.goal}: {status}]")
        if row.details:
            print(f"    {row.details}")
    if json_path:
        json_path.write_text(json.dumps([asdict(r) for r in rows], indent=2))


def python() -> str:
    return sys.executable


def trainer_epoch(spec: Any, config: Any) -> Callable[[], float]:
    """A contender: seconds from the trainer's banner (data loaded, model built) to its first
    epoch line, for a one-epoch run into a temporary directory."""
    from training import train

    def run() -> float:
        stamps: list[float] = []
        with tempfile.TemporaryDirectory() as tmp:
            train(spec, config, out=Path(tmp) / "run", quiet=True, log=lambda line: stamps.append(time.perf_counter()))
        return stamps[1] - stamps[0]

    return run
