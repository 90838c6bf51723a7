"""The shared trainer: any built spec, any validated TrainingConfig, honest held-out evaluation.

`train(spec, config)` loads the data (refusing a spec that cannot take it), builds the model,
and runs epochs of shuffled, augmented mini-batches, each followed by evaluation on the
validation split (which alone picks best.safetensors and stops early) and, every eval_every
epochs, on the test split. After every epoch it writes an atomic checkpoint, metrics.csv and
curves.png; at the end model.safetensors, and the test metrics of both the final and the best
weights in results.json. SIGINT/SIGTERM finish the step, checkpoint and stop; a non-finite loss
stops before it can corrupt the weights. On the CPU a run is a pure function of the seed, and a
run stopped at any step and resumed ends bit-for-bit where an uninterrupted run does.

The pieces live in their own modules: device (device, precision), step (the training step that
bench times too), optim (optimizer, schedule), rundir (run directory, resume checks), signals,
loggers (log lines, TensorBoard), metrics (metrics.csv, curves.png), ema (the weight average
that, when on, is what evaluation sees and the weight files hold), tta (test-time augmentation).
"""

from __future__ import annotations

import math
import os
import signal
import time
from contextlib import AbstractContextManager, nullcontext
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn
from tqdm import tqdm

from builder.lang.spec import Spec
from builder.model.build import build_model
from training.checkpoint import rng_states, save_checkpoint, save_weights, set_rng_states
from training.config import Augment, SegmentationAugment, TrainingConfig
from training.data import Data, Split, generator, load_data, on_device, preprocess_for
from training.data.augment import alternate_flips, flip_phases
from training.device import autocast, seed_everything, select_device, threads
from training.distributed import (
    Dist,
    agree,
    broadcast_path,
    check_batch_size,
    device_for,
    epoch_batches,
    process_group,
    total_of,
)
from training.ema import WeightAverage
from training.errors import ApiError, CheckpointError, NonFiniteLoss, TrainingInterrupted
from training.loggers import Board, Log, print_line, silent
from training.metrics import EpochMetrics, epoch_line, plot_curves
from training.precision import resolve_precision
from training.rundir import claim_run_dir, locked, resolved_spec, resume_target, resumed_state, write_run_files
from training.runfiles import (
    BEST,
    BOARD_DIR,
    CHECKPOINT,
    CURVES,
    EVENTS,
    METRICS,
    RESULTS,
    RUN_INFO,
    SPEC_FILE,
    SUMMARY,
    WEIGHTS,
    check_fits,
    event_data,
    new_event,
    position_state,
    read_events,
    spec_data,
    write_events,
    write_metrics,
    write_results,
)
from training.runinfo import write_run_info
from training.signals import StopFlag, handling, stop_at_once, stop_on_signals
from training.step import make_step
from training.tasks import Task
from training.tasks.base import split_columns
from training.tasks.make import make_task
from training.tta import check_tta
from training.whiten import fit_whitening

__all__ = ["Position", "TrainResult", "Trainer", "train"]

SHOWN = 4  # validation images in TensorBoard's picture of each epoch


@dataclass(frozen=True)
class TrainResult:
    """The final metrics of a run (accuracies are fractions) and where its outputs are.
    best_* are of the epoch the validation split picked (the final epoch without validation).

    The final epoch's columns read as attributes (train_loss, train_acc, test_loss, test_acc;
    test_miou, ...) and the best weights' test metrics as best_test_acc, best_test_loss, ...:
    0.0 where there was no test split."""

    run_dir: Path
    epoch: int
    final: EpochMetrics  # the last epoch's metrics, its test split evaluated
    best_epoch: int
    best_test: dict[str, float | None]  # test_loss, test_acc, ... of the best weights
    history: tuple[EpochMetrics, ...]
    stopped_early: bool = False

    def __getattr__(self, name: str) -> float:
        fields = self.__dict__
        best = name.startswith("best_test_")
        found = fields.get("best_test", {}) if best else fields["final"].as_dict() if "final" in fields else {}
        key = name.removeprefix("best_")
        if key not in found:
            raise AttributeError(f"{type(self).__name__} has no metric {name!r}")
        return float(found[key] or 0.0)


def train(
    spec: Spec, config: TrainingConfig, *, out: str | Path | None = None, resume: str | Path | None = None,
    quiet: bool = False, log: Log | None = None,
) -> TrainResult:
    """Train `spec` as `config` says; outputs go to `out` (default runs/<name>-<time>) or, with
    `resume`, to that run's directory, which continues from its checkpoint.

    Under torchrun every process calls this; they train data-parallel and rank 0 alone writes.
    """
    check_arguments(spec, config, out=out, resume=resume)
    d = Dist.from_env()
    device = device_for(d, select_device(config))
    d = d.on(device, config.dist_backend)  # collectives on the GPU under NCCL
    config = resolve_precision(config, device)  # precision auto -> bf16, fp16 or fp32 (training/precision.py)
    check_batch_size(d, config.batch_size)
    resolved_spec(spec, config)  # spec.yaml must be writable and readable back before a directory is claimed
    with process_group(d, device, config.dist_backend):
        created = [False]  # rank 0: whether the run directory was made for this run

        def claim() -> Path:
            path, created[0] = claim_run_dir(out, spec.name)
            return path

        with handling(stop_at_once(starting_up)):  # nothing to checkpoint yet: a stop signal stops at once
            run_dir = resume_target(resume, out) if resume is not None else broadcast_path(d, claim)
            return _run(spec, config, d, device, run_dir, created[0], resume, out, quiet, log)


def check_arguments(spec: object, config: object, **paths: object) -> None:
    """train()'s arguments, checked at the boundary with one clear message each."""
    if not isinstance(spec, Spec):
        raise ApiError(f"train: spec must be a Spec (builder.load_spec(path)), not {type(spec).__name__}")
    if not isinstance(config, TrainingConfig):
        raise ApiError(f"train: config must be a TrainingConfig (TrainingConfig.model_validate(mapping)), "
                       f"not {type(config).__name__}")
    for name, value in paths.items():
        if value is not None and (not isinstance(value, (str, os.PathLike)) or str(value) == ""):
            raise ApiError(f"train: {name} must be a non-empty path (str or Path), not {value!r}")


def starting_up(signum: int) -> TrainingInterrupted:
    return TrainingInterrupted(signal.Signals(signum).name, signum, "during start-up", None)


def _run(
    spec: Spec, config: TrainingConfig, d: Dist, device: torch.device, run_dir: Path, created: bool,
    resume: str | Path | None, out: str | Path | None, quiet: bool, log: Log | None,
) -> TrainResult:
    """Lock the run directory (before data loading, for the whole run), check, load, write, train."""
    with locked(run_dir, created) if d.main else nullcontext(), threads(config.threads):
        saved = resumed_state(spec, config, run_dir, out) if resume is not None else None
        data = on_device(load_data(config.dataset, spec, config.workers), device)
        trainer = Trainer(spec, config, data, device, run_dir, quiet, log or print_line, d, saved)
        if d.main:  # once everything is checked; the summary builds a model, so the RNGs are kept
            with torch.random.fork_rng(devices=[]):
                write_run_files(run_dir, spec, config)
                write_run_info(run_dir, spec, data, trainer.task)
        return trainer.run()


@dataclass
class Position:
    """`epoch` epochs done, plus `step` steps of the next one with their running sums; the best
    validation epoch so far, the early-stopping count, and where the current schedule began."""

    epoch: int = 0
    step: int = 0
    loss_sum: float = 0.0
    tally: list[float] = field(default_factory=list)  # the task's tally summed over the steps (empty: none yet)
    seen: int = 0
    seconds: float = 0.0
    lr: float = 0.0  # of the last step taken
    history: list[EpochMetrics] = field(default_factory=list)
    best_epoch: int = 0  # 0: none yet
    best_value: float | None = None  # of config.monitor at best_epoch
    stall_value: float | None = None  # early stopping: the best of its metric so far
    stall: int = 0  # epochs since stall_value last improved by more than min_delta
    segment: int = 0  # the epoch where the current learning-rate schedule started
    step_losses: list[float] = field(default_factory=list)  # every step's mean loss, for curves.png

    def state(self) -> dict[str, Any]:
        return {**asdict(self), "history": [m.as_dict() for m in self.history]}

    @classmethod
    def from_state(cls, state: dict[str, Any]) -> Position:
        """From a checkpoint's position (checked; one from before the task seam kept `correct`)."""
        state = position_state(state, "position")
        return cls(**{**state, "history": [EpochMetrics.from_dict(m) for m in state["history"]]})

    def add(self, step: int, loss_sum: float, tally: list[float], n: int, seconds: float) -> None:
        """Count step `step` (0-based) of the current epoch: its summed loss and tally over n images."""
        self.loss_sum, self.seen = self.loss_sum + loss_sum, self.seen + n
        self.tally = [a + b for a, b in zip(self.tally, tally)] if self.tally else list(tally)
        self.step, self.seconds = step + 1, seconds

    def train_metrics(self, task: Task) -> dict[str, float]:
        return task.summarize(self.tally or [0.0] * task.tally_size, self.seen)

    def postfix(self, task: Task) -> dict[str, str]:
        seen = max(1, self.seen)
        found = self.train_metrics(task)
        return {
            "loss": f"{self.loss_sum / seen:.4f}", **{m.name: m.format(found[m.name]) for m in task.kind.metrics},
            "img_s": f"{self.seen / max(self.seconds, 1e-9):,.0f}",
        }

    def where(self) -> str:
        return f"after epoch {self.epoch}" if self.step == 0 else f"at epoch {self.epoch + 1}, step {self.step}"

    def next_epoch(self, metrics: EpochMetrics) -> Position:
        """The position after this epoch: the sums reset, the rest carried over."""
        kept = {k: getattr(self, k) for k in ("best_epoch", "best_value", "stall_value", "stall", "segment",
                                              "step_losses")}
        return Position(epoch=metrics.epoch, lr=self.lr, history=[*self.history, metrics], **kept)


def new_segment(saved: dict[str, Any] | None, config: TrainingConfig) -> int:
    """Where the schedule starts: a finished run resumed with more epochs starts a new schedule
    segment (warm-up and decay again over the added epochs); otherwise the run's own."""
    if saved is None:
        return 0
    pos = saved["position"]
    finished = pos["epoch"] >= saved["config"]["epochs"] and pos["step"] == 0
    return int(pos["epoch"]) if finished and config.epochs > pos["epoch"] else int(pos.get("segment", 0))


class Trainer:
    """One run: model, training step (optimizer, schedule) and position; `run()` trains to config.epochs."""

    def __init__(
        self, spec: Spec, config: TrainingConfig, data: Data, device: torch.device, run_dir: Path,
        quiet: bool, log: Log, dist: Dist | None = None, saved: dict[str, Any] | None = None,
    ) -> None:
        self.spec, self.config, self.data, self.device = spec, config, data, device
        self.dist = dist or Dist()
        # Only rank 0 prints and writes; the other ranks train silently.
        self.run_dir, self.quiet, self.log = run_dir, quiet or not self.dist.main, log if self.dist.main else silent
        self.task: Task = make_task(config, data.classes)
        self.model = self.build(resumed=saved is not None).to(device)
        self.steps = len(self.epoch_order(0))
        self.pos = Position(segment=new_segment(saved, config))
        self.step = make_step(self.model, config, device, self.steps, wrap=self.wrap, segment=self.pos.segment,
                              criterion=self.task.loss)
        size = (spec.input.height, spec.input.width)
        check_tta(config.tta, size)
        self.preprocess = preprocess_for(data.mean, data.std, size, config.dataset.augment, device,
                                         config.channels_last, getattr(config.dataset, "ignore_index", 255))
        if saved is None and config.init is None:  # conv init: whiten, from the data (before the average starts)
            fit_whitening(self.model, data.train, self.preprocess, config.seed, device)
        self.ema = self.averager()  # after make_step: the average starts from the weights as they train
        self.flip_phases = flip_phases(len(data.train), config.seed) if alternates(config.dataset.augment) else None
        self.saved_at: str | None = None  # where the last checkpoint was taken
        self.resumed = saved is not None
        # events.jsonl, for tools (the sweep, the search, the leaderboard); a resumed run's continue
        self.events = event_data(read_events(run_dir)) if saved is not None and self.dist.main else []
        if saved is not None:
            self.restore(saved)

    def build(self, resumed: bool) -> nn.Module:
        """The model from the seed, then its `init` weights (a resumed run's come from its
        checkpoint) and frozen parts."""
        seed_everything(self.config.seed)
        model, init = build_model(self.spec), self.config.init
        if init is not None and not resumed:
            from training.init import init_from

            self.log(init_from(model, init))
        elif init is not None:
            from training.init import freeze

            freeze(model, init.freeze)
        return model

    def averager(self) -> WeightAverage | None:
        """The weight average of config.ema over the current schedule segment; None without it."""
        c = self.config
        if c.ema is None:
            return None
        start = self.pos.segment
        return WeightAverage(c.ema, self.model, start * self.steps, (c.epochs - start) * self.steps)

    def averaged(self) -> AbstractContextManager[None]:
        """What evaluation sees and the weight files hold: the average with ema on, else the weights."""
        return self.ema.swapped(self.model) if self.ema is not None else nullcontext()

    def wrap(self, model: nn.Module) -> nn.Module:
        """What the forward pass runs: the model, in DDP under torchrun."""
        if not self.dist.enabled:
            return model
        ids = [self.device] if self.device.type == "cuda" else None
        return nn.parallel.DistributedDataParallel(model, device_ids=ids)

    def epoch_order(self, epoch: int) -> list[Tensor]:
        """This process's index batches of `epoch` (all of them when not distributed)."""
        c = self.config
        return epoch_batches(self.dist, len(self.data.train), c.batch_size, c.seed, epoch)

    # --- checkpoints ---

    def save(self) -> None:
        self.saved_at = self.pos.where()
        if not self.dist.main:
            return
        s = self.step
        state = {
            "spec": spec_data(self.spec), "config": self.config.model_dump(mode="json"),
            "position": self.pos.state(), "model": self.model.state_dict(),
            "optimizer": s.optimizer.state_dict(), "scheduler": s.scheduler.state_dict() if s.scheduler else {},
            "scaler": s.scaler.state_dict(), "rng": rng_states(),
            **({"ema": self.ema.state_dict()} if self.ema is not None else {}),
        }
        save_checkpoint(self.run_dir / CHECKPOINT, state)

    def record(self, kind: str, **fields: Any) -> None:
        """An event in events.jsonl (rank 0), for the tools that follow a run."""
        if self.dist.main:
            self.events.append(new_event(kind, **fields))
            write_events(self.run_dir, self.events)

    def restore(self, saved: dict[str, Any]) -> None:
        """Continue from a checkpoint, once every state is known to fit this run; what still fails
        to load is one CheckpointError line, never a traceback."""
        s, path = self.step, self.run_dir / CHECKPOINT
        check_fits(saved, path, self.model, s.optimizer, s.scheduler, s.scaler, self.steps, self.task.tally_size)
        try:
            self.load_states(saved)
        except (KeyError, TypeError, ValueError, RuntimeError, IndexError, OverflowError) as exc:
            why = f"{type(exc).__name__}: {exc}".splitlines()[0][:200]
            raise CheckpointError(f"{path} does not fit this run ({why}); it is not resumed") from None

    def load_states(self, saved: dict[str, Any]) -> None:
        """States first, the global RNGs last (building used them)."""
        s, segment = self.step, self.pos.segment
        self.model.load_state_dict(saved["model"])
        s.optimizer.load_state_dict(saved["optimizer"])
        assert s.scheduler is not None
        s.scheduler.load_state_dict(saved["scheduler"])
        s.scaler.load_state_dict(saved["scaler"])
        if self.ema is not None:
            self.ema.load_state_dict(saved["ema"])
        # The lr of the next step from this run's schedule (a new segment, or more epochs, change it).
        for group, base, factor in zip(s.optimizer.param_groups, s.scheduler.base_lrs, s.scheduler.lr_lambdas):
            group["lr"] = base * factor(s.scheduler.last_epoch)
        self.pos = Position.from_state({**saved["position"], "segment": segment})
        self.saved_at = self.pos.where()
        set_rng_states(saved["rng"])

    # --- running ---

    def run(self) -> TrainResult:
        self.log(self.banner())
        d, c = self.data, self.config
        self.record("start", resumed=self.resumed, epoch=self.pos.epoch, epochs=c.epochs, train_images=len(d.train),
                    val_images=_length(d.val), test_images=_length(d.test), steps_per_epoch=self.steps,
                    device=str(self.device), precision=c.precision)
        board = Board(self.run_dir, self.dist.main)
        try:
            with stop_on_signals(self.aborted) as stop:
                while not self.done():
                    self.train_epoch(stop, board)
                    self.finish_epoch(board)
                    # A signal during the last epoch's evaluation lets the run finish: weights and all.
                    if agree(self.dist, stop.signal is not None)[0] and not self.done():
                        raise self.interrupted(stop.signal or signal.SIGTERM)
                if self.dist.main:
                    with self.averaged():
                        save_weights(self.model, self.run_dir / WEIGHTS, {"spec": self.spec.name})
                result = self.result()
                self.record("end", epoch=result.epoch, best_epoch=result.best_epoch,
                            stopped_early=result.stopped_early)
        finally:
            board.close()
        self.log(self.farewell(result))
        return result

    def done(self) -> bool:
        return self.pos.epoch >= self.config.epochs or self.stopping_early()

    def banner(self) -> str:
        d, c = self.data, self.config
        start = f"resuming {self.pos.where()}" if self.resumed else "training"
        sizes = f"{len(d.train):,} train / {_size(d.val)} val / {_size(d.test)} test images"
        segment = ""
        if self.pos.segment and self.pos.epoch == self.pos.segment:
            segment = (f"; the run had finished, so epochs {self.pos.segment + 1}-{c.epochs} follow a new "
                       f"{c.schedule.kind} schedule from lr {self.step.optimizer.defaults['lr']:g}")
        return (
            f"{start} {self.spec.name} on {d.name} ({sizes}, {d.num_classes} classes) for "
            f"{_count(c.epochs, 'epoch')} of {_count(self.steps, 'step')} on {self.device} in {c.precision}; "
            f"outputs in {self.run_dir}{segment}"
        )

    def train_epoch(self, stop: StopFlag, board: Board) -> None:
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
                pos.lr = self.step.lr
                loss_sum, *tally, n, stops = self.train_step(images, labels, epoch, step, stop.signal is not None,
                                                             order[step])
                pos.add(step, loss_sum, tally, int(n), before + time.perf_counter() - started)
                pos.step_losses.append(loss_sum / max(n, 1))
                board.step(epoch * self.steps + step + 1, pos.step_losses[-1], pos.lr)
                bar.update()
                bar.set_postfix(pos.postfix(self.task), refresh=False)
                # Distributed: stop only as agreed, or the others would wait for us at the next step.
                stopping = bool(stops) if self.dist.enabled else stop.signal is not None
                if stopping and pos.step < len(order):
                    self.save()
                    raise self.interrupted(stop.signal or signal.SIGTERM)

    def train_step(self, images: Tensor, labels: Tensor, epoch: int, step: int, stopping: bool,
                   indices: Tensor | None = None) -> list[float]:
        """One optimizer step on the training images `indices` (then the weight average's update);
        returns its summed loss, the task's tally, images and stop requests, over all processes.
        Those are reduced and read in one go before backward: the step's single host
        synchronization, which also checks the loss before any weight is touched."""
        images, labels = images.to(self.device, non_blocking=True), labels.to(self.device, non_blocking=True)
        rank = (self.dist.rank,) if self.dist.enabled else ()  # each process augments its own share
        rng, flips = generator(self.config.seed, epoch, step, *rank), self.flips(indices, epoch)
        inputs, labels = self.preprocess.pair(images, labels, rng, flips)
        found: list[float] = []

        def check(loss: Tensor, outputs: Tensor) -> None:
            n = float(len(labels))
            tally = self.task.tally(outputs.detach(), labels).float()  # float32: exact below 2**24 per step
            flags = torch.tensor([n, float(stopping)], device=loss.device)
            found.extend(total_of(self.dist, torch.cat([(loss.detach() * n).view(1), tally, flags])))
            if not math.isfinite(found[0]):  # the same sum on every rank: all stop together
                raise self.diverged(found[0] / max(found[-2], 1.0), epoch, step)

        self.step(inputs, labels, check)
        if self.ema is not None:
            self.ema.update(self.model, epoch * self.steps + step + 1)
        return found

    def flips(self, indices: Tensor | None, epoch: int) -> Tensor | None:
        """Under hflip_mode alternate, which of the images `indices` are flipped in `epoch`; else None."""
        if self.flip_phases is None or indices is None:
            return None
        return alternate_flips(self.flip_phases, indices, epoch)

    def evaluate(self, split: Split | None) -> tuple[float | None, dict[str, float]]:
        """The task's loss and metrics on a whole split, of the weight average with ema on."""
        with self.averaged():
            return self.evaluate_as_is(split)

    def evaluate_as_is(self, split: Split | None) -> tuple[float | None, dict[str, float]]:
        """The task's loss and metrics of the model's weights on a whole split (no augmentation but
        config.tta's); (None, {}) without the split."""
        from training.evaluation import evaluate_split

        if split is None or len(split) == 0:
            return None, {}
        self.model.eval()
        c = self.config
        return evaluate_split(self.step.forward, self.preprocess, split, self.task, batch_size=c.batch_size,
                              precision=c.precision, device=self.device, dist=self.dist, tta=c.tta)

    def split_values(self, split: str, loss: float | None, metrics: dict[str, float]) -> dict[str, float | None]:
        """{SPLIT_loss: loss, SPLIT_NAME: value, ...} for the task's metrics (None: not evaluated)."""
        names = split_columns(split, self.task.kind.metrics)
        return {names[0]: loss, **{f"{split}_{m.name}": metrics.get(m.name) for m in self.task.kind.metrics}}

    def finish_epoch(self, board: Board) -> None:
        """Validate, test if due, record the epoch, keep the best weights, checkpoint, write files."""
        pos, epoch = self.pos, self.pos.epoch + 1
        started = time.perf_counter()
        val = self.evaluate(self.data.val)
        due = epoch % self.config.eval_every == 0 or epoch == self.config.epochs
        test = self.evaluate(self.data.test) if due else (None, {})
        seen = max(1, pos.seen)
        metrics = EpochMetrics.of(
            self.task.kind.columns, epoch=epoch, **self.split_values("train", pos.loss_sum / seen,
                                                                     pos.train_metrics(self.task)),
            **self.split_values("test", *test), lr=pos.lr, seconds=pos.seconds + time.perf_counter() - started,
            **self.split_values("val", *val),
        )
        self.check_finite(metrics)
        self.pos = pos.next_epoch(metrics)
        self.track_best(metrics)
        self.save()
        if self.dist.main:
            write_metrics(self.run_dir / METRICS, [m.as_dict() for m in self.pos.history], self.task.kind.columns)
            title = f"{self.spec.name} on {self.data.name} ({len(self.data.train):,} training images)"
            plot_curves(self.run_dir / CURVES, self.pos.history, title, self.pos.step_losses, self.steps,
                        self.task.kind.metrics[0])
            board.epoch(metrics, seen / max(pos.seconds, 1e-9))
            self.show(board, epoch)
        self.record("epoch", epoch=epoch, epochs=self.config.epochs)
        self.log(epoch_line(metrics, self.config.epochs, seen, self.task.kind.metrics))

    def show(self, board: Board, epoch: int) -> None:
        """The task's picture of the first SHOWN validation images (segmentation: image | mask |
        prediction) on TensorBoard. Eval mode, no randomness: the run's RNG streams are untouched."""
        val = self.data.val
        if not board.enabled or not self.task.pictured or val is None or len(val) == 0:
            return
        images, targets = next(iter(val.batches([torch.arange(min(SHOWN, len(val)))])))
        images = images.to(self.device)
        self.model.eval()

        @torch.inference_mode()
        def forward(x: Tensor) -> Tensor:
            with autocast(self.config.precision, self.device.type):
                return self.model(self.preprocess(x))

        with self.averaged():
            picture = self.task.picture(forward, images, targets.to(self.device))
        if picture is not None:
            board.image("val/predictions", picture, epoch)

    def check_finite(self, m: EpochMetrics) -> None:
        """Stop (exit 1) before a checkpoint or best weights keep non-finite weights or evaluations."""
        bad = [f"the {name} loss is {value}" for name, value in (("validation", m.get("val_loss")),
                                                                 ("test", m.get("test_loss")))
               if value is not None and not math.isfinite(value)]
        if not all(bool(torch.isfinite(p).all()) for p in self.model.parameters()):
            bad.append("some weights are not finite")
        elif self.ema is not None and not self.ema.finite():
            bad.append("some averaged weights are not finite")
        if bad:
            raise NonFiniteLoss(f"{' and '.join(bad)} after epoch {m.epoch}: training diverged; {self.kept()}")

    def kept(self) -> str:
        if self.saved_at:
            return f"the last good checkpoint ({self.saved_at}) is kept in {self.run_dir / CHECKPOINT}"
        return "no checkpoint was written before it"

    def track_best(self, m: EpochMetrics) -> None:
        """best.safetensors when the monitored validation metric improves; the early-stopping count."""
        pos, c, higher = self.pos, self.config, self.task.kind.higher_is_better
        value = m.get(str(c.monitor))
        if value is not None and (pos.best_value is None or better(higher(str(c.monitor)), value, pos.best_value, 0.0)):
            pos.best_epoch, pos.best_value = m.epoch, value
            if self.dist.main:
                with self.averaged():
                    save_weights(self.model, self.run_dir / BEST, {"spec": self.spec.name, "epoch": str(m.epoch)})
        es = c.early_stopping
        watched = m.get(str(es.metric)) if es is not None else None
        if es is None or watched is None:
            return
        if pos.stall_value is None or better(higher(str(es.metric)), watched, pos.stall_value, es.min_delta):
            pos.stall_value, pos.stall = watched, 0
        else:
            pos.stall += 1

    def stopping_early(self) -> bool:
        es = self.config.early_stopping
        return es is not None and self.pos.stall >= es.patience

    # --- endings ---

    def interrupted(self, signum: int) -> TrainingInterrupted:
        """Stopped by a signal once the checkpoint of pos.where() is written."""
        name = signal.Signals(signum).name
        self.record("interrupted", signal=name, where=self.pos.where())
        return TrainingInterrupted(name, signum, self.pos.where(), self.run_dir)

    def aborted(self, signum: int) -> TrainingInterrupted:
        """A second stop signal: stop at once, naming the checkpoint a resume starts from."""
        saved = f"the last checkpoint ({self.saved_at}) is in {self.run_dir}" if self.saved_at else None
        return TrainingInterrupted(signal.Signals(signum).name, signum, "again: stopped at once", self.run_dir, saved)

    def diverged(self, value: float, epoch: int, step: int) -> NonFiniteLoss:
        lr, kept = self.step.lr, self.kept()
        return NonFiniteLoss(
            f"the loss is {value} at epoch {epoch + 1}, step {step + 1} of {self.steps}: training diverged; "
            f"the learning rate ({lr:.4g} at that step, training.optimizer.lr) is likely too high: lower it "
            f"(--lr) or clip gradients (training.grad_clip); {kept}"
        )

    def result(self) -> TrainResult:
        """The final metrics, with the test split evaluated for the final and the best weights."""
        history = tuple(self.pos.history)
        last = history[-1]
        if last.get("test_loss") is None and self.data.test is not None:  # stopped early before its test epoch
            last = last.updated(**self.split_values("test", *self.evaluate(self.data.test)))
            history = (*history[:-1], last)
        best_epoch, best_test = self.best_test(last)
        results = {
            "final": {**last.as_dict()},
            "best": {"epoch": best_epoch, "monitor": self.config.monitor, "value": self.pos.best_value, **best_test},
            "stopped_early": self.stopping_early(),
        }
        if self.dist.main:
            write_results(self.run_dir, results)
        return TrainResult(self.run_dir, last.epoch, last, best_epoch, best_test, history, self.stopping_early())

    def best_test(self, last: EpochMetrics) -> tuple[int, dict[str, float | None]]:
        """(epoch, test loss and metrics) of the best weights; the final ones when they are the best."""
        best = self.pos.best_epoch
        if not best or best == last.epoch or self.data.test is None:
            return (best or last.epoch), {c: last.get(c) for c in split_columns("test", self.task.kind.metrics)}
        from training.checkpoint import load_weights

        final = {k: v.clone() for k, v in self.model.state_dict().items()}
        self.model.load_state_dict(load_weights(self.run_dir / BEST))
        try:  # best.safetensors holds what was evaluated (the average with ema on)
            return best, self.split_values("test", *self.evaluate_as_is(self.data.test))
        finally:
            self.model.load_state_dict(final)

    def farewell(self, r: TrainResult) -> str:
        files = ", ".join([WEIGHTS, BEST, CHECKPOINT, METRICS, CURVES, SPEC_FILE, RUN_INFO, RESULTS, EVENTS, SUMMARY,
                           f"{BOARD_DIR}/"])
        early = f"stopped early after epoch {r.epoch}; " if r.stopped_early else ""
        m = self.task.kind.metrics[0]
        best, final = (float(v or 0.0) for v in (r.best_test.get(f"test_{m.name}"), r.final.get(f"test_{m.name}")))
        return (
            f"{early}best validation epoch {r.best_epoch}: test {m.title} {m.format(best)}; "
            f"final (epoch {r.epoch}) {m.format(final)}\noutputs in {self.run_dir}: {files}"
        )


def alternates(augment: Augment | SegmentationAugment) -> bool:
    """Whether training flips each image on alternate epochs (hflip_mode alternate)."""
    return isinstance(augment, Augment) and augment.hflip and augment.hflip_mode == "alternate"


def better(higher: bool, value: float, than: float, min_delta: float) -> bool:
    """Is `value` better than `than` by more than min_delta (higher when `higher`, else lower)?"""
    return value > than + min_delta if higher else value < than - min_delta


def _length(split: Split | None) -> int | None:
    return None if split is None else len(split)


def _size(split: Split | None) -> str:
    return "no" if split is None else f"{len(split):,}"


def _count(n: int, noun: str) -> str:
    return f"{n:,} {noun}{'s' * (n != 1)}"
