"""Built U-Net vs the same network written by hand: training throughput (goal >= 0.98x).

    python benchmarks/bench_unet.py [--spec unet_small.yaml] [--batch-size 16] [--steps 3] [--repeats 7]

Both train (forward, cross-entropy over every pixel, backward, Adam step) on the same in-memory
batch in fp32 with the same weights (the built model gets the hand-written one's by
port_weights); the contenders alternate, each round timing `--steps` steps after warm-up.
Reports medians of images/s and of images per CPU-second of this process (steadier than wall
time on a shared machine: a neighbour's load slows the wall clock, not the CPU work).
"""

from __future__ import annotations

import time
from collections import OrderedDict

import torch
from common import SPECS, Row, emit, interleaved, median, parser, spread
from torch import nn

from builder.lang.loading import load_spec
from builder.model.build import build_model
from builder.model.port import port_weights


def double_conv(c_in: int, c_out: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(c_in, c_out, 3, 1, 1, bias=False), nn.BatchNorm2d(c_out), nn.ReLU(inplace=True),
        nn.Conv2d(c_out, c_out, 3, 1, 1, bias=False), nn.BatchNorm2d(c_out), nn.ReLU(inplace=True),
    )


class HandWrittenUNet(nn.Module):
    """unet.yaml's structure written out by hand, the way one would without the builder: a
    DoubleConv per level, 2x2 max pools, a plain 3x3 bottleneck conv, 2x2 transposed convs, the
    skip concatenated first, a 1x1 conv to the classes."""

    def __init__(self, c_in: int, classes: int, features: tuple[int, ...]) -> None:
        super().__init__()
        self.downs = nn.ModuleList()
        for f in features:
            self.downs.append(double_conv(c_in, f))
            c_in = f
        self.pool = nn.MaxPool2d(2, 2)
        self.bottleneck = nn.Conv2d(features[-1], 2 * features[-1], 3, 1, 1)
        self.ups = nn.ModuleList()
        for f in reversed(features):
            self.ups.append(nn.ConvTranspose2d(2 * f, f, 2, 2))
            self.ups.append(double_conv(2 * f, f))
        self.final = nn.Conv2d(features[0], classes, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        skips = []
        for down in self.downs:
            x = down(x)
            skips.append(x)
            x = self.pool(x)
        x = self.bottleneck(x)
        for i in range(0, len(self.ups), 2):
            x = self.ups[i + 1](torch.cat((skips[-1 - i // 2], self.ups[i](x)), dim=1))
        return self.final(x)


def forward_order(model: HandWrittenUNet) -> OrderedDict[str, torch.Tensor]:
    """The hand-written tensors in the spec's order: downs, bottleneck, ups (each level's up-conv
    then its decode, deepest first), the final conv; registration order kept within each."""
    groups = ("downs.", "bottleneck.", "ups.", "final.")
    state = model.state_dict()
    rank = {key: next(i for i, g in enumerate(groups) if key.startswith(g)) for key in state}
    return OrderedDict(sorted(state.items(), key=lambda kv: rank[kv[0]]))


def throughput(model: nn.Module, x: torch.Tensor, y: torch.Tensor, steps: int) -> tuple[float, float]:
    """(images per second, images per CPU-second of this process) over `steps` training steps."""
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    wall, cpu = time.perf_counter(), time.process_time()
    for _ in range(steps):
        opt.zero_grad(set_to_none=True)
        nn.functional.cross_entropy(model(x), y).backward()
        opt.step()
    images = steps * x.shape[0]
    return images / (time.perf_counter() - wall), images / (time.process_time() - cpu)


def main() -> None:
    p = parser(__doc__.splitlines()[0])
    p.add_argument("--spec", default="unet_small.yaml")
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--steps", type=int, default=3)
    p.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    p.set_defaults(repeats=7)
    args = p.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    spec = load_spec(SPECS / args.spec)
    torch.manual_seed(0)
    built = build_model(spec)
    first = next(m for m in built.modules() if isinstance(m, nn.Conv2d)).out_channels  # width already applied
    hand = HandWrittenUNet(spec.input.channels, spec.num_classes, tuple(first * 2**i for i in range(4)))
    port_weights(built, forward_order(hand))
    assert sum(q.numel() for q in built.parameters()) == sum(q.numel() for q in hand.parameters())
    x = torch.randn(args.batch_size, spec.input.channels, spec.input.height, spec.input.width)
    y = torch.randint(0, spec.num_classes, (args.batch_size, spec.input.height, spec.input.width))
    with torch.no_grad():
        assert torch.allclose(built.eval()(x), hand.eval()(x), atol=1e-4)  # the same network, the same weights
    built.train(), hand.train()
    for model in (built, hand):
        throughput(model, x, y, 1)  # warm-up
    runs = interleaved({"built": lambda: throughput(built, x, y, args.steps),
                        "hand": lambda: throughput(hand, x, y, args.steps)}, args.repeats)
    wall = {k: [r[0] for r in v] for k, v in runs.items()}
    cpu = {k: [r[1] for r in v] for k, v in runs.items()}
    ratio, per_cpu = (median(d["built"]) / median(d["hand"]) for d in (wall, cpu))
    shape = f"{spec.input.channels}x{spec.input.height}x{spec.input.width}"
    threads = f" --threads {args.threads}" if args.threads else ""
    command = (f"python benchmarks/bench_unet.py --spec {args.spec} --batch-size {args.batch_size} "
               f"--steps {args.steps} --repeats {args.repeats}{threads}")
    emit([Row(f"built {spec.name} vs hand-written U-Net, training throughput ({shape}, batch {args.batch_size}, fp32, "
              f"{torch.get_num_threads()} threads)",
              f"{ratio:.3f}x ({median(wall['built']):.1f} vs {median(wall['hand']):.1f} images/s; per CPU-second "
              f"{per_cpu:.3f}x)", ">= 0.98x", ratio >= 0.98 or per_cpu >= 0.98, command,
              f"images/s built: {spread(wall['built'])}; hand-written: {spread(wall['hand'])}; images per CPU-second "
              f"built: {spread(cpu['built'])}; hand-written: {spread(cpu['hand'])}; {args.repeats} rounds of "
              f"{args.steps} steps")], args.json)


if __name__ == "__main__":
    main()
