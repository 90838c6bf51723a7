"""parallel: branches on the same input, merged by concat (along channels) or add."""

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
    first_list_stride,
    no_multiple,
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


def _infer(walk: Walk, block: ParallelBlock, at: At, shape: Shape) -> Inferred:
    done = walk.child_lists(block, at, shape)
    if done is None:
        return None, 0, 0, ()
    outs = [d.out for d in done]
    params, macs = sum(d.params for d in done), sum(d.mult_adds for d in done)
    return _merge(walk, block, at, outs), params, macs, (Label(f"{block.merge} of {len(outs)} branches", "reshape"),)


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
    return Frame("parallel", block.merge)


KIND = KindDef(
    tags=("parallel",), model=ParallelBlock, infer=_infer, children=(ChildField("branches", "branch{k}.", many=True),),
    stride=first_list_stride, width=scale_children, channel_multiple=no_multiple, fields=plain_fields,
    frame=_frame, factory="builder.model.factories:parallel",
)
