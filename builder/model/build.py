"""Spec -> nn.Module. Module names are stable: features.block1.conv, classifier.fc1, ...

The result is float32 on the CPU (or on the device of an enclosing `torch.device(...)`
context, which is how summaries build on "meta" without allocating weights).
"""

from __future__ import annotations

import os
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from itertools import pairwise
from typing import Any

import torch
from torch import nn

from builder.lang.errors import BuilderError
from builder.lang.shapes import BlockShape, body_stride, conv_groups, infer, shortcut_kind
from builder.lang.spec import (
    ActivationBlock,
    AdaptiveAvgPoolBlock,
    BatchNormBlock,
    BlockSpec,
    DropoutBlock,
    ParallelBlock,
    PoolBlock,
    ResidualBlock,
    SequenceBlock,
    Spec,
    conv_block_layers,
    default_name,
)
from builder.model import layers
from builder.model.blocks import Parallel, Residual

BYTES_PER_PARAM = 4  # float32


class ModelTooLargeError(BuilderError):
    """The parameters would not fit in the memory that is available."""


def build_model(spec: Spec, *, check_memory: bool = True) -> nn.Sequential:
    """Build the network of a validated spec: features -> [avgpool] -> flatten -> classifier."""
    if check_memory and torch.get_default_device().type != "meta":
        ensure_fits_in_memory(spec)
    parts: OrderedDict[str, nn.Module] = OrderedDict(features=build_features(spec))
    if spec.classifier.adaptive_pool:
        parts["avgpool"] = nn.AdaptiveAvgPool2d(tuple(spec.classifier.adaptive_pool))
    parts["flatten"] = nn.Flatten(1)
    parts["classifier"] = build_classifier(spec)
    return nn.Sequential(parts)


def build_features(spec: Spec) -> nn.Sequential:
    """Every block of the spec, named and shaped exactly as static inference names and shapes them."""
    report = infer(spec)
    assert report.flatten is not None, "build_model needs a spec that passed shape inference"
    return build_list(_Plan(spec, {s.name: s for s in report.all_blocks}), spec.blocks, "")


@dataclass(frozen=True)
class _Plan:
    """The spec and its static shapes by module path: the builder follows inference, never guesses."""

    spec: Spec
    shapes: dict[str, BlockShape]


def build_list(plan: _Plan, blocks: list[Any], prefix: str) -> nn.Sequential:
    """A list of blocks as an nn.Sequential, children named as in static inference."""
    parts: OrderedDict[str, nn.Module] = OrderedDict()
    for i, block in enumerate(blocks):
        name = default_name(block, i)
        parts[name] = KINDS[type(block)](plan, block, plan.shapes[prefix + name])
    return nn.Sequential(parts)


def build_block(plan: _Plan, block: BlockSpec, shape: BlockShape) -> nn.Module:
    """conv -> [batchnorm] -> activation -> [lrn] -> [pool], in the order conv_block_layers gives."""
    in_ch = shape.in_shape[0]
    conv = nn.Conv2d(
        in_ch, block.out_channels, block.kernel_size, stride=block.stride, padding=block.padding,
        groups=conv_groups(block, in_ch), bias=block.bias,
    )
    made: dict[str, Callable[[Any], Any]] = {  # each present layer makes a module (never None)
        "conv": lambda _: conv, "act": layers.activation, "pool": layers.pool,
        "norm": lambda norm: layers.norm(norm, block.out_channels),
    }
    return nn.Sequential(OrderedDict((role, made[role](layer)) for role, layer in conv_block_layers(plan.spec, block)))


def _sequence(plan: _Plan, block: SequenceBlock, shape: BlockShape) -> nn.Module:
    return build_list(plan, block.blocks, f"{shape.name}.")


def _residual(plan: _Plan, block: ResidualBlock, shape: BlockShape) -> nn.Module:
    body = build_list(plan, block.body, f"{shape.name}.body.")
    kind = shortcut_kind(block, shape.in_shape, shape.out_shape)
    shortcut: nn.Module | None = None
    if kind == "identity":
        shortcut = nn.Identity()
    elif kind == "projection":
        shortcut = _projection(plan, block, shape)
    return Residual(body, shortcut, layers.activation(block.activation))


def _projection(plan: _Plan, block: ResidualBlock, shape: BlockShape) -> nn.Module:
    """1x1 conv with the body's stride, then BatchNorm (ResNet's downsample)."""
    c_in, c_out = shape.in_shape[0], shape.out_shape[0]
    conv = nn.Conv2d(c_in, c_out, 1, stride=body_stride(plan.spec, block.body), bias=False)
    if block.shortcut_norm == "none":
        return nn.Sequential(OrderedDict(conv=conv))
    return nn.Sequential(OrderedDict(conv=conv, norm=nn.BatchNorm2d(c_out)))


def _parallel(plan: _Plan, block: ParallelBlock, shape: BlockShape) -> nn.Module:
    branches = [build_list(plan, branch, f"{shape.name}.branch{k + 1}.") for k, branch in enumerate(block.branches)]
    return Parallel(branches, block.merge)


def _pool(plan: _Plan, block: PoolBlock, shape: BlockShape) -> nn.Module:
    made = layers.pool(block.window())
    assert made is not None
    return made


def _adaptive(plan: _Plan, block: AdaptiveAvgPoolBlock, shape: BlockShape) -> nn.Module:
    return nn.AdaptiveAvgPool2d((block.output_size[0], block.output_size[1]))


def _batchnorm(plan: _Plan, block: BatchNormBlock, shape: BlockShape) -> nn.Module:
    return nn.BatchNorm2d(shape.in_shape[0], eps=block.eps, momentum=block.momentum)


def _activation(plan: _Plan, block: ActivationBlock, shape: BlockShape) -> nn.Module:
    # not in place: a standalone activation may open a branch or a residual body, whose input
    # the other branches or the shortcut still need
    made = layers.activation(block.fn, inplace=False)
    return made if made is not None else nn.Identity()


def _dropout(plan: _Plan, block: DropoutBlock, shape: BlockShape) -> nn.Module:
    return nn.Dropout(block.p)


KINDS: dict[type, Callable[[_Plan, Any, BlockShape], nn.Module]] = {
    BlockSpec: build_block,
    SequenceBlock: _sequence,
    ResidualBlock: _residual,
    ParallelBlock: _parallel,
    PoolBlock: _pool,
    AdaptiveAvgPoolBlock: _adaptive,
    BatchNormBlock: _batchnorm,
    ActivationBlock: _activation,
    DropoutBlock: _dropout,
}


def build_classifier(spec: Spec) -> nn.Sequential:
    """Hidden linears fc1..fcN with activation and dropout, then the output linear."""
    head = spec.classifier
    flat = infer(spec).flatten
    assert flat is not None, "build_model needs a spec that passed shape inference"
    sizes = [flat, *head.hidden]
    parts: OrderedDict[str, nn.Module] = OrderedDict()
    for i, (a, b) in enumerate(pairwise(sizes), start=1):
        if head.dropout and head.dropout_position == "before":
            parts[f"drop{i}"] = nn.Dropout(head.dropout)
        parts[f"fc{i}"] = nn.Linear(a, b)
        act = layers.activation(head.activation)
        if act is not None:
            parts[f"act{i}"] = act
        if head.dropout and head.dropout_position == "after":
            parts[f"drop{i}"] = nn.Dropout(head.dropout)
    parts[f"fc{len(sizes)}"] = nn.Linear(sizes[-1], spec.num_classes)
    return nn.Sequential(parts)


def available_memory() -> int:
    """Bytes of memory available to allocate (MemAvailable on Linux, else free pages; 0 if unknown)."""
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError):
        pass
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (AttributeError, ValueError, OSError):
        return 0


def ensure_fits_in_memory(spec: Spec) -> None:
    """Refuse, before allocating anything, a model whose float32 weights exceed free memory."""
    params = infer(spec).total_params
    need, have = params * BYTES_PER_PARAM, available_memory()
    if have and need > have:  # 0: unknown, do not guess
        raise ModelTooLargeError(
            f"{spec.name}: {params:,} parameters need {need / 2**30:.1f} GiB as float32, but only "
            f"{have / 2**30:.1f} GiB of memory is available; summarize it on the meta device instead"
        )
