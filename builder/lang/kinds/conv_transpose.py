"""conv_transpose: nn.ConvTranspose2d -> [norm before the activation] -> activation -> [norm after it]."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import Field, model_validator

from builder.lang.base import Activation, Named, NonNegativeInt, PositiveInt, rule_error
from builder.lang.norms import NO_NORM, AnyNorm, NormSpec, norm_def
from builder.lang.registry import KindDef, Label, Scaling, leaf_frame, no_multiple
from builder.lang.walk import At, Inferred, Shape, Walk


class ConvTransposeBlock(Named):
    """A transposed convolution (nn.ConvTranspose2d), the learned upsampling of U-Net and FCN:
    conv -> [norm] -> [activation], module names `conv`, `norm`, `act`."""

    kind: Literal["conv_transpose"]
    out_channels: PositiveInt
    """Output channels of the transposed convolution."""
    kernel_size: PositiveInt
    """Kernel size (square)."""
    stride: PositiveInt = 1
    """Stride: the upsampling factor (2 with kernel_size 2 doubles the size exactly)."""
    padding: NonNegativeInt = 0
    """Removed from each side of the output (nn.ConvTranspose2d's padding)."""
    output_padding: NonNegativeInt = 0
    """Added to one side of the output; smaller than stride or dilation."""
    dilation: PositiveInt = 1
    """Spacing between kernel elements."""
    bias: bool = True
    """Whether the convolution has a bias (redundant before batchnorm)."""
    norm: NormSpec | None = None
    """A norm after the convolution (placed as in a conv block); default none."""
    activation: Activation = "none"
    """Activation after the convolution; default none (a plain learned upsampling, as in U-Net)."""
    expect: Annotated[list[PositiveInt], Field(min_length=3, max_length=3)] | None = None
    """Asserted output shape [C, H, W]; a mismatch is an error."""

    @model_validator(mode="after")
    def _output_padding_fits(self) -> ConvTransposeBlock:
        if self.output_padding >= max(self.stride, self.dilation):  # torch refuses it at build time
            raise rule_error("output_padding", f"must be smaller than stride or dilation "
                             f"(here at most {max(self.stride, self.dilation) - 1})")
        return self


def transposed_out(size: int, block: ConvTransposeBlock) -> int:
    """Output length along one axis, as nn.ConvTranspose2d computes it."""
    return ((size - 1) * block.stride - 2 * block.padding + block.dilation * (block.kernel_size - 1)
            + block.output_padding + 1)


def transpose_layers(block: ConvTransposeBlock) -> list[tuple[Literal["conv", "norm", "act"], Any]]:
    """(module name, what it is) in forward order: conv -> [norm before] -> [act] -> [norm after]."""
    norm: AnyNorm = block.norm if block.norm is not None else NO_NORM
    placement = norm_def(norm).placement
    layers: list[tuple[Literal["conv", "norm", "act"], Any]] = [("conv", block)]
    if placement == "before_activation":
        layers.append(("norm", norm))
    if block.activation != "none":
        layers.append(("act", block.activation))
    if placement == "after_activation":
        layers.append(("norm", norm))
    return layers


def _label(role: str, layer: Any) -> Label:
    if role == "conv":
        text = f"conv_transpose {layer.out_channels} k{layer.kernel_size} s{layer.stride} p{layer.padding}"
        text += f" op{layer.output_padding}" if layer.output_padding else ""
        text += f" d{layer.dilation}" if layer.dilation != 1 else ""
        return Label(text, "conv")
    if role == "norm":
        return Label(norm_def(layer).label(layer), "norm")
    return Label(str(layer), "activation")


def _infer(walk: Walk, block: ConvTransposeBlock, at: At, shape: Shape) -> Inferred:
    c, h, w = shape
    h2, w2 = transposed_out(h, block), transposed_out(w, block)
    if h2 <= 0 or w2 <= 0:
        return walk.collapse(at, shape, h2, w2)
    k, out = block.kernel_size, block.out_channels
    layers = transpose_layers(block)
    params = c * out * k * k + (out if block.bias else 0)
    params += sum(norm_def(n).params(n, out) for role, n in layers if role == "norm")
    # every input pixel scatters a k x k x out patch: torch's (and torchinfo's) count
    macs = h * w * c * out * k * k
    return (out, h2, w2), params, macs, tuple(_label(role, layer) for role, layer in layers)


def _width(block: ConvTransposeBlock, scaling: Scaling) -> ConvTransposeBlock:
    return block.model_copy(update={"out_channels": scaling.channels(block.out_channels)})


def _fields(spec: Any, block: ConvTransposeBlock) -> dict[str, Any]:
    fields = block.model_dump(exclude={"name", "norm"})
    norm = (block.norm or NO_NORM).model_dump()
    kind = norm.pop("kind")
    fields["norm"] = f"{kind}({', '.join(f'{k}={v}' for k, v in norm.items())})" if norm else kind
    return fields


KIND = KindDef(
    tags=("conv_transpose",), model=ConvTransposeBlock, infer=_infer, children=(), stride=lambda spec, b: 1,
    width=_width, channel_multiple=no_multiple, fields=_fields, frame=leaf_frame,
    factory="builder.model.factories:conv_transpose",
)
