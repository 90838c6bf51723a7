"""residual: out = act(body(x) + shortcut(x)), the shortcut an identity or a 1x1 projection."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import Field

from builder.lang.axes import axes_text
from builder.lang.base import Activation, Named
from builder.lang.registry import (
    Block,
    ChildField,
    Frame,
    KindDef,
    Label,
    body_stride,
    first_list_stride,
    no_multiple,
    plain_fields,
    scale_children,
)
from builder.lang.walk import At, Inferred, Shape, Walk, fmt, windows_out


class ResidualBlock(Named):
    """out = act(body(x) + shortcut(x)): ResNet's basic and bottleneck blocks, MobileNetV2's inverted residual."""

    kind: Literal["residual"]
    body: Annotated[list[Block], Field(min_length=1)]
    """The blocks of the main path."""
    shortcut: Literal["auto", "identity", "projection", "identity_or_none"] = "auto"
    """identity; projection (1x1 conv with the body's stride, then norm); auto: projection exactly when
    the body changes the shape; identity_or_none: identity when the shape is unchanged, else no add."""
    shortcut_norm: Literal["batchnorm", "none"] = "batchnorm"
    """Norm after the projection's convolution."""
    activation: Activation = "none"
    """Activation after the add (relu: ResNet's post-activation)."""


def shortcut_kind(block: ResidualBlock, in_shape: Shape, out_shape: Shape) -> str:
    """identity, projection or none: what the shortcut of a residual block with these shapes is."""
    same = in_shape == out_shape
    if block.shortcut == "auto":
        return "identity" if same else "projection"
    if block.shortcut == "identity_or_none":
        return "identity" if same else "none"
    return block.shortcut


def _infer(walk: Walk, block: ResidualBlock, at: At, shape: Shape) -> Inferred:
    done = walk.child_lists(block, at, shape)
    if done is None:
        return None, 0, 0, ()
    out, params, macs = done[0].out, done[0].params, done[0].mult_adds
    kind = shortcut_kind(block, shape, out)
    if kind == "projection":
        stride = body_stride(walk.spec, block.body)
        projected = (out[0], *windows_out(shape[1:], 1, stride, 0))
        params += shape[0] * out[0] + (2 * out[0] if block.shortcut_norm == "batchnorm" else 0)
        macs += shape[0] * out[0] * projected[1] * projected[2]
        if projected != out:
            walk.problem(at.where, f"residual add of {fmt(out)} and {fmt(projected)} (the projected input)")
    elif kind == "identity" and out != shape:
        walk.problem(at.where, f"residual add of {fmt(out)} and {fmt(shape)}")
    labels = (Label(f"residual, {kind} shortcut" if kind != "none" else "no shortcut", "reshape"),)
    return out, params, macs, labels + ((Label(block.activation, "activation"),) if block.activation != "none" else ())


def _frame(spec: Any, block: ResidualBlock, shape: Any) -> Frame:
    """The skip lane's label comes from shortcut_kind and body_stride, as the builder's projection."""
    kind = shortcut_kind(block, shape.in_shape, shape.out_shape)
    skip = {"identity": "identity", "none": ""}.get(kind, f"projection 1x1 s{axes_text(body_stride(spec, block.body))}")
    if kind == "projection" and block.shortcut_norm == "batchnorm":
        skip += " + bn"
    merge = ("add" if kind != "none" else "no shortcut") + (f", {block.activation}" * (block.activation != "none"))
    return Frame("residual", merge, skip)


KIND = KindDef(
    tags=("residual",), model=ResidualBlock, infer=_infer, children=(ChildField("body", "body.", many=False),),
    stride=first_list_stride, width=scale_children, channel_multiple=no_multiple, fields=plain_fields,
    frame=_frame, factory="builder.model.factories:residual",
)
