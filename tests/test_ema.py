"""The weight average on its own: its definition, its decay ramp, lookahead and the swap."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from training.config import EMAConfig
from training.ema import WeightAverage


def tiny() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(3, 4), nn.BatchNorm1d(4))


def perturb(model: nn.Module, k: int) -> None:
    """New weights and buffers, as a training step would leave them."""
    with torch.no_grad():
        for v in model.state_dict().values():
            v.add_(k) if v.is_floating_point() else v.fill_(10 * k)


def test_the_average_follows_its_definition_every_n_steps() -> None:
    model = tiny()
    ema = WeightAverage(EMAConfig(decay=0.75, every=2), model, 0, 10)
    expected = {k: v.clone() for k, v in model.state_dict().items()}  # starts at the weights
    for step in range(1, 6):
        perturb(model, step)
        ema.update(model, step)
        if step % 2 == 0:
            for k, v in model.state_dict().items():
                expected[k] = 0.75 * expected[k] + 0.25 * v if v.is_floating_point() else v.clone()
    for k, v in ema.state_dict().items():
        assert torch.allclose(v, expected[k], atol=1e-6), k
    assert int(ema.state_dict()["1.num_batches_tracked"]) == 40  # integer buffers copied at step 4
    assert not torch.equal(ema.state_dict()["1.running_mean"], model.state_dict()["1.running_mean"])


def test_the_decay_ramps_over_the_schedule_segment() -> None:
    ema = WeightAverage(EMAConfig(decay=0.8, ramp=3), tiny(), 100, 50)
    assert ema.decay(100) == 0.0 and ema.decay(125) == pytest.approx(0.8 * 0.5**3) and ema.decay(150) == 0.8
    assert ema.decay(400) == 0.8  # after the segment: the full decay
    assert WeightAverage(EMAConfig(decay=0.8), tiny(), 0, 50).decay(1) == 0.8


def test_lookahead_sets_the_weights_to_the_average() -> None:
    model = tiny()
    ema = WeightAverage(EMAConfig(decay=0.5, lookahead=True), model, 0, 10)
    before = model.state_dict()["0.weight"].clone()
    perturb(model, 1)
    ema.update(model, 1)
    assert torch.allclose(model.state_dict()["0.weight"], before + 0.5)
    assert all(torch.equal(v, ema.state_dict()[k]) for k, v in model.state_dict().items())


def test_swapped_holds_the_average_inside_and_restores_the_weights_exactly() -> None:
    model = tiny()
    ema = WeightAverage(EMAConfig(decay=0.9), model, 0, 10)
    perturb(model, 3)
    ema.update(model, 1)
    weights = {k: v.clone() for k, v in model.state_dict().items()}
    with pytest.raises(RuntimeError), ema.swapped(model):
        assert all(torch.equal(v, ema.state_dict()[k]) for k, v in model.state_dict().items())
        raise RuntimeError  # restored even when the block fails
    assert all(torch.equal(v, weights[k]) for k, v in model.state_dict().items())
    again = WeightAverage(EMAConfig(decay=0.9), tiny(), 0, 10)
    again.load_state_dict(ema.state_dict())
    assert all(torch.equal(v, ema.state_dict()[k]) for k, v in again.state_dict().items())
    assert again.finite()
