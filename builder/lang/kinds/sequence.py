"""sequence: blocks applied one after another, under one name (a stage)."""

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
from builder.lang.walk import At, Inferred, Shape, Walk


class SequenceBlock(Named):
    """Blocks applied one after another, under one name (a stage)."""

    kind: Literal["sequence"]
    blocks: Annotated[list[Block], Field(min_length=1)]
    """The blocks, in order."""


def _infer(walk: Walk, block: SequenceBlock, at: At, shape: Shape) -> Inferred:
    done = walk.child_lists(block, at, shape)
    if done is None:
        return None, 0, 0, ()
    return done[0].out, done[0].params, done[0].mult_adds, (Label(f"sequence of {len(block.blocks)}", "reshape"),)


def _frame(spec: Any, block: SequenceBlock, shape: Any) -> Frame:
    return Frame("sequence")


KIND = KindDef(
    tags=("sequence",), model=SequenceBlock, infer=_infer, children=(ChildField("blocks", "", many=False),),
    stride=first_list_stride, width=scale_children, channel_multiple=no_multiple, fields=plain_fields,
    frame=_frame, factory="builder.model.factories:sequence",
)
