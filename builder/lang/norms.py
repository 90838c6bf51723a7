"""The norms a conv block may have (`norm: {kind: ...}`): a small registry. No torch.

Each norm is a pydantic model plus a `NormDef`: where it sits in the conv block (before the
activation, as BatchNorm; after it, as AlexNet's LRN), its parameters for `channels` feature
maps, its drawing label, and its torch factory ("module:function", resolved by builder.model.layers).
Adding a norm: its model, its NormDef in NORMS, and its member in `NormSpec`; a test checks that
NORMS and NormSpec agree and that every factory resolves. The same models are the standalone
`layernorm` and `groupnorm` block kinds (builder.lang.kinds.norm).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Annotated, Any, Literal, get_args

from pydantic import Field

from builder.lang.base import PositiveInt, StrictModel


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
    frozen_weight: bool = False
    """Keep the scale at 1, untrained (airbench's BatchNorm): only the bias learns."""


class LayerNormSpec(StrictModel):
    """LayerNorm over the channels at each pixel (ConvNeXt's LayerNorm2d): a learnable weight and
    bias per channel; placed between the convolution and the activation."""

    kind: Literal["layernorm"]
    eps: Annotated[float, Field(gt=0)] = 1e-5
    """Added to the variance for numerical stability (ConvNeXt: 1e-6)."""


class GroupNormSpec(StrictModel):
    """nn.GroupNorm: the channels in `groups` groups, each normalized over its channels and pixels;
    a learnable weight and bias per channel; placed between the convolution and the activation."""

    kind: Literal["groupnorm"]
    groups: PositiveInt
    """Number of groups; must divide the channels."""
    eps: Annotated[float, Field(gt=0)] = 1e-5
    """Added to the variance for numerical stability."""


class NoNormSpec(StrictModel):
    """No normalization layer."""

    kind: Literal["none"]


NO_NORM = NoNormSpec(kind="none")  # shared: models are frozen, and inference asks for it per conv block
AnyNorm = LRNSpec | BatchNormSpec | LayerNormSpec | GroupNormSpec | NoNormSpec
NormSpec = Annotated[AnyNorm, Field(discriminator="kind")]


@dataclass(frozen=True)
class NormDef:
    """One norm kind, defined once. Every field is required."""

    model: type[StrictModel]
    placement: Literal["before_activation", "after_activation", "absent"]
    """Where a conv block puts it; absent: no layer at all (kind none)."""
    params: Callable[[Any, int], int]
    """(norm, channels) -> learnable parameters."""
    label: Callable[[Any], str]
    """(norm) -> its drawing and summary label."""
    factory: str
    """"module:function" of (norm, channels) -> nn.Module; "" only for an absent norm."""
    multiple: Callable[[Any], int]
    """(norm) -> what the channel count must be a multiple of (GroupNorm's groups; else 1)."""

    def __post_init__(self) -> None:
        if (self.placement == "absent") != (self.factory == ""):
            raise TypeError(f"norm {self.tag}: a factory is required exactly when the norm builds a layer")

    @property
    def tag(self) -> str:
        return str(get_args(self.model.model_fields["kind"].annotation)[0])


NORMS: dict[str, NormDef] = {d.tag: d for d in (
    NormDef(LRNSpec, "after_activation", lambda norm, channels: 0, lambda norm: f"lrn size {norm.size}",
            "builder.model.layers:lrn", lambda norm: 1),
    NormDef(BatchNormSpec, "before_activation", lambda norm, channels: 2 * channels, lambda norm: "batchnorm",
            "builder.model.layers:batchnorm", lambda norm: 1),
    NormDef(LayerNormSpec, "before_activation", lambda norm, channels: 2 * channels, lambda norm: "layernorm",
            "builder.model.layers:layernorm", lambda norm: 1),
    NormDef(GroupNormSpec, "before_activation", lambda norm, channels: 2 * channels,
            lambda norm: f"groupnorm {norm.groups}", "builder.model.layers:groupnorm", lambda norm: norm.groups),
    NormDef(NoNormSpec, "absent", lambda norm, channels: 0, lambda norm: "", "", lambda norm: 1),
)}


def norm_def(norm: Any) -> NormDef:
    """The NormDef of a norm spec (by its kind)."""
    return NORMS[norm.kind]


def norm_problem(norm: Any, channels: int) -> str | None:
    """Why this norm cannot normalize `channels` feature maps (None: it can)."""
    multiple = norm_def(norm).multiple(norm)
    if channels % multiple:
        return f"{norm.kind} groups ({multiple}) must divide the channels ({channels})"
    return None
