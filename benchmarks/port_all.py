"""Port parity for the whole torchvision CNN canon: every shipped spec against torchvision's model.

For each convolutional classifier in `torchvision.models.list_models()` (all but the vit, swin and
maxvit families: 68 models) whose spec ships under its name (`alexnet` is `alexnet_torchvision.yaml`),
build torchvision's model with random weights and random BatchNorm statistics and the built model,
port the weights (by order and shape), and compare the outputs on one random batch in eval mode.
The input is `--size` (default 64) where the spec accepts it (an adaptive pool before the head),
else the spec's own size. Each pair is freed before the next, so the largest models fit in a few
GB. Prints a markdown table and the models not shipped yet; exits 1 when any shipped model differs.

    python benchmarks/port_all.py [--size 64] [--models resnet50 vgg16 ...]
"""

from __future__ import annotations

import argparse
import gc
import sys
from dataclasses import dataclass
from pathlib import Path

import torch
import torchvision

from builder.lang.errors import BuilderError, SpecError
from builder.lang.loading import load_spec
from builder.lang.spec import Spec
from builder.model.build import build_model
from builder.model.port import TV_KWARGS, port_weights, randomize_norm_statistics

SPECS = Path(__file__).resolve().parents[1] / "arch_specs"
TRANSFORMERS = ("vit_", "swin_", "maxvit")  # not convolutional classifiers: not part of the canon
SPEC_NAME = {"alexnet": "alexnet_torchvision"}  # `alexnet.yaml` is the article's AlexNet
TOLERANCE = 1e-5


@dataclass
class Result:
    """One row of the table."""

    model: str
    params: int
    size: int
    diff: float | None
    status: str


def canon() -> list[str]:
    """torchvision's convolutional classifiers, sorted."""
    names = torchvision.models.list_models(module=torchvision.models)
    return sorted(n for n in names if not n.startswith(TRANSFORMERS))


def spec_path(model: str) -> Path:
    """The shipped spec for a torchvision model name (it may not exist)."""
    return SPECS / f"{SPEC_NAME.get(model, model)}.yaml"


def small_spec(path: Path, size: int) -> Spec:
    """The spec at `size` x `size` when it accepts that input, else as written."""
    try:
        return load_spec(path, [f"input.height={size}", f"input.width={size}"])
    except SpecError:
        return load_spec(path)


def compare(model: str, size: int) -> Result:
    """Build both, port, and compare outputs on one random batch of 2."""
    spec = small_spec(spec_path(model), size)
    torch.manual_seed(0)
    reference = torchvision.models.get_model(model, weights=None, **TV_KWARGS.get(model, {})).eval()
    randomize_norm_statistics(reference)
    built = build_model(spec).eval()
    params = sum(p.numel() for p in built.parameters())
    try:
        port_weights(built, reference.state_dict())
    except BuilderError as exc:
        return Result(model, params, spec.input.height, None, f"port refused: {str(exc)[:120]}")
    x = torch.randn(2, spec.input.channels, spec.input.height, spec.input.width)
    with torch.no_grad():
        diff = (built(x) - reference(x)).abs().max().item()
    return Result(model, params, spec.input.height, diff, "exact" if diff <= TOLERANCE else "DIFFERS")


def table(results: list[Result]) -> str:
    """The markdown table of the results."""
    rows = ["| model | parameters | input | max abs diff | status |", "|---|---|---|---|---|"]
    for r in results:
        diff = "—" if r.diff is None else f"{r.diff:.1e}"
        rows.append(f"| `{r.model}` | {r.params:,} | {r.size}x{r.size} | {diff} | {r.status} |")
    return "\n".join(rows)


def main(argv: list[str] | None = None) -> int:
    """Run every shipped model of the canon (or `--models`); 1 when any differs."""
    parser = argparse.ArgumentParser(description="Port parity of every shipped torchvision CNN spec.")
    parser.add_argument("--size", type=int, default=64, help="input height and width where the spec allows it")
    parser.add_argument("--models", nargs="*", help="only these torchvision names (default: the whole canon)")
    args = parser.parse_args(argv)
    names = canon()
    unknown = sorted(set(args.models or ()) - set(names))
    if unknown:
        parser.error(f"not in torchvision's CNN canon: {', '.join(unknown)}")
    chosen = [n for n in names if n in (args.models or names)]
    shipped = [n for n in chosen if spec_path(n).is_file()]
    results = []
    for name in shipped:
        results.append(compare(name, args.size))
        print(f"{name}: {results[-1].status}", file=sys.stderr, flush=True)
        gc.collect()  # the pair is gone: free it before building the next one
    print(table(results))
    missing = [n for n in chosen if n not in shipped]
    print(f"\n{len(shipped)} of {len(chosen)} shipped; not shipped yet ({len(missing)}): "
          f"{', '.join(missing) or 'none'}")
    return 0 if all(r.status == "exact" for r in results) else 1


if __name__ == "__main__":
    sys.exit(main())
