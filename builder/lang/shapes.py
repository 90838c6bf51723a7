"""Static shape and parameter inference: the exact nn.Conv2d / pooling arithmetic, no torch.

`infer(spec)` walks the blocks from the input shape and returns every block's output shape
and parameter count, plus the problems found on the way (groups that do not divide the
incoming channels, a spatial size that collapses, an `expect` that does not hold).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from itertools import pairwise

from builder.lang.errors import Problem
from builder.lang.spec import (
    BatchNormSpec,
    BlockSpec,
    LRNSpec,
    Spec,
    WindowPoolSpec,
    block_activation,
    block_norm,
    block_pool,
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
    """Multiply-adds of one sample through the block's convolutions (and linears)."""


@dataclass(frozen=True)
class ShapeReport:
    """The whole network's static shapes. `flatten` is None when inference stopped early."""

    blocks: list[BlockShape]
    flatten: int | None
    classifier_params: int
    problems: list[Problem] = field(default_factory=list)

    classifier_mult_adds: int = 0

    @property
    def total_params(self) -> int:
        return sum(b.params for b in self.blocks) + self.classifier_params

    @property
    def mult_adds(self) -> int:
        """Multiply-adds of one sample through every convolution and linear (torchvision's "MACs")."""
        return sum(b.mult_adds for b in self.blocks) + self.classifier_mult_adds


def window_out(size: int, kernel: int, stride: int, padding: int) -> int:
    """Output length of a conv or pool window along one axis (floor mode, dilation 1)."""
    return (size + 2 * padding - kernel) // stride + 1


def conv_params(in_ch: int, block: BlockSpec) -> int:
    weight = block.out_channels * (in_ch // block.groups) * block.kernel_size**2
    return weight + (block.out_channels if block.bias else 0)


def describe_layers(spec: Spec, block: BlockSpec) -> tuple[str, ...]:
    """Short human labels of a block's layers, in forward order."""
    conv = f"conv {block.out_channels} k{block.kernel_size} s{block.stride} p{block.padding}"
    if block.groups > 1:
        conv += f" g{block.groups}"
    norm, pool, act = block_norm(spec, block), block_pool(spec, block), block_activation(spec, block)
    layers = [conv]
    if isinstance(norm, BatchNormSpec):
        layers.append("batchnorm")
    if act != "none":
        layers.append(act)
    if isinstance(norm, LRNSpec):
        layers.append(f"lrn size {norm.size}")
    if isinstance(pool, WindowPoolSpec):
        layers.append(f"{pool.kind}pool k{pool.kernel_size} s{pool.stride} p{pool.padding}")
    return tuple(layers)


def _block(spec: Spec, index: int, in_shape: Shape) -> tuple[BlockShape | None, list[Problem]]:
    """Infer one block; None when its output would be empty."""
    block, (c, h, w) = spec.blocks[index], in_shape
    name, where = f"block{index + 1}", ("blocks", index)
    problems: list[Problem] = []
    if c % block.groups:
        problems.append(
            Problem((*where, "groups"), f"in_channels ({c}) must be divisible by groups ({block.groups})")
        )
    h2, w2 = (window_out(s, block.kernel_size, block.stride, block.padding) for s in (h, w))
    macs = max(h2, 0) * max(w2, 0) * block.out_channels * (c // block.groups) * block.kernel_size**2
    pool = block_pool(spec, block)
    if h2 > 0 and w2 > 0 and isinstance(pool, WindowPoolSpec):
        h2, w2 = (window_out(s, pool.kernel_size, pool.stride, pool.padding) for s in (h2, w2))
    if h2 <= 0 or w2 <= 0:
        msg = f"{name}: spatial size collapses to {h2}x{w2} (its input is {c}x{h}x{w})"
        return None, [*problems, Problem(where, msg)]
    params = conv_params(c, block)
    params += 2 * block.out_channels if isinstance(block_norm(spec, block), BatchNormSpec) else 0
    out = (block.out_channels, h2, w2)
    if block.expect is not None and tuple(block.expect) != out:
        problems.append(Problem((*where, "expect"), f"{name} outputs {_fmt(out)}, not {_fmt(block.expect)}"))
    return BlockShape(name, in_shape, out, params, describe_layers(spec, block), macs), problems


def classifier_params(spec: Spec, flatten: int) -> int:
    """Weights and biases of the hidden linears and the output linear."""
    sizes = [flatten, *spec.classifier.hidden, spec.num_classes]
    return sum(a * b + b for a, b in pairwise(sizes))


def flatten_size(spec: Spec, last: Shape) -> int:
    c, h, w = last
    pool = spec.classifier.adaptive_pool
    return c * pool[0] * pool[1] if pool else c * h * w


def infer(spec: Spec) -> ShapeReport:
    """Static shapes of every block and of the flatten, with every problem found."""
    shape: Shape = (spec.input.channels, spec.input.height, spec.input.width)
    blocks: list[BlockShape] = []
    problems: list[Problem] = []
    for index in range(len(spec.blocks)):
        result, found = _block(spec, index, shape)
        problems += found
        if result is None:
            return ShapeReport(blocks, None, 0, problems)
        blocks.append(result)
        shape = result.out_shape
    flat = flatten_size(spec, shape)
    sizes = [flat, *spec.classifier.hidden, spec.num_classes]
    head_macs = sum(a * b for a, b in pairwise(sizes))
    return ShapeReport(blocks, flat, classifier_params(spec, flat), problems, head_macs)


def _fmt(shape: Shape | list[int]) -> str:
    return "x".join(str(s) for s in shape)
