"""Pydantic models of an architecture spec. Pure Python: this module never imports torch.

A spec is a stack of blocks followed by a head (builder.lang.heads): by default a classifier
(optional adaptive pool -> flatten -> hidden linears -> output). Each block is of a kind from
the registry (builder.lang.registry): a block without `kind` is a conv block (conv ->
[batchnorm] -> activation -> [lrn] -> [pool]); the other built-in kinds (builder.lang.kinds)
compose blocks (sequence, residual, parallel) or stand alone (pools, batchnorm, activation,
dropout); `repeat` and `use` write blocks once and are expanded on the raw document
(builder.lang.expand) before the final validation, so a validated spec that is built holds only
concrete blocks.
Every model is strict: unknown keys are rejected and `true` or `3.5` are not ints.
The docstring under each field is its description in the JSON Schema (editor hover text).
"""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import ConfigDict, Field, SerializerFunctionWrapHandler, model_serializer, model_validator

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
from builder.lang.errors import BuilderError
from builder.lang.heads import AnyHead, ClassifierHead, ClassifierSpec, ConvHead, HeadSpec, NoHead, head_def
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
    Scaling,
    child_lists,
    default_name,
    register_kind,
    round_channels,
    scale_list,
    walk_blocks,
)

__all__ = [  # the kind models and helpers that used to live here, for code that imports them from spec
    "Activation",
    "ActivationBlock",
    "AdaptiveAvgPoolBlock",
    "BatchNormBlock",
    "BatchNormSpec",
    "Block",
    "BlockName",
    "BlockSpec",
    "ClassifierHead",
    "ClassifierSpec",
    "ConvHead",
    "Defaults",
    "DropoutBlock",
    "InputSpec",
    "LRNSpec",
    "Named",
    "NoHead",
    "NoNormSpec",
    "NoPoolSpec",
    "NonNegativeInt",
    "NormSpec",
    "ParallelBlock",
    "Path",
    "PoolBlock",
    "PoolSpec",
    "PositiveInt",
    "RepeatBlock",
    "ResidualBlock",
    "SequenceBlock",
    "Spec",
    "StrictModel",
    "TemplateSpec",
    "UseBlock",
    "WindowPoolSpec",
    "apply_width",
    "block_activation",
    "block_norm",
    "block_pool",
    "child_lists",
    "conv_block_layers",
    "default_name",
    "field_docs",
    "register_kind",
    "round_channels",
    "rule_error",
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


class Spec(StrictModel):
    """A CNN architecture. The `training` section is validated by training.config."""

    model_config = ConfigDict(serialize_by_alias=True)  # num_classes, not its field name

    extends: str | None = None
    """Path of a base spec (relative to this file) to inherit from."""
    name: Annotated[str, Field(min_length=1, pattern=r"^[A-Za-z0-9_.-]+$")]
    """Name of the architecture (letters, digits, _ . -); used for run directories."""
    input: InputSpec
    """Shape of one input image."""
    classes: PositiveInt | None = Field(alias="num_classes")
    """Number of output classes; required, except with head kind none, which has none."""
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
    classifier: ClassifierSpec | None = ClassifierSpec()
    """The fully connected head (the default head; the same as head: {kind: classifier, ...})."""
    head: HeadSpec | None = None
    """The head: classifier (default: the `classifier` key), conv (SqueezeNet's 1x1 conv head) or
    none (no head: the output is the last block's feature map)."""
    stochastic_depth: StochasticDepthSpec | None = None
    """A stochastic depth rate growing linearly over the residual blocks with `stochastic_depth: linear`."""
    training: dict[str, Any] | None = None
    """Training recipe (see the README's training reference)."""

    @model_validator(mode="before")
    @classmethod
    def _no_classes_without_a_head(cls, data: Any) -> Any:
        # num_classes is required (reported with every other problem) unless the head is none
        head = data.get("head") if isinstance(data, dict) else None
        kind = head.get("kind") if isinstance(head, dict) else getattr(head, "kind", None)
        if kind == "none" and "num_classes" not in data:
            return {**data, "num_classes": None}
        return data

    @model_validator(mode="after")
    def _one_head(self) -> Spec:
        given = "classifier" in self.model_fields_set and self.classifier is not None
        if self.head is not None and given:
            what = "has no classifier" if self.head.kind == "none" else f"has its {self.head.kind} head instead"
            raise rule_error("classifier", f"a spec with head kind {self.head.kind} {what}; remove classifier "
                             "(a variant of a spec that has one writes classifier: null)")
        if self.head is None and self.classifier is None:
            raise rule_error("classifier", "null needs a head (head kind none for no head at all)")
        if self.head is not None:  # one value for "no classifier", so a dumped spec loads back equal
            object.__setattr__(self, "classifier", None)
        needs = head_def(self.the_head).needs_classes
        if needs and self.classes is None:  # num_classes: null
            kind = getattr(self.the_head, "kind", "classifier")
            raise rule_error("num_classes", f"must be an integer > 0 for head kind {kind}")
        if not needs and self.classes is not None:
            raise rule_error("num_classes", "a spec with head kind none outputs its last block's features "
                             "and has no classes; remove num_classes")
        return self

    @model_serializer(mode="wrap")
    def _without_the_unused_head(self, handler: SerializerFunctionWrapHandler) -> dict[str, Any]:
        # a dumped spec (resolve, a run's spec.yaml) must load back: with a `head`, no `classifier`;
        # without one, no `head` key, so a classifier spec dumps as it did before heads existed
        data: dict[str, Any] = handler(self)
        data.pop("classifier" if self.head is not None else "head", None)
        return data

    @property
    def num_classes(self) -> int:
        """The number of output classes (a BuilderError for a spec without a classifying head)."""
        if self.classes is None:
            raise BuilderError(f"{self.name}: a spec with head kind none has no classes "
                               "(it outputs features; give it a head to classify)")
        return self.classes

    @property
    def the_head(self) -> AnyHead:
        """The head in effect: `head`, else `classifier` (the default head)."""
        if self.head is not None:
            return self.head
        assert self.classifier is not None  # _one_head
        return self.classifier


# --- Width scaling ---------------------------------------------------------------------------


def apply_width(spec: Spec) -> Spec:
    """The spec with `width` folded into every out_channels and the head's sizes (width becomes 1).

    Each kind scales its own channel counts (its KindDef's width rule): a conv block's
    out_channels stays a multiple of width_divisor, of its own groups and of the next block's
    groups in the same list (which must divide its in_channels). Depthwise convolutions follow
    their input, so they stay valid at any width.
    """
    if spec.width == 1.0:
        return spec
    blocks = scale_list(spec.blocks, spec.width, spec.width_divisor)
    scaling = Scaling(spec.width, spec.width_divisor, spec.width_divisor)
    field = "head" if spec.head is not None else "classifier"
    head = head_def(spec.the_head).width(spec.the_head, scaling)
    return spec.model_copy(update={"width": 1.0, "blocks": blocks, field: head})

