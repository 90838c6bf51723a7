"""Where and in what precision a run computes: the device choice, autocast and seeding."""

from __future__ import annotations

import random
from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager, nullcontext
from typing import Any

import numpy as np
import torch

from builder.model.device import DeviceError, find_device
from training.config import TrainingConfig
from training.errors import ConfigProblems

AUTOCAST = {"bf16": torch.bfloat16, "fp16": torch.float16}


def select_device(config: TrainingConfig) -> torch.device:
    """The run's device (find_device); fp16 needs a GPU."""
    try:
        device = find_device(config.device)
    except DeviceError as exc:
        raise ConfigProblems.at(("training", "device"), str(exc)) from None
    if config.precision == "fp16" and device.type == "cpu":
        raise ConfigProblems.at(("training", "precision"), "fp16 needs a GPU; use bf16 on the CPU")
    return device


def autocast(precision: str, device_type: str) -> AbstractContextManager[Any]:
    """Mixed precision for bf16/fp16 (weights stay fp32); nothing for fp32."""
    if precision not in AUTOCAST:
        return nullcontext()
    return torch.autocast(device_type, dtype=AUTOCAST[precision])


@contextmanager
def threads(count: int | None) -> Iterator[None]:
    """torch's intra-op CPU threads set to `count` for the run (None: torch's default), then restored."""
    before = torch.get_num_threads()
    if count is not None:
        torch.set_num_threads(count)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def seed_everything(seed: int) -> None:
    torch.manual_seed(seed)
    random.seed(seed)
    np.random.seed(seed % 2**32)
