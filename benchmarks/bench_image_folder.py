"""The trainer on the CIFAR-10 JPEG folder vs a plain hand-written torchvision loop (goal <= 0.65x).

    python benchmarks/bench_image_folder.py [--train-per-class 1280] [--test-per-class 200] [--repeats 3] [--json FILE]

Needs ../shared/datasets/cifar10 (ImageFolder layout, JPEGs); without it the row says so and
the script exits 0. Both contenders train alexnet_cifar.yaml (the same built model) at batch 128
with SGD for one epoch, then evaluate the test split:

- the trainer (`training.train`) with the spec's recipe on `image_folder`: images decoded once
  into memory (from its on-disk cache after the first run), augmented per batch as tensors;
  its epoch is the wall time from its banner line to its epoch line;
- the plain loop of the issue: torchvision ImageFolder, RandomCrop(32, padding=4) +
  RandomHorizontalFlip + ToTensor + Normalize, DataLoader(shuffle, 2 workers), fp32 SGD.

A fixed subset (the first N images of every class, as symlinks) keeps a repeat short; both see
the same files. In the same rounds, compute alone is timed: training steps and evaluation
forwards on an in-memory batch at the trainer's precision, turned into the seconds the epoch's
compute takes; the trainer's epoch throughput as a fraction of that is the second figure.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import torch
import torch.nn.functional as F
from common import ROOT, SPECS, Row, emit, interleaved, median, parser, spread, trainer_epoch

from builder.lang.loading import load_spec
from builder.lang.spec import Spec
from builder.model.build import build_model
from builder.tools.bench import cpu_sample, other_cpus_between, train_step
from training import TrainingConfig
from training.precision import resolve_precision

CIFAR = ROOT.parent / "shared" / "datasets" / "cifar10"
SPEC = SPECS / "alexnet_cifar.yaml"
BATCH = 128
MEAN, STD = (0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616)  # CIFAR-10's usual statistics


def subset_tree(source: Path, dest: Path, per_class: dict[str, int]) -> Path:
    """dest/<split>/<class>/<file> symlinks to the first N files (sorted) of each class."""
    for split, count in per_class.items():
        for folder in sorted((source / split).iterdir()):
            (dest / split / folder.name).mkdir(parents=True)
            for name in sorted(os.listdir(folder))[:count]:
                (dest / split / folder.name / name).symlink_to(folder / name)
    return dest


def trainer_config(spec: Spec, root: Path, cache: Path) -> TrainingConfig:
    recipe = dict(spec.training or {})
    dataset = {"kind": "image_folder", "root": str(root), "in_memory": True, "cache_dir": str(cache)}
    recipe.update(dataset=dataset, epochs=1, batch_size=BATCH)
    return resolve_precision(TrainingConfig.model_validate(recipe), torch.device("cpu"))


def plain_epoch(spec: Spec, root: Path, workers: int) -> Callable[[], float]:
    """The hand-written loop: one epoch of training and a test evaluation, in seconds."""
    from torch.utils.data import DataLoader
    from torchvision import datasets, transforms

    normalize = transforms.Normalize(MEAN, STD)
    augment = transforms.Compose([transforms.RandomCrop(32, padding=4), transforms.RandomHorizontalFlip(),
                                  transforms.ToTensor(), normalize])
    train_set = datasets.ImageFolder(str(root / "train"), augment)
    test_set = datasets.ImageFolder(str(root / "test"), transforms.Compose([transforms.ToTensor(), normalize]))
    train_loader = DataLoader(train_set, batch_size=BATCH, shuffle=True, num_workers=workers)
    test_loader = DataLoader(test_set, batch_size=BATCH, num_workers=workers)
    torch.manual_seed(0)
    model = build_model(spec)
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9, nesterov=True, weight_decay=5e-4)

    def run() -> float:
        start = time.perf_counter()
        model.train()
        for x, y in train_loader:
            opt.zero_grad(set_to_none=True)
            F.cross_entropy(model(x), y).backward()
            opt.step()
        model.eval()
        with torch.inference_mode():
            correct = sum(int((model(x).argmax(1) == y).sum()) for x, y in test_loader)
        assert correct >= 0
        return time.perf_counter() - start

    return run


def compute_epoch(spec: Spec, config: TrainingConfig, counts: tuple[int, int], steps: int) -> Callable[[], float]:
    """Seconds the epoch's compute alone takes: train steps and eval forwards on one in-memory
    batch, at the trainer's precision and memory format."""
    torch.manual_seed(0)
    layout = torch.channels_last if config.channels_last else torch.contiguous_format
    model = build_model(spec).to(memory_format=layout)
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9, nesterov=True, weight_decay=5e-4)
    x, y = torch.randn(BATCH, 3, 32, 32).contiguous(memory_format=layout), torch.randint(0, 10, (BATCH,))
    amp = torch.bfloat16 if config.precision == "bf16" else None

    def run() -> float:
        start = time.perf_counter()
        for _ in range(steps):
            train_step(model.train(), opt, x, y, amp, None)
        middle = time.perf_counter()
        with torch.inference_mode(), torch.autocast("cpu", dtype=torch.bfloat16, enabled=amp is not None):
            for _ in range(steps):
                model.eval()(x)
        end = time.perf_counter()
        per_image_train, per_image_eval = (middle - start) / (steps * BATCH), (end - middle) / (steps * BATCH)
        return counts[0] * per_image_train + counts[1] * per_image_eval

    return run


def skipped() -> Row:
    message = f"skipped: no CIFAR-10 image folder at {CIFAR}"
    print(message)
    return Row("trainer on image_folder CIFAR-10 vs plain torchvision loop", message, "<= 0.65x", None,
               "python benchmarks/bench_image_folder.py")


def main() -> None:
    p = parser(__doc__.splitlines()[0])
    p.set_defaults(repeats=3)
    p.add_argument("--train-per-class", type=int, default=1280, help="training images per class (default 1280)")
    p.add_argument("--test-per-class", type=int, default=200, help="test images per class (default 200)")
    p.add_argument("--workers", type=int, default=2, help="DataLoader workers of the plain loop (default 2)")
    p.add_argument("--steps", type=int, default=10, help="steps per compute-only repeat (default 10)")
    args = p.parse_args()
    if not CIFAR.is_dir():
        emit([skipped()], args.json)
        return
    spec = load_spec(SPEC)
    with tempfile.TemporaryDirectory() as tmp:
        root = subset_tree(CIFAR, Path(tmp) / "cifar10", {"train": args.train_per_class, "test": args.test_per_class})
        counts = (10 * args.train_per_class, 10 * args.test_per_class)
        config = trainer_config(spec, root, Path(tmp) / "cache")
        contenders = {"trainer": trainer_epoch(spec, config), "plain": plain_epoch(spec, root, args.workers),
                      "compute": compute_epoch(spec, config, counts, args.steps)}
        contenders["trainer"]()  # warm-up, and the first decode into the cache
        contenders["compute"]()
        before = cpu_sample()
        runs = interleaved(contenders, args.repeats)
        others = other_cpus_between(before, cpu_sample())
    emit(rows(runs, counts, config, args, others), args.json)


def rows(runs: dict[str, list[float]], counts: tuple[int, int], config: TrainingConfig, args: argparse.Namespace,
         others: float | None) -> list[Row]:
    trainer, plain, compute = (median(runs[k]) for k in ("trainer", "plain", "compute"))
    ratio, fraction = trainer / plain, compute / trainer
    options = config.precision + (", channels_last" if config.channels_last else "")
    size = f"{counts[0]:,} train + {counts[1]:,} test JPEGs"
    command = (f"python benchmarks/bench_image_folder.py --repeats {args.repeats} "
               f"--train-per-class {args.train_per_class} --test-per-class {args.test_per_class}")
    busy = "" if others is None else f"; other processes used {others:.2f} CPUs meanwhile"
    return [
        Row(f"trainer (image_folder, in memory, {options}) vs plain torchvision loop (2 workers, fp32): "
            f"epoch wall time, alexnet_cifar.yaml, batch {BATCH}, {size}",
            f"{ratio:.3f}x ({trainer:.1f} s vs {plain:.1f} s; {counts[0] / trainer:,.0f} vs "
            f"{counts[0] / plain:,.0f} train images per epoch-second)", "<= 0.65x", ratio <= 0.65, command,
            f"trainer s: {spread(runs['trainer'])}; plain s: {spread(runs['plain'])}{busy}"),
        Row(f"trainer epoch throughput / compute-only throughput ({options}, same epoch of {size})",
            f"{fraction:.3f} (epoch {trainer:.1f} s vs {compute:.1f} s of compute)", ">= 0.9", fraction >= 0.9,
            command, f"compute s: {spread(runs['compute'])}"),
    ]


if __name__ == "__main__":
    main()
