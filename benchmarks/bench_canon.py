"""Built canon models vs torchvision's own: training throughput (goal >= 0.98x).

resnet18.yaml and mobilenet_v2.yaml built by the builder against torchvision's `resnet18` and
`mobilenet_v2` (weights=None, same parameter count, asserted). Both contenders of a pair train
(forward, cross-entropy backward, SGD step) on the same in-memory float32 batch, contiguous
(NCHW) memory format for both; they alternate round-robin, each round timing `--steps` steps
after warm-up; figures are medians of images/s and the ratio of the medians.

The input is smaller than torchvision's 224x224 (default 3x112x112, batch 32) so that a run
fits a 2-core CPU in minutes; both architectures are fully convolutional up to their adaptive
pooling, so the models are the same at any input size.
"""

from __future__ import annotations

import argparse

import torch
import torchvision
from bench_builder import throughput
from common import SPECS, Row, emit, interleaved, median, parser, spread
from torch import nn

from builder.lang.loading import load_spec
from builder.model.build import build_model

MODELS = ("resnet18", "mobilenet_v2")  # spec name = torchvision name


def pair(name: str) -> tuple[nn.Module, nn.Module]:
    """(built, torchvision) with equal parameter counts, both in training mode."""
    built, reference = build_model(load_spec(SPECS / f"{name}.yaml")), torchvision.models.get_model(name, weights=None)
    counts = [sum(p.numel() for p in m.parameters()) for m in (built, reference)]
    assert counts[0] == counts[1], f"{name}: built has {counts[0]:,} parameters, torchvision {counts[1]:,}"
    return built.train(), reference.train()


def compare(name: str, args: argparse.Namespace) -> Row:
    """One row: built vs torchvision training throughput for the model `name`."""
    torch.manual_seed(0)
    built, reference = pair(name)
    x = torch.randn(args.batch_size, 3, args.size, args.size)
    y = torch.randint(0, 1000, (args.batch_size,))
    for model in (built, reference):
        throughput(model, x, y, 2)  # warm-up: allocator, oneDNN kernels
    runs = interleaved({"built": lambda: throughput(built, x, y, args.steps),
                        "torchvision": lambda: throughput(reference, x, y, args.steps)}, args.repeats)
    ratio = median(runs["built"]) / median(runs["torchvision"])
    command = f"python benchmarks/bench_canon.py --batch-size {args.batch_size} --size {args.size}"
    return Row(
        f"built {name} vs torchvision {name}, training throughput (3x{args.size}x{args.size}, batch "
        f"{args.batch_size}, fp32, NCHW)",
        f"{ratio:.3f}x ({median(runs['built']):.1f} vs {median(runs['torchvision']):.1f} images/s)", ">= 0.98x",
        ratio >= 0.98, command,
        f"built: {spread(runs['built'])}; torchvision: {spread(runs['torchvision'])}; "
        f"{args.repeats} rounds of {args.steps} steps, {torch.get_num_threads()} threads",
    )


def main() -> None:
    p = parser(__doc__.splitlines()[0])
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--size", type=int, default=112, help="input height and width (default 112)")
    p.add_argument("--steps", type=int, default=3, help="training steps per round (default 3)")
    p.add_argument("--only", choices=MODELS, action="append", help="benchmark only this model (repeatable)")
    args = p.parse_args()
    emit([compare(name, args) for name in args.only or MODELS], args.json)


if __name__ == "__main__":
    main()
