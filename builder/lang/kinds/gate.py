"""gate: squeeze-excitation, x * gate(fc2(act(fc1(avgpool(x))))), as torchvision's SqueezeExcitation."""

from __future__ import annotations

from typing import Literal

from builder.lang.base import Activation, Named, PositiveInt
from builder.lang.registry import KindDef, Label, Scaling, leaf_frame, no_multiple, plain_fields, unit_stride
from builder.lang.walk import At, Inferred, Shape, Walk


class GateBlock(Named):
    """Squeeze-excitation: x times a per-channel factor computed from x's global average
    (fc1 and fc2 are 1x1 convolutions with bias, C -> squeeze_channels -> C)."""

    kind: Literal["gate"]
    squeeze_channels: PositiveInt
    """Channels of fc1's output (scaled by `width`)."""
    activation: Activation = "relu"
    """Activation between fc1 and fc2."""
    gate: Literal["sigmoid", "hardsigmoid"] = "sigmoid"
    """The function of fc2's output that multiplies x (MobileNetV3: hardsigmoid)."""
    channels: PositiveInt | None = None
    """Asserted input channels (scaled by `width`); a mismatch is an error. Default: any."""


def _infer(walk: Walk, block: GateBlock, at: At, shape: Shape) -> Inferred:
    c, s = shape[0], block.squeeze_channels
    if block.channels is not None and block.channels != c:
        walk.problem((*at.where, "channels"), f"{at.name}: the gate expects {block.channels} input channels, "
                     f"its input has {c}")
    params = c * s + s + s * c + c  # fc1 and fc2, each with a bias
    labels = (Label("adaptive avgpool 1x1", "pool"), Label(f"conv {s} k1", "conv"),
              *((Label(block.activation, "activation"),) if block.activation != "none" else ()),
              Label(f"conv {c} k1", "conv"), Label(f"{block.gate}, multiply", "activation"))
    return shape, params, 2 * c * s, labels  # fc1 and fc2 on a 1x1 map


def _width(block: GateBlock, scaling: Scaling) -> GateBlock:
    update = {"squeeze_channels": scaling.channels(block.squeeze_channels)}
    if block.channels is not None:
        update["channels"] = scaling.channels(block.channels)
    return block.model_copy(update=update)


KIND = KindDef(
    tags=("gate",), model=GateBlock, infer=_infer, children=(), stride=unit_stride, width=_width,
    channel_multiple=no_multiple, fields=plain_fields, frame=leaf_frame, factory="builder.model.factories:gate",
)
