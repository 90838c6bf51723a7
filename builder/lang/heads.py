"""The heads a spec may end in (`head: {kind: ...}`), a registry like the block kinds'. No torch.

- classifier (the default, also spelled as the top-level `classifier:` key): [adaptive avg pool]
  -> flatten -> hidden linears -> num_classes;
- conv (SqueezeNet's): dropout -> 1x1 conv to num_classes -> activation -> global avg pool -> flatten;
- none (a feature extractor, as timm's num_classes=0): the output is the last block's feature map;
- dense (segmentation): a 1x1 conv to num_classes at every pixel, no flatten: num_classes x H x W
  (conv: false: no conv, the blocks end in the logits, as LR-ASPP's sum of two classifiers).

Each head is a model plus a `HeadDef`: its static inference (output shape, parameters,
mult-adds, labels), its width rule, whether it needs `num_classes`, its drawing title and its
torch factory ("module:function" of (spec, head, in_shape) -> the modules after `features`).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from itertools import pairwise
from typing import Annotated, Any, Literal, get_args

from pydantic import Field

from builder.lang.base import Activation, PositiveInt, StrictModel
from builder.lang.registry import Label, Scaling

Shape = tuple[int, int, int]


class ClassifierSpec(StrictModel):
    """The head: [adaptive avg pool] -> flatten -> hidden linears -> num_classes."""

    hidden: list[PositiveInt] = [4096, 4096]
    """Sizes of the hidden fully connected layers; [] for a single linear layer."""
    dropout: Annotated[float, Field(ge=0, lt=1)] = 0.5
    """Dropout probability around each hidden layer (before the one linear when hidden is []); 0 disables it."""
    dropout_position: Literal["before", "after"] = "after"
    """Dropout after each hidden layer (paper) or before it (torchvision)."""
    activation: Activation = "relu"
    """Activation after each hidden layer; none reproduces code without one."""
    adaptive_pool: Annotated[list[PositiveInt], Field(min_length=2, max_length=2)] | None = None
    """[H, W]: adaptive average pool before flattening, so any input size works."""
    bias: bool = True
    """Whether the linear layers have a bias (airbench's one linear has none)."""
    scale: Annotated[float, Field(gt=0, le=1e6, allow_inf_nan=False)] = 1.0
    """A fixed factor on the logits, after the last linear (airbench: 1/9, about 0.111); 1: none."""


class ClassifierHead(ClassifierSpec):
    """`head: {kind: classifier, ...}`: the same head as the top-level `classifier:` key."""

    kind: Literal["classifier"]


class ConvHead(StrictModel):
    """SqueezeNet's head: dropout -> 1x1 conv to num_classes -> activation -> global avg pool -> flatten."""

    kind: Literal["conv"]
    dropout: Annotated[float, Field(ge=0, lt=1)] = 0.5
    """Dropout probability before the convolution; 0 disables it."""
    activation: Activation = "relu"
    """Activation after the convolution (SqueezeNet: relu)."""


class NoHead(StrictModel):
    """No head: the network ends with its last block (a feature extractor, as timm's num_classes=0)."""

    kind: Literal["none"]


class DenseHead(StrictModel):
    """A per-pixel head (segmentation): a 1x1 conv with bias to num_classes, no pooling or flatten.
    The output is num_classes x H x W of logits, H x W the input's: the blocks end at it, or `resize`
    brings the logits to it."""

    kind: Literal["dense"]
    conv: bool = True
    """The 1x1 conv to num_classes; false: the blocks already end in the class logits (num_classes
    channels, e.g. convs with out_channels: num_classes) and the head only resizes them."""
    resize: Literal["none", "bilinear", "nearest"] = "none"
    """After the conv, resize the logits to the input's size (torchvision's FCN and DeepLab:
    bilinear, align_corners false); none: the last block must already be at the input's size."""


HeadSpec = Annotated[ClassifierHead | ConvHead | NoHead | DenseHead, Field(discriminator="kind")]
AnyHead = ClassifierSpec | ConvHead | NoHead | DenseHead


@dataclass(frozen=True)
class HeadShape:
    """What the head turns the last block's output into. `flatten`: the size of its flatten
    module's output (None: it has none)."""

    out: tuple[int, ...]
    flatten: int | None
    params: int
    mult_adds: int
    labels: tuple[Label, ...]
    problem: str | None = None
    """What is wrong with the head on this input (reported at `head`)."""


@dataclass(frozen=True)
class HeadDef:
    """One head kind, defined once. Every field is required."""

    model: type[StrictModel]
    infer: Callable[[Any, Any, Shape], HeadShape]
    """(spec, head, last block's shape) -> its HeadShape."""
    width: Callable[[Any, Scaling], Any]
    """(head, scaling) -> the head with `width` folded into its sizes."""
    needs_classes: bool
    """Whether the spec must set num_classes (and may not without it)."""
    title: str
    """Its box's title in draw."""
    factory: str
    """"module:function" of (spec, head, in_shape) -> [(module name, nn.Module)] after `features`."""


def _classifier(spec: Any, head: ClassifierSpec, last: Shape) -> HeadShape:
    c, h, w = last
    pool = head.adaptive_pool
    flat = c * pool[0] * pool[1] if pool else c * h * w
    sizes = [flat, *head.hidden, spec.num_classes]
    labels = ((Label(f"adaptive avgpool {pool[0]}x{pool[1]}", "pool"),) if pool else ()) + (
        Label(f"flatten {flat:,}", "reshape"),) + classifier_layers(head, flat, spec.num_classes)
    return HeadShape((spec.num_classes,), flat, sum(a * b + (b if head.bias else 0) for a, b in pairwise(sizes)),
                     sum(a * b for a, b in pairwise(sizes)), labels)


def classifier_layers(head: ClassifierSpec, flat: int, classes: int) -> tuple[Label, ...]:
    """Layer labels in the builder's order: [dropout] linear act [dropout] ..., linear; with no
    hidden layer, [dropout] before the one linear (torchvision's order)."""
    sizes = [flat, *head.hidden]
    drop = [Label(f"dropout {head.dropout:g}", "dropout")] if head.dropout else []
    act = [Label(head.activation, "activation")] if head.activation != "none" else []
    layers: list[Label] = []
    for a, b in pairwise(sizes):
        before, after = (drop, []) if head.dropout_position == "before" else ([], drop)
        layers += [*before, Label(f"linear {a:,} \u2192 {b:,}", "linear"), *act, *after]
    lone_drop = drop if not head.hidden else []
    scale = [Label(f"scale {head.scale:g}", "activation")] if head.scale != 1 else []
    return (*layers, *lone_drop, Label(f"linear {sizes[-1]:,} \u2192 {classes:,}", "linear"), *scale)


def _conv(spec: Any, head: ConvHead, last: Shape) -> HeadShape:
    c, h, w = last
    k = spec.num_classes
    drop = (Label(f"dropout {head.dropout:g}", "dropout"),) if head.dropout else ()
    act = (Label(head.activation, "activation"),) if head.activation != "none" else ()
    labels = (*drop, Label(f"conv {k} k1", "conv"), *act, Label("adaptive avgpool 1x1", "pool"),
              Label(f"flatten {k:,}", "reshape"))
    return HeadShape((k,), k, c * k + k, c * k * h * w, labels)


def _none(spec: Any, head: NoHead, last: Shape) -> HeadShape:
    return HeadShape(last, None, 0, 0, ())


def _dense(spec: Any, head: DenseHead, last: Shape) -> HeadShape:
    c, h, w = last
    k, size = spec.num_classes, (spec.input.height, spec.input.width)
    labels: tuple[Label, ...] = (Label(f"conv {k} k1", "conv"),) if head.conv else ()
    problem = None
    if head.resize != "none":
        labels += (Label(f"upsample to the input {head.resize}", "pool"),)
    elif (h, w) != size:
        problem = (f"a dense head predicts every input pixel, but the last block outputs {c}x{h}x{w}, not "
                   f"{size[0]}x{size[1]}; end the blocks at the input's size (an upsample, or a skip with "
                   "match: resize), or give the head resize: bilinear")
    if not head.conv:
        if c != k:
            problem = (f"a dense head with conv: false outputs the last block's channels as the classes, but "
                       f"the last block outputs {c}x{h}x{w}, not {k} channels (num_classes); end the blocks "
                       "in out_channels: num_classes, or give the head its conv")
        return HeadShape((k, *size), None, 0, 0, labels, problem)
    return HeadShape((k, *size), None, c * k + k, c * k * h * w, labels, problem)


def _scale_hidden(head: ClassifierSpec, scaling: Scaling) -> ClassifierSpec:
    return head.model_copy(update={"hidden": [scaling.channels(h) for h in head.hidden]})


def _same(head: Any, scaling: Scaling) -> Any:
    return head


HEADS: dict[str, HeadDef] = {
    "classifier": HeadDef(ClassifierSpec, _classifier, _scale_hidden, True, "classifier",
                          "builder.model.heads:classifier"),
    "conv": HeadDef(ConvHead, _conv, _same, True, "head", "builder.model.heads:conv"),
    "none": HeadDef(NoHead, _none, _same, False, "output", "builder.model.heads:none"),
    "dense": HeadDef(DenseHead, _dense, _same, True, "dense head", "builder.model.heads:dense"),
}
if set(HEADS) != {get_args(m.model_fields["kind"].annotation)[0] for m in get_args(get_args(HeadSpec)[0])}:
    raise ImportError("builder.lang.heads: HEADS and HeadSpec must name the same heads")


def head_def(head: Any) -> HeadDef:
    """The HeadDef of a head spec (the kind-less ClassifierSpec is the classifier)."""
    return HEADS[getattr(head, "kind", "classifier")]
