"""Pydantic models of an architecture spec. Pure Python: this module never imports torch.

A spec is a stack of blocks followed by a classifier (optional adaptive pool -> flatten ->
hidden linears -> output). A block without `kind` is a conv block (conv -> [batchnorm] ->
activation -> [lrn] -> [pool]); the other kinds compose blocks (sequence, residual, parallel),
write them once (repeat, use of a template) or stand alone (pools, batchnorm, activation,
dropout). Templates and repeats are expanded on the raw document (builder.lang.expand) before
the final validation, so a validated spec that is built holds only concrete blocks.
Every model is strict: unknown keys are rejected and `true` or `3.5` are not ints.
The docstring under each field is its description in the JSON Schema (editor hover text).
"""

from __future__ import annotations

import ast
import inspect
import sys
from collections.abc import Iterator
from functools import cache
from math import lcm
from typing import Annotated, Any, Literal, Union

from pydantic import BaseModel, ConfigDict, Discriminator, Field, Tag, model_validator
from pydantic_core import PydanticCustomError

Path = tuple[str | int, ...]  # a place in the data, as in builder.lang.errors

Activation = Literal["relu", "relu6", "leaky_relu", "gelu", "silu", "tanh", "sigmoid", "elu", "none"]

PositiveInt = Annotated[int, Field(gt=0)]
NonNegativeInt = Annotated[int, Field(ge=0)]


def rule_error(field: str, message: str) -> PydanticCustomError:
    """A cross-field error pinned to `field` of the model that raises it (see errors.py)."""
    return PydanticCustomError("spec_rule", message.replace("{", "{{").replace("}", "}}"), {"field": field})


def field_docs(schema: dict[str, Any], cls: type[BaseModel]) -> None:
    """json_schema_extra: each field's attribute docstring as its description in the JSON Schema.

    Read from the source only when a schema is made: pydantic's use_attribute_docstrings, which
    gives the same descriptions, parses each model's source at import, about half of the start-up
    of `validate`. A field's docstring is the one in the class that declares the field."""
    properties = schema.get("properties", {})
    for name, info in cls.model_fields.items():
        owner = next(c for c in cls.__mro__ if name in vars(c).get("__annotations__", {}))
        doc = _attribute_docs(owner.__module__).get((owner.__qualname__, name))
        if doc and info.description is None and name in properties:
            properties[name]["description"] = doc


@cache
def _attribute_docs(module: str) -> dict[tuple[str, str], str]:
    """{(class name, field): docstring} of every top-level class of `module`, from one parse of its source."""
    docs: dict[tuple[str, str], str] = {}
    for node in ast.parse(inspect.getsource(sys.modules[module])).body:
        if isinstance(node, ast.ClassDef):
            for field, text in zip(node.body, node.body[1:], strict=False):
                if (isinstance(field, ast.AnnAssign) and isinstance(field.target, ast.Name)
                        and isinstance(text, ast.Expr) and isinstance(text.value, ast.Constant)
                        and isinstance(text.value.value, str)):
                    docs[(node.name, field.target.id)] = inspect.cleandoc(text.value.value)
    return docs


class StrictModel(BaseModel):
    """Base of every spec model: no unknown keys, no coercion, immutable."""

    model_config = ConfigDict(extra="forbid", strict=True, frozen=True, json_schema_extra=field_docs, defer_build=True)


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
    ceil_mode: bool = False
    """Round the output size up instead of down (torchvision's GoogLeNet pools)."""

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


BlockName = Annotated[str, Field(pattern=r"^[A-Za-z_][A-Za-z0-9_]*$", max_length=64)]


class _Named(StrictModel):
    """What every block has: an optional module name (default block1, block2, ... in its list)."""

    name: BlockName | None = None
    """Module name of this block (features.<...>.<name>); default block<i>, its 1-based position."""


class BlockSpec(_Named):
    """One conv block: conv -> [batchnorm] -> activation -> [lrn] -> [pool]. Keys follow nn.Conv2d."""

    kind: Literal["conv"] = "conv"
    """A block without kind is a conv block."""
    out_channels: PositiveInt
    """Output channels of the convolution."""
    kernel_size: PositiveInt
    """Convolution kernel size (square)."""
    stride: PositiveInt = 1
    """Convolution stride."""
    padding: NonNegativeInt = 0
    """Zero padding on each side."""
    groups: PositiveInt | Literal["depthwise"] = 1
    """Grouped convolution: must divide in_channels and out_channels; depthwise: one group per input channel."""
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
        if isinstance(self.groups, int) and self.out_channels % self.groups:
            raise rule_error(
                "groups", f"out_channels ({self.out_channels}) must be divisible by groups ({self.groups})"
            )
        return self


class PoolBlock(_Named):
    """A standalone nn.MaxPool2d (maxpool) or nn.AvgPool2d (avgpool, counting the zero padding)."""

    kind: Literal["maxpool", "avgpool"]
    kernel_size: PositiveInt = 3
    """Window size (square)."""
    stride: PositiveInt = 2
    """Window step."""
    padding: NonNegativeInt = 0
    """Implicit padding on each side; at most kernel_size/2."""
    ceil_mode: bool = False
    """Round the output size up instead of down (torchvision's GoogLeNet)."""

    @model_validator(mode="after")
    def _padding_fits_kernel(self) -> PoolBlock:
        self.window()  # the same rules as a conv block's pool
        return self

    def window(self) -> WindowPoolSpec:
        """The same window as a conv block's pool: one arithmetic and one layer factory for both."""
        return WindowPoolSpec(kind="max" if self.kind == "maxpool" else "avg", kernel_size=self.kernel_size,
                              stride=self.stride, padding=self.padding, ceil_mode=self.ceil_mode)


class AdaptiveAvgPoolBlock(_Named):
    """nn.AdaptiveAvgPool2d: any input size to a fixed output size ([1, 1]: global average pooling)."""

    kind: Literal["adaptive_avgpool"]
    output_size: Annotated[list[PositiveInt], Field(min_length=2, max_length=2)] = [1, 1]
    """[H, W] of the output."""


class BatchNormBlock(_Named):
    """A standalone nn.BatchNorm2d over the incoming channels (DenseNet's pre-activation order)."""

    kind: Literal["batchnorm"]
    eps: Annotated[float, Field(gt=0)] = 1e-5
    """Added to the variance for numerical stability."""
    momentum: Annotated[float, Field(gt=0, le=1)] = 0.1
    """Update factor of the running statistics."""


class ActivationBlock(_Named):
    """A standalone activation."""

    kind: Literal["activation"]
    fn: Activation
    """Which activation."""


class DropoutBlock(_Named):
    """A standalone nn.Dropout."""

    kind: Literal["dropout"]
    p: Annotated[float, Field(ge=0, lt=1)] = 0.5
    """Probability of zeroing an element during training."""


class SequenceBlock(_Named):
    """Blocks applied one after another, under one name (a stage)."""

    kind: Literal["sequence"]
    blocks: Annotated[list[Block], Field(min_length=1)]
    """The blocks, in order."""


class ResidualBlock(_Named):
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


class ParallelBlock(_Named):
    """Branches applied to the same input, merged: Inception, DenseNet's dense layer, SqueezeNet's fire."""

    kind: Literal["parallel"]
    branches: Annotated[list[list[Block]], Field(min_length=1)]
    """Each branch is a list of blocks; an empty list is the identity."""
    merge: Literal["concat", "add"] = "concat"
    """concat: along channels (equal spatial sizes); add: elementwise (equal shapes)."""


class RepeatBlock(_Named):
    """One block written once, applied `times` times (expanded into a sequence block1..blockN).

    Every copy is the block as written, except the first, which `first` patches (mappings merge,
    `{INDEX: {...}}` patches a list item, as in extends). Input channels follow the previous copy,
    and an `auto` shortcut becomes a projection where the shape changes.
    """

    kind: Literal["repeat"]
    times: PositiveInt
    """How many copies."""
    block: Block
    """The block to repeat."""
    first: dict[str, Any] | None = None
    """Patch of the first copy only, e.g. {stride: 2} or {args: {stride: 2}}."""


class UseBlock(_Named):
    """An instance of a template defined in `templates`, with its arguments."""

    kind: Literal["use"]
    template: str
    """Name of the template."""
    args: dict[str, Any] = {}
    """Values of the template's parameters (plain values; they replace `$param` in the template)."""


class TemplateSpec(StrictModel):
    """A named block with parameters: `$param` anywhere in `block` is replaced by the argument."""

    params: list[BlockName] = []
    """Names of the parameters; each must be used in `block`."""
    defaults: dict[str, Any] = {}
    """Values of parameters that a use may leave out."""
    block: dict[str, Any]
    """The block, with `$param` values (a whole value, never part of one)."""


BLOCK_KINDS = (
    "conv", "sequence", "residual", "parallel", "repeat", "use",
    "maxpool", "avgpool", "adaptive_avgpool", "batchnorm", "activation", "dropout",
)


def _block_kind(value: Any) -> str:
    """The union tag: `kind`, and conv when it is absent (AlexNet's format has no kind)."""
    if isinstance(value, dict):
        kind = value.get("kind", "conv")
        return kind if isinstance(kind, str) else repr(kind)
    return getattr(value, "kind", "conv")


Block = Annotated[
    Union[  # noqa: UP007 (Tag needs the members spelled out)
        Annotated[BlockSpec, Tag("conv")],
        Annotated[SequenceBlock, Tag("sequence")],
        Annotated[ResidualBlock, Tag("residual")],
        Annotated[ParallelBlock, Tag("parallel")],
        Annotated[RepeatBlock, Tag("repeat")],
        Annotated[UseBlock, Tag("use")],
        Annotated[PoolBlock, Tag("maxpool")],
        Annotated[PoolBlock, Tag("avgpool")],
        Annotated[AdaptiveAvgPoolBlock, Tag("adaptive_avgpool")],
        Annotated[BatchNormBlock, Tag("batchnorm")],
        Annotated[ActivationBlock, Tag("activation")],
        Annotated[DropoutBlock, Tag("dropout")],
    ],
    Discriminator(_block_kind),
]
LayerBlock = PoolBlock | AdaptiveAvgPoolBlock | BatchNormBlock | ActivationBlock | DropoutBlock

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
    training: dict[str, Any] | None = None
    """Training recipe (see the README's training reference)."""


for _model in (SequenceBlock, ResidualBlock, ParallelBlock, RepeatBlock, Spec):
    _model.model_rebuild()


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


ConvLayer = tuple[Literal["conv", "norm", "act", "pool"], Any]


def conv_block_layers(spec: Spec, block: BlockSpec) -> list[ConvLayer]:
    """The layers of a conv block in forward order, as (module name, what it is).

    The one source of the layer order that shapes, build and draw all follow:
    conv -> [batchnorm] -> activation -> [lrn] -> [pool]. BatchNorm sits between the conv and
    the activation; LRN after the activation, as in the AlexNet paper. Absent layers are left out.
    """
    norm, pool, act = block_norm(spec, block), block_pool(spec, block), block_activation(spec, block)
    layers: list[ConvLayer] = [("conv", block)]
    if isinstance(norm, BatchNormSpec):
        layers.append(("norm", norm))
    if act != "none":
        layers.append(("act", act))
    if isinstance(norm, LRNSpec):
        layers.append(("norm", norm))
    if isinstance(pool, WindowPoolSpec):
        layers.append(("pool", pool))
    return layers


def default_name(block: Any, index: int) -> str:
    """A block's module name: its own `name`, else block<i> (1-based position in its list)."""
    return block.name if getattr(block, "name", None) else f"block{index + 1}"


def child_lists(block: Any) -> list[tuple[str, Path, list[Any]]]:
    """The block lists inside a composite block: (module name prefix, data path, blocks).

    The naming rule that shapes and build follow: a sequence's blocks sit directly under it,
    a residual's under `body`, a parallel block's under `branch1`, `branch2`, ...
    """
    if isinstance(block, SequenceBlock):
        return [("", ("blocks",), block.blocks)]
    if isinstance(block, ResidualBlock):
        return [("body.", ("body",), block.body)]
    if isinstance(block, ParallelBlock):
        return [(f"branch{k + 1}.", ("branches", k), b) for k, b in enumerate(block.branches)]
    return []


def walk_blocks(blocks: list[Any], prefix: str = "") -> Iterator[tuple[str, Any]]:
    """(module path under features, block) of every block at every depth, a composite first."""
    for i, block in enumerate(blocks):
        name = prefix + default_name(block, i)
        yield name, block
        for sub, _, children in child_lists(block):
            yield from walk_blocks(children, f"{name}.{sub}")


# --- Width scaling ---------------------------------------------------------------------------


def round_channels(channels: int, width: float, multiple: int) -> int:
    """channels * width rounded half up to a multiple of `multiple`, and never below it."""
    return max(multiple, int(channels * width / multiple + 0.5) * multiple)


def apply_width(spec: Spec) -> Spec:
    """The spec with `width` folded into every out_channels and hidden size (width becomes 1).

    A conv block's out_channels stays a multiple of width_divisor, of its own groups and of the
    next block's groups in the same list (which must divide its in_channels). Depthwise
    convolutions follow their input, so they stay valid at any width.
    """
    if spec.width == 1.0:
        return spec
    blocks = _scale_list(spec.blocks, spec.width, spec.width_divisor)
    hidden = [round_channels(h, spec.width, spec.width_divisor) for h in spec.classifier.hidden]
    classifier = spec.classifier.model_copy(update={"hidden": hidden})
    return spec.model_copy(update={"width": 1.0, "blocks": blocks, "classifier": classifier})


def _groups(block: Any) -> int:
    return block.groups if isinstance(block, BlockSpec) and isinstance(block.groups, int) else 1


def _scale_list(blocks: list[Any], width: float, divisor: int) -> list[Any]:
    nexts = [_groups(b) for b in blocks[1:]] + [1]
    return [_scale(b, width, divisor, lcm(divisor, _groups(b), h)) for b, h in zip(blocks, nexts)]


def _scale(block: Any, width: float, divisor: int, multiple: int) -> Any:
    """One block scaled; a composite's own lists restart from the spec's divisor."""
    if isinstance(block, BlockSpec):
        return block.model_copy(update={"out_channels": round_channels(block.out_channels, width, multiple)})
    if isinstance(block, SequenceBlock):
        return block.model_copy(update={"blocks": _scale_list(block.blocks, width, divisor)})
    if isinstance(block, ResidualBlock):
        return block.model_copy(update={"body": _scale_list(block.body, width, divisor)})
    if isinstance(block, ParallelBlock):
        return block.model_copy(update={"branches": [_scale_list(b, width, divisor) for b in block.branches]})
    return block
