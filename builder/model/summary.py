"""torchinfo summary of a spec, cross-checked against the static shape inference.

On the "meta" device no weight is allocated, so even a model of billions of parameters
summarizes in seconds and little memory. The default "auto" runs a real forward on the CPU when
the model is small instead: its first forward on meta imports much of torch lazily (torch._refs,
torch._dynamo: seconds), while allocating and running a small model takes a fraction of that.

Below torchinfo's table (for people; its layout is torchinfo's and changes with it) comes the
project's own layer list: module path, type, output shape, parameters, mult-adds. That part,
the totals and the shape check are stable and are what the golden test compares.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
import torchinfo
from torch import nn
from torch.overrides import TorchFunctionMode
from torchinfo.model_statistics import ModelStatistics

from builder.lang.errors import BuilderError
from builder.lang.shapes import ShapeReport, infer
from builder.lang.spec import Spec
from builder.model.build import BYTES_PER_PARAM, available_memory, build_model
from builder.model.device import find_device

AUTO_MAX_PARAMS = 150_000_000  # 600 MB as float32: allocated and initialized in well under a second
AUTO_MAX_MULT_ADDS = 5 * 10**9  # per forward (batch included): a fraction of a second on 2 CPU cores
COLUMNS = ("input_size", "output_size", "kernel_size", "num_params", "mult_adds")


@dataclass(frozen=True)
class LayerRow:
    """One module of the summary, in the project's own terms (independent of torchinfo's layout)."""

    path: str  # "features.block1.conv"
    kind: str  # the module's class name
    output: tuple[int, ...]  # output shape without the batch dimension
    params: int  # of the module and everything inside it
    mult_adds: int  # of the whole batch, summed over the layers inside it

    def line(self, width: int) -> str:
        shape = "x".join(map(str, self.output))
        return f"{self.path:<{width}}  {self.kind:<18}  {shape:>14}  {self.params:>13,}  {self.mult_adds:>17,}"


@dataclass(frozen=True)
class Summary:
    """The torchinfo statistics plus every disagreement with the static shapes."""

    spec: Spec
    shapes: ShapeReport
    stats: ModelStatistics
    mismatches: list[str]
    layers: list[LayerRow]
    device: str

    @property
    def ok(self) -> bool:
        return not self.mismatches

    def totals(self) -> str:
        params = self.stats.total_params
        return (
            f"{self.spec.name}: {params:,} parameters ({params * 4 / 2**20:,.1f} MiB as float32), "
            f"{self.stats.total_mult_adds / 1e9:,.3f} G mult-adds per batch of {self.stats.input_size[0][0]}"
            if self.stats.input_size else f"{params:,} parameters"
        )

    def __str__(self) -> str:
        checks = (
            f"shape check: {_count(self.shapes)}, the flatten and the parameter count agree with static inference"
            if self.ok else "\n".join(f"shape check failed: {m}" for m in self.mismatches)
        )
        return f"{self.stats}\n{self.stable()}\n{checks}"

    def stable(self) -> str:
        """The layer list and the totals: the part of the output that only a change of the model changes."""
        width = max([len("module"), *(len(r.path) for r in self.layers)])
        batch = self.stats.input_size[0][0] if self.stats.input_size else 1
        head = f"{'module':<{width}}  {'type':<18}  {'output':>14}  {'parameters':>13}  {'mult-adds':>17}"
        return "\n".join([f"layers of {self.spec.name} (output per sample, mult-adds per batch of {batch}):", head,
                          *(r.line(width) for r in self.layers), self.totals()])


def summarize(spec: Spec, *, device: str = "auto", batch_size: int = 1, depth: int = 3) -> Summary:
    """Build `spec` on `device`, run torchinfo on a (batch_size, C, H, W) input, check shapes.

    device "auto": "cpu" for a small model (see pick_device), "meta" (nothing allocated) otherwise."""
    if batch_size < 1 or depth < 0:
        raise BuilderError(f"batch size must be >= 1 and depth >= 0 (got {batch_size}, {depth})")
    shapes = infer(spec)
    device = pick_device(device, shapes, batch_size)
    # fork_rng: real weights and torchinfo's random input must not move the caller's random
    # stream (the trainer summarizes between seeding and building its own model)
    with torch.random.fork_rng(devices=[]):
        model, stats = _run_torchinfo(spec, device, batch_size, depth)
    layers = layer_rows(model, stats, depth)
    return Summary(spec, shapes, stats, _mismatches(model, stats, shapes), layers, device)


# nn.init's random fills (and the Tensor methods they use): what a summary's build skips
INIT_FILLS = frozenset({
    nn.init.kaiming_uniform_, nn.init.kaiming_normal_, nn.init.xavier_uniform_, nn.init.xavier_normal_,
    nn.init.uniform_, nn.init.normal_, nn.init.trunc_normal_, torch.Tensor.uniform_, torch.Tensor.normal_,
})


class SkipInit(TorchFunctionMode):
    """Within it, the random fills of nn.init do nothing and weights keep whatever their memory
    held: a summary needs shapes, never values, and drawing AlexNet's 58 M random weights is most
    of the time of its CPU build."""

    def __torch_function__(self, func: Any, types: Any, args: tuple[Any, ...] = (), kwargs: Any = None) -> Any:
        if func in INIT_FILLS:
            return args[0] if args else kwargs["tensor"]  # the tensor to fill, untouched (every fill returns it)
        return func(*args, **(kwargs or {}))


MAX_NESTING = 18  # modules inside modules: torchinfo's parameter tally doubles its work with each level


def nesting(model: nn.Module) -> int:
    """How deep modules nest in `model` (features.block1.conv: 3)."""
    return max((name.count(".") + 1 for name, _ in model.named_modules() if name), default=0)


def _run_torchinfo(spec: Spec, device: str, batch_size: int, depth: int) -> tuple[nn.Module, ModelStatistics]:
    with torch.device(device), SkipInit():
        model = build_model(spec)
    if (levels := nesting(model)) > MAX_NESTING:  # 25 levels would take torchinfo hours
        raise BuilderError(f"{spec.name}: its modules nest {levels} levels deep; a summary (summarize, train's "
                           f"summary.txt) takes at most {MAX_NESTING} (flatten the nested sequences)")
    size = (batch_size, spec.input.channels, spec.input.height, spec.input.width)
    try:
        stats = torchinfo.summary(
            model, input_size=size, device=device, depth=depth, col_names=COLUMNS,
            row_settings=("var_names",), verbose=0,
        )
    except RuntimeError as exc:  # torchinfo wraps the forward's error
        raise BuilderError(f"{spec.name}: forward pass failed: {exc}") from None
    return model, stats


def pick_device(device: str, shapes: ShapeReport, batch_size: int) -> str:
    """`device` itself, or for "auto": "cpu" when the model is small enough to allocate and run
    at once (by its static parameter count and mult-adds, and the free memory), else "meta"."""
    if device != "auto":
        return str(find_device(device))  # an unknown or absent device is one line, not a traceback
    weights = shapes.total_params * BYTES_PER_PARAM
    small = shapes.total_params <= AUTO_MAX_PARAMS and shapes.mult_adds * batch_size <= AUTO_MAX_MULT_ADDS
    return "cpu" if small and 2 * weights < available_memory() else "meta"


def layer_rows(model: nn.Module, stats: ModelStatistics, depth: int) -> list[LayerRow]:
    """Every module torchinfo saw down to `depth` (the root excluded), in forward order, with our own
    parameter count and the mult-adds of the layers (modules without children) inside it."""
    paths = {id(module): name for name, module in model.named_modules()}
    leaf_macs = {id(layer.module): layer.macs for layer in stats.summary_list if not any(layer.module.children())}
    rows = []
    for layer in stats.summary_list:
        path = paths.get(id(layer.module), "")
        if not path or layer.depth > depth or not isinstance(layer.output_size, list):
            continue
        inner = list(layer.module.modules())
        rows.append(LayerRow(
            path, type(layer.module).__name__, tuple(layer.output_size[1:]),
            sum(p.numel() for p in layer.module.parameters()), sum(leaf_macs.get(id(m), 0) for m in inner),
        ))
    return rows


def _mismatches(model: nn.Module, stats: ModelStatistics, shapes: ShapeReport) -> list[str]:
    """Compare torchinfo's output shape of every block (at every depth) and the head's flatten with inference."""
    seen = {id(layer.module): layer.output_size[1:] for layer in stats.summary_list}
    expected: list[tuple[str, nn.Module, list[int]]] = [
        (f"features.{b.name}", model.get_submodule(f"features.{b.name}"), list(b.out_shape)) for b in shapes.all_blocks
    ]
    if shapes.head is not None and shapes.head.flatten is not None:  # a head with a flatten module
        expected.append(("flatten", model.get_submodule("flatten"), [shapes.flatten or 0]))
    out = [
        f"{name}: torchinfo says {seen.get(id(module))}, static inference says {want}"
        for name, module, want in expected
        if seen.get(id(module)) != want
    ]
    if stats.total_params != shapes.total_params:
        out.append(f"parameters: torchinfo counts {stats.total_params:,}, static inference {shapes.total_params:,}")
    return out


def _count(shapes: ShapeReport) -> str:
    top, every = len(shapes.blocks), len(shapes.all_blocks)
    return f"{top} blocks" if top == every else f"{top} blocks ({every} at every depth)"
