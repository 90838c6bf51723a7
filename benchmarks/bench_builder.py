"""Built model vs the same network written by hand: training throughput (goal >= 0.98x).

Both train (forward, cross-entropy backward, SGD step) on the same in-memory batch; the
contenders alternate, each round timing `--steps` steps after warm-up; medians of images/s.
"""

from __future__ import annotations

import time

import torch
from common import SPECS, Row, emit, interleaved, median, parser, spread
from torch import nn

from builder.lang.loading import load_spec
from builder.model.build import build_model


class HandWrittenAlexNetCifar(nn.Module):
    """alexnet_cifar.yaml written out by hand, the way one would without the builder."""

    def __init__(self, num_classes: int = 10) -> None:
        super().__init__()

        def block(cin: int, cout: int, k: int, s: int, pool: bool) -> list[nn.Module]:
            conv = nn.Conv2d(cin, cout, k, s, k // 2, bias=False)
            layers: list[nn.Module] = [conv, nn.BatchNorm2d(cout), nn.ReLU(True)]
            return [*layers, nn.MaxPool2d(2, 2)] if pool else layers

        self.features = nn.Sequential(
            *block(3, 64, 5, 2, True), *block(64, 192, 5, 1, True), *block(192, 384, 3, 1, False),
            *block(384, 256, 3, 1, False), *block(256, 256, 3, 1, True),
        )
        self.classifier = nn.Sequential(
            nn.Linear(1024, 512), nn.ReLU(True), nn.Dropout(0.3), nn.Linear(512, num_classes)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(torch.flatten(self.features(x), 1))


def throughput(model: nn.Module, x: torch.Tensor, y: torch.Tensor, steps: int) -> float:
    """Images per second over `steps` training steps."""
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    start = time.perf_counter()
    for _ in range(steps):
        opt.zero_grad(set_to_none=True)
        nn.functional.cross_entropy(model(x), y).backward()
        opt.step()
    return steps * x.shape[0] / (time.perf_counter() - start)


def main() -> None:
    p = parser(__doc__.splitlines()[0])
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--steps", type=int, default=10)
    args = p.parse_args()
    torch.manual_seed(0)
    built, hand = build_model(load_spec(SPECS / "alexnet_cifar.yaml")), HandWrittenAlexNetCifar()
    assert sum(p.numel() for p in built.parameters()) == sum(p.numel() for p in hand.parameters())
    x, y = torch.randn(args.batch_size, 3, 32, 32), torch.randint(0, 10, (args.batch_size,))
    for model in (built, hand):
        throughput(model, x, y, 3)  # warm-up
    runs = interleaved({"built": lambda: throughput(built, x, y, args.steps),
                        "hand": lambda: throughput(hand, x, y, args.steps)}, args.repeats)
    ratio = median(runs["built"]) / median(runs["hand"])
    emit([Row("built alexnet_cifar vs hand-written nn.Module, training throughput",
              f"{ratio:.3f}x ({median(runs['built']):.0f} vs {median(runs['hand']):.0f} images/s)", ">= 0.98x",
              ratio >= 0.98, f"python benchmarks/bench_builder.py --batch-size {args.batch_size}",
              f"built: {spread(runs['built'])}; hand-written: {spread(runs['hand'])}")], args.json)


if __name__ == "__main__":
    main()
