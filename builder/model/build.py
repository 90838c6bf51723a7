"""Spec -> nn.Module. Module names are stable: features.block1.conv, classifier.fc1, ...

The result is float32 on the CPU (or on the device of an enclosing `torch.device(...)`
context, which is how summaries build on "meta" without allocating weights).
"""

from __future__ import annotations

import os
from collections import OrderedDict
from itertools import pairwise

import torch
from torch import nn

from builder.lang.errors import BuilderError
from builder.lang.shapes import infer
from builder.lang.spec import BatchNormSpec, BlockSpec, Spec, block_activation, block_norm, block_pool
from builder.model import layers

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
    in_ch = spec.input.channels
    blocks: OrderedDict[str, nn.Module] = OrderedDict()
    for i, block in enumerate(spec.blocks):
        blocks[f"block{i + 1}"] = build_block(spec, block, in_ch)
        in_ch = block.out_channels
    return nn.Sequential(blocks)


def build_block(spec: Spec, block: BlockSpec, in_channels: int) -> nn.Sequential:
    """conv -> [batchnorm] -> activation -> [lrn] -> [pool], each child named for its role."""
    norm_spec = block_norm(spec, block)
    conv = nn.Conv2d(
        in_channels, block.out_channels, block.kernel_size, stride=block.stride,
        padding=block.padding, groups=block.groups, bias=block.bias,
    )
    norm = layers.norm(norm_spec, block.out_channels)
    norm_first = isinstance(norm_spec, BatchNormSpec)  # BN sits between conv and activation
    named = [
        ("conv", conv),
        ("norm", norm if norm_first else None),
        ("act", layers.activation(block_activation(spec, block))),
        ("norm", None if norm_first else norm),
        ("pool", layers.pool(block_pool(spec, block))),
    ]
    return nn.Sequential(OrderedDict((name, m) for name, m in named if m is not None))


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
