"""Static shape and parameter inference: the exact nn.Conv2d / pooling arithmetic, no torch.

`infer(spec)` walks the blocks from the input shape, into every composite block, and returns
every block's output shape, parameter count and multiply-adds, plus the problems found on the
way (groups that do not divide the incoming channels, a spatial size that collapses, a residual
add or a concat of shapes that do not fit, an `expect` that does not hold).

Block names are module paths under `features` ("block1", "stage2.block1.body.conv1"): the
builder names its modules by the same rule (`module_path`), and the summary and the tests
compare the two.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from itertools import pairwise
from typing import Any

from builder.lang.errors import Path, Problem, format_path
from builder.lang.spec import (
    ActivationBlock,
    AdaptiveAvgPoolBlock,
    BatchNormBlock,
    BatchNormSpec,
    BlockSpec,
    DropoutBlock,
    LRNSpec,
    ParallelBlock,
    PoolBlock,
    ResidualBlock,
    SequenceBlock,
    Spec,
    WindowPoolSpec,
    child_lists,
    conv_block_layers,
    default_name,
)

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


@dataclass(frozen=True)
class ShapeReport:
    """The whole network's static shapes. `flatten` is None when inference stopped early.

    `blocks` are the top-level blocks; `all_blocks` every block at every depth, in forward order
    (a composite before its children).
    """

    blocks: list[BlockShape]
    flatten: int | None
    classifier_params: int
    problems: list[Problem] = field(default_factory=list)
    classifier_mult_adds: int = 0
    all_blocks: list[BlockShape] = field(default_factory=list)

    @property
    def total_params(self) -> int:
        return sum(b.params for b in self.blocks) + self.classifier_params

    @property
    def mult_adds(self) -> int:
        """Multiply-adds of one sample through every convolution and linear (torchvision's "MACs")."""
        return sum(b.mult_adds for b in self.blocks) + self.classifier_mult_adds


def window_out(size: int, kernel: int, stride: int, padding: int, ceil_mode: bool = False) -> int:
    """Output length of a conv or pool window along one axis (dilation 1), as torch computes it."""
    span = size + 2 * padding - kernel
    if not ceil_mode:
        return span // stride + 1
    out = -(-span // stride) + 1
    # torch: the last window must start inside the input or its left padding
    return out - 1 if (out - 1) * stride >= size + padding else out


def conv_groups(block: BlockSpec, in_channels: int) -> int:
    """The block's groups, with depthwise meaning one group per input channel."""
    return in_channels if block.groups == "depthwise" else block.groups


def conv_params(in_ch: int, block: BlockSpec) -> int:
    weight = block.out_channels * (in_ch // conv_groups(block, in_ch)) * block.kernel_size**2
    return weight + (block.out_channels if block.bias else 0)


def describe_layers(spec: Spec, block: BlockSpec) -> tuple[str, ...]:
    """Short human labels of a conv block's layers, in forward order."""
    return tuple(_label(role, layer) for role, layer in conv_block_layers(spec, block))


def _label(role: str, layer: Any) -> str:
    if role == "conv":
        conv = f"conv {layer.out_channels} k{layer.kernel_size} s{layer.stride} p{layer.padding}"
        return conv + ("" if layer.groups == 1 else " dw" if layer.groups == "depthwise" else f" g{layer.groups}")
    if isinstance(layer, BatchNormSpec):
        return "batchnorm"
    if isinstance(layer, LRNSpec):
        return f"lrn size {layer.size}"
    if isinstance(layer, WindowPoolSpec):
        return f"{layer.kind}pool k{layer.kernel_size} s{layer.stride} p{layer.padding}" + (" ceil" * layer.ceil_mode)
    return str(layer)


# --- The walk ------------------------------------------------------------------------------


@dataclass
class _Walk:
    """What one `infer` call collects while it walks (local to the call, never shared)."""

    spec: Spec
    shapes: list[BlockShape] = field(default_factory=list)
    problems: list[Problem] = field(default_factory=list)

    def problem(self, where: Path, message: str) -> None:
        self.problems.append(Problem(where, message))


@dataclass(frozen=True)
class _At:
    """Where a block is: its module path, its data path in the document and its depth."""

    name: str
    where: Path
    depth: int

    def child(self, name: str, where: Path) -> _At:
        return _At(f"{self.name}.{name}", where, self.depth + 1)


# (walk, block, where, input shape) -> (output shape or None, params, mult-adds, layer labels)
_Result = tuple[Shape | None, int, int, tuple[str, ...]]


def _walk_block(walk: _Walk, block: Any, at: _At, shape: Shape) -> BlockShape | None:
    """Infer one block (any kind), record it and return the record (None: its output collapsed)."""
    index = len(walk.shapes)
    walk.shapes.append(BlockShape(at.name, shape, shape, 0, (), 0, block.kind, at.depth))  # placeholder
    out, params, macs, layers = KINDS[type(block)](walk, block, at, shape)
    if out is None:
        del walk.shapes[index:]
        return None
    walk.shapes[index] = BlockShape(at.name, shape, out, params, layers, macs, block.kind, at.depth)
    expect = getattr(block, "expect", None)
    if expect is not None and tuple(expect) != out:
        walk.problem((*at.where, "expect"), f"{at.name} outputs {_fmt(out)}, not {_fmt(expect)}")
    return walk.shapes[index]


def _walk_list(walk: _Walk, blocks: list[Any], parent: _At | None, where: Path, shape: Shape) -> _Result:
    """Infer a list of blocks in order: the output of the last (None when one collapses) and the
    list's parameters and mult-adds, which a composite block adds up from its lists."""
    current, seen = shape, {default_name(b, i): i for i, b in reversed(list(enumerate(blocks)))}
    params = macs = 0
    for i, block in enumerate(blocks):
        name, here = default_name(block, i), (*where, i)
        if seen[name] != i:  # two modules of one name: torch would silently keep only the last
            walk.problem((*here, "name"), f"'{name}' is already the name of {format_path((*where, seen[name]))}")
        at = _At(name, here, 0) if parent is None else parent.child(name, here)
        done = _walk_block(walk, block, at, current)
        if done is None:
            return None, 0, 0, ()
        current, params, macs = done.out_shape, params + done.params, macs + done.mult_adds
    return current, params, macs, ()


def _conv(walk: _Walk, block: BlockSpec, at: _At, shape: Shape) -> _Result:
    c, h, w = shape
    groups = conv_groups(block, c)
    if c % groups:
        walk.problem((*at.where, "groups"), f"in_channels ({c}) must be divisible by groups ({groups})")
    if block.out_channels % groups:
        walk.problem((*at.where, "groups"), f"out_channels ({block.out_channels}) must be divisible by "
                     f"groups ({groups}: depthwise, one per input channel)")
    h2, w2 = (window_out(s, block.kernel_size, block.stride, block.padding) for s in (h, w))
    macs = max(h2, 0) * max(w2, 0) * block.out_channels * (c // groups) * block.kernel_size**2
    for role, layer in conv_block_layers(walk.spec, block):
        if role == "pool" and h2 > 0 and w2 > 0:
            h2, w2 = _pooled((h2, w2), layer)
    if h2 <= 0 or w2 <= 0:
        return _collapse(walk, at, shape, h2, w2)
    params = conv_params(c, block) + (2 * block.out_channels if _has_batchnorm(walk.spec, block) else 0)
    return (block.out_channels, h2, w2), params, macs, describe_layers(walk.spec, block)


def _has_batchnorm(spec: Spec, block: BlockSpec) -> bool:
    return any(isinstance(layer, BatchNormSpec) for _, layer in conv_block_layers(spec, block))


def _pooled(size: tuple[int, int], pool: WindowPoolSpec) -> tuple[int, int]:
    h, w = (window_out(s, pool.kernel_size, pool.stride, pool.padding, pool.ceil_mode) for s in size)
    return h, w


def _collapse(walk: _Walk, at: _At, shape: Shape, h: int, w: int) -> _Result:
    walk.problem(at.where, f"{at.name}: spatial size collapses to {h}x{w} (its input is {_fmt(shape)})")
    return None, 0, 0, ()


def _pool(walk: _Walk, block: PoolBlock, at: _At, shape: Shape) -> _Result:
    window = block.window()
    h, w = _pooled(shape[1:], window)
    if h <= 0 or w <= 0:
        return _collapse(walk, at, shape, h, w)
    return (shape[0], h, w), 0, 0, (_label("pool", window),)


def _adaptive(walk: _Walk, block: AdaptiveAvgPoolBlock, at: _At, shape: Shape) -> _Result:
    oh, ow = block.output_size
    return (shape[0], oh, ow), 0, 0, (f"adaptive avgpool {oh}x{ow}",)


def _batchnorm(walk: _Walk, block: BatchNormBlock, at: _At, shape: Shape) -> _Result:
    return shape, 2 * shape[0], 0, ("batchnorm",)


def _activation(walk: _Walk, block: ActivationBlock, at: _At, shape: Shape) -> _Result:
    return shape, 0, 0, (block.fn,)


def _dropout(walk: _Walk, block: DropoutBlock, at: _At, shape: Shape) -> _Result:
    return shape, 0, 0, (f"dropout {block.p:g}",)


def _sequence(walk: _Walk, block: SequenceBlock, at: _At, shape: Shape) -> _Result:
    out, params, macs, _ = _walk_list(walk, block.blocks, at, (*at.where, "blocks"), shape)
    return out, params, macs, (f"sequence of {len(block.blocks)}",)


def _residual(walk: _Walk, block: ResidualBlock, at: _At, shape: Shape) -> _Result:
    body_at = _At(f"{at.name}.body", at.where, at.depth)  # body blocks are named <name>.body.<child>
    out, params, macs, _ = _walk_list(walk, block.body, body_at, (*at.where, "body"), shape)
    if out is None:
        return None, 0, 0, ()
    kind = shortcut_kind(block, shape, out)
    if kind == "projection":
        stride = body_stride(walk.spec, block.body)
        projected = (out[0], *(window_out(s, 1, stride, 0) for s in shape[1:]))
        params += shape[0] * out[0] + (2 * out[0] if block.shortcut_norm == "batchnorm" else 0)
        macs += shape[0] * out[0] * projected[1] * projected[2]
        if projected != out:
            walk.problem(at.where, f"residual add of {_fmt(out)} and {_fmt(projected)} (the projected input)")
    elif kind == "identity" and out != shape:
        walk.problem(at.where, f"residual add of {_fmt(out)} and {_fmt(shape)}")
    labels = (f"residual, {kind} shortcut" if kind != "none" else "no shortcut",)
    return out, params, macs, labels + ((block.activation,) if block.activation != "none" else ())


def shortcut_kind(block: ResidualBlock, in_shape: Shape, out_shape: Shape) -> str:
    """identity, projection or none: what the shortcut of a residual block with these shapes is."""
    same = in_shape == out_shape
    if block.shortcut == "auto":
        return "identity" if same else "projection"
    if block.shortcut == "identity_or_none":
        return "identity" if same else "none"
    return block.shortcut


def body_stride(spec: Spec, blocks: list[Any]) -> int:
    """The product of every stride on the main path (convs and pools): the projection's stride."""
    stride = 1
    for block in blocks:
        if isinstance(block, BlockSpec):
            layers = conv_block_layers(spec, block)
            stride *= block.stride * math.prod(p.stride for role, p in layers if role == "pool")
        elif isinstance(block, PoolBlock):
            stride *= block.stride
        else:  # a composite: its (first) list of blocks is on the main path
            stride *= next((body_stride(spec, kids) for _, _, kids in child_lists(block)), 1)
    return stride


def _parallel(walk: _Walk, block: ParallelBlock, at: _At, shape: Shape) -> _Result:
    outs: list[Shape] = []
    params = macs = 0
    for k, branch in enumerate(block.branches):
        branch_at = at.child(f"branch{k + 1}", (*at.where, "branches", k))
        out, branch_params, branch_macs, _ = _walk_list(walk, branch, branch_at, (*at.where, "branches", k), shape)
        if out is None:
            return None, 0, 0, ()
        outs.append(out)
        params, macs = params + branch_params, macs + branch_macs
    return _merge(walk, block, at, outs), params, macs, (f"{block.merge} of {len(outs)} branches",)


def _merge(walk: _Walk, block: ParallelBlock, at: _At, outs: list[Shape]) -> Shape | None:
    first = outs[0]
    if block.merge == "add":
        bad = next((o for o in outs if o != first), None)
        if bad is not None:
            walk.problem(at.where, f"parallel add of {_fmt(first)} and {_fmt(bad)}")
        return first
    bad = next((o for o in outs if o[1:] != first[1:]), None)
    if bad is not None:
        walk.problem(at.where, f"concat of branches with spatial sizes {first[1]}x{first[2]} and {bad[1]}x{bad[2]} "
                     f"(shapes {_fmt(first)} and {_fmt(bad)})")
    return (sum(o[0] for o in outs), first[1], first[2])


def _unexpanded(walk: _Walk, block: Any, at: _At, shape: Shape) -> _Result:
    walk.problem(at.where, f"a {block.kind} block must be expanded before shapes are inferred (load_spec does it)")
    return None, 0, 0, ()


KINDS: dict[type, Callable[[_Walk, Any, _At, Shape], _Result]] = {
    BlockSpec: _conv,
    PoolBlock: _pool,
    AdaptiveAvgPoolBlock: _adaptive,
    BatchNormBlock: _batchnorm,
    ActivationBlock: _activation,
    DropoutBlock: _dropout,
    SequenceBlock: _sequence,
    ResidualBlock: _residual,
    ParallelBlock: _parallel,
}


def classifier_params(spec: Spec, flatten: int) -> int:
    """Weights and biases of the hidden linears and the output linear."""
    sizes = [flatten, *spec.classifier.hidden, spec.num_classes]
    return sum(a * b + b for a, b in pairwise(sizes))


def flatten_size(spec: Spec, last: Shape) -> int:
    c, h, w = last
    pool = spec.classifier.adaptive_pool
    return c * pool[0] * pool[1] if pool else c * h * w


def infer(spec: Spec) -> ShapeReport:
    """Static shapes of every block (at every depth) and of the flatten, with every problem found."""
    walk = _Walk(spec)
    shape: Shape = (spec.input.channels, spec.input.height, spec.input.width)
    last = _walk_list(walk, spec.blocks, None, ("blocks",), shape)[0]
    top = [s for s in walk.shapes if s.depth == 0]
    if last is None:
        return ShapeReport(top, None, 0, walk.problems, 0, walk.shapes)
    flat = flatten_size(spec, last)
    sizes = [flat, *spec.classifier.hidden, spec.num_classes]
    head_macs = sum(a * b for a, b in pairwise(sizes))
    return ShapeReport(top, flat, classifier_params(spec, flat), walk.problems, head_macs, walk.shapes)


def _fmt(shape: tuple[int, ...] | list[int]) -> str:
    return "x".join(str(s) for s in shape)
