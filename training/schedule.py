"""Learning-rate schedules as a factor of the optimizer's lr at each step. Pure Python, no torch.

The factor is a function of the global step alone, so a resumed run needs only the step count
(kept by the scheduler's state) to continue on exactly the same curve.
"""

from __future__ import annotations

import math

from training.config import (
    ConstantSchedule,
    CosineSchedule,
    OneCycleSchedule,
    ScheduleConfig,
    StepSchedule,
    TriangleSchedule,
)


def lr_factor(schedule: ScheduleConfig, step: int, steps_per_epoch: int, epochs: int) -> float:
    """The lr multiplier for global step `step` (0-based) of a run of `epochs` epochs."""
    total = max(1, steps_per_epoch * epochs)
    if isinstance(schedule, OneCycleSchedule):
        return one_cycle(schedule, step, total)
    if isinstance(schedule, TriangleSchedule):
        return triangle(schedule, step, total)
    warmup = round(schedule.warmup_epochs * steps_per_epoch)
    if step < warmup:
        return (step + 1) / (warmup + 1)  # linear, reaching 1 right after the warmup
    after, span = step - warmup, max(1, total - warmup)
    if isinstance(schedule, ConstantSchedule):
        return 1.0
    if isinstance(schedule, StepSchedule):
        return float(schedule.gamma ** (after // (schedule.step_size * steps_per_epoch)))
    return cosine(schedule, min(after / span, 1.0))


def cosine(schedule: CosineSchedule, progress: float) -> float:
    low = schedule.final_factor
    return low + (1 - low) * 0.5 * (1 + math.cos(math.pi * progress))


def one_cycle(schedule: OneCycleSchedule, step: int, total: int) -> float:
    """Cosine from 1/div_factor up to 1 over pct_start of the run, then down to 1/(div*final_div)."""
    start = 1 / schedule.div_factor
    end = start / schedule.final_div_factor
    peak = max(1, round(schedule.pct_start * total))
    if step < peak:
        return start + (1 - start) * 0.5 * (1 - math.cos(math.pi * step / peak))
    progress = min((step - peak) / max(1, total - 1 - peak), 1.0)
    return end + (1 - end) * 0.5 * (1 + math.cos(math.pi * progress))


def triangle(schedule: TriangleSchedule, step: int, total: int) -> float:
    """start_factor -> 1 at step int(peak * total) -> end_factor at step `total`, linearly (the
    factor of step s is airbench's np.interp(s, [0, peak_step, total], [start, 1, end]))."""
    peak = int(schedule.peak * total)
    if step < peak:
        return schedule.start_factor + (1 - schedule.start_factor) * step / peak
    progress = min((step - peak) / max(1, total - peak), 1.0)
    return 1 + (schedule.end_factor - 1) * progress
