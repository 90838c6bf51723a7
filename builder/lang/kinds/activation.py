"""activation: a standalone activation (not in place: it may open a branch whose input others need)."""

from __future__ import annotations

from typing import Literal

from builder.lang.base import Activation, Named
from builder.lang.registry import KindDef, Label, leaf_frame, no_multiple, plain_fields, same_width, unit_stride
from builder.lang.walk import At, Inferred, Shape, Walk


class ActivationBlock(Named):
    """A standalone activation."""

    kind: Literal["activation"]
    fn: Activation
    """Which activation."""


def _infer(walk: Walk, block: ActivationBlock, at: At, shape: Shape) -> Inferred:
    return shape, 0, 0, (Label(block.fn, "activation"),)


KIND = KindDef(
    tags=("activation",), model=ActivationBlock, infer=_infer, children=(), stride=unit_stride,
    width=same_width, channel_multiple=no_multiple, fields=plain_fields, frame=leaf_frame,
    factory="builder.model.factories:activation",
)
