"""The shared trainer: any built spec, any validated TrainingConfig, honest held-out evaluation.

`train(spec, config)` loads the data (refusing a spec that cannot take it), builds the model,
and runs epochs of shuffled, augmented mini-batches, each followed by evaluation on the test
split. After every epoch it writes an atomic checkpoint, metrics.csv and curves.png; at the end
model.safetensors. SIGINT/SIGTERM finish the step, checkpoint and stop; a non-finite loss stops
before it can corrupt the weights. On the CPU a run is a pure function of the seed, and a run
stopped at any step and resumed ends bit-for-bit where an uninterrupted run does.
"""

from __future__ import annotations

import json
import math
import random
import signal
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager, nullcontext
from dataclasses import asdict, dataclass, field
from pathlib import Path
from types import FrameType
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn
from tqdm import tqdm

from builder.lang.errors import Problem
from builder.lang.loading import dump_spec
from builder.lang.spec import Spec
from builder.model.build import build_model
from training.checkpoint import (
    CHECKPOINT,
    WEIGHTS,
    load_checkpoint,
    rng_states,
    save_checkpoint,
    save_weights,
    set_rng_states,
)
from training.config import RESUMABLE_CHANGES, AdamWConfig, OptimizerConfig, SGDConfig, TrainingConfig
from training.data import Data, Preprocess, generator, load_data, on_device, preprocess_for
from training.distributed import (
    Dist,
    agree,
    broadcast_path,
    check_batch_size,
    device_for,
    epoch_batches,
    eval_indices,
    process_group,
    total,
)
from training.errors import CheckpointError, ConfigProblems, NonFiniteLoss, RunDirError, TrainingInterrupted
from training.metrics import EpochMetrics, epoch_line, plot_curves, write_csv
from training.precision import resolve_precision
from training.schedule import lr_factor

Log = Callable[[str], None]
STATE_KEYS = frozenset({"spec", "config", "position", "model", "optimizer", "scheduler", "scaler", "rng"})


@dataclass(frozen=True)
class TrainResult:
    """The final metrics of a run (accuracies are fractions) and where its outputs are."""

    run_dir: Path
    epoch: int
    train_loss: float
    train_acc: float
    test_loss: float
    test_acc: float
    best_test_acc: float
    best_epoch: int
    history: tuple[EpochMetrics, ...]


def train(
    spec: Spec, config: TrainingConfig, *, out: str | Path | None = None, resume: str | Path | None = None,
    quiet: bool = False, log: Log | None = None,
) -> TrainResult:
    """Train `spec` as `config` says; outputs go to `out` (default runs/<name>-<time>) or, with
    `resume`, to that run's directory, which continues from its checkpoint.

    Under torchrun every process calls this; they train data-parallel and rank 0 alone writes.
    """
    d = Dist.from_env()
    device = device_for(d, select_device(config))
    config = resolve_precision(config, device)  # precision auto -> bf16 or fp32 (training/precision.py)
    check_batch_size(d, config.batch_size)
    with process_group(d, device, config.dist_backend):
        saved = resumed_state(spec, config, Path(resume), out) if resume is not None else None
        data = on_device(load_data(config.dataset, spec, config.workers), device)
        run_dir = Path(resume) if resume is not None else broadcast_path(d, lambda: new_run_dir(out, spec.name))
        trainer = Trainer(spec, config, data, device, run_dir, quiet, log or _print, d)
        if saved is not None:
            trainer.restore(saved)
        elif d.main:
            make_run_dir(run_dir)
            write_run_files(run_dir, spec, config)
        return trainer.run()


def _print(line: str) -> None:
    print(line, flush=True)


def _silent(line: str) -> None:
    pass


# --- setup ------------------------------------------------------------------------------------


def select_device(config: TrainingConfig) -> torch.device:
    """cuda, then mps, then cpu for `auto`; a forced device must exist."""
    if config.device == "auto":
        name = "cuda" if torch.cuda.is_available() else "mps" if torch.backends.mps.is_available() else "cpu"
        device = torch.device(name)
    else:
        device = torch.device(config.device)
    cuda_ok = torch.cuda.is_available() and (device.index or 0) < torch.cuda.device_count()
    if (device.type == "cuda" and not cuda_ok) or (device.type == "mps" and not torch.backends.mps.is_available()):
        raise ConfigProblems.at(("training", "device"), f"{config.device} is not available here; use auto or cpu")
    if config.precision == "fp16" and device.type == "cpu":
        raise ConfigProblems.at(("training", "precision"), "fp16 needs a GPU; use bf16 on the CPU")
    return device


def make_optimizer(config: OptimizerConfig, model: nn.Module) -> torch.optim.Optimizer:
    params = model.parameters()
    if isinstance(config, SGDConfig):
        return torch.optim.SGD(
            params, lr=config.lr, momentum=config.momentum, nesterov=config.nesterov, weight_decay=config.weight_decay
        )
    adam = torch.optim.AdamW if isinstance(config, AdamWConfig) else torch.optim.Adam
    return adam(params, lr=config.lr, betas=(config.betas[0], config.betas[1]), eps=config.eps,
                weight_decay=config.weight_decay)


def new_run_dir(out: str | Path | None, name: str) -> Path:
    """`out`, or runs/<name>-<YYYYmmdd-HHMMSS>[-N] (not created yet); refused if it holds a run."""
    if out is None:
        base = Path("runs") / f"{name}-{time.strftime('%Y%m%d-%H%M%S')}"
        path, n = base, 2
        while path.exists():
            path, n = base.with_name(f"{base.name}-{n}"), n + 1
    else:
        path = Path(out)
    if (path / CHECKPOINT).exists():
        raise RunDirError(f"{path} already holds a run; continue it with --resume {path}, or choose another --out")
    return path


def make_run_dir(path: Path) -> None:
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise RunDirError(f"cannot create the output directory {path}: {exc.strerror or exc}") from None


def spec_data(spec: Spec) -> dict[str, Any]:
    """The model part of a spec (what the weights depend on), as plain data."""
    return spec.model_dump(mode="json", exclude={"training", "extends"})


def write_run_files(run_dir: Path, spec: Spec, config: TrainingConfig) -> None:
    """spec.yaml (the resolved spec with its full training section) and summary.txt (torchinfo)."""
    from builder.model.summary import summarize

    resolved = spec.model_copy(update={"training": config.model_dump(mode="json")})
    (run_dir / "spec.yaml").write_text(dump_spec(resolved))
    (run_dir / "summary.txt").write_text(f"{summarize(spec)}\n")


# --- resume checks ----------------------------------------------------------------------------------


def resumed_state(spec: Spec, config: TrainingConfig, run_dir: Path, out: str | Path | None) -> dict[str, Any]:
    """The checkpoint of the run in `run_dir`, once it is known to fit this spec and recipe."""
    if out is not None and Path(out).resolve() != run_dir.resolve():
        raise RunDirError(f"--out {out} and --resume {run_dir} differ: a resumed run writes into its own directory")
    saved = load_checkpoint(run_dir / CHECKPOINT)
    missing = sorted(STATE_KEYS - saved.keys())
    if missing:
        raise CheckpointError(f"{run_dir / CHECKPOINT} lacks {', '.join(missing)}: not a complete checkpoint")
    check_resume(saved, spec, config, run_dir)
    return saved


def check_resume(saved: dict[str, Any], spec: Spec, config: TrainingConfig, run_dir: Path) -> None:
    """The spec and the recipe must be the run's (only RESUMABLE_CHANGES may differ)."""
    why = f"in the run being resumed ({run_dir}); a resumed run keeps its spec and recipe"
    found = [(path, old, new) for path, old, new in differences(saved["spec"], spec_data(spec))]
    found += [
        (("training", *path), old, new)
        for path, old, new in differences(saved["config"], config.model_dump(mode="json"))
        if path[0] not in RESUMABLE_CHANGES
    ]
    problems = [Problem(p, f"is {json.dumps(new)} here but {json.dumps(old)} {why}") for p, old, new in found]
    done = saved["position"]["epoch"]
    if config.epochs < done:
        problems.append(Problem(("training", "epochs"), f"the run being resumed already did {done} epochs"))
    if problems:
        raise ConfigProblems(problems)


DocPath = tuple[str | int, ...]


def differences(old: Any, new: Any, path: DocPath = ()) -> Iterator[tuple[DocPath, Any, Any]]:
    """Leaf paths where two plain-data trees differ (a changed `kind` is one difference)."""
    if isinstance(old, dict) and isinstance(new, dict):
        if "kind" in old and old.get("kind") != new.get("kind"):
            yield (*path, "kind"), old.get("kind"), new.get("kind")
            return
        for key in [*old, *(k for k in new if k not in old)]:
            yield from differences(old.get(key), new.get(key), (*path, key))
    elif isinstance(old, list) and isinstance(new, list) and len(old) == len(new):
        for i, (a, b) in enumerate(zip(old, new)):
            yield from differences(a, b, (*path, i))
    elif old != new:
        yield path, old, new


# --- signals ------------------------------------------------------------------------------------------


class StopFlag:
    """Records the first SIGINT/SIGTERM; the loop stops after the current step. A second one aborts."""

    def __init__(self) -> None:
        self.signal: int | None = None

    def __call__(self, signum: int, frame: FrameType | None) -> None:
        if self.signal is not None:
            raise KeyboardInterrupt
        self.signal = signum


@contextmanager
def stop_on_signals() -> Iterator[StopFlag]:
    """Route SIGINT and SIGTERM to a StopFlag while training (main thread only), then restore."""
    flag = StopFlag()
    if threading.current_thread() is not threading.main_thread():
        yield flag
        return
    previous = {s: signal.signal(s, flag) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield flag
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)


@contextmanager
def tensorboard(run_dir: Path, enabled: bool = True) -> Iterator[Callable[[EpochMetrics], None]]:
    """Per-epoch scalars to run_dir/tensorboard when tensorboard is installed; else nothing."""
    if not enabled:
        yield lambda m: None
        return
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:
        yield lambda m: None
        return
    writer = SummaryWriter(str(run_dir / "tensorboard"))

    def add(m: EpochMetrics) -> None:
        for name, value in asdict(m).items():
            if name != "epoch" and value is not None:
                writer.add_scalar(name, value, m.epoch)
        writer.flush()

    try:
        yield add
    finally:
        writer.close()


# --- the loop ---------------------------------------------------------------------------------------------


@dataclass
class Position:
    """`epoch` epochs done, plus `step` steps of the next one with their running sums."""

    epoch: int = 0
    step: int = 0
    loss_sum: float = 0.0
    correct: int = 0
    seen: int = 0
    seconds: float = 0.0
    lr: float = 0.0  # of the last step taken
    history: list[EpochMetrics] = field(default_factory=list)

    def state(self) -> dict[str, Any]:
        return {**asdict(self), "history": [m.as_dict() for m in self.history]}

    @classmethod
    def from_state(cls, state: dict[str, Any]) -> Position:
        return cls(**{**state, "history": [EpochMetrics.from_dict(m) for m in state["history"]]})

    def add(self, step: int, loss_sum: float, correct: int, n: int, seconds: float) -> None:
        """Count step `step` (0-based) of the current epoch: its summed loss over n images."""
        self.loss_sum, self.correct, self.seen = self.loss_sum + loss_sum, self.correct + correct, self.seen + n
        self.step, self.seconds = step + 1, seconds

    def postfix(self) -> dict[str, str]:
        seen = max(1, self.seen)
        return {
            "loss": f"{self.loss_sum / seen:.4f}", "acc": f"{self.correct / seen:.2%}",
            "img_s": f"{self.seen / max(self.seconds, 1e-9):,.0f}",
        }

    def where(self) -> str:
        return f"after epoch {self.epoch}" if self.step == 0 else f"at epoch {self.epoch + 1}, step {self.step}"


class Trainer:
    """One run: model, optimizer, schedule and position; `run()` trains to config.epochs."""

    def __init__(
        self, spec: Spec, config: TrainingConfig, data: Data, device: torch.device, run_dir: Path,
        quiet: bool, log: Log, dist: Dist | None = None,
    ) -> None:
        self.spec, self.config, self.data, self.device = spec, config, data, device
        self.dist = dist or Dist()
        # Only rank 0 prints and writes; the other ranks train silently.
        self.run_dir, self.quiet, self.log = run_dir, quiet or not self.dist.main, log if self.dist.main else _silent
        seed_everything(config.seed)
        self.model = build_model(spec).to(device)
        if config.channels_last:
            self.model = self.model.to(memory_format=torch.channels_last)
        self.forward = self.wrap(self.model)
        self.optimizer = make_optimizer(config.optimizer, self.model)
        self.steps = len(self.epoch_order(0))
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(
            self.optimizer, lambda step: lr_factor(config.schedule, step, self.steps, config.epochs)
        )
        self.scaler = torch.amp.GradScaler(device.type, enabled=config.precision == "fp16")
        self.preprocess: Preprocess = preprocess_for(data, spec, config.dataset.augment, device, config.channels_last)
        self.pos = Position()
        self.saved_at: str | None = None  # where the last checkpoint was taken

    def wrap(self, model: nn.Module) -> nn.Module:
        """What the forward pass runs: the model, in DDP under torchrun, compiled if asked."""
        if self.dist.enabled:
            ids = [self.device] if self.device.type == "cuda" else None
            model = nn.parallel.DistributedDataParallel(model, device_ids=ids)
        return torch.compile(model) if self.config.compile else model  # type: ignore[return-value]

    def epoch_order(self, epoch: int) -> list[Tensor]:
        """This process's index batches of `epoch` (all of them when not distributed)."""
        c = self.config
        return epoch_batches(self.dist, len(self.data.train), c.batch_size, c.seed, epoch)

    def autocast(self) -> AbstractContextManager[Any]:
        if self.config.precision == "fp32":
            return nullcontext()
        dtype = torch.bfloat16 if self.config.precision == "bf16" else torch.float16
        return torch.autocast(self.device.type, dtype=dtype)

    # --- checkpoints ---

    def save(self) -> None:
        self.saved_at = self.pos.where()
        if not self.dist.main:
            return
        state = {
            "spec": spec_data(self.spec), "config": self.config.model_dump(mode="json"),
            "position": self.pos.state(), "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(), "scheduler": self.scheduler.state_dict(),
            "scaler": self.scaler.state_dict(), "rng": rng_states(),
        }
        save_checkpoint(self.run_dir / CHECKPOINT, state)

    def restore(self, saved: dict[str, Any]) -> None:
        """Continue from a checkpoint: states first, the global RNGs last (building used them)."""
        self.model.load_state_dict(saved["model"])
        self.optimizer.load_state_dict(saved["optimizer"])
        self.scheduler.load_state_dict(saved["scheduler"])
        self.scaler.load_state_dict(saved["scaler"])
        self.pos = Position.from_state(saved["position"])
        self.saved_at = self.pos.where()
        set_rng_states(saved["rng"])

    # --- running ---

    def run(self) -> TrainResult:
        self.log(self.banner())
        with stop_on_signals() as stop, tensorboard(self.run_dir, self.dist.main) as board:
            while self.pos.epoch < self.config.epochs:
                self.train_epoch(stop)
                self.finish_epoch(board)
                if agree(self.dist, stop.signal is not None)[0]:
                    raise self.interrupted(stop.signal or signal.SIGTERM)
        if self.dist.main:
            save_weights(self.model, self.run_dir / WEIGHTS, {"spec": self.spec.name})
        result = self.result()
        self.log(self.farewell(result))
        return result

    def banner(self) -> str:
        d = self.data
        start = f"resuming {self.pos.where()}" if self.pos.epoch or self.pos.step else "training"
        return (
            f"{start} {self.spec.name} on {d.name} ({len(d.train):,} train / {len(d.test):,} test images, "
            f"{d.num_classes} classes) for {_count(self.config.epochs, 'epoch')} of {_count(self.steps, 'step')} "
            f"on {self.device}; "
            f"outputs in {self.run_dir}"
        )

    def train_epoch(self, stop: StopFlag) -> None:
        """The remaining steps of epoch pos.epoch; on a signal, checkpoint and raise."""
        pos, epoch = self.pos, self.pos.epoch
        order = self.epoch_order(epoch)
        started, before = time.perf_counter(), pos.seconds
        bar = tqdm(
            total=len(order), initial=pos.step, desc=f"epoch {epoch + 1}/{self.config.epochs}", unit="batch",
            leave=False, disable=self.quiet, dynamic_ncols=True,
        )
        with bar:
            for step, (images, labels) in enumerate(self.data.train.batches(order[pos.step :]), start=pos.step):
                loss, correct = self.train_step(images, labels, epoch, step)
                # Sums over all processes, and whether any of them was asked to stop (one all-reduce).
                loss_sum, hits, n, stops = total(self.dist, loss * len(labels), correct, len(labels),
                                                 float(stop.signal is not None))
                pos.add(step, loss_sum, int(hits), int(n), before + time.perf_counter() - started)
                bar.update()
                bar.set_postfix(pos.postfix(), refresh=False)
                # Distributed: stop only as agreed, or the others would wait for us at the next step.
                stopping = bool(stops) if self.dist.enabled else stop.signal is not None
                if stopping and pos.step < len(order):
                    self.save()
                    raise self.interrupted(stop.signal or signal.SIGTERM)

    def train_step(self, images: Tensor, labels: Tensor, epoch: int, step: int) -> tuple[float, int]:
        """One optimizer step; returns the batch's mean loss and its count of correct predictions."""
        images, labels = images.to(self.device, non_blocking=True), labels.to(self.device, non_blocking=True)
        rank = (self.dist.rank,) if self.dist.enabled else ()  # each process augments its own share
        inputs = self.preprocess(images, generator(self.config.seed, epoch, step, *rank))
        self.model.train()
        with self.autocast():
            logits = self.forward(inputs)
        loss = F.cross_entropy(logits.float(), labels, label_smoothing=self.config.label_smoothing)
        value = loss.item()
        if agree(self.dist, not math.isfinite(value))[0]:  # before any weight is touched, on every rank
            raise self.diverged(value, epoch, step)
        self.optimizer.zero_grad(set_to_none=True)
        self.scaler.scale(loss).backward()
        if self.config.grad_clip is not None:
            self.scaler.unscale_(self.optimizer)
            nn.utils.clip_grad_norm_(self.model.parameters(), self.config.grad_clip)
        self.pos.lr = float(self.optimizer.param_groups[0]["lr"])
        self.scaler.step(self.optimizer)
        self.scaler.update()
        self.scheduler.step()
        return value, int((logits.argmax(1) == labels).sum().item())

    @torch.inference_mode()
    def evaluate(self) -> tuple[float, float]:
        """Cross-entropy and top-1 accuracy on the whole test split (no augmentation)."""
        self.model.eval()
        loss_sum, correct = 0.0, 0
        order = eval_indices(self.dist, len(self.data.test), self.config.batch_size)
        for images, labels in self.data.test.batches(order):
            images, labels = images.to(self.device, non_blocking=True), labels.to(self.device, non_blocking=True)
            with self.autocast():
                logits = self.forward(self.preprocess(images))
            loss_sum += F.cross_entropy(logits.float(), labels, reduction="sum").item()
            correct += int((logits.argmax(1) == labels).sum().item())
        loss_sum, hits = total(self.dist, loss_sum, correct)  # each process saw its share of the test split
        n = max(1, len(self.data.test))
        return loss_sum / n, hits / n

    def finish_epoch(self, board: Callable[[EpochMetrics], None]) -> None:
        """Evaluate if due, record the epoch, checkpoint, write metrics.csv and curves.png."""
        pos, epoch = self.pos, self.pos.epoch + 1
        started = time.perf_counter()
        due = epoch % self.config.eval_every == 0 or epoch == self.config.epochs
        test_loss, test_acc = self.evaluate() if due else (None, None)
        seen = max(1, pos.seen)
        metrics = EpochMetrics(
            epoch, pos.loss_sum / seen, pos.correct / seen, test_loss, test_acc, pos.lr,
            pos.seconds + time.perf_counter() - started,
        )
        self.pos = Position(epoch=epoch, lr=pos.lr, history=[*pos.history, metrics])
        self.save()
        if self.dist.main:
            write_csv(self.run_dir / "metrics.csv", self.pos.history)
            plot_curves(self.run_dir / "curves.png", self.pos.history, f"{self.spec.name} on {self.data.name}")
            board(metrics)
        self.log(epoch_line(metrics, self.config.epochs, seen))

    # --- endings ---

    def interrupted(self, signum: int) -> TrainingInterrupted:
        return TrainingInterrupted(signal.Signals(signum).name, signum, self.pos.where(), self.run_dir)

    def diverged(self, value: float, epoch: int, step: int) -> NonFiniteLoss:
        lr = self.optimizer.param_groups[0]["lr"]
        kept = (
            f"the last good checkpoint ({self.saved_at}) is kept in {self.run_dir / CHECKPOINT}"
            if self.saved_at else "no checkpoint was written before it"
        )
        return NonFiniteLoss(
            f"the loss is {value} at epoch {epoch + 1}, step {step + 1} of {self.steps}: training diverged; "
            f"the learning rate ({lr:.4g} at that step, training.optimizer.lr) is likely too high: lower it "
            f"(--lr) or clip gradients (training.grad_clip); {kept}"
        )

    def result(self) -> TrainResult:
        history = tuple(self.pos.history)
        last = history[-1]
        best = max((m for m in history if m.test_acc is not None), key=lambda m: m.test_acc or 0.0)
        return TrainResult(
            self.run_dir, last.epoch, last.train_loss, last.train_acc, last.test_loss or 0.0, last.test_acc or 0.0,
            best.test_acc or 0.0, best.epoch, history,
        )

    def farewell(self, r: TrainResult) -> str:
        files = ", ".join([WEIGHTS, CHECKPOINT, "metrics.csv", "curves.png", "spec.yaml", "summary.txt"])
        return (
            f"best test accuracy {100 * r.best_test_acc:.2f}% (epoch {r.best_epoch}), final {100 * r.test_acc:.2f}% "
            f"(epoch {r.epoch})\noutputs in {self.run_dir}: {files}"
        )


def _count(n: int, noun: str) -> str:
    return f"{n:,} {noun}{'s' * (n != 1)}"


def seed_everything(seed: int) -> None:
    torch.manual_seed(seed)
    random.seed(seed)
    np.random.seed(seed % 2**32)

