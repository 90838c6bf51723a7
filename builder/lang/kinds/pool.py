"""maxpool, avgpool: a standalone nn.MaxPool2d or nn.AvgPool2d (the same window as a conv block's pool)."""

from __future__ import annotations

from typing import Literal

from pydantic import model_validator

from builder.lang.axes import NonNegativeAxes, PositiveAxes, pair
from builder.lang.base import Named, WindowPoolSpec
from builder.lang.registry import KindDef, leaf_frame, no_multiple, plain_fields, same_width
from builder.lang.walk import At, Inferred, Shape, Walk, dilation_empties, dilation_problem, pool_label, pooled


class PoolBlock(Named):
    """A standalone nn.MaxPool2d (maxpool) or nn.AvgPool2d (avgpool, counting the zero padding)."""

    kind: Literal["maxpool", "avgpool"]
    kernel_size: PositiveAxes = 3
    """Window size: an integer or [h, w]."""
    stride: PositiveAxes = 2
    """Window step: an integer or [h, w]."""
    padding: NonNegativeAxes = 0
    """Implicit padding on each side (an integer or [h, w]); at most kernel_size/2 on each axis."""
    dilation: PositiveAxes = 1
    """maxpool only: spacing of the window's elements (an integer or [h, w]), as nn.MaxPool2d's."""
    ceil_mode: bool = False
    """Round the output size up instead of down (torchvision's GoogLeNet)."""

    @model_validator(mode="after")
    def _padding_fits_kernel(self) -> PoolBlock:
        self.window()  # the same rules as a conv block's pool
        return self

    def window(self) -> WindowPoolSpec:
        """The same window as a conv block's pool: one arithmetic and one layer factory for both."""
        return WindowPoolSpec(kind="max" if self.kind == "maxpool" else "avg", kernel_size=self.kernel_size,
                              stride=self.stride, padding=self.padding, dilation=self.dilation,
                              ceil_mode=self.ceil_mode)


def _infer(walk: Walk, block: PoolBlock, at: At, shape: Shape) -> Inferred:
    window = block.window()
    h, w = pooled(shape[1:], window)
    if h <= 0 or w <= 0:
        if dilation_empties(shape[1:], window.kernel_size, window.stride, window.padding, window.dilation,
                            window.ceil_mode):
            return dilation_problem(walk, at, shape, window.kernel_size, window.padding, window.dilation)
        return walk.collapse(at, shape, h, w)
    return (shape[0], h, w), 0, 0, (pool_label(window),)


KIND = KindDef(
    tags=("maxpool", "avgpool"), model=PoolBlock, infer=_infer, children=(), stride=lambda spec, b: pair(b.stride),
    width=same_width, channel_multiple=no_multiple, fields=plain_fields, frame=leaf_frame,
    factory="builder.model.factories:pool",
)
