"""torchvision's segmentation models as specs: fcn_resnet50 and deeplabv3_resnet50 (aux_loss=False)
have torchvision's parameter counts, their static shapes are the built modules', and torchvision's
weights ported by order and shape give torchvision's outputs, the final resize to any input size
included."""

from __future__ import annotations

import pytest
import torch
import torchvision
from conftest import SPECS
from torch import nn

from builder.lang.loading import load_spec
from builder.lang.shapes import infer
from builder.model.build import build_model
from builder.model.port import port_weights

MODELS = {"fcn_resnet50": 32_957_013, "deeplabv3_resnet50": 39_638_869}


@pytest.mark.parametrize("name", MODELS)
def test_segmentation_specs_have_torchvisions_count(name: str) -> None:
    report = infer(load_spec(SPECS / f"{name}.yaml"))
    assert report.total_params == MODELS[name] and not report.problems
    assert report.head is not None and report.head.out == (21, 520, 520)
    assert report.blocks[-1].out_shape[1:] == (65, 65)  # output stride 8: dilated layer3 and layer4


@pytest.mark.slow
@pytest.mark.parametrize("name", MODELS)
def test_ported_segmentation_models_give_torchvisions_outputs(name: str) -> None:
    torch.manual_seed(0)
    theirs = getattr(torchvision.models.segmentation, name)(weights=None, weights_backbone=None, aux_loss=False)
    assert sum(p.numel() for p in theirs.parameters()) == MODELS[name]
    for module in theirs.modules():  # running statistics that are not the identity
        if isinstance(module, nn.BatchNorm2d):
            module.running_mean.uniform_(-0.2, 0.2)
            module.running_var.uniform_(0.5, 1.5)
    spec = load_spec(SPECS / f"{name}.yaml", ["input.height=64", "input.width=64"])
    ours = build_model(spec).eval()
    port_weights(ours, theirs.state_dict())
    theirs.eval()
    report = infer(spec)
    seen: dict[str, tuple[int, ...]] = {}
    for s in report.all_blocks:
        ours.get_submodule(f"features.{s.name}").register_forward_hook(
            lambda m, i, o, n=s.name: seen.__setitem__(n, tuple(o.shape[1:])))
    for size in [(64, 64), (57, 71)]:  # 57x71: features 8x9, resized back to 57x71
        x = torch.randn(1, 3, *size)
        with torch.no_grad():
            want, got = theirs(x)["out"], ours(x)
        assert got.shape == want.shape == (1, 21, *size)
        assert (got - want).abs().max().item() <= 1e-5
        if size == (64, 64):
            assert seen == {s.name: s.out_shape for s in report.all_blocks}
