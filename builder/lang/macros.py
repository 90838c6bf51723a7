"""The two macro blocks, `repeat` and `use`, and templates: written in a spec, expanded away by
builder.lang.expand before anything else sees the spec. Not kinds: nothing infers or builds them. No torch."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel

from builder.lang.base import BlockName, Named, PositiveInt, StrictModel
from builder.lang.registry import Block


class RepeatBlock(Named):
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


class UseBlock(Named):
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


MACROS: dict[str, type[BaseModel]] = {"repeat": RepeatBlock, "use": UseBlock}
