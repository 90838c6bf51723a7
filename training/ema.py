"""Weight averaging: an exponential moving average (EMA) of a model's weights, or lookahead.

The average covers the whole state_dict: parameters and floating-point buffers (BatchNorm's
running mean and variance) are averaged, integer buffers (num_batches_tracked) copied, as
timm's ModelEmaV2 and torch's AveragedModel(use_buffers=True) do. The trainer evaluates and
saves the average (`swapped`), and checkpoints it (`state_dict`), so a resumed run goes on
averaging exactly where it stopped.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch
from torch import Tensor, nn

from training.config import EMAConfig


class WeightAverage:
    """ema = d * ema + (1 - d) * weights after every config.every-th step of the run, d =
    decay x (share of the schedule segment done) ** ramp; lookahead then sets the weights to ema."""

    def __init__(self, config: EMAConfig, model: nn.Module, segment_start: int, segment_steps: int) -> None:
        self.config, self.start, self.steps = config, segment_start, max(segment_steps, 1)
        self.tensors = {k: v.detach().clone() for k, v in model.state_dict().items()}  # starts at the weights

    def decay(self, step: int) -> float:
        """d after global step `step` (steps done, counted from 1)."""
        done = min(max(step - self.start, 0) / self.steps, 1.0)
        return self.config.decay * done**self.config.ramp if self.config.ramp else self.config.decay

    @torch.no_grad()
    def update(self, model: nn.Module, step: int) -> None:
        """Average in the model's weights after global step `step` (counted from 1), when due."""
        if step % self.config.every:
            return
        live = model.state_dict()
        floats = [k for k, v in live.items() if v.is_floating_point()]
        averaged, current = [self.tensors[k] for k in floats], [live[k] for k in floats]
        torch._foreach_lerp_(averaged, current, 1.0 - self.decay(step))  # ema += (1 - d) * (weights - ema)
        for k, v in live.items():
            if not v.is_floating_point():
                self.tensors[k].copy_(v)
        if self.config.lookahead:
            torch._foreach_copy_(current, averaged)

    @contextmanager
    def swapped(self, model: nn.Module) -> Iterator[None]:
        """The model holds the average inside the block, its own weights again after it (exact copies)."""
        live = model.state_dict()  # detached aliases of the model's tensors
        kept = {k: v.clone() for k, v in live.items()}
        _copy(live, self.tensors)
        try:
            yield
        finally:
            _copy(live, kept)

    def state_dict(self) -> dict[str, Tensor]:
        return self.tensors

    def load_state_dict(self, state: dict[str, Tensor]) -> None:
        _copy(self.tensors, state)

    def finite(self) -> bool:
        return all(bool(torch.isfinite(v).all()) for v in self.tensors.values() if v.is_floating_point())


@torch.no_grad()
def _copy(into: dict[str, Tensor], values: dict[str, Tensor]) -> None:
    for k, v in into.items():
        v.copy_(values[k])
