"""The torch factories of the heads (builder.lang.heads): (spec, head, in_shape) -> the named
modules that follow `features` in the built nn.Sequential."""

from __future__ import annotations

from collections import OrderedDict
from itertools import pairwise
from typing import Any

from torch import nn

from builder.lang.heads import ClassifierSpec, ConvHead, DenseHead, NoHead
from builder.model import layers
from builder.model.blocks import Scale

Parts = list[tuple[str, nn.Module]]


def classifier(spec: Any, head: ClassifierSpec, in_shape: tuple[int, int, int]) -> Parts:
    """[avgpool] -> flatten -> classifier (fc1..fcN with activation and dropout, then the output linear)."""
    c, h, w = in_shape
    parts: Parts = []
    if head.adaptive_pool:
        parts.append(("avgpool", nn.AdaptiveAvgPool2d(tuple(head.adaptive_pool))))
        h, w = head.adaptive_pool
    return [*parts, ("flatten", nn.Flatten(1)), ("classifier", linears(head, c * h * w, spec.num_classes))]


def linears(head: ClassifierSpec, flat: int, classes: int) -> nn.Sequential:
    """Hidden linears fc1..fcN with activation and dropout, then the output linear; with no hidden
    layer, a dropout (drop1) before the one linear, as torchvision's classifiers."""
    sizes = [flat, *head.hidden]
    parts: OrderedDict[str, nn.Module] = OrderedDict()
    for i, (a, b) in enumerate(pairwise(sizes), start=1):
        if head.dropout and head.dropout_position == "before":
            parts[f"drop{i}"] = nn.Dropout(head.dropout)
        parts[f"fc{i}"] = nn.Linear(a, b, bias=head.bias)
        act = layers.activation(head.activation)
        if act is not None:
            parts[f"act{i}"] = act
        if head.dropout and head.dropout_position == "after":
            parts[f"drop{i}"] = nn.Dropout(head.dropout)
    if head.dropout and not head.hidden:
        parts["drop1"] = nn.Dropout(head.dropout)
    parts[f"fc{len(sizes)}"] = nn.Linear(sizes[-1], classes, bias=head.bias)
    if head.scale != 1:
        parts["scale"] = Scale(head.scale)
    return nn.Sequential(parts)


def conv(spec: Any, head: ConvHead, in_shape: tuple[int, int, int]) -> Parts:
    """classifier (drop, conv 1x1, act, pool to 1x1) -> flatten: SqueezeNet's, in its order."""
    parts: OrderedDict[str, nn.Module] = OrderedDict()
    if head.dropout:
        parts["drop"] = nn.Dropout(head.dropout)
    parts["conv"] = nn.Conv2d(in_shape[0], spec.num_classes, 1)
    act = layers.activation(head.activation)
    if act is not None:
        parts["act"] = act
    parts["pool"] = nn.AdaptiveAvgPool2d((1, 1))
    return [("classifier", nn.Sequential(parts)), ("flatten", nn.Flatten(1))]


def none(spec: Any, head: NoHead, in_shape: tuple[int, int, int]) -> Parts:
    return []


def dense(spec: Any, head: DenseHead, in_shape: tuple[int, int, int]) -> Parts:
    """head: a 1x1 conv to num_classes at every pixel, (N, C, H, W) -> (N, num_classes, H, W);
    nothing with conv: false (the blocks end in the logits)."""
    return [("head", nn.Conv2d(in_shape[0], spec.num_classes, 1))] if head.conv else []
