"""The torch factories of the built-in block kinds: (ctx, block, shape) -> nn.Module.

Each kind's KindDef (builder.lang.kinds) names its factory here as "builder.model.factories:NAME";
builder.model.build resolves every registered kind's factory when it is imported, so a kind
without one fails at once. `ctx` is a builder.model.build.BuildContext: it builds child lists
with the names static inference gave them, and knows every block's static shape.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from torch import nn

from builder.lang.axes import torch_arg
from builder.lang.kinds.activation import ActivationBlock
from builder.lang.kinds.adaptive_avgpool import AdaptiveAvgPoolBlock
from builder.lang.kinds.batchnorm import BatchNormBlock
from builder.lang.kinds.channel_shuffle import ChannelShuffleBlock
from builder.lang.kinds.conv import BlockSpec, conv_block_layers, conv_groups
from builder.lang.kinds.conv_transpose import ConvTransposeBlock, transpose_layers
from builder.lang.kinds.dropout import DropoutBlock
from builder.lang.kinds.gate import GateBlock
from builder.lang.kinds.groupnorm import GroupNormBlock
from builder.lang.kinds.layernorm import LayerNormBlock
from builder.lang.kinds.parallel import ParallelBlock
from builder.lang.kinds.pool import PoolBlock
from builder.lang.kinds.residual import ResidualBlock, linear_rates, shortcut_kind
from builder.lang.kinds.sequence import SequenceBlock
from builder.lang.kinds.skip import SkipBlock
from builder.lang.kinds.upsample import UpsampleBlock
from builder.lang.registry import body_stride
from builder.lang.walk import BlockShape
from builder.model import layers
from builder.model.blocks import (
    ChannelShuffle,
    Gate,
    Parallel,
    Pointwise,
    Residual,
    Skip,
    SplitParallel,
    StochasticDepth,
    WhiteningConv2d,
    dirac_first,
)

if TYPE_CHECKING:
    from builder.model.build import BuildContext


def conv(ctx: BuildContext, block: BlockSpec, shape: BlockShape) -> nn.Module:
    """conv -> [norm] -> activation -> [norm] -> [pool], in the order conv_block_layers gives."""
    in_ch, out = shape.in_shape[0], shape.out_shape[0]
    args = (torch_arg(block.kernel_size), torch_arg(block.stride), torch_arg(block.padding),
            torch_arg(block.dilation), conv_groups(block, in_ch))
    pointwise = args in ((1, 1, 0, 1, 1), ((1, 1), (1, 1), (0, 0), (1, 1), 1))
    kind = WhiteningConv2d if block.init == "whiten" else Pointwise if pointwise else nn.Conv2d
    made_conv = kind(in_ch, out, args[0], stride=args[1], padding=args[2], dilation=args[3], groups=args[4],
                     bias=block.bias)
    if block.init == "dirac":
        dirac_first(made_conv)
    made: dict[str, Callable[[Any], Any]] = {  # each present layer makes a module (never None)
        "conv": lambda _: made_conv, "act": layers.activation, "pool": layers.pool,
        "norm": lambda norm: layers.norm(norm, out),
    }
    return nn.Sequential(OrderedDict((role, made[role](layer)) for role, layer in conv_block_layers(ctx.spec, block)))


def sequence(ctx: BuildContext, block: SequenceBlock, shape: BlockShape) -> nn.Module:
    return ctx.children(block, shape)[0]


def residual(ctx: BuildContext, block: ResidualBlock, shape: BlockShape) -> nn.Module:
    body = ctx.children(block, shape)[0]
    kind = shortcut_kind(block, shape.in_shape, shape.out_shape)
    shortcut: nn.Module | None = None
    if kind == "identity":
        shortcut = nn.Identity()
    elif kind == "projection":
        shortcut = _projection(ctx, block, shape)
    made = Residual(body, shortcut, layers.activation(block.activation), _stochastic_depth(ctx, block, shape, shortcut))
    if block.layer_scale is not None:
        made.scale_by(shape.out_shape[0], block.layer_scale)
    return made


def _stochastic_depth(ctx: BuildContext, block: ResidualBlock, shape: BlockShape,
                      shortcut: nn.Module | None) -> nn.Module | None:
    """Stochastic depth (torchvision's, mode row) where the rate is above 0 and the block adds
    (a block without a shortcut keeps its place in a linear schedule but drops nothing)."""
    rate = block.stochastic_depth
    if rate == "linear":  # a spec built without loading: resolve the schedule here
        rate = linear_rates(ctx.spec)[shape.name]
    return StochasticDepth(rate) if rate and shortcut is not None else None


def _projection(ctx: BuildContext, block: ResidualBlock, shape: BlockShape) -> nn.Module:
    """1x1 conv with the body's stride, then BatchNorm (ResNet's downsample)."""
    c_in, c_out = shape.in_shape[0], shape.out_shape[0]
    made = nn.Conv2d(c_in, c_out, 1, stride=body_stride(ctx.spec, block.body), bias=False)
    if block.shortcut_norm == "none":
        return nn.Sequential(OrderedDict(conv=made))
    return nn.Sequential(OrderedDict(conv=made, norm=nn.BatchNorm2d(c_out)))


def parallel(ctx: BuildContext, block: ParallelBlock, shape: BlockShape) -> nn.Module:
    if block.input == "split":
        return SplitParallel(ctx.children(block, shape), block.merge, block.split_channels)
    return Parallel(ctx.children(block, shape), block.merge)


def pool(ctx: BuildContext, block: PoolBlock, shape: BlockShape) -> nn.Module:
    made = layers.pool(block.window())
    assert made is not None
    return made


def adaptive_avgpool(ctx: BuildContext, block: AdaptiveAvgPoolBlock, shape: BlockShape) -> nn.Module:
    return nn.AdaptiveAvgPool2d((block.output_size[0], block.output_size[1]))


def batchnorm(ctx: BuildContext, block: BatchNormBlock, shape: BlockShape) -> nn.Module:
    return layers.batchnorm(block, shape.in_shape[0])


def activation(ctx: BuildContext, block: ActivationBlock, shape: BlockShape) -> nn.Module:
    # not in place: a standalone activation may open a branch or a residual body, whose input
    # the other branches or the shortcut still need
    made = layers.activation(block.fn, inplace=False)
    return made if made is not None else nn.Identity()


def dropout(ctx: BuildContext, block: DropoutBlock, shape: BlockShape) -> nn.Module:
    return nn.Dropout(block.p)


def gate(ctx: BuildContext, block: GateBlock, shape: BlockShape) -> nn.Module:
    """Squeeze-excitation (torchvision's SqueezeExcitation); activation `none` is an nn.Identity."""
    act = layers.activation(block.activation) or nn.Identity()
    scale_act = layers.activation(block.gate)
    assert scale_act is not None
    return Gate(shape.in_shape[0], block.squeeze_channels, act, scale_act)


def norm(ctx: BuildContext, block: LayerNormBlock | GroupNormBlock, shape: BlockShape) -> nn.Module:
    """A standalone layernorm or groupnorm: the same layer as a conv block's norm of that kind."""
    made = layers.norm(block, shape.in_shape[0])
    assert made is not None
    return made


def channel_shuffle(ctx: BuildContext, block: ChannelShuffleBlock, shape: BlockShape) -> nn.Module:
    return ChannelShuffle(block.groups)


def conv_transpose(ctx: BuildContext, block: ConvTransposeBlock, shape: BlockShape) -> nn.Module:
    """conv (nn.ConvTranspose2d) -> [norm] -> [act], in the order transpose_layers gives."""
    made_conv = nn.ConvTranspose2d(
        shape.in_shape[0], block.out_channels, block.kernel_size, stride=block.stride, padding=block.padding,
        output_padding=block.output_padding, dilation=block.dilation, bias=block.bias,
    )
    made: dict[str, Callable[[Any], Any]] = {
        "conv": lambda _: made_conv, "act": layers.activation,
        "norm": lambda norm: layers.norm(norm, block.out_channels),
    }
    return nn.Sequential(OrderedDict((role, made[role](layer)) for role, layer in transpose_layers(block)))


def upsample(ctx: BuildContext, block: UpsampleBlock, shape: BlockShape) -> nn.Module:
    size = tuple(block.size) if block.size is not None else None
    return nn.Upsample(size=size, scale_factor=block.scale_factor, mode=block.mode, align_corners=block.align_corners)


def skip(ctx: BuildContext, block: SkipBlock, shape: BlockShape) -> nn.Module:
    return Skip(ctx.children(block, shape)[0], block.merge, block.match)
