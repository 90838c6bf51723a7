"""residual: out = act(stochastic_depth(layer_scale * body(x)) + shortcut(x)), the shortcut an identity
or a 1x1 projection.

Stochastic depth drops the body's output of whole samples while training (torchvision's
StochasticDepth, mode "row"); `stochastic_depth: linear` takes its rate from the spec's linear
schedule (`StochasticDepthSpec`), which `apply_stochastic_depth` resolves into numbers."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import Field

from builder.lang.axes import axes_text
from builder.lang.base import Activation, Named, StrictModel
from builder.lang.registry import (
    Block,
    ChildField,
    Frame,
    KindDef,
    Label,
    body_stride,
    child_lists,
    first_list_stride,
    no_multiple,
    plain_fields,
    scale_children,
    walk_blocks,
    with_child_lists,
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
    layer_scale: Annotated[float, Field(gt=0)] | None = None
    """Initial value of a learnable per-channel factor (C x 1 x 1) that multiplies the body's
    output before stochastic depth and the add (ConvNeXt: 1e-6); default none."""
    stochastic_depth: Annotated[float, Field(ge=0, lt=1)] | Literal["linear"] = 0.0
    """Probability, while training, of dropping the body's output of a sample (identity in eval
    mode); linear: the rate of the spec's stochastic_depth schedule for this block's position."""


class StochasticDepthSpec(StrictModel):
    """A stochastic depth rate growing linearly over the residual blocks that say `stochastic_depth:
    linear`: block i (0-based, in forward order, of N) gets rate * i / N (divide_by: blocks,
    torchvision's EfficientNet) or rate * i / (N - 1) (blocks_minus_one, ConvNeXt: the last gets rate)."""

    rate: Annotated[float, Field(ge=0, lt=1)]
    """The rate the schedule grows towards."""
    divide_by: Literal["blocks", "blocks_minus_one"] = "blocks"
    """blocks: rate * i / N (EfficientNet); blocks_minus_one: rate * i / (N - 1) (ConvNeXt)."""


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
    params += out[0] if block.layer_scale is not None else 0  # one factor per channel of the body's output
    if kind == "projection":
        stride = body_stride(walk.spec, block.body)
        projected = (out[0], *windows_out(shape[1:], 1, stride, 0))
        params += shape[0] * out[0] + (2 * out[0] if block.shortcut_norm == "batchnorm" else 0)
        macs += shape[0] * out[0] * projected[1] * projected[2]
        if projected != out:
            walk.problem(at.where, f"residual add of {fmt(out)} and {fmt(projected)} (the projected input)")
    elif kind == "identity" and out != shape:
        walk.problem(at.where, f"residual add of {fmt(out)} and {fmt(shape)}")
    if block.stochastic_depth == "linear" and getattr(walk.spec, "stochastic_depth", None) is None:
        walk.problem((*at.where, "stochastic_depth"), f"{at.name}: stochastic_depth: linear needs the spec's "
                     "schedule (top-level `stochastic_depth: {rate: ..., divide_by: ...}`)")
    labels = (Label(f"residual, {kind} shortcut" if kind != "none" else "no shortcut", "reshape"), *_extras(block))
    return out, params, macs, labels + ((Label(block.activation, "activation"),) if block.activation != "none" else ())


def _extras(block: ResidualBlock) -> tuple[Label, ...]:
    """Labels of what the body's output goes through before the add."""
    rate = block.stochastic_depth
    scale = (Label(f"layer scale {block.layer_scale:g}", "linear"),) if block.layer_scale is not None else ()
    return scale + ((Label(f"stochastic depth {rate if isinstance(rate, str) else f'{rate:g}'}", "dropout"),)
                    if rate else ())


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


# --- The linear stochastic depth schedule ------------------------------------------------------


def linear_rates(spec: Any) -> dict[str, float]:
    """{module path: rate} of every residual with `stochastic_depth: linear`, by the spec's schedule."""
    names = [name for name, b in walk_blocks(spec.blocks)
             if isinstance(b, ResidualBlock) and b.stochastic_depth == "linear"]
    return dict(zip(names, _schedule(spec.stochastic_depth, len(names)), strict=True))


def _schedule(schedule: StochasticDepthSpec | None, n: int) -> list[float]:
    if schedule is None:
        return [0.0] * n
    denominator = float(n if schedule.divide_by == "blocks" else n - 1)  # torchvision's arithmetic
    return [schedule.rate * float(i) / denominator if denominator else 0.0 for i in range(n)]


def apply_stochastic_depth(spec: Any) -> Any:
    """The spec with every `stochastic_depth: linear` replaced by its rate (the explicit form)."""
    if getattr(spec, "stochastic_depth", None) is None:
        return spec
    rates = iter(linear_rates(spec).values())
    return spec.model_copy(update={"blocks": _resolve(spec.blocks, rates)})


def _resolve(blocks: list[Any], rates: Any) -> list[Any]:
    """Blocks with linear rates filled in, in walk_blocks order (a composite before its children)."""
    out = []
    for block in blocks:
        if isinstance(block, ResidualBlock) and block.stochastic_depth == "linear":
            block = block.model_copy(update={"stochastic_depth": next(rates)})
        lists = child_lists(block)
        out.append(with_child_lists(block, [_resolve(c.blocks, rates) for c in lists]) if lists else block)
    return out
