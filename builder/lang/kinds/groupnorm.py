"""groupnorm: a standalone nn.GroupNorm over the incoming channels (groups must divide them)."""

from __future__ import annotations

from builder.lang.base import Named
from builder.lang.kinds.layernorm import standalone_norm_infer
from builder.lang.norms import GroupNormSpec
from builder.lang.registry import KindDef, leaf_frame, plain_fields, same_width, unit_stride


class GroupNormBlock(Named, GroupNormSpec):
    """A standalone nn.GroupNorm over the incoming channels."""


def _multiple(block: GroupNormBlock) -> int:
    """Its input channels must stay a multiple of groups when `width` scales the block before it."""
    return block.groups


KIND = KindDef(
    tags=("groupnorm",), model=GroupNormBlock, infer=standalone_norm_infer, children=(), stride=unit_stride,
    width=same_width, channel_multiple=_multiple, fields=plain_fields, frame=leaf_frame,
    factory="builder.model.factories:norm",
)
