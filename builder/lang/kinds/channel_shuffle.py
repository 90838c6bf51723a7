"""channel_shuffle: ShuffleNet's channel shuffle, torchvision's channel_shuffle(x, groups)."""

from __future__ import annotations

from typing import Literal

from builder.lang.base import Named, PositiveInt
from builder.lang.registry import KindDef, Label, leaf_frame, plain_fields, same_width, unit_stride
from builder.lang.walk import At, Inferred, Shape, Walk, fmt


class ChannelShuffleBlock(Named):
    """Channels as (groups, C/groups) transposed to (C/groups, groups): ShuffleNet's channel shuffle."""

    kind: Literal["channel_shuffle"]
    groups: PositiveInt
    """Groups to interleave; must divide the input channels."""


def _infer(walk: Walk, block: ChannelShuffleBlock, at: At, shape: Shape) -> Inferred:
    if shape[0] % block.groups:
        walk.problem((*at.where, "groups"), f"channel shuffle of {shape[0]} channels in {block.groups} groups: "
                     f"groups must divide the channels (its input is {fmt(shape)})")
    return shape, 0, 0, (Label(f"channel shuffle g{block.groups}", "reshape"),)


def _multiple(block: ChannelShuffleBlock) -> int:
    return block.groups


KIND = KindDef(
    tags=("channel_shuffle",), model=ChannelShuffleBlock, infer=_infer, children=(), stride=unit_stride,
    width=same_width, channel_multiple=_multiple, fields=plain_fields, frame=leaf_frame,
    factory="builder.model.factories:channel_shuffle",
)
