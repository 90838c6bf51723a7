"""Built modules: names, dtype, device, parity with a hand-written AlexNet, memory refusal."""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable
from pathlib import Path

import pytest
import torch
from conftest import SPECS
from torch import nn

from builder.lang.loading import load_spec
from builder.lang.shapes import infer
from builder.model.build import ModelTooLargeError, build_model


def hand_written_alexnet(num_classes: int, classifier_relu: bool) -> nn.Module:
    """The classic single-tower AlexNet, written out by hand."""

    def lrn() -> nn.Module:
        return nn.LocalResponseNorm(5, alpha=1e-4, beta=0.75, k=2.0)

    features = nn.Sequential(
        nn.Conv2d(3, 96, 11, stride=4), nn.ReLU(), lrn(), nn.MaxPool2d(3, 2),
        nn.Conv2d(96, 256, 5, padding=2), nn.ReLU(), lrn(), nn.MaxPool2d(3, 2),
        nn.Conv2d(256, 384, 3, padding=1), nn.ReLU(),
        nn.Conv2d(384, 384, 3, padding=1), nn.ReLU(),
        nn.Conv2d(384, 256, 3, padding=1), nn.ReLU(), lrn(), nn.MaxPool2d(3, 2),
    )
    act = nn.ReLU if classifier_relu else nn.Identity
    classifier = nn.Sequential(
        nn.Linear(9216, 4096), act(), nn.Dropout(0.5),
        nn.Linear(4096, 4096), act(), nn.Dropout(0.5),
        nn.Linear(4096, num_classes),
    )
    return nn.Sequential(features, nn.Flatten(), classifier)


@pytest.mark.parametrize(("activation", "relu"), [("relu", True), ("none", False)])
def test_parity_with_hand_written_alexnet(activation: str, relu: bool) -> None:
    built = build_model(load_spec(SPECS / "alexnet.yaml", [f"classifier.activation={activation}"]))
    reference = hand_written_alexnet(10, relu)
    ours, theirs = list(built.parameters()), list(reference.parameters())
    assert [p.shape for p in ours] == [p.shape for p in theirs]
    with torch.no_grad():
        for a, b in zip(ours, theirs):
            a.copy_(b)
    built.eval(), reference.eval()
    x = torch.randn(2, 3, 227, 227, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        torch.testing.assert_close(built(x), reference(x), rtol=1e-5, atol=1e-6)  # LRN: ours vs torch's


def test_stable_readable_names_float32_cpu() -> None:
    model = build_model(load_spec(SPECS / "alexnet.yaml"))
    names = [name for name, _ in model.named_modules()]
    assert {"features.block1.conv", "features.block1.norm", "features.block5.pool", "classifier.fc1",
            "classifier.fc3"} <= set(names)
    assert "features.block3.norm" not in names
    assert all(p.dtype == torch.float32 and p.device.type == "cpu" for p in model.parameters())
    assert sum(p.numel() for p in model.parameters()) == 58_322_314


def test_batchnorm_sits_before_activation_lrn_after() -> None:
    spec = load_spec(SPECS / "alexnet.yaml", ["blocks[1].norm={kind: batchnorm}"])
    model = build_model(spec)
    assert list(OrderedDict(model.features.block1.named_children())) == ["conv", "act", "norm", "pool"]
    assert list(OrderedDict(model.features.block2.named_children())) == ["conv", "norm", "act", "pool"]
    assert isinstance(model.features.block2.norm, nn.BatchNorm2d)


def test_activations_and_pools_from_the_registry() -> None:
    spec = load_spec(SPECS / "alexnet.yaml", [
        "blocks[0].activation=gelu", "blocks[1].activation=none", "blocks[1].pool={kind: avg, kernel_size: 2}",
        "classifier.dropout_position=before", "classifier.adaptive_pool=[6, 6]",
    ])
    model = build_model(spec)
    assert isinstance(model.features.block1.act, nn.GELU)
    assert not hasattr(model.features.block2, "act")
    assert isinstance(model.features.block2.pool, nn.AvgPool2d)
    assert isinstance(model.avgpool, nn.AdaptiveAvgPool2d)
    assert list(OrderedDict(model.classifier.named_children()))[:3] == ["drop1", "fc1", "act1"]
    assert model(torch.zeros(1, 3, 227, 227)).shape == (1, 10)
    assert infer(spec).total_params == sum(p.numel() for p in model.parameters())


def test_grouped_convolution() -> None:
    spec = load_spec(SPECS / "alexnet.yaml", ["blocks[1].groups=2"])
    assert build_model(spec).features.block2.conv.groups == 2


def test_model_too_large_is_refused_before_allocation() -> None:
    spec = load_spec(SPECS / "alexnet.yaml", ["classifier.hidden=[2000000, 4096]"])  # ~26 billion params
    with pytest.raises(ModelTooLargeError, match="meta device"):
        build_model(spec)
    with torch.device("meta"):
        assert all(p.is_meta for p in build_model(spec).parameters())


RESIDUALS = """\
name: tiny_residuals
input: {channels: 4, height: 8, width: 8}
num_classes: 3
blocks:
  - kind: residual          # body ends in BatchNorm: the add may happen in place
    activation: relu
    body:
      - {out_channels: 4, kernel_size: 3, padding: 1, norm: {kind: batchnorm}}
      - {out_channels: 4, kernel_size: 3, padding: 1, norm: {kind: batchnorm}, activation: none}
  - kind: residual          # body ends in an in-place ReLU, whose backward reads its output
    body:
      - {out_channels: 4, kernel_size: 3, padding: 1}
classifier: {adaptive_pool: [1, 1], hidden: [], dropout: 0}  # no random mask: two forwards compare
"""


def test_residual_adds_in_place_only_when_the_body_output_is_not_saved(write_spec: Callable[..., Path]) -> None:
    from builder.model.blocks import Residual

    torch.manual_seed(0)
    model = build_model(load_spec(write_spec(RESIDUALS)))
    first, second = model.features.block1, model.features.block2
    assert isinstance(first, Residual) and isinstance(second, Residual)
    assert (first.add_inplace, second.add_inplace) == (True, False)
    x = torch.randn(2, 4, 8, 8, requires_grad=True)
    model(x).sum().backward()  # an unsafe in-place add would fail here
    grads = [p.grad.clone() for p in model.parameters() if p.grad is not None]
    model.zero_grad()
    x2 = x.detach().clone().requires_grad_(True)
    for block in (first, second):
        block.add_inplace = False  # the plain out-of-place add as the reference
    model(x2).sum().backward()
    assert all(torch.allclose(a, p.grad) for a, p in zip(grads, model.parameters(), strict=True) if p.grad is not None)
    assert torch.allclose(x.grad, x2.grad)  # type: ignore[arg-type]


def test_resnet18_adds_in_place_as_torchvision_does() -> None:
    from builder.model.blocks import Residual

    with torch.device("meta"):
        model = build_model(load_spec(SPECS / "resnet18.yaml"))
    residuals = [m for m in model.modules() if isinstance(m, Residual)]
    assert len(residuals) == 8 and all(m.add_inplace for m in residuals)
