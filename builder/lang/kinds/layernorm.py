"""layernorm: a standalone LayerNorm over the channels at each pixel (ConvNeXt's LayerNorm2d).

Its fields are those of a conv block's `norm: {kind: layernorm}` (builder.lang.norms), and so are
its parameters, label and layer; `standalone_norm_infer` serves groupnorm too."""

from __future__ import annotations

from typing import Any

from builder.lang.base import Named
from builder.lang.norms import LayerNormSpec, norm_def, norm_problem
from builder.lang.registry import KindDef, Label, leaf_frame, no_multiple, plain_fields, same_width, unit_stride
from builder.lang.walk import At, Inferred, Shape, Walk


class LayerNormBlock(Named, LayerNormSpec):
    """A standalone LayerNorm over the incoming channels (ConvNeXt's downsampling and head)."""


def standalone_norm_infer(walk: Walk, block: Any, at: At, shape: Shape) -> Inferred:
    """A norm over the incoming channels: the shape is unchanged; groups must divide the channels."""
    problem = norm_problem(block, shape[0])
    if problem is not None:
        walk.problem((*at.where, "groups"), f"{at.name}: {problem}")
    norm = norm_def(block)
    return shape, norm.params(block, shape[0]), 0, (Label(norm.label(block), "norm"),)


KIND = KindDef(
    tags=("layernorm",), model=LayerNormBlock, infer=standalone_norm_infer, children=(), stride=unit_stride,
    width=same_width, channel_multiple=no_multiple, fields=plain_fields, frame=leaf_frame,
    factory="builder.model.factories:norm",
)
