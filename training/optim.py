"""The optimizer and the per-step learning-rate schedule of a TrainingConfig."""

from __future__ import annotations

import torch
from torch import nn

from training.config import AdamWConfig, OptimizerConfig, SGDConfig, TrainingConfig
from training.schedule import lr_factor


def make_optimizer(config: OptimizerConfig, model: nn.Module) -> torch.optim.Optimizer:
    params = [p for p in model.parameters() if p.requires_grad]
    if isinstance(config, SGDConfig):
        return torch.optim.SGD(
            params, lr=config.lr, momentum=config.momentum, nesterov=config.nesterov, weight_decay=config.weight_decay
        )
    adam = torch.optim.AdamW if isinstance(config, AdamWConfig) else torch.optim.Adam
    return adam(params, lr=config.lr, betas=(config.betas[0], config.betas[1]), eps=config.eps,
                weight_decay=config.weight_decay)


def make_scheduler(
    config: TrainingConfig, optimizer: torch.optim.Optimizer, steps_per_epoch: int, segment: int = 0,
) -> torch.optim.lr_scheduler.LambdaLR:
    """lr = optimizer lr x lr_factor at each global step. The schedule runs from epoch `segment`
    to config.epochs: 0 for a run, the old end for a finished run resumed with more epochs."""
    start, epochs = segment * steps_per_epoch, config.epochs - segment

    def factor(step: int) -> float:
        return lr_factor(config.schedule, step - start, steps_per_epoch, epochs)

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)
