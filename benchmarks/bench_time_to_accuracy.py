"""Time to accuracy: alexnet_cifar.yaml's own recipe on CIFAR-10 (goal >= 80% test accuracy in < 15 min).

    python benchmarks/bench_time_to_accuracy.py [--epochs N] [--json FILE]

Runs `python -m builder train arch_specs/alexnet_cifar.yaml` through the Python API, from the
repository root (the recipe's dataset root, ../shared/datasets/cifar10, is relative to it), and
records the test accuracy after every epoch with the wall time since the call began: start-up
(reading the decoded images from the on-disk cache, or decoding them on a first run, and building
the model) is included. Without the dataset the row says so and the script exits 0.
"""

from __future__ import annotations

import os
import tempfile
import time
from pathlib import Path

import torch
from common import ROOT, SPECS, Row, emit, parser

from builder.lang.loading import load_spec
from builder.tools.bench import cpu_sample, other_cpus_between
from training import TrainingConfig, train
from training.metrics import EpochMetrics
from training.precision import resolve_precision

SPEC = SPECS / "alexnet_cifar.yaml"
GOAL_ACC, GOAL_S = 0.80, 15 * 60


def table(history: tuple[EpochMetrics, ...], walls: list[float], startup: float) -> str:
    """Markdown: one row per epoch with its test accuracy and the cumulative wall time."""
    lines = ["| epoch | train loss | train acc | test acc | epoch s | wall time |", "|---:|---:|---:|---:|---:|---:|",
             f"| start-up | | | | {startup:.1f} | {startup:.0f} s |"]
    for m, wall in zip(history, walls):
        test = "-" if m.test_acc is None else f"{m.test_acc:.2%}"
        lines.append(f"| {m.epoch} | {m.train_loss:.4f} | {m.train_acc:.2%} | {test} | {m.seconds:.1f} | "
                     f"{wall // 60:.0f} min {wall % 60:02.0f} s |")
    return "\n".join(lines)


def first_at_goal(history: tuple[EpochMetrics, ...], walls: list[float]) -> str:
    for m, wall in zip(history, walls):
        if m.test_acc is not None and m.test_acc >= GOAL_ACC:
            return f"first >= {GOAL_ACC:.0%}: epoch {m.epoch} at {wall / 60:.1f} min"
    return f"never reached {GOAL_ACC:.0%}"


def main() -> None:
    p = parser(__doc__.splitlines()[0])
    p.add_argument("--epochs", type=int, help="override the recipe's epochs (development only)")
    args = p.parse_args()
    os.chdir(ROOT)
    spec = load_spec(SPEC)
    recipe = dict(spec.training or {})
    if args.epochs:
        recipe["epochs"] = args.epochs
    config = TrainingConfig.model_validate(recipe)
    root = Path(getattr(config.dataset, "root", ""))
    command = "python benchmarks/bench_time_to_accuracy.py" + (f" --epochs {args.epochs}" if args.epochs else "")
    chosen = resolve_precision(config, torch.device("cpu")).precision  # what `precision: auto` picks here
    options = chosen + (", channels_last" if config.channels_last else "")
    epochs = f"{config.epochs} epoch{'s' * (config.epochs != 1)}"
    name = f"time to accuracy: {SPEC.name} recipe on CIFAR-10 ({epochs}, batch {config.batch_size}, {options})"
    if not root.is_dir():
        print(f"skipped: no dataset at {root}")
        emit([Row(name, f"skipped: no dataset at {root}", ">= 80% in < 15 min", None, command)], args.json)
        return
    stamps: list[float] = []
    before, start = cpu_sample(), time.perf_counter()

    def log(line: str) -> None:
        stamps.append(time.perf_counter() - start)
        print(line, flush=True)

    with tempfile.TemporaryDirectory() as tmp:
        result = train(spec, config, out=Path(tmp) / "run", quiet=True, log=log)
    total, others = time.perf_counter() - start, other_cpus_between(before, cpu_sample())
    startup, walls = stamps[0], stamps[1 : 1 + len(result.history)]
    met = result.test_acc >= GOAL_ACC and total < GOAL_S
    busy = "" if others is None else f"; other processes used {others:.2f} CPUs on average meanwhile"
    emit([Row(name, f"{result.test_acc:.2%} final test accuracy (best {result.best_test_acc:.2%}, epoch "
              f"{result.best_epoch}) in {total / 60:.1f} min", ">= 80% in < 15 min", met, command,
              f"{first_at_goal(result.history, walls)}; start-up {startup:.1f} s{busy}\n\n"
              f"{table(result.history, walls, startup)}")], args.json)


if __name__ == "__main__":
    main()
