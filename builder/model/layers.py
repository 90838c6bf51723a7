"""The closed tables of layer factories: activation name, norm spec (by its NormDef), pool spec -> nn.Module.

Nothing here is looked up by a name taken from the YAML other than through these fixed
tables, so a spec can only ever produce the layers listed below.
"""

from __future__ import annotations

from collections.abc import Callable
from importlib import import_module
from types import MappingProxyType
from typing import Any, get_args

from torch import nn

from builder.lang.axes import torch_arg
from builder.lang.base import Activation, NoPoolSpec, WindowPoolSpec
from builder.lang.kinds.batchnorm import BatchNormBlock
from builder.lang.norms import AnyNorm, BatchNormSpec, GroupNormSpec, LayerNormSpec, LRNSpec, norm_def
from builder.model.blocks import GELU, LayerNorm2d
from builder.model.lrn import LocalResponseNorm

ACTIVATIONS: MappingProxyType[str, Callable[[bool], nn.Module]] = MappingProxyType(
    {
        "relu": lambda inplace: nn.ReLU(inplace=inplace),
        "relu6": lambda inplace: nn.ReLU6(inplace=inplace),
        "leaky_relu": lambda inplace: nn.LeakyReLU(0.01, inplace=inplace),
        "gelu": lambda inplace: GELU(),
        "silu": lambda inplace: nn.SiLU(inplace=inplace),
        "tanh": lambda inplace: nn.Tanh(),
        "sigmoid": lambda inplace: nn.Sigmoid(),
        "elu": lambda inplace: nn.ELU(inplace=inplace),
        "hardswish": lambda inplace: nn.Hardswish(inplace=inplace),
        "hardsigmoid": lambda inplace: nn.Hardsigmoid(inplace=inplace),
    }
)
if set(ACTIVATIONS) != set(get_args(Activation)) - {"none"}:  # the Literal and this table are one list
    raise ImportError(f"activations without a factory or a name: {set(ACTIVATIONS) ^ set(get_args(Activation))}")


def activation(name: Activation, inplace: bool = True) -> nn.Module | None:
    """The activation module, or None for 'none'. In place (the default) saves memory after a
    layer whose output nothing else reads."""
    return None if name == "none" else ACTIVATIONS[name](inplace)


def lrn(spec: LRNSpec, channels: int) -> nn.Module:
    # nn.LocalResponseNorm's result, faster on CPU and bf16-capable (see builder/lrn.py)
    return LocalResponseNorm(spec.size, alpha=spec.alpha, beta=spec.beta, k=spec.k)


def batchnorm(spec: BatchNormSpec | BatchNormBlock, channels: int) -> nn.Module:
    made = nn.BatchNorm2d(channels, eps=spec.eps, momentum=spec.momentum)
    made.weight.requires_grad_(not spec.frozen_weight)  # frozen: the scale stays at its initial 1
    return made


def layernorm(spec: LayerNormSpec, channels: int) -> nn.Module:
    return LayerNorm2d(channels, eps=spec.eps)


def groupnorm(spec: GroupNormSpec, channels: int) -> nn.Module:
    return nn.GroupNorm(spec.groups, channels, eps=spec.eps)


def _max_or_avg(spec: WindowPoolSpec) -> nn.Module:
    window = torch_arg(spec.kernel_size), torch_arg(spec.stride), torch_arg(spec.padding)
    if spec.kind == "avg":  # no dilation (the spec refuses one)
        return nn.AvgPool2d(window[0], stride=window[1], padding=window[2], ceil_mode=spec.ceil_mode)
    return nn.MaxPool2d(window[0], stride=window[1], padding=window[2], dilation=torch_arg(spec.dilation),
                        ceil_mode=spec.ceil_mode)


POOLS: MappingProxyType[type, Callable[[Any], nn.Module]] = MappingProxyType({WindowPoolSpec: _max_or_avg})


def norm(spec: AnyNorm, channels: int) -> nn.Module | None:
    """The norm layer for `channels` feature maps (its NormDef's factory), or None for kind 'none'."""
    factory = norm_def(spec).factory
    if not factory:
        return None
    module, _, name = factory.partition(":")
    made: Callable[[Any, int], nn.Module] = getattr(import_module(module), name)
    return made(spec, channels)


def pool(spec: WindowPoolSpec | NoPoolSpec) -> nn.Module | None:
    """The pooling layer, or None for kind 'none'."""
    factory = POOLS.get(type(spec))
    return None if factory is None else factory(spec)
