"""arch_specs/airbench94.yaml against the hand-written port (benchmarks/airbench94_port.py): the
same network (count, outputs with the same weights, in training and eval mode), the same
whitening filters from the same images, and the recipe's settings as the port's hyperparameters."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

import pytest
import torch

from builder.lang.loading import load_spec
from builder.model.build import build_model
from builder.model.port import port_weights
from training import TrainingConfig

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def port() -> ModuleType:
    spec = importlib.util.spec_from_file_location("airbench94_port", ROOT / "benchmarks" / "airbench94_port.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["airbench94_port"] = module
    spec.loader.exec_module(module)
    return module


def test_the_spec_is_the_ports_network(port: ModuleType) -> None:
    torch.manual_seed(0)
    reference, ours = port.make_net(), build_model(load_spec(ROOT / "arch_specs" / "airbench94.yaml"))
    assert sum(p.numel() for p in ours.parameters()) == sum(p.numel() for p in reference.parameters()) == 1_972_792
    port_weights(ours, reference.state_dict())
    frozen = [n for n, p in ours.named_parameters() if not p.requires_grad]
    assert len(frozen) == 1 + 6 and sum(not p.requires_grad for p in reference.parameters()) == 7  # whiten, 6 BNs
    x = torch.randn(4, 3, 32, 32)
    for mode in ("train", "eval"):
        reference.train(mode == "train")
        ours.train(mode == "train")
        assert torch.allclose(ours(x), reference(x), atol=1e-5), mode


def test_the_whitening_is_the_ports(port: ModuleType) -> None:
    torch.manual_seed(0)
    images = torch.randn(32, 3, 32, 32)
    reference, ours = port.make_net(), build_model(load_spec(ROOT / "arch_specs" / "airbench94.yaml"))
    port.init_whitening_conv(reference[0], images)
    ours.features.whiten.conv.fit(images)
    # float32 sums of the patches in another order: filters scaled by 1/sqrt(eigenvalue) differ by ~1e-5
    assert torch.allclose(ours.features.whiten.conv.weight, reference[0].weight, rtol=1e-3, atol=1e-4)


def test_the_recipe_is_the_ports_hyperparameters(port: ModuleType) -> None:
    config = TrainingConfig.model_validate(load_spec(ROOT / "arch_specs" / "airbench94.yaml").training)
    hyp, opt = port.HYP, config.optimizer
    kilostep = 1024 * (1 + 1 / (1 - hyp["momentum"]))  # airbench's lr and decay are per 1024 examples
    lr_sum, decay = hyp["lr"] / kilostep, hyp["weight_decay"] * hyp["batch_size"] / kilostep
    assert config.batch_size == hyp["batch_size"] and opt.momentum == hyp["momentum"]
    assert opt.lr == pytest.approx(lr_sum * config.batch_size, rel=1e-4)  # a mean loss, not a sum
    assert opt.lr * opt.weight_decay == pytest.approx(decay, rel=1e-4)  # the same decay per step
    (group,) = opt.groups
    assert group.lr_scale == hyp["bias_scaler"]
    assert opt.lr * group.lr_scale * group.weight_decay == pytest.approx(decay, rel=1e-3)
    assert config.label_smoothing == hyp["label_smoothing"] and config.ema is not None
    assert config.ema.decay == pytest.approx(0.95**5) and config.ema.every == 5 and config.ema.lookahead
