"""Built canon models vs torchvision's own: training throughput (goal >= 0.98x).

resnet18, mobilenet_v2, efficientnet_b0 and convnext_tiny built by the builder from their specs
against torchvision's models of those names (weights=None), the built model holding torchvision's weights (ported, every
shape checked), so both compute on the same values. Both contenders of a pair train
(forward, cross-entropy backward, SGD step) on the same in-memory float32 batch, contiguous
(NCHW) memory format for both; they alternate round-robin, each round timing `--steps` steps
after warm-up; figures are medians of images/s and the ratio of the medians. The ratio of the
medians of images per CPU-second (process time, all threads) is reported too: on a shared
machine it moves less with the neighbours' load than wall time does.

The input is smaller than torchvision's 224x224 (default 3x112x112, batch 32) so that a run
fits a 2-core CPU in minutes; both architectures are fully convolutional up to their adaptive
pooling, so the models are the same at any input size.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable

import torch
import torchvision
from common import SPECS, Row, emit, interleaved, median, parser, spread
from torch import nn

from builder.lang.loading import load_spec
from builder.model.build import build_model
from builder.model.port import port_weights

MODELS = ("resnet18", "mobilenet_v2", "efficientnet_b0", "convnext_tiny")  # spec name = torchvision name


def pair(name: str) -> tuple[nn.Module, nn.Module]:
    """(built, torchvision), both in training mode, with the same weights: the built model gets
    torchvision's (ported), since the two initializations differ and CPU speed can depend on the
    values (a quick run with each model's own init gave a 5x gap at 3x32x32)."""
    built, reference = build_model(load_spec(SPECS / f"{name}.yaml")), torchvision.models.get_model(name, weights=None)
    port_weights(built, reference.state_dict())  # checks every shape, in order
    return built.train(), reference.train()


def trainer(model: nn.Module, x: torch.Tensor, y: torch.Tensor, steps: int, cpu: list[float]) -> Callable[[], float]:
    """A contender: images per wall second over `steps` SGD steps; appends images per CPU-second to `cpu`."""
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)

    def run() -> float:
        wall, proc = time.perf_counter(), time.process_time()
        for _ in range(steps):
            opt.zero_grad(set_to_none=True)
            nn.functional.cross_entropy(model(x), y).backward()
            opt.step()
        cpu.append(steps * x.shape[0] / (time.process_time() - proc))
        return steps * x.shape[0] / (time.perf_counter() - wall)

    return run


def compare(name: str, args: argparse.Namespace) -> Row:
    """One row: built vs torchvision training throughput for the model `name`."""
    torch.manual_seed(0)
    built, reference = pair(name)
    x = torch.randn(args.batch_size, 3, args.size, args.size)
    y = torch.randint(0, 1000, (args.batch_size,))
    cpu: dict[str, list[float]] = {"built": [], "torchvision": []}
    contenders = {"built": trainer(built, x, y, args.steps, cpu["built"]),
                  "torchvision": trainer(reference, x, y, args.steps, cpu["torchvision"])}
    interleaved(contenders, 1)  # warm-up: allocator, oneDNN kernels, optimizer state
    cpu = {k: [] for k in cpu}
    contenders = {k: trainer(m, x, y, args.steps, cpu[k]) for k, m in (("built", built), ("torchvision", reference))}
    runs = interleaved(contenders, args.repeats)
    ratio, cpu_ratio = (median(r["built"]) / median(r["torchvision"]) for r in (runs, cpu))
    command = (f"python benchmarks/bench_canon.py --batch-size {args.batch_size} --size {args.size} "
               f"--threads {torch.get_num_threads()} --steps {args.steps} --repeats {args.repeats}")
    return Row(
        f"built {name} vs torchvision {name}, training throughput (3x{args.size}x{args.size}, batch "
        f"{args.batch_size}, fp32, NCHW, {_threads()})",
        f"{ratio:.3f}x ({median(runs['built']):.1f} vs {median(runs['torchvision']):.1f} images/s; "
        f"per CPU-second {cpu_ratio:.3f}x)", ">= 0.98x", ratio >= 0.98, command,
        f"images/s built: {spread(runs['built'])}; torchvision: {spread(runs['torchvision'])}; images per "
        f"CPU-second built: {spread(cpu['built'])}; torchvision: {spread(cpu['torchvision'])}; "
        f"{args.repeats} rounds of {args.steps} steps",
    )


def _threads() -> str:
    n = torch.get_num_threads()
    return f"{n} thread{'s' if n > 1 else ''}"


def main() -> None:
    p = parser(__doc__.splitlines()[0])
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--size", type=int, default=112, help="input height and width (default 112)")
    p.add_argument("--steps", type=int, default=2, help="training steps per round (default 2)")
    p.add_argument("--threads", type=int, default=0, help="torch threads (default: torch's own choice)")
    p.add_argument("--only", choices=MODELS, action="append", help="benchmark only this model (repeatable)")
    args = p.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    emit([compare(name, args) for name in args.only or MODELS], args.json)


if __name__ == "__main__":
    main()
