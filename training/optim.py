"""The optimizer (with its parameter groups) and the per-step learning-rate schedule of a TrainingConfig."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from training.config import AdamWConfig, OptimizerConfig, ParamSelector, SGDConfig, TrainingConfig
from training.schedule import lr_factor

# What `norm` selects: batch, instance, group and layer norms (builder's LayerNorm2d included).
NORMS = (nn.modules.batchnorm._NormBase, nn.GroupNorm, nn.LayerNorm)


def make_optimizer(config: OptimizerConfig, model: nn.Module) -> torch.optim.Optimizer:
    """The optimizer of `config` over the model's trainable parameters: group 0 takes those no
    configured group selects (the optimizer's own lr and weight decay), then one group per entry
    of config.groups, in order, even when empty (the optimizer's structure never depends on the model)."""
    groups = param_groups(config, model)
    if isinstance(config, SGDConfig):
        return torch.optim.SGD(
            groups, lr=config.lr, momentum=config.momentum, nesterov=config.nesterov, weight_decay=config.weight_decay
        )
    adam = torch.optim.AdamW if isinstance(config, AdamWConfig) else torch.optim.Adam
    return adam(groups, lr=config.lr, betas=(config.betas[0], config.betas[1]), eps=config.eps,
                weight_decay=config.weight_decay)


def param_groups(config: OptimizerConfig, model: nn.Module) -> list[dict[str, Any]]:
    """[{params: the rest}, {params, lr, weight_decay} per configured group]; each trainable
    parameter in the first group that selects it."""
    chosen: list[list[nn.Parameter]] = [[] for _ in range(1 + len(config.groups))]
    norm_params = {id(p) for m in model.modules() if isinstance(m, NORMS) for p in m.parameters(recurse=False)}
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        found = (i for i, g in enumerate(config.groups, start=1) if selects(g.params, name, id(p) in norm_params))
        chosen[next(found, 0)].append(p)
    extra = [{"params": ps, "lr": config.lr * g.lr_scale,
              **({"weight_decay": g.weight_decay} if g.weight_decay is not None else {})}
             for g, ps in zip(config.groups, chosen[1:])]
    return [{"params": chosen[0]}, *extra]


def selects(selector: ParamSelector, name: str, in_norm: bool) -> bool:
    """Whether the parameter `name` (of a normalization layer when `in_norm`) is of `selector`."""
    bias = name.rsplit(".", 1)[-1] == "bias"
    return {"bias": bias, "norm": in_norm, "norm_and_bias": bias or in_norm}[selector]


def make_scheduler(
    config: TrainingConfig, optimizer: torch.optim.Optimizer, steps_per_epoch: int, segment: int = 0,
) -> torch.optim.lr_scheduler.LambdaLR:
    """lr = optimizer lr x lr_factor at each global step. The schedule runs from epoch `segment`
    to config.epochs: 0 for a run, the old end for a finished run resumed with more epochs."""
    start, epochs = segment * steps_per_epoch, config.epochs - segment

    def factor(step: int) -> float:
        return lr_factor(config.schedule, step - start, steps_per_epoch, epochs)

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)
