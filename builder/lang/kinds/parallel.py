"""parallel: branches on the same input (or each on its own chunk of the channels), merged by concat or add."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import Field

from builder.lang.base import Named
from builder.lang.registry import (
    Block,
    ChildField,
    Frame,
    KindDef,
    Label,
    child_lists,
    first_list_stride,
    plain_fields,
    scale_children,
)
from builder.lang.walk import At, Inferred, Shape, Walk, fmt


class ParallelBlock(Named):
    """Branches applied to the same input, merged: Inception, DenseNet's dense layer, SqueezeNet's fire."""

    kind: Literal["parallel"]
    branches: Annotated[list[list[Block]], Field(min_length=1)]
    """Each branch is a list of blocks; an empty list is the identity."""
    merge: Literal["concat", "add"] = "concat"
    """concat: along channels (equal spatial sizes); add: elementwise (equal shapes)."""
    input: Literal["same", "split"] = "same"
    """same: every branch gets the block's input; split: the input's channels in as many equal chunks
    as there are branches, branch k getting chunk k (torch.chunk's order; ShuffleNetV2's unit)."""


def branch_inputs(walk: Walk, block: ParallelBlock, at: At, shape: Shape) -> list[Shape] | None:
    """Each branch's input shape: the block's, or its chunk of the channels (None: they do not split)."""
    n = len(block.branches)
    if block.input == "same":
        return [shape] * n
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


def _frame(spec: Any, block: ParallelBlock, shape: Any) -> Frame:
    return Frame("parallel", block.merge + (" of a split" if block.input == "split" else ""))


def _multiple(block: ParallelBlock) -> int:
    """A split needs input channels that the branches divide (so width keeps them divisible)."""
    return len(block.branches) if block.input == "split" else 1


KIND = KindDef(
    tags=("parallel",), model=ParallelBlock, infer=_infer, children=(ChildField("branches", "branch{k}.", many=True),),
    stride=first_list_stride, width=scale_children, channel_multiple=_multiple, fields=plain_fields,
    frame=_frame, factory="builder.model.factories:parallel",
)
