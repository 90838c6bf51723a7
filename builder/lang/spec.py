"""Pydantic models of an architecture spec. Pure Python: this module never imports torch.

A spec is a stack of blocks followed by a classifier (optional adaptive pool -> flatten ->
hidden linears -> output). Each block is of a kind from the registry (builder.lang.registry):
a block without `kind` is a conv block (conv -> [batchnorm] -> activation -> [lrn] -> [pool]);
the other built-in kinds (builder.lang.kinds) compose blocks (sequence, residual, parallel) or
stand alone (pools, batchnorm, activation, dropout); `repeat` and `use` write blocks once and
are expanded on the raw document (builder.lang.expand) before the final validation, so a
validated spec that is built holds only concrete blocks.
Every model is strict: unknown keys are rejected and `true` or `3.5` are not ints.
The docstring under each field is its description in the JSON Schema (editor hover text).
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import Field

from builder.lang.base import (
    Activation,
    BlockName,
    Named,
    NonNegativeInt,
    NoPoolSpec,
    Path,
    PoolSpec,
    PositiveInt,
    StrictModel,
    WindowPoolSpec,
    field_docs,
    rule_error,
)
from builder.lang.kinds.activation import ActivationBlock
from builder.lang.kinds.adaptive_avgpool import AdaptiveAvgPoolBlock
from builder.lang.kinds.batchnorm import BatchNormBlock
from builder.lang.kinds.conv import BlockSpec, block_activation, block_norm, block_pool, conv_block_layers
from builder.lang.kinds.dropout import DropoutBlock
from builder.lang.kinds.parallel import ParallelBlock
from builder.lang.kinds.pool import PoolBlock
from builder.lang.kinds.residual import ResidualBlock, StochasticDepthSpec
from builder.lang.kinds.sequence import SequenceBlock
from builder.lang.macros import RepeatBlock, TemplateSpec, UseBlock
from builder.lang.norms import BatchNormSpec, LRNSpec, NoNormSpec, NormSpec
from builder.lang.registry import (
    Block,
    child_lists,
    default_name,
    register_kind,
    round_channels,
    scale_list,
    walk_blocks,
)

__all__ = [  # the kind models and helpers that used to live here, for code that imports them from spec
    "Activation", "ActivationBlock", "AdaptiveAvgPoolBlock", "BatchNormBlock", "BatchNormSpec", "Block",
    "BlockName", "BlockSpec", "ClassifierSpec", "Defaults", "DropoutBlock", "InputSpec", "LRNSpec", "Named",
    "NoNormSpec", "NoPoolSpec", "NonNegativeInt", "NormSpec", "ParallelBlock", "Path", "PoolBlock", "PoolSpec",
    "PositiveInt", "RepeatBlock", "ResidualBlock", "SequenceBlock", "Spec", "StrictModel", "TemplateSpec",
    "UseBlock", "WindowPoolSpec", "apply_width", "block_activation", "block_norm", "block_pool", "child_lists",
    "conv_block_layers", "default_name", "field_docs", "register_kind", "round_channels", "rule_error",
    "walk_blocks",
]


class InputSpec(StrictModel):
    """Shape of one input image, channels first."""

    channels: PositiveInt
    """Image channels: 3 for RGB, 1 for grayscale."""
    height: PositiveInt
    """Image height in pixels."""
    width: PositiveInt
    """Image width in pixels."""


class Defaults(StrictModel):
    """Spec-level defaults that blocks inherit unless they set their own."""

    norm: NormSpec = LRNSpec(kind="lrn")
    """Norm of blocks with pool_and_norm: true that set no norm of their own."""
    pool: PoolSpec = WindowPoolSpec(kind="max")
    """Pool of blocks with pool_and_norm: true that set no pool of their own."""
    activation: Activation = "relu"
    """Activation of blocks that set none of their own."""


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
    templates: dict[BlockName, TemplateSpec] | None = None
    """Named blocks with parameters, instantiated by blocks of kind use."""
    blocks: Annotated[list[Block], Field(min_length=1)]
    """The blocks, in order (module names features.block1, block2, ... unless named)."""
    classifier: ClassifierSpec = ClassifierSpec()
    """The fully connected head."""
    stochastic_depth: StochasticDepthSpec | None = None
    """A stochastic depth rate growing linearly over the residual blocks with `stochastic_depth: linear`."""
    training: dict[str, Any] | None = None
    """Training recipe (see the README's training reference)."""


# --- Width scaling ---------------------------------------------------------------------------


def apply_width(spec: Spec) -> Spec:
    """The spec with `width` folded into every out_channels and hidden size (width becomes 1).

    Each kind scales its own channel counts (its KindDef's width rule): a conv block's
    out_channels stays a multiple of width_divisor, of its own groups and of the next block's
    groups in the same list (which must divide its in_channels). Depthwise convolutions follow
    their input, so they stay valid at any width.
    """
    if spec.width == 1.0:
        return spec
    blocks = scale_list(spec.blocks, spec.width, spec.width_divisor)
    hidden = [round_channels(h, spec.width, spec.width_divisor) for h in spec.classifier.hidden]
    classifier = spec.classifier.model_copy(update={"hidden": hidden})
    return spec.model_copy(update={"width": 1.0, "blocks": blocks, "classifier": classifier})

