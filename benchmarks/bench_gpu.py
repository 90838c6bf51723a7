"""GPU benchmarks: alexnet_cifar epoch and images/s with the data on the GPU, the trainer vs a raw loop,
built canon models vs torchvision's, the time spent outside kernels, and (optional) time to 80%.

    python benchmarks/bench_gpu.py [--device auto|cuda|cpu] [--quick] [--only NAME ...]
                                   [--data auto|cifar10|fake] [--data-root DIR] [--repeats 3] [--json FILE]

NAME is one of trainer, canon, profile, time_to_accuracy (the last is not run by default: it
trains alexnet_cifar's whole recipe). benchmarks/gpu_check.sh runs them all on a lent GPU.

- trainer: alexnet_cifar.yaml's recipe (bf16, channels_last, batch 256) for one epoch at a
  constant lr, CIFAR-10 (--data-root, else ../shared/datasets/cifar10 or shared/datasets/cifar10)
  or FakeData of CIFAR-10's size, the splits moved to the GPU once (training.data.on_device).
  The trainer's epoch (a Trainer's banner to its epoch line: training, validation, test,
  checkpoint, metrics.csv, curves.png) and
  bench_trainer's minimal raw loop on the same device-resident tensors alternate round-robin;
  medians of wall time, images/s of the training split over the trainer's whole epoch, and the
  ratio (goal <= 1.03x).
- canon: bench_canon's pairs (built resnet18 / mobilenet_v2 vs torchvision's, equal parameter
  counts) training on one random batch on the device, fp32 NCHW, synchronized timing, medians of
  images/s and their ratio (goal >= 0.98x).
- profile: torch.profiler over trainer steps after warm-up: the union of CUDA kernel intervals
  against the wall time of the steps; 1 - that is the share of step time the GPU sits idle
  (Python, launches, the data path). On the CPU there are no kernels: the row says n/a.
- time_to_accuracy: the recipe as shipped (15 epochs, one-cycle) on CIFAR-10 on the device, test
  accuracy per epoch with the wall time since the call began (goal >= 80% in < 15 min).

--quick shrinks every size (development, or a CPU check of the script: --device cpu --quick).
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from bench_trainer import RawLoop
from common import ROOT, SPECS, Row, emit, interleaved, median, parser, spread

from builder.lang.loading import load_spec
from builder.lang.spec import Spec
from training import TrainingConfig
from training.data import Data, load_data, on_device
from training.device import AUTOCAST, autocast

SPEC = SPECS / "alexnet_cifar.yaml"
CIFAR_ROOTS = (ROOT.parent / "shared" / "datasets" / "cifar10", ROOT / "shared" / "datasets" / "cifar10")
NAMES = ("trainer", "canon", "profile", "time_to_accuracy")
DEFAULT = ("trainer", "canon", "profile")


# --- the alexnet_cifar recipe on the device ----------------------------------------------------


def cifar_root(args: argparse.Namespace) -> Path | None:
    """Where CIFAR-10 (image_folder layout) is, or None for fake data."""
    if args.data == "fake":
        return None
    roots = [Path(args.data_root)] if args.data_root else list(CIFAR_ROOTS)
    found = next((r for r in roots if (r / "train").is_dir()), None)
    if found is None and args.data == "cifar10":
        raise SystemExit(f"error: --data cifar10: no CIFAR-10 at {', '.join(map(str, roots))}")
    return found


def recipe(spec: Spec, args: argparse.Namespace, root: Path | None, **changes: Any) -> TrainingConfig:
    """alexnet_cifar's recipe on the device, on CIFAR-10 at `root` or fake data of its size."""
    data: dict[str, Any] = {"kind": "image_folder", "root": str(root)}
    if root is None:
        train, test = (256, 64) if args.quick else (50_000, 10_000)
        data = {"kind": "fake", "train_size": train, "test_size": test}
    elif args.quick:
        data.update(train_size=256, test_size=64)
    cfg = {**(spec.training or {}), "dataset": data, "device": args.device, **changes}
    if args.quick:
        cfg["batch_size"] = 32
    return TrainingConfig.model_validate(cfg)


class DeviceRawLoop(RawLoop):
    """bench_trainer's raw loop with model, statistics and splits on `device` (splits moved once)."""

    def __init__(self, spec: Spec, config: TrainingConfig, data: Data, device: torch.device) -> None:
        super().__init__(spec, config, on_device(data, device))
        self.device = device
        self.model.to(device)  # the optimizer holds the same Parameter objects, now on the device
        self.mean, self.std = self.mean.to(device), self.std.to(device)

    def autocast(self) -> Any:
        return autocast(self.config.precision, self.device.type)


def trainer_rows(spec: Spec, args: argparse.Namespace, device: torch.device) -> list[Row]:
    root = cifar_root(args)
    config = recipe(spec, args, root, epochs=1, schedule={"kind": "constant"}, workers=0)
    loaded = load_data(config.dataset, spec, config.workers)
    raw = DeviceRawLoop(spec, config, loaded, device)
    raw.train_epoch(steps=3)  # warm-up: cuDNN autotuning, allocator
    runs = interleaved({"trainer": trainer_epoch_on(spec, config, raw.data, device), "raw": raw}, args.repeats)
    ratio = median(runs["trainer"]) / median(runs["raw"])
    n, what = len(loaded.train), f"{loaded.name}, batch {config.batch_size}, {options(config)}"
    command = f"python benchmarks/bench_gpu.py --only trainer --device {args.device}{flags(args)}"
    return [
        Row(f"alexnet_cifar.yaml epoch on {device_name(device)} with the data on it ({n:,} train images of {what})",
            f"{median(runs['trainer']):.2f} s, {n / median(runs['trainer']):,.0f} images/s", "-", None, command,
            f"trainer epoch s (training, validation, test, checkpoint, files): {spread(runs['trainer'], '{:.2f}')}"),
        Row(f"trainer vs minimal raw loop on {device_name(device)}, same device-resident tensors ({what})",
            f"{ratio:.3f}x ({median(runs['trainer']):.2f} s vs {median(runs['raw']):.2f} s)", "<= 1.03x",
            ratio <= 1.03, command,
            f"trainer s: {spread(runs['trainer'], '{:.2f}')}; raw s: {spread(runs['raw'], '{:.2f}')}"),
    ]


def trainer_epoch_on(spec: Spec, config: TrainingConfig, data: Data, device: torch.device) -> Callable[[], float]:
    """A contender: seconds from a Trainer's banner to its first epoch line, on splits already on
    the device (common.trainer_epoch loads them again for every run: a minute for CIFAR's size)."""
    from training.trainer import Trainer

    def run() -> float:
        stamps: list[float] = []
        with tempfile.TemporaryDirectory() as tmp:
            trainer = Trainer(spec, config, data, device, Path(tmp), True, lambda _: stamps.append(time.perf_counter()))
            trainer.run()
        return stamps[1] - stamps[0]

    return run


def options(config: TrainingConfig) -> str:
    return config.precision + (", channels_last" if config.channels_last else "")


def flags(args: argparse.Namespace) -> str:
    return (" --quick" if args.quick else "") + (f" --data {args.data}" if args.data != "auto" else "")


def device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return str(device)


# --- canon models vs torchvision's ---------------------------------------------------------------


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def device_throughput(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, steps: int) -> float:
    """Images per second over `steps` SGD training steps, timed between device synchronizations."""
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    sync(x.device)
    start = time.perf_counter()
    for _ in range(steps):
        opt.zero_grad(set_to_none=True)
        torch.nn.functional.cross_entropy(model(x), y).backward()
        opt.step()
    sync(x.device)
    return steps * x.shape[0] / (time.perf_counter() - start)


def canon_row(name: str, args: argparse.Namespace, device: torch.device) -> Row:
    from bench_canon import pair

    torch.manual_seed(0)
    built, reference = (m.to(device) for m in pair(name))
    batch, size, steps = (4, 32, 1) if args.quick else (64, 224, 10)
    x, y = torch.randn(batch, 3, size, size, device=device), torch.randint(0, 1000, (batch,), device=device)
    for model in (built, reference):
        device_throughput(model, x, y, 3)  # warm-up: cuDNN algorithm choice, allocator
    runs = interleaved({"built": lambda: device_throughput(built, x, y, steps),
                        "torchvision": lambda: device_throughput(reference, x, y, steps)}, args.repeats)
    ratio = median(runs["built"]) / median(runs["torchvision"])
    return Row(
        f"built {name} vs torchvision {name} on {device_name(device)}, training throughput (3x{size}x{size}, "
        f"batch {batch}, fp32, NCHW)",
        f"{ratio:.3f}x ({median(runs['built']):,.0f} vs {median(runs['torchvision']):,.0f} images/s)", ">= 0.98x",
        ratio >= 0.98, f"python benchmarks/bench_gpu.py --only canon --device {args.device}{flags(args)}",
        f"built: {spread(runs['built'])}; torchvision: {spread(runs['torchvision'])}; "
        f"{args.repeats} rounds of {steps} steps",
    )


# --- the share of step time outside kernels ------------------------------------------------------


def kernel_busy_us(trace: dict[str, Any]) -> float:
    """Microseconds during which at least one CUDA kernel ran (the union of kernel intervals)."""
    spans = sorted((float(e["ts"]), float(e["ts"]) + float(e.get("dur", 0)))
                   for e in trace.get("traceEvents", []) if e.get("cat") == "kernel" and "ts" in e)
    busy, end = 0.0, float("-inf")
    for start, stop in spans:
        if stop > end:
            busy += stop - max(start, end)
            end = stop
    return busy


def profile_row(spec: Spec, args: argparse.Namespace, device: torch.device) -> Row:
    from torch.profiler import ProfilerActivity, profile

    trainer, batches = profiled_trainer(spec, args, device)
    warm, steps = batches[:3], batches[3:]
    for i, (images, labels) in enumerate(warm):
        trainer.train_step(images, labels, 0, i, False)
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.type == "cuda" else [])
    with profile(activities=activities) as prof:
        sync(device)
        start = time.perf_counter()
        for i, (images, labels) in enumerate(steps, start=len(warm)):
            trainer.train_step(images, labels, 0, i, False)
        sync(device)
        wall_us = (time.perf_counter() - start) * 1e6
    with tempfile.TemporaryDirectory() as tmp:
        prof.export_chrome_trace(str(Path(tmp) / "trace.json"))
        busy = kernel_busy_us(json.loads((Path(tmp) / "trace.json").read_text()))
    figure = "n/a (no CUDA kernels on the CPU)" if device.type != "cuda" else (
        f"{1 - busy / wall_us:.1%} of step time outside kernels (GPU busy {busy / wall_us:.1%})")
    return Row(
        f"alexnet_cifar.yaml trainer steps on {device_name(device)}: time outside CUDA kernels "
        f"(batch {trainer.config.batch_size}, {options(trainer.config)}, data on the device)",
        figure, "-", None, f"python benchmarks/bench_gpu.py --only profile --device {args.device}{flags(args)}",
        f"{len(steps)} profiled steps after {len(warm)} warm-up, {wall_us / 1e3 / len(steps):.2f} ms a step "
        "under the profiler",
    )


def profiled_trainer(spec: Spec, args: argparse.Namespace, device: torch.device) -> tuple[Any, list[Any]]:
    """A Trainer on fake data moved to the device, and its first epoch's batches."""
    from training.trainer import Trainer

    fake = argparse.Namespace(**{**vars(args), "data": "fake"})
    config = recipe(spec, fake, None, epochs=1, schedule={"kind": "constant"}, workers=0)
    if not args.quick:
        config = config.model_copy(update={"dataset": config.dataset.model_copy(update={"train_size": 6_400,
                                                                                   "test_size": 64})})
    data = on_device(load_data(config.dataset, spec, 0), device)
    run = Path(tempfile.mkdtemp(prefix="bench_gpu_"))
    trainer = Trainer(spec, config, data, device, run, True, lambda _: None)
    return trainer, list(data.train.batches(trainer.epoch_order(0)))


# --- time to 80% ---------------------------------------------------------------------------------


def time_to_accuracy_row(spec: Spec, args: argparse.Namespace, device: torch.device) -> Row:
    from bench_time_to_accuracy import GOAL_ACC, first_at_goal, table

    from training import train

    root = cifar_root(args)
    name = f"time to accuracy on {device_name(device)}: alexnet_cifar.yaml recipe"
    command = f"python benchmarks/bench_gpu.py --only time_to_accuracy --device {args.device}{flags(args)}"
    if root is None and not args.quick:
        return Row(name, "skipped: no CIFAR-10 (--data-root)", ">= 80% in < 15 min", None, command)
    config = recipe(spec, args, root, **({"epochs": 1} if args.quick else {}))
    stamps: list[float] = []
    start = time.perf_counter()

    def log(line: str) -> None:  # printed as it comes: a run cut short by a timeout still shows its epochs
        stamps.append(time.perf_counter() - start)
        print(f"[{stamps[-1]:.0f} s] {line}", flush=True)

    with tempfile.TemporaryDirectory() as tmp:
        result = train(spec, config, out=Path(tmp) / "run", quiet=True, log=log)
    total = time.perf_counter() - start
    walls, startup = stamps[1 : 1 + len(result.history)], stamps[0]
    return Row(
        f"{name} ({config.epochs} epochs, batch {config.batch_size}, {options(config)}, data on the device)",
        f"{result.test_acc:.2%} final test accuracy (best {result.best_test_acc:.2%}) in {total / 60:.1f} min",
        ">= 80% in < 15 min", result.test_acc >= GOAL_ACC and total < 15 * 60, command,
        f"{first_at_goal(result.history, walls)}; start-up {startup:.1f} s\n\n{table(result.history, walls, startup)}",
    )


# --- main ----------------------------------------------------------------------------------------


def pick_device(choice: str) -> torch.device:
    if choice == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if choice == "cuda" and not torch.cuda.is_available():
        raise SystemExit("error: --device cuda: no CUDA GPU here (torch.cuda.is_available() is false)")
    return torch.device(choice)


def main() -> None:
    p = parser(__doc__.splitlines()[0])
    p.set_defaults(repeats=3)
    p.add_argument("--device", choices=["auto", "cuda", "cpu"], default="auto", help="auto: cuda when present")
    p.add_argument("--quick", action="store_true", help="tiny sizes (a check of the script, not figures)")
    p.add_argument("--only", choices=NAMES, action="append", help=f"run only this (repeatable; default {DEFAULT})")
    p.add_argument("--data", choices=["auto", "cifar10", "fake"], default="auto",
                   help="auto: CIFAR-10 when found (--data-root or the shared datasets), else fake")
    p.add_argument("--data-root", help="CIFAR-10 as ROOT/{train,test}/<class>/*.jpg")
    args = p.parse_args()
    device = pick_device(args.device)
    args.device = device.type
    os.chdir(ROOT)  # recipe paths are relative to the repository root
    spec = load_spec(SPEC)
    print(f"device: {device_name(device)}; torch {torch.version.__version__}; autocast dtypes {list(AUTOCAST)}")
    rows: list[Row] = []
    for name in args.only or DEFAULT:
        if name == "trainer":
            rows += trainer_rows(spec, args, device)
        elif name == "canon":
            rows += [canon_row(model, args, device) for model in ("resnet18", "mobilenet_v2")]
        elif name == "profile":
            rows.append(profile_row(spec, args, device))
        else:
            rows.append(time_to_accuracy_row(spec, args, device))
    emit(rows, args.json)


if __name__ == "__main__":
    main()
