"""Training throughput of a built spec under speed options, measured rather than assumed.

One training step is the trainer's own (training.step): forward, cross-entropy, backward, the
spec's optimizer and schedule step, on a synthetic batch already in memory (so data loading is
not measured). Every option gets a model rebuilt from the same seed,
its warm-up steps untimed, and the options take turns: repeat 1 of every option, then repeat 2,
..., so a slow spell of the machine (another process, heat) hits them all alike. Each option's
median images/s is compared with fp32's; an option is recommended only if it is at least
MIN_SPEEDUP times as fast.
"""

from __future__ import annotations

import json
import os
import statistics
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from builder.lang.errors import BuilderError, suggest
from builder.lang.files import WriteError, write_text
from builder.lang.spec import Spec
from builder.model.build import build_model
from builder.model.device import DeviceError, find_device
from training.config import TrainingConfig
from training.step import TrainStep, make_step

OPTIONS = ("fp32", "channels_last", "bf16", "fp16", "compile")
MIN_SPEEDUP = 1.05  # below this a "gain" is within the noise of a few repeats
SEED = 0
BUSY_CPUS = 0.25  # other processes' average CPU use above which the table warns


class BenchError(BuilderError):
    """A bad benchmark argument (exit status 2, one line)."""


@dataclass
class OptionResult:
    """Throughput of one option: images/s of each timed repeat, or why it was skipped."""

    name: str
    rates: list[float] = field(default_factory=list)
    skipped: str | None = None
    warmup_s: float = 0.0
    speedup: float | None = None  # median / fp32's median

    @property
    def median(self) -> float | None:
        return statistics.median(self.rates) if self.rates and not self.skipped else None

    @property
    def note(self) -> str:
        if self.skipped:
            return f"skipped: {self.skipped}"
        if self.name == "compile":
            return f"compile warm-up {self.warmup_s:.1f} s (not timed)"
        return {"fp32": "baseline", "fp16": "with GradScaler"}.get(self.name, "")

    def to_dict(self) -> dict[str, Any]:
        keys = ("name", "median", "speedup", "rates", "skipped", "warmup_s", "note")
        return {k: getattr(self, k) for k in keys}


@dataclass
class BenchResult:
    """All options of one run, the recommendation, and the conditions it was measured in."""

    spec_name: str
    device: str
    batch_size: int
    steps: int
    warmup: int
    repeats: int
    threads: int
    other_cpus: float | None  # CPUs other processes kept busy during the timed rounds (Linux), else None
    options: list[OptionResult]

    @property
    def recommendation(self) -> str:
        """The fastest option at least MIN_SPEEDUP x fp32, else 'fp32'."""
        fast = [o for o in self.options if o.median is not None and (o.speedup or 0.0) >= MIN_SPEEDUP]
        return max(fast, key=lambda o: o.median or 0.0).name if fast else "fp32"

    def recommendation_line(self) -> str:
        best = self.recommendation
        if best == "fp32":
            return f"recommendation: fp32 (no option reached {MIN_SPEEDUP:.2f}x of fp32's images/s)"
        speedup = next(o.speedup for o in self.options if o.name == best)
        return f"recommendation: use {best} ({speedup:.2f}x fp32's images/s)"

    def table(self) -> str:
        head = (
            f"{self.spec_name} on {self.device} ({self.threads} threads): batch {self.batch_size}, "
            f"{self.steps} timed steps x {self.repeats} repeats (options interleaved), {self.warmup} warm-up steps"
        )
        rows = [("option", "images/s (median)", "min-max", "speed-up", "note"), *(_row(o) for o in self.options)]
        widths = [max(len(r[i]) for r in rows) for i in range(4)]
        lines = ["  ".join([r[0].ljust(widths[0]), *(c.rjust(w) for c, w in zip(r[1:4], widths[1:])), r[4]])
                 for r in rows]
        busy = [] if (self.other_cpus or 0.0) < BUSY_CPUS else [
            f"note: other processes kept {self.other_cpus:.1f} of {os.cpu_count()} CPUs busy during the timed steps: "
            "these figures are lower and noisier than on an idle machine"]
        return "\n".join([head, *(line.rstrip() for line in lines), *busy, self.recommendation_line()])

    __str__ = table

    def to_dict(self) -> dict[str, Any]:
        """Plain data for JSON."""
        keys = ("spec_name", "device", "batch_size", "steps", "warmup", "repeats", "threads", "other_cpus")
        out: dict[str, Any] = {k: getattr(self, k) for k in keys}
        out["min_speedup"] = MIN_SPEEDUP
        out["options"] = [o.to_dict() for o in self.options]
        out["recommendation"] = self.recommendation
        return out


def _row(o: OptionResult) -> tuple[str, str, str, str, str]:
    if o.median is None:
        return (o.name, "-", "-", "-", o.note)
    spread = f"{min(o.rates):.1f}-{max(o.rates):.1f}"
    return (o.name, f"{o.median:.1f}", spread, f"{o.speedup or 0.0:.2f}x", o.note)


# --- arguments ------------------------------------------------------------------------------


def parse_options(text: str | Sequence[str]) -> list[str]:
    """'fp32,bf16' or 'all' -> known option names in table order; fp32 (the baseline) always first."""
    names = [n.strip() for n in text.split(",")] if isinstance(text, str) else list(text)
    names = [n for n in names if n]
    if not names or names == ["all"]:
        return list(OPTIONS)
    for name in names:
        if name not in OPTIONS:
            raise BenchError(f"unknown option '{name}'; expected {', '.join(OPTIONS)} or all" + suggest(name, OPTIONS))
    return [o for o in OPTIONS if o in names or o == "fp32"]


def resolve_device(name: str) -> torch.device:
    """The device to measure on, chosen as `train` chooses it (builder.model.device.find_device)."""
    try:
        return find_device(name)
    except DeviceError as exc:
        raise BenchError(f"--device {name}: {exc}") from None


MAX_COUNT = 100_000  # a bound on each count: beyond it a benchmark would not end (or not fit) anyway


def _check_counts(batch_size: int, steps: int, warmup: int, repeats: int) -> None:
    for flag, value, least in (("--batch-size", batch_size, 1), ("--steps", steps, 1),
                               ("--warmup", warmup, 0), ("--repeats", repeats, 1)):
        if value < least:
            raise BenchError(f"{flag} must be >= {least}, got {value}")
        if value > MAX_COUNT:
            raise BenchError(f"{flag} must be <= {MAX_COUNT:,}, got {value:,}")


# --- measuring ------------------------------------------------------------------------------


def sync(device: torch.device) -> None:
    """Wait for queued kernels, so a timer measures work done, not work launched."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    elif device.type == "mps":
        torch.mps.synchronize()


CpuSample = tuple[float, float, float]  # (wall s, busy CPU-s of the machine, CPU-s of this process)


def cpu_sample() -> CpuSample | None:
    """Now, from /proc/stat and os.times(); None where there is no /proc (not Linux)."""
    try:
        with open("/proc/stat") as f:
            ticks = [int(v) for v in f.readline().split()[1:]]  # user nice system idle iowait irq softirq steal
    except (OSError, ValueError):
        return None
    busy = (sum(ticks[:8]) - ticks[3] - ticks[4]) / os.sysconf("SC_CLK_TCK")
    own = os.times()
    return time.monotonic(), busy, own.user + own.system


def other_cpus_between(before: CpuSample | None, after: CpuSample | None) -> float | None:
    """Average number of CPUs that other processes kept busy between the two samples."""
    if before is None or after is None or after[0] <= before[0]:
        return None
    other = (after[1] - before[1]) - (after[2] - before[2])
    return max(0.0, other / (after[0] - before[0]))


@dataclass
class _Runner:
    """One option's model, optimizer and batch, ready to take timed training steps."""

    result: OptionResult
    step: Callable[[], None]
    device: torch.device
    batch_size: int

    def time(self, steps: int) -> None:
        """Append the images/s of `steps` steps; an error skips the option from then on."""
        try:
            sync(self.device)
            start = time.perf_counter()
            for _ in range(steps):
                self.step()
            sync(self.device)
            self.result.rates.append(self.batch_size * steps / (time.perf_counter() - start))
        except Exception as exc:  # e.g. out of memory under one option only
            self.result.skipped = _reason(exc)


def _reason(exc: Exception) -> str:
    """The first line of an error message, short enough for a table cell."""
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    text = f"{type(exc).__name__}: {lines[0] if lines else ''}"
    return text if len(text) <= 100 else text[:97] + "..."


def train_step(model: nn.Module, opt: torch.optim.Optimizer, x: torch.Tensor, y: torch.Tensor,
               amp: torch.dtype | None, scaler: torch.amp.GradScaler | None) -> None:
    """The trainer's step (training.step.TrainStep) on a given model and optimizer, no schedule."""
    precision = {torch.bfloat16: "bf16", torch.float16: "fp16"}.get(amp, "fp32") if amp is not None else "fp32"
    scaler = scaler or torch.amp.GradScaler(x.device.type, enabled=False)
    TrainStep(model, model, opt, None, scaler, precision)(x, y)


def _prepare(name: str, spec: Spec, batch: tuple[torch.Tensor, torch.Tensor], warmup: int) -> _Runner:
    """Build the model for one option from SEED and run its (untimed) warm-up steps."""
    x, y = batch
    result = OptionResult(name)
    runner = _Runner(result, lambda: None, x.device, x.shape[0])
    if name == "fp16" and x.device.type != "cuda":
        result.skipped = f"fp16 autocast is for CUDA; this device is {x.device.type}"
        return runner
    try:
        runner.step = _make_step(name, spec, x, y)
        start = time.perf_counter()
        for _ in range(max(warmup, 1 if name == "compile" else 0)):  # compiling happens in step 1
            runner.step()
        sync(x.device)
        result.warmup_s = time.perf_counter() - start
    except Exception as exc:  # e.g. torch.compile without a C++ compiler, bf16 on an old GPU
        result.skipped = _reason(exc)
    return runner


OPTION_CONFIG: dict[str, dict[str, Any]] = {  # each option as the training fields that turn it on
    "fp32": {}, "channels_last": {"channels_last": True}, "bf16": {"precision": "bf16"},
    "fp16": {"precision": "fp16"}, "compile": {"compile": True},
}


def option_config(spec: Spec, name: str) -> TrainingConfig:
    """The spec's training recipe (its optimizer, schedule, clipping...) in fp32, plus the option."""
    base = TrainingConfig.model_validate(spec.training or {})
    plain = {"precision": "fp32", "channels_last": False, "compile": False}
    return base.model_copy(update={**plain, **OPTION_CONFIG[name]})


def _make_step(name: str, spec: Spec, x: torch.Tensor, y: torch.Tensor) -> Callable[[], None]:
    """The very step `train` runs (training.step.make_step) under the option's settings."""
    torch.manual_seed(SEED)  # the same initial weights for every option
    model: nn.Module = build_model(spec).to(x.device)
    step = make_step(model, option_config(spec, name), x.device, steps_per_epoch=1000)

    def run() -> None:
        step(x, y)

    return run


def _synthetic_batch(spec: Spec, batch_size: int, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """Random images (N, C, H, W) and labels (N,), made once on the device."""
    gen = torch.Generator().manual_seed(SEED)
    shape = (batch_size, spec.input.channels, spec.input.height, spec.input.width)
    x = torch.randn(shape, generator=gen)
    y = torch.randint(spec.num_classes, (batch_size,), generator=gen)
    return x.to(device), y.to(device)


def bench(spec: Spec, *, batch_size: int = 64, steps: int = 10, warmup: int = 3, repeats: int = 3,
          device: str = "auto", options: str | Sequence[str] = "all") -> BenchResult:
    """Median training images/s of each option, interleaved over `repeats` rounds of `steps` steps."""
    _check_counts(batch_size, steps, warmup, repeats)
    names, dev = parse_options(options), resolve_device(device)
    batch = _synthetic_batch(spec, batch_size, dev)
    # compile warms up first, so whatever its compiler leaves running ends before any timing
    prepared = {name: _prepare(name, spec, batch, warmup) for name in sorted(names, key=lambda n: n != "compile")}
    runners = [prepared[name] for name in names]
    before = cpu_sample()
    for _ in range(repeats):
        for runner in runners:
            if runner.result.skipped is None:
                runner.time(steps)
    others = other_cpus_between(before, cpu_sample())
    results = [r.result for r in runners]
    _set_speedups(results)
    return BenchResult(spec.name, str(dev), batch_size, steps, warmup, repeats, torch.get_num_threads(),
                       others, results)


def _set_speedups(results: list[OptionResult]) -> None:
    base = results[0].median  # fp32 is always first
    if base is None:
        raise BenchError(f"the fp32 baseline failed: {results[0].skipped}")
    for o in results:
        o.speedup = None if o.median is None else o.median / base


def write_json(result: BenchResult, path: str | os.PathLike[str], *, replace: bool = True) -> str:
    """Write result.to_dict() to path; a failure is a one-line error."""
    try:
        write_text(Path(path), json.dumps(result.to_dict(), indent=2) + "\n", replace=replace)
    except WriteError as exc:
        raise BenchError(f"--json {path}: {exc}") from None
    return str(path)

