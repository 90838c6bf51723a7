"""parallel: branches on the same input (or each on its own chunk of the channels), merged by concat, add or mul."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import Field, model_validator

from builder.lang.base import Named, PositiveInt, rule_error
from builder.lang.registry import (
    Block,
    ChildField,
    Frame,
    KindDef,
    Label,
    Scaling,
    child_lists,
    first_list_stride,
    plain_fields,
    round_channels,
    scale_children,
)
from builder.lang.walk import At, Inferred, Shape, Walk, fmt


class ParallelBlock(Named):
    """Branches applied to the same input, merged: Inception, DenseNet's dense layer, SqueezeNet's fire."""

    kind: Literal["parallel"]
    branches: Annotated[list[list[Block]], Field(min_length=1)]
    """Each branch is a list of blocks; an empty list is the identity."""
    merge: Literal["concat", "add", "mul"] = "concat"
    """concat: along channels (equal spatial sizes); add: elementwise (equal shapes); mul: elementwise
    product (equal channels; a branch whose output is 1x1 is broadcast over H x W: LR-ASPP's scale)."""
    input: Literal["same", "split"] = "same"
    """same: every branch gets the block's input; split: the input's channels in as many equal chunks
    as there are branches, branch k getting chunk k (torch.chunk's order; ShuffleNetV2's unit)."""
    split_channels: list[PositiveInt] | None = None
    """With input: split, the channels of each branch's chunk, in order (torch.split's sizes; they
    must add up to the input's channels); default equal chunks. width scales them."""

    @model_validator(mode="after")
    def _one_size_per_branch(self) -> ParallelBlock:
        if self.split_channels is None:
            return self
        if self.input != "split":
            raise rule_error("split_channels", "applies to input: split only (this block's input is same)")
        if len(self.split_channels) != len(self.branches):
            raise rule_error("split_channels", f"one size per branch ({len(self.branches)} branches), got "
                             f"{len(self.split_channels)}")
        return self


def branch_inputs(walk: Walk, block: ParallelBlock, at: At, shape: Shape) -> list[Shape] | None:
    """Each branch's input shape: the block's, or its chunk of the channels (None: they do not split)."""
    n = len(block.branches)
    if block.input == "same":
        return [shape] * n
    if block.split_channels is not None:
        if sum(block.split_channels) != shape[0]:
            sizes = " + ".join(map(str, block.split_channels))
            walk.problem((*at.where, "split_channels"), f"split of {shape[0]} channels into {sizes} = "
                         f"{sum(block.split_channels)}: the sizes must add up to the input's channels "
                         f"(its input is {fmt(shape)})")
            return None
        return [(c, shape[1], shape[2]) for c in block.split_channels]
    if shape[0] % n:
        walk.problem((*at.where, "input"), f"split of {shape[0]} channels into {n}: the channels must be a "
                     f"multiple of the branches ({n}) (its input is {fmt(shape)})")
        return None
    return [(shape[0] // n, shape[1], shape[2])] * n


def _infer(walk: Walk, block: ParallelBlock, at: At, shape: Shape) -> Inferred:
    inputs = branch_inputs(walk, block, at, shape)
    if inputs is None:
        return None, 0, 0, ()
    done = []
    for child, branch_input in zip(child_lists(block), inputs):
        result = walk.child_list(at, child, branch_input)
        if result is None:
            return None, 0, 0, ()
        done.append(result)
    outs = [d.out for d in done]
    params, macs = sum(d.params for d in done), sum(d.mult_adds for d in done)
    split = (Label(f"split in {len(outs)}", "reshape"),) if block.input == "split" else ()
    return _merge(walk, block, at, outs), params, macs, (*split, Label(f"{block.merge} of {len(outs)} branches",
                                                                       "reshape"))


def _merge(walk: Walk, block: ParallelBlock, at: At, outs: list[Shape]) -> Shape:
    first = outs[0]
    if block.merge == "mul":
        return _product(walk, at, outs)
    if block.merge == "add":
        bad = next((o for o in outs if o != first), None)
        if bad is not None:
            walk.problem(at.where, f"parallel add of {fmt(first)} and {fmt(bad)}")
        return first
    bad = next((o for o in outs if o[1:] != first[1:]), None)
    if bad is not None:
        walk.problem(at.where, f"concat of branches with spatial sizes {first[1]}x{first[2]} and {bad[1]}x{bad[2]} "
                     f"(shapes {fmt(first)} and {fmt(bad)})")
    return (sum(o[0] for o in outs), first[1], first[2])


def _product(walk: Walk, at: At, outs: list[Shape]) -> Shape:
    """The shape of an elementwise product: equal channels, each spatial size the largest or 1x1 (broadcast)."""
    full = max(outs, key=lambda o: o[1] * o[2])
    bad = next((o for o in outs if o[0] != full[0] or o[1:] not in (full[1:], (1, 1))), None)
    if bad is not None:
        walk.problem(at.where, f"parallel mul of {fmt(full)} and {fmt(bad)} (equal channels, and each spatial "
                     f"size {full[1]}x{full[2]} or 1x1, broadcast)")
    return full


def _frame(spec: Any, block: ParallelBlock, shape: Any) -> Frame:
    return Frame("parallel", block.merge + (" of a split" if block.input == "split" else ""))


def _multiple(block: ParallelBlock) -> int:
    """An equal split needs input channels that the branches divide (so width keeps them divisible)."""
    return len(block.branches) if block.input == "split" and block.split_channels is None else 1


def _width(block: ParallelBlock, scaling: Scaling) -> ParallelBlock:
    """The branches scaled; split sizes rounded as the blocks' channels are (to the spec's divisor)."""
    scaled = scale_children(block, scaling)
    if block.split_channels is None:
        return scaled
    sizes = [round_channels(c, scaling.width, scaling.divisor) for c in block.split_channels]
    return scaled.model_copy(update={"split_channels": sizes})


KIND = KindDef(
    tags=("parallel",), model=ParallelBlock, infer=_infer, children=(ChildField("branches", "branch{k}.", many=True),),
    stride=first_list_stride, width=_width, channel_multiple=_multiple, fields=plain_fields,
    frame=_frame, factory="builder.model.factories:parallel",
)
