"""Pydantic models of an architecture spec. Pure Python: this module never imports torch.

A spec is a stack of conv blocks (conv -> [batchnorm] -> activation -> [lrn] -> [pool])
followed by a classifier (optional adaptive pool -> flatten -> hidden linears -> output).
Every model is strict: unknown keys are rejected and `true` or `3.5` are not ints.
The docstring under each field is its description in the JSON Schema (editor hover text).
"""

from __future__ import annotations

from itertools import pairwise
from math import lcm
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator
from pydantic_core import PydanticCustomError

Activation = Literal["relu", "leaky_relu", "gelu", "silu", "tanh", "sigmoid", "elu", "none"]

PositiveInt = Annotated[int, Field(gt=0)]
NonNegativeInt = Annotated[int, Field(ge=0)]


def rule_error(field: str, message: str) -> PydanticCustomError:
    """A cross-field error pinned to `field` of the model that raises it (see errors.py)."""
    return PydanticCustomError("spec_rule", message.replace("{", "{{").replace("}", "}}"), {"field": field})


class StrictModel(BaseModel):
    """Base of every spec model: no unknown keys, no coercion, immutable."""

    model_config = ConfigDict(extra="forbid", strict=True, frozen=True, use_attribute_docstrings=True)


class InputSpec(StrictModel):
    """Shape of one input image, channels first."""

    channels: PositiveInt
    """Image channels: 3 for RGB, 1 for grayscale."""
    height: PositiveInt
    """Image height in pixels."""
    width: PositiveInt
    """Image width in pixels."""


class LRNSpec(StrictModel):
    """nn.LocalResponseNorm; placed after the activation, as in the AlexNet paper."""

    kind: Literal["lrn"]
    size: PositiveInt = 5
    """Number of neighbouring channels to normalize over."""
    alpha: Annotated[float, Field(gt=0)] = 1e-4
    """Multiplicative factor."""
    beta: Annotated[float, Field(gt=0)] = 0.75
    """Exponent."""
    k: Annotated[float, Field(gt=0)] = 2.0
    """Additive constant."""


class BatchNormSpec(StrictModel):
    """nn.BatchNorm2d; placed between the convolution and the activation."""

    kind: Literal["batchnorm"]
    eps: Annotated[float, Field(gt=0)] = 1e-5
    """Added to the variance for numerical stability."""
    momentum: Annotated[float, Field(gt=0, le=1)] = 0.1
    """Update factor of the running statistics."""


class NoNormSpec(StrictModel):
    """No normalization layer."""

    kind: Literal["none"]


NormSpec = Annotated[LRNSpec | BatchNormSpec | NoNormSpec, Field(discriminator="kind")]


class WindowPoolSpec(StrictModel):
    """A max or average pooling window (floor mode, as nn.MaxPool2d's default)."""

    kind: Literal["max", "avg"]
    kernel_size: PositiveInt = 3
    """Window size (square)."""
    stride: PositiveInt = 2
    """Window step; smaller than kernel_size gives AlexNet's overlapping pooling."""
    padding: NonNegativeInt = 0
    """Implicit padding on each side; at most kernel_size/2."""

    @model_validator(mode="after")
    def _padding_fits_kernel(self) -> WindowPoolSpec:
        # torch refuses pad > kernel/2: the window would see only padding.
        if 2 * self.padding > self.kernel_size:
            raise rule_error("padding", f"must be at most kernel_size/2 ({self.kernel_size // 2})")
        return self


class NoPoolSpec(StrictModel):
    """No pooling layer."""

    kind: Literal["none"]


PoolSpec = Annotated[WindowPoolSpec | NoPoolSpec, Field(discriminator="kind")]


class Defaults(StrictModel):
    """Spec-level defaults that blocks inherit unless they set their own."""

    norm: NormSpec = LRNSpec(kind="lrn")
    """Norm of blocks with pool_and_norm: true that set no norm of their own."""
    pool: PoolSpec = WindowPoolSpec(kind="max")
    """Pool of blocks with pool_and_norm: true that set no pool of their own."""
    activation: Activation = "relu"
    """Activation of blocks that set none of their own."""


class BlockSpec(StrictModel):
    """One conv block: conv -> [batchnorm] -> activation -> [lrn] -> [pool]. Keys follow nn.Conv2d."""

    out_channels: PositiveInt
    """Output channels of the convolution."""
    kernel_size: PositiveInt
    """Convolution kernel size (square)."""
    stride: PositiveInt = 1
    """Convolution stride."""
    padding: NonNegativeInt = 0
    """Zero padding on each side."""
    groups: PositiveInt = 1
    """Grouped convolution: must divide in_channels and out_channels."""
    bias: bool = True
    """Whether the convolution has a bias (redundant before batchnorm)."""
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
    def _groups_divide_out_channels(self) -> BlockSpec:
        if self.out_channels % self.groups:
            raise rule_error(
                "groups", f"out_channels ({self.out_channels}) must be divisible by groups ({self.groups})"
            )
        return self


class ClassifierSpec(StrictModel):
    """The head: [adaptive avg pool] -> flatten -> hidden linears -> num_classes."""

    hidden: list[PositiveInt] = [4096, 4096]
    """Sizes of the hidden fully connected layers; [] for a single linear layer."""
    dropout: Annotated[float, Field(ge=0, lt=1)] = 0.5
    """Dropout probability around each hidden layer; 0 disables it."""
    dropout_position: Literal["before", "after"] = "after"
    """Dropout after each hidden layer (paper) or before it (torchvision)."""
    activation: Activation = "relu"
    """Activation after each hidden layer; none reproduces code without one."""
    adaptive_pool: Annotated[list[PositiveInt], Field(min_length=2, max_length=2)] | None = None
    """[H, W]: adaptive average pool before flattening, so any input size works."""


class Spec(StrictModel):
    """A CNN architecture. The `training` section is validated by training.config."""

    extends: str | None = None
    """Path of a base spec (relative to this file) to inherit from."""
    name: Annotated[str, Field(min_length=1, pattern=r"^[A-Za-z0-9_.-]+$")]
    """Name of the architecture (letters, digits, _ . -); used for run directories."""
    input: InputSpec
    """Shape of one input image."""
    num_classes: PositiveInt
    """Number of output classes."""
    width: Annotated[float, Field(gt=0, le=64)] = 1.0
    """Width multiplier for every out_channels and hidden size."""
    width_divisor: PositiveInt = 1
    """Scaled channel counts are rounded to a multiple of this."""
    defaults: Defaults = Defaults()
    """Norm, pool and activation that blocks inherit."""
    blocks: Annotated[list[BlockSpec], Field(min_length=1)]
    """The conv blocks, in order (module names features.block1, block2, ...)."""
    classifier: ClassifierSpec = ClassifierSpec()
    """The fully connected head."""
    training: dict[str, Any] | None = None
    """Training recipe (see the README's training reference)."""


# --- Resolution: what a block actually gets once defaults apply -----------------------------


def block_norm(spec: Spec, block: BlockSpec) -> LRNSpec | BatchNormSpec | NoNormSpec:
    """The block's own norm, else the spec default when `pool_and_norm` is set, else none."""
    if block.norm is not None:
        return block.norm
    return spec.defaults.norm if block.pool_and_norm else NoNormSpec(kind="none")


def block_pool(spec: Spec, block: BlockSpec) -> WindowPoolSpec | NoPoolSpec:
    """The block's own pool, else the spec default when `pool_and_norm` is set, else none."""
    if block.pool is not None:
        return block.pool
    return spec.defaults.pool if block.pool_and_norm else NoPoolSpec(kind="none")


def block_activation(spec: Spec, block: BlockSpec) -> Activation:
    return block.activation if block.activation is not None else spec.defaults.activation


# --- Width scaling ---------------------------------------------------------------------------


def round_channels(channels: int, width: float, multiple: int) -> int:
    """channels * width rounded half up to a multiple of `multiple`, and never below it."""
    return max(multiple, int(channels * width / multiple + 0.5) * multiple)


def apply_width(spec: Spec) -> Spec:
    """The spec with `width` folded into every out_channels and hidden size (width becomes 1).

    A block's out_channels stays a multiple of width_divisor, of its own groups and of the
    next block's groups (which must divide its in_channels).
    """
    if spec.width == 1.0:
        return spec
    groups = [b.groups for b in spec.blocks] + [1]
    blocks = [
        b.model_copy(update={"out_channels": round_channels(b.out_channels, spec.width, lcm(spec.width_divisor, g, h))})
        for b, (g, h) in zip(spec.blocks, pairwise(groups))
    ]
    hidden = [round_channels(h, spec.width, spec.width_divisor) for h in spec.classifier.hidden]
    classifier = spec.classifier.model_copy(update={"hidden": hidden})
    return spec.model_copy(update={"width": 1.0, "blocks": blocks, "classifier": classifier})
