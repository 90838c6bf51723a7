"""Porting torchvision's alexnet weights into the built alexnet_torchvision model."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from pathlib import Path

import pytest
import torch
from conftest import SPECS
from safetensors.torch import load_file
from torchvision.models import alexnet

from builder.lang.errors import BuilderError
from builder.lang.loading import load_spec
from builder.model.build import build_model
from builder.model.port import PortError, port_weights, read_state_dict


def test_ported_weights_give_identical_outputs() -> None:
    torch.manual_seed(0)
    reference = alexnet(weights=None).eval()
    model = build_model(load_spec(SPECS / "alexnet_torchvision.yaml")).eval()
    pairs = port_weights(model, reference.state_dict())
    assert pairs[0] == ("features.0.weight", "features.block1.conv.weight")
    assert pairs[-1] == ("classifier.6.bias", "classifier.fc3.bias")
    x = torch.randn(2, 3, 224, 224)
    with torch.no_grad():
        assert torch.equal(model(x), reference(x))


def test_mismatch_is_reported_and_nothing_is_copied() -> None:
    model = build_model(load_spec(SPECS / "alexnet.yaml"))
    before = model.features.block1.conv.weight.clone()
    with pytest.raises(PortError) as info:
        port_weights(model, alexnet(weights=None).state_dict())
    assert "features.0.weight (64, 3, 11, 11) -> features.block1.conv.weight (96, 3, 11, 11)" in str(info.value)
    assert torch.equal(model.features.block1.conv.weight, before)


def test_cli_ports_a_pth_file(cli: Callable[..., tuple[int, str, str]], tmp_path: Path) -> None:
    reference = alexnet(weights=None, num_classes=10)
    torch.save(reference.state_dict(), tmp_path / "tv.pth")
    out = tmp_path / "model.safetensors"
    code, stdout, _ = cli("port-weights", SPECS / "alexnet_torchvision.yaml", tmp_path / "tv.pth",
                          "--set", "num_classes=10", "-o", out)
    assert code == 0 and "copied 16 tensors" in stdout
    assert torch.equal(load_file(str(out))["classifier.fc3.weight"], reference.classifier[6].weight)


def test_pickled_objects_are_refused(tmp_path: Path) -> None:
    path = tmp_path / "evil.pth"
    torch.save({"weight": torch.zeros(1), "payload": Path("/etc/passwd")}, path)
    with pytest.raises(BuilderError, match="cannot load weights safely"):
        read_state_dict(path)


def test_missing_weights_file(cli: Callable[..., tuple[int, str, str]], tmp_path: Path) -> None:
    code, _, err = cli("port-weights", SPECS / "alexnet_torchvision.yaml", tmp_path / "nope.pth", "-o",
                       tmp_path / "o.safetensors")
    assert code == 2 and err == f"error: {tmp_path / 'nope.pth'}: no such weights file\n"


# Every canon spec that torchvision has, with the keyword arguments that make the two the same model.
TORCHVISION = {
    "alexnet_torchvision": ("alexnet", {}),
    "vgg11": ("vgg11", {}),
    "vgg11_bn": ("vgg11_bn", {}),
    "vgg16": ("vgg16", {}),
    "resnet18": ("resnet18", {}),
    "resnet34": ("resnet34", {}),
    "resnet50": ("resnet50", {}),
    "googlenet": ("googlenet", {"aux_logits": False, "init_weights": True}),
    "densenet121": ("densenet121", {}),
    "mobilenet_v2": ("mobilenet_v2", {}),
}


@pytest.mark.slow
@pytest.mark.parametrize("name", TORCHVISION)
def test_every_canon_model_ports_from_torchvision_with_equal_outputs(name: str) -> None:
    assert port_difference(name, *TORCHVISION[name]) <= 1e-5


def port_difference(spec_name: str, tv_name: str, kwargs: Mapping[str, object]) -> float:
    """Max abs output difference of the built spec holding a random torchvision model's ported weights."""
    import torchvision

    torch.manual_seed(0)
    reference = torchvision.models.get_model(tv_name, weights=None, **kwargs).eval()
    _randomize_norm_statistics(reference)  # so a swapped mean and variance would show
    model = build_model(load_spec(SPECS / f"{spec_name}.yaml")).eval()
    port_weights(model, reference.state_dict())
    x = torch.randn(2, 3, 64, 64)  # every canon model ends in an adaptive pool: a small input is enough
    with torch.no_grad():
        return (model(x) - reference(x)).abs().max().item()


def _randomize_norm_statistics(model: torch.nn.Module) -> None:
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, torch.nn.BatchNorm2d):
                module.running_mean.uniform_(-0.5, 0.5)
                module.running_var.uniform_(0.5, 2.0)


@pytest.mark.parametrize("name", TORCHVISION)
def test_static_counts_equal_torchvisions_published_figures(name: str) -> None:
    """Parameters and GMACs (torchvision's `_ops`, rounded to 3 decimals) from the weights' metadata."""
    assert static_counts(name) == published_counts(TORCHVISION[name][0])


def static_counts(spec_name: str) -> tuple[int, float]:
    """A shipped spec's parameters and G mult-adds (rounded as torchvision publishes them), built nothing."""
    from builder.lang.shapes import infer

    report = infer(load_spec(SPECS / f"{spec_name}.yaml"))
    return report.total_params, round(report.mult_adds / 1e9, 3)


def published_counts(tv_name: str) -> tuple[int, float]:
    """torchvision's parameters and GMACs (`_ops`) for a model, from its default weights' metadata."""
    from torchvision.models import get_model_weights

    meta = get_model_weights(tv_name).DEFAULT.meta
    return meta["num_params"], meta["_ops"]
