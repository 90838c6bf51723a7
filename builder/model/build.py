"""Spec -> nn.Module. Module names are stable: features.block1.conv, classifier.fc1, ...

Blocks are built by their kinds' factories (builder.model.factories), the head by its own
(builder.model.heads).

The result is float32 on the CPU (or on the device of an enclosing `torch.device(...)`
context, which is how summaries build on "meta" without allocating weights).
"""

from __future__ import annotations

import os
from collections import OrderedDict
from dataclasses import dataclass
from importlib import import_module
from typing import Any

import torch
from torch import nn

from builder.lang.errors import BuilderError
from builder.lang.heads import DenseHead, head_def
from builder.lang.registry import child_lists, child_path, default_name, kind_def, kinds, resolve_factory
from builder.lang.shapes import BlockShape, ShapeReport, infer
from builder.lang.spec import Spec
from builder.model.blocks import ResizedToInput

BYTES_PER_PARAM = 4  # float32


class ModelTooLargeError(BuilderError):
    """The parameters would not fit in the memory that is available."""


def build_model(spec: Spec, *, check_memory: bool = True) -> nn.Sequential:
    """Build the network of a validated spec: features, then its head's modules (the classifier
    head's: [avgpool] -> flatten -> classifier)."""
    if check_memory and torch.get_default_device().type != "meta":
        ensure_fits_in_memory(spec)
    report = infer(spec)
    assert report.flatten is not None, "build_model needs a spec that passed shape inference"
    parts: OrderedDict[str, nn.Module] = OrderedDict(features=_features(spec, report))
    head = spec.the_head
    parts.update(_resolve(head_def(head).factory)(spec, head, report.blocks[-1].out_shape))
    if isinstance(head, DenseHead) and head.resize != "none":  # the logits resized to the input's size
        return ResizedToInput(parts, head.resize)
    return nn.Sequential(parts)


def _resolve(factory: str) -> Any:
    module, _, name = factory.partition(":")
    return getattr(import_module(module), name)


def build_features(spec: Spec) -> nn.Sequential:
    """Every block of the spec, named and shaped exactly as static inference names and shapes them."""
    report = infer(spec)
    assert report.flatten is not None, "build_model needs a spec that passed shape inference"
    return _features(spec, report)


def _features(spec: Spec, report: ShapeReport) -> nn.Sequential:
    check_factories()
    return BuildContext(spec, {s.name: s for s in report.all_blocks}).build_list(spec.blocks, "", "")


@dataclass(frozen=True)
class BuildContext:
    """What a kind's factory gets: the spec and its static shapes by module path (the builder
    follows inference, never guesses), and the builder of its child lists."""

    spec: Spec
    shapes: dict[str, BlockShape]

    def build_list(self, blocks: list[Any], parent: str, prefix: str) -> nn.Sequential:
        """A list of blocks as an nn.Sequential, children named as in static inference."""
        parts: OrderedDict[str, nn.Module] = OrderedDict()
        for i, block in enumerate(blocks):
            name = default_name(block, i)
            factory = resolve_factory(kind_def(block))
            parts[name] = factory(self, block, self.shapes[child_path(parent, prefix, name)])
        return nn.Sequential(parts)

    def children(self, block: Any, shape: BlockShape) -> list[nn.Sequential]:
        """Each child list of `block` (at `shape.name`) built, in child_lists order; the factory
        must register each under its prefix (`body`, `branch1`, ...; a "" prefix: the block itself)."""
        return [self.build_list(c.blocks, shape.name, c.prefix) for c in child_lists(block)]


def check_factories() -> None:
    """Every registered kind's factory resolves (a kind without one fails here, not mid-build)."""
    for kind in kinds().values():
        resolve_factory(kind)


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
