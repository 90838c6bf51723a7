"""skip: out = merge(x, body(x)), the block's input joined with its body's output.

A U-Net level is a skip whose body goes down and back up (pool -> the inner level -> up-conv):
the concat puts the skip connection (x) first, then the upsampled path, as `torch.cat([skip, x])`.
Unequal spatial sizes are an error unless `match` says how to fit them; the error names the
network input sizes that would fit, found by re-running static inference on nearby sizes.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Annotated, Any, Literal

from pydantic import Field

from builder.lang.base import Named
from builder.lang.registry import (
    Block,
    ChildField,
    Frame,
    KindDef,
    Label,
    no_multiple,
    plain_fields,
    scale_children,
    unit_stride,
)
from builder.lang.walk import At, Inferred, Shape, Walk, fmt, walk_list

SEARCH = 256  # input sizes tried on each side of the given one for the nearest that fit


class SkipBlock(Named):
    """out = merge(x, body(x)): the block's input (the skip connection) joined with its body's output."""

    kind: Literal["skip"]
    body: Annotated[list[Block], Field(min_length=1)]
    """The blocks of the path beside the skip connection (a U-Net level: pool, inner level, up-conv)."""
    merge: Literal["concat", "add", "none"] = "concat"
    """concat: along channels, the input first; add: elementwise (equal channels); none: the body's
    output only, brought to the input's size by `match` (FCN's final upsampling, with match: resize)."""
    match: Literal["exact", "resize", "pad", "crop"] = "exact"
    """When the spatial sizes differ: exact: an error (naming the input sizes that fit); resize: the
    body's output bilinearly resized to the input's size (align_corners false, as the reference U-Net's
    TF.resize); pad: the smaller zero-padded to the larger, centred (the odd pixel at the bottom and
    right); crop: the larger cropped to the smaller, centred (the odd pixel off the bottom and right)."""


def matched_size(match: str, skip: tuple[int, int], body: tuple[int, int]) -> tuple[int, int] | None:
    """The merged (H, W): the skip's (resize), the larger (pad) or smaller (crop) per axis; None
    when `exact` and they differ."""
    if match == "resize":
        return skip
    if match == "pad":
        return (max(skip[0], body[0]), max(skip[1], body[1]))
    if match == "crop":
        return (min(skip[0], body[0]), min(skip[1], body[1]))
    return skip if skip == body else None


@dataclass
class _Probe(Walk):
    """A walk at another input size that only notes which axes a skip could not match."""

    mismatched: set[int] = field(default_factory=set)


def _infer(walk: Walk, block: SkipBlock, at: At, shape: Shape) -> Inferred:
    done = walk.child_lists(block, at, shape)
    if done is None:
        return None, 0, 0, ()
    body, params, macs = done[0].out, done[0].params, done[0].mult_adds
    size = matched_size(block.match, (shape[1], shape[2]), (body[1], body[2]))
    if size is None:
        if not isinstance(walk, _Probe):  # stop: every shape after it would follow from a wrong size
            walk.problem(at.where, _mismatch(walk, block, at, shape, body))
            return None, 0, 0, ()
        walk.mismatched.update(a for a in (0, 1) if shape[1 + a] != body[1 + a])
        size = (shape[1], shape[2])
    if block.merge == "add" and shape[0] != body[0]:
        walk.problem(at.where, f"{at.name}: skip add of {fmt(shape)} and {fmt(body)} (channels differ)")
    channels = shape[0] + body[0] if block.merge == "concat" else body[0]
    text = f"{block.merge} with the input" if block.merge != "none" else "body only"
    match = f", {block.match} to {size[0]}x{size[1]}" if block.match != "exact" else ""
    return (channels, *size), params, macs, (Label(f"skip: {text}{match}", "reshape"),)


def _mismatch(walk: Walk, block: SkipBlock, at: At, shape: Shape, body: Shape) -> str:
    """One line: the two shapes, the network input, the nearest input sizes that fit."""
    spec = walk.spec
    h, w = spec.input.height, spec.input.width
    what = {"concat": "concat", "add": "add", "none": "match"}[block.merge]
    head = f"{at.name}: {what} of {fmt(shape)} (the skip) and {fmt(body)} (its body) at input {h}x{w}"
    if h == w:
        fits = _nearest(spec, (0, 1), h)
        return f"{head}; {_listed(fits, 'input sizes')} (or set match: resize, pad or crop)"
    parts = [_listed(_nearest(spec, (a,), (h, w)[a]), ("heights", "widths")[a])
             for a in (0, 1) if shape[1 + a] != body[1 + a]]
    return f"{head}; {'; '.join(parts)} (or set match: resize, pad or crop)"


def _listed(fits: list[int], what: str) -> str:
    if not fits:
        return f"no {what[:-1]} within {SEARCH} of it fits"
    return f"the nearest valid {what} {'are' if len(fits) > 1 else 'is'} {' and '.join(map(str, fits))}"


def _nearest(spec: Any, axes: tuple[int, ...], size: int) -> list[int]:
    """The nearest input sizes below and above `size` (along `axes` together) at which no skip mismatches."""
    below = (s for s in range(size - 1, max(size - SEARCH, 0), -1) if _fits(spec, axes, s))
    above = (s for s in range(size + 1, size + SEARCH) if _fits(spec, axes, s))
    return [s for s in (next(below, None), next(above, None)) if s is not None]


def padded_size(spec: Any, height: int, width: int) -> tuple[int, int] | None:
    """The smallest input (H, W) at or above (height, width) at which every skip of `spec` fits
    along each axis (None: none within SEARCH): what an image is padded to before a forward pass."""
    found = [next((s for s in range(size, size + SEARCH) if _fits(spec, (axis,), s)), None)
             for axis, size in ((0, height), (1, width))]
    return (found[0], found[1]) if found[0] is not None and found[1] is not None else None


def _fits(spec: Any, axes: tuple[int, ...], size: int) -> bool:
    sizes = {"height": size} if axes == (0,) else {"width": size} if axes == (1,) else {"height": size, "width": size}
    probe = _Probe(spec.model_copy(update={"input": spec.input.model_copy(update=sizes)}))
    start = (spec.input.channels, sizes.get("height", spec.input.height), sizes.get("width", spec.input.width))
    done = walk_list(probe, probe.spec.blocks, None, "", ("blocks",), start)
    return done is not None and not probe.mismatched.intersection(axes)


def _frame(spec: Any, block: SkipBlock, shape: Any) -> Frame:
    match = f", {block.match}" if block.match != "exact" else ""
    return Frame("residual", f"{block.merge}{match}" if block.merge != "none" else f"{block.match} to the input",
                 "identity" if block.merge != "none" else "")


KIND = KindDef(
    tags=("skip",), model=SkipBlock, infer=_infer, children=(ChildField("body", "body.", many=False),),
    stride=unit_stride, width=scale_children, channel_multiple=no_multiple, fields=plain_fields,
    frame=_frame, factory="builder.model.factories:skip",
)
