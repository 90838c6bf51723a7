"""Learning-rate schedules: the factor of the optimizer's lr at each global step."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from training.config import ConstantSchedule, CosineSchedule, OneCycleSchedule, StepSchedule, TriangleSchedule
from training.schedule import lr_factor

SPE, EPOCHS = 10, 6  # steps per epoch, epochs: 60 steps


def factors(schedule: object) -> list[float]:
    return [lr_factor(schedule, k, SPE, EPOCHS) for k in range(SPE * EPOCHS)]  # type: ignore[arg-type]


def test_constant_with_warmup_ramps_linearly_then_holds() -> None:
    f = factors(ConstantSchedule(kind="constant", warmup_epochs=1))
    assert f[:10] == pytest.approx([(k + 1) / 11 for k in range(10)])
    assert set(f[10:]) == {1.0}


def test_step_decays_by_gamma_every_step_size_epochs() -> None:
    f = factors(StepSchedule(kind="step", step_size=2, gamma=0.5))
    assert f[0] == f[19] == 1.0 and f[20] == f[39] == 0.5 and f[40] == f[59] == 0.25


def test_cosine_falls_from_one_to_the_final_factor() -> None:
    f = factors(CosineSchedule(kind="cosine", final_factor=0.1, warmup_epochs=1))
    after = f[10:]
    assert after[0] == 1.0 and all(a >= b for a, b in itertools.pairwise(after))
    assert after[-1] == pytest.approx(0.1, abs=0.01)
    assert after[len(after) // 2] == pytest.approx(0.55, abs=0.03)


def test_one_cycle_rises_to_the_peak_then_anneals() -> None:
    f = factors(OneCycleSchedule(kind="one_cycle", pct_start=0.25, div_factor=10, final_div_factor=100))
    peak = f.index(max(f))
    assert f[0] == pytest.approx(0.1) and peak == 15 and f[peak] == 1.0
    assert all(a <= b for a, b in itertools.pairwise(f[: peak + 1]))
    assert all(a >= b for a, b in itertools.pairwise(f[peak:]))
    assert f[-1] == pytest.approx(0.001)


def test_triangle_is_airbenchs_linear_interpolation() -> None:
    schedule = TriangleSchedule(kind="triangle", start_factor=0.2, peak=0.23, end_factor=0.07)
    total = SPE * EPOCHS
    want = np.interp(np.arange(total), [0, int(0.23 * total), total], [0.2, 1, 0.07])  # airbench94.py's
    assert factors(schedule) == pytest.approx(want.tolist(), abs=1e-12)
    assert max(factors(schedule)) == 1.0 and factors(TriangleSchedule(kind="triangle", peak=0))[0] == 1.0
