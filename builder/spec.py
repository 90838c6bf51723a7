"""Pydantic models of an architecture spec. Pure Python: this module never imports torch.

A spec is a stack of conv blocks (conv -> [batchnorm] -> activation -> [lrn] -> [pool])
followed by a classifier (optional adaptive pool -> flatten -> hidden linears -> output).
Every model is strict: unknown keys are rejected and `true` or `3.5` are not ints.
"""

from __future__ import annotations

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

    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)


class InputSpec(StrictModel):
    """Shape of one input image, channels first."""

    channels: PositiveInt
    height: PositiveInt
    width: PositiveInt


class LRNSpec(StrictModel):
    """nn.LocalResponseNorm; placed after the activation, as in the AlexNet paper."""

    kind: Literal["lrn"]
    size: PositiveInt = 5
    alpha: Annotated[float, Field(gt=0)] = 1e-4
    beta: Annotated[float, Field(gt=0)] = 0.75
    k: Annotated[float, Field(gt=0)] = 2.0


class BatchNormSpec(StrictModel):
    """nn.BatchNorm2d; placed between the convolution and the activation."""

    kind: Literal["batchnorm"]
    eps: Annotated[float, Field(gt=0)] = 1e-5
    momentum: Annotated[float, Field(gt=0, le=1)] = 0.1


class NoNormSpec(StrictModel):
    kind: Literal["none"]


NormSpec = Annotated[LRNSpec | BatchNormSpec | NoNormSpec, Field(discriminator="kind")]


class WindowPoolSpec(StrictModel):
    """A max or average pooling window (floor mode, as nn.MaxPool2d's default)."""

    kind: Literal["max", "avg"]
    kernel_size: PositiveInt = 3
    stride: PositiveInt = 2
    padding: NonNegativeInt = 0

    @model_validator(mode="after")
    def _padding_fits_kernel(self) -> WindowPoolSpec:
        # torch refuses pad > kernel/2: the window would see only padding.
        if 2 * self.padding > self.kernel_size:
            raise rule_error("padding", f"must be at most kernel_size/2 ({self.kernel_size // 2})")
        return self


class NoPoolSpec(StrictModel):
    kind: Literal["none"]


PoolSpec = Annotated[WindowPoolSpec | NoPoolSpec, Field(discriminator="kind")]


class Defaults(StrictModel):
    """Spec-level defaults that blocks inherit unless they set their own."""

    norm: NormSpec = LRNSpec(kind="lrn")
    pool: PoolSpec = WindowPoolSpec(kind="max")
    activation: Activation = "relu"


class BlockSpec(StrictModel):
    """One conv block. Key names follow nn.Conv2d."""

    out_channels: PositiveInt
    kernel_size: PositiveInt
    stride: PositiveInt = 1
    padding: NonNegativeInt = 0
    groups: PositiveInt = 1
    bias: bool = True
    pool_and_norm: bool = False
    norm: NormSpec | None = None
    pool: PoolSpec | None = None
    activation: Activation | None = None
    expect: Annotated[list[PositiveInt], Field(min_length=3, max_length=3)] | None = None

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
    dropout: Annotated[float, Field(ge=0, lt=1)] = 0.5
    dropout_position: Literal["before", "after"] = "after"
    activation: Activation = "relu"
    adaptive_pool: Annotated[list[PositiveInt], Field(min_length=2, max_length=2)] | None = None


class Spec(StrictModel):
    """A whole architecture. `training` is validated separately by training.config."""

    extends: str | None = None
    name: Annotated[str, Field(min_length=1, pattern=r"^[A-Za-z0-9_.-]+$")]
    input: InputSpec
    num_classes: PositiveInt
    width: Annotated[float, Field(gt=0, le=64)] = 1.0
    width_divisor: PositiveInt = 1
    defaults: Defaults = Defaults()
    blocks: Annotated[list[BlockSpec], Field(min_length=1)]
    classifier: ClassifierSpec = ClassifierSpec()
    training: dict[str, Any] | None = None


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
        b.model_copy(update={"out_channels": round_channels(b.out_channels, spec.width, lcm(spec.width_divisor, g, g_next))})
        for b, g, g_next in zip(spec.blocks, groups, groups[1:])
    ]
    hidden = [round_channels(h, spec.width, spec.width_divisor) for h in spec.classifier.hidden]
    classifier = spec.classifier.model_copy(update={"hidden": hidden})
    return spec.model_copy(update={"width": 1.0, "blocks": blocks, "classifier": classifier})
