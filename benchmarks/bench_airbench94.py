"""Time to accuracy on CIFAR-10, side by side: the hand-written airbench94 port and arch_specs/airbench94.yaml
trained by the project's trainer (goals: 94% mean of 3 seeds in <= 15 min, 80% in <= 2 min, the
spec's time to 94% at most 1.05x the port's).

    python benchmarks/bench_airbench94.py [--seeds 0 1 2] [--epochs N] [--json FILE]

For each seed, the port (benchmarks/airbench94_port.py) and then the spec train on the same
CIFAR-10 JPEGs (../shared/datasets/cifar10), each evaluating the whole test split with airbench's
test-time augmentation at every epoch's end. Times are wall seconds from the first training step's
preparation (the whitening fit) to each evaluation's end, evaluations included, for both alike;
data loading is not counted. `--epochs` shortens both schedules alike (the spec's epochs are
whole; the port trains as many); `--train-size`/`--test-size` make a smoke run. Prints, per
contender, the mean wall time to first reach 80%, 90% and 94%, the mean final accuracy, and the
training images per wall second; then every epoch of every run.
"""

from __future__ import annotations

import importlib.util
import os
import statistics
import tempfile
import time
from pathlib import Path
from types import ModuleType

import torch
from common import ROOT, SPECS, Row, emit, parser

from builder.lang.loading import load_spec
from builder.tools.bench import cpu_sample, other_cpus_between
from training import TrainingConfig, train

SPEC = SPECS / "airbench94.yaml"
THRESHOLDS = (0.80, 0.90, 0.94)
Run = list[tuple[int, float, float]]  # (epoch, test accuracy, wall seconds so far)


def the_port() -> ModuleType:
    spec = importlib.util.spec_from_file_location("airbench94_port", ROOT / "benchmarks" / "airbench94_port.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def port_run(port: ModuleType, data: dict[str, tuple[torch.Tensor, torch.Tensor]], seed: int,
             epochs: float) -> Run:
    result = port.train(data, seed, epochs, log=False)
    return [(h["epoch"], h["test_acc"], h["wall"]) for h in result["history"]]


def spec_run(config: TrainingConfig, seed: int) -> Run:
    spec, stamps = load_spec(SPEC), []

    def log(line: str) -> None:  # the first line is the start (data loaded, model built); then one per epoch
        stamps.append(time.perf_counter())

    with tempfile.TemporaryDirectory() as tmp:
        result = train(spec, config.model_copy(update={"seed": seed}), out=Path(tmp) / "run", quiet=True, log=log)
    walls = [t - stamps[0] for t in stamps[1 : 1 + len(result.history)]]
    return [(m.epoch, float(m.test_acc), wall) for m, wall in zip(result.history, walls)]


def first_reach(run: Run, threshold: float) -> float | None:
    return next((wall for _, acc, wall in run if acc >= threshold), None)


def reach_times(runs: list[Run], threshold: float) -> list[float]:
    """The wall seconds to `threshold` of each run that reached it."""
    return [w for w in (first_reach(r, threshold) for r in runs) if w is not None]


def summary(name: str, runs: list[Run], images_per_epoch: int) -> str:
    """One line: mean time to each threshold (over the seeds that reached it), final accuracy, images/s."""
    cells = []
    for t in THRESHOLDS:
        times = reach_times(runs, t)
        reached = f"{statistics.mean(times) / 60:.1f} min" if times else "not reached"
        cells.append(f"{t:.0%}: {reached} ({len(times)}/{len(runs)})")
    final = statistics.mean(r[-1][1] for r in runs)
    rate = statistics.mean(images_per_epoch * r[-1][0] / r[-1][2] for r in runs)
    return f"| {name} | {' | '.join(cells)} | {final:.2%} | {rate:.0f} |"


def epochs_table(runs: dict[str, list[Run]], seeds: list[int]) -> str:
    lines = ["| contender | seed | epoch | test acc (TTA) | wall |", "|---|---:|---:|---:|---:|"]
    for name, contender in runs.items():
        for seed, run in zip(seeds, contender):
            lines += [f"| {name} | {seed} | {e} | {a:.2%} | {w / 60:.1f} min |" for e, a, w in run]
    return "\n".join(lines)


def main() -> None:
    p = parser(__doc__.splitlines()[0])
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--epochs", type=int, help="both schedules this long (default: the spec's 10; the port's 9.9)")
    p.add_argument("--train-size", type=int, help="a smoke run on this many training images")
    p.add_argument("--test-size", type=int, help="and this many test images")
    args = p.parse_args()
    os.chdir(ROOT)  # the recipe's dataset root is relative to the repository
    port, recipe = the_port(), dict(load_spec(SPEC).training or {})
    if args.epochs:
        recipe["epochs"] = args.epochs
    recipe["dataset"] = {**recipe["dataset"], "train_size": args.train_size, "test_size": args.test_size}
    config = TrainingConfig.model_validate(recipe)
    root = Path(config.dataset.root)  # type: ignore[union-attr]
    cache = Path(os.path.expanduser("~/.cache/airbench94_port"))
    data = {s: port.load_split(root, s, cache) for s in ("train", "test")}
    for split, size in (("train", args.train_size), ("test", args.test_size)):
        if size:
            keep = torch.randperm(len(data[split][1]), generator=torch.Generator().manual_seed(0))[:size]
            data[split] = (data[split][0][keep], data[split][1][keep])
    before = cpu_sample()
    runs: dict[str, list[Run]] = {"hand-written port": [], "airbench94.yaml": []}
    for seed in args.seeds:
        runs["hand-written port"].append(port_run(port, data, seed, args.epochs or port.HYP["epochs"]))
        runs["airbench94.yaml"].append(spec_run(config, seed))
    others = other_cpus_between(before, cpu_sample())
    per_epoch = len(data["train"][1]) // config.batch_size * config.batch_size
    table = ["| contender | " + " | ".join(f"time to {t:.0%} (seeds)" for t in THRESHOLDS)
             + " | final acc (mean) | train images/s |", "|---|---:|---:|---:|---:|---:|"]
    table += [summary(name, contender, per_epoch) for name, contender in runs.items()]
    port_94, spec_94 = (reach_times(contender, 0.94) for contender in runs.values())
    every = len(port_94) == len(spec_94) == len(args.seeds)  # a mean over the seeds, when every run got there
    ratio = f"{statistics.mean(spec_94) / statistics.mean(port_94):.2f}x" if every else "n/a (94% not reached by all)"
    busy = "" if others is None else f"; other processes used {others:.2f} CPUs on average"
    command = "python benchmarks/bench_airbench94.py --seeds " + " ".join(map(str, args.seeds)) + (
        f" --epochs {args.epochs}" if args.epochs else "")
    emit([Row(f"airbench94 on CIFAR-10, {len(args.seeds)} seeds, {config.epochs} epochs: spec vs hand-written port",
              f"spec's time to 94% / port's: {ratio}", "94% <= 15 min, 80% <= 2 min, <= 1.05x the port",
              None, command, "\n".join(table) + f"\n\n{epochs_table(runs, args.seeds)}{busy}")], args.json)


if __name__ == "__main__":
    main()
