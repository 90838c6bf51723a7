"""The trainer vs a minimal raw loop over the same in-memory tensors: epoch wall time (goal <= 1.03x).

    python benchmarks/bench_trainer.py [--data auto|cifar10|fake] [--train-size N] [--test-size N]
                                       [--repeats 3] [--json FILE]

Both train alexnet_cifar.yaml with its recipe (precision, memory format, batch size, SGD) for one
epoch on the same in-memory uint8 images, then evaluate the test split: CIFAR-10 from
../shared/datasets/cifar10 as the recipe loads it (decoded once, from the on-disk cache), or
without it (or with --data fake) torchvision's FakeData at 3x32x32 of --train-size/--test-size.
The raw loop does the same work and nothing else: gather the shuffled batch, uint8 -> float,
random crop with zero padding and flip (the same tensor ops), normalize, forward under the same
autocast and memory format, cross-entropy, backward, SGD step. The trainer's epoch is the wall
time from its banner line (data loaded, model built) to its epoch line, so its per-step
bookkeeping, evaluation, checkpoint, metrics.csv and curves.png are all inside it.
"""

from __future__ import annotations

import os
import time
from contextlib import AbstractContextManager, nullcontext
from typing import Any

import torch
import torch.nn.functional as F
from common import ROOT, SPECS, Row, emit, interleaved, median, parser, spread, trainer_epoch

from builder.lang.loading import load_spec
from builder.lang.spec import Spec
from builder.model.build import build_model
from builder.tools.bench import cpu_sample, other_cpus_between
from training import TrainingConfig
from training.config import SGDConfig
from training.data import Data, load_data, random_crop, random_hflip
from training.precision import resolve_precision

SPEC = SPECS / "alexnet_cifar.yaml"
CIFAR = ROOT.parent / "shared" / "datasets" / "cifar10"


def bench_config(spec: Spec, data: str, train_size: int, test_size: int) -> TrainingConfig:
    """The spec's recipe for one epoch at a constant lr, on CIFAR-10 (the recipe's) or fake data."""
    recipe = dict(spec.training or {})
    recipe.update(epochs=1, schedule={"kind": "constant"})
    if data == "fake":
        recipe.update(dataset={"kind": "fake", "train_size": train_size, "test_size": test_size}, workers=0)
    # No validation split: both loops train on the same images and evaluate the test split once.
    recipe["dataset"] = {**recipe.get("dataset", {"kind": "digits"}), "val_fraction": 0}
    config = TrainingConfig.model_validate(recipe)
    return resolve_precision(config, torch.device("cpu"))


class RawLoop:
    """The minimal loop: the same model, optimizer, augmentation and evaluation, nothing else."""

    def __init__(self, spec: Spec, config: TrainingConfig, data: Data) -> None:
        torch.manual_seed(config.seed)
        self.model, self.config, self.data = build_model(spec), config, data
        self.layout = torch.channels_last if config.channels_last else torch.contiguous_format
        self.model = self.model.to(memory_format=self.layout)
        opt = config.optimizer
        assert isinstance(opt, SGDConfig)
        self.opt = torch.optim.SGD(self.model.parameters(), lr=opt.lr, momentum=opt.momentum,
                                   nesterov=opt.nesterov, weight_decay=opt.weight_decay)
        self.mean = torch.tensor(data.mean).view(-1, 1, 1)
        self.std = torch.tensor(data.std).view(-1, 1, 1)
        pad = config.dataset.augment.crop_padding
        self.pad = (int(pad * spec.input.height + 0.5), int(pad * spec.input.width + 0.5))
        self.epoch = 0

    def autocast(self) -> AbstractContextManager[Any]:
        if self.config.precision == "fp32":
            return nullcontext()
        return torch.autocast("cpu", dtype=torch.bfloat16)

    def __call__(self) -> float:
        """Seconds of one epoch: training, then evaluation of the test split."""
        start = time.perf_counter()
        self.train_epoch()
        self.evaluate()
        self.epoch += 1
        return time.perf_counter() - start

    def train_epoch(self, steps: int | None = None) -> None:
        """One epoch (or its first `steps` steps, to warm up)."""
        images, labels = self.data.train.images, self.data.train.labels  # type: ignore[attr-defined]
        rng = torch.Generator().manual_seed(self.epoch)
        self.model.train()
        for index in torch.randperm(len(labels), generator=rng).split(self.config.batch_size)[:steps]:
            x = random_hflip(random_crop(images[index].float().div_(255), self.pad, rng), rng)
            with self.autocast():
                logits = self.model(((x - self.mean) / self.std).contiguous(memory_format=self.layout))
            loss = F.cross_entropy(logits.float(), labels[index], label_smoothing=self.config.label_smoothing)
            self.opt.zero_grad(set_to_none=True)
            loss.backward()
            self.opt.step()

    @torch.inference_mode()
    def evaluate(self) -> float:
        images, labels = self.data.test.images, self.data.test.labels  # type: ignore[attr-defined]
        self.model.eval()
        correct = 0
        for index in torch.arange(len(labels)).split(self.config.batch_size):
            with self.autocast():
                x = (images[index].float().div_(255) - self.mean) / self.std
                logits = self.model(x.contiguous(memory_format=self.layout))
            correct += int((logits.argmax(1) == labels[index]).sum())
        return correct / len(labels)


def options(config: TrainingConfig) -> str:
    return config.precision + (", channels_last" if config.channels_last else "")


def main() -> None:
    p = parser(__doc__.splitlines()[0])
    p.set_defaults(repeats=3)
    p.add_argument("--data", choices=["auto", "cifar10", "fake"], default="auto",
                   help="auto: CIFAR-10 when ../shared/datasets/cifar10 is there, else fake")
    p.add_argument("--train-size", type=int, default=5120, help="fake training images (default 5120)")
    p.add_argument("--test-size", type=int, default=1024, help="fake test images (default 1024)")
    args = p.parse_args()
    os.chdir(ROOT)  # the recipe's dataset root is relative to the repository root
    spec = load_spec(SPEC)
    data = args.data if args.data != "auto" else "cifar10" if CIFAR.is_dir() else "fake"
    config = bench_config(spec, data, args.train_size, args.test_size)
    loaded = load_data(config.dataset, spec, config.workers)
    raw = RawLoop(spec, config, loaded)
    raw.train_epoch(steps=3)  # warm-up
    before = cpu_sample()
    runs = interleaved({"trainer": trainer_epoch(spec, config), "raw": raw}, args.repeats)
    others = other_cpus_between(before, cpu_sample())
    ratio = median(runs["trainer"]) / median(runs["raw"])
    busy = "" if others is None else f"; other processes used {others:.2f} CPUs meanwhile"
    size = f"{len(loaded.train):,} train + {len(loaded.test):,} test images of {loaded.name}"
    flags = f" --data fake --train-size {args.train_size} --test-size {args.test_size}" if data == "fake" else ""
    emit([Row(
        f"trainer vs minimal raw loop, same in-memory tensors: epoch wall time ({size}, alexnet_cifar.yaml, "
        f"batch {config.batch_size}, {options(config)})",
        f"{ratio:.3f}x ({median(runs['trainer']):.2f} s vs {median(runs['raw']):.2f} s)", "<= 1.03x", ratio <= 1.03,
        f"python benchmarks/bench_trainer.py --repeats {args.repeats}{flags}",
        f"trainer s: {spread(runs['trainer'], '{:.2f}')}; raw s: {spread(runs['raw'], '{:.2f}')}{busy}",
    )], args.json)


if __name__ == "__main__":
    main()
