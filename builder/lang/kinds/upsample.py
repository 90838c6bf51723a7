"""upsample: nn.Upsample, nearest or bilinear, by a scale factor or to a fixed size."""

from __future__ import annotations

import math
from typing import Annotated, Literal

from pydantic import Field, model_validator

from builder.lang.base import Named, PositiveInt, rule_error
from builder.lang.registry import KindDef, Label, leaf_frame, no_multiple, plain_fields, same_width
from builder.lang.walk import At, Inferred, Shape, Walk


class UpsampleBlock(Named):
    """nn.Upsample: resize the feature map by `scale_factor` or to `size` (one of the two).

    To the size of another tensor: a skip block's `match: resize` brings its body's output to the
    size of the skip's input (its merge partner)."""

    kind: Literal["upsample"]
    scale_factor: Annotated[float, Field(gt=0)] | None = None
    """Output size = floor(input size * scale_factor), as torch computes it."""
    size: Annotated[list[PositiveInt], Field(min_length=2, max_length=2)] | None = None
    """[H, W] of the output, whatever the input's size."""
    mode: Literal["nearest", "bilinear"] = "nearest"
    """Interpolation: nearest (copies pixels) or bilinear."""
    align_corners: bool | None = None
    """bilinear only: align the corner pixels of input and output (torch's default false)."""

    @model_validator(mode="after")
    def _one_target(self) -> UpsampleBlock:
        if (self.scale_factor is None) == (self.size is None):
            raise rule_error("scale_factor", "give exactly one of scale_factor and size")
        if self.align_corners is not None and self.mode != "bilinear":
            raise rule_error("align_corners", f"applies to mode bilinear only (this block's mode is {self.mode})")
        return self


def upsampled(size: int, block: UpsampleBlock, axis: int) -> int:
    """Output length along axis 0 (height) or 1 (width)."""
    if block.size is not None:
        return block.size[axis]
    assert block.scale_factor is not None
    return math.floor(size * block.scale_factor)


def _infer(walk: Walk, block: UpsampleBlock, at: At, shape: Shape) -> Inferred:
    h, w = upsampled(shape[1], block, 0), upsampled(shape[2], block, 1)
    if h <= 0 or w <= 0:
        return walk.collapse(at, shape, h, w)
    target = f"x{block.scale_factor:g}" if block.scale_factor is not None else f"to {h}x{w}"
    corners = " align_corners" if block.align_corners else ""
    return (shape[0], h, w), 0, 0, (Label(f"upsample {target} {block.mode}{corners}", "pool"),)


KIND = KindDef(
    tags=("upsample",), model=UpsampleBlock, infer=_infer, children=(), stride=lambda spec, b: 1,
    width=same_width, channel_multiple=no_multiple, fields=plain_fields, frame=leaf_frame,
    factory="builder.model.factories:upsample",
)
