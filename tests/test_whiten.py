"""airbench's generic pieces: conv `init: whiten` (fitted by the trainer, training/whiten.py) and
`init: dirac`, BatchNorm `frozen_weight`."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
import torch

from builder.lang.loading import load_spec
from builder.lang.shapes import infer
from builder.model.blocks import WhiteningConv2d
from builder.model.build import build_model
from training import TrainingConfig, train
from training.checkpoint import WEIGHTS, load_weights
from training.data import load_data, preprocess_for
from training.whiten import fit_whitening

Cli = Callable[..., tuple[int, str, str]]
SPEC = """\
name: whitened
input: {channels: 1, height: 8, width: 8}
num_classes: 10
blocks:
  - {name: whiten, out_channels: 8, kernel_size: 2, init: whiten, activation: gelu}
  - {name: conv, out_channels: 12, kernel_size: 3, padding: 1, bias: false, init: dirac, activation: none,
     norm: {kind: batchnorm, frozen_weight: true}}
  - {kind: batchnorm, name: bn, frozen_weight: true}
classifier: {hidden: [], dropout: 0}
training: {epochs: 1, batch_size: 256, optimizer: {kind: sgd, lr: 0.05}}
"""


def test_the_fitted_filters_whiten_their_patches() -> None:
    torch.manual_seed(0)
    mix = torch.randn(3, 3)
    inputs = torch.einsum("dc,nchw->ndhw", mix, torch.randn(64, 3, 10, 10))  # correlated channels
    conv = WhiteningConv2d(3, 24, 2)
    conv.fit(inputs, eps=0.0)
    patches = torch.nn.functional.unfold(inputs, 2).transpose(1, 2).reshape(-1, 12)
    w = conv.weight.reshape(24, 12)
    whitened = patches @ w[:12].T  # the first half: one output per eigenvector
    assert torch.allclose(whitened.T @ whitened / len(whitened), torch.eye(12), atol=1e-3)
    assert torch.equal(w[12:], -w[:12]) and not conv.weight.requires_grad


def test_dirac_and_frozen_batchnorm_weights_build(write_spec: Callable[..., Path]) -> None:
    spec = load_spec(write_spec(SPEC))
    model = build_model(spec)
    conv = model.features.conv.conv.weight
    assert torch.equal(conv[:8, :, 1, 1], torch.eye(8)) and conv[:8].abs().sum() == 8  # 8 in -> the first 8 pass
    assert conv[8:].abs().sum() > 0  # the rest keep PyTorch's init
    frozen = [model.features.conv.norm.weight, model.features.bn.weight, model.features.whiten.conv.weight]
    assert all(not p.requires_grad for p in frozen) and model.features.bn.bias.requires_grad
    assert sum(p.numel() for p in model.parameters()) == infer(spec).total_params


def test_a_run_fits_the_whitening_on_its_training_images_and_never_trains_it(
    write_spec: Callable[..., Path], tmp_path: Path
) -> None:
    spec = load_spec(write_spec(SPEC))
    config = TrainingConfig.model_validate(spec.training)
    train(spec, config, out=tmp_path / "run", quiet=True, log=print)
    trained = load_weights(tmp_path / "run" / WEIGHTS)
    model, data = build_model(spec), load_data(config.dataset, spec)
    fresh = model.features.whiten.conv.weight.clone()
    prep = preprocess_for(data.mean, data.std, (8, 8), config.dataset.augment, torch.device("cpu"))
    assert fit_whitening(model, data.train, prep, config.seed, torch.device("cpu")) == 1
    fitted = model.features.whiten.conv.weight
    assert torch.equal(trained["features.whiten.conv.weight"], fitted) and not torch.equal(fitted, fresh)
    assert torch.equal(trained["features.bn.weight"], torch.ones(12))  # frozen at 1 through training
    assert not torch.equal(trained["features.bn.bias"], torch.zeros(12))  # the bias trained
    resumed = config.model_copy(update={"epochs": 2})
    train(spec, resumed, resume=tmp_path / "run", quiet=True, log=print)  # a resumed run does not refit
    assert torch.equal(load_weights(tmp_path / "run" / WEIGHTS)["features.whiten.conv.weight"], fitted)


@pytest.mark.parametrize(
    ("block", "message"),
    [
        ("{out_channels: 6, kernel_size: 2, init: whiten}", "5:20: error: blocks[0].out_channels: block1: init "
         "whiten makes 2 x in_channels x kh x kw = 2 x 1 x 4 = 8 filters"),
        ("{out_channels: 8, kernel_size: 3, groups: 2, init: dirac}",
         "5:56: error: blocks[0].init: init dirac needs one group (groups: 1), not groups 2"),
        ("{out_channels: 8, kernel_size: 3, init: zeros}",
         "5:45: error: blocks[0].init: must be one of default, dirac, whiten"),
    ],
)
def test_a_bad_init_is_one_located_line(write_spec: Callable[..., Path], cli: Cli, block: str, message: str) -> None:
    path = write_spec(f"name: w\ninput: {{channels: 1, height: 8, width: 8}}\nnum_classes: 2\nblocks:\n  - {block}\n")
    code, _, err = cli("validate", path)
    assert code == 2 and len(err.splitlines()) == 1 and err.startswith(f"{path}:{message}"), err
