"""conv (the default kind): conv -> [norm before the activation] -> activation -> [norm after it] -> [pool]."""

from __future__ import annotations

from math import lcm
from typing import Annotated, Any, Literal

from pydantic import Field, model_validator

from builder.lang.axes import NonNegativeAxes, PositiveAxes, pair
from builder.lang.base import (
    NO_POOL,
    Activation,
    Named,
    NoPoolSpec,
    PoolSpec,
    PositiveInt,
    WindowPoolSpec,
    rule_error,
)
from builder.lang.norms import NO_NORM, AnyNorm, NormSpec, norm_def, norm_problem
from builder.lang.registry import Frame, KindDef, Label, Scaling, round_channels
from builder.lang.walk import (
    At,
    Inferred,
    Shape,
    Walk,
    dilation_empties,
    dilation_problem,
    pool_label,
    pooled,
    window_text,
    windows_out,
)


class BlockSpec(Named):
    """One conv block: conv -> [batchnorm] -> activation -> [lrn] -> [pool]. Keys follow nn.Conv2d."""

    kind: Literal["conv"] = "conv"
    """A block without kind is a conv block."""
    out_channels: PositiveInt | Literal["num_classes"]
    """Output channels of the convolution; num_classes: the spec's (a classifier conv, which follows
    --set num_classes and which width leaves alone)."""
    kernel_size: PositiveAxes
    """Convolution kernel size: an integer (square) or [h, w] (Inception's [1, 7])."""
    stride: PositiveAxes = 1
    """Convolution stride: an integer or [h, w]."""
    padding: NonNegativeAxes = 0
    """Zero padding on each side: an integer or [h, w]."""
    dilation: PositiveAxes = 1
    """Spacing of the kernel's elements: an integer or [h, w] (nn.Conv2d's dilation)."""
    groups: PositiveInt | Literal["depthwise"] = 1
    """Grouped convolution: must divide in_channels and out_channels; depthwise: one group per input channel."""
    bias: bool = True
    """Whether the convolution has a bias (redundant before batchnorm)."""
    init: Literal["default", "dirac", "whiten"] = "default"
    """How the weight starts. default: PyTorch's. dirac: PyTorch's, then the first in_channels filters
    pass their input channel through unchanged (airbench's convs). whiten: fitted by the trainer before
    the first step to whiten the conv's input on training images, then frozen (the bias still trains):
    each eigenvector of the input's kh x kw patch covariance scaled by 1/sqrt(its eigenvalue), and its
    negative, so out_channels is 2 x in_channels x kh x kw (airbench's first layer). One group only."""
    pool_and_norm: bool = False
    """Use defaults.norm and defaults.pool (where the block sets none of its own)."""
    norm: NormSpec | None = None
    """This block's norm; overrides defaults.norm and applies even without pool_and_norm."""
    pool: PoolSpec | None = None
    """This block's pool; overrides defaults.pool and applies even without pool_and_norm."""
    activation: Activation | None = None
    """This block's activation (default: defaults.activation)."""
    expect: Annotated[list[PositiveInt], Field(min_length=3, max_length=3)] | None = None
    """Asserted output shape [C, H, W]; a mismatch is an error."""

    @model_validator(mode="after")
    def _init_of_one_group(self) -> BlockSpec:
        if self.init != "default" and self.groups != 1:
            raise rule_error("init", f"init {self.init} needs one group (groups: 1), not groups {self.groups}")
        return self

    @model_validator(mode="after")
    def _groups_divide_out_channels(self) -> BlockSpec:
        if isinstance(self.groups, int) and isinstance(self.out_channels, int) and self.out_channels % self.groups:
            raise rule_error(
                "groups", f"out_channels ({self.out_channels}) must be divisible by groups ({self.groups})"
            )
        return self


# --- Resolution: what a block actually gets once defaults apply -----------------------------


def out_channels(spec: Any, block: BlockSpec) -> int:
    """The block's output channels: its own, or the spec's num_classes (a BuilderError without one)."""
    return spec.num_classes if block.out_channels == "num_classes" else block.out_channels


def block_norm(spec: Any, block: BlockSpec) -> AnyNorm:
    """The block's own norm, else the spec default when `pool_and_norm` is set, else none."""
    if block.norm is not None:
        return block.norm
    return spec.defaults.norm if block.pool_and_norm else NO_NORM


def block_pool(spec: Any, block: BlockSpec) -> WindowPoolSpec | NoPoolSpec:
    """The block's own pool, else the spec default when `pool_and_norm` is set, else none."""
    if block.pool is not None:
        return block.pool
    return spec.defaults.pool if block.pool_and_norm else NO_POOL


def block_activation(spec: Any, block: BlockSpec) -> Activation:
    return block.activation if block.activation is not None else spec.defaults.activation


ConvLayer = tuple[Literal["conv", "norm", "act", "pool"], Any]


def conv_block_layers(spec: Any, block: BlockSpec) -> list[ConvLayer]:
    """The layers of a conv block in forward order, as (module name, what it is).

    The one source of the layer order that shapes, build and draw all follow: conv -> [norm
    placed before the activation] -> activation -> [norm placed after it] -> [pool]. BatchNorm
    sits between the conv and the activation; LRN after it, as in the AlexNet paper (each norm's
    NormDef says where). Absent layers are left out.
    """
    norm, pool, act = block_norm(spec, block), block_pool(spec, block), block_activation(spec, block)
    placement = norm_def(norm).placement
    layers: list[ConvLayer] = [("conv", block)]
    if placement == "before_activation":
        layers.append(("norm", norm))
    if act != "none":
        layers.append(("act", act))
    if placement == "after_activation":
        layers.append(("norm", norm))
    if isinstance(pool, WindowPoolSpec):
        layers.append(("pool", pool))
    return layers


def conv_groups(block: BlockSpec, in_channels: int) -> int:
    """The block's groups, with depthwise meaning one group per input channel."""
    return in_channels if block.groups == "depthwise" else block.groups


def kernel_area(block: BlockSpec) -> int:
    """kh * kw: the kernel's elements per input channel of a group."""
    kh, kw = pair(block.kernel_size)
    return kh * kw


def conv_params(in_ch: int, block: BlockSpec, out: int | None = None) -> int:
    """Parameters of the convolution (`out`: its output channels when they are num_classes)."""
    channels = out if out is not None else block.out_channels
    assert isinstance(channels, int), "a num_classes conv needs its resolved channels"
    return channels * (in_ch // conv_groups(block, in_ch)) * kernel_area(block) + (channels if block.bias else 0)


def describe_layers(spec: Any, block: BlockSpec, layers: list[ConvLayer] | None = None) -> tuple[Label, ...]:
    """Short human labels of a conv block's layers (`layers`: its conv_block_layers, when known), in forward order."""
    return tuple(_label(spec, role, layer) for role, layer in layers or conv_block_layers(spec, block))


def _label(spec: Any, role: str, layer: Any) -> Label:
    if role == "conv":
        window = window_text(layer.kernel_size, layer.stride, layer.padding, layer.dilation)
        conv = f"conv {out_channels(spec, layer)} {window}"
        groups = "" if layer.groups == 1 else " dw" if layer.groups == "depthwise" else f" g{layer.groups}"
        return Label(conv + groups, "conv")
    if role == "norm":
        return Label(norm_def(layer).label(layer), "norm")
    if role == "pool":
        return pool_label(layer)
    return Label(str(layer), "activation")


def _infer(walk: Walk, block: BlockSpec, at: At, shape: Shape) -> Inferred:
    c, h, w = shape
    if block.out_channels == "num_classes" and walk.spec.classes is None:
        walk.problem((*at.where, "out_channels"), f"{at.name}: out_channels: num_classes needs the spec's "
                     "num_classes, but a spec with head kind none has no classes (give a number)")
        return None, 0, 0, ()
    out, groups = out_channels(walk.spec, block), conv_groups(block, c)
    if c % groups:
        walk.problem((*at.where, "groups"), f"in_channels ({c}) must be divisible by groups ({groups})")
    if out % groups:
        walk.problem((*at.where, "groups"), f"out_channels ({out}) must be divisible by "
                     f"groups ({groups}: depthwise, one per input channel)")
    h2, w2 = windows_out((h, w), block.kernel_size, block.stride, block.padding, dilation=block.dilation)
    if (h2 <= 0 or w2 <= 0) and dilation_empties((h, w), block.kernel_size, block.stride, block.padding,
                                                  block.dilation):
        return dilation_problem(walk, at, shape, block.kernel_size, block.padding, block.dilation)
    macs = max(h2, 0) * max(w2, 0) * out * (c // groups) * kernel_area(block)
    layers = conv_block_layers(walk.spec, block)
    for role, layer in layers:
        if role == "pool" and h2 > 0 and w2 > 0:
            h2, w2 = pooled((h2, w2), layer)
    if h2 <= 0 or w2 <= 0:
        return walk.collapse(at, shape, h2, w2)
    for norm in (n for r, n in layers if r == "norm"):
        _check_norm(walk, at, block, norm, out)
    if block.init == "whiten" and out != 2 * c * kernel_area(block):
        walk.problem((*at.where, "out_channels"), f"{at.name}: init whiten makes 2 x in_channels x kh x kw = "
                     f"2 x {c} x {kernel_area(block)} = {2 * c * kernel_area(block)} filters (each eigenvector of "
                     f"the input's patch covariance and its negative), so out_channels must be that, not {out}")
    params = conv_params(c, block, out) + sum(norm_def(n).params(n, out) for r, n in layers if r == "norm")
    return (out, h2, w2), params, macs, describe_layers(walk.spec, block, layers)


def _check_norm(walk: Walk, at: At, block: BlockSpec, norm: Any, out: int) -> None:
    """A norm that cannot normalize the block's output channels (groupnorm's groups), located at
    the block's own norm or at defaults.norm, where it came from."""
    problem = norm_problem(norm, out)
    if problem is not None:
        where = (*at.where, "norm", "groups") if block.norm is not None else ("defaults", "norm", "groups")
        walk.problem(where, f"{at.name}: {problem}")


def _stride(spec: Any, block: BlockSpec) -> int | tuple[int, int]:
    """The conv's stride times its pool's, per axis (an int when both axes agree)."""
    pools = [layer.stride for role, layer in conv_block_layers(spec, block) if role == "pool"]
    (ch, cw), (ph, pw) = pair(block.stride), pair(pools[0] if pools else 1)
    h, w = ch * ph, cw * pw
    return h if h == w else (h, w)


def _width(block: BlockSpec, scaling: Scaling) -> BlockSpec:
    """out_channels scaled, staying a multiple of its own norm's groups too (groupnorm); num_classes
    stays (the classes do not scale)."""
    if block.out_channels == "num_classes" or block.init == "whiten":  # set by the classes, or by the input
        return block
    norm = 1 if block.norm is None else norm_def(block.norm).multiple(block.norm)
    out = round_channels(block.out_channels, scaling.width, lcm(scaling.multiple, norm))
    return block.model_copy(update={"out_channels": out})


def _multiple(block: BlockSpec) -> int:
    return block.groups if isinstance(block.groups, int) else 1


def _fields(spec: Any, block: BlockSpec) -> dict[str, Any]:
    """Its fields with the spec's defaults applied: what it really builds."""
    fields = block.model_dump(exclude={"pool_and_norm", "norm", "pool", "activation", "name"})
    if block.out_channels == "num_classes" and spec.classes is not None:
        fields["out_channels"] = spec.classes
    fields["activation"] = block_activation(spec, block)
    fields["norm"] = _compact(block_norm(spec, block).model_dump())
    fields["pool"] = _compact(block_pool(spec, block).model_dump())
    return fields


def _compact(layer: dict[str, Any]) -> str:
    """{'kind': 'lrn', 'size': 5} -> 'lrn(size=5)'."""
    kind = layer.pop("kind")
    return f"{kind}({', '.join(f'{k}={v}' for k, v in layer.items())})" if layer else kind


def _frame(spec: Any, block: BlockSpec, shape: Any) -> Frame:
    return Frame("leaf")


KIND = KindDef(
    tags=("conv",), model=BlockSpec, infer=_infer, children=(), stride=_stride, width=_width,
    channel_multiple=_multiple, fields=_fields, frame=_frame, factory="builder.model.factories:conv",
)
