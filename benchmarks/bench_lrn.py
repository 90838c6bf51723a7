"""AlexNet training with builder.model.lrn.LocalResponseNorm vs torch's nn.LocalResponseNorm (goal >= 1.15x).

    python benchmarks/bench_lrn.py [--batch-size 32] [--repeats 5] [--steps 3] [--layers] [--json FILE]

alexnet.yaml is built twice from the same seed: as the registry builds it (builder.model.lrn), and with
every LRN module then replaced by nn.LocalResponseNorm of the same arguments. Both train (forward,
cross-entropy backward, SGD step) on the same in-memory batch, taking turns; medians of images/s.
--layers also times the LRN layer alone (forward + backward) at AlexNet's three LRN input shapes,
float32 and bfloat16 (torch's has no bfloat16 CPU kernel). Threads are left at torch's default.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

import torch
from common import SPECS, Row, emit, interleaved, median, parser, spread
from torch import nn

from builder.lang.loading import load_spec
from builder.model import lrn
from builder.model.build import build_model
from builder.tools.bench import cpu_sample, other_cpus_between, train_step

LRN_SHAPES = ((96, 55, 55), (256, 27, 27), (256, 13, 13))  # AlexNet's LRN inputs (C, H, W)


def use_torch_lrn(model: nn.Module) -> int:
    """Replace every builder LocalResponseNorm by nn.LocalResponseNorm (same name and arguments)."""
    swapped = 0
    for parent in model.modules():
        for name, child in parent.named_children():
            if isinstance(child, lrn.LocalResponseNorm):
                setattr(parent, name, nn.LocalResponseNorm(child.size, child.alpha, child.beta, child.k))
                swapped += 1
    return swapped


def trainer(spec_path: Path, batch_size: int, steps: int, torch_lrn: bool) -> Callable[[], float]:
    """A function that trains `steps` steps on a fixed synthetic batch and returns images/s."""
    spec = load_spec(spec_path)
    torch.manual_seed(0)  # the same weights for both contenders
    model = build_model(spec).train()
    assert not torch_lrn or use_torch_lrn(model) > 0, f"{spec_path} has no LRN"
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(batch_size, spec.input.channels, spec.input.height, spec.input.width, generator=gen)
    y = torch.randint(spec.num_classes, (batch_size,), generator=gen)
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)

    def run() -> float:
        start = time.perf_counter()
        for _ in range(steps):
            train_step(model, opt, x, y, None, None)
        return steps * batch_size / (time.perf_counter() - start)

    return run


def model_row(batch_size: int, steps: int, repeats: int) -> Row:
    spec = SPECS / "alexnet.yaml"
    runs = {"builder": trainer(spec, batch_size, steps, False), "torch": trainer(spec, batch_size, steps, True)}
    for run in runs.values():
        run()  # warm-up
    before = cpu_sample()
    rates = interleaved(runs, repeats)
    others = other_cpus_between(before, cpu_sample())
    ratio = median(rates["builder"]) / median(rates["torch"])
    return Row(
        f"alexnet.yaml training step, batch {batch_size}: builder.model.lrn vs nn.LocalResponseNorm",
        f"{ratio:.2f}x ({median(rates['builder']):.1f} vs {median(rates['torch']):.1f} images/s)", ">= 1.15x",
        ratio >= 1.15, f"python benchmarks/bench_lrn.py --batch-size {batch_size} --repeats {repeats}",
        f"builder: {spread(rates['builder'])}; torch: {spread(rates['torch'])}; {_conditions(others)}",
    )


def layer_timer(module: nn.Module, x: torch.Tensor, grad: torch.Tensor) -> Callable[[], float]:
    """A function that runs forward + backward once and returns milliseconds."""

    def run() -> float:
        start = time.perf_counter()
        module(x.detach().requires_grad_()).backward(grad)
        return (time.perf_counter() - start) * 1e3

    return run


def layer_row(shape: tuple[int, ...], dtype: torch.dtype, repeats: int) -> Row:
    x = torch.relu(torch.randn(shape) * 10).to(dtype)  # post-ReLU values, as in AlexNet
    grad = torch.randn(shape).to(dtype)
    runs = {"builder": layer_timer(lrn.LocalResponseNorm(5, 1e-4, 0.75, 2.0), x, grad)}
    if dtype == torch.float32:  # avg_pool3d, which torch's uses, has no bfloat16 kernel on CPU
        runs["torch"] = layer_timer(nn.LocalResponseNorm(5, 1e-4, 0.75, 2.0), x, grad)
    for run in runs.values():
        run()  # warm-up
    ms = interleaved(runs, repeats)
    name = f"LRN layer forward+backward {'x'.join(map(str, shape))} {str(dtype).removeprefix('torch.')}"
    if "torch" not in ms:
        return Row(name, f"{median(ms['builder']):.1f} ms (torch's: no bfloat16 CPU kernel)", "-", None, "--layers")
    ratio = median(ms["torch"]) / median(ms["builder"])
    return Row(name, f"{ratio:.2f}x ({median(ms['builder']):.1f} vs {median(ms['torch']):.1f} ms)", "-", None,
               "--layers", f"builder: {spread(ms['builder'])}; torch: {spread(ms['torch'])}")


def _conditions(others: float | None) -> str:
    busy = "" if others is None else f", other processes used {others:.2f} CPUs meanwhile"
    return f"{torch.get_num_threads()} threads{busy}"


def main() -> None:
    p = parser(__doc__.splitlines()[0])
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--steps", type=int, default=3, help="training steps per repeat (default 3)")
    p.add_argument("--layers", action="store_true", help="also time the LRN layer alone")
    args = p.parse_args()
    rows = []
    if args.layers:
        for dtype in (torch.float32, torch.bfloat16):
            rows += [layer_row((args.batch_size, *shape), dtype, args.repeats) for shape in LRN_SHAPES]
    rows.append(model_row(args.batch_size, args.steps, args.repeats))
    emit(rows, args.json)


if __name__ == "__main__":
    main()
