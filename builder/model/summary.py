"""torchinfo summary of a spec, cross-checked against the static shape inference.

On the default "meta" device no weight is allocated, so even a model of billions of
parameters summarizes in seconds and little memory.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torchinfo
from torch import nn
from torchinfo.model_statistics import ModelStatistics

from builder.lang.errors import BuilderError
from builder.lang.shapes import ShapeReport, infer
from builder.lang.spec import Spec
from builder.model.build import build_model

COLUMNS = ("input_size", "output_size", "kernel_size", "num_params", "mult_adds")


@dataclass(frozen=True)
class Summary:
    """The torchinfo statistics plus every disagreement with the static shapes."""

    spec: Spec
    shapes: ShapeReport
    stats: ModelStatistics
    mismatches: list[str]

    @property
    def ok(self) -> bool:
        return not self.mismatches

    def totals(self) -> str:
        params = self.stats.total_params
        return (
            f"{self.spec.name}: {params:,} parameters ({params * 4 / 2**20:,.1f} MiB as float32), "
            f"{self.stats.total_mult_adds / 1e9:,.3f} G mult-adds per batch of {self.stats.input_size[0][0]}"
            if self.stats.input_size else f"{params:,} parameters"
        )

    def __str__(self) -> str:
        checks = (
            f"shape check: {_count(self.shapes)}, the flatten and the parameter count agree with static inference"
            if self.ok else "\n".join(f"shape check failed: {m}" for m in self.mismatches)
        )
        return f"{self.stats}\n{self.totals()}\n{checks}"


def summarize(spec: Spec, *, device: str = "meta", batch_size: int = 1, depth: int = 3) -> Summary:
    """Build `spec` on `device`, run torchinfo on a (batch_size, C, H, W) input, check shapes."""
    if batch_size < 1 or depth < 0:
        raise BuilderError(f"batch size must be >= 1 and depth >= 0 (got {batch_size}, {depth})")
    shapes = infer(spec)
    with torch.device(device):
        model = build_model(spec)
    size = (batch_size, spec.input.channels, spec.input.height, spec.input.width)
    try:
        stats = torchinfo.summary(
            model, input_size=size, device=device, depth=depth, col_names=COLUMNS,
            row_settings=("var_names",), verbose=0,
        )
    except RuntimeError as exc:  # torchinfo wraps the forward's error
        raise BuilderError(f"{spec.name}: forward pass failed: {exc}") from None
    return Summary(spec, shapes, stats, _mismatches(model, stats, shapes))


def _mismatches(model: nn.Module, stats: ModelStatistics, shapes: ShapeReport) -> list[str]:
    """Compare torchinfo's output shape of every block (at every depth) and of the flatten with the static ones."""
    seen = {id(layer.module): layer.output_size[1:] for layer in stats.summary_list}
    expected: list[tuple[str, nn.Module, list[int]]] = [
        (f"features.{b.name}", model.get_submodule(f"features.{b.name}"), list(b.out_shape)) for b in shapes.all_blocks
    ]
    expected.append(("flatten", model.get_submodule("flatten"), [shapes.flatten or 0]))
    out = [
        f"{name}: torchinfo says {seen.get(id(module))}, static inference says {want}"
        for name, module, want in expected
        if seen.get(id(module)) != want
    ]
    if stats.total_params != shapes.total_params:
        out.append(f"parameters: torchinfo counts {stats.total_params:,}, static inference {shapes.total_params:,}")
    return out


def _count(shapes: ShapeReport) -> str:
    top, every = len(shapes.blocks), len(shapes.all_blocks)
    return f"{top} blocks" if top == every else f"{top} blocks ({every} at every depth)"
