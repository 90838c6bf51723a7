"""batchnorm: a standalone nn.BatchNorm2d over the incoming channels."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field

from builder.lang.base import Named
from builder.lang.registry import KindDef, Label, leaf_frame, no_multiple, plain_fields, same_width, unit_stride
from builder.lang.walk import At, Inferred, Shape, Walk


class BatchNormBlock(Named):
    """A standalone nn.BatchNorm2d over the incoming channels (DenseNet's pre-activation order)."""

    kind: Literal["batchnorm"]
    eps: Annotated[float, Field(gt=0)] = 1e-5
    """Added to the variance for numerical stability."""
    momentum: Annotated[float, Field(gt=0, le=1)] = 0.1
    """Update factor of the running statistics."""
    frozen_weight: bool = False
    """Keep the scale at 1, untrained (airbench's BatchNorm): only the bias learns."""


def _infer(walk: Walk, block: BatchNormBlock, at: At, shape: Shape) -> Inferred:
    return shape, 2 * shape[0], 0, (Label("batchnorm", "norm"),)


KIND = KindDef(
    tags=("batchnorm",), model=BatchNormBlock, infer=_infer, children=(), stride=unit_stride,
    width=same_width, channel_multiple=no_multiple, fields=plain_fields, frame=leaf_frame,
    factory="builder.model.factories:batchnorm",
)
