"""adaptive_avgpool: nn.AdaptiveAvgPool2d, any input size to a fixed output size."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field

from builder.lang.base import Named, PositiveInt
from builder.lang.registry import KindDef, Label, leaf_frame, no_multiple, plain_fields, same_width, unit_stride
from builder.lang.walk import At, Inferred, Shape, Walk


class AdaptiveAvgPoolBlock(Named):
    """nn.AdaptiveAvgPool2d: any input size to a fixed output size ([1, 1]: global average pooling)."""

    kind: Literal["adaptive_avgpool"]
    output_size: Annotated[list[PositiveInt], Field(min_length=2, max_length=2)] = [1, 1]
    """[H, W] of the output."""


def _infer(walk: Walk, block: AdaptiveAvgPoolBlock, at: At, shape: Shape) -> Inferred:
    oh, ow = block.output_size
    return (shape[0], oh, ow), 0, 0, (Label(f"adaptive avgpool {oh}x{ow}", "pool"),)


KIND = KindDef(
    tags=("adaptive_avgpool",), model=AdaptiveAvgPoolBlock, infer=_infer, children=(), stride=unit_stride,
    width=same_width, channel_multiple=no_multiple, fields=plain_fields, frame=leaf_frame,
    factory="builder.model.factories:adaptive_avgpool",
)
