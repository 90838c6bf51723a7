"""The walk of static inference: from the input shape through every block, into every child list.

Each kind's `infer` (builder.lang.kinds) gets the `Walk`, the block, where it is (`At`) and its
input shape; a composite walks its child lists with `Walk.child_list` / `Walk.child_lists`, which name the
children by the registry's one rule (`child_path`). No torch.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from builder.lang.axes import AnyAxes, axes_text, pair
from builder.lang.base import Path, WindowPoolSpec
from builder.lang.errors import Problem, format_path
from builder.lang.registry import ChildList, Label, child_lists, child_path, default_name, kind_def

Shape = tuple[int, int, int]  # (channels, height, width) of one sample


@dataclass(frozen=True)
class BlockShape:
    """What block `name` (features.<name>) turns its input into."""

    name: str
    in_shape: Shape
    out_shape: Shape
    params: int
    layers: tuple[str, ...]
    mult_adds: int = 0
    """Multiply-adds of one sample through the block's convolutions."""
    kind: str = "conv"
    depth: int = 0
    """0 for a block of the spec's top-level list, 1 for a block inside it, ..."""


# (output shape or None when it collapsed, params, mult-adds, layer labels)
Inferred = tuple[Shape | None, int, int, tuple[Label, ...]]


@dataclass(frozen=True)
class ListResult:
    """A walked child list: the output of its last block (its input when empty), params, mult-adds."""

    out: Shape
    params: int
    mult_adds: int


@dataclass(frozen=True)
class At:
    """Where a block is: its module path, its data path in the document and its depth."""

    name: str
    where: Path
    depth: int


@dataclass
class Walk:
    """What one `infer` call collects while it walks (local to the call, never shared)."""

    spec: Any
    shapes: list[BlockShape] = field(default_factory=list)
    problems: list[Problem] = field(default_factory=list)

    def problem(self, where: Path, message: str) -> None:
        self.problems.append(Problem(where, message))

    def child_list(self, block_at: At, child: ChildList, shape: Shape) -> ListResult | None:
        """Walk one child list of the block at `block_at` from `shape` (None: a block collapsed)."""
        return walk_list(self, child.blocks, block_at, child.prefix, (*block_at.where, *child.where), shape)

    def child_lists(self, block: Any, at: At, shape: Shape) -> list[ListResult] | None:
        """Walk every child list of `block`, each from `shape` (None: a block collapsed)."""
        out = []
        for child in child_lists(block):
            done = self.child_list(at, child, shape)
            if done is None:
                return None
            out.append(done)
        return out

    def collapse(self, at: At, shape: Shape, h: int, w: int) -> Inferred:
        """Record that the block's output is empty (h or w <= 0) and stop."""
        self.problem(at.where, f"{at.name}: spatial size collapses to {h}x{w} (its input is {fmt(shape)})")
        return None, 0, 0, ()


InferFn = Callable[[Walk, Any, At, Shape], Inferred]


def walk_block(walk: Walk, block: Any, at: At, shape: Shape) -> BlockShape | None:
    """Infer one block (any kind), record it and return the record (None: its output collapsed)."""
    index = len(walk.shapes)
    walk.shapes.append(BlockShape(at.name, shape, shape, 0, (), 0, block.kind, at.depth))  # placeholder
    out, params, macs, layers = kind_def(block).infer(walk, block, at, shape)
    if out is None:
        del walk.shapes[index:]
        return None
    walk.shapes[index] = BlockShape(at.name, shape, out, params, layers, macs, block.kind, at.depth)
    expect = getattr(block, "expect", None)
    if expect is not None and tuple(expect) != out:
        walk.problem((*at.where, "expect"), f"{at.name} outputs {fmt(out)}, not {fmt(expect)}")
    return walk.shapes[index]


def walk_list(walk: Walk, blocks: list[Any], parent: At | None, prefix: str, where: Path,
              shape: Shape) -> ListResult | None:
    """Infer a list of blocks in order (children of `parent`, named with `prefix`): the output of
    the last and the list's parameters and mult-adds, which a composite adds up from its lists."""
    current, seen = shape, {default_name(b, i): i for i, b in reversed(list(enumerate(blocks)))}
    params = macs = 0
    for i, block in enumerate(blocks):
        name, here = default_name(block, i), (*where, i)
        if seen[name] != i:  # two modules of one name: torch would silently keep only the last
            walk.problem((*here, "name"), f"'{name}' is already the name of {format_path((*where, seen[name]))}")
        at = At(name, here, 0) if parent is None else At(child_path(parent.name, prefix, name), here, parent.depth + 1)
        done = walk_block(walk, block, at, current)
        if done is None:
            return None
        current, params, macs = done.out_shape, params + done.params, macs + done.mult_adds
    return ListResult(current, params, macs)


def window_out(size: int, kernel: int, stride: int, padding: int, ceil_mode: bool = False, dilation: int = 1) -> int:
    """Output length of a conv or pool window along one axis, as torch computes it: floor (or
    ceil) of (size + 2 padding - dilation (kernel - 1) - 1) / stride, + 1."""
    span = size + 2 * padding - dilation * (kernel - 1) - 1
    if not ceil_mode:
        return span // stride + 1
    out = -(-span // stride) + 1
    # torch: the last window must start inside the input or its left padding
    return out - 1 if (out - 1) * stride >= size + padding else out


def windows_out(size: tuple[int, int], kernel: AnyAxes, stride: AnyAxes, padding: AnyAxes,
                ceil_mode: bool = False, dilation: AnyAxes = 1) -> tuple[int, int]:
    """(h, w) of a window's output, each axis with its own kernel, stride, padding and dilation."""
    h, w = (window_out(s, k, st, p, ceil_mode, d) for s, k, st, p, d in
            zip(size, pair(kernel), pair(stride), pair(padding), pair(dilation)))
    return h, w


def dilation_empties(size: tuple[int, int], kernel: AnyAxes, stride: AnyAxes, padding: AnyAxes,
                     dilation: AnyAxes, ceil_mode: bool = False) -> bool:
    """Whether the window's output is empty only because of its dilation."""
    if pair(dilation) == (1, 1):
        return False
    return min(windows_out(size, kernel, stride, padding, ceil_mode)) > 0


def dilation_problem(walk: Walk, at: At, shape: Shape, kernel: AnyAxes, padding: AnyAxes,
                     dilation: AnyAxes) -> Inferred:
    """Record that the dilation makes the output empty, located at `dilation`, and stop."""
    spans = "x".join(str(d * (k - 1) + 1) for k, d in zip(pair(kernel), pair(dilation)))
    padded = "x".join(str(s + 2 * p) for s, p in zip(shape[1:], pair(padding)))
    walk.problem((*at.where, "dilation"), f"{at.name}: with dilation {axes_text(dilation)} the kernel spans {spans}, "
                 f"more than the padded input {padded}: the output is empty (its input is {fmt(shape)})")
    return None, 0, 0, ()


def pooled(size: tuple[int, int], pool: WindowPoolSpec) -> tuple[int, int]:
    """(h, w) after a pooling window."""
    return windows_out(size, pool.kernel_size, pool.stride, pool.padding, pool.ceil_mode, pool.dilation)


def window_text(kernel: AnyAxes, stride: AnyAxes, padding: AnyAxes, dilation: AnyAxes) -> str:
    """'k3 s1 p1', 'k1x7 s1 p0x3', with ' d2' when dilated: a window's part of a layer label."""
    text = f"k{axes_text(kernel)} s{axes_text(stride)} p{axes_text(padding)}"
    return text + (f" d{axes_text(dilation)}" if pair(dilation) != (1, 1) else "")


def pool_label(pool: WindowPoolSpec) -> Label:
    text = window_text(pool.kernel_size, pool.stride, pool.padding, pool.dilation)
    return Label(f"{pool.kind}pool {text}" + (" ceil" * pool.ceil_mode), "pool")


def fmt(shape: tuple[int, ...] | list[int]) -> str:
    return "x".join(str(s) for s in shape)
