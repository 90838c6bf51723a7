"""dropout: a standalone nn.Dropout."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field

from builder.lang.base import Named
from builder.lang.registry import KindDef, Label, leaf_frame, no_multiple, plain_fields, same_width, unit_stride
from builder.lang.walk import At, Inferred, Shape, Walk


class DropoutBlock(Named):
    """A standalone nn.Dropout."""

    kind: Literal["dropout"]
    p: Annotated[float, Field(ge=0, lt=1)] = 0.5
    """Probability of zeroing an element during training."""


def _infer(walk: Walk, block: DropoutBlock, at: At, shape: Shape) -> Inferred:
    return shape, 0, 0, (Label(f"dropout {block.p:g}", "dropout"),)


KIND = KindDef(
    tags=("dropout",), model=DropoutBlock, infer=_infer, children=(), stride=unit_stride,
    width=same_width, channel_multiple=no_multiple, fields=plain_fields, frame=leaf_frame,
    factory="builder.model.factories:dropout",
)
