"""Static shape and parameter inference: the exact nn.Conv2d / pooling arithmetic, no torch.

`infer(spec)` walks the blocks from the input shape, into every composite block, and returns
every block's output shape, parameter count and multiply-adds, plus the problems found on the
way (groups that do not divide the incoming channels, a spatial size that collapses, a residual
add or a concat of shapes that do not fit, an `expect` that does not hold).

Each kind's own arithmetic is in its module (builder.lang.kinds); the walk through the child
lists is builder.lang.walk. Block names are module paths under `features` ("block1",
"stage2.block1.body.conv1"): the builder names its modules by the same rule
(registry.child_path), and the summary and the tests compare the two.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from builder.lang.errors import Problem
from builder.lang.heads import HeadShape, head_def
from builder.lang.kinds.conv import conv_groups, conv_params, describe_layers
from builder.lang.kinds.residual import shortcut_kind
from builder.lang.registry import body_stride
from builder.lang.spec import Spec
from builder.lang.walk import BlockShape, Shape, Walk, walk_list, window_out

__all__ = [
    "BlockShape", "HeadShape", "Shape", "ShapeReport", "body_stride", "conv_groups", "conv_params",
    "describe_layers", "infer", "shortcut_kind", "window_out",
]


@dataclass(frozen=True)
class ShapeReport:
    """The whole network's static shapes. `flatten` is None when inference stopped early; it is
    the size of the head's flatten, or for a head without one, of its output (C*H*W for none).
    `classifier_params` and `classifier_mult_adds` are the head's, whatever its kind.

    `blocks` are the top-level blocks; `all_blocks` every block at every depth, in forward order
    (a composite before its children).
    """

    blocks: list[BlockShape]
    flatten: int | None
    classifier_params: int
    problems: list[Problem] = field(default_factory=list)
    classifier_mult_adds: int = 0
    all_blocks: list[BlockShape] = field(default_factory=list)
    head: HeadShape | None = None
    """The head's output, parameters and labels (None when inference stopped early)."""

    @property
    def total_params(self) -> int:
        return sum(b.params for b in self.blocks) + self.classifier_params

    @property
    def mult_adds(self) -> int:
        """Multiply-adds of one sample through every convolution and linear (torchvision's "MACs")."""
        return sum(b.mult_adds for b in self.blocks) + self.classifier_mult_adds


def infer(spec: Spec) -> ShapeReport:
    """Static shapes of every block (at every depth) and of the head, with every problem found."""
    walk = Walk(spec)
    shape: Shape = (spec.input.channels, spec.input.height, spec.input.width)
    done = walk_list(walk, spec.blocks, None, "", ("blocks",), shape)
    top = [s for s in walk.shapes if s.depth == 0]
    if done is None:
        return ShapeReport(top, None, 0, walk.problems, 0, walk.shapes)
    head = head_def(spec.the_head).infer(spec, spec.the_head, done.out)
    if head.problem is not None:
        walk.problem(("head",), head.problem)
    flat = head.flatten if head.flatten is not None else math.prod(head.out)
    return ShapeReport(top, flat, head.params, walk.problems, head.mult_adds, walk.shapes, head)
