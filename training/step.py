"""The training step, one definition: `train` runs it and `bench` times it.

A step is forward (under autocast for bf16/fp16), the task's loss (cross-entropy unless a
`criterion` is given), an optional check of the loss
before any weight is touched, backward through the grad scaler, optional clipping, the
optimizer step and the scheduler step.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from training.config import TrainingConfig
from training.device import autocast
from training.optim import make_optimizer, make_scheduler


@dataclass
class TrainStep:
    """Everything one optimizer step needs; `model` holds the parameters, `forward` runs them
    (the model itself, or its DDP / compiled wrapper)."""

    model: nn.Module
    forward: nn.Module
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LambdaLR | None
    scaler: torch.amp.GradScaler
    precision: str = "fp32"
    label_smoothing: float = 0.0
    grad_clip: float | None = None
    channels_last: bool = False
    # (outputs, targets) -> the batch's mean loss (float32); None: cross-entropy with label_smoothing
    criterion: Callable[[Tensor, Tensor], Tensor] | None = None

    def __call__(self, inputs: Tensor, labels: Tensor, check: Callable[[Tensor, Tensor], None] | None = None) -> tuple[
            Tensor, Tensor]:
        """One step on a preprocessed batch; returns its mean loss (a 0-d tensor on the device) and
        the model's outputs (logits (N, classes) for classification). `check(loss, logits)` runs
        before backward and may raise to leave the weights untouched; nothing here waits for the device."""
        if self.channels_last:
            inputs = inputs.contiguous(memory_format=torch.channels_last)
        self.model.train()
        with autocast(self.precision, inputs.device.type):
            logits = self.forward(inputs)
        if self.criterion is not None:
            loss = self.criterion(logits, labels)
        else:
            loss = F.cross_entropy(logits.float(), labels, label_smoothing=self.label_smoothing)
        if check is not None:
            check(loss, logits)
        self.optimizer.zero_grad(set_to_none=True)
        self.scaler.scale(loss).backward()
        if self.grad_clip is not None:
            self.scaler.unscale_(self.optimizer)
            nn.utils.clip_grad_norm_(self.model.parameters(), self.grad_clip)
        self.scaler.step(self.optimizer)
        self.scaler.update()
        if self.scheduler is not None:
            self.scheduler.step()
        return loss, logits

    @property
    def lr(self) -> float:
        """The learning rate the next step uses."""
        return float(self.optimizer.param_groups[0]["lr"])


def make_step(
    model: nn.Module, config: TrainingConfig, device: torch.device, steps_per_epoch: int, *,
    wrap: Callable[[nn.Module], nn.Module] | None = None, segment: int = 0,
    criterion: Callable[[Tensor, Tensor], Tensor] | None = None,
) -> TrainStep:
    """The step of `config` for `model` (already on `device`): channels_last, the optimizer, the
    schedule, fp16's scaler, and `forward` = wrap(model) (DDP) compiled if config.compile;
    `criterion` is the task's loss (None: classification's cross-entropy)."""
    if config.channels_last:
        model.to(memory_format=torch.channels_last)
    forward = wrap(model) if wrap is not None else model
    if config.compile:
        forward = torch.compile(forward)  # type: ignore[assignment]
    optimizer = make_optimizer(config.optimizer, model)
    return TrainStep(
        model, forward, optimizer, make_scheduler(config, optimizer, steps_per_epoch, segment),
        torch.amp.GradScaler(device.type, enabled=config.precision == "fp16"), config.precision,
        config.label_smoothing, config.grad_clip, config.channels_last, criterion,
    )
